// SPDX-License-Identifier: Apache-2.0
#include "gateway/http/locator_resources.h"

#include <algorithm>
#include <iterator>
#include <utility>

#include "fhir/datatypes.h"
#include "fhir/structure_check.h"
#include "fhir/uk_core.h"
#include "gateway/locator/fhir_mapping.h"

namespace gw::http {

using fhir::coding;
using fhir::Issue;
using fhir::ErrorCode;
using fhir::Json;
using fhir::uk::kActCodeSystem;
using fhir::uk::kDocumentReferenceProfile;
using fhir::uk::kNhsNumberVerificationExtension;
using fhir::uk::kNhsNumberVerificationSystem;
using fhir::uk::kOdsOrganisationSystem;
using fhir::uk::kPatientProfile;

namespace {

Json str(std::string_view s) { return fhir::text(s); }
Json codeable(Json c) { return fhir::codeable_concept(std::move(c)); }

// meta.security gains BTG, once, beside any security labels already there.
void add_break_glass_label(Json& meta) {
  Json* sec = meta.find("security");
  if (!sec || !sec->is_array()) {
    meta.set("security", Json::array());
    sec = meta.find("security");
  }
  for (const Json& c : sec->items())
    if (c.is_object() && c.string_at("system") == kActCodeSystem && c.string_at("code") == "BTG") return;
  sec->push_back(coding(kActCodeSystem, "BTG", "break the glass"));
}

Json meta(std::int64_t version, const std::string& last_updated, std::string_view profile, bool break_glass) {
  Json m = Json::object();
  m.set("versionId", Json::string(std::to_string(version)));
  if (!last_updated.empty()) m.set("lastUpdated", Json::string(last_updated));
  Json profiles = Json::array();
  profiles.push_back(str(profile));
  m.set("profile", std::move(profiles));
  if (break_glass) add_break_glass_label(m);
  return m;
}

// A FHIR HumanName; no use when `use` is empty.
Json human_name(const std::string& use, const std::string& family, const std::vector<std::string>& given) {
  Json name = Json::object();
  if (!use.empty()) name.set("use", Json::string(use));
  if (!family.empty()) name.set("family", Json::string(family));
  if (!given.empty()) {
    Json g = Json::array();
    for (const auto& v : given) g.push_back(Json::string(v));
    name.set("given", std::move(g));
  }
  return name;
}

}  // namespace

Json patient_json(const locator::PatientRecord& p, bool break_glass) {
  Json r = Json::object();
  r.set("resourceType", str("Patient"));
  r.set("id", Json::string(p.id));
  r.set("meta", meta(p.version, p.last_updated, kPatientProfile, break_glass));
  const auto& d = p.demographics;
  Json ids = Json::array();
  // An NHS number that fails its check digit is kept in the index as received but is never
  // shown as an NHS number: a clinician must not act on it.
  if (!d.nhs_number.empty() && p.nhs_number_trusted) {
    Json id = Json::object();
    if (!d.nhs_number_verification.empty()) {
      Json ext = Json::object();
      ext.set("url", str(kNhsNumberVerificationExtension));
      ext.set("valueCodeableConcept",
              codeable(coding(kNhsNumberVerificationSystem, d.nhs_number_verification, fhir::uk::nhs_number_verification_display(d.nhs_number_verification))));
      Json exts = Json::array();
      exts.push_back(std::move(ext));
      id.set("extension", std::move(exts));
    }
    id.set("system", str(locator::kNhsNumberSystem));
    id.set("value", Json::string(d.nhs_number));
    ids.push_back(std::move(id));
  }
  for (const auto& l : p.identifiers) {
    Json id = Json::object();
    // The index knows which source system sent an identifier, not which organisation issued
    // it (a trust's feed carries other trusts' numbers too; an import names one source for a
    // whole file), so Identifier.assigner is not claimed: the system URI names the assigning
    // authority's namespace, and the recording source goes in an extension that says just that.
    if (!l.source.empty()) {
      Json recorded_by = Json::object();
      recorded_by.set("type", str("Organization"));
      recorded_by.set("identifier", fhir::identifier(kOdsOrganisationSystem, l.source));
      Json ext = Json::object();
      ext.set("url", str(kIdentifierSourceExtension));
      ext.set("valueReference", std::move(recorded_by));
      Json exts = Json::array();
      exts.push_back(std::move(ext));
      id.set("extension", std::move(exts));
    }
    id.set("system", Json::string(l.system));
    id.set("value", Json::string(l.value));
    ids.push_back(std::move(id));
  }
  if (ids.size() > 0) r.set("identifier", std::move(ids));
  r.set("active", Json::boolean(!p.merged_into));
  // The primary name first (the one clients reading name[0] should see), then the others in
  // the order their source gave them.
  Json names = Json::array();
  if (!d.family.empty() || !d.given.empty()) names.push_back(human_name("official", d.family, d.given));
  for (const auto& n : d.other_names) names.push_back(human_name(n.use, n.family, n.given));
  if (names.size() > 0) r.set("name", std::move(names));
  if (!d.gender.empty()) r.set("gender", Json::string(d.gender));
  if (!d.birth_date.empty()) r.set("birthDate", Json::string(d.birth_date));
  if (!d.deceased.empty()) r.set("deceasedDateTime", Json::string(d.deceased));
  if (!d.postcode.empty()) {
    Json addr = Json::object();
    addr.set("use", str("home"));
    addr.set("postalCode", Json::string(d.postcode));
    Json addrs = Json::array();
    addrs.push_back(std::move(addr));
    r.set("address", std::move(addrs));
  }
  if (!d.gp_practice_ods.empty()) {
    Json gp = Json::object();
    gp.set("type", str("Organization"));
    gp.set("identifier", fhir::identifier(kOdsOrganisationSystem, d.gp_practice_ods));
    Json gps = Json::array();
    gps.push_back(std::move(gp));
    r.set("generalPractitioner", std::move(gps));
  }
  Json links = Json::array();
  auto add_link = [&links](const std::string& other, std::string_view type) {
    Json l = Json::object();
    Json ref = Json::object();
    ref.set("reference", Json::string("Patient/" + other));
    l.set("other", std::move(ref));
    l.set("type", str(type));
    links.push_back(std::move(l));
  };
  if (p.merged_into) add_link(*p.merged_into, "replaced-by");
  for (const auto& from : p.merged_from) add_link(from, "replaces");
  if (links.size() > 0) r.set("link", std::move(links));
  return r;
}

const std::string& served_date(const locator::Pointer& p) { return p.date.empty() ? p.last_updated : p.date; }

Json pointer_json(const locator::Pointer& p, const std::string& nhs_number, bool break_glass) {
  Json r = Json::object();
  r.set("resourceType", str("DocumentReference"));
  r.set("id", Json::string(p.id));
  r.set("meta", meta(p.version, p.last_updated, kDocumentReferenceProfile, break_glass));
  Json master = Json::object();
  master.set("system", str("https://fhir.nhs.uk/Id/nrl-pointer-id"));  // NRL-style pointer id
  master.set("value", Json::string(p.id));
  r.set("masterIdentifier", std::move(master));
  r.set("status", str("current"));
  if (!p.type_code.empty()) r.set("type", codeable(coding(p.type_system, p.type_code, p.type_display)));
  if (!p.category_code.empty()) {
    Json cats = Json::array();
    cats.push_back(codeable(coding(fhir::uk::kSnomedSystem, p.category_code, p.category_display)));
    r.set("category", std::move(cats));
  }
  Json subject = Json::object();
  subject.set("reference", Json::string("Patient/" + p.patient_id));
  if (!nhs_number.empty()) {
    subject.set("identifier", fhir::identifier(locator::kNhsNumberSystem, nhs_number));
  }
  r.set("subject", std::move(subject));
  // The date the source gave; the index's own time of writing only when it gave none (meta.
  // lastUpdated always says when the index last wrote the pointer).
  if (const std::string& date = served_date(p); !date.empty()) r.set("date", Json::string(date));
  Json custodian = Json::object();
  custodian.set("identifier", fhir::identifier(kOdsOrganisationSystem, p.source_ods));
  r.set("custodian", std::move(custodian));
  Json attachment = Json::object();
  attachment.set("contentType", Json::string(p.content_type));
  attachment.set("url", Json::string(p.url));
  Json content = Json::object();
  content.set("attachment", std::move(attachment));
  Json contents = Json::array();
  contents.push_back(std::move(content));
  r.set("content", std::move(contents));
  if (!p.resource_types.empty()) {
    // Which FHIR resource types the record holds: the same extension pointer maintenance
    // reads (locator::kResourceTypesExtension), so a pointer round-trips.
    Json exts = Json::array();
    for (const auto& t : p.resource_types) {
      Json e = Json::object();
      e.set("url", str(locator::kResourceTypesExtension));
      e.set("valueCode", Json::string(t));
      exts.push_back(std::move(e));
    }
    r.set("extension", std::move(exts));
  }
  return r;
}

void mark_break_glass(Json& resource) {
  Json* m = resource.find("meta");
  if (!m || !m->is_object()) {
    resource.set("meta", Json::object());
    m = resource.find("meta");
  }
  add_break_glass_label(*m);
}

Json withheld_outcome(std::size_t count, std::string_view what) {
  Issue w = Issue::make(ErrorCode::forbidden, std::to_string(count) + " " + std::string(what) +
                                                  "(s) for this patient are withheld under the sensitivity policy "
                                                  "for your role; they are not counted in total");
  w.severity = fhir::Severity::warning;
  return fhir::operation_outcome(w);
}

fhir::Result<Subset> subset_of(const fhir::SearchRequest& s) {
  const bool summarised = s.summary != fhir::SummaryMode::none && s.summary != fhir::SummaryMode::false_;
  if (summarised && !s.elements.empty())
    return Issue::make(ErrorCode::invalid_search_parameter, "give either _summary or _elements, not both", "_elements");
  return Subset{s.summary, s.elements};
}

fhir::Result<Subset> search_subset(fhir::SearchRequest& s, fhir::Handling handling, std::string_view type) {
  if (s.summary == fhir::SummaryMode::true_ || s.summary == fhir::SummaryMode::text) {
    if (handling == fhir::Handling::strict)
      return Issue::make(ErrorCode::invalid_search_parameter,
                         "_summary=true and _summary=text are not supported on " + std::string(type) +
                             " here; use _elements, or _summary=count",
                         "_summary");
    s.summary = fhir::SummaryMode::none;
  }
  return subset_of(s);
}

fhir::Result<Subset> read_subset(const fhir::QueryParams& query, fhir::Handling handling,
                                 const fhir::SearchParamRegistry& registry, std::string_view type) {
  fhir::QueryParams result_params;
  for (const auto& kv : query)
    if (kv.first == "_summary" || kv.first == "_elements") result_params.push_back(kv);
  auto parsed = fhir::parse_search(type, result_params, registry, fhir::Handling::strict);
  if (!parsed) return std::move(parsed).issue();
  if (parsed->summary == fhir::SummaryMode::count)
    return Issue::make(ErrorCode::invalid_search_parameter, "_summary=count applies to searches, not to a read",
                       "_summary");
  if (type == "Patient") return subset_of(*parsed);
  return search_subset(*parsed, handling, type);
}

fhir::Status unserved_result_params(fhir::SearchRequest& s, fhir::Handling handling, std::string_view type) {
  if (handling == fhir::Handling::lenient) s.sort.clear();
  if (!s.include.empty() || !s.revinclude.empty() || !s.sort.empty())
    return Issue::make(ErrorCode::invalid_search_parameter,
                       "_include, _revinclude and _sort are not supported on " + std::string(type));
  return fhir::Ok{};
}

namespace {

// The Patient elements FHIR R4 marks isSummary (deceased[x] under the one name we emit).
constexpr std::string_view kPatientSummaryElements[] = {
    "identifier", "active", "name", "telecom", "gender", "birthDate", "deceasedDateTime", "address",
    "managingOrganization", "link"};

// The top-level elements FHIR R4 makes mandatory (min 1) in the types served here (Patient
// has none). R4 search.html: _elements and _summary=text keep them whether asked for or
// not, so that a cut-down resource is still a valid one.
constexpr std::pair<std::string_view, std::string_view> kMandatoryElements[] = {
    {"DiagnosticReport", "code"},     {"DiagnosticReport", "status"}, {"DocumentReference", "content"},
    {"DocumentReference", "status"}, {"Encounter", "class"},         {"Encounter", "status"},
    {"Observation", "code"},          {"Observation", "status"}};

}  // namespace

// `r` cut down to what `s` asks for (any resource type for _elements; _summary=true knows the
// Patient's summary elements only). resourceType, id and meta always stay (they are mandatory
// for a resource we serve), and so do the type's mandatory elements (kMandatoryElements); a
// cut-down resource carries the SUBSETTED tag so that nobody takes it for the whole record.
// _summary=data keeps everything (we send no narrative).
Json subsetted(const Json& r, const Subset& s) {
  if (!s.applies()) return r;
  const std::string_view type = r.string_at("resourceType");
  auto keep = [&s, type](std::string_view name) {
    if (name == "resourceType" || name == "id" || name == "meta") return true;
    if (std::find(std::begin(kMandatoryElements), std::end(kMandatoryElements), std::pair(type, name)) !=
        std::end(kMandatoryElements))
      return true;
    if (s.summary == fhir::SummaryMode::text) return name == "text";
    if (s.summary == fhir::SummaryMode::true_)
      return std::find(std::begin(kPatientSummaryElements), std::end(kPatientSummaryElements), name) !=
             std::end(kPatientSummaryElements);
    // A choice element is asked for by its base name: deceased for deceasedDateTime, value
    // for valueQuantity (the type follows the base name with a capital letter).
    return std::any_of(s.elements.begin(), s.elements.end(), [name](const std::string& e) {
      return name == e || (name.size() > e.size() && name.rfind(e, 0) == 0 && name[e.size()] >= 'A' &&
                           name[e.size()] <= 'Z');
    });
  };
  Json out = Json::object();
  for (const auto& [name, value] : r.members())
    if (keep(name)) out.set(name, value);
  if (Json* m = out.find("meta")) {
    Json tags = Json::array();
    tags.push_back(coding("http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "SUBSETTED", "subsetted"));
    m->set("tag", std::move(tags));
  }
  return out;
}

fhir::Result<std::string> patient_id_of(const fhir::ReferenceValue& ref, const std::string& base_url,
                                        const std::string& param) {
  auto bad = [&](const std::string& why) {
    return fhir::Issue::make(fhir::ErrorCode::invalid_search_parameter, param + ": " + why, param);
  };
  if (ref.url.empty()) {
    if (!ref.type.empty() && ref.type != "Patient") return bad("must reference a Patient");
    return ref.id;
  }
  const std::string own = base_url + "/Patient/";
  const std::string_view url(ref.url);
  if (url.substr(0, own.size()) != own || !fhir::is_valid_id(url.substr(own.size())))
    return bad("an absolute reference must name a Patient on this server: " + own +
               "{id}; patients of other servers are not held here");
  return std::string(url.substr(own.size()));
}

}  // namespace gw::http
