// SPDX-License-Identifier: Apache-2.0
#include "gateway/http/pipeline.h"

#include <ctime>
#include <exception>
#include <variant>

#include "fhir/content_negotiation.h"
#include "gateway/config/config.h"
#include "gateway/observe/log.h"

namespace gw::http {

boost::asio::awaitable<Response> Pipeline::handle(Request& req) const {
  // 1. Route. Only the path is looked at; query and body stay raw until step 2 has passed.
  Router::Match m = router_.match(req.method, req.path);
  if (!m.route) {
    req.route_template = m.allow.empty() ? "unmatched" : "method_not_allowed";
    Response r = error_response(*m.error);
    if (!m.allow.empty()) r.set_header("Allow", m.allow);
    co_return r;
  }
  const Route& route = *m.route;
  req.route_template = route.pattern;
  req.path_params = std::move(m.params);

  // 2. Authenticate and authorise, before the query or body is looked at (issue #5).
  if (route.options.access != Access::open) {
    if (!authenticator_ || !policy_)
      co_return error_response(fhir::Issue::make(fhir::ErrorCode::forbidden, "access control is not configured"));
    auto who = authenticator_->authenticate(req, std::time(nullptr));
    if (auto* failure = std::get_if<auth::AuthFailure>(&who)) {
      Response r = error_response(failure->issue);
      if (failure->issue.code == fhir::ErrorCode::unauthenticated)
        r.replace_header("WWW-Authenticate", failure->www_authenticate);
      else if (failure->retry_after.count() > 0)
        r.replace_header("Retry-After", std::to_string(failure->retry_after.count()));
      co_return r;
    }
    req.principal = std::get<std::shared_ptr<const auth::Principal>>(std::move(who));
    if (route.options.access == Access::resource) {
      auth::Decision d = policy_->authorise_type(*req.principal, route.options.auth_resource_type,
                                                 route.options.auth_interaction);
      if (!d.allowed)
        co_return error_response(fhir::Issue::make(fhir::ErrorCode::forbidden, "access denied: " + d.reason));
    } else if (route.options.access == Access::audit) {
      const auth::RolePolicy* role = policy_->role(*req.principal);
      if (!role || !role->audit_access)
        co_return error_response(fhir::Issue::make(fhir::ErrorCode::forbidden,
                                                   "access denied: this endpoint is for information governance roles"));
    }
  }
  if (route.options.loopback_only && !config::is_loopback_address(req.remote_address))
    co_return error_response(fhir::Issue::make(fhir::ErrorCode::forbidden,
                                               "This endpoint is only served to loopback clients"));

  // 3. Decode the query.
  auto query = fhir::parse_query_string(req.raw_query, limits_.query);
  if (!query) co_return error_response(query.issue());
  req.query = std::move(*query);

  // 4. Negotiate the response format (R4 http.html: _format overrides Accept).
  if (route.options.fhir) {
    auto fmt = fhir::negotiate_format(req.header("accept"), req.query_value("_format"), req.query_value("_pretty"));
    if (!fmt) co_return error_response(fmt.issue());
    req.format = *fmt;
  }

  // 5. Parse a JSON body for routes that take one.
  if (route.options.json_body) {
    std::string_view ct = req.header("content-type");
    if (!fhir::is_json_media_type(ct))
      co_return error_response(
          fhir::Issue::make(fhir::ErrorCode::unsupported_media_type,
                            ct.empty() ? "Content-Type is missing; send application/fhir+json"
                                       : "Content-Type " + std::string(ct.substr(0, 64)) +
                                             " is not accepted; send application/fhir+json"),
          req.format.pretty);
    std::string_view text = req.body;
    // Some Windows tools prefix a UTF-8 byte order mark; it carries no meaning in JSON.
    if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);
    auto body = fhir::parse_json(text, limits_.json);
    if (!body) co_return error_response(body.issue(), req.format.pretty);
    req.json_body = std::move(*body);
  }

  // 6. Handle. Exceptions here are broken invariants: answer 500, log, never leak details.
  try {
    co_return co_await route.handler(req);
  } catch (const std::exception& e) {
    observe::log(observe::Level::error, "handler failed",
                 {{"request_id", req.request_id}, {"route", route.pattern}, {"error", e.what()}});
  } catch (...) {
    observe::log(observe::Level::error, "handler failed", {{"request_id", req.request_id}, {"route", route.pattern}});
  }
  co_return error_response(fhir::Issue::make(fhir::ErrorCode::internal_error,
                                             "The server could not complete the request; quote X-Request-ID " +
                                                 req.request_id + " to the service desk"));
}

}  // namespace gw::http
