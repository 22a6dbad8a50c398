// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <cstdio>
#include <string>
#include <vector>

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

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
    const std::string written = fhir::to_json(*first);
    auto second = parse_json(written);
    REQUIRE(second.ok());
    CHECK(*second == *first);
    // And by an independent reader: RapidJSON's DOM of the output equals that of the input.
    rapidjson::Document original, ours;
    original.Parse(text.data(), text.size());
    ours.Parse(written.data(), written.size());
    REQUIRE_FALSE(ours.HasParseError());
    CHECK(ours == original);
    ++files;
  }
  CHECK(files == 362);
}

namespace {
// `text` parsed and written back by RapidJSON's own DOM and Writer: the reference output.
std::string rapidjson_compact(const std::string& text) {
  rapidjson::Document d;
  d.Parse(text.data(), text.size());
  REQUIRE_FALSE(d.HasParseError());
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  d.Accept(w);
  return std::string(buf.GetString(), buf.GetSize());
}
}  // namespace

TEST_CASE("JSON: compact output is byte for byte RapidJSON's Writer, escapes included") {
  // Every control character, quotes, backslashes, slashes, multi-byte UTF-8, nesting, empty
  // containers and literals. (Numbers are kept verbatim, which RapidJSON's DOM does not do;
  // they are checked below.)
  std::string all_controls;
  for (int c = 1; c < 0x20; ++c) {
    char hex[8];
    std::snprintf(hex, sizeof hex, "\\u%04x", c);
    all_controls += hex;
  }
  const std::vector<std::string> inputs = {
      R"({"a":"plain","b":"q\"uote","c":"back\\slash","d":"sl\/ash","e":"caf\u00e9 \u2603 \ud83d\ude00"})",
      "{\"controls\":\"" + all_controls + "\",\"nul\":\"x\\u0000y\",\"del\":\"\x7f\"}",
      R"({"resourceType":"Bundle","entry":[{},[],{"s":["x"]},null,true,false],"x":{}})",
      R"([])",
      R"("just a string")",
      R"({"k\"ey\n":"v","":""})",
  };
  for (const std::string& text : inputs) {
    CAPTURE(text);
    auto ours = parse_json(text);
    REQUIRE(ours.ok());
    const std::string mine = fhir::to_json(*ours);
    CHECK(mine == rapidjson_compact(text));
    auto again = parse_json(mine);
    REQUIRE(again.ok());
    CHECK(*again == *ours);
  }
  // Escapes at every position of long runs (the writer skips eight plain bytes at a time),
  // next to multi-byte UTF-8.
  for (const std::string special : {R"(\")", R"(\\)", R"(\n)", R"(\u0001)", R"(\u001f)", R"(\u00e9)"}) {
    for (std::size_t at = 0; at < 20; ++at) {
      const std::string text = "[\"" + std::string(at, 'a') + special + std::string(19 - at, 'b') + "\"]";
      CAPTURE(text);
      auto ours = parse_json(text);
      REQUIRE(ours.ok());
      CHECK(fhir::to_json(*ours) == rapidjson_compact(text));
    }
  }
  auto numbers = parse_json(R"({"n":[1,-2.50,3e5,0.0001,12345678901234567890]})");
  REQUIRE(numbers.ok());
  CHECK(fhir::to_json(*numbers) == R"({"n":[1,-2.50,3e5,0.0001,12345678901234567890]})");
}
