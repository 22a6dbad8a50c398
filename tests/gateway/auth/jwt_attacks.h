// SPDX-License-Identifier: Apache-2.0
// Hostile bearer tokens for tests: run-time generated keys, a trusted JWKS and JwtConfig, a
// valid-token minter, and a list of named attack tokens every one of which a correct
// JwtValidator must refuse with ErrorCode::unauthenticated. jwt_test.cpp replays them against
// JwtValidator directly; HTTPS tests can replay the same list against the running gateway
// (configure it with TestKeys::jwks_json and TestKeys::config, and pass real epoch seconds as
// `now`). Independent of doctest.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fhir/json.h"
#include "gateway/auth/jwks.h"
#include "gateway/auth/jwt.h"
#include "gateway/auth/jwt_sign.h"

namespace gw::test {

struct TestKeys {
  auth::SigningKey ec;       // trusted ES256 key (P-256), kid ec_kid
  auth::SigningKey rsa;      // trusted RS256 key (RSA-2048), kid rsa_kid
  auth::SigningKey foreign;  // P-256 key the gateway does not trust (forgeries)
  std::string ec_kid;
  std::string rsa_kid;
  std::string jwks_json;                     // {"keys":[ec, rsa]} public keys only
  std::shared_ptr<const auth::KeySet> keys;  // jwks_json parsed
  auth::JwtConfig config;                    // issuer, audience, typ "JWT", leeway 30 s, 8 KiB cap
};

// Fresh keys (RSA-2048 generation takes a moment). Throws std::runtime_error on failure:
// test set-up only.
TestKeys make_test_keys();
// One TestKeys per process, made on first use. Thread-safe.
const TestKeys& shared_test_keys();

// Claims of a valid token at `now`: iss, aud, sub, iat = nbf = now, exp = now + 600, jti,
// client_id, scope, fhirUser and the role/organisation/purpose claims under the names in
// keys.config. Tests modify a copy to build negative cases.
fhir::Json valid_claims(const TestKeys& keys, std::int64_t now);

// Compact JWS over `claims` with the header {"alg","typ":"JWT","kid"}, signed by the trusted
// key for `alg` (ec for ES256, rsa for RS256). Throws std::runtime_error if signing fails.
std::string mint_token(const TestKeys& keys, const fhir::Json& claims,
                       auth::JwsAlgorithm alg = auth::JwsAlgorithm::es256);
// mint_token(keys, valid_claims(keys, now), alg).
std::string mint_valid_token(const TestKeys& keys, std::int64_t now,
                             auth::JwsAlgorithm alg = auth::JwsAlgorithm::es256);

struct JwtAttack {
  std::string name;    // stable identifier, e.g. "alg_none_lowercase"
  std::string token;   // what to send after "Bearer "
  std::string expect;  // a fragment the validator's diagnostics contain (lower-case)
};

// At least 30 distinct hostile tokens, each aimed at one check (alg none/None/NONE, HS256 key
// confusion, kid tricks, stripped/foreign/flipped signatures, ES256 r = s = 0, time claims,
// iss/aud, key-carrying header members, crit, duplicate JSON names, size and depth caps,
// malformed encodings). Names are unique. Valid-looking parts are signed at `now`.
std::vector<JwtAttack> make_jwt_attacks(const TestKeys& keys, std::int64_t now);

}  // namespace gw::test
