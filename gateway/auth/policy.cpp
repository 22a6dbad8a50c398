// SPDX-License-Identifier: Apache-2.0
// Access decisions (issue #5 items 3-6): role -> type/interaction -> scope -> relationship ->
// objection -> break-glass -> sensitive categories. Every refusal names the rule that failed
// and never the patient; see docs/access-policy.md for the operator's view.
#include "gateway/auth/policy.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <set>
#include <stdexcept>

#include "fhir/query_string.h"
#include "fhir/resource_types.h"

namespace gw::auth {
namespace {

constexpr std::string_view kSnomed = "http://snomed.info/sct";
constexpr std::string_view kAuditEvent = "AuditEvent";
constexpr std::size_t kMaxJustificationBytes = 1024;
constexpr std::int64_t kEncounterFutureSlack = 24 * 3600;

// Types that carry no patient data: directory, conformance and product definitions. Every
// other type is patient data and needs a clinical role (AuditEvent is the IG view's own).
constexpr std::array<std::string_view, 18> kNonPatientTypes{
    "CapabilityStatement", "CodeSystem", "ConceptMap", "Endpoint", "HealthcareService",
    "ImplementationGuide", "Location", "Medication", "NamingSystem", "OperationDefinition",
    "Organization", "OrganizationAffiliation", "Practitioner", "PractitionerRole", "SearchParameter",
    "StructureDefinition", "TerminologyCapabilities", "ValueSet"};

bool is_patient_data_type(std::string_view type) {
  return type != kAuditEvent &&
         std::find(kNonPatientTypes.begin(), kNonPatientTypes.end(), type) == kNonPatientTypes.end();
}

template <class C, class V>
bool contains(const C& c, const V& v) {
  return std::find(c.begin(), c.end(), v) != c.end();
}

std::string interaction_name(Interaction i) {
  switch (i) {
    case Interaction::read: return "read";
    case Interaction::search: return "search";
    case Interaction::create: return "create";
    case Interaction::update: return "update";
    case Interaction::remove: return "delete";
  }
  return "unknown";
}

Decision deny(std::string reason, bool hide = false) {
  Decision d;
  d.hide_existence = hide;
  d.reason = std::move(reason);
  return d;
}

std::string role_text(std::string_view what, const RolePolicy& role) {
  std::string s(what);
  s.append(" for role '").append(role.name).append("'");
  return s;
}

// A token may carry a role claim whose value no configured role lists: say so and name it
// (matching is exact and case-sensitive, the likeliest slip), rather than "no role". The
// value is cut at a character boundary: it goes into diagnostics and the audit record.
std::string no_role_text(const Principal& p) {
  if (p.role_claim.empty()) return "no role in token";
  constexpr std::size_t kMaxShown = 64;
  std::size_t n = std::min(p.role_claim.size(), kMaxShown);
  while (n > 0 && n < p.role_claim.size() && (static_cast<unsigned char>(p.role_claim[n]) & 0xC0) == 0x80) --n;
  std::string s = "role claim value '";
  s.append(p.role_claim, 0, n).append(n < p.role_claim.size() ? "...'" : "'");
  s.append(" is not mapped to any configured role (values match exactly, case-sensitively)");
  return s;
}

std::vector<std::string> visible_categories(const PolicyConfig& config, const RolePolicy& role) {
  if (!role.clinical) return {};
  if (contains(role.sensitive_categories, std::string("*"))) {
    std::vector<std::string> all;
    for (const auto& c : config.sensitive_categories) all.push_back(c.name);
    return all;
  }
  return role.sensitive_categories;
}

// The scope context a principal's token uses without a bound: user/ for users, system/ for
// system clients. Users may also act through patient/ scopes, bound to their patient context.
ScopeContext own_context(const Principal& p) {
  return p.kind == Principal::Kind::system ? ScopeContext::system : ScopeContext::user;
}

// Role-level rules shared by authorise_type and authorise_search. Returns the denial, or
// nullopt when the role allows (type, interaction).
std::optional<Decision> role_denies(const RolePolicy* role, const Principal& p, std::string_view type,
                                    Interaction i) {
  if (role == nullptr) return deny(no_role_text(p));
  // A role without the relationship rule is for system principals: a user token claiming it
  // must not bypass the relationship check (issue #5 item 4).
  if (p.kind == Principal::Kind::user && !role->requires_relationship) {
    return deny(role_text("user tokens may not hold the system-only role", *role));
  }
  // And the mirror: system/ scopes make a backend-service principal, which needs no
  // relationship, so they may come only with a role that needs none. A user role with
  // system/ scopes would otherwise read every record.
  if (p.kind == Principal::Kind::system && role->requires_relationship) {
    return deny(role_text("system/ scopes may not be used with a user role", *role));
  }
  if (type == kAuditEvent) {
    if (!role->audit_access) return deny(role_text("no audit access", *role));
    if (i != Interaction::read && i != Interaction::search) {
      return deny("AuditEvent is read-only through the FHIR API");
    }
  } else {
    if (is_patient_data_type(type) && !role->clinical) {
      return deny(role_text("patient data not permitted", *role));
    }
    if (!contains(role->resource_types, std::string("*")) && !contains(role->resource_types, type)) {
      return deny(role_text(std::string("resource type ").append(type).append(" not permitted"), *role));
    }
  }
  if (!(role->permissions & permission_for(i))) {
    return deny(role_text(interaction_name(i).append(" not permitted"), *role));
  }
  return std::nullopt;
}

std::string scope_denial(std::string_view type, Interaction i) {
  std::string s = "token scopes do not grant ";
  s.append(interaction_name(i)).append(" on ").append(type);
  return s;
}

Decision allow(const PolicyConfig& config, const RolePolicy& role, std::string reason) {
  Decision d;
  d.allowed = true;
  d.reason = std::move(reason);
  d.allowed_sensitive = visible_categories(config, role);
  return d;
}

// Access granted by patient/ scopes (SMART App Launch v2 "scopes-and-launch-context"): bound to
// the patient in the token's launch context. Directory types hold no patient to bind; the IG
// view is about every patient's accesses, so no launch context can narrow it.
Decision patient_scoped(const PolicyConfig& config, const RolePolicy& role, const Principal& p,
                        std::string_view type) {
  if (type == kAuditEvent) return deny("patient/ scopes do not grant the audit trail (AuditEvent); it needs user/ scopes");
  if (!is_patient_data_type(type)) return allow(config, role, "role and patient/ scopes allow (not patient data)");
  if (p.patient.empty()) {
    std::string s = "token scopes grant ";
    s.append(type).append(
        " only through patient/ scopes, and the token names no patient (no patient claim): launch the app with a "
        "patient context, or ask for user/ scopes");
    return deny(std::move(s));
  }
  Decision d = allow(config, role, "role and patient/ scopes allow, for the token's patient only");
  d.limits.patient = p.patient;
  return d;
}

// The refusal of a search that only constrained scopes could grant: names the constraints of
// one such scope, so the client can see what its token allows. Scope text is the client's own.
std::string constrained_denial(const Principal& p, std::string_view type) {
  for (const auto& s : p.scopes.resource_scopes) {
    if (s.constraints.empty() || !(s.permissions & kSearch) || s.context == ScopeContext::system) continue;
    if (s.resource_type != "*" && s.resource_type != type) continue;
    std::string text = "token scopes grant search on ";
    text.append(type).append(" only with ");
    for (std::size_t i = 0; i < s.constraints.size(); ++i) {
      if (i > 0) text.append("&");
      text.append(s.constraints[i].first).append("=").append(s.constraints[i].second);
    }
    if (text.size() > 300) text = text.substr(0, 300) + "...";
    text.append(", and this search does not carry it");
    return text;
  }
  return scope_denial(type, Interaction::search);
}

bool has_constrained_search(const Principal& p, std::string_view type) {
  return std::any_of(p.scopes.resource_scopes.begin(), p.scopes.resource_scopes.end(), [&](const ResourceScope& s) {
    return !s.constraints.empty() && (s.permissions & kSearch) && (s.resource_type == "*" || s.resource_type == type) &&
           (s.context == own_context(p) || (p.kind == Principal::Kind::user && s.context == ScopeContext::patient));
  });
}

fhir::Issue config_error(std::string_view role, std::string_view field, std::string_view why) {
  std::string text = "policy role '";
  text.append(role).append("' field ").append(field).append(": ").append(why);
  std::string expression = "roles.";
  expression.append(role).append(".").append(field);
  return fhir::Issue::make(fhir::ErrorCode::invalid_value, std::move(text), std::move(expression));
}

fhir::Issue config_error(std::string_view field, std::string_view why) {
  std::string text = "policy field ";
  text.append(field).append(": ").append(why);
  return fhir::Issue::make(fhir::ErrorCode::invalid_value, std::move(text), std::string(field));
}

fhir::Status validate_role(const PolicyConfig& config, const RolePolicy& r) {
  if (r.claim_values.empty()) return config_error(r.name, "claim_values", "at least one value is needed");
  for (const auto& v : r.claim_values) {
    if (v.empty()) return config_error(r.name, "claim_values", "empty value");
  }
  for (const auto& t : r.resource_types) {
    if (t == "*") {
      if (!r.clinical) return config_error(r.name, "resource_types", "'*' includes patient data but the role is not clinical");
      continue;
    }
    if (t == kAuditEvent) {
      return config_error(r.name, "resource_types", "AuditEvent is granted by audit_access, not listed");
    }
    if (t == "DomainResource" || t == "Resource" || !fhir::is_r4_resource_type(t)) {
      return config_error(r.name, "resource_types", std::string("'").append(t).append("' is not an R4 resource type"));
    }
    if (!r.clinical && is_patient_data_type(t)) {
      return config_error(r.name, "resource_types",
                          std::string("'").append(t).append("' is patient data but the role is not clinical"));
    }
  }
  if (r.permissions & ~kAllPermissions) return config_error(r.name, "permissions", "unknown permission bits");
  if (r.break_glass && !r.clinical) return config_error(r.name, "break_glass", "only clinical roles may break glass");
  if (r.break_glass && !r.requires_relationship) {
    return config_error(r.name, "break_glass", "a role without the relationship rule has nothing to break");
  }
  for (const auto& c : r.sensitive_categories) {
    if (c == "*") continue;
    const bool known = std::any_of(config.sensitive_categories.begin(), config.sensitive_categories.end(),
                                   [&](const SensitiveCategory& s) { return s.name == c; });
    if (!known) {
      return config_error(r.name, "sensitive_categories", std::string("unknown category '").append(c).append("'"));
    }
  }
  return fhir::Ok{};
}

// Length in Unicode scalar values of valid UTF-8 (continuation bytes not counted).
std::size_t utf8_length(std::string_view s) {
  return static_cast<std::size_t>(
      std::count_if(s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
}

std::string_view trim(std::string_view s) {
  const auto first = s.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return {};
  const auto last = s.find_last_not_of(" \t\r\n");
  return s.substr(first, last - first + 1);
}

}  // namespace

std::uint8_t permission_for(Interaction i) {
  switch (i) {
    case Interaction::read: return kRead;
    case Interaction::search: return kSearch;
    case Interaction::create: return kCreate;
    case Interaction::update: return kUpdate;
    case Interaction::remove: return kDelete;
  }
  return 0;
}

PolicyConfig default_policy() {
  PolicyConfig c;
  const std::string sct(kSnomed);
  // Example code lists, to be reviewed by the organisation's Caldicott Guardian. Matching is
  // exact on (system, code): list the descendants you need, there is no subsumption here.
  c.sensitive_categories = {
      {"sexual-health",
       {{sct, "8098009"},      // Sexually transmitted infectious disease
        {sct, "86406008"},     // Human immunodeficiency virus infection
        {sct, "165816005"},    // HIV positive
        {sct, "15628003"},     // Gonorrhoea
        {sct, "76272004"}}},   // Syphilis
      {"termination-of-pregnancy",
       {{sct, "386639001"},    // Termination of pregnancy (procedure)
        {sct, "57797005"}}},   // Induced termination of pregnancy
      {"gender-identity",
       {{sct, "93461009"},     // Gender dysphoria
        {sct, "407374003"},    // Transsexual
        {sct, "407376001"},    // Male-to-female transsexual
        {sct, "407377005"}}},  // Female-to-male transsexual
      {"safeguarding",
       {{sct, "836881000000105"},   // Child is cause for safeguarding concern
        {sct, "878111000000109"},   // Unborn child is cause for safeguarding concern
        {sct, "342191000000101"},   // Subject to child protection plan
        {sct, "417430008"}}},       // Vulnerable adult
      {"mental-health",
       {{sct, "74732009"},     // Mental disorder
        {sct, "35489007"},     // Depressive disorder
        {sct, "58214004"},     // Schizophrenia
        {sct, "13746004"}}},   // Bipolar disorder
  };
  c.emergency_purposes = {"EMERGENCY", "ETREAT"};
  c.break_glass_reasons = {"emergency-care", "patient-unable-to-consent", "safeguarding-concern"};

  const std::uint8_t rs = kRead | kSearch;
  RolePolicy clinician;
  clinician.name = "clinician";
  // National RBAC: R8000 Clinical Practitioner, R8001 Nurse, R8003 Health Professional access roles.
  clinician.claim_values = {"R8000", "R8001", "R8003", "clinician"};
  clinician.resource_types = {"*"};
  clinician.permissions = rs;
  clinician.clinical = true;
  clinician.break_glass = true;
  clinician.sensitive_categories = {"mental-health"};

  RolePolicy paramedic;
  paramedic.name = "paramedic";
  paramedic.claim_values = {"paramedic"};
  paramedic.resource_types = {"Patient", "AllergyIntolerance", "Condition", "MedicationStatement",
                              "MedicationRequest", "Immunization", "Procedure", "Observation",
                              "DiagnosticReport", "Encounter", "CarePlan", "Composition", "DocumentReference",
                              "Flag"};
  paramedic.permissions = rs;
  paramedic.clinical = true;
  paramedic.emergency_purpose = true;
  paramedic.break_glass = true;

  RolePolicy social;
  social.name = "social-care-practitioner";
  social.claim_values = {"social-care-practitioner"};
  social.resource_types = {"Patient", "CarePlan", "CareTeam", "Condition", "AllergyIntolerance",
                           "MedicationStatement", "Encounter", "DocumentReference", "Flag"};
  social.permissions = rs;
  social.clinical = true;
  social.sensitive_categories = {"safeguarding"};

  RolePolicy ig;
  ig.name = "ig-officer";
  // R0001 Privacy Officer, R5105 Caldicott Guardian.
  ig.claim_values = {"R0001", "R5105", "ig-officer"};
  ig.permissions = rs;
  ig.audit_access = true;

  RolePolicy admin;
  admin.name = "administrator";
  // R8015 Systems Support.
  admin.claim_values = {"R8015", "administrator"};
  admin.resource_types = {"Endpoint", "Organization"};
  admin.permissions = kAllPermissions;

  RolePolicy system;
  system.name = "system";
  system.claim_values = {"system"};
  system.resource_types = {"Patient", "Encounter", "Observation", "DiagnosticReport", "DocumentReference",
                           "Condition", "AllergyIntolerance", "MedicationStatement", "MedicationRequest",
                           "Immunization", "Procedure", "CarePlan", "CareTeam", "Composition", "Flag"};
  system.permissions = kAllPermissions;
  system.clinical = true;
  system.requires_relationship = false;

  c.roles = {clinician, paramedic, social, ig, admin, system};
  return c;
}

fhir::Result<Policy> Policy::make(PolicyConfig config) {
  std::set<std::string> names, claims, categories;
  for (const auto& s : config.sensitive_categories) {
    if (s.name.empty() || s.name == "*") return config_error("sensitive_categories", "a category needs a name other than '*'");
    if (!categories.insert(s.name).second) {
      return config_error("sensitive_categories", std::string("duplicate category '").append(s.name).append("'"));
    }
    if (s.codes.empty()) {
      return config_error("sensitive_categories", std::string("category '").append(s.name).append("' has no codes"));
    }
    for (const auto& [sys, code] : s.codes) {
      if (sys.empty() || code.empty()) {
        return config_error("sensitive_categories",
                            std::string("category '").append(s.name).append("' has a code without system or value"));
      }
    }
  }
  for (const auto& r : config.roles) {
    if (r.name.empty()) return config_error("roles", "a role needs a name");
    if (!names.insert(r.name).second) return config_error(r.name, "name", "duplicate role name");
    for (const auto& v : r.claim_values) {
      if (!claims.insert(v).second) {
        return config_error(r.name, "claim_values", std::string("'").append(v).append("' is used by another role"));
      }
    }
    if (auto ok = validate_role(config, r); !ok.ok()) return std::move(ok).issue();
  }
  for (const auto& p : config.emergency_purposes) {
    if (p.empty()) return config_error("emergency_purposes", "empty value");
  }
  for (const auto& b : config.break_glass_reasons) {
    if (b.empty()) return config_error("break_glass_reasons", "empty value");
  }
  if (config.break_glass_ttl.count() <= 0) return config_error("break_glass_ttl", "must be positive");
  if (config.encounter_window.count() < 0) return config_error("encounter_window", "must not be negative");
  if (config.break_glass_min_text > kMaxJustificationBytes) {
    return config_error("break_glass_min_text", "must be at most 1024");
  }
  return Policy(std::move(config));
}

const RolePolicy* Policy::role(const Principal& p) const {
  if (p.role_claim.empty()) return nullptr;
  for (const auto& r : config_.roles) {
    if (contains(r.claim_values, p.role_claim)) return &r;
  }
  return nullptr;
}

Decision Policy::authorise_type(const Principal& p, std::string_view resource_type, Interaction i) const {
  const RolePolicy* r = role(p);
  if (auto denied = role_denies(r, p, resource_type, i)) return std::move(*denied);
  if (!p.scopes_from_token) return allow(config_, *r, "role allows (no token scopes)");
  const std::uint8_t wanted = permission_for(i);
  // Unbound scopes first: a token holding user/Observation.rs and patient/Observation.rs
  // reads as its user/ scope allows.
  if (p.scopes.permissions(own_context(p), resource_type) & wanted) return allow(config_, *r, "role and scopes allow");
  if (p.kind == Principal::Kind::user && (p.scopes.permissions(ScopeContext::patient, resource_type) & wanted))
    return patient_scoped(config_, *r, p, resource_type);
  // Constrained scopes grant searches only, and only those carrying their constraints: the
  // route's handler decides once it knows the parameters it applies. The IG view has none.
  if (i == Interaction::search && resource_type != kAuditEvent && has_constrained_search(p, resource_type)) {
    Decision d = allow(config_, *r, "constrained scopes: the search parameters decide");
    d.limits.search_unchecked = true;
    return d;
  }
  return deny(scope_denial(resource_type, i));
}

Decision Policy::authorise_search(const Principal& p, std::string_view resource_type,
                                  const std::vector<std::pair<std::string, std::string>>& params) const {
  const RolePolicy* r = role(p);
  if (auto denied = role_denies(r, p, resource_type, Interaction::search)) return std::move(*denied);
  if (!p.scopes_from_token) return allow(config_, *r, "role allows (no token scopes)");
  if (p.scopes.allows_search(own_context(p), resource_type, params)) return allow(config_, *r, "role and scopes allow");
  if (p.kind == Principal::Kind::user && p.scopes.allows_search(ScopeContext::patient, resource_type, params))
    return patient_scoped(config_, *r, p, resource_type);
  return deny(constrained_denial(p, resource_type));
}

Decision Policy::authorise_patient(const Principal& p, const PatientFacts& facts, const std::string& patient_id,
                                   const BreakGlassGrant* active_grant, std::int64_t now,
                                   std::string_view patient_context) const {
  const RolePolicy* r = role(p);
  if (r == nullptr) return deny(no_role_text(p));
  if (!r->clinical) return deny(role_text("patient data not permitted", *r));
  const bool user = p.kind == Principal::Kind::user;
  if (user && !r->requires_relationship) return deny(role_text("user tokens may not hold the system-only role", *r));
  if (!user && r->requires_relationship) return deny(role_text("system/ scopes may not be used with a user role", *r));
  // patient/ scopes reach the launch-context patient only. Any other patient is answered as an
  // unknown one, so a patient-context app cannot learn who else is a patient; a break-glass
  // grant does not widen the token's context either.
  if (!patient_context.empty() && patient_id != patient_context)
    return deny("outside the token's patient context", true);

  // The grant is re-checked here on every request it covers, whatever the caller looked up:
  // same user, same patient, not expired, a reason still configured, a role still allowed it.
  const bool grant_ok = user && active_grant != nullptr && r->break_glass && !p.subject.empty() &&
                        !patient_id.empty() && active_grant->subject == p.subject &&
                        active_grant->patient == patient_id && active_grant->granted_at <= now &&
                        now < active_grant->expires_at &&
                        contains(config_.break_glass_reasons, active_grant->reason_code);

  // The first basis found, strongest first: a standing relationship before an emergency one.
  std::string basis = user ? "" : "system";  // system principals need no relationship
  if (user) {
    const auto& org = p.organisation;
    const std::int64_t window = config_.encounter_window.count();
    if (!org.empty() && facts.registered_practice == org) basis = "registered-practice";
    if (basis.empty() && ((!p.subject.empty() && contains(facts.care_team, p.subject)) ||
                          (!org.empty() && contains(facts.care_team, org)))) {
      basis = "care-team";
    }
    for (const auto& [where, when] : facts.encounters) {
      if (basis.empty() && !org.empty() && where == org && when >= now - window && when <= now + kEncounterFutureSlack) {
        basis = "encounter";
      }
    }
    if (basis.empty() && r->emergency_purpose && !p.purpose_of_use.empty() &&
        contains(config_.emergency_purposes, p.purpose_of_use)) {
      basis = "emergency-purpose";
    }
  }

  if (basis.empty()) {
    if (!grant_ok) return deny("no legitimate relationship", true);
    Decision d = allow(config_, *r, "break-glass grant (no legitimate relationship)");
    d.break_glass = true;
    d.basis = "break-glass";
    return d;
  }
  if (facts.objection) {
    if (!grant_ok) return deny("patient objection recorded", true);
    Decision d = allow(config_, *r, "break-glass grant (patient objection recorded)");
    d.break_glass = true;
    d.basis = "break-glass";
    return d;
  }
  Decision d = allow(config_, *r, user ? "legitimate relationship" : "system principal");
  d.basis = std::move(basis);
  return d;
}

bool Policy::emergency_basis(const Principal& p) const {
  const RolePolicy* r = role(p);
  return p.kind == Principal::Kind::user && r != nullptr && r->clinical && r->requires_relationship &&
         r->emergency_purpose && !p.purpose_of_use.empty() && contains(config_.emergency_purposes, p.purpose_of_use);
}

std::vector<std::string> Policy::categories_of(std::string_view system, std::string_view code) const {
  std::vector<std::string> out;
  for (const auto& c : config_.sensitive_categories) {
    const bool hit = std::any_of(c.codes.begin(), c.codes.end(),
                                 [&](const auto& sc) { return sc.first == system && sc.second == code; });
    if (hit) out.push_back(c.name);
  }
  return out;
}

bool Policy::may_see(const Principal& p, std::string_view category) const {
  const RolePolicy* r = role(p);
  if (r == nullptr || !r->clinical) return false;
  return contains(r->sensitive_categories, std::string("*")) || contains(r->sensitive_categories, category);
}

fhir::Result<BreakGlassGrant> BreakGlassRegistry::grant(const Policy& policy, const Principal& p,
                                                        const std::string& patient_id, std::string reason_code,
                                                        std::string justification, std::int64_t now) {
  const RolePolicy* r = policy.role(p);
  if (r == nullptr) return fhir::Issue::make(fhir::ErrorCode::forbidden, no_role_text(p) + ": break-glass refused");
  if (p.kind != Principal::Kind::user || !r->break_glass || !r->clinical) {
    return fhir::Issue::make(fhir::ErrorCode::forbidden, role_text("break-glass not permitted", *r));
  }
  if (p.subject.empty()) return fhir::Issue::make(fhir::ErrorCode::forbidden, "break-glass needs a user subject");
  if (patient_id.empty()) {
    return fhir::Issue::make(fhir::ErrorCode::invalid_value, "break-glass needs a patient", "patient");
  }
  const auto& reasons = policy.config().break_glass_reasons;
  if (reason_code.empty() || !contains(reasons, reason_code)) {
    std::string text = "break-glass reason code missing or unknown; accepted codes:";
    for (const auto& code : reasons) text.append(" ").append(code);
    return fhir::Issue::make(fhir::ErrorCode::invalid_value, std::move(text), "reason");
  }
  const auto text = trim(justification);
  if (justification.size() > kMaxJustificationBytes || !fhir::is_valid_utf8(justification) ||
      std::any_of(justification.begin(), justification.end(),
                  [](char c) { return static_cast<unsigned char>(c) < 0x20 && c != ' '; })) {
    return fhir::Issue::make(fhir::ErrorCode::invalid_value,
                             "break-glass justification must be at most 1024 bytes of single-line UTF-8 text",
                             "justification");
  }
  if (utf8_length(text) < policy.config().break_glass_min_text) {
    std::string msg = "break-glass justification must be at least ";
    msg.append(std::to_string(policy.config().break_glass_min_text)).append(" characters");
    return fhir::Issue::make(fhir::ErrorCode::invalid_value, std::move(msg), "justification");
  }

  BreakGlassGrant g;
  g.subject = p.subject;
  g.patient = patient_id;
  g.reason_code = std::move(reason_code);
  g.justification = std::string(text);
  g.granted_at = now;
  g.expires_at = now + policy.config().break_glass_ttl.count();

  std::lock_guard lock(mu_);
  auto key = std::make_pair(g.subject, g.patient);
  if (grants_.find(key) == grants_.end() && grants_.size() >= max_) {
    // Expired grants go first. An active grant is never evicted to make room: that would end
    // someone's emergency access silently, so the new request is refused instead.
    for (auto it = grants_.begin(); it != grants_.end();) {
      it = it->second.expires_at <= now ? grants_.erase(it) : std::next(it);
    }
    if (grants_.size() >= max_) {
      return fhir::Issue::make(fhir::ErrorCode::too_many_requests,
                               "too many active break-glass grants; try again later or contact the IG team");
    }
  }
  grants_[std::move(key)] = g;  // a repeat request renews the grant with the new reason
  return g;
}

std::optional<BreakGlassGrant> BreakGlassRegistry::active(const std::string& subject, const std::string& patient_id,
                                                          std::int64_t now) const {
  std::lock_guard lock(mu_);
  auto it = grants_.find(std::make_pair(subject, patient_id));
  if (it == grants_.end() || now < it->second.granted_at || now >= it->second.expires_at) return std::nullopt;
  return it->second;
}

RateLimiter::RateLimiter(double per_second, double burst, std::size_t max_keys)
    : rate_(per_second), burst_(burst), max_keys_(max_keys) {
  if (!(per_second > 0) || !std::isfinite(per_second) || !(burst >= 1) || !std::isfinite(burst) || max_keys == 0) {
    throw std::invalid_argument("rate limit: per_second > 0, burst >= 1 and max_keys > 0 are required");
  }
}

bool RateLimiter::allow(const std::string& key, std::chrono::steady_clock::time_point now,
                        std::chrono::seconds& retry_after) {
  std::lock_guard lock(mu_);
  auto it = buckets_.find(key);
  if (it == buckets_.end()) {
    if (buckets_.size() >= max_keys_) {
      // Buckets that have refilled completely are indistinguishable from new ones: drop them
      // all. If none has, drop the least recently seen.
      const auto full_after = std::chrono::duration<double>(burst_ / rate_);
      for (auto b = buckets_.begin(); b != buckets_.end();) {
        b = (now - b->second.last >= full_after) ? buckets_.erase(b) : std::next(b);
      }
      if (buckets_.size() >= max_keys_) {
        auto oldest = std::min_element(buckets_.begin(), buckets_.end(),
                                       [](const auto& a, const auto& b) { return a.second.last < b.second.last; });
        buckets_.erase(oldest);
      }
    }
    it = buckets_.emplace(key, Bucket{burst_, now}).first;
  }
  Bucket& b = it->second;
  if (now > b.last) {  // a clock that appears to go back adds nothing
    const double elapsed = std::chrono::duration<double>(now - b.last).count();
    b.tokens = std::min(burst_, b.tokens + elapsed * rate_);
    b.last = now;
  }
  if (b.tokens >= 1.0) {
    b.tokens -= 1.0;
    retry_after = std::chrono::seconds(0);
    return true;
  }
  const double wait = std::ceil((1.0 - b.tokens) / rate_);
  retry_after = std::chrono::seconds(static_cast<std::int64_t>(std::clamp(wait, 1.0, 86400.0)));
  return false;
}

}  // namespace gw::auth
