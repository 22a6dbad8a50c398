// SPDX-License-Identifier: Apache-2.0
// SqliteTransaction's primitives on care relationships and encounters (sqlite_transaction.h).
#include "gateway/locator/sqlite_transaction_internal.h"

namespace gw::locator {

fhir::Result<std::vector<CareTeamMember>> SqliteTransaction::care_team(const std::string& patient_id) {
  auto pk = pk_of(patient_id);
  if (!pk) return std::move(pk).issue();
  StatementUse q(st(S::care_team_of));
  q->bind(1, *pk);
  std::vector<CareTeamMember> out;
  for (;;) {
    auto row = q->step();
    if (!row) return storage(row.issue());
    if (!*row) break;
    out.push_back({q->column_text(0), q->column_text(1), q->column_text(2)});
  }
  return out;
}

fhir::Status SqliteTransaction::upsert_care_team_member(const std::string& patient_id, const CareTeamMember& m) {
  auto pk = pk_of(patient_id);
  if (!pk) return std::move(pk).issue();
  StatementUse q(st(S::upsert_care_team));
  q->bind(1, *pk).bind(2, m.member).bind(4, m.source_ods);
  if (m.until.empty())
    q->bind_null(3);
  else
    q->bind(3, m.until);
  if (auto r = q->run(); !r) return storage(r.issue());
  return fhir::Ok{};
}

fhir::Result<bool> SqliteTransaction::delete_care_team_member(const std::string& patient_id,
                                                              const std::string& member) {
  auto pk = pk_of(patient_id);
  if (!pk) return std::move(pk).issue();
  StatementUse q(st(S::delete_care_team_member));
  q->bind(1, *pk).bind(2, member);
  if (auto r = q->run(); !r) return storage(r.issue());
  return db_.changes() == 1;
}

fhir::Result<std::vector<Encounter>> SqliteTransaction::encounters(const std::string& patient_id) {
  auto pk = pk_of(patient_id);
  if (!pk) return std::move(pk).issue();
  StatementUse q(st(S::encounters_of));
  q->bind(1, *pk);
  std::vector<Encounter> out;
  for (;;) {
    auto row = q->step();
    if (!row) return storage(row.issue());
    if (!*row) break;
    out.push_back({q->column_text(0), q->column_int64(1), q->column_text(2)});
  }
  return out;
}

fhir::Result<bool> SqliteTransaction::insert_encounter_if_new(const std::string& patient_id, const Encounter& e) {
  auto pk = pk_of(patient_id);
  if (!pk) return std::move(pk).issue();
  StatementUse q(st(S::insert_encounter_if_new));
  q->bind(1, *pk).bind(2, e.organisation_ods).bind(3, e.at).bind(4, e.source_ods);
  if (auto r = q->run(); !r) return storage(r.issue());
  return db_.changes() == 1;
}

fhir::Status SqliteTransaction::trim_encounters(const std::string& patient_id, const std::string& organisation_ods,
                                                std::size_t per_organisation, std::size_t per_patient) {
  auto pk = pk_of(patient_id);
  if (!pk) return std::move(pk).issue();
  {
    StatementUse q(st(S::trim_encounters_organisation));
    q->bind(1, *pk).bind(2, organisation_ods).bind(3, static_cast<std::int64_t>(per_organisation));
    if (auto r = q->run(); !r) return storage(r.issue());
  }
  StatementUse q(st(S::trim_encounters_patient));
  q->bind(1, *pk).bind(2, static_cast<std::int64_t>(per_patient));
  if (auto r = q->run(); !r) return storage(r.issue());
  return fhir::Ok{};
}

fhir::Status SqliteTransaction::delete_encounters(const std::string& patient_id) {
  auto pk = pk_of(patient_id);
  if (!pk) return std::move(pk).issue();
  StatementUse q(st(S::delete_encounters));
  q->bind(1, *pk);
  if (auto r = q->run(); !r) return storage(r.issue());
  return fhir::Ok{};
}

fhir::Status SqliteTransaction::insert_objection_change(const ObjectionChange& c) {
  StatementUse q(st(S::insert_objection_change));
  q->bind(1, c.id).bind(2, c.patient_id).bind(3, c.nhs_number).bind(4, std::int64_t{c.objection ? 1 : 0});
  q->bind(5, c.by).bind(6, c.note).bind(7, c.request_id).bind(8, c.time_ms);
  if (auto r = q->run(); !r) return storage(r.issue());
  return fhir::Ok{};
}

fhir::Result<std::vector<ObjectionChange>> SqliteTransaction::objection_changes(std::size_t max) {
  StatementUse q(st(S::objection_changes));
  q->bind(1, static_cast<std::int64_t>(max));
  std::vector<ObjectionChange> out;
  for (;;) {
    auto row = q->step();
    if (!row) return storage(row.issue());
    if (!*row) break;
    out.push_back({q->column_text(0), q->column_text(1), q->column_text(2), q->column_int64(3) != 0,
                   q->column_text(4), q->column_text(5), q->column_text(6), q->column_int64(7)});
  }
  return out;
}

fhir::Status SqliteTransaction::delete_objection_change(const std::string& id) {
  StatementUse q(st(S::delete_objection_change));
  q->bind(1, id);
  if (auto r = q->run(); !r) return storage(r.issue());
  return fhir::Ok{};
}

}  // namespace gw::locator
