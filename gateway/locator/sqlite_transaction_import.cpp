// SPDX-License-Identifier: Apache-2.0
// SqliteTransaction's bulk-import helpers (sqlite_transaction.h): secondary indexes deferred
// to the end of an import, and the absent-key filters that skip lookups of keys never written.
#include <algorithm>

#include "gateway/locator/sqlite_transaction_internal.h"

namespace gw::locator {

// ---- bulk import ------------------------------------------------------------------------

namespace {

using fhir::ErrorCode;
using fhir::Issue;

// Indexes an import never reads (its matching reads use identifiers, patients.id, the trusted
// NHS number and patients_family; pointer ids have their UNIQUE index) and whose keys arrive in
// random order. identifiers_patient and pointers_patient stay: their keys arrive in pk order,
// so keeping them costs little, and rebuilding them would read the whole pointers table.
constexpr std::string_view kDeferrableIndexes[] = {"patients_birth", "patients_postcode", "given_names_norm"};
constexpr std::string_view kDeferredPrefix = "deferred_index:";

}  // namespace

fhir::Result<bool> SqliteTransaction::defer_indexes(std::int64_t incoming) {
  {
    // max(pk) is one B-tree descent and bounds the patient count (rows are never deleted).
    auto q = db_.prepare("SELECT coalesce(max(pk), 0) FROM patients");
    if (!q) return storage(q.issue());
    auto row = q->step();
    if (!row) return storage(row.issue());
    if (*row && q->column_int64(0) > incoming) return false;
  }
  bool dropped = false;
  for (std::string_view name : kDeferrableIndexes) {
    std::string sql;
    {
      auto q = db_.prepare("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?1 AND sql IS NOT NULL");
      if (!q) return storage(q.issue());
      q->bind(1, name);
      auto row = q->step();
      if (!row) return storage(row.issue());
      if (!*row) continue;  // already deferred (another import) or never there
      sql = q->column_text(0);
    }
    auto note = db_.prepare("INSERT OR REPLACE INTO gateway_info(key, value) VALUES (?1, ?2)");
    if (!note) return storage(note.issue());
    note->bind(1, std::string(kDeferredPrefix) + std::string(name)).bind(2, sql);
    if (auto r = note->run(); !r) return storage(r.issue());
    // The name is one of kDeferrableIndexes, not data.
    if (auto r = db_.exec("DROP INDEX " + std::string(name)); !r) return storage(r.issue());
    dropped = true;
  }
  return dropped;
}

// ---- absent-key filters ----------------------------------------------------------------

void SqliteTransaction::KeyFilter::reset(std::size_t capacity) {
  capacity_ = std::max<std::size_t>(capacity, 1024);
  added_ = 0;
  // 16 bits per key, four of them set per key: well under 1% false "may hold".
  blocks_.assign(capacity_ * 16 / 512 + 1, std::array<std::uint64_t, 8>{});
}

void SqliteTransaction::KeyFilter::add(std::uint64_t h) {
  if (blocks_.empty()) return;
  ++added_;
  auto& block = blocks_[h % blocks_.size()];
  const std::uint64_t bits = mix(h);
  for (int i = 0; i < 4; ++i) {
    const unsigned bit = static_cast<unsigned>(bits >> (i * 9)) & 511u;
    block[bit >> 6] |= std::uint64_t{1} << (bit & 63u);
  }
}

bool SqliteTransaction::KeyFilter::may_hold(std::uint64_t h) const {
  const auto& block = blocks_[h % blocks_.size()];
  const std::uint64_t bits = mix(h);
  for (int i = 0; i < 4; ++i) {
    const unsigned bit = static_cast<unsigned>(bits >> (i * 9)) & 511u;
    if ((block[bit >> 6] & (std::uint64_t{1} << (bit & 63u))) == 0) return false;
  }
  return true;
}

fhir::Result<bool> SqliteTransaction::start_absent_key_filters(std::size_t patients, std::size_t identifiers) {
  auto q = db_.prepare(
      "SELECT NOT EXISTS (SELECT 1 FROM patients) AND NOT EXISTS (SELECT 1 FROM identifiers), "
      "(SELECT data_version FROM pragma_data_version)");
  if (!q) return storage(q.issue());
  auto row = q->step();
  if (!row) return storage(row.issue());
  if (!*row || q->column_int64(0) == 0) return false;
  data_version_ = q->column_int64(1);
  // Room for what other writes add while the import runs; past it the filters stop answering.
  identifiers_seen_.reset(identifiers + identifiers / 4);
  nhs_numbers_seen_.reset(patients + patients / 4);
  demographics_seen_.reset(patients + patients / 4);
  filters_on_ = true;
  return true;
}

void SqliteTransaction::stop_absent_key_filters() {
  filters_on_ = false;
  identifiers_seen_.clear();
  nhs_numbers_seen_.clear();
  demographics_seen_.clear();
}

void SqliteTransaction::note_patient_keys(const PatientRecord& p) {
  if (!filters_on_) return;
  nhs_numbers_seen_.add(key_hash({p.demographics.nhs_number}));
  demographics_seen_.add(demographic_key(p.demographics));
}

fhir::Status SqliteTransaction::rebuild_deferred_indexes() {
  for (std::string_view name : kDeferrableIndexes) {
    // Only notes for the indexes this code defers are read (any other key is not ours), and
    // only the statement SQLite itself reported for that index is run again.
    const std::string key = std::string(kDeferredPrefix) + std::string(name);
    std::string sql;
    bool exists = false;
    {
      auto q = db_.prepare(
          "SELECT value, EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?2) "
          "FROM gateway_info WHERE key = ?1");
      if (!q) return storage(q.issue());
      q->bind(1, key).bind(2, name);
      auto row = q->step();
      if (!row) return storage(row.issue());
      if (!*row) continue;
      sql = q->column_text(0);
      exists = q->column_int64(1) != 0;
    }
    if (sql.rfind("CREATE INDEX " + std::string(name) + " ON ", 0) != 0)
      return Issue::make(ErrorCode::internal_error, "record locator: unexpected deferred index note " + key);
    if (!exists) {
      // The sort of an index build may use a helper thread (the import's caller waits idle):
      // about 15% off the rebuild at 300,000 patients. The connection's setting is put back.
      std::int64_t threads = 0;
      if (auto q = db_.prepare("PRAGMA threads"); q)
        if (auto row = q->step(); row && *row) threads = q->column_int64(0);
      (void)db_.exec("PRAGMA threads=" + std::to_string(std::max<std::int64_t>(threads, 2)));
      auto r = db_.exec(sql);
      (void)db_.exec("PRAGMA threads=" + std::to_string(threads));
      if (!r) return storage(r.issue());
    }
    auto done = db_.prepare("DELETE FROM gateway_info WHERE key = ?1");
    if (!done) return storage(done.issue());
    done->bind(1, key);
    if (auto r = done->run(); !r) return storage(r.issue());
  }
  return fhir::Ok{};
}

}  // namespace gw::locator
