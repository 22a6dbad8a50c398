// SPDX-License-Identifier: Apache-2.0
// Inside gw_locator only: the primitive reads and writes a backend offers within one write
// transaction (IndexTransaction), and the write rules built on them once for every backend
// (identity resolution, pointer ownership, A40 merges, care relationships, import records; in
// write_rules.cpp and care_relationships.cpp). A backend runs each rule inside its own atomic unit (SQLite: a SAVEPOINT; the
// fake: an undo log), so a rule that fails part-way leaves nothing behind.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/locator/locator.h"

namespace gw::locator {

// Input limits (every input has one). Longer values are refused with invalid_value.
inline constexpr std::size_t kMaxCodeBytes = 64;          // ODS codes, gender, verification code
inline constexpr std::size_t kMaxTextBytes = 256;         // names, identifier values, displays
inline constexpr std::size_t kMaxUriBytes = 1024;         // identifier and coding systems
inline constexpr std::size_t kMaxUrlBytes = 4096;         // pointer retrieval URL
inline constexpr std::size_t kMaxGivenNames = 10;
inline constexpr std::size_t kMaxIdentifiers = 50;        // per claim
inline constexpr std::size_t kMaxPointersPerRecord = 100; // per import record
inline constexpr std::size_t kMaxResourceTypes = 50;      // per pointer
inline constexpr std::size_t kMaxImportRecords = 1'000'000;  // per import() call
inline constexpr std::size_t kMaxPageSize = 1000;         // search and conflict pages
inline constexpr std::size_t kMaxIdBytes = 64;            // FHIR id: [A-Za-z0-9-.]{1,64}
inline constexpr int kMaxMergeDepth = 64;                 // retired -> survivor hops followed
inline constexpr std::size_t kMaxObjectionNoteBytes = 2000;  // ObjectionChange::note (500 characters)

// True for a FHIR R4 instant: YYYY-MM-DDThh:mm:ss[.fff...] with Z or a +hh:mm / -hh:mm zone,
// a real date and time (datatypes.html#instant).
bool is_fhir_instant(std::string_view v);

// A local identifier's row: the patient it is linked to (retired or not), and whether a merge
// retired it (it was moved from a record merged into another: move_identifiers).
struct IdentifierLink {
  std::string patient_id;
  bool retired = false;
};

// The primitives. Patient ids are the opaque gateway ids. Reads see the transaction's own
// writes. Every call may fail with a storage Issue; the rule then fails as a whole.
class IndexTransaction {
 public:
  virtual ~IndexTransaction() = default;

  // Conflicts a write found that must be on record even though the write fails (a merge
  // refused because both records hold different valid NHS numbers): the write's rollback
  // would take them with it, so a backend inserts these after rolling the write back. Each
  // backend clears the list before running a write.
  std::vector<Conflict> keep_on_failure;

  // The patient row: identifiers, merged_from, care_team and encounters are left empty.
  virtual fhir::Result<std::optional<PatientRecord>> patient(const std::string& id) = 0;
  // The active (not retired) patient holding `nhs_number` as a trusted NHS number.
  virtual fhir::Result<std::optional<std::string>> active_patient_with_nhs_number(std::string_view nhs_number) = 0;
  // The link of a local identifier, when the index holds it.
  virtual fhir::Result<std::optional<IdentifierLink>> identifier_owner(std::string_view system,
                                                                       std::string_view value) = 0;
  // Active patients whose normalised fields equal `d`'s for every field `rule` enables, at
  // most `limit` of them. Precondition: `d` has every enabled field.
  virtual fhir::Result<std::vector<std::string>> demographic_matches(const Demographics& d, const DemographicRule& rule,
                                                                     std::size_t limit) = 0;

  virtual fhir::Status insert_patient(const PatientRecord& p) = 0;
  // Rewrites every column of the row `p.id` (demographics, trust, merged_into, objection,
  // version, last_updated).
  virtual fhir::Status update_patient(const PatientRecord& p) = 0;
  // Every retired record whose merged_into is `from` now points at `to` (version bumped).
  virtual fhir::Status repoint_retired(const std::string& from, const std::string& to, const std::string& now) = 0;
  virtual fhir::Status insert_identifier(const std::string& patient_id, const Identifier& id) = 0;
  // Links every identifier of `from` to `to` (a merge: `from` is retired), marking retired
  // those recorded by `merging_source_ods`, the source that sent the merge: only it is known to
  // have stopped using them. Another source's identifier stays current (that source merged
  // nothing and goes on sending it); one retired before stays retired.
  virtual fhir::Status move_identifiers(const std::string& from, const std::string& to,
                                        const std::string& merging_source_ods) = 0;
  virtual fhir::Status insert_conflict(const Conflict& c) = 0;  // c.id is assigned by the backend
  virtual fhir::Status insert_merge(const std::string& retired, const std::string& survivor,
                                    const std::string& source_ods, const std::string& now) = 0;

  virtual fhir::Result<std::optional<Pointer>> pointer(const std::string& id) = 0;
  virtual fhir::Status insert_pointer(const Pointer& p) = 0;
  // Inserts `p` unless a pointer with p.id exists (then changes nothing); true when inserted.
  virtual fhir::Result<bool> insert_pointer_if_new(const Pointer& p) = 0;
  virtual fhir::Status update_pointer(const Pointer& p) = 0;
  virtual fhir::Status delete_pointer(const std::string& id) = 0;
  // The pointers filed under the record `id` itself (no merge followed), by id.
  virtual fhir::Result<std::vector<Pointer>> pointers_of(const std::string& id) = 0;
  // Moves every pointer of `from` to `to`, bumping version and last_updated.
  virtual fhir::Status move_pointers(const std::string& from, const std::string& to, const std::string& now) = 0;

  virtual fhir::Status upsert_source_system(const SourceSystem& s, const std::string& now) = 0;

  // Care team rows of a patient, ordered by member.
  virtual fhir::Result<std::vector<CareTeamMember>> care_team(const std::string& patient_id) = 0;
  // Inserts the row (patient, m.member), or replaces its until and source_ods.
  virtual fhir::Status upsert_care_team_member(const std::string& patient_id, const CareTeamMember& m) = 0;
  // True when a row was deleted.
  virtual fhir::Result<bool> delete_care_team_member(const std::string& patient_id, const std::string& member) = 0;
  // Every encounter row of a patient, newest first (at descending, then organisation ascending).
  virtual fhir::Result<std::vector<Encounter>> encounters(const std::string& patient_id) = 0;
  // Inserts `e` unless the patient has an encounter at (e.organisation_ods, e.at); true when
  // inserted.
  virtual fhir::Result<bool> insert_encounter_if_new(const std::string& patient_id, const Encounter& e) = 0;
  // Deletes the patient's encounters at `organisation_ods` beyond the newest `per_organisation`,
  // then the patient's encounters beyond the newest `per_patient` (the order of encounters()).
  virtual fhir::Status trim_encounters(const std::string& patient_id, const std::string& organisation_ods,
                                       std::size_t per_organisation, std::size_t per_patient) = 0;
  virtual fhir::Status delete_encounters(const std::string& patient_id) = 0;

  // Objection changes awaiting their audit record (ObjectionChange): oldest first (time, then
  // id), at most `max`.
  virtual fhir::Status insert_objection_change(const ObjectionChange& c) = 0;
  virtual fhir::Result<std::vector<ObjectionChange>> objection_changes(std::size_t max) = 0;
  virtual fhir::Status delete_objection_change(const std::string& id) = 0;
};

// ---- input checks (validation.cpp): invalid_value or missing_value naming the field ----

// Every field of `c` against its limit; birth and death dates, gender, and identifiers (an NHS
// number is never a local identifier).
fhir::Status validate_claim(const IdentityClaim& c);
// Every field of `p` against its limit; id, date (an instant) and resource types (R4 names).
fhir::Status validate_pointer(const Pointer& p);
// True for a FHIR R4 name-use code (usual, official, temp, nickname, anonymous, old, maiden).
bool is_name_use(std::string_view u);
// `v` at most `limit` bytes; check_required also refuses it empty. `expr` names the field.
fhir::Status check_len(std::string_view v, std::size_t limit, const std::string& expr);
fhir::Status check_required(std::string_view v, std::size_t limit, const std::string& expr);

// ---- the write rules (write_rules.cpp); `now` is the FHIR instant stamped on changed rows ----

// Locator::resolve: validates the claim, then NHS number -> local identifier -> demographic
// rule -> create, as documented in locator.h.
fhir::Result<Resolution> apply_resolve(IndexTransaction& tx, const IdentityClaim& claim, const DemographicRule& rule,
                                       const std::string& now);
// Locator::put_pointer and delete_pointer, the If-Match check included.
fhir::Result<Pointer> apply_put_pointer(IndexTransaction& tx, const std::string& acting_source_ods, Pointer p,
                                        const std::optional<VersionMatch>& if_match, const std::string& now);
fhir::Status apply_delete_pointer(IndexTransaction& tx, const std::string& acting_source_ods,
                                  const std::string& pointer_id, const std::optional<VersionMatch>& if_match);
// `pointer_base_url` as IngestUpdate's: with it, a moved pointer whose url ingest built for the
// retired record (every source's, not only the merging one's) is given the survivor's url.
fhir::Status apply_merge(IndexTransaction& tx, const std::string& retired_id, const std::string& survivor_id,
                         const std::string& source_ods, const std::string& now,
                         const std::string& pointer_base_url = {});
fhir::Status apply_set_objection(IndexTransaction& tx, const std::string& patient_id, bool objection,
                                 const std::string& now);
// Locator::change_objection: the change, and its row awaiting the audit record when it changed.
fhir::Result<bool> apply_change_objection(IndexTransaction& tx, ObjectionChange change, const std::string& now);
fhir::Status apply_upsert_source_system(IndexTransaction& tx, const SourceSystem& s, const std::string& now);
// Locator::add_care_team_member, remove_care_team_member and record_encounter. `now` also
// decides which members have ended (add_care_team_member).
fhir::Status apply_add_care_team_member(IndexTransaction& tx, const std::string& acting_source_ods,
                                        const std::string& patient_id, const std::string& member,
                                        const std::optional<std::string>& until, const std::string& now);
fhir::Status apply_remove_care_team_member(IndexTransaction& tx, const std::string& acting_source_ods,
                                           const std::string& patient_id, const std::string& member);
fhir::Status apply_record_encounter(IndexTransaction& tx, const std::string& acting_source_ods,
                                    const std::string& patient_id, const std::string& organisation_ods,
                                    std::int64_t at_epoch_seconds);
// Part of apply_merge: the care team and encounters of `from` go to `to` (a member of both
// keeps the later until; the encounter bounds then apply to `to`). In care_relationships.cpp.
fhir::Status move_care_relationships(IndexTransaction& tx, const std::string& from, const std::string& to);
// Locator::ingest.
fhir::Result<IngestOutcome> apply_ingest(IndexTransaction& tx, const IngestUpdate& u, const DemographicRule& rule,
                                         const std::string& now);
// One import record: resolve, then put each pointer as its own custodian (the claim's source
// when the pointer names none). Pointer failures carry expression "pointers[k]...".
fhir::Result<Resolution> apply_import_record(IndexTransaction& tx, const ImportRecord& record,
                                             const DemographicRule& rule, const std::string& now);
// Every check apply_import_record makes without reading the index, with the same Issue. A
// record that passes can then be refused only for what the index holds (a pointer id owned
// by another custodian) or a storage failure.
fhir::Status check_import_record(const ImportRecord& record);

// ---- helpers shared by the backends ----

// Adds one record's outcome to the summary counters of `result`.
void count_import(ImportResult& result, const fhir::Result<Resolution>& record);

// Follows merged_into from `id` to the active record, at most kMaxMergeDepth hops; a longer
// chain or a cycle is a broken invariant (internal_error).
fhir::Result<std::optional<PatientRecord>> final_record(IndexTransaction& tx, const std::string& id);
// A rule is applicable when enabled, with at least one field on, and `d` has every field on.
bool demographic_rule_applies(const DemographicRule& rule, const Demographics& d);
// The normalised first given name ("" when none).
std::string first_given_normalised(const Demographics& d);
// A new opaque id: a version 7 UUID (48-bit millisecond time, then 74 random bits), so ids
// created together sit together in B-tree indexes. Carries no patient data.
std::string new_opaque_id();
// The current time as a FHIR instant.
std::string now_instant();
// Epoch seconds, for the `ap` date prefix.
std::int64_t now_epoch_seconds();
// Clamps a requested page size to kMaxPageSize.
inline std::size_t clamp_page(std::size_t count) { return count > kMaxPageSize ? kMaxPageSize : count; }
// The birthDate comparison of FHIR search (fhir::date_matches) for a stored birth_date; a
// record without a parseable birth date matches no birthdate parameter.
bool birth_date_matches(const std::string& birth_date, fhir::Prefix prefix, const fhir::DateRange& param,
                        std::int64_t now);
// The upper bound of a starts-with range: every string with prefix `p` sorts >= p and < this.
std::string prefix_upper_bound(const std::string& p);
// Resource types are stored as one space-separated string.
std::string join_resource_types(const std::vector<std::string>& types);
std::vector<std::string> split_resource_types(std::string_view joined);

}  // namespace gw::locator
