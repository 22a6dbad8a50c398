// SPDX-License-Identifier: Apache-2.0
// Reading FHIR answers in integration tests: the body as JSON (the test stops if it is not)
// and the first OperationOutcome issue code.
#pragma once

#include <doctest/doctest.h>

#include <string>

#include "fhir/json.h"
#include "support/https_client.h"

namespace gw::test {

inline fhir::Json json_of(const HttpResponse& r) {
  auto j = fhir::parse_json(r.body);
  REQUIRE_MESSAGE(j.ok(), "body is not JSON: " << r.body);
  return std::move(*j);
}

// The first issue's code, or "(not an OperationOutcome)".
inline std::string issue_code(const HttpResponse& r) {
  fhir::Json oo = json_of(r);
  if (oo.string_at("resourceType") != "OperationOutcome") return "(not an OperationOutcome)";
  return std::string(oo.find("issue")->items().at(0).string_at("code"));
}

}  // namespace gw::test
