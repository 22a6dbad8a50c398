// SPDX-License-Identifier: Apache-2.0
#include "gateway/store/schema.h"

#include <optional>

#include "fhir/json.h"
#include "gateway/store/store.h"

namespace gw::store {
namespace {

const char* const kGatewayInfo =
    "CREATE TABLE gateway_info (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;"
    "INSERT INTO gateway_info(key, value) VALUES ('created_at', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));"
    "INSERT INTO gateway_info(key, value) VALUES ('role', 'store');";

// Every inbound unit, kept raw with its status (issue #4 item 6). dedupe_key + content_sha256
// find resends; `reply` is the answer sent, given again to a resend. Rows of an errored unit
// become 'replayed' once the same unit is applied.
const char* const kMessagesAndResources = R"sql(
CREATE TABLE message (
  id INTEGER PRIMARY KEY,
  source TEXT NOT NULL,
  kind TEXT NOT NULL,
  dedupe_key TEXT NOT NULL,
  content_sha256 BLOB NOT NULL,
  received_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('applied', 'error', 'rejected', 'replayed')),
  error TEXT NOT NULL DEFAULT '',
  error_location TEXT NOT NULL DEFAULT '',
  reply BLOB NOT NULL DEFAULT X'',
  patient_id TEXT NOT NULL DEFAULT '',
  raw BLOB NOT NULL
) STRICT;
-- Resend and reused-key checks: (source, key, status) so the planner never falls back to
-- message_status and scans every applied message.
CREATE INDEX message_key ON message(source, dedupe_key, status);
-- A unit is applied at most once, whatever races reach the writer.
CREATE UNIQUE INDEX message_applied_once ON message(source, dedupe_key, content_sha256)
  WHERE status = 'applied' AND dedupe_key <> '';
CREATE INDEX message_status ON message(status, id);
CREATE INDEX message_received ON message(received_ms);

CREATE TABLE resource (
  type TEXT NOT NULL,
  id TEXT NOT NULL,
  patient_id TEXT NOT NULL,
  source TEXT NOT NULL,
  version INTEGER NOT NULL,
  last_updated_ms INTEGER NOT NULL,
  date_begin INTEGER,
  date_end INTEGER,
  message_id INTEGER NOT NULL,
  json BLOB NOT NULL,
  PRIMARY KEY (type, id)
) STRICT, WITHOUT ROWID;
CREATE INDEX resource_patient ON resource(patient_id, type, date_begin);

CREATE TABLE resource_code (
  type TEXT NOT NULL,
  id TEXT NOT NULL,
  system TEXT NOT NULL,
  code TEXT NOT NULL,
  PRIMARY KEY (type, id, system, code)
) STRICT, WITHOUT ROWID;
CREATE INDEX resource_code_lookup ON resource_code(code, system, type);
)sql";

// Resources move to a rowid table. In a WITHOUT ROWID table a row longer than about 1,000
// bytes (most FHIR resources) spills into an overflow page of its own: 4.5 KiB on disk per
// 1 KiB resource, and two pages written per resource per commit. A rowid table keeps rows up
// to about 4 KiB on their leaf page and appends new ones; (type, id) stays unique.
const char* const kResourceRowid = R"sql(
CREATE TABLE resource_v3 (
  rid INTEGER PRIMARY KEY,
  type TEXT NOT NULL,
  id TEXT NOT NULL,
  patient_id TEXT NOT NULL,
  source TEXT NOT NULL,
  version INTEGER NOT NULL,
  last_updated_ms INTEGER NOT NULL,
  date_begin INTEGER,
  date_end INTEGER,
  message_id INTEGER NOT NULL,
  json BLOB NOT NULL,
  UNIQUE (type, id)
) STRICT;
INSERT INTO resource_v3(type, id, patient_id, source, version, last_updated_ms, date_begin, date_end, message_id, json)
  SELECT type, id, patient_id, source, version, last_updated_ms, date_begin, date_end, message_id, json
  FROM resource ORDER BY last_updated_ms, type, id;
DROP TABLE resource;
ALTER TABLE resource_v3 RENAME TO resource;
CREATE INDEX resource_patient ON resource(patient_id, type, date_begin);
)sql";

// An applied unit whose audit record is not yet known to be committed (the three database
// files commit one after the other): 1 from its apply until the ingest path has written its
// ingest-applied record, so a unit answered "resend" after its data was committed is found
// and completed by the resend rather than taken for a duplicate (docs/hl7v2.md "When a
// database cannot commit"). A constant default: no rewrite of existing rows.
const char* const kPendingMark = "ALTER TABLE message ADD COLUMN pending INTEGER NOT NULL DEFAULT 0;";

// The pending rows, found at start-up (settled against audit.db) and by gw-messages without
// reading every row: the mark is the table's last column, after the raw bytes. Few rows.
const char* const kPendingIndex = "CREATE INDEX message_pending ON message(id) WHERE pending = 1;";

// The clinical dates again, by date_index (the R4 `date` of each type): before, an
// Observation or DiagnosticReport without effective[x] was dated by `issued`, and a Period
// without a start by its end alone. Only rows of a type with a `date`, or dated already, can
// differ. In batches by rowid, each read to its end before its rows are written. It dates
// by today's date_index: a later change to what is dated needs a migration of its own that
// runs this again, as put_resource would date every record written afresh.
fhir::Status redate_resources(sqlite::Database& db) {
  struct Change {
    std::int64_t rid;
    std::optional<fhir::DateRange> date;
  };
  std::int64_t after = 0;
  for (;;) {
    std::vector<Change> changes;
    std::int64_t last = after;
    {
      auto rows = db.cached(
          "SELECT rid, json, date_begin, date_end FROM resource WHERE rid > ? AND (type IN ('Encounter', "
          "'Observation', 'DiagnosticReport') OR date_begin IS NOT NULL) ORDER BY rid LIMIT 1000");
      if (!rows) return std::move(rows).issue();
      rows->bind(1, after);
      for (;;) {
        auto row = rows->step();
        if (!row) return std::move(row).issue();
        if (!*row) break;
        last = rows->column_int64(0);
        auto json = fhir::parse_json(rows->column_blob(1));
        if (!json) continue;  // written by the gateway; one that no longer parses keeps its date
        std::optional<fhir::DateRange> was;
        if (!rows->column_is_null(2)) was = fhir::DateRange{rows->column_int64(2), rows->column_int64(3)};
        if (auto now = date_index(*json); now != was) changes.push_back({last, now});
      }
    }
    if (last == after) return fhir::Ok{};
    for (const Change& c : changes) {
      auto put = db.cached("UPDATE resource SET date_begin = ?, date_end = ? WHERE rid = ?");
      if (!put) return std::move(put).issue();
      if (c.date) put->bind(1, c.date->begin).bind(2, c.date->end);
      else put->bind_null(1).bind_null(2);
      put->bind(3, c.rid);
      if (auto s = put->run(); !s) return s;
    }
    after = last;
  }
}

// Status 'filtered' (hl7v2 setting unmapped = "filter"): a CHECK constraint cannot be altered
// in place, so the message table is rebuilt with the same columns, in the same order, and
// its indexes made again. Every row is copied once, at the first start of this version.
const char* const kFilteredStatus = R"sql(
CREATE TABLE message_v7 (
  id INTEGER PRIMARY KEY,
  source TEXT NOT NULL,
  kind TEXT NOT NULL,
  dedupe_key TEXT NOT NULL,
  content_sha256 BLOB NOT NULL,
  received_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('applied', 'error', 'rejected', 'replayed', 'filtered')),
  error TEXT NOT NULL DEFAULT '',
  error_location TEXT NOT NULL DEFAULT '',
  reply BLOB NOT NULL DEFAULT X'',
  patient_id TEXT NOT NULL DEFAULT '',
  raw BLOB NOT NULL,
  pending INTEGER NOT NULL DEFAULT 0
) STRICT;
INSERT INTO message_v7(id, source, kind, dedupe_key, content_sha256, received_ms, updated_ms, status, error,
                       error_location, reply, patient_id, raw, pending)
  SELECT id, source, kind, dedupe_key, content_sha256, received_ms, updated_ms, status, error, error_location,
         reply, patient_id, raw, pending
  FROM message ORDER BY id;
DROP TABLE message;
ALTER TABLE message_v7 RENAME TO message;
CREATE INDEX message_key ON message(source, dedupe_key, status);
CREATE UNIQUE INDEX message_applied_once ON message(source, dedupe_key, content_sha256)
  WHERE status = 'applied' AND dedupe_key <> '';
CREATE INDEX message_status ON message(status, id);
CREATE INDEX message_received ON message(received_ms);
CREATE INDEX message_pending ON message(id) WHERE pending = 1;
)sql";

}  // namespace

const std::vector<sqlite::Migration>& schema_migrations() {
  static const std::vector<sqlite::Migration> m{
      {1, "gateway_info", kGatewayInfo},
      {2, "messages and resources", kMessagesAndResources},
      {3, "resources in a rowid table", kResourceRowid},
      {4, "pending mark of applied messages", kPendingMark},
      {5, "index of pending messages", kPendingIndex},
      {6, "clinical dates as R4 search defines them", "", redate_resources},
      {7, "status filtered for messages", kFilteredStatus},
  };
  return m;
}

}  // namespace gw::store
