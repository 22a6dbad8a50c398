// SPDX-License-Identifier: Apache-2.0
// The ingest path behind every push adapter (gateway/ingest): a batch store.db would refuse is
// refused before anything is committed for it, and stored as an error to list and replay; an
// update to the patient's demographics reaches the Patient served and the access policy.
// Batches are submitted to a running gateway's IngestSink, as an adapter hands them over.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

#include "gateway/audit/log.h"
#include "gateway/ingest/ingest_service.h"
#include "gateway/locator/sqlite_locator.h"
#include "gateway/sqlite/database.h"
#include "gateway/store/store.h"
#include "support/https_client.h"
#include "support/test_server.h"

using namespace gw;

namespace {

constexpr const char* kNhs = "9000000009";  // valid check digit

std::unique_ptr<test::TestServer> two_sources(std::function<void(config::Config&)> more = {}) {
  return std::make_unique<test::TestServer>([&](config::Config& c) {
    if (more) more(c);
    for (const auto& [name, ods] : {std::pair{"epr-a", "RXA01"}, std::pair{"epr-b", "RXB01"}}) {
      config::SourceSystemConfig s;
      s.name = name;
      s.ods_code = ods;
      s.adapter = "hl7v2";
      s.endpoint = "127.0.0.1:0";
      c.source_systems.push_back(s);
    }
  });
}

fhir::Json parse(std::string_view text) {
  auto j = fhir::parse_json(text);
  REQUIRE(j.ok());
  return std::move(*j);
}

adapters::IngestBatch batch(const std::string& source, const std::string& key, std::vector<fhir::Json> resources) {
  adapters::IngestBatch b;
  b.source = source;
  b.kind = "TEST";
  b.dedupe_key = key;
  b.raw = "unit " + key + " from " + source;
  b.identity = parse(std::string(R"({"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":")") +
                     kNhs + R"("}],"name":[{"family":"Tester","given":["Ann"]}]})");
  b.resources = std::move(resources);
  return b;
}

fhir::Json observation(const std::string& id) {
  return parse(R"({"resourceType":"Observation","id":")" + id +
               R"(","status":"final","code":{"text":"Heart rate"},"valueQuantity":{"value":72}})");
}

fhir::Result<adapters::IngestReceipt> submit(test::TestServer& s, adapters::IngestBatch b) {
  std::promise<fhir::Result<adapters::IngestReceipt>> p;
  auto f = p.get_future();
  s.app().ingest().submit(std::move(b), [&p](fhir::Result<adapters::IngestReceipt> r) { p.set_value(std::move(r)); });
  return f.get();
}

std::vector<store::StoredMessage> errors(test::TestServer& s) {
  store::MessageQuery q;
  q.status = store::MessageStatus::error;
  auto list = s.app().store().list_messages(q);
  REQUIRE(list.ok());
  return *list;
}

std::vector<store::StoredMessage> messages(test::TestServer& s) {
  auto list = s.app().store().list_messages(store::MessageQuery{});
  REQUIRE(list.ok());
  return *list;
}

// The ingest audit records of unit `key`, oldest first.
std::vector<audit::Record> ingest_records(test::TestServer& s, const std::string& key) {
  audit::Query q;
  q.count = 10000;
  q.newest_first = false;
  auto page = s.app().audit_log()->search(q);
  REQUIRE_MESSAGE(page.ok(), page.issue().diagnostics);
  std::vector<audit::Record> out;
  for (audit::Record& r : page->records)
    if (r.route == "ingest" && r.target == "TEST " + key) out.push_back(std::move(r));
  return out;
}

// The patient the locator files kNhs under ("" when none).
std::string patient_of_nhs(test::TestServer& s) {
  auto id = s.locator().lookup_identifier("https://fhir.nhs.uk/Id/nhs-number", kNhs);
  REQUIRE(id.ok());
  return id->value_or("");
}

// Message `id`'s pending mark, once the ingest path has finished with it: the mark is cleared
// just after the acknowledgement, so this waits (at most 5 s) for a pending row to clear.
bool settled_pending(test::TestServer& s, std::int64_t id) {
  for (int i = 0; i < 500; ++i) {
    auto m = s.app().store().message(id);
    REQUIRE(m.ok());
    REQUIRE(m->has_value());
    if (!(*m)->pending) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

std::size_t pointers_from(test::TestServer& s, const std::string& patient_id, const std::string& ods) {
  auto pointers = s.locator().pointers_for(patient_id);
  REQUIRE(pointers.ok());
  std::size_t n = 0;
  for (const auto& p : *pointers) n += p.source_ods == ods;
  return n;
}

}  // namespace

TEST_CASE("Ingest: a resource id another source holds is refused before the locator changes, and kept as an error") {
  auto s = two_sources();
  auto first = submit(*s, batch("epr-a", "a-1", {observation("obs-1")}));
  REQUIRE(first.ok());
  const std::string patient = first->patient_id;
  CHECK(pointers_from(*s, patient, "RXA01") == 1);

  auto second = submit(*s, batch("epr-b", "b-1", {observation("obs-1")}));
  REQUIRE_FALSE(second.ok());
  CHECK(second.issue().code == fhir::ErrorCode::conflict);
  CHECK(second.issue().diagnostics.find("Observation/obs-1 belongs to another source system") != std::string::npos);
  // Nothing of the refused unit reached the locator: epr-b is not advertised as holding
  // records about the patient.
  CHECK(pointers_from(*s, patient, "RXB01") == 0);
  // The unit is kept as an error, with its raw bytes, to be listed and replayed.
  const auto errs = errors(*s);
  REQUIRE(errs.size() == 1);
  CHECK(errs[0].source == "epr-b");
  CHECK(errs[0].dedupe_key == "b-1");
  CHECK(errs[0].error.find("belongs to another source system") != std::string::npos);
  auto raw = s->app().store().message(errs[0].id);
  REQUIRE(raw.ok());
  REQUIRE(raw->has_value());
  CHECK((*raw)->raw == "unit b-1 from epr-b");
  // The resource stays epr-a's.
  auto obs = s->app().store().read("Observation", "obs-1");
  REQUIRE(obs.ok());
  REQUIRE(obs->has_value());
  CHECK((*obs)->source == "epr-a");
}

TEST_CASE("Ingest: malformed resources are refused naming the resource, before anything is committed") {
  auto s = two_sources();
  struct Case {
    const char* name;
    std::string resource;
    std::string expression;
  };
  const std::vector<Case> cases = {
      {"unknown type", R"({"resourceType":"Banana","id":"b1"})", "batch.resources[1].resourceType"},
      {"a Patient", R"({"resourceType":"Patient","id":"p1"})", "batch.resources[1]"},
      // An R4 type the gateway does not serve: stored, it would be acknowledged but never read.
      {"a type not served", R"({"resourceType":"Condition","id":"c1"})", "batch.resources[1].resourceType"},
      {"no id", R"({"resourceType":"Observation","status":"final","code":{"text":"x"}})", "batch.resources[1].id"},
      {"invalid id", R"({"resourceType":"Observation","id":"../x y","status":"final","code":{"text":"x"}})",
       "batch.resources[1].id"},
      {"not an object", R"([1,2])", "batch.resources[1]"},
      // Not valid FHIR R4 JSON (fhir/element_check): the first problem, at its path.
      {"wrong JSON types and an unknown element",
       R"({"resourceType":"Observation","id":"o1","status":12345,"code":"notacodeableconcept","valueQuantity":{"value":"seventy"},"bogusElement":true})",
       "batch.resources[1].status"},
      {"a decimal as a string", R"({"resourceType":"Observation","id":"o2","status":"final","code":{"text":"x"},"valueQuantity":{"value":"seventy"}})",
       "batch.resources[1].valueQuantity.value"},
      {"an unknown element", R"({"resourceType":"Observation","id":"o3","status":"final","code":{"text":"x"},"bogusElement":true})",
       "batch.resources[1].bogusElement"},
      {"a required element missing", R"({"resourceType":"Observation","id":"o4","status":"final"})", "batch.resources[1].code"},
      {"a code outside its value set", R"({"resourceType":"Observation","id":"o5","status":"done","code":{"text":"x"}})",
       "batch.resources[1].status"},
      {"an empty string", R"({"resourceType":"Encounter","id":"e1","status":"finished","class":{"code":""}})",
       "batch.resources[1].class.code"},
  };
  int n = 0;
  for (const auto& c : cases) {
    CAPTURE(c.name);
    auto r = submit(*s, batch("epr-a", "bad-" + std::to_string(++n), {observation("ok-" + std::to_string(n)), parse(c.resource)}));
    REQUIRE_FALSE(r.ok());
    CHECK(r.issue().expression == c.expression);
    if (std::string_view(c.name) == "wrong JSON types and an unknown element")
      CHECK(r.issue().diagnostics ==
            "batch.resources[1] (Observation/o1) is not valid FHIR R4: Observation.status: a code must be a JSON string, "
            "not a number (and 3 more problems; POST the resource to [base]/Observation/$validate for the full list)");
  }
  // None of them created the patient or stored the valid Observation next to the bad one.
  auto found = s->locator().lookup_identifier(locator::kNhsNumberSystem, kNhs);
  REQUIRE(found.ok());
  CHECK_FALSE(found->has_value());
  auto ok1 = s->app().store().read("Observation", "ok-1");
  REQUIRE(ok1.ok());
  CHECK_FALSE(ok1->has_value());
  CHECK(errors(*s).size() == cases.size());
}

TEST_CASE("Ingest: resources their adapter already checked (resources_checked) are not checked again") {
  // The plug-in loader runs check_batch_resources to refuse a batch at once and marks the
  // batch; walking every element a second time would only repeat it. Shown with a resource
  // the check refuses: marked as checked, nothing on the ingest path looks at its elements.
  auto s = two_sources();
  const fhir::Json unchecked = parse(
      R"({"resourceType":"Observation","id":"o-marked","status":"final","code":{"text":"x"},"bogusElement":true})");
  auto refused = submit(*s, batch("epr-a", "mark-1", {unchecked}));
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.issue().expression == "batch.resources[0].bogusElement");

  adapters::IngestBatch marked = batch("epr-a", "mark-2", {unchecked});
  marked.resources_checked = true;
  auto applied = submit(*s, std::move(marked));
  REQUIRE_MESSAGE(applied.ok(), applied.issue().diagnostics);
  auto stored = s->app().store().read("Observation", "o-marked");
  REQUIRE(stored.ok());
  CHECK(stored->has_value());
}

TEST_CASE("Ingest: an identity with nothing to match on is refused, not filed as a new empty patient") {
  auto s = two_sources();
  auto b = batch("epr-a", "no-id", {observation("obs-9")});
  b.identity = parse(R"({"resourceType":"Patient","name":[{"family":"Nobody"}]})");
  b.identity_location = "PID-3";
  auto r = submit(*s, std::move(b));
  REQUIRE_FALSE(r.ok());
  CHECK(r.issue().code == fhir::ErrorCode::missing_value);
  CHECK(r.issue().expression == "PID-3");  // the sender's own location for the identity
  const auto errs = errors(*s);
  REQUIRE(errs.size() == 1);
  CHECK(errs[0].error_location == "PID-3");
}

TEST_CASE("Ingest: a merge of two records with different valid NHS numbers is refused, and the conflict is on record") {
  auto s = two_sources();
  auto survivor = submit(*s, batch("epr-a", "m-1", {observation("m-obs-1")}));
  REQUIRE(survivor.ok());
  auto other = batch("epr-a", "m-2", {});
  other.identity = parse(R"({"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}]})");
  auto retired = submit(*s, std::move(other));
  REQUIRE(retired.ok());
  REQUIRE(retired->patient_id != survivor->patient_id);

  auto merge = batch("epr-a", "m-3", {});
  merge.kind = "ADT^A40";
  merge.retired_identifiers.push_back(parse(R"({"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"})"));
  merge.identity_location = "PID-3";
  merge.merge_location = "MRG-1";
  auto r = submit(*s, std::move(merge));
  REQUIRE_FALSE(r.ok());
  CHECK(r.issue().code == fhir::ErrorCode::conflict);
  CHECK(r.issue().expression == "PID-3");  // the sender's location, not the locator's word "survivor"
  auto conflicts = s->locator().conflicts(10, 0);
  REQUIRE(conflicts.ok());
  REQUIRE(conflicts->size() == 1);
  CHECK((*conflicts)[0].kind == "nhs-number-mismatch");
  CHECK((*conflicts)[0].patient_id == survivor->patient_id);
  CHECK((*conflicts)[0].detail.find(retired->patient_id) != std::string::npos);
  const auto errs = errors(*s);
  REQUIRE(errs.size() == 1);
  CHECK(errs[0].error_location == "PID-3");
}

TEST_CASE("Ingest: the configured demographic rule decides whether a claim without known identifiers matches") {
  // Two sources send the same person (same demographics) under their own local identifiers
  // and no NHS number.
  const auto claim = [](const std::string& source, const std::string& mrn) {
    auto b = batch(source, "d-" + source, {});
    b.identity = parse(R"({"resourceType":"Patient","identifier":[{"system":"https://)" + source + R"(.example.nhs.uk/mrn","value":")" +
                       mrn + R"("}],"name":[{"family":"Rule","given":["Ada"]}],"gender":"female","birthDate":"1950-02-03",)"
                       R"("address":[{"postalCode":"LS1 4AB"}]})");
    return b;
  };
  SUBCASE("the default rule matches them") {
    auto s = two_sources();
    auto a = submit(*s, claim("epr-a", "A1"));
    auto b = submit(*s, claim("epr-b", "B1"));
    REQUIRE(a.ok());
    REQUIRE(b.ok());
    CHECK(a->patient_id == b->patient_id);
  }
  SUBCASE("storage.demographic_rule = [] keeps them apart") {
    auto s = two_sources([](config::Config& c) {
      auto off = locator::demographic_rule_from({});
      REQUIRE(off.ok());
      c.demographic_rule = *off;
    });
    auto a = submit(*s, claim("epr-a", "A1"));
    auto b = submit(*s, claim("epr-b", "B1"));
    REQUIRE(a.ok());
    REQUIRE(b.ok());
    CHECK(a->patient_id != b->patient_id);
  }
}

TEST_CASE("Ingest: a new surname, postcode and GP practice (an A08) change the Patient served and who may see it") {
  auto s = two_sources();
  const auto identity = [](const std::string& family, const std::string& postcode, const std::string& gp) {
    return parse(std::string(R"({"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":")") +
                 kNhs + R"("}],"name":[{"family":")" + family + R"(","given":["Ann"]}],"address":[{"postalCode":")" +
                 postcode + R"("}],"generalPractitioner":[{"identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":")" +
                 gp + R"("}}]})");
  };
  const auto clinician_at = [](const std::string& org) {
    test::TokenClaims c;
    c.sub = "dr-" + org;
    c.org = org;
    return test::test_tokens().header(c);
  };
  auto first = batch("epr-a", "A28-1", {});
  first.identity = identity("Butler", "LS1 4AB", "Y72780");
  auto created = submit(*s, std::move(first));
  REQUIRE(created.ok());
  const std::string path = "/Patient/" + created->patient_id;
  test::HttpResponse before = test::get(s->port(), path, s->client(), clinician_at("Y72780"));
  REQUIRE_MESSAGE(before.status == 200, before.body);
  const std::string etag = before.header("etag");

  auto a08 = batch("epr-a", "A08-1", {});
  a08.identity = identity("Butler-Smith", "LS2 9JT", "B86001");
  auto updated = submit(*s, std::move(a08));
  REQUIRE(updated.ok());
  CHECK(updated->patient_id == created->patient_id);

  // The new practice is the registered one now: it sees the patient, in a new version that the
  // old ETag no longer matches.
  test::HttpResponse after =
      test::get(s->port(), path, s->client(), clinician_at("B86001") + "If-None-Match: " + etag + "\r\n");
  REQUIRE_MESSAGE(after.status == 200, after.body);
  CHECK(after.header("etag") != etag);
  CHECK(after.body.find("Butler-Smith") != std::string::npos);
  CHECK(after.body.find("LS2 9JT") != std::string::npos);
  test::HttpResponse search = test::get(
      s->port(), std::string("/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number%7C") + kNhs, s->client(),
      clinician_at("B86001"));
  REQUIRE(search.status == 200);
  CHECK(search.body.find("\"total\":1") != std::string::npos);
  // The old practice no longer has that relationship.
  CHECK(test::get(s->port(), path, s->client(), clinician_at("Y72780")).status == 404);
}

TEST_CASE("Ingest: a maiden name is kept, served in Patient.name and found by family search") {
  auto s = two_sources();
  auto b = batch("epr-a", "names-1", {});
  b.identity = parse(std::string(R"({"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":")") +
                     kNhs + R"("}],"name":[{"use":"official","family":"Smith","given":["Jane"]},)"
                     R"({"use":"maiden","family":"Murazik","given":["Jane"]}],)"
                     R"("generalPractitioner":[{"identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"B86001"}}]})");
  auto r = submit(*s, std::move(b));
  REQUIRE(r.ok());
  test::TokenClaims gp;
  gp.org = "B86001";
  const std::string h = test::test_tokens().header(gp);
  test::HttpResponse search = test::get(s->port(), "/Patient?family=murazik", s->client(), h);
  REQUIRE_MESSAGE(search.status == 200, search.body);
  CHECK(search.body.find("\"total\":1") != std::string::npos);
  test::HttpResponse read = test::get(s->port(), "/Patient/" + r->patient_id, s->client(), h);
  REQUIRE(read.status == 200);
  auto patient = fhir::parse_json(read.body);
  REQUIRE(patient.ok());
  const auto& names = patient->find("name")->items();
  REQUIRE(names.size() == 2);
  CHECK(names[0].string_at("use") == "official");
  CHECK(names[0].string_at("family") == "Smith");
  CHECK(names[1].string_at("use") == "maiden");
  CHECK(names[1].string_at("family") == "Murazik");
  CHECK(names[1].find("given")->items().at(0).text() == "Jane");
}

TEST_CASE("Ingest: a reused control id is applied as a new unit and counted against its source on /metrics") {
  auto s = two_sources();
  REQUIRE(submit(*s, batch("epr-a", "K1", {observation("r-1")})).ok());
  auto again = batch("epr-a", "K1", {observation("r-2")});
  again.raw = "different content under the same key";
  auto r = submit(*s, std::move(again));
  REQUIRE(r.ok());
  CHECK_FALSE(r->duplicate);
  const auto counters = s->app().ingest().counters();
  CHECK(counters.reused_keys == 1);
  CHECK(counters.reused_keys_by_source.at("epr-a") == 1);
  CHECK(counters.reused_keys_by_source.at("epr-b") == 0);
  test::HttpResponse m = test::get(s->port(), "/metrics", s->client());
  REQUIRE(m.status == 200);
  CHECK(m.body.find("gateway_ingest_reused_keys_total{source=\"epr-a\"} 1") != std::string::npos);
  CHECK(m.body.find("gateway_ingest_reused_keys_total{source=\"epr-b\"} 0") != std::string::npos);
}

// docs/hl7v2.md "When a database cannot commit": the three files commit one after the other,
// locator.db, store.db, audit.db. Each failure point: what the sender got, what each database
// holds, what the resend does.

TEST_CASE("Ingest: when locator.db cannot commit, nothing is applied, the attempt is audited, and the resend applies it") {
  auto s = two_sources();
  auto* locator = dynamic_cast<locator::SqliteLocator*>(&s->locator());
  REQUIRE(locator != nullptr);
  locator->inject_commit_failure(true);
  auto first = submit(*s, batch("epr-a", "L-1", {observation("obs-l")}));
  locator->inject_commit_failure(false);
  REQUIRE_FALSE(first.ok());
  CHECK(first.issue().code == fhir::ErrorCode::internal_error);  // the adapter's "resend later" (AR/CE, 207)
  CHECK(first.issue().diagnostics.find("record locator") != std::string::npos);
  CHECK(patient_of_nhs(*s).empty());
  CHECK(messages(*s).empty());
  CHECK_FALSE(s->app().store().read("Observation", "obs-l")->has_value());
  auto recs = ingest_records(*s, "L-1");
  REQUIRE(recs.size() == 1);
  CHECK(recs[0].action == "ingest-retry-later");
  CHECK(recs[0].status == 503);
  CHECK(recs[0].outcome_text == first.issue().diagnostics);
  CHECK(recs[0].detail.note.empty());  // nothing of it was committed
  CHECK(s->app().ingest().counters().failures == 1);
  CHECK(s->app().ingest().counters().applied == 0);

  auto resend = submit(*s, batch("epr-a", "L-1", {observation("obs-l")}));
  REQUIRE(resend.ok());
  CHECK_FALSE(resend->duplicate);
  CHECK(resend->patient_id == patient_of_nhs(*s));
  const auto rows = messages(*s);
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].status == store::MessageStatus::applied);
  CHECK_FALSE(settled_pending(*s, rows[0].id));
  recs = ingest_records(*s, "L-1");
  REQUIRE(recs.size() == 2);
  CHECK(recs[1].action == "ingest-applied");
  CHECK(recs[1].detail.returned == std::vector<std::string>{"Observation/obs-l"});
  CHECK(s->app().ingest().counters().applied == 1);
}

TEST_CASE("Ingest: when store.db cannot commit after locator.db did, the resend is asked for, the locator's part is "
          "audited, and the resend applies the unit once") {
  auto s = two_sources();
  s->app().store().inject_commit_failure(true);
  auto first = submit(*s, batch("epr-a", "S-1", {observation("obs-s")}));
  s->app().store().inject_commit_failure(false);
  REQUIRE_FALSE(first.ok());
  CHECK(first.issue().code == fhir::ErrorCode::internal_error);
  CHECK(first.issue().diagnostics.find("store database could not commit") != std::string::npos);
  // locator.db committed first and keeps its part (identity, encounters, pointer): the
  // resend applies it again unchanged. store.db holds nothing of the unit.
  const std::string patient = patient_of_nhs(*s);
  REQUIRE_FALSE(patient.empty());
  CHECK(pointers_from(*s, patient, "RXA01") == 1);
  CHECK(messages(*s).empty());
  CHECK_FALSE(s->app().store().read("Observation", "obs-s")->has_value());
  // audit.db says so: the attempt, the patient, and what the locator holds of it.
  auto recs = ingest_records(*s, "S-1");
  REQUIRE(recs.size() == 1);
  CHECK(recs[0].action == "ingest-retry-later");
  CHECK(recs[0].status == 503);
  CHECK(recs[0].detail.patients == std::vector<std::string>{kNhs});
  CHECK(recs[0].detail.note.find("the record locator holds its identity, encounters and pointer (patient " + patient +
                                 ")") != std::string::npos);
  CHECK(s->app().ingest().counters().applied == 0);
  CHECK(s->app().ingest().counters().failures == 1);

  auto resend = submit(*s, batch("epr-a", "S-1", {observation("obs-s")}));
  REQUIRE(resend.ok());
  CHECK_FALSE(resend->duplicate);
  CHECK(resend->patient_id == patient);
  CHECK(pointers_from(*s, patient, "RXA01") == 1);
  const auto rows = messages(*s);
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].status == store::MessageStatus::applied);
  CHECK_FALSE(settled_pending(*s, rows[0].id));
  CHECK(s->app().store().read("Observation", "obs-s")->has_value());
  recs = ingest_records(*s, "S-1");
  REQUIRE(recs.size() == 2);
  CHECK(recs[1].action == "ingest-applied");
  CHECK(recs[1].detail.returned == std::vector<std::string>{"Observation/obs-s"});
  CHECK(s->app().ingest().counters().applied == 1);
}

TEST_CASE("Ingest: when audit.db cannot commit after store.db did, the unit stays pending and uncounted, and its "
          "resend writes the missing ingest-applied record before it is acknowledged") {
  auto s = two_sources();
  s->app().audit_log()->inject_write_failure(true);
  auto first = submit(*s, batch("epr-a", "A-1", {observation("obs-a")}));
  s->app().audit_log()->inject_write_failure(false);
  REQUIRE_FALSE(first.ok());
  CHECK(first.issue().code == fhir::ErrorCode::not_ready);  // "resend it": AR/CE, 207
  CHECK(first.issue().diagnostics.find("the audit log could not be written") != std::string::npos);
  // store.db committed the unit, marked pending: not acknowledged, not counted as applied.
  auto rows = messages(*s);
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].status == store::MessageStatus::applied);
  CHECK(rows[0].pending);
  CHECK(s->app().store().read("Observation", "obs-a")->has_value());
  CHECK_FALSE(patient_of_nhs(*s).empty());
  CHECK(ingest_records(*s, "A-1").empty());
  CHECK(s->app().ingest().counters().applied == 0);
  CHECK(s->app().ingest().counters().failures == 1);

  // The resend completes it: the ingest-applied record naming its resources, then the answer
  // (an applied unit's, not a duplicate's); nothing is stored twice.
  auto resend = submit(*s, batch("epr-a", "A-1", {observation("obs-a")}));
  REQUIRE(resend.ok());
  CHECK_FALSE(resend->duplicate);
  CHECK(resend->message_id == rows[0].id);
  auto recs = ingest_records(*s, "A-1");
  REQUIRE(recs.size() == 1);
  CHECK(recs[0].action == "ingest-applied");
  CHECK(recs[0].detail.returned == std::vector<std::string>{"Observation/obs-a"});
  CHECK(recs[0].detail.patients == std::vector<std::string>{kNhs});
  CHECK(recs[0].detail.note == "message " + std::to_string(rows[0].id) + ", completed by its resend");
  CHECK_FALSE(settled_pending(*s, rows[0].id));
  CHECK(messages(*s).size() == 1);
  CHECK((*s->app().store().read("Observation", "obs-a"))->version == 1);
  CHECK(s->app().ingest().counters().applied == 1);
  CHECK(s->app().ingest().counters().duplicates == 0);

  // Completed once: a further resend is a duplicate.
  auto again = submit(*s, batch("epr-a", "A-1", {observation("obs-a")}));
  REQUIRE(again.ok());
  CHECK(again->duplicate);
  recs = ingest_records(*s, "A-1");
  REQUIRE(recs.size() == 2);
  CHECK(recs[1].action == "ingest-duplicate");
  CHECK(s->app().ingest().counters().applied == 1);
  CHECK(s->app().ingest().counters().duplicates == 1);
}

TEST_CASE("Ingest: a pending unit whose ingest-applied record was written before a stop is answered as a duplicate, "
          "not audited as applied twice") {
  auto s = two_sources();
  auto first = submit(*s, batch("epr-a", "P-1", {observation("obs-p")}));
  REQUIRE(first.ok());
  REQUIRE_FALSE(settled_pending(*s, first->message_id));
  // What a stop between the ingest-applied commit and clearing the mark leaves behind.
  {
    auto db = sqlite::Database::open(s->cfg.data_dir + "/store.db");
    REQUIRE(db.ok());
    REQUIRE(db->exec("UPDATE message SET pending = 1 WHERE id = " + std::to_string(first->message_id)).ok());
  }
  auto recs = ingest_records(*s, "P-1");
  REQUIRE(recs.size() == 1);
  CHECK(recs[0].detail.note == "message " + std::to_string(first->message_id));

  auto resend = submit(*s, batch("epr-a", "P-1", {observation("obs-p")}));
  REQUIRE(resend.ok());
  CHECK(resend->duplicate);
  CHECK_FALSE(settled_pending(*s, first->message_id));
  recs = ingest_records(*s, "P-1");
  REQUIRE(recs.size() == 2);
  CHECK(recs[1].action == "ingest-duplicate");
  CHECK(s->app().ingest().counters().applied == 1);
  CHECK(s->app().ingest().counters().duplicates == 1);
}

TEST_CASE("Ingest: at start-up the search for a pending message's ingest-applied record reads past damaged records") {
  std::string data_dir;
  std::int64_t audited = 0;
  {
    auto s = two_sources();
    data_dir = s->cfg.data_dir;
    audit::Log& log = *s->app().audit_log();
    // The source's earlier ingest-applied records, all before the message's own: 150 soon
    // damaged (more than one page of the search reads past), then more than a page of others.
    const std::uint64_t first = log.stats().size;
    std::atomic<int> failed{0};
    for (int i = 0; i < 1150; ++i) {
      audit::Record r;
      r.time_ms = audit::now_ms();
      r.kind = "ingest";
      r.action = "ingest-applied";
      r.route = "ingest";
      r.target = "TEST OTHER-" + std::to_string(i);
      r.status = 200;
      r.agent_kind = "system";
      r.user = "epr-a";
      r.detail.note = "message 0";
      log.append(std::move(r), [&failed](fhir::Result<std::uint64_t> seq) { failed += seq.ok() ? 0 : 1; });
    }
    log.flush();
    REQUIRE(failed == 0);
    auto sent = submit(*s, batch("epr-a", "D-1", {observation("obs-d1")}));
    REQUIRE(sent.ok());
    REQUIRE_FALSE(settled_pending(*s, sent->message_id));
    audited = sent->message_id;
    // A stop between the ingest-applied commit and clearing the mark, and audit.db damaged.
    auto store_db = sqlite::Database::open(s->cfg.data_dir + "/store.db");
    REQUIRE(store_db.ok());
    REQUIRE(store_db->exec("UPDATE message SET pending = 1 WHERE id = " + std::to_string(audited)).ok());
    auto audit_db = sqlite::Database::open(s->cfg.data_dir + "/audit.db");
    REQUIRE(audit_db.ok());
    REQUIRE(audit_db->exec("UPDATE audit_record SET record = CAST('{\"v\":1' AS BLOB) WHERE agent = 'epr-a' AND seq "
                           "BETWEEN " + std::to_string(first) + " AND " + std::to_string(first + 149))
                .ok());
    REQUIRE(audit_db->changes() == 150);
  }
  auto s = two_sources([&](config::Config& c) { c.data_dir = data_dir; });
  auto row = s->app().store().message(audited);
  REQUIRE(row.ok());
  REQUIRE(row->has_value());
  CHECK_FALSE((*row)->pending);  // its record was found past the damaged ones
  CHECK(*s->app().store().pending_count() == 0);
}

TEST_CASE("Ingest: at start-up a pending message whose ingest-applied record is in audit.db is cleared, one without "
          "it stays pending for its resend") {
  std::string data_dir;
  std::int64_t audited = 0, unaudited = 0;
  {
    auto s = two_sources();
    data_dir = s->cfg.data_dir;
    auto first = submit(*s, batch("epr-a", "S-1", {observation("obs-s1")}));
    REQUIRE(first.ok());
    REQUIRE_FALSE(settled_pending(*s, first->message_id));
    audited = first->message_id;
    // audit.db cannot commit: store.db holds the unit pending, without its record.
    s->app().audit_log()->inject_write_failure(true);
    auto second = submit(*s, batch("epr-a", "S-2", {observation("obs-s2")}));
    s->app().audit_log()->inject_write_failure(false);
    REQUIRE_FALSE(second.ok());
    for (const auto& m : messages(*s))
      if (m.dedupe_key == "S-2") unaudited = m.id;
    REQUIRE(unaudited != 0);
    // A stop between the ingest-applied commit (the AA went out) and clearing the mark.
    auto db = sqlite::Database::open(s->cfg.data_dir + "/store.db");
    REQUIRE(db.ok());
    REQUIRE(db->exec("UPDATE message SET pending = 1 WHERE id = " + std::to_string(audited)).ok());
  }
  auto s = two_sources([&](config::Config& c) { c.data_dir = data_dir; });
  auto row = s->app().store().message(audited);
  REQUIRE(row.ok());
  REQUIRE(row->has_value());
  CHECK_FALSE((*row)->pending);  // before any listener accepted: nothing was resent
  store::MessageQuery q;
  q.pending_only = true;
  auto pending = s->app().store().list_messages(q);
  REQUIRE(pending.ok());
  REQUIRE(pending->size() == 1);
  CHECK(pending->front().id == unaudited);
  CHECK(*s->app().store().pending_count() == 1);
  // The one left is completed by its resend, as before.
  auto resend = submit(*s, batch("epr-a", "S-2", {observation("obs-s2")}));
  REQUIRE(resend.ok());
  CHECK_FALSE(resend->duplicate);
  CHECK_FALSE(settled_pending(*s, unaudited));
}

TEST_CASE("Ingest: an A40 from one source gives another source's pointer on the retired record the survivor's url") {
  auto s = two_sources();
  // Both sources hold the record to retire (the same NHS number); each has its pointer, whose
  // url the gateway built naming that record.
  auto a = submit(*s, batch("epr-a", "p-1", {observation("p-obs-1")}));
  REQUIRE(a.ok());
  auto b = submit(*s, batch("epr-b", "p-2", {observation("p-obs-2")}));
  REQUIRE(b.ok());
  const std::string old_rec = a->patient_id;
  REQUIRE(b->patient_id == old_rec);
  const std::string b_pointer = old_rec + "-RXB01";
  auto before = s->locator().read_pointer(b_pointer);
  REQUIRE(before.ok());
  REQUIRE(before->has_value());
  REQUIRE((*before)->url.find(old_rec) != std::string::npos);
  REQUIRE((*before)->url.rfind(s->cfg.public_base_url + "/", 0) == 0);

  // epr-a's survivor, known by its MRN only; then epr-a's A40 retires the first record into it.
  const char* keep_identity =
      R"({"resourceType":"Patient","identifier":[{"system":"https://epr-a.example.nhs.uk/Id/mrn","value":"KEEP-1"}]})";
  auto keep_unit = batch("epr-a", "p-3", {});
  keep_unit.identity = parse(keep_identity);
  auto keep = submit(*s, std::move(keep_unit));
  REQUIRE(keep.ok());
  REQUIRE(keep->patient_id != old_rec);
  auto merge = batch("epr-a", "p-4", {});
  merge.kind = "ADT^A40";
  merge.identity = parse(keep_identity);
  merge.retired_identifiers.push_back(
      parse(std::string(R"({"system":"https://fhir.nhs.uk/Id/nhs-number","value":")") + kNhs + R"("})"));
  merge.identity_location = "PID-3";
  merge.merge_location = "MRG-1";
  auto merged = submit(*s, std::move(merge));
  REQUIRE(merged.ok());
  CHECK(merged->patient_id == keep->patient_id);

  // epr-b's pointer: on the survivor, and its url names the survivor, not the retired id.
  auto after = s->locator().read_pointer(b_pointer);
  REQUIRE(after.ok());
  REQUIRE(after->has_value());
  CHECK((*after)->patient_id == keep->patient_id);
  CHECK((*after)->url.find(old_rec) == std::string::npos);
  std::string expected = (*before)->url;
  expected.replace(expected.find(old_rec), old_rec.size(), keep->patient_id);
  CHECK((*after)->url == expected);
  CHECK(pointers_from(*s, keep->patient_id, "RXB01") == 1);
}
