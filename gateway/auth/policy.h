// SPDX-License-Identifier: Apache-2.0
// Who may do what (issue #5 items 3-6, 8): roles from a token claim, each with its permitted
// resource types and interactions from configuration; SMART scopes only narrow what the role
// allows; a legitimate relationship is needed for user access to a patient; break-glass grants
// are time-limited per user and patient and re-checked on every request; recorded objection
// hides the shared record except under break-glass; sensitive categories are withheld unless
// the role may see them. Pure decisions: no I/O, no clock reads (callers pass `now`), so the
// authorisation matrix tests can enumerate them.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fhir/result.h"
#include "gateway/auth/scopes.h"

namespace gw::auth {

struct RolePolicy {
  std::string name;                      // "clinician", "paramedic", ...
  std::vector<std::string> claim_values; // role-claim values meaning this role (e.g. CIS2 role codes)
  std::vector<std::string> resource_types;  // "*" = every type the gateway serves
  std::uint8_t permissions = 0;          // cruds mask the role may ever have
  bool clinical = false;                 // may see patient data at all
  bool audit_access = false;             // may use the IG view (AuditEvent, reports)
  bool requires_relationship = true;     // user/ and patient/ access needs a legitimate relationship;
                                         // false = system-only role (a user token holding it gets nothing)
  bool emergency_purpose = false;        // a purpose-of-use claim counts as the relationship
  bool break_glass = false;              // may invoke break-glass
  std::vector<std::string> sensitive_categories;  // categories this role may see ("*" = all)
};

struct SensitiveCategory {
  std::string name;                                      // "sexual-health", ...
  std::vector<std::pair<std::string, std::string>> codes;  // (system, code)
};

struct PolicyConfig {
  std::vector<RolePolicy> roles;
  std::vector<SensitiveCategory> sensitive_categories;
  std::vector<std::string> emergency_purposes;      // purpose-of-use values accepted, e.g. "EMERGENCY"
  std::vector<std::string> break_glass_reasons;     // reason codes accepted
  std::chrono::seconds break_glass_ttl{4 * 3600};
  std::chrono::seconds encounter_window{90 * 24 * 3600};
  std::size_t break_glass_min_text = 10;            // characters of free-text justification
};

// The defaults the issue names: clinician, paramedic, social-care-practitioner, ig-officer,
// administrator, system; England-shaped sensitive categories and break-glass reasons.
PolicyConfig default_policy();

// Who is asking, as the pipeline established it (token or client certificate).
struct Principal {
  enum class Kind { user, system };
  Kind kind = Kind::user;
  std::string subject;        // user id, or source-system ODS for a certificate
  std::string role_claim;     // raw role-claim value
  std::string organisation;   // ODS code
  std::string client_id;
  std::string token_id;
  std::string purpose_of_use;
  // SMART launch context: the token's patient claim, a Patient logical id of this gateway.
  // patient/ scopes grant access to this one patient only; empty = no patient context.
  std::string patient;
  ScopeSet scopes;
  bool scopes_from_token = true;  // false for certificates: role alone decides
};

enum class Interaction { read, search, create, update, remove };
std::uint8_t permission_for(Interaction i);

// What the locator knows that bears on a legitimate relationship.
struct PatientFacts {
  std::string registered_practice;                 // ODS
  std::vector<std::string> care_team;              // member ids: user subjects or organisation ODS codes
  std::vector<std::pair<std::string, std::int64_t>> encounters;  // (organisation ODS, epoch seconds)
  bool objection = false;                          // recorded dissent to sharing
};

struct BreakGlassGrant {
  std::string subject;
  std::string patient;
  std::string reason_code;
  std::string justification;
  std::int64_t granted_at = 0;
  std::int64_t expires_at = 0;
};

// What the scopes that granted a type-level decision bind the request to, beyond the role
// (docs/access-policy.md "Scopes"). The pipeline hands it to the route's handler.
struct ScopeLimits {
  // Granted by patient/ scopes only: the one patient (the token's patient claim) the request
  // may concern. Every other patient is answered as an unknown one.
  std::string patient;
  // Only constrained scopes ("user/Observation.rs?code=...") may grant this search: the handler
  // must check the parameters it applies with Policy::authorise_search before it discloses
  // anything (PatientGate::check_search_scopes); the pipeline refuses the answer otherwise.
  bool search_unchecked = false;
};

struct Decision {
  bool allowed = false;
  bool break_glass = false;  // allowed only because of an active grant: mark the response
  // When !allowed: forbidden (role/scope), or hidden (answer exactly as for an unknown patient).
  bool hide_existence = false;
  std::string reason;        // for the audit record and logs (no PHI)
  // When allowed at patient level: what made access legitimate (registered-practice,
  // care-team, encounter, emergency-purpose, break-glass, system). The audit's "access
  // without a prior relationship" alert reads it.
  std::string basis;
  std::vector<std::string> allowed_sensitive;  // categories this principal may see
  ScopeLimits limits;  // when allowed by authorise_type or authorise_search
};

class Policy {
 public:
  // Validates: unique role names and claim values, known resource types or "*", sensitive
  // category names referenced by roles exist. Errors name the role and field.
  static fhir::Result<Policy> make(PolicyConfig config);

  const PolicyConfig& config() const { return config_; }
  const RolePolicy* role(const Principal& p) const;  // by claim value, or null (no role: nothing clinical)

  // Type-level check, before any patient is looked at: role allows (type, interaction) and the
  // token's scopes (patient/, user/ or system/ as fits the principal) allow it too. user/ and
  // system/ scopes grant without a bound; patient/ scopes only with the token's patient claim,
  // and bind the request to that patient (limits.patient). A search only constrained scopes
  // could grant is allowed with limits.search_unchecked: its parameters decide.
  Decision authorise_type(const Principal& p, std::string_view resource_type, Interaction i) const;
  // authorise_type for a search whose applied parameters are `params` ("name" or
  // "name:modifier", value as sent): also honours constrained scopes
  // ("user/Observation.rs?code=..."), granted when every constraint is among `params`.
  Decision authorise_search(const Principal& p, std::string_view resource_type,
                            const std::vector<std::pair<std::string, std::string>>& params) const;

  // Patient-level check for user access: relationship (registered practice, care team,
  // encounter within the window, or an emergency purpose for roles allowed it), objection,
  // and an active break-glass grant for this subject and patient. System principals skip the
  // relationship but not objection for clinical reads. `patient_context` is the type-level
  // decision's limits.patient: when set, any other patient is hidden, break-glass or not.
  Decision authorise_patient(const Principal& p, const PatientFacts& facts, const std::string& patient_id,
                             const BreakGlassGrant* active_grant, std::int64_t now,
                             std::string_view patient_context = {}) const;

  // True when this user may open records on the emergency-purpose basis alone (an emergency
  // role with an accepted purpose-of-use claim): such a caller's Patient searches by
  // demographics follow the trace rule in docs/access-policy.md.
  bool emergency_basis(const Principal& p) const;

  // Category names whose codes include (system, code); empty when not sensitive.
  std::vector<std::string> categories_of(std::string_view system, std::string_view code) const;
  bool may_see(const Principal& p, std::string_view category) const;

 private:
  explicit Policy(PolicyConfig c) : config_(std::move(c)) {}
  PolicyConfig config_;
};

// Break-glass grants held in memory, bounded; thread-safe. Every use is re-checked with
// active() against the subject and patient of the request.
class BreakGlassRegistry {
 public:
  explicit BreakGlassRegistry(std::size_t max_grants = 100000) : max_(max_grants) {}
  // Refused (forbidden) for roles without break_glass, unknown reason codes, or a
  // justification shorter than the configured minimum (invalid_value).
  fhir::Result<BreakGlassGrant> grant(const Policy& policy, const Principal& p, const std::string& patient_id,
                                      std::string reason_code, std::string justification, std::int64_t now);
  std::optional<BreakGlassGrant> active(const std::string& subject, const std::string& patient_id,
                                        std::int64_t now) const;

 private:
  std::size_t max_;
  mutable std::mutex mu_;
  std::map<std::pair<std::string, std::string>, BreakGlassGrant> grants_;
};

// Token bucket per key (client id or user), bounded number of keys (least recently seen
// dropped). Thread-safe. `retry_after` is set when refused.
class RateLimiter {
 public:
  RateLimiter(double per_second, double burst, std::size_t max_keys = 100000);
  bool allow(const std::string& key, std::chrono::steady_clock::time_point now, std::chrono::seconds& retry_after);

 private:
  struct Bucket {
    double tokens;
    std::chrono::steady_clock::time_point last;
  };
  double rate_, burst_;
  std::size_t max_keys_;
  std::mutex mu_;
  std::map<std::string, Bucket> buckets_;
};

}  // namespace gw::auth
