// SPDX-License-Identifier: Apache-2.0
#include "fhir/issue.h"

#include <array>

#include "fhir/json.h"

namespace fhir {
namespace {

struct Row {
  ErrorCode code;
  IssueMapping mapping;
};

// The one table (STYLE.md "Errors"). Issue types from http://hl7.org/fhir/issue-type;
// statuses from FHIR R4 http.html; Spine codes as NHS England APIs (PDS, GP Connect) use them.
// Every error carries one, as NHS clients expect issue.details on each OperationOutcome
// (table_has_spine_codes below): a refusal Spine has no specific code for (406, 408, 413, 414,
// 415, 431, a search too costly) takes its generic BAD_REQUEST, and the HTTP status and issue
// type say the rest.
constexpr std::array kTable{
    Row{ErrorCode::bad_request, {"invalid", 400, "BAD_REQUEST", "Bad request"}},
    Row{ErrorCode::invalid_json, {"structure", 400, "INVALID_RESOURCE", "Invalid JSON"}},
    Row{ErrorCode::invalid_resource, {"structure", 400, "INVALID_RESOURCE", "Invalid resource"}},
    Row{ErrorCode::invalid_search_parameter, {"invalid", 400, "INVALID_PARAMETER", "Invalid parameter"}},
    Row{ErrorCode::invalid_value, {"value", 400, "INVALID_VALUE", "Provided value is invalid"}},
    Row{ErrorCode::invalid_nhs_number, {"value", 400, "INVALID_NHS_NUMBER", "NHS number is invalid"}},
    // IHE PIXm ITI-83 (Gazelle ITI83-019/020) asks for code-invalid on both, with 400 and 403.
    Row{ErrorCode::unknown_identifier_system,
        {"code-invalid", 400, "INVALID_IDENTIFIER_SYSTEM", "Invalid identifier system"}},
    Row{ErrorCode::unknown_target_system, {"code-invalid", 403, "INVALID_IDENTIFIER_SYSTEM", "Invalid identifier system"}},
    Row{ErrorCode::missing_value, {"required", 400, "MISSING_VALUE", "Required value is missing"}},
    Row{ErrorCode::unknown_resource_type, {"not-supported", 404, "UNSUPPORTED_SERVICE", "Resource type not supported"}},
    Row{ErrorCode::unsupported_interaction,
        {"not-supported", 404, "UNSUPPORTED_SERVICE", "Interaction not supported"}},
    Row{ErrorCode::not_found, {"not-found", 404, "RESOURCE_NOT_FOUND", "Resource not found"}},
    Row{ErrorCode::gone, {"deleted", 410, "INVALIDATED_RESOURCE", "Resource deleted"}},
    Row{ErrorCode::method_not_allowed, {"not-supported", 405, "INVALID_METHOD", "Method not allowed"}},
    Row{ErrorCode::not_acceptable, {"not-supported", 406, "BAD_REQUEST", "Format not acceptable"}},
    Row{ErrorCode::unsupported_media_type, {"not-supported", 415, "BAD_REQUEST", "Unsupported media type"}},
    Row{ErrorCode::not_supported, {"not-supported", 422, "UNSUPPORTED_SERVICE", "Not supported"}},
    Row{ErrorCode::payload_too_large, {"too-costly", 413, "BAD_REQUEST", "Request body too large"}},
    Row{ErrorCode::headers_too_large, {"too-costly", 431, "BAD_REQUEST", "Request headers too large"}},
    Row{ErrorCode::uri_too_long, {"too-costly", 414, "BAD_REQUEST", "Request URI too long"}},
    Row{ErrorCode::too_costly, {"too-costly", 400, "BAD_REQUEST", "Search too costly"}},
    Row{ErrorCode::request_timeout, {"timeout", 408, "BAD_REQUEST", "Request timed out"}},
    Row{ErrorCode::tls_required, {"security", 400, "BAD_REQUEST", "TLS required"}},
    Row{ErrorCode::unauthenticated, {"login", 401, "ACCESS_DENIED", "Access denied"}},
    Row{ErrorCode::forbidden, {"forbidden", 403, "ACCESS_DENIED", "Access denied"}},
    Row{ErrorCode::precondition_failed, {"conflict", 412, "PRECONDITION_FAILED", "Precondition failed"}},
    Row{ErrorCode::conflict, {"conflict", 409, "INVALID_UPDATE", "Conflict"}},
    Row{ErrorCode::too_many_requests, {"throttled", 429, "TOO_MANY_REQUESTS", "Too many requests"}},
    Row{ErrorCode::not_ready, {"transient", 503, "SERVICE_UNAVAILABLE", "Service unavailable"}},
    Row{ErrorCode::timeout, {"timeout", 504, "SERVICE_UNAVAILABLE", "Timed out"}},
    Row{ErrorCode::informational, {"informational", 200, "", "All OK"}},
    Row{ErrorCode::internal_error, {"exception", 500, "SERVER_ERROR", "Internal server error"}},
};

// Compile-time check that the table is complete and ordered like the enum.
constexpr bool table_is_dense() {
  for (std::size_t i = 0; i < kTable.size(); ++i)
    if (static_cast<std::size_t>(kTable[i].code) != i) return false;
  return static_cast<std::size_t>(ErrorCode::internal_error) + 1 == kTable.size();
}
static_assert(table_is_dense(), "issue table must list every ErrorCode in enum order");

constexpr bool table_has_spine_codes() {
  for (const Row& r : kTable)
    if (r.mapping.http_status >= 400 && r.mapping.spine_code.empty()) return false;
  return true;
}
static_assert(table_has_spine_codes(), "every error row needs a Spine-ErrorOrWarningCode");

}  // namespace

const IssueMapping& mapping_for(ErrorCode code) {
  return kTable[static_cast<std::size_t>(code)].mapping;
}

int http_status_for(ErrorCode code) { return mapping_for(code).http_status; }

std::string_view severity_name(Severity s) {
  switch (s) {
    case Severity::fatal: return "fatal";
    case Severity::error: return "error";
    case Severity::warning: return "warning";
    case Severity::information: return "information";
  }
  return "error";
}

Json operation_outcome(const std::vector<Issue>& issues) {
  Json out = Json::object();
  out.set("resourceType", Json::string("OperationOutcome"));
  Json list = Json::array();
  for (const Issue& i : issues) {
    const IssueMapping& m = mapping_for(i.code);
    Json entry = Json::object();
    entry.set("severity", Json::string(std::string(severity_name(i.severity))));
    entry.set("code", Json::string(std::string(m.issue_type)));
    if (!m.spine_code.empty()) {
      Json coding = Json::object();
      coding.set("system", Json::string(std::string(kSpineErrorSystem)));
      coding.set("code", Json::string(std::string(m.spine_code)));
      coding.set("display", Json::string(std::string(m.display)));
      Json codings = Json::array();
      codings.push_back(std::move(coding));
      Json details = Json::object();
      details.set("coding", std::move(codings));
      entry.set("details", std::move(details));
    }
    // FHIR forbids empty strings, so optional elements are omitted rather than left blank.
    entry.set("diagnostics",
              Json::string(i.diagnostics.empty() ? std::string(m.display) : i.diagnostics));
    if (!i.expression.empty()) {
      Json expr = Json::array();
      expr.push_back(Json::string(i.expression));
      entry.set("expression", std::move(expr));
    }
    list.push_back(std::move(entry));
  }
  out.set("issue", std::move(list));
  return out;
}

Json operation_outcome(const Issue& issue) { return operation_outcome(std::vector<Issue>{issue}); }

}  // namespace fhir
