// SPDX-License-Identifier: Apache-2.0
// Routes that carry no patient data: /healthz, /readyz, /metrics, GET [base]/metadata and the
// $validate operation (structure and element checks, fhir/element_check.h). Registered by main before the listeners start.
#pragma once

#include <string>

#include "fhir/capability_statement.h"
#include "fhir/search_params.h"
#include "gateway/http/router.h"
#include "gateway/observe/health.h"
#include "gateway/observe/metrics.h"

namespace gw::http {

struct SystemRouteDeps {
  observe::Health& health;
  observe::Metrics& metrics;
  const fhir::SearchParamRegistry& search_params;
  fhir::ServerDescription server;
  bool metrics_allow_remote = false;
};

// Adds the operational routes and $validate.
void add_system_routes(Router& router, const SystemRouteDeps& deps);

// Adds GET /metadata. Call after every other route is registered: the CapabilityStatement is
// generated once from the router's final table. `router` must outlive the server.
void add_metadata_route(Router& router, const SystemRouteDeps& deps);

}  // namespace gw::http
