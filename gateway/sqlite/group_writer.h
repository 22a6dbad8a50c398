// SPDX-License-Identifier: Apache-2.0
// Group commit for one SQLite file (DESIGN.md "Storage"): one thread owns the read-write
// connection; writes are queued as jobs, framed many to a transaction (each job inside its own
// SAVEPOINT, so a failing job leaves nothing behind and does not spoil the others), and each
// caller is completed only after the COMMIT that carried its job returned. Used by the
// message and resource store (store.db).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "fhir/result.h"
#include "gateway/sqlite/database.h"

namespace gw::sqlite {

struct GroupWriterOptions {
  std::string name = "store";     // in error texts: "the <name> database ..."
  std::size_t max_batch = 512;    // jobs per transaction
  std::size_t max_queue = 65536;  // queued jobs before submit refuses (too_many_requests)
  // How long a deferrable job (submit_deferrable) may wait for a commit other jobs need.
  std::chrono::microseconds defer_max{10000};
};

class GroupWriter {
 public:
  using Body = std::function<fhir::Status(Database&)>;
  using Done = std::function<void(fhir::Status)>;

  // Takes the connection and starts the writer thread.
  GroupWriter(Database db, GroupWriterOptions options);
  ~GroupWriter();  // stop()
  GroupWriter(const GroupWriter&) = delete;
  GroupWriter& operator=(const GroupWriter&) = delete;

  // Queues `body`; `done` runs once on the writer thread: Ok after the commit that carried
  // the job, the body's own Issue (its writes rolled back), or a storage Issue when the
  // commit failed. Refused at once (done called on the caller's thread) with not_ready after
  // stop() and too_many_requests when the queue is full. `done` must not block for long:
  // it delays the next commit.
  void submit(Body body, Done done);
  // As submit(), for a job nobody waits on (bookkeeping after the fact): it does not start a
  // commit of its own while other work is expected. It joins the next transaction that
  // submit() work starts, or, when none comes within options.defer_max, is committed alone
  // (and at once when stopping). `done` still runs only after the commit that carried it.
  void submit_deferrable(Body body, Done done);
  // submit() and wait.
  fhir::Status run(Body body);
  // Finishes the queued jobs, then stops the thread. Idempotent.
  void stop();

  // Test hook: every commit fails (as a full disk would) while on.
  void inject_commit_failure(bool on);

  struct Counters {
    std::uint64_t commits = 0, jobs = 0, failed_commits = 0;
    std::uint64_t queued = 0;  // jobs waiting now
    std::uint64_t deferred_alone = 0;  // commits that carried only deferrable jobs (none joined them)
  };
  Counters counters() const;

 private:
  void enqueue(Body body, Done done, bool deferrable);
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace gw::sqlite
