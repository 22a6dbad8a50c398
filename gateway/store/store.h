// SPDX-License-Identifier: Apache-2.0
// store.db (DESIGN.md "Storage"): every inbound message from push sources, kept raw with its
// status and the reply sent, and the FHIR R4 resources those messages delivered. Writes go
// through one group-commit writer; reads use a pool of read-only connections. Every call
// blocks: never call from a network thread (the HTTP layer uses AsyncStore, the ingest
// service its own pool; async_store.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "fhir/date_range.h"
#include "fhir/json.h"
#include "fhir/result.h"
#include "gateway/sqlite/group_writer.h"

namespace gw::store {

struct StoreOptions {
  std::size_t readers = 4;
  std::size_t max_batch = 512;       // jobs per group commit
  std::size_t max_queue = 65536;
  std::size_t max_scan = 10000;      // resources examined per search
};

// filtered: a unit of a type or event its source's adapter does not map, acknowledged as
// accepted because the source is set to (hl7v2 setting unmapped = "filter"); nothing applied.
enum class MessageStatus { applied, error, rejected, replayed, filtered };
std::string_view status_name(MessageStatus s);
std::optional<MessageStatus> parse_status(std::string_view s);

struct StoredMessage {
  std::int64_t id = 0;
  std::string source;
  std::string kind;             // e.g. "ADT^A01"
  std::string dedupe_key;
  std::string content_sha256;   // 32 bytes
  std::int64_t received_ms = 0;
  std::int64_t updated_ms = 0;
  MessageStatus status = MessageStatus::applied;
  std::string error;            // diagnostics of an error or rejection
  std::string error_location;   // e.g. "PID-3"
  std::string reply;            // the answer sent (an HL7 ACK)
  std::string patient_id;
  // An applied unit not yet acknowledged: its data is committed but its ingest-applied audit
  // record is not known to be written (see confirm()). A resend completes it.
  bool pending = false;
  std::string raw;              // filled by message(), not by list_messages()
};

// A message to store: its row (status applied, error or rejected).
struct MessageWrite {
  std::string source, kind, dedupe_key, raw, reply, patient_id;
  MessageStatus status = MessageStatus::applied;
  std::string error, error_location;
  std::int64_t received_ms = 0;
  std::string content_sha256;  // sha256(raw) when the caller has it already; else computed
  bool pending = false;        // apply(): stored as pending until confirm() (StoredMessage::pending)
  // apply(): a resource carrying a `subject` that store.db already files under another patient
  // than patient_id is refused (conflict, expression "Type/id"), and nothing is written, unless
  // that patient is listed here (the caller checked it was merged into patient_id). A reused
  // visit or order number must not move one patient's record to another.
  std::vector<std::string> subject_may_move_from;
};

struct StoredResource {
  std::string type, id, patient_id, source;
  std::int64_t version = 0;
  std::int64_t last_updated_ms = 0;
  std::string json;             // the resource with meta.versionId and meta.lastUpdated
};

// One code= alternative (R4 search.html#token): `system` nullopt matches the code in any
// system (code alone); "" matches only a coding without a system (|code). An empty `code`
// with a non-empty `system` matches any code in that system (system|).
struct CodeMatch {
  std::optional<std::string> system;
  std::string code;
};

struct ResourceQuery {
  std::vector<std::string> patient_ids;  // the patient and every record merged into it
  std::string type;                      // Encounter, Observation, DiagnosticReport, ...
  // code= parameters (R4 search.html): each holds alternatives, ORed (code=a,b); the
  // parameters are ANDed (code=a&code=b matches a resource carrying both codes).
  std::vector<std::vector<CodeMatch>> codes;
  // date comparisons, all must hold (ANDed).
  std::vector<std::pair<fhir::Prefix, fhir::DateRange>> dates;
  // Codings (system, code) the caller may not see (the sensitive categories of
  // auth::Policy): a match carrying one anywhere (carries_coding) is withheld before anything
  // is counted, so total and paging describe only what is shown.
  std::vector<std::pair<std::string, std::string>> withheld_codings;
  std::size_t count = 50;
  std::size_t offset = 0;
};

struct ResourcePage {
  std::vector<StoredResource> items;  // newest clinical date first, then type/id
  std::int64_t total = 0;             // matches not withheld
  std::vector<std::string> withheld;  // "Type/id" of every match withheld (withheld_codings)
  bool truncated = false;             // more than max_scan candidates: total is a lower bound
};

// The clinical date a `date` search compares, as one range ([begin, end) in epoch seconds),
// per the R4 search parameter clinical-date of the resource's type: Encounter.period,
// Observation.effective[x] (dateTime, instant, Period or Timing) and
// DiagnosticReport.effective[x] (dateTime or Period). Nothing else: `issued` (when a result
// was released) is not the clinical date, and other types have no `date` parameter here. A
// Period without a start reaches back without limit and one without an end is ongoing
// (R4 datatypes.html Period); a Timing counts by its outer limits, its events and
// repeat.boundsPeriod (R4 search.html "date"). nullopt: nothing to compare, so the resource
// matches no date parameter. store.db keeps this in resource.date_begin/date_end.
std::optional<fhir::DateRange> date_index(const fhir::Json& resource);

// Whether `resource` holds, anywhere in it (code, value, component, category, reason,
// contained resources, ...), a Coding whose (system, code) is one of `codings`. Walks every
// node once, without recursion.
bool carries_coding(const fhir::Json& resource, const std::vector<std::pair<std::string, std::string>>& codings);

struct MessageQuery {
  std::optional<MessageStatus> status;
  std::string source;
  std::int64_t after_id = 0;          // keyset paging: ids greater than this
  std::size_t limit = 100;            // capped at 1000
  bool pending_only = false;          // only applied messages still pending (StoredMessage::pending)
};

struct ApplyResult {
  std::int64_t message_id = 0;
  std::vector<std::string> stored;    // "Encounter/abc" of each resource written
};

class Store {
 public:
  static fhir::Result<std::unique_ptr<Store>> open(const std::string& path, StoreOptions options = {});
  ~Store();

  // The applied message from `source` with this key and content, if any: a resend.
  fhir::Result<std::optional<StoredMessage>> find_applied(const std::string& source, const std::string& dedupe_key,
                                                          const std::string& content_sha256);
  // True when `source` already applied a message with this key (checked after find_applied
  // found no same-content one: a reused control id, a sender fault the caller counts and logs).
  fhir::Result<bool> key_reused(const std::string& source, const std::string& dedupe_key);
  // Both answers in one read, for the ingest path.
  struct ResendCheck {
    std::optional<StoredMessage> applied;  // the applied message with this key and content
    bool key_seen = false;                 // some applied message has this key
  };
  fhir::Result<ResendCheck> resend_check(const std::string& source, const std::string& dedupe_key,
                                         const std::string& content_sha256);

  // Those of `resources` store.db already holds: which source holds each and the patient it is
  // filed under, in the order of `resources`. Read, in one pass, before the ingest path commits
  // anything else for a unit: apply() would refuse a resource another source holds, or one
  // filed under another patient (apply() still checks both, in its own transaction).
  struct Holder {
    std::string resource;  // "Type/id"
    std::string source;
    std::string patient_id;
  };
  fhir::Result<std::vector<Holder>> holders(const std::vector<fhir::Json>& resources);

  // Stores the message (status applied) and upserts `resources` (each with resourceType, id
  // and subject already set) under `patient_id`, in one transaction; earlier errored rows of
  // the same source, key and content become 'replayed'. A resource id held by another source
  // is refused (conflict) and nothing is written. `done` runs after commit, on the writer
  // thread.
  void apply(MessageWrite message, std::vector<fhir::Json> resources,
             std::function<void(fhir::Result<ApplyResult>)> done);
  // Clears the pending mark of applied message `message_id` (a no-op when it has none): its
  // audit record is committed. `done` runs after commit, on the writer thread. Deferrable
  // (sqlite::GroupWriter::submit_deferrable): it joins the next write's commit, or commits
  // alone after at most 10 ms.
  void confirm(std::int64_t message_id, std::function<void(fhir::Status)> done);
  // Stores a failed message (status error or rejected). When the same unit (source, key and
  // content) already has a failed row, that row takes the new outcome (status, error, reply,
  // updated_ms) instead of a second row being added; `done` gets the row's id either way.
  void record(MessageWrite message, std::function<void(fhir::Result<std::int64_t>)> done);

  fhir::Result<std::optional<StoredMessage>> message(std::int64_t id);
  fhir::Result<std::vector<StoredMessage>> list_messages(const MessageQuery& q);
  struct MessageCounts {
    std::int64_t applied = 0, error = 0, rejected = 0, replayed = 0, filtered = 0;
  };
  fhir::Result<MessageCounts> message_counts();
  // How many applied messages are still pending (StoredMessage::pending).
  fhir::Result<std::int64_t> pending_count();

  fhir::Result<std::optional<StoredResource>> read(const std::string& type, const std::string& id);
  fhir::Result<ResourcePage> search(const ResourceQuery& q);

  // Retention (issue #4 item 6): deletes messages received before `cutoff_ms` and returns how
  // many went. Resources stay: they are the record, not the transport. The deleted text is
  // gone from disk when this returns: secure_delete zeroes it in the pages the delete writes,
  // and a TRUNCATE checkpoint then copies those pages over the database file and empties the
  // WAL, whose older frames still held it. `wal_checkpointed` false: a reader held the WAL
  // for longer than the busy timeout (5 s), so the text may remain until the next run.
  // Messages that never reached the record go too (retention is a limit), but not without a
  // trace: the counts by status and the ids of those not applied (error, or still pending) are
  // returned for the caller to audit and log. Blocks the caller (run it off the I/O threads).
  struct MessagePrune {
    std::int64_t messages = 0;
    std::int64_t applied = 0, replayed = 0, errored = 0, rejected = 0, filtered = 0;  // by status
    std::int64_t pending = 0;                // applied but still pending (StoredMessage::pending)
    std::vector<std::int64_t> unfinished;    // ids of the errored and pending ones, the first 20
    bool wal_checkpointed = false;
  };
  static constexpr std::size_t kPrunedIdsListed = 20;
  fhir::Result<MessagePrune> prune_messages_before(std::int64_t cutoff_ms);

  // Test hook: commits fail while on.
  void inject_commit_failure(bool on);
  // The writer's commits, writes and queue, for /metrics.
  sqlite::GroupWriter::Counters writer_counters() const;
  void stop();

 private:
  struct State;
  explicit Store(std::unique_ptr<State> s);
  std::unique_ptr<State> s_;
};

// SHA-256 of `bytes` (32 raw bytes).
std::string sha256(std::string_view bytes);

}  // namespace gw::store
