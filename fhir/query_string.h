// SPDX-License-Identifier: Apache-2.0
// Decoding of URL query strings and application/x-www-form-urlencoded bodies into ordered
// name/value pairs (FHIR search input, both GET [type]?.. and POST [type]/_search).
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fhir/result.h"

namespace fhir {

using QueryParams = std::vector<std::pair<std::string, std::string>>;

struct QueryLimits {
  std::size_t max_bytes = 8192;
  std::size_t max_params = 64;
  std::string_view what = "Query string";  // how errors name the text: "Form body" for POST _search
  // The answer to text over max_bytes: part of the URL (414), or a POST _search body (413).
  ErrorCode too_long = ErrorCode::uri_too_long;
};

// Percent-decodes `s` ("+" becomes a space when `plus_is_space`). Fails on a truncated or
// non-hex escape, on a decoded NUL, and on decoded text that is not UTF-8; the error texts
// name `s` as `what` ("query", "path").
Result<std::string> percent_decode(std::string_view s, bool plus_is_space = true, std::string_view what = "query");

// Splits on '&', then the first '='; decodes names and values. Empty pieces are skipped.
Result<QueryParams> parse_query_string(std::string_view query, const QueryLimits& limits = {});

// Percent-encodes for use in a query component (RFC 3986 unreserved characters pass).
std::string percent_encode(std::string_view s);

// True when `s` is well-formed UTF-8 (no overlongs, no surrogates).
bool is_valid_utf8(std::string_view s);

// `s` with each byte that does not belong to a well-formed UTF-8 character replaced by U+FFFD
// (the same text when is_valid_utf8(s)): for text that must be UTF-8 whatever was received,
// such as an audit record, which cannot refuse the request it records.
std::string valid_utf8(std::string_view s);

// Length of the longest prefix of `s` of at most `max` bytes that does not split a UTF-8
// character (for cutting text to a byte limit: every cut of received text that is kept, in an
// audit record or an error message, goes through here).
std::size_t utf8_cut(std::string_view s, std::size_t max);

}  // namespace fhir
