// SPDX-License-Identifier: Apache-2.0
#include "gateway/ingest/ingest_service.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <set>

#include <boost/asio/post.hpp>

#include "fhir/date_range.h"
#include "fhir/nhs_number.h"
#include "fhir/resource_types.h"
#include "gateway/locator/fhir_mapping.h"
#include "gateway/observe/log.h"
#include "gateway/observe/thread_name.h"

namespace gw::ingest {
namespace {

using adapters::IngestBatch;
using adapters::IngestReceipt;
using fhir::ErrorCode;
using fhir::Issue;
using fhir::Json;
using Level = observe::Level;

// A unit's dedupe key as log lines give it. HL7's is MSH-3|MSH-4|MSH-10, but a plug-in picks
// its own, and one keyed by patient would put an NHS number in the log, which never holds one.
std::string logged_key(std::string_view key) { return fhir::without_nhs_numbers(key); }

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Failures of the gateway itself (not of the unit's content): the sender should resend later.
bool transient(const Issue& i) {
  return i.code == ErrorCode::internal_error || i.code == ErrorCode::not_ready ||
         i.code == ErrorCode::too_many_requests || i.code == ErrorCode::timeout;
}

// Resources that describe the patient's care, rather than people and places, point at the
// patient through `subject`.
bool has_subject(std::string_view type) {
  return type != "Patient" && type != "Location" && type != "Practitioner" && type != "PractitionerRole" &&
         type != "Organization";
}

// Where in the unit the sender names `resource` ("Encounter/enc-1" -> "PV1-19"), or null.
const std::string* key_location(const adapters::IngestBatch& b, const std::string& resource) {
  for (const auto& kl : b.key_locations)
    if (kl.first == resource) return &kl.second;
  return nullptr;
}

audit::Record ingest_record(const std::string& source, const std::string& ods, const std::string& kind,
                            const std::string& key, const std::string& action, int status, const std::string& peer) {
  audit::Record r;
  r.address = peer;
  r.time_ms = now_ms();
  r.kind = "ingest";
  r.action = action;
  r.target = kind.empty() ? key : kind + " " + key;
  r.route = "ingest";
  r.status = status;
  r.agent_kind = "system";
  r.user = source;
  r.organisation = ods;
  r.source = source;
  r.detail.operation = "ingest";
  return r;
}

// The location a warning starts with ("PID-7" of "PID-7: not a valid ..."), or "".
std::string warning_location(const std::string& warning) {
  const std::size_t colon = warning.find(": ");
  return colon == std::string::npos ? std::string() : warning.substr(0, colon);
}

}  // namespace

IngestService::IngestService(locator::Locator& locator, store::Store& store, audit::Log* audit,
                             std::map<std::string, std::string> sources, IngestOptions options)
    : locator_(locator),
      store_(store),
      audit_(audit),
      sources_(std::move(sources)),
      options_(std::move(options)),
      pool_(pool_threads()) {
  observe::name_pool_threads(pool_, pool_threads(), "gw-ingest");
}

IngestService::~IngestService() { stop(); }

template <class Done>
auto IngestService::tracked(Done done) {
  {
    std::lock_guard lock(flight_m_);
    ++in_flight_;
  }
  return [this, done = std::move(done)](auto result) {
    done(std::move(result));
    finished();
  };
}

void IngestService::finished() {
  std::lock_guard lock(flight_m_);
  if (--in_flight_ == 0) flight_cv_.notify_all();
}

void IngestService::stop() {
  // Every unit accepted runs to its completion: the store and audit writers still call back.
  std::unique_lock lock(flight_m_);
  flight_cv_.wait(lock, [this] { return in_flight_ == 0; });
  lock.unlock();
  pool_.join();
}

IngestService::Counters IngestService::counters() const {
  Counters c{applied_.load(), duplicates_.load(), reused_keys_.load(), errors_.load(), rejected_.load(),
             failures_.load(), units_with_warnings_.load(), warnings_.load(), {}, filtered_.load()};
  for (const auto& [name, ods] : sources_) c.reused_keys_by_source[name] = 0;
  std::lock_guard lock(reused_m_);
  for (const auto& [name, n] : reused_by_source_) c.reused_keys_by_source[name] = n;
  return c;
}

void IngestService::audit_then(audit::Record rec, std::function<void(fhir::Status)> next) {
  if (!audit_) return next(fhir::Ok{});
  audit_->append(std::move(rec), [next = std::move(next)](fhir::Result<std::uint64_t> r) {
    if (!r)
      return next(Issue::make(ErrorCode::not_ready,
                              "the audit log could not be written; the unit was not acknowledged: resend it"));
    next(fhir::Ok{});
  });
}

void IngestService::submit(IngestBatch batch, std::function<void(fhir::Result<IngestReceipt>)> done) {
  {
    std::lock_guard lock(flight_m_);
    ++in_flight_;
  }
  auto answer = std::make_shared<Answer>(std::move(done));
  if (batch.dedupe_key.empty()) {
    boost::asio::post(pool_, [this, b = std::move(batch), answer]() mutable {
      run(std::move(b), answer, [this] { finished(); });
    });
    return;
  }
  // One unit per key at a time: the next waiting one starts when this one has finished.
  std::string key = batch.source;
  key.append("\n").append(batch.dedupe_key);
  auto release = [this, key]() {
    std::function<void()> next;
    {
      std::lock_guard lock(keys_m_);
      auto it = busy_keys_.find(key);
      if (it == busy_keys_.end()) return;
      if (it->second.empty()) {
        busy_keys_.erase(it);
        return;
      }
      next = std::move(it->second.front());
      it->second.erase(it->second.begin());
    }
    next();
  };
  auto start = [this, b = std::move(batch), answer, release]() mutable {
    boost::asio::post(pool_, [this, b = std::move(b), answer, release]() mutable {
      run(std::move(b), answer, [this, release] {
        release();
        finished();
      });
    });
  };
  {
    std::lock_guard lock(keys_m_);
    auto [it, first] = busy_keys_.try_emplace(key);
    if (!first) {
      it->second.push_back(std::move(start));
      return;
    }
  }
  start();
}

void IngestService::run(IngestBatch batch, std::shared_ptr<Answer> answer, std::function<void()> finish) {
  // Every outcome but an applied unit's: the answer, and the unit is finished.
  auto shared_done = std::make_shared<Answer>([answer, finish](fhir::Result<IngestReceipt> r) {
    (*answer)(std::move(r));
    finish();
  });
  const auto src = sources_.find(batch.source);
  if (src == sources_.end())
    return (*shared_done)(Issue::make(ErrorCode::internal_error, "unknown source system '" + batch.source + "'"));
  const std::string ods = src->second;
  const std::string nhs_number = fhir::trusted_nhs_number(batch.identity);
  // The audit record could not be written: nothing is acknowledged, the sender resends.
  auto audit_failed = [this, shared_done](Issue issue) {
    ++failures_;
    (*shared_done)(std::move(issue));
  };
  // An applied unit whose ingest-applied record is committed: counted, acknowledged, and then
  // its row's pending mark cleared, before the next unit with its key may start (so a resend
  // racing the acknowledgement is taken for a duplicate, not completed a second time).
  auto acknowledged = [this, answer, finish](IngestReceipt receipt, const IngestBatch& b,
                                             const std::vector<std::string>& warnings) {
    ++applied_;
    if (!warnings.empty()) note_warnings(b, warnings);
    const std::int64_t id = receipt.message_id;
    (*answer)(std::move(receipt));
    if (!audit_) return finish();
    store_.confirm(id, [finish, source = b.source, kind = b.kind, key = b.dedupe_key](fhir::Status c) {
      // The unit is applied, audited and acknowledged; only its mark stays. A later resend of
      // it would be completed again (a second ingest-applied record), never lost.
      if (!c)
        observe::log(Level::error, "an applied message keeps its pending mark: store.db could not commit",
                     {{"source", source}, {"kind", kind}, {"key", logged_key(key)}, {"reason", c.issue().diagnostics}});
      finish();
    });
  };

  // A unit that cannot be applied: stored as an error first, audited, then reported. `note`
  // says what of a unit failing for the gateway's own reasons was committed all the same.
  auto fail = [this, ods, nhs_number, shared_done](const IngestBatch& b, Issue issue, std::string note = {}) {
    // The locator names parts of the update; the sender knows them by its own locations.
    if (const std::string* at = key_location(b, issue.expression)) {
      issue.diagnostics = *at + ": " + issue.diagnostics;
      issue.expression = *at;
    }
    if (issue.expression == "retired" && !b.merge_location.empty()) issue.expression = b.merge_location;
    else if ((issue.expression.rfind("identity", 0) == 0 || issue.expression.rfind("Patient", 0) == 0 ||
              issue.expression == "survivor") &&
             !b.identity_location.empty())
      issue.expression = b.identity_location;
    if (transient(issue)) {
      // Not applied: the sender is asked to resend (AR/CE, ERR 207), and the attempt is on
      // record like every other ingest, with what was committed of it (issue #6).
      ++failures_;
      audit::Record rec = ingest_record(b.source, ods, b.kind, b.dedupe_key, "ingest-retry-later", 503, b.peer);
      rec.outcome_text = issue.diagnostics;
      rec.detail.note = std::move(note);
      if (!nhs_number.empty()) rec.detail.patients.push_back(nhs_number);
      return audit_then(std::move(rec), [issue, shared_done, source = b.source, key = b.dedupe_key](fhir::Status a) {
        if (!a)
          observe::log(Level::error, "a unit answered 'resend' could not be audited either",
                       {{"source", source}, {"key", logged_key(key)}, {"reason", a.issue().diagnostics}});
        (*shared_done)(issue);
      });
    }
    ++errors_;
    store::MessageWrite m;
    m.source = b.source;
    m.kind = b.kind;
    m.dedupe_key = b.dedupe_key;
    m.raw = b.raw;
    m.status = store::MessageStatus::error;
    m.error = issue.diagnostics;
    m.error_location = issue.expression;
    if (b.error_reply) m.reply = b.error_reply(issue);  // the AE the adapter sends, kept with the row
    audit::Record rec = ingest_record(b.source, ods, b.kind, b.dedupe_key, "ingest-error", 422, b.peer);
    rec.outcome_text = issue.diagnostics;
    if (!nhs_number.empty()) rec.detail.patients.push_back(nhs_number);
    store_.record(std::move(m), [this, rec = std::move(rec), issue, shared_done](fhir::Result<std::int64_t> id) mutable {
      if (!id) return (*shared_done)(std::move(id).issue());
      rec.detail.note = "message " + std::to_string(*id);
      audit_then(std::move(rec), [issue, shared_done](fhir::Status a) {
        if (!a) return (*shared_done)(std::move(a).issue());
        (*shared_done)(issue);
      });
    });
  };

  // 1. A resend of a unit already applied: the same answer, nothing applied again.
  const std::string hash = store::sha256(batch.raw);
  if (!batch.dedupe_key.empty()) {
    auto check = store_.resend_check(batch.source, batch.dedupe_key, hash);
    if (!check) return fail(batch, std::move(check).issue());
    const auto& dup = check->applied;
    // A pending unit whose ingest-applied record is in audit.db all the same (the gateway
    // stopped between that commit and clearing the mark) is a duplicate, its mark cleared.
    bool audited = false;
    if (dup && dup->pending) {
      auto found = applied_record_written(batch.source, batch.kind, batch.dedupe_key, *dup, nhs_number);
      if (!found) return fail(batch, std::move(found).issue());
      audited = *found;
    }
    if (dup && dup->pending && !audited) {
      // Applied, but answered "resend" because its audit record could not be written (step
      // 5): this resend completes it. Its data is committed already (the locator's part and
      // store.db's); the ingest-applied record is written now, then the acknowledgement.
      audit::Record rec = ingest_record(batch.source, ods, batch.kind, batch.dedupe_key, "ingest-applied", 200, batch.peer);
      if (!nhs_number.empty()) rec.detail.patients.push_back(nhs_number);
      rec.detail.note = "message " + std::to_string(dup->id) + ", completed by its resend";
      // The resources its apply stored: the same bytes map to the same resources.
      for (const Json& r : batch.resources)
        rec.detail.returned.push_back(std::string(r.string_at("resourceType")) + "/" + std::string(r.string_at("id")));
      IngestReceipt receipt{dup->id, false, {}, dup->patient_id};
      auto b = std::make_shared<IngestBatch>(std::move(batch));
      return audit_then(std::move(rec), [receipt, b, acknowledged, audit_failed](fhir::Status a) {
        if (!a) return audit_failed(std::move(a).issue());
        acknowledged(receipt, *b, b->warnings);
      });
    }
    if (dup) {
      ++duplicates_;
      IngestReceipt receipt{dup->id, true, dup->reply, dup->patient_id};
      audit::Record rec = ingest_record(batch.source, ods, batch.kind, batch.dedupe_key, "ingest-duplicate", 200, batch.peer);
      rec.detail.note = "resend of message " + std::to_string(dup->id);
      if (!nhs_number.empty()) rec.detail.patients.push_back(nhs_number);
      return audit_then(std::move(rec), [this, receipt, shared_done, audit_failed, answer, finish,
                                         clear = dup->pending](fhir::Status a) {
        if (!a) return audit_failed(std::move(a).issue());
        if (!clear) return (*shared_done)(receipt);
        (*answer)(receipt);
        store_.confirm(receipt.message_id, [finish](fhir::Status) { finish(); });
      });
    }
    if (check->key_seen) {
      // Real feeds reuse control ids: a new message, applied, but the sender is at fault.
      ++reused_keys_;
      {
        std::lock_guard lock(reused_m_);
        ++reused_by_source_[batch.source];
      }
      // The key is the sender's own message id (HL7: MSH-3|MSH-4|MSH-10), not patient data:
      // logged so the sender's team can find both messages (logged_key: without an NHS number).
      observe::log(Level::warn, "sender reused a message control id for different content",
                   {{"source", batch.source}, {"kind", batch.kind}, {"key", logged_key(batch.dedupe_key)}});
    }
  }

  // 2. Nothing is committed for a unit that store.db would refuse afterwards: its resources'
  // shape (unless its adapter checked them already: the check walks every element), and ids
  // another source holds, are checked first (store.db's apply checks the ownership again in
  // its own transaction; see 4 for a unit that loses that race).
  if (!batch.resources_checked)
    if (auto checked = adapters::check_batch_resources(batch.resources); !checked)
      return fail(batch, std::move(checked).issue());
  auto held = store_.holders(batch.resources);
  if (!held) return fail(batch, std::move(held).issue());
  for (const store::Store::Holder& h : *held)
    if (h.source != batch.source)
      return fail(batch, Issue::make(ErrorCode::conflict, h.resource + " belongs to another source system",
                                     h.resource.substr(0, h.resource.find('/'))));

  // 3. The record locator: identity, merge, encounters, pointer (one transaction).
  auto claim = locator::identity_from_patient(batch.identity, ods);
  if (!claim) {
    Issue i = std::move(claim).issue();
    i.expression = i.expression.empty() ? "identity" : i.expression;
    return fail(batch, std::move(i));
  }
  locator::IngestUpdate update;
  update.identity = std::move(*claim);
  // The patients whose records the unit updates (an Encounter by its visit number, a report
  // by its order number): the locator refuses the unit, before writing anything, unless each
  // is the unit's patient or merged into it (a reused number must not move another
  // patient's record); store.db's apply checks again in its own transaction.
  std::vector<std::string> owner_ids;
  for (const store::Store::Holder& h : *held) {
    if (!has_subject(h.resource.substr(0, h.resource.find('/')))) continue;
    const std::string* at = key_location(batch, h.resource);
    const std::string where = at ? *at : h.resource;
    if (std::find(owner_ids.begin(), owner_ids.end(), h.patient_id) != owner_ids.end()) continue;
    owner_ids.push_back(h.patient_id);
    update.owners.push_back(locator::IngestUpdate::Owner{h.patient_id, where});
  }
  for (const Json& id : batch.retired_identifiers) {
    locator::Identifier lid{std::string(id.string_at("system")), std::string(id.string_at("value")), ods};
    if (lid.system.empty() || lid.value.empty()) continue;
    update.retired.push_back(std::move(lid));
  }
  if (!batch.retired_identifiers.empty() && update.retired.empty())
    return fail(batch, Issue::make(ErrorCode::missing_value, "the merge names no prior identifier", "MRG-1"));
  for (const auto& [org, at] : batch.encounters) {
    auto when = fhir::parse_fhir_date(at);
    if (!when) return fail(batch, Issue::make(ErrorCode::invalid_value, "the encounter time is not a valid date", "PV1-44"));
    update.encounters.push_back(locator::Encounter{org, when->begin, ods});
  }
  std::set<std::string> types{"Patient"};
  for (const Json& r : batch.resources) {
    const std::string t(r.string_at("resourceType"));
    if (fhir::is_r4_resource_type(t)) types.insert(t);
  }
  locator::Pointer pointer;
  pointer.type_code = "371531000";
  pointer.type_display = "Report of clinical encounter";
  pointer.category_code = "419891008";
  pointer.category_display = "Record artifact";
  pointer.resource_types.assign(types.begin(), types.end());
  update.pointer = std::move(pointer);
  // The locator chooses the url once the source's earlier units' types have joined this one's.
  update.pointer_base_url = options_.public_base_url;

  auto outcome = locator_.ingest(update);
  if (!outcome) return fail(batch, std::move(outcome).issue());
  const std::string patient_id = outcome->resolution.patient_id;
  // An identity conflict the locator recorded, or a match by retired identifiers only, is news
  // for the sender's data quality team: the unit was filed apart from (or without moving an
  // identifier of, or without taking the demographics of) the record its identifiers named. A
  // warning like the mapping's, at the identity's location, with no patient data.
  const std::string at = batch.identity_location.empty() ? std::string("identity") : batch.identity_location;
  bool conflicted = false;
  // The text follows what happened: a unit the locator kept apart is a patient of its own; one
  // it matched went to that record, and the identifier another record holds stayed there.
  const locator::MatchOutcome how = outcome->resolution.outcome;
  const bool created = how == locator::MatchOutcome::created;
  const bool retired_only = how == locator::MatchOutcome::matched_retired_identifier;
  const std::string matched_by = how == locator::MatchOutcome::matched_nhs_number ? "matched by its NHS number"
                                 : how == locator::MatchOutcome::matched_identifier ? "matched by a local identifier"
                                 : retired_only ? "matched by a local identifier retired by a merge"
                                 : how == locator::MatchOutcome::matched_demographics ? "matched by demographics"
                                                                                        : "created";
  // A sender naming the patient only by identifiers a merge retired has not caught up with the
  // merge: its demographics are probably the retired record's, so the locator kept the
  // survivor's (filling only what it lacked). The unit is filed all the same; the sender is told.
  if (retired_only)
    batch.warnings.push_back(at + ": identifier retired by a merge: the patient's identifier names a record merged "
                                  "into another; filed under the surviving record, whose demographics this message "
                                  "did not replace (it only filled those the record lacked)");
  for (const std::string& c : outcome->resolution.conflicts) {
    conflicted = true;
    const bool nhs = c.rfind("nhs-number-mismatch", 0) == 0;
    std::string text = at + ": identity conflict: ";
    if (created && nhs)
      text += "the patient's identifiers or demographics name a record holding a different valid NHS number; "
              "filed as a patient of its own";
    else
      text += std::string(nhs ? "a local identifier belongs to a record holding a different valid NHS number"
                              : "a local identifier belongs to another patient record") +
              " and was left there; filed under the record the message " + matched_by;
    batch.warnings.push_back(text + ", conflict recorded for review (gw-locator conflicts)");
  }
  if ((conflicted || retired_only) && batch.reply_with_warnings)
    batch.reply = batch.reply_with_warnings(batch.warnings);

  // 4. store.db: the message and its resources (one transaction). The locator's part is
  // committed already and is idempotent (a resend or a replay applies it again unchanged), so
  // a unit store.db refuses now (another source took one of its ids since step 2) is stored as
  // an error like any other unit that cannot be applied, to be listed and replayed; one it
  // cannot commit is answered "resend", its audit record naming the locator's part.
  auto kept = std::make_shared<IngestBatch>();
  kept->source = batch.source;
  kept->kind = batch.kind;
  kept->dedupe_key = batch.dedupe_key;
  kept->raw = batch.raw;
  kept->identity_location = batch.identity_location;
  kept->merge_location = batch.merge_location;
  kept->key_locations = batch.key_locations;
  kept->error_reply = batch.error_reply;
  kept->peer = batch.peer;
  for (Json& r : batch.resources)
    if (has_subject(r.string_at("resourceType"))) {
      Json ref = Json::object();
      ref.set("reference", Json::string("Patient/" + patient_id));
      r.set("subject", std::move(ref));
    }
  store::MessageWrite m;
  m.source = batch.source;
  m.kind = batch.kind;
  m.dedupe_key = batch.dedupe_key;
  m.raw = std::move(batch.raw);
  m.reply = std::move(batch.reply);
  m.patient_id = patient_id;
  // The locator found each of them to be this patient or merged into it.
  m.subject_may_move_from = std::move(owner_ids);
  m.content_sha256 = hash;
  // Pending until its audit record is committed (step 5): a unit answered "resend" after
  // this commit is completed by the resend, not taken for a duplicate (step 1).
  m.pending = audit_ != nullptr;
  // An applied unit's warnings are kept in its row's error columns (status tells them apart
  // from a failure's): one per line, and the first one's location.
  for (const std::string& w : batch.warnings) {
    if (!m.error.empty()) m.error += '\n';
    m.error += w;
  }
  if (!batch.warnings.empty()) m.error_location = warning_location(batch.warnings.front());
  auto warnings = std::make_shared<std::vector<std::string>>(std::move(batch.warnings));
  audit::Record rec = ingest_record(batch.source, ods, batch.kind, batch.dedupe_key, "ingest-applied", 200, batch.peer);
  if (!nhs_number.empty()) rec.detail.patients.push_back(nhs_number);
  if (!outcome->retired_patient_id.empty()) rec.detail.note = "merged " + outcome->retired_patient_id + " into " + patient_id;
  std::string locator_note = "not applied; the record locator holds its identity, encounters and pointer (patient " +
                             patient_id + "), which its resend applies again unchanged";
  store_.apply(std::move(m), std::move(batch.resources),
               [this, rec = std::move(rec), patient_id, fail, kept, warnings, acknowledged, audit_failed,
                locator_note = std::move(locator_note)](fhir::Result<store::ApplyResult> r) mutable {
                 if (!r) return fail(*kept, std::move(r).issue(), std::move(locator_note));
                 rec.detail.returned = r->stored;
                 // The row's id, which a resend of a pending unit looks for (step 1).
                 rec.detail.note = "message " + std::to_string(r->message_id) +
                                   (rec.detail.note.empty() ? std::string() : "; " + rec.detail.note);
                 IngestReceipt receipt{r->message_id, false, {}, patient_id};
                 // 5. The audit record; the adapter acknowledges after it is committed, and
                 // only then is the unit counted as applied.
                 audit_then(std::move(rec), [receipt, kept, warnings, acknowledged, audit_failed](fhir::Status a) {
                   if (!a) return audit_failed(std::move(a).issue());
                   acknowledged(receipt, *kept, *warnings);
                 });
               });
}

fhir::Result<bool> IngestService::applied_record_written(const std::string& source, const std::string& kind,
                                                         const std::string& dedupe_key, const store::StoredMessage& m,
                                                         const std::string& nhs_number) const {
  if (!audit_) return false;
  const std::string target = kind.empty() ? dedupe_key : kind + " " + dedupe_key;
  const std::string note = "message " + std::to_string(m.id);
  audit::Query q;
  q.patient = nhs_number;  // indexed, so few records to read; the source's alone without one
  q.agent = source;
  q.subtype = "ingest-applied";
  // The record is made just before store.db's apply is queued, so a little before the row's
  // time: a minute covers any queue.
  q.from_ms = m.received_ms - 60'000;
  q.newest_first = false;
  q.count = 1000;
  // Bounded: past 10,000 of the source's records since then, taken as missing (at worst a
  // second ingest-applied record, never none).
  for (int page = 0; page < 10; ++page) {
    auto found = audit_->search(q);
    if (!found) return std::move(found).issue();
    for (const audit::Record& r : found->records)
      if (r.target == target && (r.detail.note == note || r.detail.note.rfind(note + ";", 0) == 0 ||
                                 r.detail.note.rfind(note + ",", 0) == 0))
        return true;
    // The rows decide, not the records that decoded: damaged ones can leave a page short.
    if (!found->next_after) return false;
    q.after_seq = found->next_after;
  }
  return false;
}

fhir::Result<IngestService::PendingSettled> IngestService::settle_pending(std::size_t max) {
  PendingSettled out;
  if (!audit_) return out;  // no audit log: nothing is marked pending
  std::vector<std::int64_t> clear;
  store::MessageQuery q;
  q.pending_only = true;
  q.limit = 1000;
  std::size_t looked = 0;
  while (looked < max) {
    q.limit = std::min<std::size_t>(1000, max - looked);
    auto rows = store_.list_messages(q);
    if (!rows) return std::move(rows).issue();
    for (const store::StoredMessage& m : *rows) {
      // Without the NHS number (the row keeps the locator's patient id): the source's records.
      auto found = applied_record_written(m.source, m.kind, m.dedupe_key, m, std::string());
      if (!found) return std::move(found).issue();
      if (*found) clear.push_back(m.id);
      else ++out.left;
    }
    looked += rows->size();
    if (rows->size() < q.limit) break;
    q.after_id = rows->back().id;
  }
  if (looked >= max) {
    auto total = store_.pending_count();
    if (!total) return std::move(total).issue();
    out.not_looked_at = std::max<std::int64_t>(0, *total - static_cast<std::int64_t>(looked));
  }
  // Queued together (the writer groups them into few commits), then waited for.
  std::mutex m;
  std::condition_variable cv;
  std::size_t waiting = clear.size();
  std::optional<fhir::Issue> failed;
  for (std::int64_t id : clear)
    store_.confirm(id, [&](fhir::Status st) {
      std::lock_guard lock(m);
      if (!st && !failed) failed = st.issue();
      if (--waiting == 0) cv.notify_all();
    });
  {
    std::unique_lock lock(m);
    cv.wait(lock, [&] { return waiting == 0; });
  }
  if (failed) return std::move(*failed);
  out.cleared = clear.size();
  return out;
}

void IngestService::note_warnings(const IngestBatch& batch, const std::vector<std::string>& warnings) {
  ++units_with_warnings_;
  warnings_ += warnings.size();
  // The locations only: the texts are fixed phrases, but a log line names no value at all.
  std::string locations;
  for (std::size_t i = 0; i < warnings.size() && i < 10; ++i) {
    if (!locations.empty()) locations += ',';
    locations += warning_location(warnings[i]);
  }
  observe::log(Level::warn, "unit applied with warnings from its mapping",
               {{"source", batch.source},
                {"kind", batch.kind},
                {"key", logged_key(batch.dedupe_key)},
                {"warnings", std::to_string(warnings.size())},
                {"locations", locations}});
}

void IngestService::record_failure(adapters::IngestFailure f, std::function<void(fhir::Status)> done_untracked) {
  std::function<void(fhir::Status)> done = tracked(std::move(done_untracked));
  const auto src = sources_.find(f.source);
  const std::string ods = src == sources_.end() ? std::string() : src->second;
  const bool rejected = f.rejected;
  const bool filtered = f.filtered && !f.rejected;
  store::MessageWrite m;
  m.source = f.source;
  m.kind = f.kind;
  m.dedupe_key = f.dedupe_key;
  m.raw = std::move(f.raw);
  m.status = filtered   ? store::MessageStatus::filtered
             : rejected ? store::MessageStatus::rejected
                        : store::MessageStatus::error;
  m.error = f.issue.diagnostics;
  m.error_location = f.issue.expression;
  m.reply = std::move(f.reply);
  // A filtered unit was received and kept, not applied: status 202 (accepted, not acted on).
  audit::Record rec = ingest_record(f.source, ods, f.kind, f.dedupe_key,
                                    filtered ? "ingest-filtered" : rejected ? "ingest-rejected" : "ingest-error",
                                    filtered ? 202 : rejected ? 400 : 422, f.peer);
  rec.outcome_text = f.issue.diagnostics;
  if (fhir::is_valid_nhs_number(f.nhs_number)) rec.detail.patients.push_back(f.nhs_number);
  // Counted once the store has answered, so that whoever sees the count can also list the message.
  store_.record(std::move(m), [this, rejected, filtered, rec = std::move(rec), done = std::move(done)](fhir::Result<std::int64_t> id) mutable {
    if (filtered) ++filtered_;
    else if (rejected) ++rejected_;
    else ++errors_;
    if (!id) return done(std::move(id).issue());
    rec.detail.note = "message " + std::to_string(*id);
    audit_then(std::move(rec), std::move(done));
  });
}

}  // namespace gw::ingest
