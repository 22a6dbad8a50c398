// SPDX-License-Identifier: Apache-2.0
// SMART App Launch v2 scope parsing: accepted forms, v1 mapping, and strict refusals.
#include <doctest/doctest.h>

#include <string>

#include "gateway/auth/scopes.h"

using gw::auth::kAllPermissions;
using gw::auth::kCreate;
using gw::auth::kDelete;
using gw::auth::kRead;
using gw::auth::kSearch;
using gw::auth::kUpdate;
using gw::auth::parse_scopes;
using gw::auth::ScopeContext;

namespace {

gw::auth::ResourceScope only_scope(std::string_view text) {
  auto s = parse_scopes(text);
  REQUIRE_MESSAGE(s.ok(), std::string(text));
  REQUIRE(s->resource_scopes.size() == 1);
  return s->resource_scopes[0];
}

}  // namespace

TEST_CASE("Scopes: v2 resource scopes parse with context, type and permissions") {
  auto a = only_scope("patient/Observation.rs");
  CHECK(a.context == ScopeContext::patient);
  CHECK(a.resource_type == "Observation");
  CHECK(a.permissions == (kRead | kSearch));
  CHECK(a.constraints.empty());

  auto b = only_scope("user/*.cruds");
  CHECK(b.context == ScopeContext::user);
  CHECK(b.resource_type == "*");
  CHECK(b.permissions == kAllPermissions);

  auto c = only_scope("system/Patient.r");
  CHECK(c.context == ScopeContext::system);
  CHECK(c.permissions == kRead);

  CHECK(only_scope("user/Encounter.cd").permissions == (kCreate | kDelete));
  CHECK(only_scope("user/Encounter.u").permissions == kUpdate);
  CHECK(only_scope("user/Encounter.s").permissions == kSearch);
}

TEST_CASE("Scopes: v1 read, write and * map to v2 permissions") {
  CHECK(only_scope("patient/*.read").permissions == (kRead | kSearch));
  CHECK(only_scope("user/Observation.write").permissions == (kCreate | kUpdate | kDelete));
  CHECK(only_scope("user/Patient.*").permissions == kAllPermissions);
  CHECK(gw::auth::permissions_text(only_scope("patient/*.read").permissions) == "rs");
  CHECK(gw::auth::permissions_text(only_scope("user/Observation.write").permissions) == "cud");
}

TEST_CASE("Scopes: a v2 constraint is decoded and kept") {
  auto s = only_scope(
      "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory");
  REQUIRE(s.constraints.size() == 1);
  CHECK(s.constraints[0].first == "category");
  CHECK(s.constraints[0].second == "http://terminology.hl7.org/CodeSystem/observation-category|laboratory");

  auto two = only_scope("user/Observation.s?category=vital-signs&code=http%3A%2F%2Floinc.org%7C8867-4");
  REQUIRE(two.constraints.size() == 2);
  CHECK(two.constraints[1] == std::pair<std::string, std::string>{"code", "http://loinc.org|8867-4"});
  // Scope text is not form-encoded: '+' stays a plus.
  CHECK(only_scope("user/Observation.s?code=a+b").constraints[0].second == "a+b");
}

TEST_CASE("Scopes: launch and identity scopes are kept apart from resource scopes") {
  auto s = parse_scopes("openid fhirUser launch/patient offline_access");
  REQUIRE(s.ok());
  CHECK(s->resource_scopes.empty());
  CHECK(s->other.size() == 4);
  CHECK(s->has_other("openid"));
  CHECK(s->has_other("fhirUser"));
  CHECK(s->has_other("launch/patient"));
  CHECK(s->has_other("offline_access"));
  CHECK_FALSE(s->has_other("profile"));
  for (const char* ok : {"profile", "launch", "launch/encounter", "online_access"}) {
    CAPTURE(ok);
    auto one = parse_scopes(ok);
    REQUIRE(one.ok());
    CHECK(one->has_other(ok));
  }
}

TEST_CASE("Scopes: runs of spaces separate scopes; empty text is an empty set") {
  auto s = parse_scopes("  openid   patient/Observation.rs  user/Patient.r ");
  REQUIRE(s.ok());
  CHECK(s->resource_scopes.size() == 2);
  CHECK(s->other.size() == 1);
  auto e = parse_scopes("");
  REQUIRE(e.ok());
  CHECK(e->resource_scopes.empty());
  CHECK(e->other.empty());
}

TEST_CASE("Scopes: malformed scopes are refused with invalid_value naming the scope") {
  const char* bad[] = {
      "patient/Observation.sr",     // out of order
      "patient/Observation.rr",     // duplicate
      "patient/Observation.rx",     // unknown permission
      "patient/Observation.",       // empty permissions
      "patient/Observation",        // no permissions at all
      "patient/NotAType.rs",        // not an R4 type
      "patient/observation.rs",     // types are case-sensitive
      "patient/DomainResource.rs",  // abstract type
      "admin/Patient.rs",           // unknown context
      "patient/Observation.rs?",    // empty constraint
      "patient/Observation.rs?category",   // constraint without value
      "patient/Observation.rs?category=",  // empty value
      "patient/Observation.rs?=x",         // empty name
      "patient/Observation.rs?a=1&",       // empty pair
      "patient/Observation.rs?a=%zz",      // bad escape
      "patient/Observation.cu?category=x",  // constrained write
      "patient/Observation.READ",          // v1 words are lower case
      "patient/Observation.reads",
      "superuser",
      "launch/xyz",
      "/Patient.rs",
      "patient/.rs",
  };
  for (const char* text : bad) {
    CAPTURE(text);
    auto s = parse_scopes(std::string("openid ") + text);
    REQUIRE_FALSE(s.ok());
    CHECK(s.issue().code == fhir::ErrorCode::invalid_value);
    const std::string shown = std::string(text).substr(0, 20);
    CHECK(s.issue().diagnostics.find(shown) != std::string::npos);
  }
}

TEST_CASE("Scopes: tabs, newlines and other characters outside RFC 6749 are refused") {
  for (const char* text : {"openid\tfhirUser", "openid\nfhirUser", "patient/Observation.rs\r", "openid \"x\"",
                           "a\\b", "patient/Observation.rs?category=caf\xC3\xA9"}) {
    CAPTURE(text);
    auto s = parse_scopes(text);
    REQUIRE_FALSE(s.ok());
    CHECK(s.issue().code == fhir::ErrorCode::invalid_value);
    // The diagnostic never echoes a control character.
    CHECK(s.issue().diagnostics.find_first_of("\t\n\r") == std::string::npos);
  }
}

TEST_CASE("Scopes: at most 64 scopes and 4096 bytes") {
  std::string sixty_four, sixty_five;
  for (int i = 0; i < 64; ++i) sixty_four.append("user/Patient.r ");
  sixty_five = sixty_four + "openid";
  CHECK(parse_scopes(sixty_four).ok());
  auto many = parse_scopes(sixty_five);
  REQUIRE_FALSE(many.ok());
  CHECK(many.issue().code == fhir::ErrorCode::invalid_value);

  std::string big = "openid" + std::string(4091, ' ');  // 4097 bytes
  auto too_long = parse_scopes(big);
  REQUIRE_FALSE(too_long.ok());
  CHECK(too_long.issue().code == fhir::ErrorCode::invalid_value);
  CHECK(parse_scopes(big.substr(0, 4096)).ok());
}

TEST_CASE("ScopeSet: permissions are the union of unconstrained scopes for the context and type") {
  auto s = parse_scopes("user/Observation.r user/Observation.s patient/Condition.rs user/*.c "
                        "user/Encounter.rs?status=finished");
  REQUIRE(s.ok());
  CHECK(s->permissions(ScopeContext::user, "Observation") == (kCreate | kRead | kSearch));
  CHECK(s->permissions(ScopeContext::user, "Condition") == kCreate);
  CHECK(s->permissions(ScopeContext::patient, "Condition") == (kRead | kSearch));
  CHECK(s->permissions(ScopeContext::system, "Observation") == 0);
  // A constrained scope never grants a read or an unconstrained search.
  CHECK(s->permissions(ScopeContext::user, "Encounter") == kCreate);
}

TEST_CASE("ScopeSet: a constrained scope allows only searches carrying every constraint") {
  auto s = parse_scopes("patient/Observation.rs?category=laboratory&status=final");
  REQUIRE(s.ok());
  using Params = std::vector<std::pair<std::string, std::string>>;
  CHECK(s->allows_search(ScopeContext::patient, "Observation",
                         Params{{"status", "final"}, {"patient", "p1"}, {"category", "laboratory"}}));
  CHECK_FALSE(s->allows_search(ScopeContext::patient, "Observation", Params{{"category", "laboratory"}}));
  CHECK_FALSE(s->allows_search(ScopeContext::patient, "Observation",
                               Params{{"category", "laboratory,vital-signs"}, {"status", "final"}}));
  CHECK_FALSE(s->allows_search(ScopeContext::patient, "Observation", Params{}));
  CHECK_FALSE(s->allows_search(ScopeContext::user, "Observation",
                               Params{{"category", "laboratory"}, {"status", "final"}}));
  CHECK_FALSE(s->allows_search(ScopeContext::patient, "Condition",
                               Params{{"category", "laboratory"}, {"status", "final"}}));

  auto plain = parse_scopes("patient/*.s user/Patient.r");
  REQUIRE(plain.ok());
  CHECK(plain->allows_search(ScopeContext::patient, "Observation", Params{}));
  CHECK_FALSE(plain->allows_search(ScopeContext::user, "Patient", Params{}));  // r is not s
}

TEST_CASE("ScopeSet: every occurrence of a constrained parameter must be the constraint (fail closed)") {
  auto s = parse_scopes("user/Observation.rs?code=http://loinc.org|2823-3");
  REQUIRE(s.ok());
  using Params = std::vector<std::pair<std::string, std::string>>;
  const std::pair<std::string, std::string> k{"code", "http://loinc.org|2823-3"};
  CHECK(s->allows_search(ScopeContext::user, "Observation", Params{k, {"patient", "p1"}}));
  CHECK(s->allows_search(ScopeContext::user, "Observation", Params{k, k}));  // the same value again
  // Another value beside it, in either order, or under a modifier, asks for more than the scope.
  CHECK_FALSE(s->allows_search(ScopeContext::user, "Observation", Params{k, {"code", "http://loinc.org|2951-2"}}));
  CHECK_FALSE(s->allows_search(ScopeContext::user, "Observation", Params{{"code", "2951-2"}, k}));
  CHECK_FALSE(s->allows_search(ScopeContext::user, "Observation", Params{k, {"code", "http://loinc.org|2823-3,x"}}));
  CHECK_FALSE(s->allows_search(ScopeContext::user, "Observation", Params{k, {"code:not", "http://loinc.org|2823-3"}}));
  CHECK_FALSE(s->allows_search(ScopeContext::user, "Observation", Params{k, {"code:text", "potassium"}}));
  // A constraint that carries a modifier constrains its base parameter as well.
  auto custodian = parse_scopes("user/DocumentReference.rs?custodian:identifier=RX1");
  REQUIRE(custodian.ok());
  CHECK(custodian->allows_search(ScopeContext::user, "DocumentReference", Params{{"custodian:identifier", "RX1"}}));
  CHECK_FALSE(custodian->allows_search(ScopeContext::user, "DocumentReference",
                                       Params{{"custodian:identifier", "RX1"}, {"custodian", "Organization/x"}}));
  // Two constrained scopes are judged one at a time: neither grants both codes at once.
  auto two = parse_scopes("user/Observation.rs?code=a user/Observation.rs?code=b");
  REQUIRE(two.ok());
  CHECK(two->allows_search(ScopeContext::user, "Observation", Params{{"code", "a"}}));
  CHECK(two->allows_search(ScopeContext::user, "Observation", Params{{"code", "b"}}));
  CHECK_FALSE(two->allows_search(ScopeContext::user, "Observation", Params{{"code", "a"}, {"code", "b"}}));
  // A scope naming the parameter twice allows exactly those occurrences.
  auto both = parse_scopes("user/Observation.rs?code=a&code=b");
  REQUIRE(both.ok());
  CHECK(both->allows_search(ScopeContext::user, "Observation", Params{{"code", "b"}, {"code", "a"}}));
  CHECK_FALSE(both->allows_search(ScopeContext::user, "Observation", Params{{"code", "a"}}));
  CHECK_FALSE(both->allows_search(ScopeContext::user, "Observation", Params{{"code", "a"}, {"code", "b"}, {"code", "c"}}));
}

TEST_CASE("Scopes: context names and permission text") {
  CHECK(gw::auth::context_name(ScopeContext::patient) == "patient");
  CHECK(gw::auth::context_name(ScopeContext::user) == "user");
  CHECK(gw::auth::context_name(ScopeContext::system) == "system");
  CHECK(gw::auth::permissions_text(kAllPermissions) == "cruds");
  CHECK(gw::auth::permissions_text(kDelete | kCreate) == "cd");
  CHECK(gw::auth::permissions_text(0).empty());
}
