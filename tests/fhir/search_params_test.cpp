// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include "fhir/search_params.h"

using namespace fhir;

namespace {

SearchParamRegistry patient_registry() {
  SearchParamRegistry r;
  r.add("Patient", {"identifier", SearchParamType::token, "http://hl7.org/fhir/SearchParameter/Patient-identifier", ""});
  r.add("Patient", {"family", SearchParamType::string, "", ""});
  r.add("Patient", {"birthdate", SearchParamType::date, "", ""});
  r.add("Patient", {"general-practitioner", SearchParamType::reference, "", ""});
  r.add("Observation", {"value-quantity", SearchParamType::quantity, "", ""});
  return r;
}

Result<SearchRequest> parse(const std::string& query, Handling h = Handling::lenient,
                            const std::string& type = "Patient") {
  static const SearchParamRegistry reg = patient_registry();
  auto q = parse_query_string(query);
  REQUIRE(q.ok());
  return parse_search(type, *q, reg, h);
}

}  // namespace

TEST_CASE("Search: token forms system|code, |code, system| and code") {
  auto r = parse("identifier=https%3A%2F%2Ffhir.nhs.uk%2FId%2Fnhs-number%7C9000000009,|abc,urn:sys|,plain");
  REQUIRE(r.ok());
  const auto& v = r->params.at(0).values;
  REQUIRE(v.size() == 4);
  auto t0 = std::get<TokenValue>(v[0]);
  CHECK(t0.system_match == TokenValue::SystemMatch::exact);
  CHECK(t0.system == "https://fhir.nhs.uk/Id/nhs-number");
  CHECK(t0.code == "9000000009");
  auto t1 = std::get<TokenValue>(v[1]);
  CHECK(t1.system_match == TokenValue::SystemMatch::none);
  CHECK(t1.code == "abc");
  auto t2 = std::get<TokenValue>(v[2]);
  CHECK(t2.system == "urn:sys");
  CHECK(t2.code.empty());
  auto t3 = std::get<TokenValue>(v[3]);
  CHECK(t3.system_match == TokenValue::SystemMatch::any);
  CHECK(t3.code == "plain");
}

TEST_CASE("Search: an invalid NHS number in an identifier token is a 400 with INVALID_NHS_NUMBER") {
  for (const char* bad : {"9434765918", "123", "94347659AB"}) {
    auto r = parse(std::string("identifier=https://fhir.nhs.uk/Id/nhs-number|") + bad);
    REQUIRE_FALSE(r.ok());
    CHECK(r.issue().code == ErrorCode::invalid_nhs_number);
    CHECK(r.issue().expression == "identifier");
    CHECK(http_status_for(r.issue().code) == 400);
  }
}

TEST_CASE("Search: escaped commas and pipes are literal (search.html escaping)") {
  auto r = parse("family=O\\,Brien,Smith&identifier=urn:a\\|b|c");
  REQUIRE(r.ok());
  CHECK(std::get<StringValue>(r->params[0].values[0]).text == "O,Brien");
  CHECK(std::get<StringValue>(r->params[0].values[1]).text == "Smith");
  auto t = std::get<TokenValue>(r->params[1].values[0]);
  CHECK(t.system == "urn:a|b");
  CHECK(t.code == "c");
}

TEST_CASE("Search: date prefixes and partial dates; repeated parameters AND") {
  auto r = parse("birthdate=ge2010-10-21&birthdate=le2010-10-23");
  REQUIRE(r.ok());
  REQUIRE(r->params.size() == 2);
  auto lo = std::get<DateValue>(r->params[0].values[0]);
  CHECK(lo.prefix == Prefix::ge);
  CHECK(lo.text == "2010-10-21");
  auto year = parse("birthdate=2010");
  REQUIRE(year.ok());
  auto y = std::get<DateValue>(year->params[0].values[0]);
  CHECK(y.prefix == Prefix::eq);
  CHECK(y.range.end - y.range.begin == 365 * 86400);
}

TEST_CASE("Search: malformed values are 400 invalid_search_parameter naming the parameter") {
  for (const char* q : {"birthdate=2010-13", "birthdate=gt", "birthdate=2010-02-30", "_count=-1", "_count=ten",
                        "_summary=maybe", "_total=exact", "general-practitioner=Patient/has space",
                        "family:missing=perhaps", "identifier=|", "_sort=nonsense", "_elements=Bad Name",
                        "_include=Patient"}) {
    CAPTURE(q);
    auto r = parse(q);
    REQUIRE_FALSE(r.ok());
    CHECK(r.issue().code == ErrorCode::invalid_search_parameter);
    CHECK_FALSE(r.issue().diagnostics.empty());
  }
}

TEST_CASE("Search: unknown parameters are ignored when lenient and rejected when strict") {
  auto lenient = parse("family=smith&shoe-size=9");
  REQUIRE(lenient.ok());
  CHECK(lenient->ignored == std::vector<std::string>{"shoe-size"});
  CHECK(lenient->canonical_query().find("shoe-size") == std::string::npos);
  auto strict = parse("family=smith&shoe-size=9", Handling::strict);
  REQUIRE_FALSE(strict.ok());
  CHECK(strict.issue().diagnostics.find("Unknown search parameter 'shoe-size'") != std::string::npos);
}

TEST_CASE("Search: unsupported modifiers are rejected whatever the handling") {
  auto r = parse("birthdate:exact=2010");
  REQUIRE_FALSE(r.ok());
  CHECK(r.issue().diagnostics.find("not supported") != std::string::npos);
  CHECK(parse("family:exact=Smith").ok());
  CHECK(parse("family:contains=mit").ok());
  CHECK(parse("general-practitioner:identifier=https://fhir.nhs.uk/Id/ods-organization-code|Y12345").ok());
  CHECK(parse("family:missing=true").ok());
}

TEST_CASE("Search: result parameters _count (capped), _summary, _elements, _sort, _total, _offset") {
  auto r = parse("_count=5000&_summary=count&_elements=name,birthDate&_sort=-birthdate,family&_total=none&_offset=20");
  REQUIRE(r.ok());
  CHECK(r->count == 1000);
  CHECK(r->summary == SummaryMode::count);
  CHECK(r->elements == std::vector<std::string>{"name", "birthDate"});
  REQUIRE(r->sort.size() == 2);
  CHECK(r->sort[0].descending);
  CHECK(r->sort[0].name == "birthdate");
  CHECK(r->total == TotalMode::none);
  CHECK(r->offset == 20);
  // A whole number past an int is past the cap too: capped, not called "not a non-negative integer".
  auto huge = parse("_count=99999999999999&_offset=99999999999");
  REQUIRE(huge.ok());
  CHECK(huge->count == 1000);
  CHECK(huge->offset == 1000000000);
  CHECK_FALSE(parse("_offset=-99999999999").ok());
}

TEST_CASE("Search: reference values by type/id, modifier type and absolute URL") {
  auto r = parse("general-practitioner=Organization/Y123");
  REQUIRE(r.ok());
  auto ref = std::get<ReferenceValue>(r->params[0].values[0]);
  CHECK(ref.type == "Organization");
  CHECK(ref.id == "Y123");
  auto typed = parse("general-practitioner:Organization=Y9");
  REQUIRE(typed.ok());
  CHECK(std::get<ReferenceValue>(typed->params[0].values[0]).type == "Organization");
  auto url = parse("general-practitioner=https://example.org/fhir/Organization/1");
  REQUIRE(url.ok());
  CHECK(std::get<ReferenceValue>(url->params[0].values[0]).url == "https://example.org/fhir/Organization/1");
  CHECK_FALSE(parse("general-practitioner:Practitioner=Organization/1").ok());
}

TEST_CASE("Search: quantity and number take prefixes and must be numeric") {
  auto r = parse("value-quantity=gt5.40", Handling::lenient, "Observation");
  REQUIRE(r.ok());
  auto n = std::get<NumberValue>(r->params[0].values[0]);
  CHECK(n.prefix == Prefix::gt);
  CHECK(n.text == "5.40");
  CHECK_FALSE(parse("value-quantity=lots", Handling::lenient, "Observation").ok());
}

TEST_CASE("Search: canonical query re-encodes applied parameters for Bundle links") {
  auto r = parse("family=O%27Brien&_count=10");
  REQUIRE(r.ok());
  CHECK(r->canonical_query() == "family=O%27Brien&_count=10");
}

TEST_CASE("Search: Prefer handling is read from an RFC 7240 list") {
  CHECK(handling_from_prefer("return=minimal, handling=strict") == Handling::strict);
  CHECK(handling_from_prefer("handling=lenient") == Handling::lenient);
  CHECK(handling_from_prefer("") == Handling::lenient);
}

TEST_CASE("Search: Prefer is parsed as RFC 7240 says: first instance wins, names case-insensitive, BWS, quotes, params") {
  // Only the first instance of a preference is considered (RFC 7240 section 2).
  CHECK(handling_from_prefer("handling=strict, handling=lenient") == Handling::strict);
  CHECK(handling_from_prefer("handling=lenient, handling=strict") == Handling::lenient);
  for (const char* strict : {"handling = strict", "handling=\"strict\"", "handling=strict; foo=bar", "HANDLING=STRICT",
                             "Handling=Strict;x", "respond-async, handling=strict", " handling\t=\t\"strict\" ; a=\"b,c\"",
                             "return=\"min,imal\", handling=strict", "bogus element here, handling=strict"}) {
    CAPTURE(strict);
    CHECK(handling_from_prefer(strict) == Handling::strict);
  }
  for (const char* lenient : {"handling=stricter", "xhandling=strict", "handling=strict x", "handling=\"strict",
                              "return=\"a, handling=strict\"", "handling", "handling=", "handling=bogus, handling=strict"}) {
    CAPTURE(lenient);
    CHECK(handling_from_prefer(lenient) == Handling::lenient);
  }
  CHECK(prefer_value("return=minimal", "return") == std::optional<std::string>("minimal"));
  CHECK(prefer_value("Return = \"repre\\\"sentation\"; q=1, return=minimal", "RETURN") ==
        std::optional<std::string>("repre\"sentation"));
  CHECK(prefer_value("respond-async", "respond-async") == std::optional<std::string>(""));
  CHECK_FALSE(prefer_value("respond-async", "return").has_value());
}

TEST_CASE("Search: too many OR values is refused") {
  std::string many = "family=";
  for (int i = 0; i < 40; ++i) {
    if (i) many += ',';
    many += std::to_string(i);
  }
  auto r = parse(many);
  REQUIRE_FALSE(r.ok());
  CHECK(r.issue().diagnostics.find("more than 32") != std::string::npos);
}
