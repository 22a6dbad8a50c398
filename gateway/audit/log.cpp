// SPDX-License-Identifier: Apache-2.0
// The audit log (log.h): construction and statistics, the IG officer's changes (alert reviews,
// flagged records) and retention. Opening is in log_open.cpp, the writer thread in
// log_writer.cpp, the read side in log_reads.cpp.
#include "gateway/audit/log.h"

#include <algorithm>

#include "gateway/audit/log_internal.h"
#include "gateway/observe/log.h"

namespace gw::audit {

using fhir::ErrorCode;
using fhir::Issue;

Log::Log(LogOptions options) : options_(std::move(options)) {}

Log::~Log() { stop(); }

// Each change runs on the writer thread inside the transaction of the record appended with it
// (Log::Change); the writer's own copy of the flagged records follows once that commits.

Log::Change Log::review_alert(std::int64_t id, std::string reviewer, std::string outcome, std::string note) {
  Change c;
  c.apply_ = [id, reviewer = std::move(reviewer), outcome = std::move(outcome),
              note = std::move(note)](Impl& impl) -> fhir::Status {
    auto sel = impl.db.cached("SELECT status FROM audit_alert WHERE id = ?1");
    if (!sel) return std::move(sel).issue();
    sel->bind(1, id);
    auto r = sel->step();
    if (!r) return std::move(r).issue();
    if (!*r) return Issue::make(ErrorCode::not_found, "no alert " + std::to_string(id));
    if (sel->column_text(0) != "open")
      return Issue::make(ErrorCode::conflict, "alert " + std::to_string(id) + " has already been reviewed");
    sel->reset();
    auto up = impl.db.cached(
        "UPDATE audit_alert SET status = 'reviewed', reviewer = ?2, review_outcome = ?3, review_note = ?4, "
        "reviewed_ms = ?5 WHERE id = ?1 AND status = 'open'");
    if (!up) return std::move(up).issue();
    up->bind(1, id).bind(2, reviewer).bind(3, outcome).bind(4, note).bind(5, now_ms());
    return up->run();
  };
  return c;
}

Log::Change Log::flag_patient(std::string nhs_number, std::string reason, std::string by) {
  Change c;
  c.apply_ = [nhs_number, reason = std::move(reason), by = std::move(by)](Impl& impl) -> fhir::Status {
    auto up = impl.db.cached(
        "INSERT INTO audit_flagged_patient(nhs_number, reason, flagged_by, flagged_ms) VALUES (?1, ?2, ?3, ?4) "
        "ON CONFLICT(nhs_number) DO UPDATE SET reason = excluded.reason, flagged_by = excluded.flagged_by, "
        "flagged_ms = excluded.flagged_ms");
    if (!up) return std::move(up).issue();
    up->bind(1, nhs_number).bind(2, reason).bind(3, by).bind(4, now_ms());
    return up->run();
  };
  c.committed_ = [nhs_number](Impl& impl) {
    std::lock_guard lock(impl.flagged_mu);
    impl.flagged.insert(nhs_number);
  };
  return c;
}

Log::Change Log::unflag_patient(std::string nhs_number) {
  Change c;
  c.apply_ = [nhs_number](Impl& impl) -> fhir::Status {
    const auto& configured = impl.opt.rules.flagged_patients;
    if (std::find(configured.begin(), configured.end(), nhs_number) != configured.end())
      return Issue::make(ErrorCode::conflict, "NHS number " + nhs_number +
                                                  " is flagged in the configuration ([audit.alerts] flagged_patients); "
                                                  "remove it there and restart the gateway");
    auto del = impl.db.cached("DELETE FROM audit_flagged_patient WHERE nhs_number = ?1");
    if (!del) return std::move(del).issue();
    del->bind(1, nhs_number);
    if (auto s = del->run(); !s) return s;
    if (impl.db.changes() == 0) return Issue::make(ErrorCode::not_found, "NHS number " + nhs_number + " is not flagged");
    return fhir::Ok{};
  };
  c.committed_ = [nhs_number](Impl& impl) {
    std::lock_guard lock(impl.flagged_mu);
    impl.flagged.erase(nhs_number);
  };
  return c;
}

fhir::Result<std::uint64_t> Log::prune_before(std::int64_t cutoff_ms, const std::string& by, std::uint64_t keep_from) {
  Impl& impl = *impl_;
  std::optional<std::pair<std::int64_t, std::int64_t>> held_back;  // [first, end) old but not yet forwarded
  // Prune a prefix only: records up to (not including) the first one at or after the cutoff.
  // The prune and the retention-prune record that explains it are one transaction: a crash
  // between two commits would leave content gone with no record saying why, which audit-verify
  // rightly reports as tampering.
  auto pruned = impl.run_task<fhir::Result<std::pair<std::uint64_t, std::uint64_t>>>(
      [&]() -> fhir::Result<std::pair<std::uint64_t, std::uint64_t>> {
        auto first_kept = impl.db.prepare(
            "SELECT coalesce((SELECT min(seq) FROM (SELECT min(seq) AS seq FROM audit_time_index WHERE time_ms >= ?1 "
            "UNION ALL SELECT min(seq) FROM audit_record WHERE seq >= (SELECT value FROM audit_index_state WHERE key = "
            "'indexed_below') AND time_ms >= ?1)), "
            "(SELECT coalesce(max(seq) + 1, 0) FROM audit_record))");
        if (!first_kept) return std::move(first_kept).issue();
        first_kept->bind(1, cutoff_ms);
        if (auto r = first_kept->step(); !r) return std::move(r).issue();
        const std::int64_t by_age = first_kept->column_int64(0);
        auto first = impl.db.prepare("SELECT coalesce(min(seq), 0) FROM audit_record WHERE record IS NOT NULL");
        if (!first) return std::move(first).issue();
        if (auto r = first->step(); !r) return std::move(r).issue();
        const std::int64_t begin = first->column_int64(0);
        // Records the SIEM does not hold yet stay until the forwarder has delivered them.
        const std::int64_t end =
            keep_from < static_cast<std::uint64_t>(by_age) ? static_cast<std::int64_t>(keep_from) : by_age;
        if (by_age > std::max(begin, end)) held_back = {std::max(begin, end), by_age};
        if (end <= begin) return std::pair<std::uint64_t, std::uint64_t>{0, 0};
        const std::int64_t prune_ms = now_ms();
        // The alerts raised by records whose content is gone (these and earlier prunes'): a
        // reviewed one's detail (an NHS number, a break-glass reason) and review note go with
        // that content; an open one keeps them until an IG officer has reviewed it (the first
        // prune after the review removes them). Counted here, on the writer thread, so that
        // the record can say so: nothing else writes between this and the prune.
        const std::string redaction = retention_redaction(prune_ms);
        auto alerts = impl.db.prepare(
            "SELECT coalesce(sum(status = 'reviewed' AND substr(detail, 1, length(?2)) <> ?2), 0), "
            "coalesce(sum(status = 'open'), 0) FROM audit_alert WHERE seq < ?1");
        if (!alerts) return std::move(alerts).issue();
        alerts->bind(1, end).bind(2, kRetentionRedaction);
        if (auto row = alerts->step(); !row) return std::move(row).issue();
        const std::int64_t redacted = alerts->column_int64(0);
        const std::int64_t kept_open = alerts->column_int64(1);
        auto prune = [&impl, begin, end, &redaction]() -> fhir::Status {
          auto up = impl.db.prepare(
              "UPDATE audit_record SET record = NULL, agent = '', subtypes = ' ' WHERE seq >= ?1 AND seq < ?2");
          if (!up) return std::move(up).issue();
          up->bind(1, begin).bind(2, end);
          if (auto s = up->run(); !s) return s;
          for (const char* sql : {"DELETE FROM audit_patient_index WHERE epoch BETWEEN ?1 >> 16 AND ?2 >> 16 "
                                  "AND seq >= ?1 AND seq < ?2",
                                  "DELETE FROM audit_agent_index WHERE epoch BETWEEN ?1 >> 16 AND ?2 >> 16 "
                                  "AND seq >= ?1 AND seq < ?2",
                                  "DELETE FROM audit_patient_recent WHERE seq >= ?1 AND seq < ?2"}) {
            auto del = impl.db.prepare(sql);
            if (!del) return std::move(del).issue();
            del->bind(1, begin).bind(2, end);
            if (auto s = del->run(); !s) return s;
          }
          // The same alerts as counted above; a redacted detail is never redacted again (it
          // keeps the time of the prune that removed it).
          auto redact = impl.db.prepare(
              "UPDATE audit_alert SET detail = ?2, review_note = ?2 WHERE seq < ?1 AND status = 'reviewed' "
              "AND substr(detail, 1, length(?3)) <> ?3");
          if (!redact) return std::move(redact).issue();
          redact->bind(1, end).bind(2, redaction).bind(3, kRetentionRedaction);
          return redact->run();
        };
        Record r;
        r.time_ms = prune_ms;
        r.kind = "system";
        r.action = "retention-prune";
        r.agent_kind = "system";
        r.user = by;
        r.status = 200;
        r.detail.note = "retention removed the content of records " + std::to_string(begin) + " to " +
                        std::to_string(end - 1) + " (" + std::to_string(end - begin) + " records) older than " +
                        format_time_ms(cutoff_ms) + "; their leaf hashes remain in the tree";
        if (held_back)
          r.detail.note += "; records " + std::to_string(held_back->first) + " onwards (" +
                           std::to_string(held_back->second - held_back->first) +
                           " records) are as old but stay until the audit forwarder has delivered them";
        auto alerts_text = [](std::int64_t n) { return std::to_string(n) + (n == 1 ? " alert" : " alerts"); };
        r.detail.note += "; the detail and review note of " + alerts_text(redacted) +
                         " raised by pruned records and reviewed were removed (" + alerts_text(kept_open) +
                         (kept_open == 1 ? " still open keeps its" : " still open keep their") + " detail until reviewed)";
        std::optional<fhir::Result<std::uint64_t>> appended;
        std::vector<Impl::Append> batch;
        batch.push_back(Impl::Append{std::move(r), [&appended](fhir::Result<std::uint64_t> seq) {
                                       appended.emplace(std::move(seq));
                                     }});
        impl.commit_batch(batch, prune);
        if (!appended || !*appended)
          return appended ? std::move(*appended).issue() : not_ready("the retention record was not written");
        return std::pair<std::uint64_t, std::uint64_t>{static_cast<std::uint64_t>(begin), static_cast<std::uint64_t>(end)};
      });
  if (!pruned) return std::move(pruned).issue();
  if (held_back)
    observe::log(observe::Level::warn, "audit retention kept records the SIEM does not hold yet",
                 {{"from_seq", held_back->first}, {"records", held_back->second - held_back->first},
                  {"cutoff", format_time_ms(cutoff_ms)}});
  const auto [begin, end] = *pruned;
  if (end == begin) return std::uint64_t{0};  // nothing older than the cutoff: no record, no note
  if (impl.signer) {
    if (auto c = checkpoint_now(); !c) return std::move(c).issue();
  }
  // The pruned content is zeroed in the pages the prune wrote, but those are in the WAL, and the
  // WAL's older frames (from when the records were written) still hold it: TRUNCATE copies every
  // frame into audit.db and empties the WAL. On a connection of its own, as the checkpointer's,
  // that never waits: with a busy timeout the checkpoint would hold the WAL's write lock while
  // it waited for readers (an export, the forwarder), and every audited request waits for the
  // writer behind it. Busy now, it copies what it can and the writer's own WAL restarts carry
  // on. The prune is committed and recorded by now: anything here is a warning, not a failure.
  const auto checkpoint = [&impl]() -> fhir::Result<bool> {
    auto db = sqlite::Database::open(impl.opt.path);
    if (!db) return std::move(db).issue();
    if (auto s = db->exec("PRAGMA busy_timeout=0;"); !s) return std::move(s).issue();
    auto st = db->prepare("PRAGMA wal_checkpoint(TRUNCATE)");
    if (!st) return std::move(st).issue();
    auto row = st->step();
    if (!row) return std::move(row).issue();
    return *row && st->column_int64(0) == 0;  // column 0: busy
  };
  auto truncated = checkpoint();
  if (!truncated || !*truncated)
    observe::log(observe::Level::warn,
                 "audit retention: audit.db WAL busy, pruned content may stay on disk until the next prune",
                 {{"error", truncated ? std::string("busy") : truncated.issue().diagnostics}});
  return end - begin;
}

Stats Log::stats() const {
  std::lock_guard lock(impl_->stats_mu);
  return impl_->stats;
}

}  // namespace gw::audit
