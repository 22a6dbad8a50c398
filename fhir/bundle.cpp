// SPDX-License-Identifier: Apache-2.0
#include "fhir/bundle.h"

#include <algorithm>

#include "fhir/date_range.h"

namespace fhir {

std::string full_url(const std::string& base_url, const Json& resource) {
  std::string_view type = resource.string_at("resourceType");
  std::string_view id = resource.string_at("id");
  if (type.empty() || id.empty()) return {};
  return base_url + "/" + std::string(type) + "/" + std::string(id);
}

namespace {

Json link(std::string relation, std::string url) {
  Json l = Json::object();
  l.set("relation", Json::string(std::move(relation)));
  l.set("url", Json::string(std::move(url)));
  return l;
}

Json entry(const std::string& base_url, Json resource, const char* mode) {
  Json e = Json::object();
  std::string url = full_url(base_url, resource);
  if (!url.empty()) e.set("fullUrl", Json::string(std::move(url)));
  e.set("resource", std::move(resource));
  Json search = Json::object();
  search.set("mode", Json::string(mode));
  e.set("search", std::move(search));
  return e;
}

}  // namespace

Json make_searchset(const std::string& base_url, const SearchRequest& request, SearchsetPage page,
                    std::int64_t now_ms) {
  Json b = Json::object();
  b.set("resourceType", Json::string("Bundle"));
  Json meta = Json::object();
  meta.set("lastUpdated", Json::string(format_instant(now_ms)));
  b.set("meta", std::move(meta));
  b.set("type", Json::string("searchset"));
  if (page.total) b.set("total", Json::integer(*page.total));

  const std::string stem = base_url + "/" + request.resource_type + "?" + request.canonical_query();
  auto at = [&](std::int64_t offset) { return stem + "&_offset=" + std::to_string(offset); };
  Json links = Json::array();
  links.push_back(link("self", at(request.offset)));
  links.push_back(link("first", at(0)));
  if (request.offset > 0)
    links.push_back(link("previous", at(std::max<std::int64_t>(0, request.offset - request.count))));
  if (page.has_more && request.count > 0) links.push_back(link("next", at(request.offset + request.count)));
  b.set("link", std::move(links));

  if (!page.matches.empty() || !page.includes.empty() || !page.outcomes.empty()) {
    Json entries = Json::array();
    for (Json& r : page.matches) entries.push_back(entry(base_url, std::move(r), "match"));
    for (Json& r : page.includes) entries.push_back(entry(base_url, std::move(r), "include"));
    for (Json& r : page.outcomes) entries.push_back(entry(base_url, std::move(r), "outcome"));
    b.set("entry", std::move(entries));
  }
  return b;
}

}  // namespace fhir
