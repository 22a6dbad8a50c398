// SPDX-License-Identifier: Apache-2.0
#include "gateway/store/schema.h"

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

}  // namespace

const std::vector<sqlite::Migration>& schema_migrations() {
  static const std::vector<sqlite::Migration> m{
      {1, "gateway_info", kGatewayInfo},
      {2, "messages and resources", kMessagesAndResources},
      {3, "resources in a rowid table", kResourceRowid},
      {4, "pending mark of applied messages", kPendingMark},
      {5, "index of pending messages", kPendingIndex},
  };
  return m;
}

}  // namespace gw::store
