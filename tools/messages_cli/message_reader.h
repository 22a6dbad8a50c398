// SPDX-License-Identifier: Apache-2.0
// Read-only access to the `message` table of a gateway's store.db (gateway/store/schema.cpp)
// for gw-messages. Opens the file read-only, so it is safe while the gateway runs (WAL): it
// never writes, never migrates and holds no transaction between calls.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "fhir/result.h"
#include "gateway/sqlite/database.h"

namespace gw::messages_cli {

struct MessageRow {
  std::int64_t id = 0;
  std::string source;
  std::string kind;            // "ADT^A01"
  std::string dedupe_key;      // MSH-3|MSH-4|MSH-10 for HL7 v2
  std::string content_sha256;  // lower-case hex
  std::int64_t received_ms = 0;
  std::int64_t updated_ms = 0;
  std::string status;  // applied, error, rejected, replayed
  std::string error;
  std::string error_location;
  std::string patient_id;
  // An applied unit whose data is committed but whose acknowledgement may not have been sent
  // (its audit record was not confirmed when the mark was last looked at: the gateway clears
  // the marks it can at start-up): a resend by the sender, or a replay, completes it.
  // docs/hl7v2.md.
  bool pending = false;
  std::string reply;  // the ACK(s) sent; filled by get() only
  std::string raw;    // the message bytes as received; filled by get() only
  // MSH-10 as recorded in the dedupe key (the part after the second '|').
  std::string control_id() const;
};

struct ListQuery {
  std::vector<std::string> statuses;  // any of these; empty: every status
  std::string source;                 // empty: every source
  std::int64_t after_id = 0;          // ids greater than this, ascending
  std::size_t limit = 100;
  bool pending_only = false;          // only applied messages still pending
};

struct MessageStats {
  std::int64_t total = 0;
  std::map<std::string, std::int64_t> by_status;
  std::map<std::string, std::map<std::string, std::int64_t>> by_source;  // source -> status -> count
  std::optional<std::int64_t> oldest_received_ms, newest_received_ms;
  std::int64_t pending = 0;  // applied messages still pending (MessageRow::pending)
};

class MessageReader {
 public:
  // Opens <data_dir>/store.db read-only. Failures: not_found when there is no such file (the
  // text asks whether --data names the gateway's data directory); not_ready when it cannot be
  // opened or holds no message table.
  static fhir::Result<MessageReader> open(const std::string& data_dir);

  // Rows (without reply and raw) matching `q`, ascending by id.
  fhir::Result<std::vector<MessageRow>> list(const ListQuery& q);
  // One row with its reply and raw bytes; nullopt when there is no such id.
  fhir::Result<std::optional<MessageRow>> get(std::int64_t id);
  fhir::Result<MessageStats> stats();

 private:
  MessageReader(sqlite::Database db, bool has_pending) : db_(std::move(db)), has_pending_(has_pending) {}
  std::string columns() const;
  sqlite::Database db_;
  bool has_pending_;  // a store.db from before migration 4 has no pending column
};

// Statuses a user may name: the four stored ones, "failed" (error and rejected) and "pending"
// (applied, still pending: ListQuery::pending_only as well). Empty when `name` is none of them.
std::vector<std::string> expand_status(const std::string& name);

// A Unix time in ms as "2026-11-23T10:15:00.123Z" (iso) or "2026-11-23 10:15:00".
std::string utc_time(std::int64_t ms, bool iso);

}  // namespace gw::messages_cli
