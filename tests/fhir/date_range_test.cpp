// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include "fhir/date_range.h"

using fhir::DateRange;
using fhir::Prefix;

namespace {
DateRange d(const char* s) {
  auto r = fhir::parse_fhir_date(s);
  REQUIRE(r.ok());
  return *r;
}
}  // namespace

TEST_CASE("Dates: partial dates are ranges at their precision") {
  CHECK(d("2010").begin == 1262304000);
  CHECK(d("2010").end == 1293840000);
  CHECK(d("2012-02").end - d("2012-02").begin == 29 * 86400);  // leap year
  CHECK(d("2010-10-21").end - d("2010-10-21").begin == 86400);
  CHECK(d("2010-10-21T10:00Z").end - d("2010-10-21T10:00Z").begin == 60);
  CHECK(d("2010-10-21T10:00:05Z").end - d("2010-10-21T10:00:05Z").begin == 1);
  CHECK(d("2010-10-21T11:00:00+01:00") == d("2010-10-21T10:00:00Z"));
  CHECK(d("2010-10-21T10:00:00.123Z") == d("2010-10-21T10:00:00Z"));
}

TEST_CASE("Dates: malformed dates say what is wrong") {
  for (const char* bad : {"10", "2010-1", "2010-13", "2010-02-30", "2010-10-21T25:00Z", "2010-10-21X",
                          "2010-10-21T10:00+1", "201a"}) {
    CAPTURE(bad);
    auto r = fhir::parse_fhir_date(bad);
    REQUIRE_FALSE(r.ok());
    CHECK(r.issue().code == fhir::ErrorCode::invalid_value);
    CHECK(r.issue().diagnostics.find("Invalid date") == 0);
  }
}

TEST_CASE("Dates: search prefixes compare ranges as R4 search.html defines") {
  const DateRange year = d("2010");
  const std::int64_t now = d("2026-01-01").begin;
  CHECK(fhir::date_matches(Prefix::eq, year, d("2010-06-01"), now));
  CHECK_FALSE(fhir::date_matches(Prefix::eq, year, d("2011-01-01"), now));
  CHECK(fhir::date_matches(Prefix::ne, year, d("2011-01-01"), now));
  CHECK(fhir::date_matches(Prefix::gt, year, d("2011-01-01"), now));
  CHECK_FALSE(fhir::date_matches(Prefix::gt, year, d("2010-12-31"), now));
  CHECK(fhir::date_matches(Prefix::ge, year, d("2010-12-31"), now));
  CHECK(fhir::date_matches(Prefix::lt, year, d("2009-12-31"), now));
  CHECK(fhir::date_matches(Prefix::le, year, d("2010-01-01"), now));
  CHECK_FALSE(fhir::date_matches(Prefix::le, year, d("2011-01-01"), now));
  CHECK(fhir::date_matches(Prefix::sa, year, d("2011-01-01"), now));
  CHECK_FALSE(fhir::date_matches(Prefix::sa, year, d("2010-12-31"), now));
  CHECK(fhir::date_matches(Prefix::eb, year, d("2009-12-31"), now));
  // ap: 10% of the 16-year gap to now is about 1.6 years either side.
  CHECK(fhir::date_matches(Prefix::ap, d("2010-06-01"), d("2011-06-01"), now));
  CHECK_FALSE(fhir::date_matches(Prefix::ap, d("2010-06-01"), d("2014-06-01"), now));
}

TEST_CASE("Dates: instants format as R4 instant text") {
  CHECK(fhir::format_instant(0) == "1970-01-01T00:00:00.000Z");
  CHECK(fhir::format_instant(1795427267123) == "2026-11-23T09:47:47.123Z");
}
