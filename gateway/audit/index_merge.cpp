// SPDX-License-Identifier: Apache-2.0
// The audit log's index merges: the writer thread brings the patient, agent and time search
// indexes up to date off the commit path, in sorted batches (audit.db migrations 4 and 5).
#include <algorithm>
#include <chrono>

#include "gateway/audit/log_internal.h"
#include "gateway/observe/log.h"

namespace gw::audit {

bool Log::Impl::merge_due() const {
  const std::uint64_t n = opt.index_merge_rows;
  return n > 0 && (recent_patient_rows >= n || range.size() - std::min(range.size(), indexed_below) >= n);
}

void Log::Impl::merge_indexes() {
  const auto t0 = std::chrono::steady_clock::now();
  const auto n = static_cast<std::int64_t>(opt.index_merge_rows);
  const std::uint64_t records_to = std::min(range.size(), indexed_below + opt.index_merge_rows);
  fhir::Status status = fhir::Ok{};
  std::int64_t moved = 0;
  auto run = [&](const char* sql, auto&& bind) {
    if (!status) return;
    auto st = db.cached(sql);
    if (!st) {
      status = std::move(st).issue();
      return;
    }
    bind(*st);
    status = st->run();
  };
  {
    sqlite::Transaction tx(db);
    status = tx.begun();
    std::int64_t last_rowid = 0;
    if (status) {
      auto bound = db.cached(
          "SELECT max(rowid), count(*) FROM (SELECT rowid FROM audit_patient_recent ORDER BY rowid LIMIT ?1)");
      if (!bound) status = std::move(bound).issue();
      else {
        bound->bind(1, n);
        if (auto r = bound->step(); !r) status = std::move(r).issue();
        else {
          last_rowid = bound->column_int64(0);
          moved = bound->column_int64(1);
        }
      }
    }
    if (moved > 0) {
      run("INSERT OR IGNORE INTO audit_patient_index(epoch, nhs_number, seq) SELECT seq >> 16, nhs_number, seq "
          "FROM audit_patient_recent WHERE rowid <= ?1 ORDER BY 1, 2, 3",
          [&](sqlite::Statement& st) { st.bind(1, last_rowid); });
      run("DELETE FROM audit_patient_recent WHERE rowid <= ?1",
          [&](sqlite::Statement& st) { st.bind(1, last_rowid); });
    }
    if (records_to > indexed_below) {
      auto bind_range = [&](sqlite::Statement& st) {
        st.bind(1, static_cast<std::int64_t>(indexed_below)).bind(2, static_cast<std::int64_t>(records_to));
      };
      run("INSERT OR IGNORE INTO audit_agent_index(epoch, agent, seq) SELECT seq >> 16, agent, seq FROM "
          "audit_record WHERE seq >= ?1 AND seq < ?2 AND agent <> '' ORDER BY 1, 2, 3",
          bind_range);
      run("INSERT OR IGNORE INTO audit_time_index(time_ms, seq) SELECT time_ms, seq FROM audit_record "
          "WHERE seq >= ?1 AND seq < ?2 ORDER BY 1, 2",
          bind_range);
      run("UPDATE audit_index_state SET value = ?1 WHERE key = 'indexed_below'",
          [&](sqlite::Statement& st) { st.bind(1, static_cast<std::int64_t>(records_to)); });
    }
    if (status) status = tx.commit();
  }
  if (!status) {
    observe::log(observe::Level::error, "audit index merge failed; retried after the next commit",
                 {{"error", status.issue().diagnostics}});
    return;
  }
  // Fewer rows than asked for: the table is empty now (retention may have deleted some).
  recent_patient_rows = moved < n ? 0 : recent_patient_rows - std::min<std::uint64_t>(recent_patient_rows, moved);
  const std::uint64_t records = records_to - std::min(records_to, indexed_below);
  indexed_below = std::max(indexed_below, records_to);
  std::lock_guard lock(stats_mu);
  ++stats.index_merges;
  stats.patient_rows_merged += static_cast<std::uint64_t>(moved);
  stats.records_indexed += records;
  stats.index_merge_us +=
      static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count());
}

}  // namespace gw::audit
