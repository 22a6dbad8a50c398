// SPDX-License-Identifier: Apache-2.0
// The audit log's group-commit writer thread (log.h): batches queued appends into one
// transaction, extends the Merkle tree, raises alerts, commits, completes the callers, and
// signs checkpoints into audit.db, the checkpoint file and syslog.
#include <fcntl.h>
#include <syslog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "gateway/audit/log_internal.h"
#include "gateway/observe/log.h"

namespace gw::audit {

using merkle::Hash;

namespace {

constexpr long long kSlowWriterStepMs = 200;  // warn_if_slow()

std::string subtype_column(const Record& r) {
  std::string out = " ";
  for (const auto& s : subtypes(r)) out.append(s).append(" ");
  return out;
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

}  // namespace

void Log::Impl::run() {
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

fhir::Status Log::Impl::insert_record(Record& r, std::vector<Alert>& raised) {
  r.seq = range.size();
  r.prev = r.seq == 0 ? std::string() : merkle::to_hex(last_leaf);
  // Before anything is stored: the agent column and the alert texts then say what the
  // (always UTF-8) encoding says.
  make_valid_utf8(r);
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

void Log::Impl::commit_batch(std::vector<Append>& batch, const std::function<fhir::Status()>& before) {
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
      if (a.change) {
        status = apply_change(a);
        if (!status || a.refused) continue;
      }
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
    for (auto& a : batch) a.finish(not_ready("the audit log could not be written; nothing was sent. Try again later"));
    return;
  }
  commit_marks();
  recent_patient_rows += pending_patient_rows;
  // What the writer keeps of the committed changes (the flagged set the alert rules read)
  // follows only now: a failed commit leaves it as the tables are. Records of this batch
  // were judged without them; they raced the change, and neither had been answered.
  for (auto& a : batch)
    if (a.change && !a.refused && a.change.committed_) a.change.committed_(*this);
  // Likewise: a caller answered after this commit sees readiness restored.
  if (opt.on_commit) opt.on_commit();
  for (auto& a : batch) a.finish(std::nullopt);
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

fhir::Status Log::Impl::apply_change(Append& a) {
  // A savepoint of its own: a refused change leaves nothing behind, and the rest of the batch
  // (other callers' records) still commits.
  if (auto s = db.run_cached("SAVEPOINT change"); !s) return s;
  fhir::Status applied = a.change.apply_(*this);
  if (!applied) {
    a.refused = applied.issue();
    if (auto s = db.run_cached("ROLLBACK TO change"); !s) return s;
  }
  return db.run_cached("RELEASE change");
}

void Log::Impl::Append::finish(std::optional<fhir::Issue> failure) {
  if (!change_done) {
    if (failure) done(std::move(*failure));
    else done(record.seq);
  } else if (failure) {
    change_done(std::move(*failure), false);
  } else if (refused) {
    change_done(std::move(*refused), true);
  } else {
    change_done(record.seq, false);
  }
}

fhir::Result<Checkpoint> Log::Impl::write_checkpoint() {
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

void Log::Impl::enqueue(Append a) {
  {
    std::lock_guard lock(mu);
    if (stopping) {
      a.finish(not_ready("the audit log is stopping"));
      return;
    }
    if (queue.size() >= opt.max_queue) {
      a.finish(not_ready("the audit log is overloaded; try again later"));
      return;
    }
    queue.emplace_back(std::move(a));
  }
  cv.notify_one();
}

void Log::append(Record r, Done done) { impl_->enqueue(Impl::Append{std::move(r), std::move(done)}); }

fhir::Result<std::uint64_t> Log::append_sync(Record r) { return append_sync(std::move(r), Change()); }

void Log::append(Record r, Change change, ChangeDone done) {
  impl_->enqueue(Impl::Append{std::move(r), std::move(change), std::move(done)});
}

fhir::Result<std::uint64_t> Log::append_sync(Record r, Change change) {
  std::mutex m;
  std::condition_variable cv;
  std::optional<fhir::Result<std::uint64_t>> result;
  append(std::move(r), std::move(change), [&](fhir::Result<std::uint64_t> res, bool) {
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

}  // namespace gw::audit
