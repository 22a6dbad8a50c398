// SPDX-License-Identifier: Apache-2.0
// Issue #6, the IG officer's side: their own queries are audited with what they returned, and
// flagged records can be listed and unflagged as well as flagged.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <stdexcept>
#include <thread>

#include "fhir/json.h"
#include "gateway/audit/verify.h"
#include "gateway/sqlite/database.h"
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

HttpResponse get(TestServer& s, const std::string& target, const std::string& headers) {
  return request(s, "GET", target, headers);
}

std::string bearer(const TokenClaims& c) { return test::test_tokens().header(c); }

TokenClaims ig_officer(const std::string& scope = "user/AuditEvent.rs") {
  TokenClaims c;
  c.sub = "ig-jones";
  c.role = "ig-officer";
  c.org = "X26";
  c.scope = scope;
  return c;
}

bool contains(const std::vector<std::string>& v, const std::string& x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

bool ends_with(const std::string& s, const std::string& end) {
  return s.size() >= end.size() && s.compare(s.size() - end.size(), end.size(), end) == 0;
}

}  // namespace

TEST_CASE("Audit: an IG officer's own record names the AuditEvents each query returned") {
  TestServer s;
  auto a = test::add_patient(s.locator(), 41, "Reviewed", "A81001");
  TokenClaims gp;
  gp.sub = "dr-smith";
  TokenClaims para;
  para.sub = "para-9";
  para.role = "paramedic";
  para.org = "RX9";
  para.purpose = "EMERGENCY";
  for (int i = 0; i < 2; ++i) REQUIRE(get(s, "/Patient/" + a.id, bearer(gp)).status == 200);
  REQUIRE(get(s, "/Patient/" + a.id, bearer(para)).status == 200);  // raises a no-relationship alert
  const std::string ig = bearer(ig_officer());
  std::vector<HttpResponse> sent;

  // Search: one returned entity per Bundle entry, and the count and range in the note.
  HttpResponse search = get(s, "/AuditEvent?patient=" + a.nhs_number, ig);
  REQUIRE(search.status == 200);
  sent.push_back(search);
  std::vector<std::string> shown;
  const fhir::Json search_bundle = json_of(search);  // held: a range-for over a temporary's member dangles
  for (const auto& e : search_bundle.find("entry")->items())
    shown.push_back("AuditEvent/" + std::string(e.find("resource")->string_at("id")));
  REQUIRE(shown.size() == 3);
  audit::Record r = test::audit_record_of(s, search);
  CHECK(r.detail.returned == shown);
  CHECK(r.detail.note.find("returned 3 AuditEvents (sequence numbers") != std::string::npos);
  // A _count above the page limit is cut to it, and the self link says so.
  HttpResponse big = get(s, "/AuditEvent?patient=" + a.nhs_number + "&_count=100000", ig);
  REQUIRE(big.status == 200);
  sent.push_back(big);
  const fhir::Json big_bundle = json_of(big);
  CHECK(std::string(big_bundle.find("link")->items().at(0).string_at("url")) ==
        s.cfg.public_base_url + "/AuditEvent?patient=" + a.nhs_number + "&_count=" + std::to_string(s.cfg.audit.max_page));
  // ... and the AuditEvent rendering carries them as entities.
  const std::string ev = fhir::to_json(audit::to_audit_event(r, "test"));
  CHECK(ev.find("\"reference\":\"" + shown.front() + "\"") != std::string::npos);

  // Read.
  HttpResponse read = get(s, "/" + shown.back(), ig);
  REQUIRE(read.status == 200);
  sent.push_back(read);
  CHECK(test::audit_record_of(s, read).detail.returned == std::vector<std::string>{shown.back()});

  // Access report: the patient, and each access it listed.
  HttpResponse report = get(s, "/AuditEvent/$access-report?patient=" + a.nhs_number, ig);
  REQUIRE(report.status == 200);
  sent.push_back(report);
  r = test::audit_record_of(s, report);
  CHECK(contains(r.detail.patients, a.nhs_number));
  const fhir::Json report_json = json_of(report);
  const auto& accesses = report_json.find("accesses")->items();
  REQUIRE(!accesses.empty());
  CHECK(r.detail.returned.size() == accesses.size());
  for (const auto& e : accesses) CHECK(contains(r.detail.returned, "AuditEvent/" + std::string(e.string_at("auditRecord"))));
  CHECK(r.detail.note.find("access report for NHS number " + a.nhs_number) != std::string::npos);

  // Alert queue: the AuditEvents the alerts point to.
  HttpResponse alerts = get(s, "/audit/alerts?status=all", ig);
  REQUIRE(alerts.status == 200);
  sent.push_back(alerts);
  r = test::audit_record_of(s, alerts);
  const fhir::Json alerts_json = json_of(alerts);
  const auto& items = alerts_json.find("alerts")->items();
  REQUIRE(!items.empty());
  for (const auto& al : items) {
    const std::string url(al.string_at("auditEvent"));
    CHECK(contains(r.detail.returned, url.substr(url.rfind("/AuditEvent/") + 1)));
  }
  CHECK(r.detail.note.find("alert queue (all): returned") != std::string::npos);

  // Export of more records than a record lists: the first 100 by id, the count in the note.
  for (int i = 0; i < 120; ++i) {
    audit::Record filler;
    filler.time_ms = audit::now_ms();
    filler.kind = "system";
    filler.action = "start";
    filler.agent_kind = "system";
    filler.user = "test";
    filler.status = 200;
    REQUIRE(s.app().audit_log()->append_sync(filler).ok());
  }
  HttpResponse exp = get(s, "/AuditEvent/$export?start=2020-01-01&end=2999-12-31", ig);
  REQUIRE(exp.status == 200);
  sent.push_back(exp);
  const auto lines = static_cast<std::size_t>(std::count(exp.body.begin(), exp.body.end(), '\n'));
  REQUIRE(lines > 120);
  r = test::audit_record_of(s, exp);
  CHECK(r.detail.returned.size() == 100);
  CHECK(r.detail.returned.front() == "AuditEvent/0");
  CHECK(r.detail.note.find("returned " + std::to_string(lines) + " AuditEvents") != std::string::npos);
  CHECK(r.detail.note.find("the first 100 are listed") != std::string::npos);

  CHECK(test::check_one_audit_record_each(s, sent) == sent.size());
}

TEST_CASE("Audit: flagged records are listed and unflagged by IG officers, audited, committed before the answer") {
  const std::string configured = test::nhs(49);
  TestServer s([&](config::Config& c) { c.audit.alerts.flagged_patients = {configured}; });
  auto a = test::add_patient(s.locator(), 42, "Flagged", "A81001");
  auto b = test::add_patient(s.locator(), 43, "Staffmember", "A81001");
  const std::string ig = bearer(ig_officer());
  std::vector<HttpResponse> sent;
  auto call = [&](const std::string& method, const std::string& target, const std::string& headers,
                  const std::string& body = {}) {
    sent.push_back(request(s, method, target, headers, body));
    return sent.back();
  };
  REQUIRE(call("PUT", "/audit/flagged-patients/" + a.nhs_number, ig, R"({"reason":"VIP"})").status == 200);
  REQUIRE(call("PUT", "/audit/flagged-patients/" + b.nhs_number, ig, R"({"reason":"staff member"})").status == 200);

  // The list: NHS number, reason, who flagged and when; paged by _count with a next link.
  HttpResponse list = call("GET", "/audit/flagged-patients", ig);
  REQUIRE(list.status == 200);
  fhir::Json all = json_of(list);
  CHECK(all.find("total")->as_int64() == 2);
  std::map<std::string, std::string> reasons;
  for (const auto& f : all.find("flaggedPatients")->items()) {
    reasons[std::string(f.string_at("nhsNumber"))] = std::string(f.string_at("reason"));
    CHECK(f.string_at("flaggedBy") == "ig-jones");
    CHECK(f.string_at("flagged").size() == 24);  // 2026-12-07T01:02:03.456Z
  }
  CHECK(reasons == std::map<std::string, std::string>{{a.nhs_number, "VIP"}, {b.nhs_number, "staff member"}});
  CHECK(all.find("next") == nullptr);
  CHECK(contains(test::audit_record_of(s, list).detail.patients, a.nhs_number));
  std::set<std::string> paged;
  std::string next = "/audit/flagged-patients?_count=1";
  for (int page = 0; page < 5 && !next.empty(); ++page) {
    fhir::Json p = json_of(call("GET", next, ig));
    REQUIRE(p.find("flaggedPatients")->items().size() == 1);
    paged.insert(std::string(p.find("flaggedPatients")->items()[0].string_at("nhsNumber")));
    next = p.find("next") ? std::string(p.string_at("next")).substr(std::string(s.cfg.public_base_url).size()) : "";
  }
  CHECK(paged == std::set<std::string>{a.nhs_number, b.nhs_number});
  CHECK(call("GET", "/audit/flagged-patients?_count=0", ig).status == 400);
  CHECK(call("GET", "/audit/flagged-patients?colour=red", ig).status == 400);

  // Unflag: done and on disk when the answer comes; a second time, 404.
  HttpResponse del = call("DELETE", "/audit/flagged-patients/" + a.nhs_number, ig);
  REQUIRE(del.status == 200);
  auto stored = s.app().audit_log()->flagged_patients("", 10);
  REQUIRE(stored.ok());
  REQUIRE(stored->items.size() == 1);
  CHECK(stored->items[0].nhs_number == b.nhs_number);
  audit::Record r = test::audit_record_of(s, del);
  CHECK(r.method == "DELETE");
  CHECK(contains(r.detail.patients, a.nhs_number));
  CHECK(r.detail.note.find("unflagged") != std::string::npos);
  HttpResponse again = call("DELETE", "/audit/flagged-patients/" + a.nhs_number, ig);
  CHECK(again.status == 404);
  CHECK(again.body.find("is not flagged") != std::string::npos);
  CHECK(call("DELETE", "/audit/flagged-patients/123", ig).status == 400);
  // A number flagged in the configuration stays flagged until the configuration changes.
  HttpResponse pinned = call("DELETE", "/audit/flagged-patients/" + configured, ig);
  CHECK(pinned.status == 409);
  CHECK(pinned.body.find("flagged_patients") != std::string::npos);

  // The alert rule follows: the unflagged record raises no flagged-record alert, the other does.
  TokenClaims gp;
  gp.sub = "dr-smith";
  REQUIRE(call("GET", "/Patient/" + a.id, bearer(gp)).status == 200);
  REQUIRE(call("GET", "/Patient/" + b.id, bearer(gp)).status == 200);
  auto alerts = s.app().audit_log()->alerts("", 1000);
  REQUIRE(alerts.ok());
  int flagged_alerts = 0;
  for (const auto& al : *alerts)
    if (al.rule == "flagged-record") {
      ++flagged_alerts;
      CHECK(al.detail.find(b.nhs_number) != std::string::npos);
    }
  CHECK(flagged_alerts == 1);

  // IG-officer-only, with the same scopes as PUT (read and search for changes, search to list).
  TokenClaims clinician_with_scope = gp;
  clinician_with_scope.scope = "user/AuditEvent.rs";
  CHECK(call("GET", "/audit/flagged-patients", bearer(clinician_with_scope)).status == 403);
  CHECK(call("DELETE", "/audit/flagged-patients/" + b.nhs_number, bearer(clinician_with_scope)).status == 403);
  CHECK(call("DELETE", "/audit/flagged-patients/" + b.nhs_number, bearer(ig_officer("user/AuditEvent.s"))).status == 403);
  CHECK(call("DELETE", "/audit/flagged-patients/" + b.nhs_number, bearer(ig_officer("user/AuditEvent.r"))).status == 403);
  CHECK(call("GET", "/audit/flagged-patients", bearer(ig_officer("user/AuditEvent.r"))).status == 403);
  CHECK(call("GET", "/audit/flagged-patients", bearer(ig_officer("user/AuditEvent.s"))).status == 200);

  CHECK(test::check_one_audit_record_each(s, sent) == sent.size());
}

TEST_CASE("Audit: the access report says in plain words what each access was and why") {
  TestServer s;
  auto a = test::add_patient(s.locator(), 44, "Plainwords", "A81001");
  TokenClaims gp;
  gp.sub = "dr-smith";
  const std::string id = "https://fhir.nhs.uk/Id/nhs-number%7C" + a.nhs_number;
  for (const char* type : {"Encounter", "Observation", "DiagnosticReport"})
    REQUIRE(get(s, std::string("/").append(type).append("?patient:identifier=").append(id), bearer(gp)).status == 200);
  const std::string ig = bearer(ig_officer());
  REQUIRE(request(s, "PUT", "/audit/flagged-patients/" + a.nhs_number, ig, R"({"reason":"staff member"})").status == 200);
  REQUIRE(request(s, "DELETE", "/audit/flagged-patients/" + a.nhs_number, ig).status == 200);

  fhir::Json rep = json_of(get(s, "/AuditEvent/$access-report?patient=" + a.nhs_number, ig));
  std::vector<std::pair<std::string, std::string>> seen;  // (what, why), oldest first
  for (const auto& e : rep.find("accesses")->items())
    seen.insert(seen.begin(), {std::string(e.string_at("what")), std::string(e.string_at("why"))});
  REQUIRE(seen.size() == 5);
  CHECK(seen[0].first == "looked at your hospital and clinic visits (encounters)");
  CHECK(seen[1].first == "looked at your test results and measurements");
  CHECK(seen[2].first == "looked at your test reports (such as blood tests and scans)");
  for (int i = 0; i < 3; ++i) CHECK(seen[static_cast<std::size_t>(i)].second == "you are registered with their GP practice");
  CHECK(seen[3].first == "flagged your record for extra monitoring of who looks at it (information governance)");
  CHECK(seen[4].first == "ended the extra monitoring of who looks at your record (information governance)");
  for (int i = 3; i < 5; ++i)
    CHECK(seen[static_cast<std::size_t>(i)].second ==
          "information governance: some records (for example of staff) are watched more closely");
  for (const auto& [what, why] : seen) {
    CHECK(what.find('(' + std::string("search-type")) == std::string::npos);  // no codes
    CHECK_FALSE(why.empty());
  }
}

TEST_CASE("Audit: /metadata lists exactly the AuditEvent search parameters, and each is applied") {
  TestServer s;
  const std::string ig = bearer(ig_officer());
  HttpResponse cs = get(s, "/metadata", "");
  REQUIRE(cs.status == 200);
  std::set<std::string> names;
  const fhir::Json statement = json_of(cs);
  for (const auto& r : statement.find("rest")->items().at(0).find("resource")->items())
    if (r.string_at("type") == "AuditEvent") {
      REQUIRE(r.find("searchParam") != nullptr);
      for (const auto& p : r.find("searchParam")->items()) names.insert(std::string(p.string_at("name")));
    }
  CHECK(names == std::set<std::string>{"agent", "date", "outcome", "patient", "subtype"});
  // Each one narrows the search (a value matching nothing: total 0), none is refused as unknown.
  const std::map<std::string, std::string> nothing = {{"agent", "nobody-at-all"},
                                                      {"date", "lt2000-01-01"},
                                                      {"outcome", "12"},
                                                      {"patient", test::nhs(4242)},
                                                      {"subtype", "no-such-action"}};
  REQUIRE(get(s, "/AuditEvent", ig).status == 200);  // this search is itself recorded: the log is not empty
  REQUIRE(json_of(get(s, "/AuditEvent", ig)).find("total")->as_int64() > 0);
  for (const std::string& name : names) {
    CAPTURE(name);
    HttpResponse r = get(s, "/AuditEvent?" + name + "=" + nothing.at(name), ig);
    REQUIRE_MESSAGE(r.status == 200, r.body);
    CHECK(json_of(r).find("total")->as_int64() == 0);
  }
}

TEST_CASE("Audit: IG answers: no empty entry array, 410 for a record retention removed, proof errors name the parameter") {
  TestServer s;
  const std::string ig = bearer(ig_officer());

  SUBCASE("a search without matches leaves entry out, as Patient searches do") {
    HttpResponse none = get(s, "/AuditEvent?agent=nobody-at-all", ig);
    REQUIRE(none.status == 200);
    fhir::Json b = json_of(none);
    CHECK(b.find("total")->as_int64() == 0);
    CHECK(b.find("entry") == nullptr);
    CHECK(none.body.find("[]") == std::string::npos);
  }
  SUBCASE("a record whose content retention removed is 410 Gone, saying when") {
    audit::Record old;
    old.time_ms = audit::now_ms();
    old.kind = "system";
    old.action = "start";
    old.agent_kind = "system";
    old.user = "test";
    old.status = 200;
    auto seq = s.app().audit_log()->append_sync(old);
    REQUIRE(seq.ok());
    // Retention removes a prefix of the log: everything so far.
    auto pruned = s.app().audit_log()->prune_before(audit::now_ms() + 1000, "retention");
    REQUIRE(pruned.ok());
    REQUIRE(*pruned >= 1);
    audit::Query q;
    q.subtype = "retention-prune";
    auto prune_records = s.app().audit_log()->search(q);
    REQUIRE(prune_records.ok());
    REQUIRE(prune_records->records.size() == 1);
    HttpResponse gone = get(s, "/AuditEvent/" + std::to_string(*seq), ig);
    CHECK(gone.status == 410);
    CHECK(test::issue_code(gone) == "deleted");
    const std::string text(json_of(gone).find("issue")->items().at(0).string_at("diagnostics"));
    CHECK(text.find("AuditEvent " + std::to_string(*seq) + " was removed by retention on " +
                    audit::format_time_ms(prune_records->records[0].time_ms)) != std::string::npos);
    // Beyond the log: still 404.
    HttpResponse unknown = get(s, "/AuditEvent/99999999", ig);
    CHECK(unknown.status == 404);
    CHECK(test::issue_code(unknown) == "not-found");
  }
  SUBCASE("a proof parameter missing or not a number is named in expression") {
    struct Case {
      const char* target;
      const char* expression;
    };
    for (const Case& c : {Case{"/audit/proof/consistency?to=12", "from"}, Case{"/audit/proof/consistency?from=1", "to"},
                          Case{"/audit/proof/consistency?from=x&to=3", "from"},
                          Case{"/audit/proof/consistency?from=1&to=-3", "to"}, Case{"/audit/proof/inclusion?index=1", "size"},
                          Case{"/audit/proof/inclusion?size=3", "index"}}) {
      CAPTURE(c.target);
      HttpResponse r = get(s, c.target, ig);
      CHECK(r.status == 400);
      const fhir::Json issue = json_of(r).find("issue")->items().at(0);
      REQUIRE(issue.find("expression"));
      CHECK(issue.find("expression")->items().at(0).text() == c.expression);
      CHECK(std::string(issue.string_at("diagnostics")).rfind(c.expression, 0) == 0);
    }
  }
}

TEST_CASE("Audit: a gateway started with its checkpoint file emptied says so on /metrics and in the audit log") {
  std::string data_dir;
  {
    TestServer first;
    data_dir = first.cfg.data_dir;
    REQUIRE(first.metrics().render().find("gateway_audit_start_warnings 0") != std::string::npos);
  }  // stopping writes a checkpoint into audit.db and the file
  const auto file = std::filesystem::path(data_dir) / "audit-checkpoints.log";
  REQUIRE(std::filesystem::file_size(file) > 0);
  std::ofstream(file, std::ios::trunc);
  TestServer second([&](config::Config& c) { c.data_dir = data_dir; });
  CHECK(second.metrics().render().find("gateway_audit_start_warnings 1") != std::string::npos);
  audit::Query q;
  q.subtype = "checkpoint-file-behind";
  auto page = second.app().audit_log()->search(q);
  REQUIRE(page.ok());
  REQUIRE(page->records.size() == 1);
  CHECK(page->records[0].detail.note.find("the checkpoint file holds no checkpoint") != std::string::npos);
}

TEST_CASE("Audit: one damaged record does not blind the IG view: the rest is served, the damaged one named") {
  TestServer s;
  auto a = test::add_patient(s.locator(), 42, "Damaged", "A81001");
  TokenClaims gp;
  gp.sub = "dr-smith";
  for (int i = 0; i < 3; ++i) REQUIRE(get(s, "/Patient/" + a.id, bearer(gp)).status == 200);
  audit::Query mine;
  mine.patient = a.nhs_number;
  auto before = s.app().audit_log()->search(mine);
  REQUIRE(before.ok());
  REQUIRE(before->records.size() == 3);
  const std::uint64_t bad = before->records[1].seq;  // the middle one of the three
  const std::string bad_id = std::to_string(bad);
  // A record altered in the file (as by someone with write access to audit.db): no longer JSON.
  {
    auto db = sqlite::Database::open(s.cfg.data_dir + "/audit.db");
    REQUIRE(db.ok());
    REQUIRE(db->exec("UPDATE audit_record SET record = CAST('{\"v\":1,\"seq\":" + bad_id +
                     ",\"prev\":\"' AS BLOB) WHERE seq = " + bad_id)
                .ok());
  }
  const std::string ig = bearer(ig_officer());
  const std::string named = "AuditEvent " + bad_id + " matches but cannot be read";

  HttpResponse search = get(s, "/AuditEvent?patient=" + a.nhs_number, ig);
  REQUIRE_MESSAGE(search.status == 200, search.body);
  const fhir::Json bundle = json_of(search);
  CHECK(bundle.find("total")->as_int64() == 3);
  std::size_t matches = 0, outcomes = 0;
  for (const auto& e : bundle.find("entry")->items()) {
    const std::string_view mode = e.find("search")->string_at("mode");
    if (mode == "match") {
      ++matches;
      CHECK(e.find("resource")->string_at("id") != bad_id);
    } else if (mode == "outcome") {
      ++outcomes;
      const fhir::Json& issue = e.find("resource")->find("issue")->items().at(0);
      CHECK(issue.string_at("severity") == "warning");
      CHECK(std::string(issue.string_at("diagnostics")).find(named) != std::string::npos);
      CHECK(std::string(issue.string_at("diagnostics")).find("run audit-verify") != std::string::npos);
    }
  }
  CHECK(matches == 2);
  CHECK(outcomes == 1);
  // The IG officer's own record says what the query could not show.
  CHECK(test::audit_record_of(s, search).detail.note.find(named) != std::string::npos);

  HttpResponse report = get(s, "/AuditEvent/$access-report?patient=" + a.nhs_number, ig);
  REQUIRE_MESSAGE(report.status == 200, report.body);
  // The two readable reads, and the IG search just made (it names the patient too).
  const fhir::Json accesses = *json_of(report).find("accesses");
  CHECK(accesses.items().size() == 3);
  for (const auto& e : accesses.items()) CHECK(e.string_at("auditRecord") != bad_id);
  CHECK(std::string(json_of(report).string_at("warning")).find(named) != std::string::npos);
  HttpResponse html = get(s, "/AuditEvent/$access-report?patient=" + a.nhs_number + "&_format=html", ig);
  REQUIRE(html.status == 200);
  CHECK(html.body.find(named) != std::string::npos);

  HttpResponse exported = get(s, "/AuditEvent/$export?start=2020-01-01&end=2999-12-31", ig);
  REQUIRE_MESSAGE(exported.status == 200, exported.body);
  CHECK(exported.body.find("\"id\":\"" + bad_id + "\"") == std::string::npos);
  const std::string last_line = exported.body.substr(exported.body.rfind('\n', exported.body.size() - 2) + 1);
  CHECK(last_line.find("\"resourceType\":\"OperationOutcome\"") != std::string::npos);
  CHECK(last_line.find(named) != std::string::npos);

  // The record itself cannot be served: 500 naming it.
  HttpResponse read = get(s, "/AuditEvent/" + bad_id, ig);
  CHECK(read.status == 500);
  CHECK(read.body.find("AuditEvent " + bad_id + " cannot be read") != std::string::npos);
}

TEST_CASE("Audit: the printable access report may run no script, load nothing and not be framed") {
  TestServer s;
  auto a = test::add_patient(s.locator(), 43, "Printed", "A81001");
  TokenClaims gp;
  gp.sub = "<script>alert(1)</script>";
  REQUIRE(get(s, "/Patient/" + a.id, bearer(gp)).status == 200);
  const std::string ig = bearer(ig_officer());
  for (const std::string& ask : {std::string("&_format=html"), std::string()}) {
    HttpResponse html = get(s, "/AuditEvent/$access-report?patient=" + a.nhs_number + ask,
                            ig + (ask.empty() ? "Accept: text/html\r\n" : ""));
    REQUIRE(html.status == 200);
    CHECK(html.header("content-type").find("text/html") == 0);
    CHECK(html.header("content-security-policy") ==
          "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'");
    CHECK(html.header("x-frame-options") == "DENY");
    CHECK(html.body.find("<script>") == std::string::npos);
    CHECK(html.body.find("&lt;script&gt;") != std::string::npos);
  }
}

TEST_CASE("Audit: an IG officer records and withdraws a patient's objection on a running gateway, audited") {
  TestServer s;
  auto a = test::add_patient(s.locator(), 44, "Objector", "A81001");
  const std::string ig = bearer(ig_officer());
  TokenClaims gp;
  gp.sub = "dr-smith";
  const std::string path = "/audit/objections/" + a.nhs_number;
  REQUIRE(get(s, "/Patient/" + a.id, bearer(gp)).status == 200);

  HttpResponse none = get(s, path, ig);
  REQUIRE_MESSAGE(none.status == 200, none.body);
  CHECK(json_of(none).find("objection")->as_bool() == false);
  CHECK(json_of(none).string_at("patient") == "Patient/" + a.id);
  CHECK(contains(test::audit_record_of(s, none).detail.patients, a.nhs_number));

  // Recorded: in locator.db when the answer comes, and the registered practice sees nothing.
  HttpResponse put = request(s, "PUT", path, ig, R"({"note":"request ref 42"})");
  REQUIRE_MESSAGE(put.status == 200, put.body);
  CHECK(json_of(put).find("objection")->as_bool() == true);
  CHECK(json_of(put).find("changed")->as_bool() == true);
  auto stored = s.locator().read_patient(a.id);
  REQUIRE(stored.ok());
  REQUIRE(stored->has_value());
  CHECK((*stored)->objection);
  CHECK(get(s, "/Patient/" + a.id, bearer(gp)).status == 404);
  audit::Record rec = test::audit_record_of(s, put);
  CHECK(rec.method == "PUT");
  CHECK(rec.user == "ig-jones");
  CHECK(contains(rec.detail.patients, a.nhs_number));
  // The note names the change (its row in locator.db awaits this record: gateway/objection_audit.h).
  CHECK(rec.detail.note.rfind("objection to sharing recorded (change ", 0) == 0);
  CHECK(ends_with(rec.detail.note, "): request ref 42"));
  CHECK(rec.detail.operation == "objection-recorded");
  // A second time: still recorded, and the answer and record say it already was.
  HttpResponse again = request(s, "PUT", path, ig, R"({"note":"duplicate letter"})");
  REQUIRE_MESSAGE(again.status == 200, again.body);
  CHECK(json_of(again).find("changed")->as_bool() == false);
  CHECK(test::audit_record_of(s, again).detail.note == "objection to sharing recorded (it already was): duplicate letter");

  // Bad requests change nothing and say why.
  struct Bad {
    std::string body;
    std::string expression;
  };
  std::string long_note = R"({"note":")";
  long_note.append(501, 'x').append("\"}");
  const std::vector<Bad> bad = {{"{}", "note"},
                                {R"({"note":"   "})", "note"},
                                {R"({"note":"line one\nline two"})", "note"},
                                {long_note, "note"},
                                {R"({"note":"ref 43","reason":"x"})", "reason"},
                                {R"(["note"])", ""}};
  for (const auto& b : bad) {
    CAPTURE(b.body);
    HttpResponse r = request(s, "PUT", path, ig, b.body);
    CHECK(r.status == 400);
    const fhir::Json issue = json_of(r).find("issue")->items().at(0);
    if (!b.expression.empty()) CHECK(issue.find("expression")->items().at(0).text() == b.expression);
  }
  CHECK(request(s, "PUT", "/audit/objections/1234567890", ig, R"({"note":"ref"})").status == 400);  // not Modulus 11
  HttpResponse unknown = request(s, "PUT", "/audit/objections/" + test::nhs(45), ig, R"({"note":"ref"})");
  CHECK(unknown.status == 404);
  CHECK(test::audit_record_of(s, unknown).detail.note.rfind("objection to sharing not recorded: no patient with NHS number", 0) == 0);
  // Only roles with audit access: a clinician may not withdraw it.
  CHECK(request(s, "DELETE", path, bearer(gp)).status == 403);
  // Nor a token whose scopes do not reach AuditEvent.
  CHECK(request(s, "DELETE", path, bearer(ig_officer("user/Patient.rs"))).status == 403);
  stored = s.locator().read_patient(a.id);
  REQUIRE(stored.ok());
  CHECK((*stored)->objection);

  // Withdrawn: the practice sees the record again.
  // A DELETE may carry the request's reference in an optional body; a bad one changes nothing.
  CHECK(request(s, "DELETE", path, ig, R"({"note":"ref 44","why":"x"})").status == 400);
  CHECK(request(s, "DELETE", path, ig, "note=ref", "application/x-www-form-urlencoded").status == 415);
  CHECK(s.locator().read_patient(a.id).value()->objection);
  HttpResponse del = request(s, "DELETE", path, ig, R"({"note":"withdrawal letter ref 44"})");
  REQUIRE_MESSAGE(del.status == 200, del.body);
  CHECK(json_of(del).find("objection")->as_bool() == false);
  CHECK(get(s, "/Patient/" + a.id, bearer(gp)).status == 200);
  const std::string withdrawn = test::audit_record_of(s, del).detail.note;
  CHECK(withdrawn.rfind("objection to sharing withdrawn (change ", 0) == 0);
  CHECK(ends_with(withdrawn, "): withdrawal letter ref 44"));
  HttpResponse del_again = request(s, "DELETE", path, ig);
  REQUIRE(del_again.status == 200);
  CHECK(json_of(del_again).find("changed")->as_bool() == false);
  CHECK(test::audit_record_of(s, del_again).detail.note == "objection to sharing withdrawn (it already was)");
  // One search finds every change, by subtype (as gw-locator objection's records are found).
  fhir::Json changes = json_of(get(s, "/AuditEvent?patient=" + a.nhs_number + "&subtype=objection-recorded", ig));
  CHECK(changes.find("total")->as_int64() == 2);
  fhir::Json withdrawals = json_of(get(s, "/AuditEvent?patient=" + a.nhs_number + "&subtype=objection-withdrawn", ig));
  CHECK(withdrawals.find("total")->as_int64() == 2);  // done, and already done (refused bodies are not changes)

  // The patient's access report says, in plain words, what information governance did.
  fhir::Json report = json_of(get(s, "/AuditEvent/$access-report?patient=" + a.nhs_number, ig));
  std::vector<std::string> what;
  for (const auto& e : report.find("accesses")->items()) what.emplace_back(e.string_at("what"));
  // Each says what happened: a repeat that changed nothing is not told as a change.
  CHECK(std::count_if(what.begin(), what.end(), [](const std::string& w) {
          return w.rfind("recorded your objection to sharing your record", 0) == 0;
        }) == 1);
  CHECK(std::count(what.begin(), what.end(),
                   "checked that your objection to sharing your record was already recorded; nothing changed "
                   "(information governance)") == 1);
  CHECK(std::count(what.begin(), what.end(), "withdrew your objection to sharing your record (information governance)") == 1);
  CHECK(std::count(what.begin(), what.end(),
                   "checked that your objection to sharing your record was already withdrawn; nothing changed "
                   "(information governance)") == 1);
  CHECK(std::count(what.begin(), what.end(),
                   "checked whether you have objected to sharing your record (information governance)") == 1);
}

namespace {

// The records of `subtype` (objection-recorded, objection-withdrawn) naming patient `nhs`.
std::vector<audit::Record> objection_records(TestServer& s, const std::string& nhs, const std::string& subtype) {
  audit::Query q;
  q.patient = nhs;
  q.subtype = subtype;
  q.count = 100;
  auto page = s.app().audit_log()->search(q);
  REQUIRE_MESSAGE(page.ok(), page.issue().diagnostics);
  return page->records;
}

std::vector<locator::ObjectionChange> unaudited(TestServer& s) {
  auto rows = s.locator().unaudited_objection_changes(100);
  REQUIRE_MESSAGE(rows.ok(), rows.issue().diagnostics);
  return *rows;
}

}  // namespace

TEST_CASE("Audit: normal objection changes keep no row once audited, and exactly one record each, across a restart") {
  std::string data_dir;
  test::Seeded a;
  std::string change_id;
  std::int64_t changed_ms = 0;
  {
    TestServer s;
    data_dir = s.cfg.data_dir;
    a = test::add_patient(s.locator(), 46, "Normal", "A81001");
    const std::string ig = bearer(ig_officer());
    const std::string path = "/audit/objections/" + a.nhs_number;
    HttpResponse put = request(s, "PUT", path, ig, R"({"note":"ref 46"})");
    REQUIRE(put.status == 200);
    HttpResponse del = request(s, "DELETE", path, ig);
    REQUIRE(del.status == 200);
    HttpResponse put2 = request(s, "PUT", path, ig, R"({"note":"ref 47"})");
    REQUIRE(put2.status == 200);
    CHECK(test::check_one_audit_record_each(s, {put, del, put2}) == 3);
    // Their records are committed: the maintenance thread, woken by each, removes the rows
    // off the request path (bounded wait), writing no record of its own.
    for (int i = 0; i < 500 && !unaudited(s).empty(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    CHECK(unaudited(s).empty());
    CHECK_FALSE(s.app().objection_audit()->due());
    for (const auto& r : objection_records(s, a.nhs_number, "objection-recorded")) CHECK(r.kind == "rest");
    // The change a crash between its record's commit and its row's removal leaves: which one.
    const audit::Record rec = test::audit_record_of(s, put2);
    const std::string prefix = "objection to sharing recorded (change ";
    REQUIRE(rec.detail.note.rfind(prefix, 0) == 0);
    change_id = rec.detail.note.substr(prefix.size(), rec.detail.note.find(')') - prefix.size());
    changed_ms = rec.time_ms - 5;
  }
  {
    auto db = sqlite::Database::open(data_dir + "/locator.db");
    REQUIRE(db.ok());
    REQUIRE(db->exec("INSERT INTO objection_changes VALUES ('" + change_id + "', '" + a.id + "', '" + a.nhs_number +
                     "', 1, 'user ig-jones (X26)', 'ref 47', '', " + std::to_string(changed_ms) + ")")
                .ok());
  }
  TestServer s([&](config::Config& c) { c.data_dir = data_dir; });
  // At start-up its record was found: the row is gone, and no second record was written.
  CHECK(unaudited(s).empty());
  CHECK(objection_records(s, a.nhs_number, "objection-recorded").size() == 2);
  CHECK(objection_records(s, a.nhs_number, "objection-withdrawn").size() == 1);
  for (const auto& r : objection_records(s, a.nhs_number, "objection-recorded")) CHECK(r.kind == "rest");
}

TEST_CASE("Audit: an objection change whose record cannot be written is answered 503 saying so, and audited once "
          "later") {
  std::string data_dir;
  test::Seeded a;
  std::string request_id, change_id;
  {
    TestServer s;
    data_dir = s.cfg.data_dir;
    a = test::add_patient(s.locator(), 47, "Unaudited", "A81001");
    const std::string ig = bearer(ig_officer());
    const std::string path = "/audit/objections/" + a.nhs_number;
    s.app().audit_log()->inject_write_failure(true);
    HttpResponse put = request(s, "PUT", path, ig, R"({"note":"request ref 42"})");
    s.app().audit_log()->inject_write_failure(false);
    REQUIRE(put.status == 503);
    request_id = put.header("x-request-id");
    // The answer does not pretend nothing happened: the change stands, to be audited.
    const std::string said(json_of(put).find("issue")->items().at(0).string_at("diagnostics"));
    CHECK(said.find("The objection to sharing was recorded, but its audit record could not be written") == 0);
    CHECK(said.find("the gateway audits it once the audit trail can be written again") != std::string::npos);
    CHECK(s.locator().read_patient(a.id).value()->objection);
    CHECK(test::audit_records_of(s, put).empty());
    // Its row holds what the record needs.
    auto rows = unaudited(s);
    REQUIRE(rows.size() == 1);
    change_id = rows[0].id;
    CHECK(rows[0].patient_id == a.id);
    CHECK(rows[0].nhs_number == a.nhs_number);
    CHECK(rows[0].objection);
    CHECK(rows[0].by == "user ig-jones (X26)");
    CHECK(rows[0].note == "request ref 42");
    CHECK(rows[0].request_id == request_id);
    CHECK(s.app().objection_audit()->due());
  }
  // The next start audits it: one record, under the change's subtype, naming the patient.
  {
    TestServer s([&](config::Config& c) { c.data_dir = data_dir; });
    CHECK(unaudited(s).empty());
    auto recs = objection_records(s, a.nhs_number, "objection-recorded");
    REQUIRE(recs.size() == 1);
    const audit::Record& r = recs[0];
    CHECK(r.kind == "system");
    CHECK(r.agent_kind == "system");
    CHECK(r.user == "fhir-gateway");
    CHECK(r.status == 200);
    CHECK(r.request_id == request_id);
    CHECK(contains(r.detail.patients, a.nhs_number));
    CHECK(contains(r.detail.returned, "Patient/" + a.id));
    CHECK(r.detail.note.rfind("objection to sharing recorded (change " + change_id + ") by user ig-jones (X26) at ", 0) == 0);
    CHECK(r.detail.note.find("its own audit record was not committed; recovered at start-up") != std::string::npos);
    CHECK(ends_with(r.detail.note, "; note: request ref 42"));
    // A stop after the recovery record's commit but before its row went: the row is back.
    auto db = sqlite::Database::open(data_dir + "/locator.db");
    REQUIRE(db.ok());
    REQUIRE(db->exec("INSERT INTO objection_changes VALUES ('" + change_id + "', '" + a.id + "', '" + a.nhs_number +
                     "', 1, 'user ig-jones (X26)', 'request ref 42', '" + request_id + "', " +
                     std::to_string(r.time_ms - 1000) + ")")
                .ok());
  }
  // Found audited at the following start: the row goes, and there is still one record.
  TestServer s([&](config::Config& c) { c.data_dir = data_dir; });
  CHECK(unaudited(s).empty());
  CHECK(objection_records(s, a.nhs_number, "objection-recorded").size() == 1);
}

TEST_CASE("Audit: the running gateway audits an objection change once the audit store takes writes again") {
  TestServer s;
  auto a = test::add_patient(s.locator(), 48, "Later", "A81001");
  const std::string ig = bearer(ig_officer());
  const std::string path = "/audit/objections/" + a.nhs_number;
  REQUIRE(request(s, "PUT", path, ig, R"({"note":"ref 48"})").status == 200);
  s.app().audit_log()->inject_write_failure(true);
  HttpResponse del = request(s, "DELETE", path, ig);
  REQUIRE(del.status == 503);
  CHECK(json_of(del).find("issue")->items().at(0).string_at("diagnostics").find(
            "The objection to sharing was withdrawn, but") == 0);
  // While the store refuses, the recovery fails and stays due; nothing is lost.
  CHECK_FALSE(s.app().objection_audit()->recover("test").ok());
  CHECK(s.app().objection_audit()->due());
  // The PUT's row went (its record is committed), the DELETE's stays for the next run.
  auto left = unaudited(s);
  REQUIRE(left.size() == 1);
  CHECK_FALSE(left[0].objection);
  s.app().audit_log()->inject_write_failure(false);
  // What the maintenance thread runs every minute while due (run here, not waited for).
  auto run = s.app().objection_audit()->recover("recovered by the running gateway");
  REQUIRE_MESSAGE(run.ok(), run.issue().diagnostics);
  CHECK(unaudited(s).empty());
  CHECK_FALSE(s.app().objection_audit()->due());
  // The DELETE's request now has exactly one record: the recovery's, under its subtype.
  audit::Record r = test::audit_record_of(s, del);
  CHECK(r.action == "objection-withdrawn");
  CHECK(r.detail.note.find("recovered by the running gateway") != std::string::npos);
  CHECK(objection_records(s, a.nhs_number, "objection-withdrawn").size() == 1);
  CHECK(objection_records(s, a.nhs_number, "objection-recorded").size() == 1);
  // The patient's access report tells it as the withdrawal it was.
  fhir::Json report = json_of(get(s, "/AuditEvent/$access-report?patient=" + a.nhs_number, ig));
  std::vector<std::string> what;
  for (const auto& e : report.find("accesses")->items()) what.emplace_back(e.string_at("what"));
  CHECK(std::count(what.begin(), what.end(), "withdrew your objection to sharing your record (information governance)") == 1);
}

TEST_CASE("Audit: records keep the role claim and the gateway's name for it; the access report shows the name") {
  TestServer s;
  auto a = test::add_patient(s.locator(), 47, "Rolename", "A81001");
  TokenClaims gp;  // a CIS2 role code the default policy maps to clinician
  gp.sub = "dr-cis2";
  gp.role = "R8000";
  HttpResponse read = get(s, "/Patient/" + a.id, bearer(gp));
  REQUIRE(read.status == 200);
  const audit::Record rec = test::audit_record_of(s, read);
  CHECK(rec.version == audit::kRecordVersion);
  CHECK(rec.role == "R8000");
  CHECK(rec.role_name == "clinician");
  TokenClaims odd = gp;  // a claim no role has: kept as sent, no name
  odd.sub = "someone";
  odd.role = "janitor";
  HttpResponse refused = get(s, "/Patient/" + a.id, bearer(odd));
  REQUIRE(refused.status == 403);
  const audit::Record odd_rec = test::audit_record_of(s, refused);
  CHECK(odd_rec.role == "janitor");
  CHECK(odd_rec.role_name.empty());

  const std::string ig = bearer(ig_officer());
  fhir::Json rep = json_of(get(s, "/AuditEvent/$access-report?patient=" + a.nhs_number, ig));
  std::map<std::string, std::string> role_of;  // who -> role shown
  for (const auto& e : rep.find("accesses")->items())
    role_of[std::string(e.string_at("who"))] = std::string(e.string_at("role"));
  CHECK(role_of["dr-cis2"] == "clinician");
  HttpResponse html = get(s, "/AuditEvent/$access-report?patient=" + a.nhs_number + "&_format=html", ig);
  REQUIRE(html.status == 200);
  CHECK(html.body.find("dr-cis2 (clinician)") != std::string::npos);
  CHECK(html.body.find("R8000") == std::string::npos);

  // The AuditEvent: the claim is the code, the name its display.
  fhir::Json ev = json_of(get(s, "/AuditEvent/" + std::to_string(rec.seq), ig));
  const fhir::Json* agents = ev.find("agent");
  REQUIRE(agents != nullptr);
  bool found = false;
  for (const auto& ag : agents->items()) {
    const fhir::Json* roles = ag.find("role");
    if (!roles) continue;
    const fhir::Json& coding = roles->items().at(0).find("coding")->items().at(0);
    CHECK(coding.string_at("code") == "R8000");
    CHECK(coding.string_at("display") == "clinician");
    found = true;
  }
  CHECK(found);
}

TEST_CASE("Audit: the alert queue pages, so a flood of newer alerts cannot push an older one out of reach") {
  TestServer s;
  // Refused break-glass attempts each raise an alert, however many: what a user who wants an
  // earlier alert buried under newer ones would send.
  for (int i = 0; i < 5; ++i) {
    audit::Record r;
    r.time_ms = audit::now_ms();
    r.kind = "rest";
    r.action = "read";
    r.method = "GET";
    r.target = "/Patient/p" + std::to_string(i);
    r.route = "/Patient/{id}";
    r.status = 403;
    r.agent_kind = "user";
    r.user = "dr-flood";
    r.detail.break_glass_reason = "emergency-care";
    REQUIRE(s.app().audit_log()->append_sync(r).ok());
  }
  const std::string ig = bearer(ig_officer());
  std::vector<std::int64_t> ids;
  std::string next = "/audit/alerts?status=all&_count=2";
  std::int64_t total = -1;
  for (int page = 0; page < 10 && !next.empty(); ++page) {
    HttpResponse r = get(s, next, ig);
    REQUIRE(r.status == 200);
    const fhir::Json body = json_of(r);
    REQUIRE(body.find("total") != nullptr);
    total = *body.find("total")->as_int64();
    const auto& items = body.find("alerts")->items();
    CHECK(items.size() <= 2);
    for (const auto& al : items) ids.push_back(*al.find("id")->as_int64());
    const audit::Record rec = test::audit_record_of(s, r);
    CHECK(rec.detail.note.find("returned " + std::to_string(items.size()) + " of 5 alerts") != std::string::npos);
    next.clear();
    if (body.find("next") != nullptr) {
      const std::string url(body.string_at("next"));
      REQUIRE(url.rfind(s.cfg.public_base_url, 0) == 0);
      next = url.substr(s.cfg.public_base_url.size());
    }
  }
  CHECK(next.empty());
  CHECK(total == 5);
  CHECK(ids == std::vector<std::int64_t>{5, 4, 3, 2, 1});  // newest first, each once
  CHECK(get(s, "/audit/alerts?_count=0", ig).status == 400);
  CHECK(get(s, "/audit/alerts?_count=1001", ig).status == 400);
  CHECK(get(s, "/audit/alerts?_cursor=abc", ig).status == 400);
}

TEST_CASE("Audit: the access report pages, so newer accesses cannot push an older one out of reach") {
  TestServer s;
  auto a = test::add_patient(s.locator(), 43, "Paged", "A81001");
  TokenClaims gp;
  gp.sub = "dr-paged";
  for (int i = 0; i < 4; ++i) REQUIRE(get(s, "/Patient/" + a.id, bearer(gp)).status == 200);
  const std::string ig = bearer(ig_officer());
  const std::string base = "/AuditEvent/$access-report?patient=" + a.nhs_number;
  const fhir::Json whole = json_of(get(s, base, ig));
  std::vector<std::string> before;
  for (const auto& e : whole.find("accesses")->items()) before.emplace_back(e.string_at("auditRecord"));
  REQUIRE(before.size() >= 4);
  CHECK(whole.find("next") == nullptr);

  std::vector<std::int64_t> paged;
  std::string next = base + "&_count=2";
  for (int page = 0; page < 20 && !next.empty(); ++page) {
    HttpResponse r = get(s, next, ig);
    REQUIRE(r.status == 200);
    const fhir::Json body = json_of(r);
    REQUIRE(body.find("accesses") != nullptr);
    const auto& items = body.find("accesses")->items();
    CHECK(items.size() <= 2);
    for (const auto& e : items) paged.push_back(std::stoll(std::string(e.string_at("auditRecord"))));
    next.clear();
    if (body.find("next") != nullptr) {
      const std::string url(body.string_at("next"));
      REQUIRE(url.rfind(s.cfg.public_base_url, 0) == 0);
      next = url.substr(s.cfg.public_base_url.size());
    }
  }
  CHECK(next.empty());
  for (std::size_t i = 1; i < paged.size(); ++i) CHECK(paged[i] < paged[i - 1]);  // newest first, each once
  for (const auto& seq : before)
    CHECK(std::find(paged.begin(), paged.end(), std::stoll(seq)) != paged.end());

  HttpResponse html = get(s, base + "&_format=html&_count=1", ig);
  REQUIRE(html.status == 200);
  CHECK(html.body.find("<p>Older accesses: <a href=\"" + s.cfg.public_base_url) != std::string::npos);
  CHECK(get(s, base + "&_count=0", ig).status == 400);
  CHECK(get(s, base + "&_cursor=x", ig).status == 400);
}

namespace {

// A record naming `nhs` as a clinician's read of it would (the IG view pages over such records).
audit::Record read_of(const std::string& nhs, int i) {
  audit::Record r;
  r.time_ms = audit::now_ms();
  r.kind = "rest";
  r.action = "read";
  r.method = "GET";
  r.target = "/Patient/p" + std::to_string(i);
  r.route = "/Patient/{id}";
  r.status = 200;
  r.agent_kind = "user";
  r.user = "dr-paged";
  r.detail.patients = {nhs};
  r.detail.basis = "registered-practice";
  return r;
}

// The path of a next link (the base URL cut off), or "" for none.
std::string path_of(const TestServer& s, const std::string& url) {
  if (url.empty()) return {};
  REQUIRE(url.rfind(s.cfg.public_base_url, 0) == 0);
  return url.substr(s.cfg.public_base_url.size());
}

}  // namespace

TEST_CASE("Audit: a review, flag or unflag whose own record cannot be written is not made, and audit-verify agrees") {
  TestServer s;
  audit::Log& log = *s.app().audit_log();
  const std::string ig = bearer(ig_officer());
  const std::string staff = test::nhs(44), other = test::nhs(45);
  // An alert to review: a refused break-glass attempt.
  audit::Record glass = read_of(other, 0);
  glass.status = 403;
  glass.detail.break_glass_reason = "emergency-care";
  REQUIRE(log.append_sync(glass).ok());
  auto alerts = log.alerts("open", 10);
  REQUIRE(alerts.ok());
  REQUIRE(alerts->size() == 1);
  const std::string review = "/audit/alerts/" + std::to_string(alerts->front().id) + "/review";
  REQUIRE(request(s, "PUT", "/audit/flagged-patients/" + other, ig, R"({"reason":"public figure"})").status == 200);

  // The audit store refuses every commit: each change is answered 503 and not made.
  log.inject_write_failure(true);
  CHECK(request(s, "PUT", "/audit/flagged-patients/" + staff, ig, R"({"reason":"staff member"})").status == 503);
  CHECK(request(s, "POST", review, ig, R"({"outcome":"appropriate"})").status == 503);
  CHECK(request(s, "DELETE", "/audit/flagged-patients/" + other, ig).status == 503);
  log.inject_write_failure(false);

  auto flagged = log.flagged_patients("", 10);
  REQUIRE(flagged.ok());
  REQUIRE(flagged->items.size() == 1);  // the flag that stood before, and nothing else
  CHECK(flagged->items[0].nhs_number == other);
  alerts = log.alerts("open", 10);
  REQUIRE(alerts.ok());
  CHECK(alerts->size() == 1);  // still open
  // The alert rule follows the tables: the failed flag raises nothing, the failed unflag left one.
  REQUIRE(log.append_sync(read_of(staff, 1)).ok());
  REQUIRE(log.append_sync(read_of(other, 2)).ok());
  alerts = log.alerts("", 10);
  REQUIRE(alerts.ok());
  std::vector<std::string> on_flags;
  for (const auto& a : *alerts)
    if (a.rule == "flagged-record") on_flags.push_back(a.detail);
  CHECK(on_flags == std::vector<std::string>{"access to a flagged record (NHS number " + other + ")"});

  // audit-verify finds the tables as the records say: no change without its record.
  auto report = audit::verify_database(s.cfg.data_dir + "/audit.db", audit::VerifyOptions{});
  REQUIRE(report.ok());
  for (const auto& p : report->problems) {
    INFO(p.kind << ": " << p.text);
    CHECK(p.kind != "alert-mismatch");
    CHECK(p.kind != "flag-mismatch");
  }

  // Once the store takes writes again, the same requests are made, each with its record.
  HttpResponse flag = request(s, "PUT", "/audit/flagged-patients/" + staff, ig, R"({"reason":"staff member"})");
  CHECK(flag.status == 200);
  HttpResponse reviewed = request(s, "POST", review, ig, R"({"outcome":"appropriate"})");
  CHECK(reviewed.status == 200);
  CHECK(test::audit_record_of(s, reviewed).detail.note.find("reviewed: appropriate") != std::string::npos);
  HttpResponse unflag = request(s, "DELETE", "/audit/flagged-patients/" + other, ig);
  CHECK(unflag.status == 200);
  CHECK(test::check_one_audit_record_each(s, {flag, reviewed, unflag}) == 3);
  flagged = log.flagged_patients("", 10);
  REQUIRE(flagged.ok());
  REQUIRE(flagged->items.size() == 1);
  CHECK(flagged->items[0].nhs_number == staff);
  report = audit::verify_database(s.cfg.data_dir + "/audit.db", audit::VerifyOptions{});
  REQUIRE(report.ok());
  for (const auto& p : report->problems) {
    INFO(p.kind << ": " << p.text);
    CHECK(p.kind != "alert-mismatch");
    CHECK(p.kind != "flag-mismatch");
  }
}

TEST_CASE("Audit: paging past many damaged records: next links follow the rows, and every record is reached") {
  TestServer s([](config::Config& c) { c.audit.export_max = 3; });
  audit::Log& log = *s.app().audit_log();
  const std::string nhs = test::nhs(46);
  // 5 readable records, 120 soon damaged (more than one page reads past), 5 readable.
  std::vector<std::uint64_t> readable;
  std::uint64_t first_bad = 0, last_bad = 0;
  for (int i = 0; i < 130; ++i) {
    auto seq = log.append_sync(read_of(nhs, i));
    REQUIRE(seq.ok());
    if (i < 5 || i >= 125) readable.push_back(*seq);
    if (i == 5) first_bad = *seq;
    if (i == 124) last_bad = *seq;
  }
  {
    auto db = sqlite::Database::open(s.cfg.data_dir + "/audit.db");
    REQUIRE(db.ok());
    REQUIRE(db->exec("UPDATE audit_record SET record = CAST('{\"v\":1' AS BLOB) WHERE seq BETWEEN " +
                     std::to_string(first_bad) + " AND " + std::to_string(last_bad))
                .ok());
    REQUIRE(db->changes() == 120);
  }
  const std::string ig = bearer(ig_officer());
  auto seen_all = [&readable](std::vector<std::uint64_t> seen) {
    std::sort(seen.begin(), seen.end());
    seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
    std::vector<std::uint64_t> found;
    std::set_intersection(seen.begin(), seen.end(), readable.begin(), readable.end(), std::back_inserter(found));
    return found == readable;
  };

  SUBCASE("AuditEvent search") {
    std::vector<std::uint64_t> seen;
    std::size_t pages = 0, outcome_pages = 0;
    std::string next = "/AuditEvent?patient=" + nhs + "&_count=3";
    for (; pages < 20 && !next.empty(); ++pages) {
      HttpResponse r = get(s, next, ig);
      REQUIRE_MESSAGE(r.status == 200, r.body);
      const fhir::Json bundle = json_of(r);
      next.clear();
      for (const auto& l : bundle.find("link")->items())
        if (l.string_at("relation") == "next") next = path_of(s, std::string(l.string_at("url")));
      if (const fhir::Json* entries = bundle.find("entry"))
        for (const auto& e : entries->items()) {
          if (e.find("search")->string_at("mode") == "match")
            seen.push_back(std::stoull(std::string(e.find("resource")->string_at("id"))));
          else
            ++outcome_pages;
        }
    }
    CHECK(next.empty());
    CHECK(seen_all(seen));
    CHECK(outcome_pages == 2);  // 100 damaged named on one page, the other 20 on the next
  }
  SUBCASE("access report") {
    std::vector<std::uint64_t> seen;
    std::size_t warnings = 0;
    std::string next = "/AuditEvent/$access-report?patient=" + nhs + "&_count=3";
    for (int page = 0; page < 20 && !next.empty(); ++page) {
      HttpResponse r = get(s, next, ig);
      REQUIRE_MESSAGE(r.status == 200, r.body);
      const fhir::Json body = json_of(r);
      for (const auto& e : body.find("accesses")->items()) seen.push_back(std::stoull(std::string(e.string_at("auditRecord"))));
      if (body.find("warning")) ++warnings;
      next = body.find("next") ? path_of(s, std::string(body.string_at("next"))) : "";
    }
    CHECK(next.empty());
    CHECK(seen_all(seen));
    CHECK(warnings == 2);
  }
  SUBCASE("export") {
    std::vector<std::uint64_t> seen;
    std::string next = "/AuditEvent/$export?start=2020-01-01&end=2999-12-31";
    for (int page = 0; page < 100 && !next.empty(); ++page) {
      HttpResponse r = get(s, next, ig);
      REQUIRE_MESSAGE(r.status == 200, r.body);
      std::size_t at = 0;
      while (at < r.body.size()) {
        const std::size_t end = r.body.find('\n', at);
        REQUIRE(end != std::string::npos);  // every NDJSON line ends with one
        auto parsed = fhir::parse_json(r.body.substr(at, end - at));
        REQUIRE(parsed.ok());
        const fhir::Json& line = *parsed;
        if (line.string_at("resourceType") == "AuditEvent") seen.push_back(std::stoull(std::string(line.string_at("id"))));
        at = end + 1;
      }
      const std::string link(r.header("link"));
      next = link.empty() ? "" : path_of(s, link.substr(1, link.find('>') - 1));
    }
    CHECK(next.empty());
    CHECK(seen_all(seen));
  }
}

TEST_CASE("Audit: a change set by a handler that then fails is not made; its 500 is audited alone") {
  const std::string nhs = test::nhs(47);
  // An IG route that asks for a flag, then breaks (as an exception in a handler would).
  auto routes = [nhs](http::Router& router, fhir::SearchParamRegistry&) {
    http::RouteOptions o;
    o.access = http::Access::audit;
    o.fhir = false;
    router.add("GET", "/audit/test/flag-then-fail", [nhs](http::Request& req) -> boost::asio::awaitable<http::Response> {
      req.audit.patients.push_back(nhs);
      req.audit_change = http::Request::AuditChange{audit::Log::flag_patient(nhs, "test", "ig-jones"), {}};
      throw std::runtime_error("broken after asking for the change");
      co_return http::text_response(200, "text/plain", "unreachable");
    }, o);
  };
  TestServer s({}, routes);
  HttpResponse r = get(s, "/audit/test/flag-then-fail", bearer(ig_officer()));
  CHECK(r.status == 500);
  auto flagged = s.app().audit_log()->flagged_patients("", 10);
  REQUIRE(flagged.ok());
  CHECK(flagged->items.empty());
  CHECK(test::audit_record_of(s, r).status == 500);
}

TEST_CASE("Audit: after retention the alert queue lists a reviewed alert as redacted, an open one as it was") {
  TestServer s;
  audit::Log& log = *s.app().audit_log();
  const std::string ig = bearer(ig_officer());
  // Two alerts: refused break-glass attempts, each naming its reason.
  for (int i = 0; i < 2; ++i) {
    audit::Record glass = read_of(test::nhs(46 + i), i);
    glass.status = 403;
    glass.detail.break_glass_reason = "emergency-care";
    REQUIRE(log.append_sync(glass).ok());
  }
  auto raised = log.alerts("open", 10);
  REQUIRE(raised.ok());
  REQUIRE(raised->size() == 2);
  const std::int64_t reviewed_id = raised->back().id, open_id = raised->front().id;
  const std::string review = "/audit/alerts/" + std::to_string(reviewed_id) + "/review";
  REQUIRE(request(s, "POST", review, ig, R"({"outcome":"referred","note":"asked the ward manager"})").status == 200);
  // Retention removes a prefix of the log: everything so far, both alerts' records included.
  auto pruned = log.prune_before(audit::now_ms() + 1000, "retention");
  REQUIRE(pruned.ok());
  REQUIRE(*pruned >= 3);
  audit::Query q;
  q.subtype = "retention-prune";
  auto prune_records = log.search(q);
  REQUIRE(prune_records.ok());
  REQUIRE(prune_records->records.size() == 1);
  const std::string placeholder = audit::retention_redaction(prune_records->records[0].time_ms);

  HttpResponse listed = get(s, "/audit/alerts?status=all", ig);
  REQUIRE(listed.status == 200);
  const fhir::Json body = json_of(listed);
  const auto& items = body.find("alerts")->items();
  REQUIRE(items.size() == 2);
  int seen = 0;
  for (const auto& al : items) {
    if (*al.find("id")->as_int64() == reviewed_id) {
      ++seen;
      const fhir::Json* redacted = al.find("redacted");
      CHECK((redacted != nullptr && redacted->as_bool()));
      CHECK(std::string(al.string_at("detail")) == placeholder);
      CHECK(std::string(al.string_at("note")) == placeholder);
      CHECK(std::string(al.string_at("status")) == "reviewed");
      CHECK(std::string(al.string_at("outcome")) == "referred");
      CHECK(std::string(al.string_at("reviewer")) == ig_officer().sub);
      CHECK(std::string(al.string_at("rule")) == "break-glass");
    } else {
      ++seen;
      CHECK(*al.find("id")->as_int64() == open_id);
      CHECK(al.find("redacted") == nullptr);
      CHECK(std::string(al.string_at("detail")) == "break-glass refused, reason emergency-care");
      CHECK(std::string(al.string_at("status")) == "open");
    }
  }
  CHECK(seen == 2);
  // A redacted alert was reviewed: it stays so.
  CHECK(request(s, "POST", review, ig, R"({"outcome":"appropriate"})").status == 409);
  // And the open one is still reviewable, its detail kept until a later prune.
  CHECK(request(s, "POST", "/audit/alerts/" + std::to_string(open_id) + "/review", ig, R"({"outcome":"appropriate"})")
            .status == 200);
  auto report = audit::verify_database(s.cfg.data_dir + "/audit.db", audit::VerifyOptions{});
  REQUIRE(report.ok());
  for (const auto& p : report->problems) {
    INFO(p.kind << ": " << p.text);
    CHECK(p.kind != "alert-mismatch");
  }
}
