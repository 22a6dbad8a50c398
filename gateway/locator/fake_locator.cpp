// SPDX-License-Identifier: Apache-2.0
// FakeLocator: the Locator contract over std::map, one mutex, and an undo log so a write
// that fails part-way leaves nothing behind (the fake's stand-in for a SAVEPOINT). The write
// rules are the shared ones (index_transaction.h); reads and search are written afresh here,
// so the conformance suite compares two independent readings of the search semantics.
#include "gateway/locator/fake_locator.h"

#include <algorithm>
#include <cstddef>
#include <functional>
#include <map>
#include <mutex>
#include <tuple>
#include <type_traits>
#include <utility>

#include "fhir/nhs_number.h"
#include "gateway/locator/index_transaction.h"

namespace gw::locator {
namespace {

using fhir::ErrorCode;
using fhir::Issue;

struct IdentifierRow {
  std::string patient_id;
  std::string source;
  bool retired = false;  // moved by a merge
};

struct State {
  std::map<std::string, PatientRecord> patients;  // identifiers and merged_from left empty
  std::map<std::pair<std::string, std::string>, IdentifierRow> identifiers;  // (system, value)
  std::map<std::string, Pointer> pointers;
  std::map<std::string, SourceSystem> sources;
  std::vector<Conflict> conflicts;
  std::map<std::string, std::vector<CareTeamMember>> care_teams;  // by patient id, ordered by member
  std::map<std::string, std::vector<Encounter>> encounters;       // by patient id, newest first
  std::map<std::string, ObjectionChange> objection_changes;  // by id
  std::size_t merges = 0;
  std::int64_t next_conflict_id = 1;
};

class FakeTransaction final : public IndexTransaction {
 public:
  explicit FakeTransaction(State& s) : s_(s) {}

  void rollback() {
    for (auto it = undo_.rbegin(); it != undo_.rend(); ++it) (*it)();
    undo_.clear();
  }

  fhir::Result<std::optional<PatientRecord>> patient(const std::string& id) override {
    auto it = s_.patients.find(id);
    if (it == s_.patients.end()) return std::optional<PatientRecord>();
    return std::optional<PatientRecord>(it->second);
  }

  fhir::Result<std::optional<std::string>> active_patient_with_nhs_number(std::string_view nhs) override {
    for (const auto& [id, p] : s_.patients)
      if (p.nhs_number_trusted && !p.merged_into && p.demographics.nhs_number == nhs)
        return std::optional<std::string>(id);
    return std::optional<std::string>();
  }

  fhir::Result<std::optional<IdentifierLink>> identifier_owner(std::string_view system,
                                                               std::string_view value) override {
    auto it = s_.identifiers.find({std::string(system), std::string(value)});
    if (it == s_.identifiers.end()) return std::optional<IdentifierLink>();
    return std::optional<IdentifierLink>(IdentifierLink{it->second.patient_id, it->second.retired});
  }

  fhir::Result<std::vector<std::string>> demographic_matches(const Demographics& d, const DemographicRule& rule,
                                                             std::size_t limit) override {
    std::vector<std::string> out;
    const std::string family = normalise_name(d.family), given = first_given_normalised(d),
                      postcode = normalise_postcode(d.postcode);
    for (const auto& [id, p] : s_.patients) {
      if (out.size() >= limit) break;
      if (p.merged_into) continue;
      const Demographics& m = p.demographics;
      if (rule.family && normalise_name(m.family) != family) continue;
      if (rule.given && first_given_normalised(m) != given) continue;
      if (rule.birth_date && m.birth_date != d.birth_date) continue;
      if (rule.gender && m.gender != d.gender) continue;
      if (rule.postcode && normalise_postcode(m.postcode) != postcode) continue;
      out.push_back(id);
    }
    return out;
  }

  fhir::Status insert_patient(const PatientRecord& p) override {
    if (s_.patients.count(p.id)) return duplicate("patient");
    PatientRecord row = p;
    strip(row);
    s_.patients.emplace(p.id, std::move(row));
    undo_.push_back([this, id = p.id] { s_.patients.erase(id); });
    return fhir::Ok{};
  }

  fhir::Status update_patient(const PatientRecord& p) override {
    auto it = s_.patients.find(p.id);
    if (it == s_.patients.end()) return missing("patient");
    undo_.push_back([this, old = it->second] { s_.patients[old.id] = old; });
    it->second = p;
    strip(it->second);
    return fhir::Ok{};
  }

  fhir::Status repoint_retired(const std::string& from, const std::string& to, const std::string& now) override {
    for (auto& [id, p] : s_.patients) {
      if (p.merged_into != from) continue;
      undo_.push_back([this, old = p] { s_.patients[old.id] = old; });
      p.merged_into = to;
      ++p.version;
      p.last_updated = now;
    }
    return fhir::Ok{};
  }

  fhir::Status insert_identifier(const std::string& patient_id, const Identifier& id) override {
    auto key = std::make_pair(id.system, id.value);
    if (s_.identifiers.count(key)) return duplicate("identifier");
    s_.identifiers.emplace(key, IdentifierRow{patient_id, id.source, false});
    undo_.push_back([this, key] { s_.identifiers.erase(key); });
    return fhir::Ok{};
  }

  fhir::Status move_identifiers(const std::string& from, const std::string& to,
                                const std::string& merging_source_ods) override {
    for (auto& [key, row] : s_.identifiers) {
      if (row.patient_id != from) continue;
      undo_.push_back([this, k = key, old = row] { s_.identifiers[k] = old; });
      row.patient_id = to;
      row.retired = row.retired || row.source == merging_source_ods;
    }
    return fhir::Ok{};
  }

  fhir::Status insert_conflict(const Conflict& c) override {
    Conflict row = c;
    row.id = s_.next_conflict_id++;
    s_.conflicts.push_back(std::move(row));
    undo_.push_back([this] {
      s_.conflicts.pop_back();
      --s_.next_conflict_id;
    });
    return fhir::Ok{};
  }

  fhir::Status insert_merge(const std::string&, const std::string&, const std::string&, const std::string&) override {
    ++s_.merges;
    undo_.push_back([this] { --s_.merges; });
    return fhir::Ok{};
  }

  fhir::Result<std::optional<Pointer>> pointer(const std::string& id) override {
    auto it = s_.pointers.find(id);
    if (it == s_.pointers.end()) return std::optional<Pointer>();
    return std::optional<Pointer>(it->second);
  }

  fhir::Status insert_pointer(const Pointer& p) override {
    if (s_.pointers.count(p.id)) return duplicate("pointer");
    s_.pointers.emplace(p.id, p);
    undo_.push_back([this, id = p.id] { s_.pointers.erase(id); });
    return fhir::Ok{};
  }

  fhir::Result<bool> insert_pointer_if_new(const Pointer& p) override {
    if (s_.pointers.count(p.id)) return false;
    if (auto s = insert_pointer(p); !s) return std::move(s).issue();
    return true;
  }

  fhir::Status update_pointer(const Pointer& p) override {
    auto it = s_.pointers.find(p.id);
    if (it == s_.pointers.end()) return missing("pointer");
    undo_.push_back([this, old = it->second] { s_.pointers[old.id] = old; });
    it->second = p;
    return fhir::Ok{};
  }

  fhir::Status delete_pointer(const std::string& id) override {
    auto it = s_.pointers.find(id);
    if (it == s_.pointers.end()) return missing("pointer");
    undo_.push_back([this, old = it->second] { s_.pointers[old.id] = old; });
    s_.pointers.erase(it);
    return fhir::Ok{};
  }

  fhir::Result<std::vector<Pointer>> pointers_of(const std::string& id) override {
    std::vector<Pointer> out;  // s_.pointers is keyed by id: in id order
    for (const auto& [pid, p] : s_.pointers)
      if (p.patient_id == id) out.push_back(p);
    return out;
  }

  fhir::Status move_pointers(const std::string& from, const std::string& to, const std::string& now) override {
    for (auto& [id, p] : s_.pointers) {
      if (p.patient_id != from) continue;
      undo_.push_back([this, old = p] { s_.pointers[old.id] = old; });
      p.patient_id = to;
      ++p.version;
      p.last_updated = now;
    }
    return fhir::Ok{};
  }

  fhir::Status upsert_source_system(const SourceSystem& s, const std::string&) override {
    auto it = s_.sources.find(s.ods_code);
    if (it == s_.sources.end()) {
      undo_.push_back([this, ods = s.ods_code] { s_.sources.erase(ods); });
    } else {
      undo_.push_back([this, old = it->second] { s_.sources[old.ods_code] = old; });
    }
    s_.sources[s.ods_code] = s;
    return fhir::Ok{};
  }

  fhir::Result<std::vector<CareTeamMember>> care_team(const std::string& patient_id) override {
    auto it = s_.care_teams.find(patient_id);
    if (it == s_.care_teams.end()) return std::vector<CareTeamMember>();
    return it->second;
  }

  fhir::Status upsert_care_team_member(const std::string& patient_id, const CareTeamMember& m) override {
    std::vector<CareTeamMember>& team = team_of(patient_id);
    auto at = std::lower_bound(team.begin(), team.end(), m.member,
                               [](const CareTeamMember& x, const std::string& member) { return x.member < member; });
    if (at != team.end() && at->member == m.member)
      *at = m;
    else
      team.insert(at, m);
    return fhir::Ok{};
  }

  fhir::Result<bool> delete_care_team_member(const std::string& patient_id, const std::string& member) override {
    std::vector<CareTeamMember>& team = team_of(patient_id);
    const auto before = team.size();
    team.erase(std::remove_if(team.begin(), team.end(), [&](const CareTeamMember& x) { return x.member == member; }),
               team.end());
    return team.size() != before;
  }

  fhir::Result<std::vector<Encounter>> encounters(const std::string& patient_id) override {
    auto it = s_.encounters.find(patient_id);
    if (it == s_.encounters.end()) return std::vector<Encounter>();
    return it->second;
  }

  fhir::Result<bool> insert_encounter_if_new(const std::string& patient_id, const Encounter& e) override {
    std::vector<Encounter>& list = encounters_of(patient_id);
    const auto same = [&](const Encounter& x) { return x.organisation_ods == e.organisation_ods && x.at == e.at; };
    if (std::any_of(list.begin(), list.end(), same)) return false;
    list.insert(std::upper_bound(list.begin(), list.end(), e, newer), e);
    return true;
  }

  fhir::Status trim_encounters(const std::string& patient_id, const std::string& organisation_ods,
                               std::size_t per_organisation, std::size_t per_patient) override {
    std::vector<Encounter>& list = encounters_of(patient_id);
    std::vector<Encounter> kept;
    std::size_t seen = 0;  // encounters at organisation_ods so far, newest first
    for (const Encounter& x : list) {
      if (x.organisation_ods == organisation_ods && ++seen > per_organisation) continue;
      if (kept.size() < per_patient) kept.push_back(x);
    }
    list = std::move(kept);
    return fhir::Ok{};
  }

  fhir::Status delete_encounters(const std::string& patient_id) override {
    encounters_of(patient_id).clear();
    return fhir::Ok{};
  }

  fhir::Status insert_objection_change(const ObjectionChange& c) override {
    if (!s_.objection_changes.emplace(c.id, c).second) return duplicate("objection change");
    undo_.push_back([this, id = c.id] { s_.objection_changes.erase(id); });
    return fhir::Ok{};
  }

  fhir::Result<std::vector<ObjectionChange>> objection_changes(std::size_t max) override {
    std::vector<ObjectionChange> out;
    for (const auto& [id, c] : s_.objection_changes) out.push_back(c);
    std::sort(out.begin(), out.end(), [](const ObjectionChange& a, const ObjectionChange& b) {
      return std::tie(a.time_ms, a.id) < std::tie(b.time_ms, b.id);
    });
    if (out.size() > max) out.resize(max);
    return out;
  }

  fhir::Status delete_objection_change(const std::string& id) override {
    auto it = s_.objection_changes.find(id);
    if (it == s_.objection_changes.end()) return fhir::Ok{};
    undo_.push_back([this, old = it->second] { s_.objection_changes.emplace(old.id, old); });
    s_.objection_changes.erase(it);
    return fhir::Ok{};
  }

 private:
  // The order of IndexTransaction::encounters: newest first, then by organisation.
  static bool newer(const Encounter& a, const Encounter& b) {
    return a.at != b.at ? a.at > b.at : a.organisation_ods < b.organisation_ods;
  }

  // The patient's care team / encounters, saved to the undo log before the first change.
  std::vector<CareTeamMember>& team_of(const std::string& patient_id) {
    std::vector<CareTeamMember>& team = s_.care_teams[patient_id];
    undo_.push_back([this, patient_id, old = team] { s_.care_teams[patient_id] = old; });
    return team;
  }
  std::vector<Encounter>& encounters_of(const std::string& patient_id) {
    std::vector<Encounter>& list = s_.encounters[patient_id];
    undo_.push_back([this, patient_id, old = list] { s_.encounters[patient_id] = old; });
    return list;
  }

  // Rows keep only the patient's own columns, as a database row would.
  static void strip(PatientRecord& row) {
    row.identifiers.clear();
    row.merged_from.clear();
    row.care_team.clear();
    row.encounters.clear();
  }

  static fhir::Status duplicate(const char* what) {
    return Issue::make(ErrorCode::internal_error, std::string("duplicate ") + what);
  }
  static fhir::Status missing(const char* what) {
    return Issue::make(ErrorCode::internal_error, std::string("missing ") + what);
  }

  State& s_;
  std::vector<std::function<void()>> undo_;
};

bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

class FakeLocator final : public Locator {
 public:
  explicit FakeLocator(DemographicRule rule) : rule_(rule) {}

  fhir::Result<std::optional<PatientRecord>> read_patient(const std::string& id) override {
    std::lock_guard lock(mu_);
    auto it = s_.patients.find(id);
    if (it == s_.patients.end()) return std::optional<PatientRecord>();
    return std::optional<PatientRecord>(full_record(it->second));
  }

  fhir::Result<std::optional<std::string>> lookup_identifier(std::string_view system, std::string_view value) override {
    if (system.empty())
      return Issue::make(ErrorCode::invalid_value, "an identifier lookup needs a system", "identifier");
    std::lock_guard lock(mu_);
    FakeTransaction tx(s_);
    std::optional<std::string> owner;
    if (system == kNhsNumberSystem) {
      if (!fhir::is_valid_nhs_number(value)) return std::optional<std::string>();
      auto found = tx.active_patient_with_nhs_number(value);
      if (!found) return found;
      owner = *found;
    } else {
      auto found = tx.identifier_owner(system, value);
      if (!found) return std::move(found).issue();
      if (*found) owner = (*found)->patient_id;
    }
    if (!owner) return std::optional<std::string>();
    auto rec = final_record(tx, *owner);
    if (!rec) return std::move(rec).issue();
    if (!*rec) return std::optional<std::string>();
    return std::optional<std::string>((*rec)->id);
  }

  fhir::Result<Page<PatientRecord>> search_patients(const PatientQuery& q) override {
    std::lock_guard lock(mu_);
    const std::string family = normalise_name(q.family), given = normalise_name(q.given),
                      name = normalise_name(q.name), postcode = normalise_postcode(q.postcode);
    const std::int64_t now = now_epoch_seconds();
    std::vector<const PatientRecord*> hits;
    for (const auto& [id, p] : s_.patients) {
      if (p.merged_into && !q.include_retired) continue;
      if (!q.id.empty() && id != q.id) continue;
      const Demographics& d = p.demographics;
      if (q.identifier && !has_identifier(p, *q.identifier)) continue;
      // Every name counts: the primary one and the other names.
      const auto any_family = [&](const std::string& prefix) {
        return starts_with(normalise_name(d.family), prefix) ||
               std::any_of(d.other_names.begin(), d.other_names.end(),
                           [&](const HumanName& n) { return starts_with(normalise_name(n.family), prefix); });
      };
      const auto given_in = [](const std::vector<std::string>& given, const std::string& prefix) {
        return std::any_of(given.begin(), given.end(),
                           [&](const std::string& g) { return starts_with(normalise_name(g), prefix); });
      };
      const auto any_given = [&](const std::string& prefix) {
        return given_in(d.given, prefix) ||
               std::any_of(d.other_names.begin(), d.other_names.end(),
                           [&](const HumanName& n) { return given_in(n.given, prefix); });
      };
      if (!family.empty() && !any_family(family)) continue;
      if (!given.empty() && !any_given(given)) continue;
      if (!name.empty() && !any_family(name) && !any_given(name)) continue;
      const bool dates_ok = std::all_of(q.birthdate.begin(), q.birthdate.end(), [&](const auto& b) {
        return birth_date_matches(d.birth_date, b.first, b.second, now);
      });
      if (!dates_ok) continue;
      if (!q.gender.empty() && d.gender != q.gender) continue;
      if (!postcode.empty() && !starts_with(normalise_postcode(d.postcode), postcode)) continue;
      hits.push_back(&p);
    }
    const auto key = [](const PatientRecord* p) {
      return std::make_tuple(normalise_name(p->demographics.family), first_given_normalised(p->demographics), p->id);
    };
    std::sort(hits.begin(), hits.end(), [&](const PatientRecord* a, const PatientRecord* b) { return key(a) < key(b); });
    Page<PatientRecord> page;
    page.total = static_cast<std::int64_t>(hits.size());
    const std::size_t count = clamp_page(q.count);
    for (std::size_t i = q.offset; i < hits.size() && page.items.size() < count; ++i)
      page.items.push_back(full_record(*hits[i]));
    return page;
  }

  fhir::Result<std::vector<Pointer>> pointers_for(const std::string& patient_id) override {
    std::lock_guard lock(mu_);
    FakeTransaction tx(s_);
    auto rec = final_record(tx, patient_id);
    if (!rec) return std::move(rec).issue();
    if (!*rec) return Issue::make(ErrorCode::not_found, "no patient with this id in the record locator", "patient");
    std::vector<Pointer> out;
    for (const auto& [id, p] : s_.pointers)
      if (p.patient_id == (*rec)->id) out.push_back(p);
    std::sort(out.begin(), out.end(), [](const Pointer& a, const Pointer& b) {
      return std::tie(a.source_ods, a.id) < std::tie(b.source_ods, b.id);
    });
    return out;
  }

  fhir::Result<std::optional<Pointer>> read_pointer(const std::string& pointer_id) override {
    std::lock_guard lock(mu_);
    auto it = s_.pointers.find(pointer_id);
    if (it == s_.pointers.end()) return std::optional<Pointer>();
    return std::optional<Pointer>(it->second);
  }

  fhir::Result<std::optional<SourceSystem>> source_system(const std::string& ods_code) override {
    std::lock_guard lock(mu_);
    auto it = s_.sources.find(ods_code);
    if (it == s_.sources.end()) return std::optional<SourceSystem>();
    return std::optional<SourceSystem>(it->second);
  }

  fhir::Result<std::vector<Conflict>> conflicts(std::size_t limit, std::size_t offset) override {
    std::lock_guard lock(mu_);
    std::vector<Conflict> out;
    limit = clamp_page(limit);
    for (std::size_t i = offset; i < s_.conflicts.size() && out.size() < limit; ++i) out.push_back(s_.conflicts[i]);
    return out;
  }

  fhir::Result<bool> knows_identifier_system(std::string_view system) override {
    if (system == kNhsNumberSystem) return true;
    std::lock_guard lock(mu_);
    for (const auto& [key, row] : s_.identifiers)
      if (key.first == system) return true;
    return false;
  }

  fhir::Result<Stats> stats() override {
    std::lock_guard lock(mu_);
    Stats st;
    for (const auto& [id, p] : s_.patients) {
      if (p.merged_into) {
        ++st.retired;
        continue;
      }
      ++st.patients;
      if (!p.demographics.nhs_number.empty() && !p.nhs_number_trusted) ++st.nhs_numbers_untrusted;
    }
    st.identifiers = static_cast<std::int64_t>(s_.identifiers.size());
    st.pointers = static_cast<std::int64_t>(s_.pointers.size());
    st.source_systems = static_cast<std::int64_t>(s_.sources.size());
    st.conflicts = static_cast<std::int64_t>(s_.conflicts.size());
    return st;
  }

  fhir::Status upsert_source_system(const SourceSystem& s) override {
    return write([&](FakeTransaction& tx) { return apply_upsert_source_system(tx, s, now_instant()); });
  }
  fhir::Result<Resolution> resolve(const IdentityClaim& claim) override {
    return write([&](FakeTransaction& tx) { return apply_resolve(tx, claim, rule_, now_instant()); });
  }
  fhir::Result<Pointer> put_pointer(const std::string& acting, Pointer p,
                                    const std::optional<VersionMatch>& if_match) override {
    return write(
        [&](FakeTransaction& tx) { return apply_put_pointer(tx, acting, std::move(p), if_match, now_instant()); });
  }
  fhir::Status delete_pointer(const std::string& acting, const std::string& pointer_id,
                              const std::optional<VersionMatch>& if_match) override {
    return write([&](FakeTransaction& tx) { return apply_delete_pointer(tx, acting, pointer_id, if_match); });
  }
  fhir::Status merge(const std::string& retired, const std::string& survivor, const std::string& source) override {
    return write([&](FakeTransaction& tx) { return apply_merge(tx, retired, survivor, source, now_instant()); });
  }
  fhir::Status set_objection(const std::string& patient_id, bool objection) override {
    return write([&](FakeTransaction& tx) { return apply_set_objection(tx, patient_id, objection, now_instant()); });
  }
  fhir::Result<bool> change_objection(ObjectionChange change) override {
    return write([&](FakeTransaction& tx) { return apply_change_objection(tx, std::move(change), now_instant()); });
  }
  fhir::Result<std::vector<ObjectionChange>> unaudited_objection_changes(std::size_t max) override {
    return write([&](FakeTransaction& tx) { return tx.objection_changes(clamp_page(max)); });
  }
  fhir::Status forget_objection_changes(const std::vector<std::string>& ids) override {
    return write([&](FakeTransaction& tx) -> fhir::Status {
      for (const std::string& id : ids)
        if (auto st = tx.delete_objection_change(id); !st) return st;
      return fhir::Ok{};
    });
  }
  fhir::Status add_care_team_member(const std::string& acting, const std::string& patient_id,
                                    const std::string& member, std::optional<std::string> until) override {
    return write([&](FakeTransaction& tx) {
      return apply_add_care_team_member(tx, acting, patient_id, member, until, now_instant());
    });
  }
  fhir::Status remove_care_team_member(const std::string& acting, const std::string& patient_id,
                                       const std::string& member) override {
    return write([&](FakeTransaction& tx) { return apply_remove_care_team_member(tx, acting, patient_id, member); });
  }
  fhir::Status record_encounter(const std::string& acting, const std::string& patient_id,
                                const std::string& organisation_ods, std::int64_t at_epoch_seconds) override {
    return write([&](FakeTransaction& tx) {
      return apply_record_encounter(tx, acting, patient_id, organisation_ods, at_epoch_seconds);
    });
  }

  fhir::Result<IngestOutcome> ingest(const IngestUpdate& u) override {
    return write([&](FakeTransaction& tx) { return apply_ingest(tx, u, rule_, now_instant()); });
  }

  fhir::Result<ImportResult> import(const std::vector<ImportRecord>& records) override {
    if (records.size() > kMaxImportRecords)
      return Issue::make(ErrorCode::invalid_value,
                         "more than " + std::to_string(kMaxImportRecords) + " records in one import call", "records");
    ImportResult out;
    out.records.reserve(records.size());
    for (const ImportRecord& rec : records) {
      out.records.push_back(
          write([&](FakeTransaction& tx) { return apply_import_record(tx, rec, rule_, now_instant()); }));
      count_import(out, out.records.back());
    }
    return out;
  }

 private:
  // Runs one rule atomically: on failure its undo log restores the state it found.
  template <class F>
  std::invoke_result_t<F, FakeTransaction&> write(F&& rule) {
    std::lock_guard lock(mu_);
    FakeTransaction tx(s_);
    auto result = rule(tx);
    if (!result) {
      tx.rollback();
      for (const Conflict& c : tx.keep_on_failure) (void)tx.insert_conflict(c);
    }
    return result;
  }

  bool has_identifier(const PatientRecord& p, const Identifier& want) const {
    const bool nhs_hit = p.nhs_number_trusted && p.demographics.nhs_number == want.value;
    if (want.system == kNhsNumberSystem) return nhs_hit;
    if (want.system.empty()) {
      if (nhs_hit) return true;
      for (const auto& [key, row] : s_.identifiers)
        if (key.second == want.value && row.patient_id == p.id) return true;
      return false;
    }
    auto it = s_.identifiers.find({want.system, want.value});
    return it != s_.identifiers.end() && it->second.patient_id == p.id;
  }

  PatientRecord full_record(const PatientRecord& row) const {
    PatientRecord rec = row;
    for (const auto& [key, ident] : s_.identifiers)
      if (ident.patient_id == row.id) rec.identifiers.push_back({key.first, key.second, ident.source});
    for (const auto& [id, p] : s_.patients)
      if (p.merged_into == row.id) rec.merged_from.push_back(id);
    if (auto team = s_.care_teams.find(row.id); team != s_.care_teams.end()) rec.care_team = team->second;
    if (auto list = s_.encounters.find(row.id); list != s_.encounters.end()) {
      const std::size_t n = std::min(list->second.size(), kMaxEncountersPerPatient);
      rec.encounters.assign(list->second.begin(), list->second.begin() + static_cast<std::ptrdiff_t>(n));
    }
    return rec;
  }

  std::mutex mu_;
  State s_;
  DemographicRule rule_;
};

}  // namespace

std::unique_ptr<Locator> make_fake_locator(DemographicRule rule) { return std::make_unique<FakeLocator>(rule); }

}  // namespace gw::locator
