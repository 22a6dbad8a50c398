// SPDX-License-Identifier: Apache-2.0
// Server-driven content negotiation (R4 http.html "Content Types and encodings"): the gateway
// produces FHIR JSON only, so the question is whether the client will take it. `_format`
// overrides Accept. XML or Turtle alone is answered with 406, never silently with JSON.
#pragma once

#include <optional>
#include <string_view>

#include "fhir/result.h"

namespace fhir {

inline constexpr std::string_view kFhirJson = "application/fhir+json; charset=utf-8";

struct ResponseFormat {
  bool pretty = false;
};

// `format_param` and `pretty_param` are the decoded _format/_pretty query values if present.
Result<ResponseFormat> negotiate_format(std::string_view accept_header,
                                        std::optional<std::string_view> format_param,
                                        std::optional<std::string_view> pretty_param);

// True for application/fhir+json, application/json and application/json+fhir, with any
// parameters (e.g. "; charset=utf-8"); used to answer 415 on writes.
bool is_json_media_type(std::string_view content_type);

}  // namespace fhir
