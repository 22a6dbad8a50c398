// SPDX-License-Identifier: Apache-2.0
// Bundle builders for responses: searchset pages with self/first/previous/next links and
// total (R4 search.html "Paging"). fullUrl and links are absolute, built from the configured
// public base URL, never from the request's Host header.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "fhir/json.h"
#include "fhir/search_params.h"

namespace fhir {

struct SearchsetPage {
  std::vector<Json> matches;   // this page's matching resources (search.mode = match)
  std::vector<Json> includes;  // _include/_revinclude results (search.mode = include)
  std::optional<std::int64_t> total;  // matches only, across all pages; nullopt = not known
  bool has_more = false;       // another page follows this one
  std::vector<Json> outcomes;  // OperationOutcomes about the search (search.mode = outcome),
                               // e.g. entries withheld under the sensitivity policy
};

// `base_url` has no trailing slash. `now_ms` stamps meta.lastUpdated.
Json make_searchset(const std::string& base_url, const SearchRequest& request, SearchsetPage page,
                    std::int64_t now_ms);

// base + "/" + resourceType + "/" + id of `resource` (empty when it has no id).
std::string full_url(const std::string& base_url, const Json& resource);

}  // namespace fhir
