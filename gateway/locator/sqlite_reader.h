// SPDX-License-Identifier: Apache-2.0
// SqliteReader: one read-only connection to locator.db with its own prepared statements,
// answering the Locator read calls. SqliteLocator keeps a pool of them; a reader is used by
// one thread at a time (checked out of the pool), never on a network thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gateway/locator/locator.h"
#include "gateway/sqlite/database.h"

namespace gw::locator {

class SqliteReader {
 public:
  // Opens `path` read-only (the writer has created and migrated it) with a page cache of
  // `cache_mib` MiB and `mmap_mib` MiB of memory-mapped I/O (0: off).
  static fhir::Result<std::unique_ptr<SqliteReader>> open(const std::string& path, std::int64_t cache_mib,
                                                          std::int64_t mmap_mib);

  fhir::Result<std::optional<PatientRecord>> read_patient(const std::string& id);
  fhir::Result<std::optional<std::string>> lookup_identifier(std::string_view system, std::string_view value);
  fhir::Result<Page<PatientRecord>> search_patients(const PatientQuery& q);
  fhir::Result<std::vector<Pointer>> pointers_for(const std::string& patient_id);
  fhir::Result<std::optional<Pointer>> read_pointer(const std::string& pointer_id);
  fhir::Result<std::optional<SourceSystem>> source_system(const std::string& ods_code);
  fhir::Result<std::vector<Conflict>> conflicts(std::size_t limit, std::size_t offset);
  fhir::Result<bool> knows_identifier_system(std::string_view system);
  // Row counts; database_bytes is left 0 (the caller knows the files).
  fhir::Result<Stats> stats();

 private:
  enum class R : std::size_t;
  class Snapshot;
  explicit SqliteReader(sqlite::Database db) : db_(std::move(db)) {}
  sqlite::Statement& st(R which);
  // The active record `id` resolves to, as (pk, id); nullopt when `id` is unknown.
  fhir::Result<std::optional<std::pair<std::int64_t, std::string>>> final_patient(std::string id);
  fhir::Result<std::optional<std::string>> follow_merges(std::string id);
  fhir::Status fill_record(std::int64_t pk, PatientRecord& rec);

  sqlite::Database db_;
  std::vector<sqlite::Statement> statements_;  // indexed by R
};

}  // namespace gw::locator
