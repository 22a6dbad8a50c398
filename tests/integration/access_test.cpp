// SPDX-License-Identifier: Apache-2.0
// Issue #5 over real HTTPS: the JWT attack suite replayed against the running gateway,
// header-level attacks (two Authorization headers, token in the query), authentication
// before any body or query is read, roles and scopes at the route (patient/ scopes bound to
// the launch-context patient, constrained scopes), rate limits, discovery.
#include <doctest/doctest.h>

#include <ctime>
#include <fstream>
#include <future>

#include "fhir/json.h"
#include "gateway/ingest/ingest_service.h"
#include "gateway/store/store.h"
#include "tests/gateway/auth/jwt_attacks.h"
#include "support/audit_check.h"
#include "support/certs.h"
#include "support/paths.h"
#include "support/responses.h"
#include "support/seed.h"
#include "support/test_server.h"

using namespace gw;
using gw::test::HttpResponse;
using gw::test::issue_code;
using gw::test::json_of;
using gw::test::TestServer;

namespace {

// A gateway trusting the attack suite's keys (issuer, audiences, typ and claim names).
TestServer attack_server() {
  const auto& keys = test::shared_test_keys();
  const std::string jwks = (test::temp_dir("attack-jwks") / "jwks.json").string();
  std::ofstream(jwks) << keys.jwks_json;
  return TestServer([jwks, &keys](config::Config& c) {
    c.auth.jwks_file = jwks;
    c.auth.jwt = keys.config;
  });
}

std::string bearer(const std::string& token) { return "Authorization: Bearer " + token + "\r\n"; }

constexpr const char* kNhsSystem = "https://fhir.nhs.uk/Id/nhs-number%7C";
constexpr const char* kPotassium = "http://loinc.org%7C2823-3";

// A gateway with one push source (RXA01), for clinical records filed through the ingest path.
std::unique_ptr<TestServer> server_with_source() {
  return std::make_unique<TestServer>([](config::Config& c) {
    config::SourceSystemConfig src;
    src.name = "epr-a";
    src.ods_code = "RXA01";
    src.adapter = "hl7v2";
    src.endpoint = "127.0.0.1:0";
    c.source_systems.push_back(src);
  });
}

// A seeded patient (registered at A81001, test::add_patient) with one potassium Observation
// `obs_id` filed for them by the push source, as an adapter hands it over. Family names
// differ per patient: the source's claim must match its own patient by demographics too.
test::Seeded patient_with_observation(TestServer& s, int n, const std::string& family, const std::string& obs_id) {
  test::Seeded p = test::add_patient(s.locator(), n, family, "A81001");
  adapters::IngestBatch b;
  b.source = "epr-a";
  b.kind = "TEST";
  b.dedupe_key = obs_id;
  b.raw = "unit " + obs_id;
  auto identity = fhir::parse_json(R"({"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":")" +
                                   p.nhs_number + R"("}],"name":[{"family":")" + family +
                                   R"(","given":["Alex"]}],"birthDate":"1980-05-17","gender":"female"})");
  auto obs = fhir::parse_json(R"({"resourceType":"Observation","id":")" + obs_id +
                              R"(","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"2823-3"}]},)"
                              R"("effectiveDateTime":"2024-03-01T10:00:00Z","valueQuantity":{"value":4.1}})");
  REQUIRE(identity.ok());
  REQUIRE(obs.ok());
  b.identity = std::move(*identity);
  b.resources.push_back(std::move(*obs));
  std::promise<fhir::Result<adapters::IngestReceipt>> done;
  auto f = done.get_future();
  s.app().ingest().submit(std::move(b), [&done](fhir::Result<adapters::IngestReceipt> r) { done.set_value(std::move(r)); });
  auto receipt = f.get();
  REQUIRE_MESSAGE(receipt.ok(), receipt.issue().diagnostics);
  auto stored = s.app().store().read("Observation", obs_id);
  REQUIRE(stored.ok());
  REQUIRE(stored->has_value());
  REQUIRE((*stored)->patient_id == p.id);  // filed for the seeded patient, not a new one
  return p;
}

std::int64_t total_of(const HttpResponse& r) {
  REQUIRE_MESSAGE(r.status == 200, r.body);
  return json_of(r).find("total")->as_int64().value_or(-1);
}

std::string diagnostics_of(const HttpResponse& r) {
  fhir::Json oo = json_of(r);
  REQUIRE_MESSAGE(oo.find("issue"), r.body.substr(0, 200));
  return std::string(oo.find("issue")->items().at(0).string_at("diagnostics"));
}

}  // namespace

TEST_CASE("Access: every JWT attack is refused over HTTPS with 401, invalid_token and an OperationOutcome") {
  TestServer s = attack_server();
  const auto& keys = test::shared_test_keys();
  const std::int64_t now = std::time(nullptr);
  // The control: a valid token from the same keys passes authentication.
  HttpResponse ok = test::get(s.port(), "/Patient?family=Nobody", s.client(), bearer(test::mint_valid_token(keys, now)));
  CHECK_MESSAGE(ok.status == 200, ok.body);

  auto attacks = test::make_jwt_attacks(keys, now);
  REQUIRE(attacks.size() >= 30);
  std::size_t refused = 0, replayed = 0;
  std::vector<HttpResponse> responses{ok};
  for (const auto& a : attacks) {
    CAPTURE(a.name);
    // RFC 6750 2.1 allows several spaces after "Bearer" (1*SP), so a token with a leading
    // space is not malformed once it is in a header; the validator-level suite covers it.
    if (a.name == "leading_space") continue;
    ++replayed;
    // The oversize token (above the 8 KiB token cap) still fits the 16 KiB header limit, so
    // it is the token check that refuses it.
    HttpResponse r = test::get(s.port(), "/Patient?family=Nobody", s.client(), bearer(a.token));
    responses.push_back(r);
    CHECK(r.status == 401);
    CHECK(r.header("www-authenticate").find("error=\"invalid_token\"") != std::string::npos);
    CHECK(issue_code(r) == "login");
    if (a.token.size() >= 16) CHECK(r.body.find(a.token.substr(0, 40)) == std::string::npos);  // never echoed
    refused += r.status == 401;
  }
  CHECK(replayed >= 30);
  CHECK(refused == replayed);
  // Each refused attack, and the control, has exactly one audit record (anonymous, 401).
  CHECK(test::check_one_audit_record_each(s, responses) == replayed + 1);
}

TEST_CASE("Access: header-level attacks: two Authorization headers, token in the query, other schemes") {
  TestServer s;
  const std::string token = test::test_tokens().mint();
  HttpResponse two = test::get(s.port(), "/Patient?family=X", s.client(), bearer(token) + bearer(token));
  CHECK(two.status == 401);
  CHECK(two.header("www-authenticate").find("invalid_token") != std::string::npos);

  HttpResponse query = test::get(s.port(), "/Patient?family=X&access_token=" + token, s.client());
  CHECK(query.status == 401);
  CHECK(json_of(query).find("issue")->items().at(0).string_at("diagnostics").find("query string") != std::string::npos);
  HttpResponse query_and_header = test::get(s.port(), "/Patient?access_token=" + token, s.client(), bearer(token));
  CHECK(query_and_header.status == 401);
  // token= too, with or without a header, in any case; a parameter that only starts with the
  // word is not a token.
  CHECK(test::get(s.port(), "/Patient?token=" + token + "&family=X", s.client(), bearer(token)).status == 401);
  CHECK(test::get(s.port(), "/Patient?family=X&TOKEN=" + token, s.client()).status == 401);
  CHECK(test::get(s.port(), "/Patient?family=X&access%5Ftoken=" + token, s.client(), bearer(token)).status == 401);
  // Any percent-encoding of the name is decoded before the comparison, as the audit decodes it.
  CHECK(test::get(s.port(), "/Patient?family=X&%61ccess_token=" + token, s.client(), bearer(token)).status == 401);
  CHECK(test::get(s.port(), "/Patient?family=X&tok%65n=" + token, s.client(), bearer(token)).status == 401);
  CHECK(test::get(s.port(), "/Patient?family=X&tokenish=1", s.client(), bearer(token)).status != 401);

  HttpResponse basic = test::get(s.port(), "/Patient?family=X", s.client(), "Authorization: Basic dXNlcjpwYXNz\r\n");
  CHECK(basic.status == 401);
  // Another scheme carries no bearer token: a challenge without an error code (RFC 6750 3.1).
  CHECK(basic.header("www-authenticate") == "Bearer realm=\"fhir-gateway\"");
  HttpResponse empty = test::get(s.port(), "/Patient?family=X", s.client(), "Authorization: Bearer \r\n");
  CHECK(empty.status == 401);

  // No credentials at all: 401 with a challenge but no error code (RFC 6750 3.1).
  HttpResponse none = test::get(s.port(), "/Patient?family=X", s.client());
  CHECK(none.status == 401);
  CHECK(none.header("www-authenticate").find("Bearer") == 0);
  CHECK(none.header("www-authenticate").find("error=") == std::string::npos);
  CHECK(issue_code(none) == "login");
}

TEST_CASE("Access: nothing in the body or query is looked at before authentication") {
  TestServer s;
  // A body that would be a 400 (bad JSON) and a query that would be a 400 (bad escape) both
  // get 401 without a token: the parser never saw them.
  std::string bad_json = "{\"resourceType\": ";
  std::string req = "POST /$validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/fhir+json\r\n"
                    "Content-Length: " + std::to_string(bad_json.size()) + "\r\nConnection: close\r\n\r\n" + bad_json;
  auto ex = test::exchange(s.port(), req, 1, s.client());
  REQUIRE(ex.responses.size() == 1);
  CHECK(ex.responses[0].status == 401);
  CHECK(test::get(s.port(), "/Patient?family=%zz", s.client()).status == 401);
  // With a token the same query is parsed and refused for what it is.
  CHECK(test::get(s.port(), "/Patient?family=%zz", s.client(), test::test_tokens().header()).status == 400);
}

TEST_CASE("Access: roles and scopes decide at the route; a scope never widens a role") {
  TestServer s;
  const auto& t = test::test_tokens();
  auto status = [&](test::TokenClaims c, const std::string& target = "/Patient?family=X") {
    return test::get(s.port(), target, s.client(), t.header(c)).status;
  };
  test::TokenClaims clinician;
  CHECK(status(clinician) == 200);
  test::TokenClaims no_role;
  no_role.role.clear();
  CHECK(status(no_role) == 403);
  test::TokenClaims unknown_role;
  unknown_role.role = "janitor";
  CHECK(status(unknown_role) == 403);
  test::TokenClaims ig;
  ig.role = "ig-officer";
  CHECK(status(ig) == 403);  // audit only, no clinical data
  test::TokenClaims admin;
  admin.role = "administrator";
  CHECK(status(admin) == 403);
  test::TokenClaims narrow;
  narrow.scope = "user/Observation.rs";
  CHECK(status(narrow) == 403);
  // A refusal more scope would lift says so, naming the scope (RFC 6750 3.1); one the role
  // makes says nothing of scopes.
  HttpResponse scope_refusal = test::get(s.port(), "/Encounter?patient=Patient/1", s.client(), t.header(narrow));
  CHECK(scope_refusal.status == 403);
  CHECK(scope_refusal.header("www-authenticate") ==
        "Bearer realm=\"fhir-gateway\", error=\"insufficient_scope\", scope=\"user/Encounter.s\"");
  CHECK(test::get(s.port(), "/Patient?family=X", s.client(), t.header(ig)).header("www-authenticate").empty());
  test::TokenClaims read_only;
  read_only.scope = "user/Patient.r";  // read but not search
  CHECK(status(read_only) == 403);
  test::TokenClaims wide;
  wide.scope = "user/*.cruds";  // the clinician role has no create: the scope cannot add it
  std::string body = R"({"resourceType":"DocumentReference"})";
  std::string req = "POST /DocumentReference HTTP/1.1\r\nHost: localhost\r\n" + t.header(wide) +
                    "Content-Type: application/fhir+json\r\nContent-Length: " + std::to_string(body.size()) +
                    "\r\nConnection: close\r\n\r\n" + body;
  auto ex = test::exchange(s.port(), req, 1, s.client());
  REQUIRE(ex.responses.size() == 1);
  CHECK(ex.responses[0].status == 403);
  test::TokenClaims bad_scope;
  bad_scope.scope = "user/Patient.sr";  // out of order: refused, never guessed
  CHECK(status(bad_scope) == 401);
}

TEST_CASE("Access: per-user rate limit answers 429 with Retry-After") {
  TestServer s([](config::Config& c) {
    c.auth.per_user.per_second = 0.05;
    c.auth.per_user.burst = 3;
  });
  const std::string auth = test::test_tokens().header();
  int ok = 0, limited = 0;
  HttpResponse last;
  for (int i = 0; i < 6; ++i) {
    last = test::get(s.port(), "/Patient?family=X", s.client(), auth);
    ok += last.status == 200;
    if (last.status == 429) {
      ++limited;
      CHECK(std::stoi(last.header("retry-after")) >= 1);
      CHECK(issue_code(last) == "throttled");
    }
  }
  CHECK(ok == 3);
  CHECK(limited == 3);
  // Another user is not affected.
  test::TokenClaims other;
  other.sub = "someone-else";
  CHECK(test::get(s.port(), "/Patient?family=X", s.client(), test::test_tokens().header(other)).status == 200);
}

TEST_CASE("Access: open endpoints need no token; smart-configuration is JSON whatever Accept says") {
  TestServer s;
  CHECK(test::get(s.port(), "/metadata", s.client()).status == 200);
  CHECK(test::get(s.port(), "/healthz", s.client()).status == 200);
  HttpResponse smart = test::get(s.port(), "/.well-known/smart-configuration", s.client(), "Accept: application/fhir+xml\r\n");
  REQUIRE(smart.status == 200);
  CHECK(smart.header("content-type").find("application/json") == 0);
  fhir::Json doc = json_of(smart);
  CHECK(doc.string_at("issuer") == test::kTestIssuer);
  CHECK(!doc.string_at("token_endpoint").empty());
  bool s256 = false, plain = false;
  for (const auto& m : doc.find("code_challenge_methods_supported")->items()) {
    s256 = s256 || m.text() == "S256";
    plain = plain || m.text() == "plain";
  }
  CHECK(s256);
  CHECK_FALSE(plain);
  bool v2 = false;
  for (const auto& c : doc.find("capabilities")->items()) v2 = v2 || c.text() == "permission-v2";
  CHECK(v2);
}

TEST_CASE("Access: secure by default: no token validation on a non-loopback address is refused") {
  config::Config c;
  c.https.address = "0.0.0.0";
  c.auth.enabled = false;
  c.https.certificate = c.https.private_key = test::test_tokens().jwks_path;  // any existing file
  c.audit.signing_key = test::dev_certs().audit_key;
  CHECK_THROWS_AS(config::validate(c), config::ConfigError);
  c.https.address = "127.0.0.1";
  CHECK_NOTHROW(config::validate(c));
}

TEST_CASE("Access: patient/ scopes reach only the patient in the token's launch context") {
  auto s = server_with_source();
  test::Seeded a = patient_with_observation(*s, 501, "Contexta", "obs-a");
  test::Seeded b = patient_with_observation(*s, 512, "Contextb", "obs-b");
  test::add_pointer(s->locator(), a.id, "RX1", "887701000000100", "Emergency health care plan");
  test::add_pointer(s->locator(), b.id, "RX1", "887701000000100", "Emergency health care plan");
  const auto& t = test::test_tokens();
  auto get = [&](const std::string& target, const test::TokenClaims& c) {
    return test::get(s->port(), target, s->client(), t.header(c));
  };
  test::TokenClaims app;  // a clinician at A81001, where both patients are registered
  app.scope = "launch/patient patient/*.rs";
  app.patient = a.id;

  // Reads: the patient in context, and nobody else (answered as an unknown patient).
  CHECK(get("/Patient/" + a.id, app).status == 200);
  HttpResponse other = get("/Patient/" + b.id, app);
  HttpResponse unknown = get("/Patient/no-such-patient", app);
  CHECK(other.status == 404);
  CHECK(diagnostics_of(other) == diagnostics_of(unknown));
  CHECK(get("/Observation/obs-a", app).status == 200);
  CHECK(get("/Observation/obs-b", app).status == 404);
  // Searches: Patient lists the patient in context only; clinical and pointer searches for
  // another patient find nothing.
  HttpResponse patients = get("/Patient?family=Context", app);
  CHECK(total_of(patients) == 1);
  REQUIRE(json_of(patients).find("entry"));
  CHECK(json_of(patients).find("entry")->items().at(0).find("resource")->string_at("id") == a.id);
  CHECK(total_of(get("/Patient?identifier=" + std::string(kNhsSystem) + b.nhs_number, app)) == 0);
  CHECK(total_of(get("/Observation?patient=" + a.id, app)) == 1);
  CHECK(total_of(get("/Observation?patient=" + b.id, app)) == 0);
  CHECK(total_of(get("/Observation?patient:identifier=" + std::string(kNhsSystem) + b.nhs_number, app)) == 0);
  // (the push source's records add a pointer of their own)
  CHECK(total_of(get("/DocumentReference?subject:identifier=" + std::string(kNhsSystem) + a.nhs_number, app)) == 2);
  CHECK(total_of(get("/DocumentReference?subject:identifier=" + std::string(kNhsSystem) + b.nhs_number, app)) == 0);
  CHECK(get("/Patient/$ihe-pix?sourceIdentifier=" + std::string(kNhsSystem) + b.nhs_number, app).status == 404);

  // user/ scopes are not bound by the claim: the same user sees both patients.
  test::TokenClaims user = app;
  user.scope = "user/*.rs";
  CHECK(total_of(get("/Patient?family=Context", user)) == 2);
  CHECK(get("/Observation/obs-b", user).status == 200);

  // patient/ scopes without a patient claim: refused, saying why.
  test::TokenClaims no_context = app;
  no_context.patient.clear();
  HttpResponse refused = get("/Patient/" + a.id, no_context);
  CHECK(refused.status == 403);
  CHECK(diagnostics_of(refused).find("the token names no patient (no patient claim)") != std::string::npos);
  // The token holds patient/*.rs already: what it lacks is launch context, so no challenge
  // names a scope to ask for (before: scope="patient/Patient.r", which a client would loop on).
  CHECK(refused.header("www-authenticate").empty());
  CHECK(get("/Observation?patient=" + a.id, no_context).status == 403);
  // A claim that cannot name a Patient is a bad token.
  test::TokenClaims bad_claim = app;
  bad_claim.patient = "Patient/" + a.id;
  CHECK(get("/Patient/" + a.id, bad_claim).status == 401);
}

TEST_CASE("Access: a constrained scope grants exactly the searches that carry its constraint") {
  auto s = server_with_source();
  test::Seeded a = patient_with_observation(*s, 521, "Contextk", "obs-k");
  test::add_pointer(s->locator(), a.id, "RX1", "887701000000100", "Emergency health care plan");
  const auto& t = test::test_tokens();
  auto get = [&](const std::string& target, const test::TokenClaims& c) {
    return test::get(s->port(), target, s->client(), t.header(c));
  };
  test::TokenClaims lab;
  lab.scope = "user/Observation.rs?code=http://loinc.org|2823-3";
  CHECK(total_of(get("/Observation?patient=" + a.id + "&code=" + kPotassium, lab)) == 1);
  HttpResponse without = get("/Observation?patient=" + a.id, lab);
  CHECK(without.status == 403);
  // Only the scopes refuse it (the role allows the search): the 403 says which scope would
  // help, as refusals at the route do.
  CHECK(without.header("www-authenticate") ==
        "Bearer realm=\"fhir-gateway\", error=\"insufficient_scope\", scope=\"user/Observation.s\"");
  CHECK(diagnostics_of(without) ==
        "access denied: token scopes grant search on Observation only with code=http://loinc.org|2823-3, and this "
        "search does not carry it");
  CHECK(get("/Observation?patient=" + a.id + "&code=http://loinc.org%7C2951-2", lab).status == 403);
  CHECK(get("/Observation?patient=" + a.id + "&code=" + kPotassium + ",http://loinc.org%7C2951-2", lab).status == 403);
  CHECK(get("/Observation/obs-k", lab).status == 403);  // never a read
  CHECK(get("/Encounter?patient=" + a.id, lab).status == 403);
  // An unknown parameter dropped under lenient handling meets no constraint.
  test::TokenClaims lenient = lab;
  lenient.scope = "user/Observation.rs?foo=bar";
  CHECK(get("/Observation?patient=" + a.id + "&foo=bar", lenient).status == 403);

  // A constraint on a parameter the gateway does not search by can never be met: said so.
  test::TokenClaims category = lab;
  category.scope = "user/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory";
  HttpResponse unsupported = get("/Observation?patient=" + a.id +
                                     "&category=http://terminology.hl7.org/CodeSystem/observation-category%7Claboratory",
                                 category);
  CHECK(unsupported.status == 403);
  CHECK(diagnostics_of(unsupported).find("'category' is not a search parameter this gateway supports on Observation") !=
        std::string::npos);

  // patient/ constrained scopes: the constraint and the launch context both hold.
  test::TokenClaims in_context = lab;
  in_context.scope = "patient/Observation.rs?code=http://loinc.org|2823-3";
  in_context.patient = a.id;
  CHECK(total_of(get("/Observation?patient=" + a.id + "&code=" + kPotassium, in_context)) == 1);
  test::Seeded b = test::add_patient(s->locator(), 531, "Contextl", "A81001");
  CHECK(total_of(get("/Observation?patient=" + b.id + "&code=" + kPotassium, in_context)) == 0);
  in_context.patient.clear();
  CHECK(get("/Observation?patient=" + a.id + "&code=" + kPotassium, in_context).status == 403);

  // POST _search: the constraint is read from the form body, as the search is.
  test::TokenClaims pointers = lab;
  pointers.scope = "user/DocumentReference.rs?type=887701000000100";
  auto post = [&](const std::string& body) {
    auto ex = test::exchange(s->port(),
                             "POST /DocumentReference/_search HTTP/1.1\r\nHost: localhost\r\n" + t.header(pointers) +
                                 "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: " +
                                 std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body,
                             1, s->client());
    REQUIRE_MESSAGE(ex.responses.size() == 1, ex.error);
    return ex.responses[0];
  };
  const std::string subject = "subject:identifier=" + std::string(kNhsSystem) + a.nhs_number;
  CHECK(total_of(post(subject + "&type=887701000000100")) == 1);
  CHECK(post(subject).status == 403);
}

TEST_CASE("Access: a constrained scope is not widened by repeating its parameter or adding other values") {
  auto s = server_with_source();
  test::Seeded a = patient_with_observation(*s, 541, "Contextm", "obs-m");
  test::add_pointer(s->locator(), a.id, "RX1", "887701000000100", "Emergency health care plan");
  const auto& t = test::test_tokens();
  auto get = [&](const std::string& target, const test::TokenClaims& c) {
    return test::get(s->port(), target, s->client(), t.header(c));
  };
  const std::string sodium = "http://loinc.org%7C2951-2";
  const std::string patient = "/Observation?patient=" + a.id;
  for (const std::string context : {"user", "patient"}) {
    CAPTURE(context);
    test::TokenClaims lab;
    lab.scope = context + "/Observation.rs?code=http://loinc.org|2823-3";
    if (context == "patient") lab.patient = a.id;
    CHECK(total_of(get(patient + "&code=" + kPotassium, lab)) == 1);
    // Before: code=potassium&code=sodium passed (the potassium one was present) and the
    // repeats were ORed, so every code the scope excludes could be listed beside it.
    for (const std::string& q : {"&code=" + std::string(kPotassium) + "&code=" + sodium,
                                 "&code=" + sodium + "&code=" + std::string(kPotassium),
                                 "&code=" + std::string(kPotassium) + "&code=2951-2",
                                 "&code=" + std::string(kPotassium) + "&code=http://loinc.org%7C2823-3,2951-2"}) {
      CAPTURE(q);
      HttpResponse r = get(patient + q, lab);
      CHECK(r.status == 403);
      CHECK(diagnostics_of(r).find("only with code=http://loinc.org|2823-3") != std::string::npos);
      CHECK(r.header("www-authenticate").find("scope=\"" + context + "/Observation.s\"") != std::string::npos);
    }
    // The constraint repeated as itself asks for nothing more.
    CHECK(total_of(get(patient + "&code=" + kPotassium + "&code=" + kPotassium, lab)) == 1);
    // A read is never granted by a constrained scope, whatever its context.
    CHECK(get("/Observation/obs-m", lab).status == 403);
    // POST _search: values in the query string count as the body's do.
    const std::string body = "patient=" + a.id + "&code=" + kPotassium;
    auto ex = test::exchange(s->port(),
                             "POST /Observation/_search?code=" + sodium + " HTTP/1.1\r\nHost: localhost\r\n" +
                                 t.header(lab) + "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: " +
                                 std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body,
                             1, s->client());
    REQUIRE_MESSAGE(ex.responses.size() == 1, ex.error);
    CHECK(ex.responses[0].status == 403);
  }
  // Without a constraint, repeats are ANDed (R4 search.html): the Observation carries
  // potassium only, so potassium AND sodium matches nothing, while a comma is an OR.
  test::TokenClaims gp;
  CHECK(total_of(get(patient + "&code=" + kPotassium + "&code=" + sodium, gp)) == 0);
  CHECK(total_of(get(patient + "&code=" + kPotassium + "," + sodium, gp)) == 1);
  CHECK(total_of(get(patient + "&code=" + kPotassium + "&code=2823-3", gp)) == 1);
  // DocumentReference: a pointer has one type, and type=a&type=b used to mean type=b.
  const std::string pointers = "/DocumentReference?patient=" + a.id + "&type=887701000000100";
  CHECK(total_of(get(pointers, gp)) == 1);
  HttpResponse twice = get(pointers + "&type=999", gp);
  CHECK(twice.status == 400);
  CHECK(diagnostics_of(twice).find("type may be given once") != std::string::npos);
  test::TokenClaims plan = gp;
  plan.scope = "user/DocumentReference.rs?type=887701000000100";
  CHECK(total_of(get(pointers, plan)) == 1);
  CHECK(get(pointers + "&type=999", plan).status == 403);
  CHECK(get("/DocumentReference?patient=" + a.id + "&type=999&type=887701000000100", plan).status == 403);
}
