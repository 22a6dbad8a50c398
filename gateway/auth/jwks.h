// SPDX-License-Identifier: Apache-2.0
// JSON Web Key Sets (RFC 7517) for token validation: RSA (kty RSA, n, e) and EC P-256 (kty EC,
// crv P-256, x, y) public keys, each selected by `kid`. The algorithm is pinned per key here:
// RSA -> RS256, EC P-256 -> ES256; a JWK whose `alg` says otherwise, whose `use` is not "sig",
// or which carries private members (d, p, q, ...) is refused at load time with a clear error.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "fhir/result.h"

namespace gw::auth {

enum class JwsAlgorithm { rs256, es256 };
std::string_view algorithm_name(JwsAlgorithm a);  // "RS256", "ES256"

class PublicKey;  // opaque: wraps an OpenSSL EVP_PKEY

struct Jwk {
  std::string kid;
  JwsAlgorithm alg;
  std::shared_ptr<const PublicKey> key;
};

class KeySet {
 public:
  // Parses a JWKS document ({"keys":[...]}). Duplicate kids, unsupported key types, weak RSA
  // keys (< 2048 bits) and points not on the curve are errors naming the offending key.
  static fhir::Result<std::shared_ptr<const KeySet>> parse(std::string_view jwks_json);
  static fhir::Result<std::shared_ptr<const KeySet>> load_file(const std::string& path);

  const Jwk* find(std::string_view kid) const;  // exact match, no fallback
  const std::vector<Jwk>& keys() const { return keys_; }

 private:
  std::vector<Jwk> keys_;
};

// Signature verification with the pinned algorithm. `signing_input` is "b64header.b64payload";
// `signature` is the decoded signature (RS256: PKCS#1 v1.5; ES256: 64-byte r||s).
bool verify_signature(const Jwk& key, std::string_view signing_input, std::string_view signature);

// True when both name the same kid, pinned algorithm and public key material (used to keep
// cached tokens across a JWKS refresh only while their key is unchanged).
bool same_key(const Jwk& a, const Jwk& b);

// base64url without padding (RFC 7515 section 2); decode rejects padding, whitespace and
// non-alphabet characters, and non-canonical trailing bits.
std::string base64url_encode(std::string_view bytes);
fhir::Result<std::string> base64url_decode(std::string_view text);

}  // namespace gw::auth
