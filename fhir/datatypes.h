// SPDX-License-Identifier: Apache-2.0
// Builders for the FHIR datatypes every mapping writes (Coding, CodeableConcept, Identifier),
// so the element order and the omission of empty optional elements are the same everywhere.
#pragma once

#include <string_view>

#include "fhir/json.h"

namespace fhir {

inline Json text(std::string_view s) { return Json::string(std::string(s)); }

// {"system", "code", "display"}; display left out when empty.
Json coding(std::string_view system, std::string_view code, std::string_view display = {});
// {"coding": [coding]}.
Json codeable_concept(Json coding);
// {"system", "value"}.
Json identifier(std::string_view system, std::string_view value);

}  // namespace fhir
