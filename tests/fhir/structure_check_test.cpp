// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include "fhir/json.h"
#include "fhir/resource_types.h"
#include "fhir/structure_check.h"
#include "support/paths.h"

using namespace fhir;

namespace {
std::vector<Issue> check(const char* json, std::string_view type = {}) {
  auto j = parse_json(json);
  REQUIRE(j.ok());
  return check_structure(*j, type);
}
}  // namespace

TEST_CASE("Structure: a minimal Patient passes") {
  CHECK(check(R"({"resourceType":"Patient","id":"p-1","gender":"female"})").empty());
}

TEST_CASE("Structure: empty values, bad ids, unknown types and nulls are reported with paths") {
  auto issues = check(R"({"resourceType":"Patient","id":"has space","name":[],"gender":"","address":{},"birthDate":null})");
  REQUIRE(issues.size() == 5);
  CHECK(issues[0].expression == "Patient.id");
  CHECK(issues[1].expression == "Patient.name");
  CHECK(issues[2].expression == "Patient.gender");
  CHECK(issues[3].expression == "Patient.address");
  CHECK(issues[4].expression == "Patient.birthDate");
  auto unknown = check(R"({"resourceType":"Patientt"})");
  REQUIRE(unknown.size() == 1);
  CHECK(unknown[0].diagnostics.find("not a FHIR R4 resource type") != std::string::npos);
  CHECK(check(R"({"id":"x"})").at(0).diagnostics.find("resourceType is missing") != std::string::npos);
  CHECK(check(R"([1])").at(0).diagnostics.find("must be a JSON object") != std::string::npos);
}

TEST_CASE("Structure: contained and bundled resources are checked as resources") {
  auto issues = check(R"({"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Nope"}}]})");
  REQUIRE(issues.size() == 1);
  CHECK(issues[0].expression == "Bundle.entry[0].resource.resourceType");
}

TEST_CASE("Structure: the URL type must match resourceType") {
  auto issues = check(R"({"resourceType":"Observation"})", "Patient");
  REQUIRE(issues.size() == 1);
  CHECK(issues[0].diagnostics.find("does not match") != std::string::npos);
}

TEST_CASE("Structure: abstract types are not resource types") {
  CHECK(is_r4_resource_type("Patient"));
  CHECK_FALSE(is_r4_resource_type("Resource"));
  CHECK_FALSE(is_r4_resource_type("DomainResource"));
  CHECK_FALSE(is_r4_resource_type("patient"));
}

TEST_CASE("Structure: all 362 official HL7 R4 spec examples pass the structural check") {
  auto data = gw::test::shared_data_dir();
  if (!data) return;
  int files = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(*data / "fhir-r4-spec-examples")) {
    if (e.path().extension() != ".json") continue;
    auto j = parse_json(gw::test::read_file(e.path()));
    REQUIRE(j.ok());
    CAPTURE(e.path().filename().string());
    auto issues = check_structure(*j);
    CHECK_MESSAGE(issues.empty(), (issues.empty() ? "" : issues[0].expression + ": " + issues[0].diagnostics));
    ++files;
  }
  CHECK(files == 362);
}

TEST_CASE("Structure: the empty 'patient' object in a real PDS sandbox mock is caught") {
  auto data = gw::test::shared_data_dir();
  if (!data) return;
  auto j = parse_json(gw::test::read_file(*data / "pds-fhir-r4-nhsdigital/sandbox-mocks/Personal_Details_RelatedPersonBundle.json"));
  REQUIRE(j.ok());
  auto issues = check_structure(*j);
  REQUIRE(issues.size() == 1);
  CHECK(issues[0].expression == "Bundle.entry[0].resource.patient");
  CHECK(issues[0].diagnostics == "empty objects are not allowed in FHIR JSON");
}
