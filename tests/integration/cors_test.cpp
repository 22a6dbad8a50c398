// SPDX-License-Identifier: Apache-2.0
// CORS for browser apps on the origins listed in [server.cors]: preflights answered (and
// audited), actual responses readable by those origins only, nothing when none is listed.
#include <doctest/doctest.h>

#include "support/audit_check.h"
#include "support/responses.h"
#include "support/test_server.h"

using namespace gw;
using gw::test::HttpResponse;
using gw::test::TestServer;

namespace {

constexpr const char* kApp = "https://app.example.nhs.uk";

HttpResponse one(TestServer& s, const std::string& bytes) {
  auto ex = test::exchange(s.port(), bytes, 1, s.client());
  REQUIRE_MESSAGE(ex.responses.size() == 1, ex.error);
  return ex.responses.front();
}

// What a browser sends before a GET with a bearer token.
std::string preflight(const std::string& origin, const std::string& target = "/Patient/abc") {
  return "OPTIONS " + target + " HTTP/1.1\r\nHost: localhost\r\nOrigin: " + origin +
         "\r\nAccess-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: authorization\r\n"
         "Connection: close\r\n\r\n";
}

}  // namespace

TEST_CASE("CORS: a preflight from a listed origin gets 204 with what the API allows, and is audited") {
  TestServer s([](config::Config& c) { c.cors.allowed_origins = {kApp, "http://localhost:3000"}; });
  HttpResponse r = one(s, preflight(kApp));
  CHECK(r.status == 204);
  CHECK(r.body.empty());
  CHECK(r.header("access-control-allow-origin") == kApp);
  CHECK(r.header("access-control-allow-methods").find("GET") != std::string::npos);
  CHECK(r.header("access-control-allow-methods").find("PUT") != std::string::npos);
  for (const char* h : {"Authorization", "Content-Type", "Prefer", "If-Match", "X-Request-ID",
                        "X-Break-Glass-Reason", "X-Break-Glass-Justification"})
    CHECK_MESSAGE(r.header("access-control-allow-headers").find(h) != std::string::npos, h);
  CHECK(r.header("access-control-max-age") == "600");
  CHECK(r.header("vary") == "Origin");
  CHECK(r.header("access-control-allow-credentials").empty());  // bearer tokens need no credentials mode
  // Every request leaves one record (issue #6): a preflight too, anonymous, as "capabilities".
  auto recs = test::audit_records_of(s, r);
  REQUIRE(recs.size() == 1);
  CHECK(recs[0].method == "OPTIONS");
  CHECK(recs[0].status == 204);
  CHECK(recs[0].route == "cors_preflight");
  CHECK(recs[0].action == "capabilities");
  CHECK(recs[0].agent_kind == "anonymous");
  CHECK(recs[0].detail.patients.empty());
  // Which site asked, for the IG officer.
  CHECK(recs[0].detail.note == "CORS preflight from Origin \"https://app.example.nhs.uk\" for GET");
  CHECK(s.metrics().render().find("route=\"cors_preflight\"") != std::string::npos);
}

TEST_CASE("CORS: an origin not listed gets 403 on its preflight and no CORS headers on its requests") {
  TestServer s([](config::Config& c) { c.cors.allowed_origins = {kApp}; });
  for (const std::string origin : {"https://evil.example", "https://app.example.nhs.uk:8443", "null"}) {
    CAPTURE(origin);
    HttpResponse r = one(s, preflight(origin));
    CHECK(r.status == 403);
    CHECK(test::issue_code(r) == "forbidden");
    CHECK(r.body.find("Cross-origin requests from this origin are not allowed") != std::string::npos);
    CHECK(r.header("access-control-allow-origin").empty());
    auto recs = test::audit_records_of(s, r);
    REQUIRE(recs.size() == 1);
    CHECK(recs[0].detail.note == "CORS preflight from Origin \"" + origin + "\" for GET");
    HttpResponse get = test::get(s.port(), "/metadata", s.client(), "Origin: " + origin + "\r\n");
    CHECK(get.status == 200);
    CHECK(get.header("access-control-allow-origin").empty());
    CHECK(get.header("vary") == "Origin");
  }
}

TEST_CASE("CORS: responses to a listed origin carry Allow-Origin and expose Location, ETag, X-Request-ID") {
  TestServer s([](config::Config& c) { c.cors.allowed_origins = {kApp}; });
  const std::string origin = std::string("Origin: ") + kApp + "\r\n";
  // An open route, an authenticated answer and a refusal (401): the page can read each.
  HttpResponse meta = test::get(s.port(), "/metadata", s.client(), origin);
  HttpResponse read = test::get(s.port(), "/Patient/unknown-id", s.client(), origin + test::test_tokens().header());
  HttpResponse refused = test::get(s.port(), "/Patient/unknown-id", s.client(), origin);
  CHECK(meta.status == 200);
  CHECK(read.status == 404);
  CHECK(refused.status == 401);
  for (const HttpResponse* r : {&meta, &read, &refused}) {
    CHECK(r->header("access-control-allow-origin") == kApp);
    CHECK(r->header("vary") == "Origin");
    const std::string expose = r->header("access-control-expose-headers");
    for (const char* h : {"Location", "ETag", "Last-Modified", "X-Request-ID", "WWW-Authenticate"})
      CHECK_MESSAGE(expose.find(h) != std::string::npos, h);
  }
  // A request the HTTP layer refuses (here a Host missing) is readable too.
  HttpResponse bad = one(s, std::string("GET /metadata HTTP/1.1\r\nOrigin: ") + kApp + "\r\n\r\n");
  CHECK(bad.status == 400);
  CHECK(bad.header("access-control-allow-origin") == kApp);
}

TEST_CASE("CORS: with no origin listed (the default) nothing changes but the preflight's clear refusal") {
  TestServer s;
  HttpResponse get = test::get(s.port(), "/metadata", s.client(), std::string("Origin: ") + kApp + "\r\n");
  CHECK(get.status == 200);
  CHECK(get.header("access-control-allow-origin").empty());
  CHECK(get.header("vary").empty());
  HttpResponse pre = one(s, preflight(kApp));
  CHECK(pre.status == 403);
  CHECK(pre.header("access-control-allow-origin").empty());
  // An OPTIONS that is no preflight is routed as before: 405 naming the methods allowed.
  HttpResponse plain = one(s, "OPTIONS /metadata HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
  CHECK(plain.status == 405);
  CHECK(plain.header("allow") == "GET");
}

TEST_CASE("CORS: a preflight or request with two Origin headers is not allowed for either") {
  TestServer s([](config::Config& c) { c.cors.allowed_origins = {kApp}; });
  // Listed first or second: RFC 6454 7.3 allows one Origin, and the first must not decide.
  for (const std::string& origins : {std::string(kApp) + "\r\nOrigin: https://evil.example",
                                    "https://evil.example\r\nOrigin: " + std::string(kApp),
                                    std::string(kApp) + "\r\nOrigin: " + kApp}) {
    CAPTURE(origins);
    HttpResponse r = one(s, preflight(origins));
    CHECK(r.status == 400);
    CHECK(test::issue_code(r) == "invalid");
    CHECK(r.body.find("at most one Origin header") != std::string::npos);
    CHECK(r.header("access-control-allow-origin").empty());
    auto recs = test::audit_records_of(s, r);
    REQUIRE(recs.size() == 1);
    CHECK(recs[0].status == 400);
    CHECK(recs[0].detail.note.find("refused: more than one Origin") != std::string::npos);
    HttpResponse get = test::get(s.port(), "/metadata", s.client(), "Origin: " + origins + "\r\n");
    CHECK(get.status == 200);
    CHECK(get.header("access-control-allow-origin").empty());
  }
  // Bytes outside visible ASCII in Origin are not written into the record as they came.
  HttpResponse odd = one(s, preflight("https://a.example\xc3\xa9"));
  CHECK(odd.status == 403);
  auto recs = test::audit_records_of(s, odd);
  REQUIRE(recs.size() == 1);
  CHECK(recs[0].detail.note == "CORS preflight from Origin \"https://a.example??\" for GET");
}
