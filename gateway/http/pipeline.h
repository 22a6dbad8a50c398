// SPDX-License-Identifier: Apache-2.0
// The request path as named steps in one place (STYLE.md "Structure"):
//   match route -> authenticate/authorise -> decode query -> negotiate format -> parse body
//   -> handle -> audit
// A CORS preflight is answered before routing (cors.h). The audit step runs for every
// request except those to open routes (probes, /metadata, discovery): its record is committed before the response leaves, and when it cannot be
// committed the response is replaced by a 503 that carries no patient data (issue #6). A
// change the request makes to the audit store's own state (Request::audit_change: an alert
// review, a flag) commits in that same transaction, or not at all.
// Sessions in gateway/net call handle() once per parsed HTTP request, and refused() for a
// request they answer themselves (malformed, oversized, timed out), so that one too is audited.
#pragma once

#include <boost/asio/awaitable.hpp>

#include "fhir/json.h"
#include "fhir/query_string.h"
#include "gateway/audit/log.h"
#include "gateway/auth/authenticator.h"
#include "gateway/auth/policy.h"
#include "gateway/http/cors.h"
#include "gateway/http/router.h"

namespace gw::http {

struct PipelineLimits {
  fhir::QueryLimits query;
  fhir::JsonLimits json;
};

class Pipeline {
 public:
  // `authenticator` and `policy` may be null only in tests whose router holds open routes
  // alone; a non-open route without them is refused (fail closed).
  // `audit_log` null: nothing is audited (tests of the HTTP layer alone).
  // `cors`: the origins whose browser apps may call the API (none: no CORS headers).
  Pipeline(const Router& router, PipelineLimits limits, auth::Authenticator* authenticator = nullptr,
           const auth::Policy* policy = nullptr, audit::Log* audit_log = nullptr, CorsOptions cors = {})
      : router_(router), limits_(limits), authenticator_(authenticator), policy_(policy), audit_(audit_log),
        cors_(std::move(cors)) {}

  // Produces the response for `req`; never throws (a last-resort catch answers 500 with an
  // OperationOutcome). Sets req.route_template for metrics. Runs on the session's strand.
  // A CORS preflight (OPTIONS with Origin and Access-Control-Request-Method) is answered by
  // the CORS step, not routed, and audited as any request (route "cors_preflight"); every
  // other answer carries the CORS headers its Origin is allowed.
  boost::asio::awaitable<Response> handle(Request& req) const;

  // Audits `r`, the answer the HTTP layer gives a request that never reached handle() (400
  // malformed, 408, 413, 431, plain HTTP on the TLS port), with what is known of `req`: the
  // address, and the method, target and X-Request-ID when they were parsed. The record's
  // action is the route's when `req.path` matches one (route matching only: nothing else of
  // the pipeline runs). `headers_parsed`: `req.headers` holds the whole header set the client
  // sent, so a valid token in it names the caller as on any other request; false for a 431 or
  // a malformed request line, whose fragments prove nothing. Returns `r`, or the 503 when the
  // record could not be committed. Runs on the session's strand.
  boost::asio::awaitable<Response> refused(Request& req, Response r, bool headers_parsed) const;

 private:
  boost::asio::awaitable<Response> respond(Request& req, const Route*& matched) const;
  boost::asio::awaitable<Response> audited(Request& req, Response r, const Route* route) const;
  // The caller of a request no route serves or the HTTP layer refused, when its credentials
  // validate: a probe with a valid token is audited under its user, not as anonymous. The
  // answer stays the router's (or the HTTP layer's).
  void identify(Request& req) const;

  const Router& router_;
  PipelineLimits limits_;
  auth::Authenticator* authenticator_;
  const auth::Policy* policy_;
  audit::Log* audit_;
  Cors cors_;
};

}  // namespace gw::http
