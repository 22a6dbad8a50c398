// SPDX-License-Identifier: Apache-2.0
#include "gateway/http/response.h"

#include "fhir/content_negotiation.h"

namespace gw::http {

Response fhir_response(int status, const fhir::Json& body, bool pretty) {
  return fhir_response(status, fhir::to_json(body, pretty));
}

Response fhir_response(int status, std::string serialized_body) {
  Response r;
  r.status = status;
  r.content_type = std::string(fhir::kFhirJson);
  r.body = std::move(serialized_body);
  return r;
}

Response error_response(const std::vector<fhir::Issue>& issues, bool pretty) {
  const fhir::ErrorCode code = issues.front().code;
  Response r = fhir_response(fhir::http_status_for(code), fhir::operation_outcome(issues), pretty);
  r.diagnostics = issues.front().diagnostics;
  if (code == fhir::ErrorCode::unauthenticated)
    r.set_header("WWW-Authenticate", "Bearer realm=\"fhir-gateway\", error=\"invalid_token\"");
  if (code == fhir::ErrorCode::too_many_requests || code == fhir::ErrorCode::not_ready)
    r.set_header("Retry-After", "5");
  return r;
}

Response error_response(const fhir::Issue& issue, bool pretty) {
  return error_response(std::vector<fhir::Issue>{issue}, pretty);
}

Response text_response(int status, std::string content_type, std::string body) {
  Response r;
  r.status = status;
  r.content_type = std::move(content_type);
  r.body = std::move(body);
  return r;
}

}  // namespace gw::http
