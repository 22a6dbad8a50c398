// SPDX-License-Identifier: Apache-2.0
// What every Locator backend shares: name/postcode normalisation, the demographic rule, and
// the helpers the backends and the write rules use. The claim and pointer checks are in
// validation.cpp, the write rules (identity resolution, pointer ownership, A40 merge) in
// write_rules.cpp, so SQLite, the fake and a future PostgreSQL backend decide identically.
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <random>

#include "fhir/date_range.h"
#include "gateway/locator/index_transaction.h"
#include "gateway/locator/locator.h"

namespace gw::locator {
namespace {

using fhir::ErrorCode;
using fhir::Issue;

// ---- normalisation ----------------------------------------------------------------------

// Latin-1 Supplement and Latin Extended-A letters folded to their ASCII base (the accented
// letters found in names on English registers); other code points pass through unchanged.
struct Fold {
  char32_t first, last;
  const char* to;
};
constexpr Fold kFolds[] = {
    {0xC0, 0xC5, "a"},   {0xC6, 0xC6, "ae"},  {0xC7, 0xC7, "c"},   {0xC8, 0xCB, "e"},   {0xCC, 0xCF, "i"},
    {0xD0, 0xD0, "d"},   {0xD1, 0xD1, "n"},   {0xD2, 0xD6, "o"},   {0xD8, 0xD8, "o"},   {0xD9, 0xDC, "u"},
    {0xDD, 0xDD, "y"},   {0xDE, 0xDE, "th"},  {0xDF, 0xDF, "ss"},  {0xE0, 0xE5, "a"},   {0xE6, 0xE6, "ae"},
    {0xE7, 0xE7, "c"},   {0xE8, 0xEB, "e"},   {0xEC, 0xEF, "i"},   {0xF0, 0xF0, "d"},   {0xF1, 0xF1, "n"},
    {0xF2, 0xF6, "o"},   {0xF8, 0xF8, "o"},   {0xF9, 0xFC, "u"},   {0xFD, 0xFD, "y"},   {0xFE, 0xFE, "th"},
    {0xFF, 0xFF, "y"},   {0x100, 0x105, "a"}, {0x106, 0x10D, "c"}, {0x10E, 0x111, "d"}, {0x112, 0x11B, "e"},
    {0x11C, 0x123, "g"}, {0x124, 0x127, "h"}, {0x128, 0x131, "i"}, {0x132, 0x133, "ij"}, {0x134, 0x135, "j"},
    {0x136, 0x138, "k"}, {0x139, 0x142, "l"}, {0x143, 0x14B, "n"}, {0x14C, 0x151, "o"}, {0x152, 0x153, "oe"},
    {0x154, 0x159, "r"}, {0x15A, 0x161, "s"}, {0x162, 0x167, "t"}, {0x168, 0x173, "u"}, {0x174, 0x175, "w"},
    {0x176, 0x178, "y"}, {0x179, 0x17E, "z"}, {0x17F, 0x17F, "s"}, {0x1E9E, 0x1E9E, "ss"}, {0x2018, 0x2019, "'"},
    {0x00A0, 0x00A0, " "}, {0x2010, 0x2011, "-"}, {0x2013, 0x2014, "-"}, {0x2007, 0x2007, " "},
};

const char* fold(char32_t cp) {
  for (const Fold& f : kFolds)
    if (cp >= f.first && cp <= f.last) return f.to;
  return nullptr;
}

// Decodes one UTF-8 sequence at s[i]; returns its length, 0 when malformed.
std::size_t decode_utf8(std::string_view s, std::size_t i, char32_t& cp) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  std::size_t n = b0 < 0x80 ? 1 : (b0 >> 5) == 0x6 ? 2 : (b0 >> 4) == 0xE ? 3 : (b0 >> 3) == 0x1E ? 4 : 0;
  if (n == 0 || i + n > s.size()) return 0;
  cp = n == 1 ? b0 : n == 2 ? (b0 & 0x1F) : n == 3 ? (b0 & 0x0F) : (b0 & 0x07);
  for (std::size_t k = 1; k < n; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b >> 6) != 0x2) return 0;
    cp = (cp << 6) | (b & 0x3F);
  }
  return n;
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

}  // namespace

bool is_fhir_instant(std::string_view v) {
  // The shape first: parse_fhir_date also takes the partial dates and minute precision an
  // instant must not have.
  if (v.size() < 20 || v.size() > 35 || v[4] != '-' || v[7] != '-' || v[10] != 'T' || v[13] != ':' || v[16] != ':')
    return false;
  const bool zulu = v.back() == 'Z';
  const bool offset = v.size() >= 25 && (v[v.size() - 6] == '+' || v[v.size() - 6] == '-') && v[v.size() - 3] == ':';
  if (!zulu && !offset) return false;
  const std::size_t seconds_end = zulu ? v.size() - 1 : v.size() - 6;
  if (seconds_end < 19 || (seconds_end > 19 && (v[19] != '.' || seconds_end == 20))) return false;
  return fhir::parse_fhir_date(v).ok();
}

std::string normalise_name(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  bool pending_space = false;
  const auto put = [&](std::string_view piece) {
    for (char c : piece) {
      if (is_space(c)) {
        pending_space = !out.empty();
        continue;
      }
      if (pending_space) out.push_back(' ');
      pending_space = false;
      out.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c);
    }
  };
  for (std::size_t i = 0; i < s.size();) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      put(s.substr(i, 1));
      ++i;
      continue;
    }
    char32_t cp = 0;
    const std::size_t n = decode_utf8(s, i, cp);
    if (n == 0) {  // malformed byte: kept, so distinct inputs stay distinct
      if (pending_space) out.push_back(' ');
      pending_space = false;
      out.push_back(s[i]);
      ++i;
      continue;
    }
    if (cp >= 0x300 && cp <= 0x36F) {  // combining diacritical marks (decomposed accents): dropped
      i += n;
      continue;
    }
    if (const char* to = fold(cp)) {
      put(to);
    } else {
      if (pending_space) out.push_back(' ');
      pending_space = false;
      out.append(s.substr(i, n));
    }
    i += n;
  }
  return out;
}

std::string normalise_postcode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (is_space(c)) continue;
    out.push_back(c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c);
  }
  return out;
}

namespace {
constexpr std::pair<std::string_view, bool DemographicRule::*> kRuleFields[] = {
    {"family", &DemographicRule::family},
    {"given", &DemographicRule::given},
    {"birthdate", &DemographicRule::birth_date},
    {"gender", &DemographicRule::gender},
    {"postcode", &DemographicRule::postcode},
};
}  // namespace

fhir::Result<DemographicRule> demographic_rule_from(const std::vector<std::string>& fields) {
  DemographicRule rule;
  if (fields.empty()) {
    rule.enabled = false;
    return rule;
  }
  for (const auto& [name, member] : kRuleFields) rule.*member = false;
  for (const std::string& f : fields) {
    const auto* it = std::find_if(std::begin(kRuleFields), std::end(kRuleFields),
                                  [&](const auto& entry) { return entry.first == f; });
    if (it == std::end(kRuleFields))
      return Issue::make(ErrorCode::invalid_value,
                         "unknown field '" + f.substr(0, 64) + "' (use family, given, birthdate, gender, postcode)");
    if (rule.*(it->second)) return Issue::make(ErrorCode::invalid_value, "field '" + f + "' is listed twice");
    rule.*(it->second) = true;
  }
  if (!rule.family || !rule.birth_date)
    return Issue::make(ErrorCode::invalid_value,
                       "the rule must compare at least family and birthdate (fewer fields would link different "
                       "people); an empty list switches it off");
  return rule;
}

std::vector<std::string> demographic_rule_fields(const DemographicRule& rule) {
  std::vector<std::string> out;
  if (!rule.enabled) return out;
  for (const auto& [name, member] : kRuleFields)
    if (rule.*member) out.emplace_back(name);
  return out;
}

std::string_view outcome_name(MatchOutcome m) {
  switch (m) {
    case MatchOutcome::created: return "created";
    case MatchOutcome::matched_nhs_number: return "matched-nhs-number";
    case MatchOutcome::matched_identifier: return "matched-identifier";
    case MatchOutcome::matched_demographics: return "matched-demographics";
    case MatchOutcome::matched_retired_identifier: return "matched-retired-identifier";
  }
  return "unknown";
}

// ---- helpers ----------------------------------------------------------------------------

std::string first_given_normalised(const Demographics& d) {
  return d.given.empty() ? std::string() : normalise_name(d.given.front());
}

bool demographic_rule_applies(const DemographicRule& r, const Demographics& d) {
  if (!r.enabled || !(r.family || r.given || r.birth_date || r.gender || r.postcode)) return false;
  if (r.family && normalise_name(d.family).empty()) return false;
  if (r.given && first_given_normalised(d).empty()) return false;
  if (r.birth_date && d.birth_date.empty()) return false;
  if (r.gender && d.gender.empty()) return false;
  if (r.postcode && normalise_postcode(d.postcode).empty()) return false;
  return true;
}

std::string new_opaque_id() {
  thread_local std::mt19937_64 rng{[] {
    std::random_device rd;
    return (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  }()};
  const auto ms = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
  const std::uint64_t r1 = rng(), r2 = rng();
  char buf[40];
  std::snprintf(buf, sizeof buf, "%08x-%04x-7%03x-%04x-%012llx", static_cast<unsigned>(ms >> 16),
                static_cast<unsigned>(ms & 0xffff), static_cast<unsigned>(r1 & 0xfff),
                static_cast<unsigned>(0x8000 | ((r1 >> 12) & 0x3fff)),
                static_cast<unsigned long long>(r2 & 0xffffffffffffULL));
  return buf;
}

std::string new_objection_change_id() { return new_opaque_id(); }

std::string now_instant() {
  return fhir::format_instant(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
}

std::int64_t now_epoch_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

bool birth_date_matches(const std::string& birth_date, fhir::Prefix prefix, const fhir::DateRange& param,
                        std::int64_t now) {
  if (birth_date.empty()) return false;
  auto target = fhir::parse_fhir_date(birth_date);
  return target.ok() && fhir::date_matches(prefix, param, *target, now);
}

std::string prefix_upper_bound(const std::string& p) {
  // 0xFF never occurs in UTF-8, so it sorts after every continuation of the prefix.
  std::string upper = p;
  upper.push_back('\xff');
  return upper;
}

std::string join_resource_types(const std::vector<std::string>& types) {
  std::string out;
  for (const auto& t : types) {
    if (!out.empty()) out.push_back(' ');
    out += t;
  }
  return out;
}

std::vector<std::string> split_resource_types(std::string_view joined) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < joined.size()) {
    std::size_t j = joined.find(' ', i);
    if (j == std::string_view::npos) j = joined.size();
    if (j > i) out.emplace_back(joined.substr(i, j - i));
    i = j + 1;
  }
  return out;
}

void count_import(ImportResult& result, const fhir::Result<Resolution>& record) {
  if (!record) {
    ++result.rejected;
    return;
  }
  if (record->outcome == MatchOutcome::created) {
    ++result.created;
  } else {
    ++result.matched;
    if (!record->updated_fields.empty()) ++result.updated;
  }
  result.conflicts += record->conflicts.size();
}

fhir::Result<std::optional<PatientRecord>> final_record(IndexTransaction& tx, const std::string& id) {
  auto rec = tx.patient(id);
  if (!rec) return rec;
  for (int hops = 0; *rec && (*rec)->merged_into; ++hops) {
    if (hops >= kMaxMergeDepth)
      return Issue::make(ErrorCode::internal_error, "merge chain too long or cyclic for patient " + id);
    const std::string next = *(*rec)->merged_into;
    rec = tx.patient(next);
    if (!rec) return rec;
    if (!*rec) return Issue::make(ErrorCode::internal_error, "merge target missing for patient " + id);
  }
  return rec;
}

}  // namespace gw::locator
