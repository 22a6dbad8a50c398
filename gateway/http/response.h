// SPDX-License-Identifier: Apache-2.0
// Responses, detached from Beast, and the builders every route uses. Errors always carry an
// OperationOutcome whose status comes from the single fhir::Issue table.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "fhir/issue.h"
#include "fhir/json.h"

namespace gw::http {

struct Response {
  int status = 200;
  std::string content_type;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  bool close = false;  // close the connection after this response
  std::string diagnostics;  // error responses: the first issue's text, for the audit record

  void set_header(std::string name, std::string value) { headers.emplace_back(std::move(name), std::move(value)); }
  // Replaces every header called `name` (exact case, as set here) with one value.
  void replace_header(const std::string& name, std::string value) {
    std::erase_if(headers, [&name](const auto& h) { return h.first == name; });
    set_header(name, std::move(value));
  }
};

// application/fhir+json response.
Response fhir_response(int status, const fhir::Json& body, bool pretty = false);
Response fhir_response(int status, std::string serialized_body);
// OperationOutcome for `issue` with the status from the issue table; adds WWW-Authenticate
// for 401 and Retry-After for 429/503.
Response error_response(const fhir::Issue& issue, bool pretty = false);
Response error_response(const std::vector<fhir::Issue>& issues, bool pretty = false);
// Non-FHIR bodies (/healthz, /metrics).
Response text_response(int status, std::string content_type, std::string body);

}  // namespace gw::http
