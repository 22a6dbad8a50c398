// SPDX-License-Identifier: Apache-2.0
// Bearer tokens for integration tests: one ES256 key generated per test process, its JWKS
// written to a temporary file the test gateway trusts, and a minting helper with the claims
// the access policy looks at.
#pragma once

#include <cstdint>
#include <string>

#include "gateway/auth/jwt_sign.h"

namespace gw::test {

inline constexpr const char* kTestIssuer = "https://localhost:8443/dev-idp";
inline constexpr const char* kTestAudience = "https://localhost:8443";

struct TokenClaims {
  std::string sub = "test-user";
  std::string role = "clinician";
  std::string org = "A81001";
  std::string scope = "user/*.rs";
  std::string purpose;
  std::string patient;  // SMART launch context: a Patient id (patient/ scopes are bound to it)
  std::string client_id = "test-client";
  std::int64_t ttl = 600;
  std::string iss = kTestIssuer;
  std::string aud = kTestAudience;
};

struct TestTokens {
  auth::SigningKey key;
  std::string kid;
  std::string jwks_path;
  std::string mint(const TokenClaims& c = {}) const;
  // "Authorization: Bearer ...\r\n" for raw requests.
  std::string header(const TokenClaims& c = {}) const { return "Authorization: Bearer " + mint(c) + "\r\n"; }
};

const TestTokens& test_tokens();

}  // namespace gw::test
