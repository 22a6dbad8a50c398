// SPDX-License-Identifier: Apache-2.0
// Inside the audit log (log.h): Log::Impl, the state its writer thread, its readers and open()
// share, and the helpers they have in common. Included by the log_*.cpp files only.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <variant>
#include <vector>

#include "gateway/audit/log.h"
#include "gateway/audit/schema.h"
#include "gateway/sqlite/database.h"

namespace gw::audit {

// WAL size control. SQLite starts the WAL again from its beginning only when a write begins
// with every frame already copied into audit.db; under continuous load the background
// checkpointer never sees that (the writer has always committed more by the time it is done),
// so the WAL would keep growing. Once it holds kWalRestartPages the checkpointer asks the
// writer to copy the few frames committed since its pass itself (short: the bulk is copied),
// so the next transaction restarts the WAL. kWalMaxPages is the backstop should the
// checkpointer fall behind; kWalSizeLimit truncates a WAL that a burst made larger than that.
inline constexpr int kWalRestartPages = 8192;    // 32 MiB of 4 KiB pages
inline constexpr int kWalMaxPages = 65536;       // 256 MiB
inline constexpr std::int64_t kWalSizeLimit = 64 * 1024 * 1024;

inline fhir::Issue not_ready(std::string text) { return fhir::Issue::make(fhir::ErrorCode::not_ready, std::move(text)); }

inline merkle::Hash hash_from_blob(const std::string& b) {
  merkle::Hash h{};
  if (b.size() == h.size()) std::memcpy(h.data(), b.data(), h.size());
  return h;
}

// Reads perfect-subtree hashes from audit_tree for one connection; a missing node is a
// broken invariant reported through `error`.
struct NodeReader {
  sqlite::Database& db;
  std::optional<sqlite::Statement> stmt;
  std::string error;

  merkle::Hash operator()(unsigned level, std::uint64_t index) {
    if (!stmt) {
      auto s = db.prepare("SELECT hash FROM audit_tree WHERE pos = ?1");
      if (!s) {
        error = s.issue().diagnostics;
        return {};
      }
      stmt.emplace(std::move(*s));
    }
    stmt->reset();
    stmt->bind(1, tree_pos(level, static_cast<std::int64_t>(index)));
    auto row = stmt->step();
    if (!row || !*row) {
      if (error.empty())
        error = "audit.db is missing tree node level " + std::to_string(level) + " index " + std::to_string(index);
      return {};
    }
    return hash_from_blob(stmt->column_blob(0));
  }
};

// The log's shared state. The writer thread (log_writer.cpp) owns the writer-thread state and
// the connection `db`; readers (log_reads.cpp) lease read-only connections; open()
// (log_open.cpp) fills it in before the writer starts.
struct Log::Impl {
  struct Append {
    Append(Record r, Done d) : record(std::move(r)), done(std::move(d)) {}
    Append(Record r, Change c, ChangeDone d) : record(std::move(r)), change(std::move(c)), change_done(std::move(d)) {}

    Record record;
    Done done;
    // From append() with a change: an IG officer's change (Log::Change, empty for most of the
    // pipeline's records), applied just before the record; change_done completes the caller
    // instead of `done`.
    Change change;
    ChangeDone change_done;
    std::optional<fhir::Issue> refused;  // the change refused: neither it nor the record is stored

    // Completes the caller: with the sequence number, or with `failure` (not_ready) when the
    // batch could not be committed.
    void finish(std::optional<fhir::Issue> failure);
  };
  using Task = std::function<void()>;  // runs on the writer thread, between batches
  using Item = std::variant<Append, Task>;

  LogOptions opt;
  std::shared_ptr<const CheckpointSigner> signer;
  sqlite::Database db;  // the writer's connection; writer thread only (and open())

  std::mutex mu;
  std::condition_variable cv;
  std::deque<Item> queue;
  bool stopping = false;
  bool stopped = false;
  std::thread writer;
  // WAL checkpoints run here, on their own connection, so copying the WAL into audit.db and
  // syncing it never stalls a group commit (the writer's connection has autocheckpoint off).
  std::thread checkpointer;
  std::atomic<int> wal_pages{0};  // WAL size after the writer's last commit (sqlite3_wal_hook)
  std::atomic<bool> restart_wal{false};  // set by the checkpointer: see kWalRestartPages
  std::condition_variable checkpointer_cv;
  bool checkpointer_stop = false;
  std::atomic<bool> fail_writes{false};

  // Writer-thread state.
  std::uint64_t recent_patient_rows = 0;   // rows in audit_patient_recent (committed)
  std::uint64_t indexed_below = 0;         // records below this are in the agent and time indexes
  std::uint64_t pending_patient_rows = 0;  // added by the batch being written
  merkle::CompactRange range;
  merkle::Hash last_leaf{};
  std::uint64_t checkpointed_size = 0;
  std::chrono::steady_clock::time_point next_checkpoint;
  struct UserWindow {
    std::deque<std::pair<std::int64_t, std::string>> firsts;  // first access per patient in the hour
    std::unordered_map<std::string, std::int64_t> seen;
    std::int64_t alerted_until = 0;
  };
  std::unordered_map<std::string, UserWindow> windows;

  std::mutex flagged_mu;
  std::unordered_set<std::string> flagged;

  mutable std::mutex stats_mu;
  Stats stats;

  mutable std::mutex readers_mu;
  mutable std::vector<sqlite::Database> readers;

  Impl(LogOptions o, std::shared_ptr<const CheckpointSigner> s, sqlite::Database d)
      : opt(std::move(o)), signer(std::move(s)), db(std::move(d)) {}

  // Writer-thread state of the alert rules (alert_rules.cpp).
  // One alert per rule, user and patient per hour: a paramedic reading the same record ten
  // times at the door is one review item, not ten. Marks made by a batch count only once it
  // commits (pending_marks), so a failed commit never suppresses a later alert. Keyed by a
  // 64-bit FNV-1a hash of (user, patients, rule): nothing to allocate per record. A collision
  // (any two of the at most 200,000 marks kept: about one chance in 10^9) could only suppress
  // one alert for the rest of the other's hour.
  std::unordered_map<std::uint64_t, std::int64_t> alert_marks;  // key -> time of the last alert
  std::unordered_map<std::uint64_t, std::int64_t> pending_marks;

  // --- reads (log_reads.cpp) ---------------------------------------------------------
  struct Lease {
    const Impl* impl;
    std::optional<sqlite::Database> db;
    ~Lease() {
      if (db) {
        std::lock_guard lock(impl->readers_mu);
        if (impl->readers.size() < 4) impl->readers.push_back(std::move(*db));
      }
    }
  };
  fhir::Result<std::unique_ptr<Lease>> reader() const;

  // --- writer (log_writer.cpp) -------------------------------------------------------
  // Queues `a` for the writer, or completes it at once with not_ready (stopping, or the queue
  // holds LogOptions::max_queue).
  void enqueue(Append a);
  void run();
  fhir::Status insert_record(Record& r, std::vector<Alert>& raised);
  // Applies a.change inside SAVEPOINT change: a refusal is rolled back to it and kept in
  // a.refused. Fails only when the savepoint itself fails (the batch is then lost).
  fhir::Status apply_change(Append& a);
  // `before`, when given, runs first in the same transaction (a retention prune, so that it
  // and its record commit together).
  void commit_batch(std::vector<Append>& batch, const std::function<fhir::Status()>& before = {});
  fhir::Result<Checkpoint> write_checkpoint();

  // --- alert rules (alert_rules.cpp) -------------------------------------------------
  static std::uint64_t fnv1a(std::uint64_t h, std::string_view s);
  bool recently_alerted(std::uint64_t key, std::int64_t now);
  void commit_marks();
  void evaluate_rules(const Record& r, std::vector<Alert>& raised);

  // --- index merges (index_merge.cpp) ------------------------------------------------
  // The indexes the writer keeps off the commit path (audit.db migrations 4 and 5), brought up
  // to date in one transaction of their own, sorted by key, at most index_merge_rows at a time:
  //  - the oldest rows of audit_patient_recent move into audit_patient_index;
  //  - the records from audit_index_state's indexed_below on go into audit_agent_index and
  //    audit_time_index.
  // Each index page is then written once per merge instead of once per commit that touched
  // it. Runs after a commit, when that commit's records have been answered. A failure leaves
  // every table as it was (searches still find the rows where they are) and is retried after
  // the next commit.
  bool merge_due() const;
  void merge_indexes();

  // Queues a task and waits for its result (for callers off the writer thread).
  template <class R>
  R run_task(std::function<R()> fn) {
    std::mutex m;
    std::condition_variable done_cv;
    std::optional<R> result;
    {
      std::lock_guard lock(mu);
      if (stopping) return not_ready("the audit log is stopping");
      queue.emplace_back(Task([&] {
        R r = fn();
        std::lock_guard l(m);
        result.emplace(std::move(r));
        done_cv.notify_one();
      }));
    }
    cv.notify_one();
    std::unique_lock l(m);
    done_cv.wait(l, [&] { return result.has_value(); });
    return std::move(*result);
  }
};

}  // namespace gw::audit
