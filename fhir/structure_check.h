// SPDX-License-Identifier: Apache-2.0
// Structural checks of a parsed FHIR R4 JSON resource (json.html rules): resourceType is a
// concrete R4 type, id has the R4 id shape, no empty strings/arrays/objects, null only as an
// array placeholder for primitive extensions. Every problem is collected with its path, in the
// manner of an error reporter, rather than stopping at the first.
#pragma once

#include <string_view>
#include <vector>

#include "fhir/issue.h"
#include "fhir/json.h"

namespace fhir {

// Returns the issues found (empty when the resource passes). `expected_type` (may be empty)
// is the type the URL names; a mismatch is reported.
std::vector<Issue> check_structure(const Json& resource, std::string_view expected_type = {});

// R4 id: [A-Za-z0-9\-\.]{1,64}
bool is_valid_id(std::string_view id);

}  // namespace fhir
