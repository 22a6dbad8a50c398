// SPDX-License-Identifier: Apache-2.0
// The FHIR R4 (4.0.1) resource type names, so the server can tell "not a FHIR type" from
// "a FHIR type this gateway does not serve" in its 404 diagnostics.
#pragma once

#include <string_view>

namespace fhir {

bool is_r4_resource_type(std::string_view name);

}  // namespace fhir
