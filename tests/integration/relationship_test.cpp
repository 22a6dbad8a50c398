// SPDX-License-Identifier: Apache-2.0
// Issue #5 item 4 end to end: a source system records an encounter or a care-team membership
// ($record-encounter, $care-team), and that, not the token alone, is what lets a clinician of
// another organisation see the patient; windows and end dates are honoured; the audit record
// names the basis. Bad input is refused with an OperationOutcome and changes nothing.
#include <doctest/doctest.h>

#include <ctime>

#include "fhir/date_range.h"
#include "fhir/json.h"
#include "support/responses.h"
#include "support/seed.h"
#include "support/test_server.h"

using namespace gw;
using gw::test::HttpResponse;
using gw::test::TestServer;
using gw::test::TokenClaims;

namespace {

HttpResponse call(TestServer& s, const std::string& method, const std::string& target, const TokenClaims& who,
                  const std::string& body = {}) {
  std::string req = method + " " + target + " HTTP/1.1\r\nHost: localhost\r\n" + test::test_tokens().header(who);
  if (!body.empty()) req += "Content-Type: application/fhir+json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  req += "Connection: close\r\n\r\n" + body;
  auto ex = test::exchange(s.port(), req, 1, s.client());
  REQUIRE_MESSAGE(ex.responses.size() == 1, ex.error);
  return ex.responses.front();
}

TokenClaims source(const std::string& ods = "RX1") {
  TokenClaims c;
  c.sub = "epr-" + ods;
  c.role = "system";
  c.org = ods;
  c.scope = "system/*.cruds";
  return c;
}

TokenClaims clinician(const std::string& org, const std::string& sub) {
  TokenClaims c;
  c.sub = sub;
  c.org = org;
  return c;
}

std::string iso(std::int64_t epoch) { return fhir::format_instant(epoch * 1000); }

std::string patient_param(const std::string& nhs) {
  return R"({"name":"patient","valueIdentifier":{"system":"https://fhir.nhs.uk/Id/nhs-number","value":")" + nhs + "\"}}";
}

std::string encounter_body(const std::string& nhs, const std::string& org, std::int64_t at) {
  return R"({"resourceType":"Parameters","parameter":[)" + patient_param(nhs) +
         R"(,{"name":"organization","valueIdentifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":")" +
         org + R"("}},{"name":"start","valueDateTime":")" + iso(at) + "\"}]}";
}

std::string care_team_body(const std::string& nhs, const std::string& member, const std::string& extra = {}) {
  return R"({"resourceType":"Parameters","parameter":[)" + patient_param(nhs) +
         R"(,{"name":"member","valueString":")" + member + "\"}" + extra + "]}";
}

std::string last_basis(TestServer& s) {
  audit::Query q;
  q.count = 1;
  auto page = s.app().audit_log()->search(q);
  REQUIRE(page.ok());
  REQUIRE(!page->records.empty());
  return page->records.front().detail.basis;
}

}  // namespace

TEST_CASE("Relationships: a recorded encounter opens the record to that organisation, within the window") {
  TestServer s;
  auto p = test::add_patient(s.locator(), 40, "Encountered", "A81001");
  const std::int64_t now = std::time(nullptr);
  const TokenClaims ward = clinician("RXX01", "dr-ward");
  CHECK(call(s, "GET", "/Patient/" + p.id, ward).status == 404);  // no relationship yet

  HttpResponse rec = call(s, "POST", "/Patient/$record-encounter", source(), encounter_body(p.nhs_number, "RXX01", now - 86400));
  CHECK_MESSAGE(rec.status == 200, rec.body);
  CHECK(test::json_of(rec).string_at("resourceType") == "OperationOutcome");
  HttpResponse seen = call(s, "GET", "/Patient/" + p.id, ward);
  CHECK(seen.status == 200);
  CHECK(last_basis(s) == "encounter");

  // An encounter older than the window (90 days by default) is no relationship.
  const TokenClaims old_org = clinician("RYY02", "dr-old");
  REQUIRE(call(s, "POST", "/Patient/$record-encounter", source(), encounter_body(p.nhs_number, "RYY02", now - 400 * 86400))
              .status == 200);
  CHECK(call(s, "GET", "/Patient/" + p.id, old_org).status == 404);

  // Refused: callers that are not source systems, and bad input.
  CHECK(call(s, "POST", "/Patient/$record-encounter", ward, encounter_body(p.nhs_number, "RXX01", now)).status == 403);
  CHECK(call(s, "POST", "/Patient/$record-encounter", source(), encounter_body("1234567890", "RXX01", now)).status == 400);
  CHECK(call(s, "POST", "/Patient/$record-encounter", source(), encounter_body(test::nhs(77), "RXX01", now)).status == 404);
  CHECK(call(s, "POST", "/Patient/$record-encounter", source(),
             R"({"resourceType":"Parameters","parameter":[)" + patient_param(p.nhs_number) + "]}")
            .status == 400);  // no start
  CHECK(call(s, "POST", "/Patient/$record-encounter", source(),
             R"({"resourceType":"Parameters","parameter":[)" + patient_param(p.nhs_number) +
                 R"(,{"name":"start","valueDateTime":"yesterday"}]})")
            .status == 400);
  CHECK(call(s, "POST", "/Patient/$record-encounter", source(),
             R"({"resourceType":"Parameters","parameter":[)" + patient_param(p.nhs_number) +
                 R"(,{"name":"colour","valueString":"red"}]})")
            .status == 400);
  CHECK(call(s, "POST", "/Patient/$record-encounter", source(), R"({"resourceType":"Patient"})").status == 400);
  // None of the refused calls made a relationship for a third organisation.
  CHECK(call(s, "GET", "/Patient/" + p.id, clinician("RZZ03", "dr-z")).status == 404);
}

TEST_CASE("Relationships: care-team membership by user or organisation, with an end date, and removal") {
  TestServer s;
  auto p = test::add_patient(s.locator(), 41, "Teamed", "A81001");
  const TokenClaims visiting = clinician("Q99", "dr-visiting");
  CHECK(call(s, "GET", "/Patient/" + p.id, visiting).status == 404);

  REQUIRE(call(s, "POST", "/Patient/$care-team", source(), care_team_body(p.nhs_number, "dr-visiting")).status == 200);
  CHECK(call(s, "GET", "/Patient/" + p.id, visiting).status == 200);
  CHECK(last_basis(s) == "care-team");
  // Another user of the same organisation is not on the team ...
  CHECK(call(s, "GET", "/Patient/" + p.id, clinician("Q99", "dr-colleague")).status == 404);
  // ... unless the organisation is.
  REQUIRE(call(s, "POST", "/Patient/$care-team", source(), care_team_body(p.nhs_number, "Q99")).status == 200);
  CHECK(call(s, "GET", "/Patient/" + p.id, clinician("Q99", "dr-colleague")).status == 200);

  // A membership that has ended no longer counts.
  REQUIRE(call(s, "POST", "/Patient/$care-team", source(),
               care_team_body(p.nhs_number, "dr-visiting", R"(,{"name":"end","valueDateTime":"2020-01-01"})"))
              .status == 200);
  REQUIRE(call(s, "POST", "/Patient/$care-team", source(),
               care_team_body(p.nhs_number, "Q99", R"(,{"name":"remove","valueBoolean":true})"))
              .status == 200);
  CHECK(call(s, "GET", "/Patient/" + p.id, visiting).status == 404);
  CHECK(call(s, "GET", "/Patient/" + p.id, clinician("Q99", "dr-colleague")).status == 404);

  // Bad input.
  CHECK(call(s, "POST", "/Patient/$care-team", source(), care_team_body(p.nhs_number, "")).status == 400);
  CHECK(call(s, "POST", "/Patient/$care-team", source(), care_team_body(p.nhs_number, std::string(200, 'x'))).status == 400);
  CHECK(call(s, "POST", "/Patient/$care-team", source(),
             care_team_body(p.nhs_number, "dr-x", R"(,{"name":"remove","valueString":"yes"})"))
            .status == 400);
  CHECK(call(s, "POST", "/Patient/$care-team", visiting, care_team_body(p.nhs_number, "dr-visiting")).status == 403);
}
