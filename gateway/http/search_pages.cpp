// SPDX-License-Identifier: Apache-2.0
#include "gateway/http/search_pages.h"

#include <algorithm>
#include <array>
#include <optional>

#include <openssl/rand.h>

namespace gw::http {

using fhir::ErrorCode;
using fhir::Issue;
using fhir::Json;

namespace {

// Who may use a handle: the user or system (token subject, or the certificate's source) and
// the client it came through. A handle is a search someone ran; anyone else fetching its pages
// would run that search as themselves without having sent it.
std::string owner_key(const auth::Principal& p) {
  std::string key = p.kind == auth::Principal::Kind::system ? "system\n" : "user\n";
  key += p.subject;
  key += '\n';
  key += p.client_id;
  return key;
}

Issue gone() {
  return Issue::make(ErrorCode::gone,
                     "this search page has expired or is unknown: pages of a POST _search are kept for a limited time; "
                     "send the search again",
                     std::string(kPageHandleParam));
}

Json link(std::string_view relation, std::string url) {
  Json l = Json::object();
  l.set("relation", Json::string(std::string(relation)));
  l.set("url", Json::string(std::move(url)));
  return l;
}

}  // namespace

SearchPages::SearchPages(SearchPagesOptions options, Clock clock) : options_(options), clock_(std::move(clock)) {}

fhir::Result<std::string> SearchPages::keep(const auth::Principal& owner, std::string_view type,
                                            fhir::QueryParams params) {
  std::array<unsigned char, 16> bytes{};
  if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1)
    return Issue::make(ErrorCode::internal_error, "could not make a search page handle");
  static constexpr char kHex[] = "0123456789abcdef";
  std::string handle;
  for (unsigned char b : bytes) {
    handle.push_back(kHex[b >> 4]);
    handle.push_back(kHex[b & 0xf]);
  }
  params.erase(std::remove_if(params.begin(), params.end(), [](const auto& kv) { return kv.first == "_offset"; }),
               params.end());
  const auto now = clock_();
  std::lock_guard lock(mu_);
  drop_expired(now);
  while (entries_.size() >= options_.capacity && !order_.empty()) {
    entries_.erase(order_.front());
    order_.pop_front();
  }
  entries_[handle] = Entry{owner_key(owner), std::string(type), std::move(params), now + options_.ttl};
  order_.push_back(handle);
  return handle;
}

fhir::Result<fhir::QueryParams> SearchPages::find(std::string_view handle, const auth::Principal& asker,
                                                  std::string_view type) {
  const auto now = clock_();
  std::lock_guard lock(mu_);
  drop_expired(now);
  auto it = entries_.find(std::string(handle.substr(0, 64)));
  if (it == entries_.end() || it->second.type != type) return gone();
  if (it->second.owner != owner_key(asker))
    return Issue::make(ErrorCode::forbidden,
                       "this search page belongs to a search another user or client ran; send your own search",
                       std::string(kPageHandleParam));
  return it->second.params;
}

std::size_t SearchPages::size() const {
  std::lock_guard lock(mu_);
  return entries_.size();
}

void SearchPages::drop_expired(std::chrono::steady_clock::time_point now) {
  while (!order_.empty()) {
    auto it = entries_.find(order_.front());
    if (it != entries_.end() && it->second.expires > now) break;
    if (it != entries_.end()) entries_.erase(it);
    order_.pop_front();
  }
}

fhir::Result<fhir::QueryParams> page_params(SearchPages& pages, const Request& req, std::string_view type) {
  std::string_view handle;
  std::optional<std::string> offset;
  for (const auto& [k, v] : *req.query) {
    if (k == kPageHandleParam && handle.empty()) {
      handle = v;
    } else if (k == "_offset" && !offset) {
      offset = v;
    } else if (k != "_format" && k != "_pretty") {
      return Issue::make(ErrorCode::invalid_search_parameter,
                         "a page link carries its search: send only _getpages and _offset (and _format or "
                         "_pretty), as the link gives them",
                         k.substr(0, 64));
    }
  }
  auto kept = pages.find(handle, *req.principal, type);
  if (!kept) return kept;
  if (offset) kept->emplace_back("_offset", *offset);
  return kept;
}

fhir::Status link_through_handle(SearchPages& pages, const std::string& base_url, Json& bundle, const Request& req,
                                 std::string_view type, SearchVia via, std::string handle,
                                 const fhir::QueryParams& params, const fhir::SearchRequest& parsed, bool has_more) {
  if (via == SearchVia::get) return fhir::Ok{};
  if (via == SearchVia::post) {
    auto made = pages.keep(*req.principal, type, params);
    if (!made) return std::move(made).issue();
    handle = std::move(*made);
  }
  bundle.set("link", page_links(base_url, type, handle, parsed.offset, parsed.count, has_more));
  return fhir::Ok{};
}

Json page_links(const std::string& base_url, std::string_view type, std::string_view handle, std::int64_t offset,
                std::int64_t count, bool has_more) {
  const std::string stem =
      base_url + "/" + std::string(type) + "?" + std::string(kPageHandleParam) + "=" + std::string(handle) + "&_offset=";
  auto at = [&stem](std::int64_t o) { return stem + std::to_string(o); };
  Json links = Json::array();
  links.push_back(link("self", at(offset)));
  links.push_back(link("first", at(0)));
  if (offset > 0) links.push_back(link("previous", at(std::max<std::int64_t>(0, offset - count))));
  if (has_more && count > 0) links.push_back(link("next", at(offset + count)));
  return links;
}

}  // namespace gw::http
