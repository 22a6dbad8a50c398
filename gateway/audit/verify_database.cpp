// SPDX-License-Identifier: Apache-2.0
// Reading audit.db for the verifier (see verify.h): the whole log into memory for small logs
// and tests, and the streaming verify_database() that feeds LogVerifier batch by batch while
// other threads decode and hash the next rows.
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <thread>
#include <unordered_map>
#include <utility>

#include "gateway/audit/schema.h"
#include "gateway/audit/verify.h"
#include "gateway/sqlite/database.h"

namespace gw::audit {

using merkle::Hash;

namespace {

constexpr std::size_t kChunkRows = 4096;  // rows per batch handed to the hashing threads
constexpr unsigned kMaxThreads = 64;
constexpr std::size_t kMaxStrayRows = 16;  // index rows without a record, listed; the rest counted

std::string num(std::uint64_t n) { return std::to_string(n); }

std::optional<Hash> hash_from_blob(const std::string& b) {
  Hash h{};
  if (b.size() != h.size()) return std::nullopt;
  std::memcpy(h.data(), b.data(), h.size());
  return h;
}

}  // namespace

namespace {

using sqlite::Database;
using sqlite::Statement;

fhir::Issue unreadable(const std::string& what) {
  return fhir::Issue::make(fhir::ErrorCode::not_ready, "audit.db could not be read: " + what);
}

constexpr const char* kRowSql = "SELECT seq, record, time_ms, agent, outcome, subtypes FROM audit_record ORDER BY seq";

StoredRow row_from(const Statement& s) {
  StoredRow r;
  r.seq = s.column_int64(0);
  if (!s.column_is_null(1)) r.record = s.column_blob(1);
  r.time_ms = s.column_int64(2);
  r.agent = s.column_text(3);
  r.outcome = s.column_int64(4);
  r.subtypes = s.column_text(5);
  return r;
}

// SQLite's own words from a wrapper diagnostic ("prepare failed: database disk image is
// malformed" -> "database disk image is malformed").
std::string sqlite_says(const std::string& diagnostics) {
  const std::size_t colon = diagnostics.find(": ");
  return colon == std::string::npos ? diagnostics : diagnostics.substr(colon + 2);
}

fhir::Issue damaged(const std::string& path, const std::string& sqlite_error) {
  return fhir::Issue::make(fhir::ErrorCode::invalid_value,
                           path + " is damaged and cannot be verified; SQLite says: " + sqlite_error +
                               ". Verify an intact copy (a backup, or the file copied with the gateway stopped, "
                               "together with its -wal file)");
}

fhir::Result<Database> open_audit_db(const std::string& path) {
  // Without a -wal file nobody is writing it (a copy, or the log of a stopped gateway): read
  // it as immutable, so that nothing is created beside it and a reader who may not write to
  // its folder (an IG officer checking a copy) can verify it. With one, the -wal holds
  // committed records that must be read too, which SQLite does through a -shm file it may
  // have to create.
  std::error_code ec;
  const bool live = std::filesystem::exists(path + "-wal", ec);
  auto db = Database::open(path, live ? Database::Mode::read_only : Database::Mode::read_only_immutable);
  if (!db) return std::move(db).issue();
  auto probe = db->prepare("SELECT seq, record FROM audit_record LIMIT 0");
  if (!probe) {
    const std::string why = sqlite_says(probe.issue().diagnostics);
    if (why.rfind("no such table", 0) == 0)
      return fhir::Issue::make(fhir::ErrorCode::invalid_value, path + " is not an audit database (no audit_record table)");
    // Not damage: SQLite could not create the -shm file it needs to read the -wal.
    if (live && (why.find("readonly") != std::string::npos || why.find("unable to open") != std::string::npos))
      return fhir::Issue::make(fhir::ErrorCode::not_ready,
                               path + " cannot be read by this user: it has a -wal file, and SQLite must create or "
                                      "write its -shm file beside it to read it (SQLite says: " + why +
                                      "). Run audit-verify as the gateway's user, or verify a copy taken with "
                                      "sqlite3 .backup (docs/operations.md)");
    return damaged(path, why);
  }
  // A cut or damaged file can still answer queries (pages past its end read as zeros), and its
  // records would then be misreported as tampering at some index. SQLite's check of the file's
  // structure (every page, not the index contents) comes first.
  auto check = db->prepare("PRAGMA quick_check(1)");
  if (!check) return damaged(path, sqlite_says(check.issue().diagnostics));
  auto row = check->step();
  if (!row) return damaged(path, sqlite_says(row.issue().diagnostics));
  if (*row && check->column_text(0) != "ok") {
    // "*** in database main ***\nOn tree page 67 cell 1: ..." on one line, without the banner.
    std::string found = check->column_text(0).substr(0, 300);
    if (const std::size_t nl = found.find('\n'); found.rfind("***", 0) == 0 && nl != std::string::npos)
      found.erase(0, nl + 1);
    std::replace(found.begin(), found.end(), '\n', ' ');
    return damaged(path, "database disk image is malformed (" + found + ")");
  }
  return std::move(*db);
}

// audit_checkpoint rows, each checked against its own note.
struct TableCheckpoints {
  std::vector<Checkpoint> checkpoints;
  std::vector<std::string> problems;
};

// Whether audit.db has table `name` (tables came with its migrations: an older file lacks some).
fhir::Result<bool> has_table(Database& db, const std::string& name) {
  auto table = db.prepare("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1");
  if (!table) return std::move(table).issue();
  table->bind(1, name);
  if (auto r = table->step(); !r) return std::move(r).issue();
  return table->column_int64(0) > 0;
}

// audit_index_state (audit.db migration 5): whether the table exists, and its indexed_below.
struct IndexState {
  bool present = false;
  std::optional<std::int64_t> indexed_below;
};

fhir::Result<IndexState> read_index_state(Database& db) {
  IndexState out;
  auto table = has_table(db, "audit_index_state");
  if (!table) return std::move(table).issue();
  out.present = *table;
  if (!out.present) return out;
  auto value = db.prepare("SELECT value FROM audit_index_state WHERE key = 'indexed_below'");
  if (!value) return std::move(value).issue();
  auto r = value->step();
  if (!r) return std::move(r).issue();
  if (*r) out.indexed_below = value->column_int64(0);
  return out;
}

// The origin audit.db keeps for its log (gateway_info 'audit_origin', written by the gateway
// when it opens the log); empty when the database predates it.
fhir::Result<std::optional<std::string>> read_origin(Database& db) {
  auto table = has_table(db, "gateway_info");
  if (!table) return std::move(table).issue();
  if (!*table) return std::optional<std::string>();
  auto value = db.prepare("SELECT value FROM gateway_info WHERE key = 'audit_origin'");
  if (!value) return std::move(value).issue();
  auto r = value->step();
  if (!r) return std::move(r).issue();
  if (!*r) return std::optional<std::string>();
  return std::optional<std::string>(value->column_text(0));
}

// audit_patient's rows as (seq, nhs_number, filed): the view hides the epoch of a row in the
// sorted half (audit_patient_index, audit.db migration 4), and a search by patient looks for a
// record's rows under its own epoch (seq >> 16) only. `filed` is 0 for a row under any other
// epoch: the searches never find it, so it counts as no row at all. A database from before
// migration 4 has audit_patient as a table, without epochs.
fhir::Result<Statement> patient_rows(Database& db) {
  auto table = has_table(db, "audit_patient_index");
  if (!table) return std::move(table).issue();
  if (!*table) return db.prepare("SELECT seq, nhs_number, 1 FROM audit_patient");
  return db.prepare(
      "SELECT seq, nhs_number, epoch = (seq >> 16) FROM audit_patient_index "
      "UNION ALL SELECT seq, nhs_number, 1 FROM audit_patient_recent");
}

// audit_alert's rows, by id.
fhir::Result<std::vector<StoredAlert>> read_alerts(Database& db) {
  std::vector<StoredAlert> out;
  auto table = has_table(db, "audit_alert");
  if (!table) return std::move(table).issue();
  if (!*table) return out;
  auto s = db.prepare(
      "SELECT id, seq, status, reviewer, review_outcome, review_note, detail FROM audit_alert ORDER BY id");
  if (!s) return std::move(s).issue();
  for (;;) {
    auto r = s->step();
    if (!r) return std::move(r).issue();
    if (!*r) break;
    out.push_back(StoredAlert{s->column_int64(0), s->column_int64(1), s->column_text(2), s->column_text(3),
                              s->column_text(4), s->column_text(5), s->column_text(6)});
  }
  return out;
}

// audit_flagged_patient's rows.
fhir::Result<std::vector<StoredFlag>> read_flags(Database& db) {
  std::vector<StoredFlag> out;
  auto table = has_table(db, "audit_flagged_patient");
  if (!table) return std::move(table).issue();
  if (!*table) return out;
  auto s = db.prepare("SELECT nhs_number, reason, flagged_by FROM audit_flagged_patient ORDER BY nhs_number");
  if (!s) return std::move(s).issue();
  for (;;) {
    auto r = s->step();
    if (!r) return std::move(r).issue();
    if (!*r) break;
    out.push_back(StoredFlag{s->column_text(0), s->column_text(1), s->column_text(2)});
  }
  return out;
}

fhir::Result<TableCheckpoints> read_checkpoint_table(Database& db) {
  TableCheckpoints out;
  auto s = db.prepare("SELECT size, time_ms, root, note FROM audit_checkpoint ORDER BY size, time_ms");
  if (!s) return std::move(s).issue();
  for (;;) {
    auto row = s->step();
    if (!row) return std::move(row).issue();
    if (!*row) break;
    const std::int64_t size = s->column_int64(0);
    auto c = parse_checkpoint(s->column_text(3));
    if (!c) {
      out.problems.push_back("audit.db holds a damaged checkpoint (size " + std::to_string(size) +
                             "): " + c.issue().diagnostics);
      continue;
    }
    const auto root = hash_from_blob(s->column_blob(2));
    if (static_cast<std::int64_t>(c->size) != size || c->time_ms != s->column_int64(1) || !root || *root != c->root)
      out.problems.push_back("audit.db's checkpoint table row for size " + std::to_string(size) +
                             " disagrees with its own signed note");
    out.checkpoints.push_back(std::move(*c));
  }
  return out;
}

}  // namespace

fhir::Result<StoredLog> read_stored_log(const std::string& audit_db_path) {
  auto db = open_audit_db(audit_db_path);
  if (!db) return std::move(db).issue();
  if (auto s = db->exec("BEGIN"); !s) return std::move(s).issue();
  StoredLog log;
  auto rows = db->prepare(kRowSql);
  if (!rows) return std::move(rows).issue();
  for (;;) {
    auto r = rows->step();
    if (!r) return std::move(r).issue();
    if (!*r) break;
    log.rows.push_back(row_from(*rows));
  }
  // In seq order, as the rows are, so that one forward walk files them.
  std::vector<std::pair<std::int64_t, std::string>> patient_rows_found;
  {
    auto pats = patient_rows(*db);
    if (!pats) return std::move(pats).issue();
    for (;;) {
      auto r = pats->step();
      if (!r) return std::move(r).issue();
      if (!*r) break;
      if (pats->column_int64(2) != 0) patient_rows_found.emplace_back(pats->column_int64(0), pats->column_text(1));
    }
  }
  std::sort(patient_rows_found.begin(), patient_rows_found.end());
  std::size_t at = 0;
  for (const auto& [seq, nhs] : patient_rows_found) {
    while (at < log.rows.size() && log.rows[at].seq < seq) ++at;
    if (at < log.rows.size() && log.rows[at].seq == seq) log.rows[at].patients.push_back(nhs);
  }
  auto state = read_index_state(*db);
  if (!state) return std::move(state).issue();
  log.has_index_state = state->present;
  log.indexed_below = state->indexed_below;
  if (state->indexed_below) {
    auto row_at = [&log](std::int64_t seq) -> StoredRow* {
      auto it = std::lower_bound(log.rows.begin(), log.rows.end(), seq,
                                 [](const StoredRow& r, std::int64_t s) { return r.seq < s; });
      return it != log.rows.end() && it->seq == seq ? &*it : nullptr;
    };
    for (StoredRow& r : log.rows) r.indexed = r.seq < *state->indexed_below;
    auto agents = db->prepare("SELECT epoch, agent, seq FROM audit_agent_index");
    if (!agents) return std::move(agents).issue();
    for (;;) {
      auto r = agents->step();
      if (!r) return std::move(r).issue();
      if (!*r) break;
      if (StoredRow* row = row_at(agents->column_int64(2)))
        row->agent_index.emplace_back(agents->column_int64(0), agents->column_text(1));
    }
    auto times = db->prepare("SELECT time_ms, seq FROM audit_time_index");
    if (!times) return std::move(times).issue();
    for (;;) {
      auto r = times->step();
      if (!r) return std::move(r).issue();
      if (!*r) break;
      if (StoredRow* row = row_at(times->column_int64(1))) row->time_index.push_back(times->column_int64(0));
    }
  }
  auto nodes = db->prepare("SELECT level, idx, hash FROM audit_node");
  if (!nodes) return std::move(nodes).issue();
  for (;;) {
    auto r = nodes->step();
    if (!r) return std::move(r).issue();
    if (!*r) break;
    auto h = hash_from_blob(nodes->column_blob(2));
    log.nodes[{static_cast<unsigned>(nodes->column_int64(0)), static_cast<std::uint64_t>(nodes->column_int64(1))}] =
        h.value_or(Hash{});
  }
  auto origin = read_origin(*db);
  if (!origin) return std::move(origin).issue();
  log.origin = std::move(*origin);
  auto alerts = read_alerts(*db);
  if (!alerts) return std::move(alerts).issue();
  log.alerts = std::move(*alerts);
  auto flags = read_flags(*db);
  if (!flags) return std::move(flags).issue();
  log.flags = std::move(*flags);
  auto notes = db->prepare("SELECT note FROM audit_checkpoint ORDER BY size, time_ms");
  if (!notes) return std::move(notes).issue();
  for (;;) {
    auto r = notes->step();
    if (!r) return std::move(r).issue();
    if (!*r) break;
    log.checkpoint_notes.push_back(notes->column_text(0));
  }
  (void)db->exec("ROLLBACK");
  return log;
}

VerifyReport verify_log(const StoredLog& log, const VerifyOptions& options) {
  std::vector<Checkpoint> table;
  std::vector<std::string> bad_notes;
  for (const auto& text : log.checkpoint_notes) {
    auto c = parse_checkpoint(text);
    if (c) table.push_back(std::move(*c));
    else bad_notes.push_back("audit.db holds a damaged checkpoint: " + c.issue().diagnostics);
  }
  const auto* nodes = &log.nodes;
  LogVerifier v(options, std::move(table), [nodes](unsigned level, std::uint64_t index) -> std::optional<Hash> {
    auto it = nodes->find({level, index});
    if (it == nodes->end()) return std::nullopt;
    return it->second;
  }, log.origin);
  for (auto& text : bad_notes) v.add_problem(std::nullopt, "bad-checkpoint", std::move(text));

  std::vector<RowCheck> checks;
  checks.reserve(log.rows.size());
  for (const auto& row : log.rows) checks.push_back(check_row(row));

  auto leaf_it = log.nodes.lower_bound({0, 0});
  std::size_t i = 0;
  for (; i < log.rows.size() && log.rows[i].seq < 0; ++i)
    v.add_problem(0, "inserted", "audit.db holds a row with a negative sequence number");
  while (!v.settled()) {
    const bool have_row = i < log.rows.size();
    const bool have_leaf = leaf_it != log.nodes.end() && leaf_it->first.first == 0;
    if (!have_row && !have_leaf) break;
    const std::uint64_t row_index = have_row ? static_cast<std::uint64_t>(log.rows[i].seq) : UINT64_MAX;
    const std::uint64_t leaf_index = have_leaf ? leaf_it->first.second : UINT64_MAX;
    const std::uint64_t index = std::min(row_index, leaf_index);
    std::optional<Hash> leaf;
    if (leaf_index == index) leaf = (leaf_it++)->second;
    if (row_index == index) {
      v.add(index, &log.rows[i], &checks[i], leaf);
      ++i;
    } else {
      v.add(index, nullptr, nullptr, leaf);
    }
  }
  if (log.has_index_state) v.check_index_state(log.indexed_below);
  v.check_alerts(log.alerts);
  v.check_flags(log.flags);
  return v.finish();
}

// ---------------------------------------------------------------------------------------------
// Streaming over audit.db.

namespace {

// Stored nodes above the leaves (audit_tree, levels >= 1) for LogVerifier's lookups. It asks for
// them as its tree completes them, which is audit_tree's key order (tree_pos), so one forward
// scan answers them; a lookup behind the scan (none are expected) is answered by key. A file
// from before migration 3 (audit-verify opens files read-only, so never migrates them) has the
// table audit_node keyed (level, idx): the same scan then sorts it by tree_pos first.
struct NodeCursors {
  NodeCursors(Database* d, bool l) : db(d), legacy(l) {}
  Database* db;
  bool legacy;  // audit_node is a table, not a view over audit_tree
  std::optional<Statement> scan, point;
  bool done = false;
  bool has = false;
  std::int64_t pos = 0;  // the scan's current row
  Hash hash{};
  std::string error;

  std::optional<Hash> lookup(unsigned level, std::uint64_t index) {
    // No tree of under 2^56 leaves has such a node, and tree_pos() would overflow.
    if (level > 56 || index >= (std::uint64_t{1} << (56 - level))) return std::nullopt;
    const std::int64_t target = tree_pos(level, static_cast<std::int64_t>(index));
    if (!scan && !done) {
      auto s = db->prepare(legacy ? "SELECT ((idx + 1) << level) * 64 + level AS pos, hash FROM audit_node "
                                    "WHERE level BETWEEN 1 AND 56 AND abs(idx + 1) < (1 << (56 - level)) ORDER BY pos"
                                  : "SELECT pos, hash FROM audit_tree WHERE (pos & 63) <> 0 ORDER BY pos");
      if (!s) {
        error = s.issue().diagnostics;
        done = true;
        return std::nullopt;
      }
      scan.emplace(std::move(*s));
    }
    if (done || (has && target < pos)) return by_key(level, index);
    while (!done && (!has || pos < target)) {
      auto r = scan->step();
      if (!r) {
        error = r.issue().diagnostics;
        done = true;
        return std::nullopt;
      }
      if (!*r) {
        done = true;
        has = false;
        return std::nullopt;  // the scan is past every row, so past `target` too
      }
      has = true;
      pos = scan->column_int64(0);
      hash = hash_from_blob(scan->column_blob(1)).value_or(Hash{});
    }
    if (has && pos == target) return hash;
    return std::nullopt;
  }

  std::optional<Hash> by_key(unsigned level, std::uint64_t index) {
    if (!point) {
      auto s = db->prepare(legacy ? "SELECT hash FROM audit_node WHERE level = ?2 AND idx = ?3"
                                  : "SELECT hash FROM audit_tree WHERE pos = ?1");
      if (!s) {
        if (error.empty()) error = s.issue().diagnostics;
        return std::nullopt;
      }
      point.emplace(std::move(*s));
    }
    point->reset();
    if (legacy) point->bind(2, static_cast<std::int64_t>(level)).bind(3, static_cast<std::int64_t>(index));
    else point->bind(1, tree_pos(level, static_cast<std::int64_t>(index)));
    auto r = point->step();
    if (!r) {
      if (error.empty()) error = r.issue().diagnostics;
      return std::nullopt;
    }
    if (!*r) return std::nullopt;
    return hash_from_blob(point->column_blob(0)).value_or(Hash{});
  }
};

// The agent and time index rows (audit.db migration 5), read in their own key order before the
// records stream by. A record has at most one row in each, kept compactly by seq (when its
// epoch is right); anything else (a second row, a wrong epoch, a seq beyond the records' range)
// is kept exactly in `extra`. SlotReader hands each record its rows; what is left names
// records audit.db does not hold.
class IndexRows {
 public:
  explicit IndexRows(std::size_t seqs) : agent_(seqs, kNoAgent), time_(seqs, 0), has_time_(seqs, false) {}

  std::uint64_t negative = 0;  // rows naming a negative seq

  void add_agent(std::int64_t epoch, std::string name, std::int64_t seq) {
    if (seq < 0) {
      ++negative;
      return;
    }
    const auto s = static_cast<std::uint64_t>(seq);
    if (s < agent_.size() && agent_[s] == kNoAgent && epoch == (seq >> 16) && agents_.size() < kNoAgent) {
      auto [it, added] = agent_ids_.try_emplace(std::move(name), static_cast<std::uint32_t>(agents_.size()));
      if (added) agents_.push_back(it->first);
      agent_[s] = it->second;
      return;
    }
    extra_[s].agent.emplace_back(epoch, std::move(name));
  }
  void add_time(std::int64_t time_ms, std::int64_t seq) {
    if (seq < 0) {
      ++negative;
      return;
    }
    const auto s = static_cast<std::uint64_t>(seq);
    if (s < time_.size() && !has_time_[s]) {
      time_[s] = time_ms;
      has_time_[s] = true;
      return;
    }
    extra_[s].time.push_back(time_ms);
  }
  // Moves the rows naming `seq` into `row`.
  void take(std::uint64_t seq, StoredRow& row) {
    if (seq < agent_.size() && agent_[seq] != kNoAgent) {
      row.agent_index.emplace_back(static_cast<std::int64_t>(seq >> 16), agents_[agent_[seq]]);
      agent_[seq] = kNoAgent;
    }
    if (seq < time_.size() && has_time_[seq]) {
      row.time_index.push_back(time_[seq]);
      has_time_[seq] = false;
    }
    if (extra_.empty()) return;
    if (auto it = extra_.find(seq); it != extra_.end()) {
      for (auto& a : it->second.agent) row.agent_index.push_back(std::move(a));
      for (auto t : it->second.time) row.time_index.push_back(t);
      extra_.erase(it);
    }
  }
  // The seqs with rows nobody took, ascending.
  std::vector<std::uint64_t> left() const {
    std::vector<std::uint64_t> out;
    for (std::uint64_t s = 0; s < agent_.size(); ++s)
      if (agent_[s] != kNoAgent || has_time_[s]) out.push_back(s);
    for (const auto& [s, e] : extra_) out.push_back(s);
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
  }

 private:
  static constexpr std::uint32_t kNoAgent = UINT32_MAX;
  struct Extra {
    std::vector<std::pair<std::int64_t, std::string>> agent;
    std::vector<std::int64_t> time;
  };
  std::vector<std::uint32_t> agent_;  // per seq: into agents_, or kNoAgent
  std::vector<std::string> agents_;   // the distinct agents
  std::unordered_map<std::string, std::uint32_t> agent_ids_;
  std::vector<std::int64_t> time_;    // per seq, where has_time_
  std::vector<bool> has_time_;
  std::unordered_map<std::uint64_t, Extra> extra_;
};

// Merges audit_record and the level-0 nodes into batches of leaf indexes.
class SlotReader {
 public:
  struct Slot {
    std::uint64_t index;
    std::int64_t row;  // into Batch::rows, or -1
    std::optional<Hash> leaf;
  };
  struct Batch {
    std::vector<StoredRow> rows;
    std::vector<RowCheck> checks;
    std::vector<Slot> slots;
  };

  // `leaves` yields (pos, hash) from audit_tree, or (idx, hash) from a legacy audit_node.
  // `index`: the agent and time index rows, and `indexed_below`, audit_index_state's value
  // (both empty before audit.db migration 5).
  SlotReader(Statement rows, Statement leaves, bool legacy, std::vector<std::uint64_t>* digests,
             std::unordered_map<std::uint64_t, std::uint64_t>* far_digests, IndexRows* index,
             std::optional<std::int64_t> indexed_below)
      : rows_(std::move(rows)), leaves_(std::move(leaves)), legacy_(legacy), digests_(digests),
        far_digests_(far_digests), index_(index), indexed_below_(indexed_below) {}

  std::uint64_t negative_rows = 0;

  fhir::Status fill(Batch& b) {
    b.rows.clear();
    b.slots.clear();
    while (b.slots.size() < kChunkRows) {
      if (auto s = peek_row(); !s) return s;
      if (auto s = peek_leaf(); !s) return s;
      if (!row_ && !leaf_) break;
      const std::uint64_t ri = row_ ? static_cast<std::uint64_t>(row_->seq) : UINT64_MAX;
      const std::uint64_t li = leaf_ ? leaf_->first : UINT64_MAX;
      Slot slot{std::min(ri, li), -1, std::nullopt};
      if (li == slot.index) {
        slot.leaf = leaf_->second;
        leaf_.reset();
      }
      if (ri == slot.index) {
        const std::uint64_t seq = slot.index;
        if (seq < digests_->size()) {
          row_->patients_digest = std::exchange((*digests_)[seq], 0);
        } else if (auto it = far_digests_->find(seq); it != far_digests_->end()) {
          row_->patients_digest = std::exchange(it->second, 0);
        } else {
          row_->patients_digest = 0;
        }
        if (index_) {
          row_->indexed = indexed_below_ && row_->seq < *indexed_below_;
          index_->take(seq, *row_);
        }
        slot.row = static_cast<std::int64_t>(b.rows.size());
        b.rows.push_back(std::move(*row_));
        row_.reset();
      }
      b.slots.push_back(std::move(slot));
    }
    return fhir::Ok{};
  }

 private:
  fhir::Status peek_row() {
    while (!row_ && !rows_done_) {
      auto r = rows_.step();
      if (!r) return std::move(r).issue();
      if (!*r) {
        rows_done_ = true;
        break;
      }
      StoredRow row = row_from(rows_);
      if (row.seq < 0) {
        ++negative_rows;
        continue;
      }
      row_ = std::move(row);
    }
    return fhir::Ok{};
  }
  fhir::Status peek_leaf() {
    while (!leaf_ && !leaves_done_) {
      auto r = leaves_.step();
      if (!r) return std::move(r).issue();
      if (!*r) {
        leaves_done_ = true;
        break;
      }
      // Level 0 of audit_tree: pos = (idx + 1) * 64.
      const std::int64_t idx = legacy_ ? leaves_.column_int64(0) : (leaves_.column_int64(0) >> 6) - 1;
      if (idx < 0) continue;
      leaf_.emplace(static_cast<std::uint64_t>(idx), hash_from_blob(leaves_.column_blob(1)).value_or(Hash{}));
    }
    return fhir::Ok{};
  }

  Statement rows_, leaves_;
  bool legacy_;
  std::vector<std::uint64_t>* digests_;
  std::unordered_map<std::uint64_t, std::uint64_t>* far_digests_;
  IndexRows* index_;
  std::optional<std::int64_t> indexed_below_;
  std::optional<StoredRow> row_;
  std::optional<std::pair<std::uint64_t, Hash>> leaf_;
  bool rows_done_ = false, leaves_done_ = false;
};

// Runs check_row over a batch's rows on `threads` threads; join() (or the destructor) waits.
class Checkers {
 public:
  explicit Checkers(unsigned threads) : threads_(threads) {}
  ~Checkers() { join(); }
  Checkers(const Checkers&) = delete;
  Checkers& operator=(const Checkers&) = delete;

  void start(SlotReader::Batch& b) {
    b.checks.assign(b.rows.size(), RowCheck{});
    for (unsigned t = 0; t < threads_; ++t)
      pool_.emplace_back([&b, t, n = threads_] {
        for (std::size_t i = t; i < b.rows.size(); i += n) b.checks[i] = check_row(b.rows[i]);
      });
  }
  void join() {
    for (auto& th : pool_) th.join();
    pool_.clear();
  }

 private:
  unsigned threads_;
  std::vector<std::thread> pool_;
};

fhir::Result<std::int64_t> scalar(Database& db, const char* sql) {
  auto s = db.prepare(sql);
  if (!s) return std::move(s).issue();
  auto r = s->step();
  if (!r) return std::move(r).issue();
  return s->column_int64(0);
}

}  // namespace

fhir::Result<VerifyReport> verify_database(const std::string& audit_db_path, const VerifyOptions& options) {
  auto opened = open_audit_db(audit_db_path);
  if (!opened) return std::move(opened).issue();
  Database& db = *opened;
  // One read transaction: every statement below sees the same snapshot, even while the gateway
  // keeps appending.
  if (auto s = db.exec("BEGIN"); !s) return unreadable(s.issue().diagnostics);

  auto row_count = scalar(db, "SELECT count(*) FROM audit_record");
  if (!row_count) return unreadable(row_count.issue().diagnostics);
  auto table = read_checkpoint_table(db);
  if (!table) return unreadable(table.issue().diagnostics);

  // audit_patient in its own order, folded into one digest per record (bounded memory). The
  // reader takes each record's digest out; what is left names records audit.db does not hold.
  const std::uint64_t rows_total = static_cast<std::uint64_t>(std::max<std::int64_t>(*row_count, 0));
  std::vector<std::uint64_t> digests(rows_total + 1024, 0);
  std::unordered_map<std::uint64_t, std::uint64_t> far_digests;  // seq beyond the rows' range
  std::uint64_t negative_patient_rows = 0;
  {
    auto pats = patient_rows(db);
    if (!pats) return unreadable(pats.issue().diagnostics);
    for (;;) {
      auto r = pats->step();
      if (!r) return unreadable(r.issue().diagnostics);
      if (!*r) break;
      if (pats->column_int64(2) == 0) continue;  // filed where no search looks: as good as deleted
      const std::int64_t seq = pats->column_int64(0);
      if (seq < 0) {
        ++negative_patient_rows;
        continue;
      }
      const auto useq = static_cast<std::uint64_t>(seq);
      const std::uint64_t d = patient_digest(std::string_view(pats->column_text(1)));
      if (useq < digests.size()) digests[useq] ^= d;
      else far_digests[useq] ^= d;
    }
  }

  // The agent and time indexes (migration 5), read likewise before the records.
  auto state = read_index_state(db);
  if (!state) return unreadable(state.issue().diagnostics);
  // Without indexed_below nothing says which records the indexes should hold: only its
  // absence is reported (check_index_state).
  std::optional<IndexRows> index;
  if (state->present && state->indexed_below) {
    index.emplace(digests.size());
    auto agents = db.prepare("SELECT epoch, agent, seq FROM audit_agent_index");
    if (!agents) return unreadable(agents.issue().diagnostics);
    for (;;) {
      auto r = agents->step();
      if (!r) return unreadable(r.issue().diagnostics);
      if (!*r) break;
      index->add_agent(agents->column_int64(0), agents->column_text(1), agents->column_int64(2));
    }
    auto times = db.prepare("SELECT time_ms, seq FROM audit_time_index");
    if (!times) return unreadable(times.issue().diagnostics);
    for (;;) {
      auto r = times->step();
      if (!r) return unreadable(r.issue().diagnostics);
      if (!*r) break;
      index->add_time(times->column_int64(0), times->column_int64(1));
    }
  }

  // Migration 3 replaced the table audit_node with audit_tree (and a view of the old name).
  auto tree_table = scalar(db, "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'audit_tree'");
  if (!tree_table) return unreadable(tree_table.issue().diagnostics);
  const bool legacy = *tree_table == 0;
  NodeCursors cursors(&db, legacy);
  auto origin = read_origin(db);
  if (!origin) return unreadable(origin.issue().diagnostics);
  LogVerifier verifier(options, std::move(table->checkpoints),
                       [&cursors](unsigned level, std::uint64_t index) { return cursors.lookup(level, index); },
                       std::move(*origin));
  for (auto& text : table->problems) verifier.add_problem(std::nullopt, "bad-checkpoint", std::move(text));

  auto rows = db.prepare(kRowSql);
  if (!rows) return unreadable(rows.issue().diagnostics);
  auto leaves = db.prepare(legacy ? "SELECT idx, hash FROM audit_node WHERE level = 0 ORDER BY idx"
                                  : "SELECT pos, hash FROM audit_tree WHERE (pos & 63) = 0 ORDER BY pos");
  if (!leaves) return unreadable(leaves.issue().diagnostics);
  SlotReader reader(std::move(*rows), std::move(*leaves), legacy, &digests, &far_digests, index ? &*index : nullptr,
                    state->indexed_below);

  // Pipeline: the worker threads check batch k while this thread reads batch k+1 and then
  // feeds batch k-1 to the verifier, so reading and the sequential checks overlap the hashing.
  const unsigned threads = std::clamp(options.threads, 1u, kMaxThreads);
  SlotReader::Batch current, next;
  Checkers checkers(threads);
  if (auto s = reader.fill(current); !s) return unreadable(s.issue().diagnostics);
  checkers.start(current);
  std::uint64_t done = 0;
  while (!current.slots.empty()) {
    fhir::Status read = reader.fill(next);
    checkers.join();
    if (!read) return unreadable(read.issue().diagnostics);
    if (!next.slots.empty()) checkers.start(next);
    for (const auto& slot : current.slots) {
      if (slot.row >= 0) {
        const auto r = static_cast<std::size_t>(slot.row);
        verifier.add(slot.index, &current.rows[r], &current.checks[r], slot.leaf);
      } else {
        verifier.add(slot.index, nullptr, nullptr, slot.leaf);
      }
    }
    done += current.rows.size();
    if (!cursors.error.empty()) return unreadable(cursors.error);
    if (options.progress) options.progress(done, rows_total);
    if (verifier.settled()) break;
    checkers.join();
    std::swap(current, next);
  }
  checkers.join();
  if (reader.negative_rows > 0)
    verifier.add_problem(0, "inserted",
                         "audit.db holds " + num(reader.negative_rows) + " row(s) with a negative sequence number");
  if (!verifier.settled()) {
    std::vector<std::uint64_t> stray;
    for (std::uint64_t i = 0; i < digests.size(); ++i)
      if (digests[i] != 0) stray.push_back(i);
    for (const auto& [seq, d] : far_digests)
      if (d != 0) stray.push_back(seq);
    std::sort(stray.begin(), stray.end());
    for (std::size_t i = 0; i < stray.size() && i < kMaxStrayRows; ++i)
      verifier.add_problem(stray[i], "column-mismatch",
                           "the patient index names record " + num(stray[i]) + ", which audit.db does not hold");
    const std::uint64_t more = negative_patient_rows + (stray.size() > kMaxStrayRows ? stray.size() - kMaxStrayRows : 0);
    if (more > 0)
      verifier.add_problem(std::nullopt, "column-mismatch",
                           num(more) + " more patient index rows name records audit.db does not hold");
    if (index) {
      const std::vector<std::uint64_t> left = index->left();
      for (std::size_t i = 0; i < left.size() && i < kMaxStrayRows; ++i)
        verifier.add_problem(left[i], "column-mismatch",
                             "the agent or time index names record " + num(left[i]) + ", which audit.db does not hold");
      const std::uint64_t more_index =
          index->negative + (left.size() > kMaxStrayRows ? left.size() - kMaxStrayRows : 0);
      if (more_index > 0)
        verifier.add_problem(std::nullopt, "column-mismatch",
                             num(more_index) + " more agent or time index rows name records audit.db does not hold");
    }
    if (state->present) verifier.check_index_state(state->indexed_below);
    auto alerts = read_alerts(db);
    if (!alerts) return unreadable(alerts.issue().diagnostics);
    verifier.check_alerts(*alerts);
    auto flags = read_flags(db);
    if (!flags) return unreadable(flags.issue().diagnostics);
    verifier.check_flags(*flags);
  }
  (void)db.exec("ROLLBACK");
  return verifier.finish();
}

}  // namespace gw::audit
