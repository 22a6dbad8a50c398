// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include "fhir/bundle.h"
#include "fhir/capability_statement.h"
#include "fhir/content_negotiation.h"

using namespace fhir;

namespace {
Json patient(const char* id) {
  Json p = Json::object();
  p.set("resourceType", Json::string("Patient"));
  p.set("id", Json::string(id));
  return p;
}

const Json* link_named(const Json& bundle, std::string_view rel) {
  for (const Json& l : bundle.find("link")->items())
    if (l.string_at("relation") == rel) return &l;
  return nullptr;
}
}  // namespace

TEST_CASE("Bundle: searchset page has total, absolute fullUrls, modes and paging links") {
  SearchRequest req;
  req.resource_type = "Patient";
  req.count = 2;
  req.offset = 2;
  SearchsetPage page;
  page.matches = {patient("a"), patient("b")};
  page.includes = {patient("gp")};
  page.total = 7;
  page.has_more = true;
  Json b = make_searchset("https://gw.example.nhs.uk/fhir", req, page, 0);
  CHECK(b.string_at("type") == "searchset");
  CHECK(b.find("total")->text() == "7");
  const auto& entries = b.find("entry")->items();
  REQUIRE(entries.size() == 3);
  CHECK(entries[0].string_at("fullUrl") == "https://gw.example.nhs.uk/fhir/Patient/a");
  CHECK(entries[0].find("search")->string_at("mode") == "match");
  CHECK(entries[2].find("search")->string_at("mode") == "include");
  REQUIRE(link_named(b, "self"));
  CHECK(link_named(b, "self")->string_at("url") == "https://gw.example.nhs.uk/fhir/Patient?_count=2&_offset=2");
  CHECK(link_named(b, "next")->string_at("url") == "https://gw.example.nhs.uk/fhir/Patient?_count=2&_offset=4");
  CHECK(link_named(b, "previous")->string_at("url") == "https://gw.example.nhs.uk/fhir/Patient?_count=2&_offset=0");
}

TEST_CASE("Bundle: last page has no next link and an empty page has no entry array") {
  SearchRequest req;
  req.resource_type = "Patient";
  Json b = make_searchset("https://x", req, SearchsetPage{{}, {}, 0, false, {}}, 0);
  CHECK(link_named(b, "next") == nullptr);
  CHECK(link_named(b, "previous") == nullptr);
  CHECK(b.find("entry") == nullptr);
  CHECK(b.find("total")->text() == "0");
}

TEST_CASE("CapabilityStatement: generated from declared resources and registered search parameters") {
  SearchParamRegistry reg;
  reg.add("Patient", {"identifier", SearchParamType::token, "http://hl7.org/fhir/SearchParameter/Patient-identifier",
                      "system|value"});
  ServerDescription server{"fhir-gateway", "0.1.0", "https://x", "test", "2026-11-23", true,
                           "https://idp.example/authorize", "https://idp.example/token"};
  ResourceCapability patient_cap{"Patient", "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient",
                                 {"read", "search-type"}, {{"summary", "http://hl7.org/fhir/uv/ips/OperationDefinition/summary"}},
                                 false, "full-support"};
  Json cs = capability_statement(server, {patient_cap}, {}, reg);
  CHECK(cs.string_at("fhirVersion") == "4.0.1");
  CHECK(cs.string_at("kind") == "instance");
  const Json& rest = cs.find("rest")->items().at(0);
  CHECK(rest.string_at("mode") == "server");
  CHECK(rest.find("security")->find("service")->items().at(0).find("coding")->items().at(0).string_at("code") ==
        "SMART-on-FHIR");
  // The SMART oauth-uris extension names the identity provider's endpoints.
  const Json& oauth = rest.find("security")->find("extension")->items().at(0);
  CHECK(oauth.string_at("url") == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris");
  CHECK(oauth.find("extension")->items().at(0).string_at("url") == "authorize");
  CHECK(oauth.find("extension")->items().at(1).string_at("valueUri") == "https://idp.example/token");
  const Json& res = rest.find("resource")->items().at(0);
  CHECK(res.string_at("type") == "Patient");
  CHECK(res.find("interaction")->items().size() == 2);
  CHECK(res.find("searchParam")->items().at(0).string_at("type") == "token");
  CHECK(res.find("operation")->items().at(0).string_at("name") == "summary");
  CHECK(res.string_at("conditionalRead") == "full-support");
  CHECK(res.find("updateCreate") == nullptr);
}

TEST_CASE("Content negotiation: JSON family and wildcards accepted, XML and Turtle refused with 406") {
  for (const char* ok : {"", "application/fhir+json", "application/json", "application/json+fhir", "*/*",
                         "application/fhir+json, */*; q=0.1", "text/html,application/xhtml+xml,*/*;q=0.8",
                         "application/*"}) {
    CAPTURE(ok);
    CHECK(negotiate_format(ok, std::nullopt, std::nullopt).ok());
  }
  for (const char* bad : {"application/fhir+xml", "application/xml, text/xml", "text/turtle",
                          "application/fhir+json;q=0, application/fhir+xml"}) {
    CAPTURE(bad);
    auto r = negotiate_format(bad, std::nullopt, std::nullopt);
    REQUIRE_FALSE(r.ok());
    CHECK(http_status_for(r.issue().code) == 406);
  }
}

TEST_CASE("Content negotiation: a fhirVersion other than R4 (4.0) is 406, in Accept and in _format") {
  for (const char* ok : {"application/fhir+json; fhirVersion=4.0", "application/fhir+json;fhirversion=\"4.0\"",
                         "application/fhir+json; charset=utf-8; fhirVersion=4.0.1",
                         "application/fhir+json; fhirVersion=3.0, application/fhir+json; fhirVersion=4.0"}) {
    CAPTURE(ok);
    CHECK(negotiate_format(ok, std::nullopt, std::nullopt).ok());
  }
  for (const char* bad : {"application/fhir+json; fhirVersion=3.0", "application/fhir+json; fhirVersion=5.0",
                          "application/json; fhirVersion=1.0"}) {
    CAPTURE(bad);
    auto r = negotiate_format(bad, std::nullopt, std::nullopt);
    REQUIRE_FALSE(r.ok());
    CHECK(http_status_for(r.issue().code) == 406);
  }
  CHECK(negotiate_format("", std::string_view("application/fhir+json;fhirVersion=4.0"), std::nullopt).ok());
  CHECK_FALSE(negotiate_format("", std::string_view("application/fhir+json;fhirVersion=3.0"), std::nullopt).ok());
}

TEST_CASE("Content negotiation: _format overrides Accept; _pretty is honoured") {
  CHECK(negotiate_format("application/fhir+xml", std::string_view("json"), std::nullopt).ok());
  CHECK_FALSE(negotiate_format("application/fhir+json", std::string_view("xml"), std::nullopt).ok());
  CHECK_FALSE(negotiate_format("", std::string_view("text/turtle"), std::nullopt).ok());
  auto p = negotiate_format("", std::nullopt, std::string_view("true"));
  REQUIRE(p.ok());
  CHECK(p->pretty);
  CHECK_FALSE(negotiate_format("", std::nullopt, std::string_view("yes")).ok());
  CHECK(is_json_media_type("application/fhir+json; charset=utf-8"));
  CHECK(is_json_media_type("Application/JSON"));
  CHECK_FALSE(is_json_media_type("application/fhir+xml"));
  CHECK_FALSE(is_json_media_type(""));
}

TEST_CASE("Bundle: outcome entries (e.g. withheld records) come last with search.mode outcome") {
  SearchRequest req;
  req.resource_type = "DocumentReference";
  SearchsetPage page;
  page.total = 1;
  Json doc = Json::object();
  doc.set("resourceType", Json::string("DocumentReference"));
  doc.set("id", Json::string("d1"));
  page.matches.push_back(doc);
  page.outcomes.push_back(fhir::operation_outcome(fhir::Issue::make(fhir::ErrorCode::forbidden, "1 withheld")));
  Json b = make_searchset("https://x", req, std::move(page), 0);
  const auto& entries = b.find("entry")->items();
  REQUIRE(entries.size() == 2);
  CHECK(entries[0].find("search")->string_at("mode") == "match");
  CHECK(entries[1].find("search")->string_at("mode") == "outcome");
  CHECK(entries[1].find("resource")->string_at("resourceType") == "OperationOutcome");
  CHECK(entries[1].find("fullUrl") == nullptr);  // an outcome has no id
  CHECK(b.find("total")->text() == "1");          // outcomes are not counted
}
