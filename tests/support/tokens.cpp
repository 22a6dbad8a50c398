// SPDX-License-Identifier: Apache-2.0
#include "support/tokens.h"

#include <ctime>
#include <fstream>
#include <stdexcept>

#include "fhir/json.h"
#include "support/paths.h"

namespace gw::test {

std::string TestTokens::mint(const TokenClaims& c) const {
  const std::int64_t now = std::time(nullptr);
  fhir::Json claims = fhir::Json::object();
  claims.set("iss", fhir::Json::string(c.iss));
  claims.set("sub", fhir::Json::string(c.sub));
  claims.set("aud", fhir::Json::string(c.aud));
  claims.set("iat", fhir::Json::integer(now));
  claims.set("exp", fhir::Json::integer(now + c.ttl));
  claims.set("jti", fhir::Json::string(auth::hex_encode(auth::sha256(c.sub + std::to_string(now) + c.scope + c.role +
                                                                     c.org + c.purpose + c.patient + c.client_id))));
  if (!c.role.empty()) claims.set("selected_roleid", fhir::Json::string(c.role));
  if (!c.org.empty()) claims.set("organisation", fhir::Json::string(c.org));
  if (!c.scope.empty()) claims.set("scope", fhir::Json::string(c.scope));
  if (!c.purpose.empty()) claims.set("purpose_of_use", fhir::Json::string(c.purpose));
  if (!c.patient.empty()) claims.set("patient", fhir::Json::string(c.patient));
  if (!c.client_id.empty()) claims.set("client_id", fhir::Json::string(c.client_id));
  auto t = auth::sign_jwt(key, kid, claims);
  if (!t) throw std::runtime_error("test token: " + t.issue().diagnostics);
  return *t;
}

const TestTokens& test_tokens() {
  static const TestTokens tokens = [] {
    auto key = auth::SigningKey::generate(auth::JwsAlgorithm::es256);
    if (!key) throw std::runtime_error("test signing key: " + key.issue().diagnostics);
    TestTokens t{std::move(*key), {}, {}};
    t.kid = t.key.default_kid();
    t.jwks_path = (temp_dir("jwks") / "jwks.json").string();
    std::ofstream(t.jwks_path) << t.key.jwks_json(t.kid);
    return t;
  }();
  return tokens;
}

}  // namespace gw::test
