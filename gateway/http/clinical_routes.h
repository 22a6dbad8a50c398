// SPDX-License-Identifier: Apache-2.0
// The records push sources delivered (store.db), served per patient behind the access policy
// (issue #4 item 7):
//   GET /Encounter?patient=          (date)
//   GET /Observation?patient=        (code, date)
//   GET /DiagnosticReport?patient=   (code, date)
//   POST /{Encounter|Observation|DiagnosticReport}/_search   the same in a form body; its
//                                    Bundle links through a page handle (search_pages.h), so
//                                    no NHS number appears in a URL
//   GET /{Encounter|Observation|DiagnosticReport|Location|Practitioner}/{id}   read: ETag,
//                                    Last-Modified, 304 as Patient's (LocatorApi::unchanged_for)
// A search names one patient, once (patient=, subject=Patient/, [base]/Patient/{id}, or
// :identifier with an NHS number) and covers every record merged into them; an unknown or
// hidden patient gets an empty Bundle. Entries coded in a sensitive category the caller's role
// may not see are withheld (not counted; an OperationOutcome warning in a search, 403 on a
// read; named in the audit record), and under break-glass every resource carries meta.security
// BTG, as on Patient and DocumentReference.
#pragma once

#include "fhir/search_params.h"
#include "gateway/http/locator_routes.h"
#include "gateway/http/router.h"
#include "gateway/store/async_store.h"

namespace gw::http {

struct ClinicalRouteDeps {
  LocatorRouteDeps locator;
  store::AsyncStore& store;
};

void register_clinical_search_params(fhir::SearchParamRegistry& registry);
void add_clinical_routes(Router& router, const fhir::SearchParamRegistry& registry, ClinicalRouteDeps deps);

}  // namespace gw::http
