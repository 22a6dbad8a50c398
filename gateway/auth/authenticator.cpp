// SPDX-License-Identifier: Apache-2.0
#include "gateway/auth/authenticator.h"

#include <algorithm>

#include "fhir/query_string.h"
#include "gateway/auth/jwks.h"
#include "gateway/auth/jwt_sign.h"
#include "gateway/http/request.h"
#include "gateway/observe/log.h"

namespace gw::auth {

namespace {

constexpr std::string_view kRealm = "Bearer realm=\"fhir-gateway\"";
constexpr std::size_t kMaxPrincipals = 10000;

bool iequals_prefix(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(s[i])) != std::tolower(static_cast<unsigned char>(prefix[i])))
      return false;
  return true;
}

// RFC 6750 2.3 tokens in the URI are refused outright. This scans the raw query for the
// parameter names only, each decoded as the query parser and the audit's redaction decode it
// (so %61ccess_token is access_token here too); no value is decoded before authentication.
// A name that does not decode is compared as sent: the query parser refuses it later.
bool query_carries_token(std::string_view raw_query) {
  std::size_t pos = 0;
  while (pos <= raw_query.size()) {
    std::size_t amp = raw_query.find('&', pos);
    std::string_view part = raw_query.substr(pos, amp == std::string_view::npos ? std::string_view::npos : amp - pos);
    std::string_view raw_name = part.substr(0, part.find('='));
    auto name = fhir::percent_decode(raw_name);
    if (is_token_parameter(name.ok() ? std::string_view(*name) : raw_name)) return true;
    if (amp == std::string_view::npos) break;
    pos = amp + 1;
  }
  return false;
}

// An IdP's set may publish keys that are not for token signatures (RFC 7517 section 4.2);
// KeySet skips them, and the operator sees which and why.
void log_skipped(const KeySet& keys) {
  for (const SkippedJwk& k : keys.skipped())
    observe::log(observe::Level::info, "JWKS key skipped", {{"kid", k.kid}, {"reason", k.reason}});
}

std::shared_ptr<const KeySet> load_keys(const std::string& path) {
  auto keys = KeySet::load_file(path);
  if (!keys) throw config::ConfigError(path, "auth.jwks_file", keys.issue().diagnostics);
  log_skipped(**keys);
  return *keys;
}

}  // namespace

bool is_token_parameter(std::string_view name) {
  // RFC 6750 2.3's access_token, and the bare token some clients send instead (no FHIR search
  // parameter has that name).
  for (std::string_view t : {"access_token", "token"})
    if (name.size() == t.size() && iequals_prefix(name, t)) return true;
  return false;
}

std::string insufficient_scope_challenge(const Policy& policy, const Principal& p, std::string_view type,
                                         Interaction interaction) {
  if (!p.scopes_from_token) return {};
  Principal role_only = p;
  role_only.scopes_from_token = false;
  if (!policy.authorise_type(role_only, type, interaction).allowed) return {};
  // The scope in the context the token already uses: system/ for a backend service, patient/
  // for a token holding only patient/ scopes (a patient-context launch), else user/.
  ScopeContext context = ScopeContext::user;
  if (p.kind == Principal::Kind::system) {
    context = ScopeContext::system;
  } else if (!p.scopes.resource_scopes.empty() &&
             std::all_of(p.scopes.resource_scopes.begin(), p.scopes.resource_scopes.end(),
                         [](const ResourceScope& s) { return s.context == ScopeContext::patient; })) {
    context = ScopeContext::patient;
  }
  // Never name a scope the token already holds: a patient/ token refused for want of a
  // patient claim lacks launch context, not scope, and a SMART client asking again for the
  // same scope would loop. The 403's diagnostics say what is missing.
  if (p.scopes.permissions(context, type) & permission_for(interaction)) return {};
  std::string challenge(kRealm);
  challenge.append(", error=\"insufficient_scope\", scope=\"").append(context_name(context)).append("/");
  challenge.append(type).append(".").append(permissions_text(permission_for(interaction))).append("\"");
  return challenge;
}

Authenticator::Authenticator(const config::AuthConfig& config, const std::vector<config::SourceSystemConfig>& sources)
    : config_(config),
      per_client_(config.per_client.per_second, config.per_client.burst),
      per_user_(config.per_user.per_second, config.per_user.burst) {
  for (const auto& s : sources)
    if (!s.client_certificate_subject.empty()) certificate_sources_[s.client_certificate_subject] = s.ods_code;
  if (config_.enabled) {
    validator_ = std::make_unique<JwtValidator>(config_.jwt, load_keys(config_.jwks_file));
    std::error_code ec;
    jwks_mtime_ = std::filesystem::last_write_time(config_.jwks_file, ec);
  } else {
    auto p = std::make_shared<Principal>();
    p->kind = Principal::Kind::user;
    p->subject = "development-user";
    p->role_claim = config_.development_role;
    p->organisation = config_.development_organisation;
    p->client_id = "development";
    p->token_id = "development";
    p->scopes_from_token = false;
    development_principal_ = std::move(p);
  }
}

void Authenticator::refresh_keys() {
  if (!validator_) return;
  std::lock_guard lock(refresh_mu_);
  std::error_code ec;
  auto mtime = std::filesystem::last_write_time(config_.jwks_file, ec);
  if (ec || mtime == jwks_mtime_) return;
  auto keys = KeySet::load_file(config_.jwks_file);
  if (!keys) {
    observe::log(observe::Level::error, "JWKS reload failed; keeping the previous keys",
                 {{"error", keys.issue().diagnostics}});
    return;
  }
  log_skipped(**keys);
  validator_->set_keys(*keys);
  jwks_mtime_ = mtime;
  observe::log(observe::Level::info, "JWKS reloaded", {{"keys", static_cast<std::int64_t>((*keys)->keys().size())}});
}

AuthFailure Authenticator::unauthenticated(std::string why, bool invalid_token) const {
  AuthFailure f{fhir::Issue::make(fhir::ErrorCode::unauthenticated, std::move(why)), {}, {}, nullptr};
  // RFC 6750 3.1: no error code when the request simply had no credentials.
  f.www_authenticate = invalid_token ? std::string(kRealm) + ", error=\"invalid_token\"" : std::string(kRealm);
  return f;
}

std::shared_ptr<const Principal> Authenticator::principal_for(const std::shared_ptr<const VerifiedToken>& token,
                                                              fhir::Result<ScopeSet> scopes) const {
  auto p = std::make_shared<Principal>();
  p->subject = token->subject;
  p->role_claim = token->role;
  p->organisation = token->organisation;
  p->client_id = token->client_id;
  p->token_id = token->token_id;
  p->purpose_of_use = token->purpose_of_use;
  p->patient = token->patient;
  p->scopes = std::move(*scopes);
  p->scopes_from_token = true;
  // A token whose only resource scopes are system/ ones is a backend service.
  bool any = false, all_system = true;
  for (const auto& s : p->scopes.resource_scopes) {
    any = true;
    all_system = all_system && s.context == ScopeContext::system;
  }
  p->kind = (any && all_system) ? Principal::Kind::system : Principal::Kind::user;
  return p;
}

std::variant<std::shared_ptr<const Principal>, AuthFailure> Authenticator::authenticate(const http::Request& req,
                                                                                         std::int64_t now) {
  if (!config_.enabled) return development_principal_;

  const std::size_t headers = req.header_count("authorization");
  if (headers > 1) return unauthenticated("send exactly one Authorization header", true);
  if (query_carries_token(req.raw_query))
    return unauthenticated("access tokens are not accepted in the query string; send Authorization: Bearer", true);

  std::shared_ptr<const Principal> principal;
  if (headers == 0) {
    // Source systems may authenticate by client certificate alone.
    auto it = certificate_sources_.find(req.client_certificate_subject);
    if (req.client_certificate_subject.empty() || it == certificate_sources_.end())
      return unauthenticated("authentication required: send Authorization: Bearer <token>", false);
    auto p = std::make_shared<Principal>();
    p->kind = Principal::Kind::system;
    p->subject = it->second;
    p->organisation = it->second;
    p->role_claim = "system";
    p->client_id = "certificate:" + it->second;
    p->token_id = "certificate";
    p->scopes_from_token = false;
    principal = std::move(p);
  } else {
    std::string_view value = req.header("authorization");
    // RFC 6750 3.1: a request that tried another scheme (Basic, Digest, ...) carries no bearer
    // token, so its challenge has no error code; a client library reads invalid_token as "get
    // a new token", which would not help.
    if (!iequals_prefix(value, "Bearer") || (value.size() > 6 && value[6] != ' '))
      return unauthenticated("the Authorization header must use the Bearer scheme", false);
    std::string_view token = value.substr(6);
    while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
    while (!token.empty() && token.back() == ' ') token.remove_suffix(1);
    if (token.empty()) return unauthenticated("the bearer token is empty", true);
    auto verified = validator_->validate(token, now);
    if (!verified) return unauthenticated(verified.issue().diagnostics, true);
    const auto& t = *verified;
    // Keyed on the whole token: jti, sub and exp are chosen by the issuer and may repeat
    // across tokens with other roles, organisations or scopes, and a principal must come from
    // the claims of the token actually presented.
    std::string key = t->token_sha256.empty() ? sha256(token) : t->token_sha256;
    {
      std::lock_guard lock(principals_mu_);
      auto it = principals_.find(key);
      if (it != principals_.end()) principal = it->second;
    }
    if (!principal) {
      auto scopes = parse_scopes(t->scope);
      if (!scopes) return unauthenticated("token scope: " + scopes.issue().diagnostics, true);
      principal = principal_for(t, std::move(scopes));
      std::lock_guard lock(principals_mu_);
      if (principals_.size() >= kMaxPrincipals) principals_.clear();
      principals_.emplace(std::move(key), principal);
    }
  }

  // Rate limits (issue #5 item 8): per client, then per user. A token naming no client
  // (neither client_id nor azp) draws on its user's bucket only: one bucket shared by every
  // such token would let one user's burst lock all the others out.
  const auto steady = std::chrono::steady_clock::now();
  std::chrono::seconds retry{0};
  if ((!principal->client_id.empty() && !per_client_.allow("c:" + principal->client_id, steady, retry)) ||
      !per_user_.allow("u:" + principal->subject, steady, retry)) {
    AuthFailure f{fhir::Issue::make(fhir::ErrorCode::too_many_requests,
                                    "rate limit exceeded; retry after " + std::to_string(retry.count()) + " s"),
                  {}, retry, principal};
    return f;
  }
  return principal;
}

}  // namespace gw::auth
