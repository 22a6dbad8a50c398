// SPDX-License-Identifier: Apache-2.0
// HL7 v2 datatypes -> FHIR R4 datatypes (see datatypes.h). Component numbers follow HL7 v2.5
// ch. 2.A (CX, XPN, XCN, XAD, XTN, CWE, DTM); FHIR element order follows the R4 datatypes page.
#include "adapters/hl7v2/datatypes.h"

#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <utility>

#include "fhir/datatypes.h"

namespace gw::hl7v2::detail {
namespace {

using fhir::ErrorCode;
using fhir::Issue;
using fhir::Json;

constexpr std::size_t kMaxWarnings = 200;

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_upper(char c) { return c >= 'A' && c <= 'Z'; }
char to_lower(char c) { return is_upper(c) ? static_cast<char>(c - 'A' + 'a') : c; }
char to_upper(char c) { return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c; }

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = to_upper(c);
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Control characters (which FHIR strings should not carry) become spaces; `keep_lines`
// keeps line feeds and tabs for free text.
std::string clean(std::string s, bool keep_lines) {
  for (char& c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (keep_lines && (c == '\n' || c == '\t')) continue;
    if (keep_lines && c == '\r') {
      c = '\n';
      continue;
    }
    if (u < 0x20 || u == 0x7f) c = ' ';
  }
  return s;
}

int number_at(std::string_view s, std::size_t pos, std::size_t len) {
  int n = 0;
  for (std::size_t i = pos; i < pos + len; ++i) n = n * 10 + (s[i] - '0');
  return n;
}

std::string two(int n) {
  std::string s = std::to_string(n);
  if (s.size() < 2) s.insert(0, 1, '0');
  return s;
}

std::string four(int n) {
  std::string s = std::to_string(n);
  while (s.size() < 4) s.insert(0, 1, '0');
  return s;
}

// A parsed DTM. Fields below the precision sent are -1.
struct Moment {
  int year = 0, month = -1, day = -1, hour = -1, minute = -1, second = -1;
  std::string fraction;  // digits after the decimal point, as sent
  bool has_offset = false;
  char offset_sign = '+';
  int offset_hours = 0, offset_minutes = 0;
};

std::optional<Moment> parse_dtm(std::string_view t) {
  std::size_t n = 0;
  while (n < t.size() && is_digit(t[n])) ++n;
  if (n != 4 && n != 6 && n != 8 && n != 10 && n != 12 && n != 14) return std::nullopt;
  Moment m;
  m.year = number_at(t, 0, 4);
  if (n >= 6) m.month = number_at(t, 4, 2);
  if (n >= 8) m.day = number_at(t, 6, 2);
  if (n >= 10) m.hour = number_at(t, 8, 2);
  if (n >= 12) m.minute = number_at(t, 10, 2);
  if (n >= 14) m.second = number_at(t, 12, 2);
  std::size_t i = n;
  if (i < t.size() && t[i] == '.') {
    if (n != 14) return std::nullopt;
    std::size_t j = i + 1;
    while (j < t.size() && is_digit(t[j])) ++j;
    if (j == i + 1 || j - i - 1 > 9) return std::nullopt;
    m.fraction = std::string(t.substr(i + 1, j - i - 1));
    i = j;
  }
  if (i < t.size() && (t[i] == '+' || t[i] == '-')) {
    if (t.size() != i + 5) return std::nullopt;
    for (std::size_t k = i + 1; k < i + 5; ++k)
      if (!is_digit(t[k])) return std::nullopt;
    m.has_offset = true;
    m.offset_sign = t[i];
    m.offset_hours = number_at(t, i + 1, 2);
    m.offset_minutes = number_at(t, i + 3, 2);
    i += 5;
  }
  if (i != t.size()) return std::nullopt;
  // Ranges: FHIR years are 0001-9999 and offsets at most 14:00.
  if (m.year < 1) return std::nullopt;
  if (m.month != -1 && (m.month < 1 || m.month > 12)) return std::nullopt;
  if (m.day != -1) {
    using namespace std::chrono;
    const year_month_day ymd{year{m.year}, month{static_cast<unsigned>(m.month)}, day{static_cast<unsigned>(m.day)}};
    if (!ymd.ok()) return std::nullopt;
  }
  if (m.hour > 23 || m.minute > 59 || m.second > 59) return std::nullopt;
  if (m.offset_minutes > 59 || m.offset_hours > 14 || (m.offset_hours == 14 && m.offset_minutes != 0))
    return std::nullopt;
  return m;
}

std::string date_text(const Moment& m) {
  std::string s = four(m.year);
  if (m.month == -1) return s;
  s += '-';
  s += two(m.month);
  if (m.day == -1) return s;
  s += '-';
  s += two(m.day);
  return s;
}

// UK civil time (Europe/London) under the rules in force since 1996: BST (+01:00) from 01:00
// GMT on the last Sunday of March to 01:00 GMT on the last Sunday of October. A local time
// in the skipped spring hour is read as GMT; one in the repeated autumn hour as BST (the
// first of the two). Earlier years get the same rule, an approximation.
std::string_view uk_offset(const Moment& m) {
  using namespace std::chrono;
  const sys_days today{year{m.year} / month{static_cast<unsigned>(m.month)} / day{static_cast<unsigned>(m.day)}};
  const sys_days start{year{m.year} / March / Sunday[last]};
  const sys_days end{year{m.year} / October / Sunday[last]};
  bool summer = false;
  if (today > start && today < end) summer = true;
  else if (today == start) summer = m.hour >= 2;
  else if (today == end) summer = m.hour < 2;
  return summer ? "+01:00" : "+00:00";
}

std::string datetime_text(const Moment& m) {
  std::string s = date_text(m);
  if (m.hour == -1) return s;
  s += 'T';
  s += two(m.hour);
  s += ':';
  s += two(m.minute == -1 ? 0 : m.minute);
  s += ':';
  s += two(m.second == -1 ? 0 : m.second);
  if (!m.fraction.empty()) {
    s += '.';
    s += m.fraction;
  }
  if (m.has_offset) {
    s += m.offset_sign;
    s += two(m.offset_hours);
    s += ':';
    s += two(m.offset_minutes);
  } else {
    s += uk_offset(m);
  }
  return s;
}

fhir::Result<Moment> parse_or_fail(std::string_view hl7, const std::string& location) {
  auto m = parse_dtm(trim(hl7));
  if (!m)
    return Issue::make(ErrorCode::invalid_value,
                       location + " is not a valid HL7 date/time (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ])", location);
  return *m;
}

// Common UCUM unit codes seen on laboratory and observation results (case-sensitive, as
// UCUM is). Used only to recognise a UCUM unit whose coding system was not sent.
constexpr std::array<std::string_view, 74> kCommonUcum = {
    "%",        "/min",     "/uL",      "1",       "10*3/uL",   "10*6/uL",  "10*9/L",   "10*12/L",  "Cel",
    "[degF]",   "[IU]/L",   "[IU]/mL",  "[in_i]",  "[lb_av]",   "[pH]",     "a",        "cm",       "d",
    "dL",       "fL",       "g",        "g/L",     "g/dL",      "g/mol",    "h",        "kPa",      "kg",
    "kg/m2",    "L",        "L/min",    "m",       "m[IU]/L",   "meq/L",    "mg",       "mg/L",     "mg/dL",
    "mg/mmol",  "min",      "mL",       "mL/min",  "mm",        "mm/h",     "mm[Hg]",   "mmol/L",   "mmol/mol",
    "mo",       "mol/L",    "mosm/kg",  "mU/L",    "ng/L",      "ng/mL",    "nmol/L",   "pg",       "pg/mL",
    "pmol/L",   "s",        "U/L",      "U/mL",    "ug",        "ug/L",     "ug/dL",    "ug/mL",    "umol/L",
    "wk",       "{beats}/min", "{breaths}/min", "{ratio}", "mL/min/{1.73_m2}", "10*9/uL", "mmol/kg", "mU/mL",
    "ng/dL",    "nmol/mmol", "umol/mmol"};

bool is_common_ucum(std::string_view unit) {
  return std::find(kCommonUcum.begin(), kCommonUcum.end(), unit) != kCommonUcum.end();
}

}  // namespace

void Run::warn(const std::string& location, std::string_view what) const {
  if (out.warnings.size() > kMaxWarnings) return;
  if (out.warnings.size() == kMaxWarnings) {
    out.warnings.push_back("further warnings were left out");
    return;
  }
  std::string w = location;
  w += ": ";
  w += what;
  // A field read twice (an event time tried for the period and for the encounter event)
  // gets one warning.
  if (std::find(out.warnings.begin(), out.warnings.end(), w) != out.warnings.end()) return;
  out.warnings.push_back(std::move(w));
}

std::string where(std::string_view segment, std::size_t occurrence, std::size_t field, std::size_t repetition) {
  std::string s(segment);
  if (occurrence != 0) {
    s += '[';
    s += std::to_string(occurrence);
    s += ']';
  }
  if (field != 0) {
    s += '-';
    s += std::to_string(field);
  }
  if (repetition != 0) {
    s += '[';
    s += std::to_string(repetition);
    s += ']';
  }
  return s;
}

std::string value(const SegmentRef& s, std::size_t field, std::size_t component, std::size_t sub,
                  std::size_t repetition) {
  if (s.is_null(field, component, sub, repetition)) return {};
  std::string v = clean(s.get(field, component, sub, repetition), false);
  return std::string(trim(v));
}

std::string single_spaced(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text)
    if (c != ' ' || out.empty() || out.back() != ' ') out.push_back(c);
  return out;
}

std::string code_value(const SegmentRef& s, std::size_t field, std::size_t component, std::size_t sub,
                       std::size_t repetition) {
  return single_spaced(value(s, field, component, sub, repetition));
}

std::string joined_subcomponents(const Run& run, const SegmentRef& s, std::size_t field, std::size_t component,
                                 std::size_t repetition) {
  const std::string_view raw = s.raw(field, repetition, component, 0);
  const Delimiters& d = run.message.delimiters();
  std::string out;
  std::size_t begin = 0;
  while (begin <= raw.size()) {
    std::size_t end = raw.find(d.subcomponent, begin);
    if (end == std::string_view::npos) end = raw.size();
    std::string part = clean(unescape(raw.substr(begin, end - begin), d), false);
    const std::string_view t = trim(part);
    if (!t.empty() && t != "\"\"") {
      if (!out.empty()) out += ' ';
      out += t;
    }
    begin = end + 1;
  }
  return out;
}

std::string text_value(const Run& run, const SegmentRef& s, std::size_t field, std::size_t repetition) {
  const std::string_view raw = s.raw(field, repetition, 0, 0);
  if (raw == "\"\"") return {};
  std::string v = clean(unescape(raw, run.message.delimiters()), true);
  // Trailing spaces on a line are padding, not content.
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.pop_back();
  return v;
}

std::size_t repetitions(const Run& run, const SegmentRef& s, const std::string& location, std::size_t field,
                        std::size_t limit) {
  const std::size_t n = s.repetition_count(field);
  if (n <= limit) return n;
  run.warn(location, "more than " + std::to_string(limit) + " repetitions; only the first " + std::to_string(limit) +
                         " are mapped");
  return limit;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (to_upper(a[i]) != to_upper(b[i])) return false;
  return true;
}

fhir::Result<std::string> fhir_datetime(std::string_view hl7, const std::string& location) {
  if (trim(hl7).empty()) return std::string();
  auto m = parse_or_fail(hl7, location);
  if (!m) return std::move(m).issue();
  return datetime_text(*m);
}

fhir::Result<std::string> fhir_date(std::string_view hl7, const std::string& location) {
  if (trim(hl7).empty()) return std::string();
  auto m = parse_or_fail(hl7, location);
  if (!m) return std::move(m).issue();
  return date_text(*m);
}

fhir::Result<std::optional<std::string>> fhir_instant(std::string_view hl7, const std::string& location) {
  if (trim(hl7).empty()) return std::optional<std::string>();
  auto m = parse_or_fail(hl7, location);
  if (!m) return std::move(m).issue();
  if (m->hour == -1) return std::optional<std::string>();
  return std::optional<std::string>(datetime_text(*m));
}

fhir::Result<std::string> datetime_field(const SegmentRef& s, std::size_t field, const std::string& location) {
  return fhir_datetime(value(s, field, 1, 1), location);
}

std::optional<std::string> hl7_number(std::string_view text) {
  std::string_view t = trim(text);
  std::string out;
  if (!t.empty() && (t.front() == '+' || t.front() == '-')) {
    if (t.front() == '-') out += '-';
    t.remove_prefix(1);
  }
  std::size_t i = 0;
  while (i < t.size() && is_digit(t[i])) ++i;
  std::string_view whole = t.substr(0, i), fraction;
  if (i < t.size() && t[i] == '.') {
    std::size_t j = i + 1;
    while (j < t.size() && is_digit(t[j])) ++j;
    fraction = t.substr(i + 1, j - i - 1);
    i = j;
  }
  if (i != t.size() || (whole.empty() && fraction.empty())) return std::nullopt;
  while (whole.size() > 1 && whole.front() == '0') whole.remove_prefix(1);
  out += whole.empty() ? std::string_view("0") : whole;
  if (!fraction.empty()) {
    out += '.';
    out += fraction;
  }
  if (!Json::decimal(out)) return std::nullopt;
  return out;
}

std::string resource_id(const Run& run, std::string_view prefix, std::initializer_list<std::string_view> parts) {
  std::string key;
  auto add = [&key](std::string_view part) {
    key += std::to_string(part.size());
    key += ':';
    key += part;
  };
  add(run.context.source_name);
  for (std::string_view p : parts) add(p);
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  if (EVP_Digest(key.data(), key.size(), md.data(), &len, EVP_sha256(), nullptr) != 1 || len < 16)
    throw std::runtime_error("SHA-256 is unavailable");  // broken invariant: OpenSSL without SHA-256
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id(prefix);
  id += '-';
  for (unsigned int i = 0; i < 16; ++i) {
    id += kHex[md[i] >> 4];
    id += kHex[md[i] & 0xf];
  }
  return id;
}

std::string slug(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (out.size() == 64) break;
    out += (is_digit(c) || is_upper(c) || (c >= 'a' && c <= 'z')) ? to_lower(c) : '-';
  }
  return out;
}

std::string local_system(const Run& run, std::string_view authority, std::string_view kind) {
  std::string_view base = run.context.identifier_system_base;
  while (!base.empty() && base.back() == '/') base.remove_suffix(1);
  std::string s = slug(authority.empty() ? std::string_view(run.context.source_ods) : authority);
  if (s.empty()) s = "unknown";
  std::string out(base);
  out += '/';
  out += s;
  if (!kind.empty()) {
    out += '/';
    out += kind;
  }
  return out;
}

bool looks_like_ods(std::string_view code) {
  if (code.size() != 3 && code.size() != 5 && code.size() != 6) return false;
  bool letter = false;
  for (char c : code) {
    if (is_upper(c)) letter = true;
    else if (!is_digit(c)) return false;
  }
  return letter;
}

Json identifier_type(std::string_view code) {
  if (code.empty()) return Json();
  // Codes of HL7 table 0203 a PAS commonly sends, with the display where it matters to a reader.
  static constexpr std::pair<std::string_view, std::string_view> kKnown[] = {
      {"AN", "Account number"},
      {"DL", "Driver's license number"},
      {"DN", ""},
      {"EI", ""},
      {"FILL", "Filler Identifier"},
      {"HC", ""},
      {"JHN", ""},
      {"MR", "Medical record number"},
      {"NH", ""},
      {"NI", ""},
      {"NPI", ""},
      {"PE", ""},
      {"PI", "Patient internal identifier"},
      {"PLAC", "Placer Identifier"},
      {"PN", ""},
      {"PPN", "Passport number"},
      {"PRN", ""},
      {"PT", ""},
      {"SS", "Social Security number"},
      {"U", ""},
      {"VN", "Visit number"},
      {"XX", ""},
  };
  for (const auto& [c, display] : kKnown)
    if (c == code) return fhir::codeable_concept(fhir::coding(kV2IdentifierTypeSystem, c, display));
  Json cc = Json::object();
  cc.set("text", Json::string(std::string(code)));
  return cc;
}

std::string code_system_uri(std::string_view hl7_system) {
  const std::string s = upper(trim(hl7_system));
  if (s.empty()) return {};
  if (s == "LN" || s == "LOINC") return "http://loinc.org";
  if (s == "SCT" || s == "SNOMED" || s == "SNOMEDCT" || s == "SNOMED-CT" || s == "SNOMED CT")
    return "http://snomed.info/sct";
  if (s == "UCUM") return std::string(kUcumSystem);
  if (s == "I10" || s == "ICD10" || s == "ICD-10") return "http://hl7.org/fhir/sid/icd-10";
  if (s == "I9" || s == "I9C" || s == "ICD9" || s == "ICD9CM") return "http://hl7.org/fhir/sid/icd-9-cm";
  if (s == "DMD") return "https://dmd.nhs.uk";
  if (s == "CVX") return "http://hl7.org/fhir/sid/cvx";
  if (s == "NDC") return "http://hl7.org/fhir/sid/ndc";
  if (s == "C4" || s == "CPT") return "http://www.ama-assn.org/go/cpt";
  if (s.size() == 7 && s.compare(0, 3, "HL7") == 0 && std::all_of(s.begin() + 3, s.end(), is_digit))
    return "http://terminology.hl7.org/CodeSystem/v2-" + s.substr(3);
  return {};
}

std::string local_code_system(const Run& run, std::string_view hl7_system) {
  std::string_view base = run.context.identifier_system_base;
  while (!base.empty() && base.back() == '/') base.remove_suffix(1);
  std::string source = slug(run.context.source_name.empty() ? run.context.source_ods : run.context.source_name);
  if (source.empty()) source = "unknown";
  std::string out(base);
  out += "/code-system/";
  out += source;
  out += '/';
  out += slug(trim(hl7_system));
  return out;
}

Json codeable_concept(const Run& run, const SegmentRef& s, std::size_t field, std::size_t repetition,
                      std::size_t first) {
  Json codings = Json::array();
  std::string first_text;
  for (std::size_t base : {first, first + 3}) {
    const std::string code = code_value(s, field, base, 1, repetition);
    const std::string text = value(s, field, base + 1, 1, repetition);
    // A code under a system the sender names but FHIR has no URI for (a lab's "Winpath",
    // HL7's "L" for local) is still that source's code: without a system, ALP from one lab
    // and ALP from another would be one code to a search.
    const std::string name = value(s, field, base + 2, 1, repetition);
    std::string system = code_system_uri(name);
    if (system.empty() && !name.empty()) system = local_code_system(run, name);
    if (first_text.empty()) first_text = text;
    if (code.empty()) continue;
    Json c = Json::object();
    set_string(c, "system", system);
    c.set("code", Json::string(code));
    set_string(c, "display", text);
    bool duplicate = false;
    for (const Json& other : codings.items()) duplicate = duplicate || other == c;
    if (!duplicate) codings.push_back(std::move(c));
  }
  std::string text = first == 1 ? value(s, field, 9, 1, repetition) : std::string();  // CWE.9 original text
  if (text.empty() && codings.size() == 0) text = first_text;
  if (text.empty() && codings.size() == 0) return Json();
  Json cc = Json::object();
  if (codings.size() > 0) cc.set("coding", std::move(codings));
  set_string(cc, "text", std::move(text));
  return cc;
}

Json human_name(const SegmentRef& s, std::size_t field, std::size_t repetition, std::size_t first,
                std::string_view use) {
  const std::string family = value(s, field, first, 1, repetition);  // FN.1 surname
  const std::string given = value(s, field, first + 1, 1, repetition);
  const std::string middle = value(s, field, first + 2, 1, repetition);
  const std::string suffix = value(s, field, first + 3, 1, repetition);
  const std::string prefix = value(s, field, first + 4, 1, repetition);
  if (family.empty() && given.empty() && middle.empty()) return Json();
  Json name = Json::object();
  if (!use.empty()) name.set("use", Json::string(std::string(use)));
  set_string(name, "family", family);
  Json givens = Json::array();
  if (!given.empty()) givens.push_back(Json::string(given));
  if (!middle.empty()) givens.push_back(Json::string(middle));
  if (givens.size() > 0) name.set("given", std::move(givens));
  if (!prefix.empty()) name.set("prefix", array_of(Json::string(prefix)));
  if (!suffix.empty()) name.set("suffix", array_of(Json::string(suffix)));
  return name;
}

std::string display_name(const Json& name) {
  std::string out;
  auto add = [&out](std::string_view part) {
    if (part.empty()) return;
    if (!out.empty()) out += ' ';
    out += part;
  };
  for (const char* key : {"prefix", "given"})
    if (const Json* list = name.find(key); list != nullptr)
      for (const Json& p : list->items()) add(p.text());
  add(name.string_at("family"));
  return out;
}

Json address(const Run& run, const SegmentRef& s, std::size_t field, std::size_t repetition) {
  const std::string street = joined_subcomponents(run, s, field, 1, repetition);  // SAD
  const std::string other = value(s, field, 2, 1, repetition);
  const std::string city = value(s, field, 3, 1, repetition);
  const std::string district = value(s, field, 4, 1, repetition);  // county in UK addresses
  const std::string postcode = value(s, field, 5, 1, repetition);
  const std::string country = value(s, field, 6, 1, repetition);
  const std::string type = value(s, field, 7, 1, repetition);  // HL7 table 0190
  if (street.empty() && other.empty() && city.empty() && district.empty() && postcode.empty() && country.empty())
    return Json();
  Json a = Json::object();
  if (type == "H") a.set("use", Json::string("home"));
  else if (type == "B" || type == "O") a.set("use", Json::string("work"));
  else if (type == "C") a.set("use", Json::string("temp"));
  else if (type == "BA") a.set("use", Json::string("old"));
  else if (type == "M") a.set("type", Json::string("postal"));
  Json lines = Json::array();
  if (!street.empty()) lines.push_back(Json::string(street));
  if (!other.empty()) lines.push_back(Json::string(other));
  if (lines.size() > 0) a.set("line", std::move(lines));
  set_string(a, "city", city);
  set_string(a, "district", district);
  set_string(a, "postalCode", postcode);
  set_string(a, "country", country);
  return a;
}

Json contact_point(const SegmentRef& s, std::size_t field, std::size_t repetition, std::string_view field_use) {
  const std::string use_code = value(s, field, 2, 1, repetition);   // HL7 table 0201
  const std::string equipment = value(s, field, 3, 1, repetition);  // HL7 table 0202
  std::string system = "phone";
  if (iequals(equipment, "Internet") || iequals(equipment, "X.400") || use_code == "NET") system = "email";
  else if (equipment == "FX") system = "fax";
  else if (equipment == "BP") system = "pager";
  std::string v;
  if (system == "email") {
    v = value(s, field, 4, 1, repetition);
    if (v.empty()) v = value(s, field, 1, 1, repetition);
  } else {
    v = value(s, field, 1, 1, repetition);
    if (v.empty()) v = value(s, field, 12, 1, repetition);  // unformatted number (v2.6+)
    if (v.empty()) {
      for (std::size_t c : {5, 6, 7}) {
        const std::string part = value(s, field, c, 1, repetition);
        if (part.empty()) continue;
        if (!v.empty()) v += ' ';
        if (c == 5) v += '+';
        v += part;
      }
      const std::string ext = value(s, field, 8, 1, repetition);
      if (!v.empty() && !ext.empty()) {
        v += " ext. ";
        v += ext;
      }
    }
  }
  if (v.empty() || (system == "email" && v.find('@') == std::string::npos)) return Json();
  std::string use(field_use);
  if (use_code == "WPN") use = "work";
  else if (use_code == "PRN" || use_code == "ORN" || use_code == "VHN") use = "home";
  if (equipment == "CP" && system == "phone") use = "mobile";
  Json cp = Json::object();
  cp.set("system", Json::string(system));
  cp.set("value", Json::string(v));
  set_string(cp, "use", use);
  return cp;
}

Json professional_identifier(const Run& run, std::string_view id, std::string_view authority, std::string_view type) {
  if (id.empty()) return Json();
  const std::string a = upper(authority), t = upper(type);
  auto is = [&a, &t](std::string_view code) { return a == code || t == code; };
  std::string system;
  if (is("GMC")) system = kGmcSystem;
  else if (is("GMP")) system = kGmpSystem;
  else if (is("NMC")) system = "https://fhir.hl7.org.uk/Id/nmc-number";
  else if (is("HCPC")) system = "https://fhir.hl7.org.uk/Id/hcpc-number";
  else if (a.empty() && t.empty() && id.size() == 8 && std::all_of(id.begin() + 1, id.end(), is_digit)) {
    // UK consultant codes are "C" + the 7-digit GMC number; GP codes "G" + 7 digits.
    if (id.front() == 'C') system = kGmcSystem;
    else if (id.front() == 'G') system = kGmpSystem;
  }
  if (system.empty()) system = local_system(run, authority, "practitioner");
  return fhir::identifier(system, id);
}

Units units(const SegmentRef& s, std::size_t field) {
  const std::string id = code_value(s, field, 1, 1), text = value(s, field, 2, 1), system = value(s, field, 3, 1);
  Units u;
  u.unit = id.empty() ? text : id;
  // A unit the sender places in another system (L, 99zzz, ISO+) is that system's, whatever it
  // spells: a local "m" may be months, UCUM's "m" is metres.
  if (!id.empty() && (iequals(system, "UCUM") || (system.empty() && is_common_ucum(id)))) {
    u.system = kUcumSystem;
    u.code = id;
  }
  return u;
}

Json quantity(std::string_view number, const Units& u, std::string_view comparator) {
  Json q = Json::object();
  if (auto n = Json::decimal(number)) q.set("value", std::move(*n));
  if (!comparator.empty()) q.set("comparator", Json::string(std::string(comparator)));
  set_string(q, "unit", u.unit);
  set_string(q, "system", u.system);
  set_string(q, "code", u.code);
  return q;
}

void set_string(Json& obj, std::string key, std::string value) {
  if (!value.empty()) obj.set(std::move(key), Json::string(std::move(value)));
}

void set_json(Json& obj, std::string key, Json value) {
  if (value.is_null()) return;
  if ((value.is_array() || value.is_object()) && value.size() == 0) return;
  obj.set(std::move(key), std::move(value));
}

Json array_of(Json item) {
  Json a = Json::array();
  a.push_back(std::move(item));
  return a;
}

Json reference(std::string_view type, std::string_view id, std::string_view display) {
  Json r = Json::object();
  std::string ref(type);
  ref += '/';
  ref += id;
  r.set("reference", Json::string(std::move(ref)));
  if (!display.empty()) r.set("display", Json::string(std::string(display)));
  return r;
}

void put_resource(const Run& run, Json resource) {
  for (Json& r : run.out.resources) {
    if (r.string_at("id") == resource.string_at("id") &&
        r.string_at("resourceType") == resource.string_at("resourceType")) {
      r = std::move(resource);
      return;
    }
  }
  run.out.resources.push_back(std::move(resource));
}

}  // namespace gw::hl7v2::detail
