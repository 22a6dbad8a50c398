// SPDX-License-Identifier: Apache-2.0
// CORS (WHATWG Fetch standard, "CORS protocol") for browser apps, such as SMART web apps, on
// the origins the operator lists in [server.cors]: the pipeline answers their preflights and
// marks the responses they may read. No origin listed: no CORS headers at all.
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/http/request.h"
#include "gateway/http/response.h"

namespace gw::http {

struct CorsOptions {
  // Serialised origins, compared exactly with the Origin header: "https://app.example.nhs.uk",
  // "http://localhost:3000". config::validate checks their form.
  std::vector<std::string> allowed_origins;
  std::chrono::seconds max_age{600};  // how long a browser may reuse a preflight's answer
};

class Cors {
 public:
  explicit Cors(CorsOptions options) : options_(std::move(options)) {}

  // An OPTIONS request with Origin and Access-Control-Request-Method: a browser asking whether
  // it may send the request it describes.
  static bool is_preflight(const Request& req);

  // The answer to a preflight: 204 with the methods, request headers and cache time allowed
  // when the origin is listed; else 403 with an OperationOutcome (a browser then refuses to
  // send the request), or 400 when Origin appears more than once. Credentials mode is never
  // allowed: tokens travel as bearer headers, which a browser sends without it. Notes the
  // Origin and requested method in the request's audit record.
  Response preflight(Request& req) const;

  // Adds to a response the headers that let a page on an allowed origin read it (and its
  // Location, ETag, ... headers); leaves responses to other requests (and to requests with
  // more than one Origin) as they are.
  void decorate(const Request& req, Response& r) const;

 private:
  bool allowed(std::string_view origin) const;

  CorsOptions options_;
};

}  // namespace gw::http
