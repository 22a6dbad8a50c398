// SPDX-License-Identifier: Apache-2.0
#include "fhir/date_range.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace fhir {
namespace {

bool digits(std::string_view s, std::size_t pos, std::size_t n, int& out) {
  if (pos + n > s.size()) return false;
  int v = 0;
  for (std::size_t i = pos; i < pos + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (s[i] - '0');
  }
  out = v;
  return true;
}

Issue bad_date(std::string_view text, std::string_view why) {
  std::string shown(text.substr(0, 40));
  return Issue::make(ErrorCode::invalid_value,
                     "Invalid date '" + shown + "': " + std::string(why) +
                         " (expected YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss][Z|+hh:mm])");
}

std::int64_t epoch_seconds(int y, unsigned m, unsigned d) {
  using namespace std::chrono;
  sys_days days{year{y} / month{m} / day{d}};
  return static_cast<std::int64_t>(days.time_since_epoch().count()) * 86400;
}

}  // namespace

std::string_view prefix_name(Prefix p) {
  switch (p) {
    case Prefix::eq: return "eq";
    case Prefix::ne: return "ne";
    case Prefix::gt: return "gt";
    case Prefix::lt: return "lt";
    case Prefix::ge: return "ge";
    case Prefix::le: return "le";
    case Prefix::sa: return "sa";
    case Prefix::eb: return "eb";
    case Prefix::ap: return "ap";
  }
  return "eq";
}

Result<DateRange> parse_fhir_date(std::string_view s) {
  using namespace std::chrono;
  int y = 0, mo = 1, d = 1;
  if (!digits(s, 0, 4, y) || y < 1) return bad_date(s, "year must be four digits");
  if (s.size() == 4) return DateRange{epoch_seconds(y, 1, 1), epoch_seconds(y + 1, 1, 1)};
  if (s[4] != '-' || !digits(s, 5, 2, mo) || mo < 1 || mo > 12) return bad_date(s, "bad month");
  if (s.size() == 7) {
    year_month_day next = year{y} / month{static_cast<unsigned>(mo)} / day{1} + months{1};
    return DateRange{epoch_seconds(y, static_cast<unsigned>(mo), 1),
                     static_cast<std::int64_t>(sys_days{next}.time_since_epoch().count()) * 86400};
  }
  if (s[7] != '-' || !digits(s, 8, 2, d)) return bad_date(s, "bad day");
  if (!year_month_day{year{y} / month{static_cast<unsigned>(mo)} / day{static_cast<unsigned>(d)}}.ok())
    return bad_date(s, "no such day");
  const std::int64_t day_start = epoch_seconds(y, static_cast<unsigned>(mo), static_cast<unsigned>(d));
  if (s.size() == 10) return DateRange{day_start, day_start + 86400};

  int hh = 0, mm = 0, ss = 0;
  if (s[10] != 'T' || !digits(s, 11, 2, hh) || s.size() < 16 || s[13] != ':' || !digits(s, 14, 2, mm) ||
      hh > 23 || mm > 59)
    return bad_date(s, "bad time");
  std::size_t pos = 16;
  std::int64_t width = 60;  // minute precision
  if (pos < s.size() && s[pos] == ':') {
    if (!digits(s, pos + 1, 2, ss) || ss > 60) return bad_date(s, "bad seconds");
    pos += 3;
    width = 1;
    if (pos < s.size() && s[pos] == '.') {
      // Fractions narrow the instant below a second; ranges here are whole seconds.
      ++pos;
      std::size_t start = pos;
      while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') ++pos;
      if (pos == start || pos - start > 9) return bad_date(s, "bad fraction of a second");
    }
  }
  std::int64_t offset = 0;
  if (pos < s.size()) {
    if (s[pos] == 'Z') {
      ++pos;
    } else if (s[pos] == '+' || s[pos] == '-') {
      int oh = 0, om = 0;
      if (!digits(s, pos + 1, 2, oh) || pos + 3 >= s.size() || s[pos + 3] != ':' ||
          !digits(s, pos + 4, 2, om) || oh > 14 || om > 59)
        return bad_date(s, "bad time zone");
      offset = (oh * 3600 + om * 60) * (s[pos] == '-' ? -1 : 1);
      pos += 6;
    } else {
      return bad_date(s, "unexpected characters after the time");
    }
  }
  if (pos != s.size()) return bad_date(s, "unexpected trailing characters");
  std::int64_t begin = day_start + hh * 3600 + mm * 60 + ss - offset;
  return DateRange{begin, begin + width};
}

bool date_matches(Prefix prefix, const DateRange& p, const DateRange& t, std::int64_t now) {
  const bool contained = t.begin >= p.begin && t.end <= p.end;
  switch (prefix) {
    case Prefix::eq: return contained;
    case Prefix::ne: return !contained;
    case Prefix::gt: return t.end > p.end;
    case Prefix::lt: return t.begin < p.begin;
    case Prefix::ge: return t.end > p.end || contained;
    case Prefix::le: return t.begin < p.begin || contained;
    case Prefix::sa: return t.begin >= p.end;
    case Prefix::eb: return t.end <= p.begin;
    case Prefix::ap: {
      // R4 search.html: "the range of the search value overlaps with the range of the target
      // value", with the search value widened by 10% of the distance to now (at least 1 s).
      std::int64_t gap = std::llabs(now - p.begin) / 10;
      if (gap < 1) gap = 1;
      return t.begin < p.end + gap && t.end > p.begin - gap;
    }
  }
  return false;
}

}  // namespace fhir

namespace fhir {
std::string format_instant(std::int64_t epoch_ms) {
  using namespace std::chrono;
  const sys_days days{floor<std::chrono::days>(sys_time<milliseconds>{milliseconds{epoch_ms}})};
  const year_month_day ymd{days};
  std::int64_t ms_of_day = epoch_ms - static_cast<std::int64_t>(days.time_since_epoch().count()) * 86400000;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02d.%03dZ", static_cast<int>(ymd.year()),
                static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                static_cast<int>(ms_of_day / 3600000), static_cast<int>(ms_of_day / 60000 % 60),
                static_cast<int>(ms_of_day / 1000 % 60), static_cast<int>(ms_of_day % 1000));
  return buf;
}
}  // namespace fhir
