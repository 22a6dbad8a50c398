// SPDX-License-Identifier: Apache-2.0
// Strict SMART App Launch v2 scope parsing (scopes-and-launch-context.html): every scope in
// the token either parses to a resource scope, is a known launch/identity scope, or fails the
// whole set, so a typo can neither grant nor silently drop access.
#include "gateway/auth/scopes.h"

#include <algorithm>
#include <array>

#include "fhir/query_string.h"
#include "fhir/resource_types.h"

namespace gw::auth {
namespace {

constexpr std::size_t kMaxScopes = 64;
constexpr std::size_t kMaxScopeBytes = 4096;

constexpr std::array<std::string_view, 8> kOtherScopes{
    "openid", "fhirUser", "profile", "launch", "launch/patient", "launch/encounter", "offline_access",
    "online_access"};

// RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
bool is_scope_char(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u >= 0x21 && u <= 0x7E && c != '"' && c != '\\';
}

// The scope as it can safely appear in a diagnostic: bounded, printable ASCII only.
std::string shown(std::string_view scope) {
  std::string out;
  for (char c : scope.substr(0, 80)) out.push_back(is_scope_char(c) ? c : '?');
  if (scope.size() > 80) out.append("...");
  return out;
}

fhir::Issue bad_scope(std::string_view scope, std::string_view why) {
  std::string text = "invalid scope '";
  text.append(shown(scope)).append("': ").append(why);
  return fhir::Issue::make(fhir::ErrorCode::invalid_value, std::move(text), "scope");
}

// ".read" / ".write" / ".*" are SMART v1; v2 letters must be a subsequence of "cruds".
bool parse_permissions(std::string_view text, std::uint8_t& mask) {
  if (text == "read") { mask = kRead | kSearch; return true; }
  if (text == "write") { mask = kCreate | kUpdate | kDelete; return true; }
  if (text == "*") { mask = kAllPermissions; return true; }
  if (text.empty()) return false;
  static constexpr std::string_view kOrder = "cruds";
  static constexpr std::array<std::uint8_t, 5> kBits{kCreate, kRead, kUpdate, kDelete, kSearch};
  std::size_t next = 0;  // letters before `next` in kOrder may no longer appear
  mask = 0;
  for (char c : text) {
    const auto pos = kOrder.find(c, next);
    if (pos == std::string_view::npos) return false;  // unknown, repeated or out of order
    mask |= kBits[pos];
    next = pos + 1;
  }
  return true;
}

fhir::Result<std::vector<std::pair<std::string, std::string>>> parse_constraints(std::string_view scope,
                                                                                 std::string_view query) {
  std::vector<std::pair<std::string, std::string>> out;
  if (query.empty()) return bad_scope(scope, "empty constraint after '?'");
  std::size_t start = 0;
  while (start <= query.size()) {
    auto end = query.find('&', start);
    if (end == std::string_view::npos) end = query.size();
    const auto piece = query.substr(start, end - start);
    const auto eq = piece.find('=');
    if (piece.empty() || eq == std::string_view::npos || eq == 0 || eq + 1 == piece.size()) {
      return bad_scope(scope, "constraints must be name=value pairs joined by '&'");
    }
    // Scope text is not form-encoded: '+' stays a plus.
    auto name = fhir::percent_decode(piece.substr(0, eq), false);
    auto value = fhir::percent_decode(piece.substr(eq + 1), false);
    if (!name.ok() || !value.ok()) return bad_scope(scope, "bad percent-encoding in constraint");
    out.emplace_back(std::move(name).value(), std::move(value).value());
    start = end + 1;
  }
  return out;
}

fhir::Result<ResourceScope> parse_resource_scope(std::string_view scope, std::size_t slash) {
  ResourceScope rs;
  const auto context = scope.substr(0, slash);
  if (context == "patient") {
    rs.context = ScopeContext::patient;
  } else if (context == "user") {
    rs.context = ScopeContext::user;
  } else if (context == "system") {
    rs.context = ScopeContext::system;
  } else {
    return bad_scope(scope, "unknown scope; resource scopes start with patient/, user/ or system/");
  }
  auto rest = scope.substr(slash + 1);
  std::string_view query;
  bool has_query = false;
  if (const auto q = rest.find('?'); q != std::string_view::npos) {
    query = rest.substr(q + 1);
    rest = rest.substr(0, q);
    has_query = true;
  }
  const auto dot = rest.find('.');
  if (dot == std::string_view::npos) return bad_scope(scope, "missing '.' and permissions");
  const auto type = rest.substr(0, dot);
  const auto perms = rest.substr(dot + 1);
  if (type != "*" && (type == "DomainResource" || type == "Resource" || !fhir::is_r4_resource_type(type))) {
    return bad_scope(scope, "not an R4 resource type");
  }
  if (!parse_permissions(perms, rs.permissions)) {
    return bad_scope(scope, "permissions must be letters from c, r, u, d, s in that order, each at most once "
                            "(or v1 read, write, *)");
  }
  rs.resource_type = std::string(type);
  if (has_query) {
    // A constraint narrows reads and searches; the gateway cannot apply one to a write, so
    // a constrained write is refused rather than silently ignored.
    if (rs.permissions & (kCreate | kUpdate | kDelete)) {
      return bad_scope(scope, "constraints are supported on r and s permissions only");
    }
    auto constraints = parse_constraints(scope, query);
    if (!constraints.ok()) return std::move(constraints).issue();
    rs.constraints = std::move(constraints).value();
  }
  return rs;
}

bool context_and_type_match(const ResourceScope& s, ScopeContext context, std::string_view type) {
  return s.context == context && (s.resource_type == "*" || s.resource_type == type);
}

}  // namespace

std::string permissions_text(std::uint8_t mask) {
  std::string out;
  if (mask & kCreate) out.push_back('c');
  if (mask & kRead) out.push_back('r');
  if (mask & kUpdate) out.push_back('u');
  if (mask & kDelete) out.push_back('d');
  if (mask & kSearch) out.push_back('s');
  return out;
}

std::string_view context_name(ScopeContext c) {
  switch (c) {
    case ScopeContext::patient: return "patient";
    case ScopeContext::user: return "user";
    case ScopeContext::system: return "system";
  }
  return "user";
}

std::uint8_t ScopeSet::permissions(ScopeContext context, std::string_view type) const {
  std::uint8_t mask = 0;
  for (const auto& s : resource_scopes) {
    if (s.constraints.empty() && context_and_type_match(s, context, type)) mask |= s.permissions;
  }
  return mask;
}

namespace {

// A search parameter's name without its modifier: "code:not" and "code" are one parameter.
std::string_view base_name(std::string_view name) { return name.substr(0, name.find(':')); }

// Whether a search stays inside the constraints of one scope. Each constraint must be present
// as sent, and every occurrence of a constrained parameter (any repeat, under any modifier)
// must be one of the scope's own name=value pairs: a search that also sends code=Y, code:not=X
// or code=X,Y beside code=X asks for more than the scope grants, however the search combines
// them, so it is refused rather than trusted to narrow (fail closed).
bool within_constraints(const ResourceScope& s, const std::vector<std::pair<std::string, std::string>>& params) {
  for (const auto& c : s.constraints)
    if (std::find(params.begin(), params.end(), c) == params.end()) return false;
  for (const auto& p : params) {
    const auto base = base_name(p.first);
    const bool constrained = std::any_of(s.constraints.begin(), s.constraints.end(),
                                         [&](const auto& c) { return base_name(c.first) == base; });
    if (constrained && std::find(s.constraints.begin(), s.constraints.end(), p) == s.constraints.end()) return false;
  }
  return true;  // vacuously true for an unconstrained scope
}

}  // namespace

bool ScopeSet::allows_search(ScopeContext context, std::string_view type,
                             const std::vector<std::pair<std::string, std::string>>& search_params) const {
  for (const auto& s : resource_scopes) {
    if (!(s.permissions & kSearch) || !context_and_type_match(s, context, type)) continue;
    if (within_constraints(s, search_params)) return true;
  }
  return false;
}

bool ScopeSet::has_other(std::string_view scope) const {
  return std::find(other.begin(), other.end(), scope) != other.end();
}

fhir::Result<ScopeSet> parse_scopes(std::string_view text) {
  if (text.size() > kMaxScopeBytes) {
    return fhir::Issue::make(fhir::ErrorCode::invalid_value, "scope text is longer than 4096 bytes", "scope");
  }
  ScopeSet set;
  std::size_t count = 0;
  std::size_t pos = 0;
  while (pos < text.size()) {
    if (text[pos] == ' ') {  // runs of spaces separate scopes; other whitespace is an error below
      ++pos;
      continue;
    }
    auto end = text.find(' ', pos);
    if (end == std::string_view::npos) end = text.size();
    const auto scope = text.substr(pos, end - pos);
    pos = end;
    if (++count > kMaxScopes) {
      return fhir::Issue::make(fhir::ErrorCode::invalid_value, "more than 64 scopes", "scope");
    }
    if (!std::all_of(scope.begin(), scope.end(), is_scope_char)) {
      return bad_scope(scope, "contains a character not allowed in a scope (RFC 6749 section 3.3)");
    }
    if (std::find(kOtherScopes.begin(), kOtherScopes.end(), scope) != kOtherScopes.end()) {
      if (!set.has_other(scope)) set.other.emplace_back(scope);
      continue;
    }
    const auto slash = scope.find('/');
    if (slash == std::string_view::npos) return bad_scope(scope, "unknown scope");
    auto rs = parse_resource_scope(scope, slash);
    if (!rs.ok()) return std::move(rs).issue();
    set.resource_scopes.push_back(std::move(rs).value());
  }
  return set;
}

}  // namespace gw::auth
