// SPDX-License-Identifier: Apache-2.0
// locator.db migrations: a file at every earlier version upgrades to the latest schema with
// its rows intact, and a file newer than the code is refused untouched.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "gateway/locator/schema.h"
#include "gateway/sqlite/database.h"
#include "gateway/sqlite/migrations.h"
#include "locator_test_support.h"

using namespace gw::locator;
using gw::sqlite::Database;
using gw::sqlite::Migration;

namespace {

int latest() { return migrations().back().version; }

// Every schema object's definition, in name order.
std::vector<std::string> schema_of(const std::string& path) {
  auto db = Database::open(path, Database::Mode::read_only);
  REQUIRE(db.ok());
  auto st = db->prepare("SELECT type || ' ' || name || ': ' || coalesce(sql, '') FROM sqlite_master ORDER BY name");
  REQUIRE(st.ok());
  std::vector<std::string> out;
  while (*st->step()) out.push_back(st->column_text(0));
  return out;
}

int version_of(const std::string& path) {
  auto db = Database::open(path, Database::Mode::read_only);
  REQUIRE(db.ok());
  return *db->user_version();
}

std::string text_of(const std::string& path, const std::string& sql) {
  auto db = Database::open(path, Database::Mode::read_only);
  REQUIRE(db.ok());
  auto st = db->prepare(sql);
  REQUIRE(st.ok());
  REQUIRE(*st->step());
  return st->column_text(0);
}

// Rows a version-2 file could hold, written with that version's SQL (columns named where a
// later version added one, so that the rows go into files of every later version too).
const char* const kVersion2Rows = R"sql(
INSERT INTO source_systems VALUES ('RX1', 'Synthetic Trust', 'hl7v2', 'mllp://127.0.0.1:2575', '2026-01-01T00:00:00.000Z');
INSERT INTO patients(pk, id, nhs_number, nhs_number_trusted, nhs_verification, family, family_norm, given_norm,
  birth_date, birth_begin, birth_end, gender, postcode, postcode_norm, gp_practice_ods, deceased, objection,
  merged_into, version, last_updated)
VALUES (1, 'p-old', '9000000009', 1, '01', 'Smith', 'smith', 'jane', '1980-05-01', 325987200, 326073600, 'female',
  'LS1 4AB', 'LS14AB', 'B86001', '', 0, NULL, 3, '2026-01-01T00:00:00.000Z'),
       (2, 'p-retired', '', 0, '', 'Smith', 'smith', 'jane', '', NULL, NULL, '', '', '', '', '', 0, 1, 2,
  '2026-01-01T00:00:00.000Z');
INSERT INTO given_names VALUES (1, 0, 'Jane', 'jane'), (1, 1, 'Ann', 'ann');
INSERT INTO identifiers(value, system, patient, source_ods) VALUES ('M-1', 'https://trust.example.nhs.uk/Id/mrn', 1, 'RX1');
INSERT INTO pointers(id, patient, source_ods, type_system, type_code, type_display, category_code, category_display,
  resource_types, url, content_type, version, last_updated)
VALUES ('ptr-1', 1, 'RX1', 'http://snomed.info/sct', '736253002', 'Mental health care plan', '', '', 'CarePlan',
  'https://rx1.example.nhs.uk/fhir/CarePlan?patient=M-1', 'application/fhir+json', 1, '2026-01-01T00:00:00.000Z');
INSERT INTO merges VALUES (1, 2, 1, 'RX1', '2026-01-01T00:00:00.000Z');
INSERT INTO conflicts VALUES (1, 'p-old', 'RY2', 'nhs-number-mismatch', 'detail', '2026-01-01T00:00:00.000Z');
)sql";

// Care relationship rows a version-3 file could hold (nothing wrote them then): encounter
// times as TEXT, one of them unreadable.
const char* const kVersion3Rows = R"sql(
INSERT INTO care_team VALUES (1, 'user-1', '2999-01-01'), (1, 'RX1', NULL);
INSERT INTO encounters(patient, organisation_ods, at) VALUES (1, 'RX1', '1700000000'),
  (1, 'RY2', '2026-01-01T10:00:00Z'), (1, 'RZ3', 'yesterday'), (1, 'RX1', '1700000000');
)sql";

// The same relationships as version 4 writes them (source_ods empty, as version 4 leaves the
// rows of version 3): epoch seconds, no duplicate, nothing unreadable.
const char* const kVersion4Rows = R"sql(
INSERT INTO care_team VALUES (1, 'user-1', '2999-01-01', ''), (1, 'RX1', NULL, '');
INSERT INTO encounters(patient, organisation_ods, at, source_ods) VALUES (1, 'RX1', 1700000000, ''),
  (1, 'RY2', 1767261600, '');
)sql";

// A maiden name as version 8 writes it (another name of p-old, with a given name).
const char* const kVersion8Rows = R"sql(
INSERT INTO other_names VALUES (1, 0, 'maiden', 'Murazik', 'murazik');
INSERT INTO other_given_names VALUES (1, 0, 0, 'Jane', 'jane');
)sql";

}  // namespace

TEST_CASE("Locator migrations: numbered 1..N, starting with the file's gateway_info") {
  const auto& all = migrations();
  REQUIRE(all.size() >= 3);
  for (std::size_t i = 0; i < all.size(); ++i) CHECK(all[i].version == static_cast<int>(i) + 1);
  CHECK(all[0].name == "gateway_info");
}

TEST_CASE("Locator migrations: every earlier version upgrades to the latest schema with its data") {
  const std::string fresh = (gw::test::temp_dir("locator-fresh") / "locator.db").string();
  { REQUIRE(SqliteLocator::open(fresh).ok()); }
  const std::vector<std::string> expected_schema = schema_of(fresh);
  REQUIRE(expected_schema.size() > 10);

  for (int start = 0; start < latest(); ++start) {
    CAPTURE(start);
    const std::string path = (gw::test::temp_dir("locator-upgrade") / "locator.db").string();
    {
      auto db = Database::open(path);
      REQUIRE(db.ok());
      const std::vector<Migration> first(migrations().begin(), migrations().begin() + start);
      REQUIRE(gw::sqlite::migrate(*db, first).ok());
      CHECK(*db->user_version() == start);
      if (start >= 2) REQUIRE(db->exec(kVersion2Rows).ok());
      if (start == 3) REQUIRE(db->exec(kVersion3Rows).ok());
      if (start >= 4) REQUIRE(db->exec(kVersion4Rows).ok());
      // From version 6 on, the writer lists the system of every identifier it inserts.
      if (start >= 6)
        REQUIRE(db->exec("INSERT INTO identifier_systems(system) VALUES ('https://trust.example.nhs.uk/Id/mrn')").ok());
      if (start >= 8) REQUIRE(db->exec(kVersion8Rows).ok());
    }
    auto opened = SqliteLocator::open(path);
    REQUIRE(opened.ok());
    Locator& l = **opened;
    CHECK(version_of(path) == latest());
    CHECK(schema_of(path) == expected_schema);
    CHECK(text_of(path, "SELECT value FROM gateway_info WHERE key = 'role'") == "locator");

    if (start >= 2) {
      auto p = l.read_patient("p-old");
      REQUIRE(p.ok());
      REQUIRE(p->has_value());
      const PatientRecord& rec = **p;
      CHECK(rec.demographics.nhs_number == "9000000009");
      CHECK(rec.nhs_number_trusted);
      CHECK(rec.demographics.given == std::vector<std::string>{"Jane", "Ann"});
      CHECK(rec.demographics.gp_practice_ods == "B86001");
      CHECK(rec.version == 3);
      CHECK(rec.merged_from == std::vector<std::string>{"p-retired"});
      if (start >= 3) {
        REQUIRE(rec.care_team.size() == 2);
        CHECK(rec.care_team[0].member == "RX1");
        CHECK(rec.care_team[0].until.empty());
        CHECK(rec.care_team[1].until == "2999-01-01");
        CHECK(rec.care_team[1].source_ods.empty());
        REQUIRE(rec.encounters.size() == 2);  // the duplicate is one, the unreadable time is dropped
        CHECK(rec.encounters[0].organisation_ods == "RY2");
        CHECK(rec.encounters[0].at == fhir::parse_fhir_date("2026-01-01T10:00:00Z")->begin);
        CHECK(rec.encounters[1].organisation_ods == "RX1");
        CHECK(rec.encounters[1].at == 1700000000);
      } else {
        CHECK(rec.care_team.empty());
        CHECK(rec.encounters.empty());
      }
      REQUIRE(rec.identifiers.size() == 1);  // read through identifiers_patient (migration 5)
      CHECK(rec.identifiers[0].value == "M-1");
      CHECK(rec.identifiers[0].source == "RX1");
      CHECK(*l.lookup_identifier("https://trust.example.nhs.uk/Id/mrn", "M-1") == "p-old");
      CHECK(*l.lookup_identifier(kNhsNumberSystem, "9000000009") == "p-old");
      // Migration 6 lists the systems of the identifiers already held.
      CHECK(*l.knows_identifier_system("https://trust.example.nhs.uk/Id/mrn"));
      CHECK_FALSE(*l.knows_identifier_system("https://other.example.nhs.uk/Id/mrn"));
      CHECK(*(*l.read_patient("p-retired"))->merged_into == "p-old");
      auto ptrs = l.pointers_for("p-retired");
      REQUIRE(ptrs.ok());
      REQUIRE(ptrs->size() == 1);
      CHECK(ptrs->front().resource_types == std::vector<std::string>{"CarePlan"});
      CHECK(ptrs->front().date.empty());  // migration 7: no source date was kept before
      CHECK((*l.source_system("RX1"))->adapter == "hl7v2");
      CHECK(l.conflicts(10, 0)->size() == 1);
      // Search works on the migrated rows (normalised columns, birth range).
      PatientQuery q;
      q.family = "SMI";
      q.given = "an";
      q.birthdate.push_back({fhir::Prefix::eq, *fhir::parse_fhir_date("1980")});
      auto found = l.search_patients(q);
      REQUIRE(found.ok());
      CHECK(found->total == 1);
      // Migration 8: other names, none before it.
      const std::vector<HumanName> maiden{{"maiden", "Murazik", {"Jane"}}};
      CHECK(rec.demographics.other_names == (start >= 8 ? maiden : std::vector<HumanName>{}));
      PatientQuery by_maiden;
      by_maiden.family = "muraz";
      CHECK(l.search_patients(by_maiden)->total == (start >= 8 ? 1 : 0));
      // And new writes go on from the old rows.
      auto r = l.resolve(test::claim("RX1", "9000000009", {{"https://trust.example.nhs.uk/Id/mrn", "M-2", ""}}));
      REQUIRE(r.ok());
      CHECK(r->patient_id == "p-old");
      CHECK(r->outcome == MatchOutcome::matched_nhs_number);
      // Migration 9: the identifiers of earlier versions are current ones (none is marked
      // retired by a merge), so a claim naming one alone still updates the record.
      auto by_mrn = l.resolve(test::claim("RX1", "", {{"https://trust.example.nhs.uk/Id/mrn", "M-1", ""}}));
      REQUIRE(by_mrn.ok());
      CHECK(by_mrn->outcome == MatchOutcome::matched_identifier);
      Demographics renamed;
      renamed.other_names = {{"old", "Jones", {"Janet"}}};
      REQUIRE(l.resolve(test::claim("RX1", "9000000009", {}, renamed)).ok());
      CHECK((*l.read_patient("p-old"))->demographics.other_names == renamed.other_names);
      PatientQuery by_old;
      by_old.given = "janet";
      CHECK(l.search_patients(by_old)->total == 1);
      // Migration 10: objection changes awaiting their audit record, none before it; a change
      // on the old rows keeps its row (merges followed) until it is forgotten.
      REQUIRE(l.unaudited_objection_changes(10).ok());
      CHECK(l.unaudited_objection_changes(10)->empty());
      ObjectionChange oc;
      oc.id = new_objection_change_id();
      oc.patient_id = "p-retired";
      oc.nhs_number = "9000000009";
      oc.objection = true;
      oc.by = "user ig-jones";
      oc.time_ms = 1;
      auto changed = l.change_objection(oc);
      REQUIRE_MESSAGE(changed.ok(), changed.issue().diagnostics);
      CHECK(*changed);
      auto waiting = l.unaudited_objection_changes(10);
      REQUIRE(waiting.ok());
      REQUIRE(waiting->size() == 1);
      CHECK(waiting->front().patient_id == "p-old");
      REQUIRE(l.forget_objection_changes({oc.id}).ok());
      CHECK(l.unaudited_objection_changes(10)->empty());
    } else {
      CHECK(l.stats()->patients == 0);
    }
  }
}

TEST_CASE("Locator migrations: a file newer than this code is refused and left untouched") {
  const std::string path = (gw::test::temp_dir("locator-newer") / "locator.db").string();
  {
    auto db = Database::open(path);
    REQUIRE(db.ok());
    REQUIRE(gw::sqlite::migrate(*db, migrations()).ok());
    REQUIRE(db->exec("PRAGMA user_version = " + std::to_string(latest() + 1)).ok());
  }
  auto opened = SqliteLocator::open(path);
  REQUIRE_FALSE(opened.ok());
  CHECK(opened.issue().code == fhir::ErrorCode::not_ready);
  CHECK(opened.issue().diagnostics.find("newer") != std::string::npos);
  CHECK(version_of(path) == latest() + 1);
}

TEST_CASE("Locator schema: a patient's identifiers are read from their index alone, in order") {
  // The reader's query (SqliteReader, identifiers_of): one descent of identifiers_patient, no
  // lookup in the table and no sort (migration 5).
  const std::string path = (gw::test::temp_dir("locator-plan") / "locator.db").string();
  { REQUIRE(SqliteLocator::open(path).ok()); }
  auto db = Database::open(path, Database::Mode::read_only);
  REQUIRE(db.ok());
  auto st = db->prepare(
      "EXPLAIN QUERY PLAN SELECT system, value, source_ods FROM identifiers WHERE patient = ?1 ORDER BY system, value");
  REQUIRE(st.ok());
  std::string plan;
  while (*st->step()) plan += st->column_text(3) + "\n";
  CAPTURE(plan);
  CHECK(plan.find("COVERING INDEX identifiers_patient") != std::string::npos);
  CHECK(plan.find("TEMP B-TREE") == std::string::npos);
}
