// SPDX-License-Identifier: Apache-2.0
// Store (store.db): messages with their status, resources with versions, per-patient search,
// resend detection, replay marking and retention.
#include <doctest/doctest.h>

#include <algorithm>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>

#include "fhir/json.h"
#include "gateway/sqlite/migrations.h"
#include "gateway/store/schema.h"
#include "gateway/store/store.h"
#include "support/paths.h"

using namespace gw;

namespace {

// Runs an asynchronous Store write and waits for it.
template <class T, class F>
fhir::Result<T> wait_for(F start) {
  std::mutex m;
  std::condition_variable cv;
  std::optional<fhir::Result<T>> out;
  start([&](fhir::Result<T> r) {
    std::lock_guard lock(m);
    out.emplace(std::move(r));
    cv.notify_all();
  });
  std::unique_lock lock(m);
  cv.wait(lock, [&] { return out.has_value(); });
  return std::move(*out);
}

fhir::Json observation(const std::string& id, const std::string& code, const std::string& when) {
  auto j = fhir::parse_json(R"({"resourceType":"Observation","id":")" + id +
                            R"(","status":"final","code":{"coding":[{"system":"http://loinc.org","code":")" + code +
                            R"("}]},"subject":{"reference":"Patient/p1"},"effectiveDateTime":")" + when + R"("})");
  REQUIRE(j.ok());
  return *j;
}

store::MessageWrite message(const std::string& key, const std::string& raw, const std::string& source = "pas") {
  store::MessageWrite m;
  m.source = source;
  m.kind = "ORU^R01";
  m.dedupe_key = key;
  m.raw = raw;
  m.reply = "MSA|AA|" + key;
  m.patient_id = "p1";
  return m;
}

}  // namespace

TEST_CASE("Store: applied messages, resource versions, search by code and date, resends and replays") {
  const auto dir = test::temp_dir("store");
  auto s = store::Store::open((dir / "store.db").string());
  REQUIRE(s.ok());
  store::Store& st = **s;

  // An errored message first; the same message applied later marks it replayed.
  store::MessageWrite failed = message("K1", "raw-1");
  failed.status = store::MessageStatus::error;
  failed.error = "A40 for an unknown patient";
  failed.error_location = "MRG-1";
  auto failed_id = wait_for<std::int64_t>([&](auto done) { st.record(failed, done); });
  REQUIRE(failed_id.ok());

  auto applied = wait_for<store::ApplyResult>([&](auto done) {
    st.apply(message("K1", "raw-1"), {observation("o1", "2093-3", "2026-11-01T10:00:00Z")}, done);
  });
  REQUIRE(applied.ok());
  CHECK(applied->stored == std::vector<std::string>{"Observation/o1"});
  auto old = st.message(*failed_id);
  REQUIRE(old.ok());
  CHECK((*old)->status == store::MessageStatus::replayed);
  CHECK((*old)->raw == "raw-1");

  auto dup = st.find_applied("pas", "K1", store::sha256("raw-1"));
  REQUIRE(dup.ok());
  REQUIRE(dup->has_value());
  CHECK((*dup)->reply == "MSA|AA|K1");
  CHECK_FALSE(st.find_applied("pas", "K1", store::sha256("raw-2"))->has_value());
  CHECK(*st.key_reused("pas", "K1"));
  CHECK_FALSE(*st.key_reused("pas", "K2"));

  // The same resource again: version 2; another source may not overwrite it.
  REQUIRE(wait_for<store::ApplyResult>([&](auto done) {
            st.apply(message("K2", "raw-2"), {observation("o1", "2093-3", "2026-11-02T10:00:00Z"),
                                              observation("o2", "718-7", "2025-01-01")}, done);
          }).ok());
  auto o1 = st.read("Observation", "o1");
  REQUIRE(o1.ok());
  CHECK((*o1)->version == 2);
  CHECK((*o1)->json.find("\"versionId\":\"2\"") != std::string::npos);
  auto hijack = wait_for<store::ApplyResult>([&](auto done) {
    st.apply(message("K9", "raw-9", "other"), {observation("o1", "2093-3", "2026-11-03")}, done);
  });
  REQUIRE_FALSE(hijack.ok());
  CHECK(hijack.issue().code == fhir::ErrorCode::conflict);
  CHECK((*st.read("Observation", "o1"))->version == 2);  // nothing of that message was written
  CHECK(st.list_messages({std::nullopt, "other", 0, 100})->empty());

  store::ResourceQuery q;
  q.patient_ids = {"p1"};
  q.type = "Observation";
  auto all = st.search(q);
  REQUIRE(all.ok());
  CHECK(all->total == 2);
  CHECK(all->items[0].id == "o1");  // newest clinical date first
  q.codes = {{{"http://loinc.org", "718-7"}}};
  CHECK(st.search(q)->total == 1);
  q.codes.clear();
  q.dates = {{fhir::Prefix::ge, *fhir::parse_fhir_date("2026-01-01")}};
  auto recent = st.search(q);
  CHECK(recent->total == 1);
  CHECK(recent->items[0].id == "o1");
  q.patient_ids = {"someone-else"};
  CHECK(st.search(q)->total == 0);

  auto counts = st.message_counts();
  REQUIRE(counts.ok());
  CHECK(counts->applied == 2);
  CHECK(counts->replayed == 1);
}

TEST_CASE("Store: the same message failing again updates its failed row instead of adding one") {
  const auto dir = test::temp_dir("store-refail");
  auto s = store::Store::open((dir / "store.db").string());
  REQUIRE(s.ok());
  store::Store& st = **s;

  store::MessageWrite failed = message("K1", "raw-1");
  failed.status = store::MessageStatus::error;
  failed.error = "A40 for an unknown patient";
  failed.error_location = "MRG-1";
  failed.reply.clear();
  auto first = wait_for<std::int64_t>([&](auto done) { st.record(failed, done); });
  REQUIRE(first.ok());
  const auto before = st.message(*first);
  REQUIRE(before.ok());

  // A replay (or the sender's resend) that fails again, with another outcome this time.
  failed.status = store::MessageStatus::rejected;
  failed.error = "ADT^A60 is not mapped";
  failed.error_location = "MSH-9.2";
  for (int i = 0; i < 2; ++i) {
    auto again = wait_for<std::int64_t>([&](auto done) { st.record(failed, done); });
    REQUIRE(again.ok());
    CHECK(*again == *first);
  }
  auto counts = st.message_counts();
  REQUIRE(counts.ok());
  CHECK(counts->error == 0);
  CHECK(counts->rejected == 1);
  const auto row = st.message(*first);
  REQUIRE(row.ok());
  REQUIRE(row->has_value());
  CHECK((*row)->status == store::MessageStatus::rejected);
  CHECK((*row)->error == "ADT^A60 is not mapped");
  CHECK((*row)->error_location == "MSH-9.2");
  CHECK((*row)->received_ms == (*before)->received_ms);  // the first arrival is kept

  // Other content under the same key, or another source, is another message: its own row.
  auto other = wait_for<std::int64_t>([&](auto done) {
    store::MessageWrite m = failed;
    m.raw = "raw-1 changed";
    st.record(m, done);
  });
  REQUIRE(other.ok());
  CHECK(*other != *first);
  auto elsewhere = wait_for<std::int64_t>([&](auto done) {
    store::MessageWrite m = failed;
    m.source = "other";
    st.record(m, done);
  });
  REQUIRE(elsewhere.ok());
  CHECK(*elsewhere != *first);
  CHECK(st.message_counts()->rejected == 3);

  // Once applied, the one failed row becomes replayed.
  REQUIRE(wait_for<store::ApplyResult>([&](auto done) { st.apply(message("K1", "raw-1"), {}, done); }).ok());
  CHECK((*st.message(*first))->status == store::MessageStatus::replayed);
  CHECK(st.message_counts()->replayed == 1);
}

TEST_CASE("Store: retention deletes old messages and keeps the resources") {
  const auto dir = test::temp_dir("store-retention");
  auto s = store::Store::open((dir / "store.db").string());
  REQUIRE(s.ok());
  store::MessageWrite m = message("OLD", "very old raw message");
  m.received_ms = 1000;  // 1970
  REQUIRE(wait_for<store::ApplyResult>([&](auto done) {
            (*s)->apply(m, {observation("keep", "2093-3", "2020-01-01")}, done);
          }).ok());
  REQUIRE(wait_for<store::ApplyResult>([&](auto done) { (*s)->apply(message("NEW", "new raw"), {}, done); }).ok());
  auto pruned = (*s)->prune_messages_before(1'000'000);
  REQUIRE(pruned.ok());
  CHECK(pruned->messages == 1);
  CHECK((*s)->list_messages({std::nullopt, "", 0, 100})->size() == 1);
  CHECK((*s)->read("Observation", "keep")->has_value());
}

TEST_CASE("Store: retention removes a pruned message's text from the database files at once, WAL included") {
  const auto dir = test::temp_dir("store-retention-disk");
  const std::string marker = "PRUNED-TEXT-7f3a9c";
  auto s = store::Store::open((dir / "store.db").string());
  REQUIRE(s.ok());
  store::MessageWrite m = message("OLD", "MSH|^~\\&|PAS|RGT01\rNTE|1||" + marker + "\r");
  m.received_ms = 1000;  // 1970
  REQUIRE(wait_for<store::ApplyResult>([&](auto done) { (*s)->apply(m, {}, done); }).ok());
  REQUIRE(wait_for<store::ApplyResult>([&](auto done) { (*s)->apply(message("NEW", "new raw"), {}, done); }).ok());
  // Read through the pool, as gw-messages and the listener do, so readers have been used.
  REQUIRE((*s)->list_messages({std::nullopt, "", 0, 100})->size() == 2);
  auto on_disk = [&] {
    std::string all;
    for (const char* name : {"store.db", "store.db-wal"}) {
      std::ifstream in(dir / name, std::ios::binary);
      all += std::string(std::istreambuf_iterator<char>(in), {});
    }
    return all;
  };
  REQUIRE(on_disk().find(marker) != std::string::npos);
  auto pruned = (*s)->prune_messages_before(1'000'000);
  REQUIRE(pruned.ok());
  CHECK(pruned->messages == 1);
  CHECK(pruned->wal_checkpointed);
  // Not at some later automatic checkpoint: now, with the gateway still running.
  CHECK(on_disk().find(marker) == std::string::npos);
  CHECK(std::filesystem::file_size(dir / "store.db-wal") == 0);  // TRUNCATE
  CHECK((*s)->list_messages({std::nullopt, "", 0, 100})->size() == 1);
  // A run with nothing to delete deletes nothing and still reports.
  auto again = (*s)->prune_messages_before(1'000'000);
  REQUIRE(again.ok());
  CHECK(again->messages == 0);
}

TEST_CASE("Store: a failed commit reports the failure and writes nothing") {
  const auto dir = test::temp_dir("store-fail");
  auto s = store::Store::open((dir / "store.db").string());
  REQUIRE(s.ok());
  (*s)->inject_commit_failure(true);
  auto r = wait_for<store::ApplyResult>([&](auto done) {
    (*s)->apply(message("F", "raw-f"), {observation("f1", "2093-3", "2026-01-01")}, done);
  });
  CHECK_FALSE(r.ok());
  (*s)->inject_commit_failure(false);
  CHECK((*s)->list_messages({std::nullopt, "", 0, 100})->empty());
  CHECK_FALSE((*s)->read("Observation", "f1")->has_value());
}

TEST_CASE("Store: the same resource content again is not a new version") {
  const auto dir = test::temp_dir("store-same");
  auto s = store::Store::open((dir / "store.db").string());
  REQUIRE(s.ok());
  store::Store& st = **s;
  for (const char* key : {"S1", "S2"})
    REQUIRE(wait_for<store::ApplyResult>([&](auto done) {
              st.apply(message(key, std::string("raw-") + key), {observation("same", "2093-3", "2026-11-01")}, done);
            }).ok());
  auto same = st.read("Observation", "same");
  REQUIRE(same.ok());
  REQUIRE(same->has_value());
  CHECK((*same)->version == 1);
  CHECK((*same)->json.find("\"versionId\":\"1\"") != std::string::npos);
  // A changed value is a new version; so is the same content filed under another patient.
  REQUIRE(wait_for<store::ApplyResult>([&](auto done) {
            st.apply(message("S3", "raw-S3"), {observation("same", "2093-3", "2026-11-02")}, done);
          }).ok());
  CHECK((*st.read("Observation", "same"))->version == 2);
  store::MessageWrite moved = message("S4", "raw-S4");
  moved.patient_id = "p2";
  // Another patient's record may move only when the caller lists its patient (a merge): else
  // refused in the transaction, nothing of the message written.
  auto refused = wait_for<store::ApplyResult>([&](auto done) {
    st.apply(moved, {observation("same", "2093-3", "2026-11-02")}, done);
  });
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.issue().code == fhir::ErrorCode::conflict);
  CHECK(refused.issue().expression == "Observation/same");
  CHECK((*st.read("Observation", "same"))->patient_id == "p1");
  CHECK_FALSE(st.find_applied("pas", "S4", store::sha256("raw-S4"))->has_value());
  auto owners = st.holders({observation("same", "2093-3", "2026-11-02"), observation("none", "1-1", "2026-11-02")});
  REQUIRE(owners.ok());
  REQUIRE(owners->size() == 1);
  CHECK(owners->at(0).resource == "Observation/same");
  CHECK(owners->at(0).source == "pas");
  CHECK(owners->at(0).patient_id == "p1");
  moved.subject_may_move_from = {"p1"};
  REQUIRE(wait_for<store::ApplyResult>([&](auto done) {
            st.apply(moved, {observation("same", "2093-3", "2026-11-02")}, done);
          }).ok());
  CHECK((*st.read("Observation", "same"))->version == 3);
  CHECK((*st.read("Observation", "same"))->patient_id == "p2");
}

TEST_CASE("Store: a version-2 store.db is upgraded with its resources and messages") {
  const auto dir = test::temp_dir("store-upgrade");
  const std::string path = (dir / "store.db").string();
  {
    auto db = sqlite::Database::open(path);
    REQUIRE(db.ok());
    const auto& all = store::schema_migrations();
    REQUIRE(all.size() >= 3);
    std::vector<sqlite::Migration> v2(all.begin(), all.begin() + 2);
    REQUIRE(sqlite::migrate(*db, v2).ok());
    REQUIRE(db->exec("INSERT INTO message(source, kind, dedupe_key, content_sha256, received_ms, updated_ms, status, "
                     "raw) VALUES ('pas', 'ORU^R01', 'OLD1', X'00', 1, 1, 'applied', CAST('old raw' AS BLOB))")
                .ok());
    REQUIRE(db->exec("INSERT INTO resource(type, id, patient_id, source, version, last_updated_ms, date_begin, "
                     "date_end, message_id, json) VALUES ('Observation', 'kept', 'p1', 'pas', 4, 1000, 0, 1, 1, "
                     "CAST('{\"resourceType\":\"Observation\",\"id\":\"kept\"}' AS BLOB))")
                .ok());
    REQUIRE(db->exec("INSERT INTO resource_code VALUES ('Observation', 'kept', 'http://loinc.org', '2093-3')").ok());
  }
  auto s = store::Store::open(path);
  REQUIRE(s.ok());
  auto kept = (*s)->read("Observation", "kept");
  REQUIRE(kept.ok());
  REQUIRE(kept->has_value());
  CHECK((*kept)->version == 4);
  CHECK((*kept)->patient_id == "p1");
  store::ResourceQuery q;
  q.patient_ids = {"p1"};
  q.type = "Observation";
  q.codes = {{{"http://loinc.org", "2093-3"}}};
  CHECK((*s)->search(q)->total == 1);
  CHECK((*s)->list_messages({std::nullopt, "", 0, 100})->size() == 1);
  // The upgraded table takes new versions of old rows, and (type, id) stays unique.
  REQUIRE(wait_for<store::ApplyResult>([&](auto done) {
            (*s)->apply(message("NEW", "new raw"), {observation("kept", "2093-3", "2026-11-02")}, done);
          }).ok());
  CHECK((*(*s)->read("Observation", "kept"))->version == 5);
  (*s)->stop();
  auto db = sqlite::Database::open(path, sqlite::Database::Mode::read_only);
  REQUIRE(db.ok());
  CHECK(*db->user_version() == static_cast<int>(store::schema_migrations().size()));
  auto rows = db->prepare("SELECT count(*) FROM resource WHERE type = 'Observation' AND id = 'kept'");
  REQUIRE(*rows->step());
  CHECK(rows->column_int64(0) == 1);
  auto rowid = db->prepare("SELECT count(*) FROM pragma_table_info('resource') WHERE name = 'rid'");
  REQUIRE(*rowid->step());
  CHECK(rowid->column_int64(0) == 1);
}

TEST_CASE("Store: code with no system, any system or one system; withheld codings are held back before counting") {
  const auto dir = test::temp_dir("store");
  auto s = store::Store::open((dir / "store.db").string());
  REQUIRE(s.ok());
  store::Store& st = **s;
  auto nosys = fhir::parse_json(R"({"resourceType":"Observation","id":"o3","status":"final","code":{"coding":[{"code":"2093-3"}]},)"
                                R"("subject":{"reference":"Patient/p1"},"effectiveDateTime":"2026-10-01",)"
                                R"("valueCodeableConcept":{"coding":[{"system":"http://snomed.info/sct","code":"165816005"}]}})");
  REQUIRE(nosys.ok());
  REQUIRE(wait_for<store::ApplyResult>([&](auto done) {
            st.apply(message("K1", "raw-1"), {observation("o1", "2093-3", "2026-11-01"), *nosys}, done);
          }).ok());
  store::ResourceQuery q;
  q.patient_ids = {"p1"};
  q.type = "Observation";
  auto ids = [&]() {
    auto page = st.search(q);
    REQUIRE(page.ok());
    std::vector<std::string> out;
    for (const auto& r : page->items) out.push_back(r.id);
    return out;
  };
  q.codes = {{{std::string(), "2093-3"}}};  // |2093-3: only the coding without a system
  CHECK(ids() == std::vector<std::string>{"o3"});
  q.codes = {{{std::nullopt, "2093-3"}}};  // 2093-3: any system
  CHECK(ids() == std::vector<std::string>{"o1", "o3"});
  q.codes = {{{"http://loinc.org", "2093-3"}}};
  CHECK(ids() == std::vector<std::string>{"o1"});
  // Values of one parameter are alternatives (code=a,b); parameters are ANDed (code=a&code=b
  // matches only what carries both), as R4 search.html says.
  q.codes = {{{"http://loinc.org", "2093-3"}, {std::string(), "2093-3"}}};
  CHECK(ids() == std::vector<std::string>{"o1", "o3"});
  q.codes = {{{"http://loinc.org", "2093-3"}}, {{std::string(), "2093-3"}}};
  CHECK(ids().empty());
  q.codes = {{{std::nullopt, "2093-3"}}, {{std::string(), "2093-3"}}};
  CHECK(ids() == std::vector<std::string>{"o3"});

  // A withheld coding anywhere in the resource (here its value) holds it back: not counted,
  // not listed, named in `withheld`.
  q.codes.clear();
  q.withheld_codings = {{"http://snomed.info/sct", "165816005"}};
  auto page = st.search(q);
  REQUIRE(page.ok());
  CHECK(page->total == 1);
  REQUIRE(page->items.size() == 1);
  CHECK(page->items[0].id == "o1");
  CHECK(page->withheld == std::vector<std::string>{"Observation/o3"});
  // The same code in another system is not the sensitive one.
  q.withheld_codings = {{"http://example.org/other", "165816005"}};
  CHECK(st.search(q)->total == 2);
  CHECK(st.search(q)->withheld.empty());
}

namespace {

fhir::Json resource_of(const std::string& text) {
  auto j = fhir::parse_json(text);
  REQUIRE_MESSAGE(j.ok(), text);
  return *j;
}

// An Observation of patient p1 with `when` (its date elements, as JSON members) added.
std::string dated_observation(const std::string& id, const std::string& when) {
  return R"({"resourceType":"Observation","id":")" + id +
         R"(","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"2093-3"}]},)"
         R"("subject":{"reference":"Patient/p1"},)" + when + "}";
}

std::string dated_report(const std::string& id, const std::string& when) {
  return R"({"resourceType":"DiagnosticReport","id":")" + id +
         R"(","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"24331-1"}]},)"
         R"("subject":{"reference":"Patient/p1"},)" + when + "}";
}

// The records of the date tests: `issued` alone, Periods closed, without a start and without
// an end, a Timing, an instant; reports with and without effective; an Encounter's period.
const std::vector<std::string>& dated_records() {
  static const std::vector<std::string> texts{
      dated_observation("issued-only", R"("issued":"2026-11-02T09:00:00Z")"),
      dated_observation("period", R"("effectivePeriod":{"start":"2026-11-01T22:00:00Z","end":"2026-11-02T02:00:00Z"})"),
      dated_observation("no-start", R"("effectivePeriod":{"end":"2026-11-02"})"),
      dated_observation("ongoing", R"("effectivePeriod":{"start":"2026-11-02T08:00:00Z"})"),
      dated_observation("timing",
                        R"("effectiveTiming":{"event":["2026-11-04T08:00:00Z","2026-10-30T08:00:00Z"],)"
                        R"("repeat":{"frequency":1,"period":2,"periodUnit":"d"}})"),
      dated_observation("instant", R"("effectiveInstant":"2026-11-02T12:00:00.000Z")"),
      dated_report("dr-issued", R"("issued":"2026-11-02T09:00:00Z")"),
      dated_report("dr-effective", R"("effectiveDateTime":"2026-11-01T10:00:00Z","issued":"2026-11-02T09:00:00Z")"),
      R"({"resourceType":"Encounter","id":"enc","status":"finished","class":{"code":"AMB"},)"
      R"("subject":{"reference":"Patient/p1"},"period":{"start":"2026-11-02T09:00:00Z","end":"2026-11-02T11:00:00Z"}})",
  };
  return texts;
}

// The ids `q` finds with `dates` (prefix, value), in the store's order.
std::vector<std::string> found(store::Store& st, const std::string& type,
                               const std::vector<std::pair<fhir::Prefix, std::string>>& dates) {
  store::ResourceQuery q;
  q.patient_ids = {"p1"};
  q.type = type;
  for (const auto& d : dates) {
    auto range = fhir::parse_fhir_date(d.second);
    REQUIRE(range.ok());
    q.dates.emplace_back(d.first, *range);
  }
  auto page = st.search(q);
  REQUIRE(page.ok());
  std::vector<std::string> ids;
  for (const auto& r : page->items) ids.push_back(r.id);
  return ids;
}

std::vector<std::string> sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  return v;
}

}  // namespace

TEST_CASE("Store: date= compares each type's R4 date (effective[x], Encounter.period), never issued") {
  const auto dir = test::temp_dir("store-dates");
  auto s = store::Store::open((dir / "store.db").string());
  REQUIRE(s.ok());
  store::Store& st = **s;
  std::vector<fhir::Json> rs;
  for (const auto& t : dated_records()) rs.push_back(resource_of(t));
  REQUIRE(wait_for<store::ApplyResult>([&](auto done) { st.apply(message("D1", "raw-d1"), rs, done); }).ok());
  using P = fhir::Prefix;
  const std::string day = "2026-11-02";

  // `issued` is when a result was released, not its clinical date: no date matches it.
  CHECK_FALSE(store::date_index(rs[0]).has_value());
  for (P p : {P::eq, P::ne, P::gt, P::lt, P::ge, P::le, P::sa, P::eb, P::ap}) {
    CAPTURE(fhir::prefix_name(p));
    const auto obs = found(st, "Observation", {{p, day}});
    CHECK(std::find(obs.begin(), obs.end(), "issued-only") == obs.end());
    const auto dr = found(st, "DiagnosticReport", {{p, day}});
    CHECK(std::find(dr.begin(), dr.end(), "dr-issued") == dr.end());
  }

  // R4 search.html: eq, the day contains the whole value; gt/lt, the value reaches past the
  // day's end / before its start; ge/le, either of those or contained; sa/eb, wholly after /
  // before it. A Period is its whole range; one with no start reaches back without limit,
  // one with no end is ongoing; a Timing spans its first to its last event.
  CHECK(sorted(found(st, "Observation", {{P::eq, day}})) == std::vector<std::string>{"instant"});
  CHECK(sorted(found(st, "Observation", {{P::gt, day}})) == std::vector<std::string>{"ongoing", "timing"});
  CHECK(sorted(found(st, "Observation", {{P::lt, day}})) == std::vector<std::string>{"no-start", "period", "timing"});
  CHECK(sorted(found(st, "Observation", {{P::ge, day}})) == std::vector<std::string>{"instant", "ongoing", "timing"});
  CHECK(sorted(found(st, "Observation", {{P::le, day}})) ==
        std::vector<std::string>{"instant", "no-start", "period", "timing"});
  CHECK(sorted(found(st, "Observation", {{P::ne, day}})) ==
        std::vector<std::string>{"no-start", "ongoing", "period", "timing"});
  CHECK(found(st, "Observation", {{P::sa, day}}).empty());
  CHECK(sorted(found(st, "Observation", {{P::sa, "2026-11-01T23:00:00Z"}})) ==
        std::vector<std::string>{"instant", "ongoing"});
  CHECK(sorted(found(st, "Observation", {{P::eb, "2026-11-02T03:00:00Z"}})) == std::vector<std::string>{"period"});
  CHECK(sorted(found(st, "Observation", {{P::eb, "2026-11-03"}})) ==
        std::vector<std::string>{"instant", "no-start", "period"});
  // Everything whose range overlaps the day: after the day before, and before the day after.
  CHECK(sorted(found(st, "Observation", {{P::gt, "2026-11-01"}, {P::lt, "2026-11-03"}})) ==
        std::vector<std::string>{"instant", "no-start", "ongoing", "period", "timing"});
  CHECK(found(st, "Observation", {{P::lt, "2000-01-01"}}) == std::vector<std::string>{"no-start"});
  CHECK(found(st, "Observation", {{P::ge, "2099-01-01"}}) == std::vector<std::string>{"ongoing"});
  // A Timing counts by its outer limits, not the days its schedule names.
  CHECK(found(st, "Observation", {{P::gt, "2026-11-03"}, {P::lt, "2026-11-04"}}) ==
        std::vector<std::string>{"ongoing", "timing"});

  CHECK(found(st, "DiagnosticReport", {{P::eq, day}}).empty());
  CHECK(found(st, "DiagnosticReport", {{P::eq, "2026-11-01"}}) == std::vector<std::string>{"dr-effective"});
  CHECK(found(st, "Encounter", {{P::eq, day}}) == std::vector<std::string>{"enc"});
  CHECK(found(st, "Encounter", {{P::eq, "2026-11-02T10:00Z"}}).empty());  // a minute in it does not contain the visit

  // Newest clinical date first (by the start of each range), undated last.
  CHECK(found(st, "Observation", {}) ==
        std::vector<std::string>{"instant", "ongoing", "period", "timing", "no-start", "issued-only"});
  CHECK(found(st, "DiagnosticReport", {}) == std::vector<std::string>{"dr-effective", "dr-issued"});

  // What store.db keeps: a Period includes the whole of its end value.
  const auto enc = store::date_index(rs.back());
  REQUIRE(enc.has_value());
  CHECK(enc->begin == fhir::parse_fhir_date("2026-11-02T09:00:00Z")->begin);
  CHECK(enc->end == fhir::parse_fhir_date("2026-11-02T11:00:00Z")->end);
  CHECK_FALSE(store::date_index(resource_of(R"({"resourceType":"Location","id":"w","name":"Ward 1"})")).has_value());
  // DiagnosticReport.effective[x] is dateTime or Period: an instant or Timing there is not its date.
  CHECK_FALSE(store::date_index(resource_of(dated_report("x", R"("effectiveInstant":"2026-11-02T12:00:00Z")")))
                  .has_value());
}

TEST_CASE("Store: a version-5 store.db is dated again as R4 search defines it") {
  const auto dir = test::temp_dir("store-redate");
  const std::string path = (dir / "store.db").string();
  auto range = [](const std::string& text) { return *fhir::parse_fhir_date(text); };
  // What the earlier gateway kept: `issued` when there was no effective[x], and a Period's
  // end alone when it had no start.
  struct Old {
    std::string id;
    std::string json;
    std::optional<fhir::DateRange> date;
  };
  const auto& texts = dated_records();
  const std::vector<Old> rows{
      {"issued-only", texts[0], range("2026-11-02T09:00:00Z")},
      {"no-start", texts[2], range("2026-11-02")},
      {"instant", texts[5], range("2026-11-02T12:00:00Z")},
      {"dr-issued", texts[6], range("2026-11-02T09:00:00Z")},
      {"dr-effective", texts[7], range("2026-11-01T10:00:00Z")},
      {"enc", texts[8], fhir::DateRange{range("2026-11-02T09:00:00Z").begin, range("2026-11-02T11:00:00Z").end}},
      {"ward", R"({"resourceType":"Location","id":"ward","name":"Ward 1"})", std::nullopt},
  };
  {
    auto db = sqlite::Database::open(path);
    REQUIRE(db.ok());
    const auto& all = store::schema_migrations();
    REQUIRE(all.size() >= 6);
    REQUIRE(sqlite::migrate(*db, std::vector<sqlite::Migration>(all.begin(), all.begin() + 5)).ok());
    for (const Old& r : rows) {
      auto put = db->prepare(
          "INSERT INTO resource(type, id, patient_id, source, version, last_updated_ms, date_begin, date_end, "
          "message_id, json) VALUES (?, ?, 'p1', 'pas', 1, 1000, ?, ?, 1, ?)");
      REQUIRE(put.ok());
      put->bind(1, std::string(resource_of(r.json).string_at("resourceType"))).bind(2, r.id);
      if (r.date) put->bind(3, r.date->begin).bind(4, r.date->end);
      else put->bind_null(3).bind_null(4);
      put->bind_blob(5, r.json.data(), r.json.size());
      REQUIRE(put->run().ok());
    }
  }
  auto s = store::Store::open(path);
  REQUIRE(s.ok());
  using P = fhir::Prefix;
  CHECK(found(**s, "Observation", {{P::eq, "2026-11-02"}}) == std::vector<std::string>{"instant"});
  CHECK(found(**s, "Observation", {{P::lt, "2000-01-01"}}) == std::vector<std::string>{"no-start"});
  CHECK(found(**s, "DiagnosticReport", {{P::eq, "2026-11-02"}}).empty());
  CHECK(found(**s, "DiagnosticReport", {}) == std::vector<std::string>{"dr-effective", "dr-issued"});
  (*s)->stop();

  // Every row now holds what a new write of its JSON would.
  auto db = sqlite::Database::open(path, sqlite::Database::Mode::read_only);
  REQUIRE(db.ok());
  CHECK(*db->user_version() == static_cast<int>(store::schema_migrations().size()));
  for (const Old& r : rows) {
    CAPTURE(r.id);
    auto st = db->prepare("SELECT date_begin, date_end, version FROM resource WHERE id = ?");
    REQUIRE(st.ok());
    st->bind(1, r.id);
    REQUIRE(*st->step());
    const auto want = store::date_index(resource_of(r.json));
    CHECK(st->column_is_null(0) == !want.has_value());
    if (want) {
      CHECK(st->column_int64(0) == want->begin);
      CHECK(st->column_int64(1) == want->end);
    }
    CHECK(st->column_int64(2) == 1);  // the record itself is untouched
  }
}

TEST_CASE("Store: a version-6 store.db keeps its messages and takes the status filtered") {
  const auto dir = test::temp_dir("store-filtered");
  const std::string path = (dir / "store.db").string();
  {
    auto db = sqlite::Database::open(path);
    REQUIRE(db.ok());
    const auto& all = store::schema_migrations();
    REQUIRE(all.size() >= 7);
    std::vector<sqlite::Migration> v6(all.begin(), all.begin() + 6);
    REQUIRE(sqlite::migrate(*db, v6).ok());
    // The old table refuses the new status: what the migration is for.
    CHECK_FALSE(db->exec("INSERT INTO message(source, kind, dedupe_key, content_sha256, received_ms, updated_ms, "
                         "status, raw) VALUES ('pas', 'ADT^A60', 'X', X'00', 1, 1, 'filtered', X'00')")
                    .ok());
    REQUIRE(db->exec("INSERT INTO message(id, source, kind, dedupe_key, content_sha256, received_ms, updated_ms, "
                     "status, error, error_location, reply, patient_id, raw, pending) VALUES "
                     "(7, 'pas', 'ADT^A01', 'K7', X'07', 70, 71, 'applied', '', '', CAST('MSA|AA|K7' AS BLOB), 'p7', "
                     "CAST('raw 7' AS BLOB), 1), "
                     "(9, 'pas', 'ADT^A40', 'K9', X'09', 90, 91, 'error', 'unknown patient', 'MRG-1', "
                     "CAST('MSA|AE|K9' AS BLOB), '', CAST('raw 9' AS BLOB), 0)")
                .ok());
  }
  auto s = store::Store::open(path);
  REQUIRE(s.ok());
  store::Store& st = **s;
  // Every column of every row is kept, ids included.
  auto seven = st.message(7);
  REQUIRE(seven.ok());
  REQUIRE(seven->has_value());
  CHECK((*seven)->status == store::MessageStatus::applied);
  CHECK((*seven)->pending);
  CHECK((*seven)->patient_id == "p7");
  CHECK((*seven)->reply == "MSA|AA|K7");
  CHECK((*seven)->raw == "raw 7");
  CHECK((*seven)->received_ms == 70);
  auto nine = st.message(9);
  REQUIRE(nine.ok());
  REQUIRE(nine->has_value());
  CHECK((*nine)->status == store::MessageStatus::error);
  CHECK((*nine)->error == "unknown patient");
  CHECK((*nine)->error_location == "MRG-1");
  CHECK(*st.pending_count() == 1);
  // A filtered unit is kept; the same one again updates its row.
  store::MessageWrite f = message("K10", "raw-10");
  f.kind = "ADT^A60";
  f.status = store::MessageStatus::filtered;
  f.error = "ADT^A60 is not mapped";
  f.error_location = "MSH-9.2";
  auto id = wait_for<std::int64_t>([&](auto done) { st.record(f, done); });
  REQUIRE(id.ok());
  CHECK(*id > 9);
  auto again = wait_for<std::int64_t>([&](auto done) { st.record(f, done); });
  REQUIRE(again.ok());
  CHECK(*again == *id);
  auto counts = st.message_counts();
  REQUIRE(counts.ok());
  CHECK(counts->filtered == 1);
  CHECK(counts->applied == 1);
  CHECK(counts->error == 1);
  store::MessageQuery q;
  q.status = store::MessageStatus::filtered;
  auto listed = st.list_messages(q);
  REQUIRE(listed.ok());
  REQUIRE(listed->size() == 1);
  CHECK(listed->at(0).error == "ADT^A60 is not mapped");
  st.stop();
  auto db = sqlite::Database::open(path, sqlite::Database::Mode::read_only);
  REQUIRE(db.ok());
  CHECK(*db->user_version() == static_cast<int>(store::schema_migrations().size()));
  // The indexes are made again, the partial ones with their conditions.
  auto idx = db->prepare("SELECT group_concat(name, ',') FROM (SELECT name FROM sqlite_master WHERE type = 'index' "
                         "AND tbl_name = 'message' AND sql IS NOT NULL ORDER BY name)");
  REQUIRE(idx.ok());
  REQUIRE(*idx->step());
  CHECK(idx->column_text(0) == "message_applied_once,message_key,message_pending,message_received,message_status");
}
