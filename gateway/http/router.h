// SPDX-License-Identifier: Apache-2.0
// The route table: every endpoint the gateway serves, with what it needs from the pipeline and
// what it declares to the CapabilityStatement, so /metadata is generated from the same table
// that dispatches requests (STYLE.md: Orthanc's RegisterResources shape).
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "fhir/capability_statement.h"
#include "fhir/issue.h"
#include "gateway/auth/policy.h"
#include "gateway/http/request.h"
#include "gateway/http/response.h"

namespace gw::http {

using Handler = std::function<boost::asio::awaitable<Response>(Request&)>;

// Who may call a route (issue #5). Every route needs an authenticated caller unless it says
// `open`; `resource` routes are also checked against the role and scopes for their resource
// type and interaction before the handler runs (patient-level checks are the handler's).
enum class Access { open, authenticated, resource, audit };

struct RouteOptions {
  Access access = Access::resource;
  std::string auth_resource_type;  // type checked for `resource` access; defaults to resource_type
  auth::Interaction auth_interaction = auth::Interaction::read;
  bool fhir = true;        // response negotiated as FHIR JSON; _format/_pretty honoured
  bool json_body = false;  // body must be FHIR JSON; parsed by the pipeline after authentication
  bool loopback_only = false;  // e.g. /metrics unless metrics.allow_remote
  // CapabilityStatement declaration (empty = not declared).
  std::string resource_type;  // "" for system-level
  std::string interaction;    // read, vread, search-type, create, ...
  std::string operation;      // operation name without '$'
  std::string operation_definition;
  std::string profile;        // canonical profile for the resource type
  bool update_create = false; // an update to an unknown id creates it (updateCreate)
  std::string conditional_read;  // on a read: not-match (If-None-Match) or full-support (and If-Modified-Since)
};

struct Route {
  std::string method;
  std::string pattern;  // "/Patient/{id}"; "{x}" matches one segment
  std::vector<std::string> segments;
  Handler handler;
  RouteOptions options;
};

class Router {
 public:
  // Registers a route. Patterns must start with '/'. Not thread-safe: build at start-up.
  void add(std::string method, std::string pattern, Handler handler, RouteOptions options = {});

  struct Match {
    const Route* route = nullptr;
    std::vector<std::string> params;
    std::optional<fhir::Issue> error;  // 404/405 with a diagnostics text when no route fits
    std::string allow;                 // for 405: the methods that path accepts
  };
  // Thread-safe after start-up.
  Match match(std::string_view method, std::string_view path) const;

  std::vector<fhir::ResourceCapability> resource_capabilities() const;
  std::vector<fhir::OperationCapability> system_operations() const;
  const std::vector<Route>& routes() const { return routes_; }

 private:
  std::vector<Route> routes_;
};

}  // namespace gw::http
