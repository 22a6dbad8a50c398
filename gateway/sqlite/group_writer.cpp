// SPDX-License-Identifier: Apache-2.0
#include "gateway/sqlite/group_writer.h"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "gateway/observe/thread_name.h"

namespace gw::sqlite {
namespace {

using fhir::ErrorCode;
using fhir::Issue;

struct Job {
  GroupWriter::Body body;
  GroupWriter::Done done;
  fhir::Status status = fhir::Ok{};
  // A deferrable job's latest start (submit_deferrable); steady_clock's epoch for the others.
  std::chrono::steady_clock::time_point defer_until{};
  bool deferrable() const { return defer_until != std::chrono::steady_clock::time_point{}; }
};

}  // namespace

struct GroupWriter::State {
  Database db;
  GroupWriterOptions options;
  std::mutex m;
  std::condition_variable cv;
  std::deque<Job> queue;
  std::size_t urgent_queued = 0;  // jobs in `queue` that are not deferrable
  bool stopping = false;
  std::atomic<bool> fail_commits{false};
  std::atomic<std::uint64_t> commits{0}, jobs{0}, failed_commits{0}, deferred_alone{0};
  std::thread thread;

  State(Database d, GroupWriterOptions o) : db(std::move(d)), options(std::move(o)) {}

  Issue storage_error(const std::string& what) const {
    return Issue::make(ErrorCode::internal_error,
                       "the " + options.name + " database could not " + what + " (disk full or I/O error); retry later");
  }

  void loop() {
    std::vector<Job> batch;
    for (;;) {
      {
        std::unique_lock lock(m);
        cv.wait(lock, [&] { return stopping || !queue.empty(); });
        if (queue.empty()) return;  // stopping, and everything queued is done
        // Only deferrable jobs: wait for work that needs a commit anyway, up to the oldest
        // one's deadline (the queue is in submit order, so the front's is the earliest).
        while (!stopping && urgent_queued == 0 && !queue.empty() &&
               std::chrono::steady_clock::now() < queue.front().defer_until)
          cv.wait_until(lock, queue.front().defer_until);
        bool alone = true;
        while (!queue.empty() && batch.size() < options.max_batch) {
          if (!queue.front().deferrable()) {
            --urgent_queued;
            alone = false;
          }
          batch.push_back(std::move(queue.front()));
          queue.pop_front();
        }
        if (alone) ++deferred_alone;
      }
      run_batch(batch);
      for (Job& j : batch) j.done(std::move(j.status));
      jobs += batch.size();
      batch.clear();
    }
  }

  // One transaction for the whole batch; each job in SAVEPOINT job.
  void run_batch(std::vector<Job>& batch) {
    if (auto s = db.run_cached("BEGIN IMMEDIATE"); !s) {
      for (Job& j : batch) j.status = storage_error("start a transaction");
      ++failed_commits;
      return;
    }
    bool lost = false;
    for (Job& j : batch) {
      if (lost) {
        j.status = storage_error("write");
        continue;
      }
      if (auto s = db.run_cached("SAVEPOINT job"); !s) {
        j.status = storage_error("write");
        lost = true;
        continue;
      }
      j.status = j.body(db);
      if (!j.status && !db.run_cached("ROLLBACK TO job")) lost = true;
      if (!db.run_cached("RELEASE job")) lost = true;
    }
    fhir::Status committed = fhir::Ok{};
    if (lost || fail_commits.load()) {
      committed = storage_error("commit");
    } else if (auto c = db.run_cached("COMMIT"); !c) {
      committed = storage_error("commit");
    }
    if (!committed) {
      (void)db.run_cached("ROLLBACK");
      ++failed_commits;
      for (Job& j : batch)
        if (j.status) j.status = committed;
      return;
    }
    ++commits;
  }
};

GroupWriter::GroupWriter(Database db, GroupWriterOptions options)
    : s_(std::make_unique<State>(std::move(db), std::move(options))) {
  s_->thread = std::thread([s = s_.get()] {
    observe::name_this_thread(("gw-" + s->options.name + "-wr").c_str());
    s->loop();
  });
}

GroupWriter::~GroupWriter() { stop(); }

void GroupWriter::submit(Body body, Done done) { enqueue(std::move(body), std::move(done), false); }

void GroupWriter::submit_deferrable(Body body, Done done) { enqueue(std::move(body), std::move(done), true); }

void GroupWriter::enqueue(Body body, Done done, bool deferrable) {
  {
    std::lock_guard lock(s_->m);
    if (s_->stopping) {
      done(Issue::make(ErrorCode::not_ready, "the " + s_->options.name + " database is shutting down"));
      return;
    }
    if (s_->queue.size() >= s_->options.max_queue) {
      done(Issue::make(ErrorCode::too_many_requests,
                       "the " + s_->options.name + " database's write queue is full; retry shortly"));
      return;
    }
    Job job{std::move(body), std::move(done)};
    if (deferrable) job.defer_until = std::chrono::steady_clock::now() + s_->options.defer_max;
    else ++s_->urgent_queued;
    s_->queue.push_back(std::move(job));
  }
  s_->cv.notify_one();
}

fhir::Status GroupWriter::run(Body body) {
  struct Wait {
    std::mutex m;
    std::condition_variable cv;
    bool done = false;
    fhir::Status status = fhir::Ok{};
  };
  auto w = std::make_shared<Wait>();
  submit(std::move(body), [w](fhir::Status st) {
    std::lock_guard lock(w->m);
    w->status = std::move(st);
    w->done = true;
    w->cv.notify_all();
  });
  std::unique_lock lock(w->m);
  w->cv.wait(lock, [&] { return w->done; });
  return w->status;
}

void GroupWriter::stop() {
  {
    std::lock_guard lock(s_->m);
    s_->stopping = true;
  }
  s_->cv.notify_all();
  if (s_->thread.joinable()) s_->thread.join();
}

void GroupWriter::inject_commit_failure(bool on) { s_->fail_commits = on; }

GroupWriter::Counters GroupWriter::counters() const {
  Counters c{s_->commits.load(), s_->jobs.load(), s_->failed_commits.load(), 0, s_->deferred_alone.load()};
  std::lock_guard lock(s_->m);
  c.queued = s_->queue.size();
  return c;
}

}  // namespace gw::sqlite
