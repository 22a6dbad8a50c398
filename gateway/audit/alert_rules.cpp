// SPDX-License-Identifier: Apache-2.0
// The alert rules (AlertRules in log.h): which committed accesses go on the IG review queue.
// Evaluated on the writer thread for each record of a batch, before the batch commits.
#include <algorithm>
#include <ctime>

#include "gateway/audit/log_internal.h"

namespace gw::audit {

namespace {

constexpr std::int64_t kHourMs = 3600 * 1000;

bool last_sunday_passed(int year, int month, int mday, int hour, int wday_of_mday) {
  // True when (mday, hour UTC) is at or after 01:00 UTC on the last Sunday of `month`.
  (void)year;
  (void)month;
  // Days in March and October are 31; the last Sunday is in 25..31.
  int last_sunday = mday + ((7 - wday_of_mday) % 7);
  while (last_sunday + 7 <= 31) last_sunday += 7;
  while (last_sunday > 31) last_sunday -= 7;
  if (mday != last_sunday) return mday > last_sunday;
  return hour >= 1;
}

}  // namespace

LocalTime london_time(std::int64_t time_ms) {
  std::time_t secs = static_cast<std::time_t>(time_ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  bool bst = false;
  const int month = tm.tm_mon + 1;
  if (month > 3 && month < 10) bst = true;
  else if (month == 3) bst = last_sunday_passed(tm.tm_year, month, tm.tm_mday, tm.tm_hour, tm.tm_wday);
  else if (month == 10) bst = !last_sunday_passed(tm.tm_year, month, tm.tm_mday, tm.tm_hour, tm.tm_wday);
  if (bst) {
    secs += 3600;
    gmtime_r(&secs, &tm);
  }
  return LocalTime{tm.tm_hour * 60 + tm.tm_min, tm.tm_wday};
}

std::uint64_t Log::Impl::fnv1a(std::uint64_t h, std::string_view s) {
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ULL;
  return (h ^ 0x1f) * 0x100000001b3ULL;  // a separator, so that ("ab", "c") != ("a", "bc")
}

bool Log::Impl::recently_alerted(std::uint64_t key, std::int64_t now) {
  for (const auto* m : {&pending_marks, &alert_marks}) {
    auto it = m->find(key);
    if (it != m->end() && it->second > now - kHourMs) return true;
  }
  pending_marks[key] = now;
  return false;
}

void Log::Impl::commit_marks() {
  const std::int64_t cutoff = now_ms() - kHourMs;
  if (alert_marks.size() > 200000)  // bounded: forget marks older than the hour
    std::erase_if(alert_marks, [cutoff](const auto& kv) { return kv.second <= cutoff; });
  if (windows.size() > 100000)  // and users with nothing opened in the last hour
    std::erase_if(windows, [cutoff](const auto& kv) {
      return kv.second.firsts.empty() || kv.second.firsts.back().first <= cutoff;
    });
  for (auto& [k, v] : pending_marks) alert_marks[k] = v;
  pending_marks.clear();
}

void Log::Impl::evaluate_rules(const Record& r, std::vector<Alert>& raised) {
  const AlertRules& rules = opt.rules;
  std::uint64_t who = fnv1a(0xcbf29ce484222325ULL, r.user);
  for (const auto& p : r.detail.patients) who = fnv1a(who, p);
  // Views, not strings: most calls are suppressed as recently alerted, and those build nothing.
  auto raise = [&](std::string_view rule, std::string_view detail) {
    // Refused break-glass attempts are always raised; everything else once an hour.
    if (r.status < 400 && recently_alerted(fnv1a(who, rule), r.time_ms)) return;
    Alert a;
    a.seq = r.seq;
    a.rule = std::string(rule);
    a.detail = std::string(detail);
    a.raised_ms = r.time_ms;
    a.status = "open";
    raised.push_back(std::move(a));
  };
  const bool used_break_glass = r.detail.basis == "break-glass" || !r.detail.break_glass_reason.empty();
  if (rules.break_glass && used_break_glass)
    raise("break-glass", (r.status < 400 ? "break-glass access, reason " : "break-glass refused, reason ") +
                             (r.detail.break_glass_reason.empty() ? std::string("(grant)") : r.detail.break_glass_reason));
  // Clinical access only: an IG officer's own audit queries name patients too, but are not
  // what these rules watch for.
  const bool ig_route = r.route.rfind("/AuditEvent", 0) == 0 || r.route.rfind("/audit/", 0) == 0;
  const bool patient_access =
      r.kind == "rest" && r.status < 400 && !r.detail.patients.empty() && r.agent_kind == "user" && !ig_route;
  if (!patient_access) return;
  // Break-glass has its own rule (and may also be used for a related patient who objected).
  if (rules.without_relationship && r.detail.basis == "emergency-purpose")
    raise("no-relationship", "access without a prior relationship (emergency purpose of use)");
  {
    std::lock_guard lock(flagged_mu);
    for (const auto& nhs : r.detail.patients)
      if (flagged.count(nhs)) raise("flagged-record", "access to a flagged record (NHS number " + nhs + ")");
  }
  if (rules.out_of_hours) {
    LocalTime t = london_time(r.time_ms);
    const bool weekend = t.weekday == 0 || t.weekday == 6;
    if ((rules.weekends_out_of_hours && weekend) || t.minute_of_day < rules.working_start_minute ||
        t.minute_of_day >= rules.working_end_minute)
      raise("out-of-hours", "access outside configured working hours (Europe/London)");
  }
  if (rules.max_patients_per_hour > 0 && !r.user.empty()) {
    UserWindow& w = windows[r.user];
    while (!w.firsts.empty() && w.firsts.front().first <= r.time_ms - kHourMs) {
      w.seen.erase(w.firsts.front().second);
      w.firsts.pop_front();
    }
    for (const auto& nhs : r.detail.patients) {
      if (w.seen.count(nhs) || w.firsts.size() > 4 * rules.max_patients_per_hour + 16) continue;
      w.seen.emplace(nhs, r.time_ms);
      w.firsts.emplace_back(r.time_ms, nhs);
    }
    if (w.firsts.size() > rules.max_patients_per_hour && r.time_ms >= w.alerted_until) {
      raise("volume", "user opened " + std::to_string(w.firsts.size()) + " records within an hour (threshold " +
                          std::to_string(rules.max_patients_per_hour) + ")");
      w.alerted_until = r.time_ms + kHourMs;
    }
  }
}

}  // namespace gw::audit
