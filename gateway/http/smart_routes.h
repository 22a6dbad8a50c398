// SPDX-License-Identifier: Apache-2.0
// GET /.well-known/smart-configuration (SMART App Launch v2 discovery): always
// application/json, no authentication. The gateway is a resource server; the endpoints named
// are the configured identity provider's.
#pragma once

#include "gateway/config/config.h"
#include "gateway/http/router.h"

namespace gw::http {

void add_smart_configuration_route(Router& router, const config::Config& cfg);

}  // namespace gw::http
