// SPDX-License-Identifier: Apache-2.0
// SMART App Launch v2 scopes (https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html),
// parsed strictly (issue #5 item 2):
//   <patient|user|system>/<ResourceType|*>.<c?r?u?d?s?>[?param=value&...]
// Permissions must appear in the order c, r, u, d, s, at most once each, and at least one.
// v1 forms map: ".read" -> "rs", ".write" -> "cud", ".*" -> "cruds".
// Non-resource scopes (openid, fhirUser, profile, launch, launch/patient, launch/encounter,
// offline_access, online_access) are kept in `other`; any other scope text is an error, so
// a typo never silently grants or drops access.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fhir/result.h"

namespace gw::auth {

// Bit mask, canonical SMART order.
enum Permission : std::uint8_t {
  kCreate = 1,
  kRead = 2,
  kUpdate = 4,
  kDelete = 8,
  kSearch = 16,
};
inline constexpr std::uint8_t kAllPermissions = kCreate | kRead | kUpdate | kDelete | kSearch;
std::string permissions_text(std::uint8_t mask);  // e.g. "rs"

enum class ScopeContext { patient, user, system };
std::string_view context_name(ScopeContext c);

struct ResourceScope {
  ScopeContext context = ScopeContext::user;
  std::string resource_type;  // an R4 resource type, or "*"
  std::uint8_t permissions = 0;
  // v2 restriction "?category=...": decoded name/value pairs. A constrained scope grants only
  // searches that carry every one of these parameters with the same value and no other value
  // of them (allows_search); never reads.
  std::vector<std::pair<std::string, std::string>> constraints;
};

struct ScopeSet {
  std::vector<ResourceScope> resource_scopes;
  std::vector<std::string> other;

  // Union of the permissions granted for `type` in `context` by unconstrained scopes
  // ("*" matches every type).
  std::uint8_t permissions(ScopeContext context, std::string_view type) const;
  // True when some scope in `context` grants search on `type`: unconstrained, or constrained
  // with every constraint present in `search_params` with an equal value and no other
  // occurrence of a constrained parameter (another value, a repeat with another value, or the
  // same name under another modifier). `search_params` are (name[:modifier], value as sent),
  // one pair per occurrence.
  bool allows_search(ScopeContext context, std::string_view type,
                     const std::vector<std::pair<std::string, std::string>>& search_params) const;
  bool has_other(std::string_view scope) const;
};

// Limits: at most 64 scopes and 4096 bytes. Errors are `invalid_value` naming the bad scope.
fhir::Result<ScopeSet> parse_scopes(std::string_view space_separated);

}  // namespace gw::auth
