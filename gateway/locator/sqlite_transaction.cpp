// SPDX-License-Identifier: Apache-2.0
// SqliteTransaction (see sqlite_transaction.h): one prepared statement per primitive, data
// always bound as parameters. Patients are addressed by their opaque id at the interface and
// by the integer pk inside the file; pk_cache_ saves the lookup for records touched twice in
// one transaction (an import record writes its patient, then identifiers and pointers).
#include "gateway/locator/sqlite_transaction.h"

#include <sqlite3.h>

#include <algorithm>
#include <functional>
#include <initializer_list>

#include "fhir/date_range.h"

namespace gw::locator {

enum class SqliteTransaction::S : std::size_t {
  begin, commit, rollback,
  savepoint_job, release_job, rollback_job,
  savepoint_record, release_record, rollback_record,
  patient_by_id, given_of, other_names_of, pk_of, active_nhs, identifier_owner,
  insert_patient, update_patient, delete_given, insert_given, delete_other_names, delete_other_given,
  insert_other_name, insert_other_given, repoint_retired,
  insert_identifier, insert_identifier_system, move_identifiers, insert_conflict, insert_merge,
  pointer_by_id, insert_pointer, insert_pointer_if_new, update_pointer, delete_pointer, move_pointers,
  upsert_source,
  care_team_of, upsert_care_team, delete_care_team_member,
  encounters_of, insert_encounter_if_new, trim_encounters_organisation, trim_encounters_patient, delete_encounters,
  count
};

namespace {

using fhir::ErrorCode;
using fhir::Issue;

// Patient columns ?2..?19 in the order bind_and_run_patient binds them; ?1 is the id.
#define GW_PATIENT_VALUES                                                                                 \
  "?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, (SELECT pk FROM patients WHERE id = ?17), " \
  "?18, ?19"

const std::string_view kSql[] = {
    "BEGIN IMMEDIATE",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT job",
    "RELEASE job",
    "ROLLBACK TO job",
    "SAVEPOINT record",
    "RELEASE record",
    "ROLLBACK TO record",
    // patient_by_id: kPatientColumns + " WHERE p.id = ?1" (built in prepare)
    "",
    "SELECT value FROM given_names WHERE patient = ?1 ORDER BY position",
    kOtherNamesOf,
    "SELECT pk FROM patients WHERE id = ?1",
    "SELECT id FROM patients WHERE nhs_number = ?1 AND nhs_number_trusted = 1 AND merged_into IS NULL",
    "SELECT p.id FROM identifiers i JOIN patients p ON p.pk = i.patient WHERE i.value = ?1 AND i.system = ?2",
    "INSERT INTO patients(id, nhs_number, nhs_number_trusted, nhs_verification, family, family_norm, given_norm, "
    "birth_date, birth_begin, birth_end, gender, postcode, postcode_norm, gp_practice_ods, deceased, objection, "
    "merged_into, version, last_updated) VALUES (?1, " GW_PATIENT_VALUES ")",
    "UPDATE patients SET (nhs_number, nhs_number_trusted, nhs_verification, family, family_norm, given_norm, "
    "birth_date, birth_begin, birth_end, gender, postcode, postcode_norm, gp_practice_ods, deceased, objection, "
    "merged_into, version, last_updated) = (" GW_PATIENT_VALUES ") WHERE id = ?1",
    "DELETE FROM given_names WHERE patient = ?1",
    "INSERT INTO given_names(patient, position, value, value_norm) VALUES (?1, ?2, ?3, ?4)",
    "DELETE FROM other_names WHERE patient = ?1",
    "DELETE FROM other_given_names WHERE patient = ?1",
    "INSERT INTO other_names(patient, position, use, family, family_norm) VALUES (?1, ?2, ?3, ?4, ?5)",
    "INSERT INTO other_given_names(patient, name, position, value, value_norm) VALUES (?1, ?2, ?3, ?4, ?5)",
    "UPDATE patients SET merged_into = (SELECT pk FROM patients WHERE id = ?1), version = version + 1, "
    "last_updated = ?3 WHERE merged_into = (SELECT pk FROM patients WHERE id = ?2)",
    "INSERT INTO identifiers(value, system, patient, source_ods) VALUES (?1, ?2, ?3, ?4)",
    "INSERT OR IGNORE INTO identifier_systems(system) VALUES (?1)",
    "UPDATE identifiers SET patient = ?1 WHERE patient = ?2",
    "INSERT INTO conflicts(patient_id, source_ods, kind, detail, recorded_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    "INSERT INTO merges(retired, survivor, source_ods, merged_at) VALUES ((SELECT pk FROM patients WHERE id = ?1), "
    "(SELECT pk FROM patients WHERE id = ?2), ?3, ?4)",
    // pointer_by_id: kPointerColumns + " WHERE ptr.id = ?1" (built in prepare)
    "",
    "INSERT INTO pointers(id, patient, source_ods, type_system, type_code, type_display, category_code, "
    "category_display, resource_types, url, content_type, version, last_updated, date) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    // The only uniqueness on pointers is the id: DO NOTHING means "that id exists".
    "INSERT INTO pointers(id, patient, source_ods, type_system, type_code, type_display, category_code, "
    "category_display, resource_types, url, content_type, version, last_updated, date) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) ON CONFLICT DO NOTHING",
    "UPDATE pointers SET (patient, source_ods, type_system, type_code, type_display, category_code, "
    "category_display, resource_types, url, content_type, version, last_updated, date) "
    "= (?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) WHERE id = ?1",
    "DELETE FROM pointers WHERE id = ?1",
    "UPDATE pointers SET patient = ?1, version = version + 1, last_updated = ?3 WHERE patient = ?2",
    "INSERT INTO source_systems(ods_code, name, adapter, endpoint, updated_at) VALUES (?1, ?2, ?3, ?4, ?5) "
    "ON CONFLICT(ods_code) DO UPDATE SET name = excluded.name, adapter = excluded.adapter, "
    "endpoint = excluded.endpoint, updated_at = excluded.updated_at",
    "SELECT member, coalesce(until, ''), source_ods FROM care_team WHERE patient = ?1 ORDER BY member",
    "INSERT INTO care_team(patient, member, until, source_ods) VALUES (?1, ?2, ?3, ?4) "
    "ON CONFLICT(patient, member) DO UPDATE SET until = excluded.until, source_ods = excluded.source_ods",
    "DELETE FROM care_team WHERE patient = ?1 AND member = ?2",
    "SELECT organisation_ods, at, source_ods FROM encounters WHERE patient = ?1 ORDER BY at DESC, organisation_ods",
    // The only uniqueness on encounters is (patient, organisation_ods, at).
    "INSERT INTO encounters(patient, organisation_ods, at, source_ods) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
    "DELETE FROM encounters WHERE patient = ?1 AND organisation_ods = ?2 AND pk NOT IN "
    "(SELECT pk FROM encounters WHERE patient = ?1 AND organisation_ods = ?2 ORDER BY at DESC LIMIT ?3)",
    "DELETE FROM encounters WHERE patient = ?1 AND pk NOT IN "
    "(SELECT pk FROM encounters WHERE patient = ?1 ORDER BY at DESC, organisation_ods LIMIT ?2)",
    "DELETE FROM encounters WHERE patient = ?1",
};
#undef GW_PATIENT_VALUES

fhir::Issue storage(const fhir::Issue& cause) {
  return Issue::make(ErrorCode::internal_error, "record locator storage error: " + cause.diagnostics);
}

}  // namespace

fhir::Status prepare_all(sqlite::Database& db, const std::string_view* sql, std::size_t n,
                         std::vector<sqlite::Statement>& out) {
  out.clear();
  out.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    auto st = db.prepare(sql[i]);
    if (!st) return std::move(st).issue();
    out.push_back(std::move(*st));
  }
  return fhir::Ok{};
}

fhir::Status read_other_names(sqlite::Statement& other_names_of, std::int64_t pk, std::vector<HumanName>& out) {
  StatementUse q(other_names_of);
  q->bind(1, pk);
  std::int64_t current = -1;
  for (;;) {
    auto row = q->step();
    if (!row) return storage(row.issue());
    if (!*row) break;
    // One row per given name (LEFT JOIN: one with a NULL value for a name without any).
    if (q->column_int64(0) != current) {
      current = q->column_int64(0);
      out.push_back({q->column_text(1), q->column_text(2), {}});
    }
    if (!q->column_is_null(3)) out.back().given.push_back(q->column_text(3));
  }
  return fhir::Ok{};
}

PatientRecord patient_from_row(const sqlite::Statement& st) {
  PatientRecord p;
  p.id = st.column_text(1);
  Demographics& d = p.demographics;
  d.nhs_number = st.column_text(2);
  p.nhs_number_trusted = st.column_int64(3) != 0;
  d.nhs_number_verification = st.column_text(4);
  d.family = st.column_text(5);
  d.birth_date = st.column_text(6);
  d.gender = st.column_text(7);
  d.postcode = st.column_text(8);
  d.gp_practice_ods = st.column_text(9);
  d.deceased = st.column_text(10);
  p.objection = st.column_int64(11) != 0;
  if (!st.column_is_null(12)) p.merged_into = st.column_text(12);
  p.version = st.column_int64(13);
  p.last_updated = st.column_text(14);
  return p;
}

Pointer pointer_from_row(const sqlite::Statement& st) {
  Pointer p;
  p.id = st.column_text(0);
  p.patient_id = st.column_text(1);
  p.source_ods = st.column_text(2);
  p.type_system = st.column_text(3);
  p.type_code = st.column_text(4);
  p.type_display = st.column_text(5);
  p.category_code = st.column_text(6);
  p.category_display = st.column_text(7);
  p.resource_types = split_resource_types(st.column_text(8));
  p.url = st.column_text(9);
  p.content_type = st.column_text(10);
  p.last_updated = st.column_text(11);
  p.version = st.column_int64(12);
  p.date = st.column_text(13);
  return p;
}

fhir::Result<std::unique_ptr<SqliteTransaction>> SqliteTransaction::prepare(sqlite::Database& db) {
  constexpr std::size_t n = static_cast<std::size_t>(S::count);
  if (std::size(kSql) != n) return Issue::make(ErrorCode::internal_error, "statement table out of step");
  std::string patient_by_id = std::string("SELECT ") + std::string(kPatientColumns) + " WHERE p.id = ?1";
  std::string pointer_by_id = std::string("SELECT ") + std::string(kPointerColumns) + " WHERE ptr.id = ?1";
  std::array<std::string_view, n> sql{};
  for (std::size_t i = 0; i < n; ++i) sql[i] = kSql[i];
  sql[static_cast<std::size_t>(S::patient_by_id)] = patient_by_id;
  sql[static_cast<std::size_t>(S::pointer_by_id)] = pointer_by_id;
  std::unique_ptr<SqliteTransaction> tx(new SqliteTransaction(db));
  if (auto s = prepare_all(db, sql.data(), n, tx->statements_); !s) return std::move(s).issue();
  return tx;
}

sqlite::Statement& SqliteTransaction::st(S which) { return statements_[static_cast<std::size_t>(which)]; }

// ---- framing ----------------------------------------------------------------------------

fhir::Status SqliteTransaction::run_framing(S which) {
  StatementUse q(st(which));
  if (auto r = q->run(); !r) return storage(r.issue());
  return fhir::Ok{};
}

fhir::Status SqliteTransaction::begin() {
  pk_cache_.clear();
  if (auto s = run_framing(S::begin); !s) return s;
  if (filters_on_) {
    // data_version moves only when another connection committed: its writes are not in the
    // filters, so they stop answering.
    bool same = false;
    if (auto q = db_.cached("PRAGMA data_version"); q) {
      auto row = q->step();
      same = row && *row && q->column_int64(0) == data_version_;
    }
    if (!same) stop_absent_key_filters();
  }
  return fhir::Ok{};
}

fhir::Status SqliteTransaction::commit() { return run_framing(S::commit); }

void SqliteTransaction::rollback() {
  pk_cache_.clear();
  systems_written_.clear();
  if (!transaction_lost()) (void)run_framing(S::rollback);
}

fhir::Status SqliteTransaction::savepoint(Level l) {
  return run_framing(l == Level::job ? S::savepoint_job : S::savepoint_record);
}

fhir::Status SqliteTransaction::release(Level l) {
  return run_framing(l == Level::job ? S::release_job : S::release_record);
}

fhir::Status SqliteTransaction::rollback_to(Level l) {
  pk_cache_.clear();
  systems_written_.clear();
  if (auto s = run_framing(l == Level::job ? S::rollback_job : S::rollback_record); !s) return s;
  return release(l);
}

bool SqliteTransaction::transaction_lost() const { return sqlite3_get_autocommit(db_.handle()) != 0; }

// ---- bulk import ------------------------------------------------------------------------

namespace {

// Indexes an import never reads (its matching reads use identifiers, patients.id, the trusted
// NHS number and patients_family; pointer ids have their UNIQUE index) and whose keys arrive in
// random order. identifiers_patient and pointers_patient stay: their keys arrive in pk order,
// so keeping them costs little, and rebuilding them would read the whole pointers table.
constexpr std::string_view kDeferrableIndexes[] = {"patients_birth", "patients_postcode", "given_names_norm"};
constexpr std::string_view kDeferredPrefix = "deferred_index:";

}  // namespace

fhir::Result<bool> SqliteTransaction::defer_indexes(std::int64_t incoming) {
  {
    // max(pk) is one B-tree descent and bounds the patient count (rows are never deleted).
    auto q = db_.prepare("SELECT coalesce(max(pk), 0) FROM patients");
    if (!q) return storage(q.issue());
    auto row = q->step();
    if (!row) return storage(row.issue());
    if (*row && q->column_int64(0) > incoming) return false;
  }
  bool dropped = false;
  for (std::string_view name : kDeferrableIndexes) {
    std::string sql;
    {
      auto q = db_.prepare("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?1 AND sql IS NOT NULL");
      if (!q) return storage(q.issue());
      q->bind(1, name);
      auto row = q->step();
      if (!row) return storage(row.issue());
      if (!*row) continue;  // already deferred (another import) or never there
      sql = q->column_text(0);
    }
    auto note = db_.prepare("INSERT OR REPLACE INTO gateway_info(key, value) VALUES (?1, ?2)");
    if (!note) return storage(note.issue());
    note->bind(1, std::string(kDeferredPrefix) + std::string(name)).bind(2, sql);
    if (auto r = note->run(); !r) return storage(r.issue());
    // The name is one of kDeferrableIndexes, not data.
    if (auto r = db_.exec("DROP INDEX " + std::string(name)); !r) return storage(r.issue());
    dropped = true;
  }
  return dropped;
}

// ---- absent-key filters ----------------------------------------------------------------

namespace {

std::uint64_t mix(std::uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

// Order-sensitive hash of several fields; a collision only costs a B-tree search.
std::uint64_t key_hash(std::initializer_list<std::string_view> fields) {
  std::uint64_t h = 0x6a09e667f3bcc909ULL;
  for (std::string_view f : fields) h = mix(h ^ std::hash<std::string_view>{}(f)) + f.size();
  return mix(h);
}

std::uint64_t identifier_key(std::string_view system, std::string_view value) { return key_hash({system, value}); }

// The fields demographic_matches compares when its rule enables all of them, as stored.
std::uint64_t demographic_key(const Demographics& d) {
  const std::string family = normalise_name(d.family), given = first_given_normalised(d),
                    postcode = normalise_postcode(d.postcode);
  return key_hash({family, given, d.birth_date, d.gender, postcode});
}

}  // namespace

void SqliteTransaction::KeyFilter::reset(std::size_t capacity) {
  capacity_ = std::max<std::size_t>(capacity, 1024);
  added_ = 0;
  // 16 bits per key, four of them set per key: well under 1% false "may hold".
  blocks_.assign(capacity_ * 16 / 512 + 1, std::array<std::uint64_t, 8>{});
}

void SqliteTransaction::KeyFilter::add(std::uint64_t h) {
  if (blocks_.empty()) return;
  ++added_;
  auto& block = blocks_[h % blocks_.size()];
  const std::uint64_t bits = mix(h);
  for (int i = 0; i < 4; ++i) {
    const unsigned bit = static_cast<unsigned>(bits >> (i * 9)) & 511u;
    block[bit >> 6] |= std::uint64_t{1} << (bit & 63u);
  }
}

bool SqliteTransaction::KeyFilter::may_hold(std::uint64_t h) const {
  const auto& block = blocks_[h % blocks_.size()];
  const std::uint64_t bits = mix(h);
  for (int i = 0; i < 4; ++i) {
    const unsigned bit = static_cast<unsigned>(bits >> (i * 9)) & 511u;
    if ((block[bit >> 6] & (std::uint64_t{1} << (bit & 63u))) == 0) return false;
  }
  return true;
}

fhir::Result<bool> SqliteTransaction::start_absent_key_filters(std::size_t patients, std::size_t identifiers) {
  auto q = db_.prepare(
      "SELECT NOT EXISTS (SELECT 1 FROM patients) AND NOT EXISTS (SELECT 1 FROM identifiers), "
      "(SELECT data_version FROM pragma_data_version)");
  if (!q) return storage(q.issue());
  auto row = q->step();
  if (!row) return storage(row.issue());
  if (!*row || q->column_int64(0) == 0) return false;
  data_version_ = q->column_int64(1);
  // Room for what other writes add while the import runs; past it the filters stop answering.
  identifiers_seen_.reset(identifiers + identifiers / 4);
  nhs_numbers_seen_.reset(patients + patients / 4);
  demographics_seen_.reset(patients + patients / 4);
  filters_on_ = true;
  return true;
}

void SqliteTransaction::stop_absent_key_filters() {
  filters_on_ = false;
  identifiers_seen_.clear();
  nhs_numbers_seen_.clear();
  demographics_seen_.clear();
}

void SqliteTransaction::note_patient_keys(const PatientRecord& p) {
  if (!filters_on_) return;
  nhs_numbers_seen_.add(key_hash({p.demographics.nhs_number}));
  demographics_seen_.add(demographic_key(p.demographics));
}

fhir::Status SqliteTransaction::rebuild_deferred_indexes() {
  for (std::string_view name : kDeferrableIndexes) {
    // Only notes for the indexes this code defers are read (any other key is not ours), and
    // only the statement SQLite itself reported for that index is run again.
    const std::string key = std::string(kDeferredPrefix) + std::string(name);
    std::string sql;
    bool exists = false;
    {
      auto q = db_.prepare(
          "SELECT value, EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?2) "
          "FROM gateway_info WHERE key = ?1");
      if (!q) return storage(q.issue());
      q->bind(1, key).bind(2, name);
      auto row = q->step();
      if (!row) return storage(row.issue());
      if (!*row) continue;
      sql = q->column_text(0);
      exists = q->column_int64(1) != 0;
    }
    if (sql.rfind("CREATE INDEX " + std::string(name) + " ON ", 0) != 0)
      return Issue::make(ErrorCode::internal_error, "record locator: unexpected deferred index note " + key);
    if (!exists) {
      // The sort of an index build may use a helper thread (the import's caller waits idle):
      // about 15% off the rebuild at 300,000 patients. The connection's setting is put back.
      std::int64_t threads = 0;
      if (auto q = db_.prepare("PRAGMA threads"); q)
        if (auto row = q->step(); row && *row) threads = q->column_int64(0);
      (void)db_.exec("PRAGMA threads=" + std::to_string(std::max<std::int64_t>(threads, 2)));
      auto r = db_.exec(sql);
      (void)db_.exec("PRAGMA threads=" + std::to_string(threads));
      if (!r) return storage(r.issue());
    }
    auto done = db_.prepare("DELETE FROM gateway_info WHERE key = ?1");
    if (!done) return storage(done.issue());
    done->bind(1, key);
    if (auto r = done->run(); !r) return storage(r.issue());
  }
  return fhir::Ok{};
}

// ---- primitives -------------------------------------------------------------------------

// Bounded: an import transaction inserts up to import_batch patients, and a map that grew with
// them would rehash over and over for ids that are used only right after they are written.
void SqliteTransaction::remember_pk(const std::string& id, std::int64_t pk) {
  if (pk_cache_.size() > 4096) pk_cache_.clear();
  pk_cache_[id] = pk;
}

fhir::Result<std::int64_t> SqliteTransaction::pk_of(const std::string& id) {
  if (auto it = pk_cache_.find(id); it != pk_cache_.end()) return it->second;
  StatementUse q(st(S::pk_of));
  q->bind(1, id);
  auto row = q->step();
  if (!row) return storage(row.issue());
  if (!*row) return Issue::make(ErrorCode::internal_error, "record locator: patient row vanished");
  const std::int64_t pk = q->column_int64(0);
  remember_pk(id, pk);
  return pk;
}

fhir::Result<std::optional<PatientRecord>> SqliteTransaction::patient(const std::string& id) {
  std::int64_t pk = 0;
  std::optional<PatientRecord> out;
  {
    StatementUse q(st(S::patient_by_id));
    q->bind(1, id);
    auto row = q->step();
    if (!row) return storage(row.issue());
    if (!*row) return out;
    pk = q->column_int64(0);
    out = patient_from_row(*q);
  }
  StatementUse g(st(S::given_of));
  g->bind(1, pk);
  for (;;) {
    auto row = g->step();
    if (!row) return storage(row.issue());
    if (!*row) break;
    out->demographics.given.push_back(g->column_text(0));
  }
  if (auto s = read_other_names(st(S::other_names_of), pk, out->demographics.other_names); !s) return std::move(s).issue();
  remember_pk(id, pk);
  return out;
}

fhir::Result<std::optional<std::string>> SqliteTransaction::active_patient_with_nhs_number(std::string_view nhs) {
  if (filters_on_ && nhs_numbers_seen_.active() && !nhs_numbers_seen_.may_hold(key_hash({nhs})))
    return std::optional<std::string>();
  StatementUse q(st(S::active_nhs));
  q->bind(1, nhs);
  auto row = q->step();
  if (!row) return storage(row.issue());
  if (!*row) return std::optional<std::string>();
  return std::optional<std::string>(q->column_text(0));
}

fhir::Result<std::optional<std::string>> SqliteTransaction::identifier_owner(std::string_view system,
                                                                             std::string_view value) {
  if (filters_on_ && identifiers_seen_.active() && !identifiers_seen_.may_hold(identifier_key(system, value)))
    return std::optional<std::string>();
  StatementUse q(st(S::identifier_owner));
  q->bind(1, value).bind(2, system);
  auto row = q->step();
  if (!row) return storage(row.issue());
  if (!*row) return std::optional<std::string>();
  return std::optional<std::string>(q->column_text(0));
}

fhir::Result<std::vector<std::string>> SqliteTransaction::demographic_matches(const Demographics& d,
                                                                              const DemographicRule& rule,
                                                                              std::size_t limit) {
  const unsigned key = (rule.family ? 1u : 0u) | (rule.given ? 2u : 0u) | (rule.birth_date ? 4u : 0u) |
                       (rule.gender ? 8u : 0u) | (rule.postcode ? 16u : 0u);
  // The filter holds all five fields of each row, so it answers only for a rule comparing all five.
  if (key == 31u && filters_on_ && demographics_seen_.active() && !demographics_seen_.may_hold(demographic_key(d)))
    return std::vector<std::string>();
  if (!demographic_[key]) {
    // The shape depends only on which fields the rule compares; values are bound.
    std::string sql = "SELECT id FROM patients WHERE merged_into IS NULL";
    if (rule.family) sql += " AND family_norm = ?1";
    if (rule.given) sql += " AND given_norm = ?2";
    if (rule.birth_date) sql += " AND birth_date = ?3";
    if (rule.gender) sql += " AND gender = ?4";
    if (rule.postcode) sql += " AND postcode_norm = ?5";
    sql += " ORDER BY pk LIMIT ?6";
    auto prepared = db_.prepare(sql);
    if (!prepared) return storage(prepared.issue());
    demographic_[key].emplace(std::move(*prepared));
  }
  StatementUse q(*demographic_[key]);
  if (rule.family) q->bind(1, normalise_name(d.family));
  if (rule.given) q->bind(2, first_given_normalised(d));
  if (rule.birth_date) q->bind(3, d.birth_date);
  if (rule.gender) q->bind(4, d.gender);
  if (rule.postcode) q->bind(5, normalise_postcode(d.postcode));
  q->bind(6, static_cast<std::int64_t>(limit));
  std::vector<std::string> out;
  for (;;) {
    auto row = q->step();
    if (!row) return storage(row.issue());
    if (!*row) break;
    out.push_back(q->column_text(0));
  }
  return out;
}

fhir::Status SqliteTransaction::bind_and_run_patient(sqlite::Statement& s, const PatientRecord& p) {
  const Demographics& d = p.demographics;
  StatementUse q(s);
  q->bind(1, p.id).bind(2, d.nhs_number).bind(3, std::int64_t{p.nhs_number_trusted ? 1 : 0});
  q->bind(4, d.nhs_number_verification).bind(5, d.family).bind(6, normalise_name(d.family));
  q->bind(7, first_given_normalised(d)).bind(8, d.birth_date);
  q->bind_null(9).bind_null(10);  // no birth date: no range, matches no birthdate search
  if (!d.birth_date.empty()) {
    if (auto range = fhir::parse_fhir_date(d.birth_date); range) q->bind(9, range->begin).bind(10, range->end);
  }
  q->bind(11, d.gender).bind(12, d.postcode).bind(13, normalise_postcode(d.postcode));
  q->bind(14, d.gp_practice_ods).bind(15, d.deceased).bind(16, std::int64_t{p.objection ? 1 : 0});
  if (p.merged_into)
    q->bind(17, *p.merged_into);
  else
    q->bind_null(17);
  q->bind(18, p.version).bind(19, p.last_updated);
  if (auto r = q->run(); !r) return storage(r.issue());
  return fhir::Ok{};
}

fhir::Status SqliteTransaction::write_names(std::int64_t pk, const Demographics& d) {
  for (std::size_t i = 0; i < d.given.size(); ++i) {
    StatementUse q(st(S::insert_given));
    q->bind(1, pk).bind(2, static_cast<std::int64_t>(i)).bind(3, d.given[i]).bind(4, normalise_name(d.given[i]));
    if (auto r = q->run(); !r) return storage(r.issue());
  }
  for (std::size_t n = 0; n < d.other_names.size(); ++n) {
    const HumanName& name = d.other_names[n];
    const auto position = static_cast<std::int64_t>(n);
    {
      StatementUse q(st(S::insert_other_name));
      q->bind(1, pk).bind(2, position).bind(3, name.use).bind(4, name.family).bind(5, normalise_name(name.family));
      if (auto r = q->run(); !r) return storage(r.issue());
    }
    for (std::size_t i = 0; i < name.given.size(); ++i) {
      StatementUse q(st(S::insert_other_given));
      q->bind(1, pk).bind(2, position).bind(3, static_cast<std::int64_t>(i)).bind(4, name.given[i]);
      q->bind(5, normalise_name(name.given[i]));
      if (auto r = q->run(); !r) return storage(r.issue());
    }
  }
  return fhir::Ok{};
}

fhir::Status SqliteTransaction::insert_patient(const PatientRecord& p) {
  note_patient_keys(p);  // before the write: a key is noted whenever it may be in the file
  if (auto s = bind_and_run_patient(st(S::insert_patient), p); !s) return s;
  const std::int64_t pk = db_.last_insert_rowid();
  remember_pk(p.id, pk);
  return write_names(pk, p.demographics);
}

fhir::Status SqliteTransaction::update_patient(const PatientRecord& p) {
  auto pk = pk_of(p.id);
  if (!pk) return std::move(pk).issue();
  note_patient_keys(p);
  if (auto s = bind_and_run_patient(st(S::update_patient), p); !s) return s;
  for (S names : {S::delete_given, S::delete_other_names, S::delete_other_given}) {
    StatementUse q(st(names));
    q->bind(1, *pk);
    if (auto r = q->run(); !r) return storage(r.issue());
  }
  return write_names(*pk, p.demographics);
}

fhir::Status SqliteTransaction::repoint_retired(const std::string& from, const std::string& to,
                                                const std::string& now) {
  StatementUse q(st(S::repoint_retired));
  q->bind(1, to).bind(2, from).bind(3, now);
  if (auto r = q->run(); !r) return storage(r.issue());
  return fhir::Ok{};
}

fhir::Status SqliteTransaction::insert_identifier(const std::string& patient_id, const Identifier& id) {
  auto pk = pk_of(patient_id);
  if (!pk) return std::move(pk).issue();
  if (filters_on_) identifiers_seen_.add(identifier_key(id.system, id.value));
  StatementUse q(st(S::insert_identifier));
  q->bind(1, id.value).bind(2, id.system).bind(3, *pk).bind(4, id.source);
  if (auto r = q->run(); !r) return storage(r.issue());
  // A handful of systems in all: written once each (systems_written_ forgets on a rollback).
  if (systems_written_.count(id.system) == 0) {
    StatementUse sys(st(S::insert_identifier_system));
    sys->bind(1, id.system);
    if (auto r = sys->run(); !r) return storage(r.issue());
    systems_written_.insert(id.system);
  }
  return fhir::Ok{};
}

fhir::Status SqliteTransaction::move_identifiers(const std::string& from, const std::string& to) {
  auto from_pk = pk_of(from);
  if (!from_pk) return std::move(from_pk).issue();
  auto to_pk = pk_of(to);
  if (!to_pk) return std::move(to_pk).issue();
  StatementUse q(st(S::move_identifiers));
  q->bind(1, *to_pk).bind(2, *from_pk);
  if (auto r = q->run(); !r) return storage(r.issue());
  return fhir::Ok{};
}

fhir::Status SqliteTransaction::insert_conflict(const Conflict& c) {
  StatementUse q(st(S::insert_conflict));
  q->bind(1, c.patient_id).bind(2, c.source_ods).bind(3, c.kind).bind(4, c.detail).bind(5, c.recorded_at);
  if (auto r = q->run(); !r) return storage(r.issue());
  return fhir::Ok{};
}

fhir::Status SqliteTransaction::insert_merge(const std::string& retired, const std::string& survivor,
                                             const std::string& source_ods, const std::string& now) {
  StatementUse q(st(S::insert_merge));
  q->bind(1, retired).bind(2, survivor).bind(3, source_ods).bind(4, now);
  if (auto r = q->run(); !r) return storage(r.issue());
  return fhir::Ok{};
}

fhir::Result<std::optional<Pointer>> SqliteTransaction::pointer(const std::string& id) {
  StatementUse q(st(S::pointer_by_id));
  q->bind(1, id);
  auto row = q->step();
  if (!row) return storage(row.issue());
  if (!*row) return std::optional<Pointer>();
  return std::optional<Pointer>(pointer_from_row(*q));
}

namespace {

void bind_pointer(sqlite::Statement& q, const Pointer& p, std::int64_t patient_pk) {
  q.bind(1, p.id).bind(2, patient_pk).bind(3, p.source_ods).bind(4, p.type_system).bind(5, p.type_code);
  q.bind(6, p.type_display).bind(7, p.category_code).bind(8, p.category_display);
  q.bind(9, join_resource_types(p.resource_types)).bind(10, p.url).bind(11, p.content_type);
  q.bind(12, p.version).bind(13, p.last_updated).bind(14, p.date);
}

}  // namespace

fhir::Status SqliteTransaction::insert_pointer(const Pointer& p) {
  auto pk = pk_of(p.patient_id);
  if (!pk) return std::move(pk).issue();
  StatementUse q(st(S::insert_pointer));
  bind_pointer(*q, p, *pk);
  if (auto r = q->run(); !r) return storage(r.issue());
  return fhir::Ok{};
}

fhir::Result<bool> SqliteTransaction::insert_pointer_if_new(const Pointer& p) {
  auto pk = pk_of(p.patient_id);
  if (!pk) return std::move(pk).issue();
  StatementUse q(st(S::insert_pointer_if_new));
  bind_pointer(*q, p, *pk);
  if (auto r = q->run(); !r) return storage(r.issue());
  return db_.changes() == 1;
}

fhir::Status SqliteTransaction::update_pointer(const Pointer& p) {
  auto pk = pk_of(p.patient_id);
  if (!pk) return std::move(pk).issue();
  StatementUse q(st(S::update_pointer));
  bind_pointer(*q, p, *pk);
  if (auto r = q->run(); !r) return storage(r.issue());
  return fhir::Ok{};
}

fhir::Status SqliteTransaction::delete_pointer(const std::string& id) {
  StatementUse q(st(S::delete_pointer));
  q->bind(1, id);
  if (auto r = q->run(); !r) return storage(r.issue());
  return fhir::Ok{};
}

fhir::Status SqliteTransaction::move_pointers(const std::string& from, const std::string& to,
                                              const std::string& now) {
  auto from_pk = pk_of(from);
  if (!from_pk) return std::move(from_pk).issue();
  auto to_pk = pk_of(to);
  if (!to_pk) return std::move(to_pk).issue();
  StatementUse q(st(S::move_pointers));
  q->bind(1, *to_pk).bind(2, *from_pk).bind(3, now);
  if (auto r = q->run(); !r) return storage(r.issue());
  return fhir::Ok{};
}

fhir::Status SqliteTransaction::upsert_source_system(const SourceSystem& s, const std::string& now) {
  StatementUse q(st(S::upsert_source));
  q->bind(1, s.ods_code).bind(2, s.name).bind(3, s.adapter).bind(4, s.endpoint).bind(5, now);
  if (auto r = q->run(); !r) return storage(r.issue());
  return fhir::Ok{};
}

// ---- care relationships ----------------------------------------------------------------

fhir::Result<std::vector<CareTeamMember>> SqliteTransaction::care_team(const std::string& patient_id) {
  auto pk = pk_of(patient_id);
  if (!pk) return std::move(pk).issue();
  StatementUse q(st(S::care_team_of));
  q->bind(1, *pk);
  std::vector<CareTeamMember> out;
  for (;;) {
    auto row = q->step();
    if (!row) return storage(row.issue());
    if (!*row) break;
    out.push_back({q->column_text(0), q->column_text(1), q->column_text(2)});
  }
  return out;
}

fhir::Status SqliteTransaction::upsert_care_team_member(const std::string& patient_id, const CareTeamMember& m) {
  auto pk = pk_of(patient_id);
  if (!pk) return std::move(pk).issue();
  StatementUse q(st(S::upsert_care_team));
  q->bind(1, *pk).bind(2, m.member).bind(4, m.source_ods);
  if (m.until.empty())
    q->bind_null(3);
  else
    q->bind(3, m.until);
  if (auto r = q->run(); !r) return storage(r.issue());
  return fhir::Ok{};
}

fhir::Result<bool> SqliteTransaction::delete_care_team_member(const std::string& patient_id,
                                                              const std::string& member) {
  auto pk = pk_of(patient_id);
  if (!pk) return std::move(pk).issue();
  StatementUse q(st(S::delete_care_team_member));
  q->bind(1, *pk).bind(2, member);
  if (auto r = q->run(); !r) return storage(r.issue());
  return db_.changes() == 1;
}

fhir::Result<std::vector<Encounter>> SqliteTransaction::encounters(const std::string& patient_id) {
  auto pk = pk_of(patient_id);
  if (!pk) return std::move(pk).issue();
  StatementUse q(st(S::encounters_of));
  q->bind(1, *pk);
  std::vector<Encounter> out;
  for (;;) {
    auto row = q->step();
    if (!row) return storage(row.issue());
    if (!*row) break;
    out.push_back({q->column_text(0), q->column_int64(1), q->column_text(2)});
  }
  return out;
}

fhir::Result<bool> SqliteTransaction::insert_encounter_if_new(const std::string& patient_id, const Encounter& e) {
  auto pk = pk_of(patient_id);
  if (!pk) return std::move(pk).issue();
  StatementUse q(st(S::insert_encounter_if_new));
  q->bind(1, *pk).bind(2, e.organisation_ods).bind(3, e.at).bind(4, e.source_ods);
  if (auto r = q->run(); !r) return storage(r.issue());
  return db_.changes() == 1;
}

fhir::Status SqliteTransaction::trim_encounters(const std::string& patient_id, const std::string& organisation_ods,
                                                std::size_t per_organisation, std::size_t per_patient) {
  auto pk = pk_of(patient_id);
  if (!pk) return std::move(pk).issue();
  {
    StatementUse q(st(S::trim_encounters_organisation));
    q->bind(1, *pk).bind(2, organisation_ods).bind(3, static_cast<std::int64_t>(per_organisation));
    if (auto r = q->run(); !r) return storage(r.issue());
  }
  StatementUse q(st(S::trim_encounters_patient));
  q->bind(1, *pk).bind(2, static_cast<std::int64_t>(per_patient));
  if (auto r = q->run(); !r) return storage(r.issue());
  return fhir::Ok{};
}

fhir::Status SqliteTransaction::delete_encounters(const std::string& patient_id) {
  auto pk = pk_of(patient_id);
  if (!pk) return std::move(pk).issue();
  StatementUse q(st(S::delete_encounters));
  q->bind(1, *pk);
  if (auto r = q->run(); !r) return storage(r.issue());
  return fhir::Ok{};
}

}  // namespace gw::locator
