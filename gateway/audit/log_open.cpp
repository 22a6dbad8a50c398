// SPDX-License-Identifier: Apache-2.0
// Opening the audit log (Log::open in log.h): migrations, the log's origin, the tree frontier,
// the stored tree against its checkpoints and the checkpoint file, the search indexes, and the
// start of the writer and WAL checkpointer threads.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include <sqlite3.h>

#include "gateway/audit/log_internal.h"
#include "gateway/audit/schema.h"
#include "gateway/observe/log.h"
#include "gateway/observe/thread_name.h"

namespace gw::audit {

using merkle::Hash;

namespace {

// A record of what open() found wrong at start-up, made by the log itself as the gateway's own
// start and stop are (gateway/app.cpp).
Record system_record(const char* action, std::string note) {
  Record r;
  r.time_ms = now_ms();
  r.kind = "system";
  r.action = action;
  r.agent_kind = "system";
  r.user = "fhir-gateway";
  r.status = 200;
  r.detail.note = std::move(note);
  return r;
}

// The log's origin: the first line of every checkpoint it signs, which names the log the
// checkpoint is for (C2SP tlog-checkpoint). It is fixed when the log is created and kept in
// audit.db (gateway_info 'audit_origin'), so that editing public_base_url later does not make
// the log's older checkpoints look like another log's. A database from before it was kept
// takes the origin of its oldest checkpoint (the one it was created with), else `configured`.
fhir::Result<std::string> fix_origin(sqlite::Database& db, const std::string& configured) {
  auto stored = db.prepare("SELECT value FROM gateway_info WHERE key = 'audit_origin'");
  if (!stored) return std::move(stored).issue();
  auto row = stored->step();
  if (!row) return std::move(row).issue();
  if (*row) return stored->column_text(0);
  std::string origin = configured;
  auto oldest = db.prepare("SELECT note FROM audit_checkpoint ORDER BY size, time_ms LIMIT 1");
  if (!oldest) return std::move(oldest).issue();
  auto cp = oldest->step();
  if (!cp) return std::move(cp).issue();
  if (*cp) {
    auto c = parse_checkpoint(oldest->column_text(0));
    if (!c) return not_ready("audit.db's oldest checkpoint is damaged (" + c.issue().diagnostics + "); run audit-verify");
    origin = c->origin;
  }
  auto ins = db.prepare("INSERT INTO gateway_info(key, value) VALUES ('audit_origin', ?1)");
  if (!ins) return std::move(ins).issue();
  ins->bind(1, origin);
  if (auto s = ins->run(); !s) return std::move(s).issue();
  return origin;
}

}  // namespace

fhir::Result<std::unique_ptr<Log>> Log::open(LogOptions options, std::shared_ptr<const CheckpointSigner> signer) {
  auto db = sqlite::Database::open(options.path);
  if (!db) return std::move(db).issue();
  if (auto v = sqlite::migrate(*db, migrations()); !v) return std::move(v).issue();
  auto origin = fix_origin(*db, options.origin);
  if (!origin) return std::move(origin).issue();
  if (*origin != options.origin)
    observe::log(observe::Level::warn,
                 "the audit log keeps the origin it was created with, not the one configured now (public_base_url "
                 "changed?): its checkpoints go on naming the log as before",
                 {{"log_origin", *origin}, {"configured_origin", options.origin}});
  options.origin = std::move(*origin);

  std::unique_ptr<Log> log(new Log(options));
  log->impl_ = std::make_unique<Impl>(options, std::move(signer), std::move(*db));
  Impl& impl = *log->impl_;

  // Rebuild the frontier from the stored tree.
  auto count = impl.db.prepare("SELECT coalesce(max(seq) + 1, 0) FROM audit_record");
  if (!count) return std::move(count).issue();
  if (auto row = count->step(); !row) return std::move(row).issue();
  const auto size = static_cast<std::uint64_t>(count->column_int64(0));
  NodeReader nodes{impl.db, {}, {}};
  merkle::NodeSource source = [&nodes](unsigned l, std::uint64_t i) { return nodes(l, i); };
  impl.range = merkle::CompactRange::for_size(size, source);
  if (size > 0) impl.last_leaf = nodes(0, size - 1);
  if (!nodes.error.empty()) return not_ready("audit.db tree is damaged: " + nodes.error + "; run audit-verify");

  // The stored tree must still match the newest checkpoint it signed.
  auto last = impl.db.prepare("SELECT size, root, time_ms FROM audit_checkpoint ORDER BY size DESC, time_ms DESC LIMIT 1");
  if (!last) return std::move(last).issue();
  auto row = last->step();
  if (!row) return std::move(row).issue();
  std::optional<std::pair<std::uint64_t, std::int64_t>> db_newest;  // audit.db's newest checkpoint: size, time
  if (*row) {
    const auto cp_size = static_cast<std::uint64_t>(last->column_int64(0));
    const Hash cp_root = hash_from_blob(last->column_blob(1));
    db_newest.emplace(cp_size, last->column_int64(2));
    if (cp_size > size)
      return not_ready("audit.db holds " + std::to_string(size) + " records but its checkpoint covers " +
                       std::to_string(cp_size) + ": the log was truncated; run audit-verify");
    const Hash root = cp_size == 0 ? merkle::empty_root() : merkle::range_hash(0, cp_size, source);
    if (!nodes.error.empty() || root != cp_root)
      return not_ready("audit.db no longer matches its checkpoint at size " + std::to_string(cp_size) +
                       "; run audit-verify");
    impl.checkpointed_size = cp_size;
  }
  std::vector<Record> findings;  // what this start found wrong, for the log itself
  // Records beyond the newest signed checkpoint. A clean stop signs every record (the writer's
  // last act), and gw-locator signs what it appends, so these were left by a gateway that did
  // not stop cleanly (a crash, a kill), or added to audit.db while no gateway ran: nothing yet
  // vouches for them, and this gateway's next checkpoint would sign them like its own. Said
  // first, where operators and IG officers look, so that the records added offline are seen.
  if (impl.signer && size > impl.checkpointed_size) {
    const std::string text =
        (size - impl.checkpointed_size == 1 ? "record " + std::to_string(size - 1) + " was"
                                             : "records " + std::to_string(impl.checkpointed_size) + " to " +
                                                   std::to_string(size - 1) + " were") +
        " in audit.db beyond its newest signed checkpoint (" + std::to_string(impl.checkpointed_size) +
        " records) when the gateway started: written by a gateway that did not stop cleanly (a crash or a kill), or "
        "added to audit.db while no gateway was running. The next checkpoint signs them; read them (GET "
        "/AuditEvent/{id}) to see which";
    observe::log(observe::Level::warn, "audit records beyond the newest checkpoint at start",
                 {{"records", size}, {"checkpoint_size", impl.checkpointed_size}});
    log->start_warnings_.push_back(text);
    findings.push_back(system_record("unsigned-tail", text));
  }
  // A checkpoint file ahead of the database means an older copy was restored.
  if (!options.checkpoint_file.empty()) {
    bool has_db_newest = false;
    std::uint64_t file_newest = 0, file_notes = 0;
    std::string torn;  // what was done about a torn last note ("" = none)
    FILE* f = std::fopen(options.checkpoint_file.c_str(), "rb");
    const bool opened = f != nullptr;
    if (opened) {
      std::string text;
      char buf[65536];
      std::size_t n;
      while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
      std::fclose(f);
      auto parsed = parse_checkpoint_file(text);
      if (!parsed) return not_ready("checkpoint file " + options.checkpoint_file + " is unreadable: " + parsed.issue().diagnostics);
      // The newest checkpoint the file holds says how much of the log audit.db lacks (the
      // line an operator forwards to the IG officer), not the first one beyond it.
      file_newest = parsed->newest_size();
      file_notes = parsed->notes.size();
      if (file_newest > size)
        return not_ready("checkpoint file " + options.checkpoint_file + " covers " + std::to_string(file_newest) +
                         " records but audit.db holds " + std::to_string(size) +
                         ": audit.db was rolled back or truncated; run audit-verify");
      for (const auto& c : parsed->notes) {
        const Hash root = c.size == 0 ? merkle::empty_root() : merkle::range_hash(0, c.size, source);
        if (root != c.root)
          return not_ready("audit.db does not match the checkpoint file at size " + std::to_string(c.size) +
                           "; run audit-verify");
        if (db_newest && c.size == db_newest->first && c.time_ms == db_newest->second) has_db_newest = true;
      }
      // An append cut short (a crash or a full disk mid-write, or a copy cut by hand) leaves the
      // last note incomplete. It vouches for nothing, and the next note appended after it would be
      // glued onto it, unreadable. The file only ever grows by whole notes, so it is cut back to
      // its last complete one (the blank line after it stays): only bytes no reader could use
      // go. When that fails (an append-only file), nothing more is appended to it this run.
      if (parsed->torn_bytes > 0) {
        torn = "ended in an incomplete checkpoint note (" + std::to_string(parsed->torn_bytes) +
               " bytes: an append cut short by a crash or a full disk, or a copy cut short), ";
        int cut_error = 0;
        if (options.truncate_checkpoint_file)
          cut_error = options.truncate_checkpoint_file(options.checkpoint_file, parsed->complete_bytes);
        else if (::truncate(options.checkpoint_file.c_str(), static_cast<off_t>(parsed->complete_bytes)) != 0)
          cut_error = errno;
        if (cut_error == 0) {
          torn += "which was removed";
        } else {
          torn += std::string("which could not be removed (") + std::strerror(cut_error) +
                  "): no checkpoint is appended to it until those bytes are removed and the gateway restarted";
          impl.opt.checkpoint_file.clear();
        }
      }
    }
    // A file that lacks audit.db's newest checkpoint (deleted, emptied, cut, an older copy) can
    // no longer reveal a tail deleted from audit.db together with its checkpoints. The gateway
    // still starts (audit.db matched its own signed checkpoints above, and refusing would turn a
    // lost log file into an outage), but says so where operators and IG officers look: the
    // operational log and the audit log itself. The next checkpoint is appended as usual.
    if (db_newest && !has_db_newest) {
      std::string found = !opened ? "is missing or unreadable"
                             : file_notes == 0 ? "holds no checkpoint"
                                               : "holds " + std::to_string(file_notes) +
                                                     " checkpoint(s), the newest of " + std::to_string(file_newest) +
                                                     " records";
      if (!torn.empty()) found = torn + "; it " + found;
      const std::string text = ", but audit.db's newest signed checkpoint covers " +
                               std::to_string(db_newest->first) + " records (signed " +
                               format_time_ms(db_newest->second) +
                               "): the file is behind audit.db, so it cannot reveal records deleted from the end of "
                               "audit.db; check the copies kept elsewhere with audit-verify";
      // The detail is what the audit record says, so that a file both cut and behind shows
      // the cut here too (docs/audit.md).
      observe::log(observe::Level::warn, "audit checkpoint file is behind audit.db",
                   {{"file", options.checkpoint_file},
                    {"database_checkpoint_size", db_newest->first},
                    {"file_checkpoints", file_notes},
                    {"file_checkpoint_size", file_newest},
                    {"detail", "the checkpoint file " + found + text}});
      log->start_warnings_.push_back("checkpoint file " + options.checkpoint_file + " " + found + text);
      findings.push_back(system_record("checkpoint-file-behind", "the checkpoint file " + found + text));
    } else if (!torn.empty()) {
      const std::string text = torn + "; the complete checkpoints before it match audit.db";
      observe::log(observe::Level::warn, "audit checkpoint file ended in an incomplete note",
                   {{"file", options.checkpoint_file}, {"file_checkpoints", file_notes}});
      log->start_warnings_.push_back("checkpoint file " + options.checkpoint_file + " " + text);
      findings.push_back(system_record("checkpoint-file-torn", "the checkpoint file " + text));
    }
  }

  auto flagged = impl.db.prepare("SELECT nhs_number FROM audit_flagged_patient");
  if (!flagged) return std::move(flagged).issue();
  for (;;) {
    auto r = flagged->step();
    if (!r) return std::move(r).issue();
    if (!*r) break;
    impl.flagged.insert(flagged->column_text(0));
  }
  for (const auto& n : options.rules.flagged_patients) impl.flagged.insert(n);
  impl.stats.size = size;
  auto recent = impl.db.prepare("SELECT count(*) FROM audit_patient_recent");
  if (!recent) return std::move(recent).issue();
  if (auto r = recent->step(); !r) return std::move(r).issue();
  impl.recent_patient_rows = static_cast<std::uint64_t>(recent->column_int64(0));
  // The searches look for a record below indexed_below in the agent and time indexes only
  // (audit.db migration 5). A value beyond the log, or a time index not holding exactly one
  // row per record below it (cheap to count), means they were edited and would hide accesses:
  // both are rebuilt from the records, in the transaction that appends a record saying so.
  // (audit-verify checks every row.)
  auto indexed = impl.db.prepare(
      "SELECT (SELECT value FROM audit_index_state WHERE key = 'indexed_below'), (SELECT count(*) FROM audit_time_index)");
  if (!indexed) return std::move(indexed).issue();
  if (auto r = indexed->step(); !r) return std::move(r).issue();
  const bool state_missing = indexed->column_is_null(0);
  const std::int64_t state = indexed->column_int64(0);
  const std::int64_t time_rows = indexed->column_int64(1);
  std::function<fhir::Status()> rebuild;
  if (state_missing || state < 0 || static_cast<std::uint64_t>(state) > size || time_rows != state) {
    const std::string text =
        "the agent and time search indexes of audit.db did not match its " + std::to_string(size) + " records (" +
        (state_missing ? std::string("no indexed_below") : "indexed_below " + std::to_string(state)) + ", " +
        std::to_string(time_rows) +
        " time index rows): searches by user and date, and the export, could have missed accesses. They were "
        "rebuilt from the records; audit-verify on a copy taken before this start shows what had been changed";
    observe::log(observe::Level::warn, "audit search indexes did not match the log; rebuilt",
                 {{"records", size}, {"indexed_below", state_missing ? std::int64_t{-1} : state},
                  {"time_index_rows", time_rows}});
    log->start_warnings_.push_back(text);
    findings.push_back(system_record("index-rebuild", text));
    rebuild = [&impl, size]() -> fhir::Status {
      auto st = impl.db.prepare("INSERT OR REPLACE INTO audit_index_state(key, value) VALUES ('indexed_below', ?1)");
      if (!st) return std::move(st).issue();
      st->bind(1, static_cast<std::int64_t>(size));
      if (auto s = impl.db.exec(
              "DELETE FROM audit_agent_index; DELETE FROM audit_time_index;"
              "INSERT INTO audit_agent_index(epoch, agent, seq) SELECT seq >> 16, agent, seq FROM audit_record "
              "WHERE agent <> '' ORDER BY 1, 2, 3;"
              "INSERT INTO audit_time_index(time_ms, seq) SELECT time_ms, seq FROM audit_record ORDER BY 1, 2;");
          !s)
        return s;
      return st->run();
    };
  }
  impl.indexed_below = rebuild ? size : static_cast<std::uint64_t>(state);
  impl.next_checkpoint = std::chrono::steady_clock::now() + options.checkpoint_interval;
  // Writer connection: a small page cache (the indexes are merged in sorted batches, so the
  // commits touch the right-hand edges of the b-trees only, and SQLite walks the whole cache at
  // every commit), and no checkpoints in the commit path. secure_delete: what retention
  // removes (and the index rows the merges move, which name the same patients) is zeroed, not
  // left readable in free space; the commits only append, so it costs them nothing. (Debian's
  // SQLite is built with it on; others are not, and the freed pages keep their bytes.)
  if (auto s = impl.db.exec("PRAGMA cache_size=-4096; PRAGMA wal_autocheckpoint=0; PRAGMA secure_delete=ON; "
                            "PRAGMA journal_size_limit=" +
                            std::to_string(kWalSizeLimit) + ";");
      !s)
    return std::move(s).issue();
  sqlite3_wal_hook(
      impl.db.handle(),
      [](void* arg, sqlite3*, const char*, int pages) {
        static_cast<std::atomic<int>*>(arg)->store(pages, std::memory_order_relaxed);
        return SQLITE_OK;
      },
      &impl.wal_pages);
  auto wal = sqlite::Database::open(options.path);
  if (!wal) return std::move(wal).issue();
  // What this start found wrong goes into the log before anything else (with the index
  // rebuild, in one transaction).
  if (!findings.empty()) {
    std::optional<fhir::Issue> failed;
    std::vector<Impl::Append> batch;
    for (auto& r : findings)
      batch.push_back(Impl::Append{std::move(r), [&failed](fhir::Result<std::uint64_t> seq) {
                                     if (!seq && !failed) failed = seq.issue();
                                   }});
    impl.commit_batch(batch, rebuild);
    if (failed) return not_ready("audit.db's start-up findings could not be recorded: " + failed->diagnostics);
  }
  impl.writer = std::thread([&impl] {
    observe::name_this_thread("gw-audit-wr");
    impl.run();
  });
  impl.checkpointer = std::thread([&impl, conn = std::make_shared<sqlite::Database>(std::move(*wal))] {
    observe::name_this_thread("gw-audit-wal");
    std::unique_lock lock(impl.mu);
    while (!impl.checkpointer_stop) {
      impl.checkpointer_cv.wait_for(lock, std::chrono::milliseconds(500), [&impl] { return impl.checkpointer_stop; });
      lock.unlock();
      // PASSIVE: copies what no reader still needs, never waits for or blocks the writer.
      if (auto s = conn->exec("PRAGMA wal_checkpoint(PASSIVE);"); !s)
        observe::log(observe::Level::warn, "audit WAL checkpoint failed", {{"error", s.issue().diagnostics}});
      else if (impl.wal_pages.load(std::memory_order_relaxed) > kWalRestartPages)
        impl.restart_wal.store(true);
      lock.lock();
    }
  });
  return log;
}

}  // namespace gw::audit
