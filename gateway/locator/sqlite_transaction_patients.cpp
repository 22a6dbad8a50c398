// SPDX-License-Identifier: Apache-2.0
// SqliteTransaction's primitives on patients (sqlite_transaction.h): the lookups identity
// resolution matches on, the patient row and its names, identifiers, conflicts and merges.
#include <initializer_list>

#include "fhir/date_range.h"
#include "gateway/locator/sqlite_transaction_internal.h"

namespace gw::locator {

fhir::Result<std::optional<PatientRecord>> SqliteTransaction::patient(const std::string& id) {
  std::int64_t pk = 0;
  std::optional<PatientRecord> out;
  {
    StatementUse q(st(S::patient_by_id));
    q->bind(1, id);
    auto row = q->step();
    if (!row) return storage(row.issue());
    if (!*row) return out;
    pk = q->column_int64(0);
    out = patient_from_row(*q);
  }
  StatementUse g(st(S::given_of));
  g->bind(1, pk);
  for (;;) {
    auto row = g->step();
    if (!row) return storage(row.issue());
    if (!*row) break;
    out->demographics.given.push_back(g->column_text(0));
  }
  if (auto s = read_other_names(st(S::other_names_of), pk, out->demographics.other_names); !s) return std::move(s).issue();
  remember_pk(id, pk);
  return out;
}

fhir::Result<std::optional<std::string>> SqliteTransaction::active_patient_with_nhs_number(std::string_view nhs) {
  if (filters_on_ && nhs_numbers_seen_.active() && !nhs_numbers_seen_.may_hold(key_hash({nhs})))
    return std::optional<std::string>();
  StatementUse q(st(S::active_nhs));
  q->bind(1, nhs);
  auto row = q->step();
  if (!row) return storage(row.issue());
  if (!*row) return std::optional<std::string>();
  return std::optional<std::string>(q->column_text(0));
}

fhir::Result<std::optional<IdentifierLink>> SqliteTransaction::identifier_owner(std::string_view system,
                                                                                std::string_view value) {
  if (filters_on_ && identifiers_seen_.active() && !identifiers_seen_.may_hold(identifier_key(system, value)))
    return std::optional<IdentifierLink>();
  StatementUse q(st(S::identifier_owner));
  q->bind(1, value).bind(2, system);
  auto row = q->step();
  if (!row) return storage(row.issue());
  if (!*row) return std::optional<IdentifierLink>();
  return std::optional<IdentifierLink>(IdentifierLink{q->column_text(0), q->column_int64(1) != 0});
}

fhir::Result<std::vector<std::string>> SqliteTransaction::demographic_matches(const Demographics& d,
                                                                              const DemographicRule& rule,
                                                                              std::size_t limit) {
  const unsigned key = (rule.family ? 1u : 0u) | (rule.given ? 2u : 0u) | (rule.birth_date ? 4u : 0u) |
                       (rule.gender ? 8u : 0u) | (rule.postcode ? 16u : 0u);
  // The filter holds all five fields of each row, so it answers only for a rule comparing all five.
  if (key == 31u && filters_on_ && demographics_seen_.active() && !demographics_seen_.may_hold(demographic_key(d)))
    return std::vector<std::string>();
  if (!demographic_[key]) {
    // The shape depends only on which fields the rule compares; values are bound.
    std::string sql = "SELECT id FROM patients WHERE merged_into IS NULL";
    if (rule.family) sql += " AND family_norm = ?1";
    if (rule.given) sql += " AND given_norm = ?2";
    if (rule.birth_date) sql += " AND birth_date = ?3";
    if (rule.gender) sql += " AND gender = ?4";
    if (rule.postcode) sql += " AND postcode_norm = ?5";
    sql += " ORDER BY pk LIMIT ?6";
    auto prepared = db_.prepare(sql);
    if (!prepared) return storage(prepared.issue());
    demographic_[key].emplace(std::move(*prepared));
  }
  StatementUse q(*demographic_[key]);
  if (rule.family) q->bind(1, normalise_name(d.family));
  if (rule.given) q->bind(2, first_given_normalised(d));
  if (rule.birth_date) q->bind(3, d.birth_date);
  if (rule.gender) q->bind(4, d.gender);
  if (rule.postcode) q->bind(5, normalise_postcode(d.postcode));
  q->bind(6, static_cast<std::int64_t>(limit));
  std::vector<std::string> out;
  for (;;) {
    auto row = q->step();
    if (!row) return storage(row.issue());
    if (!*row) break;
    out.push_back(q->column_text(0));
  }
  return out;
}

fhir::Status SqliteTransaction::bind_and_run_patient(sqlite::Statement& s, const PatientRecord& p) {
  const Demographics& d = p.demographics;
  StatementUse q(s);
  q->bind(1, p.id).bind(2, d.nhs_number).bind(3, std::int64_t{p.nhs_number_trusted ? 1 : 0});
  q->bind(4, d.nhs_number_verification).bind(5, d.family).bind(6, normalise_name(d.family));
  q->bind(7, first_given_normalised(d)).bind(8, d.birth_date);
  q->bind_null(9).bind_null(10);  // no birth date: no range, matches no birthdate search
  if (!d.birth_date.empty()) {
    if (auto range = fhir::parse_fhir_date(d.birth_date); range) q->bind(9, range->begin).bind(10, range->end);
  }
  q->bind(11, d.gender).bind(12, d.postcode).bind(13, normalise_postcode(d.postcode));
  q->bind(14, d.gp_practice_ods).bind(15, d.deceased).bind(16, std::int64_t{p.objection ? 1 : 0});
  if (p.merged_into)
    q->bind(17, *p.merged_into);
  else
    q->bind_null(17);
  q->bind(18, p.version).bind(19, p.last_updated);
  if (auto r = q->run(); !r) return storage(r.issue());
  return fhir::Ok{};
}

fhir::Status SqliteTransaction::write_names(std::int64_t pk, const Demographics& d) {
  for (std::size_t i = 0; i < d.given.size(); ++i) {
    StatementUse q(st(S::insert_given));
    q->bind(1, pk).bind(2, static_cast<std::int64_t>(i)).bind(3, d.given[i]).bind(4, normalise_name(d.given[i]));
    if (auto r = q->run(); !r) return storage(r.issue());
  }
  for (std::size_t n = 0; n < d.other_names.size(); ++n) {
    const HumanName& name = d.other_names[n];
    const auto position = static_cast<std::int64_t>(n);
    {
      StatementUse q(st(S::insert_other_name));
      q->bind(1, pk).bind(2, position).bind(3, name.use).bind(4, name.family).bind(5, normalise_name(name.family));
      if (auto r = q->run(); !r) return storage(r.issue());
    }
    for (std::size_t i = 0; i < name.given.size(); ++i) {
      StatementUse q(st(S::insert_other_given));
      q->bind(1, pk).bind(2, position).bind(3, static_cast<std::int64_t>(i)).bind(4, name.given[i]);
      q->bind(5, normalise_name(name.given[i]));
      if (auto r = q->run(); !r) return storage(r.issue());
    }
  }
  return fhir::Ok{};
}

fhir::Status SqliteTransaction::insert_patient(const PatientRecord& p) {
  note_patient_keys(p);  // before the write: a key is noted whenever it may be in the file
  if (auto s = bind_and_run_patient(st(S::insert_patient), p); !s) return s;
  const std::int64_t pk = db_.last_insert_rowid();
  remember_pk(p.id, pk);
  return write_names(pk, p.demographics);
}

fhir::Status SqliteTransaction::update_patient(const PatientRecord& p) {
  auto pk = pk_of(p.id);
  if (!pk) return std::move(pk).issue();
  note_patient_keys(p);
  if (auto s = bind_and_run_patient(st(S::update_patient), p); !s) return s;
  for (S names : {S::delete_given, S::delete_other_names, S::delete_other_given}) {
    StatementUse q(st(names));
    q->bind(1, *pk);
    if (auto r = q->run(); !r) return storage(r.issue());
  }
  return write_names(*pk, p.demographics);
}

fhir::Status SqliteTransaction::repoint_retired(const std::string& from, const std::string& to,
                                                const std::string& now) {
  StatementUse q(st(S::repoint_retired));
  q->bind(1, to).bind(2, from).bind(3, now);
  if (auto r = q->run(); !r) return storage(r.issue());
  return fhir::Ok{};
}

fhir::Status SqliteTransaction::insert_identifier(const std::string& patient_id, const Identifier& id) {
  auto pk = pk_of(patient_id);
  if (!pk) return std::move(pk).issue();
  if (filters_on_) identifiers_seen_.add(identifier_key(id.system, id.value));
  StatementUse q(st(S::insert_identifier));
  q->bind(1, id.value).bind(2, id.system).bind(3, *pk).bind(4, id.source);
  if (auto r = q->run(); !r) return storage(r.issue());
  // A handful of systems in all: written once each (systems_written_ forgets on a rollback).
  if (systems_written_.count(id.system) == 0) {
    StatementUse sys(st(S::insert_identifier_system));
    sys->bind(1, id.system);
    if (auto r = sys->run(); !r) return storage(r.issue());
    systems_written_.insert(id.system);
  }
  return fhir::Ok{};
}

fhir::Status SqliteTransaction::move_identifiers(const std::string& from, const std::string& to,
                                                const std::string& merging_source_ods) {
  auto from_pk = pk_of(from);
  if (!from_pk) return std::move(from_pk).issue();
  auto to_pk = pk_of(to);
  if (!to_pk) return std::move(to_pk).issue();
  StatementUse q(st(S::move_identifiers));
  q->bind(1, *to_pk).bind(2, *from_pk).bind(3, merging_source_ods);
  if (auto r = q->run(); !r) return storage(r.issue());
  return fhir::Ok{};
}

fhir::Status SqliteTransaction::insert_conflict(const Conflict& c) {
  StatementUse q(st(S::insert_conflict));
  q->bind(1, c.patient_id).bind(2, c.source_ods).bind(3, c.kind).bind(4, c.detail).bind(5, c.recorded_at);
  if (auto r = q->run(); !r) return storage(r.issue());
  return fhir::Ok{};
}

fhir::Status SqliteTransaction::insert_merge(const std::string& retired, const std::string& survivor,
                                             const std::string& source_ods, const std::string& now) {
  StatementUse q(st(S::insert_merge));
  q->bind(1, retired).bind(2, survivor).bind(3, source_ods).bind(4, now);
  if (auto r = q->run(); !r) return storage(r.issue());
  return fhir::Ok{};
}

}  // namespace gw::locator
