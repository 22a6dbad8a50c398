// SPDX-License-Identifier: Apache-2.0
#include "gateway/http/patient_gate.h"

#include <algorithm>
#include <ctime>

#include "fhir/query_string.h"
#include "gateway/observe/log.h"

namespace gw::http {

using boost::asio::awaitable;
using fhir::ErrorCode;
using fhir::Issue;

namespace {

std::int64_t now_seconds() { return static_cast<std::int64_t>(std::time(nullptr)); }

// FHIR id syntax: anything else cannot name a patient.
bool valid_id(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
  });
}

}  // namespace

bool PatientGate::note_break_glass_request(Request& req) {
  // What the audit keeps of the headers: a reason code is a short configured word, and a
  // justification longer than the policy's 1024 bytes is refused, so a valid one is kept
  // whole. Cut on a character boundary (headers may carry any bytes); the policy judges the
  // headers as received, never these copies.
  constexpr std::size_t kMaxReasonBytes = 64;
  constexpr std::size_t kMaxJustificationBytes = 1024;
  const std::string_view reason = req.header("x-break-glass-reason");
  if (reason.empty()) return false;
  const std::string_view text = req.header("x-break-glass-justification");
  req.audit.break_glass_reason = std::string(reason.substr(0, fhir::utf8_cut(reason, kMaxReasonBytes)));
  req.audit.break_glass_justification = std::string(text.substr(0, fhir::utf8_cut(text, kMaxJustificationBytes)));
  return true;
}

fhir::Result<bool> PatientGate::maybe_break_glass(Request& req, const locator::PatientRecord* patient) {
  // Asked for, granted or not: the audit record says so (and the IG alert rule sees it).
  if (!note_break_glass_request(req)) return false;
  // No patient: the request is judged as if for one (an id that can never be a FHIR id, so the
  // grant made opens nothing), so an unknown patient's refusal reads exactly like a known one's.
  static const std::string kNobody = "(no such patient)";
  auto g = deps_.break_glass.grant(deps_.policy, *req.principal, patient ? patient->id : kNobody,
                                   std::string(req.header("x-break-glass-reason")),
                                   std::string(req.header("x-break-glass-justification")), now_seconds());
  if (!g) {
    // IG officers see refused attempts too, with the patient they were about.
    if (patient) note_patient(req, *patient);
    return g.issue();
  }
  if (!patient) return false;
  observe::log(observe::Level::warn, "break-glass access granted",
               {{"request_id", req.logged_request_id()}, {"reason", g->reason_code}, {"client_id", req.principal->client_id}});
  return true;
}

auth::Decision PatientGate::decide(const Request& req, const locator::PatientRecord& rec) {
  auth::PatientFacts facts;
  facts.registered_practice = rec.demographics.gp_practice_ods;
  facts.objection = rec.objection;
  const std::int64_t now = now_seconds();
  for (const auto& m : rec.care_team)  // ended memberships are kept for the record, not counted
    if (locator::care_team_member_current(m, now)) facts.care_team.push_back(m.member);
  for (const auto& e : rec.encounters) facts.encounters.emplace_back(e.organisation_ods, e.at);
  auto grant = deps_.break_glass.active(req.principal->subject, rec.id, now_seconds());
  return deps_.policy.authorise_patient(*req.principal, facts, rec.id, grant ? &*grant : nullptr, now_seconds(),
                                        req.scope_limits.patient);
}

fhir::Status PatientGate::check_search_scopes(Request& req, const fhir::SearchRequest& search,
                                              const fhir::SearchParamRegistry& registry) const {
  if (!req.scope_limits.search_unchecked) return fhir::Ok{};
  std::vector<std::pair<std::string, std::string>> applied;
  for (const auto& p : search.params)
    applied.emplace_back(p.modifier.empty() ? p.name : p.name + ":" + p.modifier, p.raw_value);
  auth::Decision d = deps_.policy.authorise_search(*req.principal, search.resource_type, applied);
  if (!d.allowed) {
    req.refused_by_scopes = true;
    // A constraint on a parameter this gateway does not search by can never be met: say so,
    // rather than let the client retry with it (SMART's own example, category, is one).
    for (const auto& s : req.principal->scopes.resource_scopes) {
      if (s.resource_type != "*" && s.resource_type != search.resource_type) continue;
      for (const auto& c : s.constraints) {
        const std::string name = c.first.substr(0, std::min<std::size_t>(c.first.find(':'), 64));
        if (registry.find(search.resource_type, name) != nullptr) continue;
        return Issue::make(ErrorCode::forbidden, "access denied: token scopes grant search on " +
                                                     search.resource_type + " only with a constraint on '" + name +
                                                     "', and '" + name + "' is not a search parameter this gateway "
                                                     "supports on " + search.resource_type +
                                                     ": that scope grants no search here");
      }
    }
    return Issue::make(ErrorCode::forbidden, "access denied: " + d.reason);
  }
  req.scope_limits.search_unchecked = false;
  req.scope_limits.patient = std::move(d.limits.patient);
  return fhir::Ok{};
}

// The patient `patient_id` as this caller may see it: a break-glass request judged, the
// record read, and the decision made on the current data (a retired id is judged by its
// survivor). Unknown and hidden patients both come back as `hidden`, so the two answers are
// identical. Parameters are references: see AsyncLocator::call on g++ 12 and temporaries.
awaitable<fhir::Result<PatientGate::PatientAccess>> PatientGate::patient_access(Request& req, const std::string& patient_id,
                                                                         const Issue& hidden) {
  if (!valid_id(patient_id)) {
    auto bg = maybe_break_glass(req, nullptr);
    if (!bg) co_return bg.issue();
    co_return hidden;
  }
  auto read = [patient_id](locator::Locator& l) { return l.read_patient(patient_id); };
  auto rec = co_await deps_.locator.call(read);
  if (!rec) co_return rec.issue();
  // Read first so that a refused break-glass request names its patient in the audit; the
  // answer itself depends on the caller alone.
  auto bg = maybe_break_glass(req, *rec ? &**rec : nullptr);
  if (!bg) co_return bg.issue();
  if (!*rec) co_return hidden;
  locator::PatientRecord asked = std::move(**rec);
  co_return co_await judge(req, asked, hidden);
}

// One locator call for both steps: a thread hand-off fewer than a lookup and then
// patient_access. The break-glass request is judged for the patient found, or for nobody.
awaitable<fhir::Result<PatientGate::PatientAccess>> PatientGate::patient_access_by_identifier(
    Request& req, const locator::Identifier& identifier, const Issue& hidden) {
  const locator::Identifier idf = identifier;
  auto find = [idf](locator::Locator& l) -> fhir::Result<std::optional<locator::PatientRecord>> {
    auto found = l.lookup_identifier(idf.system, idf.value);
    if (!found) return std::move(found).issue();
    if (!*found) return std::optional<locator::PatientRecord>();
    return l.read_patient(**found);
  };
  auto rec = co_await deps_.locator.call(find);
  if (!rec) co_return rec.issue();
  auto bg = maybe_break_glass(req, *rec ? &**rec : nullptr);
  if (!bg) co_return bg.issue();
  if (!*rec) co_return hidden;
  locator::PatientRecord asked = std::move(**rec);
  co_return co_await judge(req, asked, hidden);
}

awaitable<fhir::Result<PatientGate::PatientAccess>> PatientGate::patient_access_to(
    Request& req, const std::optional<locator::Identifier>& by_identifier, const std::string& patient_id,
    const Issue& hidden) {
  if (by_identifier) co_return co_await patient_access_by_identifier(req, *by_identifier, hidden);
  co_return co_await patient_access(req, patient_id, hidden);
}

awaitable<fhir::Result<PatientGate::PatientAccess>> PatientGate::judge(Request& req, locator::PatientRecord& asked,
                                                                       const Issue& hidden) {
  PatientAccess a{std::move(asked), {}, {}};
  a.judged = a.asked;
  if (a.asked.merged_into) {
    const std::string survivor = *a.asked.merged_into;
    auto read_survivor = [survivor](locator::Locator& l) { return l.read_patient(survivor); };
    auto s = co_await deps_.locator.call(read_survivor);
    if (!s) co_return s.issue();
    if (*s) {
      a.judged = std::move(**s);
      a.judged.id = a.asked.id;  // break-glass grants name the id that was asked for
    }
  }
  a.decision = decide(req, a.judged);
  // The audit names the patient asked about even when access is refused: IG officers see
  // attempts as well as disclosures.
  note_patient(req, a.judged);
  if (a.decision.allowed) note_basis(req, a.decision);
  if (!a.decision.allowed)
    co_return a.decision.hide_existence ? hidden : Issue::make(ErrorCode::forbidden, "access denied: " + a.decision.reason);
  co_return a;
}

void PatientGate::note_patient(Request& req, const locator::PatientRecord& rec) {
  const std::string& nhs = rec.demographics.nhs_number;
  auto& list = req.audit.patients;
  if (!nhs.empty() && std::find(list.begin(), list.end(), nhs) == list.end()) list.push_back(nhs);
}
// Keeps the weakest basis seen (break-glass, then emergency purpose, then any standing one),
// so a search that needed break-glass for one patient is audited as break-glass.
void PatientGate::note_basis(Request& req, const auth::Decision& d) {
  auto rank = [](std::string_view b) { return b == "break-glass" ? 3 : b == "emergency-purpose" ? 2 : b.empty() ? 0 : 1; };
  if (rank(d.basis) > rank(req.audit.basis)) req.audit.basis = d.basis;
}


}  // namespace gw::http
