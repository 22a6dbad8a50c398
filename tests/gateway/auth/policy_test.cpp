// SPDX-License-Identifier: Apache-2.0
// Access policy: roles, scopes narrowing roles, legitimate relationship, objection,
// break-glass, sensitive categories, rate limits, and the authorisation matrix generated from
// the default policy against an oracle written independently from the role table.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "fhir/query_string.h"
#include "gateway/auth/policy.h"

using namespace gw::auth;
using Params = std::vector<std::pair<std::string, std::string>>;

namespace {

constexpr std::int64_t kNow = 1'750'000'000;
constexpr std::int64_t kDay = 24 * 3600;
const std::string kSct = "http://snomed.info/sct";

Policy make_default() {
  auto p = Policy::make(default_policy());
  REQUIRE(p.ok());
  return std::move(p).value();
}

Principal user(std::string claim, std::string_view scopes = "user/*.cruds", std::string subject = "user-1",
               std::string org = "RX1") {
  Principal p;
  p.kind = Principal::Kind::user;
  p.subject = std::move(subject);
  p.role_claim = std::move(claim);
  p.organisation = std::move(org);
  p.client_id = "ehr-app";
  auto s = parse_scopes(scopes);
  REQUIRE(s.ok());
  p.scopes = std::move(s).value();
  return p;
}

Principal system_client(std::string_view scopes = "system/*.cruds") {
  Principal p = user("system", "");
  p.kind = Principal::Kind::system;
  p.subject = "RX1-adapter";
  auto s = parse_scopes(scopes);
  REQUIRE(s.ok());
  p.scopes = std::move(s).value();
  return p;
}

PatientFacts registered_at(std::string org) {
  PatientFacts f;
  f.registered_practice = std::move(org);
  return f;
}

bool contains(const std::string& haystack, std::string_view needle) {
  return haystack.find(needle) != std::string::npos;
}

}  // namespace

TEST_CASE("Policy: the default policy is valid and holds the six roles the issue names") {
  auto policy = make_default();
  std::set<std::string> names;
  for (const auto& r : policy.config().roles) names.insert(r.name);
  CHECK(names == std::set<std::string>{"clinician", "paramedic", "social-care-practitioner", "ig-officer",
                                       "administrator", "system"});
  CHECK_FALSE(policy.config().emergency_purposes.empty());
  CHECK_FALSE(policy.config().break_glass_reasons.empty());
  CHECK(policy.config().sensitive_categories.size() == 5);
}

TEST_CASE("Policy: roles are found by any of their claim values, and only by those") {
  auto policy = make_default();
  REQUIRE(policy.role(user("R8000")) != nullptr);
  CHECK(policy.role(user("R8000"))->name == "clinician");
  CHECK(policy.role(user("clinician"))->name == "clinician");
  CHECK(policy.role(user("R5105"))->name == "ig-officer");
  CHECK(policy.role(user("paramedic"))->name == "paramedic");
  CHECK(policy.role(user("r8000")) == nullptr);  // exact match
  CHECK(policy.role(user("Clinician")) == nullptr);
  CHECK(policy.role(user("")) == nullptr);
  CHECK(policy.role(user("superuser")) == nullptr);
}

TEST_CASE("Policy: authorise_type names the rule that failed") {
  auto policy = make_default();
  auto no_role = policy.authorise_type(user(""), "Patient", Interaction::read);
  CHECK_FALSE(no_role.allowed);
  CHECK(no_role.reason == "no role in token");
  CHECK_FALSE(no_role.hide_existence);

  // A role claim the policy does not map is named, not reported as missing: matching is exact.
  auto unknown_role = policy.authorise_type(user("Clinician"), "Patient", Interaction::read);
  CHECK_FALSE(unknown_role.allowed);
  CHECK(unknown_role.reason ==
        "role claim value 'Clinician' is not mapped to any configured role (values match exactly, case-sensitively)");
  CHECK(policy.authorise_patient(user("R9999"), registered_at("A81001"), "p1", nullptr, kNow).reason.find(
            "role claim value 'R9999' is not mapped") == 0);
  // A long value is cut at a character boundary (it reaches the audit record).
  auto long_role = policy.authorise_type(user(std::string(63, 'x') + "\xC3\xA9" + "tail"), "Patient", Interaction::read);
  CHECK(long_role.reason.find("'" + std::string(63, 'x') + "...'") != std::string::npos);
  CHECK(fhir::is_valid_utf8(long_role.reason));

  auto ig = policy.authorise_type(user("ig-officer"), "Observation", Interaction::read);
  CHECK_FALSE(ig.allowed);
  CHECK(contains(ig.reason, "patient data not permitted"));
  CHECK(contains(ig.reason, "ig-officer"));

  auto social = policy.authorise_type(user("social-care-practitioner"), "Observation", Interaction::read);
  CHECK_FALSE(social.allowed);
  CHECK(contains(social.reason, "resource type Observation not permitted"));

  auto write = policy.authorise_type(user("clinician"), "Observation", Interaction::create);
  CHECK_FALSE(write.allowed);
  CHECK(contains(write.reason, "create not permitted"));

  auto narrow = policy.authorise_type(user("clinician", "user/Patient.r"), "Patient", Interaction::search);
  CHECK_FALSE(narrow.allowed);
  CHECK(contains(narrow.reason, "token scopes do not grant search on Patient"));

  auto ok = policy.authorise_type(user("clinician", "user/Patient.r"), "Patient", Interaction::read);
  CHECK(ok.allowed);
  CHECK_FALSE(ok.break_glass);
  CHECK(ok.allowed_sensitive == std::vector<std::string>{"mental-health"});
}

TEST_CASE("Policy: a scope never widens the role") {
  auto policy = make_default();
  // user/*.cruds asks for everything; the clinician role has read and search only.
  auto p = user("clinician", "user/*.cruds");
  CHECK(policy.authorise_type(p, "Observation", Interaction::read).allowed);
  CHECK(policy.authorise_type(p, "Observation", Interaction::search).allowed);
  CHECK_FALSE(policy.authorise_type(p, "Observation", Interaction::create).allowed);
  CHECK_FALSE(policy.authorise_type(p, "Observation", Interaction::update).allowed);
  CHECK_FALSE(policy.authorise_type(p, "Observation", Interaction::remove).allowed);
  // Paramedics: a scope for a type outside the role does not add it.
  auto para = user("paramedic", "user/Coverage.rs user/Observation.rs");
  CHECK_FALSE(policy.authorise_type(para, "Coverage", Interaction::read).allowed);
  CHECK(policy.authorise_type(para, "Observation", Interaction::read).allowed);
}

TEST_CASE("Policy: users act through user/ and patient/ scopes, system clients through system/ only") {
  auto policy = make_default();
  auto in_context = user("clinician", "patient/Observation.rs");
  in_context.patient = "p-1";
  CHECK(policy.authorise_type(in_context, "Observation", Interaction::read).allowed);
  CHECK(policy.authorise_type(user("clinician", "user/Observation.rs"), "Observation", Interaction::read).allowed);
  CHECK_FALSE(policy.authorise_type(user("clinician", "system/*.rs"), "Observation", Interaction::read).allowed);
  CHECK(policy.authorise_type(system_client("system/Observation.c"), "Observation", Interaction::create).allowed);
  CHECK_FALSE(policy.authorise_type(system_client("user/*.cruds patient/*.cruds"), "Observation", Interaction::create).allowed);
  CHECK_FALSE(policy.authorise_type(system_client("openid"), "Observation", Interaction::create).allowed);
}

TEST_CASE("Policy: without token scopes (client certificate) the role alone decides") {
  auto policy = make_default();
  auto cert = system_client("");
  cert.scopes_from_token = false;
  CHECK(policy.authorise_type(cert, "DocumentReference", Interaction::create).allowed);
  CHECK(policy.authorise_type(cert, "Patient", Interaction::update).allowed);
  CHECK_FALSE(policy.authorise_type(cert, "Coverage", Interaction::create).allowed);
  CHECK_FALSE(policy.authorise_type(cert, "AuditEvent", Interaction::read).allowed);
}

TEST_CASE("Policy: a user token holding the system-only role gets nothing") {
  auto policy = make_default();
  auto p = user("system", "user/*.cruds");
  auto d = policy.authorise_type(p, "Patient", Interaction::read);
  CHECK_FALSE(d.allowed);
  CHECK(contains(d.reason, "system-only role"));
  auto pd = policy.authorise_patient(p, registered_at("RX1"), "p-1", nullptr, kNow);
  CHECK_FALSE(pd.allowed);
  auto bg = BreakGlassRegistry().grant(policy, p, "p-1", "emergency-care", "unconscious in resus bay", kNow);
  CHECK_FALSE(bg.ok());
}

TEST_CASE("Policy: system/ scopes with a user role get nothing (no relationship bypass)") {
  auto policy = make_default();
  for (const char* claim : {"clinician", "paramedic", "social-care-practitioner"}) {
    CAPTURE(claim);
    auto p = user(claim, "system/*.rs");
    p.kind = Principal::Kind::system;  // as the authenticator makes a token whose scopes are all system/
    auto d = policy.authorise_type(p, "Patient", Interaction::read);
    CHECK_FALSE(d.allowed);
    CHECK(contains(d.reason, "system/ scopes may not be used with a user role"));
    CHECK_FALSE(policy.authorise_search(p, "Patient", {{"gender", "female"}}).allowed);
    // Even where a user of that role would have a relationship, the system principal gets no basis.
    CHECK_FALSE(policy.authorise_patient(p, registered_at("RX1"), "p-1", nullptr, kNow).allowed);
  }
  // The system role itself, with system/ scopes, is unaffected.
  CHECK(policy.authorise_type(system_client(), "Patient", Interaction::read).allowed);
  CHECK(policy.authorise_patient(system_client(), PatientFacts{}, "p-1", nullptr, kNow).allowed);
}

TEST_CASE("Policy: AuditEvent is the IG view, read-only, for roles with audit access") {
  auto policy = make_default();
  auto ig = user("R0001", "user/AuditEvent.rs");
  CHECK(policy.authorise_type(ig, "AuditEvent", Interaction::read).allowed);
  CHECK(policy.authorise_type(ig, "AuditEvent", Interaction::search).allowed);
  CHECK_FALSE(policy.authorise_type(ig, "AuditEvent", Interaction::create).allowed);
  CHECK_FALSE(policy.authorise_type(ig, "Patient", Interaction::read).allowed);
  CHECK_FALSE(policy.authorise_type(user("R0001", "openid"), "AuditEvent", Interaction::read).allowed);
  auto clinician = policy.authorise_type(user("clinician"), "AuditEvent", Interaction::read);
  CHECK_FALSE(clinician.allowed);
  CHECK(contains(clinician.reason, "no audit access"));
  // The IG officer sees no clinical data, so no sensitive category either.
  CHECK(policy.authorise_type(ig, "AuditEvent", Interaction::read).allowed_sensitive.empty());
  CHECK_FALSE(policy.authorise_patient(ig, registered_at("RX1"), "p-1", nullptr, kNow).allowed);
}

TEST_CASE("Policy: administrators manage source systems and see no patient data") {
  auto policy = make_default();
  auto admin = user("R8015");
  CHECK(policy.authorise_type(admin, "Endpoint", Interaction::update).allowed);
  CHECK(policy.authorise_type(admin, "Organization", Interaction::create).allowed);
  CHECK_FALSE(policy.authorise_type(admin, "Patient", Interaction::read).allowed);
  CHECK_FALSE(policy.authorise_type(admin, "Location", Interaction::read).allowed);
  CHECK_FALSE(policy.authorise_patient(admin, registered_at("RX1"), "p-1", nullptr, kNow).allowed);
}

TEST_CASE("Policy: authorise_search honours constrained scopes only with matching parameters") {
  auto policy = make_default();
  auto p = user("clinician", "patient/Observation.rs?category=laboratory");
  p.patient = "p-1";
  // The type-level check lets the search through to its parameters; a read never.
  auto type_level = policy.authorise_type(p, "Observation", Interaction::search);
  CHECK(type_level.allowed);
  CHECK(type_level.limits.search_unchecked);
  CHECK(type_level.limits.patient.empty());  // decided with the parameters
  CHECK_FALSE(policy.authorise_type(p, "Observation", Interaction::read).allowed);
  CHECK_FALSE(policy.authorise_type(p, "Encounter", Interaction::search).allowed);
  auto granted = policy.authorise_search(p, "Observation", Params{{"patient", "p-1"}, {"category", "laboratory"}});
  CHECK(granted.allowed);
  CHECK(granted.limits.patient == "p-1");  // a patient/ scope: bound to the launch context
  auto other = policy.authorise_search(p, "Observation", Params{{"category", "vital-signs"}});
  CHECK_FALSE(other.allowed);
  CHECK(other.reason == "token scopes grant search on Observation only with category=laboratory, and this search "
                        "does not carry it");
  CHECK_FALSE(policy.authorise_search(p, "Observation", Params{}).allowed);
  // A modifier makes another parameter: category:not=laboratory is no constraint met.
  CHECK_FALSE(policy.authorise_search(p, "Observation", Params{{"category:not", "laboratory"}}).allowed);
  // user/ constrained scopes grant without a bound.
  auto unbound = policy.authorise_search(user("clinician", "user/Observation.rs?code=http://loinc.org|2823-3"),
                                         "Observation", Params{{"code", "http://loinc.org|2823-3"}, {"patient", "p-9"}});
  CHECK(unbound.allowed);
  CHECK(unbound.limits.patient.empty());
  // The role still decides first.
  auto social = user("social-care-practitioner", "patient/Observation.rs?category=laboratory");
  CHECK_FALSE(policy.authorise_search(social, "Observation", Params{{"category", "laboratory"}}).allowed);
  CHECK_FALSE(policy.authorise_search(user(""), "Observation", Params{}).allowed);
  CHECK(policy.authorise_search(user("clinician", "user/Observation.s"), "Observation", Params{}).allowed);
  // Constrained scopes never open the IG view's search.
  auto ig = user("ig-officer", "user/AuditEvent.rs?type=rest");
  CHECK_FALSE(policy.authorise_type(ig, "AuditEvent", Interaction::search).allowed);
}

TEST_CASE("Policy: patient/ scopes reach only the token's patient; without a patient claim they grant nothing") {
  auto policy = make_default();
  auto p = user("clinician", "launch/patient patient/*.rs");
  auto none = policy.authorise_type(p, "Observation", Interaction::read);
  CHECK_FALSE(none.allowed);
  CHECK(contains(none.reason, "the token names no patient (no patient claim)"));
  // Types that hold no patient data are not bound to one.
  CHECK(policy.authorise_type(p, "Location", Interaction::read).allowed);

  p.patient = "p-1";
  auto d = policy.authorise_type(p, "Observation", Interaction::search);
  REQUIRE(d.allowed);
  CHECK(d.limits.patient == "p-1");
  CHECK_FALSE(d.limits.search_unchecked);
  const PatientFacts mine = registered_at("RX1");
  CHECK(policy.authorise_patient(p, mine, "p-1", nullptr, kNow, d.limits.patient).allowed);
  auto elsewhere = policy.authorise_patient(p, mine, "p-2", nullptr, kNow, d.limits.patient);
  CHECK_FALSE(elsewhere.allowed);
  CHECK(elsewhere.hide_existence);  // answered as an unknown patient
  // Break-glass opens the relationship, not another patient than the launch context's.
  const BreakGlassGrant g{"user-1", "p-2", "emergency-care", "collapsed at home", kNow - 60, kNow + 3600};
  CHECK_FALSE(policy.authorise_patient(p, registered_at("Y0001"), "p-2", &g, kNow, d.limits.patient).allowed);
  // The relationship rule still applies inside the context.
  CHECK_FALSE(policy.authorise_patient(p, registered_at("Y0001"), "p-1", nullptr, kNow, d.limits.patient).allowed);

  // user/ scopes are not bound: with both, the user/ scope decides for its types.
  auto both = user("clinician", "user/Patient.rs patient/*.rs");
  CHECK(policy.authorise_type(both, "Patient", Interaction::read).limits.patient.empty());
  CHECK_FALSE(policy.authorise_type(both, "Observation", Interaction::read).allowed);  // no patient claim
  // The IG view is never reached through a launch context.
  auto ig = user("ig-officer", "patient/AuditEvent.rs");
  ig.patient = "p-1";
  CHECK(contains(policy.authorise_type(ig, "AuditEvent", Interaction::read).reason, "patient/ scopes do not grant"));
}

TEST_CASE("Policy: emergency_basis: an emergency role with an accepted purpose-of-use claim, and nothing else") {
  auto policy = make_default();
  auto para = user("paramedic");
  CHECK_FALSE(policy.emergency_basis(para));
  para.purpose_of_use = "EMERGENCY";
  CHECK(policy.emergency_basis(para));
  para.purpose_of_use = "TREAT";
  CHECK_FALSE(policy.emergency_basis(para));
  auto clinician = user("clinician");
  clinician.purpose_of_use = "EMERGENCY";
  CHECK_FALSE(policy.emergency_basis(clinician));
}

TEST_CASE("Policy: each kind of legitimate relationship is recognised") {
  auto policy = make_default();
  auto p = user("clinician");
  auto allowed = [&](const PatientFacts& f) { return policy.authorise_patient(p, f, "p-1", nullptr, kNow).allowed; };

  CHECK(allowed(registered_at("RX1")));
  CHECK_FALSE(allowed(registered_at("Y0001")));

  PatientFacts team;
  team.care_team = {"someone-else", "user-1"};
  CHECK(allowed(team));
  team.care_team = {"RX1"};
  CHECK(allowed(team));
  team.care_team = {"RX2", "user-2"};
  CHECK_FALSE(allowed(team));

  PatientFacts enc;
  enc.encounters = {{"RX1", kNow - 89 * kDay}};
  CHECK(allowed(enc));
  enc.encounters = {{"RX1", kNow - 90 * kDay}};  // the window's edge counts
  CHECK(allowed(enc));
  enc.encounters = {{"RX1", kNow - 91 * kDay}};
  CHECK_FALSE(allowed(enc));
  enc.encounters = {{"RX2", kNow - kDay}};
  CHECK_FALSE(allowed(enc));
  enc.encounters = {{"RX1", kNow + 2 * kDay}};  // a booking far ahead is no relationship yet
  CHECK_FALSE(allowed(enc));
  enc.encounters = {{"RX1", kNow + 3600}};
  CHECK(allowed(enc));
}

TEST_CASE("Policy: empty identifiers never make a relationship") {
  auto policy = make_default();
  auto p = user("clinician", "user/*.rs", "", "");
  PatientFacts f;  // registered_practice "" and care team containing ""
  f.care_team = {""};
  f.encounters = {{"", kNow}};
  auto d = policy.authorise_patient(p, f, "p-1", nullptr, kNow);
  CHECK_FALSE(d.allowed);
  CHECK(d.hide_existence);
}

TEST_CASE("Policy: a purpose-of-use claim is a relationship only for emergency roles") {
  auto policy = make_default();
  const PatientFacts stranger = registered_at("Y0001");
  auto para = user("paramedic");
  CHECK_FALSE(policy.authorise_patient(para, stranger, "p-1", nullptr, kNow).allowed);
  para.purpose_of_use = "EMERGENCY";
  CHECK(policy.authorise_patient(para, stranger, "p-1", nullptr, kNow).allowed);
  para.purpose_of_use = "ETREAT";
  CHECK(policy.authorise_patient(para, stranger, "p-1", nullptr, kNow).allowed);
  para.purpose_of_use = "emergency";  // exact values only
  CHECK_FALSE(policy.authorise_patient(para, stranger, "p-1", nullptr, kNow).allowed);
  auto clinician = user("clinician");
  clinician.purpose_of_use = "EMERGENCY";
  CHECK_FALSE(policy.authorise_patient(clinician, stranger, "p-1", nullptr, kNow).allowed);
}

TEST_CASE("Policy: no relationship and objection look exactly like an unknown patient") {
  auto policy = make_default();
  auto p = user("clinician");
  auto none = policy.authorise_patient(p, registered_at("Y0001"), "p-1", nullptr, kNow);
  CHECK_FALSE(none.allowed);
  CHECK(none.hide_existence);
  CHECK(none.reason == "no legitimate relationship");
  CHECK(none.allowed_sensitive.empty());

  PatientFacts objecting = registered_at("RX1");
  objecting.objection = true;
  auto obj = policy.authorise_patient(p, objecting, "p-1", nullptr, kNow);
  CHECK_FALSE(obj.allowed);
  CHECK(obj.hide_existence);
  CHECK(obj.reason == "patient objection recorded");
}

TEST_CASE("Policy: system principals skip the relationship but not objection") {
  auto policy = make_default();
  auto sys = system_client();
  auto d = policy.authorise_patient(sys, registered_at("Y0001"), "p-1", nullptr, kNow);
  CHECK(d.allowed);
  CHECK(d.allowed_sensitive.empty());
  PatientFacts objecting = registered_at("Y0001");
  objecting.objection = true;
  auto obj = policy.authorise_patient(sys, objecting, "p-1", nullptr, kNow);
  CHECK_FALSE(obj.allowed);
  CHECK(obj.hide_existence);
  // A grant cannot help a system principal.
  BreakGlassGrant forged{sys.subject, "p-1", "emergency-care", "x", kNow - 1, kNow + 100};
  CHECK_FALSE(policy.authorise_patient(sys, objecting, "p-1", &forged, kNow).allowed);
}

TEST_CASE("Policy: sensitive categories by code, and who may see them") {
  auto policy = make_default();
  CHECK(policy.categories_of(kSct, "8098009") == std::vector<std::string>{"sexual-health"});
  CHECK(policy.categories_of(kSct, "386639001") == std::vector<std::string>{"termination-of-pregnancy"});
  CHECK(policy.categories_of(kSct, "93461009") == std::vector<std::string>{"gender-identity"});
  CHECK(policy.categories_of(kSct, "836881000000105") == std::vector<std::string>{"safeguarding"});
  CHECK(policy.categories_of(kSct, "35489007") == std::vector<std::string>{"mental-health"});
  CHECK(policy.categories_of(kSct, "38341003").empty());          // hypertension: not sensitive
  CHECK(policy.categories_of("http://loinc.org", "8098009").empty());  // the system matters

  CHECK(policy.may_see(user("clinician"), "mental-health"));
  CHECK_FALSE(policy.may_see(user("clinician"), "sexual-health"));
  CHECK_FALSE(policy.may_see(user("clinician"), "safeguarding"));
  CHECK(policy.may_see(user("social-care-practitioner"), "safeguarding"));
  CHECK_FALSE(policy.may_see(user("social-care-practitioner"), "mental-health"));
  CHECK_FALSE(policy.may_see(user("paramedic"), "mental-health"));
  CHECK_FALSE(policy.may_see(user("ig-officer"), "mental-health"));
  CHECK_FALSE(policy.may_see(user(""), "mental-health"));
  CHECK_FALSE(policy.may_see(system_client(), "sexual-health"));

  // "*" means every configured category.
  auto config = default_policy();
  config.roles[0].sensitive_categories = {"*"};
  auto wide = Policy::make(config);
  REQUIRE(wide.ok());
  CHECK(wide->may_see(user("clinician"), "sexual-health"));
  auto d = wide->authorise_patient(user("clinician"), registered_at("RX1"), "p-1", nullptr, kNow);
  CHECK(d.allowed_sensitive.size() == 5);
}

TEST_CASE("Policy::make: configuration errors name the role and the field") {
  struct Case {
    const char* what;
    void (*mutate)(PolicyConfig&);
    const char* role;
    const char* field;
  };
  const Case cases[] = {
      {"duplicate name", [](PolicyConfig& c) { c.roles[1].name = "clinician"; }, "clinician", "name"},
      {"shared claim value", [](PolicyConfig& c) { c.roles[1].claim_values.push_back("R8000"); }, "paramedic",
       "claim_values"},
      {"no claim values", [](PolicyConfig& c) { c.roles[2].claim_values.clear(); }, "social-care-practitioner",
       "claim_values"},
      {"unknown type", [](PolicyConfig& c) { c.roles[1].resource_types.push_back("Observations"); }, "paramedic",
       "resource_types"},
      {"abstract type", [](PolicyConfig& c) { c.roles[1].resource_types.push_back("DomainResource"); }, "paramedic",
       "resource_types"},
      {"AuditEvent listed", [](PolicyConfig& c) { c.roles[3].resource_types = {"AuditEvent"}; }, "ig-officer",
       "resource_types"},
      {"patient data on a non-clinical role", [](PolicyConfig& c) { c.roles[4].resource_types.push_back("Patient"); },
       "administrator", "resource_types"},
      {"wildcard on a non-clinical role", [](PolicyConfig& c) { c.roles[3].resource_types = {"*"}; }, "ig-officer",
       "resource_types"},
      {"unknown category", [](PolicyConfig& c) { c.roles[0].sensitive_categories.push_back("sexual_health"); },
       "clinician", "sensitive_categories"},
      {"bad permission bits", [](PolicyConfig& c) { c.roles[0].permissions = 0x40; }, "clinician", "permissions"},
      {"break-glass without clinical", [](PolicyConfig& c) { c.roles[4].break_glass = true; }, "administrator",
       "break_glass"},
      {"break-glass on a system role", [](PolicyConfig& c) { c.roles[5].break_glass = true; }, "system",
       "break_glass"},
  };
  for (const auto& tc : cases) {
    CAPTURE(tc.what);
    auto config = default_policy();
    REQUIRE(config.roles.size() == 6);
    tc.mutate(config);
    auto p = Policy::make(config);
    REQUIRE_FALSE(p.ok());
    CHECK(p.issue().code == fhir::ErrorCode::invalid_value);
    CHECK(contains(p.issue().diagnostics, std::string("'") + tc.role + "'"));
    CHECK(contains(p.issue().diagnostics, tc.field));
  }

  auto dup_category = default_policy();
  dup_category.sensitive_categories.push_back(dup_category.sensitive_categories[0]);
  CHECK_FALSE(Policy::make(dup_category).ok());
  auto empty_category = default_policy();
  empty_category.sensitive_categories[0].codes.clear();
  CHECK_FALSE(Policy::make(empty_category).ok());
  auto ttl = default_policy();
  ttl.break_glass_ttl = std::chrono::seconds(0);
  auto bad_ttl = Policy::make(ttl);
  REQUIRE_FALSE(bad_ttl.ok());
  CHECK(contains(bad_ttl.issue().diagnostics, "break_glass_ttl"));
  auto reasons = default_policy();
  reasons.break_glass_reasons.push_back("");
  CHECK_FALSE(Policy::make(reasons).ok());
}

TEST_CASE("Break-glass: a grant with a reason is time-limited and tied to one user and patient") {
  auto policy = make_default();
  BreakGlassRegistry registry;
  auto p = user("clinician");
  auto g = registry.grant(policy, p, "p-1", "emergency-care", "  unconscious, no GP details available  ", kNow);
  REQUIRE(g.ok());
  CHECK(g->subject == "user-1");
  CHECK(g->patient == "p-1");
  CHECK(g->reason_code == "emergency-care");
  CHECK(g->justification == "unconscious, no GP details available");
  CHECK(g->granted_at == kNow);
  CHECK(g->expires_at == kNow + policy.config().break_glass_ttl.count());

  CHECK(registry.active("user-1", "p-1", kNow + 60).has_value());
  CHECK_FALSE(registry.active("user-2", "p-1", kNow + 60).has_value());  // wrong subject
  CHECK_FALSE(registry.active("user-1", "p-2", kNow + 60).has_value());  // wrong patient
  CHECK_FALSE(registry.active("user-1", "p-1", g->expires_at).has_value());  // expired
  CHECK_FALSE(registry.active("user-1", "p-1", kNow - 1).has_value());  // not yet

  // The grant opens a record the user has no relationship with, marked as emergency access.
  const PatientFacts stranger = registered_at("Y0001");
  auto active = registry.active("user-1", "p-1", kNow + 60);
  auto d = policy.authorise_patient(p, stranger, "p-1", &*active, kNow + 60);
  CHECK(d.allowed);
  CHECK(d.break_glass);
  CHECK(contains(d.reason, "break-glass"));
  // Break-glass does not widen the sensitive categories.
  CHECK(d.allowed_sensitive == std::vector<std::string>{"mental-health"});

  PatientFacts objecting = registered_at("RX1");
  objecting.objection = true;
  auto o = policy.authorise_patient(p, objecting, "p-1", &*active, kNow + 60);
  CHECK(o.allowed);
  CHECK(o.break_glass);

  // With a relationship and no objection, the grant is not what allowed it.
  auto normal = policy.authorise_patient(p, registered_at("RX1"), "p-1", &*active, kNow + 60);
  CHECK(normal.allowed);
  CHECK_FALSE(normal.break_glass);
}

TEST_CASE("Break-glass: the server re-checks the grant it is handed") {
  auto policy = make_default();
  auto p = user("clinician");
  const PatientFacts stranger = registered_at("Y0001");
  BreakGlassGrant g{"user-1", "p-1", "emergency-care", "unconscious in resus", kNow, kNow + 3600};
  CHECK(policy.authorise_patient(p, stranger, "p-1", &g, kNow + 10).allowed);

  auto expired = policy.authorise_patient(p, stranger, "p-1", &g, kNow + 3600);
  CHECK_FALSE(expired.allowed);
  CHECK(expired.hide_existence);
  CHECK_FALSE(policy.authorise_patient(p, stranger, "p-2", &g, kNow + 10).allowed);  // wrong patient
  CHECK_FALSE(policy.authorise_patient(user("clinician", "user/*.rs", "user-2"), stranger, "p-1", &g, kNow + 10)
                  .allowed);  // wrong subject
  CHECK_FALSE(policy.authorise_patient(p, stranger, "p-1", &g, kNow - 10).allowed);  // before it was granted

  BreakGlassGrant bad_reason = g;
  bad_reason.reason_code = "curiosity";
  CHECK_FALSE(policy.authorise_patient(p, stranger, "p-1", &bad_reason, kNow + 10).allowed);

  // A role that may not break glass gets nothing from a grant, however it was obtained.
  auto social = user("social-care-practitioner");
  CHECK_FALSE(policy.authorise_patient(social, stranger, "p-1", &g, kNow + 10).allowed);

  // A role that lost break-glass in a configuration change: old grants stop working.
  auto config = default_policy();
  config.roles[0].break_glass = false;
  auto stricter = Policy::make(config);
  REQUIRE(stricter.ok());
  CHECK_FALSE(stricter->authorise_patient(p, stranger, "p-1", &g, kNow + 10).allowed);
}

TEST_CASE("Break-glass: refused without a valid reason, with short text, or for roles not allowed it") {
  auto policy = make_default();
  BreakGlassRegistry registry;
  auto p = user("clinician");
  const std::string text = "patient collapsed in A&E";

  auto no_reason = registry.grant(policy, p, "p-1", "", text, kNow);
  REQUIRE_FALSE(no_reason.ok());
  CHECK(no_reason.issue().code == fhir::ErrorCode::invalid_value);
  auto unknown = registry.grant(policy, p, "p-1", "because", text, kNow);
  REQUIRE_FALSE(unknown.ok());
  CHECK(unknown.issue().code == fhir::ErrorCode::invalid_value);
  CHECK(contains(unknown.issue().diagnostics, "emergency-care"));  // tells the user what is accepted

  auto short_text = registry.grant(policy, p, "p-1", "emergency-care", "urgent", kNow);
  REQUIRE_FALSE(short_text.ok());
  CHECK(short_text.issue().code == fhir::ErrorCode::invalid_value);
  auto padded = registry.grant(policy, p, "p-1", "emergency-care", "   urgent        ", kNow);
  CHECK_FALSE(padded.ok());
  auto control = registry.grant(policy, p, "p-1", "emergency-care", "collapsed\nin the waiting room", kNow);
  CHECK_FALSE(control.ok());
  auto huge = registry.grant(policy, p, "p-1", "emergency-care", std::string(1025, 'x'), kNow);
  CHECK_FALSE(huge.ok());
  // Ten characters, counted as characters and not bytes.
  CHECK(registry.grant(policy, p, "p-2", "emergency-care", "\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9" "abcde", kNow).ok());
  CHECK_FALSE(registry.grant(policy, p, "p-3", "emergency-care", "\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9" "abcd", kNow).ok());

  auto social = registry.grant(policy, user("social-care-practitioner"), "p-1", "safeguarding-concern", text, kNow);
  REQUIRE_FALSE(social.ok());
  CHECK(social.issue().code == fhir::ErrorCode::forbidden);
  auto ig = registry.grant(policy, user("ig-officer"), "p-1", "emergency-care", text, kNow);
  REQUIRE_FALSE(ig.ok());
  CHECK(ig.issue().code == fhir::ErrorCode::forbidden);
  auto sys = registry.grant(policy, system_client(), "p-1", "emergency-care", text, kNow);
  REQUIRE_FALSE(sys.ok());
  CHECK(sys.issue().code == fhir::ErrorCode::forbidden);
  auto none = registry.grant(policy, user(""), "p-1", "emergency-care", text, kNow);
  REQUIRE_FALSE(none.ok());
  CHECK(none.issue().code == fhir::ErrorCode::forbidden);
  CHECK(registry.grant(policy, user("paramedic"), "p-1", "patient-unable-to-consent", text, kNow).ok());

  // Nothing refused was recorded.
  CHECK_FALSE(registry.active("user-1", "p-3", kNow).has_value());
}

TEST_CASE("Break-glass: the registry is bounded; expired grants make room, active ones are never evicted") {
  auto policy = make_default();
  BreakGlassRegistry registry(2);
  const std::string text = "patient collapsed in A&E";
  const auto ttl = policy.config().break_glass_ttl.count();
  REQUIRE(registry.grant(policy, user("clinician", "user/*.rs", "u1"), "p-1", "emergency-care", text, kNow).ok());
  REQUIRE(registry.grant(policy, user("clinician", "user/*.rs", "u2"), "p-1", "emergency-care", text, kNow + 10).ok());

  auto full = registry.grant(policy, user("clinician", "user/*.rs", "u3"), "p-1", "emergency-care", text, kNow + 20);
  REQUIRE_FALSE(full.ok());
  CHECK(full.issue().code == fhir::ErrorCode::too_many_requests);
  CHECK(registry.active("u1", "p-1", kNow + 20).has_value());
  CHECK(registry.active("u2", "p-1", kNow + 20).has_value());

  // Renewing an existing grant needs no room.
  auto renewed = registry.grant(policy, user("clinician", "user/*.rs", "u2"), "p-1", "patient-unable-to-consent",
                                text, kNow + 30);
  REQUIRE(renewed.ok());
  CHECK(renewed->expires_at == kNow + 30 + ttl);

  // Once u1's grant has expired it is dropped to make room.
  auto later = registry.grant(policy, user("clinician", "user/*.rs", "u3"), "p-1", "emergency-care", text, kNow + ttl);
  REQUIRE(later.ok());
  CHECK(registry.active("u3", "p-1", kNow + ttl).has_value());
  CHECK(registry.active("u2", "p-1", kNow + ttl).has_value());
  CHECK_FALSE(registry.active("u1", "p-1", kNow + ttl).has_value());
}

TEST_CASE("RateLimiter: a burst is allowed, then refused with Retry-After, then refilled") {
  using namespace std::chrono;
  RateLimiter limiter(1.0, 3.0);
  const steady_clock::time_point t0{seconds(1000)};
  seconds retry{-1};
  for (int i = 0; i < 3; ++i) {
    CHECK(limiter.allow("client-a", t0, retry));
    CHECK(retry == seconds(0));
  }
  CHECK_FALSE(limiter.allow("client-a", t0, retry));
  CHECK(retry >= seconds(1));
  CHECK(limiter.allow("client-b", t0, retry));  // keys are independent

  CHECK_FALSE(limiter.allow("client-a", t0 + milliseconds(500), retry));
  CHECK(retry >= seconds(1));
  CHECK(limiter.allow("client-a", t0 + milliseconds(1000), retry));
  CHECK_FALSE(limiter.allow("client-a", t0 + milliseconds(1000), retry));

  // A long pause refills to the burst, never beyond.
  const auto later = t0 + hours(1);
  int allowed = 0;
  for (int i = 0; i < 10; ++i) allowed += limiter.allow("client-a", later, retry) ? 1 : 0;
  CHECK(allowed == 3);

  // A clock that appears to go backwards adds nothing.
  CHECK_FALSE(limiter.allow("client-a", t0, retry));
}

TEST_CASE("RateLimiter: Retry-After reflects the refill rate") {
  using namespace std::chrono;
  RateLimiter slow(0.5, 1.0);  // one request per two seconds
  const steady_clock::time_point t0{seconds(50)};
  seconds retry{0};
  CHECK(slow.allow("u", t0, retry));
  CHECK_FALSE(slow.allow("u", t0, retry));
  CHECK(retry == seconds(2));
  CHECK_FALSE(slow.allow("u", t0 + seconds(1), retry));
  CHECK(retry == seconds(1));
  CHECK(slow.allow("u", t0 + seconds(2), retry));
}

TEST_CASE("RateLimiter: the number of keys is bounded, least recently seen dropped first") {
  using namespace std::chrono;
  RateLimiter limiter(1.0, 2.0, 2);
  const steady_clock::time_point t0{seconds(100)};
  seconds retry{0};
  // Exhaust a, then b; both are still refilling, so neither can be dropped as "full".
  CHECK(limiter.allow("a", t0, retry));
  CHECK(limiter.allow("a", t0, retry));
  CHECK_FALSE(limiter.allow("a", t0, retry));
  CHECK(limiter.allow("b", t0 + milliseconds(100), retry));
  CHECK(limiter.allow("b", t0 + milliseconds(100), retry));
  // c needs room: a was seen least recently and is dropped; b keeps its empty bucket.
  CHECK(limiter.allow("c", t0 + milliseconds(200), retry));
  CHECK_FALSE(limiter.allow("b", t0 + milliseconds(250), retry));
  // a returns as a new key with a full burst; c (least recently seen now) made room.
  CHECK(limiter.allow("a", t0 + milliseconds(300), retry));
  CHECK(limiter.allow("a", t0 + milliseconds(300), retry));
  CHECK_FALSE(limiter.allow("b", t0 + milliseconds(300), retry));
  // Had c been kept it would hold 1.2 tokens; dropped, it comes back with the full burst of 2.
  CHECK(limiter.allow("c", t0 + milliseconds(400), retry));
  CHECK(limiter.allow("c", t0 + milliseconds(400), retry));
}

TEST_CASE("RateLimiter: nonsensical configuration is refused at start-up") {
  CHECK_THROWS_AS(RateLimiter(0.0, 5.0), std::invalid_argument);
  CHECK_THROWS_AS(RateLimiter(-1.0, 5.0), std::invalid_argument);
  CHECK_THROWS_AS(RateLimiter(1.0, 0.5), std::invalid_argument);
  CHECK_THROWS_AS(RateLimiter(1.0, 5.0, 0), std::invalid_argument);
  CHECK_NOTHROW(RateLimiter(0.5, 1.0, 1));
}

// ---------------------------------------------------------------------------------------------
// Authorisation matrix. The oracle below is written from the role table in
// docs/access-policy.md, in plain code that shares nothing with gateway/auth/policy.cpp.
// ---------------------------------------------------------------------------------------------
namespace {

struct OracleRole {
  std::string name;
  std::string claim;
  bool system_kind;            // held by system principals (certificates, backend services)
  bool all_types;
  std::set<std::string> types;
  std::string letters;         // cruds letters the role may ever use
  bool clinical;
  bool audit;
  bool emergency;              // purpose-of-use claim is a relationship
  bool break_glass;
  std::set<std::string> sensitive;
};

const std::vector<OracleRole>& oracle_roles() {
  static const std::vector<OracleRole> roles = {
      {"clinician", "R8000", false, true, {}, "rs", true, false, false, true, {"mental-health"}},
      {"paramedic", "paramedic", false, false, {"Patient", "Observation", "CarePlan", "Condition"}, "rs", true, false,
       true, true, {}},
      {"social-care-practitioner", "social-care-practitioner", false, false, {"Patient", "CarePlan", "Condition"},
       "rs", true, false, false, false, {"safeguarding"}},
      {"ig-officer", "R0001", false, false, {}, "rs", false, true, false, false, {}},
      {"administrator", "R8015", false, false, {"Endpoint"}, "cruds", false, false, false, false, {}},
      {"system", "system", true, false, {"Patient", "Observation", "CarePlan", "Condition"}, "cruds", true, false,
       false, false, {}},
  };
  return roles;
}

const std::vector<std::string> kTypes = {"Patient", "Observation", "CarePlan", "Condition", "Endpoint", "AuditEvent"};
bool oracle_patient_type(const std::string& t) { return t != "Endpoint" && t != "AuditEvent"; }

enum class State { normal, no_relationship, objection, sensitive, unknown };
const State kStates[] = {State::normal, State::no_relationship, State::objection, State::sensitive, State::unknown};

// patient_context: patient/ scopes with the patient claim naming the record asked about;
// other_patient: the same scopes launched with another patient.
enum class Scopes { matching, patient_context, other_patient, narrower, none, wrong_context, certificate };
const Scopes kScopeSets[] = {Scopes::matching, Scopes::patient_context, Scopes::other_patient, Scopes::narrower,
                             Scopes::none,     Scopes::wrong_context,   Scopes::certificate};

const Interaction kInteractions[] = {Interaction::read, Interaction::search, Interaction::create,
                                     Interaction::update, Interaction::remove};

char letter(Interaction i) {
  switch (i) {
    case Interaction::read: return 'r';
    case Interaction::search: return 's';
    case Interaction::create: return 'c';
    case Interaction::update: return 'u';
    case Interaction::remove: return 'd';
  }
  return '?';
}
bool is_write(Interaction i) { return letter(i) == 'c' || letter(i) == 'u' || letter(i) == 'd'; }

enum class Response { ok, ok_break_glass, forbidden, not_found };

// One code per sensitive category, plus one that is not sensitive.
const std::vector<std::pair<std::string, std::string>> kRecordCodes = {
    {"8098009", "sexual-health"},  {"386639001", "termination-of-pregnancy"}, {"93461009", "gender-identity"},
    {"836881000000105", "safeguarding"}, {"35489007", "mental-health"}, {"38341003", ""}};

Principal matrix_principal(const OracleRole& role, Scopes set, bool emergency_purpose) {
  const std::string ctx = role.system_kind ? "system" : "user";
  std::string text;
  switch (set) {
    case Scopes::matching: text = ctx + "/*.cruds"; break;
    case Scopes::patient_context:
    case Scopes::other_patient: text = "launch/patient patient/*.cruds"; break;
    case Scopes::narrower: text = ctx + "/Patient.r " + ctx + "/Observation.rs?category=laboratory"; break;
    case Scopes::none: text = "openid fhirUser launch/patient"; break;
    case Scopes::wrong_context: text = role.system_kind ? "user/*.cruds" : "system/*.cruds"; break;
    case Scopes::certificate: text = ""; break;
  }
  Principal p = user(role.claim, text, role.system_kind ? "RX1-adapter" : "user-1");
  p.kind = role.system_kind ? Principal::Kind::system : Principal::Kind::user;
  p.scopes_from_token = set != Scopes::certificate;
  if (emergency_purpose) p.purpose_of_use = "EMERGENCY";
  if (set == Scopes::patient_context) p.patient = "p-1";
  if (set == Scopes::other_patient) p.patient = "p-2";
  return p;
}

PatientFacts matrix_facts(State s) {
  PatientFacts f;
  f.registered_practice = s == State::no_relationship ? "Y0001" : "RX1";
  f.objection = s == State::objection;
  return f;
}

bool oracle_scope_grants(Scopes set, bool system_kind, const std::string& type, Interaction i) {
  switch (set) {
    case Scopes::matching: return true;
    case Scopes::patient_context:
    case Scopes::other_patient: return !system_kind && type != "AuditEvent";
    case Scopes::narrower: return type == "Patient" && i == Interaction::read;
    case Scopes::none: return false;
    case Scopes::wrong_context: return false;
    case Scopes::certificate: return true;
  }
  return false;
}

Response oracle(const OracleRole& role, const std::string& type, Interaction i, Scopes set, State state,
                bool grant, bool emergency_purpose) {
  const bool letter_ok = role.letters.find(letter(i)) != std::string::npos;
  bool type_ok;
  if (type == "AuditEvent") {
    type_ok = role.audit && (i == Interaction::read || i == Interaction::search) && letter_ok;
  } else {
    const bool listed = role.all_types || role.types.count(type) > 0;
    type_ok = listed && letter_ok && (role.clinical || !oracle_patient_type(type));
  }
  if (!type_ok || !oracle_scope_grants(set, role.system_kind, type, i)) return Response::forbidden;
  if (!oracle_patient_type(type)) return Response::ok;
  if (state == State::unknown) return Response::not_found;
  if (set == Scopes::other_patient) return Response::not_found;  // outside the launch context
  if (role.system_kind && is_write(i)) return Response::ok;
  const bool relationship =
      role.system_kind || state != State::no_relationship || (role.emergency && emergency_purpose);
  const bool blocked = !relationship || state == State::objection;
  if (!blocked) return Response::ok;
  if (grant && role.break_glass && !role.system_kind) return Response::ok_break_glass;
  return Response::not_found;
}

// The request path as the pipeline composes it: type check before any lookup; unknown
// patients are not found; system writes need no patient-level check; otherwise the
// patient-level decision, with a hidden patient answered exactly as an unknown one.
Response simulate(const Policy& policy, const Principal& p, const std::string& type, Interaction i, State state,
                  const BreakGlassGrant* grant, Decision* patient_decision) {
  Decision t = policy.authorise_type(p, type, i);
  // A search let through on constrained scopes is decided on its parameters (none here).
  if (t.allowed && t.limits.search_unchecked) t = policy.authorise_search(p, type, {});
  if (!t.allowed) return Response::forbidden;
  if (!oracle_patient_type(type)) return Response::ok;
  if (state == State::unknown) return Response::not_found;
  if (p.kind == Principal::Kind::system && is_write(i)) return Response::ok;
  *patient_decision = policy.authorise_patient(p, matrix_facts(state), "p-1", grant, kNow, t.limits.patient);
  if (patient_decision->allowed) return patient_decision->break_glass ? Response::ok_break_glass : Response::ok;
  return patient_decision->hide_existence ? Response::not_found : Response::forbidden;
}

bool discloses(Response r) { return r == Response::ok || r == Response::ok_break_glass; }

}  // namespace

TEST_CASE("Authorisation matrix: roles x patient states x interactions x scopes, zero disclosures beyond policy") {
  auto policy = make_default();
  REQUIRE(policy.config().roles.size() == oracle_roles().size());

  int cases = 0, allowed = 0, forbidden = 0, hidden = 0, break_glass = 0;
  int disclosures = 0, existence_leaks = 0, mismatches = 0;
  int sensitive_shown = 0, sensitive_withheld = 0, sensitive_disclosures = 0, sensitive_overwithheld = 0;

  for (const auto& config_role : policy.config().roles) {
    CAPTURE(config_role.name);
    const auto it = std::find_if(oracle_roles().begin(), oracle_roles().end(),
                                 [&](const OracleRole& o) { return o.name == config_role.name; });
    REQUIRE(it != oracle_roles().end());
    const OracleRole& role = *it;
    for (const auto& type : kTypes) {
      for (auto i : kInteractions) {
        for (auto set : kScopeSets) {
          for (bool emergency : {false, true}) {
            for (bool with_grant : {false, true}) {
              const Principal p = matrix_principal(role, set, emergency);
              // A grant as the registry would hold it (the policy must still refuse it for
              // roles without break-glass, which the registry would never have issued).
              const BreakGlassGrant g{p.subject, "p-1", "emergency-care", "collapsed at home", kNow - 60, kNow + 3600};
              Decision unknown_decision;
              const Response unknown_answer =
                  simulate(policy, p, type, i, State::unknown, with_grant ? &g : nullptr, &unknown_decision);
              for (auto state : kStates) {
                CAPTURE(type);
                CAPTURE(letter(i));
                CAPTURE(static_cast<int>(set));
                CAPTURE(static_cast<int>(state));
                CAPTURE(emergency);
                CAPTURE(with_grant);
                ++cases;
                Decision d;
                const Response got = simulate(policy, p, type, i, state, with_grant ? &g : nullptr, &d);
                const Response want = oracle(role, type, i, set, state, with_grant, emergency);

                if (discloses(got) && !discloses(want)) ++disclosures;
                if (got != want) ++mismatches;
                // No existence oracle: whatever hides a known patient answers as for an unknown one.
                if (state != State::unknown && !discloses(got) && got != unknown_answer) ++existence_leaks;

                if (got == Response::ok) ++allowed;
                if (got == Response::ok_break_glass) ++break_glass;
                if (got == Response::forbidden) ++forbidden;
                if (got == Response::not_found && state != State::unknown) ++hidden;

                // Sensitive entries in a record the principal may read.
                if (state == State::sensitive && discloses(got) && oracle_patient_type(type) && !is_write(i)) {
                  for (const auto& [code, oracle_category] : kRecordCodes) {
                    bool shown = true;
                    for (const auto& c : policy.categories_of(kSct, code)) {
                      const bool in_decision =
                          std::find(d.allowed_sensitive.begin(), d.allowed_sensitive.end(), c) !=
                          d.allowed_sensitive.end();
                      if (!policy.may_see(p, c) || !in_decision) shown = false;
                    }
                    const bool want_shown = oracle_category.empty() || role.sensitive.count(oracle_category) > 0;
                    if (shown && !want_shown) ++sensitive_disclosures;
                    if (!shown && want_shown) ++sensitive_overwithheld;
                    if (!oracle_category.empty()) (shown ? sensitive_shown : sensitive_withheld) += 1;
                  }
                }
              }
            }
          }
        }
      }
    }
  }

  MESSAGE("matrix cases: " << cases << ", allowed " << allowed << ", break-glass " << break_glass << ", forbidden "
                           << forbidden << ", hidden " << hidden);
  CHECK(cases == 6 * 6 * 5 * 7 * 2 * 2 * 5);
  CHECK(disclosures == 0);
  CHECK(existence_leaks == 0);
  CHECK(sensitive_disclosures == 0);
  CHECK(mismatches == 0);
  CHECK(sensitive_overwithheld == 0);
  // The matrix is not vacuous: every kind of answer occurs.
  CHECK(allowed > 0);
  CHECK(break_glass > 0);
  CHECK(forbidden > 0);
  CHECK(hidden > 0);
  CHECK(sensitive_shown > 0);
  CHECK(sensitive_withheld > 0);
}
