// SPDX-License-Identifier: Apache-2.0
// audit.db's schema, one numbered migration at a time (gateway/sqlite/migrations.h applies
// them). Released migrations are never edited: a change is a new migration at the end.
#include "gateway/audit/schema.h"

namespace gw::audit {
namespace {

// 1: as first released by gateway/store/databases.cpp (every file says who made it).
const char* const kGatewayInfo =
    "CREATE TABLE gateway_info (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;"
    "INSERT INTO gateway_info(key, value) VALUES ('created_at', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));"
    "INSERT INTO gateway_info(key, value) VALUES ('role', 'audit');";

// 2: the tamper-evident log (issue #6).
//  audit_record: one row per leaf; `record` is the canonical encoding that is hashed (NULL
//    once retention has pruned it: its leaf hash stays in audit_node). The other columns are
//    copies of fields inside `record`, for the IG searches; audit-verify checks they match.
//  audit_patient: the patients each record names, for "who looked at this person".
//  audit_node: every perfect subtree of the Merkle tree, level 0 being the leaf hashes.
//  audit_checkpoint: the signed notes, also appended to a file outside the database.
//  audit_alert: the IG review queue (mutable review state; the reviews themselves are audited
//    requests, so they are in the tree).
const char* const kLog = R"sql(
CREATE TABLE audit_record (
  seq      INTEGER PRIMARY KEY,
  record   BLOB,
  time_ms  INTEGER NOT NULL,
  agent    TEXT NOT NULL,
  outcome  INTEGER NOT NULL,
  subtypes TEXT NOT NULL
) STRICT;
-- One row per patient a record names (a search may disclose several).
CREATE TABLE audit_patient (
  nhs_number TEXT NOT NULL,
  seq        INTEGER NOT NULL REFERENCES audit_record(seq),
  PRIMARY KEY (nhs_number, seq)
) STRICT, WITHOUT ROWID;
CREATE INDEX audit_record_agent ON audit_record(agent, seq) WHERE agent <> '';
CREATE INDEX audit_record_time ON audit_record(time_ms);

CREATE TABLE audit_node (
  level INTEGER NOT NULL,
  idx   INTEGER NOT NULL,
  hash  BLOB NOT NULL,
  PRIMARY KEY (level, idx)
) STRICT, WITHOUT ROWID;

CREATE TABLE audit_checkpoint (
  size    INTEGER NOT NULL,
  time_ms INTEGER NOT NULL,
  root    BLOB NOT NULL,
  note    TEXT NOT NULL,
  PRIMARY KEY (size, time_ms)
) STRICT;

CREATE TABLE audit_alert (
  id             INTEGER PRIMARY KEY,
  seq            INTEGER NOT NULL,
  rule           TEXT NOT NULL,
  detail         TEXT NOT NULL,
  raised_ms      INTEGER NOT NULL,
  status         TEXT NOT NULL CHECK (status IN ('open', 'reviewed')),
  reviewer       TEXT NOT NULL DEFAULT '',
  review_outcome TEXT NOT NULL DEFAULT '',
  review_note    TEXT NOT NULL DEFAULT '',
  reviewed_ms    INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX audit_alert_status ON audit_alert(status, id);

CREATE TABLE audit_flagged_patient (
  nhs_number TEXT PRIMARY KEY,
  reason     TEXT NOT NULL,
  flagged_by TEXT NOT NULL,
  flagged_ms INTEGER NOT NULL
) STRICT;

CREATE TABLE audit_forward_cursor (
  name TEXT PRIMARY KEY,
  seq  INTEGER NOT NULL
) STRICT;
)sql";

}  // namespace

const std::vector<sqlite::Migration>& migrations() {
  static const std::vector<sqlite::Migration> m{{1, "gateway_info", kGatewayInfo}, {2, "audit_log", kLog}};
  return m;
}

}  // namespace gw::audit
