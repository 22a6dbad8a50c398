// SPDX-License-Identifier: Apache-2.0
// Bearer JWT validation (RFC 7519 over RFC 7515 compact JWS) in the order jwt.h documents, with
// a bounded cache of verified tokens keyed by the token's SHA-256.
#include "gateway/auth/jwt.h"

#include <algorithm>
#include <atomic>
#include <limits>
#include <map>
#include <optional>

#include "fhir/json.h"
#include "fhir/structure_check.h"
#include "gateway/auth/jwks.h"
#include "gateway/auth/jwt_sign.h"

namespace gw::auth {

namespace {

constexpr std::size_t kMaxKidBytes = 128;
constexpr std::size_t kMaxJtiBytes = 256;

fhir::Issue unauthenticated(std::string diagnostics) {
  return fhir::Issue::make(fhir::ErrorCode::unauthenticated, std::move(diagnostics));
}

std::int64_t saturating_add(std::int64_t a, std::int64_t b) {
  if (b > 0 && a > std::numeric_limits<std::int64_t>::max() - b) return std::numeric_limits<std::int64_t>::max();
  if (b < 0 && a < std::numeric_limits<std::int64_t>::min() - b) return std::numeric_limits<std::int64_t>::min();
  return a + b;
}

std::string ascii_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

// RFC 7515 section 4.1.9: typ is compared case-insensitively and "application/" may be omitted.
std::string normalised_typ(std::string_view typ) {
  std::string t = ascii_lower(typ);
  constexpr std::string_view kPrefix = "application/";
  if (t.size() > kPrefix.size() && t.compare(0, kPrefix.size(), kPrefix) == 0) t.erase(0, kPrefix.size());
  return t;
}

bool valid_kid(std::string_view kid) {
  if (kid.empty() || kid.size() > kMaxKidBytes) return false;
  return std::all_of(kid.begin(), kid.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-';
  });
}

bool has_control_characters(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7F;
  });
}

// An optional string claim: absent -> empty; present but not a string -> error.
std::optional<fhir::Issue> string_claim(const fhir::Json& claims, std::string_view name, std::string& out) {
  if (name.empty()) return std::nullopt;
  const fhir::Json* v = claims.find(name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_string()) return unauthenticated("token claim '" + std::string(name) + "' must be a string");
  if (has_control_characters(v->text()))
    return unauthenticated("token claim '" + std::string(name) + "' contains control characters");
  out = v->text();
  return std::nullopt;
}

// An optional NumericDate (RFC 7519 section 2) that we require to be a non-negative integer.
std::optional<fhir::Issue> time_claim(const fhir::Json& claims, std::string_view name, std::string_view what,
                                      std::int64_t& out) {
  const fhir::Json* v = claims.find(name);
  if (v == nullptr) return std::nullopt;
  std::optional<std::int64_t> n = v->is_number() ? v->as_int64() : std::nullopt;
  if (!n) {
    std::string msg = "token ";
    msg.append(what);
    msg.append(" (");
    msg.append(name);
    msg.append(") must be an integer number of seconds since 1970");
    return unauthenticated(std::move(msg));
  }
  if (*n < 0 || (name == "exp" && *n == 0)) {
    std::string msg = "token ";
    msg.append(what);
    msg.append(" (");
    msg.append(name);
    msg.append(") is out of range");
    return unauthenticated(std::move(msg));
  }
  out = *n;
  return std::nullopt;
}

struct Parts {
  std::string_view header;
  std::string_view payload;
  std::string_view signature;
};

std::optional<Parts> split_compact(std::string_view token) {
  auto first = token.find('.');
  if (first == std::string_view::npos) return std::nullopt;
  auto second = token.find('.', first + 1);
  if (second == std::string_view::npos || token.find('.', second + 1) != std::string_view::npos) return std::nullopt;
  return Parts{token.substr(0, first), token.substr(first + 1, second - first - 1), token.substr(second + 1)};
}

}  // namespace

struct JwtValidator::Impl {
  struct Entry {
    std::shared_ptr<const VerifiedToken> token;
    Jwk key;  // the key that verified it, to drop the entry when a JWKS refresh changes it
    std::multimap<std::int64_t, std::string>::iterator by_expiry;
  };

  std::mutex mu;
  std::shared_ptr<const KeySet> keys;                  // guarded by mu
  std::uint64_t generation = 0;                        // bumped by set_keys; guarded by mu
  std::unordered_map<std::string, Entry> cache;        // SHA-256(token) -> entry; guarded by mu
  std::multimap<std::int64_t, std::string> by_expiry;  // exp -> cache key; guarded by mu
  std::atomic<std::uint64_t> cache_hits{0};
  std::atomic<std::uint64_t> signature_checks{0};

  void erase(std::unordered_map<std::string, Entry>::iterator it) {
    by_expiry.erase(it->second.by_expiry);
    cache.erase(it);
  }
};

JwtValidator::JwtValidator(JwtConfig config, std::shared_ptr<const KeySet> keys)
    : config_(std::move(config)), impl_(std::make_shared<Impl>()) {
  impl_->keys = std::move(keys);
}

namespace {

// The time rules, applied to fresh and cached tokens alike (so a cached token expires exactly
// when a fresh one would).
std::optional<fhir::Issue> check_times(const VerifiedToken& t, std::int64_t now, const JwtConfig& config) {
  const std::int64_t leeway = config.leeway.count();
  if (t.expires_at > saturating_add(now, saturating_add(config.max_lifetime.count(), leeway)))
    return unauthenticated("token expiry (exp) is too far in the future; tokens may live at most " +
                           std::to_string(config.max_lifetime.count()) + " seconds");
  if (now >= saturating_add(t.expires_at, leeway)) return unauthenticated("token expired; get a new token");
  if (t.not_before > saturating_add(now, leeway)) return unauthenticated("token is not valid yet (nbf)");
  if (t.issued_at > saturating_add(now, leeway)) return unauthenticated("token issued-at time (iat) is in the future");
  return std::nullopt;
}

// Claims after the signature has been verified: JSON, then iss, aud, times, required claims.
fhir::Result<std::shared_ptr<const VerifiedToken>> read_claims(std::string_view payload_b64,
                                                               std::string_view signature_b64,
                                                               const JwtConfig& config, std::string token_sha256) {
  auto payload = base64url_decode(payload_b64);
  if (!payload) return unauthenticated("token claims are not valid base64url");
  fhir::JsonLimits limits;
  limits.max_bytes = config.max_token_bytes;
  limits.max_depth = 16;
  limits.max_members = 256;
  auto parsed = fhir::parse_json(*payload, limits);
  if (!parsed || !parsed->is_object())
    return unauthenticated(
        "token claims are not a valid JSON object (duplicate names and nesting deeper than 16 levels are refused)");
  const fhir::Json& claims = *parsed;
  auto token = std::make_shared<VerifiedToken>();
  token->token_sha256 = std::move(token_sha256);

  const fhir::Json* iss = claims.find("iss");
  if (iss == nullptr) return unauthenticated("token has no issuer (iss)");
  if (!iss->is_string() || iss->text() != config.issuer)
    return unauthenticated("token issuer (iss) is not trusted by this gateway");
  token->issuer = iss->text();

  const fhir::Json* aud = claims.find("aud");
  if (aud == nullptr) return unauthenticated("token has no audience (aud)");
  if (aud->is_string()) {
    token->audience.push_back(aud->text());
  } else if (aud->is_array()) {
    for (const fhir::Json& a : aud->items()) {
      if (!a.is_string()) return unauthenticated("token audience (aud) must be a string or an array of strings");
      token->audience.push_back(a.text());
    }
  } else {
    return unauthenticated("token audience (aud) must be a string or an array of strings");
  }
  bool ours = std::any_of(token->audience.begin(), token->audience.end(), [&](const std::string& a) {
    return std::find(config.audiences.begin(), config.audiences.end(), a) != config.audiences.end();
  });
  if (!ours) return unauthenticated("token audience (aud) does not name this gateway");

  if (claims.find("exp") == nullptr) return unauthenticated("token has no expiry (exp)");
  if (auto e = time_claim(claims, "exp", "expiry", token->expires_at)) return *e;
  if (auto e = time_claim(claims, "nbf", "not-before time", token->not_before)) return *e;
  if (auto e = time_claim(claims, "iat", "issued-at time", token->issued_at)) return *e;

  const fhir::Json* sub = claims.find("sub");
  if (sub == nullptr || !sub->is_string() || sub->text().empty())
    return unauthenticated("token has no subject (sub); it must be a non-empty string");
  if (auto e = string_claim(claims, "sub", token->subject)) return *e;

  if (auto e = string_claim(claims, config.role_claim, token->role)) return *e;
  if (auto e = string_claim(claims, config.organisation_claim, token->organisation)) return *e;
  if (auto e = string_claim(claims, config.purpose_claim, token->purpose_of_use)) return *e;
  if (auto e = string_claim(claims, config.patient_claim, token->patient)) return *e;
  // A launch context names one Patient by its logical id; anything else could never match one.
  if (!config.patient_claim.empty() && claims.find(config.patient_claim) != nullptr && !fhir::is_valid_id(token->patient))
    return unauthenticated("token claim '" + config.patient_claim +
                           "' must be a Patient id of this gateway: 1 to 64 letters, digits, '-' or '.'");
  if (auto e = string_claim(claims, "fhirUser", token->fhir_user)) return *e;

  // SMART (scope, RFC 8693 section 4.2) or the scp array/string some identity providers send.
  if (claims.find("scope") != nullptr) {
    if (auto e = string_claim(claims, "scope", token->scope)) return *e;
  } else if (const fhir::Json* scp = claims.find("scp"); scp != nullptr) {
    if (scp->is_array()) {
      for (const fhir::Json& s : scp->items()) {
        if (!s.is_string() || has_control_characters(s.text()))
          return unauthenticated("token claim 'scp' must be a string or an array of strings");
        if (!token->scope.empty()) token->scope.push_back(' ');
        token->scope.append(s.text());
      }
    } else if (auto e = string_claim(claims, "scp", token->scope)) {
      return *e;
    }
  }

  if (claims.find("client_id") != nullptr) {
    if (auto e = string_claim(claims, "client_id", token->client_id)) return *e;
  } else if (auto e = string_claim(claims, "azp", token->client_id)) {
    return *e;
  }

  if (auto e = string_claim(claims, "jti", token->token_id)) return *e;
  if (claims.find("jti") != nullptr && (token->token_id.empty() || token->token_id.size() > kMaxJtiBytes))
    return unauthenticated("token id (jti) must be 1 to 256 characters");
  if (token->token_id.empty()) token->token_id = hex_encode(sha256(signature_b64).substr(0, 16));
  return std::shared_ptr<const VerifiedToken>(std::move(token));
}

}  // namespace

fhir::Result<std::shared_ptr<const VerifiedToken>> JwtValidator::validate(std::string_view token,
                                                                          std::int64_t now) const {
  if (token.empty()) return unauthenticated("bearer token is empty");
  if (token.size() > config_.max_token_bytes)
    return unauthenticated("token is larger than " + std::to_string(config_.max_token_bytes) + " bytes");

  const std::string cache_key = config_.cache_entries > 0 ? sha256(token) : std::string();
  std::shared_ptr<const KeySet> keys;
  std::uint64_t generation = 0;
  {
    std::lock_guard lock(impl_->mu);
    if (!cache_key.empty()) {
      if (auto it = impl_->cache.find(cache_key); it != impl_->cache.end()) {
        std::shared_ptr<const VerifiedToken> hit = it->second.token;
        if (auto e = check_times(*hit, now, config_)) {
          if (now >= saturating_add(hit->expires_at, config_.leeway.count())) impl_->erase(it);
          return *e;
        }
        impl_->cache_hits.fetch_add(1, std::memory_order_relaxed);
        return hit;
      }
    }
    keys = impl_->keys;
    generation = impl_->generation;
  }

  auto parts = split_compact(token);
  if (!parts) return unauthenticated("token is not a compact JWS: expected three base64url parts separated by '.'");

  // --- header ---
  auto header_bytes = base64url_decode(parts->header);
  if (!header_bytes) return unauthenticated("token header is not valid base64url");
  fhir::JsonLimits header_limits;
  header_limits.max_bytes = 4096;
  header_limits.max_depth = 8;
  header_limits.max_members = 64;
  auto header_json = fhir::parse_json(*header_bytes, header_limits);
  if (!header_json || !header_json->is_object())
    return unauthenticated("token header is not a valid JSON object (duplicate names are refused)");
  const fhir::Json& header = *header_json;

  if (!config_.required_typ.empty()) {
    const fhir::Json* typ = header.find("typ");
    if (typ == nullptr || !typ->is_string() || normalised_typ(typ->text()) != normalised_typ(config_.required_typ))
      return unauthenticated("token type (typ) must be " + config_.required_typ);
  }

  const fhir::Json* alg_member = header.find("alg");
  if (alg_member == nullptr || !alg_member->is_string())
    return unauthenticated("token header names no algorithm (alg)");
  JwsAlgorithm alg = JwsAlgorithm::rs256;
  if (alg_member->text() == "RS256") {
    alg = JwsAlgorithm::rs256;
  } else if (alg_member->text() == "ES256") {
    alg = JwsAlgorithm::es256;
  } else if (ascii_lower(alg_member->text()) == "none") {
    return unauthenticated("unsigned tokens (alg none) are not accepted; the token alg must be RS256 or ES256");
  } else {
    return unauthenticated("token algorithm (alg) must be RS256 or ES256");
  }

  // RFC 7515 sections 4.1.2-4.1.8: we never take keys, or places to fetch them, from the token.
  for (std::string_view m : {"jku", "jwk", "x5u", "x5c", "x5t", "x5t#S256"})
    if (header.find(m) != nullptr)
      return unauthenticated("token header member '" + std::string(m) +
                             "' is not accepted; keys come only from the gateway's trusted key set");
  // RFC 7515 section 4.1.11: a recipient must reject a token whose crit names an extension it
  // does not understand; we understand none.
  if (header.find("crit") != nullptr)
    return unauthenticated("token header lists critical extensions (crit) that this gateway does not support");

  const fhir::Json* kid_member = header.find("kid");
  if (kid_member == nullptr) return unauthenticated("token header names no key id (kid)");
  if (!kid_member->is_string() || !valid_kid(kid_member->text()))
    return unauthenticated("token key id (kid) is invalid: it must be 1 to 128 characters from A-Z a-z 0-9 . _ -");
  const Jwk* key = keys ? keys->find(kid_member->text()) : nullptr;
  if (key == nullptr) return unauthenticated("token key id (kid) is not in the gateway's trusted key set");
  if (key->alg != alg)
    return unauthenticated("token algorithm (alg) does not match its key, which is pinned to " +
                           std::string(algorithm_name(key->alg)));

  // --- signature ---
  auto signature = base64url_decode(parts->signature);
  if (!signature) return unauthenticated("token signature is not valid base64url");
  if (signature->empty()) return unauthenticated("token has no signature");
  impl_->signature_checks.fetch_add(1, std::memory_order_relaxed);
  const std::string_view signing_input = token.substr(0, parts->header.size() + 1 + parts->payload.size());
  if (!verify_signature(*key, signing_input, *signature)) return unauthenticated("token signature is invalid");

  // --- claims ---
  auto verified = read_claims(parts->payload, parts->signature, config_, cache_key);
  if (!verified) return verified;
  if (auto e = check_times(**verified, now, config_)) return *e;

  if (!cache_key.empty()) {
    std::lock_guard lock(impl_->mu);
    // A set_keys() while we verified may have removed this key: do not cache under it.
    if (impl_->generation == generation && impl_->cache.find(cache_key) == impl_->cache.end()) {
      const std::int64_t leeway = config_.leeway.count();
      // Expired entries go first, then the one closest to expiry (the least useful to keep).
      while (!impl_->by_expiry.empty() && now >= saturating_add(impl_->by_expiry.begin()->first, leeway))
        impl_->erase(impl_->cache.find(impl_->by_expiry.begin()->second));
      if (impl_->cache.size() >= config_.cache_entries)
        impl_->erase(impl_->cache.find(impl_->by_expiry.begin()->second));
      auto pos = impl_->by_expiry.emplace((*verified)->expires_at, cache_key);
      impl_->cache.emplace(cache_key, Impl::Entry{*verified, *key, pos});
    }
  }
  return verified;
}

void JwtValidator::set_keys(std::shared_ptr<const KeySet> keys) {
  std::lock_guard lock(impl_->mu);
  impl_->keys = std::move(keys);
  ++impl_->generation;
  // Keep a cached token only while the same kid still names the same key material.
  for (auto it = impl_->cache.begin(); it != impl_->cache.end();) {
    const Jwk* now_key = impl_->keys ? impl_->keys->find(it->second.key.kid) : nullptr;
    auto next = std::next(it);
    if (now_key == nullptr || !same_key(*now_key, it->second.key)) impl_->erase(it);
    it = next;
  }
}

std::shared_ptr<const KeySet> JwtValidator::keys() const {
  std::lock_guard lock(impl_->mu);
  return impl_->keys;
}

std::uint64_t JwtValidator::cache_hits() const { return impl_->cache_hits.load(std::memory_order_relaxed); }
std::uint64_t JwtValidator::signature_checks() const { return impl_->signature_checks.load(std::memory_order_relaxed); }

}  // namespace gw::auth
