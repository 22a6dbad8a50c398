// SPDX-License-Identifier: Apache-2.0
// What the audit record of a locator request says about its patient (issue #6 over the
// issue #3 API): identifier searches name the patient they matched, visible or not, and every
// break-glass request, granted or refused, names its patient and raises an alert; the answers
// themselves stay those for an unknown patient.
#include <doctest/doctest.h>

#include <algorithm>

#include "fhir/json.h"
#include "fhir/query_string.h"
#include "support/audit_check.h"
#include "support/responses.h"
#include "support/seed.h"
#include "support/test_server.h"

using namespace gw;
using gw::test::HttpResponse;
using gw::test::request;
using gw::test::json_of;
using gw::test::TestServer;
using gw::test::TokenClaims;

namespace {

const std::string kNhsSystem = "https://fhir.nhs.uk/Id/nhs-number%7C";
const std::string kBreakGlass =
    "X-Break-Glass-Reason: emergency-care\r\nX-Break-Glass-Justification: unconscious patient in ED, no history\r\n";
const std::string kShortJustification = "X-Break-Glass-Reason: emergency-care\r\nX-Break-Glass-Justification: ED\r\n";


HttpResponse get(TestServer& s, const std::string& target, const std::string& headers) {
  return request(s, "GET", target, headers);
}

std::string bearer(const TokenClaims& c) { return test::test_tokens().header(c); }

TokenClaims clinician_at(const std::string& org, const std::string& sub) {
  TokenClaims c;
  c.sub = sub;
  c.org = org;
  return c;
}

bool names(const audit::Record& r, const std::string& nhs_number) {
  return std::find(r.detail.patients.begin(), r.detail.patients.end(), nhs_number) != r.detail.patients.end();
}

bool alert_raised_for(TestServer& s, const audit::Record& r) {
  auto alerts = s.app().audit_log()->alerts("open", 100000);
  REQUIRE_MESSAGE(alerts.ok(), alerts.issue().diagnostics);
  return std::any_of(alerts->begin(), alerts->end(),
                     [&](const audit::Alert& a) { return a.seq == r.seq && a.rule == "break-glass"; });
}

// The first issue's diagnostics ("" when the answer is not an OperationOutcome).
std::string diagnostics(const HttpResponse& r) {
  const fhir::Json body = json_of(r);
  const fhir::Json* issues = body.find("issue");
  if (issues == nullptr || issues->items().empty()) return {};
  return std::string(issues->items().front().string_at("diagnostics"));
}

}  // namespace

TEST_CASE("Locator audit: an identifier search names the patient it matched, visible or not, and answers as for nobody") {
  TestServer s;
  auto a = test::add_patient(s.locator(), 301, "Hidden", "A81001");
  const std::string other = bearer(clinician_at("Y99999", "dr-other"));

  HttpResponse hidden = get(s, "/Patient?identifier=" + kNhsSystem + a.nhs_number, other);
  HttpResponse unknown = get(s, "/Patient?identifier=" + kNhsSystem + test::nhs(399), other);
  REQUIRE(hidden.status == 200);
  REQUIRE(unknown.status == 200);
  CHECK(json_of(hidden).find("total")->as_int64() == 0);
  CHECK(json_of(hidden).find("entry") == nullptr);
  CHECK(json_of(unknown).find("total")->as_int64() == 0);
  CHECK(hidden.body.find("Hidden") == std::string::npos);
  audit::Record rec = test::audit_record_of(s, hidden);
  CHECK(names(rec, a.nhs_number));
  CHECK(rec.detail.returned.empty());
  CHECK(test::audit_record_of(s, unknown).detail.patients.empty());

  // POST _search: the same, with the NHS number out of the URL.
  HttpResponse post = request(s, "POST", "/Patient/_search", other, "identifier=" + kNhsSystem + a.nhs_number,
                           "application/x-www-form-urlencoded");
  REQUIRE(post.status == 200);
  CHECK(json_of(post).find("total")->as_int64() == 0);
  CHECK(names(test::audit_record_of(s, post), a.nhs_number));

  // The "who accessed my record" view finds the attempt.
  TokenClaims ig;
  ig.sub = "ig-jones";
  ig.role = "ig-officer";
  ig.org = "X26";
  ig.scope = "user/AuditEvent.rs";
  HttpResponse report = get(s, "/AuditEvent?patient=" + a.nhs_number, bearer(ig));
  REQUIRE(report.status == 200);
  CHECK(report.body.find(hidden.header("x-request-id")) != std::string::npos);
}

TEST_CASE("Locator audit: break-glass on an identifier search is honoured, audited with its patient and alerted") {
  TestServer s;
  auto a = test::add_patient(s.locator(), 302, "Glass", "A81001");
  const std::string search = "/Patient?identifier=" + kNhsSystem + a.nhs_number;

  HttpResponse granted = get(s, search, bearer(clinician_at("Y99999", "dr-er")) + kBreakGlass);
  REQUIRE_MESSAGE(granted.status == 200, granted.body);
  CHECK(json_of(granted).find("total")->as_int64() == 1);
  CHECK(granted.header("x-emergency-access") == "break-glass");
  CHECK(granted.body.find("\"BTG\"") != std::string::npos);
  audit::Record rec = test::audit_record_of(s, granted);
  CHECK(rec.detail.break_glass_reason == "emergency-care");
  CHECK(rec.detail.basis == "break-glass");
  CHECK(names(rec, a.nhs_number));
  CHECK(alert_raised_for(s, rec));

  SUBCASE("a too-short justification: refused, named, alerted; the same answer as for an unknown patient") {
    HttpResponse refused = get(s, search, bearer(clinician_at("Y99999", "dr-2")) + kShortJustification);
    HttpResponse nobody = get(s, "/Patient?identifier=" + kNhsSystem + test::nhs(398),
                              bearer(clinician_at("Y99999", "dr-2")) + kShortJustification);
    CHECK(refused.status == 400);
    CHECK(nobody.status == 400);
    CHECK(diagnostics(refused) == diagnostics(nobody));
    audit::Record r = test::audit_record_of(s, refused);
    CHECK(r.detail.break_glass_reason == "emergency-care");
    CHECK(names(r, a.nhs_number));
    CHECK(alert_raised_for(s, r));
  }
  SUBCASE("a role that may not break glass: refused, named, alerted") {
    TokenClaims social = clinician_at("LA01", "sw-1");
    social.role = "social-care-practitioner";
    HttpResponse refused = get(s, search, bearer(social) + kBreakGlass);
    CHECK(refused.status == 403);
    audit::Record r = test::audit_record_of(s, refused);
    CHECK(r.detail.break_glass_reason == "emergency-care");
    CHECK(names(r, a.nhs_number));
    CHECK(alert_raised_for(s, r));
  }
  SUBCASE("a demographic search cannot break glass, and says so") {
    HttpResponse r = get(s, "/Patient?family=Glass", bearer(clinician_at("Y99999", "dr-3")) + kBreakGlass);
    CHECK(r.status == 400);
    CHECK(diagnostics(r).find("identifier") != std::string::npos);
    audit::Record rec3 = test::audit_record_of(s, r);
    CHECK(rec3.detail.break_glass_reason == "emergency-care");
    CHECK(alert_raised_for(s, rec3));
  }
}

TEST_CASE("Locator audit: a break-glass justification is judged whole, as sent, and its record stays readable") {
  TestServer s;
  auto a = test::add_patient(s.locator(), 304, "Justified", "A81001");
  const std::string search = "/Patient?identifier=" + kNhsSystem + a.nhs_number;
  auto asking = [](const std::string& justification) {
    return "X-Break-Glass-Reason: emergency-care\r\nX-Break-Glass-Justification: " + justification + "\r\n";
  };
  TokenClaims ig;
  ig.sub = "ig-jones";
  ig.role = "ig-officer";
  ig.org = "X26";
  ig.scope = "user/AuditEvent.rs";
  // The IG view over every record written so far, one page of each kind (none may be damaged).
  auto ig_view_reads = [&] {
    for (const std::string& t : {std::string("/AuditEvent?_count=100"), "/AuditEvent?patient=" + a.nhs_number,
                                 "/AuditEvent/$access-report?patient=" + a.nhs_number,
                                 std::string("/AuditEvent/$export?start=2020-01-01&end=2999-12-31")}) {
      CAPTURE(t);
      HttpResponse r = get(s, t, bearer(ig));
      CHECK(r.status == 200);
      CHECK(r.body.find("cannot be read") == std::string::npos);
    }
  };

  SUBCASE("1001 bytes of UTF-8, the last character two bytes across the old 1000-byte cut: granted, kept whole") {
    const std::string text = std::string(999, 'a') + "\xC3\xA9";
    HttpResponse granted = get(s, search, bearer(clinician_at("Y99999", "dr-long")) + asking(text));
    REQUIRE_MESSAGE(granted.status == 200, granted.body);
    CHECK(json_of(granted).find("total")->as_int64() == 1);
    audit::Record rec = test::audit_record_of(s, granted);
    CHECK(rec.detail.break_glass_justification == text);
    CHECK(rec.detail.basis == "break-glass");
    ig_view_reads();
  }
  SUBCASE("over 1024 bytes: refused with 400 whatever the rest, never cut down and granted") {
    for (const std::string& text : {std::string(1500, 'b'), std::string(1023, 'c') + "\xC3\xA9"}) {
      HttpResponse refused = get(s, search, bearer(clinician_at("Y99999", "dr-over")) + asking(text));
      CHECK(refused.status == 400);
      CHECK(diagnostics(refused) == "break-glass justification must be at most 1024 bytes of single-line UTF-8 text");
      audit::Record rec = test::audit_record_of(s, refused);
      CHECK(rec.detail.break_glass_reason == "emergency-care");
      CHECK(rec.detail.break_glass_justification.size() <= 1024);
      CHECK(fhir::is_valid_utf8(rec.detail.break_glass_justification));
      CHECK(names(rec, a.nhs_number));
      CHECK(alert_raised_for(s, rec));
    }
    ig_view_reads();
  }
  SUBCASE("bytes that are not UTF-8: refused, recorded with U+FFFD in their place") {
    HttpResponse refused =
        get(s, search, bearer(clinician_at("Y99999", "dr-bytes")) + asking("patient collapsed \xC3 in \xFF ED"));
    CHECK(refused.status == 400);
    audit::Record rec = test::audit_record_of(s, refused);
    CHECK(rec.detail.break_glass_justification == "patient collapsed \xEF\xBF\xBD in \xEF\xBF\xBD ED");
    CHECK(alert_raised_for(s, rec));
    ig_view_reads();
  }
}

TEST_CASE("Locator audit: break-glass asked for by a role that may not read patient data is recorded and alerted") {
  TestServer s;
  auto a = test::add_patient(s.locator(), 305, "Curious", "A81001");
  const std::string search = "/Patient?identifier=" + kNhsSystem + a.nhs_number;
  for (const char* role : {"ig-officer", "administrator"}) {
    CAPTURE(role);
    TokenClaims c = clinician_at("X26", std::string("curious-") + role);
    c.role = role;
    c.scope = "user/*.rs";
    HttpResponse refused = get(s, search, bearer(c) + kBreakGlass);
    CHECK(refused.status == 403);
    audit::Record rec = test::audit_record_of(s, refused);
    CHECK(rec.detail.break_glass_reason == "emergency-care");
    CHECK(rec.detail.break_glass_justification == "unconscious patient in ED, no history");
    CHECK(alert_raised_for(s, rec));
    // Without the headers the same refusal is no break-glass attempt.
    HttpResponse plain = get(s, search, bearer(c));
    CHECK(plain.status == 403);
    CHECK(test::audit_record_of(s, plain).detail.break_glass_reason.empty());
  }
  // A scope that does not cover the route is refused before any patient is judged too.
  TokenClaims narrow = clinician_at("Y99999", "dr-narrow");
  narrow.scope = "user/Observation.rs";
  HttpResponse out_of_scope = get(s, search, bearer(narrow) + kBreakGlass);
  CHECK(out_of_scope.status == 403);
  CHECK(alert_raised_for(s, test::audit_record_of(s, out_of_scope)));
  // No token: refused for that alone; no alert anyone could raise without one.
  HttpResponse anonymous = get(s, search, kBreakGlass);
  CHECK(anonymous.status == 401);
  audit::Record anon = test::audit_record_of(s, anonymous);
  CHECK(anon.detail.break_glass_reason.empty());
  CHECK_FALSE(alert_raised_for(s, anon));
}

TEST_CASE("Locator audit: a refused break-glass request names its patient on reads and pointer searches too") {
  TestServer s;
  auto a = test::add_patient(s.locator(), 303, "Refused", "A81001");
  const std::string shortj = bearer(clinician_at("Y99999", "dr-4")) + kShortJustification;
  const std::vector<std::string> targets = {
      "/Patient/" + a.id,
      "/DocumentReference?patient=" + a.id,
      "/DocumentReference?subject:identifier=" + kNhsSystem + a.nhs_number,
      "/Patient/$ihe-pix?sourceIdentifier=" + kNhsSystem + a.nhs_number,
  };
  for (const auto& target : targets) {
    CAPTURE(target);
    HttpResponse r = get(s, target, shortj);
    CHECK(r.status == 400);
    audit::Record rec = test::audit_record_of(s, r);
    CHECK(rec.detail.break_glass_reason == "emergency-care");
    CHECK(names(rec, a.nhs_number));
  }
  // An unknown patient is refused with the same words.
  CHECK(diagnostics(get(s, "/Patient/" + a.id, shortj)) == diagnostics(get(s, "/Patient/no-such-patient", shortj)));
  CHECK(diagnostics(get(s, "/DocumentReference?subject:identifier=" + kNhsSystem + a.nhs_number, shortj)) ==
        diagnostics(get(s, "/DocumentReference?subject:identifier=" + kNhsSystem + test::nhs(397), shortj)));
}

namespace {

TokenClaims source_system(const std::string& ods) {
  TokenClaims c;
  c.sub = "epr-" + ods;
  c.role = "system";
  c.org = ods;
  c.scope = "system/DocumentReference.cruds";
  return c;
}

// A pointer held by RX1, its subject given as `subject` (a FHIR Reference) and `id` (may be empty).
std::string pointer_body(const std::string& subject, const std::string& id = {}) {
  return R"({"resourceType":"DocumentReference",)" + (id.empty() ? std::string() : R"("id":")" + id + R"(",)") +
         R"("status":"current","type":{"coding":[{"system":"http://snomed.info/sct","code":"887701000000100"}]},)"
         R"("subject":)" + subject + R"(,"custodian":{"identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"RX1"}},)"
         R"("content":[{"attachment":{"contentType":"application/fhir+json","url":"https://rx1.example.nhs.uk/fhir/Bundle/1"}}]})";
}

std::string by_reference(const test::Seeded& p) { return R"({"reference":"Patient/)" + p.id + R"("})"; }

std::string access_report(TestServer& s, const std::string& nhs_number) {
  TokenClaims ig;
  ig.sub = "ig-jones";
  ig.role = "ig-officer";
  ig.org = "X26";
  ig.scope = "user/AuditEvent.rs";
  HttpResponse r = get(s, "/AuditEvent/$access-report?patient=" + nhs_number, bearer(ig));
  REQUIRE_MESSAGE(r.status == 200, r.body);
  return r.body;
}

}  // namespace

TEST_CASE("Locator audit: every pointer create, update and delete names its patient, done or refused") {
  TestServer s;
  auto a = test::add_patient(s.locator(), 304, "Pointer", "A81001");
  auto b = test::add_patient(s.locator(), 305, "Moved", "A81001");
  const std::string rx1 = bearer(source_system("RX1"));

  // A create whose subject is a reference only: the NHS number comes from the index.
  HttpResponse created = request(s, "POST", "/DocumentReference", rx1, pointer_body(by_reference(a)));
  REQUIRE_MESSAGE(created.status == 201, created.body);
  audit::Record rec = test::audit_record_of(s, created);
  CHECK(rec.detail.patients == std::vector<std::string>{a.nhs_number});
  const std::string id(json_of(created).string_at("id"));

  // An update that moves the pointer to another patient names both.
  HttpResponse moved = request(s, "PUT", "/DocumentReference/" + id, rx1, pointer_body(by_reference(b), id));
  REQUIRE_MESSAGE(moved.status == 200, moved.body);
  rec = test::audit_record_of(s, moved);
  CHECK(names(rec, a.nhs_number));
  CHECK(names(rec, b.nhs_number));
  CHECK(rec.detail.patients.size() == 2);
  // PUT that creates under a new id.
  HttpResponse put_created = request(s, "PUT", "/DocumentReference/RX1-audit-1", rx1, pointer_body(by_reference(a), "RX1-audit-1"));
  REQUIRE_MESSAGE(put_created.status == 201, put_created.body);
  CHECK(test::audit_record_of(s, put_created).detail.patients == std::vector<std::string>{a.nhs_number});

  // Refused deletes name the patient too: another source's attempt, and a stale If-Match.
  HttpResponse other = request(s, "DELETE", "/DocumentReference/" + id, bearer(source_system("RX2")));
  CHECK(other.status == 403);
  CHECK(test::audit_record_of(s, other).detail.patients == std::vector<std::string>{b.nhs_number});
  HttpResponse stale = request(s, "DELETE", "/DocumentReference/" + id, rx1 + "If-Match: W/\"99\"\r\n");
  CHECK(stale.status == 412);
  CHECK(test::audit_record_of(s, stale).detail.patients == std::vector<std::string>{b.nhs_number});

  HttpResponse deleted = request(s, "DELETE", "/DocumentReference/" + id, rx1);
  REQUIRE(deleted.status == 204);
  CHECK(test::audit_record_of(s, deleted).detail.patients == std::vector<std::string>{b.nhs_number});
  // Nothing to delete any more: no patient to name.
  HttpResponse again = request(s, "DELETE", "/DocumentReference/" + id, rx1);
  CHECK(again.status == 404);
  CHECK(test::audit_record_of(s, again).detail.patients.empty());

  // The patients' "who accessed my record" reports show the writes.
  const std::string report_b = access_report(s, b.nhs_number);
  CHECK(report_b.find("removed an entry from the list of services holding records about you") != std::string::npos);
  CHECK(report_b.find("updated the list of care services holding records about you") != std::string::npos);
  // The stale If-Match lost a version race: access was allowed, the change was not made.
  CHECK(report_b.find("not changed: someone else had changed it first (version conflict, 412)") != std::string::npos);
  CHECK(report_b.find("access refused (412)") == std::string::npos);
  CHECK(report_b.find("access refused (403)") != std::string::npos);
  CHECK(access_report(s, a.nhs_number).find("added to the list of care services holding records about you") !=
        std::string::npos);
}

TEST_CASE("Locator audit: POST /DocumentReference/_search names its patient and reads as a search in the report") {
  TestServer s;
  auto a = test::add_patient(s.locator(), 306, "Nrl", "A81001");
  test::add_pointer(s.locator(), a.id, "RX1", "887701000000100", "Emergency health care plan");
  HttpResponse r = request(s, "POST", "/DocumentReference/_search", bearer(clinician_at("A81001", "dr-nrl")),
                        "subject:identifier=" + kNhsSystem + a.nhs_number, "application/x-www-form-urlencoded");
  REQUIRE_MESSAGE(r.status == 200, r.body);
  CHECK(json_of(r).find("total")->as_int64() == 1);
  CHECK(names(test::audit_record_of(s, r), a.nhs_number));
  const std::string report = access_report(s, a.nhs_number);
  CHECK(report.find("looked at the list of care services that hold records about you") != std::string::npos);
  CHECK(report.find("added to the list") == std::string::npos);
}

TEST_CASE("Locator audit: a page fetched by a POST _search handle is audited as that search, naming its patients") {
  TestServer s;
  auto a = test::add_patient(s.locator(), 307, "Handled", "A81001");
  const std::string h = bearer(clinician_at("A81001", "dr-pages"));
  HttpResponse posted = request(s, "POST", "/Patient/_search", h, "identifier=" + kNhsSystem + a.nhs_number,
                             "application/x-www-form-urlencoded");
  REQUIRE_MESSAGE(posted.status == 200, posted.body);
  std::string self;
  const fhir::Json bundle = json_of(posted);
  for (const auto& l : bundle.find("link")->items())
    if (l.string_at("relation") == "self") self = std::string(l.string_at("url"));
  REQUIRE(self.find("_getpages=") != std::string::npos);
  HttpResponse page = get(s, self.substr(self.find('/', self.find("://") + 3)), h);
  REQUIRE_MESSAGE(page.status == 200, page.body);
  const audit::Record rec = test::audit_record_of(s, page);
  CHECK(rec.target.find(a.nhs_number) == std::string::npos);  // the URL holds the handle only
  CHECK(names(rec, a.nhs_number));                             // the record still names whom it showed
  CHECK(std::find(rec.detail.returned.begin(), rec.detail.returned.end(), "Patient/" + a.id) != rec.detail.returned.end());
  CHECK(rec.user == "dr-pages");
  CHECK(names(test::audit_record_of(s, posted), a.nhs_number));
}
