// SPDX-License-Identifier: Apache-2.0
// The Authenticator on its own (no server): which token makes which principal, where a token
// may travel, which rate-limit buckets a request draws from, and the RFC 6750 challenges.
#include <doctest/doctest.h>

#include <ctime>
#include <fstream>
#include <optional>

#include "fhir/json.h"
#include "gateway/auth/authenticator.h"
#include "gateway/auth/jwt_sign.h"
#include "gateway/http/request.h"
#include "gateway/observe/log.h"
#include "support/paths.h"
#include "support/stderr_capture.h"
#include "support/tokens.h"

using gw::auth::AuthFailure;
using gw::auth::Authenticator;
using gw::auth::Principal;

namespace {

using Outcome = std::variant<std::shared_ptr<const Principal>, AuthFailure>;

gw::config::AuthConfig auth_config() {
  gw::config::AuthConfig c;
  c.jwks_file = gw::test::test_tokens().jwks_path;
  c.jwt.issuer = gw::test::kTestIssuer;
  c.jwt.audiences = {gw::test::kTestAudience};
  return c;
}

// A token signed by the test key with exactly these claims (plus iss, aud, iat).
std::string sign(fhir::Json claims) {
  const auto& t = gw::test::test_tokens();
  claims.set("iss", fhir::Json::string(gw::test::kTestIssuer));
  claims.set("aud", fhir::Json::string(gw::test::kTestAudience));
  claims.set("iat", fhir::Json::integer(std::time(nullptr)));
  auto token = gw::auth::sign_jwt(t.key, t.kid, claims);
  REQUIRE(token.ok());
  return *token;
}

gw::http::Request request(const std::string& authorization, const std::string& raw_query = {}) {
  gw::http::Request r;
  r.method = "GET";
  r.path = "/Patient";
  r.raw_query = raw_query;
  r.target = raw_query.empty() ? r.path : r.path + "?" + raw_query;
  if (!authorization.empty()) r.headers.emplace_back("authorization", authorization);
  return r;
}

std::shared_ptr<const Principal> principal_of(const Outcome& o) {
  auto* p = std::get_if<std::shared_ptr<const Principal>>(&o);
  if (p == nullptr) FAIL("refused: " << std::get<AuthFailure>(o).issue.diagnostics);
  return *p;
}

AuthFailure failure_of(const Outcome& o) {
  auto* f = std::get_if<AuthFailure>(&o);
  REQUIRE(f != nullptr);
  return *f;
}

}  // namespace

TEST_CASE("Authenticator: a token sharing another's jti, sub and exp gets its own role, organisation and scopes") {
  Authenticator auth(auth_config(), {});
  const std::int64_t now = std::time(nullptr);
  auto claims = [now](const char* role, const char* org, const char* scope) {
    fhir::Json c = fhir::Json::object();
    c.set("sub", fhir::Json::string("same-user"));
    c.set("exp", fhir::Json::integer(now + 600));
    c.set("jti", fhir::Json::string("same-jti-1"));
    c.set("selected_roleid", fhir::Json::string(role));
    c.set("organisation", fhir::Json::string(org));
    c.set("scope", fhir::Json::string(scope));
    return c;
  };
  const std::string a = sign(claims("clinician", "D50237", "user/*.rs"));
  const std::string b = sign(claims("paramedic", "RXX01", "user/Patient.rs"));

  auto first = principal_of(auth.authenticate(request("Bearer " + a), now));
  CHECK(first->role_claim == "clinician");
  auto second = principal_of(auth.authenticate(request("Bearer " + b), now));
  CHECK(second->role_claim == "paramedic");
  CHECK(second->organisation == "RXX01");
  CHECK(second->scopes.permissions(gw::auth::ScopeContext::user, "Patient") != 0);
  CHECK(second->scopes.permissions(gw::auth::ScopeContext::user, "DocumentReference") == 0);
  // The identical token still finds its cached principal.
  CHECK(principal_of(auth.authenticate(request("Bearer " + a), now)) == first);
  CHECK(principal_of(auth.authenticate(request("Bearer " + b), now)) == second);
}

TEST_CASE("Authenticator: a token parameter in the query is refused however its name is percent-encoded") {
  Authenticator auth(auth_config(), {});
  const std::int64_t now = std::time(nullptr);
  const std::string bearer = "Bearer " + gw::test::test_tokens().mint();
  for (std::string query : {"family=But&access_token=SECRET", "family=But&%61ccess_token=SECRET",
                            "access_tok%65n=SECRET", "tok%65n=SECRET", "%54%4F%4B%45%4E=SECRET", "access%5Ftoken=S"}) {
    CAPTURE(query);
    const AuthFailure f = failure_of(auth.authenticate(request(bearer, query), now));
    CHECK(f.issue.diagnostics.find("not accepted in the query string") != std::string::npos);
  }
  // Decoded once, as the query parser decodes it: %2561 is the literal name "%61ccess_token",
  // not a token parameter; nor are names that only start or end with the word.
  for (std::string query : {"%2561ccess_token=1", "tokenish=1", "family=But&my_token=1", "access+token=1"}) {
    CAPTURE(query);
    CHECK(principal_of(auth.authenticate(request(bearer, query), now)) != nullptr);
  }
  CHECK(gw::auth::is_token_parameter("ACCESS_TOKEN"));
  CHECK_FALSE(gw::auth::is_token_parameter("access%5ftoken"));  // names reach it decoded
}

TEST_CASE("Authenticator: tokens naming no client do not share one per-client rate-limit bucket") {
  gw::config::AuthConfig config = auth_config();
  config.per_client.per_second = 0.01;
  config.per_client.burst = 3;
  Authenticator auth(config, {});
  const std::int64_t now = std::time(nullptr);
  auto bearer = [](const std::string& sub, const std::string& client) {
    gw::test::TokenClaims c;
    c.sub = sub;
    c.client_id = client;
    return "Bearer " + gw::test::test_tokens().mint(c);
  };
  // One user without a client spends more than a client's burst...
  const std::string user_a = bearer("user-a", "");
  for (int i = 0; i < 5; ++i) CHECK(principal_of(auth.authenticate(request(user_a), now)) != nullptr);
  // ...and another user without a client is not affected.
  CHECK(principal_of(auth.authenticate(request(bearer("user-b", "")), now)) != nullptr);

  // A named client still has its bucket, shared by all its users.
  for (int i = 0; i < 3; ++i)
    CHECK(principal_of(auth.authenticate(request(bearer("user-" + std::to_string(i), "app-1")), now)) != nullptr);
  const AuthFailure f = failure_of(auth.authenticate(request(bearer("user-z", "app-1")), now));
  CHECK(f.issue.code == fhir::ErrorCode::too_many_requests);
  CHECK(f.retry_after.count() >= 1);
  REQUIRE(f.principal != nullptr);
  CHECK(f.principal->client_id == "app-1");
}

TEST_CASE("Authenticator: a JWKS that also publishes an encryption key loads, with an info line naming it") {
  const auto& t = gw::test::test_tokens();
  // The test signing key as the IdP publishes it, beside a Keycloak-style RSA-OAEP key.
  auto rsa = gw::auth::SigningKey::generate(gw::auth::JwsAlgorithm::rs256);
  REQUIRE(rsa.ok());
  auto enc = fhir::parse_json(rsa->public_jwk_json("kc-enc"));
  REQUIRE(enc.ok());
  enc->set("use", fhir::Json::string("enc"));
  enc->set("alg", fhir::Json::string("RSA-OAEP"));
  gw::config::AuthConfig config = auth_config();
  config.jwks_file = (gw::test::temp_dir("jwks-enc") / "jwks.json").string();
  std::ofstream(config.jwks_file) << R"({"keys":[)" << fhir::to_json(*enc) << "," << t.key.public_jwk_json(t.kid)
                                  << "]}";

  gw::observe::set_level(gw::observe::Level::info);  // a TestServer elsewhere may have set warn
  gw::test::StderrCapture capture;
  std::optional<Authenticator> auth;
  CHECK_NOTHROW(auth.emplace(config, std::vector<gw::config::SourceSystemConfig>{}));
  const std::string log = capture.text();
  const std::string line = gw::test::log_line(log, "JWKS key skipped");
  CHECK(line.find("\"level\":\"info\"") != std::string::npos);
  CHECK(line.find("\"kid\":\"kc-enc\"") != std::string::npos);
  CHECK(line.find("enc") != std::string::npos);
  REQUIRE(auth);
  // Tokens signed by the signing key are accepted.
  CHECK(principal_of(auth->authenticate(request("Bearer " + t.mint()), std::time(nullptr))) != nullptr);
}

TEST_CASE("Authenticator: another scheme gets a challenge without an error code; a bad bearer token gets invalid_token") {
  Authenticator auth(auth_config(), {});
  const std::int64_t now = std::time(nullptr);
  // RFC 6750 3.1: no error code when the request carries no bearer token.
  for (std::string header : {"Basic Zm9vOmJhcg==", "Digest username=\"x\"", "Bearerish abc"}) {
    CAPTURE(header);
    const AuthFailure f = failure_of(auth.authenticate(request(header), now));
    CHECK(f.www_authenticate == "Bearer realm=\"fhir-gateway\"");
    CHECK(f.issue.diagnostics.find("Bearer scheme") != std::string::npos);
  }
  for (std::string header : {"Bearer", "Bearer   ", "Bearer not.a.token", "bearer x"}) {
    CAPTURE(header);
    CHECK(failure_of(auth.authenticate(request(header), now)).www_authenticate ==
          "Bearer realm=\"fhir-gateway\", error=\"invalid_token\"");
  }
  CHECK(principal_of(auth.authenticate(request("bearer  " + gw::test::test_tokens().mint()), now)) != nullptr);
}

TEST_CASE("insufficient_scope_challenge: only when the role allows what the scopes do not, naming the scope") {
  auto policy = gw::auth::Policy::make(gw::auth::default_policy());
  REQUIRE(policy.ok());
  auto principal = [](std::string role, std::string scope) {
    Principal p;
    p.role_claim = std::move(role);
    p.subject = "u1";
    auto s = gw::auth::parse_scopes(scope);
    REQUIRE(s.ok());
    p.scopes = *s;
    return p;
  };
  using gw::auth::Interaction;
  using gw::auth::insufficient_scope_challenge;
  CHECK(insufficient_scope_challenge(*policy, principal("clinician", "user/Observation.rs"), "Encounter",
                                     Interaction::search) ==
        "Bearer realm=\"fhir-gateway\", error=\"insufficient_scope\", scope=\"user/Encounter.s\"");
  CHECK(insufficient_scope_challenge(*policy, principal("clinician", "patient/Observation.rs"), "Patient",
                                     Interaction::read) ==
        "Bearer realm=\"fhir-gateway\", error=\"insufficient_scope\", scope=\"patient/Patient.r\"");
  Principal backend = principal("system", "system/Patient.rs");
  backend.kind = Principal::Kind::system;
  CHECK(insufficient_scope_challenge(*policy, backend, "DocumentReference", Interaction::search)
            .find("scope=\"system/DocumentReference.s\"") != std::string::npos);
  // The role refuses as well (or alone): more scope would not help, so no challenge.
  CHECK(insufficient_scope_challenge(*policy, principal("ig-officer", "user/Patient.rs"), "Encounter",
                                     Interaction::search).empty());
  CHECK(insufficient_scope_challenge(*policy, principal("clinician", "user/*.rs"), "DocumentReference",
                                     Interaction::create).empty());
  CHECK(insufficient_scope_challenge(*policy, principal("Clinician", "user/Patient.rs"), "Encounter",
                                     Interaction::search).empty());
  Principal certificate = backend;
  certificate.scopes_from_token = false;
  CHECK(insufficient_scope_challenge(*policy, certificate, "Encounter", Interaction::search).empty());
  // A scope the token already holds is never named: a patient/*.rs token refused for want of a
  // patient claim lacks launch context, and asking for patient/Patient.r again would loop.
  CHECK(insufficient_scope_challenge(*policy, principal("clinician", "patient/*.rs"), "Patient", Interaction::read)
            .empty());
  CHECK(insufficient_scope_challenge(*policy, principal("clinician", "patient/Patient.r"), "Patient",
                                     Interaction::read).empty());
  // With user/ scopes too, the user/ scope for the type would help, and is named.
  CHECK(insufficient_scope_challenge(*policy, principal("clinician", "user/Encounter.rs patient/Patient.r"),
                                     "Patient", Interaction::read) ==
        "Bearer realm=\"fhir-gateway\", error=\"insufficient_scope\", scope=\"user/Patient.r\"");
  // A constrained scope grants no unconstrained search: that scope is what would help.
  CHECK(insufficient_scope_challenge(*policy, principal("clinician", "user/Observation.rs?code=x"), "Observation",
                                     Interaction::search) ==
        "Bearer realm=\"fhir-gateway\", error=\"insufficient_scope\", scope=\"user/Observation.s\"");
}
