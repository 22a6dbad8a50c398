// SPDX-License-Identifier: Apache-2.0
// Issue #3's FHIR API under issue #5's access rules, over real HTTPS: Patient read and search,
// POST _search, PIXm, merges, DocumentReference pointers (NRL shape, ownership), legitimate
// relationship, objection, sensitivity, break-glass, and an authorisation matrix generated
// from the policy with zero disclosures beyond it.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <map>
#include <set>
#include <thread>

#include "fhir/json.h"
#include "fhir/nhs_number.h"
#include "fhir/structure_check.h"
#include "gateway/locator/fhir_mapping.h"
#include "support/audit_check.h"
#include "support/certs.h"
#include "support/responses.h"
#include "support/seed.h"
#include "support/test_server.h"

using namespace gw;
using gw::test::HttpResponse;
using gw::test::issue_code;
using gw::test::json_of;
using gw::test::TestServer;
using gw::test::TokenClaims;

namespace {

using gw::test::add_patient;
using gw::test::add_pointer;
using gw::test::kMrn;
using gw::test::nhs;
using gw::test::Seeded;

std::string send(TestServer& s, const std::string& method, const std::string& target, const std::string& headers,
                 const std::string& body, const std::string& type) {
  return method + " " + target + " HTTP/1.1\r\nHost: localhost\r\n" + headers + "Content-Type: " + type +
         "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
}

HttpResponse one(TestServer& s, const std::string& raw) {
  auto ex = test::exchange(s.port(), raw, 1, s.client());
  REQUIRE_MESSAGE(ex.responses.size() == 1, ex.error);
  return ex.responses[0];
}

std::string bearer(const TokenClaims& c) { return test::test_tokens().header(c); }

TokenClaims clinician_at(const std::string& org, const std::string& sub = "dr-1") {
  TokenClaims c;
  c.sub = sub;
  c.org = org;
  return c;
}

std::string sensitive_code(const auth::Policy& p, const std::string& category) {
  for (const auto& c : p.config().sensitive_categories)
    if (c.name == category && !c.codes.empty()) return c.codes.front().second;
  return {};
}

}  // namespace

TEST_CASE("Locator API: read a Patient in UK Core shape, with ETag and conditional read") {
  TestServer s;
  Seeded p = add_patient(s.locator(), 1, "Smith", "A81001");
  HttpResponse r = test::get(s.port(), "/Patient/" + p.id, s.client(), bearer(clinician_at("A81001")));
  REQUIRE_MESSAGE(r.status == 200, r.body);
  fhir::Json pt = json_of(r);
  CHECK(pt.string_at("resourceType") == "Patient");
  CHECK(pt.string_at("id") == p.id);
  const fhir::Json& id0 = pt.find("identifier")->items().at(0);
  CHECK(id0.string_at("system") == "https://fhir.nhs.uk/Id/nhs-number");
  CHECK(id0.string_at("value") == p.nhs_number);
  CHECK(id0.find("extension")->items().at(0).string_at("url") ==
        "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-NHSNumberVerificationStatus");
  CHECK(pt.find("meta")->find("profile")->items().at(0).text() ==
        "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient");
  CHECK(pt.find("generalPractitioner")->items().at(0).find("identifier")->string_at("value") == "A81001");
  CHECK(r.body.find(p.mrn) != std::string::npos);
  const std::string etag = r.header("etag");
  CHECK(etag.rfind("W/\"", 0) == 0);
  HttpResponse again = test::get(s.port(), "/Patient/" + p.id, s.client(),
                                 bearer(clinician_at("A81001")) + "If-None-Match: " + etag + "\r\n");
  CHECK(again.status == 304);
  CHECK(again.body.empty());
}

TEST_CASE("Locator API: no relationship answers exactly like an unknown patient (no existence oracle)") {
  TestServer s;
  Seeded p = add_patient(s.locator(), 2, "Jones", "A81001");
  HttpResponse stranger = test::get(s.port(), "/Patient/" + p.id, s.client(), bearer(clinician_at("B99999")));
  HttpResponse unknown = test::get(s.port(), "/Patient/no-such-patient", s.client(), bearer(clinician_at("B99999")));
  CHECK(stranger.status == 404);
  CHECK(unknown.status == 404);
  CHECK(json_of(stranger).find("issue")->items().at(0).string_at("diagnostics") ==
        json_of(unknown).find("issue")->items().at(0).string_at("diagnostics"));
  // Searches hide the patient too, and the total counts only what may be seen.
  HttpResponse search = test::get(s.port(), "/Patient?family=Jones", s.client(), bearer(clinician_at("B99999")));
  REQUIRE(search.status == 200);
  CHECK(json_of(search).find("total")->as_int64() == 0);
}

TEST_CASE("Locator API: paramedic with an emergency purpose of use; without it, nothing") {
  TestServer s;
  Seeded p = add_patient(s.locator(), 3, "Brown", "A81001");
  TokenClaims medic = clinician_at("AMB01", "medic-1");
  medic.role = "paramedic";
  CHECK(test::get(s.port(), "/Patient/" + p.id, s.client(), bearer(medic)).status == 404);
  medic.purpose = "EMERGENCY";
  CHECK(test::get(s.port(), "/Patient/" + p.id, s.client(), bearer(medic)).status == 200);
}

TEST_CASE("Locator API: on an emergency purpose of use a Patient search is a trace, of at most 10 patients") {
  TestServer s;
  // Eleven patients sharing a family name and date of birth (add_patient: 1980-05-17, female),
  // and one other; none registered with the ambulance service.
  for (int n = 600; n < 710; n += 10) add_patient(s.locator(), n, "Tracey", "A81001");  // nhs(n): 10 apart, distinct
  Seeded one = add_patient(s.locator(), 720, "Unique", "A81001");
  TokenClaims medic = clinician_at("AMB01", "medic-1");
  medic.role = "paramedic";
  medic.purpose = "EMERGENCY";
  auto search = [&](const std::string& query, const TokenClaims& who) {
    return test::get(s.port(), "/Patient?" + query, s.client(), bearer(who));
  };
  // A browse of the population lists nobody the paramedic has no relationship with, and says
  // what would find the patient.
  HttpResponse browse = search("gender=female&birthdate=ge1900", medic);
  REQUIRE_MESSAGE(browse.status == 200, browse.body);
  fhir::Json bundle = json_of(browse);
  CHECK(bundle.find("total")->as_int64() == 0);
  for (const auto& link : bundle.find("link")->items()) CHECK(link.string_at("relation") != "next");
  REQUIRE(bundle.find("entry"));
  const fhir::Json& note = *bundle.find("entry")->items().at(0).find("resource");
  REQUIRE(note.string_at("resourceType") == "OperationOutcome");
  CHECK(note.find("issue")->items().at(0).string_at("severity") == "warning");
  CHECK(note.find("issue")->items().at(0).string_at("diagnostics").find("found only by a trace") !=
        std::string_view::npos);
  CHECK(json_of(search("family=Unique", medic)).find("total")->as_int64() == 0);
  CHECK(json_of(search("family=Unique&birthdate=1980", medic)).find("total")->as_int64() == 0);
  // A trace finds them: family with the date of birth, or an identifier.
  HttpResponse traced = search("family=Unique&birthdate=1980-05-17", medic);
  REQUIRE_MESSAGE(traced.status == 200, traced.body);
  CHECK(json_of(traced).find("total")->as_int64() == 1);
  CHECK(json_of(search("identifier=https://fhir.nhs.uk/Id/nhs-number%7C" + one.nhs_number, medic))
            .find("total")->as_int64() == 1);
  // More than ten: asked for more detail, nothing listed.
  HttpResponse crowd = search("family=Tracey&birthdate=1980-05-17", medic);
  CHECK(crowd.status == 400);
  CHECK(json_of(crowd).find("issue")->items().at(0).string_at("diagnostics").find(
            "more than 10 patients match this trace") != std::string_view::npos);
  // A relationship still lists as before: the same paramedic at the patients' practice, and a
  // clinician there, browse all twelve, with no note.
  TokenClaims at_practice = medic;
  at_practice.org = "A81001";
  CHECK(json_of(search("gender=female&birthdate=ge1900", at_practice)).find("total")->as_int64() == 12);
  HttpResponse gp = search("gender=female&birthdate=ge1900", clinician_at("A81001"));
  CHECK(json_of(gp).find("total")->as_int64() == 12);
  CHECK(gp.body.find("OperationOutcome") == std::string::npos);
}

TEST_CASE("Locator API: an emergency trace needs a real family name, matched whole, not a blank or a prefix") {
  TestServer s;
  // add_patient: given Alex, 1980-05-17, female, LS1 4AP; none registered with the ambulance.
  Seeded unique = add_patient(s.locator(), 720, "Unique", "A81001");
  for (int n = 730; n < 790; n += 10) add_patient(s.locator(), n, "Smithsonian", "A81001");  // 6
  for (int n = 790; n < 850; n += 10) add_patient(s.locator(), n, "Smithson", "A81001");     // 6
  TokenClaims medic = clinician_at("AMB01", "medic-1");
  medic.role = "paramedic";
  medic.purpose = "EMERGENCY";
  auto search = [&](const std::string& query) {
    HttpResponse r = test::get(s.port(), "/Patient?" + query, s.client(), bearer(medic));
    REQUIRE_MESSAGE(r.status == 200, query << " -> " << r.body);
    return r;
  };
  auto total = [&](const std::string& query) { return *json_of(search(query)).find("total")->as_int64(); };
  const std::string dob = "&birthdate=1980-05-17";
  // Before: a family name that normalises to nothing passed as a trace and the date of birth
  // alone decided, listing everyone born that day (here 13 > 10: refused; on a real population
  // a day has fewer); one letter matched every name starting with it.
  for (const std::string family : {"%20", "%09", "+", "%2B", "-", "U", "u%20", "%C3%A9"}) {
    CAPTURE(family);
    HttpResponse r = search("family=" + family + dob);
    CHECK(json_of(r).find("total")->as_int64() == 0);
    CHECK(r.body.find("found only by a trace") != std::string::npos);  // not a trace: the note says how
  }
  // The same through a POST _search body, where '+' is a space.
  HttpResponse posted = one(s, send(s, "POST", "/Patient/_search", bearer(medic), "family=+&birthdate=1980-05-17",
                                    "application/x-www-form-urlencoded"));
  REQUIRE_MESSAGE(posted.status == 200, posted.body);
  CHECK(json_of(posted).find("total")->as_int64() == 0);
  // Names and postcode are matched whole (case, accents and spacing aside), as PDS traces.
  CHECK(total("family=Unique" + dob) == 1);
  CHECK(total("family=%20uNiQuE%20" + dob) == 1);
  CHECK(total("family=Uniq" + dob) == 0);
  CHECK(total("family=Unique&given=alex" + dob) == 1);
  CHECK(total("family=Unique&given=Al" + dob) == 0);
  CHECK(total("family=Unique&address-postalcode=ls1%204ap" + dob) == 1);
  CHECK(total("family=Unique&address-postalcode=LS1" + dob) == 0);
  // name= is a browse parameter: with it the search is not a trace.
  CHECK(total("family=Unique&name=Alex" + dob) == 0);
  // A crowd cannot be split by prefixes: family=Smithson is twelve by prefix but six whole;
  // a prefix of Smithsonian finds nobody, the whole name its six.
  CHECK(total("family=Smithson" + dob) == 6);
  CHECK(total("family=Smithsoni" + dob) == 0);
  CHECK(total("family=Smithsonian" + dob) == 6);
  CHECK(total("identifier=https://fhir.nhs.uk/Id/nhs-number%7C" + unique.nhs_number) == 1);
  // A standing relationship still searches by prefix, as FHIR string search does.
  HttpResponse gp = test::get(s.port(), "/Patient?family=Uniq", s.client(), bearer(clinician_at("A81001")));
  REQUIRE_MESSAGE(gp.status == 200, gp.body);
  CHECK(json_of(gp).find("total")->as_int64() == 1);
}

TEST_CASE("Locator API: search by identifier, names, birthdate and postcode; paging; bad NHS numbers") {
  TestServer s;
  Seeded a = add_patient(s.locator(), 10, "Taylor", "A81001");
  add_patient(s.locator(), 11, "Taylor", "A81001");
  add_patient(s.locator(), 12, "Taylor", "B81002");  // another practice: not visible to this user
  const std::string h = bearer(clinician_at("A81001"));
  auto total = [&](const std::string& q) {
    HttpResponse r = test::get(s.port(), "/Patient?" + q, s.client(), h);
    REQUIRE_MESSAGE(r.status == 200, q << " -> " << r.body);
    return *json_of(r).find("total")->as_int64();
  };
  CHECK(total("identifier=https://fhir.nhs.uk/Id/nhs-number%7C" + a.nhs_number) == 1);
  CHECK(total(std::string("identifier=") + kMrn + "%7C" + a.mrn) == 1);
  CHECK(total("family=taylor") == 2);
  CHECK(total("family=TAY") == 2);
  CHECK(total("name=alex&family=Taylor") == 2);
  CHECK(total("family=Taylor&birthdate=1980-05-17") == 2);
  CHECK(total("family=Taylor&birthdate=ge1990") == 0);
  CHECK(total("family=Taylor&birthdate=ge1980&birthdate=lt1981") == 2);
  CHECK(total("address-postalcode=ls14ap&family=Taylor") == 2);
  CHECK(total("gender=male&family=Taylor") == 0);

  HttpResponse page = test::get(s.port(), "/Patient?family=Taylor&_count=1", s.client(), h);
  fhir::Json b = json_of(page);
  CHECK(b.find("entry")->items().size() == 1);
  bool next = false;
  for (const auto& l : b.find("link")->items()) next = next || l.string_at("relation") == "next";
  CHECK(next);

  HttpResponse bad = test::get(s.port(), "/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number%7C9990000010", s.client(), h);
  CHECK(bad.status == 400);
  HttpResponse short_nhs = test::get(s.port(), "/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number%7C12345", s.client(), h);
  CHECK(short_nhs.status == 400);
  HttpResponse letters = test::get(s.port(), "/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number%7C99900000AB", s.client(), h);
  CHECK(letters.status == 400);
  CHECK(test::get(s.port(), "/Patient", s.client(), h).status == 400);  // no criteria: no enumeration
  CHECK(test::get(s.port(), "/Patient?family=Taylor&_include=Patient:organization", s.client(), h).status == 400);
  CHECK(test::get(s.port(), "/Patient?family=Taylor&_has:Observation:patient:code=1234", s.client(),
                  h + "Prefer: handling=strict\r\n").status == 400);
}

TEST_CASE("Locator API: POST /Patient/_search keeps the NHS number out of the URL") {
  TestServer s;
  Seeded a = add_patient(s.locator(), 20, "Evans", "A81001");
  HttpResponse r = one(s, send(s, "POST", "/Patient/_search", bearer(clinician_at("A81001")),
                               "identifier=https%3A%2F%2Ffhir.nhs.uk%2FId%2Fnhs-number%7C" + a.nhs_number,
                               "application/x-www-form-urlencoded"));
  REQUIRE_MESSAGE(r.status == 200, r.body);
  CHECK(json_of(r).find("total")->as_int64() == 1);
  HttpResponse wrong_type = one(s, send(s, "POST", "/Patient/_search", bearer(clinician_at("A81001")), "{}",
                                        "application/fhir+json"));
  CHECK(wrong_type.status == 415);
  // No body and so no Content-Type: the parameters in the URL are the search.
  HttpResponse url_only = one(s, "POST /Patient/_search?identifier=https%3A%2F%2Ffhir.nhs.uk%2FId%2Fnhs-number%7C" +
                                     a.nhs_number + " HTTP/1.1\r\nHost: localhost\r\n" + bearer(clinician_at("A81001")) +
                                     "Content-Length: 0\r\nConnection: close\r\n\r\n");
  REQUIRE_MESSAGE(url_only.status == 200, url_only.body);
  CHECK(json_of(url_only).find("total")->as_int64() == 1);
  // Media types are case-insensitive.
  HttpResponse upper = one(s, send(s, "POST", "/Patient/_search", bearer(clinician_at("A81001")),
                                   "identifier=https%3A%2F%2Ffhir.nhs.uk%2FId%2Fnhs-number%7C" + a.nhs_number,
                                   "Application/X-WWW-Form-Urlencoded; charset=utf-8"));
  CHECK(upper.status == 200);
  // A token in the body is refused as in the query string, even with the header sent.
  const std::string token = test::test_tokens().mint(clinician_at("A81001"));
  for (const std::string field : {"access_token=", "ACCESS_TOKEN=", "token="}) {
    CAPTURE(field);
    HttpResponse in_body = one(s, send(s, "POST", "/Patient/_search", bearer(clinician_at("A81001")),
                                       "family=Evans&" + field + token, "application/x-www-form-urlencoded"));
    CHECK(in_body.status == 401);
    CHECK(in_body.body.find("not accepted in the body") != std::string::npos);
    CHECK(in_body.body.find(a.nhs_number) == std::string::npos);
  }
  // The form body's limits name the form body, not a query string.
  HttpResponse big = one(s, send(s, "POST", "/Patient/_search", bearer(clinician_at("A81001")),
                                 "family=" + std::string(9000, 'x'), "application/x-www-form-urlencoded"));
  CHECK(big.status == 413);
  CHECK(issue_code(big) == "too-costly");
  CHECK(big.body.find("Form body longer than 8192 bytes") != std::string::npos);
}

TEST_CASE("Locator API: a merged (retired) id reads with Patient.link to its survivor") {
  TestServer s;
  Seeded survivor = add_patient(s.locator(), 30, "Walker", "A81001");
  locator::IdentityClaim c;  // a second record for the same person, known only by an MRN
  c.source_ods = "RX2";
  c.demographics.family = "Walker";
  c.demographics.given = {"Sam"};
  c.demographics.birth_date = "1951-01-01";
  c.demographics.gp_practice_ods = "A81001";
  c.identifiers.push_back({"https://other.example/mrn", "X1", "RX2"});
  auto retired = s.locator().resolve(c);
  REQUIRE(retired.ok());
  REQUIRE(s.locator().merge(retired->patient_id, survivor.id, "RX2").ok());
  HttpResponse r = test::get(s.port(), "/Patient/" + retired->patient_id, s.client(), bearer(clinician_at("A81001")));
  REQUIRE_MESSAGE(r.status == 200, r.body);
  fhir::Json pt = json_of(r);
  CHECK(pt.find("active")->as_bool() == false);
  const fhir::Json& link = pt.find("link")->items().at(0);
  CHECK(link.string_at("type") == "replaced-by");
  CHECK(link.find("other")->string_at("reference") == "Patient/" + survivor.id);
  HttpResponse sr = test::get(s.port(), "/Patient/" + survivor.id, s.client(), bearer(clinician_at("A81001")));
  CHECK(sr.body.find("replaces") != std::string::npos);
}

TEST_CASE("Locator API: IHE PIXm cross-reference") {
  TestServer s;
  Seeded a = add_patient(s.locator(), 40, "Hughes", "A81001");
  const std::string h = bearer(clinician_at("A81001"));
  HttpResponse r = test::get(s.port(), "/Patient/$ihe-pix?sourceIdentifier=https://fhir.nhs.uk/Id/nhs-number%7C" +
                                           a.nhs_number + "&targetSystem=" + kMrn, s.client(), h);
  REQUIRE_MESSAGE(r.status == 200, r.body);
  fhir::Json params = json_of(r);
  CHECK(params.string_at("resourceType") == "Parameters");
  std::map<std::string, int> names;
  for (const auto& p : params.find("parameter")->items()) names[std::string(p.string_at("name"))]++;
  CHECK(names["targetIdentifier"] == 1);  // only the MRN: the target system filters
  CHECK(names["targetId"] == 1);
  CHECK(r.body.find(a.mrn) != std::string::npos);
  CHECK(r.body.find(a.nhs_number) == std::string::npos);
  HttpResponse none = test::get(s.port(), std::string("/Patient/$ihe-pix?sourceIdentifier=") + kMrn + "%7CNOPE", s.client(), h);
  CHECK(none.status == 404);
  CHECK(test::get(s.port(), "/Patient/$ihe-pix", s.client(), h).status == 400);
  CHECK(test::get(s.port(), "/Patient/$ihe-pix?sourceIdentifier=https://fhir.nhs.uk/Id/nhs-number%7C123", s.client(), h).status == 400);
  // ITI-83's other two failures: an assigning authority the index has never seen (400), and a
  // target system it has never seen (403), each with the profile's wording.
  const auto diagnostics = [](const HttpResponse& x) {
    return std::string(json_of(x).find("issue")->items().at(0).string_at("diagnostics"));
  };
  HttpResponse domain = test::get(s.port(), "/Patient/$ihe-pix?sourceIdentifier=urn:oid:9.9%7Cnope", s.client(), h);
  CHECK(domain.status == 400);
  CHECK(diagnostics(domain) == "sourceIdentifier Assigning Authority not found");
  CHECK(issue_code(domain) == "code-invalid");  // ITI-83, Gazelle ITI83-019
  HttpResponse target = test::get(s.port(), "/Patient/$ihe-pix?sourceIdentifier=https://fhir.nhs.uk/Id/nhs-number%7C" +
                                                a.nhs_number + "&targetSystem=urn:oid:1.2.3", s.client(), h);
  CHECK(target.status == 403);
  CHECK(diagnostics(target) == "targetSystem not found");
  CHECK(issue_code(target) == "code-invalid");  // ITI-83, Gazelle ITI83-020
  CHECK(target.body.find(a.mrn) == std::string::npos);
  // A known domain with an unknown value is still 404; the NHS number domain is always known.
  CHECK(diagnostics(none) == "sourceIdentifier Patient Identifier not found");
  CHECK(test::get(s.port(), "/Patient/$ihe-pix?sourceIdentifier=https://fhir.nhs.uk/Id/nhs-number%7C" + nhs(98), s.client(), h)
            .status == 404);
}

TEST_CASE("Locator API: pointers in NRL shape; sensitive ones withheld and reported, totals honest") {
  TestServer s;
  Seeded a = add_patient(s.locator(), 50, "Green", "A81001");
  add_pointer(s.locator(), a.id, "RX1", "887701000000100", "Emergency health care plan");
  const std::string sexual = sensitive_code(s.app().policy(), "sexual-health");
  REQUIRE_MESSAGE(!sexual.empty(), "the default policy has a sexual-health category");
  add_pointer(s.locator(), a.id, "RX1", sexual, "Sexual health record");
  HttpResponse r = test::get(s.port(), "/DocumentReference?subject:identifier=https://fhir.nhs.uk/Id/nhs-number%7C" +
                                           a.nhs_number, s.client(), bearer(clinician_at("A81001")));
  REQUIRE_MESSAGE(r.status == 200, r.body);
  fhir::Json b = json_of(r);
  CHECK(b.find("total")->as_int64() == 1);
  int matches = 0, outcomes = 0;
  for (const auto& e : b.find("entry")->items()) {
    std::string mode(e.find("search")->string_at("mode"));
    if (mode == "match") {
      ++matches;
      const fhir::Json& doc = *e.find("resource");
      CHECK(doc.find("custodian")->find("identifier")->string_at("value") == "RX1");
      CHECK(doc.find("content")->items().at(0).find("attachment")->string_at("url").find("https://RX1") == 0);
      CHECK(doc.find("type")->find("coding")->items().at(0).string_at("code") == "887701000000100");
      // The resource types held travel in the same extension pointer maintenance reads.
      const fhir::Json& held = doc.find("extension")->items().at(0);
      CHECK(held.string_at("url") == locator::kResourceTypesExtension);
      CHECK(held.string_at("valueCode") == "Encounter");
    }
    if (mode == "outcome") {
      ++outcomes;
      CHECK(e.find("resource")->find("issue")->items().at(0).string_at("diagnostics").find("withheld") != std::string::npos);
    }
  }
  CHECK(matches == 1);
  CHECK(outcomes == 1);
  CHECK(r.body.find(sexual) == std::string::npos);
  // Unknown NHS number and no-relationship: the same empty Bundle.
  HttpResponse stranger = test::get(s.port(), "/DocumentReference?subject:identifier=https://fhir.nhs.uk/Id/nhs-number%7C" +
                                                  a.nhs_number, s.client(), bearer(clinician_at("B99999")));
  CHECK(json_of(stranger).find("total")->as_int64() == 0);
  CHECK(test::get(s.port(), "/DocumentReference", s.client(), bearer(clinician_at("A81001"))).status == 400);

  // _summary=count: the total alone; _elements: the listed elements, tagged SUBSETTED;
  // _summary=true: refused under strict handling, left out under lenient.
  const std::string q = "/DocumentReference?patient=" + a.id;
  const std::string h = bearer(clinician_at("A81001"));
  fhir::Json counted = json_of(test::get(s.port(), q + "&_summary=count", s.client(), h));
  CHECK(counted.find("total")->as_int64() == 1);
  // No match entries; the withheld-pointer outcome still says one is held back.
  int counted_matches = 0;
  if (const fhir::Json* entries = counted.find("entry"))
    for (const auto& e : entries->items()) counted_matches += e.find("search")->string_at("mode") == "match";
  CHECK(counted_matches == 0);
  fhir::Json cut = json_of(test::get(s.port(), q + "&_elements=type", s.client(), h));
  const fhir::Json& first = *cut.find("entry")->items().at(0).find("resource");
  CHECK(first.find("type") != nullptr);
  CHECK(first.find("custodian") == nullptr);
  // status and content are mandatory (1..1, 1..*): kept, unasked, so the pointer stays valid R4.
  CHECK(first.string_at("status") == "current");
  CHECK(first.find("content") != nullptr);
  CHECK(first.find("meta")->find("tag")->items().at(0).string_at("code") == "SUBSETTED");
  CHECK(test::get(s.port(), q + "&_summary=true", s.client(), h + "Prefer: handling=strict\r\n").status == 400);
  HttpResponse lenient = test::get(s.port(), q + "&_summary=true", s.client(), h);
  REQUIRE(lenient.status == 200);
  CHECK(lenient.body.find("\"content\"") != std::string::npos);
  CHECK(lenient.body.find("_summary") == std::string::npos);

  // patient= and subject= take [base]/Patient/{id} of this server, as the clinical searches do;
  // another server's Patient, or a reference to another type, is a clear 400.
  HttpResponse absolute = test::get(s.port(), "/DocumentReference?patient=" + s.cfg.public_base_url + "/Patient/" + a.id,
                                    s.client(), h);
  REQUIRE_MESSAGE(absolute.status == 200, absolute.body);
  CHECK(json_of(absolute).find("total")->as_int64() == 1);
  HttpResponse elsewhere = test::get(
      s.port(), "/DocumentReference?subject=https://elsewhere.example.org/fhir/Patient/" + a.id, s.client(), h);
  CHECK(elsewhere.status == 400);
  CHECK(json_of(elsewhere).find("issue")->items().at(0).string_at("diagnostics") ==
        "subject: an absolute reference must name a Patient on this server: " + s.cfg.public_base_url +
            "/Patient/{id}; patients of other servers are not held here");
  HttpResponse wrong_type = test::get(s.port(), "/DocumentReference?subject=Encounter/" + a.id, s.client(), h);
  CHECK(wrong_type.status == 400);
  CHECK(json_of(wrong_type).find("issue")->items().at(0).string_at("diagnostics") == "subject: must reference a Patient");
}

TEST_CASE("Locator API: a create's Location is a vread of the current version; other versions are 404") {
  TestServer s;
  Seeded a = add_patient(s.locator(), 61, "Whitby", "A81001");
  TokenClaims rx1;
  rx1.sub = "epr-rx1";
  rx1.role = "system";
  rx1.org = "RX1";
  rx1.scope = "system/DocumentReference.cruds";
  auto doc = [&](const std::string& id) {
    std::string j = R"({"resourceType":"DocumentReference",)";
    if (!id.empty()) j += R"("id":")" + id + R"(",)";
    j += R"("status":"current","type":{"coding":[{"system":"http://snomed.info/sct","code":"887701000000100","display":"Emergency health care plan"}]},)"
         R"("subject":{"identifier":{"system":"https://fhir.nhs.uk/Id/nhs-number","value":")" + a.nhs_number + R"("}},)"
         R"("custodian":{"identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"RX1"}},)"
         R"("content":[{"attachment":{"contentType":"application/fhir+json","url":"https://rx1.example.nhs.uk/fhir/Bundle/1"}}]})";
    return j;
  };
  HttpResponse created = one(s, send(s, "POST", "/DocumentReference", bearer(rx1), doc(""), "application/fhir+json"));
  REQUIRE_MESSAGE(created.status == 201, created.body);
  const std::string id(json_of(created).string_at("id"));
  const std::string location = created.header("location");
  REQUIRE(location.rfind(s.cfg.public_base_url, 0) == 0);
  const std::string vread_path = location.substr(s.cfg.public_base_url.size());
  CHECK(vread_path == "/DocumentReference/" + id + "/_history/1");
  // Following the Location answers what a read answers, with the same checks and record.
  const std::string gp = bearer(clinician_at("A81001"));
  HttpResponse read = test::get(s.port(), "/DocumentReference/" + id, s.client(), gp);
  HttpResponse vread = test::get(s.port(), vread_path, s.client(), gp);
  REQUIRE_MESSAGE(read.status == 200, read.body);
  REQUIRE_MESSAGE(vread.status == 200, vread.body);
  CHECK(vread.body == read.body);
  CHECK(vread.header("etag") == "W/\"1\"");
  CHECK(vread.header("last-modified") == read.header("last-modified"));
  auto recs = test::audit_records_of(s, vread);
  REQUIRE(recs.size() == 1);
  CHECK(recs[0].action == "vread");
  CHECK(recs[0].detail.returned == std::vector<std::string>{"DocumentReference/" + id});
  CHECK(recs[0].detail.patients == std::vector<std::string>{a.nhs_number});
  // Conditional, as a read.
  CHECK(test::get(s.port(), vread_path, s.client(), gp + "If-None-Match: W/\"1\"\r\n").status == 304);
  // Someone who may not read the pointer learns nothing of its versions.
  for (const std::string& path : {vread_path, "/DocumentReference/" + id + "/_history/7"}) {
    CAPTURE(path);
    HttpResponse stranger = test::get(s.port(), path, s.client(), bearer(clinician_at("B99999")));
    CHECK(stranger.status == 404);
    CHECK(stranger.body.find("version") == std::string::npos);
  }
  // After an update only version 2 is kept: version 1 is gone, and so is any other.
  HttpResponse updated = one(s, send(s, "PUT", "/DocumentReference/" + id, bearer(rx1), doc(id), "application/fhir+json"));
  REQUIRE_MESSAGE(updated.status == 200, updated.body);
  for (const std::string vid : {"1", "3", "02", "x"}) {
    CAPTURE(vid);
    HttpResponse old = test::get(s.port(), "/DocumentReference/" + id + "/_history/" + vid, s.client(), gp);
    CHECK(old.status == 404);
    CHECK(test::issue_code(old) == "not-found");
    CHECK_MESSAGE(old.body.find("only the current version, 2, is kept") != std::string::npos, old.body);
    auto old_recs = test::audit_records_of(s, old);
    REQUIRE(old_recs.size() == 1);
    CHECK(old_recs[0].detail.returned.empty());
  }
  HttpResponse two = test::get(s.port(), "/DocumentReference/" + id + "/_history/2", s.client(), gp);
  CHECK(two.status == 200);
  CHECK(two.header("etag") == "W/\"2\"");
  // The history listing is still not offered, nor a vread of other types.
  for (const std::string& path : {"/DocumentReference/" + id + "/_history", std::string("/DocumentReference/_history"),
                                 "/Patient/" + a.id + "/_history/1"}) {
    CAPTURE(path);
    HttpResponse h = test::get(s.port(), path, s.client(), gp);
    CHECK(h.status == 404);
    CHECK(test::issue_code(h) == "not-supported");
  }
  // The patient's access report words a vread as the read it is.
  TokenClaims ig;
  ig.sub = "ig-jones";
  ig.role = "ig-officer";
  ig.org = "X26";
  ig.scope = "user/AuditEvent.rs";
  HttpResponse report = test::get(s.port(), "/AuditEvent/$access-report?patient=" + a.nhs_number, s.client(), bearer(ig));
  REQUIRE_MESSAGE(report.status == 200, report.body);
  const fhir::Json report_json = json_of(report);
  std::size_t entry_reads = 0;
  for (const fhir::Json& e : report_json.find("accesses")->items()) {
    const std::string what(e.string_at("what"));
    CHECK_MESSAGE(what != "looked at your record", what);
    entry_reads += what == "looked at one entry in the list of services holding records about you";
  }
  CHECK(entry_reads >= 8);  // the read, the vreads, the conditional one, the strangers' and the old versions
  // GET /metadata declares vread for DocumentReference only.
  fhir::Json meta = json_of(test::get(s.port(), "/metadata", s.client()));
  for (const fhir::Json& res : meta.find("rest")->items().at(0).find("resource")->items()) {
    bool has_vread = false;
    for (const fhir::Json& i : res.find("interaction")->items()) has_vread = has_vread || i.string_at("code") == "vread";
    CAPTURE(res.string_at("type"));
    CHECK(has_vread == (res.string_at("type") == "DocumentReference"));
  }
}

TEST_CASE("Locator API: a source maintains only its own pointers") {
  TestServer s;
  Seeded a = add_patient(s.locator(), 60, "White", "A81001");
  TokenClaims rx1;
  rx1.sub = "epr-rx1";
  rx1.role = "system";
  rx1.org = "RX1";
  rx1.scope = "system/DocumentReference.cruds";
  TokenClaims rx2 = rx1;
  rx2.sub = "epr-rx2";
  rx2.org = "RX2";
  auto doc = [&](const std::string& custodian, const std::string& id) {
    std::string j = R"({"resourceType":"DocumentReference",)";
    if (!id.empty()) j += R"("id":")" + id + R"(",)";
    j += R"("status":"current","type":{"coding":[{"system":"http://snomed.info/sct","code":"887701000000100","display":"Emergency health care plan"}]},)"
         R"("subject":{"identifier":{"system":"https://fhir.nhs.uk/Id/nhs-number","value":")" + a.nhs_number + R"("}},)"
         R"("custodian":{"identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":")" + custodian + R"("}},)"
         R"("content":[{"attachment":{"contentType":"application/fhir+json","url":"https://rx1.example.nhs.uk/fhir/Bundle/1"}}]})";
    return j;
  };
  HttpResponse created = one(s, send(s, "POST", "/DocumentReference", bearer(rx1), doc("RX1", ""), "application/fhir+json"));
  REQUIRE_MESSAGE(created.status == 201, created.body);
  std::string id(json_of(created).string_at("id"));
  // R4 http.html#create: the Location names the version created.
  CHECK(created.header("location") == s.cfg.public_base_url + "/DocumentReference/" + id + "/_history/1");
  // Another source may not create in RX1's name, nor change or delete RX1's pointer.
  CHECK(one(s, send(s, "POST", "/DocumentReference", bearer(rx2), doc("RX1", ""), "application/fhir+json")).status == 403);
  CHECK(one(s, send(s, "PUT", "/DocumentReference/" + id, bearer(rx2), doc("RX2", id), "application/fhir+json")).status == 403);
  CHECK(one(s, send(s, "DELETE", "/DocumentReference/" + id, bearer(rx2), "", "application/fhir+json")).status == 403);
  // The owner can.
  HttpResponse updated = one(s, send(s, "PUT", "/DocumentReference/" + id, bearer(rx1), doc("RX1", id), "application/fhir+json"));
  CHECK_MESSAGE(updated.status == 200, updated.body);
  CHECK(one(s, send(s, "DELETE", "/DocumentReference/" + id, bearer(rx1), "", "application/fhir+json")).status == 204);
  // A clinician cannot write pointers at all, and a malformed body is a clear 400.
  CHECK(one(s, send(s, "POST", "/DocumentReference", bearer(clinician_at("A81001")), doc("RX1", ""),
                    "application/fhir+json")).status == 403);
  HttpResponse bad = one(s, send(s, "POST", "/DocumentReference", bearer(rx1), R"({"resourceType":"DocumentReference"})",
                                 "application/fhir+json"));
  CHECK(bad.status == 400);
  HttpResponse unknown_patient = one(s, send(s, "POST", "/DocumentReference", bearer(rx1),
                                             doc("RX1", "").replace(doc("RX1", "").find(a.nhs_number), 10, nhs(61)),
                                             "application/fhir+json"));
  CHECK(unknown_patient.status == 404);
}

TEST_CASE("Locator API: objection hides the record except under break-glass; break-glass is checked every time") {
  TestServer s;
  Seeded a = add_patient(s.locator(), 70, "Clarke", "A81001");
  const std::string path = "/Patient/" + a.id;
  const std::string bg = "X-Break-Glass-Reason: " + s.app().policy().config().break_glass_reasons.front() +
                         "\r\nX-Break-Glass-Justification: unconscious patient in ED, no history available\r\n";
  // A clinician with no relationship breaks glass: allowed, marked as emergency access.
  TokenClaims er = clinician_at("RX9", "dr-er");
  HttpResponse r = test::get(s.port(), path, s.client(), bearer(er) + bg);
  REQUIRE_MESSAGE(r.status == 200, r.body);
  CHECK(r.header("x-emergency-access") == "break-glass");
  CHECK(r.body.find("\"BTG\"") != std::string::npos);
  // The grant is tied to that user and patient: later requests by them are allowed (and
  // marked), another user is not.
  CHECK(test::get(s.port(), path, s.client(), bearer(er)).header("x-emergency-access") == "break-glass");
  CHECK(test::get(s.port(), path, s.client(), bearer(clinician_at("RX9", "dr-other"))).status == 404);
  // Without a justification, or with an unknown reason: refused.
  CHECK(test::get(s.port(), path, s.client(), bearer(clinician_at("RX9", "dr-3")) +
                  "X-Break-Glass-Reason: " + s.app().policy().config().break_glass_reasons.front() + "\r\n").status == 400);
  CHECK(test::get(s.port(), path, s.client(), bearer(clinician_at("RX9", "dr-3")) +
                  "X-Break-Glass-Reason: curiosity\r\nX-Break-Glass-Justification: I wanted to see the record\r\n").status == 400);
  // A role not allowed to break glass.
  TokenClaims social = clinician_at("LA01", "sw-1");
  social.role = "social-care-practitioner";
  CHECK(test::get(s.port(), path, s.client(), bearer(social) + bg).status == 403);
  // ... and the refusal is the same for a patient that does not exist (no existence oracle).
  CHECK(test::get(s.port(), "/Patient/no-such-patient", s.client(), bearer(social) + bg).status == 403);
  CHECK(test::get(s.port(), "/Patient/$ihe-pix?sourceIdentifier=https://fhir.nhs.uk/Id/nhs-number%7C" + nhs(79),
                  s.client(), bearer(social) + bg).status == 403);

  // Objection: hidden from the registered practice too, unless break-glass.
  REQUIRE(s.locator().set_objection(a.id, true).ok());
  CHECK(test::get(s.port(), path, s.client(), bearer(clinician_at("A81001", "gp-1"))).status == 404);
  CHECK(test::get(s.port(), path, s.client(), bearer(clinician_at("A81001", "gp-1")) + bg).status == 200);
}

// Roles x patient states x interactions, generated from the policy: an independent oracle says
// which requests may disclose patient data, and every answer is checked against it.
TEST_CASE("Locator API: authorisation matrix has zero disclosures beyond the policy") {
  TestServer s;
  const auth::Policy& policy = s.app().policy();
  const std::string sexual = sensitive_code(policy, "sexual-health");
  Seeded normal = add_patient(s.locator(), 80, "Matrix", "A81001");
  Seeded objecting = add_patient(s.locator(), 81, "Objector", "A81001");
  REQUIRE(s.locator().set_objection(objecting.id, true).ok());
  Seeded sensitive = add_patient(s.locator(), 82, "Sensitive", "A81001");
  add_pointer(s.locator(), sensitive.id, "RX1", sexual, "Sexual health record");
  add_pointer(s.locator(), normal.id, "RX1", "887701000000100", "Emergency health care plan");
  Seeded elsewhere = add_patient(s.locator(), 83, "Elsewhere", "B81002");

  struct State {
    std::string name;
    std::string id, nhs_number;
    bool related, objection, exists;
  };
  std::vector<State> states = {
      {"normal", normal.id, normal.nhs_number, true, false, true},
      {"no-relationship", elsewhere.id, elsewhere.nhs_number, false, false, true},
      {"objection", objecting.id, objecting.nhs_number, true, true, true},
      {"sensitive", sensitive.id, sensitive.nhs_number, true, false, true},
      {"unknown", "unknown-id", nhs(99), false, false, false},
  };
  struct Interaction {
    std::string name;
    std::string resource_type;  // what it discloses
    std::function<std::string(const State&)> target;
  };
  const std::string nhs_sys = "https://fhir.nhs.uk/Id/nhs-number%7C";
  std::vector<Interaction> interactions = {
      {"read", "Patient", [](const State& st) { return "/Patient/" + st.id; }},
      {"search", "Patient", [&](const State& st) { return "/Patient?identifier=" + nhs_sys + st.nhs_number; }},
      {"pix", "Patient", [&](const State& st) { return "/Patient/$ihe-pix?sourceIdentifier=" + nhs_sys + st.nhs_number; }},
      {"pointer-search", "DocumentReference",
       [&](const State& st) { return "/DocumentReference?subject:identifier=" + nhs_sys + st.nhs_number; }},
      {"_include", "Patient", [&](const State& st) {
         return "/Patient?identifier=" + nhs_sys + st.nhs_number + "&_include=Patient:general-practitioner"; }},
      {"_revinclude", "Patient", [&](const State& st) {
         return "/Patient?identifier=" + nhs_sys + st.nhs_number + "&_revinclude=DocumentReference:subject"; }},
      {"_has", "Patient", [&](const State& st) {
         return "/Patient?identifier=" + nhs_sys + st.nhs_number + "&_has:DocumentReference:subject:type=" + sexual; }},
  };

  int allowed_expected = 0, disclosures_beyond = 0, denied_wrongly = 0, cases = 0;
  std::vector<HttpResponse> responses;
  // Every role with user/ scopes and with system/ scopes: system/ scopes make a backend-service
  // principal, which only a role without the relationship rule may be (and the reverse).
  for (const auto& role : policy.config().roles)
  for (const bool system_scopes : {false, true}) {
    // Its own user and client for each pass, so that the rate limits never answer for the policy.
    TokenClaims c = clinician_at("A81001", "matrix-" + role.name + (system_scopes ? "-system" : "-user"));
    c.client_id = c.sub;
    c.role = role.claim_values.front();
    c.scope = system_scopes ? "system/*.cruds" : "user/*.cruds";
    const bool context_ok = role.requires_relationship != system_scopes;
    for (const auto& st : states) {
      for (const auto& in : interactions) {
        ++cases;
        CAPTURE(role.name);
        CAPTURE(c.scope);
        CAPTURE(st.name);
        CAPTURE(in.name);
        // The oracle, from the role table alone.
        auto has = [](const std::vector<std::string>& v, const std::string& x) {
          return std::find(v.begin(), v.end(), x) != v.end() || std::find(v.begin(), v.end(), "*") != v.end();
        };
        const std::uint8_t needed = in.name == "read" ? auth::kRead : auth::kSearch;
        const bool type_ok = role.clinical && (role.permissions & needed) && has(role.resource_types, in.resource_type);
        const bool relationship = st.related || !role.requires_relationship;
        const bool include_param = in.name == "_include" || in.name == "_revinclude";  // refused outright
        const bool may_see_sexual = has(role.sensitive_categories, "sexual-health");
        bool may_disclose = st.exists && context_ok && type_ok && relationship && !st.objection && !include_param;
        if (in.name == "pointer-search" && st.name == "sensitive") may_disclose = may_disclose && may_see_sexual;
        if (in.name == "pointer-search" && (st.name == "objection" || st.name == "no-relationship" || st.name == "unknown"))
          may_disclose = false;  // those patients have no pointers to show anyway
        allowed_expected += may_disclose;

        HttpResponse r = test::get(s.port(), in.target(st), s.client(), bearer(c));
        responses.push_back(r);
        // Disclosure: a Patient or Parameters about them, or a Bundle with matching entries.
        bool disclosed = false;
        if (r.status == 200) {
          fhir::Json body = json_of(r);
          std::string_view type = body.string_at("resourceType");
          if (type == "Patient" || type == "Parameters") disclosed = true;
          if (type == "Bundle" && body.find("entry"))
            for (const auto& e : body.find("entry")->items())
              disclosed = disclosed || e.find("search")->string_at("mode") == "match";
        }
        const bool sexual_leak = r.status == 200 && !may_see_sexual && r.body.find("\"" + sexual + "\"") != std::string::npos &&
                                 in.name != "_has";  // _has echoes its own value in the self link
        if ((disclosed && !may_disclose) || sexual_leak) {
          ++disclosures_beyond;
          MESSAGE("disclosure beyond policy: status " << r.status);
        }
        if (may_disclose && !disclosed) {
          ++denied_wrongly;
          MESSAGE("expected access was refused: status " << r.status << " " << r.body.substr(0, 200));
        }
      }
    }
  }
  CHECK(cases == static_cast<int>(2 * policy.config().roles.size() * states.size() * interactions.size()));
  CHECK(allowed_expected > 0);  // the matrix exercises real access, not only refusals
  CHECK(disclosures_beyond == 0);
  CHECK(denied_wrongly == 0);
  // Every one of those requests, allowed or refused, has exactly one audit record.
  CHECK(test::check_one_audit_record_each(s, responses) == static_cast<std::size_t>(cases));
}

TEST_CASE("Locator API: a source system authenticated by client certificate maintains its pointers") {
  TestServer s([](config::Config& c) {
    c.https.client_ca = test::dev_certs().ca;
    c.https.client_certificates = config::ClientCertificates::optional;
    config::SourceSystemConfig epr;
    epr.ods_code = "RX1";
    epr.name = "Development Trust EPR";
    epr.client_certificate_subject = "CN=dev-client,O=Development Trust";
    c.source_systems.push_back(epr);
  });
  Seeded a = add_patient(s.locator(), 90, "Certain", "A81001");
  auto with_cert = s.client();
  with_cert.cert_file = test::dev_certs().client_cert;
  with_cert.key_file = test::dev_certs().client_key;
  const std::string body =
      R"({"resourceType":"DocumentReference","status":"current","type":{"coding":[{"system":"http://snomed.info/sct","code":"887701000000100"}]},)"
      R"("subject":{"identifier":{"system":"https://fhir.nhs.uk/Id/nhs-number","value":")" + a.nhs_number + R"("}},)"
      R"("custodian":{"identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"RX1"}},)"
      R"("content":[{"attachment":{"contentType":"application/fhir+json","url":"https://rx1.example.nhs.uk/fhir/Bundle/9"}}]})";
  const std::string post = send(s, "POST", "/DocumentReference", "", body, "application/fhir+json");
  auto ex = test::exchange(s.port(), post, 1, with_cert);
  REQUIRE_MESSAGE(ex.responses.size() == 1, ex.error);
  CHECK_MESSAGE(ex.responses[0].status == 201, ex.responses[0].body);
  // The registered source is in the index with its name.
  auto src = s.locator().source_system("RX1");
  REQUIRE(src.ok());
  REQUIRE(src->has_value());
  CHECK((*src)->name == "Development Trust EPR");
  // Without the certificate (and no token) the same request is unauthenticated.
  auto anonymous = test::exchange(s.port(), post, 1, s.client());
  REQUIRE(anonymous.responses.size() == 1);
  CHECK(anonymous.responses[0].status == 401);
  // The certificate acts for RX1 only: a pointer in another custodian's name is refused.
  auto other_custodian = test::exchange(s.port(), send(s, "POST", "/DocumentReference", "", [&] {
    std::string b = body;
    return b.replace(b.find("\"RX1\""), 5, "\"RX2\"");
  }(), "application/fhir+json"), 1, with_cert);
  REQUIRE(other_custodian.responses.size() == 1);
  CHECK(other_custodian.responses[0].status == 403);
}

TEST_CASE("Locator API: the match cap counts only the patients this caller may see") {
  TestServer s;
  // 1,005 patients registered elsewhere, and two with this GP.
  std::vector<locator::ImportRecord> crowd;
  for (int n = 100000; crowd.size() < 1005 && n < 200000; ++n) {
    const std::string nine = "999" + std::to_string(n);
    auto check = fhir::nhs_check_digit(nine);
    if (!check) continue;
    locator::ImportRecord rec;
    rec.identity.source_ods = "RX1";
    rec.identity.demographics.nhs_number = nine + *check;
    rec.identity.demographics.family = "Crowd";
    const std::size_t i = crowd.size();  // distinct dates: no two look like the same person
    char date[11];
    std::snprintf(date, sizeof date, "%04zu-%02zu-%02zu", 1930 + i % 60, 1 + i / 60 % 12, 1 + i / 720 % 28);
    rec.identity.demographics.birth_date = date;
    rec.identity.demographics.gp_practice_ods = "B81002";
    crowd.push_back(std::move(rec));
  }
  REQUIRE(crowd.size() == 1005);
  REQUIRE(s.locator().import(crowd).ok());
  add_patient(s.locator(), 1, "Mine", "A81001");
  add_patient(s.locator(), 2, "Mine", "A81001");
  // Before: 400 "more than 1000 patients match", which also told this GP the population size.
  HttpResponse mine = test::get(s.port(), "/Patient?birthdate=ge1900", s.client(), bearer(clinician_at("A81001")));
  REQUIRE_MESSAGE(mine.status == 200, mine.body);
  CHECK(json_of(mine).find("total")->as_int64() == 2);
  // The practice that sees all 1,005 is asked to refine, in words about what it may see.
  HttpResponse theirs = test::get(s.port(), "/Patient?birthdate=ge1900", s.client(), bearer(clinician_at("B81002")));
  CHECK(theirs.status == 400);
  CHECK(issue_code(theirs) == "too-costly");  // the search asks too much; its values are fine
  CHECK(json_of(theirs).find("issue")->items().at(0).string_at("diagnostics").find("you may see") !=
        std::string_view::npos);
}

TEST_CASE("Locator API: a patient-bound token's Patient search examines only its own patient, never too costly") {
  TestServer s;
  // More index entries than one search examines (LocatorRouteDeps::max_search_examined, 20,000).
  std::vector<locator::ImportRecord> crowd;
  for (int n = 100000; crowd.size() < 20001 && n < 400000; ++n) {
    const std::string nine = "999" + std::to_string(n);
    auto check = fhir::nhs_check_digit(nine);
    if (!check) continue;
    locator::ImportRecord rec;
    rec.identity.source_ods = "RX1";
    rec.identity.demographics.nhs_number = nine + *check;
    rec.identity.demographics.family = "Crowd";
    const std::size_t i = crowd.size();  // distinct dates: no two look like the same person
    char date[11];
    std::snprintf(date, sizeof date, "%04zu-%02zu-%02zu", 1930 + i % 60, 1 + i / 60 % 12, 1 + i / 720 % 28);
    rec.identity.demographics.birth_date = date;
    rec.identity.demographics.gender = i % 2 ? "male" : "female";
    rec.identity.demographics.gp_practice_ods = "A81001";
    crowd.push_back(std::move(rec));
  }
  REQUIRE(crowd.size() == 20001);
  REQUIRE(s.locator().import(crowd).ok());
  Seeded me = add_patient(s.locator(), 1, "Mine", "A81001");  // 1980-05-17, female
  TokenClaims app = clinician_at("A81001");
  app.scope = "launch/patient patient/*.rs";
  app.patient = me.id;
  auto search = [&](const std::string& query, const TokenClaims& who) {
    return test::get(s.port(), "/Patient?" + query, s.client(), bearer(who));
  };
  // Before: 400 too-costly ("would examine more than 20000 index entries"), although only the
  // patient in context could ever be listed.
  HttpResponse broad = search("birthdate=ge1900", app);
  REQUIRE_MESSAGE(broad.status == 200, broad.body);
  fhir::Json bundle = json_of(broad);
  CHECK(bundle.find("total")->as_int64() == 1);
  CHECK(bundle.find("entry")->items().at(0).find("resource")->string_at("id") == me.id);
  CHECK(json_of(search("family=Crowd", app)).find("total")->as_int64() == 0);  // the rest still must match
  CHECK(json_of(search("gender=female&family=mine", app)).find("total")->as_int64() == 1);
  // Unbound, the same search is still too broad.
  HttpResponse unbound = search("birthdate=ge1900", clinician_at("A81001"));
  CHECK(unbound.status == 400);
  CHECK(issue_code(unbound) == "too-costly");
}

TEST_CASE("Locator API: _summary=count and _elements on Patient search and read") {
  TestServer s;
  Seeded a = add_patient(s.locator(), 110, "Butler", "A81001");
  add_patient(s.locator(), 111, "Butler", "A81001");
  const std::string h = bearer(clinician_at("A81001"));
  HttpResponse count = test::get(s.port(), "/Patient?family=Butler&_summary=count", s.client(), h);
  REQUIRE_MESSAGE(count.status == 200, count.body);
  fhir::Json b = json_of(count);
  CHECK(b.find("total")->as_int64() == 2);
  CHECK(b.find("entry") == nullptr);
  CHECK(count.body.find(a.nhs_number) == std::string::npos);

  auto only = [](const fhir::Json& r, std::set<std::string> expected) {
    std::set<std::string> got;
    for (const auto& [name, value] : r.members()) got.insert(name);
    CHECK(got == expected);
    bool subsetted = false;
    const fhir::Json* tags = r.find("meta")->find("tag");
    REQUIRE(tags != nullptr);
    for (const auto& t : tags->items())
      subsetted = subsetted || (t.string_at("code") == "SUBSETTED" &&
                                t.string_at("system") == "http://terminology.hl7.org/CodeSystem/v3-ObservationValue");
    CHECK(subsetted);
  };
  HttpResponse elements = test::get(s.port(), "/Patient?family=Butler&_elements=gender", s.client(), h);
  REQUIRE_MESSAGE(elements.status == 200, elements.body);
  fhir::Json eb = json_of(elements);
  REQUIRE(eb.find("entry")->items().size() == 2);
  for (const auto& e : eb.find("entry")->items()) only(*e.find("resource"), {"resourceType", "id", "meta", "gender"});

  HttpResponse read = test::get(s.port(), "/Patient/" + a.id + "?_elements=name,birthDate", s.client(), h);
  REQUIRE_MESSAGE(read.status == 200, read.body);
  only(json_of(read), {"resourceType", "id", "meta", "name", "birthDate"});
  HttpResponse summary = test::get(s.port(), "/Patient/" + a.id + "?_summary=true", s.client(), h);
  REQUIRE(summary.status == 200);
  fhir::Json sp = json_of(summary);
  CHECK(sp.find("generalPractitioner") == nullptr);  // not a summary element in R4
  CHECK(sp.find("identifier") != nullptr);
  // Without them, the whole resource and no tag.
  CHECK(json_of(test::get(s.port(), "/Patient/" + a.id, s.client(), h)).find("meta")->find("tag") == nullptr);
  CHECK(test::get(s.port(), "/Patient/" + a.id + "?_summary=count", s.client(), h).status == 400);
  CHECK(test::get(s.port(), "/Patient?family=Butler&_summary=true&_elements=gender", s.client(), h).status == 400);
}

TEST_CASE("Locator API: pointer writes refuse a contradictory subject and non-https URLs") {
  TestServer s;
  Seeded a = add_patient(s.locator(), 120, "Subject", "A81001");
  Seeded b = add_patient(s.locator(), 121, "Other", "A81001");
  TokenClaims rx1;
  rx1.sub = "epr-rx1";
  rx1.role = "system";
  rx1.org = "RX1";
  rx1.scope = "system/DocumentReference.cruds";
  auto doc = [](const std::string& subject, const std::string& url) {
    return R"({"resourceType":"DocumentReference","status":"current","type":{"coding":[{"system":"http://snomed.info/sct","code":"887701000000100"}]},)"
           R"("subject":)" + subject + R"(,"custodian":{"identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"RX1"}},)"
           R"("content":[{"attachment":{"contentType":"application/fhir+json","url":")" + url + R"("}}]})";
  };
  auto both = [](const std::string& id, const std::string& nhs_number) {
    return R"({"reference":"Patient/)" + id + R"(","identifier":{"system":"https://fhir.nhs.uk/Id/nhs-number","value":")" +
           nhs_number + R"("}})";
  };
  auto post = [&](const std::string& body) {
    return one(s, send(s, "POST", "/DocumentReference", bearer(rx1), body, "application/fhir+json"));
  };
  const std::string good_url = "https://rx1.example.nhs.uk/fhir/Bundle/1";
  HttpResponse contradictory = post(doc(both(a.id, b.nhs_number), good_url));
  REQUIRE(contradictory.status == 400);
  CHECK(json_of(contradictory).find("issue")->items().at(0).find("expression")->items().at(0).text() ==
        "DocumentReference.subject");
  auto for_a = s.locator().pointers_for(a.id);
  REQUIRE(for_a.ok());
  CHECK(for_a->empty());  // nothing was attached to A
  CHECK_MESSAGE(post(doc(both(a.id, a.nhs_number), good_url)).status == 201, "the same patient both ways is fine");
  CHECK(post(doc(both(a.id, nhs(129)), good_url)).status == 400);  // an NHS number nobody has

  const std::string by_nhs = R"({"identifier":{"system":"https://fhir.nhs.uk/Id/nhs-number","value":")" + a.nhs_number + R"("}})";
  for (const std::string url : {"javascript:alert(1)", "http://rx1.example.nhs.uk/fhir/Bundle/1", "data:text/html,hi",
                                "https://", "https://user@rx1.example.nhs.uk/x", "https://rx1.example.nhs.uk/a b",
                                "file:///etc/passwd"}) {
    CAPTURE(url);
    HttpResponse r = post(doc(by_nhs, url));
    REQUIRE(r.status == 400);
    CHECK(json_of(r).find("issue")->items().at(0).find("expression")->items().at(0).text() ==
          "DocumentReference.content[0].attachment.url");
  }
  CHECK(post(doc(by_nhs, "HTTPS://rx1.example.nhs.uk:8443/fhir/Bundle/2?x=1")).status == 201);
}

TEST_CASE("Locator API: a pointer search names its patient once") {
  TestServer s;
  Seeded a = add_patient(s.locator(), 130, "Once", "A81001");
  Seeded b = add_patient(s.locator(), 131, "Twice", "A81001");
  add_pointer(s.locator(), b.id, "RX1", "887701000000100", "Emergency health care plan");
  const std::string h = bearer(clinician_at("A81001"));
  HttpResponse r = test::get(s.port(), "/DocumentReference?subject=Patient/" + a.id + "&patient=" + b.id, s.client(), h);
  CHECK(r.status == 400);
  CHECK(r.body.find("Emergency health care plan") == std::string::npos);
  CHECK(test::get(s.port(), "/DocumentReference?patient=" + a.id + "&subject:identifier=https://fhir.nhs.uk/Id/nhs-number%7C" +
                                b.nhs_number, s.client(), h).status == 400);
  CHECK(test::get(s.port(), "/DocumentReference?patient=" + b.id, s.client(), h).status == 200);
}

TEST_CASE("Locator API: a pointer type search takes the token forms; |code is a type without a system") {
  TestServer s;
  Seeded a = add_patient(s.locator(), 132, "Typed", "A81001");
  add_pointer(s.locator(), a.id, "RX1", "887701000000100", "Emergency health care plan");  // SNOMED CT
  const std::string h = bearer(clinician_at("A81001"));
  auto total = [&](const std::string& type) {
    HttpResponse r = test::get(s.port(), "/DocumentReference?patient=" + a.id + "&type=" + type, s.client(), h);
    REQUIRE_MESSAGE(r.status == 200, r.body);
    return json_of(r).find("total")->as_int64();
  };
  CHECK(total("887701000000100") == 1);
  CHECK(total("http://snomed.info/sct%7C887701000000100") == 1);
  CHECK(total("http://snomed.info/sct%7C") == 1);
  CHECK(total("http://loinc.org%7C887701000000100") == 0);
  // Every pointer's type has a system, so |code (no system) matches none of them.
  CHECK(total("%7C887701000000100") == 0);
}

TEST_CASE("Locator API: a pointer read takes _elements, keeping status and content") {
  TestServer s;
  Seeded a = add_patient(s.locator(), 133, "Pointed", "A81001");
  const std::string id = add_pointer(s.locator(), a.id, "RX1", "887701000000100", "Emergency health care plan");
  const std::string h = bearer(clinician_at("A81001"));
  HttpResponse r = test::get(s.port(), "/DocumentReference/" + id + "?_elements=type", s.client(), h);
  REQUIRE_MESSAGE(r.status == 200, r.body);
  const fhir::Json doc = json_of(r);
  CHECK(doc.find("type") != nullptr);
  CHECK(doc.find("content") != nullptr);
  CHECK(doc.find("custodian") == nullptr);
  const fhir::Json* tag = doc.find("meta") ? doc.find("meta")->find("tag") : nullptr;
  REQUIRE(tag != nullptr);
  CHECK(tag->items().at(0).string_at("code") == "SUBSETTED");
  CHECK(test::get(s.port(), "/DocumentReference/" + id + "?_summary=count", s.client(), h).status == 400);
}

TEST_CASE("Locator API: pointer versioning: PUT creates with 201, If-Match, weak If-None-Match") {
  TestServer s;
  Seeded a = add_patient(s.locator(), 140, "Version", "A81001");
  TokenClaims rx1;
  rx1.sub = "epr-rx1";
  rx1.role = "system";
  rx1.org = "RX1";
  rx1.scope = "system/DocumentReference.cruds";
  const std::string body =
      R"({"resourceType":"DocumentReference","id":"RX1-new-1","status":"current","type":{"coding":[{"system":"http://snomed.info/sct","code":"887701000000100"}]},)"
      R"("subject":{"reference":"Patient/)" + a.id + R"("},)"
      R"("custodian":{"identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"RX1"}},)"
      R"("content":[{"attachment":{"contentType":"application/fhir+json","url":"https://rx1.example.nhs.uk/fhir/Bundle/1"}}]})";
  auto put = [&](const std::string& headers) {
    return one(s, send(s, "PUT", "/DocumentReference/RX1-new-1", bearer(rx1) + headers, body, "application/fhir+json"));
  };
  // If-Match on an id nobody has created: nothing to match.
  CHECK(put("If-Match: W/\"1\"\r\n").status == 412);
  HttpResponse created = put("");
  REQUIRE_MESSAGE(created.status == 201, created.body);
  CHECK(created.header("etag") == "W/\"1\"");
  CHECK(created.header("location") == s.cfg.public_base_url + "/DocumentReference/RX1-new-1/_history/1");
  HttpResponse stale = put("If-Match: W/\"7\"\r\n");
  CHECK(stale.status == 412);
  CHECK(put("").status == 200);  // version 2
  CHECK(put("If-Match: W/\"1\"\r\n").status == 412);
  HttpResponse matched = put("If-Match: W/\"2\"\r\n");
  CHECK(matched.status == 200);
  CHECK(matched.header("etag") == "W/\"3\"");

  // The CapabilityStatement says that an update may create.
  fhir::Json cs = json_of(test::get(s.port(), "/metadata", s.client()));
  bool update_create = false;
  for (const auto& r : cs.find("rest")->items().at(0).find("resource")->items())
    if (r.string_at("type") == "DocumentReference") update_create = r.find("updateCreate") && r.find("updateCreate")->as_bool();
  CHECK(update_create);

  // Conditional reads compare weakly, and * or a list that names the version counts.
  const std::string gp = bearer(clinician_at("A81001"));
  for (const std::string inm : {"\"3\"", "W/\"3\"", "*", "W/\"1\", \"3\"", "\"9\",W/\"3\""}) {
    CAPTURE(inm);
    CHECK(test::get(s.port(), "/DocumentReference/RX1-new-1", s.client(), gp + "If-None-Match: " + inm + "\r\n").status == 304);
  }
  CHECK(test::get(s.port(), "/DocumentReference/RX1-new-1", s.client(), gp + "If-None-Match: W/\"2\"\r\n").status == 200);
  const std::string patient = "/Patient/" + a.id;
  const std::string weak = test::get(s.port(), patient, s.client(), gp).header("etag");  // W/"n"
  REQUIRE(weak.rfind("W/", 0) == 0);
  const std::string strong = weak.substr(2);
  CHECK(test::get(s.port(), patient, s.client(), gp + "If-None-Match: " + strong + "\r\n").status == 304);
  CHECK(test::get(s.port(), patient, s.client(), gp + "If-None-Match: *\r\n").status == 304);
  CHECK(test::get(s.port(), patient, s.client(), gp + "If-None-Match: W/\"999\", " + weak + "\r\n").status == 304);
  CHECK(test::get(s.port(), patient, s.client(), gp + "If-None-Match: W/\"999\"\r\n").status == 200);
}

namespace {

TokenClaims rx1_system() {
  TokenClaims rx1;
  rx1.sub = "epr-rx1";
  rx1.role = "system";
  rx1.org = "RX1";
  rx1.scope = "system/DocumentReference.cruds";
  return rx1;
}

// The first issue's diagnostics ("" when the answer is not an OperationOutcome).
std::string diagnostics_of(const HttpResponse& r) {
  const fhir::Json body = json_of(r);
  const fhir::Json* issues = body.find("issue");
  if (issues == nullptr || issues->items().empty()) return {};
  return std::string(issues->items().front().string_at("diagnostics"));
}

std::string rx1_pointer(const std::string& id, const std::string& patient_id) {
  return R"({"resourceType":"DocumentReference","id":")" + id + R"(","status":"current","type":{"coding":[{"system":"http://snomed.info/sct","code":"887701000000100"}]},)"
         R"("subject":{"reference":"Patient/)" + patient_id + R"("},)"
         R"("custodian":{"identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"RX1"}},)"
         R"("content":[{"attachment":{"contentType":"application/fhir+json","url":"https://rx1.example.nhs.uk/fhir/Bundle/1"}}]})";
}

}  // namespace

TEST_CASE("Locator API: DELETE of a pointer honours If-Match as PUT does") {
  TestServer s;
  Seeded a = add_patient(s.locator(), 150, "Delete", "A81001");
  const std::string rx1 = bearer(rx1_system());
  auto del = [&](const std::string& id, const std::string& headers) {
    return one(s, send(s, "DELETE", "/DocumentReference/" + id, rx1 + headers, "", "application/fhir+json"));
  };
  auto held = [&](const std::string& id) {
    auto p = s.locator().read_pointer(id);
    REQUIRE(p.ok());
    return p->has_value();
  };
  HttpResponse created = one(s, send(s, "PUT", "/DocumentReference/RX1-del-1", rx1, rx1_pointer("RX1-del-1", a.id),
                                     "application/fhir+json"));
  REQUIRE_MESSAGE(created.status == 201, created.body);
  REQUIRE(created.header("etag") == "W/\"1\"");

  HttpResponse stale = del("RX1-del-1", "If-Match: W/\"99\"\r\n");
  CHECK(stale.status == 412);
  CHECK(diagnostics_of(stale) == "If-Match names another version than the current W/\"1\"; read it again and retry");
  CHECK(held("RX1-del-1"));  // nothing deleted
  CHECK(del("RX1-del-1", "If-Match: \"1\"\r\n").status == 204);  // weak comparison, as on PUT
  CHECK_FALSE(held("RX1-del-1"));
  // If-Match on a pointer that is not there: nothing to match (412), as PUT answers.
  CHECK(del("RX1-del-1", "If-Match: W/\"1\"\r\n").status == 412);
  CHECK(del("RX1-del-1", "").status == 404);

  // Without If-Match the delete is unconditional, as before.
  REQUIRE(one(s, send(s, "PUT", "/DocumentReference/RX1-del-2", rx1, rx1_pointer("RX1-del-2", a.id),
                      "application/fhir+json")).status == 201);
  CHECK(del("RX1-del-2", "").status == 204);
  CHECK_FALSE(held("RX1-del-2"));
}

TEST_CASE("Locator API: a pointer id that is not a FHIR id is 400 on read, update and delete alike") {
  TestServer s;
  Seeded a = add_patient(s.locator(), 151, "Badid", "A81001");
  const std::string rx1 = bearer(rx1_system());
  const std::string gp = bearer(clinician_at("A81001"));
  for (const std::string& id : std::vector<std::string>{"a_b", std::string(65, 'a'), "a%20b", "%C3%A9t%C3%A9"}) {
    CAPTURE(id);
    HttpResponse read = test::get(s.port(), "/DocumentReference/" + id, s.client(), gp);
    HttpResponse put = one(s, send(s, "PUT", "/DocumentReference/" + id, rx1, rx1_pointer(id, a.id), "application/fhir+json"));
    HttpResponse del = one(s, send(s, "DELETE", "/DocumentReference/" + id, rx1, "", "application/fhir+json"));
    for (const HttpResponse* r : {&read, &put, &del}) {
      CHECK(r->status == 400);
      CHECK(diagnostics_of(*r) == "a DocumentReference id is 1 to 64 characters, each a letter, digit, '-' or '.'");
    }
  }
  // A 64-character id is a FHIR id: an unknown one is 404, and PUT creates under it.
  const std::string longest(64, 'a');
  CHECK(test::get(s.port(), "/DocumentReference/" + longest, s.client(), gp).status == 404);
  CHECK(one(s, send(s, "PUT", "/DocumentReference/" + longest, rx1, rx1_pointer(longest, a.id), "application/fhir+json"))
            .status == 201);
}

TEST_CASE("Locator API: POST /DocumentReference/_search answers as the GET search, NHS number in the body") {
  TestServer s;
  Seeded a = add_patient(s.locator(), 152, "Nrlpost", "A81001");
  add_pointer(s.locator(), a.id, "RX1", "887701000000100", "Emergency health care plan");
  const std::string gp = bearer(clinician_at("A81001"));
  const std::string form = "subject:identifier=https://fhir.nhs.uk/Id/nhs-number%7C" + a.nhs_number;
  HttpResponse got = test::get(s.port(), "/DocumentReference?" + form, s.client(), gp);
  HttpResponse posted = one(s, send(s, "POST", "/DocumentReference/_search", gp, form, "application/x-www-form-urlencoded"));
  REQUIRE_MESSAGE(posted.status == 200, posted.body);
  REQUIRE(got.status == 200);
  const fhir::Json g = json_of(got);
  const fhir::Json p = json_of(posted);
  CHECK(p.string_at("type") == "searchset");
  CHECK(p.find("total")->as_int64() == 1);
  CHECK(g.find("total")->as_int64() == 1);
  CHECK(p.find("entry")->items().at(0).find("resource")->string_at("id") ==
        g.find("entry")->items().at(0).find("resource")->string_at("id"));
  CHECK(posted.body.find("Emergency health care plan") != std::string::npos);
  // The same parameter checks as the GET search.
  HttpResponse bad = one(s, send(s, "POST", "/DocumentReference/_search", gp, "subject:identifier=" + a.mrn,
                                 "application/x-www-form-urlencoded"));
  CHECK(bad.status == 400);
  // A body that is not a form is refused with what to send.
  HttpResponse json = one(s, send(s, "POST", "/DocumentReference/_search", gp, "{}", "application/fhir+json"));
  CHECK(json.status == 415);
  CHECK(diagnostics_of(json) == "send the search parameters as application/x-www-form-urlencoded");
}

namespace {

// The statuses of `raw` sent twice at once on two connections (0 for an exchange that failed).
std::multiset<int> concurrently(TestServer& s, const std::string& raw) {
  std::vector<test::Exchange> ex(2);
  std::vector<std::thread> clients;
  for (std::size_t i = 0; i < ex.size(); ++i)
    clients.emplace_back([&, i] { ex[i] = test::exchange(s.port(), raw, 1, s.client()); });
  for (auto& c : clients) c.join();
  std::multiset<int> statuses;
  for (const auto& e : ex) statuses.insert(e.responses.size() == 1 ? e.responses[0].status : 0);
  return statuses;
}

}  // namespace

TEST_CASE("Locator API: two concurrent updates with the same If-Match: one 200 and one 412, never two 200s") {
  TestServer s;
  Seeded a = add_patient(s.locator(), 153, "Race", "A81001");
  const std::string rx1 = bearer(rx1_system());
  HttpResponse created = one(s, send(s, "PUT", "/DocumentReference/RX1-race-1", rx1, rx1_pointer("RX1-race-1", a.id),
                                     "application/fhir+json"));
  REQUIRE_MESSAGE(created.status == 201, created.body);
  // Each round, two updates name the version current before either; the check and the write
  // must be one step, or both read that version and both write.
  for (int version = 1; version <= 8; ++version) {
    CAPTURE(version);
    const std::string if_match = "If-Match: W/\"" + std::to_string(version) + "\"\r\n";
    const auto statuses = concurrently(s, send(s, "PUT", "/DocumentReference/RX1-race-1", rx1 + if_match,
                                               rx1_pointer("RX1-race-1", a.id), "application/fhir+json"));
    CHECK(statuses == std::multiset<int>{200, 412});
    auto held = s.locator().read_pointer("RX1-race-1");
    REQUIRE(held.ok());
    REQUIRE(held->has_value());
    REQUIRE((*held)->version == version + 1);  // exactly one of the two applied
  }
  // The same for two deletes of one version: one 204, one 412.
  CHECK(concurrently(s, send(s, "DELETE", "/DocumentReference/RX1-race-1", rx1 + "If-Match: W/\"9\"\r\n", "",
                             "application/fhir+json")) == std::multiset<int>{204, 412});
}

TEST_CASE("Locator API: a pointer keeps the date its source gave; without one, the time it was indexed") {
  TestServer s;
  Seeded a = add_patient(s.locator(), 154, "Dated", "A81001");
  const std::string rx1 = bearer(rx1_system());
  const std::string gp = bearer(clinician_at("A81001"));
  std::string dated = rx1_pointer("RX1-dated-1", a.id);
  dated.insert(dated.find("\"status\""), R"("date":"2019-04-01T10:15:00Z",)");
  HttpResponse put = one(s, send(s, "PUT", "/DocumentReference/RX1-dated-1", rx1, dated, "application/fhir+json"));
  REQUIRE_MESSAGE(put.status == 201, put.body);
  CHECK(json_of(put).string_at("date") == "2019-04-01T10:15:00Z");
  const fhir::Json read = json_of(test::get(s.port(), "/DocumentReference/RX1-dated-1", s.client(), gp));
  CHECK(read.string_at("date") == "2019-04-01T10:15:00Z");
  CHECK(read.find("meta")->string_at("lastUpdated").rfind("2019", 0) != 0);  // when the index wrote it
  // Without a date, the time of indexing stands in for it.
  HttpResponse undated = one(s, send(s, "PUT", "/DocumentReference/RX1-dated-2", rx1, rx1_pointer("RX1-dated-2", a.id),
                                     "application/fhir+json"));
  REQUIRE(undated.status == 201);
  const fhir::Json u = json_of(undated);
  CHECK(u.string_at("date") == u.find("meta")->string_at("lastUpdated"));
  // A date that is no instant is refused, saying what one looks like.
  std::string bad = rx1_pointer("RX1-dated-3", a.id);
  bad.insert(bad.find("\"status\""), R"("date":"2019-04-01",)");
  HttpResponse refused = one(s, send(s, "PUT", "/DocumentReference/RX1-dated-3", rx1, bad, "application/fhir+json"));
  CHECK(refused.status == 400);
  CHECK(diagnostics_of(refused) ==
        "DocumentReference.date must be a FHIR instant with seconds and a time zone, e.g. 2026-03-01T09:30:00Z");
}

TEST_CASE("Locator API: a local identifier names the source that recorded it, never as its assigner") {
  TestServer s;
  Seeded a = add_patient(s.locator(), 155, "Assigned", "A81001");  // its MRN recorded by RX1
  // An import by RX1 of a number another trust issued: the index knows RX1 recorded it, not who
  // issued it.
  locator::IdentityClaim other;
  other.source_ods = "RX1";
  other.demographics.nhs_number = a.nhs_number;
  other.identifiers.push_back({"https://fhir.ry2.example.nhs.uk/Id/mrn", "RY2-77", "RX1"});
  REQUIRE(s.locator().resolve(other).ok());
  HttpResponse r = test::get(s.port(), "/Patient/" + a.id, s.client(), bearer(clinician_at("A81001")));
  REQUIRE_MESSAGE(r.status == 200, r.body);
  const fhir::Json pt = json_of(r);
  int locals = 0;
  for (const auto& id : pt.find("identifier")->items()) {
    if (id.string_at("system") == locator::kNhsNumberSystem) continue;
    ++locals;
    CAPTURE(id.string_at("system"));
    CHECK(id.find("assigner") == nullptr);
    const fhir::Json& ext = id.find("extension")->items().at(0);
    CHECK(ext.string_at("url") == "https://fhir.example.nhs.uk/StructureDefinition/Extension-RecordLocator-IdentifierSource");
    CHECK(ext.find("valueReference")->find("identifier")->string_at("value") == "RX1");
    CHECK(ext.find("valueReference")->find("identifier")->string_at("system") ==
          "https://fhir.nhs.uk/Id/ods-organization-code");
  }
  CHECK(locals == 2);
}

namespace {

// The link of `relation` in searchset `b`, as a path and query on the test server ("" if none).
std::string link_target(const fhir::Json& b, std::string_view relation) {
  for (const auto& l : b.find("link")->items())
    if (l.string_at("relation") == relation) {
      const std::string url(l.string_at("url"));
      return url.substr(url.find('/', url.find("://") + 3));
    }
  return {};
}

std::vector<std::string> match_ids(const fhir::Json& b) {
  std::vector<std::string> ids;
  if (const fhir::Json* entries = b.find("entry"))
    for (const auto& e : entries->items())
      if (e.find("search")->string_at("mode") == "match") ids.emplace_back(e.find("resource")->string_at("id"));
  return ids;
}

}  // namespace

TEST_CASE("Locator API: POST _search pages link through an opaque handle, never the search values") {
  TestServer s;
  std::set<std::string> pagers;
  Seeded first = add_patient(s.locator(), 160, "Pager", "A81001");
  pagers.insert(first.id);
  pagers.insert(add_patient(s.locator(), 170, "Pager", "A81001").id);
  pagers.insert(add_patient(s.locator(), 180, "Pager", "A81001").id);
  REQUIRE(pagers.size() == 3);
  const std::string h = bearer(clinician_at("A81001"));
  const std::string form_type = "application/x-www-form-urlencoded";

  // By NHS number: no link holds it, or any other search value.
  HttpResponse by_nhs = one(s, send(s, "POST", "/Patient/_search", h,
                                    "identifier=https%3A%2F%2Ffhir.nhs.uk%2FId%2Fnhs-number%7C" + first.nhs_number, form_type));
  REQUIRE_MESSAGE(by_nhs.status == 200, by_nhs.body);
  const fhir::Json nb = json_of(by_nhs);
  for (const auto& l : nb.find("link")->items()) {
    const std::string url(l.string_at("url"));
    CAPTURE(url);
    CHECK(url.find(first.nhs_number) == std::string::npos);
    CHECK(url.find("identifier") == std::string::npos);
    CHECK(url.find("/Patient?_getpages=") != std::string::npos);
  }
  // The self link fetches the same page again, by GET, as the same user.
  HttpResponse self = test::get(s.port(), link_target(nb, "self"), s.client(), h);
  REQUIRE_MESSAGE(self.status == 200, self.body);
  CHECK(match_ids(json_of(self)) == std::vector<std::string>{first.id});

  // Three pages of one, followed by their next links.
  HttpResponse page = one(s, send(s, "POST", "/Patient/_search", h, "family=Pager&_count=1", form_type));
  REQUIRE_MESSAGE(page.status == 200, page.body);
  std::set<std::string> seen;
  fhir::Json b = json_of(page);
  const std::string handle_link = link_target(b, "next");
  for (int n = 0; n < 5; ++n) {
    CHECK(b.find("total")->as_int64() == 3);
    for (const auto& id : match_ids(b)) seen.insert(id);
    const std::string next = link_target(b, "next");
    if (next.empty()) break;
    CHECK(next.find("Pager") == std::string::npos);
    CHECK(next.find("family") == std::string::npos);
    HttpResponse more = test::get(s.port(), next, s.client(), h);
    REQUIRE_MESSAGE(more.status == 200, more.body);
    b = json_of(more);
    CHECK(link_target(b, "previous").find("_getpages=") != std::string::npos);
  }
  CHECK(seen == pagers);

  // Another user may not use the handle; an unknown handle is gone; a handle takes no criteria.
  HttpResponse stolen = test::get(s.port(), handle_link, s.client(), bearer(clinician_at("A81001", "dr-2")));
  CHECK(stolen.status == 403);
  CHECK(diagnostics_of(stolen) == "this search page belongs to a search another user or client ran; send your own search");
  HttpResponse unknown = test::get(s.port(), "/Patient?_getpages=0123456789abcdef0123456789abcdef&_offset=1", s.client(), h);
  CHECK(unknown.status == 410);
  CHECK(json_of(unknown).find("resourceType") != nullptr);
  CHECK(diagnostics_of(unknown).find("expired or is unknown") != std::string::npos);
  HttpResponse widened = test::get(s.port(), handle_link + "&family=Smith", s.client(), h);
  CHECK(widened.status == 400);
  CHECK(diagnostics_of(widened).find("send only _getpages and _offset") != std::string::npos);
  // A Patient search's handle does not page DocumentReferences.
  const std::string as_pointers = "/DocumentReference" + handle_link.substr(handle_link.find('?'));
  CHECK(test::get(s.port(), as_pointers, s.client(), h).status == 410);

  // A GET search still links with its own parameters: nothing to hide there.
  fhir::Json got = json_of(test::get(s.port(), "/Patient?family=Pager&_count=1", s.client(), h));
  CHECK(link_target(got, "next").find("family=Pager") != std::string::npos);
}

TEST_CASE("Locator API: POST /DocumentReference/_search links through a handle too") {
  TestServer s;
  Seeded a = add_patient(s.locator(), 190, "Nrlpage", "A81001");
  add_pointer(s.locator(), a.id, "RX1", "887701000000100", "Emergency health care plan");
  add_pointer(s.locator(), a.id, "RX2", "887701000000100", "Emergency health care plan");
  const std::string gp = bearer(clinician_at("A81001"));
  HttpResponse posted = one(s, send(s, "POST", "/DocumentReference/_search", gp,
                                    "subject:identifier=https://fhir.nhs.uk/Id/nhs-number%7C" + a.nhs_number + "&_count=1",
                                    "application/x-www-form-urlencoded"));
  REQUIRE_MESSAGE(posted.status == 200, posted.body);
  const fhir::Json b = json_of(posted);
  for (const auto& l : b.find("link")->items()) CHECK(std::string(l.string_at("url")).find(a.nhs_number) == std::string::npos);
  const std::string next = link_target(b, "next");
  REQUIRE(next.rfind("/DocumentReference?_getpages=", 0) == 0);
  HttpResponse second = test::get(s.port(), next, s.client(), gp);
  REQUIRE_MESSAGE(second.status == 200, second.body);
  const auto first_ids = match_ids(b);
  const auto second_ids = match_ids(json_of(second));
  REQUIRE(first_ids.size() == 1);
  REQUIRE(second_ids.size() == 1);
  CHECK(first_ids != second_ids);
  // An unknown patient's empty Bundle links through a handle as well.
  HttpResponse nobody = one(s, send(s, "POST", "/DocumentReference/_search", gp,
                                    "subject:identifier=https://fhir.nhs.uk/Id/nhs-number%7C" + nhs(200),
                                    "application/x-www-form-urlencoded"));
  REQUIRE(nobody.status == 200);
  CHECK(nobody.body.find(nhs(200)) == std::string::npos);
}

TEST_CASE("Locator API: a pointer write whose audit record cannot be written is answered 503 saying it stands") {
  TestServer s;
  Seeded a = add_patient(s.locator(), 151, "Standing", "A81001");
  const std::string rx1 = bearer(rx1_system());
  auto held = [&](const std::string& id) {
    auto p = s.locator().read_pointer(id);
    REQUIRE(p.ok());
    return p->has_value();
  };
  // The write commits in locator.db before its record can: the answer must not read as
  // "nothing happened, try again" (a repeated create would make a second pointer).
  s.app().audit_log()->inject_write_failure(true);
  HttpResponse put = one(s, send(s, "PUT", "/DocumentReference/RX1-503-1", rx1, rx1_pointer("RX1-503-1", a.id),
                                 "application/fhir+json"));
  HttpResponse del = one(s, send(s, "DELETE", "/DocumentReference/RX1-503-1", rx1, "", "application/fhir+json"));
  s.app().audit_log()->inject_write_failure(false);
  CHECK(put.status == 503);
  const std::string put_said = diagnostics_of(put);
  CHECK(put_said.find("DocumentReference/RX1-503-1 was created, but its audit record could not be written") == 0);
  CHECK(put_said.find("The change stands: do not repeat it") != std::string::npos);
  CHECK(del.status == 503);
  CHECK(diagnostics_of(del).find("DocumentReference/RX1-503-1 was deleted, but its audit record") == 0);
  CHECK_FALSE(held("RX1-503-1"));
  // A write refused before it commits is still "nothing happened".
  s.app().audit_log()->inject_write_failure(true);
  HttpResponse refused = one(s, send(s, "PUT", "/DocumentReference/RX1-503-2", rx1, "{}", "application/fhir+json"));
  s.app().audit_log()->inject_write_failure(false);
  CHECK(refused.status == 503);
  CHECK(diagnostics_of(refused).find("The audit trail could not be written, so no data was sent") == 0);
  CHECK_FALSE(held("RX1-503-2"));
}

TEST_CASE("Locator API: a create ignores the body's id, even one that is no FHIR id (R4 http.html#create)") {
  TestServer s;
  Seeded a = add_patient(s.locator(), 152, "Ignored", "A81001");
  const std::string rx1 = bearer(rx1_system());
  std::string body = rx1_pointer("RX1-ignored", a.id);
  const std::string quoted_id = "\"id\":\"RX1-ignored\"";
  REQUIRE(body.find(quoted_id) != std::string::npos);
  body.replace(body.find(quoted_id), quoted_id.size(), "\"id\":\"doc 1\"");
  HttpResponse created = one(s, send(s, "POST", "/DocumentReference", rx1, body, "application/fhir+json"));
  REQUIRE_MESSAGE(created.status == 201, created.body);
  const std::string id(json_of(created).string_at("id"));
  CHECK(id != "doc 1");
  CHECK(fhir::is_valid_id(id));
  // An update names its pointer by the id, which must then be one (the body's equal to the URL's).
  HttpResponse put = one(s, send(s, "PUT", "/DocumentReference/" + id, rx1, body, "application/fhir+json"));
  CHECK(put.status == 400);
}
