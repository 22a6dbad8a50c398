// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: bearer-token handling (gateway/auth). The first byte picks what the rest is:
//   0: a whole compact JWS for JwtValidator::validate: size cap, base64url, header JSON, typ,
//      alg, kid, up to the signature check (a fuzzed token cannot carry a valid signature);
//   1: a token header and claims ("<header JSON>\n<claims JSON>", or claims alone under the
//      usual header), signed here with a key generated at start-up (never stored) that the
//      validator trusts, so that header checks and the claims parser (iss, aud, times,
//      string claims, scope/scp, jti) run on verified tokens;
//   2: a SMART scope string for parse_scopes;
//   3: a break-glass request ("<reason code>\n<justification>") for BreakGlassRegistry::grant.
// Properties: never crashes; every refusal is `unauthenticated` with a diagnostic that never
// echoes the token; validation is consistent (a cached validator, asked twice, and one without
// a cache agree on the outcome and on every claim kept); a verified token's claims meet the
// configuration (issuer, audience, subject, token id) and its scopes parse as they would
// from scope text; a parsed scope set, written back as scope text, parses to the same set;
// base64url decoding accepts only what encodes back to itself; a break-glass grant is active
// for its subject and patient until it expires, and not after.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fhir/query_string.h"
#include "gateway/auth/jwks.h"
#include "gateway/auth/jwt.h"
#include "gateway/auth/jwt_sign.h"
#include "gateway/auth/policy.h"
#include "gateway/auth/scopes.h"

namespace {

using namespace gw::auth;

constexpr std::int64_t kNow = 1800000000;  // fixed, so that a corpus replays the same way
constexpr std::string_view kKid = "fuzz-es256";
constexpr std::string_view kDefaultHeader = R"({"alg":"ES256","typ":"JWT","kid":"fuzz-es256"})";

void require(bool ok) {
  if (!ok) __builtin_trap();
}

struct Fixture {
  std::optional<SigningKey> key;
  std::unique_ptr<JwtValidator> cached;
  std::unique_ptr<JwtValidator> uncached;
  std::optional<Policy> policy;
  BreakGlassRegistry break_glass{64};

  Fixture() {
    auto k = SigningKey::generate(JwsAlgorithm::es256);
    require(k.ok());
    key.emplace(std::move(k).value());
    auto keys = KeySet::parse(key->jwks_json(kKid));
    require(keys.ok());
    JwtConfig config;
    config.issuer = "https://auth.example.nhs.uk";
    config.audiences = {"https://gateway.example.nhs.uk"};
    config.cache_entries = 64;
    cached = std::make_unique<JwtValidator>(config, *keys);
    config.cache_entries = 0;
    uncached = std::make_unique<JwtValidator>(config, *keys);
    auto p = Policy::make(default_policy());
    require(p.ok());
    policy.emplace(std::move(p).value());
  }
};

Fixture& fixture() {
  static Fixture f;
  return f;
}

// A refusal: unauthenticated, with a text, never the token itself. (Only a token of JWS shape
// is looked for: libFuzzer readily offers pieces of the diagnostic texts as tokens.)
void check_refusal(const fhir::Issue& issue, std::string_view token) {
  require(issue.code == fhir::ErrorCode::unauthenticated && !issue.diagnostics.empty());
  const std::size_t first_dot = token.find('.');
  const bool jws_shaped = first_dot >= 8 && first_dot != token.npos && token.find('.', first_dot + 1) != token.npos;
  if (jws_shaped) require(issue.diagnostics.find(token) == std::string::npos);
}

bool same_claims(const VerifiedToken& a, const VerifiedToken& b) {
  return a.issuer == b.issuer && a.subject == b.subject && a.audience == b.audience && a.token_id == b.token_id &&
         a.client_id == b.client_id && a.role == b.role && a.organisation == b.organisation && a.scope == b.scope &&
         a.purpose_of_use == b.purpose_of_use && a.patient == b.patient && a.fhir_user == b.fhir_user &&
         a.expires_at == b.expires_at && a.issued_at == b.issued_at && a.not_before == b.not_before;
}

// Each part a base64url decoder accepts encodes back to the same text (no padding, no
// non-canonical trailing bits); every byte string survives encode -> decode.
void check_base64url(std::string_view token) {
  std::size_t start = 0;
  for (int part = 0; part < 4 && start <= token.size(); ++part) {
    std::size_t end = token.find('.', start);
    if (end == std::string_view::npos) end = token.size();
    const std::string_view text = token.substr(start, end - start);
    if (auto decoded = base64url_decode(text)) require(base64url_encode(*decoded) == text);
    start = end + 1;
  }
  auto back = base64url_decode(base64url_encode(token));
  require(back.ok() && *back == token);
}

std::string scope_text(const ScopeSet& set) {
  std::string out;
  for (const std::string& o : set.other) out.append(out.empty() ? "" : " ").append(o);
  for (const ResourceScope& s : set.resource_scopes) {
    out.append(out.empty() ? "" : " ").append(context_name(s.context)).append("/").append(s.resource_type);
    out.append(".").append(permissions_text(s.permissions));
    for (std::size_t i = 0; i < s.constraints.size(); ++i) {
      out.append(i == 0 ? "?" : "&").append(fhir::percent_encode(s.constraints[i].first));
      out.append("=").append(fhir::percent_encode(s.constraints[i].second));
    }
  }
  return out;
}

bool same_scopes(const ScopeSet& a, const ScopeSet& b) {
  if (a.other != b.other || a.resource_scopes.size() != b.resource_scopes.size()) return false;
  for (std::size_t i = 0; i < a.resource_scopes.size(); ++i) {
    const ResourceScope& x = a.resource_scopes[i];
    const ResourceScope& y = b.resource_scopes[i];
    if (x.context != y.context || x.resource_type != y.resource_type || x.permissions != y.permissions ||
        x.constraints != y.constraints)
      return false;
  }
  return true;
}

void check_scopes(std::string_view text) {
  auto parsed = parse_scopes(text);
  if (!parsed) {
    require(parsed.issue().code == fhir::ErrorCode::invalid_value && !parsed.issue().diagnostics.empty());
    return;
  }
  require(!parsed->resource_scopes.empty() || !parsed->other.empty() || text.find_first_not_of(' ') == text.npos);
  for (const ResourceScope& s : parsed->resource_scopes) {
    require(s.permissions != 0 && (s.permissions & ~kAllPermissions) == 0);
    const std::string_view type = s.resource_type == "*" ? std::string_view("Observation") : s.resource_type;
    // An unconstrained scope grants its permissions; a constrained one grants a search that
    // carries exactly its constraints.
    if (s.constraints.empty()) require((parsed->permissions(s.context, type) & s.permissions) == s.permissions);
    if (s.permissions & kSearch) require(parsed->allows_search(s.context, type, s.constraints));
  }
  const std::string written = scope_text(*parsed);
  // Percent-encoding may take a constrained scope over the 4096-byte limit of scope text.
  if (written.size() > 4096) return;
  auto again = parse_scopes(written);
  require(again.ok() && same_scopes(*parsed, *again));
}

void check_verified(const VerifiedToken& t, const JwtConfig& config) {
  require(t.issuer == config.issuer && !t.subject.empty());
  bool ours = false;
  for (const std::string& a : t.audience)
    for (const std::string& c : config.audiences) ours = ours || a == c;
  require(ours);
  require(!t.token_id.empty() && t.token_id.size() <= 256);
  require(t.expires_at > 0 && kNow < t.expires_at + config.leeway.count());
  // The scope claim is text for the same parser a client's scope string goes through.
  check_scopes(t.scope);
  // What the policy makes of the claims: no crash whatever they hold.
  Principal p;
  p.subject = t.subject;
  p.role_claim = t.role;
  p.organisation = t.organisation;
  p.purpose_of_use = t.purpose_of_use;
  p.patient = t.patient;
  if (auto scopes = parse_scopes(t.scope)) p.scopes = std::move(scopes).value();
  const Policy& policy = *fixture().policy;
  (void)policy.emergency_basis(p);
  for (Interaction i : {Interaction::read, Interaction::search, Interaction::create})
    (void)policy.authorise_type(p, "Observation", i);
}

void check_token(std::string_view token) {
  Fixture& f = fixture();
  auto first = f.cached->validate(token, kNow);
  auto second = f.cached->validate(token, kNow);  // a cache hit when the first was verified
  auto plain = f.uncached->validate(token, kNow);
  require(first.ok() == second.ok() && first.ok() == plain.ok());
  if (!first) {
    check_refusal(first.issue(), token);
    check_refusal(plain.issue(), token);
    require(first.issue().diagnostics == plain.issue().diagnostics);
    return;
  }
  require(same_claims(**first, **second) && same_claims(**first, **plain));
  check_verified(**first, f.cached->config());
}

void check_signed(std::string_view input) {
  std::string_view header = kDefaultHeader;
  std::string_view claims = input;
  if (const std::size_t nl = input.find('\n'); nl != std::string_view::npos) {
    header = input.substr(0, nl);
    claims = input.substr(nl + 1);
  }
  auto token = sign_compact(*fixture().key, header, claims);
  require(token.ok());
  check_token(*token);
}

void check_break_glass(std::string_view input) {
  const std::size_t nl = input.find('\n');
  const std::string reason(input.substr(0, nl));
  const std::string justification(nl == std::string_view::npos ? std::string_view() : input.substr(nl + 1));
  Fixture& f = fixture();
  Principal p;
  p.subject = "fuzz-user";
  p.role_claim = "clinician";
  auto g = f.break_glass.grant(*f.policy, p, "patient-1", reason, justification, kNow);
  if (!g) {
    require(!g.issue().diagnostics.empty());
    return;
  }
  require(g->subject == p.subject && g->patient == "patient-1" && g->expires_at > kNow);
  require(g->justification.size() <= justification.size());
  require(f.break_glass.active(p.subject, "patient-1", kNow).has_value());
  require(!f.break_glass.active(p.subject, "patient-1", g->expires_at).has_value());
  require(!f.break_glass.active(p.subject, "patient-2", kNow).has_value());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 4) {
    case 0:
      check_base64url(input);
      check_token(input);
      break;
    case 1: check_signed(input); break;
    case 2: check_scopes(input); break;
    default: check_break_glass(input); break;
  }
  return 0;
}
