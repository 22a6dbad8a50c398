// SPDX-License-Identifier: Apache-2.0
// The offline audit verifier (issue #6 part 3): re-derives everything audit.db claims from the
// record bytes alone and reports the first record that is not what was written. It backs
// tools/audit_verify (IG officers) and the mutation tests.
//
// Two stages. check_row() looks at one audit_record row on its own (decode, leaf hash, the
// copied search columns and the search index rows naming it); it is pure, so verify_database()
// runs it on several threads.
// LogVerifier then takes the rows in order: gaps, sequence numbers, the hash chain (each
// record names its predecessor's leaf hash), the stored tree, and every checkpoint.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fhir/result.h"
#include "gateway/audit/checkpoint.h"
#include "gateway/audit/merkle.h"

namespace gw::audit {

struct VerifyOptions {
  // Checkpoints from outside audit.db (the checkpoint file(s), parsed with parse_checkpoints).
  // verify_database() adds the ones in audit.db's audit_checkpoint table.
  std::vector<Checkpoint> checkpoints;
  // The checkpoint key. Null: signatures are not checked (reported as a warning); roots still are.
  const CheckpointVerifier* key = nullptr;
  // `checkpoints` were read from checkpoint file(s), even if they hold none: audit.db's newest
  // checkpoint missing from them is then reported (checkpoint-file-behind).
  bool checkpoint_files_given = false;
  // Checkpoint files whose last note was cut short (parse_checkpoint_file's torn tail), with the
  // length of that tail: reported as checkpoint-file-torn. Their complete notes are in
  // `checkpoints`.
  std::vector<std::pair<std::string, std::size_t>> torn_checkpoint_files;
  // Records after the last verified checkpoint, checkpoint files behind audit.db and torn
  // checkpoint files are errors (normally warnings).
  bool strict = false;
  // Stop reading once the first bad index is certain (see LogVerifier::settled). Faster on a
  // damaged log; later problems are then not listed. Off for audits, on in the mutation tests.
  bool stop_at_first_bad = false;
  // Called on the calling thread after each batch of rows: (rows done, rows in audit.db).
  std::function<void(std::uint64_t done, std::uint64_t total)> progress;
  unsigned threads = 2;            // threads decoding and hashing records (verify_database)
  std::size_t max_problems = 100;  // problems listed; the rest are only counted
};

// One finding. `index` is the leaf index (sequence number) it is pinned to, or empty when it
// concerns no single record (a bad signature, a damaged tree node above intact records).
// kind: changed, missing, inserted, reordered, forged, truncated, rolled-back, column-mismatch,
// unexplained-prune, damaged-tree, bad-signature, bad-checkpoint, uncovered-tail,
// checkpoint-file-behind, checkpoint-file-torn, signatures-unchecked.
struct Problem {
  std::optional<std::uint64_t> index;
  std::string kind;
  std::string text;  // plain language for an IG officer; never names a patient
};

struct VerifyReport {
  bool ok = false;                  // no problems (warnings allowed)
  std::uint64_t records = 0;        // rows in audit_record
  std::uint64_t pruned = 0;         // rows whose content retention removed
  std::uint64_t tree_size = 0;      // leaves the database holds (records, or leaf hashes without one)
  std::uint64_t covered = 0;        // size of the largest checkpoint that verified (0: none)
  std::optional<Checkpoint> covering;  // that checkpoint
  std::uint64_t checkpoints = 0;    // distinct checkpoints examined
  std::uint64_t checkpoints_verified = 0;
  bool signatures_checked = false;
  std::optional<std::uint64_t> first_bad_index;  // lowest index among the problems
  std::vector<Problem> problems;    // errors, lowest index first, at most max_problems
  std::uint64_t unlisted_problems = 0;
  std::vector<Problem> warnings;    // uncovered-tail, checkpoint-file-behind, checkpoint-file-torn (unless
                                    // strict), signatures-unchecked
};

// One audit_record row and what the database keeps beside it.
struct StoredRow {
  std::int64_t seq = 0;
  std::optional<std::string> record;  // canonical bytes; empty optional = content pruned
  std::int64_t time_ms = 0;           // copied columns the IG searches use
  std::string agent;
  std::int64_t outcome = 0;
  std::string subtypes;
  std::vector<std::string> patients;  // audit_patient rows naming this seq
  // verify_database() streams audit_patient separately and sets this digest of the rows'
  // NHS numbers instead of `patients` (see patient_digest); then `patients` is ignored.
  std::optional<std::uint64_t> patients_digest;
  // The agent and time search indexes (audit.db migration 5). `indexed`: audit_index_state's
  // indexed_below is above this seq, so the searches look for it there and nowhere else; the
  // index rows naming this seq, as (epoch, agent) and time_ms. A record not yet indexed has none.
  bool indexed = false;
  std::vector<std::pair<std::int64_t, std::string>> agent_index;
  std::vector<std::int64_t> time_index;
};

// What the record of an IG officer's alert review (POST /audit/alerts/{id}/review, answered
// 2xx) says: the alert, who reviewed it, and the decision as the note gives it ("outcome" or
// "outcome - note").
struct AlertReview {
  std::int64_t alert = 0;
  std::string reviewer;
  std::string review;
};

// What the record of a flag or unflag (PUT or DELETE /audit/flagged-patients/{nhs}, answered
// 2xx) says: the NHS number, whether it is now flagged, by whom, and the reason given.
struct FlagChange {
  std::string nhs_number;
  bool flagged = false;
  std::string by;
  std::string reason;
};

// One audit_flagged_patient row (the records whose accesses raise alerts).
struct StoredFlag {
  std::string nhs_number;
  std::string reason;
  std::string flagged_by;
};

// One audit_alert row (the review queue is mutable state kept beside the log, not in it).
struct StoredAlert {
  std::int64_t id = 0;
  std::int64_t seq = 0;  // the record that raised it
  std::string status;    // "open" or "reviewed"
  std::string reviewer, outcome, note;
  std::string detail;    // what raised it, or retention's placeholder (retention_redaction())
};

// What check_row() found out about one row on its own.
struct RowCheck {
  bool pruned = false;
  merkle::Hash leaf{};              // H(0x00 || record) of the stored bytes (not when pruned)
  bool decoded = false;
  std::string error;                // why the bytes are not a canonical record
  std::uint64_t seq = 0;            // the record's own sequence number (when decoded)
  std::optional<merkle::Hash> prev; // the predecessor leaf hash it names (empty: none or not hex)
  bool prev_empty = false;          // the record names no predecessor (only record 0 may)
  std::string column_mismatch;      // which copied columns disagree with the record ("" = none)
  // For a retention-prune record: the range [first, last] its note says was removed.
  std::optional<std::pair<std::uint64_t, std::uint64_t>> prunes;
  // For the record of an alert review: what it says was decided.
  std::optional<AlertReview> review;
  // For the record of a flag or unflag: what it changed.
  std::optional<FlagChange> flag;
};

RowCheck check_row(const StoredRow& row);

// A keyed 64-bit digest of a set of NHS numbers (order and duplicates do not matter). The key
// is random per process, so nobody can craft a different set with the same digest.
std::uint64_t patient_digest(const std::vector<std::string>& nhs_numbers);
// The digest of one NHS number; a set's digest is the XOR of its distinct members' digests.
std::uint64_t patient_digest(std::string_view nhs_number);

// Stored perfect-subtree hash at (level, index), or empty when audit_node has none. Asked
// for levels >= 1 in ascending index order per level.
using StoredNodes = std::function<std::optional<merkle::Hash>(unsigned level, std::uint64_t index)>;

// The sequential stage. Feed every leaf index the database knows, ascending: an index with a
// row, with only a stored leaf hash (a deleted record), or both. Skipped indexes have neither.
// Memory: a few hashes plus the findings, whatever the log's size. One thread at a time. A copy
// carries on independently from the same point (the mutation tests copy the state after an
// intact prefix instead of replaying it for every mutation).
class LogVerifier {
 public:
  // `database_checkpoints` come from audit_checkpoint; options.checkpoints from outside. The
  // signatures are checked here (on options.threads threads). `nodes` may be empty.
  // `log_origin`: the origin audit.db keeps for its log (gateway_info 'audit_origin'); every
  // checkpoint must name it. Empty (a database from before it was kept): the origin of
  // audit.db's oldest checkpoint.
  LogVerifier(const VerifyOptions& options, std::vector<Checkpoint> database_checkpoints, StoredNodes nodes,
              std::optional<std::string> log_origin = std::nullopt);

  // Adds leaf `index`. `row` and `check` are both set or both null; `stored_leaf` is the
  // audit_node level-0 hash, if any.
  void add(std::uint64_t index, const StoredRow* row, const RowCheck* check,
           const std::optional<merkle::Hash>& stored_leaf);
  // A finding made outside the row stream (unreadable checkpoint table rows, stray index rows).
  void add_problem(std::optional<std::uint64_t> index, std::string kind, std::string text);
  // audit_index_state's indexed_below (empty: audit.db has no such row), for a database from
  // migration 5 on: the agent and time indexes must hold exactly the records below it, so it
  // may not exceed the tree (the records from there on would be left out of agent and date
  // searches). Call after the last add(), before finish().
  void check_index_state(std::optional<std::int64_t> indexed_below);
  // audit_alert's rows, by ascending id, against the records: every review the queue shows
  // must be the one its audit record says was made (same alert, reviewer, outcome and note),
  // every reviewed alert must have that record unless retention removed it, an alert a record
  // says was reviewed must not be open again or gone, and ids run 1, 2, ... without a gap (the
  // gateway never deletes an alert). Retention's placeholder (retention_redaction()) may stand
  // for a detail and review note only together, of a reviewed alert whose record was pruned;
  // the review's record then need only agree on the reviewer and outcome. Call after the last
  // add(), before finish().
  void check_alerts(const std::vector<StoredAlert>& alerts);
  // audit_flagged_patient against the records of the flags and unflags (flag-mismatch): a
  // number the last such record flagged must be there with that reason and flagger, one it
  // unflagged must not, and a row no record explains is reported unless retention removed
  // records' content (the flag's own record may have gone with it). Numbers flagged in the
  // configuration are not in the table. Call after the last add(), before finish().
  void check_flags(const std::vector<StoredFlag>& flags);
  // With options.stop_at_first_bad: the lowest bad index can no longer change. That holds
  // once a record-locating problem at f is known and index f + 1 has been added: later rows
  // can only point at f + 1 or beyond, and a checkpoint mismatch above f is explained by f.
  bool settled() const;
  // Checks what needs the whole sequence (checkpoints beyond the data, pruned ranges, the
  // tail) and returns the report. Call once, after the last add().
  VerifyReport finish();

 private:
  struct Cp {
    Checkpoint c;
    bool in_database = false;
    bool in_file = false;
    bool signature_ok = false;
    enum class Root { unchecked, match, mismatch, unavailable } root = Root::unchecked;
  };
  // `first_of_index`: listed before the other problems at the same index (the cause, ahead of
  // its effects).
  void note(std::optional<std::uint64_t> index, std::string kind, std::string text, bool locates,
            bool first_of_index = false);
  void evaluate_checkpoints_at_size();

  VerifyOptions options_;
  StoredNodes nodes_;
  std::vector<Cp> cps_;               // sorted by size
  std::size_t next_cp_ = 0;
  std::uint64_t checkpoints_total_ = 0;
  std::vector<Problem> problems_;
  std::uint64_t unlisted_ = 0;
  std::vector<Problem> warnings_;
  std::vector<std::uint64_t> locating_;  // indexes of problems that alter the leaves
  std::optional<std::uint64_t> min_index_;
  bool min_locates_ = false;

  merkle::CompactRange tree_;
  bool tree_broken_ = false;
  std::optional<std::uint64_t> last_leaf_mismatch_;
  std::uint64_t next_ = 0;            // next index expected
  std::optional<merkle::Hash> prev_leaf_, prev_prev_leaf_;
  bool prev_self_ok_ = true;
  std::int64_t prev_shift_ = 0;       // record seq - position of the previous row
  std::optional<std::uint64_t> prev_row_seq_;  // the previous row's record seq, when misplaced
  std::uint64_t records_ = 0;
  std::uint64_t pruned_ = 0;
  bool seen_content_ = false;
  std::optional<std::uint64_t> last_row_;     // last index with a row
  std::optional<std::uint64_t> trailing_missing_;  // first of the rowless indexes at the end
  // First of the records at the end of the log that audit_index_state says are indexed but
  // that have no time index row (check_index_state).
  std::optional<std::uint64_t> unindexed_tail_;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> pruned_runs_;   // [first, last]
  std::vector<std::pair<std::uint64_t, std::uint64_t>> prune_claims_;  // from retention records
  std::map<std::int64_t, std::pair<std::uint64_t, AlertReview>> reviews_;  // by alert: (seq, review)
  std::map<std::string, std::pair<std::uint64_t, FlagChange>> flag_changes_;  // by NHS number: the last
};

// The whole database read into memory (small logs: tests, tools). Rows in seq order.
struct StoredLog {
  std::vector<StoredRow> rows;
  std::map<std::pair<unsigned, std::uint64_t>, merkle::Hash> nodes;  // audit_node (level, idx)
  std::vector<std::string> checkpoint_notes;                         // audit_checkpoint.note
  bool has_index_state = false;               // audit.db has audit_index_state (migration 5)
  std::optional<std::int64_t> indexed_below;  // its value, when it has the row
  std::optional<std::string> origin;          // gateway_info 'audit_origin', when audit.db keeps it
  std::vector<StoredAlert> alerts;            // audit_alert, by id
  std::vector<StoredFlag> flags;              // audit_flagged_patient
};
fhir::Result<StoredLog> read_stored_log(const std::string& audit_db_path);
VerifyReport verify_log(const StoredLog& log, const VerifyOptions& options);

// Verifies audit.db (opened read-only, in one read transaction, rows streamed) against its own
// checkpoints and options.checkpoints. Fails only when the file cannot be read as an audit
// database (not_ready / invalid_value); every finding about its content is in the report.
fhir::Result<VerifyReport> verify_database(const std::string& audit_db_path, const VerifyOptions& options);

}  // namespace gw::audit
