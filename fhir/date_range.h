// SPDX-License-Identifier: Apache-2.0
// FHIR partial dates and dateTimes as half-open UTC ranges, and the R4 search comparison
// rules (search.html "date"): "2010" means the whole of 2010, "2010-10-21T10:00Z" one minute.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "fhir/result.h"

namespace fhir {

// [begin, end) in seconds since the Unix epoch, UTC.
struct DateRange {
  std::int64_t begin = 0;
  std::int64_t end = 0;
  friend bool operator==(const DateRange&, const DateRange&) = default;
};

// Search comparators (http://hl7.org/fhir/search-comparator).
enum class Prefix { eq, ne, gt, lt, ge, le, sa, eb, ap };

std::string_view prefix_name(Prefix p);

// Parses YYYY, YYYY-MM, YYYY-MM-DD, or YYYY-MM-DDThh:mm[:ss[.fff]][Z|(+|-)hh:mm]. A value
// without a zone is read as UTC. Fails with invalid_value naming what was wrong.
Result<DateRange> parse_fhir_date(std::string_view text);

// True when a resource's value `target` satisfies `prefix param` (R4 search.html 3.1.1.4.1).
// `now` (epoch seconds) only matters for `ap`, whose tolerance is 10% of the gap to now.
bool date_matches(Prefix prefix, const DateRange& param, const DateRange& target, std::int64_t now);

}  // namespace fhir

namespace fhir {
// Formats epoch milliseconds as an R4 instant, e.g. "2026-11-23T09:41:07.123Z".
std::string format_instant(std::int64_t epoch_ms);
}  // namespace fhir
