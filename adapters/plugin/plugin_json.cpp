// SPDX-License-Identifier: Apache-2.0
// Building and reading the JSON of the plug-in C ABI. Everything read here comes from a
// vendor's library: it is parsed under limits and checked member by member, and any text
// quoted from it into diagnostics is made printable and cut short.
#include "adapters/plugin/plugin_json.h"

#include <algorithm>
#include <cctype>
#include <initializer_list>
#include <utility>
#include <variant>

#include "adapters/plugin/gw_adapter_abi.h"
#include "fhir/date_range.h"
#include "fhir/nhs_number.h"

namespace gw::adapters {

using fhir::ErrorCode;
using fhir::Issue;

namespace {

constexpr std::size_t kMaxQuotedBytes = 300;  // diagnostics quoted from a plug-in's outcome
constexpr std::size_t kMaxOdsCodeBytes = 64;  // the record locator's limit on a code

fhir::Json object_with_strings(std::initializer_list<std::pair<const char*, const std::string*>> members) {
  fhir::Json o = fhir::Json::object();
  for (const auto& [key, value] : members) o.set(key, fhir::Json::string(*value));
  return o;
}

// The first issue's diagnostics (or details.text) of an OperationOutcome, cut short.
std::string outcome_text(const fhir::Json& outcome) {
  const fhir::Json* issues = outcome.find("issue");
  if (issues == nullptr || !issues->is_array() || issues->items().empty()) return {};
  const fhir::Json& first = issues->items().front();
  std::string_view text = first.string_at("diagnostics");
  if (text.empty())
    if (const fhir::Json* details = first.find("details")) text = details->string_at("text");
  return printable_text(text, kMaxQuotedBytes);
}

Issue answer_error(const std::string& source, std::string_view why) {
  std::string diagnostics = "source '" + source + "' could not answer: ";
  diagnostics.append(why);
  return Issue::make(ErrorCode::not_ready, std::move(diagnostics), "source");
}

bool is_resource(const fhir::Json& v) { return v.is_object() && !v.string_at("resourceType").empty(); }

// An NHS number identifier in `identifiers` (an array, or a single Identifier) other than
// `nhs_number`.
bool names_other_nhs_number(const fhir::Json* identifiers, std::string_view nhs_number) {
  if (identifiers == nullptr) return false;
  auto other = [nhs_number](const fhir::Json& id) {
    return id.is_object() && id.string_at("system") == fhir::kNhsNumberSystem && id.string_at("value") != nhs_number;
  };
  if (!identifiers->is_array()) return other(*identifiers);
  return std::any_of(identifiers->items().begin(), identifiers->items().end(), other);
}

// Whether a fetched resource is about another patient than the one asked for, as far as the
// answer says: a Patient, or a resource whose subject is given by identifier, carrying
// another NHS number. Merged into this patient's record, it would show a clinician someone
// else's data.
bool about_another_patient(const fhir::Json& resource, std::string_view nhs_number) {
  if (nhs_number.empty()) return false;
  if (resource.string_at("resourceType") == "Patient")
    return names_other_nhs_number(resource.find("identifier"), nhs_number);
  const fhir::Json* subject = resource.find("subject");
  return subject != nullptr && subject->is_object() && names_other_nhs_number(subject->find("identifier"), nhs_number);
}

// The batch text as a JSON document: refused with payload_too_large over
// limits.max_batch_bytes, else with the parser's issue when it is not JSON.
fhir::Result<fhir::Json> parse_batch_document(std::string_view json, const PluginLimits& limits) {
  if (json.size() > limits.max_batch_bytes)
    return Issue::make(ErrorCode::payload_too_large,
                       "batch of " + std::to_string(json.size()) + " bytes is over the limit of " +
                           std::to_string(limits.max_batch_bytes) + " bytes",
                       "batch");
  auto parsed = fhir::parse_json(json, limits.json);
  if (!parsed) {
    // The parser speaks of an HTTP body ("Body is not valid JSON: ..."); here it is a batch.
    std::string why = parsed.issue().diagnostics;
    if (why.rfind("Body ", 0) == 0) why.replace(0, 4, "batch");
    return Issue::make(parsed.issue().code, std::move(why), "batch");
  }
  return std::move(parsed).value();
}

// The batch `doc` describes. What a refusal keeps of the batch (refusal_of) is left in `doc`:
// its identity is moved out only once every check has passed, and raw, kind and dedupe_key
// are copied.
fhir::Result<IngestBatch> batch_from(fhir::Json& doc, const std::string& source) {
  if (!doc.is_object()) return Issue::make(ErrorCode::invalid_value, "batch is not a JSON object", "batch");

  IngestBatch batch;
  batch.source = source;
  if (const fhir::Json* named = doc.find("source")) {
    if (!named->is_string() || named->text() != source)
      return Issue::make(ErrorCode::invalid_value,
                         "batch names another source than the one this plug-in serves ('" + source + "')",
                         "batch.source");
  }
  fhir::Json* identity = doc.find("identity");
  if (identity == nullptr)
    return Issue::make(ErrorCode::invalid_resource, "batch.identity must be a Patient resource", "batch.identity");
  if (auto checked = check_batch_identity(*identity); !checked) return std::move(checked).issue();

  fhir::Json* resources = doc.find("resources");
  if (resources == nullptr || !resources->is_array())
    return Issue::make(ErrorCode::invalid_resource, "batch.resources must be an array of FHIR resources",
                       "batch.resources");
  batch.resources.reserve(resources->items().size());
  for (std::size_t i = 0; i < resources->items().size(); ++i) {
    fhir::Json& resource = resources->items()[i];
    if (!is_resource(resource))
      return Issue::make(ErrorCode::invalid_resource,
                         "batch.resources[" + std::to_string(i) + "] is not a FHIR resource (no resourceType)",
                         "batch.resources");
    batch.resources.push_back(std::move(resource));
  }
  if (auto checked = check_batch_resources(batch.resources); !checked) return std::move(checked).issue();
  // The ingest path files every resource under the identity's record (its subject becomes a
  // reference to it): one whose subject names another NHS number would show a clinician
  // someone else's data, so it is refused, as it is in a fetch answer. The numbers stay out
  // of the text (it is logged).
  // An identity without a valid NHS number cannot be compared: a resource whose subject names
  // one is refused too (the source knows the number: it belongs in the identity).
  const std::string nhs_number = fhir::trusted_nhs_number(*identity);
  for (std::size_t i = 0; i < batch.resources.size(); ++i) {
    const fhir::Json& resource = batch.resources[i];
    const fhir::Json* subject = resource.find("subject");
    if (nhs_number.empty() && subject != nullptr && subject->is_object() &&
        names_other_nhs_number(subject->find("identifier"), ""))
      return Issue::make(ErrorCode::invalid_value,
                         "batch.resources[" + std::to_string(i) + "] (" + std::string(resource.string_at("resourceType")) +
                             "/" + std::string(resource.string_at("id")) +
                             ") names an NHS number in its subject, but the batch's identity carries no valid NHS "
                             "number to check it against: put the patient's NHS number in the identity",
                         "batch.resources[" + std::to_string(i) + "].subject");
    if (about_another_patient(resource, nhs_number))
      return Issue::make(ErrorCode::invalid_value,
                         "batch.resources[" + std::to_string(i) + "] (" + std::string(resource.string_at("resourceType")) +
                             "/" + std::string(resource.string_at("id")) +
                             ") is about another patient: its subject names another NHS number than the batch's "
                             "identity",
                         "batch.resources[" + std::to_string(i) + "].subject");
  }
  // The ingest path does not check them again (IngestBatch::resources_checked).
  batch.resources_checked = true;

  for (auto [key, out] : {std::pair{"raw", &batch.raw}, std::pair{"kind", &batch.kind},
                          std::pair{"dedupe_key", &batch.dedupe_key}}) {
    if (const fhir::Json* value = doc.find(key)) {
      if (!value->is_string())
        return Issue::make(ErrorCode::invalid_value, "batch." + std::string(key) + " must be a string",
                           "batch." + std::string(key));
      *out = value->text();
    }
  }

  // A merge: identifiers {system, value} of records to retire into the identity's record.
  if (fhir::Json* retired = doc.find("retired_identifiers")) {
    if (!retired->is_array())
      return Issue::make(ErrorCode::invalid_value, "batch.retired_identifiers must be an array of Identifiers",
                         "batch.retired_identifiers");
    for (fhir::Json& identifier : retired->items()) {
      if (!identifier.is_object() || identifier.string_at("system").empty() || identifier.string_at("value").empty())
        return Issue::make(ErrorCode::invalid_value, "batch.retired_identifiers holds an entry without system and value",
                           "batch.retired_identifiers");
      batch.retired_identifiers.push_back(std::move(identifier));
    }
  }

  // Contacts for the access policy: {"organisation": ODS code, "date": FHIR dateTime}.
  if (const fhir::Json* encounters = doc.find("encounters")) {
    if (!encounters->is_array())
      return Issue::make(ErrorCode::invalid_value, "batch.encounters must be an array", "batch.encounters");
    for (const fhir::Json& encounter : encounters->items()) {
      std::string_view organisation = encounter.is_object() ? encounter.string_at("organisation") : std::string_view();
      std::string_view date = encounter.is_object() ? encounter.string_at("date") : std::string_view();
      if (organisation.empty() || date.empty())
        return Issue::make(ErrorCode::invalid_value, "batch.encounters holds an entry without organisation and date",
                           "batch.encounters");
      // What the record locator takes, checked now so that the unit is refused at once rather
      // than failing when it is applied.
      const std::string where = "batch.encounters[" + std::to_string(batch.encounters.size()) + "]";
      if (organisation.size() > kMaxOdsCodeBytes ||
          !std::all_of(organisation.begin(), organisation.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)); }))
        return Issue::make(ErrorCode::invalid_value,
                           where + ".organisation must be an ODS code: 1-" + std::to_string(kMaxOdsCodeBytes) +
                               " letters and digits",
                           where + ".organisation");
      if (!fhir::parse_fhir_date(date))
        return Issue::make(ErrorCode::invalid_value,
                           where + ".date is not a FHIR date or dateTime (2024-01-15, 2024-01-15T09:30:00Z)",
                           where + ".date");
      batch.encounters.emplace_back(std::string(organisation), std::string(date));
    }
  }
  batch.identity = std::move(*identity);
  return batch;
}

// What the gateway keeps of a refused batch (read_plugin_batch): `doc` is the batch text
// parsed, or null when it was too large or not JSON.
IngestFailure refusal_of(std::string_view json, const fhir::Json* doc, const std::string& source, fhir::Issue issue,
                         const PluginLimits& limits) {
  IngestFailure failure;
  failure.source = source;
  failure.rejected = true;
  failure.issue = std::move(issue);
  if (json.size() > limits.max_batch_bytes) return failure;
  failure.raw = std::string(json);
  if (doc == nullptr || !doc->is_object()) return failure;
  if (const fhir::Json* raw = doc->find("raw"); raw != nullptr && raw->is_string()) failure.raw = raw->text();
  if (const fhir::Json* kind = doc->find("kind"); kind != nullptr && kind->is_string()) failure.kind = kind->text();
  if (const fhir::Json* key = doc->find("dedupe_key"); key != nullptr && key->is_string())
    failure.dedupe_key = key->text();
  if (const fhir::Json* identity = doc->find("identity"); identity != nullptr && identity->is_object())
    failure.nhs_number = fhir::trusted_nhs_number(*identity);
  return failure;
}

}  // namespace

std::string printable_text(std::string_view text, std::size_t max_bytes) {
  std::string out;
  out.reserve(std::min(text.size(), max_bytes));
  for (char c : text) {
    if (out.size() == max_bytes) break;
    auto u = static_cast<unsigned char>(c);
    out.push_back(u >= 0x20 && u < 0x7f ? c : '?');
  }
  return out;
}

std::string plugin_config_json(const SourceSystem& source) {
  fhir::Json o = object_with_strings({{"name", &source.name}, {"ods_code", &source.ods_code}, {"endpoint", &source.endpoint}});
  o.set("connect_timeout_ms", fhir::Json::integer(source.connect_timeout.count()));
  o.set("fetch_timeout_ms", fhir::Json::integer(source.fetch_timeout.count()));
  fhir::Json settings = fhir::Json::object();
  for (const auto& [key, value] : source.settings) settings.set(key, fhir::Json::string(value));
  o.set("settings", std::move(settings));
  if (!source.credentials.empty()) o.set("credentials", fhir::Json::string(source.credentials));
  return fhir::to_json(o);
}

std::string plugin_fetch_request_json(const PatientKey& patient, const FetchScope& scope) {
  fhir::Json p = object_with_strings({{"id", &patient.patient_id}});
  if (!patient.nhs_number.empty()) p.set("nhs_number", fhir::Json::string(patient.nhs_number));
  fhir::Json ids = fhir::Json::array();
  for (const auto& [system, value] : patient.local_identifiers)
    ids.push_back(object_with_strings({{"system", &system}, {"value", &value}}));
  p.set("identifiers", std::move(ids));
  fhir::Json types = fhir::Json::array();
  for (const auto& type : scope.resource_types) types.push_back(fhir::Json::string(type));
  fhir::Json s = fhir::Json::object();
  s.set("resource_types", std::move(types));
  fhir::Json o = fhir::Json::object();
  o.set("patient", std::move(p));
  o.set("scope", std::move(s));
  return fhir::to_json(o);
}

fhir::Result<IngestBatch> parse_plugin_batch(std::string_view json, const std::string& source,
                                             const PluginLimits& limits) {
  auto doc = parse_batch_document(json, limits);
  if (!doc) return std::move(doc).issue();
  return batch_from(*doc, source);
}

std::variant<IngestBatch, IngestFailure> read_plugin_batch(std::string_view json, const std::string& source,
                                                           const PluginLimits& limits) {
  // One parse serves both the batch and, when it is refused, what is kept of it.
  auto doc = parse_batch_document(json, limits);
  if (!doc) return refusal_of(json, nullptr, source, std::move(doc).issue(), limits);
  auto batch = batch_from(*doc, source);
  if (!batch) return refusal_of(json, &*doc, source, std::move(batch).issue(), limits);
  return std::move(batch).value();
}

fhir::Result<FetchResult> parse_plugin_answer(int status, std::string_view json, const std::string& source,
                                              const PluginLimits& limits, std::string_view nhs_number) {
  if (json.size() > limits.max_response_bytes)
    return answer_error(source, "the answer of " + std::to_string(json.size()) + " bytes is over the limit of " +
                                    std::to_string(limits.max_response_bytes) + " bytes");
  if (status != GW_OK) {
    std::string why = "plug-in status " + std::to_string(status);
    if (!json.empty()) {
      auto outcome = fhir::parse_json(json, limits.json);
      if (outcome && outcome->is_object() && outcome->string_at("resourceType") == "OperationOutcome") {
        std::string text = outcome_text(*outcome);
        if (!text.empty()) why.append(": ").append(text);
      }
    }
    return answer_error(source, why);
  }
  if (json.empty()) return answer_error(source, "the plug-in reported success with an empty answer");
  auto parsed = fhir::parse_json(json, limits.json);
  if (!parsed) return answer_error(source, "the answer is not valid JSON: " + parsed.issue().diagnostics);
  fhir::Json doc = std::move(parsed).value();
  std::string_view type = doc.is_object() ? doc.string_at("resourceType") : std::string_view();
  if (type == "OperationOutcome") {
    std::string text = outcome_text(doc);
    return answer_error(source, text.empty() ? std::string("an OperationOutcome without diagnostics") : text);
  }
  if (type != "Bundle") return answer_error(source, "the answer is not a FHIR Bundle");
  std::string_view bundle_type = doc.string_at("type");
  if (bundle_type != "collection" && bundle_type != "searchset")
    return answer_error(source, "the answer is a Bundle of type '" + printable_text(bundle_type, 40) +
                                    "', not 'collection'");

  FetchResult result;
  result.source = source;
  fhir::Json* entries = doc.find("entry");
  if (entries == nullptr) return result;
  if (!entries->is_array()) return answer_error(source, "Bundle.entry is not an array");
  result.resources.reserve(entries->items().size());
  for (std::size_t i = 0; i < entries->items().size(); ++i) {
    const std::string where = "Bundle.entry[" + std::to_string(i) + "]";
    fhir::Json* resource = entries->items()[i].is_object() ? entries->items()[i].find("resource") : nullptr;
    if (resource == nullptr || !is_resource(*resource)) return answer_error(source, where + " holds no FHIR resource");
    // The checks a pushed resource gets (type, id), so that a fetched one can be merged,
    // de-duplicated and linked like a stored one.
    if (auto checked = check_resource(*resource, where + ".resource"); !checked)
      return answer_error(source, checked.issue().diagnostics);
    // The whole answer is refused: a source that mixes patients up cannot be trusted for
    // the rest of it either. The numbers themselves stay out of the text (it is logged).
    if (about_another_patient(*resource, nhs_number))
      return answer_error(source, where + ".resource is about another patient (another NHS number) than the one "
                                          "asked for");
    result.resources.push_back(std::move(*resource));
  }
  return result;
}

}  // namespace gw::adapters
