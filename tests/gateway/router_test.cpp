// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include "gateway/http/router.h"
#include "gateway/observe/log.h"
#include "gateway/observe/metrics.h"

using namespace gw::http;

namespace {
boost::asio::awaitable<Response> ok(Request&) { co_return text_response(200, "text/plain", "ok"); }
}  // namespace

TEST_CASE("Router: matches literal and captured segments, reports 405 with Allow, and 404s helpfully") {
  Router r;
  RouteOptions read;
  read.resource_type = "Patient";
  read.interaction = "read";
  r.add("GET", "/Patient/{id}", ok, read);
  RouteOptions authenticated;
  authenticated.access = Access::authenticated;
  r.add("POST", "/Patient/{id}/$validate", ok, authenticated);
  auto m = r.match("GET", "/Patient/abc");
  REQUIRE(m.route);
  CHECK(m.params == std::vector<std::string>{"abc"});
  auto wrong = r.match("DELETE", "/Patient/abc");
  CHECK_FALSE(wrong.route);
  CHECK(wrong.allow == "GET");
  CHECK(fhir::http_status_for(wrong.error->code) == 405);
  auto unserved = r.match("GET", "/Observation/1");
  CHECK(unserved.error->diagnostics.find("not served by this gateway") != std::string::npos);
  // A served type at a URL that is not served: said as such, not "not served".
  auto other = r.match("GET", "/Patient/abc/$everything");
  REQUIRE(other.error);
  CHECK(other.error->code == fhir::ErrorCode::not_found);
  CHECK(other.error->diagnostics.find("No such endpoint under /Patient") != std::string::npos);
  // History and vread are an interaction not offered (404 not-supported), not a missing resource.
  for (const char* path : {"/Patient/abc/_history/3", "/Patient/abc/_history", "/Patient/_history", "/_history"}) {
    CAPTURE(path);
    auto history = r.match("GET", path);
    REQUIRE(history.error);
    CHECK(history.error->code == fhir::ErrorCode::unsupported_interaction);
    CHECK(fhir::http_status_for(history.error->code) == 404);
    CHECK(fhir::mapping_for(history.error->code).issue_type == "not-supported");
    CHECK(history.error->diagnostics.find("History (_history) is not supported") != std::string::npos);
  }
  auto bogus = r.match("GET", "/Bogus/1");
  CHECK(bogus.error->diagnostics.find("not a FHIR R4 resource type") != std::string::npos);
  CHECK(r.match("GET", "/nothing").error->code == fhir::ErrorCode::not_found);
  auto caps = r.resource_capabilities();
  REQUIRE(caps.size() == 1);
  CHECK(caps[0].interactions == std::vector<std::string>{"read"});
  // The route the pipeline checks for `resource` access defaults to the declared type.
  CHECK(m.route->options.auth_resource_type == "Patient");
}

TEST_CASE("Router: a route naming _history (a vread) is matched; other _history URLs stay not-supported") {
  Router r;
  RouteOptions read;
  read.resource_type = "DocumentReference";
  read.interaction = "read";
  r.add("GET", "/DocumentReference/{id}", ok, read);
  RouteOptions vread = read;
  vread.interaction = "vread";
  r.add("GET", "/DocumentReference/{id}/_history/{vid}", ok, vread);
  auto m = r.match("GET", "/DocumentReference/abc/_history/2");
  REQUIRE(m.route);
  CHECK(m.route->options.interaction == "vread");
  CHECK(m.params == std::vector<std::string>{"abc", "2"});
  for (const char* path : {"/DocumentReference/abc/_history", "/DocumentReference/_history", "/_history",
                           "/DocumentReference/abc/_history/2/x", "/Patient/abc/_history/2"}) {
    CAPTURE(path);
    auto history = r.match("GET", path);
    REQUIRE(history.error);
    CHECK(history.error->code == fhir::ErrorCode::unsupported_interaction);
  }
  auto caps = r.resource_capabilities();
  REQUIRE(caps.size() == 1);
  CHECK(caps[0].interactions == std::vector<std::string>{"read", "vread"});
}

TEST_CASE("Router: a resource route that names no resource type is refused at start-up") {
  Router r;
  CHECK_THROWS_AS(r.add("GET", "/Something", ok), std::logic_error);  // default access is `resource`
  RouteOptions open;
  open.access = Access::open;
  CHECK_NOTHROW(r.add("GET", "/Something", ok, open));
}

TEST_CASE("Router: a declared operation without a canonical definition is refused at start-up") {
  Router r;
  RouteOptions op;
  op.access = Access::authenticated;
  op.resource_type = "AuditEvent";
  op.operation = "export";
  CHECK_THROWS_AS(r.add("GET", "/AuditEvent/$export", ok, op), std::logic_error);
  op.operation_definition = "https://fhir-gateway.nhs.example/OperationDefinition/AuditEvent-export";
  CHECK_NOTHROW(r.add("GET", "/AuditEvent/$export", ok, op));
}

TEST_CASE("Log: lines are single JSON objects with escaping and no empty fields") {
  std::string line = gw::observe::format_line(gw::observe::Level::info, "request",
                                              {{"request_id", "r-1"}, {"correlation_id", ""}, {"status", 200},
                                               {"note", "quote\" and\nnewline"}},
                                              0);
  CHECK(line ==
        "{\"ts\":\"1970-01-01T00:00:00.000Z\",\"level\":\"info\",\"msg\":\"request\",\"request_id\":\"r-1\","
        "\"status\":200,\"note\":\"quote\\\" and\\nnewline\"}\n");
}

TEST_CASE("Metrics: counters and histograms by route template in Prometheus text format") {
  gw::observe::Metrics m;
  m.observe_request("/Patient/{id}", "GET", 200, 0.003);
  m.observe_request("/Patient/{id}", "GET", 200, 0.2);
  m.observe_request("/Patient/{id}", "GET", 404, 0.001);
  m.connection_opened();
  m.protocol_error("malformed_http");
  std::string text = m.render();
  CHECK(text.find("gateway_http_requests_total{route=\"/Patient/{id}\",method=\"GET\",status=\"200\"} 2") != std::string::npos);
  CHECK(text.find("gateway_http_requests_total{route=\"/Patient/{id}\",method=\"GET\",status=\"404\"} 1") != std::string::npos);
  CHECK(text.find("gateway_http_request_duration_seconds_bucket{route=\"/Patient/{id}\",method=\"GET\",le=\"0.005\"} 2") != std::string::npos);
  CHECK(text.find("gateway_http_request_duration_seconds_count{route=\"/Patient/{id}\",method=\"GET\"} 3") != std::string::npos);
  CHECK(text.find("gateway_http_open_connections 1") != std::string::npos);
  CHECK(text.find("gateway_protocol_errors_total{kind=\"malformed_http\"} 1") != std::string::npos);
}
