// SPDX-License-Identifier: Apache-2.0
#include "gateway/http/relationship_routes.h"

#include <cctype>
#include <memory>
#include <optional>

#include "fhir/date_range.h"
#include "fhir/json.h"
#include "fhir/nhs_number.h"
#include "fhir/uk_core.h"

namespace gw::http {
namespace {

using boost::asio::awaitable;
using fhir::ErrorCode;
using fhir::Issue;
using fhir::Json;

Issue bad(std::string text, std::string expression) {
  return Issue::make(ErrorCode::invalid_resource, std::move(text), std::move(expression));
}

// The parameters of a Parameters body by name (each at most once).
struct Params {
  std::vector<std::pair<std::string, const Json*>> items;
  const Json* get(std::string_view name) const {
    for (const auto& [n, p] : items)
      if (n == name) return p;
    return nullptr;
  }
};

fhir::Result<Params> parameters(const Json& body, std::initializer_list<std::string_view> allowed) {
  if (body.string_at("resourceType") != "Parameters")
    return bad("the body must be a Parameters resource", "resourceType");
  const Json* list = body.find("parameter");
  if (!list || !list->is_array() || list->items().empty() || list->items().size() > 16)
    return bad("Parameters.parameter needs 1 to 16 entries", "Parameters.parameter");
  Params out;
  for (const auto& p : list->items()) {
    const std::string name(p.string_at("name"));
    if (std::find(allowed.begin(), allowed.end(), name) == allowed.end())
      return bad("unknown parameter \"" + name.substr(0, 64) + "\"", "Parameters.parameter.name");
    if (out.get(name)) return bad("parameter \"" + name + "\" given twice", "Parameters.parameter.name");
    out.items.emplace_back(name, &p);
  }
  return out;
}

// "2026-11-20T09:30:00Z" (or a date) -> epoch seconds of its start.
fhir::Result<std::int64_t> date_time(const Json& p, const char* name) {
  const Json* v = p.find("valueDateTime");
  if (!v || !v->is_string()) return bad(std::string(name) + " needs valueDateTime", name);
  auto range = fhir::parse_fhir_date(v->text());
  if (!range) return bad(std::string(name) + ": " + range.issue().diagnostics, name);
  return range->begin;
}

class RelationshipApi {
 public:
  explicit RelationshipApi(LocatorRouteDeps deps) : deps_(std::move(deps)) {}

  // Who may call: a source system with an ODS code.
  static std::optional<Issue> not_a_source(const Request& req) {
    const auth::Principal& who = *req.principal;
    if (who.kind != auth::Principal::Kind::system || who.organisation.empty())
      return Issue::make(ErrorCode::forbidden,
                         "only a source system (system token or client certificate with an ODS code) may record "
                         "care relationships");
    return std::nullopt;
  }

  // The patient parameter: an NHS number identifier or a Patient/{id} reference -> locator id.
  awaitable<fhir::Result<std::string>> patient_of(Request& req, const Params& params) {
    const Json* p = params.get("patient");
    if (!p) co_return bad("parameter patient is required", "patient");
    if (const Json* ref = p->find("valueReference")) {
      std::string_view r = ref->string_at("reference");
      if (r.substr(0, 8) != "Patient/" || r.size() <= 8 || r.size() > 8 + 64)
        co_return bad("patient valueReference must be Patient/{id}", "patient");
      co_return std::string(r.substr(8));
    }
    const Json* idf = p->find("valueIdentifier");
    if (!idf || idf->string_at("system") != fhir::kNhsNumberSystem)
      co_return bad("patient needs valueIdentifier with system " + std::string(fhir::kNhsNumberSystem) +
                        ", or valueReference Patient/{id}",
                    "patient");
    std::string nhs(idf->string_at("value"));
    if (auto ok = fhir::validate_nhs_number(nhs); !ok) {
      Issue i = ok.issue();
      i.expression = "patient";
      co_return i;
    }
    req.audit.patients.push_back(nhs);
    auto lookup = [nhs](locator::Locator& l) { return l.lookup_identifier(fhir::kNhsNumberSystem, nhs); };
    auto found = co_await deps_.locator.call(lookup);
    if (!found) co_return found.issue();
    if (!*found) co_return Issue::make(ErrorCode::not_found, "no patient with that NHS number is indexed", "patient");
    co_return **found;
  }

  awaitable<Response> record_encounter(Request& req) {
    if (auto no = not_a_source(req)) co_return error_response(*no, req.format.pretty);
    auto params = parameters(*req.json_body, {"patient", "organization", "start"});
    if (!params) co_return error_response(params.issue(), req.format.pretty);
    std::string org = req.principal->organisation;
    if (const Json* o = params->get("organization")) {
      const Json* idf = o->find("valueIdentifier");
      if (!idf || idf->string_at("system") != fhir::uk::kOdsOrganisationSystem || idf->string_at("value").empty())
        co_return error_response(bad("organization needs valueIdentifier with system " +
                                         std::string(fhir::uk::kOdsOrganisationSystem),
                                     "organization"),
                                 req.format.pretty);
      org = std::string(idf->string_at("value"));
    }
    const Json* start = params->get("start");
    if (!start) co_return error_response(bad("parameter start (valueDateTime) is required", "start"), req.format.pretty);
    auto at = date_time(*start, "start");
    if (!at) co_return error_response(at.issue(), req.format.pretty);
    auto pid = co_await patient_of(req, *params);
    if (!pid) co_return error_response(pid.issue(), req.format.pretty);
    const std::string acting = req.principal->organisation, patient = *pid;
    const std::int64_t when = *at;
    req.audit.note = "encounter at " + org + " recorded";
    auto op = [acting, patient, org, when](locator::Locator& l) { return l.record_encounter(acting, patient, org, when); };
    auto done = co_await deps_.locator.call_write(op);
    if (!done) co_return error_response(done.issue(), req.format.pretty);
    co_return recorded("encounter at " + org + " recorded for legitimate-relationship checks", req);
  }

  awaitable<Response> care_team(Request& req) {
    if (auto no = not_a_source(req)) co_return error_response(*no, req.format.pretty);
    auto params = parameters(*req.json_body, {"patient", "member", "end", "remove"});
    if (!params) co_return error_response(params.issue(), req.format.pretty);
    const Json* m = params->get("member");
    const Json* mv = m ? m->find("valueString") : nullptr;
    if (!mv || !mv->is_string() || mv->text().empty() || mv->text().size() > 128)
      co_return error_response(bad("member needs valueString (a user id or an ODS code, 1-128 characters)", "member"),
                               req.format.pretty);
    const std::string member = mv->text();
    bool remove = false;
    if (const Json* r = params->get("remove")) {
      const Json* b = r->find("valueBoolean");
      if (!b || !b->is_bool()) co_return error_response(bad("remove needs valueBoolean", "remove"), req.format.pretty);
      remove = b->as_bool();
    }
    std::optional<std::string> until;
    if (const Json* e = params->get("end")) {
      auto ok = date_time(*e, "end");
      if (!ok) co_return error_response(ok.issue(), req.format.pretty);
      until = std::string(e->find("valueDateTime")->text());
    }
    auto pid = co_await patient_of(req, *params);
    if (!pid) co_return error_response(pid.issue(), req.format.pretty);
    const std::string acting = req.principal->organisation, patient = *pid;
    req.audit.note = std::string(remove ? "care team member removed: " : "care team member recorded: ") + member;
    if (remove) {
      auto op = [acting, patient, member](locator::Locator& l) { return l.remove_care_team_member(acting, patient, member); };
      auto done = co_await deps_.locator.call_write(op);
      if (!done) co_return error_response(done.issue(), req.format.pretty);
      co_return recorded("care team member removed", req);
    }
    auto op = [acting, patient, member, until](locator::Locator& l) {
      return l.add_care_team_member(acting, patient, member, until);
    };
    auto done = co_await deps_.locator.call_write(op);
    if (!done) co_return error_response(done.issue(), req.format.pretty);
    co_return recorded("care team member recorded for legitimate-relationship checks", req);
  }

 private:
  // Committed in locator.db before the request's record can be: a 503 from the audit step says
  // the change stands (Request::ChangeMade).
  static Response recorded(const std::string& text, Request& req) {
    std::string made = text;
    made[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(made[0])));
    req.change_made = Request::ChangeMade{made, nullptr};
    Issue info = Issue::make(ErrorCode::informational, text);
    info.severity = fhir::Severity::information;
    Response r = error_response(info, req.format.pretty);
    r.status = 200;
    return r;
  }

  LocatorRouteDeps deps_;
};

}  // namespace

void add_relationship_routes(Router& router, LocatorRouteDeps deps) {
  auto api = std::make_shared<RelationshipApi>(std::move(deps));
  auto opts = [](std::string operation, std::string checked_type) {
    RouteOptions o;
    o.access = Access::resource;
    o.auth_resource_type = std::move(checked_type);
    o.auth_interaction = auth::Interaction::create;
    o.json_body = true;
    o.resource_type = "Patient";
    o.operation_definition = "https://fhir-gateway.nhs.example/OperationDefinition/Patient-" + operation;
    o.operation = std::move(operation);
    return o;
  };
  router.add("POST", "/Patient/$record-encounter", [api](Request& r) { return api->record_encounter(r); },
             opts("record-encounter", "Encounter"));
  router.add("POST", "/Patient/$care-team", [api](Request& r) { return api->care_team(r); },
             opts("care-team", "CareTeam"));
}

}  // namespace gw::http
