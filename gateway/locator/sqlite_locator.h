// SPDX-License-Identifier: Apache-2.0
// The SQLite implementation of Locator over locator.db (WAL, synchronous=FULL):
//   - reads on a pool of read-only connections, each with its prepared statements;
//   - writes through one writer thread that drains its queue into one transaction (group
//     commit), with each write in its own SAVEPOINT so one failing write does not undo the
//     others, and completes every caller only after the COMMIT returned;
//   - a big import() into an empty or small index defers the secondary indexes no import
//     read uses and rebuilds them once at its end (bulk_import_min; crash-safe, see
//     SqliteTransaction::defer_indexes). synchronous stays FULL throughout.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "gateway/locator/locator.h"

namespace gw::locator {

struct SqliteLocatorOptions {
  std::size_t read_connections = 4;
  std::size_t max_batch = 256;          // writes per group commit
  std::size_t max_queue = 10000;        // queued writes before callers get too_many_requests
  std::size_t import_batch = 5000;      // records per transaction in import()
  // An import() call of at least this many records into an index holding at most as many
  // patients drops the secondary indexes no import read uses and rebuilds them, sorted, at its
  // end (SqliteTransaction::defer_indexes). 0: never.
  std::size_t bulk_import_min = 10000;
  DemographicRule rule;
  std::int64_t write_cache_mib = 64;    // writer's page cache; raise it for bulk imports
  std::int64_t read_cache_mib = 64;     // page cache of each read connection
  // Memory-mapped reads per connection (0: off). Off by default: every connection maps the
  // file separately and takes a page fault on each first touch, which showed in the lookup p99.
  std::int64_t mmap_mib = 0;
  // Progress of a long import(): called on import()'s own thread after each committed
  // transaction, with the records done so far and the call's total (tools print it).
  std::function<void(std::size_t done, std::size_t total)> on_import_progress;
  // Diagnostics hook: runs on the writer thread before it drains the queue for a batch (the
  // tests use it to hold a batch open deterministically). Must not call the locator.
  std::function<void()> on_batch_start;
};

// Counters of the writer since open. A write is one queued call (an import transaction of
// import_batch records counts as one).
struct WriterCounters {
  std::uint64_t commits = 0;         // transactions committed
  std::uint64_t failed_commits = 0;  // transactions whose BEGIN or COMMIT failed
  std::uint64_t writes = 0;          // writes completed, successfully or not
  std::uint64_t queued = 0;          // writes waiting now
};

class SqliteLocator final : public Locator {
 public:
  // Opens (creating if needed) and migrates `path`, opens the read pool, then starts the
  // writer thread. Fails (not_ready) when the file cannot be opened or migrated, e.g. when it
  // is newer than this code.
  static fhir::Result<std::unique_ptr<SqliteLocator>> open(const std::string& path, SqliteLocatorOptions options = {});
  // Completes every queued write, then stops the writer. Callers must not be mid-call.
  ~SqliteLocator() override;
  SqliteLocator(const SqliteLocator&) = delete;
  SqliteLocator& operator=(const SqliteLocator&) = delete;

  fhir::Result<std::optional<PatientRecord>> read_patient(const std::string& id) override;
  fhir::Result<std::optional<std::string>> lookup_identifier(std::string_view system, std::string_view value) override;
  fhir::Result<Page<PatientRecord>> search_patients(const PatientQuery& q) override;
  fhir::Result<std::vector<Pointer>> pointers_for(const std::string& patient_id) override;
  fhir::Result<std::optional<Pointer>> read_pointer(const std::string& pointer_id) override;
  fhir::Result<std::optional<SourceSystem>> source_system(const std::string& ods_code) override;
  fhir::Result<std::vector<Conflict>> conflicts(std::size_t limit, std::size_t offset) override;
  fhir::Result<bool> knows_identifier_system(std::string_view system) override;
  fhir::Result<Stats> stats() override;

  fhir::Status upsert_source_system(const SourceSystem& s) override;
  fhir::Result<Resolution> resolve(const IdentityClaim& claim) override;
  fhir::Result<Pointer> put_pointer(const std::string& acting_source_ods, Pointer p,
                                    const std::optional<VersionMatch>& if_match) override;
  fhir::Status delete_pointer(const std::string& acting_source_ods, const std::string& pointer_id,
                              const std::optional<VersionMatch>& if_match) override;
  fhir::Status merge(const std::string& retired_id, const std::string& survivor_id, const std::string& source_ods) override;
  fhir::Status set_objection(const std::string& patient_id, bool objection) override;
  fhir::Result<bool> change_objection(ObjectionChange change) override;
  fhir::Result<std::vector<ObjectionChange>> unaudited_objection_changes(std::size_t max) override;
  fhir::Status forget_objection_changes(const std::vector<std::string>& ids) override;
  fhir::Status add_care_team_member(const std::string& acting_source_ods, const std::string& patient_id,
                                    const std::string& member, std::optional<std::string> until) override;
  fhir::Status remove_care_team_member(const std::string& acting_source_ods, const std::string& patient_id,
                                       const std::string& member) override;
  fhir::Status record_encounter(const std::string& acting_source_ods, const std::string& patient_id,
                                const std::string& organisation_ods, std::int64_t at_epoch_seconds) override;
  fhir::Result<IngestOutcome> ingest(const IngestUpdate& u) override;
  fhir::Result<ImportResult> import(const std::vector<ImportRecord>& records) override;

  WriterCounters writer_counters() const;
  // Test hook: while on, every write transaction is rolled back instead of committed (its
  // callers get internal_error, as on a full disk).
  void inject_commit_failure(bool on);

 private:
  struct State;
  explicit SqliteLocator(std::unique_ptr<State> state);
  std::unique_ptr<State> s_;
};

// Opens (creating if needed) and migrates `path`, then starts the writer thread.
fhir::Result<std::unique_ptr<Locator>> open_sqlite_locator(const std::string& path, SqliteLocatorOptions options = {});

}  // namespace gw::locator
