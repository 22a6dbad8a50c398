// SPDX-License-Identifier: Apache-2.0
// SqliteReader (see sqlite_reader.h). Calls that read more than one statement run inside one
// read transaction (a WAL snapshot) so a concurrent commit cannot tear a record. Search SQL
// is assembled from fixed fragments chosen by which parameters are present; every value is
// bound, and each distinct shape is prepared once per connection.
#include "gateway/locator/sqlite_reader.h"

#include <variant>

#include "fhir/nhs_number.h"
#include "gateway/locator/index_transaction.h"
#include "gateway/locator/sqlite_transaction.h"

namespace gw::locator {

enum class SqliteReader::R : std::size_t {
  begin, commit, patient_by_id, given_of, other_names_of, identifiers_of, merged_from, lookup_local, lookup_nhs, pk_and_survivor,
  pointers_of, pointer_by_id, source, conflicts, stats, care_team_of, encounters_of, identifier_system,
  count
};

namespace {

using fhir::ErrorCode;
using fhir::Issue;

fhir::Issue storage(const fhir::Issue& cause) {
  return Issue::make(ErrorCode::internal_error, "record locator storage error: " + cause.diagnostics);
}

using Param = std::variant<std::string, std::int64_t>;

// The WHERE clause of a patient search and its parameters, in placeholder order.
struct Where {
  std::string sql;
  std::vector<Param> params;

  void add(std::string_view condition, std::initializer_list<Param> values) {
    sql += " AND ";
    sql += condition;
    params.insert(params.end(), values);
  }
};

// R4 search.html date comparison (fhir::date_matches) as conditions on the stored range.
void add_birthdate(Where& w, fhir::Prefix prefix, const fhir::DateRange& p, std::int64_t now) {
  using fhir::Prefix;
  const std::string_view has = "p.birth_begin IS NOT NULL AND ";
  switch (prefix) {
    case Prefix::eq:
      w.add(std::string(has) + "(p.birth_begin >= ? AND p.birth_end <= ?)", {p.begin, p.end});
      break;
    case Prefix::ne:
      w.add(std::string(has) + "NOT (p.birth_begin >= ? AND p.birth_end <= ?)", {p.begin, p.end});
      break;
    case Prefix::gt: w.add(std::string(has) + "p.birth_end > ?", {p.end}); break;
    case Prefix::lt: w.add(std::string(has) + "p.birth_begin < ?", {p.begin}); break;
    case Prefix::ge:
      w.add(std::string(has) + "(p.birth_end > ? OR (p.birth_begin >= ? AND p.birth_end <= ?))",
            {p.end, p.begin, p.end});
      break;
    case Prefix::le:
      w.add(std::string(has) + "(p.birth_begin < ? OR (p.birth_begin >= ? AND p.birth_end <= ?))",
            {p.begin, p.begin, p.end});
      break;
    case Prefix::sa: w.add(std::string(has) + "p.birth_begin >= ?", {p.end}); break;
    case Prefix::eb: w.add(std::string(has) + "p.birth_end <= ?", {p.begin}); break;
    case Prefix::ap: {
      std::int64_t gap = (now > p.begin ? now - p.begin : p.begin - now) / 10;
      if (gap < 1) gap = 1;
      w.add(std::string(has) + "(p.birth_begin < ? AND p.birth_end > ?)", {p.end + gap, p.begin - gap});
      break;
    }
  }
}

Where where_for(const PatientQuery& q) {
  Where w;
  w.sql = q.include_retired ? "1" : "p.merged_into IS NULL";
  if (!q.id.empty()) w.add("p.id = ?", {q.id});
  if (q.identifier) {
    const Identifier& id = *q.identifier;
    if (id.system == kNhsNumberSystem) {
      w.add("p.nhs_number = ? AND p.nhs_number_trusted = 1", {id.value});
    } else if (id.system.empty()) {
      w.add("(p.pk IN (SELECT patient FROM identifiers WHERE value = ?) OR "
            "(p.nhs_number = ? AND p.nhs_number_trusted = 1))",
            {id.value, id.value});
    } else {
      w.add("p.pk IN (SELECT patient FROM identifiers WHERE value = ? AND system = ?)", {id.value, id.system});
    }
  }
  // Names match any of the patient's names: the primary one (patients, given_names) or another
  // (other_names, other_given_names; migration 8).
  constexpr std::string_view kOtherFamily = "SELECT patient FROM other_names WHERE family_norm >= ? AND family_norm < ?";
  constexpr std::string_view kAnyGiven =
      "SELECT patient FROM given_names WHERE value_norm >= ? AND value_norm < ? UNION ALL "
      "SELECT patient FROM other_given_names WHERE value_norm >= ? AND value_norm < ?";
  if (const std::string f = normalise_name(q.family); !f.empty()) {
    const std::string end = prefix_upper_bound(f);
    w.add("(p.family_norm >= ? AND p.family_norm < ? OR p.pk IN (" + std::string(kOtherFamily) + "))", {f, end, f, end});
  }
  if (const std::string g = normalise_name(q.given); !g.empty()) {
    const std::string end = prefix_upper_bound(g);
    w.add("p.pk IN (" + std::string(kAnyGiven) + ")", {g, end, g, end});
  }
  if (const std::string n = normalise_name(q.name); !n.empty()) {
    const std::string end = prefix_upper_bound(n);
    w.add("(p.family_norm >= ? AND p.family_norm < ? OR p.pk IN (" + std::string(kOtherFamily) + " UNION ALL " +
              std::string(kAnyGiven) + "))",
          {n, end, n, end, n, end, n, end});
  }
  if (!q.birthdate.empty()) {
    const std::int64_t now = now_epoch_seconds();
    for (const auto& [prefix, range] : q.birthdate) add_birthdate(w, prefix, range, now);
  }
  if (!q.gender.empty()) w.add("p.gender = ?", {q.gender});
  // A string search starts with its value (R4 search.html#string): a range on the index.
  if (const std::string pc = normalise_postcode(q.postcode); !pc.empty())
    w.add("p.postcode_norm >= ? AND p.postcode_norm < ?", {pc, prefix_upper_bound(pc)});
  return w;
}

void bind_params(sqlite::Statement& st, const std::vector<Param>& params) {
  int i = 1;
  for (const Param& p : params) {
    if (const auto* s = std::get_if<std::string>(&p))
      st.bind(i++, std::string_view(*s));
    else
      st.bind(i++, std::get<std::int64_t>(p));
  }
}

}  // namespace

// A read transaction for the lifetime of the object (a consistent WAL snapshot).
class SqliteReader::Snapshot {
 public:
  explicit Snapshot(SqliteReader& r) : r_(r) {
    StatementUse q(r_.st(R::begin));
    begun_ = q->run();
  }
  ~Snapshot() {
    if (!begun_) return;
    StatementUse q(r_.st(R::commit));
    (void)q->run();
  }
  Snapshot(const Snapshot&) = delete;
  Snapshot& operator=(const Snapshot&) = delete;
  const fhir::Status& begun() const { return begun_; }

 private:
  SqliteReader& r_;
  fhir::Status begun_ = fhir::Ok{};
};

fhir::Result<std::unique_ptr<SqliteReader>> SqliteReader::open(const std::string& path, std::int64_t cache_mib,
                                                               std::int64_t mmap_mib) {
  auto db = sqlite::Database::open(path, sqlite::Database::Mode::read_only);
  if (!db) return std::move(db).issue();
  // Sizes are integers we format ourselves: no outside data reaches this SQL.
  const std::string pragmas = "PRAGMA cache_size=" + std::to_string(-cache_mib * 1024) +
                              "; PRAGMA mmap_size=" + std::to_string(mmap_mib * 1024 * 1024) + ";";
  if (auto s = db->exec(pragmas); !s) return std::move(s).issue();
  std::unique_ptr<SqliteReader> r(new SqliteReader(std::move(*db)));
  const std::string patient_by_id = "SELECT " + std::string(kPatientColumns) + " WHERE p.id = ?1";
  const std::string pointers_of =
      "SELECT " + std::string(kPointerColumns) + " WHERE ptr.patient = ?1 ORDER BY ptr.source_ods, ptr.id";
  const std::string pointer_by_id = "SELECT " + std::string(kPointerColumns) + " WHERE ptr.id = ?1";
  // Bounded twice: the writer already keeps at most kMaxEncountersPerPatient rows per patient.
  std::string encounters_of =
      "SELECT organisation_ods, at, source_ods FROM encounters WHERE patient = ?1 ORDER BY at DESC, organisation_ods "
      "LIMIT ";
  encounters_of += std::to_string(kMaxEncountersPerPatient);
  const std::string_view sql[] = {
      "BEGIN",
      "COMMIT",
      patient_by_id,
      "SELECT value FROM given_names WHERE patient = ?1 ORDER BY position",
      kOtherNamesOf,
      "SELECT system, value, source_ods FROM identifiers WHERE patient = ?1 ORDER BY system, value",
      "SELECT id FROM patients WHERE merged_into = ?1 ORDER BY id",
      "SELECT p.id, m.id FROM identifiers i JOIN patients p ON p.pk = i.patient "
      "LEFT JOIN patients m ON m.pk = p.merged_into WHERE i.value = ?1 AND i.system = ?2",
      "SELECT id FROM patients WHERE nhs_number = ?1 AND nhs_number_trusted = 1 AND merged_into IS NULL",
      "SELECT p.pk, m.id FROM patients p LEFT JOIN patients m ON m.pk = p.merged_into WHERE p.id = ?1",
      pointers_of,
      pointer_by_id,
      "SELECT ods_code, name, adapter, endpoint FROM source_systems WHERE ods_code = ?1",
      "SELECT id, patient_id, source_ods, kind, detail, recorded_at FROM conflicts ORDER BY id LIMIT ?1 OFFSET ?2",
      "SELECT (SELECT count(*) FROM patients WHERE merged_into IS NULL), "
      "(SELECT count(*) FROM patients WHERE merged_into IS NOT NULL), (SELECT count(*) FROM identifiers), "
      "(SELECT count(*) FROM pointers), (SELECT count(*) FROM source_systems), (SELECT count(*) FROM conflicts), "
      "(SELECT count(*) FROM patients WHERE merged_into IS NULL AND nhs_number != '' AND nhs_number_trusted = 0)",
      "SELECT member, coalesce(until, ''), source_ods FROM care_team WHERE patient = ?1 ORDER BY member",
      encounters_of,
      "SELECT 1 FROM identifier_systems WHERE system = ?1",
  };
  static_assert(std::size(sql) == static_cast<std::size_t>(R::count));
  if (auto s = prepare_all(r->db_, sql, std::size(sql), r->statements_); !s) return std::move(s).issue();
  return r;
}

sqlite::Statement& SqliteReader::st(R which) { return statements_[static_cast<std::size_t>(which)]; }

fhir::Result<std::optional<std::string>> SqliteReader::follow_merges(std::string id) {
  auto fin = final_patient(std::move(id));
  if (!fin) return std::move(fin).issue();
  if (!*fin) return std::optional<std::string>();
  return std::optional<std::string>(std::move((*fin)->second));
}

fhir::Result<std::optional<std::pair<std::int64_t, std::string>>> SqliteReader::final_patient(std::string id) {
  for (int hops = 0; hops <= kMaxMergeDepth; ++hops) {
    StatementUse q(st(R::pk_and_survivor));
    q->bind(1, id);
    auto row = q->step();
    if (!row) return storage(row.issue());
    if (!*row) return std::optional<std::pair<std::int64_t, std::string>>();
    if (q->column_is_null(1)) return std::optional<std::pair<std::int64_t, std::string>>({q->column_int64(0), id});
    id = q->column_text(1);
  }
  return Issue::make(ErrorCode::internal_error, "merge chain too long or cyclic");
}

fhir::Status SqliteReader::fill_record(std::int64_t pk, PatientRecord& rec) {
  {
    StatementUse q(st(R::given_of));
    q->bind(1, pk);
    for (;;) {
      auto row = q->step();
      if (!row) return storage(row.issue());
      if (!*row) break;
      rec.demographics.given.push_back(q->column_text(0));
    }
  }
  if (auto s = read_other_names(st(R::other_names_of), pk, rec.demographics.other_names); !s) return s;
  {
    StatementUse q(st(R::identifiers_of));
    q->bind(1, pk);
    for (;;) {
      auto row = q->step();
      if (!row) return storage(row.issue());
      if (!*row) break;
      rec.identifiers.push_back({q->column_text(0), q->column_text(1), q->column_text(2)});
    }
  }
  {
    StatementUse q(st(R::merged_from));
    q->bind(1, pk);
    for (;;) {
      auto row = q->step();
      if (!row) return storage(row.issue());
      if (!*row) break;
      rec.merged_from.push_back(q->column_text(0));
    }
  }
  {
    StatementUse q(st(R::care_team_of));
    q->bind(1, pk);
    for (;;) {
      auto row = q->step();
      if (!row) return storage(row.issue());
      if (!*row) break;
      rec.care_team.push_back({q->column_text(0), q->column_text(1), q->column_text(2)});
    }
  }
  StatementUse q(st(R::encounters_of));
  q->bind(1, pk);
  for (;;) {
    auto row = q->step();
    if (!row) return storage(row.issue());
    if (!*row) break;
    rec.encounters.push_back({q->column_text(0), q->column_int64(1), q->column_text(2)});
  }
  return fhir::Ok{};
}

fhir::Result<std::optional<PatientRecord>> SqliteReader::read_patient(const std::string& id) {
  Snapshot snap(*this);
  if (!snap.begun()) return storage(snap.begun().issue());
  std::optional<PatientRecord> rec;
  std::int64_t pk = 0;
  {
    StatementUse q(st(R::patient_by_id));
    q->bind(1, id);
    auto row = q->step();
    if (!row) return storage(row.issue());
    if (!*row) return rec;
    pk = q->column_int64(0);
    rec = patient_from_row(*q);
  }
  if (auto s = fill_record(pk, *rec); !s) return std::move(s).issue();
  return rec;
}

fhir::Result<std::optional<std::string>> SqliteReader::lookup_identifier(std::string_view system,
                                                                         std::string_view value) {
  if (system == kNhsNumberSystem) {
    if (!fhir::is_valid_nhs_number(value)) return std::optional<std::string>();
    StatementUse q(st(R::lookup_nhs));
    q->bind(1, value);
    auto row = q->step();
    if (!row) return storage(row.issue());
    if (!*row) return std::optional<std::string>();
    return std::optional<std::string>(q->column_text(0));
  }
  std::string survivor;
  {
    StatementUse q(st(R::lookup_local));
    q->bind(1, value).bind(2, system);
    auto row = q->step();
    if (!row) return storage(row.issue());
    if (!*row) return std::optional<std::string>();
    if (q->column_is_null(1)) return std::optional<std::string>(q->column_text(0));
    survivor = q->column_text(1);  // identifiers move on merge, so this is rare
  }
  return follow_merges(std::move(survivor));
}

fhir::Result<Page<PatientRecord>> SqliteReader::search_patients(const PatientQuery& q) {
  const Where w = where_for(q);
  Snapshot snap(*this);
  if (!snap.begun()) return storage(snap.begun().issue());
  Page<PatientRecord> page;
  // The total from a count only when the page cannot tell it: a page shorter than asked for,
  // with at least one row or at the start, ends the matches, so offset + rows is the total in
  // this snapshot (an identifier search, the common case, returns zero or one row).
  const auto count_all = [&]() -> fhir::Status {
    // Search shapes come from the statement cache (sqlite::Database::cached, bounded).
    auto c = db_.cached("SELECT count(*) FROM patients p WHERE " + w.sql);
    if (!c) return storage(c.issue());
    bind_params(*c, w.params);
    auto row = c->step();
    if (!row) return storage(row.issue());
    page.total = *row ? c->column_int64(0) : 0;
    return fhir::Ok{};
  };
  const std::size_t limit = clamp_page(q.count);
  if (limit == 0) {
    if (auto s = count_all(); !s) return std::move(s).issue();
    return page;
  }
  std::vector<std::int64_t> pks;
  {
    auto s = db_.cached("SELECT " + std::string(kPatientColumns) + " WHERE " + w.sql +
                        " ORDER BY p.family_norm, p.given_norm, p.id LIMIT ? OFFSET ?");
    if (!s) return storage(s.issue());
    bind_params(*s, w.params);
    const int n = static_cast<int>(w.params.size());
    s->bind(n + 1, static_cast<std::int64_t>(limit)).bind(n + 2, static_cast<std::int64_t>(q.offset));
    for (;;) {
      auto row = s->step();
      if (!row) return storage(row.issue());
      if (!*row) break;
      pks.push_back(s->column_int64(0));
      page.items.push_back(patient_from_row(*s));
    }
  }
  if (page.items.size() < limit && (!page.items.empty() || q.offset == 0))
    page.total = static_cast<std::int64_t>(q.offset + page.items.size());
  else if (auto s = count_all(); !s)
    return std::move(s).issue();
  for (std::size_t i = 0; i < pks.size(); ++i)
    if (auto s = fill_record(pks[i], page.items[i]); !s) return std::move(s).issue();
  return page;
}

fhir::Result<std::vector<Pointer>> SqliteReader::pointers_for(const std::string& patient_id) {
  Snapshot snap(*this);
  if (!snap.begun()) return storage(snap.begun().issue());
  auto fin = final_patient(patient_id);
  if (!fin) return std::move(fin).issue();
  if (!*fin) return Issue::make(ErrorCode::not_found, "no patient with this id in the record locator", "patient");
  StatementUse q(st(R::pointers_of));
  q->bind(1, (*fin)->first);
  std::vector<Pointer> out;
  for (;;) {
    auto row = q->step();
    if (!row) return storage(row.issue());
    if (!*row) break;
    out.push_back(pointer_from_row(*q));
  }
  return out;
}

fhir::Result<std::optional<Pointer>> SqliteReader::read_pointer(const std::string& pointer_id) {
  StatementUse q(st(R::pointer_by_id));
  q->bind(1, pointer_id);
  auto row = q->step();
  if (!row) return storage(row.issue());
  if (!*row) return std::optional<Pointer>();
  return std::optional<Pointer>(pointer_from_row(*q));
}

fhir::Result<std::optional<SourceSystem>> SqliteReader::source_system(const std::string& ods_code) {
  StatementUse q(st(R::source));
  q->bind(1, ods_code);
  auto row = q->step();
  if (!row) return storage(row.issue());
  if (!*row) return std::optional<SourceSystem>();
  return std::optional<SourceSystem>(
      SourceSystem{q->column_text(0), q->column_text(1), q->column_text(2), q->column_text(3)});
}

fhir::Result<bool> SqliteReader::knows_identifier_system(std::string_view system) {
  if (system == kNhsNumberSystem) return true;
  StatementUse q(st(R::identifier_system));
  q->bind(1, system);
  auto row = q->step();
  if (!row) return storage(row.issue());
  return *row;
}

fhir::Result<std::vector<Conflict>> SqliteReader::conflicts(std::size_t limit, std::size_t offset) {
  StatementUse q(st(R::conflicts));
  q->bind(1, static_cast<std::int64_t>(clamp_page(limit))).bind(2, static_cast<std::int64_t>(offset));
  std::vector<Conflict> out;
  for (;;) {
    auto row = q->step();
    if (!row) return storage(row.issue());
    if (!*row) break;
    out.push_back({q->column_int64(0), q->column_text(1), q->column_text(2), q->column_text(3), q->column_text(4),
                   q->column_text(5)});
  }
  return out;
}

fhir::Result<Stats> SqliteReader::stats() {
  StatementUse q(st(R::stats));
  auto row = q->step();
  if (!row) return storage(row.issue());
  Stats s;
  if (!*row) return s;
  s.patients = q->column_int64(0);
  s.retired = q->column_int64(1);
  s.identifiers = q->column_int64(2);
  s.pointers = q->column_int64(3);
  s.source_systems = q->column_int64(4);
  s.conflicts = q->column_int64(5);
  s.nhs_numbers_untrusted = q->column_int64(6);
  return s;
}

}  // namespace gw::locator
