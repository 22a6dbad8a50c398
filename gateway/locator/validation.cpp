// SPDX-License-Identifier: Apache-2.0
// The locator's input checks (index_transaction.h): an identity claim and a pointer, each
// field against its limit and its FHIR type, before a write rule reads the index.
#include <algorithm>
#include <string>

#include "fhir/date_range.h"
#include "fhir/resource_types.h"
#include "gateway/locator/index_transaction.h"
#include "gateway/locator/locator.h"

namespace gw::locator {

using fhir::ErrorCode;
using fhir::Issue;

namespace {

fhir::Status too_long(const std::string& expr, std::size_t limit) {
  return Issue::make(ErrorCode::invalid_value, expr + " is longer than " + std::to_string(limit) + " bytes", expr);
}

}  // namespace

fhir::Status check_len(std::string_view v, std::size_t limit, const std::string& expr) {
  if (v.size() > limit) return too_long(expr, limit);
  return fhir::Ok{};
}

bool is_name_use(std::string_view u) {
  for (std::string_view code : {"usual", "official", "temp", "nickname", "anonymous", "old", "maiden"})
    if (u == code) return true;
  return false;
}

fhir::Status check_required(std::string_view v, std::size_t limit, const std::string& expr) {
  if (v.empty()) return Issue::make(ErrorCode::missing_value, expr + " is required", expr);
  return check_len(v, limit, expr);
}

namespace {

bool is_fhir_id(std::string_view id) {
  if (id.empty() || id.size() > kMaxIdBytes) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
  });
}

// Birth dates are dates (YYYY, YYYY-MM, YYYY-MM-DD), never dateTimes.
bool is_fhir_date(std::string_view v) {
  return (v.size() == 4 || v.size() == 7 || v.size() == 10) && fhir::parse_fhir_date(v).ok();
}

bool is_gender(std::string_view g) { return g == "male" || g == "female" || g == "other" || g == "unknown"; }

// A name's family and given names against their limits; `at` prefixes the field names.
fhir::Status check_name(const std::string& family, const std::vector<std::string>& given, const std::string& at) {
  if (auto s = check_len(family, kMaxTextBytes, at + "family"); !s) return s;
  if (given.size() > kMaxGivenNames)
    return Issue::make(ErrorCode::invalid_value, "more than " + std::to_string(kMaxGivenNames) + " given names",
                       at + "given");
  for (std::size_t i = 0; i < given.size(); ++i)
    if (auto s = check_len(given[i], kMaxTextBytes, at + "given[" + std::to_string(i) + "]"); !s) return s;
  return fhir::Ok{};
}

}  // namespace

fhir::Status validate_claim(const IdentityClaim& c) {
  const Demographics& d = c.demographics;
  if (auto s = check_len(c.source_ods, kMaxCodeBytes, "source_ods"); !s) return s;
  if (auto s = check_len(d.nhs_number, kMaxCodeBytes, "demographics.nhs_number"); !s) return s;
  if (auto s = check_len(d.nhs_number_verification, kMaxCodeBytes, "demographics.nhs_number_verification"); !s) return s;
  if (auto s = check_name(d.family, d.given, "demographics."); !s) return s;
  if (d.other_names.size() >= kMaxNames)
    return Issue::make(ErrorCode::invalid_value, "more than " + std::to_string(kMaxNames) + " names",
                       "demographics.other_names");
  for (std::size_t i = 0; i < d.other_names.size(); ++i) {
    const HumanName& n = d.other_names[i];
    const std::string at = "demographics.other_names[" + std::to_string(i) + "]";
    if (n.family.empty() && n.given.empty())
      return Issue::make(ErrorCode::missing_value, "a name needs a family or a given name", at);
    if (!n.use.empty() && !is_name_use(n.use))
      return Issue::make(ErrorCode::invalid_value,
                         "name use must be one of usual, official, temp, nickname, anonymous, old, maiden", at + ".use");
    if (auto s = check_name(n.family, n.given, at + "."); !s) return s;
  }
  if (!d.birth_date.empty() && !is_fhir_date(d.birth_date))
    return Issue::make(ErrorCode::invalid_value, "birth date must be a date: YYYY, YYYY-MM or YYYY-MM-DD",
                       "demographics.birth_date");
  if (!d.gender.empty() && !is_gender(d.gender))
    return Issue::make(ErrorCode::invalid_value, "gender must be one of male, female, other, unknown",
                       "demographics.gender");
  if (auto s = check_len(d.postcode, kMaxCodeBytes, "demographics.postcode"); !s) return s;
  if (auto s = check_len(d.gp_practice_ods, kMaxCodeBytes, "demographics.gp_practice_ods"); !s) return s;
  if (!d.deceased.empty() && (d.deceased.size() > kMaxCodeBytes || !fhir::parse_fhir_date(d.deceased).ok()))
    return Issue::make(ErrorCode::invalid_value, "date of death must be a FHIR date or dateTime",
                       "demographics.deceased");
  if (c.identifiers.size() > kMaxIdentifiers)
    return Issue::make(ErrorCode::invalid_value, "more than " + std::to_string(kMaxIdentifiers) + " identifiers",
                       "identifiers");
  for (std::size_t i = 0; i < c.identifiers.size(); ++i) {
    const Identifier& id = c.identifiers[i];
    const std::string at = "identifiers[" + std::to_string(i) + "]";
    if (auto s = check_required(id.system, kMaxUriBytes, at + ".system"); !s) return s;
    if (auto s = check_required(id.value, kMaxTextBytes, at + ".value"); !s) return s;
    if (auto s = check_len(id.source, kMaxCodeBytes, at + ".source"); !s) return s;
    if (id.system == kNhsNumberSystem)
      return Issue::make(ErrorCode::invalid_value,
                         "an NHS number is not a local identifier: send it as demographics.nhs_number", at + ".system");
  }
  return fhir::Ok{};
}

fhir::Status validate_pointer(const Pointer& p) {
  if (!p.date.empty() && !is_fhir_instant(p.date))
    return Issue::make(ErrorCode::invalid_value,
                       "date must be a FHIR instant with seconds and a time zone, e.g. 2026-03-01T09:30:00Z", "date");
  if (!p.id.empty() && !is_fhir_id(p.id))
    return Issue::make(ErrorCode::invalid_value, "pointer id must be 1-64 characters of A-Z, a-z, 0-9, '-' and '.'",
                       "id");
  if (auto s = check_required(p.patient_id, kMaxIdBytes, "patient_id"); !s) return s;
  if (auto s = check_required(p.type_system, kMaxUriBytes, "type_system"); !s) return s;
  if (auto s = check_required(p.type_code, kMaxTextBytes, "type_code"); !s) return s;
  if (auto s = check_len(p.type_display, kMaxTextBytes, "type_display"); !s) return s;
  if (auto s = check_len(p.category_code, kMaxTextBytes, "category_code"); !s) return s;
  if (auto s = check_len(p.category_display, kMaxTextBytes, "category_display"); !s) return s;
  if (auto s = check_required(p.url, kMaxUrlBytes, "url"); !s) return s;
  if (auto s = check_required(p.content_type, kMaxTextBytes, "content_type"); !s) return s;
  if (p.resource_types.size() > kMaxResourceTypes)
    return Issue::make(ErrorCode::invalid_value, "more than " + std::to_string(kMaxResourceTypes) + " resource types",
                       "resource_types");
  for (std::size_t i = 0; i < p.resource_types.size(); ++i)
    if (!fhir::is_r4_resource_type(p.resource_types[i]))
      return Issue::make(ErrorCode::invalid_value, "not a FHIR R4 resource type",
                         "resource_types[" + std::to_string(i) + "]");
  return fhir::Ok{};
}

}  // namespace gw::locator
