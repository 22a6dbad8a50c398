// SPDX-License-Identifier: Apache-2.0
// The IG view of the audit log (issue #6 item 4), for information-governance roles only
// (Access::audit); every call is itself audited by the pipeline.
//   GET  /AuditEvent                      search: patient, agent, date, outcome, subtype, _count
//   GET  /AuditEvent/{id}                 one record as a BALP-shaped AuditEvent
//   GET  /AuditEvent/$access-report       "who accessed my record" for one NHS number (JSON or HTML)
//   GET  /AuditEvent/$export              NDJSON of AuditEvents for a date range
//   GET  /audit/checkpoint                latest signed checkpoint (signed-note text)
//   GET  /audit/proof/inclusion           inclusion proof for a record (index, size)
//   GET  /audit/proof/consistency         consistency proof between two tree sizes
//   GET  /audit/alerts                    the review queue (status=open|reviewed|all)
//   POST /audit/alerts/{id}/review        mark an alert reviewed with an outcome
//   PUT  /audit/flagged-patients/{nhs}    flag a VIP or staff record for the alert rule
//   GET  /audit/flagged-patients          the records flagged that way (_count, _cursor)
//   DELETE /audit/flagged-patients/{nhs}  remove such a flag
// (A patient's objection to sharing, /audit/objections/{nhs}, is in objection_routes.h: it
// changes the record locator.)
#pragma once

#include <string>

#include "fhir/search_params.h"
#include "gateway/audit/log.h"
#include "gateway/http/router.h"
#include "gateway/sqlite/blocking_pool.h"

namespace gw::http {

using AsyncAudit = sqlite::BlockingPool<audit::Log>;

// Shared by the IG routes (here and objection_routes.h):
// an NHS number given as "9000000009" or "https://fhir.nhs.uk/Id/nhs-number|9000000009",
// checked (Modulus 11); the expression is `name`.
fhir::Result<std::string> nhs_number_param(std::string_view v, const char* name);
// Free text without leading and trailing white space: "   " is no note at all.
std::string trimmed(std::string_view s);

struct AuditRouteDeps {
  AsyncAudit& audit;
  std::string base_url;
  std::string observer;        // this gateway's name in AuditEvent.source.observer
  std::size_t max_page = 200;
  std::size_t export_max = 10000;
};

void add_audit_routes(Router& router, AuditRouteDeps deps);
// The parameters GET /AuditEvent takes, for the CapabilityStatement (the route reads them
// itself: any other is refused, whatever the handling).
void register_audit_search_params(fhir::SearchParamRegistry& registry);

}  // namespace gw::http
