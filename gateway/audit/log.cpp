// SPDX-License-Identifier: Apache-2.0
#include "gateway/audit/log.h"

#include <fcntl.h>
#include <syslog.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cerrno>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <variant>

#include <sqlite3.h>

#include "gateway/audit/schema.h"
#include "gateway/observe/log.h"
#include "gateway/sqlite/database.h"
#include "gateway/observe/thread_name.h"

namespace gw::audit {

using fhir::ErrorCode;
using fhir::Issue;
using merkle::Hash;

namespace {

constexpr std::int64_t kHourMs = 3600 * 1000;

// WAL size control. SQLite starts the WAL again from its beginning only when a write begins
// with every frame already copied into audit.db; under continuous load the background
// checkpointer never sees that (the writer has always committed more by the time it is done),
// so the WAL would keep growing. Once it holds kWalRestartPages the checkpointer asks the
// writer to copy the few frames committed since its pass itself (short: the bulk is copied),
// so the next transaction restarts the WAL. kWalMaxPages is the backstop should the
// checkpointer fall behind; kWalSizeLimit truncates a WAL that a burst made larger than that.
constexpr int kWalRestartPages = 8192;    // 32 MiB of 4 KiB pages
constexpr int kWalMaxPages = 65536;       // 256 MiB
constexpr std::int64_t kWalSizeLimit = 64 * 1024 * 1024;
constexpr long long kSlowWriterStepMs = 200;  // warn_if_slow()

Issue not_ready(std::string text) { return Issue::make(ErrorCode::not_ready, std::move(text)); }

std::string subtype_column(const Record& r) {
  std::string out = " ";
  for (const auto& s : subtypes(r)) out.append(s).append(" ");
  return out;
}

// A record of what open() found wrong at start-up, made by the log itself as the gateway's own
// start and stop are (gateway/app.cpp).
Record system_record(const char* action, std::string note) {
  Record r;
  r.time_ms = now_ms();
  r.kind = "system";
  r.action = action;
  r.agent_kind = "system";
  r.user = "fhir-gateway";
  r.status = 200;
  r.detail.note = std::move(note);
  return r;
}

Hash hash_from_blob(const std::string& b) {
  Hash h{};
  if (b.size() == h.size()) std::memcpy(h.data(), b.data(), h.size());
  return h;
}

// Reads perfect-subtree hashes from audit_tree for one connection; a missing node is a
// broken invariant reported through `error`.
struct NodeReader {
  sqlite::Database& db;
  std::optional<sqlite::Statement> stmt;
  std::string error;

  Hash operator()(unsigned level, std::uint64_t index) {
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

bool last_sunday_passed(int year, int month, int mday, int hour, int wday_of_mday) {
  // True when (mday, hour UTC) is at or after 01:00 UTC on the last Sunday of `month`.
  (void)year;
  (void)month;
  // Days in March and October are 31; the last Sunday is in 25..31.
  int last_sunday = mday + ((7 - wday_of_mday) % 7);
  while (last_sunday + 7 <= 31) last_sunday += 7;
  while (last_sunday > 31) last_sunday -= 7;
  if (mday != last_sunday) return mday > last_sunday;
  return hour >= 1;
}

// The log's origin: the first line of every checkpoint it signs, which names the log the
// checkpoint is for (C2SP tlog-checkpoint). It is fixed when the log is created and kept in
// audit.db (gateway_info 'audit_origin'), so that editing public_base_url later does not make
// the log's older checkpoints look like another log's. A database from before it was kept
// takes the origin of its oldest checkpoint (the one it was created with), else `configured`.
fhir::Result<std::string> fix_origin(sqlite::Database& db, const std::string& configured) {
  auto stored = db.prepare("SELECT value FROM gateway_info WHERE key = 'audit_origin'");
  if (!stored) return std::move(stored).issue();
  auto row = stored->step();
  if (!row) return std::move(row).issue();
  if (*row) return stored->column_text(0);
  std::string origin = configured;
  auto oldest = db.prepare("SELECT note FROM audit_checkpoint ORDER BY size, time_ms LIMIT 1");
  if (!oldest) return std::move(oldest).issue();
  auto cp = oldest->step();
  if (!cp) return std::move(cp).issue();
  if (*cp) {
    auto c = parse_checkpoint(oldest->column_text(0));
    if (!c) return not_ready("audit.db's oldest checkpoint is damaged (" + c.issue().diagnostics + "); run audit-verify");
    origin = c->origin;
  }
  auto ins = db.prepare("INSERT INTO gateway_info(key, value) VALUES ('audit_origin', ?1)");
  if (!ins) return std::move(ins).issue();
  ins->bind(1, origin);
  if (auto s = ins->run(); !s) return std::move(s).issue();
  return origin;
}

}  // namespace

LocalTime london_time(std::int64_t time_ms) {
  std::time_t secs = static_cast<std::time_t>(time_ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  bool bst = false;
  const int month = tm.tm_mon + 1;
  if (month > 3 && month < 10) bst = true;
  else if (month == 3) bst = last_sunday_passed(tm.tm_year, month, tm.tm_mday, tm.tm_hour, tm.tm_wday);
  else if (month == 10) bst = !last_sunday_passed(tm.tm_year, month, tm.tm_mday, tm.tm_hour, tm.tm_wday);
  if (bst) {
    secs += 3600;
    gmtime_r(&secs, &tm);
  }
  return LocalTime{tm.tm_hour * 60 + tm.tm_min, tm.tm_wday};
}

struct Log::Impl {
  struct Append {
    Record record;
    Done done;
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
  Hash last_leaf{};
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

  // --- reads --------------------------------------------------------------------------
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
  fhir::Result<std::unique_ptr<Lease>> reader() const {
    auto lease = std::make_unique<Lease>();
    lease->impl = this;
    {
      std::lock_guard lock(readers_mu);
      if (!readers.empty()) {
        lease->db.emplace(std::move(readers.back()));
        readers.pop_back();
        return lease;
      }
    }
    auto d = sqlite::Database::open(opt.path, sqlite::Database::Mode::read_only);
    if (!d) return std::move(d).issue();
    lease->db.emplace(std::move(*d));
    return lease;
  }

  // --- writer -------------------------------------------------------------------------
  void run() {
    std::unique_lock lock(mu);
    std::size_t last_batch = 0;
    for (;;) {
      if (queue.empty() && !stopping) {
        if (signer) cv.wait_until(lock, next_checkpoint);
        else cv.wait(lock);
      }
      // Under load, let more records join this commit (see LogOptions::commit_delay). A plain
      // sleep: appends meanwhile do not wake the writer.
      if (opt.commit_delay.count() > 0 && last_batch >= opt.commit_siblings && !stopping &&
          queue.size() < opt.max_batch) {
        lock.unlock();
        std::this_thread::sleep_for(opt.commit_delay);
        lock.lock();
      }
      std::vector<Append> batch;
      // Records are large (a Record is about 1 KiB of strings): no regrowth while filling.
      batch.reserve(std::min(queue.size(), opt.max_batch));
      std::vector<Task> tasks;
      while (!queue.empty() && batch.size() < opt.max_batch) {
        Item item = std::move(queue.front());
        queue.pop_front();
        if (auto* a = std::get_if<Append>(&item)) {
          batch.push_back(std::move(*a));
        } else {
          tasks.push_back(std::move(std::get<Task>(item)));
          break;  // keep order: a task sees every record queued before it
        }
      }
      const bool done = queue.empty() && stopping;
      last_batch = batch.size();
      lock.unlock();
      if (!batch.empty()) {
        const auto b0 = std::chrono::steady_clock::now();
        commit_batch(batch);
        warn_if_slow(b0, [n = batch.size()] { return "commit of " + std::to_string(n) + " records"; });
      }
      for (auto& t : tasks) t();
      if (signer && (std::chrono::steady_clock::now() >= next_checkpoint || done)) {
        if (range.size() != checkpointed_size) (void)write_checkpoint();
        next_checkpoint = std::chrono::steady_clock::now() + opt.checkpoint_interval;
      }
      lock.lock();
      if (done && queue.empty()) break;
    }
    stopped = true;
  }

  fhir::Status insert_record(Record& r, std::vector<Alert>& raised) {
    r.seq = range.size();
    r.prev = r.seq == 0 ? std::string() : merkle::to_hex(last_leaf);
    const std::string bytes = encode(r);
    const Hash leaf = merkle::leaf_hash(bytes);
    auto ins = db.cached(
        "INSERT INTO audit_record(seq, record, time_ms, agent, outcome, subtypes) VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
    if (!ins) return std::move(ins).issue();
    ins->bind(1, static_cast<std::int64_t>(r.seq))
        .bind_blob(2, bytes.data(), bytes.size())
        .bind(3, r.time_ms)
        .bind(4, r.user)
        .bind(5, static_cast<std::int64_t>(outcome_code(r.status)))
        .bind(6, subtype_column(r));
    if (auto s = ins->run(); !s) return s;
    // Appended (audit.db migration 4); merge_indexes() sorts them into the index later.
    // One row per patient named, however often the record names them.
    for (std::size_t i = 0; i < r.detail.patients.size(); ++i) {
      const std::string& nhs = r.detail.patients[i];
      if (std::find(r.detail.patients.begin(), r.detail.patients.begin() + static_cast<std::ptrdiff_t>(i), nhs) !=
          r.detail.patients.begin() + static_cast<std::ptrdiff_t>(i))
        continue;
      auto pat = db.cached("INSERT INTO audit_patient_recent(nhs_number, seq) VALUES (?1, ?2)");
      if (!pat) return std::move(pat).issue();
      pat->bind(1, nhs).bind(2, static_cast<std::int64_t>(r.seq));
      if (auto s = pat->run(); !s) return s;
      ++pending_patient_rows;
    }
    auto node_stmt = db.cached("INSERT INTO audit_tree(pos, hash) VALUES (?1, ?2)");
    if (!node_stmt) return std::move(node_stmt).issue();
    sqlite::Statement* node = &*node_stmt;
    fhir::Status status = fhir::Ok{};
    range.append(leaf, [&](const merkle::CompactRange::Node& n) {
      if (!status) return;
      node->reset();
      node->bind(1, tree_pos(n.level, static_cast<std::int64_t>(n.index))).bind_blob(2, n.hash.data(), n.hash.size());
      status = node->run();
    });
    if (!status) return status;
    last_leaf = leaf;
    evaluate_rules(r, raised);
    return fhir::Ok{};
  }

  // One alert per rule, user and patient per hour: a paramedic reading the same record ten
  // times at the door is one review item, not ten. Marks made by a batch count only once it
  // commits (pending_marks), so a failed commit never suppresses a later alert. Keyed by a
  // 64-bit FNV-1a hash of (user, patients, rule): nothing to allocate per record. A collision
  // (any two of the at most 200,000 marks kept: about one chance in 10^9) could only suppress
  // one alert for the rest of the other's hour.
  std::unordered_map<std::uint64_t, std::int64_t> alert_marks;  // key -> time of the last alert
  std::unordered_map<std::uint64_t, std::int64_t> pending_marks;
  static std::uint64_t fnv1a(std::uint64_t h, std::string_view s) {
    for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ULL;
    return (h ^ 0x1f) * 0x100000001b3ULL;  // a separator, so that ("ab", "c") != ("a", "bc")
  }
  bool recently_alerted(std::uint64_t key, std::int64_t now) {
    for (const auto* m : {&pending_marks, &alert_marks}) {
      auto it = m->find(key);
      if (it != m->end() && it->second > now - kHourMs) return true;
    }
    pending_marks[key] = now;
    return false;
  }
  void commit_marks() {
    const std::int64_t cutoff = now_ms() - kHourMs;
    if (alert_marks.size() > 200000)  // bounded: forget marks older than the hour
      std::erase_if(alert_marks, [cutoff](const auto& kv) { return kv.second <= cutoff; });
    if (windows.size() > 100000)  // and users with nothing opened in the last hour
      std::erase_if(windows, [cutoff](const auto& kv) {
        return kv.second.firsts.empty() || kv.second.firsts.back().first <= cutoff;
      });
    for (auto& [k, v] : pending_marks) alert_marks[k] = v;
    pending_marks.clear();
  }

  void evaluate_rules(const Record& r, std::vector<Alert>& raised) {
    const AlertRules& rules = opt.rules;
    std::uint64_t who = fnv1a(0xcbf29ce484222325ULL, r.user);
    for (const auto& p : r.detail.patients) who = fnv1a(who, p);
    // Views, not strings: most calls are suppressed as recently alerted, and those build nothing.
    auto raise = [&](std::string_view rule, std::string_view detail) {
      // Refused break-glass attempts are always raised; everything else once an hour.
      if (r.status < 400 && recently_alerted(fnv1a(who, rule), r.time_ms)) return;
      Alert a;
      a.seq = r.seq;
      a.rule = std::string(rule);
      a.detail = std::string(detail);
      a.raised_ms = r.time_ms;
      a.status = "open";
      raised.push_back(std::move(a));
    };
    const bool used_break_glass = r.detail.basis == "break-glass" || !r.detail.break_glass_reason.empty();
    if (rules.break_glass && used_break_glass)
      raise("break-glass", (r.status < 400 ? "break-glass access, reason " : "break-glass refused, reason ") +
                               (r.detail.break_glass_reason.empty() ? std::string("(grant)") : r.detail.break_glass_reason));
    // Clinical access only: an IG officer's own audit queries name patients too, but are not
    // what these rules watch for.
    const bool ig_route = r.route.rfind("/AuditEvent", 0) == 0 || r.route.rfind("/audit/", 0) == 0;
    const bool patient_access =
        r.kind == "rest" && r.status < 400 && !r.detail.patients.empty() && r.agent_kind == "user" && !ig_route;
    if (!patient_access) return;
    // Break-glass has its own rule (and may also be used for a related patient who objected).
    if (rules.without_relationship && r.detail.basis == "emergency-purpose")
      raise("no-relationship", "access without a prior relationship (emergency purpose of use)");
    {
      std::lock_guard lock(flagged_mu);
      for (const auto& nhs : r.detail.patients)
        if (flagged.count(nhs)) raise("flagged-record", "access to a flagged record (NHS number " + nhs + ")");
    }
    if (rules.out_of_hours) {
      LocalTime t = london_time(r.time_ms);
      const bool weekend = t.weekday == 0 || t.weekday == 6;
      if ((rules.weekends_out_of_hours && weekend) || t.minute_of_day < rules.working_start_minute ||
          t.minute_of_day >= rules.working_end_minute)
        raise("out-of-hours", "access outside configured working hours (Europe/London)");
    }
    if (rules.max_patients_per_hour > 0 && !r.user.empty()) {
      UserWindow& w = windows[r.user];
      while (!w.firsts.empty() && w.firsts.front().first <= r.time_ms - kHourMs) {
        w.seen.erase(w.firsts.front().second);
        w.firsts.pop_front();
      }
      for (const auto& nhs : r.detail.patients) {
        if (w.seen.count(nhs) || w.firsts.size() > 4 * rules.max_patients_per_hour + 16) continue;
        w.seen.emplace(nhs, r.time_ms);
        w.firsts.emplace_back(r.time_ms, nhs);
      }
      if (w.firsts.size() > rules.max_patients_per_hour && r.time_ms >= w.alerted_until) {
        raise("volume", "user opened " + std::to_string(w.firsts.size()) + " records within an hour (threshold " +
                            std::to_string(rules.max_patients_per_hour) + ")");
        w.alerted_until = r.time_ms + kHourMs;
      }
    }
  }

  // `before`, when given, runs first in the same transaction (a retention prune, so that it
  // and its record commit together).
  void commit_batch(std::vector<Append>& batch, const std::function<fhir::Status()>& before = {}) {
    // A failed commit restores the tree; the volume rule's per-user windows keep the attempts
    // (those requests were refused with 503, but the user did try to open the records).
    const merkle::CompactRange saved_range = range;
    const Hash saved_leaf = last_leaf;
    pending_patient_rows = 0;
    std::vector<Alert> raised;
    fhir::Status status = fhir::Ok{};
    {
      sqlite::Transaction tx(db);
      status = tx.begun();
      if (status && before) status = before();
      for (auto& a : batch) {
        if (!status) break;
        status = insert_record(a.record, raised);
      }
      if (status) {
        for (const auto& al : raised) {
          auto ins = db.cached("INSERT INTO audit_alert(seq, rule, detail, raised_ms, status) VALUES (?1, ?2, ?3, ?4, 'open')");
          if (!ins) {
            status = std::move(ins).issue();
            break;
          }
          ins->bind(1, static_cast<std::int64_t>(al.seq)).bind(2, al.rule).bind(3, al.detail).bind(4, al.raised_ms);
          status = ins->run();
        }
      }
      if (status && fail_writes.load()) status = not_ready("audit store write failure (injected)");
      if (status) status = tx.commit();
    }
    {
      std::lock_guard lock(stats_mu);
      ++stats.batches;
      if (!status) ++stats.failed_batches;
      stats.largest_batch = std::max<std::uint64_t>(stats.largest_batch, batch.size());
      if (status) stats.size = range.size();
    }
    if (!status) {
      range = saved_range;
      last_leaf = saved_leaf;
      pending_marks.clear();
      observe::log(observe::Level::error, "audit commit failed",
                   {{"records", std::to_string(batch.size())}, {"error", status.issue().diagnostics}});
      // The hook first: anyone told of this failure must find the gateway's state saying so.
      if (opt.on_commit_failed) opt.on_commit_failed();
      for (auto& a : batch)
        a.done(not_ready("the audit log could not be written; nothing was sent. Try again later"));
      return;
    }
    commit_marks();
    recent_patient_rows += pending_patient_rows;
    // Likewise: a caller answered after this commit sees readiness restored.
    if (opt.on_commit) opt.on_commit();
    for (auto& a : batch) a.done(a.record.seq);
    if (merge_due()) {
      const auto m0 = std::chrono::steady_clock::now();
      merge_indexes();
      warn_if_slow(m0, [] { return "index merge"; });
    }
    // See kWalRestartPages: finish the checkpointer's copy here, so that the next transaction
    // starts the WAL again from its beginning. A small WAL is rewritten in place (cheaper
    // syncs than appending to a growing file) and keeps audit.db plus its WAL near the size of
    // the data itself.
    const int wal_now = wal_pages.load(std::memory_order_relaxed);
    if (restart_wal.exchange(false) || wal_now > kWalMaxPages) {
      const auto c0 = std::chrono::steady_clock::now();
      (void)db.exec("PRAGMA wal_checkpoint(PASSIVE);");
      warn_if_slow(c0, [wal_now] { return "WAL checkpoint (" + std::to_string(wal_now) + " WAL pages)"; });
    }
  }

  // Every request carrying patient data waits for the writer: a step of it that holds them
  // up is logged (no PHI: what the writer was doing and for how long). `describe` names the
  // step, and is called only then.
  template <class Describe>
  static void warn_if_slow(std::chrono::steady_clock::time_point t0, Describe&& describe) {
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
    if (ms >= kSlowWriterStepMs)
      observe::log(observe::Level::warn, "audit writer step was slow; audited responses waited for it",
                   {{"step", std::string(describe())}, {"ms", std::to_string(ms)}});
  }

  // The indexes the writer keeps off the commit path (audit.db migrations 4 and 5), brought up
  // to date in one transaction of their own, sorted by key, at most index_merge_rows at a time:
  //  - the oldest rows of audit_patient_recent move into audit_patient_index;
  //  - the records from audit_index_state's indexed_below on go into audit_agent_index and
  //    audit_time_index.
  // Each index page is then written once per merge instead of once per commit that touched
  // it. Runs after a commit, when that commit's records have been answered. A failure leaves
  // every table as it was (searches still find the rows where they are) and is retried after
  // the next commit.
  bool merge_due() const {
    const std::uint64_t n = opt.index_merge_rows;
    return n > 0 && (recent_patient_rows >= n || range.size() - std::min(range.size(), indexed_below) >= n);
  }

  void merge_indexes() {
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

  fhir::Result<Checkpoint> write_checkpoint() {
    if (!signer) return not_ready("no audit checkpoint key is configured");
    Checkpoint c = signer->sign(opt.origin, range.size(), range.root(), now_ms());
    const std::string note = serialise(c);
    auto ins = db.prepare("INSERT OR REPLACE INTO audit_checkpoint(size, time_ms, root, note) VALUES (?1, ?2, ?3, ?4)");
    if (!ins) return std::move(ins).issue();
    ins->bind(1, static_cast<std::int64_t>(c.size)).bind(2, c.time_ms).bind_blob(3, c.root.data(), c.root.size()).bind(4, note);
    if (auto s = ins->run(); !s) return std::move(s).issue();
    if (!opt.checkpoint_file.empty()) {
      int fd = ::open(opt.checkpoint_file.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
      bool ok = fd >= 0;
      if (ok) {
        std::string text = note + "\n";
        ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
        ::close(fd);
      }
      if (!ok)
        observe::log(observe::Level::error, "audit checkpoint file not written",
                     {{"file", opt.checkpoint_file}, {"error", std::strerror(errno)}});
    }
    if (opt.syslog_checkpoints) {
      syslog(LOG_AUTHPRIV | LOG_NOTICE, "fhir-gateway audit checkpoint origin=%s size=%llu root=%s time=%s",
             c.origin.c_str(), static_cast<unsigned long long>(c.size), merkle::to_base64(c.root).c_str(),
             format_time_ms(c.time_ms).c_str());
    }
    checkpointed_size = c.size;
    {
      std::lock_guard lock(stats_mu);
      stats.last_checkpoint = c;
    }
    observe::log(observe::Level::info, "audit checkpoint",
                 {{"size", std::to_string(c.size)}, {"root", merkle::to_base64(c.root)}});
    return c;
  }

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

Log::Log(LogOptions options) : options_(std::move(options)) {}

Log::~Log() { stop(); }

fhir::Result<std::unique_ptr<Log>> Log::open(LogOptions options, std::shared_ptr<const CheckpointSigner> signer) {
  auto db = sqlite::Database::open(options.path);
  if (!db) return std::move(db).issue();
  if (auto v = sqlite::migrate(*db, migrations()); !v) return std::move(v).issue();
  auto origin = fix_origin(*db, options.origin);
  if (!origin) return std::move(origin).issue();
  if (*origin != options.origin)
    observe::log(observe::Level::warn,
                 "the audit log keeps the origin it was created with, not the one configured now (public_base_url "
                 "changed?): its checkpoints go on naming the log as before",
                 {{"log_origin", *origin}, {"configured_origin", options.origin}});
  options.origin = std::move(*origin);

  std::unique_ptr<Log> log(new Log(options));
  log->impl_ = std::make_unique<Impl>(options, std::move(signer), std::move(*db));
  Impl& impl = *log->impl_;

  // Rebuild the frontier from the stored tree.
  auto count = impl.db.prepare("SELECT coalesce(max(seq) + 1, 0) FROM audit_record");
  if (!count) return std::move(count).issue();
  if (auto row = count->step(); !row) return std::move(row).issue();
  const auto size = static_cast<std::uint64_t>(count->column_int64(0));
  NodeReader nodes{impl.db, {}, {}};
  merkle::NodeSource source = [&nodes](unsigned l, std::uint64_t i) { return nodes(l, i); };
  impl.range = merkle::CompactRange::for_size(size, source);
  if (size > 0) impl.last_leaf = nodes(0, size - 1);
  if (!nodes.error.empty()) return not_ready("audit.db tree is damaged: " + nodes.error + "; run audit-verify");

  // The stored tree must still match the newest checkpoint it signed.
  auto last = impl.db.prepare("SELECT size, root, time_ms FROM audit_checkpoint ORDER BY size DESC, time_ms DESC LIMIT 1");
  if (!last) return std::move(last).issue();
  auto row = last->step();
  if (!row) return std::move(row).issue();
  std::optional<std::pair<std::uint64_t, std::int64_t>> db_newest;  // audit.db's newest checkpoint: size, time
  if (*row) {
    const auto cp_size = static_cast<std::uint64_t>(last->column_int64(0));
    const Hash cp_root = hash_from_blob(last->column_blob(1));
    db_newest.emplace(cp_size, last->column_int64(2));
    if (cp_size > size)
      return not_ready("audit.db holds " + std::to_string(size) + " records but its checkpoint covers " +
                       std::to_string(cp_size) + ": the log was truncated; run audit-verify");
    const Hash root = cp_size == 0 ? merkle::empty_root() : merkle::range_hash(0, cp_size, source);
    if (!nodes.error.empty() || root != cp_root)
      return not_ready("audit.db no longer matches its checkpoint at size " + std::to_string(cp_size) +
                       "; run audit-verify");
    impl.checkpointed_size = cp_size;
  }
  // A checkpoint file ahead of the database means an older copy was restored.
  std::vector<Record> findings;  // what this start found wrong, for the log itself
  if (!options.checkpoint_file.empty()) {
    bool has_db_newest = false;
    std::uint64_t file_newest = 0, file_notes = 0;
    std::string torn;  // what was done about a torn last note ("" = none)
    FILE* f = std::fopen(options.checkpoint_file.c_str(), "rb");
    const bool opened = f != nullptr;
    if (opened) {
      std::string text;
      char buf[65536];
      std::size_t n;
      while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
      std::fclose(f);
      auto parsed = parse_checkpoint_file(text);
      if (!parsed) return not_ready("checkpoint file " + options.checkpoint_file + " is unreadable: " + parsed.issue().diagnostics);
      for (const auto& c : parsed->notes) {
        if (c.size > size)
          return not_ready("checkpoint file " + options.checkpoint_file + " covers " + std::to_string(c.size) +
                           " records but audit.db holds " + std::to_string(size) +
                           ": audit.db was rolled back or truncated; run audit-verify");
        const Hash root = c.size == 0 ? merkle::empty_root() : merkle::range_hash(0, c.size, source);
        if (root != c.root)
          return not_ready("audit.db does not match the checkpoint file at size " + std::to_string(c.size) +
                           "; run audit-verify");
        ++file_notes;
        file_newest = std::max(file_newest, c.size);
        if (db_newest && c.size == db_newest->first && c.time_ms == db_newest->second) has_db_newest = true;
      }
      // An append cut short (a crash or a full disk mid-write, or a copy cut by hand) leaves the
      // last note incomplete. It vouches for nothing, and the next note appended after it would be
      // glued onto it, unreadable. The file only ever grows by whole notes, so it is cut back to
      // its last complete one (the blank line after it stays): only bytes no reader could use
      // go. When that fails (an append-only file), nothing more is appended to it this run.
      if (parsed->torn_bytes > 0) {
        torn = "ended in an incomplete checkpoint note (" + std::to_string(parsed->torn_bytes) +
               " bytes: an append cut short by a crash or a full disk, or a copy cut short), ";
        if (::truncate(options.checkpoint_file.c_str(), static_cast<off_t>(parsed->complete_bytes)) == 0) {
          torn += "which was removed";
        } else {
          torn += std::string("which could not be removed (") + std::strerror(errno) +
                  "): no checkpoint is appended to it until those bytes are removed and the gateway restarted";
          impl.opt.checkpoint_file.clear();
        }
      }
    }
    // A file that lacks audit.db's newest checkpoint (deleted, emptied, cut, an older copy) can
    // no longer reveal a tail deleted from audit.db together with its checkpoints. The gateway
    // still starts (audit.db matched its own signed checkpoints above, and refusing would turn a
    // lost log file into an outage), but says so where operators and IG officers look: the
    // operational log and the audit log itself. The next checkpoint is appended as usual.
    if (db_newest && !has_db_newest) {
      std::string found = !opened ? "is missing or unreadable"
                             : file_notes == 0 ? "holds no checkpoint"
                                               : "holds " + std::to_string(file_notes) +
                                                     " checkpoint(s), the newest of " + std::to_string(file_newest) +
                                                     " records";
      if (!torn.empty()) found = torn + "; it " + found;
      const std::string text = ", but audit.db's newest signed checkpoint covers " +
                               std::to_string(db_newest->first) + " records (signed " +
                               format_time_ms(db_newest->second) +
                               "): the file is behind audit.db, so it cannot reveal records deleted from the end of "
                               "audit.db; check the copies kept elsewhere with audit-verify";
      observe::log(observe::Level::warn, "audit checkpoint file is behind audit.db",
                   {{"file", options.checkpoint_file},
                    {"database_checkpoint_size", db_newest->first},
                    {"file_checkpoints", file_notes},
                    {"file_checkpoint_size", file_newest}});
      log->start_warnings_.push_back("checkpoint file " + options.checkpoint_file + " " + found + text);
      findings.push_back(system_record("checkpoint-file-behind", "the checkpoint file " + found + text));
    } else if (!torn.empty()) {
      const std::string text = torn + "; the complete checkpoints before it match audit.db";
      observe::log(observe::Level::warn, "audit checkpoint file ended in an incomplete note",
                   {{"file", options.checkpoint_file}, {"file_checkpoints", file_notes}});
      log->start_warnings_.push_back("checkpoint file " + options.checkpoint_file + " " + text);
      findings.push_back(system_record("checkpoint-file-torn", "the checkpoint file " + text));
    }
  }

  auto flagged = impl.db.prepare("SELECT nhs_number FROM audit_flagged_patient");
  if (!flagged) return std::move(flagged).issue();
  for (;;) {
    auto r = flagged->step();
    if (!r) return std::move(r).issue();
    if (!*r) break;
    impl.flagged.insert(flagged->column_text(0));
  }
  for (const auto& n : options.rules.flagged_patients) impl.flagged.insert(n);
  impl.stats.size = size;
  auto recent = impl.db.prepare("SELECT count(*) FROM audit_patient_recent");
  if (!recent) return std::move(recent).issue();
  if (auto r = recent->step(); !r) return std::move(r).issue();
  impl.recent_patient_rows = static_cast<std::uint64_t>(recent->column_int64(0));
  // The searches look for a record below indexed_below in the agent and time indexes only
  // (audit.db migration 5). A value beyond the log, or a time index not holding exactly one
  // row per record below it (cheap to count), means they were edited and would hide accesses:
  // both are rebuilt from the records, in the transaction that appends a record saying so.
  // (audit-verify checks every row.)
  auto indexed = impl.db.prepare(
      "SELECT (SELECT value FROM audit_index_state WHERE key = 'indexed_below'), (SELECT count(*) FROM audit_time_index)");
  if (!indexed) return std::move(indexed).issue();
  if (auto r = indexed->step(); !r) return std::move(r).issue();
  const bool state_missing = indexed->column_is_null(0);
  const std::int64_t state = indexed->column_int64(0);
  const std::int64_t time_rows = indexed->column_int64(1);
  std::function<fhir::Status()> rebuild;
  if (state_missing || state < 0 || static_cast<std::uint64_t>(state) > size || time_rows != state) {
    const std::string text =
        "the agent and time search indexes of audit.db did not match its " + std::to_string(size) + " records (" +
        (state_missing ? std::string("no indexed_below") : "indexed_below " + std::to_string(state)) + ", " +
        std::to_string(time_rows) +
        " time index rows): searches by user and date, and the export, could have missed accesses. They were "
        "rebuilt from the records; audit-verify on a copy taken before this start shows what had been changed";
    observe::log(observe::Level::warn, "audit search indexes did not match the log; rebuilt",
                 {{"records", size}, {"indexed_below", state_missing ? std::int64_t{-1} : state},
                  {"time_index_rows", time_rows}});
    log->start_warnings_.push_back(text);
    findings.push_back(system_record("index-rebuild", text));
    rebuild = [&impl, size]() -> fhir::Status {
      auto st = impl.db.prepare("INSERT OR REPLACE INTO audit_index_state(key, value) VALUES ('indexed_below', ?1)");
      if (!st) return std::move(st).issue();
      st->bind(1, static_cast<std::int64_t>(size));
      if (auto s = impl.db.exec(
              "DELETE FROM audit_agent_index; DELETE FROM audit_time_index;"
              "INSERT INTO audit_agent_index(epoch, agent, seq) SELECT seq >> 16, agent, seq FROM audit_record "
              "WHERE agent <> '' ORDER BY 1, 2, 3;"
              "INSERT INTO audit_time_index(time_ms, seq) SELECT time_ms, seq FROM audit_record ORDER BY 1, 2;");
          !s)
        return s;
      return st->run();
    };
  }
  impl.indexed_below = rebuild ? size : static_cast<std::uint64_t>(state);
  impl.next_checkpoint = std::chrono::steady_clock::now() + options.checkpoint_interval;
  // Writer connection: a small page cache (the indexes are merged in sorted batches, so the
  // commits touch the right-hand edges of the b-trees only, and SQLite walks the whole cache at
  // every commit), and no checkpoints in the commit path.
  if (auto s = impl.db.exec("PRAGMA cache_size=-4096; PRAGMA wal_autocheckpoint=0; PRAGMA journal_size_limit=" +
                            std::to_string(kWalSizeLimit) + ";");
      !s)
    return std::move(s).issue();
  sqlite3_wal_hook(
      impl.db.handle(),
      [](void* arg, sqlite3*, const char*, int pages) {
        static_cast<std::atomic<int>*>(arg)->store(pages, std::memory_order_relaxed);
        return SQLITE_OK;
      },
      &impl.wal_pages);
  auto wal = sqlite::Database::open(options.path);
  if (!wal) return std::move(wal).issue();
  // What this start found wrong goes into the log before anything else (with the index
  // rebuild, in one transaction).
  if (!findings.empty()) {
    std::optional<fhir::Issue> failed;
    std::vector<Impl::Append> batch;
    for (auto& r : findings)
      batch.push_back(Impl::Append{std::move(r), [&failed](fhir::Result<std::uint64_t> seq) {
                                     if (!seq && !failed) failed = seq.issue();
                                   }});
    impl.commit_batch(batch, rebuild);
    if (failed) return not_ready("audit.db's start-up findings could not be recorded: " + failed->diagnostics);
  }
  impl.writer = std::thread([&impl] {
    observe::name_this_thread("gw-audit-wr");
    impl.run();
  });
  impl.checkpointer = std::thread([&impl, conn = std::make_shared<sqlite::Database>(std::move(*wal))] {
    observe::name_this_thread("gw-audit-wal");
    std::unique_lock lock(impl.mu);
    while (!impl.checkpointer_stop) {
      impl.checkpointer_cv.wait_for(lock, std::chrono::milliseconds(500), [&impl] { return impl.checkpointer_stop; });
      lock.unlock();
      // PASSIVE: copies what no reader still needs, never waits for or blocks the writer.
      if (auto s = conn->exec("PRAGMA wal_checkpoint(PASSIVE);"); !s)
        observe::log(observe::Level::warn, "audit WAL checkpoint failed", {{"error", s.issue().diagnostics}});
      else if (impl.wal_pages.load(std::memory_order_relaxed) > kWalRestartPages)
        impl.restart_wal.store(true);
      lock.lock();
    }
  });
  return log;
}

void Log::append(Record r, Done done) {
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->stopping) {
      done(not_ready("the audit log is stopping"));
      return;
    }
    if (impl_->queue.size() >= options_.max_queue) {
      done(not_ready("the audit log is overloaded; try again later"));
      return;
    }
    impl_->queue.emplace_back(Impl::Append{std::move(r), std::move(done)});
  }
  impl_->cv.notify_one();
}

fhir::Result<std::uint64_t> Log::append_sync(Record r) {
  std::mutex m;
  std::condition_variable cv;
  std::optional<fhir::Result<std::uint64_t>> result;
  append(std::move(r), [&](fhir::Result<std::uint64_t> res) {
    std::lock_guard l(m);
    result.emplace(std::move(res));
    cv.notify_one();
  });
  std::unique_lock l(m);
  cv.wait(l, [&] { return result.has_value(); });
  return std::move(*result);
}

fhir::Result<Checkpoint> Log::checkpoint_now() {
  Impl& impl = *impl_;
  return impl.run_task<fhir::Result<Checkpoint>>([&impl] { return impl.write_checkpoint(); });
}

void Log::flush() {
  if (!impl_) return;
  // A task runs on the writer thread after the batch before it committed and completed its
  // callers; when the log is already stopping, stop() completes everything itself.
  (void)impl_->run_task<fhir::Status>([] { return fhir::Status(fhir::Ok{}); });
}

void Log::stop() {
  if (!impl_) return;
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->stopping && !impl_->writer.joinable()) return;
    impl_->stopping = true;
  }
  impl_->cv.notify_one();
  if (impl_->writer.joinable()) impl_->writer.join();
  {
    std::lock_guard lock(impl_->mu);
    impl_->checkpointer_stop = true;
  }
  impl_->checkpointer_cv.notify_all();
  if (impl_->checkpointer.joinable()) impl_->checkpointer.join();
  // Everything is committed: fold the WAL into audit.db so the file alone is complete (a copy
  // of audit.db taken after a clean stop needs no -wal file).
  (void)impl_->db.exec("PRAGMA wal_checkpoint(TRUNCATE);");
}

void Log::inject_write_failure(bool on) { impl_->fail_writes = on; }

fhir::Result<Page> Log::search(const Query& q) const {
  auto lease = impl_->reader();
  if (!lease) return std::move(lease).issue();
  sqlite::Database& db = *(*lease)->db;
  std::string where = " WHERE record IS NOT NULL";
  std::vector<std::variant<std::int64_t, std::string>> args;
  auto arg = [&](auto v) {
    args.emplace_back(std::move(v));
    std::string placeholder = "?";
    placeholder.append(std::to_string(args.size()));
    return placeholder;
  };
  // The patient and agent indexes are keyed by epoch (seq >> 16) first: a search probes each.
  static const std::string every_epoch =
      "epoch IN (WITH RECURSIVE e(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM e WHERE x < (SELECT "
      "coalesce(max(seq), 0) >> 16 FROM audit_record)) SELECT x FROM e)";
  if (!q.patient.empty()) {
    // Both halves of the patient index (audit.db migration 4): the sorted one by key, one
    // probe per epoch; the recent rows (at most LogOptions::index_merge_rows and one
    // commit's more) by scan.
    const std::string nhs = arg(q.patient);
    where += " AND seq IN (SELECT seq FROM audit_patient_index WHERE " + every_epoch + " AND nhs_number = " + nhs +
             " UNION ALL SELECT seq FROM audit_patient_recent WHERE nhs_number = " + nhs + ")";
  }
  // The agent and time indexes (audit.db migration 5) hold the records below indexed_below;
  // the newer ones are read from audit_record by rowid range.
  const std::string unindexed = "seq >= (SELECT value FROM audit_index_state WHERE key = 'indexed_below')";
  if (!q.agent.empty()) {
    const std::string agent = arg(q.agent);
    where += " AND agent = " + agent +
             " AND seq IN (SELECT seq FROM audit_agent_index WHERE " + every_epoch + " AND agent = " + agent +
             " UNION ALL SELECT seq FROM audit_record WHERE " + unindexed + " AND agent = " + agent + ")";
  }
  if (q.from_ms || q.to_ms) {
    std::string range;
    if (q.from_ms) range += "time_ms >= " + arg(*q.from_ms);
    if (q.to_ms) range += std::string(range.empty() ? "" : " AND ") + "time_ms < " + arg(*q.to_ms);
    where += " AND " + range + " AND seq IN (SELECT seq FROM audit_time_index WHERE " + range +
             " UNION ALL SELECT seq FROM audit_record WHERE " + unindexed + " AND " + range + ")";
  }
  if (q.outcome) where += " AND outcome = " + arg(static_cast<std::int64_t>(*q.outcome));
  if (!q.subtype.empty()) where += " AND instr(subtypes, " + arg(" " + q.subtype + " ") + ") > 0";
  auto bind_all = [&args](sqlite::Statement& s) {
    for (std::size_t i = 0; i < args.size(); ++i) {
      if (auto* n = std::get_if<std::int64_t>(&args[i])) s.bind(static_cast<int>(i + 1), *n);
      else s.bind(static_cast<int>(i + 1), std::get<std::string>(args[i]));
    }
  };
  Page page;
  auto count = db.prepare("SELECT count(*) FROM audit_record" + where);
  if (!count) return std::move(count).issue();
  bind_all(*count);
  if (auto r = count->step(); !r) return std::move(r).issue();
  page.total = static_cast<std::uint64_t>(count->column_int64(0));

  std::string page_where = where;
  if (q.after_seq)
    page_where += (q.newest_first ? " AND seq < " : " AND seq > ") + arg(static_cast<std::int64_t>(*q.after_seq));
  const std::string sql = "SELECT record FROM audit_record" + page_where + " ORDER BY seq " +
                          (q.newest_first ? "DESC" : "ASC") + " LIMIT " + std::to_string(q.count);
  auto sel = db.prepare(sql);
  if (!sel) return std::move(sel).issue();
  bind_all(*sel);
  for (;;) {
    auto r = sel->step();
    if (!r) return std::move(r).issue();
    if (!*r) break;
    auto rec = decode(sel->column_blob(0));
    if (!rec) return Issue::make(ErrorCode::internal_error, "audit.db holds a damaged record; run audit-verify");
    page.records.push_back(std::move(*rec));
  }
  return page;
}

fhir::Result<std::optional<Record>> Log::get(std::uint64_t seq) const {
  auto lease = impl_->reader();
  if (!lease) return std::move(lease).issue();
  auto sel = (*lease)->db->prepare("SELECT record FROM audit_record WHERE seq = ?1 AND record IS NOT NULL");
  if (!sel) return std::move(sel).issue();
  sel->bind(1, static_cast<std::int64_t>(seq));
  auto r = sel->step();
  if (!r) return std::move(r).issue();
  if (!*r) return std::optional<Record>();
  auto rec = decode(sel->column_blob(0));
  if (!rec) return Issue::make(ErrorCode::internal_error, "audit.db holds a damaged record; run audit-verify");
  return std::optional<Record>(std::move(*rec));
}

fhir::Result<std::optional<Log::Removal>> Log::removal(std::uint64_t seq) const {
  auto lease = impl_->reader();
  if (!lease) return std::move(lease).issue();
  sqlite::Database& db = *(*lease)->db;
  auto sel = db.prepare("SELECT record IS NULL FROM audit_record WHERE seq = ?1");
  if (!sel) return std::move(sel).issue();
  sel->bind(1, static_cast<std::int64_t>(seq));
  auto r = sel->step();
  if (!r) return std::move(r).issue();
  if (!*r || sel->column_int64(0) == 0) return std::optional<Removal>();
  // The prune that removed it came after it: the first retention-prune record after `seq`
  // whose range covers it (earlier prunes after it removed older records only). Read by the
  // partial index of audit.db migration 6; at most a year and more of hourly prunes.
  auto prunes = db.prepare(
      "SELECT record FROM audit_record WHERE subtypes = ' retention-prune ' AND seq > ?1 AND record IS NOT NULL "
      "ORDER BY seq LIMIT 10000");
  if (!prunes) return std::move(prunes).issue();
  prunes->bind(1, static_cast<std::int64_t>(seq));
  for (;;) {
    auto p = prunes->step();
    if (!p) return std::move(p).issue();
    if (!*p) break;
    auto rec = decode(prunes->column_blob(0));
    if (!rec) continue;  // damaged: audit-verify reports it
    const auto range = prune_range(rec->detail.note);
    if (range && range->first <= seq && seq <= range->second) return std::optional<Removal>(Removal{rec->time_ms});
  }
  return std::optional<Removal>(Removal{});
}

namespace {

fhir::Result<std::uint64_t> stored_size(sqlite::Database& db) {
  auto s = db.prepare("SELECT coalesce(max(seq) + 1, 0) FROM audit_record");
  if (!s) return std::move(s).issue();
  if (auto r = s->step(); !r) return std::move(r).issue();
  return static_cast<std::uint64_t>(s->column_int64(0));
}

}  // namespace

fhir::Result<InclusionProof> Log::inclusion_proof(std::uint64_t index, std::uint64_t size) const {
  auto lease = impl_->reader();
  if (!lease) return std::move(lease).issue();
  sqlite::Database& db = *(*lease)->db;
  auto have = stored_size(db);
  if (!have) return std::move(have).issue();
  if (size == 0 || size > *have || index >= size)
    return Issue::make(ErrorCode::invalid_value, "need 0 <= index < size <= " + std::to_string(*have));
  NodeReader nodes{db, {}, {}};
  merkle::NodeSource source = [&nodes](unsigned l, std::uint64_t i) { return nodes(l, i); };
  InclusionProof p;
  p.index = index;
  p.size = size;
  p.leaf = nodes(0, index);
  p.path = merkle::inclusion_proof(index, size, source);
  p.root = merkle::range_hash(0, size, source);
  if (!nodes.error.empty()) return Issue::make(ErrorCode::internal_error, "audit.db tree is damaged; run audit-verify");
  auto sel = db.prepare("SELECT record FROM audit_record WHERE seq = ?1");
  if (!sel) return std::move(sel).issue();
  sel->bind(1, static_cast<std::int64_t>(index));
  if (auto r = sel->step(); r && *r && !sel->column_is_null(0)) p.record = sel->column_blob(0);
  return p;
}

fhir::Result<std::vector<Hash>> Log::consistency_proof(std::uint64_t size1, std::uint64_t size2) const {
  auto lease = impl_->reader();
  if (!lease) return std::move(lease).issue();
  sqlite::Database& db = *(*lease)->db;
  auto have = stored_size(db);
  if (!have) return std::move(have).issue();
  if (size1 == 0 || size1 > size2 || size2 > *have)
    return Issue::make(ErrorCode::invalid_value, "need 0 < from <= to <= " + std::to_string(*have));
  NodeReader nodes{db, {}, {}};
  merkle::NodeSource source = [&nodes](unsigned l, std::uint64_t i) { return nodes(l, i); };
  auto proof = merkle::consistency_proof(size1, size2, source);
  if (!nodes.error.empty()) return Issue::make(ErrorCode::internal_error, "audit.db tree is damaged; run audit-verify");
  return proof;
}

fhir::Result<Hash> Log::root_at(std::uint64_t size) const {
  auto lease = impl_->reader();
  if (!lease) return std::move(lease).issue();
  sqlite::Database& db = *(*lease)->db;
  auto have = stored_size(db);
  if (!have) return std::move(have).issue();
  if (size > *have) return Issue::make(ErrorCode::invalid_value, "the log holds " + std::to_string(*have) + " records");
  if (size == 0) return merkle::empty_root();
  NodeReader nodes{db, {}, {}};
  merkle::NodeSource source = [&nodes](unsigned l, std::uint64_t i) { return nodes(l, i); };
  Hash root = merkle::range_hash(0, size, source);
  if (!nodes.error.empty()) return Issue::make(ErrorCode::internal_error, "audit.db tree is damaged; run audit-verify");
  return root;
}

fhir::Result<std::vector<Checkpoint>> Log::checkpoints(std::size_t max) const {
  auto lease = impl_->reader();
  if (!lease) return std::move(lease).issue();
  auto sel = (*lease)->db->prepare("SELECT note FROM audit_checkpoint ORDER BY size DESC, time_ms DESC LIMIT ?1");
  if (!sel) return std::move(sel).issue();
  sel->bind(1, static_cast<std::int64_t>(max));
  std::vector<Checkpoint> out;
  for (;;) {
    auto r = sel->step();
    if (!r) return std::move(r).issue();
    if (!*r) break;
    auto c = parse_checkpoint(sel->column_text(0));
    if (!c) return Issue::make(ErrorCode::internal_error, "audit.db holds a damaged checkpoint; run audit-verify");
    out.push_back(std::move(*c));
  }
  return out;
}

fhir::Result<std::vector<Alert>> Log::alerts(const std::string& status, std::size_t max) const {
  auto lease = impl_->reader();
  if (!lease) return std::move(lease).issue();
  std::string sql =
      "SELECT id, seq, rule, detail, raised_ms, status, reviewer, review_outcome, review_note, reviewed_ms FROM "
      "audit_alert";
  if (!status.empty()) sql += " WHERE status = ?2";
  sql += " ORDER BY id DESC LIMIT ?1";
  auto sel = (*lease)->db->prepare(sql);
  if (!sel) return std::move(sel).issue();
  sel->bind(1, static_cast<std::int64_t>(max));
  if (!status.empty()) sel->bind(2, status);
  std::vector<Alert> out;
  for (;;) {
    auto r = sel->step();
    if (!r) return std::move(r).issue();
    if (!*r) break;
    Alert a;
    a.id = sel->column_int64(0);
    a.seq = static_cast<std::uint64_t>(sel->column_int64(1));
    a.rule = sel->column_text(2);
    a.detail = sel->column_text(3);
    a.raised_ms = sel->column_int64(4);
    a.status = sel->column_text(5);
    a.reviewer = sel->column_text(6);
    a.review_outcome = sel->column_text(7);
    a.review_note = sel->column_text(8);
    a.reviewed_ms = sel->column_int64(9);
    out.push_back(std::move(a));
  }
  return out;
}

fhir::Status Log::review_alert(std::int64_t id, const std::string& reviewer, const std::string& outcome,
                               const std::string& note) {
  Impl& impl = *impl_;
  return impl.run_task<fhir::Status>([&]() -> fhir::Status {
    auto sel = impl.db.prepare("SELECT status FROM audit_alert WHERE id = ?1");
    if (!sel) return std::move(sel).issue();
    sel->bind(1, id);
    auto r = sel->step();
    if (!r) return std::move(r).issue();
    if (!*r) return Issue::make(ErrorCode::not_found, "no alert " + std::to_string(id));
    if (sel->column_text(0) != "open")
      return Issue::make(ErrorCode::conflict, "alert " + std::to_string(id) + " has already been reviewed");
    sel->reset();
    auto up = impl.db.prepare(
        "UPDATE audit_alert SET status = 'reviewed', reviewer = ?2, review_outcome = ?3, review_note = ?4, "
        "reviewed_ms = ?5 WHERE id = ?1 AND status = 'open'");
    if (!up) return std::move(up).issue();
    up->bind(1, id).bind(2, reviewer).bind(3, outcome).bind(4, note).bind(5, now_ms());
    return up->run();
  });
}

fhir::Status Log::flag_patient(const std::string& nhs_number, const std::string& reason, const std::string& by) {
  Impl& impl = *impl_;
  return impl.run_task<fhir::Status>([&]() -> fhir::Status {
    auto up = impl.db.prepare(
        "INSERT INTO audit_flagged_patient(nhs_number, reason, flagged_by, flagged_ms) VALUES (?1, ?2, ?3, ?4) "
        "ON CONFLICT(nhs_number) DO UPDATE SET reason = excluded.reason, flagged_by = excluded.flagged_by, "
        "flagged_ms = excluded.flagged_ms");
    if (!up) return std::move(up).issue();
    up->bind(1, nhs_number).bind(2, reason).bind(3, by).bind(4, now_ms());
    if (auto s = up->run(); !s) return s;
    std::lock_guard lock(impl.flagged_mu);
    impl.flagged.insert(nhs_number);
    return fhir::Ok{};
  });
}

fhir::Result<FlaggedPage> Log::flagged_patients(const std::string& after, std::size_t max) const {
  auto lease = impl_->reader();
  if (!lease) return std::move(lease).issue();
  FlaggedPage page;
  auto count = (*lease)->db->prepare("SELECT count(*) FROM audit_flagged_patient");
  if (!count) return std::move(count).issue();
  if (auto r = count->step(); !r) return std::move(r).issue();
  page.total = static_cast<std::uint64_t>(count->column_int64(0));
  auto sel = (*lease)->db->prepare(
      "SELECT nhs_number, reason, flagged_by, flagged_ms FROM audit_flagged_patient WHERE nhs_number > ?1 "
      "ORDER BY nhs_number LIMIT ?2");
  if (!sel) return std::move(sel).issue();
  sel->bind(1, after).bind(2, static_cast<std::int64_t>(max));
  for (;;) {
    auto r = sel->step();
    if (!r) return std::move(r).issue();
    if (!*r) break;
    page.items.push_back(
        FlaggedPatient{sel->column_text(0), sel->column_text(1), sel->column_text(2), sel->column_int64(3)});
  }
  return page;
}

fhir::Status Log::unflag_patient(const std::string& nhs_number) {
  Impl& impl = *impl_;
  const auto& configured = impl.opt.rules.flagged_patients;
  if (std::find(configured.begin(), configured.end(), nhs_number) != configured.end())
    return Issue::make(ErrorCode::conflict, "NHS number " + nhs_number +
                                                " is flagged in the configuration ([audit.alerts] flagged_patients); "
                                                "remove it there and restart the gateway");
  return impl.run_task<fhir::Status>([&]() -> fhir::Status {
    auto del = impl.db.prepare("DELETE FROM audit_flagged_patient WHERE nhs_number = ?1");
    if (!del) return std::move(del).issue();
    del->bind(1, nhs_number);
    if (auto s = del->run(); !s) return s;
    if (impl.db.changes() == 0) return Issue::make(ErrorCode::not_found, "NHS number " + nhs_number + " is not flagged");
    std::lock_guard lock(impl.flagged_mu);
    impl.flagged.erase(nhs_number);
    return fhir::Ok{};
  });
}

fhir::Result<std::uint64_t> Log::prune_before(std::int64_t cutoff_ms, const std::string& by) {
  Impl& impl = *impl_;
  // Prune a prefix only: records up to (not including) the first one at or after the cutoff.
  // The prune and the retention-prune record that explains it are one transaction: a crash
  // between two commits would leave content gone with no record saying why, which audit-verify
  // rightly reports as tampering.
  auto pruned = impl.run_task<fhir::Result<std::pair<std::uint64_t, std::uint64_t>>>(
      [&]() -> fhir::Result<std::pair<std::uint64_t, std::uint64_t>> {
        auto first_kept = impl.db.prepare(
            "SELECT coalesce((SELECT min(seq) FROM (SELECT min(seq) AS seq FROM audit_time_index WHERE time_ms >= ?1 "
            "UNION ALL SELECT min(seq) FROM audit_record WHERE seq >= (SELECT value FROM audit_index_state WHERE key = "
            "'indexed_below') AND time_ms >= ?1)), "
            "(SELECT coalesce(max(seq) + 1, 0) FROM audit_record))");
        if (!first_kept) return std::move(first_kept).issue();
        first_kept->bind(1, cutoff_ms);
        if (auto r = first_kept->step(); !r) return std::move(r).issue();
        const std::int64_t end = first_kept->column_int64(0);
        auto first = impl.db.prepare("SELECT coalesce(min(seq), 0) FROM audit_record WHERE record IS NOT NULL");
        if (!first) return std::move(first).issue();
        if (auto r = first->step(); !r) return std::move(r).issue();
        const std::int64_t begin = first->column_int64(0);
        if (end <= begin) return std::pair<std::uint64_t, std::uint64_t>{0, 0};
        auto prune = [&impl, begin, end]() -> fhir::Status {
          auto up = impl.db.prepare(
              "UPDATE audit_record SET record = NULL, agent = '', subtypes = ' ' WHERE seq >= ?1 AND seq < ?2");
          if (!up) return std::move(up).issue();
          up->bind(1, begin).bind(2, end);
          if (auto s = up->run(); !s) return s;
          for (const char* sql : {"DELETE FROM audit_patient_index WHERE epoch BETWEEN ?1 >> 16 AND ?2 >> 16 "
                                  "AND seq >= ?1 AND seq < ?2",
                                  "DELETE FROM audit_agent_index WHERE epoch BETWEEN ?1 >> 16 AND ?2 >> 16 "
                                  "AND seq >= ?1 AND seq < ?2",
                                  "DELETE FROM audit_patient_recent WHERE seq >= ?1 AND seq < ?2"}) {
            auto del = impl.db.prepare(sql);
            if (!del) return std::move(del).issue();
            del->bind(1, begin).bind(2, end);
            if (auto s = del->run(); !s) return s;
          }
          return fhir::Ok{};
        };
        Record r;
        r.time_ms = now_ms();
        r.kind = "system";
        r.action = "retention-prune";
        r.agent_kind = "system";
        r.user = by;
        r.status = 200;
        r.detail.note = "retention removed the content of records " + std::to_string(begin) + " to " +
                        std::to_string(end - 1) + " (" + std::to_string(end - begin) + " records) older than " +
                        format_time_ms(cutoff_ms) + "; their leaf hashes remain in the tree";
        std::optional<fhir::Result<std::uint64_t>> appended;
        std::vector<Impl::Append> batch;
        batch.push_back(Impl::Append{std::move(r), [&appended](fhir::Result<std::uint64_t> seq) {
                                       appended.emplace(std::move(seq));
                                     }});
        impl.commit_batch(batch, prune);
        if (!appended || !*appended)
          return appended ? std::move(*appended).issue() : not_ready("the retention record was not written");
        return std::pair<std::uint64_t, std::uint64_t>{static_cast<std::uint64_t>(begin), static_cast<std::uint64_t>(end)};
      });
  if (!pruned) return std::move(pruned).issue();
  const auto [begin, end] = *pruned;
  if (end == begin) return std::uint64_t{0};  // nothing older than the cutoff: no record, no note
  if (impl.signer) {
    if (auto c = checkpoint_now(); !c) return std::move(c).issue();
  }
  return end - begin;
}

Stats Log::stats() const {
  std::lock_guard lock(impl_->stats_mu);
  return impl_->stats;
}

}  // namespace gw::audit
