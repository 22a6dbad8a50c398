// SPDX-License-Identifier: Apache-2.0
// The care-relationship write rules (issue #5 item 4, "legitimate relationship"), shared by
// every Locator backend over its IndexTransaction: care team membership and encounters, their
// validation and bounds, and how a merge carries them to the survivor.
#include <algorithm>
#include <set>

#include "fhir/date_range.h"
#include "gateway/locator/index_transaction.h"
#include "gateway/locator/locator.h"

namespace gw::locator {
namespace {

using fhir::ErrorCode;
using fhir::Issue;

// 9999-12-31T23:59:59Z: the last second a FHIR instant can name.
constexpr std::int64_t kMaxEpochSeconds = 253402300799;

fhir::Status check_acting(const std::string& acting) {
  if (acting.empty())
    return Issue::make(ErrorCode::forbidden, "the acting source system has no ODS code", "source_ods");
  if (acting.size() > kMaxCodeBytes)
    return Issue::make(ErrorCode::invalid_value,
                       "the acting source ODS code is longer than " + std::to_string(kMaxCodeBytes) + " bytes",
                       "source_ods");
  return fhir::Ok{};
}

fhir::Status check_patient_id(const std::string& id) {
  if (id.empty()) return Issue::make(ErrorCode::missing_value, "patient_id is required", "patient_id");
  if (id.size() > kMaxIdBytes)
    return Issue::make(ErrorCode::invalid_value,
                       "patient_id is longer than " + std::to_string(kMaxIdBytes) + " bytes", "patient_id");
  return fhir::Ok{};
}

}  // namespace

// ODS codes are short alphanumerics with no check digit (CONVENTIONS.md "ODS codes"): checked
// loosely, as letters and digits within the locator's code limit.
fhir::Status check_ods(const std::string& ods, const std::string& expr) {
  if (ods.empty()) return Issue::make(ErrorCode::missing_value, expr + " is required", expr);
  const bool alnum = std::all_of(ods.begin(), ods.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
  });
  if (!alnum || ods.size() > kMaxCodeBytes)
    return Issue::make(ErrorCode::invalid_value,
                       expr + " must be an ODS code: 1-" + std::to_string(kMaxCodeBytes) + " letters and digits",
                       expr);
  return fhir::Ok{};
}

namespace {

// A member is compared byte for byte with a token's subject or organisation, so it is kept to
// visible ASCII with inner spaces only: nothing invisible can make two ids look alike.
fhir::Status check_member(const std::string& m) {
  if (m.empty()) return Issue::make(ErrorCode::missing_value, "member is required", "member");
  const bool printable =
      std::all_of(m.begin(), m.end(), [](char c) { return c >= 0x20 && c <= 0x7e; }) && m.front() != ' ' &&
      m.back() != ' ';
  if (m.size() > kMaxCareTeamMemberBytes || !printable)
    return Issue::make(ErrorCode::invalid_value,
                       "member must be a user id or an ODS code: 1-" + std::to_string(kMaxCareTeamMemberBytes) +
                           " printable ASCII characters, without leading or trailing spaces",
                       "member");
  return fhir::Ok{};
}

fhir::Status check_until(const std::string& until) {
  if (until.size() > kMaxCodeBytes || !fhir::parse_fhir_date(until).ok())
    return Issue::make(ErrorCode::invalid_value,
                       "until must be a FHIR date or dateTime, e.g. 2026-12-31 or 2026-12-31T17:00:00Z", "until");
  return fhir::Ok{};
}

// True when membership until `a` lasts longer than until `b` (empty: open-ended, which
// nothing outlasts).
bool lasts_longer(const std::string& a, const std::string& b) {
  if (b.empty()) return false;
  if (a.empty()) return true;
  auto ra = fhir::parse_fhir_date(a);
  auto rb = fhir::parse_fhir_date(b);
  if (!ra) return false;
  if (!rb) return true;
  return ra->end > rb->end;
}

// The active record `patient_id` resolves to (merges followed), or not_found.
fhir::Result<PatientRecord> active_patient(IndexTransaction& tx, const std::string& patient_id) {
  auto rec = final_record(tx, patient_id);
  if (!rec) return std::move(rec).issue();
  if (!*rec) return Issue::make(ErrorCode::not_found, "no patient with this id in the record locator", "patient_id");
  return std::move(**rec);
}

}  // namespace

bool care_team_member_current(const CareTeamMember& m, std::int64_t now_epoch_seconds) {
  if (m.until.empty()) return true;
  auto range = fhir::parse_fhir_date(m.until);
  return range.ok() && now_epoch_seconds < range->end;
}

fhir::Status apply_add_care_team_member(IndexTransaction& tx, const std::string& acting,
                                        const std::string& patient_id, const std::string& member,
                                        const std::optional<std::string>& until, const std::string& now) {
  if (auto s = check_acting(acting); !s) return s;
  if (auto s = check_patient_id(patient_id); !s) return s;
  if (auto s = check_member(member); !s) return s;
  const std::string until_text = until.value_or(std::string());
  if (!until_text.empty())
    if (auto s = check_until(until_text); !s) return s;
  auto now_range = fhir::parse_fhir_date(now);
  if (!now_range) return Issue::make(ErrorCode::internal_error, "record locator clock gave an unreadable time");

  auto patient = active_patient(tx, patient_id);
  if (!patient) return std::move(patient).issue();
  auto team = tx.care_team(patient->id);
  if (!team) return std::move(team).issue();
  // Members whose membership has ended no longer count: they are dropped here, so the team
  // stays bounded by its current members.
  bool known = false;
  std::size_t current = 0;
  for (const CareTeamMember& m : *team) {
    if (m.member == member) {
      known = true;
      continue;
    }
    if (care_team_member_current(m, now_range->begin)) {
      ++current;
      continue;
    }
    auto gone = tx.delete_care_team_member(patient->id, m.member);
    if (!gone) return std::move(gone).issue();
  }
  if (!known && current >= kMaxCareTeamMembers)
    return Issue::make(ErrorCode::conflict,
                       "the patient's care team already has " + std::to_string(kMaxCareTeamMembers) +
                           " current members; remove one before adding another",
                       "member");
  return tx.upsert_care_team_member(patient->id, CareTeamMember{member, until_text, acting});
}

fhir::Status apply_remove_care_team_member(IndexTransaction& tx, const std::string& acting,
                                           const std::string& patient_id, const std::string& member) {
  if (auto s = check_acting(acting); !s) return s;
  if (auto s = check_patient_id(patient_id); !s) return s;
  if (auto s = check_member(member); !s) return s;
  auto patient = active_patient(tx, patient_id);
  if (!patient) return std::move(patient).issue();
  auto removed = tx.delete_care_team_member(patient->id, member);
  if (!removed) return std::move(removed).issue();
  if (!*removed) return Issue::make(ErrorCode::not_found, "this member is not in the patient's care team", "member");
  return fhir::Ok{};
}

fhir::Status apply_record_encounter(IndexTransaction& tx, const std::string& acting, const std::string& patient_id,
                                    const std::string& organisation_ods, std::int64_t at_epoch_seconds) {
  if (auto s = check_acting(acting); !s) return s;
  if (auto s = check_patient_id(patient_id); !s) return s;
  if (auto s = check_ods(organisation_ods, "organisation_ods"); !s) return s;
  if (at_epoch_seconds < 0 || at_epoch_seconds > kMaxEpochSeconds)
    return Issue::make(ErrorCode::invalid_value, "the encounter time must lie between 1970 and the end of 9999", "at");
  auto patient = active_patient(tx, patient_id);
  if (!patient) return std::move(patient).issue();
  auto inserted = tx.insert_encounter_if_new(patient->id, Encounter{organisation_ods, at_epoch_seconds, acting});
  if (!inserted) return std::move(inserted).issue();
  if (!*inserted) return fhir::Ok{};  // the same encounter again
  return tx.trim_encounters(patient->id, organisation_ods, kMaxEncountersPerOrganisation, kMaxEncountersPerPatient);
}

fhir::Status move_care_relationships(IndexTransaction& tx, const std::string& from, const std::string& to) {
  auto from_team = tx.care_team(from);
  if (!from_team) return std::move(from_team).issue();
  auto to_team = tx.care_team(to);
  if (!to_team) return std::move(to_team).issue();
  for (const CareTeamMember& m : *from_team) {
    const auto there = std::find_if(to_team->begin(), to_team->end(),
                                    [&](const CareTeamMember& t) { return t.member == m.member; });
    if (there == to_team->end() || lasts_longer(m.until, there->until))
      if (auto s = tx.upsert_care_team_member(to, m); !s) return s;
    auto gone = tx.delete_care_team_member(from, m.member);
    if (!gone) return std::move(gone).issue();
  }

  auto from_encounters = tx.encounters(from);
  if (!from_encounters) return std::move(from_encounters).issue();
  std::set<std::string> organisations;
  for (const Encounter& e : *from_encounters) {
    auto inserted = tx.insert_encounter_if_new(to, e);
    if (!inserted) return std::move(inserted).issue();
    organisations.insert(e.organisation_ods);
  }
  if (auto s = tx.delete_encounters(from); !s) return s;
  for (const std::string& org : organisations)
    if (auto s = tx.trim_encounters(to, org, kMaxEncountersPerOrganisation, kMaxEncountersPerPatient); !s) return s;
  return fhir::Ok{};
}

}  // namespace gw::locator
