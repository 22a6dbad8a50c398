// SPDX-License-Identifier: Apache-2.0
// HTTP-dates (RFC 9110 5.6.7 IMF-fixdate, "Sun, 06 Nov 1994 08:49:37 GMT"): the Date header
// the server writes on every response and the Last-Modified of FHIR reads.
#pragma once

#include <ctime>
#include <string>

namespace gw::net {

// `t` (Unix seconds) as an IMF-fixdate, always in UTC with English day and month names.
inline std::string format_http_date(std::time_t t) {
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[40];
  // strftime's %a and %b are the English names in the C locale, which the gateway never changes.
  std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  return buf;
}

}  // namespace gw::net
