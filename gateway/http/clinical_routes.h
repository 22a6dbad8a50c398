// SPDX-License-Identifier: Apache-2.0
// The records push sources delivered (store.db), served per patient behind the access policy
// (issue #4 item 7):
//   GET /Encounter?patient=          (date)
//   GET /Observation?patient=        (code, date)
//   GET /DiagnosticReport?patient=   (code, date)
//   GET /{Encounter|Observation|DiagnosticReport|Location|Practitioner}/{id}
// A search names one patient (patient=, subject=Patient/, or :identifier with an NHS number)
// and covers every record merged into them; an unknown or hidden patient gets an empty Bundle.
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
