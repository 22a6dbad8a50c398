// SPDX-License-Identifier: Apache-2.0
// Element checks of a parsed FHIR R4 JSON resource against the table generated from the official
// R4 JSON schema (r4_elements.h): unknown elements, wrong JSON kinds, array vs single, missing
// required elements, codes outside a required binding, date/time/id/uri formats. Runs after
// structure_check (which owns resourceType, the resource id, empty values and null) on $validate
// and on every resource an adapter hands to the gateway.
#pragma once

#include <string_view>
#include <vector>

#include "fhir/issue.h"
#include "fhir/json.h"
#include "fhir/r4_elements.h"

namespace fhir {

// Returns every element-level issue (at most 100), each with its path ("Observation.status",
// "Bundle.entry[0].resource.code.coding[1].system"); empty when the resource passes.
// Resources of a type the table does not cover (r4::find_type), wherever they occur, get no
// element checks: only check_structure applies to them. Thread-safe; no allocation beyond the
// issues and paths.
std::vector<Issue> check_elements(const Json& resource);

// check_structure(resource, expected_type) followed by check_elements(resource): what
// $validate reports and what ingest refuses.
std::vector<Issue> check_structure_and_elements(const Json& resource, std::string_view expected_type = {});

// Whether the element table covers resources of `type`.
bool elements_known(std::string_view type);

// The lexical rules of the R4 schema for a primitive held as a JSON string: date, dateTime,
// instant and time (the schema's patterns), id, code (no leading, trailing or double
// whitespace), uri/url/canonical (no whitespace), oid and uuid. Other primitives: true.
// Whitespace means ASCII whitespace here.
bool matches_r4_format(r4::Primitive type, std::string_view text);

}  // namespace fhir
