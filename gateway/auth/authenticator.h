// SPDX-License-Identifier: Apache-2.0
// Step 2 of the request pipeline: who is asking (issue #5). Runs before any query or body is
// decoded. A request authenticates with exactly one bearer token in one Authorization header,
// or, for source systems, with a verified client certificate whose subject is mapped in
// [[source_systems]]. The result is a Principal the policy and the audit trail use.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <filesystem>
#include <unordered_map>
#include <variant>

#include "fhir/result.h"
#include "gateway/auth/jwt.h"
#include "gateway/auth/policy.h"
#include "gateway/config/config.h"

namespace gw::http {
struct Request;
}

namespace gw::auth {

// True for a request parameter name (percent-decoded, any case) that would carry a bearer
// token: refused in the query string and in a form body alike, so that no credential sits in a
// URL, a proxy's log or the audit trail. Tokens travel only in the Authorization header.
bool is_token_parameter(std::string_view name);

// The WWW-Authenticate value for a 403 that more scope would lift (RFC 6750 3.1
// insufficient_scope, naming the scope to ask for): `p`'s role allows `interaction` on `type`
// but its token's scopes do not. Empty when the role refuses too (or there are no token
// scopes), so a client is never sent to re-authorise for scopes that would not help.
std::string insufficient_scope_challenge(const Policy& policy, const Principal& p, std::string_view type,
                                         Interaction interaction);

// Why a request was refused, shaped for the HTTP answer: 401 with WWW-Authenticate, or 429
// with Retry-After.
struct AuthFailure {
  fhir::Issue issue;
  std::string www_authenticate;  // for 401
  std::chrono::seconds retry_after{0};  // for 429
  // For 429 only: the caller whose credentials validated but who is over the limit, so that
  // the audit record names who was refused (null for 401).
  std::shared_ptr<const Principal> principal;
};

class Authenticator {
 public:
  // Loads the JWKS file (when auth is enabled). Throws config::ConfigError on a bad file.
  Authenticator(const config::AuthConfig& config, const std::vector<config::SourceSystemConfig>& sources);

  // Thread-safe. `now` is epoch seconds.
  std::variant<std::shared_ptr<const Principal>, AuthFailure> authenticate(const http::Request& req,
                                                                           std::int64_t now);

  // Re-reads the JWKS file when its modification time changed; keeps the old keys on error
  // (logged). Called on a timer by main.
  void refresh_keys();

  bool enabled() const { return config_.enabled; }
  const JwtValidator* validator() const { return validator_.get(); }

 private:
  AuthFailure unauthenticated(std::string why, bool invalid_token) const;
  std::shared_ptr<const Principal> principal_for(const std::shared_ptr<const VerifiedToken>& token,
                                                 fhir::Result<ScopeSet> scopes) const;

  config::AuthConfig config_;
  std::unordered_map<std::string, std::string> certificate_sources_;  // subject -> ODS code
  std::unique_ptr<JwtValidator> validator_;
  std::shared_ptr<const Principal> development_principal_;
  RateLimiter per_client_;
  RateLimiter per_user_;
  std::filesystem::file_time_type jwks_mtime_{};
  std::mutex refresh_mu_;
  // Principals built from verified tokens, keyed by the SHA-256 of the token text, so scopes
  // are parsed once per token and only that same token finds its principal. Bounded; cleared
  // when full.
  std::mutex principals_mu_;
  std::unordered_map<std::string, std::shared_ptr<const Principal>> principals_;
};

}  // namespace gw::auth
