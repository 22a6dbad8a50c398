// SPDX-License-Identifier: Apache-2.0
#include "gateway/http/system_routes.h"

#include <memory>
#include <string>

#include "fhir/element_check.h"
#include "fhir/resource_types.h"

namespace gw::http {
namespace {

using boost::asio::awaitable;

// $validate accepts the resource itself or a Parameters with a "resource" parameter
// (R4 resource-operation-validate).
const fhir::Json* resource_to_validate(const fhir::Json& body) {
  if (body.string_at("resourceType") != "Parameters") return &body;
  if (const fhir::Json* params = body.find("parameter"); params && params->is_array())
    for (const fhir::Json& p : params->items())
      if (p.string_at("name") == "resource")
        if (const fhir::Json* r = p.find("resource")) return r;
  return nullptr;
}

awaitable<Response> validate(Request& req, std::string expected_type) {
  const fhir::Json* resource = resource_to_validate(*req.json_body);
  if (!resource)
    co_return error_response(fhir::Issue::make(fhir::ErrorCode::missing_value,
                                               "Parameters has no 'resource' parameter to validate",
                                               "Parameters.parameter"),
                             req.format.pretty);
  // Structure (json.html) and elements (the R4 schema's table: names, JSON kinds, cardinality,
  // required elements and codes, date/time formats), every problem with its path.
  std::vector<fhir::Issue> issues = fhir::check_structure_and_elements(*resource, expected_type);
  if (issues.empty()) {
    std::string_view type = resource->string_at("resourceType");
    fhir::Issue ok = fhir::Issue::make(
        fhir::ErrorCode::informational,
        fhir::elements_known(type)
            ? "Valid FHIR R4 JSON: structure (resource type, id, no empty or null values) and elements (names, "
              "JSON types, cardinality, required elements, required codes, date/time formats). Profiles, "
              "invariants and terminology were not checked."
            : "Structure is valid FHIR R4 JSON (resource type, id, no empty or null values). The elements of " +
                  std::string(type.substr(0, 64)) +
                  " were not checked: this gateway checks the elements of the types it stores and serves. "
                  "Profiles and terminology were not checked.");
    ok.severity = fhir::Severity::information;
    co_return fhir_response(200, fhir::operation_outcome(ok), req.format.pretty);
  }
  // R4 $validate: the operation succeeded and reports what is wrong with the content.
  co_return fhir_response(200, fhir::operation_outcome(issues), req.format.pretty);
}

}  // namespace

void add_system_routes(Router& router, const SystemRouteDeps& deps) {
  observe::Health* health = &deps.health;
  observe::Metrics* metrics = &deps.metrics;

  RouteOptions ops;
  ops.access = Access::open;  // probes and scrapers carry no token; /metrics stays loopback-only
  ops.fhir = false;
  router.add("GET", "/healthz", [](Request&) -> awaitable<Response> {
    co_return text_response(200, "application/json", R"({"status":"pass"})");
  }, ops);
  router.add("GET", "/readyz", [health](Request&) -> awaitable<Response> {
    if (health->ready()) co_return text_response(200, "application/json", R"({"status":"pass"})");
    std::string why = health->draining                 ? "draining"
                      : !health->databases_ready       ? "databases not ready"
                      : health->audit_failing          ? "audit log not writable"
                                                       : "not listening";
    Response r = text_response(503, "application/json", R"({"status":"fail","reason":")" + why + "\"}");
    r.set_header("Retry-After", "5");
    co_return r;
  }, ops);
  RouteOptions metrics_opts = ops;
  metrics_opts.loopback_only = !deps.metrics_allow_remote;
  router.add("GET", "/metrics", [metrics](Request&) -> awaitable<Response> {
    co_return text_response(200, "text/plain; version=0.0.4; charset=utf-8", metrics->render());
  }, metrics_opts);

  RouteOptions validate_sys;
  validate_sys.access = Access::authenticated;  // no patient data, but bodies are parsed only after authentication
  validate_sys.json_body = true;
  validate_sys.operation = "validate";
  validate_sys.operation_definition = "http://hl7.org/fhir/OperationDefinition/Resource-validate";
  router.add("POST", "/$validate", [](Request& req) { return validate(req, {}); }, validate_sys);
  RouteOptions validate_type = validate_sys;
  validate_type.operation.clear();  // declared once, at system level
  router.add("POST", "/{type}/$validate", [](Request& req) -> awaitable<Response> {
    const std::string& type = req.path_params.at(0);
    if (!fhir::is_r4_resource_type(type))
      co_return error_response(fhir::Issue::make(fhir::ErrorCode::unknown_resource_type,
                                                 type.substr(0, 64) + " is not a FHIR R4 resource type"),
                               req.format.pretty);
    co_return co_await validate(req, type);
  }, validate_type);
}

void add_metadata_route(Router& router, const SystemRouteDeps& deps) {
  // Generated from the final route table, once; both renderings cached for throughput.
  RouteOptions opts;
  opts.access = Access::open;  // the CapabilityStatement is public (FHIR http.html#capabilities)
  opts.resource_type.clear();
  auto compact = std::make_shared<std::string>();
  auto pretty = std::make_shared<std::string>();
  {
    fhir::Json cs = fhir::capability_statement(deps.server, router.resource_capabilities(),
                                               router.system_operations(), deps.search_params);
    *compact = fhir::to_json(cs, false);
    *pretty = fhir::to_json(cs, true);
  }
  router.add("GET", "/metadata", [compact, pretty](Request& req) -> awaitable<Response> {
    co_return fhir_response(200, req.format.pretty ? *pretty : *compact);
  }, opts);
}

}  // namespace gw::http
