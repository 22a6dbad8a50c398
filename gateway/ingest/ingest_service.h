// SPDX-License-Identifier: Apache-2.0
// The ingest path (DESIGN.md "Ingest"): the gateway's IngestSink. For each batch an adapter
// hands over: spot a resend (same key and bytes as a unit already applied: answer as before,
// apply nothing); resolve identity, apply a merge, record encounters and put the source's
// pointer in the record locator (one locator transaction); store the message and its
// resources in store.db (one store transaction); audit it; and only then complete the batch,
// so the adapter acknowledges nothing that is not committed. A unit that cannot be applied
// is stored with status error (or rejected) before its failure is reported; an applied
// unit's warnings are stored with its row, counted and logged (locations only). A unit a
// database cannot commit is answered "retry later" and audited (ingest-retry-later); one
// whose audit record failed after store.db committed it stays pending there until its
// resend completes it (docs/hl7v2.md "When a database cannot commit").
#pragma once

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <cstdint>
#include <functional>
#include <map>
#include <vector>
#include <memory>
#include <string>

#include <boost/asio/thread_pool.hpp>

#include "adapters/adapter.h"
#include "gateway/audit/log.h"
#include "gateway/locator/locator.h"
#include "gateway/store/store.h"

namespace gw::ingest {

struct IngestOptions {
  std::string public_base_url = "https://localhost:8443";  // pointers name where records are read
  std::size_t threads = 32;  // batches in flight at once (each waits on group commits)
};

class IngestService final : public adapters::IngestSink {
 public:
  // `sources` maps each configured source name to its ODS code. `audit` may be null only
  // when auditing is switched off (development on loopback).
  IngestService(locator::Locator& locator, store::Store& store, audit::Log* audit,
                std::map<std::string, std::string> sources, IngestOptions options);
  ~IngestService() override;

  void submit(adapters::IngestBatch batch, std::function<void(fhir::Result<adapters::IngestReceipt>)> done) override;
  void record_failure(adapters::IngestFailure failure, std::function<void(fhir::Status)> done) override;

  // Waits for batches in flight. Called at shutdown after the adapters stopped.
  void stop();

  struct Counters {
    std::uint64_t applied = 0, duplicates = 0, reused_keys = 0, errors = 0, rejected = 0, failures = 0;
    // Applied units whose adapter noted warnings (IngestBatch::warnings), and those warnings.
    std::uint64_t units_with_warnings = 0, warnings = 0;
    std::map<std::string, std::uint64_t> reused_keys_by_source;  // every configured source, 0 or more
    std::uint64_t filtered = 0;  // units kept unapplied as their source asks (IngestFailure::filtered)
  };
  Counters counters() const;

  // Start-up, before any adapter accepts: clears the pending mark of the applied messages whose
  // ingest-applied record ("message N") audit.db holds. A stop between that record's commit
  // and clearing the mark leaves such a row, whose acknowledgement may or may not have gone
  // out: its data and audit are committed, and a resend is then answered as a duplicate. The
  // oldest `max` pending rows are looked at. Blocking.
  struct PendingSettled {
    std::size_t cleared = 0;     // ingest-applied record found: mark cleared
    std::size_t left = 0;        // no such record: still pending, for the sender's resend
    std::int64_t not_looked_at = 0;  // pending rows beyond `max`
  };
  fhir::Result<PendingSettled> settle_pending(std::size_t max = 10000);

 private:
  using Answer = std::function<void(fhir::Result<adapters::IngestReceipt>)>;
  // Applies one unit: `answer` (what the adapter acknowledges) runs once, then `finish` once,
  // possibly later (after the pending mark of an applied unit is cleared): the next unit with
  // the same key, and stop(), wait for `finish`.
  void run(adapters::IngestBatch batch, std::shared_ptr<Answer> answer, std::function<void()> finish);
  // Counts a unit in flight until its completion has run (stop() waits for none left).
  template <class Done>
  auto tracked(Done done);
  void finished();
  void audit_then(audit::Record rec, std::function<void(fhir::Status)> next);
  // Whether audit.db holds the ingest-applied record of pending message `m` (written before a
  // stop that left its mark). Blocking read: on the ingest pool only.
  // `nhs_number` may be empty (then the source's records are read).
  fhir::Result<bool> applied_record_written(const std::string& source, const std::string& kind,
                                            const std::string& dedupe_key, const store::StoredMessage& m,
                                            const std::string& nhs_number) const;
  // Counts and logs (locations only, no values) the warnings of a unit just applied.
  void note_warnings(const adapters::IngestBatch& batch, const std::vector<std::string>& warnings);
  std::size_t pool_threads() const { return std::max<std::size_t>(1, options_.threads); }

  locator::Locator& locator_;
  store::Store& store_;
  audit::Log* audit_;
  std::map<std::string, std::string> sources_;
  IngestOptions options_;
  boost::asio::thread_pool pool_;
  std::mutex flight_m_;
  std::condition_variable flight_cv_;
  std::size_t in_flight_ = 0;
  // Units with the same source and key run one after another (a resend racing its original
  // must find it applied): key -> runs waiting for the one in progress.
  std::mutex keys_m_;
  std::map<std::string, std::vector<std::function<void()>>> busy_keys_;
  std::atomic<std::uint64_t> applied_{0}, duplicates_{0}, reused_keys_{0}, errors_{0}, rejected_{0}, failures_{0},
      units_with_warnings_{0}, warnings_{0}, filtered_{0};
  // Reused control ids by source: a sender fault the source's owner must fix (rare: a mutex).
  mutable std::mutex reused_m_;
  std::map<std::string, std::uint64_t> reused_by_source_;
};

}  // namespace gw::ingest
