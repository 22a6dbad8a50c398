// SPDX-License-Identifier: Apache-2.0
// The ingest path behind every push adapter (gateway/ingest): a batch store.db would refuse is
// refused before anything is committed for it, and stored as an error to list and replay; an
// update to the patient's demographics reaches the Patient served and the access policy.
// Batches are submitted to a running gateway's IngestSink, as an adapter hands them over.
#include <doctest/doctest.h>

#include <future>

#include "gateway/ingest/ingest_service.h"
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
