// SPDX-License-Identifier: Apache-2.0
// LocatorApi's header arithmetic (locator_api.h): HTTP-dates for Last-Modified and
// If-Modified-Since (RFC 9110 5.6.7), from and to meta.lastUpdated.
#include <doctest/doctest.h>

#include "gateway/http/locator_api.h"

using gw::http::LocatorApi;

TEST_CASE("LocatorApi: an HTTP-date is written as IMF-fixdate and read in all three RFC 9110 forms") {
  CHECK(LocatorApi::http_date(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT");
  CHECK(LocatorApi::http_date_seconds("Sun, 06 Nov 1994 08:49:37 GMT") == 784111777);
  CHECK(LocatorApi::http_date_seconds("Sunday, 06-Nov-94 08:49:37 GMT") == 784111777);
  CHECK(LocatorApi::http_date_seconds("Sun Nov  6 08:49:37 1994") == 784111777);
  CHECK_FALSE(LocatorApi::http_date_seconds("").has_value());
  CHECK_FALSE(LocatorApi::http_date_seconds("yesterday").has_value());
  CHECK_FALSE(LocatorApi::http_date_seconds("Sun, 06 Nov 1994 08:49:37 GMT trailing").has_value());
  CHECK_FALSE(LocatorApi::http_date_seconds(std::string(65, 'x')).has_value());
}

TEST_CASE("LocatorApi: Last-Modified is the second meta.lastUpdated falls in") {
  CHECK(LocatorApi::last_modified_seconds("1994-11-06T08:49:37.999Z") == 784111777);
  CHECK(LocatorApi::last_modified_seconds("1994-11-06T09:49:37+01:00") == 784111777);
  CHECK_FALSE(LocatorApi::last_modified_seconds("").has_value());
  CHECK_FALSE(LocatorApi::last_modified_seconds("not a date").has_value());
}
