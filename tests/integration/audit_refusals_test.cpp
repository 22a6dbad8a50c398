// SPDX-License-Identifier: Apache-2.0
// Issue #6 "one audit record for every request, allowed or denied" at the edges of the request
// path: requests the HTTP layer refuses before the pipeline (malformed, oversized, timed out),
// requests no route serves, rate-limited ones, and HEAD.
#include <doctest/doctest.h>

#include <map>

#include "fhir/query_string.h"
#include "support/audit_check.h"
#include "support/responses.h"
#include "support/seed.h"
#include "support/test_server.h"

using namespace gw;
using gw::test::HttpResponse;
using gw::test::json_of;
using gw::test::TestServer;
using gw::test::TokenClaims;

namespace {

HttpResponse one(TestServer& s, const std::string& bytes, const test::ClientOptions& opts) {
  auto ex = test::exchange(s.port(), bytes, 1, opts);
  REQUIRE_MESSAGE(ex.responses.size() == 1, ex.error);
  return ex.responses.front();
}

}  // namespace

TEST_CASE("Audit: requests the HTTP layer refuses (400, 408, 413, 431, plain HTTP) each leave one record") {
  TestServer s([](config::Config& c) {
    c.limits.max_header_bytes = 2048;
    c.limits.max_body_bytes = 1000;
    c.limits.read_timeout = std::chrono::milliseconds(300);
  });
  const std::string token = test::test_tokens().mint();
  const std::string signature = token.substr(token.rfind('.') + 1);
  const std::string padding = "X-Padding: " + std::string(4000, 'a') + "\r\n";
  std::vector<HttpResponse> sent;

  // 431: the headers never parse, so what is known comes from the request line; the token in
  // its query is redacted as in any record.
  HttpResponse big = one(s, "GET /Patient?family=Oversized&access_token=" + token + " HTTP/1.1\r\nHost: localhost\r\n" +
                                padding + "\r\n", s.client());
  CHECK(big.status == 431);
  sent.push_back(big);
  audit::Record r = test::audit_record_of(s, big);
  CHECK(r.status == 431);
  CHECK(r.method == "GET");
  CHECK(r.target.rfind("/Patient?family=Oversized&access_token=", 0) == 0);
  CHECK(r.target.find("[redacted]") != std::string::npos);
  CHECK(audit::encode(r).find(signature) == std::string::npos);
  CHECK(r.address == "127.0.0.1");
  CHECK(r.agent_kind == "anonymous");
  CHECK(r.route == "protocol_error");
  CHECK(r.outcome_text.find("headers exceed") != std::string::npos);

  // A request line longer than the audit keeps: cut back to its last delimiter, so that no
  // fragment of a value (a token the redaction would no longer recognise) is stored.
  HttpResponse long_line = one(s, "GET /Patient?family=" + std::string(6000, 'b') + "&x=1 HTTP/1.1\r\n\r\n", s.client());
  CHECK(long_line.status == 414);
  sent.push_back(long_line);
  r = test::audit_record_of(s, long_line);
  CHECK(r.target == "/Patient?family=");

  // 413: the header was parsed, so the client's X-Request-ID and the method are kept.
  HttpResponse too_big = one(s, "POST /$validate HTTP/1.1\r\nHost: localhost\r\nX-Request-ID: big-body-1\r\n"
                                "Content-Type: application/fhir+json\r\nContent-Length: 50000000\r\n\r\n", s.client());
  CHECK(too_big.status == 413);
  CHECK(too_big.header("x-request-id") == "big-body-1");
  sent.push_back(too_big);
  r = test::audit_record_of(s, too_big);
  CHECK(r.method == "POST");
  CHECK(r.target == "/$validate");

  // 400: a malformed header line; and a start line that is not HTTP at all.
  HttpResponse malformed = one(s, "GET /Patient HTTP/1.1\r\nHost: localhost\r\nBad Header Line\r\n\r\n", s.client());
  CHECK(malformed.status == 400);
  sent.push_back(malformed);
  CHECK(test::audit_record_of(s, malformed).outcome_text.find("Malformed HTTP request") != std::string::npos);
  HttpResponse garbage = one(s, std::string("\x01\x02 nonsense\x7f \r\n\r\n"), s.client());
  CHECK(garbage.status == 400);
  sent.push_back(garbage);
  r = test::audit_record_of(s, garbage);
  CHECK(r.method == "-");
  CHECK(r.target == "nonsense?");

  // 400: a target that is not a path.
  HttpResponse not_path = one(s, "GET patient HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", s.client());
  CHECK(not_path.status == 400);
  sent.push_back(not_path);
  CHECK(test::audit_record_of(s, not_path).target == "patient");

  // 408: the body never came.
  HttpResponse slow = one(s, "POST /$validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/fhir+json\r\n"
                             "Content-Length: 500\r\n\r\n{\"resourceType\":", s.client());
  CHECK(slow.status == 408);
  sent.push_back(slow);
  CHECK(test::audit_record_of(s, slow).method == "POST");

  // Plain HTTP on the TLS port.
  test::ClientOptions plain = s.client();
  plain.tls = false;
  HttpResponse cleartext = one(s, "GET /Patient HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", plain);
  CHECK(cleartext.status == 400);
  sent.push_back(cleartext);
  CHECK(test::audit_record_of(s, cleartext).target == "/Patient");

  CHECK(test::check_one_audit_record_each(s, sent) == sent.size());
  // A refused request's method is client input: metrics keep it out of their labels.
  CHECK(s.metrics().render().find("method=\"nonsense") == std::string::npos);
}

TEST_CASE("Audit: a valid token to a URL no route serves is audited under its user; a bad one as anonymous") {
  TestServer s;
  TokenClaims gp;
  gp.sub = "dr-probe";
  gp.role = "clinician";
  gp.org = "A81001";
  gp.client_id = "probe-client";
  const std::string auth = test::test_tokens().header(gp);
  std::vector<HttpResponse> sent;
  sent.push_back(test::get(s.port(), "/NoSuchType/1", s.client(), auth));
  sent.push_back(test::get(s.port(), "/admin/secrets", s.client(), auth));
  CHECK(sent[0].status == 404);
  CHECK(sent[1].status == 404);
  for (const auto& resp : sent) {
    audit::Record r = test::audit_record_of(s, resp);
    CHECK(r.agent_kind == "user");
    CHECK(r.user == "dr-probe");
    CHECK(r.role == "clinician");
    CHECK(r.organisation == "A81001");
    CHECK(r.client_id == "probe-client");
    CHECK(!r.token_id.empty());
    CHECK(r.status == 404);
  }
  // 405: a served URL with a method it does not take.
  HttpResponse wrong_method =
      one(s, "DELETE /AuditEvent HTTP/1.1\r\nHost: localhost\r\n" + auth + "Connection: close\r\n\r\n", s.client());
  CHECK(wrong_method.status == 405);
  sent.push_back(wrong_method);
  CHECK(test::audit_record_of(s, wrong_method).user == "dr-probe");
  // An invalid token proves nothing about who sent it.
  HttpResponse bad = test::get(s.port(), "/NoSuchType/1", s.client(), "Authorization: Bearer not.a.token\r\n");
  CHECK(bad.status == 404);
  sent.push_back(bad);
  audit::Record anon = test::audit_record_of(s, bad);
  CHECK(anon.agent_kind == "anonymous");
  CHECK(anon.user.empty());
  CHECK(test::check_one_audit_record_each(s, sent) == sent.size());
}

TEST_CASE("Audit: a rate-limited request (429) names the user whose token validated") {
  TestServer s([](config::Config& c) {
    c.auth.per_user.per_second = 0.05;
    c.auth.per_user.burst = 1;
  });
  TokenClaims c;
  c.sub = "dr-hasty";
  const std::string auth = test::test_tokens().header(c);
  REQUIRE(test::get(s.port(), "/Patient?family=X", s.client(), auth).status == 200);
  HttpResponse limited = test::get(s.port(), "/Patient?family=X", s.client(), auth);
  REQUIRE(limited.status == 429);
  audit::Record r = test::audit_record_of(s, limited);
  CHECK(r.status == 429);
  CHECK(r.user == "dr-hasty");
  CHECK(r.agent_kind == "user");
}

TEST_CASE("Audit: a HEAD request is recorded as HEAD, with the action of the GET it is routed as") {
  TestServer s;
  auto a = test::add_patient(s.locator(), 31, "Headcount", "A81001");
  const std::string auth = test::test_tokens().header();
  test::ClientOptions opts = s.client();
  opts.first_is_head = true;
  HttpResponse head = one(s, "HEAD /Patient/" + a.id + " HTTP/1.1\r\nHost: localhost\r\n" + auth +
                                 "Connection: close\r\n\r\n", opts);
  CHECK(head.status == 200);
  CHECK(head.body.empty());
  audit::Record r = test::audit_record_of(s, head);
  CHECK(r.method == "HEAD");
  CHECK(r.action == "read");
  CHECK(r.detail.returned == std::vector<std::string>{"Patient/" + a.id});
  CHECK(audit::to_audit_event(r, "test").string_at("action") == "R");
  // The access report reads it as a look at the record, as for GET.
  HttpResponse search = one(s, "HEAD /Patient?family=Headcount HTTP/1.1\r\nHost: localhost\r\n" + auth +
                                   "Connection: close\r\n\r\n", opts);
  CHECK(search.status == 200);
  audit::Record sr = test::audit_record_of(s, search);
  CHECK(sr.method == "HEAD");
  CHECK(sr.action == "search-type");
}

TEST_CASE("Audit: a refusal after the whole header set was parsed names the token's user and the route's action") {
  TestServer s([](config::Config& c) {
    c.limits.max_header_bytes = 2048;
    c.limits.max_body_bytes = 1000;
    c.limits.read_timeout = std::chrono::milliseconds(300);
  });
  TokenClaims gp;
  gp.sub = "dr-refused";
  gp.role = "clinician";
  gp.org = "A81001";
  const std::string auth = test::test_tokens().header(gp);
  std::vector<HttpResponse> sent;
  auto named = [&](const HttpResponse& resp) {
    audit::Record r = test::audit_record_of(s, resp);
    CHECK(r.agent_kind == "user");
    CHECK(r.user == "dr-refused");
    CHECK(r.organisation == "A81001");
    return r;
  };

  // 413: Beast refuses the Content-Length once every field is in.
  HttpResponse too_big = one(s, "POST /Patient/_search HTTP/1.1\r\nHost: localhost\r\n" + auth +
                                    "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 99999999\r\n\r\n",
                             s.client());
  CHECK(too_big.status == 413);
  sent.push_back(too_big);
  audit::Record r = named(too_big);
  CHECK(r.action == "search-type");  // the route's, not "create" for a POST
  CHECK(r.route == "protocol_error");

  // 408: the header came whole, the body did not.
  HttpResponse slow = one(s, "POST /Patient/_search HTTP/1.1\r\nHost: localhost\r\n" + auth +
                                 "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 500\r\n\r\nfamily=",
                          s.client());
  CHECK(slow.status == 408);
  sent.push_back(slow);
  CHECK(named(slow).action == "search-type");

  // 400: a path that does not percent-decode.
  HttpResponse bad_path =
      one(s, "GET /Patient%ZZ/1 HTTP/1.1\r\nHost: localhost\r\n" + auth + "Connection: close\r\n\r\n", s.client());
  CHECK(bad_path.status == 400);
  sent.push_back(bad_path);
  CHECK(named(bad_path).action == "read");

  // No whole header set, no name: a 431, and a malformed header line after a valid token.
  HttpResponse big = one(s, "GET /Patient?family=X HTTP/1.1\r\nHost: localhost\r\n" + auth + "X-Padding: " +
                                std::string(4000, 'a') + "\r\n\r\n", s.client());
  CHECK(big.status == 431);
  sent.push_back(big);
  CHECK(test::audit_record_of(s, big).agent_kind == "anonymous");
  HttpResponse malformed =
      one(s, "GET /Patient HTTP/1.1\r\nHost: localhost\r\n" + auth + "Bad Header Line\r\n\r\n", s.client());
  CHECK(malformed.status == 400);
  sent.push_back(malformed);
  audit::Record anon = test::audit_record_of(s, malformed);
  CHECK(anon.agent_kind == "anonymous");
  CHECK(anon.user.empty());

  CHECK(test::check_one_audit_record_each(s, sent) == sent.size());
}

TEST_CASE("Audit: a request target that is not ASCII is refused (400) and audited escaped, never as broken text") {
  TestServer s;
  TokenClaims ig;
  ig.sub = "ig-jones";
  ig.role = "ig-officer";
  ig.org = "X26";
  ig.scope = "user/AuditEvent.rs";
  const std::string ig_auth = test::test_tokens().header(ig);
  std::vector<HttpResponse> sent;
  auto send_target = [&](const std::string& target, const std::string& auth) {
    HttpResponse r = one(s, "GET " + target + " HTTP/1.1\r\nHost: localhost\r\n" + auth + "Connection: close\r\n\r\n",
                         s.client());
    sent.push_back(r);
    return r;
  };

  // Anonymous, 4098 bytes, with "é" across bytes 4095-4096, where the audit's 4096-byte cut falls.
  const std::string prefix = "/Patient?family=";
  const std::string cut_across = prefix + std::string(4095 - prefix.size(), 'a') + "\xC3\xA9" + "b";
  REQUIRE(cut_across.size() == 4098);
  HttpResponse across = send_target(cut_across, "");
  CHECK(across.status == 400);
  CHECK(test::issue_code(across) == "invalid");
  audit::Record r = test::audit_record_of(s, across);
  CHECK(r.agent_kind == "anonymous");
  CHECK(r.route == "protocol_error");
  CHECK(r.target.size() <= 4096);
  CHECK(r.target.rfind(prefix + "aaaa", 0) == 0);
  CHECK(fhir::is_valid_utf8(audit::encode(r)));

  // Short ones, with a token: the escaped bytes are what the record keeps.
  const std::string auth = test::test_tokens().header();
  HttpResponse accented = send_target("/Patient?family=Ord\xC3\xB3\xC3\xB1" "ez", auth);
  REQUIRE(accented.status == 400);
  CHECK(json_of(accented).find("issue")->items().at(0).string_at("diagnostics") ==
        "The request target must be visible ASCII (RFC 9112 section 3.2); percent-encode other characters as UTF-8 "
        "bytes, e.g. %C3%A9");
  audit::Record named = test::audit_record_of(s, accented);
  CHECK(named.target == "/Patient?family=Ord%C3%B3%C3%B1ez");
  CHECK(named.user == test::TokenClaims().sub);
  HttpResponse lone = send_target("/Patient?family=a\xC3", auth);
  CHECK(lone.status == 400);
  CHECK(test::audit_record_of(s, lone).target == "/Patient?family=a%C3");
  HttpResponse in_path = send_target("/Patient/\xC3\xA9", auth);
  CHECK(in_path.status == 400);
  CHECK(test::audit_record_of(s, in_path).target == "/Patient/%C3%A9");
  // The same text percent-encoded is an ordinary search.
  CHECK(test::get(s.port(), "/Patient?family=Ord%C3%B3%C3%B1ez", s.client(), auth).status == 200);

  // Every IG read covering these records still answers.
  for (const std::string& t : {std::string("/AuditEvent?_count=100"),
                               std::string("/AuditEvent/$export?start=2020-01-01&end=2999-12-31"),
                               "/AuditEvent/" + std::to_string(r.seq)}) {
    CAPTURE(t);
    HttpResponse read = test::get(s.port(), t, s.client(), ig_auth);
    CHECK(read.status == 200);
  }
  CHECK(test::check_one_audit_record_each(s, sent) == sent.size());
}
