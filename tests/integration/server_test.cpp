// SPDX-License-Identifier: Apache-2.0
// The real server over real TLS on an ephemeral loopback port.
#include <doctest/doctest.h>
#include <set>

#include <openssl/ssl.h>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "fhir/bundle.h"
#include "fhir/element_check.h"
#include "fhir/json.h"
#include "support/certs.h"
#include "support/responses.h"
#include "support/test_server.h"

using namespace gw;
using gw::test::HttpResponse;
using gw::test::issue_code;
using gw::test::json_of;
using gw::test::TestServer;

namespace {

// Asserts an OperationOutcome with the given issue code and diagnostics fragment.
void check_outcome(const HttpResponse& r, int status, std::string_view code, std::string_view fragment) {
  CHECK(r.status == status);
  CHECK(r.header("content-type") == "application/fhir+json; charset=utf-8");
  fhir::Json oo = json_of(r);
  CHECK(oo.string_at("resourceType") == "OperationOutcome");
  const fhir::Json& issue = oo.find("issue")->items().at(0);
  CHECK(issue.string_at("code") == code);
  CHECK_MESSAGE(issue.string_at("diagnostics").find(fragment) != std::string::npos, issue.string_at("diagnostics"));
  // Every error names its NHS Spine error code, as NHS England APIs do (CONVENTIONS.md 1.1).
  const fhir::Json* details = issue.find("details");
  REQUIRE_MESSAGE(details != nullptr, "no issue.details on a " << status);
  const fhir::Json& coding = details->find("coding")->items().at(0);
  CHECK(coding.string_at("system") == fhir::kSpineErrorSystem);
  CHECK(!coding.string_at("code").empty());
}

std::string post(const std::string& target, const std::string& body, const std::string& type = "application/fhir+json") {
  return "POST " + target + " HTTP/1.1\r\nHost: localhost\r\n" + test::test_tokens().header() + "Content-Type: " + type +
         "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
}

// Test-only routes: a search route exercising the real parser, a slow route for draining and
// a route echoing the verified client certificate subject.
void test_routes(http::Router& router, fhir::SearchParamRegistry& params) {
  params.add("Basic", {"created", fhir::SearchParamType::date, "", ""});
  params.add("Basic", {"identifier", fhir::SearchParamType::token, "", ""});
  params.add("Basic", {"author", fhir::SearchParamType::string, "", ""});
  http::RouteOptions search;
  search.access = http::Access::open;  // exercises the search parser only; no data
  search.resource_type = "Basic";
  search.interaction = "search-type";
  router.add("GET", "/Basic", [&params](http::Request& req) -> boost::asio::awaitable<http::Response> {
    auto parsed = fhir::parse_search("Basic", *req.query, params, fhir::handling_from_prefer(req.header("prefer")));
    if (!parsed) co_return http::error_response(parsed.issue());
    fhir::SearchsetPage page;
    page.total = 0;
    co_return http::fhir_response(200, fhir::make_searchset("https://localhost:8443", *parsed, std::move(page), 0));
  }, search);
  http::RouteOptions plain;
  plain.access = http::Access::open;
  plain.fhir = false;
  router.add("GET", "/test/slow", [](http::Request&) -> boost::asio::awaitable<http::Response> {
    boost::asio::steady_timer t(co_await boost::asio::this_coro::executor, std::chrono::milliseconds(400));
    co_await t.async_wait(boost::asio::use_awaitable);
    co_return http::text_response(200, "text/plain", "slow done");
  }, plain);
  router.add("GET", "/test/whoami", [](http::Request& req) -> boost::asio::awaitable<http::Response> {
    co_return http::text_response(200, "text/plain", req.client_certificate_subject);
  }, plain);
}

}  // namespace

TEST_CASE("Server: GET /metadata over TLS returns a generated CapabilityStatement") {
  TestServer s({}, test_routes);
  HttpResponse r = test::get(s.port(), "/metadata", s.client());
  REQUIRE(r.status == 200);
  CHECK(r.header("content-type") == "application/fhir+json; charset=utf-8");
  fhir::Json cs = json_of(r);
  CHECK(cs.string_at("resourceType") == "CapabilityStatement");
  CHECK(cs.string_at("fhirVersion") == "4.0.1");
  const fhir::Json* basic = nullptr;
  for (const auto& res : cs.find("rest")->items().at(0).find("resource")->items())
    if (res.string_at("type") == "Basic") basic = &res;
  REQUIRE(basic);  // the test route, declared through the route table
  CHECK(basic->find("searchParam")->items().size() == 3);
}

TEST_CASE("Server: GET /metadata passes the gateway's own $validate checks, operations with their definitions") {
  TestServer s;  // the real route table: audit operations included
  HttpResponse r = test::get(s.port(), "/metadata", s.client());
  REQUIRE(r.status == 200);
  fhir::Json cs = json_of(r);
  REQUIRE(fhir::elements_known("CapabilityStatement"));
  for (const fhir::Issue& i : fhir::check_structure_and_elements(cs, "CapabilityStatement"))
    FAIL_CHECK(i.expression << ": " << i.diagnostics);
  std::set<std::string> operations;
  for (const auto& res : cs.find("rest")->items().at(0).find("resource")->items())
    if (const fhir::Json* ops = res.find("operation"))
      for (const auto& op : ops->items()) {
        operations.insert(std::string(res.string_at("type")) + "/$" + std::string(op.string_at("name")));
        CHECK(op.string_at("definition").rfind("http", 0) == 0);
      }
  CHECK(operations.count("AuditEvent/$access-report") == 1);
  CHECK(operations.count("AuditEvent/$export") == 1);
}

TEST_CASE("Server: X-Request-ID is mirrored, or generated as a UUID when absent") {
  TestServer s;
  HttpResponse mirrored = test::get(s.port(), "/healthz", s.client(), "X-Request-ID: 1b4e28ba-2fa1-11d2-883f-0016d3cca427\r\nX-Correlation-ID: corr-7\r\n");
  CHECK(mirrored.header("x-request-id") == "1b4e28ba-2fa1-11d2-883f-0016d3cca427");
  CHECK(mirrored.header("x-correlation-id") == "corr-7");
  HttpResponse generated = test::get(s.port(), "/healthz", s.client());
  std::string id = generated.header("x-request-id");
  REQUIRE(id.size() == 36);
  CHECK(id[14] == '4');  // version 4
  HttpResponse unsafe = test::get(s.port(), "/healthz", s.client(), "X-Request-ID: <script>\r\n");
  CHECK(unsafe.header("x-request-id") != "<script>");
}

TEST_CASE("Server: malformed HTTP gets 400 with an OperationOutcome and the connection closes") {
  TestServer s;
  auto ex = test::exchange(s.port(), "GET / HTTP/1.1\r\nHost: localhost\r\nBad Header Line\r\n\r\n", 1, s.client());
  REQUIRE(ex.responses.size() == 1);
  check_outcome(ex.responses[0], 400, "invalid", "Malformed HTTP request");
  CHECK(ex.peer_closed);
  auto garbage = test::exchange(s.port(), std::string("\x01\x02 nonsense \r\n\r\n", 16), 1, s.client());
  REQUIRE(garbage.responses.size() == 1);
  CHECK(garbage.responses[0].status == 400);
  CHECK(s.metrics().render().find("gateway_protocol_errors_total{kind=\"malformed_http\"} 2") != std::string::npos);
}

TEST_CASE("Server: a Transfer-Encoding other than one chunked coding gets 400 and closes, so its body is no request") {
  TestServer s;
  // Two responses are asked for: the second read ends with the connection instead.
  auto closed = [](const test::Exchange& ex) { return ex.error.rfind("read: ", 0) == 0; };
  // The body is itself a request: answering it would be request smuggling (RFC 9112 6.3).
  const std::string smuggled = "GET /healthz?smuggled=1 HTTP/1.1\r\nHost: localhost\r\n\r\n";
  // "chunked, chunked" ends in chunked, but the parser frames it as no body (chunked is never
  // applied twice, RFC 9112 6.1): its chunked body would be read as a request.
  for (const std::string te : {"chunked, identity", "xchunked", "gzip", "identity", "chunked, chunked", "gzip, chunked",
                               "chunked,", "chunked\r\nTransfer-Encoding: chunked", "gzip\r\nTransfer-Encoding: chunked",
                               "identity\r\nTransfer-Encoding: chunked"}) {
    CAPTURE(te);
    auto ex = test::exchange(s.port(),
                             "POST /Patient/_search HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: " + te +
                                 "\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n" + smuggled,
                             2, s.client());
    REQUIRE_MESSAGE(ex.responses.size() == 1, ex.error);
    CHECK(ex.responses[0].status == 400);
    CHECK(ex.responses[0].header("connection") == "close");
    CHECK_MESSAGE(closed(ex), ex.error);
  }
  // The reviewer's case: a chunked body under "chunked, chunked" is one 400 and a close.
  for (const std::string te : {"chunked, chunked", "chunked ,chunked", "CHUNKED, Chunked"}) {
    CAPTURE(te);
    auto ex = test::exchange(s.port(),
                             "POST /Patient/_search HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: " + te +
                                 "\r\n\r\n0\r\n\r\n" + smuggled,
                             2, s.client());
    REQUIRE_MESSAGE(ex.responses.size() == 1, ex.error);
    check_outcome(ex.responses[0], 400, "invalid", "Transfer-Encoding must be exactly \"chunked\"");
    CHECK(ex.responses[0].header("connection") == "close");
    CHECK_MESSAGE(closed(ex), ex.error);
  }
  // Transfer-Encoding with Content-Length, in either order, and Transfer-Encoding in HTTP/1.0.
  for (const std::string head : {"Transfer-Encoding: gzip\r\nContent-Length: 5\r\n",
                                 "Content-Length: 5\r\nTransfer-Encoding: gzip\r\n",
                                 "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"}) {
    CAPTURE(head);
    auto ex = test::exchange(s.port(), "POST /$validate HTTP/1.1\r\nHost: localhost\r\n" + head + "\r\nabcde" +
                                           smuggled, 2, s.client());
    REQUIRE_MESSAGE(ex.responses.size() == 1, ex.error);
    CHECK(ex.responses[0].status == 400);
    CHECK_MESSAGE(closed(ex), ex.error);
  }
  auto old = test::exchange(s.port(), "POST /$validate HTTP/1.0\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
                                      "0\r\n\r\n" + smuggled, 2, s.client());
  REQUIRE_MESSAGE(old.responses.size() == 1, old.error);
  check_outcome(old.responses[0], 400, "invalid", "in HTTP/1.1");
  CHECK_MESSAGE(closed(old), old.error);
  // Some are refused by the parser itself (two "chunked" lines, Content-Length beside chunked):
  // malformed, not counted here; all 17 are one or the other.
  const std::string metrics = s.metrics().render();
  CHECK_MESSAGE(metrics.find("gateway_protocol_errors_total{kind=\"bad_transfer_encoding\"} 10") != std::string::npos,
                metrics);
  CHECK_MESSAGE(metrics.find("gateway_protocol_errors_total{kind=\"malformed_http\"} 7") != std::string::npos, metrics);
  // A chunked body alone is fine, in any case and with whitespace around it.
  for (const std::string te : {"chunked", "Chunked", "  CHUNKED\t"}) {
    CAPTURE(te);
    auto one = test::exchange(s.port(), "POST /$validate HTTP/1.1\r\nHost: localhost\r\n" + test::test_tokens().header() +
                                            "Transfer-Encoding: " + te + "\r\nContent-Type: application/fhir+json\r\n\r\n"
                                            "1a\r\n{\"resourceType\":\"Patient\"}\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\n"
                                            "Host: localhost\r\nConnection: close\r\n\r\n", 2, s.client());
    REQUIRE_MESSAGE(one.responses.size() == 2, one.error);
    CHECK(one.responses[0].status == 200);
    CHECK(one.responses[1].status == 200);
  }
  auto chunked = test::exchange(s.port(), "POST /$validate HTTP/1.1\r\nHost: localhost\r\n" + test::test_tokens().header() +
                                          "Transfer-Encoding: chunked\r\nContent-Type: application/fhir+json\r\nConnection: close\r\n\r\n"
                                          "1a\r\n{\"resourceType\":\"Patient\"}\r\n0\r\n\r\n", 1, s.client());
  REQUIRE_MESSAGE(chunked.responses.size() == 1, chunked.error);
  CHECK(chunked.responses[0].status == 200);
}

TEST_CASE("Server: more than one Host, an invalid Host, or none in HTTP/1.1 gets 400 and closes; HTTP/1.0 may omit it") {
  TestServer s;
  for (const std::string version : {"1.1", "1.0"}) {
    for (const std::string head : {"Host: localhost\r\nHost: other\r\n", "Host: localhost\r\nHost: localhost\r\n"}) {
      CAPTURE(version);
      CAPTURE(head);
      auto ex = test::exchange(s.port(), "GET /healthz HTTP/" + version + "\r\n" + head + "\r\n", 1, s.client());
      REQUIRE_MESSAGE(ex.responses.size() == 1, ex.error);
      check_outcome(ex.responses[0], 400, "invalid", "at most one Host header");
      CHECK(ex.peer_closed);
    }
    // Not a uri-host[:port] (RFC 9112 3.2): whitespace, userinfo, a path, a list, bad %-escape or port.
    for (const std::string host : {"a b", "u@a", "a, b", "a/b", "a\tb", "a:80x", "a:8:8", "%zz", "[::1", "[]", "a?b",
                                   "a#b", "\"a\"", "a\\b"}) {
      CAPTURE(version);
      CAPTURE(host);
      auto ex = test::exchange(s.port(), "GET /healthz HTTP/" + version + "\r\nHost: " + host + "\r\n\r\n", 1, s.client());
      REQUIRE_MESSAGE(ex.responses.size() == 1, ex.error);
      check_outcome(ex.responses[0], 400, "invalid", "Host header must be a host name");
      CHECK(ex.peer_closed);
    }
  }
  auto none = test::exchange(s.port(), "GET /healthz HTTP/1.1\r\n\r\n", 1, s.client());
  REQUIRE_MESSAGE(none.responses.size() == 1, none.error);
  check_outcome(none.responses[0], 400, "invalid", "an HTTP/1.1 request exactly one");
  CHECK(none.peer_closed);
  auto old = test::exchange(s.port(), "GET /healthz HTTP/1.0\r\n\r\n", 1, s.client());
  REQUIRE_MESSAGE(old.responses.size() == 1, old.error);
  CHECK(old.responses[0].status == 200);
  for (const std::string host : {"localhost", "localhost:8443", "127.0.0.1:1", "[::1]:8443", "[v1.x]", "a-b.example.nhs.uk",
                                 "xn--bcher-kva.example", "%41", "a:", ""}) {
    CAPTURE(host);
    auto ok = test::exchange(s.port(), "GET /healthz HTTP/1.1\r\nHost: " + host + "\r\n\r\n", 1, s.client());
    REQUIRE_MESSAGE(ok.responses.size() == 1, ok.error);
    CHECK(ok.responses[0].status == 200);
  }
}

TEST_CASE("Server: oversized headers get 431") {
  TestServer s([](config::Config& c) { c.limits.max_header_bytes = 2048; });
  std::string big = "X-Padding: " + std::string(4000, 'a') + "\r\n";
  auto ex = test::exchange(s.port(), "GET /healthz HTTP/1.1\r\nHost: localhost\r\n" + big + "\r\n", 1, s.client());
  REQUIRE(ex.responses.size() == 1);
  check_outcome(ex.responses[0], 431, "too-costly", "headers exceed");
}

TEST_CASE("Server: max_header_bytes is exact: a header section of that size is served, one byte more gets 431") {
  TestServer s([](config::Config& c) { c.limits.max_header_bytes = 4096; });
  // A request whose header section (request line to the blank line) is `total` bytes.
  auto request = [](std::size_t total) {
    const std::string start = "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-A: ";
    const std::string end = "\r\n\r\n";
    return start + std::string(total - start.size() - end.size(), 'a') + end;
  };
  REQUIRE(request(4096).size() == 4096);
  auto exact = test::exchange(s.port(), request(4096), 1, s.client());
  REQUIRE_MESSAGE(exact.responses.size() == 1, exact.error);
  CHECK(exact.responses[0].status == 200);
  auto over = test::exchange(s.port(), request(4097), 1, s.client());
  REQUIRE_MESSAGE(over.responses.size() == 1, over.error);
  check_outcome(over.responses[0], 431, "too-costly", "headers exceed");
  CHECK(over.peer_closed);
  // Several fields, each well under the limit, read in more than one piece: the parser takes
  // whole fields as they come, and the limit still counts them all (the reviewer's 2 x 3000).
  auto two = test::exchange(s.port(), "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-A: " + std::string(3000, 'a') +
                                          "\r\nX-B: " + std::string(3000, 'b') + "\r\n\r\n", 1, s.client());
  REQUIRE_MESSAGE(two.responses.size() == 1, two.error);
  check_outcome(two.responses[0], 431, "too-costly", "headers exceed");
  // A long request line counts too: 3000 bytes of line and 2000 of fields are over 4096.
  auto line = test::exchange(s.port(), "GET /healthz?x=" + std::string(3000, 'a') + " HTTP/1.1\r\nHost: localhost\r\nX-A: " +
                                           std::string(2000, 'a') + "\r\n\r\n", 1, s.client());
  REQUIRE_MESSAGE(line.responses.size() == 1, line.error);
  check_outcome(line.responses[0], 431, "too-costly", "headers exceed");
  // Under the limit, a pipelined second request is parsed from the same buffer as before.
  auto pipelined = test::exchange(s.port(), request(2000) + request(4096), 2, s.client());
  REQUIRE_MESSAGE(pipelined.responses.size() == 2, pipelined.error);
  CHECK(pipelined.responses[0].status == 200);
  CHECK(pipelined.responses[1].status == 200);
}

TEST_CASE("Server: a request line longer than the header limit gets 414, not 431") {
  TestServer s([](config::Config& c) { c.limits.max_header_bytes = 2048; });
  auto ex = test::exchange(s.port(), "GET /Patient?family=" + std::string(4000, 'a') + " HTTP/1.1\r\nHost: localhost\r\n\r\n",
                           1, s.client());
  REQUIRE_MESSAGE(ex.responses.size() == 1, ex.error);
  check_outcome(ex.responses[0], 414, "too-costly", "request URL exceeds");
  CHECK(ex.peer_closed);
  CHECK(s.metrics().render().find("gateway_protocol_errors_total{kind=\"uri_too_long\"} 1") != std::string::npos);
}

TEST_CASE("Server: an oversized body gets 413 before the body is read") {
  TestServer s([](config::Config& c) { c.limits.max_body_bytes = 1000; });
  std::string head = "POST /$validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/fhir+json\r\n"
                     "Content-Length: 50000000\r\n\r\n";
  auto ex = test::exchange(s.port(), head, 1, s.client());
  REQUIRE(ex.responses.size() == 1);
  check_outcome(ex.responses[0], 413, "too-costly", "body exceeds");
}

TEST_CASE("Server: a Content-Length far larger than the body gets 408 after the read timeout") {
  TestServer s([](config::Config& c) { c.limits.read_timeout = std::chrono::milliseconds(300); });
  std::string req = "POST /$validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/fhir+json\r\n"
                    "Content-Length: 5000\r\n\r\n{\"resourceType\":";
  auto ex = test::exchange(s.port(), req, 1, s.client());
  REQUIRE_MESSAGE(ex.responses.size() == 1, ex.error);
  check_outcome(ex.responses[0], 408, "timeout", "not received completely");
  CHECK(ex.peer_closed);
}

TEST_CASE("Server: bad JSON, JSON nested 10,000 deep and a wrong Content-Type are refused") {
  TestServer s;
  auto bad = test::exchange(s.port(), post("/Patient/$validate", "{\"resourceType\": \"Patient\",}"), 1, s.client());
  REQUIRE(bad.responses.size() == 1);
  check_outcome(bad.responses[0], 400, "structure", "not valid JSON");

  std::string deep = std::string(10000, '[') + std::string(10000, ']');
  auto nested = test::exchange(s.port(), post("/$validate", deep), 1, s.client());
  REQUIRE(nested.responses.size() == 1);
  check_outcome(nested.responses[0], 400, "structure", "nesting deeper than");

  auto xml = test::exchange(s.port(), post("/$validate", "<Patient/>", "application/fhir+xml"), 1, s.client());
  REQUIRE(xml.responses.size() == 1);
  check_outcome(xml.responses[0], 415, "not-supported", "application/fhir+xml");
}

TEST_CASE("Server: $validate reports structural problems and passes a good resource") {
  TestServer s;
  auto good = test::exchange(s.port(), post("/Patient/$validate", R"({"resourceType":"Patient","id":"a"})"), 1, s.client());
  REQUIRE(good.responses.size() == 1);
  CHECK(good.responses[0].status == 200);
  CHECK(json_of(good.responses[0]).find("issue")->items().at(0).string_at("severity") == "information");
  auto bad = test::exchange(s.port(), post("/Patient/$validate", R"({"resourceType":"Patient","gender":""})"), 1, s.client());
  REQUIRE(bad.responses.size() == 1);
  fhir::Json oo = json_of(bad.responses[0]);
  CHECK(oo.find("issue")->items().at(0).string_at("severity") == "error");
  CHECK(oo.find("issue")->items().at(0).find("expression")->items().at(0).text() == "Patient.gender");
}

TEST_CASE("Server: $validate reports element problems (unknown element, wrong JSON type, bad code) with their paths") {
  TestServer s;
  const char* body = R"({"resourceType":"Observation","id":"o1","status":12345,"code":"notacodeableconcept",
                         "valueQuantity":{"value":"seventy"},"bogusElement":true})";
  for (const char* path : {"/Observation/$validate", "/$validate"}) {
    auto ex = test::exchange(s.port(), post(path, body), 1, s.client());
    REQUIRE(ex.responses.size() == 1);
    CHECK(ex.responses[0].status == 200);
    fhir::Json oo = json_of(ex.responses[0]);
    std::set<std::string> errors;
    for (const fhir::Json& issue : oo.find("issue")->items()) {
      CHECK(issue.string_at("severity") == "error");
      errors.insert(issue.find("expression")->items().at(0).text());
    }
    CHECK(errors == std::set<std::string>{"Observation.status", "Observation.code", "Observation.valueQuantity.value",
                                          "Observation.bogusElement"});
  }
  // a valid Observation: information only, and it says the elements were checked
  auto good = test::exchange(s.port(), post("/Observation/$validate",
                                            R"({"resourceType":"Observation","status":"final","code":{"text":"pulse"},
                                                "valueQuantity":{"value":72,"unit":"/min"}})"),
                             1, s.client());
  REQUIRE(good.responses.size() == 1);
  const fhir::Json good_oo = json_of(good.responses[0]);
  const fhir::Json& info = good_oo.find("issue")->items().at(0);
  CHECK(info.string_at("severity") == "information");
  CHECK(std::string(info.string_at("diagnostics")).find("elements (names, JSON types") != std::string::npos);
  // a type outside the element table: structure only, and it says so
  auto other = test::exchange(s.port(), post("/$validate", R"({"resourceType":"Medication","madeUp":1})"), 1, s.client());
  REQUIRE(other.responses.size() == 1);
  CHECK(std::string(json_of(other.responses[0]).find("issue")->items().at(0).string_at("diagnostics"))
            .find("elements of Medication were not checked") != std::string::npos);
}

TEST_CASE("Server: unknown resource types and paths get 404 OperationOutcomes; wrong methods 405") {
  TestServer s;
  check_outcome(test::get(s.port(), "/Foo/1", s.client()), 404, "not-supported", "not a FHIR R4 resource type");
  check_outcome(test::get(s.port(), "/ImmunizationRecommendation/1", s.client()), 404, "not-supported", "not served by this gateway");
  check_outcome(test::get(s.port(), "/no/such/thing", s.client()), 404, "not-found", "No such endpoint");
  auto ex = test::exchange(s.port(), post("/metadata", "{}"), 1, s.client());
  REQUIRE(ex.responses.size() == 1);
  check_outcome(ex.responses[0], 405, "not-supported", "allowed: GET");
  CHECK(ex.responses[0].header("allow") == "GET");
}

TEST_CASE("Server: bad search parameters get 400 naming the parameter; strict handling rejects unknowns") {
  TestServer s({}, test_routes);
  const std::string auth = test::test_tokens().header();
  check_outcome(test::get(s.port(), "/Patient?birthdate=2010-13-01", s.client(), auth), 400, "invalid", "birthdate");
  check_outcome(test::get(s.port(), "/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number%7C9434765918", s.client(), auth),
                400, "value", "check digit");
  check_outcome(test::get(s.port(), "/Patient?family=%zz", s.client(), auth), 400, "invalid",
                "Malformed percent-encoding in the query");
  // The path is decoded by the HTTP layer, and its errors name the path.
  check_outcome(test::get(s.port(), "/Patient%ZZ/1", s.client(), auth), 400, "invalid",
                "Malformed percent-encoding in the path (expected %XX with hex digits)");
  check_outcome(test::get(s.port(), "/Patient/%C3%28", s.client(), auth), 400, "invalid",
                "The path is not valid UTF-8 after percent-decoding");
  HttpResponse lenient = test::get(s.port(), "/Patient?family=Smith&shoe-size=9", s.client(), auth);
  CHECK(lenient.status == 200);
  check_outcome(test::get(s.port(), "/Patient?family=Smith&shoe-size=9", s.client(), auth + "Prefer: handling=strict\r\n"),
                400, "invalid", "Unknown search parameter 'shoe-size'");
  // Two Prefer fields are one list (RFC 9110 5.3, RFC 7240): strict in the second counts too.
  for (const std::string prefer : {"Prefer: return=minimal\r\nPrefer: handling=strict\r\n",
                                   "Prefer: handling=strict\r\nPrefer: return=minimal\r\n",
                                   "Prefer: handling=strict\r\nX-Other: 1\r\nPrefer: return=minimal\r\n"}) {
    CAPTURE(prefer);
    check_outcome(test::get(s.port(), "/Patient?family=Smith&shoe-size=9", s.client(), auth + prefer), 400, "invalid",
                  "Unknown search parameter 'shoe-size'");
    check_outcome(test::get(s.port(), "/Basic?shoe-size=9", s.client(), prefer), 400, "invalid",
                  "Unknown search parameter 'shoe-size'");
  }
  // The first handling in the list wins (RFC 7240 section 2), across fields as within one.
  check_outcome(test::get(s.port(), "/Basic?shoe-size=9", s.client(), "Prefer: handling=strict\r\nPrefer: handling=lenient\r\n"),
                400, "invalid", "Unknown search parameter 'shoe-size'");
  CHECK(test::get(s.port(), "/Basic?shoe-size=9", s.client(), "Prefer: handling=lenient\r\nPrefer: handling=strict\r\n")
            .status == 200);
  for (const std::string prefer : {"Prefer: handling = strict\r\n", "Prefer: handling=\"strict\"\r\n",
                                   "Prefer: handling=strict; foo=bar\r\n", "Prefer: HANDLING=STRICT\r\n"}) {
    CAPTURE(prefer);
    check_outcome(test::get(s.port(), "/Basic?shoe-size=9", s.client(), prefer), 400, "invalid",
                  "Unknown search parameter 'shoe-size'");
  }
  // The test-only Basic route: the same parser, no access control involved.
  check_outcome(test::get(s.port(), "/Basic?created=2010-13-01", s.client()), 400, "invalid", "created");
}

TEST_CASE("Server: XML is refused with 406; _format and _pretty are honoured") {
  TestServer s;
  check_outcome(test::get(s.port(), "/metadata", s.client(), "Accept: application/fhir+xml\r\n"), 406, "not-supported",
                "FHIR JSON only");
  check_outcome(test::get(s.port(), "/metadata?_format=xml", s.client()), 406, "not-supported", "_format=xml");
  HttpResponse pretty = test::get(s.port(), "/metadata?_format=json&_pretty=true", s.client(), "Accept: application/fhir+xml\r\n");
  CHECK(pretty.status == 200);
  CHECK(pretty.body.find("\n  \"resourceType\"") != std::string::npos);
}

TEST_CASE("Server: a plain-HTTP client on the TLS port gets a 400 OperationOutcome telling it to use HTTPS") {
  TestServer s;
  auto opts = s.client();
  opts.tls = false;
  auto ex = test::exchange(s.port(), "GET /metadata HTTP/1.1\r\nHost: localhost\r\n\r\n", 1, opts);
  REQUIRE_MESSAGE(ex.responses.size() == 1, ex.error);
  check_outcome(ex.responses[0], 400, "security", "HTTPS only");
  CHECK(ex.peer_closed);
}

TEST_CASE("Server: keep-alive and pipelined requests are answered in order on one connection") {
  TestServer s([](config::Config& c) { c.limits.max_requests_per_connection = 3; });
  std::string one = "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Request-ID: r1\r\n\r\n";
  std::string two = "GET /metadata HTTP/1.1\r\nHost: localhost\r\nX-Request-ID: r2\r\n\r\n";
  std::string three = "GET /readyz HTTP/1.1\r\nHost: localhost\r\nX-Request-ID: r3\r\n\r\n";
  auto ex = test::exchange(s.port(), one + two + three, 3, s.client());
  REQUIRE_MESSAGE(ex.responses.size() == 3, ex.error);
  CHECK(ex.responses[0].header("x-request-id") == "r1");
  CHECK(ex.responses[1].header("x-request-id") == "r2");
  CHECK(ex.responses[2].header("x-request-id") == "r3");
  CHECK(ex.responses[1].body.find("CapabilityStatement") != std::string::npos);
  // The third request reaches max_requests_per_connection: the server says close and closes.
  CHECK(ex.responses[2].header("connection") == "close");
  CHECK(ex.peer_closed);
  auto keep = test::exchange(s.port(), one, 1, s.client());
  CHECK_FALSE(keep.peer_closed);
}

TEST_CASE("Server: connections beyond max_connections are refused and counted") {
  TestServer s([](config::Config& c) { c.limits.max_connections = 1; });
  auto opts = s.client();
  opts.pause_after_send = std::chrono::milliseconds(0);
  // Hold one connection open with an unfinished request while a second connects.
  std::thread holder([&] {
    auto o = opts;
    o.timeout = std::chrono::milliseconds(1500);
    test::exchange(s.port(), "GET /healthz HTTP/1.1\r\nHost: localhost\r\n", 1, o);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto refused = test::exchange(s.port(), "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n", 1, opts);
  holder.join();
  CHECK(refused.responses.empty());
  CHECK(s.metrics().render().find("gateway_http_connections_rejected_total 1") != std::string::npos);
}

TEST_CASE("Server: /metrics counts requests by route template and status; /readyz and /healthz answer") {
  TestServer s;
  test::get(s.port(), "/healthz", s.client());
  test::get(s.port(), "/Foo/1", s.client());
  CHECK(test::get(s.port(), "/readyz", s.client()).status == 200);
  HttpResponse m = test::get(s.port(), "/metrics", s.client());
  REQUIRE(m.status == 200);
  CHECK(m.header("content-type") == "text/plain; version=0.0.4; charset=utf-8");
  CHECK(m.body.find("gateway_http_requests_total{route=\"/healthz\",method=\"GET\",status=\"200\"} 1") != std::string::npos);
  CHECK(m.body.find("gateway_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"} 1") != std::string::npos);
  CHECK(m.body.find("gateway_http_open_connections 1") != std::string::npos);
  CHECK(m.body.find("/Foo/1") == std::string::npos);  // raw paths never become labels
}

TEST_CASE("Server: /metrics shows each database writer's commits, writes and queue") {
  TestServer s;
  // Reads of a patient that does not exist: each answered (404) and audited.
  const std::string auth = test::test_tokens().header(test::TokenClaims{});
  for (int i = 0; i < 3; ++i) REQUIRE(test::get(s.port(), "/Patient/no-such-patient", s.client(), auth).status == 404);
  const std::string m = s.metrics().render();
  // One family per measure, one sample per database.
  for (const char* family : {"gateway_db_commits_total", "gateway_db_writes_total", "gateway_db_failed_commits_total",
                             "gateway_db_write_queue"}) {
    CAPTURE(family);
    CHECK(m.find(std::string("# TYPE ") + family + " ") != std::string::npos);
    for (const char* db : {"locator", "store", "audit"})
      CHECK(m.find(std::string(family) + "{db=\"" + db + "\"} ") != std::string::npos);
  }
  // Every read above was audited: at least three records, in at least one commit.
  const auto value = [&m](const std::string& sample) -> long long {
    const auto at = m.find(sample + " ");
    if (at == std::string::npos) return -1;
    return std::stoll(m.substr(at + sample.size() + 1));
  };
  CHECK(value("gateway_db_writes_total{db=\"audit\"}") >= 3);
  CHECK(value("gateway_db_commits_total{db=\"audit\"}") >= 1);
  CHECK(value("gateway_db_failed_commits_total{db=\"store\"}") == 0);
}

TEST_CASE("Server: /readyz is 503 until the databases are ready") {
  TestServer s;
  s.health().databases_ready = false;
  HttpResponse r = test::get(s.port(), "/readyz", s.client());
  CHECK(r.status == 503);
  CHECK(r.body.find("databases not ready") != std::string::npos);
}

TEST_CASE("Server: TLS below 1.2 and non-AEAD or non-ECDHE ciphers are refused") {
  TestServer s;
  auto old = s.client();
  old.max_tls_version = TLS1_1_VERSION;
  CHECK(test::exchange(s.port(), "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n", 1, old).error.find("handshake") == 0);
  auto cbc = s.client();
  cbc.tls12_ciphers = "ECDHE-ECDSA-AES128-SHA256";
  CHECK(test::exchange(s.port(), "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n", 1, cbc).error.find("handshake") == 0);
  auto gcm = s.client();
  gcm.tls12_ciphers = "ECDHE-ECDSA-AES256-GCM-SHA384";
  auto ok = test::exchange(s.port(), "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n", 1, gcm);
  REQUIRE_MESSAGE(ok.responses.size() == 1, ok.error);
  CHECK(ok.responses[0].status == 200);
}

TEST_CASE("Server: mutual TLS requires a client certificate from the configured CA and exposes its subject") {
  TestServer s(
      [](config::Config& c) {
        c.https.client_ca = test::dev_certs().ca;
        c.https.client_certificates = config::ClientCertificates::required;
      },
      test_routes);
  auto anonymous = test::exchange(s.port(), "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n", 1, s.client());
  CHECK(anonymous.responses.empty());
  auto opts = s.client();
  opts.cert_file = test::dev_certs().client_cert;
  opts.key_file = test::dev_certs().client_key;
  HttpResponse who = test::get(s.port(), "/test/whoami", opts);
  CHECK(who.status == 200);
  CHECK(who.body == "CN=dev-client,O=Development Trust");
}

TEST_CASE("Server: shutdown drains an in-flight request, turns not-ready, and stops") {
  TestServer s({}, test_routes);
  test::Exchange slow;
  std::thread client([&] {
    slow = test::exchange(s.port(), "GET /test/slow HTTP/1.1\r\nHost: localhost\r\n\r\n", 1, s.client());
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  s.shutdown();
  client.join();
  REQUIRE_MESSAGE(slow.responses.size() == 1, slow.error);
  CHECK(slow.responses[0].status == 200);
  CHECK(slow.responses[0].body == "slow done");
  CHECK(slow.responses[0].header("connection") == "close");
  CHECK(s.health().draining);
  CHECK_FALSE(s.health().ready());
  CHECK(s.wait_stopped(std::chrono::seconds(5)));
  auto after = test::exchange(s.port(), "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n", 1, s.client());
  CHECK(after.responses.empty());
}

TEST_CASE("Server: plain HTTP listener on loopback serves the same routes") {
  TestServer s([](config::Config& c) {
    c.http.enabled = true;
    c.http.port = 0;
  });
  auto opts = s.client();
  opts.tls = false;
  HttpResponse r = test::get(s.plain_port(), "/healthz", opts);
  CHECK(r.status == 200);
  // Strict-Transport-Security is an HTTPS header (RFC 6797 7.2: not sent over plain HTTP).
  CHECK(r.header("strict-transport-security").empty());
  CHECK(test::get(s.port(), "/healthz", s.client()).header("strict-transport-security") == "max-age=31536000");
}

TEST_CASE("Server: hsts_max_age_s sets Strict-Transport-Security, and 0 sends none") {
  TestServer shorter([](config::Config& c) { c.https.hsts_max_age = std::chrono::seconds(600); });
  CHECK(test::get(shorter.port(), "/healthz", shorter.client()).header("strict-transport-security") == "max-age=600");
  TestServer none([](config::Config& c) { c.https.hsts_max_age = std::chrono::seconds(0); });
  HttpResponse r = test::get(none.port(), "/healthz", none.client());
  CHECK(r.status == 200);
  CHECK(r.header("strict-transport-security").empty());
}

TEST_CASE("Server: HEAD is answered like GET without a body, and the connection stays usable") {
  TestServer s;
  std::string head = "HEAD /metadata HTTP/1.1\r\nHost: localhost\r\nX-Request-ID: h1\r\n\r\n";
  std::string get = "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Request-ID: g1\r\nConnection: close\r\n\r\n";
  auto opts = s.client();
  opts.first_is_head = true;
  auto ex = test::exchange(s.port(), head + get, 2, opts);
  // Had the HEAD response carried a body, the second response would not parse.
  REQUIRE_MESSAGE(ex.responses.size() == 2, ex.error);
  CHECK(ex.responses[0].status == 200);
  CHECK(std::stoul(ex.responses[0].header("content-length")) > 100);
  CHECK(ex.responses[1].header("x-request-id") == "g1");
  CHECK(ex.responses[1].body == R"({"status":"pass"})");
}

TEST_CASE("Server: the response head is well formed: status line, Connection by HTTP version, Content-Length") {
  TestServer s;
  // HTTP/1.1 asking to close: "Connection: close" and the body's exact length.
  auto closing = test::exchange(
      s.port(), "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Request-ID: c1\r\nConnection: close\r\n\r\n", 1,
      s.client());
  REQUIRE_MESSAGE(closing.responses.size() == 1, closing.error);
  const auto& c = closing.responses[0];
  CHECK(c.status == 200);
  CHECK(c.header("connection") == "close");
  CHECK(c.header("content-length") == std::to_string(c.body.size()));
  CHECK(c.header("x-request-id") == "c1");
  CHECK(c.header("server") == "fhir-gateway");
  CHECK(c.header("cache-control") == "no-store");
  CHECK(c.header("x-content-type-options") == "nosniff");
  CHECK_FALSE(c.header("date").empty());
  // HTTP/1.0 asking to keep the connection: "Connection: keep-alive", and the second request
  // on the same connection is answered.
  std::string one = "GET /healthz HTTP/1.0\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n";
  std::string two = "GET /metadata HTTP/1.0\r\nHost: localhost\r\n\r\n";
  auto kept = test::exchange(s.port(), one + two, 2, s.client());
  REQUIRE_MESSAGE(kept.responses.size() == 2, kept.error);
  CHECK(kept.responses[0].header("connection") == "keep-alive");
  CHECK(kept.responses[1].status == 200);
  CHECK(kept.responses[1].header("content-length") == std::to_string(kept.responses[1].body.size()));
  CHECK(kept.responses[1].body.find("CapabilityStatement") != std::string::npos);
}

TEST_CASE("Server: a UTF-8 byte order mark before a JSON body is tolerated") {
  TestServer s;
  auto ex = test::exchange(s.port(), post("/Patient/$validate", "\xEF\xBB\xBF{\"resourceType\":\"Patient\"}"), 1, s.client());
  REQUIRE(ex.responses.size() == 1);
  CHECK(ex.responses[0].status == 200);
}

TEST_CASE("Server: $validate on a type that is not FHIR says so") {
  TestServer s;
  auto ex = test::exchange(s.port(), post("/Foo/$validate", "{\"resourceType\":\"Foo\"}"), 1, s.client());
  REQUIRE(ex.responses.size() == 1);
  check_outcome(ex.responses[0], 404, "not-supported", "Foo is not a FHIR R4 resource type");
}

TEST_CASE("Server: _format=application/fhir+json with an unencoded '+' is accepted") {
  TestServer s;
  CHECK(test::get(s.port(), "/metadata?_format=application/fhir+json", s.client()).status == 200);
}

TEST_CASE("Server: an idle keep-alive connection is closed after idle_timeout") {
  TestServer s([](config::Config& c) { c.limits.idle_timeout = std::chrono::milliseconds(300); });
  auto opts = s.client();
  opts.close_wait = std::chrono::milliseconds(3000);
  auto ex = test::exchange(s.port(), "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n", 1, opts);
  REQUIRE_MESSAGE(ex.responses.size() == 1, ex.error);
  CHECK(ex.responses[0].header("connection") != "close");  // kept alive ...
  CHECK(ex.peer_closed);                                   // ... until the idle timeout closed it
}

TEST_CASE("Server: a busy connection is not closed by the idle timeout between requests") {
  TestServer s([](config::Config& c) { c.limits.idle_timeout = std::chrono::milliseconds(400); });
  std::string one = "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
  std::string many;
  for (int i = 0; i < 20; ++i) many += one;
  auto ex = test::exchange(s.port(), many, 20, s.client());
  CHECK(ex.responses.size() == 20);
  CHECK_FALSE(ex.peer_closed);
}
