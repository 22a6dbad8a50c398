// SPDX-License-Identifier: Apache-2.0
// Token signing for development and tests (tools/mint_token, tests/gateway/auth): a private
// key (EC P-256 -> ES256, RSA >= 2048 bits -> RS256) from PEM, compact JWS output, and the
// matching public JWK/JWKS so the gateway can be configured to trust it. The gateway itself
// never signs tokens.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "fhir/result.h"
#include "gateway/auth/jwks.h"

namespace fhir {
class Json;
}

namespace gw::auth {

class SigningKey {
 public:
  // PEM private key: PKCS#8 ("PRIVATE KEY"), SEC 1 ("EC PRIVATE KEY") or PKCS#1 ("RSA PRIVATE
  // KEY"). Encrypted keys are refused (no passphrase prompt). EC keys must be P-256, RSA keys
  // 2048..8192 bits. Failures are ErrorCode::invalid_value with a message naming the problem.
  static fhir::Result<SigningKey> from_pem(std::string_view pem);
  static fhir::Result<SigningKey> load_pem_file(const std::string& path);
  // A fresh key (ES256: P-256; RS256: RSA-2048), for tests.
  static fhir::Result<SigningKey> generate(JwsAlgorithm alg);

  JwsAlgorithm algorithm() const { return alg_; }
  // SubjectPublicKeyInfo, DER and PEM ("PUBLIC KEY").
  std::string public_key_der() const;
  std::string public_key_pem() const;
  // "dev-" + the first 8 hex digits of SHA-256(public_key_der()).
  std::string default_kid() const;
  // The public key as one JWK object (kty, crv/x/y or n/e, kid, use "sig", alg), and as a
  // JWKS document {"keys":[...]} holding that one key. Compact JSON.
  std::string public_jwk_json(std::string_view kid) const;
  std::string jwks_json(std::string_view kid) const;

  // Signs `signing_input` ("b64header.b64payload") with SHA-256. ES256 output is the raw
  // 64-byte R || S of RFC 7518 section 3.4 (not DER); RS256 is RSASSA-PKCS1-v1_5.
  fhir::Result<std::string> sign(std::string_view signing_input) const;

 private:
  struct Key;
  SigningKey(std::shared_ptr<const Key> key, JwsAlgorithm alg) : key_(std::move(key)), alg_(alg) {}
  std::shared_ptr<const Key> key_;
  JwsAlgorithm alg_ = JwsAlgorithm::es256;
};

// Compact JWS over the given header and claims JSON texts, taken verbatim (so tests can build
// odd headers): base64url(header) "." base64url(claims) "." base64url(signature).
fhir::Result<std::string> sign_compact(const SigningKey& key, std::string_view header_json,
                                       std::string_view claims_json);

// The usual case: header {"alg":<key's algorithm>,"typ":<typ>,"kid":<kid>} over `claims`
// (which must be a JSON object).
fhir::Result<std::string> sign_jwt(const SigningKey& key, std::string_view kid, const fhir::Json& claims,
                                   std::string_view typ = "JWT");

// Lower-case hex of `bytes`.
std::string hex_encode(std::string_view bytes);
// Raw SHA-256 digest (32 bytes) of `data`.
std::string sha256(std::string_view data);

}  // namespace gw::auth
