// SPDX-License-Identifier: Apache-2.0
// What only SqliteLocator has: the group-commit writer (batching, per-write isolation inside
// a batch, back-pressure), import transactions, and durability across reopen.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "locator_test_support.h"

using namespace gw::locator;
using namespace gw::locator::test;
using namespace std::chrono_literals;

namespace {

// Holds the writer's first batch until the test opens the gate, so the writes queued
// meanwhile are provably drained into one transaction. Bounded: gives up after 20 s.
struct Gate {
  std::atomic<bool> open{false};
  std::atomic<int> batches{0};

  std::function<void()> hook() {
    return [this] {
      if (batches++ != 0) return;
      for (int i = 0; i < 20000 && !open; ++i) std::this_thread::sleep_for(1ms);
    };
  }
};

// Waits (bounded) until `n` writes are queued behind the held batch.
bool wait_queued(SqliteLocator& l, std::uint64_t n) {
  for (int i = 0; i < 20000; ++i) {
    if (l.writer_counters().queued >= n) return true;
    std::this_thread::sleep_for(1ms);
  }
  return false;
}

std::unique_ptr<SqliteLocator> open_at(const std::string& path, SqliteLocatorOptions o = {}) {
  o.mmap_mib = 16;
  auto l = SqliteLocator::open(path, std::move(o));
  REQUIRE(l.ok());
  return std::move(*l);
}

std::string fresh_path(const char* name) { return (gw::test::temp_dir(name) / "locator.db").string(); }

}  // namespace

TEST_CASE("SqliteLocator: 8 threads x 200 resolves all commit, in fewer commits than writes") {
  Gate gate;
  SqliteLocatorOptions o;
  o.on_batch_start = gate.hook();
  auto l = open_at(fresh_path("locator-concurrent"), o);
  constexpr int kThreads = 8, kEach = 200;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        const int n = t * kEach + i;
        std::string mrn = "C";  // appended: g++ 12 -Wrestrict misfires on "literal" + std::string&&
        mrn += std::to_string(n);
        auto r = l->resolve(claim("RX1", nhs(n), {{kMrnA, mrn, ""}}));
        if (r.ok() && r->outcome == MatchOutcome::created) ++ok;
      }
    });
  }
  const bool queued = wait_queued(*l, kThreads);
  gate.open = true;
  for (auto& t : threads) t.join();
  CHECK(queued);
  CHECK(ok == kThreads * kEach);
  const WriterCounters c = l->writer_counters();
  CHECK(c.writes == kThreads * kEach);
  CHECK(c.commits >= 1);
  CHECK(c.commits < c.writes);  // group commit: the held batch alone carried 8 writes
  CHECK(c.failed_commits == 0);
  const Stats st = *l->stats();
  CHECK(st.patients == kThreads * kEach);
  CHECK(st.identifiers == kThreads * kEach);
  // Every one is readable through the read pool.
  for (int n = 0; n < kThreads * kEach; n += 97) CHECK(l->lookup_identifier(kNhsNumberSystem, nhs(n))->has_value());
}

TEST_CASE("SqliteLocator: a failing write in a batch does not affect the others") {
  Gate gate;
  SqliteLocatorOptions o;
  o.on_batch_start = gate.hook();
  auto l = open_at(fresh_path("locator-batch"), o);
  const auto before = l->writer_counters();
  std::vector<std::optional<fhir::Result<Resolution>>> good(3);
  std::optional<fhir::Result<Pointer>> bad;
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i)
    threads.emplace_back([&, i] { good[i].emplace(l->resolve(claim("RX1", nhs(100 + i), {}))); });
  threads.emplace_back([&] { bad.emplace(l->put_pointer("RX1", pointer("no-such-patient"), {})); });
  const bool queued = wait_queued(*l, 4);
  gate.open = true;
  for (auto& t : threads) t.join();
  REQUIRE(queued);
  const auto after = l->writer_counters();
  CHECK(after.commits - before.commits == 1);  // one transaction carried all four
  CHECK(after.writes - before.writes == 4);
  REQUIRE(bad.has_value());
  REQUIRE_FALSE(bad->ok());
  CHECK(bad->issue().code == fhir::ErrorCode::not_found);
  for (int i = 0; i < 3; ++i) {
    REQUIRE(good[i].has_value());
    REQUIRE(good[i]->ok());
    CHECK(*l->lookup_identifier(kNhsNumberSystem, nhs(100 + i)) == (*good[i])->patient_id);
  }
}

TEST_CASE("SqliteLocator: two updates naming the same version in one group commit: one applies, one is 412") {
  std::atomic<bool> hold{false};  // holds the writer's next batch open while set (bounded)
  SqliteLocatorOptions o;
  o.on_batch_start = [&hold] {
    for (int i = 0; i < 20000 && hold; ++i) std::this_thread::sleep_for(1ms);
  };
  auto l = open_at(fresh_path("locator-if-match"), o);
  const std::string pid = l->resolve(claim("RX1", nhs(120), {}))->patient_id;
  auto created = l->put_pointer("RX1", pointer(pid), {});
  REQUIRE(created.ok());
  hold = true;
  std::vector<std::optional<fhir::Result<Pointer>>> puts(2);
  std::vector<std::thread> threads;
  for (int i = 0; i < 2; ++i)
    threads.emplace_back([&, i] { puts[i].emplace(l->put_pointer("RX1", *created, VersionMatch{false, {1}})); });
  const bool queued = wait_queued(*l, 2);
  hold = false;
  for (auto& t : threads) t.join();
  REQUIRE(queued);
  REQUIRE(puts[0].has_value());
  REQUIRE(puts[1].has_value());
  CHECK(puts[0]->ok() != puts[1]->ok());
  const auto& refused = puts[0]->ok() ? *puts[1] : *puts[0];
  CHECK(refused.issue().code == fhir::ErrorCode::precondition_failed);
  CHECK((*l->read_pointer(created->id))->version == 2);
}

TEST_CASE("SqliteLocator: a full write queue answers too_many_requests at once") {
  Gate gate;
  SqliteLocatorOptions o;
  o.on_batch_start = gate.hook();
  o.max_queue = 1;
  auto l = open_at(fresh_path("locator-queue"), o);
  std::optional<fhir::Result<Resolution>> first;
  std::thread t([&] { first.emplace(l->resolve(claim("RX1", nhs(1), {}))); });
  const bool queued = wait_queued(*l, 1);
  auto second = l->resolve(claim("RX1", nhs(2), {}));
  ImportRecord record;
  record.identity = claim("RX1", nhs(3), {});
  auto imported = l->import({record});
  gate.open = true;
  t.join();
  REQUIRE(queued);
  REQUIRE_FALSE(second.ok());
  CHECK(second.issue().code == fhir::ErrorCode::too_many_requests);
  REQUIRE(imported.ok());  // the import call itself is fine; its record could not be queued
  REQUIRE(imported->records.size() == 1);
  REQUIRE_FALSE(imported->records[0].ok());
  CHECK(imported->records[0].issue().code == fhir::ErrorCode::too_many_requests);
  CHECK(imported->rejected == 1);
  REQUIRE(first.has_value());
  CHECK(first->ok());
  CHECK(l->stats()->patients == 1);
}

TEST_CASE("SqliteLocator: import runs in transactions of import_batch records") {
  SqliteLocatorOptions o;
  o.import_batch = 2;
  auto l = open_at(fresh_path("locator-import"), o);
  std::vector<ImportRecord> records(5);
  for (int i = 0; i < 5; ++i) {
    std::string mrn = "IM";
    mrn += std::to_string(i);
    records[static_cast<std::size_t>(i)].identity = claim("RX1", nhs(200 + i), {{kMrnA, mrn, ""}});
    records[static_cast<std::size_t>(i)].pointers = {pointer("")};
  }
  records[2].pointers[0].type_code.clear();  // rejected, in the middle of the second transaction
  const auto before = l->writer_counters();
  auto r = l->import(records);
  REQUIRE(r.ok());
  CHECK(l->writer_counters().commits - before.commits == 3);
  CHECK(r->created == 4);
  CHECK(r->rejected == 1);
  CHECK(r->records[2].issue().expression == "pointers[0].type_code");
  CHECK_FALSE(l->lookup_identifier(kMrnA, "IM2")->has_value());
  CHECK(l->lookup_identifier(kMrnA, "IM3")->has_value());  // its transaction partner stayed
  const Stats st = *l->stats();
  CHECK(st.patients == 4);
  CHECK(st.pointers == 4);
  CHECK(st.database_bytes > 0);

  // A record refused only by what the index holds (a pointer id of another custodian): its
  // transaction is redone record by record; that is no failed commit.
  std::vector<ImportRecord> more(3);
  for (int i = 0; i < 3; ++i) {
    more[static_cast<std::size_t>(i)].identity = claim("RY2", nhs(300 + i), {});
    more[static_cast<std::size_t>(i)].pointers = {pointer("")};
  }
  auto owned = l->pointers_for(r->records[0]->patient_id);
  REQUIRE(owned.ok());
  REQUIRE(owned->size() == 1);
  more[1].pointers[0].id = owned->front().id;  // RX1's
  const auto mid = l->writer_counters();
  auto r2 = l->import(more);
  REQUIRE(r2.ok());
  CHECK(r2->created == 2);
  CHECK(r2->rejected == 1);
  CHECK(r2->records[1].issue().code == fhir::ErrorCode::forbidden);
  CHECK_FALSE(l->lookup_identifier(kNhsNumberSystem, nhs(301))->has_value());
  const auto end = l->writer_counters();
  CHECK(end.failed_commits == mid.failed_commits);
  CHECK(end.commits - mid.commits == 2);
  CHECK((*l->read_pointer(owned->front().id))->source_ods == "RX1");
}

TEST_CASE("SqliteLocator: committed data survives closing and reopening the file") {
  const std::string path = fresh_path("locator-reopen");
  std::string a, b, ptr;
  {
    auto l = open_at(path);
    REQUIRE(l->upsert_source_system({"RX1", "Trust", "hl7v2", "mllp://127.0.0.1:2575"}).ok());
    a = l->resolve(claim("RX1", nhs(1), {{kMrnA, "R1", ""}}, person("Smith", "Jo", "1970-01-02", "other", "E1 6AN")))
            ->patient_id;
    b = l->resolve(claim("RX1", "", {{kMrnA, "R2", ""}}))->patient_id;
    ptr = l->put_pointer("RX1", pointer(a), {})->id;
    REQUIRE(l->merge(b, a, "RX1").ok());
    REQUIRE(l->resolve(claim("RY2", nhs(2), {{kMrnA, "R1", ""}})).ok());  // records a conflict
    REQUIRE(l->set_objection(a, true).ok());
  }
  auto l = open_at(path);
  const PatientRecord p = **l->read_patient(a);
  CHECK(p.demographics.family == "Smith");
  CHECK(p.demographics.given == std::vector<std::string>{"Jo"});
  CHECK(p.demographics.birth_date == "1970-01-02");
  CHECK(p.demographics.gender == "other");
  CHECK(p.demographics.postcode == "E1 6AN");
  CHECK(p.objection);
  CHECK(p.merged_from == std::vector<std::string>{b});
  CHECK(p.identifiers.size() == 2);
  CHECK(*l->lookup_identifier(kMrnA, "R2") == a);
  CHECK(*l->lookup_identifier(kNhsNumberSystem, nhs(1)) == a);
  CHECK((*l->read_pointer(ptr))->patient_id == a);
  CHECK(l->conflicts(10, 0)->size() == 1);
  CHECK((*l->source_system("RX1"))->endpoint == "mllp://127.0.0.1:2575");
  const Stats st = *l->stats();
  CHECK(st.patients == 2);
  CHECK(st.retired == 1);
}

TEST_CASE("SqliteLocator: care team members and encounters survive closing and reopening the file") {
  const std::string path = fresh_path("locator-reopen-care");
  std::string a, b;
  {
    auto l = open_at(path);
    a = l->resolve(claim("RX1", nhs(3), {}))->patient_id;
    b = l->resolve(claim("RY2", "", {{kMrnB, "CR1", ""}}))->patient_id;
    REQUIRE(l->add_care_team_member("RX1", a, "user-1", std::string("2999-12-31T17:00:00Z")).ok());
    REQUIRE(l->add_care_team_member("RY2", b, "RY2", std::nullopt).ok());
    REQUIRE(l->record_encounter("RX1", a, "RX1", 1700000000).ok());
    REQUIRE(l->record_encounter("RY2", b, "RY2", 1700000500).ok());
    REQUIRE(l->merge(b, a, "RX1").ok());
  }
  auto l = open_at(path);
  const PatientRecord p = **l->read_patient(a);
  REQUIRE(p.care_team.size() == 2);
  CHECK(p.care_team[0].member == "RY2");
  CHECK(p.care_team[0].until.empty());
  CHECK(p.care_team[0].source_ods == "RY2");
  CHECK(p.care_team[1].member == "user-1");
  CHECK(p.care_team[1].until == "2999-12-31T17:00:00Z");
  CHECK(p.care_team[1].source_ods == "RX1");
  REQUIRE(p.encounters.size() == 2);
  CHECK(p.encounters[0].organisation_ods == "RY2");
  CHECK(p.encounters[0].at == 1700000500);
  CHECK(p.encounters[0].source_ods == "RY2");
  CHECK(p.encounters[1].organisation_ods == "RX1");
  CHECK(p.encounters[1].at == 1700000000);
  const PatientRecord retired = **l->read_patient(b);
  CHECK(retired.care_team.empty());
  CHECK(retired.encounters.empty());
  // And writing goes on after the reopen.
  REQUIRE(l->remove_care_team_member("RX1", b, "user-1").ok());
  CHECK((*l->read_patient(a))->care_team.size() == 1);
}
