// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the mapping layer of `gw-locator import` (tools/locator_cli), on a Bundle,
// a single resource or NDJSON lines: each entry's Patient through identity_from_patient, each
// DocumentReference through pointer_from_document_reference and subject_identifier, the
// records checked with check_import_record and imported into an in-memory FakeLocator (no
// SQLite). The first byte picks the shape (even: one JSON document, odd: NDJSON); the rest is
// the file's text. Properties, for any input:
// - never crashes (ASan+UBSan);
// - every entry is either mapped (a record check_import_record passes, and the import takes
//   it) or refused with a non-empty diagnostic; a refusal by the mapping names the field
//   (expression), a refusal by the import is the one check_import_record gives; a mapped
//   pointer never makes the record of its Patient fail the check;
// - an indexed patient's NHS number is trusted exactly when it passes the check digit;
// - a subject identifier has both system and value;
// - deterministic: the same input twice gives the same outcome, entry by entry.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fhir/json.h"
#include "fhir/nhs_number.h"
#include "gateway/locator/fake_locator.h"
#include "gateway/locator/fhir_mapping.h"
#include "gateway/locator/index_transaction.h"

namespace {

using gw::locator::ImportRecord;

constexpr std::string_view kSource = "RR8";

void require(bool ok) {
  if (!ok) __builtin_trap();
}

// The resources of one JSON value as the import takes them: a Bundle's entry[].resource, or
// the value itself.
void collect(fhir::Json& value, std::vector<fhir::Json>& resources) {
  if (!value.is_object()) return;
  if (value.string_at("resourceType") != "Bundle") {
    resources.push_back(std::move(value));
    return;
  }
  fhir::Json* entries = value.find("entry");
  if (!entries || !entries->is_array()) return;
  for (auto& e : entries->items())
    if (fhir::Json* res = e.is_object() ? e.find("resource") : nullptr; res && res->is_object())
      resources.push_back(std::move(*res));
}

std::vector<fhir::Json> resources_of(std::string_view text, bool ndjson) {
  std::vector<fhir::Json> resources;
  if (!ndjson) {
    if (auto j = fhir::parse_json(text)) collect(*j, resources);
    return resources;
  }
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    if (auto j = fhir::parse_json(text.substr(pos, nl - pos))) collect(*j, resources);
    pos = nl + 1;
  }
  return resources;
}

std::string refusal(const fhir::Issue& i) { return i.diagnostics + " [" + i.expression + "]"; }

// One run of the whole mapping and import; returns its outcome, entry by entry, as text.
std::string run(std::string_view text, bool ndjson) {
  std::vector<fhir::Json> resources = resources_of(text, ndjson);
  std::string log;
  std::vector<ImportRecord> records;
  std::vector<std::string> patient_ids;  // Patient.id of each record, to attach pointers by
  for (const auto& r : resources) {
    if (r.string_at("resourceType") != "Patient") continue;
    auto claim = gw::locator::identity_from_patient(r, kSource);
    if (!claim) {
      require(!claim.issue().diagnostics.empty() && !claim.issue().expression.empty());
      log += "patient refused: " + refusal(claim.issue()) + "\n";
      continue;
    }
    require(claim->source_ods == kSource);
    records.push_back(ImportRecord{std::move(*claim), {}});
    patient_ids.emplace_back(r.string_at("id"));
  }
  for (auto& r : resources) {
    if (r.string_at("resourceType") != "DocumentReference") continue;
    if (auto id = gw::locator::subject_identifier(r)) require(!id->system.empty() && !id->value.empty());
    auto ptr = gw::locator::pointer_from_document_reference(r);
    if (!ptr) {
      require(!ptr.issue().diagnostics.empty());
      log += "pointer refused: " + refusal(ptr.issue()) + "\n";
      continue;
    }
    // As the import attaches a pointer to a Patient of the same file by its reference.
    for (std::size_t i = 0; i < records.size(); ++i)
      if (!patient_ids[i].empty() && ptr->patient_id == patient_ids[i]) {
        records[i].pointers.push_back(*ptr);
        break;
      }
  }
  std::vector<bool> passes;
  for (const auto& rec : records) {
    auto s = gw::locator::check_import_record(rec);
    if (!s) require(!s.issue().diagnostics.empty());
    passes.push_back(s.ok());
    // A pointer the mapping accepted never sinks the record of the Patient it is filed
    // under: its faults are refused at the DocumentReference, naming that entry.
    if (!s) require(!gw::locator::check_import_record(ImportRecord{rec.identity, {}}).ok());
  }
  auto loc = gw::locator::make_fake_locator();
  auto result = loc->import(records);
  require(result.ok() && result->records.size() == records.size());
  for (std::size_t i = 0; i < records.size(); ++i) {
    const auto& r = result->records[i];
    if (!r) {
      require(!r.issue().diagnostics.empty());
      // Only what the index holds can refuse a checked record; an empty index at the start
      // holds only this file's records, and none of them claims a pointer id of another
      // custodian unless two pointers share an id.
      if (passes[i]) {
        log += "import refused (index): " + refusal(r.issue()) + "\n";
        continue;
      }
      auto s = gw::locator::check_import_record(records[i]);
      require(r.issue().diagnostics == s.issue().diagnostics);
      log += "import refused: " + refusal(r.issue()) + "\n";
      continue;
    }
    require(passes[i]);
    auto p = loc->read_patient(r->patient_id);
    require(p.ok() && p->has_value());
    const auto& d = (*p)->demographics;
    require((*p)->nhs_number_trusted == (!d.nhs_number.empty() && fhir::is_valid_nhs_number(d.nhs_number)));
    log += "imported: " + std::string(gw::locator::outcome_name(r->outcome)) + " nhs=" + d.nhs_number +
           ((*p)->nhs_number_trusted ? " trusted" : "") + " pointers=" + std::to_string(records[i].pointers.size()) +
           "\n";
  }
  return log;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0 || size > 64 * 1024) return 0;
  const bool ndjson = (data[0] & 1) != 0;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  require(run(text, ndjson) == run(text, ndjson));
  return 0;
}
