// SPDX-License-Identifier: Apache-2.0
// JSON Web Key Sets (RFC 7517) for token validation: RSA (kty RSA, n, e) and EC P-256 (kty EC,
// crv P-256, x, y) public keys, each selected by `kid`. The algorithm is pinned per key here:
// RSA -> RS256, EC P-256 -> ES256. Keys for something else (use "enc", key_ops without
// "verify", another alg, curve or key type OKP) are skipped (RFC 7517 section 4.2); a JWK
// whose `alg` contradicts its key type, or which carries private members (d, p, q, ...), is
// refused at load time with a clear error.
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

// A key of the set that is not for verifying our tokens, and why (for an info line).
struct SkippedJwk {
  std::size_t index = 0;  // position in "keys"
  std::string kid;
  std::string reason;
};

class KeySet {
 public:
  // Parses a JWKS document ({"keys":[...]}). Duplicate kids among the usable keys, unknown key
  // types, malformed members, weak RSA keys (< 2048 bits) and points not on the curve are
  // errors naming the offending key; so is a set left with no usable key, which names each
  // skipped key and why.
  static fhir::Result<std::shared_ptr<const KeySet>> parse(std::string_view jwks_json);
  static fhir::Result<std::shared_ptr<const KeySet>> load_file(const std::string& path);

  const Jwk* find(std::string_view kid) const;  // exact match, no fallback; usable keys only
  const std::vector<Jwk>& keys() const { return keys_; }
  const std::vector<SkippedJwk>& skipped() const { return skipped_; }

 private:
  std::vector<Jwk> keys_;
  std::vector<SkippedJwk> skipped_;
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
