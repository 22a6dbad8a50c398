// SPDX-License-Identifier: Apache-2.0
#include "gateway/http/cors.h"

#include <algorithm>

namespace gw::http {
namespace {

// The methods the route table uses. GET, HEAD and POST need no preflight but are listed so
// that one answer covers every request a page may make.
constexpr std::string_view kAllowMethods = "GET, HEAD, POST, PUT, DELETE";

// The request headers the gateway reads (a browser preflights any outside the CORS-safelisted
// few, and Authorization always).
constexpr std::string_view kAllowHeaders =
    "Authorization, Accept, Content-Type, Prefer, If-Match, If-None-Match, If-Modified-Since, X-Request-ID, "
    "X-Correlation-ID, X-Break-Glass-Reason, X-Break-Glass-Justification";

// The response headers a page may read besides the CORS-safelisted ones (Content-Type, ...):
// those the FHIR API and the gateway's own conventions give meaning to.
constexpr std::string_view kExposeHeaders =
    "Location, ETag, Last-Modified, X-Request-ID, X-Correlation-ID, X-Emergency-Access, X-Total-Count, Link, "
    "Retry-After, WWW-Authenticate";

// A client-supplied header value as the audit note keeps it: visible ASCII, at most 200 bytes.
std::string printable(std::string_view v) {
  std::string out(v.substr(0, 200));
  for (char& c : out)
    if (c < 0x20 || c > 0x7e) c = '?';
  if (v.size() > 200) out += "...";
  return out;
}

}  // namespace

bool Cors::is_preflight(const Request& req) {
  return req.method == "OPTIONS" && !req.header("origin").empty() &&
         !req.header("access-control-request-method").empty();
}

bool Cors::allowed(std::string_view origin) const {
  return std::find(options_.allowed_origins.begin(), options_.allowed_origins.end(), origin) !=
         options_.allowed_origins.end();
}

Response Cors::preflight(Request& req) const {
  const std::string_view origin = req.header("origin");
  // Which site probed the API, for the IG officer reading the record.
  req.audit.note = "CORS preflight from Origin \"" + printable(origin) + "\" for " +
                   printable(req.header("access-control-request-method"));
  if (req.header_count("origin") > 1) {
    // One Origin per request (RFC 6454 section 7.3); which one a browser meant is unknowable.
    req.audit.note += " (refused: more than one Origin)";
    Response r = error_response(fhir::Issue::make(
        fhir::ErrorCode::bad_request, "A request carries at most one Origin header (RFC 6454 section 7.3)"));
    if (!options_.allowed_origins.empty()) r.set_header("Vary", "Origin");
    return r;
  }
  if (!allowed(origin)) {
    Response r = error_response(fhir::Issue::make(
        fhir::ErrorCode::forbidden,
        "Cross-origin requests from this origin are not allowed; the gateway's operators list the web apps that "
        "may call it (server.cors.allowed_origins)"));
    // The answer depends on Origin: a cache must not hand it to a page on another.
    if (!options_.allowed_origins.empty()) r.set_header("Vary", "Origin");
    return r;
  }
  Response r;
  r.status = 204;
  r.set_header("Access-Control-Allow-Origin", std::string(origin));
  r.set_header("Access-Control-Allow-Methods", std::string(kAllowMethods));
  r.set_header("Access-Control-Allow-Headers", std::string(kAllowHeaders));
  r.set_header("Access-Control-Max-Age", std::to_string(options_.max_age.count()));
  r.set_header("Vary", "Origin");
  return r;
}

void Cors::decorate(const Request& req, Response& r) const {
  if (options_.allowed_origins.empty()) return;
  const std::string_view origin = req.header("origin");
  if (origin.empty()) return;
  r.set_header("Vary", "Origin");
  if (!allowed(origin) || req.header_count("origin") > 1) return;
  r.set_header("Access-Control-Allow-Origin", std::string(origin));
  r.set_header("Access-Control-Expose-Headers", std::string(kExposeHeaders));
}

}  // namespace gw::http
