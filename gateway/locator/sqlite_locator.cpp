// SPDX-License-Identifier: Apache-2.0
// SqliteLocator (see sqlite_locator.h): a pool of SqliteReaders for reads, and one writer
// thread that owns the read-write connection. A write is a Job queued for that thread; the
// thread frames a batch of jobs in BEGIN IMMEDIATE ... COMMIT with each job in SAVEPOINT job
// (an import chunk runs alone in its transaction), and completes the jobs' callers only after
// COMMIT returned (durable at synchronous=FULL).
#include "gateway/locator/sqlite_locator.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <mutex>
#include <thread>

#include "gateway/locator/index_transaction.h"
#include "gateway/locator/schema.h"
#include "gateway/locator/sqlite_reader.h"
#include "gateway/locator/sqlite_transaction.h"
#include "gateway/observe/log.h"
#include "gateway/observe/thread_name.h"
#include "gateway/sqlite/migrations.h"

namespace gw::locator {
namespace {

using fhir::ErrorCode;
using fhir::Issue;
using Level = SqliteTransaction::Level;

// One queued write. The caller and the writer thread both hold it (shared_ptr), so completing
// it can never race with the caller returning.
struct Job {
  // Runs inside SAVEPOINT job; an exclusive job (an import chunk) runs alone in the
  // transaction, without it, and rolls the whole transaction back by failing.
  std::function<fhir::Status(SqliteTransaction&)> body;
  bool exclusive = false;
  bool planned_rollback = false;  // set by an exclusive body that abandons its attempt on purpose
  std::mutex m;
  std::condition_variable cv;
  bool done = false;
  fhir::Status status = fhir::Ok{};
};

void complete(Job& job, fhir::Status status) {
  std::lock_guard lock(job.m);
  job.status = std::move(status);
  job.done = true;
  job.cv.notify_all();
}

fhir::Issue transaction_lost() {
  return Issue::make(ErrorCode::internal_error,
                     "record locator storage error: the database ended the transaction (disk full or I/O error)");
}

}  // namespace

struct SqliteLocator::State {
  SqliteLocatorOptions options;
  std::string path;
  sqlite::Database writer_db;
  std::unique_ptr<SqliteTransaction> tx;

  std::vector<std::unique_ptr<SqliteReader>> readers;
  std::vector<SqliteReader*> idle;
  std::mutex pool_m;
  std::condition_variable pool_cv;

  std::mutex queue_m;
  std::condition_variable queue_cv;
  std::deque<std::shared_ptr<Job>> queue;
  bool stopping = false;
  std::thread writer;

  std::atomic<std::uint64_t> commits{0}, failed_commits{0}, writes{0};
  std::atomic<bool> fail_commits{false};  // inject_commit_failure()

  State(SqliteLocatorOptions o, std::string p, sqlite::Database db)
      : options(std::move(o)), path(std::move(p)), writer_db(std::move(db)) {}

  // ---- read pool ----

  class Lease {
   public:
    explicit Lease(State& s) : s_(s) {
      std::unique_lock lock(s_.pool_m);
      s_.pool_cv.wait(lock, [&] { return !s_.idle.empty(); });
      r_ = s_.idle.back();
      s_.idle.pop_back();
    }
    ~Lease() {
      {
        std::lock_guard lock(s_.pool_m);
        s_.idle.push_back(r_);
      }
      s_.pool_cv.notify_one();
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    SqliteReader* operator->() { return r_; }

   private:
    State& s_;
    SqliteReader* r_ = nullptr;
  };

  // ---- writer ----

  // Queues `job` without waiting; too_many_requests when the queue is full.
  fhir::Status enqueue(const std::shared_ptr<Job>& job) {
    {
      std::lock_guard lock(queue_m);
      if (stopping) return Issue::make(ErrorCode::not_ready, "the record locator is shutting down");
      if (queue.size() >= options.max_queue)
        return Issue::make(ErrorCode::too_many_requests, "the record locator's write queue is full; retry shortly");
      queue.push_back(job);
    }
    queue_cv.notify_one();
    return fhir::Ok{};
  }

  // Waits for the completion of a queued job.
  static fhir::Status wait(Job& job) {
    std::unique_lock lock(job.m);
    job.cv.wait(lock, [&] { return job.done; });
    return job.status;
  }

  // Queues `job` and waits for its completion.
  fhir::Status submit(const std::shared_ptr<Job>& job) {
    if (fhir::Status s = enqueue(job); !s) return s;
    return wait(*job);
  }

  // Runs `rule` as one write and returns its result once committed.
  template <class T, class F>
  fhir::Result<T> write(F&& rule) {
    std::optional<fhir::Result<T>> out;
    auto job = std::make_shared<Job>();
    job->body = [&](SqliteTransaction& t) -> fhir::Status {
      out.emplace(rule(t));
      if (!*out) return out->issue();
      return fhir::Ok{};
    };
    if (fhir::Status s = submit(job); !s) return std::move(s).issue();
    return std::move(*out);
  }

  void writer_loop() {
    std::vector<std::shared_ptr<Job>> batch;
    for (;;) {
      {
        std::unique_lock lock(queue_m);
        queue_cv.wait(lock, [&] { return stopping || !queue.empty(); });
        if (queue.empty()) return;  // stopping, and every queued write is done
      }
      if (options.on_batch_start) options.on_batch_start();
      {
        std::lock_guard lock(queue_m);
        const std::size_t max_batch = std::max<std::size_t>(1, options.max_batch);
        do {
          batch.push_back(std::move(queue.front()));
          queue.pop_front();
        } while (!batch.front()->exclusive && batch.size() < max_batch && !queue.empty() && !queue.front()->exclusive);
      }
      run_batch(batch);
      batch.clear();
    }
  }

  void run_batch(std::vector<std::shared_ptr<Job>>& batch) {
    std::vector<fhir::Status> results;
    results.reserve(batch.size());
    fhir::Status txn = tx->begin();
    if (txn) {
      for (const auto& job : batch) {
        if (job->exclusive) {
          // An import chunk is alone in its transaction, which it rolls back as a whole by
          // failing. No savepoint around it: SQLite would keep every page the chunk touches in
          // its sub-journal, and every nested RELEASE walks that journal (the import slowed to
          // ~150 records/s).
          fhir::Status r = job->body(*tx);
          if (!r || tx->transaction_lost()) {
            txn = r ? fhir::Status(transaction_lost()) : std::move(r);
            break;
          }
          results.push_back(std::move(r));
          continue;
        }
        fhir::Status r = tx->savepoint(Level::job);
        if (r) {
          tx->keep_on_failure.clear();
          r = job->body(*tx);
          if (tx->transaction_lost()) {
            txn = transaction_lost();
            break;
          }
          // A write that failed leaves nothing behind but the conflicts it must keep; the
          // batch's other writes go on.
          if (fhir::Status end = r ? tx->release(Level::job) : tx->rollback_to(Level::job); !end) {
            txn = std::move(end);  // the transaction is in an unknown state: fail the batch
            break;
          }
          if (!r) {
            for (const Conflict& c : tx->keep_on_failure) {
              if (fhir::Status kept = tx->insert_conflict(c); !kept) {
                txn = std::move(kept);
                break;
              }
            }
            if (!txn) break;
          }
        }
        results.push_back(std::move(r));
      }
      if (txn && fail_commits.load())
        txn = Issue::make(ErrorCode::internal_error, "record locator storage error: commit failed (injected)");
      if (txn) txn = tx->commit();
      if (!txn) tx->rollback();
    }
    if (txn) {
      ++commits;
    } else if (!(batch.size() == 1 && batch.front()->planned_rollback)) {
      ++failed_commits;
      observe::log(observe::Level::error, "record locator batch failed",
                   {{"writes", static_cast<std::uint64_t>(batch.size())}, {"error", txn.issue().diagnostics}});
    }
    writes += batch.size();  // counted before any caller can look
    for (std::size_t i = 0; i < batch.size(); ++i) complete(*batch[i], txn ? std::move(results[i]) : txn);
  }
};

SqliteLocator::SqliteLocator(std::unique_ptr<State> state) : s_(std::move(state)) {
  s_->writer = std::thread([s = s_.get()] {
    observe::name_this_thread("gw-locator-wr");
    s->writer_loop();
  });
}

SqliteLocator::~SqliteLocator() {
  {
    std::lock_guard lock(s_->queue_m);
    s_->stopping = true;
  }
  s_->queue_cv.notify_all();
  if (s_->writer.joinable()) s_->writer.join();
}

fhir::Result<std::unique_ptr<SqliteLocator>> SqliteLocator::open(const std::string& path, SqliteLocatorOptions options) {
  auto db = sqlite::Database::open(path);
  if (!db) return std::move(db).issue();
  if (auto v = sqlite::migrate(*db, migrations()); !v) return std::move(v).issue();
  // Sizes are integers formatted here: no outside data reaches this SQL.
  const std::string pragmas = "PRAGMA cache_size=" + std::to_string(-options.write_cache_mib * 1024) +
                              "; PRAGMA mmap_size=" + std::to_string(options.mmap_mib * 1024 * 1024) +
                              "; PRAGMA temp_store=MEMORY;";
  if (auto s = db->exec(pragmas); !s) return std::move(s).issue();
  auto state = std::make_unique<State>(std::move(options), path, std::move(*db));
  auto tx = SqliteTransaction::prepare(state->writer_db);
  if (!tx) return std::move(tx).issue();
  state->tx = std::move(*tx);
  // An import that never finished (the process stopped) may have left secondary indexes
  // deferred: rebuilt here, before any caller sees the locator. Without them every answer is
  // still right, only slower, so a failure is logged rather than refusing to open.
  fhir::Status rebuilt = state->tx->begin();
  if (rebuilt) rebuilt = state->tx->rebuild_deferred_indexes();
  if (rebuilt) rebuilt = state->tx->commit();
  if (!rebuilt) {
    state->tx->rollback();
    observe::log(observe::Level::error, "record locator: could not rebuild deferred indexes",
                 {{"error", rebuilt.issue().diagnostics}});
  }
  const std::size_t n = std::max<std::size_t>(1, state->options.read_connections);
  for (std::size_t i = 0; i < n; ++i) {
    auto r = SqliteReader::open(path, state->options.read_cache_mib, state->options.mmap_mib);
    if (!r) return std::move(r).issue();
    state->idle.push_back(r->get());
    state->readers.push_back(std::move(*r));
  }
  return std::unique_ptr<SqliteLocator>(new SqliteLocator(std::move(state)));
}

fhir::Result<std::unique_ptr<Locator>> open_sqlite_locator(const std::string& path, SqliteLocatorOptions options) {
  auto l = SqliteLocator::open(path, std::move(options));
  if (!l) return std::move(l).issue();
  return std::unique_ptr<Locator>(std::move(*l));
}

void SqliteLocator::inject_commit_failure(bool on) { s_->fail_commits = on; }

WriterCounters SqliteLocator::writer_counters() const {
  WriterCounters c;
  c.commits = s_->commits.load();
  c.failed_commits = s_->failed_commits.load();
  c.writes = s_->writes.load();
  std::lock_guard lock(s_->queue_m);
  c.queued = s_->queue.size();
  return c;
}

// ---- reads ------------------------------------------------------------------------------

fhir::Result<std::optional<PatientRecord>> SqliteLocator::read_patient(const std::string& id) {
  State::Lease r(*s_);
  return r->read_patient(id);
}

fhir::Result<std::optional<std::string>> SqliteLocator::lookup_identifier(std::string_view system,
                                                                          std::string_view value) {
  if (system.empty()) return Issue::make(ErrorCode::invalid_value, "an identifier lookup needs a system", "identifier");
  State::Lease r(*s_);
  return r->lookup_identifier(system, value);
}

fhir::Result<Page<PatientRecord>> SqliteLocator::search_patients(const PatientQuery& q) {
  State::Lease r(*s_);
  return r->search_patients(q);
}

fhir::Result<std::vector<Pointer>> SqliteLocator::pointers_for(const std::string& patient_id) {
  State::Lease r(*s_);
  return r->pointers_for(patient_id);
}

fhir::Result<std::optional<Pointer>> SqliteLocator::read_pointer(const std::string& pointer_id) {
  State::Lease r(*s_);
  return r->read_pointer(pointer_id);
}

fhir::Result<std::optional<SourceSystem>> SqliteLocator::source_system(const std::string& ods_code) {
  State::Lease r(*s_);
  return r->source_system(ods_code);
}

fhir::Result<bool> SqliteLocator::knows_identifier_system(std::string_view system) {
  State::Lease r(*s_);
  return r->knows_identifier_system(system);
}

fhir::Result<std::vector<Conflict>> SqliteLocator::conflicts(std::size_t limit, std::size_t offset) {
  State::Lease r(*s_);
  return r->conflicts(limit, offset);
}

fhir::Result<Stats> SqliteLocator::stats() {
  fhir::Result<Stats> st = [&] {
    State::Lease r(*s_);
    return r->stats();
  }();
  if (!st) return st;
  std::error_code ec;
  for (const char* suffix : {"", "-wal"}) {
    const auto size = std::filesystem::file_size(s_->path + suffix, ec);
    if (!ec) st->database_bytes += static_cast<std::int64_t>(size);
  }
  return st;
}

// ---- writes -----------------------------------------------------------------------------

fhir::Status SqliteLocator::upsert_source_system(const SourceSystem& s) {
  return s_->write<fhir::Ok>([&](SqliteTransaction& tx) { return apply_upsert_source_system(tx, s, now_instant()); });
}

fhir::Result<Resolution> SqliteLocator::resolve(const IdentityClaim& claim) {
  return s_->write<Resolution>(
      [&](SqliteTransaction& tx) { return apply_resolve(tx, claim, s_->options.rule, now_instant()); });
}

fhir::Result<Pointer> SqliteLocator::put_pointer(const std::string& acting, Pointer p,
                                                 const std::optional<VersionMatch>& if_match) {
  return s_->write<Pointer>(
      [&](SqliteTransaction& tx) { return apply_put_pointer(tx, acting, std::move(p), if_match, now_instant()); });
}

fhir::Status SqliteLocator::delete_pointer(const std::string& acting, const std::string& pointer_id,
                                           const std::optional<VersionMatch>& if_match) {
  return s_->write<fhir::Ok>(
      [&](SqliteTransaction& tx) { return apply_delete_pointer(tx, acting, pointer_id, if_match); });
}

fhir::Status SqliteLocator::merge(const std::string& retired, const std::string& survivor, const std::string& source) {
  return s_->write<fhir::Ok>(
      [&](SqliteTransaction& tx) { return apply_merge(tx, retired, survivor, source, now_instant()); });
}

fhir::Status SqliteLocator::set_objection(const std::string& patient_id, bool objection) {
  return s_->write<fhir::Ok>(
      [&](SqliteTransaction& tx) { return apply_set_objection(tx, patient_id, objection, now_instant()); });
}

fhir::Result<bool> SqliteLocator::change_objection(ObjectionChange change) {
  return s_->write<bool>(
      [&](SqliteTransaction& tx) { return apply_change_objection(tx, std::move(change), now_instant()); });
}

// Through the writer too: a rare read (start-up, recovery), and it then sees every change
// committed before it.
fhir::Result<std::vector<ObjectionChange>> SqliteLocator::unaudited_objection_changes(std::size_t max) {
  return s_->write<std::vector<ObjectionChange>>(
      [&](SqliteTransaction& tx) { return tx.objection_changes(clamp_page(max)); });
}

fhir::Status SqliteLocator::forget_objection_changes(const std::vector<std::string>& ids) {
  if (ids.empty()) return fhir::Ok{};
  return s_->write<fhir::Ok>([&](SqliteTransaction& tx) -> fhir::Status {
    for (const std::string& id : ids)
      if (auto st = tx.delete_objection_change(id); !st) return st;
    return fhir::Ok{};
  });
}

fhir::Status SqliteLocator::add_care_team_member(const std::string& acting, const std::string& patient_id,
                                                const std::string& member, std::optional<std::string> until) {
  return s_->write<fhir::Ok>([&](SqliteTransaction& tx) {
    return apply_add_care_team_member(tx, acting, patient_id, member, until, now_instant());
  });
}

fhir::Status SqliteLocator::remove_care_team_member(const std::string& acting, const std::string& patient_id,
                                                   const std::string& member) {
  return s_->write<fhir::Ok>(
      [&](SqliteTransaction& tx) { return apply_remove_care_team_member(tx, acting, patient_id, member); });
}

fhir::Result<IngestOutcome> SqliteLocator::ingest(const IngestUpdate& u) {
  return s_->write<IngestOutcome>(
      [&](SqliteTransaction& tx) { return apply_ingest(tx, u, s_->options.rule, now_instant()); });
}

fhir::Status SqliteLocator::record_encounter(const std::string& acting, const std::string& patient_id,
                                            const std::string& organisation_ods, std::int64_t at_epoch_seconds) {
  return s_->write<fhir::Ok>([&](SqliteTransaction& tx) {
    return apply_record_encounter(tx, acting, patient_id, organisation_ods, at_epoch_seconds);
  });
}

fhir::Result<ImportResult> SqliteLocator::import(const std::vector<ImportRecord>& records) {
  if (records.size() > kMaxImportRecords)
    return Issue::make(ErrorCode::invalid_value,
                       "more than " + std::to_string(kMaxImportRecords) + " records in one import call", "records");
  ImportResult out;
  out.records.reserve(records.size());
  const std::size_t step = std::max<std::size_t>(1, s_->options.import_batch);
  // Bulk mode: the first transaction drops the deferrable indexes (when the index is small
  // enough), the last job rebuilds them; see SqliteTransaction::defer_indexes.
  const bool bulk = s_->options.bulk_import_min > 0 && records.size() >= s_->options.bulk_import_min;
  std::size_t identifiers = 0;
  if (bulk)
    for (const ImportRecord& r : records) identifiers += r.identity.identifiers.size();
  bool bulk_begun = false, deferred = false;
  // check_import_record runs on this thread, for the next transaction's records while the
  // writer applies the current one, so the writer thread spends its time in SQLite.
  const auto check = [&](std::size_t from, std::size_t to) {
    std::vector<fhir::Status> c;
    c.reserve(to - from);
    for (std::size_t i = from; i < to; ++i) c.push_back(check_import_record(records[i]));
    return c;
  };
  std::vector<fhir::Status> checks, next_checks;
  std::vector<fhir::Result<Resolution>> chunk;
  for (std::size_t start = 0; start < records.size(); start += step) {
    const std::size_t end = std::min(records.size(), start + step);
    checks = next_checks.size() == end - start ? std::move(next_checks) : check(start, end);
    next_checks.clear();
    // First attempt: records that pass check_import_record are applied without savepoints
    // (each costs a copy of every page it touches). Should one still be refused, the attempt
    // is rolled back whole and the chunk runs again carefully, each record in SAVEPOINT
    // record, so a rejected record never leaves anything behind.
    fhir::Status st = fhir::Ok{};
    bool deferred_here = false, filtered_here = false;  // by the attempt that committed
    for (const bool careful : {false, true}) {
      auto job = std::make_shared<Job>();
      job->exclusive = true;
      job->body = [&, start, end, careful, self = job.get()](SqliteTransaction& tx) -> fhir::Status {
        chunk.clear();
        chunk.reserve(end - start);
        deferred_here = filtered_here = false;
        if (bulk && start == 0) {
          auto d = tx.defer_indexes(static_cast<std::int64_t>(records.size()));
          if (!d) return std::move(d).issue();
          deferred_here = *d;
          auto f = tx.start_absent_key_filters(records.size(), identifiers);
          if (!f) return std::move(f).issue();
          filtered_here = *f;
        }
        const std::string now = now_instant();
        for (std::size_t i = start; i < end; ++i) {
          if (!careful) {
            if (const fhir::Status& c = checks[i - start]; !c) {
              chunk.push_back(c.issue());
              continue;
            }
            auto r = apply_import_record(tx, records[i], s_->options.rule, now);
            if (tx.transaction_lost()) return transaction_lost();
            if (!r) {
              self->planned_rollback = true;
              return std::move(r).issue();
            }
            chunk.push_back(std::move(r));
            continue;
          }
          if (fhir::Status s = tx.savepoint(Level::record); !s) return s;
          auto r = apply_import_record(tx, records[i], s_->options.rule, now);
          if (tx.transaction_lost()) return transaction_lost();
          if (fhir::Status s = r ? tx.release(Level::record) : tx.rollback_to(Level::record); !s) return s;
          chunk.push_back(std::move(r));
        }
        return fhir::Ok{};
      };
      st = s_->enqueue(job);
      if (st && !careful && end < records.size() && next_checks.empty())
        next_checks = check(end, std::min(records.size(), end + step));
      if (st) st = State::wait(*job);  // the job's outcome, or why it could not be queued
      if (st || !job->planned_rollback) break;
    }
    if (deferred_here || filtered_here) bulk_begun = true;  // filters may be on even after a rollback
    if (st && deferred_here) deferred = true;
    if (!st) {
      // This transaction is gone: its records and all later ones are reported as not imported.
      const Issue& why = st.issue();
      for (std::size_t i = start; i < records.size(); ++i) {
        out.records.push_back(i < end ? why
                                      : Issue::make(why.code, "not imported: an earlier transaction of this import "
                                                              "failed (" + why.diagnostics + ")"));
        count_import(out, out.records.back());
      }
      break;
    }
    for (auto& r : chunk) {
      count_import(out, r);
      out.records.push_back(std::move(r));
    }
    if (s_->options.on_import_progress) s_->options.on_import_progress(end, records.size());
  }
  if (bulk_begun) {
    // One transaction builds each deferred index from a sort of the table. Should it fail, the
    // records stay imported and the next open rebuilds the indexes (their notes are still there).
    auto job = std::make_shared<Job>();
    job->exclusive = true;
    job->body = [deferred](SqliteTransaction& tx) -> fhir::Status {
      tx.stop_absent_key_filters();
      return deferred ? tx.rebuild_deferred_indexes() : fhir::Status(fhir::Ok{});
    };
    const auto t0 = std::chrono::steady_clock::now();
    if (fhir::Status st = s_->submit(job); !st) {
      observe::log(observe::Level::error, "record locator: could not rebuild deferred indexes after an import",
                   {{"error", st.issue().diagnostics}});
    } else if (deferred) {
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
      observe::log(observe::Level::info, "record locator: bulk import rebuilt its deferred indexes",
                   {{"records", static_cast<std::uint64_t>(records.size())},
                    {"rebuild_ms", static_cast<std::int64_t>(ms.count())}});
    }
  }
  return out;
}

}  // namespace gw::locator
