// SPDX-License-Identifier: Apache-2.0
// SqliteTransaction (see sqlite_transaction.h): one prepared statement per primitive, data
// always bound as parameters. Patients are addressed by their opaque id at the interface and
// by the integer pk inside the file; pk_cache_ saves the lookup for records touched twice in
// one transaction (an import record writes its patient, then identifiers and pointers). This
// file: the statement table, the row codecs, framing and the pk cache; the primitives are in
// sqlite_transaction_patients.cpp (patients, identifiers, merges), _pointers.cpp (pointers,
// source systems), _care.cpp (care relationships, encounters) and _import.cpp (bulk import:
// deferred indexes, absent-key filters).
#include "gateway/locator/sqlite_transaction.h"

#include <sqlite3.h>

#include "gateway/locator/sqlite_transaction_internal.h"

namespace gw::locator {

namespace {

using fhir::ErrorCode;
using fhir::Issue;

// Patient columns ?2..?19 in the order bind_and_run_patient binds them; ?1 is the id.
#define GW_PATIENT_VALUES                                                                                 \
  "?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, (SELECT pk FROM patients WHERE id = ?17), " \
  "?18, ?19"

const std::string_view kSql[] = {
    "BEGIN IMMEDIATE",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT job",
    "RELEASE job",
    "ROLLBACK TO job",
    "SAVEPOINT record",
    "RELEASE record",
    "ROLLBACK TO record",
    // patient_by_id: kPatientColumns + " WHERE p.id = ?1" (built in prepare)
    "",
    "SELECT value FROM given_names WHERE patient = ?1 ORDER BY position",
    kOtherNamesOf,
    "SELECT pk FROM patients WHERE id = ?1",
    "SELECT id FROM patients WHERE nhs_number = ?1 AND nhs_number_trusted = 1 AND merged_into IS NULL",
    "SELECT p.id, i.retired FROM identifiers i JOIN patients p ON p.pk = i.patient "
    "WHERE i.value = ?1 AND i.system = ?2",
    "INSERT INTO patients(id, nhs_number, nhs_number_trusted, nhs_verification, family, family_norm, given_norm, "
    "birth_date, birth_begin, birth_end, gender, postcode, postcode_norm, gp_practice_ods, deceased, objection, "
    "merged_into, version, last_updated) VALUES (?1, " GW_PATIENT_VALUES ")",
    "UPDATE patients SET (nhs_number, nhs_number_trusted, nhs_verification, family, family_norm, given_norm, "
    "birth_date, birth_begin, birth_end, gender, postcode, postcode_norm, gp_practice_ods, deceased, objection, "
    "merged_into, version, last_updated) = (" GW_PATIENT_VALUES ") WHERE id = ?1",
    "DELETE FROM given_names WHERE patient = ?1",
    "INSERT INTO given_names(patient, position, value, value_norm) VALUES (?1, ?2, ?3, ?4)",
    "DELETE FROM other_names WHERE patient = ?1",
    "DELETE FROM other_given_names WHERE patient = ?1",
    "INSERT INTO other_names(patient, position, use, family, family_norm) VALUES (?1, ?2, ?3, ?4, ?5)",
    "INSERT INTO other_given_names(patient, name, position, value, value_norm) VALUES (?1, ?2, ?3, ?4, ?5)",
    "UPDATE patients SET merged_into = (SELECT pk FROM patients WHERE id = ?1), version = version + 1, "
    "last_updated = ?3 WHERE merged_into = (SELECT pk FROM patients WHERE id = ?2)",
    "INSERT INTO identifiers(value, system, patient, source_ods) VALUES (?1, ?2, ?3, ?4)",
    "INSERT OR IGNORE INTO identifier_systems(system) VALUES (?1)",
    "UPDATE identifiers SET patient = ?1, retired = (retired OR source_ods = ?3) WHERE patient = ?2",
    "INSERT INTO conflicts(patient_id, source_ods, kind, detail, recorded_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    "INSERT INTO merges(retired, survivor, source_ods, merged_at) VALUES ((SELECT pk FROM patients WHERE id = ?1), "
    "(SELECT pk FROM patients WHERE id = ?2), ?3, ?4)",
    // pointer_by_id: kPointerColumns + " WHERE ptr.id = ?1" (built in prepare)
    "",
    "INSERT INTO pointers(id, patient, source_ods, type_system, type_code, type_display, category_code, "
    "category_display, resource_types, url, content_type, version, last_updated, date) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    // The only uniqueness on pointers is the id: DO NOTHING means "that id exists".
    "INSERT INTO pointers(id, patient, source_ods, type_system, type_code, type_display, category_code, "
    "category_display, resource_types, url, content_type, version, last_updated, date) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) ON CONFLICT DO NOTHING",
    "UPDATE pointers SET (patient, source_ods, type_system, type_code, type_display, category_code, "
    "category_display, resource_types, url, content_type, version, last_updated, date) "
    "= (?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) WHERE id = ?1",
    "DELETE FROM pointers WHERE id = ?1",
    "UPDATE pointers SET patient = ?1, version = version + 1, last_updated = ?3 WHERE patient = ?2",
    // pointers_of: kPointerColumns + " WHERE ptr.patient = ... ORDER BY ptr.id" (built in prepare)
    "",
    "INSERT INTO source_systems(ods_code, name, adapter, endpoint, updated_at) VALUES (?1, ?2, ?3, ?4, ?5) "
    "ON CONFLICT(ods_code) DO UPDATE SET name = excluded.name, adapter = excluded.adapter, "
    "endpoint = excluded.endpoint, updated_at = excluded.updated_at",
    "SELECT member, coalesce(until, ''), source_ods FROM care_team WHERE patient = ?1 ORDER BY member",
    "INSERT INTO care_team(patient, member, until, source_ods) VALUES (?1, ?2, ?3, ?4) "
    "ON CONFLICT(patient, member) DO UPDATE SET until = excluded.until, source_ods = excluded.source_ods",
    "DELETE FROM care_team WHERE patient = ?1 AND member = ?2",
    "SELECT organisation_ods, at, source_ods FROM encounters WHERE patient = ?1 ORDER BY at DESC, organisation_ods",
    // The only uniqueness on encounters is (patient, organisation_ods, at).
    "INSERT INTO encounters(patient, organisation_ods, at, source_ods) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
    "DELETE FROM encounters WHERE patient = ?1 AND organisation_ods = ?2 AND pk NOT IN "
    "(SELECT pk FROM encounters WHERE patient = ?1 AND organisation_ods = ?2 ORDER BY at DESC LIMIT ?3)",
    "DELETE FROM encounters WHERE patient = ?1 AND pk NOT IN "
    "(SELECT pk FROM encounters WHERE patient = ?1 ORDER BY at DESC, organisation_ods LIMIT ?2)",
    "DELETE FROM encounters WHERE patient = ?1",
    "INSERT INTO objection_changes(id, patient_id, nhs_number, objection, made_by, note, request_id, made_ms) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    "SELECT id, patient_id, nhs_number, objection, made_by, note, request_id, made_ms FROM objection_changes "
    "ORDER BY made_ms, id LIMIT ?1",
    "DELETE FROM objection_changes WHERE id = ?1",
};
#undef GW_PATIENT_VALUES

}  // namespace

fhir::Status prepare_all(sqlite::Database& db, const std::string_view* sql, std::size_t n,
                         std::vector<sqlite::Statement>& out) {
  out.clear();
  out.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    auto st = db.prepare(sql[i]);
    if (!st) return std::move(st).issue();
    out.push_back(std::move(*st));
  }
  return fhir::Ok{};
}

fhir::Status read_other_names(sqlite::Statement& other_names_of, std::int64_t pk, std::vector<HumanName>& out) {
  StatementUse q(other_names_of);
  q->bind(1, pk);
  std::int64_t current = -1;
  for (;;) {
    auto row = q->step();
    if (!row) return storage(row.issue());
    if (!*row) break;
    // One row per given name (LEFT JOIN: one with a NULL value for a name without any).
    if (q->column_int64(0) != current) {
      current = q->column_int64(0);
      out.push_back({q->column_text(1), q->column_text(2), {}});
    }
    if (!q->column_is_null(3)) out.back().given.push_back(q->column_text(3));
  }
  return fhir::Ok{};
}

PatientRecord patient_from_row(const sqlite::Statement& st) {
  PatientRecord p;
  p.id = st.column_text(1);
  Demographics& d = p.demographics;
  d.nhs_number = st.column_text(2);
  p.nhs_number_trusted = st.column_int64(3) != 0;
  d.nhs_number_verification = st.column_text(4);
  d.family = st.column_text(5);
  d.birth_date = st.column_text(6);
  d.gender = st.column_text(7);
  d.postcode = st.column_text(8);
  d.gp_practice_ods = st.column_text(9);
  d.deceased = st.column_text(10);
  p.objection = st.column_int64(11) != 0;
  if (!st.column_is_null(12)) p.merged_into = st.column_text(12);
  p.version = st.column_int64(13);
  p.last_updated = st.column_text(14);
  return p;
}

Pointer pointer_from_row(const sqlite::Statement& st) {
  Pointer p;
  p.id = st.column_text(0);
  p.patient_id = st.column_text(1);
  p.source_ods = st.column_text(2);
  p.type_system = st.column_text(3);
  p.type_code = st.column_text(4);
  p.type_display = st.column_text(5);
  p.category_code = st.column_text(6);
  p.category_display = st.column_text(7);
  p.resource_types = split_resource_types(st.column_text(8));
  p.url = st.column_text(9);
  p.content_type = st.column_text(10);
  p.last_updated = st.column_text(11);
  p.version = st.column_int64(12);
  p.date = st.column_text(13);
  return p;
}

fhir::Result<std::unique_ptr<SqliteTransaction>> SqliteTransaction::prepare(sqlite::Database& db) {
  constexpr std::size_t n = static_cast<std::size_t>(S::count);
  if (std::size(kSql) != n) return Issue::make(ErrorCode::internal_error, "statement table out of step");
  std::string patient_by_id = std::string("SELECT ") + std::string(kPatientColumns) + " WHERE p.id = ?1";
  std::string pointer_by_id = std::string("SELECT ") + std::string(kPointerColumns) + " WHERE ptr.id = ?1";
  std::string pointers_of = std::string("SELECT ") + std::string(kPointerColumns) +
                            " WHERE ptr.patient = (SELECT pk FROM patients WHERE id = ?1) ORDER BY ptr.id";
  std::array<std::string_view, n> sql{};
  for (std::size_t i = 0; i < n; ++i) sql[i] = kSql[i];
  sql[static_cast<std::size_t>(S::patient_by_id)] = patient_by_id;
  sql[static_cast<std::size_t>(S::pointer_by_id)] = pointer_by_id;
  sql[static_cast<std::size_t>(S::pointers_of)] = pointers_of;
  std::unique_ptr<SqliteTransaction> tx(new SqliteTransaction(db));
  if (auto s = prepare_all(db, sql.data(), n, tx->statements_); !s) return std::move(s).issue();
  return tx;
}

sqlite::Statement& SqliteTransaction::st(S which) { return statements_[static_cast<std::size_t>(which)]; }

// ---- framing ----------------------------------------------------------------------------

fhir::Status SqliteTransaction::run_framing(S which) {
  StatementUse q(st(which));
  if (auto r = q->run(); !r) return storage(r.issue());
  return fhir::Ok{};
}

fhir::Status SqliteTransaction::begin() {
  pk_cache_.clear();
  if (auto s = run_framing(S::begin); !s) return s;
  if (filters_on_) {
    // data_version moves only when another connection committed: its writes are not in the
    // filters, so they stop answering.
    bool same = false;
    if (auto q = db_.cached("PRAGMA data_version"); q) {
      auto row = q->step();
      same = row && *row && q->column_int64(0) == data_version_;
    }
    if (!same) stop_absent_key_filters();
  }
  return fhir::Ok{};
}

fhir::Status SqliteTransaction::commit() { return run_framing(S::commit); }

void SqliteTransaction::rollback() {
  pk_cache_.clear();
  systems_written_.clear();
  if (!transaction_lost()) (void)run_framing(S::rollback);
}

fhir::Status SqliteTransaction::savepoint(Level l) {
  return run_framing(l == Level::job ? S::savepoint_job : S::savepoint_record);
}

fhir::Status SqliteTransaction::release(Level l) {
  return run_framing(l == Level::job ? S::release_job : S::release_record);
}

fhir::Status SqliteTransaction::rollback_to(Level l) {
  pk_cache_.clear();
  systems_written_.clear();
  if (auto s = run_framing(l == Level::job ? S::rollback_job : S::rollback_record); !s) return s;
  return release(l);
}

bool SqliteTransaction::transaction_lost() const { return sqlite3_get_autocommit(db_.handle()) != 0; }

// ---- the pk cache -----------------------------------------------------------------------

// Bounded: an import transaction inserts up to import_batch patients, and a map that grew with
// them would rehash over and over for ids that are used only right after they are written.
void SqliteTransaction::remember_pk(const std::string& id, std::int64_t pk) {
  if (pk_cache_.size() > 4096) pk_cache_.clear();
  pk_cache_[id] = pk;
}

fhir::Result<std::int64_t> SqliteTransaction::pk_of(const std::string& id) {
  if (auto it = pk_cache_.find(id); it != pk_cache_.end()) return it->second;
  StatementUse q(st(S::pk_of));
  q->bind(1, id);
  auto row = q->step();
  if (!row) return storage(row.issue());
  if (!*row) return Issue::make(ErrorCode::internal_error, "record locator: patient row vanished");
  const std::int64_t pk = q->column_int64(0);
  remember_pk(id, pk);
  return pk;
}

}  // namespace gw::locator
