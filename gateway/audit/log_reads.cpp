// SPDX-License-Identifier: Apache-2.0
// The audit log's read side (log.h): search, single records, removals, Merkle proofs and
// roots, checkpoints, alerts and flagged records, each on a read-only connection leased from a
// small pool. Blocking: called from worker threads, never from network threads.
#include "gateway/audit/log_internal.h"

namespace gw::audit {

using fhir::ErrorCode;
using fhir::Issue;
using merkle::Hash;

fhir::Result<std::unique_ptr<Log::Impl::Lease>> Log::Impl::reader() const {
  auto lease = std::make_unique<Lease>();
  lease->impl = this;
  {
    std::lock_guard lock(readers_mu);
    if (!readers.empty()) {
      lease->db.emplace(std::move(readers.back()));
      readers.pop_back();
      return lease;
    }
  }
  auto d = sqlite::Database::open(opt.path, sqlite::Database::Mode::read_only);
  if (!d) return std::move(d).issue();
  lease->db.emplace(std::move(*d));
  return lease;
}

fhir::Result<Page> Log::search(const Query& q) const {
  auto lease = impl_->reader();
  if (!lease) return std::move(lease).issue();
  sqlite::Database& db = *(*lease)->db;
  std::string where = " WHERE record IS NOT NULL";
  std::vector<std::variant<std::int64_t, std::string>> args;
  auto arg = [&](auto v) {
    args.emplace_back(std::move(v));
    std::string placeholder = "?";
    placeholder.append(std::to_string(args.size()));
    return placeholder;
  };
  // The patient and agent indexes are keyed by epoch (seq >> 16) first: a search probes each.
  static const std::string every_epoch =
      "epoch IN (WITH RECURSIVE e(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM e WHERE x < (SELECT "
      "coalesce(max(seq), 0) >> 16 FROM audit_record)) SELECT x FROM e)";
  if (!q.patient.empty()) {
    // Both halves of the patient index (audit.db migration 4): the sorted one by key, one
    // probe per epoch; the recent rows (at most LogOptions::index_merge_rows and one
    // commit's more) by scan.
    const std::string nhs = arg(q.patient);
    where += " AND seq IN (SELECT seq FROM audit_patient_index WHERE " + every_epoch + " AND nhs_number = " + nhs +
             " UNION ALL SELECT seq FROM audit_patient_recent WHERE nhs_number = " + nhs + ")";
  }
  // The agent and time indexes (audit.db migration 5) hold the records below indexed_below;
  // the newer ones are read from audit_record by rowid range.
  const std::string unindexed = "seq >= (SELECT value FROM audit_index_state WHERE key = 'indexed_below')";
  if (!q.agent.empty()) {
    const std::string agent = arg(q.agent);
    where += " AND agent = " + agent +
             " AND seq IN (SELECT seq FROM audit_agent_index WHERE " + every_epoch + " AND agent = " + agent +
             " UNION ALL SELECT seq FROM audit_record WHERE " + unindexed + " AND agent = " + agent + ")";
  }
  if (q.from_ms || q.to_ms) {
    std::string range;
    if (q.from_ms) range += "time_ms >= " + arg(*q.from_ms);
    if (q.to_ms) range += std::string(range.empty() ? "" : " AND ") + "time_ms < " + arg(*q.to_ms);
    where += " AND " + range + " AND seq IN (SELECT seq FROM audit_time_index WHERE " + range +
             " UNION ALL SELECT seq FROM audit_record WHERE " + unindexed + " AND " + range + ")";
  }
  if (q.outcome) where += " AND outcome = " + arg(static_cast<std::int64_t>(*q.outcome));
  if (!q.subtype.empty()) where += " AND instr(subtypes, " + arg(" " + q.subtype + " ") + ") > 0";
  auto bind_all = [&args](sqlite::Statement& s) {
    for (std::size_t i = 0; i < args.size(); ++i) {
      if (auto* n = std::get_if<std::int64_t>(&args[i])) s.bind(static_cast<int>(i + 1), *n);
      else s.bind(static_cast<int>(i + 1), std::get<std::string>(args[i]));
    }
  };
  Page page;
  auto count = db.prepare("SELECT count(*) FROM audit_record" + where);
  if (!count) return std::move(count).issue();
  bind_all(*count);
  if (auto r = count->step(); !r) return std::move(r).issue();
  page.total = static_cast<std::uint64_t>(count->column_int64(0));

  std::string page_where = where;
  if (q.after_seq)
    page_where += (q.newest_first ? " AND seq < " : " AND seq > ") + arg(static_cast<std::int64_t>(*q.after_seq));
  // A record that does not decode (a tampered or corrupted file) is skipped and named, not
  // fatal: the IG officer still sees the rest of the range, and audit-verify says what happened.
  // Up to kMaxDamagedPerPage of them are read past on top of the page; then one row more says
  // whether a next page exists, whatever those rows held.
  const std::string sql = "SELECT seq, record FROM audit_record" + page_where + " ORDER BY seq " +
                          (q.newest_first ? "DESC" : "ASC") + " LIMIT " +
                          std::to_string(q.count + kMaxDamagedPerPage + 1);
  auto sel = db.prepare(sql);
  if (!sel) return std::move(sel).issue();
  bind_all(*sel);
  std::optional<std::uint64_t> last_read;
  for (;;) {
    auto r = sel->step();
    if (!r) return std::move(r).issue();
    if (!*r) break;
    const auto seq = static_cast<std::uint64_t>(sel->column_int64(0));
    if (page.records.size() >= q.count || page.damaged.size() >= kMaxDamagedPerPage) {
      page.next_after = last_read ? last_read : q.after_seq;
      break;
    }
    last_read = seq;
    auto rec = decode(sel->column_blob(1));
    if (!rec) page.damaged.push_back(seq);
    else page.records.push_back(std::move(*rec));
  }
  return page;
}

fhir::Result<std::optional<Record>> Log::get(std::uint64_t seq) const {
  auto lease = impl_->reader();
  if (!lease) return std::move(lease).issue();
  auto sel = (*lease)->db->prepare("SELECT record FROM audit_record WHERE seq = ?1 AND record IS NOT NULL");
  if (!sel) return std::move(sel).issue();
  sel->bind(1, static_cast<std::int64_t>(seq));
  auto r = sel->step();
  if (!r) return std::move(r).issue();
  if (!*r) return std::optional<Record>();
  auto rec = decode(sel->column_blob(0));
  if (!rec)
    return Issue::make(ErrorCode::internal_error, "AuditEvent " + std::to_string(seq) +
                                                      " cannot be read: audit.db holds a damaged record there; run "
                                                      "audit-verify");
  return std::optional<Record>(std::move(*rec));
}

fhir::Result<std::optional<Log::Removal>> Log::removal(std::uint64_t seq) const {
  auto lease = impl_->reader();
  if (!lease) return std::move(lease).issue();
  sqlite::Database& db = *(*lease)->db;
  auto sel = db.prepare("SELECT record IS NULL FROM audit_record WHERE seq = ?1");
  if (!sel) return std::move(sel).issue();
  sel->bind(1, static_cast<std::int64_t>(seq));
  auto r = sel->step();
  if (!r) return std::move(r).issue();
  if (!*r || sel->column_int64(0) == 0) return std::optional<Removal>();
  // The prune that removed it came after it: the first retention-prune record after `seq`
  // whose range covers it (earlier prunes after it removed older records only). Read by the
  // partial index of audit.db migration 6; at most a year and more of hourly prunes.
  auto prunes = db.prepare(
      "SELECT record FROM audit_record WHERE subtypes = ' retention-prune ' AND seq > ?1 AND record IS NOT NULL "
      "ORDER BY seq LIMIT 10000");
  if (!prunes) return std::move(prunes).issue();
  prunes->bind(1, static_cast<std::int64_t>(seq));
  for (;;) {
    auto p = prunes->step();
    if (!p) return std::move(p).issue();
    if (!*p) break;
    auto rec = decode(prunes->column_blob(0));
    if (!rec) continue;  // damaged: audit-verify reports it
    const auto range = prune_range(rec->detail.note);
    if (range && range->first <= seq && seq <= range->second) return std::optional<Removal>(Removal{rec->time_ms});
  }
  return std::optional<Removal>(Removal{});
}

namespace {

fhir::Result<std::uint64_t> stored_size(sqlite::Database& db) {
  auto s = db.prepare("SELECT coalesce(max(seq) + 1, 0) FROM audit_record");
  if (!s) return std::move(s).issue();
  if (auto r = s->step(); !r) return std::move(r).issue();
  return static_cast<std::uint64_t>(s->column_int64(0));
}

}  // namespace

fhir::Result<InclusionProof> Log::inclusion_proof(std::uint64_t index, std::uint64_t size) const {
  auto lease = impl_->reader();
  if (!lease) return std::move(lease).issue();
  sqlite::Database& db = *(*lease)->db;
  auto have = stored_size(db);
  if (!have) return std::move(have).issue();
  if (size == 0 || size > *have || index >= size)
    return Issue::make(ErrorCode::invalid_value, "need 0 <= index < size <= " + std::to_string(*have));
  NodeReader nodes{db, {}, {}};
  merkle::NodeSource source = [&nodes](unsigned l, std::uint64_t i) { return nodes(l, i); };
  InclusionProof p;
  p.index = index;
  p.size = size;
  p.leaf = nodes(0, index);
  p.path = merkle::inclusion_proof(index, size, source);
  p.root = merkle::range_hash(0, size, source);
  if (!nodes.error.empty()) return Issue::make(ErrorCode::internal_error, "audit.db tree is damaged; run audit-verify");
  auto sel = db.prepare("SELECT record FROM audit_record WHERE seq = ?1");
  if (!sel) return std::move(sel).issue();
  sel->bind(1, static_cast<std::int64_t>(index));
  if (auto r = sel->step(); r && *r && !sel->column_is_null(0)) p.record = sel->column_blob(0);
  return p;
}

fhir::Result<std::vector<Hash>> Log::consistency_proof(std::uint64_t size1, std::uint64_t size2) const {
  auto lease = impl_->reader();
  if (!lease) return std::move(lease).issue();
  sqlite::Database& db = *(*lease)->db;
  auto have = stored_size(db);
  if (!have) return std::move(have).issue();
  if (size1 == 0 || size1 > size2 || size2 > *have)
    return Issue::make(ErrorCode::invalid_value, "need 0 < from <= to <= " + std::to_string(*have));
  NodeReader nodes{db, {}, {}};
  merkle::NodeSource source = [&nodes](unsigned l, std::uint64_t i) { return nodes(l, i); };
  auto proof = merkle::consistency_proof(size1, size2, source);
  if (!nodes.error.empty()) return Issue::make(ErrorCode::internal_error, "audit.db tree is damaged; run audit-verify");
  return proof;
}

fhir::Result<Hash> Log::root_at(std::uint64_t size) const {
  auto lease = impl_->reader();
  if (!lease) return std::move(lease).issue();
  sqlite::Database& db = *(*lease)->db;
  auto have = stored_size(db);
  if (!have) return std::move(have).issue();
  if (size > *have) return Issue::make(ErrorCode::invalid_value, "the log holds " + std::to_string(*have) + " records");
  if (size == 0) return merkle::empty_root();
  NodeReader nodes{db, {}, {}};
  merkle::NodeSource source = [&nodes](unsigned l, std::uint64_t i) { return nodes(l, i); };
  Hash root = merkle::range_hash(0, size, source);
  if (!nodes.error.empty()) return Issue::make(ErrorCode::internal_error, "audit.db tree is damaged; run audit-verify");
  return root;
}

fhir::Result<std::vector<Checkpoint>> Log::checkpoints(std::size_t max) const {
  auto lease = impl_->reader();
  if (!lease) return std::move(lease).issue();
  auto sel = (*lease)->db->prepare("SELECT note FROM audit_checkpoint ORDER BY size DESC, time_ms DESC LIMIT ?1");
  if (!sel) return std::move(sel).issue();
  sel->bind(1, static_cast<std::int64_t>(max));
  std::vector<Checkpoint> out;
  for (;;) {
    auto r = sel->step();
    if (!r) return std::move(r).issue();
    if (!*r) break;
    auto c = parse_checkpoint(sel->column_text(0));
    if (!c) return Issue::make(ErrorCode::internal_error, "audit.db holds a damaged checkpoint; run audit-verify");
    out.push_back(std::move(*c));
  }
  return out;
}

fhir::Result<std::vector<Alert>> Log::alerts(const std::string& status, std::size_t max,
                                             std::optional<std::int64_t> before) const {
  auto lease = impl_->reader();
  if (!lease) return std::move(lease).issue();
  std::string sql =
      "SELECT id, seq, rule, detail, raised_ms, status, reviewer, review_outcome, review_note, reviewed_ms FROM "
      "audit_alert WHERE id < ?3";
  if (!status.empty()) sql += " AND status = ?2";
  sql += " ORDER BY id DESC LIMIT ?1";
  auto sel = (*lease)->db->prepare(sql);
  if (!sel) return std::move(sel).issue();
  sel->bind(1, static_cast<std::int64_t>(max));
  if (!status.empty()) sel->bind(2, status);
  sel->bind(3, before.value_or(INT64_MAX));
  std::vector<Alert> out;
  for (;;) {
    auto r = sel->step();
    if (!r) return std::move(r).issue();
    if (!*r) break;
    Alert a;
    a.id = sel->column_int64(0);
    a.seq = static_cast<std::uint64_t>(sel->column_int64(1));
    a.rule = sel->column_text(2);
    a.detail = sel->column_text(3);
    a.raised_ms = sel->column_int64(4);
    a.status = sel->column_text(5);
    a.reviewer = sel->column_text(6);
    a.review_outcome = sel->column_text(7);
    a.review_note = sel->column_text(8);
    a.reviewed_ms = sel->column_int64(9);
    out.push_back(std::move(a));
  }
  return out;
}

fhir::Result<std::uint64_t> Log::alert_count(const std::string& status) const {
  auto lease = impl_->reader();
  if (!lease) return std::move(lease).issue();
  auto count = (*lease)->db->prepare(status.empty() ? "SELECT count(*) FROM audit_alert"
                                                    : "SELECT count(*) FROM audit_alert WHERE status = ?1");
  if (!count) return std::move(count).issue();
  if (!status.empty()) count->bind(1, status);
  if (auto r = count->step(); !r) return std::move(r).issue();
  return static_cast<std::uint64_t>(count->column_int64(0));
}

fhir::Result<FlaggedPage> Log::flagged_patients(const std::string& after, std::size_t max) const {
  auto lease = impl_->reader();
  if (!lease) return std::move(lease).issue();
  FlaggedPage page;
  auto count = (*lease)->db->prepare("SELECT count(*) FROM audit_flagged_patient");
  if (!count) return std::move(count).issue();
  if (auto r = count->step(); !r) return std::move(r).issue();
  page.total = static_cast<std::uint64_t>(count->column_int64(0));
  auto sel = (*lease)->db->prepare(
      "SELECT nhs_number, reason, flagged_by, flagged_ms FROM audit_flagged_patient WHERE nhs_number > ?1 "
      "ORDER BY nhs_number LIMIT ?2");
  if (!sel) return std::move(sel).issue();
  sel->bind(1, after).bind(2, static_cast<std::int64_t>(max));
  for (;;) {
    auto r = sel->step();
    if (!r) return std::move(r).issue();
    if (!*r) break;
    page.items.push_back(
        FlaggedPatient{sel->column_text(0), sel->column_text(1), sel->column_text(2), sel->column_int64(3)});
  }
  return page;
}

}  // namespace gw::audit
