// SPDX-License-Identifier: Apache-2.0
// Issue #5 over real HTTPS: the JWT attack suite replayed against the running gateway,
// header-level attacks (two Authorization headers, token in the query), authentication
// before any body or query is read, roles and scopes at the route, rate limits, discovery.
#include <doctest/doctest.h>

#include <ctime>
#include <fstream>

#include "fhir/json.h"
#include "tests/gateway/auth/jwt_attacks.h"
#include "support/audit_check.h"
#include "support/certs.h"
#include "support/paths.h"
#include "support/responses.h"
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
