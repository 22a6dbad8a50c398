// SPDX-License-Identifier: Apache-2.0
// The audit log in audit.db (issue #6): an append-only Merkle tree whose leaves are audit
// records, written by one group-commit writer, with signed checkpoints kept both in the
// database and in a file outside it.
//
// Writes: append() queues a record; the writer thread takes everything queued (up to
// max_batch), assigns sequence numbers, links each record to its predecessor's leaf hash,
// stores the record, its leaf hash and every perfect subtree it completes, raises alerts, and
// commits once with synchronous=FULL. Only then is each caller completed: a response that
// depends on its audit record is never sent before the record is durable. A failed commit
// completes every caller in the batch with not_ready (the HTTP layer answers 503).
//
// An IG officer's change to the state kept beside the records (an alert review, a flag) is a
// Log::Change appended with the record of the request that makes it: the writer applies it in
// the transaction that stores that record, so that neither is durable without the other.
//
// Reads (search, proofs, alerts) use their own read-only connection per call; they are
// blocking and belong on a worker thread, never on a network thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fhir/result.h"
#include "gateway/audit/checkpoint.h"
#include "gateway/audit/merkle.h"
#include "gateway/audit/record.h"

namespace gw::audit {

// Rules that put an access on the IG review queue.
struct AlertRules {
  bool break_glass = true;              // any break-glass use
  bool without_relationship = true;     // access allowed only by an emergency purpose of use
                                        // (break-glass has its own rule)
  std::size_t max_patients_per_hour = 50;  // distinct patients one user opens in an hour (0 = off)
  std::vector<std::string> flagged_patients;  // NHS numbers of VIP or staff records (seeded from config)
  bool out_of_hours = true;
  int working_start_minute = 7 * 60;    // UK local time (Europe/London), inclusive
  int working_end_minute = 19 * 60;     // exclusive
  bool weekends_out_of_hours = true;
};

struct LogOptions {
  std::string path;                     // audit.db
  std::string checkpoint_file;          // signed notes appended here too ("" = none)
  bool syslog_checkpoints = false;      // also send each checkpoint to syslog(3), LOG_AUTHPRIV
  std::string origin = "fhir-gateway/audit";
  std::chrono::milliseconds checkpoint_interval{std::chrono::seconds(60)};
  std::size_t max_batch = 1024;
  // Group commit under load (as PostgreSQL's commit_delay and commit_siblings): when the last
  // commit carried at least commit_siblings records, the writer waits commit_delay before
  // taking the next batch, so that more records share its sync. 0: never waits.
  std::chrono::microseconds commit_delay{0};
  std::size_t commit_siblings = 8;
  std::size_t max_queue = 65536;        // beyond this append() fails at once (not_ready)
  // The patient index (who looked at this person) takes new rows in append order, and the
  // agent and time indexes start behind the newest records; the writer brings them up to
  // date in sorted batches of this many rows, each in a transaction of its own, once this many
  // have gathered (audit.db migrations 4 and 5). 0: never merges (tests).
  std::size_t index_merge_rows = 2048;
  AlertRules rules;
  // Called on the writer thread after each successful commit, before its callers are
  // completed (e.g. to wake the forwarder, to mark the gateway ready); must not block.
  std::function<void()> on_commit;
  // Called on the writer thread after each failed commit, before its callers are completed
  // (the gateway is then not ready until a commit succeeds again); must not block.
  std::function<void()> on_commit_failed;
  // How open() cuts a checkpoint file with a torn last note back to its complete notes: returns
  // 0, or the errno value of the failure. Empty (always, outside tests): truncate(2). Tests set
  // it to take the path taken when the cut is impossible (an append-only file).
  std::function<int(const std::string& file, std::uint64_t length)> truncate_checkpoint_file;
};

struct Alert {
  std::int64_t id = 0;
  std::uint64_t seq = 0;            // the audit record that raised it
  std::string rule;                 // break-glass, no-relationship, volume, flagged-record, out-of-hours
  std::string detail;
  std::int64_t raised_ms = 0;
  std::string status;               // open, reviewed
  std::string reviewer;
  std::string review_outcome;       // e.g. appropriate, inappropriate, referred
  std::string review_note;
  std::int64_t reviewed_ms = 0;
};

// A record flagged through PUT /audit/flagged-patients/{nhs}.
struct FlaggedPatient {
  std::string nhs_number;
  std::string reason;
  std::string flagged_by;           // user id of the IG officer
  std::int64_t flagged_ms = 0;
};

struct FlaggedPage {
  std::vector<FlaggedPatient> items;
  std::uint64_t total = 0;          // flagged through the API, in all pages
};

struct Query {
  std::string patient;              // NHS number
  std::string agent;                // user id
  std::optional<std::int64_t> from_ms;  // inclusive
  std::optional<std::int64_t> to_ms;    // exclusive
  std::optional<int> outcome;       // 0, 4, 8
  std::string subtype;              // action, operation or "break-glass"
  std::optional<std::uint64_t> after_seq;  // keyset paging: records with seq > after_seq
  std::size_t count = 50;           // page size (callers cap it)
  bool newest_first = true;
};

// The most records that do not decode one page reads past (Page::damaged); a page that meets
// more ends there, short, and its next_after carries on after them. Beyond a few, the file
// needs audit-verify, not a search.
inline constexpr std::size_t kMaxDamagedPerPage = 100;

struct Page {
  std::vector<Record> records;
  std::uint64_t total = 0;          // matches in all pages (damaged records included)
  // Sequence numbers of the matching records this page read that do not decode (the file was
  // damaged or altered: audit-verify reports them), left out of `records`.
  std::vector<std::uint64_t> damaged;
  // Where the next page starts (its Query::after_seq): the last matching row this page read,
  // readable or damaged; empty when no matching row follows it. Decided by the rows, not by
  // how many decoded: a page short of readable records can still have a next one.
  std::optional<std::uint64_t> next_after;
};

struct InclusionProof {
  std::uint64_t index = 0;
  std::uint64_t size = 0;
  merkle::Hash leaf{};
  std::string record;               // canonical bytes (empty when pruned)
  std::vector<merkle::Hash> path;
  merkle::Hash root{};
};

struct Stats {
  std::uint64_t size = 0;
  std::uint64_t batches = 0;
  std::uint64_t failed_batches = 0;
  std::uint64_t largest_batch = 0;
  std::uint64_t index_merges = 0;         // index merges (LogOptions::index_merge_rows)
  std::uint64_t patient_rows_merged = 0;  // patient index rows they moved
  std::uint64_t records_indexed = 0;      // records they added to the agent and time indexes
  std::uint64_t index_merge_us = 0;       // time spent in them, in total
  std::optional<Checkpoint> last_checkpoint;
};

class Log {
  struct Impl;

 public:
  using Done = std::function<void(fhir::Result<std::uint64_t>)>;

  // A change to the review queue or the flagged records, made by review_alert(), flag_patient()
  // or unflag_patient() and applied by append(): on the writer thread, inside the transaction
  // that stores the record appended with it, just before that record. Empty: no change.
  class Change {
   public:
    Change() = default;
    explicit operator bool() const { return static_cast<bool>(apply_); }

   private:
    friend class Log;
    friend struct Log::Impl;
    // Writes the change (a failure rolls back what it wrote: the change is refused).
    std::function<fhir::Status(Impl&)> apply_;
    // After the commit that carried it: the writer's own state that follows the table.
    std::function<void(Impl&)> committed_;
  };
  // How append() with a change ends: `result` holds the record's sequence number once the
  // change and the record are both durable; when `refused`, the issue in `result` is the
  // change's own (an unknown alert, one reviewed already, ...) and nothing was stored, the
  // record neither (the caller appends a record of the refusal instead); otherwise not_ready,
  // as for any append, and nothing was stored either.
  using ChangeDone = std::function<void(fhir::Result<std::uint64_t> result, bool refused)>;

  // Opens (creating and migrating) the database, rebuilds the tree frontier, checks the stored
  // tree against the last checkpoint and the checkpoint file (a mismatch, or a file ahead of
  // the database, refuses to start: not_ready naming both sizes), rebuilds search indexes that
  // do not match the records and warns of a checkpoint file behind the database (see
  // start_warnings()), and starts the writer. `signer` may be null: then no checkpoints are
  // written.
  static fhir::Result<std::unique_ptr<Log>> open(LogOptions options, std::shared_ptr<const CheckpointSigner> signer);
  ~Log();  // stop()
  Log(const Log&) = delete;
  Log& operator=(const Log&) = delete;

  // Queues `r` (its seq and prev are assigned here). `done` runs on the writer thread after
  // the commit, with the sequence number, or with not_ready when the record could not be
  // made durable. Never blocks on I/O.
  void append(Record r, Done done);
  fhir::Result<std::uint64_t> append_sync(Record r);
  // As append(), with `change` applied in the same transaction (see Change and ChangeDone).
  void append(Record r, Change change, ChangeDone done);
  // The same, waiting; a refusal is the change's own issue (ChangeDone's `refused`).
  fhir::Result<std::uint64_t> append_sync(Record r, Change change);
  // Signs and stores a checkpoint of the current tree now (also done on the interval and at
  // stop()). Fails when there is no signer.
  fhir::Result<Checkpoint> checkpoint_now();
  // Returns once every append queued before the call has been committed (or failed) and its
  // completion handler has run. The owner of the executors those handlers resume on (the
  // HTTP server's io_context) must outlive them: the gateway flushes before destroying it.
  void flush();
  // Completes queued appends, writes a final checkpoint, stops the writer. Idempotent.
  void stop();
  // Test hook: while set, every commit fails (the fail-closed path).
  void inject_write_failure(bool on);

  // Reads. search() skips records that do not decode and lists them in Page::damaged; get()
  // of one fails (internal_error naming its sequence number).
  fhir::Result<Page> search(const Query& q) const;
  fhir::Result<std::optional<Record>> get(std::uint64_t seq) const;
  // For a record whose content retention removed: when, from the retention-prune record that
  // says so (empty time when none does). Empty when `seq` has its content or is not in the log.
  struct Removal {
    std::optional<std::int64_t> time_ms;
  };
  fhir::Result<std::optional<Removal>> removal(std::uint64_t seq) const;
  fhir::Result<InclusionProof> inclusion_proof(std::uint64_t index, std::uint64_t size) const;
  fhir::Result<std::vector<merkle::Hash>> consistency_proof(std::uint64_t size1, std::uint64_t size2) const;
  fhir::Result<merkle::Hash> root_at(std::uint64_t size) const;
  fhir::Result<std::vector<Checkpoint>> checkpoints(std::size_t max) const;
  // The review queue, newest first: the alerts with `status` ("" = all) whose id is below
  // `before` when given (the next page), at most `max`.
  fhir::Result<std::vector<Alert>> alerts(const std::string& status, std::size_t max,
                                          std::optional<std::int64_t> before = std::nullopt) const;
  // How many alerts have `status` ("" = all).
  fhir::Result<std::uint64_t> alert_count(const std::string& status) const;
  // The changes an IG officer makes, each to append() with the record of the request that
  // makes it. Marks an alert reviewed; refused with not_found for an unknown id, conflict when
  // already reviewed.
  static Change review_alert(std::int64_t id, std::string reviewer, std::string outcome, std::string note);
  // Flags a record for the flagged-record alert rule (again: the new reason and flagger).
  static Change flag_patient(std::string nhs_number, std::string reason, std::string by);
  // Removes a flag set by flag_patient(). Refused with not_found when the number is not
  // flagged; conflict when AlertRules::flagged_patients (the configuration) flags it, which
  // only a configuration change can undo.
  static Change unflag_patient(std::string nhs_number);
  // The records flagged through flag_patient(), in NHS-number order after `after` ("" = from
  // the first), at most `max` (those seeded from AlertRules::flagged_patients are not in it).
  fhir::Result<FlaggedPage> flagged_patients(const std::string& after, std::size_t max) const;

  // Retention: removes the content of records older than `cutoff_ms` (their leaf hashes and
  // the tree stay, so every proof still verifies), appends a retention-prune record saying
  // which range went, and checkpoints. Records at or after `keep_from` stay whatever their
  // age: the audit forwarder's cursor, so that no record is pruned before the SIEM holds it
  // (the note then says how many were kept back, and a warning is logged). The removed
  // content leaves the disk before this returns (the writer runs with secure_delete, and a
  // TRUNCATE checkpoint then empties the WAL, whose older frames still held it; a reader that
  // holds the WAL past the busy timeout leaves it there until the next prune, with a
  // warning). Returns how many records were pruned.
  fhir::Result<std::uint64_t> prune_before(std::int64_t cutoff_ms, const std::string& by,
                                           std::uint64_t keep_from = UINT64_MAX);

  Stats stats() const;
  const LogOptions& options() const { return options_; }
  // What open() found wrong yet started with, each also logged (warn) and written to the log
  // as a system record: a checkpoint file behind audit.db (missing, emptied, cut, or an older
  // copy), search indexes that did not match the records (rebuilt). Empty normally.
  const std::vector<std::string>& start_warnings() const { return start_warnings_; }

 private:
  explicit Log(LogOptions options);
  LogOptions options_;
  std::vector<std::string> start_warnings_;
  std::unique_ptr<Impl> impl_;
};

// Europe/London wall-clock minute of day and weekday (0 = Sunday) for a UTC time: GMT, or
// BST from 01:00 UTC on the last Sunday of March to 01:00 UTC on the last Sunday of October.
struct LocalTime {
  int minute_of_day;
  int weekday;
};
LocalTime london_time(std::int64_t time_ms);

}  // namespace gw::audit
