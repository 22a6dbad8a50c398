// SPDX-License-Identifier: Apache-2.0
// SqliteTransaction: the IndexTransaction primitives over SqliteLocator's one writer
// connection, each a prepared statement, plus the BEGIN/SAVEPOINT/COMMIT statements the
// writer thread frames them with. Also the row codecs the read connections share. Used only
// on the writer thread (reads: SqliteReader, on the read pool).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "gateway/locator/index_transaction.h"
#include "gateway/sqlite/database.h"

namespace gw::locator {

// SELECT list and FROM clause for a PatientRecord row (patients p, survivor m); decode with
// patient_from_row. Column 0 is the internal pk.
inline constexpr std::string_view kPatientColumns =
    "p.pk, p.id, p.nhs_number, p.nhs_number_trusted, p.nhs_verification, p.family, p.birth_date, p.gender, "
    "p.postcode, p.gp_practice_ods, p.deceased, p.objection, m.id, p.version, p.last_updated "
    "FROM patients p LEFT JOIN patients m ON m.pk = p.merged_into";
PatientRecord patient_from_row(const sqlite::Statement& st);

// A patient's other names (Demographics::other_names), ?1 its pk; decode with
// read_other_names, which runs the statement.
inline constexpr std::string_view kOtherNamesOf =
    "SELECT n.position, n.use, n.family, g.value FROM other_names n LEFT JOIN other_given_names g "
    "ON g.patient = n.patient AND g.name = n.position WHERE n.patient = ?1 ORDER BY n.position, g.position";
fhir::Status read_other_names(sqlite::Statement& other_names_of, std::int64_t pk, std::vector<HumanName>& out);

// SELECT list and FROM clause for a Pointer row (pointers ptr, its patient p).
inline constexpr std::string_view kPointerColumns =
    "ptr.id, p.id, ptr.source_ods, ptr.type_system, ptr.type_code, ptr.type_display, ptr.category_code, "
    "ptr.category_display, ptr.resource_types, ptr.url, ptr.content_type, ptr.last_updated, ptr.version, ptr.date "
    "FROM pointers ptr JOIN patients p ON p.pk = ptr.patient";
Pointer pointer_from_row(const sqlite::Statement& st);

// Prepares `sql[i]` for every i into `out` (same order).
fhir::Status prepare_all(sqlite::Database& db, const std::string_view* sql, std::size_t n,
                         std::vector<sqlite::Statement>& out);

// Resets (and unbinds) a statement when the scope ends, whatever path leaves it.
class StatementUse {
 public:
  explicit StatementUse(sqlite::Statement& st) : st_(st) {}
  ~StatementUse() { st_.reset(); }
  StatementUse(const StatementUse&) = delete;
  StatementUse& operator=(const StatementUse&) = delete;
  sqlite::Statement* operator->() { return &st_; }
  sqlite::Statement& operator*() { return st_; }

 private:
  sqlite::Statement& st_;
};

class SqliteTransaction final : public IndexTransaction {
 public:
  // Prepares every statement on `db` (the writer connection, already migrated).
  static fhir::Result<std::unique_ptr<SqliteTransaction>> prepare(sqlite::Database& db);

  // Framing. begin() is BEGIN IMMEDIATE. Savepoint level `job` wraps one queued write,
  // level `record` one import record inside an import job.
  enum class Level { job, record };
  fhir::Status begin();
  fhir::Status commit();
  void rollback();
  fhir::Status savepoint(Level l);
  fhir::Status release(Level l);
  fhir::Status rollback_to(Level l);  // and release it
  // True when SQLite ended the transaction by itself (e.g. disk full, I/O error): every write
  // since begin() is gone.
  bool transaction_lost() const;

  // Bulk import (SqliteLocator::import of many records into an empty or small index): the
  // secondary indexes that no import read uses (kDeferrableIndexes) cost a random B-tree insert
  // per row, and are cheaper built once, sorted, at the end. Inside the caller's transaction,
  // defer_indexes drops them when the index holds at most `incoming` patients, after noting
  // each one's CREATE statement in gateway_info (key "deferred_index:<name>"); it returns
  // whether it dropped any. rebuild_deferred_indexes recreates every index so noted and
  // deletes the note, again inside the caller's transaction: run at the end of the import and
  // when the file is opened, so an import that never finished (a crash) leaves a file whose
  // queries are only slower, and whose indexes come back at the next open.
  fhir::Result<bool> defer_indexes(std::int64_t incoming);
  fhir::Status rebuild_deferred_indexes();
  // Also for a bulk import: when the file holds no patient and no identifier, starts filters
  // of every identifier, NHS number and demographic key this connection writes from now on
  // (sized for `patients` patients and `identifiers` identifiers), so a lookup of a key never
  // written (the common case while a new population loads) skips its B-tree search. The
  // filters only ever answer "certainly absent" or "look it up"; a rollback leaves them
  // holding extra keys (still sound), and a commit by any other connection, or more keys than
  // they were sized for, turns them off. Returns whether they started.
  fhir::Result<bool> start_absent_key_filters(std::size_t patients, std::size_t identifiers);
  void stop_absent_key_filters();

  fhir::Result<std::optional<PatientRecord>> patient(const std::string& id) override;
  fhir::Result<std::optional<std::string>> active_patient_with_nhs_number(std::string_view nhs) override;
  fhir::Result<std::optional<IdentifierLink>> identifier_owner(std::string_view system,
                                                               std::string_view value) override;
  fhir::Result<std::vector<std::string>> demographic_matches(const Demographics& d, const DemographicRule& rule,
                                                             std::size_t limit) override;
  fhir::Status insert_patient(const PatientRecord& p) override;
  fhir::Status update_patient(const PatientRecord& p) override;
  fhir::Status repoint_retired(const std::string& from, const std::string& to, const std::string& now) override;
  fhir::Status insert_identifier(const std::string& patient_id, const Identifier& id) override;
  fhir::Status move_identifiers(const std::string& from, const std::string& to,
                                const std::string& merging_source_ods) override;
  fhir::Status insert_conflict(const Conflict& c) override;
  fhir::Status insert_merge(const std::string& retired, const std::string& survivor, const std::string& source_ods,
                            const std::string& now) override;
  fhir::Result<std::optional<Pointer>> pointer(const std::string& id) override;
  fhir::Status insert_pointer(const Pointer& p) override;
  fhir::Result<bool> insert_pointer_if_new(const Pointer& p) override;
  fhir::Status update_pointer(const Pointer& p) override;
  fhir::Status delete_pointer(const std::string& id) override;
  fhir::Result<std::vector<Pointer>> pointers_of(const std::string& id) override;
  fhir::Status move_pointers(const std::string& from, const std::string& to, const std::string& now) override;
  fhir::Status upsert_source_system(const SourceSystem& s, const std::string& now) override;
  fhir::Result<std::vector<CareTeamMember>> care_team(const std::string& patient_id) override;
  fhir::Status upsert_care_team_member(const std::string& patient_id, const CareTeamMember& m) override;
  fhir::Result<bool> delete_care_team_member(const std::string& patient_id, const std::string& member) override;
  fhir::Result<std::vector<Encounter>> encounters(const std::string& patient_id) override;
  fhir::Result<bool> insert_encounter_if_new(const std::string& patient_id, const Encounter& e) override;
  fhir::Status trim_encounters(const std::string& patient_id, const std::string& organisation_ods,
                               std::size_t per_organisation, std::size_t per_patient) override;
  fhir::Status delete_encounters(const std::string& patient_id) override;
  fhir::Status insert_objection_change(const ObjectionChange& c) override;
  fhir::Result<std::vector<ObjectionChange>> objection_changes(std::size_t max) override;
  fhir::Status delete_objection_change(const std::string& id) override;

 private:
  enum class S : std::size_t;
  explicit SqliteTransaction(sqlite::Database& db) : db_(db) {}
  sqlite::Statement& st(S which);
  fhir::Status run_framing(S which);
  fhir::Result<std::int64_t> pk_of(const std::string& id);
  fhir::Status write_names(std::int64_t pk, const Demographics& d);  // given names and other names
  fhir::Status bind_and_run_patient(sqlite::Statement& st, const PatientRecord& p);

  // A blocked Bloom filter of 64-bit key hashes: may_hold is false only for a key never added.
  class KeyFilter {
   public:
    void reset(std::size_t capacity);
    void clear() { blocks_.clear(); }
    bool active() const { return !blocks_.empty() && added_ <= capacity_; }
    void add(std::uint64_t h);
    bool may_hold(std::uint64_t h) const;

   private:
    std::vector<std::array<std::uint64_t, 8>> blocks_;  // 512 bits each
    std::size_t capacity_ = 0, added_ = 0;
  };
  void note_patient_keys(const PatientRecord& p);
  void remember_pk(const std::string& id, std::int64_t pk);

  sqlite::Database& db_;
  bool filters_on_ = false;
  std::int64_t data_version_ = 0;  // PRAGMA data_version when the filters started
  KeyFilter identifiers_seen_, nhs_numbers_seen_, demographics_seen_;
  // id -> pk of patients seen in this transaction; cleared on any rollback.
  std::unordered_map<std::string, std::int64_t> pk_cache_;
  // Identifier systems this connection has put in identifier_systems (emptied on a rollback).
  std::unordered_set<std::string> systems_written_;

  std::vector<sqlite::Statement> statements_;  // indexed by S
  // Demographic-rule queries, one per combination of enabled fields, prepared on first use.
  std::array<std::optional<sqlite::Statement>, 32> demographic_;
};

}  // namespace gw::locator
