// SPDX-License-Identifier: Apache-2.0
// The record locator's search parameters and reads as FHIR clients use them, over real HTTPS:
// the token forms of identifier (R4 search.html#token) on Patient and DocumentReference, the
// answers a client can act on when a form is not served, and conditional reads by date.
#include <doctest/doctest.h>

#include <set>
#include <string>

#include "fhir/json.h"
#include "gateway/http/locator_api.h"
#include "support/responses.h"
#include "support/seed.h"
#include "support/test_server.h"
#include "support/tokens.h"

using namespace gw;
using gw::http::LocatorApi;
using gw::test::HttpResponse;
using gw::test::json_of;
using gw::test::TestServer;
using gw::test::TokenClaims;

namespace {

using gw::test::add_patient;
using gw::test::add_pointer;
using gw::test::Seeded;

std::string gp_at(const std::string& org) {
  TokenClaims c;
  c.sub = "dr-1";
  c.org = org;
  return test::test_tokens().header(c);
}

std::string diagnostics(const HttpResponse& r) {
  return std::string(json_of(r).find("issue")->items().at(0).string_at("diagnostics"));
}

std::string expression(const HttpResponse& r) {
  return std::string(json_of(r).find("issue")->items().at(0).find("expression")->items().at(0).text());
}

// The total of a search that must succeed.
std::int64_t total(TestServer& s, const std::string& target, const std::string& headers) {
  HttpResponse r = test::get(s.port(), target, s.client(), headers);
  REQUIRE_MESSAGE(r.status == 200, target << " -> " << r.body);
  return *json_of(r).find("total")->as_int64();
}

}  // namespace

TEST_CASE("Locator search: identifier takes a value alone, |value and system|value; system| is refused") {
  TestServer s;
  Seeded a = add_patient(s.locator(), 60, "Token", "A81001");
  const std::string h = gp_at("A81001");
  // A value alone matches in any system: the NHS number, or a local identifier.
  CHECK(total(s, "/Patient?identifier=" + a.nhs_number, h) == 1);
  CHECK(total(s, "/Patient?identifier=" + a.mrn, h) == 1);
  CHECK(total(s, "/Patient?identifier=NOT-HELD", h) == 0);
  // A value that fails the NHS number check is no NHS number, but may still be a local value.
  std::string bad = a.nhs_number;
  bad.back() = bad.back() == '9' ? '0' : static_cast<char>(bad.back() + 1);
  CHECK(total(s, "/Patient?identifier=" + bad, h) == 0);
  // |value: identifiers without a system, which the index never holds.
  CHECK(total(s, "/Patient?identifier=%7C" + a.mrn, h) == 0);
  // system|value as before, NHS numbers checked.
  CHECK(total(s, "/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number%7C" + a.nhs_number, h) == 1);
  CHECK(test::get(s.port(), "/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number%7C" + bad, s.client(), h).status ==
        400);
  HttpResponse every = test::get(s.port(), "/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number%7C", s.client(), h);
  CHECK(every.status == 400);
  CHECK(diagnostics(every) ==
        "identifier=system| (every patient with an identifier in that system) is not supported: give system|value, "
        "or the value alone");
  CHECK(expression(every) == "identifier");
}

TEST_CASE("Locator search: DocumentReference subject:identifier takes the NHS number alone and |value") {
  TestServer s;
  Seeded a = add_patient(s.locator(), 61, "Pointer", "A81001");
  add_pointer(s.locator(), a.id, "RX1", "887701000000100", "Emergency health care plan");
  const std::string h = gp_at("A81001");
  CHECK(total(s, "/DocumentReference?subject:identifier=" + a.nhs_number, h) == 1);
  CHECK(total(s, "/DocumentReference?patient:identifier=" + a.nhs_number, h) == 1);
  CHECK(total(s, "/DocumentReference?subject:identifier=%7C" + a.nhs_number, h) == 0);
  // A local value alone could name several patients: a pointer search names one.
  HttpResponse local = test::get(s.port(), "/DocumentReference?subject:identifier=" + a.mrn, s.client(), h);
  CHECK(local.status == 400);
  CHECK(diagnostics(local) ==
        "subject:identifier without a system must be a valid NHS number; for a local identifier give system|value");
  CHECK(expression(local) == "subject:identifier");
  HttpResponse every =
      test::get(s.port(), "/DocumentReference?patient:identifier=https://fhir.nhs.uk/Id/nhs-number%7C", s.client(), h);
  CHECK(every.status == 400);
  CHECK(expression(every) == "patient:identifier");
}

TEST_CASE("Locator search: address-postalcode matches the start of the postcode, case and spaces ignored") {
  TestServer s;
  add_patient(s.locator(), 62, "Postcode", "A81001");  // LS1 4AP
  const std::string h = gp_at("A81001");
  CHECK(total(s, "/Patient?address-postalcode=LS1&family=Postcode", h) == 1);
  CHECK(total(s, "/Patient?address-postalcode=ls1%204&family=Postcode", h) == 1);
  CHECK(total(s, "/Patient?address-postalcode=ls14ap&family=Postcode", h) == 1);
  CHECK(total(s, "/Patient?address-postalcode=LS2&family=Postcode", h) == 0);
  CHECK(total(s, "/Patient?address-postalcode=LS1%204APX&family=Postcode", h) == 0);
}

TEST_CASE("Locator reads: Last-Modified from meta.lastUpdated; If-Modified-Since gives 304 unless If-None-Match decides") {
  TestServer s;
  Seeded a = add_patient(s.locator(), 63, "Modified", "A81001");
  const std::string pointer = add_pointer(s.locator(), a.id, "RX1", "887701000000100", "Emergency health care plan");
  const std::string h = gp_at("A81001");
  for (const std::string& path : {"/Patient/" + a.id, "/DocumentReference/" + pointer}) {
    CAPTURE(path);
    HttpResponse r = test::get(s.port(), path, s.client(), h);
    REQUIRE(r.status == 200);
    const std::string last_modified = r.header("last-modified");
    const std::string last_updated(json_of(r).find("meta")->string_at("lastUpdated"));
    REQUIRE(!last_modified.empty());
    CHECK(LocatorApi::http_date_seconds(last_modified) == LocatorApi::last_modified_seconds(last_updated));
    const auto since = [&](std::int64_t delta, const std::string& more = {}) {
      const std::string date = LocatorApi::http_date(*LocatorApi::http_date_seconds(last_modified) + delta);
      return test::get(s.port(), path, s.client(), h + "If-Modified-Since: " + date + "\r\n" + more).status;
    };
    CHECK(since(0) == 304);
    CHECK(since(3600) == 304);
    CHECK(since(-1) == 200);
    // If-None-Match takes precedence (RFC 9110 13.2.2), whichever way it goes.
    CHECK(since(3600, "If-None-Match: W/\"99\"\r\n") == 200);
    CHECK(since(-1, "If-None-Match: " + r.header("etag") + "\r\n") == 304);
    // Not an HTTP-date: ignored (RFC 9110 13.1.3).
    CHECK(test::get(s.port(), path, s.client(), h + "If-Modified-Since: yesterday\r\n").status == 200);
  }
}

TEST_CASE("Locator search: DocumentReference by custodian ODS code and by date with prefixes") {
  TestServer s;
  Seeded a = add_patient(s.locator(), 64, "Custodian", "A81001");
  const auto put = [&](const std::string& source, const std::string& code, const std::string& date) {
    locator::Pointer p;
    p.patient_id = a.id;
    p.source_ods = source;
    p.type_code = code;
    p.type_display = "Care plan";
    p.date = date;
    p.url = "https://" + source + ".example.nhs.uk/fhir/DocumentReference/" + code;
    auto r = s.locator().put_pointer(source, p, {});
    REQUIRE_MESSAGE(r.ok(), r.issue().diagnostics);
  };
  put("RX1", "736253002", "2025-03-01T09:30:00Z");
  put("RY2", "887701000000100", "2026-01-15T12:00:00Z");
  const std::string h = gp_at("A81001");
  const std::string base = "/DocumentReference?subject:identifier=" + a.nhs_number;
  CHECK(total(s, base, h) == 2);
  CHECK(total(s, base + "&custodian:identifier=https://fhir.nhs.uk/Id/ods-organization-code%7CRY2", h) == 1);
  CHECK(total(s, base + "&custodian:identifier=RX1", h) == 1);
  CHECK(total(s, base + "&custodian:identifier=ZZ9", h) == 0);
  CHECK(total(s, base + "&date=2025", h) == 1);
  CHECK(total(s, base + "&date=ge2026-01-01", h) == 1);
  CHECK(total(s, base + "&date=ge2025&date=lt2027", h) == 2);
  CHECK(total(s, base + "&date=lt2025", h) == 0);
  CHECK(total(s, base + "&date=ge2025&custodian:identifier=RX1", h) == 1);
  HttpResponse other =
      test::get(s.port(), base + "&custodian:identifier=urn:oid:1.2%7CRX1", s.client(), h);
  REQUIRE(other.status == 400);
  CHECK(diagnostics(other) ==
        "custodian:identifier takes one ODS code: https://fhir.nhs.uk/Id/ods-organization-code|{code}, or the code "
        "alone");
  // Both are listed in the CapabilityStatement, so clients know they are applied.
  HttpResponse cs = test::get(s.port(), "/metadata", s.client(), "");
  REQUIRE(cs.status == 200);
  std::set<std::string> names;
  const fhir::Json statement = json_of(cs);
  for (const auto& r : statement.find("rest")->items().at(0).find("resource")->items())
    if (r.string_at("type") == "DocumentReference")
      for (const auto& p : r.find("searchParam")->items()) names.insert(std::string(p.string_at("name")));
  CHECK(names.count("custodian") == 1);
  CHECK(names.count("date") == 1);
}
