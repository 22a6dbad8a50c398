// SPDX-License-Identifier: Apache-2.0
// The request as handlers see it, detached from Beast. The query and body are kept raw: the
// pipeline decodes them only after authentication (issue: "no request body or query is parsed
// before authentication succeeds").
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fhir/content_negotiation.h"
#include "fhir/json.h"
#include "fhir/nhs_number.h"
#include "fhir/query_string.h"
#include "gateway/audit/log.h"
#include "gateway/audit/record.h"
#include "gateway/auth/policy.h"

namespace gw::http {

struct Request {
  std::string method;                 // "GET", "POST", ...; a HEAD request is routed as "GET"
  bool head = false;                  // the client sent HEAD: the audit records HEAD, send() strips the body
  std::string target;                 // as received, e.g. "/Patient?identifier=..."
  std::string path;                   // percent-decoded path, without the query
  std::string raw_query;              // undecoded text after '?'
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;

  std::string request_id;             // X-Request-ID (mirrored or generated)
  std::string correlation_id;         // X-Correlation-ID when sent
  // The two ids as operational log lines give them: a client may key its ids by patient, and
  // the log never holds an NHS number, so any is removed there (the response still mirrors
  // the id as sent: it is the client's own, and clients match answers by it).
  std::string logged_request_id() const { return fhir::without_nhs_numbers(request_id); }
  std::string logged_correlation_id() const { return fhir::without_nhs_numbers(correlation_id); }
  std::string remote_address;
  std::string client_certificate_subject;  // RFC 2253 subject of a verified client cert
  bool tls = false;
  std::chrono::steady_clock::time_point received{};
  std::string route_template;         // matched route pattern, for metrics and logs

  // Who is asking: set by the pipeline's authentication step for every non-open route.
  std::shared_ptr<const auth::Principal> principal;
  // What the token's scopes bind this request to (patient/ scopes: one patient; constrained
  // scopes: searches carrying their constraints), from the pipeline's authorise step.
  auth::ScopeLimits scope_limits;
  // Set when a route refused a search because the token's constrained scopes do not cover its
  // parameters (PatientGate::check_search_scopes): the role allows it, only the scopes refuse,
  // so the pipeline adds the insufficient_scope challenge to the 403, as it does for its own.
  bool refused_by_scopes = false;

  // Filled by the pipeline, in this order, each only when the route needs it.
  std::vector<std::string> path_params;         // captures of {name} segments
  std::optional<fhir::QueryParams> query;       // decoded query (after authentication)
  fhir::ResponseFormat format;                  // negotiated response format
  std::optional<fhir::Json> json_body;          // parsed body for routes that take JSON

  // What the handler tells the audit record: patients, entries returned and withheld, the
  // basis of access, break-glass (issue #6). The pipeline fills in who, when and the outcome.
  audit::Detail audit;
  // A change an IG officer's request makes to the state kept beside the audit log (an alert
  // review, a flag; audit_routes.cpp): the handler answers as if it is made, and the pipeline's
  // audit step hands it to the audit writer with this request's record, so that both commit in
  // one transaction or neither does, before the answer is sent. When the change is refused at
  // commit (the alert was reviewed meanwhile), the answer becomes the refusal and the record
  // says so, its note from `refused_note`. For routes that are audited (not Access::open), of a
  // gateway with an audit log (the routes that set it exist only then).
  struct AuditChange {
    audit::Log::Change change;
    std::function<std::string(const fhir::Issue&)> refused_note;
  };
  std::optional<AuditChange> audit_change;
  // A change the handler made outside audit.db, committed before this request's record can be
  // (an objection, in locator.db, with its row awaiting the record: gateway/objection_audit.h;
  // a source's pointer or relationship write, which keeps no such row). The pipeline calls
  // `audited` (when set: the change is audited later from its row) once it knows whether the
  // record was committed (it must not block), and when it was not, its 503 says that `made`
  // stands rather than that nothing happened, and whether the gateway audits it later (a
  // row's owner set `audited`) or only its log notes it.
  struct ChangeMade {
    std::string made;  // what was done, as a sentence start: "The objection to sharing was recorded"
    std::function<void(bool committed)> audited;
  };
  std::optional<ChangeMade> change_made;

  // First value of header `name` (lower-case), or empty.
  std::string_view header(std::string_view name) const {
    for (const auto& [k, v] : headers)
      if (k == name) return v;
    return {};
  }
  std::size_t header_count(std::string_view name) const {
    std::size_t n = 0;
    for (const auto& [k, v] : headers) n += (k == name);
    return n;
  }
  // Value of the first query parameter `name`; requires `query` to have been decoded.
  std::optional<std::string_view> query_value(std::string_view name) const {
    if (!query) return std::nullopt;
    for (const auto& [k, v] : *query)
      if (k == name) return std::string_view(v);
    return std::nullopt;
  }
};

}  // namespace gw::http
