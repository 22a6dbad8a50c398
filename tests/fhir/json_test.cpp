// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <string>

#include "fhir/json.h"
#include "support/paths.h"

using fhir::Json;
using fhir::parse_json;

TEST_CASE("Json: decimals keep their exact text through parse and write") {
  auto j = parse_json(R"({"valueQuantity":{"value":1.50,"unit":"mmol/L"},"big":12345678901234567890,"e":1.0e-10})");
  REQUIRE(j.ok());
  CHECK(fhir::to_json(*j) == R"({"valueQuantity":{"value":1.50,"unit":"mmol/L"},"big":12345678901234567890,"e":1.0e-10})");
  CHECK(j->find("valueQuantity")->find("value")->text() == "1.50");
}

TEST_CASE("Json: object members keep insertion order and set() replaces in place") {
  Json o = Json::object();
  o.set("resourceType", Json::string("Patient"));
  o.set("id", Json::string("a"));
  o.set("resourceType", Json::string("Observation"));
  CHECK(fhir::to_json(o) == R"({"resourceType":"Observation","id":"a"})");
  CHECK(o.erase("id"));
  CHECK_FALSE(o.erase("id"));
}

TEST_CASE("Json: strings are escaped and UTF-8 survives") {
  auto j = parse_json(R"({"name":"Ad\u00e1n \"quoted\"\n","x":"Ordóñez"})");
  REQUIRE(j.ok());
  CHECK(j->string_at("name") == "Adán \"quoted\"\n");
  auto again = parse_json(fhir::to_json(*j));
  REQUIRE(again.ok());
  CHECK(*again == *j);
}

TEST_CASE("Json: malformed input is an invalid_json issue with an offset") {
  for (const char* bad : {"{", "{\"a\":}", "[1,2", "{\"a\":1} trailing", "nul", "{'a':1}", ""}) {
    CAPTURE(bad);
    auto j = parse_json(bad);
    REQUIRE_FALSE(j.ok());
    CHECK(j.issue().code == fhir::ErrorCode::invalid_json);
    CHECK(j.issue().diagnostics.find("offset") != std::string::npos);
  }
}

TEST_CASE("Json: invalid UTF-8 is rejected") {
  std::string bad = "{\"a\":\"\xC3\x28\"}";
  auto j = parse_json(bad);
  REQUIRE_FALSE(j.ok());
  CHECK(j.issue().code == fhir::ErrorCode::invalid_json);
}

TEST_CASE("Json: duplicate keys are rejected (FHIR json.html)") {
  auto j = parse_json(R"({"id":"a","gender":"male","id":"b"})");
  REQUIRE_FALSE(j.ok());
  CHECK(j.issue().diagnostics.find("duplicate JSON key \"id\"") != std::string::npos);
}

TEST_CASE("Json: nesting 10,000 deep fails cleanly without exhausting the stack") {
  std::string deep(10000, '[');
  deep += std::string(10000, ']');
  auto j = parse_json(deep);
  REQUIRE_FALSE(j.ok());
  CHECK(j.issue().diagnostics.find("nesting deeper than 100") != std::string::npos);

  std::string objects;
  for (int i = 0; i < 10000; ++i) objects += "{\"a\":";
  objects += "1" + std::string(10000, '}');
  CHECK_FALSE(parse_json(objects).ok());
}

TEST_CASE("Json: depth and size limits are configurable") {
  fhir::JsonLimits limits;
  limits.max_depth = 3;
  CHECK(parse_json("[[[1]]]", limits).ok());
  CHECK_FALSE(parse_json("[[[[1]]]]", limits).ok());
  limits.max_bytes = 4;
  auto j = parse_json("[1,2,3]", limits);
  REQUIRE_FALSE(j.ok());
  CHECK(j.issue().code == fhir::ErrorCode::payload_too_large);
}

TEST_CASE("Json: decimal() accepts only JSON number grammar") {
  CHECK(Json::decimal("0.50").has_value());
  CHECK(Json::decimal("-1e5").has_value());
  CHECK_FALSE(Json::decimal("01").has_value());
  CHECK_FALSE(Json::decimal("1.").has_value());
  CHECK_FALSE(Json::decimal("1,5").has_value());
  CHECK_FALSE(Json::decimal("NaN").has_value());
  CHECK_FALSE(Json::decimal("").has_value());
  CHECK(Json::integer(-42).as_int64() == -42);
  CHECK_FALSE(Json::decimal("1.5")->as_int64().has_value());
}

TEST_CASE("Json: every official R4 spec example round-trips byte-for-byte in value") {
  auto data = gw::test::shared_data_dir();
  if (!data) return;
  int files = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(*data / "fhir-r4-spec-examples")) {
    if (entry.path().extension() != ".json") continue;
    const std::string text = gw::test::read_file(entry.path());
    auto first = parse_json(text);
    CAPTURE(entry.path().filename().string());
    REQUIRE(first.ok());
    auto second = parse_json(fhir::to_json(*first));
    REQUIRE(second.ok());
    CHECK(*second == *first);
    ++files;
  }
  CHECK(files == 362);
}
