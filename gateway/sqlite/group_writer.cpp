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
};

}  // namespace

struct GroupWriter::State {
  Database db;
  GroupWriterOptions options;
  std::mutex m;
  std::condition_variable cv;
  std::deque<Job> queue;
  bool stopping = false;
  std::atomic<bool> fail_commits{false};
  std::atomic<std::uint64_t> commits{0}, jobs{0}, failed_commits{0};
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
        while (!queue.empty() && batch.size() < options.max_batch) {
          batch.push_back(std::move(queue.front()));
          queue.pop_front();
        }
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

void GroupWriter::submit(Body body, Done done) {
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
    s_->queue.push_back(Job{std::move(body), std::move(done)});
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
  Counters c{s_->commits.load(), s_->jobs.load(), s_->failed_commits.load(), 0};
  std::lock_guard lock(s_->m);
  c.queued = s_->queue.size();
  return c;
}

}  // namespace gw::sqlite
