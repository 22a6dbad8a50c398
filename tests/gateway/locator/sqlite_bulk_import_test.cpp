// SPDX-License-Identifier: Apache-2.0
// SqliteLocator's bulk import: an import() call of at least bulk_import_min records into an
// index holding at most as many patients drops the secondary indexes no import read uses and
// rebuilds them at its end. It must answer exactly as a record-by-record import does, and an
// import that never finished must leave a file that reopens with its indexes back.
#include <doctest/doctest.h>

#include <atomic>
#include <string>
#include <vector>

#include "gateway/sqlite/database.h"
#include "locator_test_support.h"

using namespace gw::locator;
using namespace gw::locator::test;

namespace {

const char* const kDeferrable[] = {"patients_birth", "patients_postcode", "given_names_norm"};

std::unique_ptr<SqliteLocator> open_at(const std::string& path, SqliteLocatorOptions o = {}) {
  o.read_connections = 1;
  auto l = SqliteLocator::open(path, o);
  REQUIRE(l.ok());
  return std::move(*l);
}

std::string fresh_path(const char* name) { return (gw::test::temp_dir(name) / "locator.db").string(); }

// The number of the named index in the file (0 or 1), read on a connection of its own.
int index_count(const std::string& path, const char* name) {
  auto db = gw::sqlite::Database::open(path, gw::sqlite::Database::Mode::read_only);
  REQUIRE(db.ok());
  auto st = db->prepare("SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = ?1");
  REQUIRE(st.ok());
  st->bind(1, std::string_view(name));
  REQUIRE(*st->step());
  return static_cast<int>(st->column_int64(0));
}

int deferred_notes(const std::string& path) {
  auto db = gw::sqlite::Database::open(path, gw::sqlite::Database::Mode::read_only);
  REQUIRE(db.ok());
  auto st = db->prepare("SELECT count(*) FROM gateway_info WHERE key LIKE 'deferred_index:%'");
  REQUIRE(st.ok());
  REQUIRE(*st->step());
  return static_cast<int>(st->column_int64(0));
}

// Six records: four people (two sent twice, once by NHS number and once by a local
// identifier only), one bad record, each with a pointer.
std::vector<ImportRecord> population() {
  std::vector<ImportRecord> r(6);
  r[0].identity = claim("RX1", nhs(10), {{kMrnA, "B1", ""}}, person("Ashby", "Ann", "1970-01-02", "female", "LS1 4AB"));
  r[1].identity = claim("RX1", nhs(11), {{kMrnA, "B2", ""}}, person("Brook", "Ben", "1980-03-04", "male", "E1 6AN"));
  r[2].identity = claim("RY2", nhs(10), {{kMrnB, "C1", ""}});  // r[0] again, by NHS number
  r[3].identity = claim("RY2", "", {{kMrnA, "B2", ""}, {kMrnB, "C2", ""}});  // r[1] again, by identifier
  r[4].identity = claim("RX1", nhs(12), {{kMrnA, "B3", ""}}, person("Cole", "Cy", "1990-05-06", "other", "M1 1AE"));
  r[5].identity = claim("RX1", nhs(13), {{kMrnA, "B4", ""}}, person("Dale", "Di", "2000-07-08", "female", "B1 1AA"));
  for (std::size_t i = 0; i < r.size(); ++i) {
    r[i].pointers = {pointer("")};
    r[i].pointers[0].id = "ptr-" + std::to_string(i);
    r[i].pointers[0].source_ods = r[i].identity.source_ods;
  }
  r[4].pointers[0].type_code.clear();  // rejected as a whole
  return r;
}

}  // namespace

TEST_CASE("SqliteLocator bulk import: same answers as a record-by-record import, indexes rebuilt") {
  const std::string bulk_path = fresh_path("locator-bulk");
  const std::string plain_path = fresh_path("locator-plain");
  SqliteLocatorOptions bulk_o;
  bulk_o.import_batch = 2;  // three transactions, so the deferral spans commits
  bulk_o.bulk_import_min = 1;
  SqliteLocatorOptions plain_o;
  plain_o.import_batch = 2;
  plain_o.bulk_import_min = 0;

  // During the second transaction the deferred indexes are gone; after the import they are back.
  std::atomic<int> batches{0};
  std::atomic<int> seen_during{-1};
  bulk_o.on_batch_start = [&] {
    if (++batches == 2) seen_during = index_count(bulk_path, "patients_birth");
  };
  // Progress is reported after each committed transaction, on the importing thread.
  std::vector<std::pair<std::size_t, std::size_t>> progress;
  bulk_o.on_import_progress = [&](std::size_t done, std::size_t total) { progress.emplace_back(done, total); };
  auto bulk = open_at(bulk_path, bulk_o);
  auto plain = open_at(plain_path, plain_o);
  const auto records = population();
  auto a = bulk->import(records);
  auto b = plain->import(records);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(seen_during == 0);
  REQUIRE(progress.size() == (records.size() + 1) / 2);
  for (std::size_t k = 0; k < progress.size(); ++k) {
    CHECK(progress[k].first == std::min(records.size(), 2 * (k + 1)));
    CHECK(progress[k].second == records.size());
  }
  for (const char* name : kDeferrable) CHECK(index_count(bulk_path, name) == 1);
  CHECK(deferred_notes(bulk_path) == 0);

  CHECK(a->created == b->created);
  CHECK(a->matched == b->matched);
  CHECK(a->rejected == b->rejected);
  CHECK(a->created == 3);
  CHECK(a->matched == 2);
  CHECK(a->rejected == 1);
  REQUIRE(a->records.size() == records.size());
  for (std::size_t i = 0; i < records.size(); ++i) {
    REQUIRE(a->records[i].ok() == b->records[i].ok());
    if (!a->records[i].ok()) {
      CHECK(a->records[i].issue().expression == b->records[i].issue().expression);
      continue;
    }
    CHECK(a->records[i]->outcome == b->records[i]->outcome);
  }
  CHECK_FALSE(a->records[4].ok());
  CHECK(a->records[2]->patient_id == a->records[0]->patient_id);
  CHECK(a->records[3]->patient_id == a->records[1]->patient_id);

  // Searches that use the rebuilt indexes find what they found before.
  PatientQuery by_postcode;
  by_postcode.postcode = "E1 6AN";
  auto found = bulk->search_patients(by_postcode);
  REQUIRE(found.ok());
  REQUIRE(found->items.size() == 1);
  CHECK(found->items[0].id == a->records[1]->patient_id);
  PatientQuery by_given;
  by_given.given = "di";
  found = bulk->search_patients(by_given);
  REQUIRE(found.ok());
  REQUIRE(found->items.size() == 1);
  CHECK(found->items[0].id == a->records[5]->patient_id);
  CHECK(bulk->stats()->patients == plain->stats()->patients);
  CHECK(bulk->stats()->pointers == plain->stats()->pointers);
  CHECK(bulk->stats()->identifiers == plain->stats()->identifiers);

  // A re-import updates rather than duplicates. The index now holds more patients than the
  // call brings, so this one runs with every index in place.
  REQUIRE(bulk->resolve(claim("RX1", nhs(14), {})).ok());
  std::vector<ImportRecord> again(records.begin(), records.begin() + 3);
  batches = 0;
  seen_during = -1;
  auto c = bulk->import(again);
  REQUIRE(c.ok());
  CHECK(c->created == 0);
  CHECK(c->matched == 3);
  CHECK(bulk->stats()->patients == 4);
  CHECK(seen_during == 1);
  CHECK(deferred_notes(bulk_path) == 0);
}

TEST_CASE("SqliteLocator bulk import: a file left with deferred indexes gets them back when opened") {
  const std::string path = fresh_path("locator-bulk-crash");
  std::string patient;
  {
    auto l = open_at(path);
    auto r =
        l->resolve(claim("RX1", nhs(20), {{kMrnA, "K1", ""}}, person("Eden", "Eve", "1975-09-10", "female", "N1 9GU")));
    REQUIRE(r.ok());
    patient = r->patient_id;
  }
  {
    // What the first transaction of a bulk import commits: the notes and the drops. The
    // process then stops before the import ends.
    auto db = gw::sqlite::Database::open(path);
    REQUIRE(db.ok());
    REQUIRE(db->exec("BEGIN IMMEDIATE").ok());
    for (const char* name : kDeferrable) {
      auto note = db->prepare(
          "INSERT INTO gateway_info(key, value) SELECT 'deferred_index:' || name, sql FROM sqlite_master "
          "WHERE type = 'index' AND name = ?1");
      REQUIRE(note.ok());
      note->bind(1, std::string_view(name));
      REQUIRE(note->run().ok());
      REQUIRE(db->exec(std::string("DROP INDEX ") + name).ok());
    }
    REQUIRE(db->exec("COMMIT").ok());
  }
  for (const char* name : kDeferrable) CHECK(index_count(path, name) == 0);
  CHECK(deferred_notes(path) == 3);
  {
    // Without the indexes every answer is still right.
    auto db = gw::sqlite::Database::open(path, gw::sqlite::Database::Mode::read_only);
    REQUIRE(db.ok());
    auto st = db->prepare("SELECT count(*) FROM patients WHERE postcode_norm = 'N19GU'");
    REQUIRE(st.ok());
    REQUIRE(*st->step());
    CHECK(st->column_int64(0) == 1);
  }
  auto l = open_at(path);
  for (const char* name : kDeferrable) CHECK(index_count(path, name) == 1);
  CHECK(deferred_notes(path) == 0);
  PatientQuery q;
  q.postcode = "N1 9GU";
  auto found = l->search_patients(q);
  REQUIRE(found.ok());
  REQUIRE(found->items.size() == 1);
  CHECK(found->items[0].id == patient);
}

TEST_CASE("SqliteLocator bulk import: a note that is not for one of the locator's own indexes is left alone") {
  const std::string path = fresh_path("locator-bulk-note");
  { open_at(path); }
  {
    auto db = gw::sqlite::Database::open(path);
    REQUIRE(db.ok());
    const char* const note =
        "INSERT INTO gateway_info(key, value) VALUES ('deferred_index:evil', 'CREATE INDEX evil ON patients(id)')";
    REQUIRE(db->exec(note).ok());
  }
  auto l = open_at(path);
  CHECK(index_count(path, "evil") == 0);
  CHECK(deferred_notes(path) == 1);
  CHECK(l->stats().ok());
}

TEST_CASE("SqliteLocator bulk import: a commit by another connection mid-import is seen by the next records") {
  // A bulk import into an empty file skips lookups of keys it never wrote. Another
  // connection's commit between its transactions must end that: the record whose
  // demographics match the patient written outside (nothing unique to collide with) is
  // matched to it rather than created again.
  const std::string path = fresh_path("locator-bulk-outside");
  SqliteLocatorOptions o;
  o.import_batch = 1;
  o.bulk_import_min = 1;
  std::atomic<int> batches{0};
  std::atomic<bool> written{false};
  o.on_batch_start = [&] {
    if (++batches != 2) return;
    auto db = gw::sqlite::Database::open(path);
    if (!db) return;
    written = db->exec(
                    "INSERT INTO patients(id, nhs_number, nhs_number_trusted, nhs_verification, family, family_norm, "
                    "given_norm, birth_date, birth_begin, birth_end, gender, postcode, postcode_norm, gp_practice_ods, "
                    "deceased, objection, merged_into, version, last_updated) VALUES ('p-outside', '', 0, '', 'Zed', "
                    "'zed', 'zoe', '1950-01-01', NULL, NULL, 'female', 'N1 9GU', 'N19GU', '', '', 0, NULL, 1, "
                    "'2026-01-01T00:00:00.000Z')")
                  .ok();
  };
  auto l = open_at(path, o);
  std::vector<ImportRecord> records(3);
  records[0].identity = claim("RX1", nhs(30), {{kMrnA, "IN-1", ""}});
  records[1].identity = claim("RX1", nhs(31), {{kMrnA, "IN-2", ""}});
  records[2].identity = claim("RX1", "", {{kMrnA, "IN-3", ""}}, person("Zed", "Zoe", "1950-01-01", "female", "N1 9GU"));
  auto r = l->import(records);
  REQUIRE(r.ok());
  REQUIRE(written);
  REQUIRE(r->records.size() == 3);
  REQUIRE(r->records[2].ok());
  CHECK(r->records[2]->outcome == MatchOutcome::matched_demographics);
  CHECK(r->records[2]->patient_id == "p-outside");
  CHECK(r->created == 2);
  CHECK(*l->lookup_identifier(kMrnA, "IN-3") == "p-outside");
}

TEST_CASE("SqliteLocator bulk import: duplicates inside one import into an empty file are matched") {
  // The same people several times in one call, by every route the resolution has: the
  // lookups the import skips for keys it never wrote must not skip these.
  const std::string path = fresh_path("locator-bulk-dups");
  SqliteLocatorOptions o;
  o.import_batch = 2;
  o.bulk_import_min = 1;
  auto l = open_at(path, o);
  std::vector<ImportRecord> records(5);
  const Demographics jo = person("Fry", "Jo", "1961-02-03", "male", "SW1A 1AA");
  records[0].identity = claim("RX1", nhs(40), {{kMrnA, "D1", ""}}, jo);
  records[1].identity = claim("RY2", nhs(40), {});                     // NHS number
  records[2].identity = claim("RY2", "", {{kMrnA, "D1", ""}});         // local identifier
  records[3].identity = claim("RZ3", "", {{kMrnB, "D9", ""}}, jo);     // demographics
  records[4].identity = claim("RZ3", "", {{kMrnB, "D9", ""}});         // the identifier linked just before
  auto r = l->import(records);
  REQUIRE(r.ok());
  CHECK(r->created == 1);
  CHECK(r->matched == 4);
  for (const auto& rec : r->records) {
    REQUIRE(rec.ok());
    CHECK(rec->patient_id == r->records[0]->patient_id);
  }
  CHECK(r->records[1]->outcome == MatchOutcome::matched_nhs_number);
  CHECK(r->records[2]->outcome == MatchOutcome::matched_identifier);
  CHECK(r->records[3]->outcome == MatchOutcome::matched_demographics);
  CHECK(r->records[4]->outcome == MatchOutcome::matched_identifier);
}
