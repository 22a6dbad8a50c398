// SPDX-License-Identifier: Apache-2.0
#include "gateway/http/pipeline.h"

#include <algorithm>
#include <ctime>
#include <memory>
#include <exception>
#include <variant>

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "fhir/content_negotiation.h"
#include "fhir/query_string.h"
#include "gateway/config/config.h"
#include "gateway/http/patient_gate.h"
#include "gateway/observe/log.h"

namespace gw::http {

namespace {

// What the audit writer said of a record and the change appended with it (audit::Log::ChangeDone).
struct Appended {
  fhir::Result<std::uint64_t> seq;
  bool refused = false;
};

// Completes once the audit writer has committed `rec` (and `change` with it), resuming on the
// awaiting coroutine's executor. Not a coroutine itself and takes references (GCC PR 100611:
// temporaries in a co_await full-expression).
struct AuditInitiation {
  audit::Log* log;
  audit::Record* rec;
  audit::Log::Change* change;
  template <class Handler>
  void operator()(Handler handler) {
    auto ex = boost::asio::prefer(boost::asio::get_associated_executor(handler),
                                  boost::asio::execution::outstanding_work.tracked);
    auto h = std::make_shared<Handler>(std::move(handler));
    log->append(std::move(*rec), std::move(*change), [h, ex](fhir::Result<std::uint64_t> result, bool refused) {
      boost::asio::dispatch(ex, [h, appended = Appended{std::move(result), refused}]() mutable {
        std::move(*h)(std::move(appended));
      });
    });
  }
};

boost::asio::awaitable<Appended> append_audit(audit::Log& log, audit::Record& rec, audit::Log::Change& change) {
  return boost::asio::async_initiate<const boost::asio::use_awaitable_t<>&, void(Appended)>(
      AuditInitiation{&log, &rec, &change}, boost::asio::use_awaitable);
}

// The operation a route serves, without '$': declared, or named by the last segment of the
// pattern (routes declared once in the CapabilityStatement, such as /{type}/$validate, leave
// RouteOptions::operation empty).
std::string_view operation_of(const Route& route) {
  if (!route.options.operation.empty()) return route.options.operation;
  std::string_view last = route.pattern;
  last.remove_prefix(last.rfind('/') + 1);
  return !last.empty() && last.front() == '$' ? last.substr(1) : std::string_view();
}

// The FHIR interaction for the audit record. Routes that are not declared on their own (POST
// [type]/_search is declared as the GET search-type) are named by the interaction the policy
// checks; the HTTP method is the last resort, for non-FHIR endpoints.
std::string action_of(const Route* route, std::string_view method) {
  if (route) {
    const RouteOptions& o = route->options;
    if (!operation_of(*route).empty()) return "operation";
    if (!o.interaction.empty()) return o.interaction;
    if (o.access == Access::resource) {
      switch (o.auth_interaction) {
        case auth::Interaction::read: return "read";
        case auth::Interaction::search: return "search-type";
        case auth::Interaction::create: return "create";
        case auth::Interaction::update: return "update";
        case auth::Interaction::remove: return "delete";
      }
    }
  }
  // An OPTIONS (a CORS preflight) asks what the server allows: R4's "capabilities".
  if (method == "OPTIONS") return "capabilities";
  if (method == "POST") return "create";
  if (method == "PUT") return "update";
  if (method == "DELETE") return "delete";
  return "read";
}

// Joins every `name` field (lower-case) into the first, comma-separated and in order, for a
// list-valued field that handlers read with Request::header(): RFC 9110 section 5.3 makes
// several field lines of one name a single list, so `Prefer: return=minimal` followed by
// `Prefer: handling=strict` asks both (RFC 7240 section 2). Bounded by the header limit.
void join_list_field(Request& req, std::string_view name) {
  auto& h = req.headers;
  auto first = std::find_if(h.begin(), h.end(), [name](const auto& f) { return f.first == name; });
  if (first == h.end()) return;
  const std::size_t at = static_cast<std::size_t>(first - h.begin());
  for (std::size_t i = at + 1; i < h.size();) {
    if (h[i].first != name) {
      ++i;
      continue;
    }
    h[at].second += ", " + h[i].second;
    h.erase(h.begin() + static_cast<std::ptrdiff_t>(i));
  }
}

audit::Record record_of(Request& req, const Response& r, const Route* route) {
  audit::Record rec;
  rec.time_ms = audit::now_ms();
  rec.kind = "rest";
  rec.action = action_of(route, req.method);
  // HEAD is routed and handled as GET (RFC 9110 section 9.3.2), but the record keeps the
  // method the client sent.
  rec.method = req.head ? "HEAD" : req.method;
  // Tokens sent in the query (refused with 401) must not outlive the request in the log. Every
  // cut of received text is on a UTF-8 character boundary: a record is JSON, and text cut
  // inside a character would make it unreadable (the target is ASCII by then, the
  // diagnostics may echo what the client sent).
  constexpr std::size_t kMaxTargetBytes = 4096, kMaxOutcomeBytes = 500;
  rec.target = audit::redact_target(req.target);
  rec.target.resize(fhir::utf8_cut(rec.target, kMaxTargetBytes));
  rec.route = req.route_template;
  rec.status = r.status;
  if (r.status >= 400) {
    rec.outcome_text = audit::redact_tokens(r.diagnostics);
    rec.outcome_text.resize(fhir::utf8_cut(rec.outcome_text, kMaxOutcomeBytes));
  }
  if (const auto& p = req.principal) {
    rec.agent_kind = p->kind == auth::Principal::Kind::system ? "system" : "user";
    rec.user = p->subject;
    rec.role = p->role_claim;
    rec.organisation = p->organisation;
    rec.client_id = p->client_id;
    rec.token_id = p->token_id;
    rec.purpose = p->purpose_of_use;
  } else {
    rec.agent_kind = "anonymous";
  }
  rec.address = req.remote_address;
  rec.client_certificate = req.client_certificate_subject;
  rec.request_id = req.request_id;
  rec.correlation_id = req.correlation_id;
  // docs/access-policy.md: every break-glass request, granted or refused, is in its record and
  // raises an alert. A request refused before any patient was judged (a role that may not read
  // patient data, a scope, a bad query) never reached the patient gate that notes it, so it is
  // noted here. Only for a known caller: an anonymous request is refused for that alone, and
  // alerting on it would let anyone fill the IG queue.
  if (req.principal && r.status >= 400 && req.audit.break_glass_reason.empty())
    PatientGate::note_break_glass_request(req);
  rec.detail = std::move(req.audit);
  if (route && rec.detail.operation.empty())
    if (std::string_view op = operation_of(*route); !op.empty()) rec.detail.operation = "$" + std::string(op);
  return rec;
}

}  // namespace

boost::asio::awaitable<Response> Pipeline::handle(Request& req) const {
  if (Cors::is_preflight(req)) {
    // No credentials and no patient data, but a request like any other: audited (issue #6,
    // "every request"), anonymous, so a browser probing the gateway leaves a trace too.
    req.route_template = "cors_preflight";
    Response answer = cors_.preflight(req);  // notes the Origin in req.audit first
    co_return co_await audited(req, std::move(answer), nullptr);
  }
  const Route* route = nullptr;
  Response r = co_await respond(req, route);
  // Open routes (probes, /metadata, discovery) carry no identity and no patient data.
  if (!route || route->options.access != Access::open) r = co_await audited(req, std::move(r), route);
  // After the audit, so that its 503 is readable by the page too.
  cors_.decorate(req, r);
  co_return r;
}

boost::asio::awaitable<Response> Pipeline::refused(Request& req, Response r, bool headers_parsed) const {
  // The route names the action only (a POST /Patient/_search refused for its size is a search,
  // not a create); the refusal stays the HTTP layer's.
  const Route* route = req.path.empty() ? nullptr : router_.match(req.method, req.path).route;
  if (headers_parsed) identify(req);
  Response answer = co_await audited(req, std::move(r), route);
  cors_.decorate(req, answer);
  co_return answer;
}

boost::asio::awaitable<Response> Pipeline::audited(Request& req, Response r, const Route* route) const {
  if (!audit_) co_return r;
  // A change rides only on an answer that says it was made: not on one a handler that set it
  // then failed (threw: 500) gives.
  std::optional<Request::AuditChange> change = std::move(req.audit_change);
  req.audit_change.reset();
  if (change && r.status >= 300) change.reset();
  // The record of a refused change is made again from what the handler noted.
  std::optional<audit::Detail> noted;
  if (change) noted = req.audit;
  auto record = [&] {
    audit::Record rec = record_of(req, r, route);
    // The role by the policy's name as well as the claim: a CIS2 role code means nothing to
    // the patient reading the access report.
    if (req.principal && policy_)
      if (const auth::RolePolicy* role = policy_->role(*req.principal)) rec.role_name = role->name;
    return rec;
  };
  audit::Record rec = record();
  audit::Log::Change made = change ? std::move(change->change) : audit::Log::Change();
  Appended appended = co_await append_audit(*audit_, rec, made);
  if (appended.refused) {
    // Refused at commit (say the alert was reviewed by someone else meanwhile): nothing was
    // stored, the record neither. The answer becomes the refusal, and its own record says so.
    const bool close = r.close;
    r = error_response(appended.seq.issue());
    r.close = close;
    req.audit = std::move(*noted);
    req.audit.note = change->refused_note ? change->refused_note(appended.seq.issue()) : req.audit.note;
    rec = record();
    audit::Log::Change none;
    appended = co_await append_audit(*audit_, rec, none);
  }
  std::optional<Request::ChangeMade> made_outside = std::move(req.change_made);
  req.change_made.reset();
  if (made_outside && made_outside->audited) made_outside->audited(appended.seq.ok());
  if (!appended.seq) {
    // Fail closed: nothing built on an unaudited access leaves the gateway (and a change
    // appended with the record was not made either). A change made outside audit.db stands:
    // the answer says so, and that the gateway audits it once the audit trail takes writes.
    observe::log(observe::Level::error, "audit record not committed; response withheld",
                 {{"request_id", req.logged_request_id()},
                  {"status", std::to_string(r.status)},
                  {"change_made", !made_outside            ? "no"
                                  : made_outside->audited ? "yes, audited later"
                                                          : "yes, without an audit record"},
                  {"route", req.route_template}});
    const std::string quote = "quote X-Request-ID " + req.request_id;
    std::string text;
    if (!made_outside)
      text = "The audit trail could not be written, so no data was sent. Try again shortly; " + quote + " if this persists";
    else if (made_outside->audited)
      text = made_outside->made + ", but its audit record could not be written, so no other data was sent. The change "
                                  "stands and the gateway audits it once the audit trail can be written again; there "
                                  "is no need to repeat it (" + quote + ")";
    else
      text = made_outside->made + ", but its audit record could not be written, so no other data was sent. The change "
                                  "stands: do not repeat it (" + quote + ")";
    Response refused = error_response(fhir::Issue::make(fhir::ErrorCode::not_ready, text));
    refused.close = r.close;
    co_return refused;
  }
  co_return r;
}

void Pipeline::identify(Request& req) const {
  if (!authenticator_) return;
  auto who = authenticator_->authenticate(req, std::time(nullptr));
  if (auto* p = std::get_if<std::shared_ptr<const auth::Principal>>(&who)) req.principal = std::move(*p);
  // A rate-limited caller is still known (the limit is per validated user and client).
  else if (auto* f = std::get_if<auth::AuthFailure>(&who)) req.principal = f->principal;
}

boost::asio::awaitable<Response> Pipeline::respond(Request& req, const Route*& matched) const {
  // 0. RFC 9112 section 3.2 (and RFC 3986 section 2.1): a request target is visible ASCII;
  // other characters travel percent-encoded. Refused before anything reads it; the audit
  // keeps the bytes as %XX.
  if (std::any_of(req.target.begin(), req.target.end(), [](char c) {
        return static_cast<unsigned char>(c) < 0x21 || static_cast<unsigned char>(c) > 0x7E;
      })) {
    req.route_template = "protocol_error";
    identify(req);
    co_return error_response(fhir::Issue::make(
        fhir::ErrorCode::bad_request,
        "The request target must be visible ASCII (RFC 9112 section 3.2); percent-encode other characters as "
        "UTF-8 bytes, e.g. %C3%A9"));
  }

  // 1. Route. Only the path is looked at; query and body stay raw until step 2 has passed.
  Router::Match m = router_.match(req.method, req.path);
  if (!m.route) {
    req.route_template = m.allow.empty() ? "unmatched" : "method_not_allowed";
    identify(req);
    Response r = error_response(*m.error);
    if (!m.allow.empty()) r.set_header("Allow", m.allow);
    co_return r;
  }
  const Route& route = *m.route;
  matched = m.route;
  req.route_template = route.pattern;
  req.path_params = std::move(m.params);

  // 2. Authenticate and authorise, before the query or body is looked at (issue #5).
  if (route.options.access != Access::open) {
    if (!authenticator_ || !policy_)
      co_return error_response(fhir::Issue::make(fhir::ErrorCode::forbidden, "access control is not configured"));
    auto who = authenticator_->authenticate(req, std::time(nullptr));
    if (auto* failure = std::get_if<auth::AuthFailure>(&who)) {
      req.principal = failure->principal;  // set only when rate-limited: the audit names who
      Response r = error_response(failure->issue);
      if (failure->issue.code == fhir::ErrorCode::unauthenticated)
        r.replace_header("WWW-Authenticate", failure->www_authenticate);
      else if (failure->retry_after.count() > 0)
        r.replace_header("Retry-After", std::to_string(failure->retry_after.count()));
      co_return r;
    }
    req.principal = std::get<std::shared_ptr<const auth::Principal>>(std::move(who));
    // A 403 that more scope would lift says so (RFC 6750 3.1), for SMART clients to re-authorise.
    auto refuse = [&](const auth::Decision& d, std::string_view type, auth::Interaction i) {
      Response r = error_response(fhir::Issue::make(fhir::ErrorCode::forbidden, "access denied: " + d.reason));
      if (auto challenge = auth::insufficient_scope_challenge(*policy_, *req.principal, type, i); !challenge.empty())
        r.set_header("WWW-Authenticate", std::move(challenge));
      return r;
    };
    if (route.options.access == Access::resource) {
      auth::Decision d = policy_->authorise_type(*req.principal, route.options.auth_resource_type,
                                                 route.options.auth_interaction);
      if (!d.allowed) co_return refuse(d, route.options.auth_resource_type, route.options.auth_interaction);
      req.scope_limits = std::move(d.limits);
    } else if (route.options.access == Access::audit) {
      const auth::RolePolicy* role = policy_->role(*req.principal);
      if (!role || !role->audit_access)
        co_return error_response(fhir::Issue::make(fhir::ErrorCode::forbidden,
                                                   "access denied: this endpoint is for information governance roles"));
      // Scopes narrow the role here as everywhere (docs/access-policy.md): the token must grant
      // AuditEvent the route's permission; the IG actions (POST, PUT) need read and search.
      // Certificate principals carry no scopes: their role alone decides.
      for (auth::Interaction i : {route.options.auth_interaction, auth::Interaction::read}) {
        auth::Decision d = policy_->authorise_type(*req.principal, "AuditEvent", i);
        if (!d.allowed) co_return refuse(d, "AuditEvent", i);
        if (req.method == "GET") break;
      }
    }
  }
  if (route.options.loopback_only && !config::is_loopback_address(req.remote_address))
    co_return error_response(fhir::Issue::make(fhir::ErrorCode::forbidden,
                                               "This endpoint is only served to loopback clients"));

  // 3. Decode the query, and read repeated Prefer fields as the one list they are.
  join_list_field(req, "prefer");
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
                            ct.empty() ? "Content-Type is missing; send application/fhir+json (or application/json)"
                                       : "Content-Type " + std::string(ct.substr(0, fhir::utf8_cut(ct, 64))) +
                                             " is not accepted; send application/fhir+json (or application/json)"),
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
    Response r = co_await route.handler(req);
    // Fail closed: a search let through on constrained scopes whose handler never checked its
    // parameters (PatientGate::check_search_scopes) must not answer.
    if (req.scope_limits.search_unchecked && r.status < 400) {
      r = error_response(fhir::Issue::make(fhir::ErrorCode::forbidden,
                                           "access denied: token scopes grant only constrained searches on " +
                                               route.options.auth_resource_type + ", which this endpoint cannot check"),
                         req.format.pretty);
      req.refused_by_scopes = true;
    }
    // A search the constrained scopes refused is a 403 that more scope would lift (RFC 6750
    // 3.1), like the type-level refusals of step 2.
    if (req.refused_by_scopes && r.status == 403 && req.principal)
      if (auto challenge = auth::insufficient_scope_challenge(*policy_, *req.principal, route.options.auth_resource_type,
                                                              auth::Interaction::search);
          !challenge.empty())
        r.set_header("WWW-Authenticate", std::move(challenge));
    co_return r;
  } catch (const std::exception& e) {
    observe::log(observe::Level::error, "handler failed",
                 {{"request_id", req.logged_request_id()},
                  {"route", route.pattern},
                  {"error", fhir::without_nhs_numbers(e.what())}});
  } catch (...) {
    observe::log(observe::Level::error, "handler failed",
                 {{"request_id", req.logged_request_id()}, {"route", route.pattern}});
  }
  co_return error_response(fhir::Issue::make(fhir::ErrorCode::internal_error,
                                             "The server could not complete the request; quote X-Request-ID " +
                                                 req.request_id + " to the service desk"));
}

}  // namespace gw::http
