// SPDX-License-Identifier: Apache-2.0
// The locator's write rules (index_transaction.h), run over a backend's IndexTransaction
// primitives: identity resolution, pointer ownership and If-Match, A40 merges, objections,
// source systems, import records and ingest.
#include <algorithm>
#include <cctype>
#include <optional>
#include <set>
#include <string>

#include "fhir/nhs_number.h"
#include "gateway/locator/index_transaction.h"
#include "gateway/locator/locator.h"

namespace gw::locator {

using fhir::ErrorCode;
using fhir::Issue;

namespace {

fhir::Issue patient_not_found(const std::string& expr) {
  return Issue::make(ErrorCode::not_found, "no patient with this id in the record locator", expr);
}

// How a claim's demographics meet a record's (the locator.h contract).
//   missing: fields the record lacks are filled, the rest stand (a merge: the survivor's own
//            demographics are the ones kept);
//   newer:   every field the claim carries replaces the record's (resolve: the most recent
//            update wins, as a master patient index does without an authoritative source, so
//            a new GP practice, address or surname reaches the index and the access policy).
// A claim that resolve matches only by identifiers a merge retired takes `missing` too: its
// sender still files the patient under the retired record, whose (probably stale) demographics
// must not undo the merge's choice of the survivor's.
// Either way an empty field in `d` clears nothing (a source that does not send a field has not
// said it is gone), and the NHS number is only set where the record has none, or trusted where
// the record's is untrusted: ingest never replaces one NHS number with another. Nor is "no
// information" news: gender "unknown" (HL7 v2 PID-8 "U") never replaces a known gender, and a
// name that differs only in case or accents (a PAS sending "BUTLER^ALEX") keeps the record's
// spelling.
enum class Take { missing, newer };

bool same_name(const std::string& a, const std::string& b) { return normalise_name(a) == normalise_name(b); }

bool same_names(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), same_name);
}

// Applies `d` to `p` as `take` says. Returns the names of the Demographics fields that changed
// (empty: nothing did). Precondition (callers): a trusted d.nhs_number is held by no other
// active record.
std::vector<std::string> take_demographics(PatientRecord& p, const Demographics& d, bool d_trusted, Take take) {
  Demographics& mine = p.demographics;
  std::vector<std::string> changed;
  if (!d.nhs_number.empty() && (mine.nhs_number.empty() || (d_trusted && !p.nhs_number_trusted))) {
    mine.nhs_number = d.nhs_number;
    mine.nhs_number_verification = d.nhs_number_verification;
    p.nhs_number_trusted = d_trusted;
    changed.push_back("nhs_number");
  } else if (mine.nhs_number == d.nhs_number && mine.nhs_number_verification.empty() &&
             !d.nhs_number_verification.empty()) {
    mine.nhs_number_verification = d.nhs_number_verification;
    changed.push_back("nhs_number_verification");
  }
  const auto take_field = [&](auto& field, const auto& from, const char* name) {
    if (from.empty() || field == from || (take == Take::missing && !field.empty())) return;
    field = from;
    changed.push_back(name);
  };
  if (mine.family.empty() || !same_name(mine.family, d.family)) take_field(mine.family, d.family, "family");
  if (mine.given.empty() || !same_names(mine.given, d.given)) take_field(mine.given, d.given, "given");
  take_field(mine.other_names, d.other_names, "other_names");
  take_field(mine.birth_date, d.birth_date, "birth_date");
  if (mine.gender.empty() || d.gender != "unknown") take_field(mine.gender, d.gender, "gender");
  take_field(mine.postcode, d.postcode, "postcode");
  take_field(mine.gp_practice_ods, d.gp_practice_ods, "gp_practice_ods");
  take_field(mine.deceased, d.deceased, "deceased");
  return changed;
}

struct PendingConflict {
  std::string patient_id;  // the record the evidence pointed at
  std::string kind;
  std::string why;         // completed with the claim's own record id once known
  std::string tail;        // appended after that id
};

}  // namespace

fhir::Result<Resolution> apply_resolve(IndexTransaction& tx, const IdentityClaim& claim, const DemographicRule& rule,
                                       const std::string& now) {
  if (auto s = validate_claim(claim); !s) return std::move(s).issue();
  const Demographics& d = claim.demographics;
  const bool trusted = !d.nhs_number.empty() && fhir::is_valid_nhs_number(d.nhs_number);

  // The claim's identifiers, each once, with their sender filled in.
  std::vector<Identifier> ids;
  for (const Identifier& id : claim.identifiers) {
    const bool seen = std::any_of(ids.begin(), ids.end(),
                                  [&](const Identifier& x) { return x.system == id.system && x.value == id.value; });
    if (seen) continue;
    ids.push_back(id);
    if (ids.back().source.empty()) ids.back().source = claim.source_ods;
  }
  // Who each identifier already belongs to (the active record after merges), and whether a
  // merge retired it.
  std::vector<std::optional<PatientRecord>> owners(ids.size());
  std::vector<bool> retired(ids.size(), false);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    auto owner = tx.identifier_owner(ids[i].system, ids[i].value);
    if (!owner) return std::move(owner).issue();
    if (!*owner) continue;
    auto rec = final_record(tx, (*owner)->patient_id);
    if (!rec) return std::move(rec).issue();
    owners[i] = std::move(*rec);
    retired[i] = (*owner)->retired;
  }
  // True when every identifier of the claim naming `id` is one a merge retired.
  const auto only_retired_name = [&](const std::string& id) {
    for (std::size_t i = 0; i < ids.size(); ++i)
      if (owners[i] && owners[i]->id == id && !retired[i]) return false;
    return true;
  };

  Resolution res;
  std::optional<PatientRecord> match;
  std::vector<PendingConflict> pending;
  const auto nhs_differs = [&](const PatientRecord& p) {
    return trusted && p.nhs_number_trusted && p.demographics.nhs_number != d.nhs_number;
  };

  // 1. A trusted NHS number wins.
  if (trusted) {
    auto id = tx.active_patient_with_nhs_number(d.nhs_number);
    if (!id) return std::move(id).issue();
    if (*id) {
      auto rec = tx.patient(**id);
      if (!rec) return std::move(rec).issue();
      if (!*rec) return Issue::make(ErrorCode::internal_error, "NHS number index points at a missing patient");
      match = std::move(*rec);
      res.outcome = MatchOutcome::matched_nhs_number;
    }
  }
  // 2. Else the first identifier (in claim order) the index already knows. When its record
  //    holds a different trusted NHS number the two are different people as far as we can
  //    tell: nothing is linked, the claim gets its own record and the conflict is recorded.
  bool contradicted = false;
  if (!match) {
    for (std::size_t i = 0; i < ids.size(); ++i) {
      if (!owners[i]) continue;
      if (nhs_differs(*owners[i])) {
        contradicted = true;
        pending.push_back({owners[i]->id, "nhs-number-mismatch",
                           "a local identifier (system " + ids[i].system + ") sent by " + claim.source_ods +
                               " belongs to patient " + owners[i]->id +
                               ", which holds a different valid NHS number; the claim was kept apart as patient ",
                           ""});
      } else {
        match = *owners[i];
        res.outcome = only_retired_name(match->id) ? MatchOutcome::matched_retired_identifier
                                                   : MatchOutcome::matched_identifier;
      }
      break;
    }
  }
  // 3. Else the demographic rule, when it applies and matches exactly one active record.
  if (!match && !contradicted && demographic_rule_applies(rule, d)) {
    auto candidates = tx.demographic_matches(d, rule, 2);
    if (!candidates) return std::move(candidates).issue();
    if (candidates->size() == 1) {
      auto rec = tx.patient(candidates->front());
      if (!rec) return std::move(rec).issue();
      if (!*rec) return Issue::make(ErrorCode::internal_error, "demographic match points at a missing patient");
      if (nhs_differs(**rec)) {
        pending.push_back({(*rec)->id, "nhs-number-mismatch",
                           "demographics sent by " + claim.source_ods + " match patient " + (*rec)->id +
                               ", which holds a different valid NHS number; the claim was kept apart as patient ",
                           ""});
      } else {
        match = std::move(*rec);
        res.outcome = MatchOutcome::matched_demographics;
      }
    }
  }

  PatientRecord target;
  // A matched record changes (new version) when its demographics change or it gains an
  // identifier: both are part of the Patient resource.
  if (match) {
    target = std::move(*match);
    const bool stale = res.outcome == MatchOutcome::matched_retired_identifier;
    res.updated_fields = take_demographics(target, d, trusted, stale ? Take::missing : Take::newer);
    if (std::any_of(owners.begin(), owners.end(), [](const auto& o) { return !o; }))
      res.updated_fields.push_back("identifier");
    if (!res.updated_fields.empty()) {
      ++target.version;
      target.last_updated = now;
      if (auto s = tx.update_patient(target); !s) return std::move(s).issue();
    }
  } else {
    // 4. Create.
    target.id = new_opaque_id();
    target.demographics = d;
    target.nhs_number_trusted = trusted;
    target.version = 1;
    target.last_updated = now;
    if (auto s = tx.insert_patient(target); !s) return std::move(s).issue();
    res.outcome = MatchOutcome::created;
  }
  res.patient_id = target.id;

  // Identifiers: new ones are linked; one held by another record stays there (never moved
  // by ingest: only a merge moves identifiers) and the disagreement is recorded.
  std::set<std::string> reported;
  for (const auto& c : pending) reported.insert(c.patient_id);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (!owners[i]) {
      if (auto s = tx.insert_identifier(target.id, ids[i]); !s) return std::move(s).issue();
      continue;
    }
    if (owners[i]->id == target.id || reported.count(owners[i]->id)) continue;
    reported.insert(owners[i]->id);
    const bool nhs = nhs_differs(*owners[i]);
    pending.push_back({owners[i]->id, nhs ? "nhs-number-mismatch" : "identifier-mismatch",
                       "a local identifier (system " + ids[i].system + ") sent by " + claim.source_ods +
                           " belongs to patient " + owners[i]->id +
                           (nhs ? ", which holds a different valid NHS number," : ",") + " but the claim resolved (" +
                           std::string(outcome_name(res.outcome)) + ") to patient ",
                       "; the identifier was left where it was"});
  }
  for (PendingConflict& c : pending) {
    Conflict row;
    row.patient_id = c.patient_id;
    row.source_ods = claim.source_ods;
    row.kind = c.kind;
    row.detail = c.why + target.id + c.tail;
    row.recorded_at = now;
    if (auto s = tx.insert_conflict(row); !s) return std::move(s).issue();
    res.conflicts.push_back(c.kind + ": " + row.detail);
  }
  return res;
}

namespace {

// `patient_is_active`: the caller has just resolved p.patient_id to an active record (import),
// so it is not read again.
fhir::Result<Pointer> put_pointer_checked(IndexTransaction& tx, const std::string& acting, Pointer p,
                                          const std::string& now, bool patient_is_active) {
  if (acting.empty())
    return Issue::make(ErrorCode::forbidden, "the acting source system has no ODS code", "source_ods");
  if (p.source_ods.empty()) p.source_ods = acting;
  if (p.source_ods != acting)
    return Issue::make(ErrorCode::forbidden, "a source system may only write pointers it is custodian of",
                       "source_ods");
  if (auto s = validate_pointer(p); !s) return std::move(s).issue();
  if (!patient_is_active) {
    auto patient = final_record(tx, p.patient_id);
    if (!patient) return std::move(patient).issue();
    if (!*patient) return patient_not_found("patient_id");
    p.patient_id = (*patient)->id;  // a pointer on a retired record goes to the survivor
  }
  p.last_updated = now;
  p.version = 1;
  if (p.id.empty()) {
    p.id = new_opaque_id();
    if (auto s = tx.insert_pointer(p); !s) return std::move(s).issue();
    return p;
  }
  // A client-chosen id: usually new (an import), so try the insert before looking.
  auto inserted = tx.insert_pointer_if_new(p);
  if (!inserted) return std::move(inserted).issue();
  if (*inserted) return p;
  auto existing = tx.pointer(p.id);
  if (!existing) return std::move(existing).issue();
  if (!*existing) return Issue::make(ErrorCode::internal_error, "pointer vanished during its update");
  if ((*existing)->source_ods != acting)
    return Issue::make(ErrorCode::forbidden, "this pointer belongs to another source system", "id");
  p.version = (*existing)->version + 1;
  if (auto s = tx.update_pointer(p); !s) return std::move(s).issue();
  return p;
}

// The If-Match check of a pointer write, against the version this transaction sees: inside
// the writer's transaction, so no other write can come between the check and the write.
fhir::Status check_version(const std::optional<Pointer>& current, const std::optional<VersionMatch>& if_match) {
  if (!if_match) return fhir::Ok{};
  if (!current)
    return Issue::make(ErrorCode::precondition_failed,
                       "If-Match names a version, but there is no such DocumentReference", "If-Match");
  const auto& v = if_match->versions;
  if (if_match->any || std::find(v.begin(), v.end(), current->version) != v.end()) return fhir::Ok{};
  return Issue::make(ErrorCode::precondition_failed,
                     "If-Match names another version than the current W/\"" + std::to_string(current->version) +
                         "\"; read it again and retry",
                     "If-Match");
}

// The url of the pointer ingest keeps per source and patient, from the resource types it holds
// (all of them, the earlier units' included: a unit without a visit must not turn a pointer to
// a source's Encounters into one to the Patient alone): the Encounters when it holds any, where
// a reader of the record starts, else the DiagnosticReports, else the Patient. "{patient}" is
// filled in afterwards.
std::string ingest_pointer_url(const std::string& base, const std::vector<std::string>& resource_types) {
  const auto holds = [&](const char* type) {
    return std::find(resource_types.begin(), resource_types.end(), type) != resource_types.end();
  };
  const char* first = holds("Encounter") ? "Encounter" : holds("DiagnosticReport") ? "DiagnosticReport" : nullptr;
  return first ? base + "/" + first + "?patient={patient}" : base + "/Patient/{patient}";
}

// `url` with every "{patient}" replaced by `patient`.
std::string with_patient(std::string url, const std::string& patient) {
  for (std::size_t at = url.find("{patient}"); at != std::string::npos; at = url.find("{patient}", at + patient.size()))
    url.replace(at, 9, patient);
  return url;
}

// Part of apply_merge: the pointers of `from` whose url ingest built (exactly what
// ingest_pointer_url() makes of their resource types under `base`, naming `from`), which the
// merge must re-point at the survivor. Any other url was given by a source (the FHIR pointer
// API) and is the source's to change. None without a base: nothing can be recognised.
fhir::Result<std::vector<std::string>> ingest_built_pointers(IndexTransaction& tx, const std::string& from,
                                                             const std::string& base) {
  std::vector<std::string> ids;
  if (base.empty()) return ids;
  auto held = tx.pointers_of(from);
  if (!held) return std::move(held).issue();
  for (const Pointer& p : *held)
    if (p.url == with_patient(ingest_pointer_url(base, p.resource_types), from)) ids.push_back(p.id);
  return ids;
}

}  // namespace

fhir::Result<Pointer> apply_put_pointer(IndexTransaction& tx, const std::string& acting, Pointer p,
                                        const std::optional<VersionMatch>& if_match, const std::string& now) {
  if (if_match) {
    std::optional<Pointer> current;  // a create (no id yet) has no version to match
    if (!p.id.empty()) {
      auto read = tx.pointer(p.id);
      if (!read) return std::move(read).issue();
      current = std::move(*read);
    }
    if (auto s = check_version(current, if_match); !s) return std::move(s).issue();
  }
  return put_pointer_checked(tx, acting, std::move(p), now, false);
}

fhir::Status apply_delete_pointer(IndexTransaction& tx, const std::string& acting, const std::string& pointer_id,
                                  const std::optional<VersionMatch>& if_match) {
  if (acting.empty())
    return Issue::make(ErrorCode::forbidden, "the acting source system has no ODS code", "source_ods");
  auto existing = tx.pointer(pointer_id);
  if (!existing) return std::move(existing).issue();
  if (auto s = check_version(*existing, if_match); !s) return s;
  if (!*existing) return Issue::make(ErrorCode::not_found, "no pointer with this id", "id");
  if ((*existing)->source_ods != acting)
    return Issue::make(ErrorCode::forbidden, "this pointer belongs to another source system", "id");
  return tx.delete_pointer(pointer_id);
}

fhir::Status apply_merge(IndexTransaction& tx, const std::string& retired_id, const std::string& survivor_id,
                         const std::string& source_ods, const std::string& now, const std::string& pointer_base_url) {
  if (retired_id == survivor_id)
    return Issue::make(ErrorCode::invalid_value, "a record cannot be merged into itself", "survivor");
  auto retired = tx.patient(retired_id);
  if (!retired) return std::move(retired).issue();
  if (!*retired) return patient_not_found("retired");
  auto survivor = final_record(tx, survivor_id);
  if (!survivor) return std::move(survivor).issue();
  if (!*survivor) return patient_not_found("survivor");
  PatientRecord& r = **retired;
  PatientRecord& s = **survivor;
  if (r.merged_into) {
    auto where = final_record(tx, r.id);
    if (!where) return std::move(where).issue();
    if (*where && (*where)->id == s.id) return fhir::Ok{};  // the same A40 again
    return Issue::make(ErrorCode::conflict, "the retired record was already merged into another record", "retired");
  }
  if (s.id == r.id)
    return Issue::make(ErrorCode::conflict, "the survivor was merged into the retired record: a merge cycle",
                       "survivor");
  if (r.nhs_number_trusted && s.nhs_number_trusted && r.demographics.nhs_number != s.demographics.nhs_number) {
    // Refused, and on record: two valid NHS numbers said to be one person is for a data
    // quality team to resolve at the sources.
    Conflict c;
    c.patient_id = s.id;
    c.source_ods = source_ods;
    c.kind = "nhs-number-mismatch";
    c.detail = "a merge of patient " + r.id + " into patient " + s.id + " sent by " + source_ods +
               " was refused: the two records hold different valid NHS numbers";
    c.recorded_at = now;
    tx.keep_on_failure.push_back(std::move(c));
    return Issue::make(ErrorCode::conflict, "the two records hold different valid NHS numbers and are never merged",
                       "survivor");
  }

  r.merged_into = s.id;
  ++r.version;
  r.last_updated = now;
  if (auto st = tx.update_patient(r); !st) return st;  // first, so the survivor may take its NHS number
  if (auto st = tx.repoint_retired(r.id, s.id, now); !st) return st;
  take_demographics(s, r.demographics, r.nhs_number_trusted, Take::missing);
  s.objection = s.objection || r.objection;  // a recorded dissent survives the merge
  ++s.version;
  s.last_updated = now;
  if (auto st = tx.update_patient(s); !st) return st;
  if (auto st = tx.move_identifiers(r.id, s.id, source_ods); !st) return st;
  // Every source's pointers move, and those whose url the gateway built name the survivor
  // (retrieving through the retired id still works, clinical routes follow merges, but it is
  // stale, and shows callers an id that is no longer the record's).
  auto rebuilt = ingest_built_pointers(tx, r.id, pointer_base_url);
  if (!rebuilt) return std::move(rebuilt).issue();
  if (auto st = tx.move_pointers(r.id, s.id, now); !st) return st;
  for (const std::string& id : *rebuilt) {
    auto moved = tx.pointer(id);  // as moved: version and last_updated already bumped
    if (!moved) return std::move(moved).issue();
    if (!*moved) return Issue::make(ErrorCode::internal_error, "pointer vanished during a merge");
    Pointer& p = **moved;
    p.url = with_patient(ingest_pointer_url(pointer_base_url, p.resource_types), s.id);
    if (auto st = tx.update_pointer(p); !st) return st;
  }
  if (auto st = move_care_relationships(tx, r.id, s.id); !st) return st;
  return tx.insert_merge(r.id, s.id, source_ods, now);
}

namespace {

// The objection on `patient_id`'s final record (merges followed): that record's id when this
// changed it, nullopt when it already was so.
fhir::Result<std::optional<std::string>> put_objection(IndexTransaction& tx, const std::string& patient_id,
                                                       bool objection, const std::string& now) {
  auto rec = final_record(tx, patient_id);
  if (!rec) return std::move(rec).issue();
  if (!*rec) return patient_not_found("patient_id");
  if ((*rec)->objection == objection) return std::optional<std::string>();
  (*rec)->objection = objection;
  ++(*rec)->version;
  (*rec)->last_updated = now;
  if (auto st = tx.update_patient(**rec); !st) return std::move(st).issue();
  return std::optional<std::string>((*rec)->id);
}

}  // namespace

fhir::Status apply_set_objection(IndexTransaction& tx, const std::string& patient_id, bool objection,
                                 const std::string& now) {
  auto put = put_objection(tx, patient_id, objection, now);
  if (!put) return std::move(put).issue();
  return fhir::Ok{};
}

fhir::Result<bool> apply_change_objection(IndexTransaction& tx, ObjectionChange change, const std::string& now) {
  if (auto st = check_required(change.id, kMaxIdBytes, "id"); !st) return std::move(st).issue();
  if (auto st = check_len(change.nhs_number, kMaxCodeBytes, "nhs_number"); !st) return std::move(st).issue();
  if (auto st = check_len(change.by, kMaxTextBytes, "by"); !st) return std::move(st).issue();
  if (auto st = check_len(change.note, kMaxObjectionNoteBytes, "note"); !st) return std::move(st).issue();
  if (auto st = check_len(change.request_id, kMaxTextBytes, "request_id"); !st) return std::move(st).issue();
  auto put = put_objection(tx, change.patient_id, change.objection, now);
  if (!put) return std::move(put).issue();
  if (!*put) return false;
  change.patient_id = std::move(**put);
  if (auto st = tx.insert_objection_change(change); !st) return std::move(st).issue();
  return true;
}

fhir::Status apply_upsert_source_system(IndexTransaction& tx, const SourceSystem& s, const std::string& now) {
  if (auto st = check_required(s.ods_code, kMaxCodeBytes, "ods_code"); !st) return st;
  if (auto st = check_len(s.name, kMaxTextBytes, "name"); !st) return st;
  if (auto st = check_len(s.adapter, kMaxUrlBytes, "adapter"); !st) return st;
  if (auto st = check_len(s.endpoint, kMaxUrlBytes, "endpoint"); !st) return st;
  return tx.upsert_source_system(s, now);
}

namespace {

Issue within_identity(Issue issue) {
  issue.expression = issue.expression.empty() ? "identity" : "identity." + issue.expression;
  return issue;
}

Issue within_pointer(Issue issue, std::size_t k) {
  const std::string at = "pointers[" + std::to_string(k) + "]";
  issue.expression = issue.expression.empty() ? at : at + "." + issue.expression;
  return issue;
}

// The checks put_pointer_checked makes before reading the index, for pointer k of `record`.
fhir::Status check_import_pointer(const ImportRecord& record, std::size_t k) {
  Pointer p = record.pointers[k];
  const std::string acting = p.source_ods.empty() ? record.identity.source_ods : p.source_ods;
  if (acting.empty()) return Issue::make(ErrorCode::forbidden, "the acting source system has no ODS code", "source_ods");
  p.patient_id = "resolved";  // filled by the import once the identity is resolved
  return validate_pointer(p);
}

}  // namespace

fhir::Status check_import_record(const ImportRecord& record) {
  if (record.pointers.size() > kMaxPointersPerRecord)
    return Issue::make(ErrorCode::invalid_value,
                       "more than " + std::to_string(kMaxPointersPerRecord) + " pointers in one record", "pointers");
  if (auto s = validate_claim(record.identity); !s) return within_identity(std::move(s).issue());
  for (std::size_t k = 0; k < record.pointers.size(); ++k)
    if (auto s = check_import_pointer(record, k); !s) return within_pointer(std::move(s).issue(), k);
  return fhir::Ok{};
}

fhir::Result<Resolution> apply_import_record(IndexTransaction& tx, const ImportRecord& record,
                                             const DemographicRule& rule, const std::string& now) {
  if (record.pointers.size() > kMaxPointersPerRecord)
    return Issue::make(ErrorCode::invalid_value,
                       "more than " + std::to_string(kMaxPointersPerRecord) + " pointers in one record", "pointers");
  auto res = apply_resolve(tx, record.identity, rule, now);
  if (!res) return within_identity(std::move(res).issue());
  for (std::size_t k = 0; k < record.pointers.size(); ++k) {
    Pointer p = record.pointers[k];
    p.patient_id = res->patient_id;
    const std::string source = p.source_ods.empty() ? record.identity.source_ods : p.source_ods;
    auto put = put_pointer_checked(tx, source, std::move(p), now, true);
    if (!put) return within_pointer(std::move(put).issue(), k);
  }
  return res;
}

namespace {

// The active record a local identifier names (its owner, or the survivor its owner was merged
// into), or none.
fhir::Result<std::optional<std::string>> active_owner(IndexTransaction& tx, const Identifier& id) {
  auto owner = tx.identifier_owner(id.system, id.value);
  if (!owner) return std::move(owner).issue();
  if (!*owner) return std::optional<std::string>();
  auto rec = final_record(tx, (*owner)->patient_id);
  if (!rec) return std::move(rec).issue();
  if (!*rec) return std::optional<std::string>();
  return std::optional<std::string>((*rec)->id);
}

// The active record a retired identifier of an A40 names: a trusted NHS number, else a local
// identifier (whose owner may itself be retired already: followed to its survivor).
fhir::Result<std::optional<std::string>> retired_record(IndexTransaction& tx, const Identifier& id) {
  if (id.system == kNhsNumberSystem) {
    if (!fhir::is_valid_nhs_number(id.value)) return std::optional<std::string>();
    return tx.active_patient_with_nhs_number(id.value);
  }
  return active_owner(tx, id);
}

// The id of the one pointer ingest keeps per patient and source: "<patient id>-<source ODS>"
// (other characters as '-'), or "" when that would be longer than a FHIR id.
std::string source_pointer_id(const std::string& patient, const std::string& source_ods) {
  if (patient.size() + 1 + source_ods.size() > kMaxIdBytes) return {};
  std::string id = patient + "-";
  for (char c : source_ods) id += std::isalnum(static_cast<unsigned char>(c)) ? c : '-';
  return id;
}

// For an A40: the record to merge `retired` into before the survivor's claim is resolved, when
// resolving would find `retired` itself (its trusted NHS number, else the first identifier
// the index knows, is the retired record's) although another of the claim's identifiers names
// another active record. None otherwise: resolving finds the survivor as it is.
fhir::Result<std::optional<std::string>> survivor_for_merge(IndexTransaction& tx, const IdentityClaim& claim,
                                                            const std::string& retired) {
  const std::string& nhs = claim.demographics.nhs_number;
  std::optional<std::string> first;  // what resolving would match by NHS number or identifier
  if (!nhs.empty() && fhir::is_valid_nhs_number(nhs)) {
    auto held = tx.active_patient_with_nhs_number(nhs);
    if (!held) return std::move(held).issue();
    first = std::move(*held);
  }
  std::optional<std::string> other;
  for (const Identifier& id : claim.identifiers) {
    auto owner = active_owner(tx, id);
    if (!owner) return std::move(owner).issue();
    if (!*owner) continue;
    if (!first) first = **owner;
    if (**owner != retired && !other) other = **owner;
  }
  if (first != retired) return std::optional<std::string>();
  return other;
}

}  // namespace

fhir::Result<IngestOutcome> apply_ingest(IndexTransaction& tx, const IngestUpdate& u, const DemographicRule& rule,
                                         const std::string& now) {
  if (u.retired.size() > kMaxIdentifiers)
    return Issue::make(ErrorCode::invalid_value,
                       "more than " + std::to_string(kMaxIdentifiers) + " retired identifiers", "retired");
  if (u.encounters.size() > kMaxEncountersPerPatient)
    return Issue::make(ErrorCode::invalid_value,
                       "more than " + std::to_string(kMaxEncountersPerPatient) + " encounters in one update",
                       "encounters");
  // The retired record is looked up before the survivor is resolved: resolving may add the
  // survivor's identifiers, and the retired identifiers must name the record as it was.
  std::optional<std::string> retired;
  for (const Identifier& id : u.retired) {
    if (auto s = check_len(id.system, kMaxUriBytes, "retired.system"); !s) return std::move(s).issue();
    if (auto s = check_len(id.value, kMaxTextBytes, "retired.value"); !s) return std::move(s).issue();
    auto found = retired_record(tx, id);
    if (!found) return std::move(found).issue();
    if (*found) {
      retired = std::move(*found);
      break;
    }
  }
  if (!u.retired.empty() && !retired)
    return Issue::make(ErrorCode::not_found, "no patient in the record locator holds the prior identifiers to merge",
                       "retired");
  // The survivor's identity may still name the retired record: a PAS moves the retired MRN's
  // NHS number to the surviving MRN and sends it in the A40's PID-3. Resolving would then find
  // the retired record itself and take the merge for one done already. When the claim's NHS
  // number, or else its first known identifier, names the retired record while another of its
  // identifiers names another record, that record is the survivor: the merge is made first
  // (the survivor takes the NHS number), and resolving then finds the survivor.
  if (retired) {
    auto pick = survivor_for_merge(tx, u.identity, *retired);
    if (!pick) return std::move(pick).issue();
    if (*pick)
      if (auto s = apply_merge(tx, *retired, **pick, u.identity.source_ods, now, u.pointer_base_url); !s)
        return std::move(s).issue();
  }

  IngestOutcome out;
  auto res = apply_resolve(tx, u.identity, rule, now);
  if (!res) return within_identity(std::move(res).issue());
  out.resolution = std::move(*res);
  const std::string& patient = out.resolution.patient_id;
  if (retired) {
    out.retired_patient_id = *retired;
    if (*retired != patient)  // equal: the merge was done already (the identifiers moved)
      if (auto s = apply_merge(tx, *retired, patient, u.identity.source_ods, now, u.pointer_base_url); !s)
        return std::move(s).issue();
  }
  // Records already filed under a patient stay that patient's, unless a merge into the
  // resolved one explains the move (checked after this update's own merge).
  for (const IngestUpdate::Owner& o : u.owners) {
    if (o.patient_id == patient) continue;
    auto owner = final_record(tx, o.patient_id);
    if (!owner) return std::move(owner).issue();
    if (*owner && (*owner)->id == patient) continue;
    return Issue::make(ErrorCode::conflict,
                       o.where + " names another patient's record (a visit or order number is one patient's): "
                                 "not applied",
                       o.where);
  }
  for (const Encounter& e : u.encounters)
    if (auto s = apply_record_encounter(tx, u.identity.source_ods, patient, e.organisation_ods, e.at); !s)
      return std::move(s).issue();
  if (u.pointer) {
    Pointer p = *u.pointer;
    p.patient_id = patient;
    // One pointer per source and patient, whatever each unit held: a stable id, the resource
    // types of every unit so far, and (with a base URL) the url those types choose. The
    // pointer the source kept for a record this unit merges into the patient (moved to the
    // patient by the merge) is folded into it: its resource types join (and so choose the url
    // too), and it goes, so the merge leaves the source one pointer, not two.
    const std::string& source = u.identity.source_ods;
    std::string folded;  // that pointer's id while it is known to exist
    if (p.id.empty()) p.id = source_pointer_id(patient, source);
    if (!p.id.empty()) {
      if (!out.retired_patient_id.empty() && out.retired_patient_id != patient)
        folded = source_pointer_id(out.retired_patient_id, source);
      for (const std::string& id : {p.id, folded}) {
        if (id.empty()) continue;
        auto existing = tx.pointer(id);
        if (!existing) return std::move(existing).issue();
        if (!*existing || (*existing)->source_ods != source) {
          if (id == folded) folded.clear();
          continue;
        }
        for (const std::string& t : (*existing)->resource_types)
          if (std::find(p.resource_types.begin(), p.resource_types.end(), t) == p.resource_types.end())
            p.resource_types.push_back(t);
      }
      std::sort(p.resource_types.begin(), p.resource_types.end());
      if (p.resource_types.size() > kMaxResourceTypes) p.resource_types.resize(kMaxResourceTypes);
    }
    if (!u.pointer_base_url.empty()) p.url = ingest_pointer_url(u.pointer_base_url, p.resource_types);
    p.url = with_patient(std::move(p.url), patient);
    auto put = put_pointer_checked(tx, source, std::move(p), now, false);
    if (!put) return std::move(put).issue();
    out.pointer = std::move(*put);
    if (!folded.empty())
      if (auto s = tx.delete_pointer(folded); !s) return std::move(s).issue();
  }
  return out;
}

}  // namespace gw::locator
