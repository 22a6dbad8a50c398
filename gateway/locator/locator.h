// SPDX-License-Identifier: Apache-2.0
// The record locator index (issue #3): who each patient is (NHS number and every local
// identifier) and which source systems hold records about them. This interface is the whole
// contract the rest of the gateway sees; it is narrow so that a PostgreSQL backend can sit
// behind it later. One conformance suite (tests/gateway/locator/conformance_test.cpp) runs
// against every implementation: SqliteLocator and FakeLocator.
//
// Calls block. They must never run on a network thread: the HTTP layer reaches them through
// AsyncLocator (async_locator.h), which runs them on the locator's own thread pool and resumes
// the caller's coroutine on its strand. Writes complete only after their transaction has
// committed (for SqliteLocator: after the group commit that carried them).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fhir/date_range.h"
#include "fhir/nhs_number.h"
#include "fhir/result.h"

namespace gw::locator {

using fhir::kNhsNumberSystem;  // fhir/nhs_number.h

// A local identifier: the assigning authority's namespace URI (or OID urn) and value, as sent
// by source system `source` (ODS code). NHS numbers are not stored here.
struct Identifier {
  std::string system;
  std::string value;
  std::string source;  // ODS code of the source system that sent it; empty when unknown
};

// A Patient.name besides the primary one (FHIR R4 HumanName: use, family, given), e.g. a
// maiden or previous name.
struct HumanName {
  std::string use;                 // FHIR name-use code (usual, official, maiden, old, ...) or empty
  std::string family;
  std::vector<std::string> given;  // at most kMaxGivenNames (index_transaction.h)
  bool operator==(const HumanName&) const = default;
};

// A patient keeps at most kMaxNames names: the primary one and kMaxNames - 1 others.
inline constexpr std::size_t kMaxNames = 10;

struct Demographics {
  std::string nhs_number;               // as received (kept even when invalid)
  std::string nhs_number_verification;  // UK Core NHSNumberVerificationStatus code, e.g. "01"
  // The primary name (official, else usual, else the first): the one the demographic rule
  // compares and searches sort by.
  std::string family;
  std::vector<std::string> given;
  // Every other name, in the order Patient.name gave them; family/given/name searches match
  // these too.
  std::vector<HumanName> other_names;
  std::string birth_date;               // YYYY-MM-DD (or YYYY, YYYY-MM as received)
  std::string gender;                   // male | female | other | unknown
  std::string postcode;                 // as received; matched normalised (upper case, no spaces)
  std::string gp_practice_ods;          // registered GP practice ODS code
  std::string deceased;                 // date or dateTime, empty when alive/unknown
};

// A member of the patient's care team (issue #5 "legitimate relationship"): a user subject
// (e.g. an SDS user id) or an organisation's ODS code, as recorded by a source system.
struct CareTeamMember {
  std::string member;      // 1-128 printable ASCII characters
  std::string until;       // FHIR date or dateTime the membership ends; empty: open-ended
  std::string source_ods;  // the source system that last recorded it
};

// A contact at an organisation (issue #5 "legitimate relationship"), e.g. an admission.
struct Encounter {
  std::string organisation_ods;
  std::int64_t at = 0;     // epoch seconds, UTC
  std::string source_ods;  // the source system that recorded it
};

// Per patient, the locator keeps the newest kMaxEncountersPerOrganisation encounters of each
// organisation and the newest kMaxEncountersPerPatient in all (newest: latest `at`, ties by
// organisation ODS code ascending); older ones are deleted when a newer one is recorded, so a
// chatty feed cannot grow the index without limit. The same (organisation, at) twice is one
// encounter. A care team holds at most kMaxCareTeamMembers members.
inline constexpr std::size_t kMaxEncountersPerOrganisation = 10;
inline constexpr std::size_t kMaxEncountersPerPatient = 100;
inline constexpr std::size_t kMaxCareTeamMembers = 100;
inline constexpr std::size_t kMaxCareTeamMemberBytes = 128;

// True when `m` is still a member at `now_epoch_seconds`: no `until`, or `until` (a FHIR date
// range at its precision: "2026-03" lasts to the end of March, "2026-03-31T17:00:00Z" to the
// end of that second) has not ended yet. An `until` that does not
// parse counts as ended. The access policy should only count current members.
bool care_team_member_current(const CareTeamMember& m, std::int64_t now_epoch_seconds);

struct PatientRecord {
  std::string id;                       // opaque gateway id (no NHS number inside)
  Demographics demographics;
  bool nhs_number_trusted = false;      // valid Modulus 11 check digit: used for matching
  std::vector<Identifier> identifiers;
  std::optional<std::string> merged_into;  // set on a retired record: the survivor's id
  std::vector<std::string> merged_from;    // ids retired into this one
  bool objection = false;               // recorded dissent to sharing (issue #5)
  // Care relationships (issue #5), filled by read_patient and search_patients; not part of the
  // Patient resource, so changing them does not bump `version`. A merge moves them to the
  // survivor, so a retired record has none.
  std::vector<CareTeamMember> care_team;  // ordered by member, expired members included
  std::vector<Encounter> encounters;      // newest first, at most kMaxEncountersPerPatient
  std::int64_t version = 1;             // bumps on every change (FHIR meta.versionId)
  std::string last_updated;             // FHIR instant
};

struct SourceSystem {
  std::string ods_code;  // primary key
  std::string name;
  std::string adapter;   // "hl7v2", "gpconnect", "socialcare", "plugin:<path>", "fhir"
  std::string endpoint;
};

// An NRL-shaped pointer: where a record about the patient lives.
struct Pointer {
  std::string id;                         // opaque, assigned on create
  std::string patient_id;
  std::string source_ods;                 // custodian; only this source may change it
  std::string type_system = "http://snomed.info/sct";
  std::string type_code;                  // record type, e.g. SNOMED 736253002 (mental health care plan)
  std::string type_display;
  std::string category_code;              // e.g. SNOMED 734163000 (care plan)
  std::string category_display;
  std::vector<std::string> resource_types;  // FHIR types the record holds, e.g. Encounter
  std::string url;                        // content.attachment.url: how to retrieve it
  std::string content_type = "application/fhir+json";
  // DocumentReference.date: when the source says the record was made or last changed (a FHIR
  // instant, kept as the source gave it); empty when it gave none. The index's own time of
  // writing is last_updated.
  std::string date;
  std::string last_updated;               // FHIR instant, set by the locator on write
  std::int64_t version = 1;
};

// An If-Match precondition on a pointer write (FHIR http.html "Managing Resource Contention"),
// checked inside the write's own transaction, so that two writers naming the same version
// cannot both succeed: the write applies only when the pointer exists and its current version
// is one of `versions`, or any version when `any` (If-Match: *).
struct VersionMatch {
  bool any = false;
  std::vector<std::int64_t> versions;
};

// What an ingest or import says about a person.
struct IdentityClaim {
  std::string source_ods;                 // who is asserting it
  Demographics demographics;
  std::vector<Identifier> identifiers;    // local identifiers (source filled from source_ods if empty)
};

// How a claim found its record. matched_retired_identifier: by local identifiers only, each of
// them one a merge retired (it named a record since merged into this one): the sender still
// knows the patient by the retired record, so its demographics are probably that record's, and
// they only fill fields the record lacks (see resolve()).
enum class MatchOutcome { created, matched_nhs_number, matched_identifier, matched_demographics,
                          matched_retired_identifier };
std::string_view outcome_name(MatchOutcome m);

struct Resolution {
  std::string patient_id;
  MatchOutcome outcome = MatchOutcome::created;
  // A matched record this call changed (a new version, for callers and the audit trail to
  // tell a re-send from an update): the names of the Demographics fields that changed
  // ("family", "gp_practice_ods", ...), and "identifier" when it gained a local identifier.
  // Empty when nothing changed, and for a created record.
  std::vector<std::string> updated_fields;
  // Conflicts recorded by this call, each "<kind>: <detail>" (see Conflict): two different
  // valid NHS numbers for what the identifiers or demographics say is one person (never
  // merged), or a known local identifier held by another record than the one the claim
  // resolved to (never moved by ingest).
  std::vector<std::string> conflicts;
};

struct Conflict {
  std::int64_t id = 0;
  std::string patient_id;        // the record the identifiers pointed at
  std::string source_ods;
  std::string kind;              // "nhs-number-mismatch" or "identifier-mismatch"
  std::string detail;            // no PHI beyond the ids involved
  std::string recorded_at;       // FHIR instant
};

// The deterministic demographic rule used when neither an NHS number nor a local identifier
// matches. Fields are compared normalised (case, spaces, accents folded). A rule that matches
// more than one patient matches none (ambiguity creates a new record, never a guess).
struct DemographicRule {
  bool enabled = true;
  bool family = true;
  bool given = true;       // first given name
  bool birth_date = true;
  bool gender = true;
  bool postcode = true;
};

// The rule from the names of the fields it compares: "family", "given", "birthdate",
// "gender", "postcode" (configuration and tools). An empty list switches the rule off. A rule
// must compare at least family and birthdate: fewer fields would link different people. An
// unknown or repeated name is refused, naming it.
fhir::Result<DemographicRule> demographic_rule_from(const std::vector<std::string>& fields);
std::vector<std::string> demographic_rule_fields(const DemographicRule& rule);  // the names, in that order

// An ODS code as the locator keeps one (an organisation, a source system): 1 to kMaxCodeBytes
// (64) ASCII letters and digits. missing_value when empty, invalid_value otherwise, each with
// `expr` as the expression.
fhir::Status check_ods(const std::string& ods, const std::string& expr);

struct PatientQuery {
  std::optional<Identifier> identifier;   // system|value (system may be empty: any system)
  // FHIR string search: case/accent-insensitive starts-with, against every name the patient
  // has (the primary one and other_names).
  std::string family;
  std::string given;                      // any given name
  std::string name;                       // family or any given
  std::vector<std::pair<fhir::Prefix, fhir::DateRange>> birthdate;  // all must hold (AND)
  std::string gender;
  std::string postcode;                   // normalised (case and spaces ignored) starts-with
  // Only this Patient logical id (a patient/ scope's launch context): at most one row, so a
  // patient-bound search never examines the index beyond it.
  std::string id;
  bool include_retired = false;
  std::size_t count = 20;
  std::size_t offset = 0;
};

template <class T>
struct Page {
  std::vector<T> items;
  std::int64_t total = 0;  // matches before paging
};

struct Stats {
  std::int64_t patients = 0, retired = 0, identifiers = 0, pointers = 0, source_systems = 0,
               conflicts = 0, nhs_numbers_untrusted = 0;
  std::int64_t database_bytes = 0;  // 0 for implementations without a file
};

// One record in a bulk import (tools/locator-import, the demo loader, the benchmark).
struct ImportRecord {
  IdentityClaim identity;
  std::vector<Pointer> pointers;  // patient_id ignored; source_ods may differ from the claim's
};
struct ImportResult {
  // One entry per record, in order: its Resolution, or the Issue that rejected it. A rejected
  // record wrote nothing (its identity, identifiers and pointers stand or fall together) and
  // the other records are imported; the Issue's expression locates the fault inside the
  // record, e.g. "identity.demographics.gender" or "pointers[2].url". A storage failure
  // (e.g. the commit failed) rejects every record of that transaction and all later ones.
  std::vector<fhir::Result<Resolution>> records;
  // Summary of `records`; `updated` counts the matched records that changed (of `matched`).
  std::size_t created = 0, matched = 0, updated = 0, rejected = 0, conflicts = 0;
};

// What one ingested unit (an HL7 message, a social care record) changes in the index
// (issue #4): who it is about, a merge it asks for, contacts it records, and the pointer
// saying its source now holds records about the patient. Applied as one transaction.
struct IngestUpdate {
  IdentityClaim identity;               // the survivor for a merge
  // A40: identifiers of a record to retire into identity's record (NHS numbers carry
  // kNhsNumberSystem). Empty: no merge.
  std::vector<Identifier> retired;
  std::vector<Encounter> encounters;    // source_ods is ignored: identity.source_ods records them
  // Put as identity.source_ods, with patient_id filled in and "{patient}" in the url replaced
  // by it. Without an id, the pointer's id is "<patient id>-<source ODS>": one pointer per
  // source and patient, whose resource types accumulate over the units (a merge's unit folds
  // the retired record's pointer of its source into the survivor's, and deletes it).
  std::optional<Pointer> pointer;
  // The gateway's public base URL (no trailing slash). When set, the pointer's url is chosen by
  // the resource types it holds once they have accumulated (this unit's, the earlier units' and
  // a folded pointer's), so that it retrieves what the pointer says the source holds:
  // <base>/Encounter?patient=<id> when they include Encounter, else
  // <base>/DiagnosticReport?patient=<id> when they include DiagnosticReport, else
  // <base>/Patient/<id>; the url the pointer came with is not used. Empty: that url is kept.
  std::string pointer_base_url;
  // The patients whose records the unit updates (the record each of its resources is already
  // filed under, read from the store before this update), each with where the unit names that
  // record (HL7: "PV1-19" for a visit number). Each must be the resolved patient or a record
  // merged into it (earlier, or by this update's merge); otherwise the update is refused
  // (conflict, expression `where`) and nothing of it is written: a visit or order number that
  // another patient's message reuses must not move that patient's records.
  struct Owner {
    std::string patient_id;
    std::string where;
  };
  std::vector<Owner> owners;
};

struct IngestOutcome {
  Resolution resolution;                // the patient the unit is about (the survivor)
  std::string retired_patient_id;       // set when a merge retired (or had retired) a record
  std::optional<Pointer> pointer;       // as stored
};

// An objection change awaiting its audit record (docs/access-policy.md "Objection"). The
// change lives in locator.db and its record in audit.db, two files that cannot commit
// together: change_objection() keeps this row in the change's own transaction, whoever audits
// the change removes it once the record is committed (forget_objection_changes), and a row left
// behind (the record failed, or the process stopped between the two commits) is audited later
// by the gateway's recovery (gateway/objection_audit.h), so that no change is missing from the
// audit trail.
struct ObjectionChange {
  std::string id;           // unique (a UUID): the audit record's note names it
  std::string patient_id;   // the record changed (change_objection follows merges and sets it)
  std::string nhs_number;   // as the officer or administrator gave it
  bool objection = false;   // recorded (true) or withdrawn (false)
  std::string by;           // who made it, e.g. "user ig-jones (X26)" or "OS user root (uid 0)"
  std::string note;         // the patient's request reference, or empty
  std::string request_id;   // the HTTP request that made it ("" for gw-locator)
  std::int64_t time_ms = 0; // when it was made (UTC, epoch milliseconds)
};
// A new ObjectionChange id: a UUID, as the index's own opaque ids.
std::string new_objection_change_id();

class Locator {
 public:
  virtual ~Locator() = default;

  // Reads. A retired (merged) id still reads: merged_into says where it went.
  virtual fhir::Result<std::optional<PatientRecord>> read_patient(const std::string& id) = 0;
  // NHS number system -> trusted NHS numbers only (a number failing the check is simply not
  // found); any other system -> local identifiers; an empty system is invalid_value.
  // Follows merges to the survivor.
  virtual fhir::Result<std::optional<std::string>> lookup_identifier(std::string_view system, std::string_view value) = 0;
  // Ordered by normalised family, first given name, id; count is capped at 1000.
  virtual fhir::Result<Page<PatientRecord>> search_patients(const PatientQuery& q) = 0;
  // The pointers of the record `patient_id` resolves to (merges followed), ordered by
  // custodian then id; not_found for an unknown id.
  virtual fhir::Result<std::vector<Pointer>> pointers_for(const std::string& patient_id) = 0;
  virtual fhir::Result<std::optional<Pointer>> read_pointer(const std::string& pointer_id) = 0;
  virtual fhir::Result<std::optional<SourceSystem>> source_system(const std::string& ods_code) = 0;
  virtual fhir::Result<std::vector<Conflict>> conflicts(std::size_t limit, std::size_t offset) = 0;
  // True when the index holds an identifier of `system` (the NHS number system always).
  virtual fhir::Result<bool> knows_identifier_system(std::string_view system) = 0;
  virtual fhir::Result<Stats> stats() = 0;

  // Writes: each one transaction, completed after commit.
  virtual fhir::Status upsert_source_system(const SourceSystem& s) = 0;
  // Find or create the patient for `claim` (issue #3 item 3): a trusted NHS number match
  // wins; else an exact local identifier match (the first of the claim's identifiers, in
  // order, that the index knows); else the demographic rule; else create.
  // New local identifiers are added to the matched record, and each demographic field the
  // claim carries (primary name, other names as a whole, birth date, gender, postcode,
  // registered GP practice, date of death)
  // replaces the record's when it differs: the most recent update wins, bumping version and
  // last_updated (Resolution::updated_fields names what changed). A field the claim leaves
  // empty clears nothing; gender "unknown" never replaces a known gender, and a name differing
  // only in case or accents keeps the record's spelling. The exception is a claim whose only
  // match is local identifiers a merge retired (matched_retired_identifier: every identifier of
  // the claim naming the record came to it from a record merged into it, see merge()): its
  // sender has not caught up with the merge, so its fields only fill those the record lacks, as
  // a merge's do. The NHS number is set only where the record has none, or trusted where the
  // record's is untrusted, never replaced by another. Never merges
  // two trusted NHS numbers: when the identifier or the single demographic match points at a
  // record with a different trusted NHS number, nothing is linked to that record, the claim
  // gets a record of its own (created) and an "nhs-number-mismatch" conflict is recorded. An identifier already held by another
  // record than the one resolved stays where it is ("identifier-mismatch" conflict).
  // invalid_value / missing_value name the offending field of the claim.
  virtual fhir::Result<Resolution> resolve(const IdentityClaim& claim) = 0;
  // Pointers: create (id empty: an id is assigned) or update; an id the index does not know
  // creates the pointer under that id, so a re-import updates rather than duplicates. Only
  // `acting_source_ods` may change its own pointers (forbidden otherwise, also when
  // p.source_ods names another custodian); the patient must exist (not_found); a pointer on
  // a retired patient is moved to the survivor. With `if_match`, the pointer p.id must exist at
  // a version it names (precondition_failed otherwise, checked before ownership, and nothing
  // is written); a created pointer has version 1, an updated one its previous version + 1.
  virtual fhir::Result<Pointer> put_pointer(const std::string& acting_source_ods, Pointer p,
                                            const std::optional<VersionMatch>& if_match) = 0;
  // Deletes the pointer (not_found when there is none; forbidden when another source is its
  // custodian); `if_match` as for put_pointer.
  virtual fhir::Status delete_pointer(const std::string& acting_source_ods, const std::string& pointer_id,
                                      const std::optional<VersionMatch>& if_match) = 0;
  // A40-style merge: `retired` resolves to `survivor` from now on; identifiers (marked retired:
  // a claim naming only them does not replace the survivor's demographics, see resolve()),
  // pointers, care team members and encounters move to the survivor (a member of both teams keeps the later
  // `until`, open-ended beating any date; the encounter bounds then apply to the survivor),
  // which also takes a trusted NHS number and demographics it lacks and keeps an objection
  // either record had. Records merged earlier into `retired` now point at the survivor too.
  // Refused (conflict) when the two hold different trusted NHS numbers or when it would make a
  // cycle; repeating a merge already done succeeds.
  virtual fhir::Status merge(const std::string& retired_id, const std::string& survivor_id, const std::string& source_ods) = 0;
  virtual fhir::Status set_objection(const std::string& patient_id, bool objection) = 0;
  // As set_objection(change.patient_id, change.objection), returning whether it changed the
  // objection; when it did, `change` (patient_id: the record changed, merges followed) is kept
  // in the same transaction as awaiting its audit record (ObjectionChange). Bad fields
  // (an empty id, values past their limits) are invalid_value, and nothing is written.
  virtual fhir::Result<bool> change_objection(ObjectionChange change) = 0;
  // The changes awaiting their audit record, oldest first, at most `max` (capped at 1000).
  virtual fhir::Result<std::vector<ObjectionChange>> unaudited_objection_changes(std::size_t max) = 0;
  // Removes the rows of these changes, whose audit records are committed; ids not kept are
  // ignored.
  virtual fhir::Status forget_objection_changes(const std::vector<std::string>& ids) = 0;

  // Care relationships (issue #5 item 4). Each is written by source system
  // `acting_source_ods` (forbidden when empty), recorded as the row's source_ods. A retired
  // `patient_id` applies to its survivor; an unknown one is not_found. Bad input is
  // invalid_value (or missing_value) naming the parameter, and nothing is written.
  //
  // Adds `member` (1-128 printable ASCII characters, no leading or trailing space) to the
  // patient's care team until `until` (a FHIR date or dateTime; nullopt or empty: open-ended),
  // or replaces the `until` and source of a member already there. A new member beyond
  // kMaxCareTeamMembers current (not yet ended) members is refused (conflict); members whose
  // `until` has passed are dropped when a member is added.
  virtual fhir::Status add_care_team_member(const std::string& acting_source_ods, const std::string& patient_id,
                                            const std::string& member, std::optional<std::string> until) = 0;
  // Removes `member` from the patient's care team; not_found when it is not a member. Any
  // source may remove a member, whoever recorded it.
  virtual fhir::Status remove_care_team_member(const std::string& acting_source_ods, const std::string& patient_id,
                                               const std::string& member) = 0;
  // Records an encounter of the patient at `organisation_ods` (an ODS code: 1-64 ASCII letters
  // and digits) at `at_epoch_seconds` (1970-01-01 to 9999-12-31). Recording the same
  // (organisation, time) again changes nothing. The bounds above then apply: an encounter
  // older than those kept is accepted but not kept.
  virtual fhir::Status record_encounter(const std::string& acting_source_ods, const std::string& patient_id,
                                        const std::string& organisation_ods, std::int64_t at_epoch_seconds) = 0;
  // Applies `u` in one transaction (nothing of it stays when any step fails): resolve
  // (as resolve()); for a merge, find the record the retired identifiers name (not_found,
  // expression "retired", when none does; a merge already done succeeds) and merge it into
  // the resolved one (as merge()); when the claim's NHS number (else its first known
  // identifier) names the retired record itself while another of its identifiers names another
  // record, the retired record is merged into that one, which the claim then resolves to; record each encounter (as record_encounter()); put the
  // pointer (as put_pointer()). Completed after commit. Repeating the same update is
  // harmless: it resolves to the same record and changes nothing more.
  virtual fhir::Result<IngestOutcome> ingest(const IngestUpdate& u) = 0;
  // Bulk import: many records per transaction; each record stands alone (a bad record is
  // reported in its slot of ImportResult::records and never half-written). Fails as a whole
  // only for more than 1,000,000 records in one call.
  virtual fhir::Result<ImportResult> import(const std::vector<ImportRecord>& records) = 0;
};

// Normalisation shared by implementations (and by the demographic rule).
std::string normalise_name(std::string_view s);      // case- and accent-folded, spaces collapsed
std::string normalise_postcode(std::string_view s);  // upper case, no spaces

}  // namespace gw::locator
