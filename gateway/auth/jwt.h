// SPDX-License-Identifier: Apache-2.0
// Bearer JWT validation (issue #5 item 1) over OpenSSL EVP, no JOSE library. The accepted
// algorithm is pinned per key by our own code (the JWKS says which key, never which algorithm
// the token may choose): RS256 for RSA keys (>= 2048 bits), ES256 for EC P-256 keys.
//
// Order of checks, each failure an Issue with code `unauthenticated` and a diagnostics text
// a client developer can act on (never the token itself):
//   size cap -> three base64url parts -> header JSON (strict: no duplicate keys, depth cap)
//   -> typ (when configured) -> alg is RS256/ES256 -> no jku/x5u/jwk/x5c/crit we do not know
//   -> kid present and selects exactly one key, whose pinned alg equals the header alg
//   -> signature (ES256: raw r||s, 64 bytes, r and s in [1, n-1])
//   -> claims JSON (strict) -> iss, aud, exp, nbf, iat (integers; leeway) -> required claims.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "fhir/result.h"

namespace gw::auth {

class KeySet;  // gateway/auth/jwks.h

// What the gateway keeps from a verified token. No token material is kept: token_id is the
// `jti` claim, or when absent a SHA-256 (hex, first 16 bytes) of the signature part, so the
// audit can tell tokens apart without storing them.
struct VerifiedToken {
  std::string issuer;
  std::string subject;
  std::vector<std::string> audience;
  std::string token_id;
  std::string client_id;        // client_id, else azp claim
  std::string role;             // value of the configured role claim (e.g. selected_roleid)
  std::string organisation;     // value of the configured organisation claim (ODS code)
  std::string scope;            // space-separated SMART scopes as sent (scope or scp claim)
  std::string purpose_of_use;   // value of the configured purpose claim, if any
  std::string patient;          // value of the configured patient claim (SMART launch context), if any
  std::string fhir_user;        // fhirUser claim, if any
  std::int64_t expires_at = 0;  // exp, epoch seconds
  std::int64_t issued_at = 0;   // iat, 0 when absent
  std::int64_t not_before = 0;  // nbf, 0 when absent
  // SHA-256 of the whole token (32 bytes) when the validator's cache is on (its key), so that
  // a cache of what is made from the token need not hash it again; else empty.
  std::string token_sha256;
};

struct JwtConfig {
  std::string issuer;                  // required: exact match with `iss`
  std::vector<std::string> audiences;  // required: `aud` (string or array) must hold one
  std::chrono::seconds leeway{30};     // applied to exp, nbf and iat
  std::chrono::seconds max_lifetime{24 * 3600};  // exp beyond now + this is refused
  std::string required_typ;            // e.g. "JWT" or "at+jwt"; empty = typ not checked
  std::size_t max_token_bytes = 8192;
  std::string role_claim = "selected_roleid";
  std::string organisation_claim = "organisation";  // ODS code of the user's organisation
  std::string purpose_claim = "purpose_of_use";
  // SMART launch context: the Patient logical id (of this gateway) that patient/ scopes are
  // bound to. Break-glass has no claim: it is asked for per request, in headers.
  std::string patient_claim = "patient";
  std::size_t cache_entries = 10000;   // verified-token cache size (0 = no cache)
};

class JwtValidator {
 public:
  JwtValidator(JwtConfig config, std::shared_ptr<const KeySet> keys);

  // Validates a compact JWS (the bearer token text, without "Bearer "). `now` is epoch
  // seconds. Thread-safe. A token verified before is served from the cache until its exp
  // (plus nothing: the leeway is not extended by caching) without a signature check.
  fhir::Result<std::shared_ptr<const VerifiedToken>> validate(std::string_view token, std::int64_t now) const;

  // Replaces the key set (JWKS refresh). Cached tokens signed by a key no longer present, or
  // whose kid now names different key material, are dropped; the rest stay cached. Thread-safe.
  void set_keys(std::shared_ptr<const KeySet> keys);
  std::shared_ptr<const KeySet> keys() const;

  const JwtConfig& config() const { return config_; }

  // Counters for /metrics.
  std::uint64_t cache_hits() const;
  std::uint64_t signature_checks() const;

 private:
  struct Impl;
  JwtConfig config_;
  std::shared_ptr<Impl> impl_;
};

}  // namespace gw::auth
