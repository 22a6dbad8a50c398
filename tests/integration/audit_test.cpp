// SPDX-License-Identifier: Apache-2.0
// Issue #6 over real HTTPS: one audit record per request (allowed or denied), audit first and
// fail closed, the IG view (search, access report, export, alerts, proofs) and the alert rules.
#include <doctest/doctest.h>

#include <unistd.h>

#include <map>
#include <set>

#include "fhir/json.h"
#include "gateway/audit/checkpoint.h"
#include "gateway/audit/merkle.h"
#include "support/certs.h"
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


HttpResponse get(TestServer& s, const std::string& target, const std::string& headers = {}) {
  return request(s, "GET", target, headers);
}

std::string bearer(const TokenClaims& c) { return test::test_tokens().header(c); }

TokenClaims clinician(const std::string& org, const std::string& sub = "dr-smith") {
  TokenClaims c;
  c.sub = sub;
  c.org = org;
  return c;
}
TokenClaims ig_officer() {
  TokenClaims c;
  c.sub = "ig-jones";
  c.role = "ig-officer";
  c.org = "X26";
  c.scope = "user/AuditEvent.rs";
  return c;
}

std::vector<audit::Record> all_records(TestServer& s) {
  audit::Query q;
  q.count = 100000;
  q.newest_first = false;
  auto page = s.app().audit_log()->search(q);
  REQUIRE_MESSAGE(page.ok(), page.issue().diagnostics);
  return page->records;
}

const char* kBreakGlass =
    "X-Break-Glass-Reason: emergency-care\r\nX-Break-Glass-Justification: unconscious patient in ED, no history\r\n";

}  // namespace

TEST_CASE("Audit: every request, allowed or denied, leaves exactly one matching record") {
  TestServer s;
  REQUIRE(s.app().audit_log() != nullptr);
  auto a = test::add_patient(s.locator(), 1, "Audited", "A81001");
  auto b = test::add_patient(s.locator(), 2, "Elsewhere", "B99999");
  test::add_pointer(s.locator(), a.id, "RX1", "736253002", "Mental health crisis plan");

  struct Sent {
    std::string what;
    HttpResponse r;
    std::string user;
    std::string patient;  // NHS number the record must name ("" = any)
  };
  std::vector<Sent> sent;
  auto as = [&](std::string what, const std::string& target, const std::string& headers, std::string user,
                std::string patient = {}) {
    sent.push_back({std::move(what), get(s, target, headers), std::move(user), std::move(patient)});
  };
  TokenClaims gp = clinician("A81001");
  TokenClaims other = clinician("Y99999", "dr-other");
  TokenClaims para;
  para.sub = "para-1";
  para.role = "paramedic";
  para.org = "RX9";
  para.purpose = "EMERGENCY";
  as("read allowed", "/Patient/" + a.id, bearer(gp), "dr-smith", a.nhs_number);
  as("read hidden", "/Patient/" + b.id, bearer(gp), "dr-smith", b.nhs_number);
  as("read unknown", "/Patient/nosuchpatient", bearer(gp), "dr-smith");
  as("search", "/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|" + a.nhs_number, bearer(gp), "dr-smith",
     a.nhs_number);
  as("pointers", "/DocumentReference?patient=" + a.id, bearer(gp), "dr-smith", a.nhs_number);
  as("no relationship", "/Patient/" + a.id, bearer(other), "dr-other", a.nhs_number);
  as("break-glass", "/Patient/" + b.id, bearer(other) + kBreakGlass, "dr-other", b.nhs_number);
  as("paramedic", "/Patient/" + a.id, bearer(para), "para-1", a.nhs_number);
  as("no token", "/Patient/" + a.id, "", "");
  as("bad token", "/Patient/" + a.id, "Authorization: Bearer not.a.token\r\n", "");
  as("unmatched", "/NoSuchType/1", bearer(gp), "");
  as("ig forbidden for clinician", "/AuditEvent", bearer(gp), "dr-smith");
  as("ig search", "/AuditEvent?patient=" + a.nhs_number, bearer(ig_officer()), "ig-jones", a.nhs_number);
  HttpResponse metadata = get(s, "/metadata");
  HttpResponse health = get(s, "/healthz");

  std::map<int, int> statuses;
  for (const auto& x : sent) statuses[x.r.status]++;
  CHECK(statuses[200] >= 6);
  CHECK(statuses[401] == 2);
  CHECK(statuses[403] >= 1);
  CHECK(statuses[404] >= 3);

  auto records = all_records(s);
  std::map<std::string, std::vector<const audit::Record*>> by_request;
  for (const auto& r : records) by_request[r.request_id].push_back(&r);
  for (const auto& x : sent) {
    CAPTURE(x.what);
    const std::string id = x.r.header("x-request-id");
    REQUIRE(!id.empty());
    REQUIRE(by_request[id].size() == 1);
    const audit::Record& r = *by_request[id].front();
    CHECK(r.status == x.r.status);
    CHECK(r.kind == "rest");
    CHECK(r.method == "GET");
    CHECK(r.address == "127.0.0.1");
    if (!x.user.empty()) CHECK(r.user == x.user);
    if (x.what == "no token" || x.what == "bad token") CHECK(r.agent_kind == "anonymous");
    if (!x.patient.empty()) {
      CHECK(std::find(r.detail.patients.begin(), r.detail.patients.end(), x.patient) != r.detail.patients.end());
    }
    if (x.r.status >= 400) CHECK(!r.outcome_text.empty());
  }
  // Open routes are not audited.
  CHECK(by_request.count(metadata.header("x-request-id")) == 0);
  CHECK(by_request.count(health.header("x-request-id")) == 0);

  // What each record says about the access.
  auto rec = [&](const std::string& what) -> const audit::Record& {
    for (const auto& x : sent)
      if (x.what == what) return *by_request[x.r.header("x-request-id")].front();
    FAIL("no such request");
    return records.front();
  };
  CHECK(rec("read allowed").detail.basis == "registered-practice");
  CHECK(rec("read allowed").detail.returned == std::vector<std::string>{"Patient/" + a.id});
  CHECK(rec("read allowed").role == "clinician");
  CHECK(rec("read allowed").organisation == "A81001");
  CHECK(rec("read allowed").action == "read");
  CHECK(rec("read hidden").detail.returned.empty());
  CHECK(rec("break-glass").detail.basis == "break-glass");
  CHECK(rec("break-glass").detail.break_glass_reason == "emergency-care");
  CHECK(rec("break-glass").detail.break_glass_justification.find("unconscious") != std::string::npos);
  CHECK(rec("paramedic").detail.basis == "emergency-purpose");
  CHECK(rec("paramedic").purpose == "EMERGENCY");
  CHECK(rec("search").action == "search-type");
  CHECK(rec("pointers").detail.returned.size() == 1);
  // The AuditEvent rendering is BALP-shaped.
  fhir::Json ev = audit::to_audit_event(rec("read allowed"), "test");
  CHECK(ev.string_at("resourceType") == "AuditEvent");
  CHECK(ev.find("meta")->find("profile")->items()[0].text() ==
        "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PatientRead");
  CHECK(ev.string_at("action") == "R");
  CHECK(ev.string_at("outcome") == "0");
}

TEST_CASE("Audit: a token sent in the query string is refused and never reaches the audit record") {
  TestServer s;
  auto a = test::add_patient(s.locator(), 6, "Querytoken", "A81001");
  const std::string token = test::test_tokens().mint(clinician("A81001"));
  const std::string signature = token.substr(token.rfind('.') + 1);
  std::vector<HttpResponse> sent;
  sent.push_back(get(s, "/Patient?access_token=" + token + "&family=Querytoken"));
  sent.push_back(get(s, "/Patient?family=Querytoken&token=" + token));
  sent.push_back(get(s, "/Patient?family=Querytoken&token=" + token, bearer(clinician("A81001"))));
  sent.push_back(get(s, "/Patient/" + token, bearer(clinician("A81001"))));
  CHECK(sent[0].status == 401);
  auto records = all_records(s);
  for (const auto& r : sent) {
    CAPTURE(r.status);
    const audit::Record* rec = nullptr;
    for (const auto& x : records)
      if (x.request_id == r.header("x-request-id")) rec = &x;
    REQUIRE(rec != nullptr);
    CHECK(rec->target.find("[redacted]") != std::string::npos);
    const std::string stored = audit::encode(*rec);
    CHECK(stored.find(signature) == std::string::npos);
    CHECK(audit::to_audit_event(*rec, "test").find("entity") != nullptr);
    CHECK(fhir::to_json(audit::to_audit_event(*rec, "test")).find(signature) == std::string::npos);
  }
  // What the query asked for is still recorded.
  for (const auto& x : records)
    if (x.request_id == sent[0].header("x-request-id"))
      CHECK(x.target == "/Patient?access_token=[redacted]&family=Querytoken");
}

TEST_CASE("Audit: POST [type]/_search is audited as a query and POST operations as operations") {
  TestServer s;
  auto a = test::add_patient(s.locator(), 9, "Postsearch", "A81001");
  const std::string gp = bearer(clinician("A81001"));
  auto post = [&](const std::string& target, const std::string& content_type, const std::string& body) {
    auto ex = test::exchange(s.port(),
                             "POST " + target + " HTTP/1.1\r\nHost: localhost\r\n" + gp + "Content-Type: " +
                                 content_type + "\r\nContent-Length: " + std::to_string(body.size()) +
                                 "\r\nConnection: close\r\n\r\n" + body,
                             1, s.client());
    REQUIRE_MESSAGE(ex.responses.size() == 1, ex.error);
    return ex.responses.front();
  };
  HttpResponse search =
      post("/Patient/_search", "application/x-www-form-urlencoded",
           "identifier=https%3A%2F%2Ffhir.nhs.uk%2FId%2Fnhs-number%7C" + a.nhs_number);
  REQUIRE(search.status == 200);
  HttpResponse validate = post("/Patient/$validate", "application/fhir+json", R"({"resourceType":"Patient"})");
  HttpResponse validate_sys = post("/$validate", "application/fhir+json", R"({"resourceType":"Patient"})");
  auto records = all_records(s);
  auto rec = [&](const HttpResponse& r) -> const audit::Record& {
    for (const auto& x : records)
      if (x.request_id == r.header("x-request-id")) return x;
    FAIL("no audit record");
    return records.front();
  };
  const audit::Record q = rec(search);  // a copy: `records` is read again below
  CHECK(q.action == "search-type");
  fhir::Json ev = audit::to_audit_event(q, "test");
  CHECK(ev.find("meta")->find("profile")->items()[0].text() ==
        "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PatientQuery");
  CHECK(ev.string_at("action") == "R");
  CHECK(ev.find("subtype")->items()[0].string_at("code") == "search-type");
  // The same as the GET search.
  HttpResponse get_search = get(s, "/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|" + a.nhs_number, gp);
  records = all_records(s);
  CHECK(rec(get_search).action == q.action);
  for (const HttpResponse* r : {&validate, &validate_sys}) {
    CAPTURE(r->status);
    CHECK(rec(*r).action == "operation");
    CHECK(rec(*r).detail.operation == "$validate");
    CHECK(audit::to_audit_event(rec(*r), "test").string_at("action") == "E");
  }
}

TEST_CASE("Audit: fail closed: when the audit cannot be committed, no data leaves (503)") {
  TestServer s;
  auto a = test::add_patient(s.locator(), 3, "Closedfail", "A81001");
  TokenClaims gp = clinician("A81001");
  CHECK(get(s, "/Patient/" + a.id, bearer(gp)).status == 200);
  const auto before = s.app().audit_log()->stats().size;

  s.app().audit_log()->inject_write_failure(true);
  HttpResponse r = get(s, "/Patient/" + a.id, bearer(gp));
  CHECK(r.status == 503);
  CHECK(!r.header("retry-after").empty());
  CHECK(r.body.find("Closedfail") == std::string::npos);
  CHECK(r.body.find(a.nhs_number) == std::string::npos);
  CHECK(r.body.find("audit") != std::string::npos);
  CHECK(get(s, "/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|" + a.nhs_number, bearer(gp)).status == 503);
  CHECK(get(s, "/Patient/" + a.id).status == 503);  // denials are audited too, so they wait as well
  CHECK(get(s, "/metadata").status == 200);          // open routes are not audited
  CHECK(s.app().audit_log()->stats().size == before);
  CHECK(s.app().audit_log()->stats().failed_batches >= 3);

  s.app().audit_log()->inject_write_failure(false);
  HttpResponse ok = get(s, "/Patient/" + a.id, bearer(gp));
  CHECK(ok.status == 200);
  CHECK(ok.body.find("Closedfail") != std::string::npos);
  CHECK(s.app().audit_log()->stats().size == before + 1);
}

TEST_CASE("Audit: /readyz fails while the audit log's last commit failed, and passes after the next") {
  TestServer s;
  auto a = test::add_patient(s.locator(), 7, "Readiness", "A81001");
  TokenClaims gp = clinician("A81001");
  CHECK(get(s, "/readyz").status == 200);
  s.app().audit_log()->inject_write_failure(true);
  CHECK(get(s, "/Patient/" + a.id, bearer(gp)).status == 503);
  HttpResponse r = get(s, "/readyz");
  CHECK(r.status == 503);
  CHECK(r.body.find("audit log not writable") != std::string::npos);
  CHECK(get(s, "/healthz").status == 200);  // alive: a restart is not what fixes a full disk
  s.app().audit_log()->inject_write_failure(false);
  CHECK(get(s, "/Patient/" + a.id, bearer(gp)).status == 200);
  CHECK(get(s, "/readyz").status == 200);
}

TEST_CASE("Audit: a second gateway on the same data directory is refused before it opens any database") {
  TestServer s;
  auto a = test::add_patient(s.locator(), 8, "Onlyone", "A81001");
  const auto before = s.app().audit_log()->stats().size;
  std::string what;
  try {
    App second(s.cfg, AppInfo{"test", "2026-11-23", {}});
    FAIL("a second App opened the same data directory");
  } catch (const DataDirInUse& e) {
    what = e.what();
  }
  CHECK(what.find(s.cfg.data_dir) != std::string::npos);
  CHECK(what.find("pid " + std::to_string(::getpid())) != std::string::npos);
  CHECK(s.app().audit_log()->stats().size == before);  // no "start" record from the refused one
  CHECK(get(s, "/Patient/" + a.id, bearer(clinician("A81001"))).status == 200);
  CHECK(get(s, "/readyz").status == 200);
}

TEST_CASE("Audit: the date filter keeps the records' milliseconds") {
  TestServer s;
  auto a = test::add_patient(s.locator(), 6, "Millis", "A81001");
  TokenClaims gp = clinician("A81001");
  for (int i = 0; i < 5; ++i) REQUIRE(get(s, "/Patient/" + a.id, bearer(gp)).status == 200);
  audit::Query q;
  q.agent = gp.sub;  // the reads only: the IG queries below are audited too
  auto page = s.app().audit_log()->search(q);
  REQUIRE(page.ok());
  REQUIRE(page->records.size() == 5);
  const std::int64_t t = page->records[2].time_ms;
  std::int64_t same_ms = 0, same_tenth = 0, later = 0;
  for (const auto& r : page->records) {
    same_ms += r.time_ms == t;
    same_tenth += r.time_ms / 100 == t / 100;
    later += r.time_ms > t;
  }
  const std::string at = audit::format_time_ms(t);  // e.g. 2026-12-07T00:41:53.383Z
  REQUIRE(at.size() == 24);
  const std::string ig = bearer(ig_officer());
  const std::string base = "/AuditEvent?agent=" + gp.sub + "&date=";
  CHECK(json_of(get(s, base + "eq" + at, ig)).find("total")->as_int64() == same_ms);
  CHECK(json_of(get(s, base + "eq" + at.substr(0, 21) + "Z", ig)).find("total")->as_int64() == same_tenth);
  CHECK(json_of(get(s, base + "gt" + at, ig)).find("total")->as_int64() == later);
  CHECK(json_of(get(s, base + "ge" + at, ig)).find("total")->as_int64() == later + same_ms);
}

TEST_CASE("Audit: the IG view: search, paging, access report, export, alerts, proofs") {
  TestServer s;
  auto a = test::add_patient(s.locator(), 4, "Reported", "A81001");
  auto b = test::add_patient(s.locator(), 5, "Glassed", "B99999");
  TokenClaims gp = clinician("A81001");
  TokenClaims other = clinician("Y99999", "dr-other");
  for (int i = 0; i < 3; ++i) REQUIRE(get(s, "/Patient/" + a.id, bearer(gp)).status == 200);
  REQUIRE(get(s, "/Patient/" + b.id, bearer(other) + kBreakGlass).status == 200);
  const std::string ig = bearer(ig_officer());

  SUBCASE("search by patient, agent, outcome, subtype, date; paging with next links") {
    HttpResponse r = get(s, "/AuditEvent?patient=" + a.nhs_number, ig);
    REQUIRE(r.status == 200);
    fhir::Json bundle = json_of(r);
    CHECK(bundle.string_at("type") == "searchset");
    CHECK(bundle.find("total")->as_int64() == 3);
    for (const auto& e : bundle.find("entry")->items()) {
      const fhir::Json& ev = *e.find("resource");
      CHECK(ev.string_at("resourceType") == "AuditEvent");
      bool names_patient = false;
      for (const auto& ent : ev.find("entity")->items())
        if (const fhir::Json* what = ent.find("what"))
          if (const fhir::Json* idf = what->find("identifier")) names_patient |= idf->string_at("value") == a.nhs_number;
      CHECK(names_patient);
    }
    CHECK(json_of(get(s, "/AuditEvent?agent=dr-other", ig)).find("total")->as_int64() == 1);
    CHECK(json_of(get(s, "/AuditEvent?subtype=break-glass", ig)).find("total")->as_int64() == 1);
    CHECK(json_of(get(s, "/AuditEvent?date=ge2020-01-01&date=lt2999-01-01&patient=" + b.nhs_number, ig))
              .find("total")->as_int64() == 1);
    CHECK(json_of(get(s, "/AuditEvent?date=lt2020-01-01", ig)).find("total")->as_int64() == 0);
    CHECK(json_of(get(s, "/AuditEvent?outcome=4", ig)).find("total")->as_int64() >= 0);

    // Paging: one per page, following next links until the end, sees all three once.
    std::set<std::string> ids;
    std::string next = "/AuditEvent?patient=" + a.nhs_number + "&_count=1";
    for (int page = 0; page < 10 && !next.empty(); ++page) {
      fhir::Json bnd = json_of(get(s, next, ig));
      for (const auto& e : bnd.find("entry")->items()) ids.insert(std::string(e.find("resource")->string_at("id")));
      next.clear();
      for (const auto& l : bnd.find("link")->items())
        if (l.string_at("relation") == "next") next = std::string(l.string_at("url")).substr(std::string(s.cfg.public_base_url).size());
    }
    // The three reads, plus the IG officer's own first search by this patient: audited queries
    // name the patient they were about.
    CHECK(ids.size() == 4);

    // Bad parameters and non-IG callers.
    CHECK(get(s, "/AuditEvent?patient=1234567890", ig).status == 400);
    CHECK(get(s, "/AuditEvent?colour=red", ig).status == 400);
    CHECK(get(s, "/AuditEvent?date=xx2026", ig).status == 400);
    CHECK(get(s, "/AuditEvent?_count=0", ig).status == 400);
    CHECK(get(s, "/AuditEvent", bearer(gp)).status == 403);
    CHECK(get(s, "/AuditEvent/$access-report?patient=" + a.nhs_number, bearer(gp)).status == 403);

    // The IG officer's own queries are audited too.
    CHECK(json_of(get(s, "/AuditEvent?agent=ig-jones", ig)).find("total")->as_int64() >= 9);
  }

  SUBCASE("read one AuditEvent") {
    fhir::Json bundle = json_of(get(s, "/AuditEvent?agent=dr-other", ig));
    const std::string id(bundle.find("entry")->items()[0].find("resource")->string_at("id"));
    HttpResponse r = get(s, "/AuditEvent/" + id, ig);
    CHECK(r.status == 200);
    fhir::Json ev = json_of(r);
    CHECK(ev.find("meta")->find("security")->items()[0].string_at("code") == "BTG");
    CHECK(get(s, "/AuditEvent/999999", ig).status == 404);
    CHECK(get(s, "/AuditEvent/abc", ig).status == 404);
  }

  SUBCASE("who accessed my record: JSON and printable HTML") {
    HttpResponse r = get(s, "/AuditEvent/$access-report?patient=" + b.nhs_number, ig);
    REQUIRE(r.status == 200);
    fhir::Json rep = json_of(r);
    REQUIRE(rep.find("accesses")->items().size() == 1);
    const fhir::Json& e = rep.find("accesses")->items()[0];
    CHECK(e.string_at("who") == "dr-other");
    CHECK(e.string_at("organisation") == "Y99999");
    CHECK(e.string_at("what").find("looked at your details") != std::string_view::npos);
    CHECK(e.string_at("why").find("break-glass") != std::string_view::npos);
    CHECK(e.string_at("why").find("unconscious patient") != std::string_view::npos);
    HttpResponse html = get(s, "/AuditEvent/$access-report?patient=" + b.nhs_number + "&_format=html", ig);
    CHECK(html.status == 200);
    CHECK(html.header("content-type").find("text/html") == 0);
    CHECK(html.body.find("<table>") != std::string::npos);
    CHECK(html.body.find("dr-other (clinician)") != std::string::npos);
    CHECK(html.body.find(b.nhs_number.substr(0, 3) + " " + b.nhs_number.substr(3, 3)) != std::string::npos);
    CHECK(get(s, "/AuditEvent/$access-report", ig).status == 400);
    CHECK(get(s, "/AuditEvent/$access-report?patient=" + a.nhs_number + "&_format=xml", ig).status == 400);
  }

  SUBCASE("NDJSON export for a date range") {
    HttpResponse r = get(s, "/AuditEvent/$export?start=2020-01-01&end=2999-12-31", ig);
    REQUIRE(r.status == 200);
    CHECK(r.header("content-type") == "application/fhir+ndjson");
    std::size_t lines = 0, pos = 0;
    while (pos < r.body.size()) {
      auto nl = r.body.find('\n', pos);
      REQUIRE(nl != std::string::npos);
      auto ev = fhir::parse_json(std::string_view(r.body).substr(pos, nl - pos));
      REQUIRE(ev.ok());
      CHECK(ev->string_at("resourceType") == "AuditEvent");
      ++lines;
      pos = nl + 1;
    }
    CHECK(lines >= 5);  // start record + 4 accesses (+ the IG's own calls so far)
    CHECK(get(s, "/AuditEvent/$export?start=2020-01-01", ig).status == 400);
  }

  SUBCASE("alert queue: break-glass flagged, reviewed once, with an outcome") {
    HttpResponse r = get(s, "/audit/alerts", ig);
    REQUIRE(r.status == 200);
    fhir::Json list = json_of(r);
    std::int64_t bg_id = 0;
    for (const auto& al : list.find("alerts")->items())
      if (al.string_at("rule") == "break-glass") bg_id = *al.find("id")->as_int64();
    REQUIRE(bg_id > 0);
    const std::string path = "/audit/alerts/" + std::to_string(bg_id) + "/review";
    CHECK(request(s, "POST", path, ig, R"({"outcome":"maybe"})").status == 400);
    CHECK(request(s, "POST", path, ig, R"({"outcome":"inappropriate"})").status == 400);  // note required
    CHECK(request(s, "POST", path, bearer(gp), R"({"outcome":"appropriate"})").status == 403);
    CHECK(request(s, "POST", path, ig, R"({"outcome":"appropriate","note":"ED attendance confirmed"})").status == 200);
    CHECK(request(s, "POST", path, ig, R"({"outcome":"appropriate"})").status == 409);
    CHECK(request(s, "POST", "/audit/alerts/987654/review", ig, R"({"outcome":"appropriate"})").status == 404);
    fhir::Json reviewed = json_of(get(s, "/audit/alerts?status=reviewed", ig));
    REQUIRE(reviewed.find("alerts")->items().size() == 1);
    CHECK(reviewed.find("alerts")->items()[0].string_at("reviewer") == "ig-jones");
    CHECK(reviewed.find("alerts")->items()[0].string_at("outcome") == "appropriate");
  }

  SUBCASE("signed checkpoint, inclusion and consistency proofs verify against the public key") {
    auto first = s.app().audit_log()->checkpoint_now();
    REQUIRE(first.ok());
    REQUIRE(get(s, "/Patient/" + a.id, bearer(gp)).status == 200);
    auto second = s.app().audit_log()->checkpoint_now();
    REQUIRE(second.ok());
    REQUIRE(second->size > first->size);

    HttpResponse cp = get(s, "/audit/checkpoint", ig);
    REQUIRE(cp.status == 200);
    auto note = audit::parse_checkpoint(cp.body);
    REQUIRE(note.ok());
    auto key = audit::CheckpointVerifier::from_pem_file(test::dev_certs().audit_pub_key, s.cfg.audit.key_name);
    REQUIRE(key.ok());
    CHECK(key->verify(*note));
    CHECK(note->size >= second->size);

    const std::uint64_t size = second->size;
    for (std::uint64_t index : {std::uint64_t{0}, size / 2, size - 1}) {
      HttpResponse pr = get(s, "/audit/proof/inclusion?index=" + std::to_string(index) + "&size=" + std::to_string(size), ig);
      REQUIRE(pr.status == 200);
      fhir::Json p = json_of(pr);
      const std::string record(p.string_at("record"));
      const auto leaf = audit::merkle::leaf_hash(record);
      CHECK(audit::merkle::to_base64(leaf) == p.string_at("leafHash"));
      std::vector<audit::merkle::Hash> path;
      for (const auto& h : p.find("proof")->items()) path.push_back(*audit::merkle::from_base64(h.text()));
      CHECK(audit::merkle::verify_inclusion(index, size, leaf, path, second->root));
      auto decoded = audit::decode(record);
      REQUIRE(decoded.ok());
      CHECK(decoded->seq == index);
    }
    HttpResponse cr = get(s, "/audit/proof/consistency?from=" + std::to_string(first->size) + "&to=" +
                                 std::to_string(second->size), ig);
    REQUIRE(cr.status == 200);
    fhir::Json c = json_of(cr);
    std::vector<audit::merkle::Hash> proof;
    for (const auto& h : c.find("proof")->items()) proof.push_back(*audit::merkle::from_base64(h.text()));
    CHECK(audit::merkle::verify_consistency(first->size, second->size, first->root, second->root, proof));
    CHECK(get(s, "/audit/proof/inclusion?index=5&size=2", ig).status == 400);
    CHECK(get(s, "/audit/proof/consistency?from=0&to=2", ig).status == 400);
    CHECK(get(s, "/audit/proof/inclusion?index=1", ig).status == 400);
  }
}

TEST_CASE("Audit: the access report says what was shown, not just the HTTP status") {
  TestServer s;
  auto a = test::add_patient(s.locator(), 16, "Reportshown", "A81001");
  test::add_pointer(s.locator(), a.id, "RX1", "736253002", "Mental health crisis plan");
  REQUIRE(get(s, "/DocumentReference?patient=" + a.id, bearer(clinician("A81001"))).status == 200);
  HttpResponse empty = get(s, "/DocumentReference?patient=" + a.id, bearer(clinician("Y99999", "dr-other")));
  REQUIRE(empty.status == 200);
  REQUIRE(json_of(empty).find("entry") == nullptr);
  REQUIRE(get(s, "/Patient/" + a.id, bearer(clinician("Y99999", "dr-other"))).status == 404);
  // A POST _search for the NHS number that showed nothing (no relationship): a search too.
  const std::string form = "identifier=https://fhir.nhs.uk/Id/nhs-number%7C" + a.nhs_number;
  const std::string raw = "POST /Patient/_search HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer " +
                          test::test_tokens().mint(clinician("Y99999", "dr-other")) +
                          "\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: " +
                          std::to_string(form.size()) + "\r\nConnection: close\r\n\r\n" + form;
  auto posted = test::exchange(s.port(), raw, 1, s.client());
  REQUIRE(posted.responses.size() == 1);
  REQUIRE(posted.responses[0].status == 200);

  fhir::Json rep = json_of(get(s, "/AuditEvent/$access-report?patient=" + a.nhs_number, bearer(ig_officer())));
  std::map<std::string, std::vector<std::string>> outcomes;  // by user
  for (const auto& e : rep.find("accesses")->items())
    outcomes[std::string(e.string_at("who"))].push_back(std::string(e.string_at("outcome")));
  CHECK(outcomes["dr-smith"] == std::vector<std::string>{"access given"});
  // Newest first: the POST search and the refused read, then the search that showed nothing.
  CHECK(outcomes["dr-other"] ==
        std::vector<std::string>{"searched, nothing shown", "access refused (404)", "searched, nothing shown"});
  HttpResponse html =
      get(s, "/AuditEvent/$access-report?patient=" + a.nhs_number + "&_format=html", bearer(ig_officer()));
  CHECK(html.body.find("searched, nothing shown") != std::string::npos);
}

TEST_CASE("Audit: a full last page has no next link; alert review notes are real and refusals say so") {
  TestServer s;
  auto a = test::add_patient(s.locator(), 17, "Paged", "A81001");
  auto b = test::add_patient(s.locator(), 18, "Glassed", "B99999");
  for (int i = 0; i < 10; ++i) REQUIRE(get(s, "/Patient/" + a.id, bearer(clinician("A81001", "medic-1"))).status == 200);
  const std::string ig = bearer(ig_officer());
  std::string next = "/AuditEvent?agent=medic-1&_count=5";
  std::vector<std::size_t> pages;
  for (int page = 0; page < 5 && !next.empty(); ++page) {
    fhir::Json bnd = json_of(get(s, next, ig));
    const fhir::Json* entries = bnd.find("entry");
    pages.push_back(entries ? entries->items().size() : 0);
    next.clear();
    for (const auto& l : bnd.find("link")->items())
      if (l.string_at("relation") == "next") next = std::string(l.string_at("url")).substr(s.cfg.public_base_url.size());
  }
  CHECK(pages == std::vector<std::size_t>{5, 5});
  // A page that is short anyway: no next link either.
  fhir::Json all = json_of(get(s, "/AuditEvent?agent=medic-1&_count=50", ig));
  CHECK(all.find("entry")->items().size() == 10);
  for (const auto& l : all.find("link")->items()) CHECK(l.string_at("relation") != "next");

  REQUIRE(get(s, "/Patient/" + b.id, bearer(clinician("Y99999", "dr-other")) + kBreakGlass).status == 200);
  std::int64_t bg = 0;
  const fhir::Json alerts = json_of(get(s, "/audit/alerts", ig));
  for (const auto& al : alerts.find("alerts")->items())
    if (al.string_at("rule") == "break-glass") bg = *al.find("id")->as_int64();
  REQUIRE(bg > 0);
  const std::string path = "/audit/alerts/" + std::to_string(bg) + "/review";
  HttpResponse blank = request(s, "POST", path, ig, R"({"outcome":"inappropriate","note":"   \t "})");
  CHECK(blank.status == 400);
  CHECK(blank.body.find("a note is required") != std::string::npos);
  CHECK(request(s, "PUT", "/audit/flagged-patients/" + a.nhs_number, ig, R"({"reason":"  "})").status == 400);
  HttpResponse ok = request(s, "POST", path, ig, R"({"outcome":"inappropriate","note":"  no care relationship  "})");
  CHECK(ok.status == 200);
  HttpResponse again = request(s, "POST", path, ig, R"({"outcome":"inappropriate","note":"again"})");
  CHECK(again.status == 409);
  auto records = all_records(s);
  for (const auto& r : records) {
    if (r.request_id == ok.header("x-request-id"))
      CHECK(r.detail.note == "alert " + std::to_string(bg) + " reviewed: inappropriate - no care relationship");
    if (r.request_id == again.header("x-request-id")) {
      CHECK(r.detail.note.find("reviewed:") == std::string::npos);
      CHECK(r.detail.note.find("not reviewed") != std::string::npos);
      CHECK(r.detail.note.find("already been reviewed") != std::string::npos);
    }
  }
  fhir::Json reviewed = json_of(get(s, "/audit/alerts?status=reviewed", ig));
  REQUIRE(reviewed.find("alerts")->items().size() == 1);
  CHECK(reviewed.find("alerts")->items()[0].string_at("outcome") == "inappropriate");
}

TEST_CASE("Audit: IG endpoints need AuditEvent scopes as well as the IG role") {
  TestServer s;
  auto a = test::add_patient(s.locator(), 15, "Scoped", "A81001");
  REQUIRE(get(s, "/Patient/" + a.id, bearer(clinician("A81001"))).status == 200);
  REQUIRE(s.app().audit_log()->checkpoint_now().ok());
  auto ig_with = [](const std::string& scope) {
    TokenClaims c = ig_officer();
    c.scope = scope;
    return bearer(c);
  };
  struct Call {
    std::string method, target, body;
    bool read_only;  // needs AuditEvent read only (not search)
  };
  const std::vector<Call> calls = {
      {"GET", "/AuditEvent?patient=" + a.nhs_number, "", false},
      {"GET", "/AuditEvent/$access-report?patient=" + a.nhs_number, "", false},
      {"GET", "/AuditEvent/$export?start=2020-01-01&end=2999-12-31", "", false},
      {"GET", "/audit/alerts", "", false},
      {"PUT", "/audit/flagged-patients/" + a.nhs_number, R"({"reason":"staff member"})", false},
      {"GET", "/AuditEvent/0", "", true},
      {"GET", "/audit/checkpoint", "", true},
  };
  for (const auto& c : calls) {
    CAPTURE(c.target);
    for (const char* scope : {"openid", "user/Patient.rs", "user/AuditEvent.c", "openid fhirUser"}) {
      CAPTURE(scope);
      HttpResponse r = request(s, c.method, c.target, ig_with(scope), c.body);
      CHECK(r.status == 403);
      CHECK(r.body.find("scopes do not grant") != std::string::npos);
    }
    CHECK(request(s, c.method, c.target, ig_with("user/AuditEvent.r"), c.body).status == (c.read_only ? 200 : 403));
    const bool search_alone = !c.read_only && c.method == "GET";
    CHECK(request(s, c.method, c.target, ig_with("user/AuditEvent.s"), c.body).status == (search_alone ? 200 : 403));
    for (const char* scope : {"user/AuditEvent.rs", "user/*.rs", "openid user/AuditEvent.read", "user/*.cruds"}) {
      CAPTURE(scope);
      CHECK(request(s, c.method, c.target, ig_with(scope), c.body).status == 200);
    }
  }
  // Scopes never widen the role: a clinician with AuditEvent scopes still gets nothing.
  TokenClaims gp = clinician("A81001");
  gp.scope = "user/AuditEvent.rs";
  CHECK(get(s, "/AuditEvent", bearer(gp)).status == 403);
}

TEST_CASE("Audit: alert rules: no prior relationship, volume, flagged record, out of hours") {
  const audit::LocalTime now = audit::london_time(audit::now_ms());
  TestServer s([&](config::Config& c) {
    c.audit.alerts.max_patients_per_hour = 3;
    // Working hours that exclude the current minute, whatever time the test runs.
    c.audit.alerts.weekends_out_of_hours = false;
    c.audit.alerts.working_start_minute = (now.minute_of_day + 60) % 1440;
    c.audit.alerts.working_end_minute = c.audit.alerts.working_start_minute + 1;
    if (now.minute_of_day >= c.audit.alerts.working_start_minute &&
        now.minute_of_day < c.audit.alerts.working_end_minute)
      c.audit.alerts.working_start_minute = c.audit.alerts.working_end_minute = 0;
  });
  std::vector<test::Seeded> pts;
  for (int i = 0; i < 5; ++i) pts.push_back(test::add_patient(s.locator(), 10 + i, "Volume", "A81001"));
  TokenClaims gp = clinician("A81001", "dr-busy");
  for (const auto& p : pts) REQUIRE(get(s, "/Patient/" + p.id, bearer(gp)).status == 200);
  TokenClaims para;
  para.sub = "para-2";
  para.role = "paramedic";
  para.org = "RX9";
  para.purpose = "EMERGENCY";
  REQUIRE(get(s, "/Patient/" + pts[0].id, bearer(para)).status == 200);
  const std::string ig = bearer(ig_officer());
  REQUIRE(request(s, "PUT", "/audit/flagged-patients/" + pts[1].nhs_number, ig, R"({"reason":"staff member"})").status == 200);
  CHECK(request(s, "PUT", "/audit/flagged-patients/123", ig, R"({"reason":"x"})").status == 400);
  CHECK(request(s, "PUT", "/audit/flagged-patients/" + pts[1].nhs_number, ig, R"({})").status == 400);
  REQUIRE(get(s, "/Patient/" + pts[1].id, bearer(gp)).status == 200);

  auto alerts = s.app().audit_log()->alerts("open", 1000);
  REQUIRE(alerts.ok());
  std::map<std::string, int> by_rule;
  for (const auto& a : *alerts) by_rule[a.rule]++;
  CHECK(by_rule["volume"] == 1);          // 4th distinct patient in the hour, once per hour
  CHECK(by_rule["no-relationship"] == 1); // the paramedic's emergency-purpose access
  CHECK(by_rule["flagged-record"] == 1);
  // Every successful patient access by a user, once per user and patient per hour: the
  // clinician's second read of pts[1] raises none.
  CHECK(by_rule["out-of-hours"] == 6);
  CHECK(by_rule["break-glass"] == 0);
}
