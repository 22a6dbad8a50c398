// SPDX-License-Identifier: Apache-2.0
#include "gateway/http/router.h"

#include <algorithm>
#include <map>
#include <stdexcept>

#include "fhir/resource_types.h"

namespace gw::http {
namespace {

std::vector<std::string> split_path(std::string_view path) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < path.size()) {
    if (path[i] == '/') { ++i; continue; }
    std::size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    out.emplace_back(path.substr(i, j - i));
    i = j;
  }
  return out;
}

bool is_capture(const std::string& seg) { return seg.size() > 2 && seg.front() == '{' && seg.back() == '}'; }

bool segments_match(const Route& r, const std::vector<std::string>& segs, std::vector<std::string>& params) {
  if (r.segments.size() != segs.size()) return false;
  params.clear();
  for (std::size_t i = 0; i < segs.size(); ++i) {
    if (is_capture(r.segments[i])) params.push_back(segs[i]);
    else if (r.segments[i] != segs[i]) return false;
  }
  return true;
}

}  // namespace

void Router::add(std::string method, std::string pattern, Handler handler, RouteOptions options) {
  Route r;
  r.segments = split_path(pattern);
  r.method = std::move(method);
  r.pattern = std::move(pattern);
  r.handler = std::move(handler);
  r.options = std::move(options);
  if (r.options.access == Access::resource && r.options.auth_resource_type.empty())
    r.options.auth_resource_type = r.options.resource_type;
  // A route that discloses resources must name what it discloses: a broken invariant, so
  // start-up fails loudly rather than serving an unchecked route.
  if (r.options.access == Access::resource && r.options.auth_resource_type.empty())
    throw std::logic_error("route " + r.method + " " + r.pattern + " needs auth_resource_type or access != resource");
  // A declared operation goes into the CapabilityStatement, where its definition is a required
  // canonical: an empty one would make GET /metadata invalid FHIR.
  if (!r.options.operation.empty() && r.options.operation_definition.empty())
    throw std::logic_error("route " + r.method + " " + r.pattern + " declares operation " + r.options.operation +
                           " without operation_definition");
  routes_.push_back(std::move(r));
}

Router::Match Router::match(std::string_view method, std::string_view path) const {
  Match m;
  const std::vector<std::string> segs = split_path(path);
  std::vector<std::string> params;
  // R4 history and vread URLs ([base]/_history, [type]/_history, [type]/[id]/_history[/vid]):
  // an interaction this server does not offer, which a client should hear as "not supported"
  // rather than "no such resource" (the resource itself may well exist), unless a route names
  // "_history" itself (a vread of the current version). Checked before the other routes:
  // "_history" is no FHIR id, so /Patient/_history is not a read of one.
  if (std::find(segs.begin(), segs.end(), "_history") != segs.end()) {
    const bool declared = std::any_of(routes_.begin(), routes_.end(), [&segs, &params](const Route& r) {
      return std::find(r.segments.begin(), r.segments.end(), "_history") != r.segments.end() &&
             segments_match(r, segs, params);
    });
    if (!declared) {
      m.error = fhir::Issue::make(fhir::ErrorCode::unsupported_interaction,
                                  "History (_history) is not supported: only the current version of a resource is "
                                  "served, at [type]/[id] (a version read only where GET /metadata lists vread, and "
                                  "only of the current version)");
      return m;
    }
  }
  std::vector<std::string> allowed;
  for (const Route& r : routes_) {
    if (!segments_match(r, segs, params)) continue;
    if (r.method == method) {
      m.route = &r;
      m.params = params;
      return m;
    }
    if (std::find(allowed.begin(), allowed.end(), r.method) == allowed.end()) allowed.push_back(r.method);
  }
  if (!allowed.empty()) {
    for (const std::string& a : allowed) {
      if (!m.allow.empty()) m.allow += ", ";
      m.allow += a;
    }
    m.error = fhir::Issue::make(fhir::ErrorCode::method_not_allowed,
                                std::string(method) + " is not supported on this URL; allowed: " + m.allow);
    return m;
  }
  if (!segs.empty() && !segs[0].empty() && segs[0][0] >= 'A' && segs[0][0] <= 'Z') {
    const std::string type = segs[0].substr(0, 64);
    // A type this gateway serves, at a URL it does not (e.g. /Patient/{id}/$everything).
    const bool served = std::any_of(routes_.begin(), routes_.end(), [&type](const Route& r) {
      return r.pattern.rfind("/" + type, 0) == 0 && (r.pattern.size() == type.size() + 1 || r.pattern[type.size() + 1] == '/');
    });
    if (served) {
      m.error = fhir::Issue::make(fhir::ErrorCode::not_found,
                                  "No such endpoint under /" + type + "; GET /metadata lists the interactions served");
      return m;
    }
    m.error = fhir::is_r4_resource_type(type)
                  ? fhir::Issue::make(fhir::ErrorCode::unknown_resource_type,
                                      "Resource type " + type + " is not served by this gateway; GET /metadata "
                                      "lists the supported types")
                  : fhir::Issue::make(fhir::ErrorCode::unknown_resource_type,
                                      type + " is not a FHIR R4 resource type");
    return m;
  }
  m.error = fhir::Issue::make(fhir::ErrorCode::not_found, "No such endpoint; GET /metadata lists what this server offers");
  return m;
}

std::vector<fhir::ResourceCapability> Router::resource_capabilities() const {
  std::map<std::string, fhir::ResourceCapability> by_type;
  for (const Route& r : routes_) {
    const RouteOptions& o = r.options;
    if (o.resource_type.empty()) continue;
    fhir::ResourceCapability& rc = by_type[o.resource_type];
    rc.type = o.resource_type;
    if (!o.profile.empty()) rc.profile = o.profile;
    if (!o.interaction.empty() &&
        std::find(rc.interactions.begin(), rc.interactions.end(), o.interaction) == rc.interactions.end())
      rc.interactions.push_back(o.interaction);
    if (!o.operation.empty()) rc.operations.push_back({o.operation, o.operation_definition});
    rc.update_create = rc.update_create || o.update_create;
    if (!o.conditional_read.empty()) rc.conditional_read = o.conditional_read;
  }
  std::vector<fhir::ResourceCapability> out;
  for (auto& [type, rc] : by_type) out.push_back(std::move(rc));
  return out;
}

std::vector<fhir::OperationCapability> Router::system_operations() const {
  std::vector<fhir::OperationCapability> out;
  for (const Route& r : routes_)
    if (r.options.resource_type.empty() && !r.options.operation.empty())
      out.push_back({r.options.operation, r.options.operation_definition});
  return out;
}

}  // namespace gw::http
