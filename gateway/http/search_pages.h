// SPDX-License-Identifier: Apache-2.0
// The page handles of POST _search (locator_routes.h): the parameters of a search sent in a
// form body are kept here, behind an opaque handle, so that the Bundle's self, next and
// previous links carry no search values (R4 search.html "Paging": the next link is opaque to
// clients; NHS numbers stay out of URLs and logs). A page is fetched with
// GET [base]/{type}?_getpages={handle}&_offset={n}, which runs the search again as its owner.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "fhir/json.h"
#include "fhir/query_string.h"
#include "fhir/result.h"
#include "fhir/search_params.h"
#include "gateway/auth/policy.h"
#include "gateway/http/request.h"

namespace gw::http {

// The query parameter that names a page handle (HAPI FHIR's name for the same thing).
inline constexpr std::string_view kPageHandleParam = "_getpages";

struct SearchPagesOptions {
  std::chrono::seconds ttl{600};  // a handle answers for this long after its search ran
  std::size_t capacity = 10000;   // handles kept at once; the oldest is given up first
};

// Thread-safe: handlers on every network thread share one instance.
class SearchPages {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;
  explicit SearchPages(SearchPagesOptions options = {}, Clock clock = &std::chrono::steady_clock::now);

  // Keeps the parameters `params` of a `type` search run by `owner` (without _offset: each
  // page link adds its own) and returns a new handle: 128 bits from OpenSSL's CSPRNG, as 32
  // hex digits. internal_error only when the CSPRNG fails.
  fhir::Result<std::string> keep(const auth::Principal& owner, std::string_view type, fhir::QueryParams params);

  // The parameters behind `handle` for a `type` search by `asker`: gone (410) when the handle
  // is unknown, expired, given up for a newer one or made by a search of another type;
  // forbidden (403) when it belongs to another user or client.
  fhir::Result<fhir::QueryParams> find(std::string_view handle, const auth::Principal& asker, std::string_view type);

  std::size_t size() const;

 private:
  struct Entry {
    std::string owner;
    std::string type;
    fhir::QueryParams params;
    std::chrono::steady_clock::time_point expires;
  };
  void drop_expired(std::chrono::steady_clock::time_point now);  // mu_ held

  const SearchPagesOptions options_;
  const Clock clock_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Entry> entries_;
  // Handles in the order they were made, which is also the order they expire in (one ttl for
  // all); may name handles already gone.
  std::deque<std::string> order_;
};

// How a search arrived, which decides how its Bundle's links are written: a GET search links
// to GET URLs carrying its parameters; a POST _search, and every page fetched through its
// handle, link through the handle only.
enum class SearchVia { get, post, page };

// The parameters behind GET [base]/{type}?_getpages=...&_offset=n: the search kept in `pages`
// with the link's _offset. Only _offset, _format and _pretty may come with the handle: anything
// else would be a different search under the same handle (invalid_search_parameter); the
// errors of SearchPages::find otherwise.
fhir::Result<fhir::QueryParams> page_params(SearchPages& pages, const Request& req, std::string_view type);

// Replaces the GET links make_searchset wrote in `bundle` with links through a page handle:
// `handle` for a page, a new one kept in `pages` for a POST _search; nothing for a GET search.
// `params` are the search's parameters.
fhir::Status link_through_handle(SearchPages& pages, const std::string& base_url, fhir::Json& bundle,
                                 const Request& req, std::string_view type, SearchVia via, std::string handle,
                                 const fhir::QueryParams& params, const fhir::SearchRequest& parsed, bool has_more);

// The links of a searchset served through page `handle`: self, first, previous and next as
// make_searchset writes them (fhir/bundle.h), each [base]/{type}?_getpages={handle}&_offset={n}.
fhir::Json page_links(const std::string& base_url, std::string_view type, std::string_view handle,
                      std::int64_t offset, std::int64_t count, bool has_more);

}  // namespace gw::http
