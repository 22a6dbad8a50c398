// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include "fhir/issue.h"
#include "fhir/json.h"

TEST_CASE("Issue: the table maps codes to FHIR issue types and HTTP statuses") {
  using fhir::ErrorCode;
  CHECK(fhir::http_status_for(ErrorCode::not_found) == 404);
  CHECK(fhir::mapping_for(ErrorCode::not_found).issue_type == "not-found");
  CHECK(fhir::http_status_for(ErrorCode::not_acceptable) == 406);
  CHECK(fhir::http_status_for(ErrorCode::payload_too_large) == 413);
  CHECK(fhir::http_status_for(ErrorCode::headers_too_large) == 431);
  CHECK(fhir::http_status_for(ErrorCode::unauthenticated) == 401);
  CHECK(fhir::http_status_for(ErrorCode::invalid_nhs_number) == 400);
  CHECK(fhir::mapping_for(ErrorCode::invalid_nhs_number).spine_code == "INVALID_NHS_NUMBER");
  CHECK(fhir::http_status_for(ErrorCode::internal_error) == 500);
}

TEST_CASE("Issue: OperationOutcome carries severity, code, Spine coding, diagnostics and expression") {
  auto oo = fhir::operation_outcome(
      fhir::Issue::make(fhir::ErrorCode::invalid_nhs_number, "NHS number check digit does not match", "identifier"));
  CHECK(fhir::to_json(oo) ==
        R"({"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"value","details":{"coding":[{"system":"https://fhir.nhs.uk/R4/CodeSystem/Spine-ErrorOrWarningCode","code":"INVALID_NHS_NUMBER","display":"NHS number is invalid"}]},"diagnostics":"NHS number check digit does not match","expression":["identifier"]}]})");
}

TEST_CASE("Issue: every error OperationOutcome carries a Spine coding in issue.details") {
  // 415 was sent without one; so were 404 for an unknown type, 405, 406, 408, 409, 413, 429,
  // 431 and 504.
  for (int c = 0; c <= static_cast<int>(fhir::ErrorCode::internal_error); ++c) {
    const auto code = static_cast<fhir::ErrorCode>(c);
    CAPTURE(c);
    auto oo = fhir::operation_outcome(fhir::Issue::make(code, "x"));
    const fhir::Json& issue = oo.find("issue")->items().at(0);
    if (fhir::http_status_for(code) < 400) {
      CHECK(issue.find("details") == nullptr);
      continue;
    }
    const fhir::Json* details = issue.find("details");
    REQUIRE(details != nullptr);
    const fhir::Json& coding = details->find("coding")->items().at(0);
    CHECK(coding.string_at("system") == fhir::kSpineErrorSystem);
    CHECK(!coding.string_at("code").empty());
    CHECK(!coding.string_at("display").empty());
  }
  CHECK(fhir::mapping_for(fhir::ErrorCode::unsupported_media_type).spine_code == "BAD_REQUEST");
  CHECK(fhir::mapping_for(fhir::ErrorCode::too_many_requests).spine_code == "TOO_MANY_REQUESTS");
}

TEST_CASE("Issue: optional elements are omitted, never emitted as empty strings") {
  auto oo = fhir::operation_outcome(fhir::Issue::make(fhir::ErrorCode::not_acceptable, ""));
  const fhir::Json& issue = oo.find("issue")->items().at(0);
  CHECK(issue.find("expression") == nullptr);
  CHECK(issue.string_at("diagnostics") == "Format not acceptable");
}
