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

// 3: the tree nodes in the order they are completed (issue #6, write cost). audit_node was
//  keyed (level, idx), so each commit of a dozen records touched the growing end of every
//  level's key range, a dozen b-tree pages, each a 4 KiB WAL frame. audit_tree is keyed by
//  tree_pos() (schema.h): a commit appends its nodes at one place. audit_node stays as a view
//  with the same columns, writable through its triggers, for sqlite3 users and tools; the
//  gateway and the verifier read audit_tree by key. Rows no tree of under 2^56 leaves can hold
//  are not carried over (they cannot be a node of this log; the verifier rebuilds the tree
//  from the leaf hashes and checks it against the checkpoints either way).
const char* const kTreeOrder = R"sql(
CREATE TABLE audit_tree (
  pos  INTEGER PRIMARY KEY,
  hash BLOB NOT NULL
) STRICT;
INSERT INTO audit_tree(pos, hash)
  SELECT ((idx + 1) << level) * 64 + level, hash FROM audit_node
  WHERE level BETWEEN 0 AND 56 AND abs(idx + 1) < (1 << (56 - level));
DROP TABLE audit_node;
CREATE VIEW audit_node(level, idx, hash) AS
  SELECT pos & 63, ((pos >> 6) >> (pos & 63)) - 1, hash FROM audit_tree;
CREATE TRIGGER audit_node_insert INSTEAD OF INSERT ON audit_node BEGIN
  SELECT RAISE(ABORT, 'audit_node level must be 0..63') WHERE NEW.level NOT BETWEEN 0 AND 63;
  INSERT INTO audit_tree(pos, hash) VALUES (((NEW.idx + 1) << NEW.level) * 64 + NEW.level, NEW.hash);
END;
CREATE TRIGGER audit_node_update INSTEAD OF UPDATE ON audit_node BEGIN
  SELECT RAISE(ABORT, 'audit_node level must be 0..63') WHERE NEW.level NOT BETWEEN 0 AND 63;
  UPDATE audit_tree SET pos = ((NEW.idx + 1) << NEW.level) * 64 + NEW.level, hash = NEW.hash
  WHERE pos = ((OLD.idx + 1) << OLD.level) * 64 + OLD.level;
END;
CREATE TRIGGER audit_node_delete INSTEAD OF DELETE ON audit_node BEGIN
  DELETE FROM audit_tree WHERE pos = ((OLD.idx + 1) << OLD.level) * 64 + OLD.level;
END;
)sql";

// 4: the patient index rebuilt for its write cost (issue #6). Each record's row went straight
//  into one (nhs_number, seq) b-tree: a random leaf page per record, a 4 KiB WAL frame per
//  record in every commit, and as many random pages per batch as patients in it.
//  - audit_patient_recent takes new rows in append order (rowid), in the record's own
//    transaction; the writer moves the oldest into audit_patient_index, sorted, in batches
//    of their own (LogOptions::index_merge_rows). A row is in exactly one of the two.
//  - audit_patient_index is keyed (epoch, nhs_number, seq), epoch = seq >> 16: a batch lands
//    in the current epoch's key range, a few hundred leaf pages at most, however many
//    patients the log has seen. A search by patient probes each epoch (one per 65,536
//    records).
//  audit_patient stays as a view of both halves with its old columns, writable through its
//  triggers, for sqlite3 users, tools and the verifier.
const char* const kPatientIndex = R"sql(
CREATE TABLE audit_patient_index (
  epoch      INTEGER NOT NULL,
  nhs_number TEXT NOT NULL,
  seq        INTEGER NOT NULL,
  PRIMARY KEY (epoch, nhs_number, seq)
) STRICT, WITHOUT ROWID;
INSERT INTO audit_patient_index(epoch, nhs_number, seq)
  SELECT seq >> 16, nhs_number, seq FROM audit_patient ORDER BY seq >> 16, nhs_number, seq;
DROP TABLE audit_patient;
CREATE TABLE audit_patient_recent (
  nhs_number TEXT NOT NULL,
  seq        INTEGER NOT NULL
) STRICT;
CREATE VIEW audit_patient(nhs_number, seq) AS
  SELECT nhs_number, seq FROM audit_patient_index
  UNION ALL
  SELECT nhs_number, seq FROM audit_patient_recent;
CREATE TRIGGER audit_patient_insert INSTEAD OF INSERT ON audit_patient BEGIN
  INSERT INTO audit_patient_recent(nhs_number, seq) VALUES (NEW.nhs_number, NEW.seq);
END;
CREATE TRIGGER audit_patient_update INSTEAD OF UPDATE ON audit_patient BEGIN
  UPDATE audit_patient_index SET epoch = NEW.seq >> 16, nhs_number = NEW.nhs_number, seq = NEW.seq
  WHERE epoch = OLD.seq >> 16 AND nhs_number = OLD.nhs_number AND seq = OLD.seq;
  UPDATE audit_patient_recent SET nhs_number = NEW.nhs_number, seq = NEW.seq
  WHERE nhs_number = OLD.nhs_number AND seq = OLD.seq;
END;
CREATE TRIGGER audit_patient_delete INSTEAD OF DELETE ON audit_patient BEGIN
  DELETE FROM audit_patient_index WHERE epoch = OLD.seq >> 16 AND nhs_number = OLD.nhs_number AND seq = OLD.seq;
  DELETE FROM audit_patient_recent WHERE nhs_number = OLD.nhs_number AND seq = OLD.seq;
END;
)sql";

// 5: audit_record's agent and time indexes leave the commit path as the patient index did in
//  migration 4 (issue #6, write cost): each commit rewrote the right-hand edge of both, 3.4 of
//  its 12 WAL frames. audit_agent_index (keyed by epoch like the patient index) and
//  audit_time_index hold the records below audit_index_state's 'indexed_below'; the writer
//  adds the records above it in sorted batches, and a search reads the rest of the way from
//  audit_record itself (a rowid range).
const char* const kRecordIndexes = R"sql(
DROP INDEX audit_record_agent;
DROP INDEX audit_record_time;
CREATE TABLE audit_agent_index (
  epoch INTEGER NOT NULL,
  agent TEXT NOT NULL,
  seq   INTEGER NOT NULL,
  PRIMARY KEY (epoch, agent, seq)
) STRICT, WITHOUT ROWID;
CREATE TABLE audit_time_index (
  time_ms INTEGER NOT NULL,
  seq     INTEGER NOT NULL,
  PRIMARY KEY (time_ms, seq)
) STRICT, WITHOUT ROWID;
CREATE TABLE audit_index_state (
  key   TEXT PRIMARY KEY,
  value INTEGER NOT NULL
) STRICT;
INSERT INTO audit_agent_index(epoch, agent, seq)
  SELECT seq >> 16, agent, seq FROM audit_record WHERE agent <> '' ORDER BY seq >> 16, agent, seq;
INSERT INTO audit_time_index(time_ms, seq) SELECT time_ms, seq FROM audit_record ORDER BY time_ms, seq;
INSERT INTO audit_index_state(key, value)
  VALUES ('indexed_below', (SELECT coalesce(max(seq) + 1, 0) FROM audit_record));
)sql";

// 6: the retention-prune records by seq (issue #6: GET /AuditEvent/{id} of a record whose
//  content retention removed says when). A partial index: it holds those records only, so a
//  commit pays one comparison of the subtypes column per record and writes nothing else.
const char* const kPruneIndex =
    "CREATE INDEX audit_record_prune ON audit_record(seq) WHERE subtypes = ' retention-prune ';";

}  // namespace

const std::vector<sqlite::Migration>& migrations() {
  static const std::vector<sqlite::Migration> m{
      {1, "gateway_info", kGatewayInfo}, {2, "audit_log", kLog}, {3, "audit_tree_order", kTreeOrder},
      {4, "audit_patient_index", kPatientIndex}, {5, "audit_record_indexes", kRecordIndexes},
      {6, "audit_prune_index", kPruneIndex}};
  return m;
}

}  // namespace gw::audit
