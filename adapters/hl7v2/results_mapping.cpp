// SPDX-License-Identifier: Apache-2.0
// ORU^R01 -> DiagnosticReport + Observation (see results_mapping.h). Segment and field use
// follow HL7 v2.5 ch. 7 (OBR, OBX, NTE; tables 0085, 0123, 0078, 0074) and the FHIR R4
// Observation and DiagnosticReport pages; the v2-to-FHIR choices are documented per function.
#include "adapters/hl7v2/results_mapping.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "fhir/datatypes.h"
#include "fhir/nhs_number.h"

namespace gw::hl7v2::detail {
namespace {

using fhir::ErrorCode;
using fhir::Issue;
using fhir::Json;

constexpr std::size_t kMaxReports = 500;
constexpr std::size_t kMaxObservations = 5000;
// Base64 text of one embedded document (ED): the default MLLP frame limit, 4 MiB, encoded.
constexpr std::size_t kMaxAttachmentBase64 = 6 * 1024 * 1024;
// DiagnosticReport.code.text of an OBR that names no service (OBR-4 empty).
constexpr std::string_view kUnspecifiedGroup = "Unspecified result group";
constexpr std::string_view kInterpretationSystem = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation";
constexpr std::string_view kObservationCategorySystem = "http://terminology.hl7.org/CodeSystem/observation-category";
constexpr std::string_view kServiceSectionSystem = "http://terminology.hl7.org/CodeSystem/v2-0074";

// One OBX, or a run of text OBX lines read as one observation.
struct Result {
  SegmentRef obx;
  std::size_t occurrence;            // OBX[n] counted over the whole message
  std::vector<SegmentRef> lines;     // further OBX of the same text observation
  std::vector<SegmentRef> notes;     // NTE after it
};

struct Report {
  SegmentRef obr;
  std::size_t occurrence;
  std::optional<SegmentRef> orc;
  std::vector<Result> results;
};

bool is_text_type(std::string_view t) { return t == "TX" || t == "FT" || t == "ST"; }

// Consecutive text OBX with the same OBX-3 and OBX-4 are lines of one observation: HL7 v2.5
// 7.4.2.4 lets a sender split a TX/FT report into several OBX with the same identifier and
// sub-id. They become one valueString, lines joined with "\n".
bool continues(const Result& last, const SegmentRef& obx) {
  return is_text_type(value(last.obx, 2)) && is_text_type(value(obx, 2)) &&
         last.obx.raw(3) == obx.raw(3) && last.obx.raw(4) == obx.raw(4);
}

std::string_view report_status(const Run& run, std::string_view obr25, const std::string& location) {  // table 0123
  if (obr25 == "O" || obr25 == "I" || obr25 == "S") return "registered";
  if (obr25 == "A") return "partial";
  if (obr25 == "P" || obr25 == "R") return "preliminary";
  if (obr25 == "C") return "corrected";
  if (obr25 == "F") return "final";
  if (obr25 == "X") return "cancelled";
  if (!obr25.empty()) run.warn(location, "result status is not in HL7 table 0123; the status is unknown");
  return "unknown";
}

std::string_view observation_status(const Run& run, std::string_view obx11, const std::string& location) {  // 0085
  if (obx11 == "F" || obx11 == "U") return "final";
  if (obx11 == "C") return "corrected";
  if (obx11 == "P" || obx11 == "R" || obx11 == "S") return "preliminary";
  if (obx11 == "I" || obx11 == "O") return "registered";
  if (obx11 == "D" || obx11 == "W") return "entered-in-error";
  if (obx11 == "X" || obx11 == "N") return "cancelled";
  if (!obx11.empty()) run.warn(location, "result status is not in HL7 table 0085; the status is unknown");
  return "unknown";
}

// HL7 table 0078 codes that are also codes of v3-ObservationInterpretation (which FHIR R4
// binds Observation.interpretation to); others are kept as text.
Json interpretation(std::string_view code) {
  static constexpr std::pair<std::string_view, std::string_view> kCodes[] = {
      {"<", ""},         {">", ""},          {"A", "Abnormal"},      {"AA", "Critical abnormal"},
      {"B", ""},         {"D", ""},          {"DET", "Detected"},    {"H", "High"},
      {"HH", "Critical high"}, {"HU", ""},   {"I", "Intermediate"},  {"IND", "Indeterminate"},
      {"L", "Low"},      {"LL", "Critical low"}, {"LU", ""},         {"MS", ""},
      {"N", "Normal"},   {"ND", "Not detected"}, {"NEG", "Negative"}, {"NR", ""},
      {"POS", "Positive"}, {"R", "Resistant"}, {"S", "Susceptible"}, {"U", ""},
      {"VS", ""},        {"W", ""}};
  for (const auto& [c, display] : kCodes)
    if (c == code) return fhir::codeable_concept(fhir::coding(kInterpretationSystem, c, display));
  Json cc = Json::object();
  cc.set("text", Json::string(std::string(code)));
  return cc;
}

Json service_section(std::string_view obr24) {  // HL7 table 0074; laboratory by default
  static constexpr std::array<std::string_view, 43> kCodes = {
      "AU",  "BG",  "BLB", "CG",  "CH",  "CP",  "CT",  "CTH", "CUS", "EC",  "EN",  "GE",  "HM",  "ICU", "IMG",
      "IMM", "LAB", "MB",  "MCB", "MYC", "NMR", "NMS", "NRS", "OSL", "OT",  "OTH", "OUS", "PF",  "PHR", "PHY",
      "PT",  "RAD", "RC",  "RT",  "RUS", "RX",  "SP",  "SR",  "TX",  "URN", "VR",  "VUS", "XRC"};
  std::string_view code = "LAB";
  for (std::string_view c : kCodes)
    if (c == obr24) code = c;
  return fhir::codeable_concept(fhir::coding(kServiceSectionSystem, code));
}

// Observation.category: imaging for the imaging sections of table 0074, else laboratory.
Json observation_category(std::string_view obr24) {
  static constexpr std::array<std::string_view, 11> kImaging = {"CT",  "CUS", "IMG", "NMR", "NMS", "OUS",
                                                                "RAD", "RUS", "RX",  "VUS", "XRC"};
  const bool imaging = std::find(kImaging.begin(), kImaging.end(), obr24) != kImaging.end();
  return fhir::codeable_concept(imaging ? fhir::coding(kObservationCategorySystem, "imaging", "Imaging")
                                        : fhir::coding(kObservationCategorySystem, "laboratory", "Laboratory"));
}

// EI (OBR-2/OBR-3, else ORC-2/ORC-3) -> Identifier with a FILL/PLAC type.
struct OrderNumber {
  std::string system, value;
};

OrderNumber order_number(const Run& run, const SegmentRef& obr, const std::optional<SegmentRef>& orc,
                         std::size_t field, std::string_view kind) {
  std::optional<SegmentRef> from = obr;
  if (value(obr, field, 1).empty()) from = orc;
  if (!from) return {};
  OrderNumber n;
  n.value = value(*from, field, 1);
  if (n.value.empty()) return {};
  std::string authority = value(*from, field, 2);
  if (authority.empty()) authority = value(*from, field, 3);
  n.system = local_system(run, authority, kind);
  return n;
}

Json order_identifier(const OrderNumber& n, std::string_view type) {
  Json id = Json::object();
  id.set("type", identifier_type(type));
  id.set("system", Json::string(n.system));
  id.set("value", Json::string(n.value));
  return id;
}

// "3.5-5.0", "4.3 to 6.2", "<5", "<=5", ">10", ">=10"; nullopt for other text.
struct Range {
  std::optional<std::string> low, high;
};

std::optional<Range> parse_range(std::string_view t) {
  while (!t.empty() && t.front() == ' ') t.remove_prefix(1);
  while (!t.empty() && t.back() == ' ') t.remove_suffix(1);
  if (t.empty()) return std::nullopt;
  Range r;
  for (std::string_view op : {"<=", ">=", "<", ">"}) {
    if (t.substr(0, op.size()) != op) continue;
    auto n = hl7_number(t.substr(op.size()));
    if (!n) return std::nullopt;
    (op[0] == '<' ? r.high : r.low) = *n;
    return r;
  }
  std::size_t split = t.find(" to ");
  std::size_t skip = 4;
  if (split == std::string_view::npos) {
    split = t.find('-', 1);
    skip = 1;
  }
  if (split == std::string_view::npos) return std::nullopt;
  auto low = hl7_number(t.substr(0, split)), high = hl7_number(t.substr(split + skip));
  if (!low || !high) return std::nullopt;
  r.low = *low;
  r.high = *high;
  return r;
}

// FHIR time (hh:mm:ss) from HL7 TM HH[MM[SS[.S]]][+/-ZZZZ]; the offset cannot be kept.
std::optional<std::string> fhir_time(std::string_view tm) {
  std::size_t n = 0;
  while (n < tm.size() && tm[n] >= '0' && tm[n] <= '9') ++n;
  if (n != 2 && n != 4 && n != 6) return std::nullopt;
  std::string s;
  for (std::size_t i = 0; i < 6; i += 2) {
    if (!s.empty()) s += ':';
    s += i < n ? tm.substr(i, 2) : std::string_view("00");
  }
  std::size_t i = n;
  if (n == 6 && i < tm.size() && tm[i] == '.') {
    std::size_t j = i + 1;
    while (j < tm.size() && tm[j] >= '0' && tm[j] <= '9') ++j;
    if (j == i + 1) return std::nullopt;
    s += tm.substr(i, j - i);
    i = j;
  }
  if (i < tm.size() && (tm[i] == '+' || tm[i] == '-') && tm.size() == i + 5) i = tm.size();
  if (i != tm.size()) return std::nullopt;
  if (std::stoi(s.substr(0, 2)) > 23 || std::stoi(s.substr(3, 2)) > 59 || std::stoi(s.substr(6, 2)) > 59)
    return std::nullopt;
  return s;
}

// An absolute URL ("scheme:..." without spaces or backslashes), which FHIR's Attachment.url
// can carry; a one-letter scheme is a Windows drive ("C:\docs"), not a URL.
bool is_url(std::string_view t) {
  const std::size_t colon = t.find(':');
  if (colon == std::string_view::npos || colon < 2 || t.find_first_of(" \\") != std::string_view::npos) return false;
  return std::all_of(t.begin(), t.begin() + static_cast<std::ptrdiff_t>(colon), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '-' ||
           c == '.';
  });
}

struct Value {
  std::string key;
  Json json;
};

std::optional<Value> string_value(std::string text) {
  if (text.empty()) return std::nullopt;
  return Value{"valueString", Json::string(std::move(text))};
}

// "7.5", "<7", ">=90" -> a Quantity (with its comparator) in units `u`; nullopt for other text.
std::optional<Value> numeric_quantity(std::string_view text, const Units& u) {
  if (auto n = hl7_number(text)) return Value{"valueQuantity", quantity(*n, u)};
  // UK laboratory systems send "<7" and ">7" for values beyond a method's range.
  for (std::string_view cmp : {"<=", ">=", "<", ">"}) {
    if (text.substr(0, cmp.size()) != cmp) continue;
    if (auto n = hl7_number(text.substr(cmp.size()))) return Value{"valueQuantity", quantity(*n, u, cmp)};
    break;
  }
  return std::nullopt;
}

// OBX-5 by OBX-2. Returns nullopt for "no value". A value type this mapping does not know is
// kept as text, with a warning.
fhir::Result<std::optional<Value>> observation_value(const Run& run, const Result& r, const Units& u) {
  const SegmentRef& obx = r.obx;
  const std::string type = value(obx, 2);
  const std::string location = where("OBX", r.occurrence, 5);
  const std::size_t reps = obx.repetition_count(5);
  if (reps == 0 && r.lines.empty()) return std::optional<Value>();
  if (is_text_type(type)) {
    std::string text;
    bool first = true;
    auto append = [&](const SegmentRef& s) {
      const std::size_t n = std::max<std::size_t>(s.repetition_count(5), 1);
      for (std::size_t i = 1; i <= n && text.size() <= kMaxTextBytes; ++i) {
        if (!first) text += '\n';
        first = false;
        text += text_value(run, s, 5, i);
      }
    };
    append(obx);
    for (const SegmentRef& line : r.lines) append(line);
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    std::size_t lead = 0;
    while (lead < text.size() && text[lead] == '\n') ++lead;
    text.erase(0, lead);
    if (text.size() > kMaxTextBytes)
      return Issue::make(ErrorCode::invalid_value, location + " is longer than 1 MiB", location);
    // A one-line text result with units (OBX-6) is a measurement sent as text: a number
    // becomes a Quantity as NM would give; other text keeps the unit after the value, so the
    // unit is never left only in the reference range.
    if (!u.unit.empty() && !text.empty() && r.lines.empty() && reps == 1 && text.find('\n') == std::string::npos) {
      std::string_view number = text;
      const std::string suffix = " " + u.unit;  // "140 mmol/L" with OBX-6 "mmol/L"
      const bool has_unit = number.size() > suffix.size() && number.substr(number.size() - suffix.size()) == suffix;
      if (has_unit) number.remove_suffix(suffix.size());
      if (auto q = numeric_quantity(number, u)) return std::optional<Value>(std::move(*q));
      if (!has_unit) text += suffix;
    }
    return string_value(std::move(text));
  }
  if (reps > 1) run.warn(location, "repeated values; only the first is mapped");
  if (type == "NM") {
    const std::string text = value(obx, 5, 1, 1, 1);
    if (text.empty()) return std::optional<Value>();
    if (auto q = numeric_quantity(text, u)) return std::optional<Value>(std::move(*q));
    run.warn(location, "not a number; kept as text");
    return string_value(text);
  }
  if (type == "CE" || type == "CWE" || type == "CNE" || type == "CF") {
    Json cc = codeable_concept(run, obx, 5, 1);
    if (cc.is_null()) return std::optional<Value>();
    return std::optional<Value>(Value{"valueCodeableConcept", std::move(cc)});
  }
  if (type == "SN") {
    // HL7 v2.5 2.A.71: comparator ^ num1 ^ separator/suffix ^ num2.
    const std::string cmp = value(obx, 5, 1), n1 = value(obx, 5, 2), sep = value(obx, 5, 3), n2 = value(obx, 5, 4);
    const auto a = hl7_number(n1), b = hl7_number(n2);
    const bool quantity_cmp = cmp.empty() || cmp == "=" || cmp == "<" || cmp == ">" || cmp == "<=" || cmp == ">=";
    if (a && sep.empty() && n2.empty() && quantity_cmp)
      return std::optional<Value>(Value{"valueQuantity", quantity(*a, u, cmp == "=" ? std::string() : cmp)});
    if (a && b && cmp.empty() && sep == "-") {
      Json range = Json::object();
      range.set("low", quantity(*a, u));
      range.set("high", quantity(*b, u));
      return std::optional<Value>(Value{"valueRange", std::move(range)});
    }
    if (a && b && cmp.empty() && (sep == ":" || sep == "/")) {
      Json ratio = Json::object();
      ratio.set("numerator", quantity(*a, {}));
      ratio.set("denominator", quantity(*b, {}));
      return std::optional<Value>(Value{"valueRatio", std::move(ratio)});
    }
    std::string text = cmp + n1 + sep + n2;
    if (text.empty()) return std::optional<Value>();
    if (!(a && sep == "+" && n2.empty() && cmp.empty()))  // "2^+" is the ordinal "2+"
      run.warn(location, "structured numeric not understood; kept as text");
    return string_value(std::move(text));
  }
  if (type == "DT" || type == "TS" || type == "DTM") {
    auto t = type == "DT" ? fhir_date(value(obx, 5, 1), location) : fhir_datetime(value(obx, 5, 1), location);
    if (!t) return std::move(t).issue();
    if (t->empty()) return std::optional<Value>();
    return std::optional<Value>(Value{"valueDateTime", Json::string(std::move(*t))});
  }
  if (type == "TM") {
    const std::string tm = value(obx, 5, 1);
    if (tm.empty()) return std::optional<Value>();
    auto t = fhir_time(tm);
    if (!t) return Issue::make(ErrorCode::invalid_value, location + " is not a valid HL7 time (HH[MM[SS]])", location);
    return std::optional<Value>(Value{"valueTime", Json::string(std::move(*t))});
  }
  if (type.empty()) {
    run.warn(where("OBX", r.occurrence, 2), "no value type; the value is kept as text");
    return string_value(text_value(run, obx, 5, 1));
  }
  if (type == "RP") {
    // Under an OBR a URL is the report's presentedForm (see report_attachment). A pointer that
    // is not a URL (a document id in the sender's own store), or a URL with no report to
    // present it (a patient observation), has no FHIR R4 Observation value type of its own:
    // the pointer is kept as the value.
    const std::string pointer = value(obx, 5, 1);
    run.warn(location, is_url(pointer) ? "a reference pointer outside a report (no OBR); the URL is kept as text"
                                       : "a reference pointer that is not a URL; kept as text");
    return string_value(pointer);
  }
  // Any other value type (HL7 table 0125 has more, and senders invent their own) keeps what
  // was sent as text, with its units, rather than losing the result.
  std::string shown = type.substr(0, 8);
  for (char& c : shown)
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';
  run.warn(where("OBX", r.occurrence, 2), "value type " + shown + " is not mapped; the value is kept as text");
  std::string text = text_value(run, obx, 5, 1);
  if (text.size() > kMaxTextBytes)
    return Issue::make(ErrorCode::invalid_value, location + " is longer than 1 MiB", location);
  if (!text.empty() && !u.unit.empty()) text += " " + u.unit;
  return string_value(std::move(text));
}

// ---- embedded documents (ED) and reference pointers (RP) -> DiagnosticReport.presentedForm

bool is_base64(std::string_view t) {
  if (t.empty() || t.size() % 4 != 0) return false;
  std::size_t pad = 0;
  while (pad < 2 && t[t.size() - 1 - pad] == '=') ++pad;
  return std::all_of(t.begin(), t.end() - static_cast<std::ptrdiff_t>(pad), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
  });
}

std::string to_base64(std::string_view bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (std::size_t i = 0; i < bytes.size(); i += 3) {
    const std::size_t n = std::min<std::size_t>(3, bytes.size() - i);
    std::uint32_t v = 0;
    for (std::size_t k = 0; k < 3; ++k)
      v = (v << 8) | (k < n ? static_cast<unsigned char>(bytes[i + k]) : 0u);
    for (std::size_t k = 0; k < 4; ++k) out += k <= n ? kAlphabet[(v >> (18 - 6 * k)) & 0x3f] : '=';
  }
  return out;
}

std::optional<std::string> hex_bytes(std::string_view t) {
  if (t.size() % 2 != 0) return std::nullopt;
  auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  for (std::size_t i = 0; i < t.size(); i += 2) {
    const int hi = digit(t[i]), lo = digit(t[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out += static_cast<char>(hi * 16 + lo);
  }
  return out;
}

// MIME type of ED/RP "type of data" (table 0191: TEXT, AP, IM, ...) and "subtype" (table
// 0291: PDF, RTF, JPEG, ...); senders also put a MIME type and subtype there directly.
std::string content_type(std::string type, std::string subtype) {
  for (std::string* t : {&type, &subtype})
    for (char& c : *t) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  if (type.find('/') != std::string::npos) return single_spaced(type);  // a FHIR code
  for (std::string_view mime : {"application", "text", "image", "audio", "video"})
    if (type == mime && !subtype.empty() && subtype.find('/') == std::string::npos) return type + "/" + subtype;
  static constexpr std::pair<std::string_view, std::string_view> kSubtypes[] = {
      {"pdf", "application/pdf"}, {"rtf", "application/rtf"}, {"html", "text/html"}, {"xml", "text/xml"},
      {"jpeg", "image/jpeg"},     {"jpg", "image/jpeg"},      {"png", "image/png"},  {"gif", "image/gif"},
      {"tiff", "image/tiff"},     {"octet-stream", "application/octet-stream"}};
  for (const auto& [name, mime] : kSubtypes)
    if (subtype == name) return std::string(mime);
  return type == "text" ? "text/plain" : "application/octet-stream";
}

// An ED result (HL7 v2.5 2.A.27: source ^ type ^ subtype ^ encoding ^ data), or an RP one
// whose pointer is a URL (2.A.65: pointer ^ application ^ type ^ subtype), as an Attachment
// for the report's presentedForm: a document is the report's presentation, not an
// Observation value. nullopt for an RP that is not a URL (kept as an Observation's text) and
// for an ED without data (a warning); invalid_value for data that is not what its encoding
// (table 0299: A, Hex, Base64) says.
fhir::Result<std::optional<Json>> report_attachment(const Run& run, const Result& r) {
  const SegmentRef& obx = r.obx;
  const std::string location = where("OBX", r.occurrence, 5);
  Json a = Json::object();
  if (value(obx, 2) == "RP") {
    const std::string pointer = value(obx, 5, 1);
    if (!is_url(pointer)) return std::optional<Json>();
    const std::string type = value(obx, 5, 3), subtype = value(obx, 5, 4);
    if (!type.empty() || !subtype.empty()) a.set("contentType", Json::string(content_type(type, subtype)));
    a.set("url", Json::string(pointer));
  } else {
    const std::string encoding = value(obx, 5, 4);
    const std::string data = value(obx, 5, 5);
    if (data.empty()) {
      run.warn(location, "embedded data (ED) without data; nothing is mapped");
      return std::optional<Json>();
    }
    std::string base64;
    if (iequals(encoding, "Base64")) {
      if (!is_base64(data))
        return Issue::make(ErrorCode::invalid_value, location + ": the embedded data is not valid Base64", location);
      base64 = data;
    } else if (iequals(encoding, "Hex")) {
      auto bytes = hex_bytes(data);
      if (!bytes)
        return Issue::make(ErrorCode::invalid_value, location + ": the embedded data is not valid Hex", location);
      base64 = to_base64(*bytes);
    } else if (iequals(encoding, "A") || encoding.empty()) {
      base64 = to_base64(data);
    } else {
      return Issue::make(ErrorCode::invalid_value,
                         location + ": the embedded data's encoding (ED.4) is not A, Hex or Base64 (HL7 table 0299)",
                         location);
    }
    if (base64.size() > kMaxAttachmentBase64)
      return Issue::make(ErrorCode::invalid_value, location + ": the embedded data is larger than 4 MiB", location);
    a.set("contentType", Json::string(content_type(value(obx, 5, 2), value(obx, 5, 3))));
    a.set("data", Json::string(std::move(base64)));
  }
  std::string title = value(obx, 3, 2);
  if (title.empty()) title = value(obx, 3, 1);
  set_string(a, "title", std::move(title));
  return std::optional<Json>(std::move(a));
}

// Builds the Observation of one result. A patient observation (no OBR) passes null Json for
// the report's code and category and "" for its time: it has none of them.
fhir::Result<Json> observation(const Run& run, const Result& r, const Json& report_code, const Json& category,
                               const std::string& report_effective, const std::string& id) {
  const SegmentRef& obx = r.obx;
  const Units u = units(obx, 6);
  auto v = observation_value(run, r, u);
  if (!v) return std::move(v).issue();

  Json o = Json::object();
  o.set("resourceType", Json::string("Observation"));
  o.set("id", Json::string(id));
  o.set("status", Json::string(std::string(observation_status(run, value(obx, 11), where("OBX", r.occurrence, 11)))));
  if (!category.is_null()) o.set("category", array_of(category));
  Json code = codeable_concept(run, obx, 3);
  if (code.is_null()) {
    run.warn(where("OBX", r.occurrence, 3), "no observation identifier; the order's code (OBR-4) is used");
    code = report_code;
  }
  o.set("code", std::move(code));
  auto effective = datetime_field(obx, 14, where("OBX", r.occurrence, 14));
  if (!effective) return std::move(effective).issue();
  set_string(o, "effectiveDateTime", effective->empty() ? report_effective : *effective);
  if (*v) o.set((*v)->key, std::move((*v)->json));

  Json interpretations = Json::array();
  const std::size_t flags = repetitions(run, obx, where("OBX", r.occurrence, 8), 8, 5);
  for (std::size_t i = 1; i <= flags; ++i) {
    const std::string flag = value(obx, 8, 1, 1, i);
    if (!flag.empty()) interpretations.push_back(interpretation(flag));
  }
  set_json(o, "interpretation", std::move(interpretations));

  std::string note;
  for (const SegmentRef& nte : r.notes) {
    const std::size_t n = nte.repetition_count(3);
    for (std::size_t i = 1; i <= n && note.size() <= kMaxTextBytes; ++i) {
      if (!note.empty()) note += '\n';
      note += text_value(run, nte, 3, i);
    }
  }
  if (note.size() > kMaxTextBytes) note.resize(kMaxTextBytes);
  if (!note.empty()) {
    Json annotation = Json::object();
    annotation.set("text", Json::string(std::move(note)));
    o.set("note", array_of(std::move(annotation)));
  }

  const std::string range_text = value(obx, 7);
  if (!range_text.empty()) {
    Json range = Json::object();
    if (auto parsed = parse_range(range_text)) {
      if (parsed->low) range.set("low", quantity(*parsed->low, u));
      if (parsed->high) range.set("high", quantity(*parsed->high, u));
    } else {
      range.set("text", Json::string(range_text));
    }
    o.set("referenceRange", array_of(std::move(range)));
  }
  return o;
}

// The report's key (its id and its observations' ids derive from it). The filler order number
// is the lab's id for the order, but WinPath sends one accession number as the filler of every
// OBR of a sample (a blood count and its telephoned-results group; a culture and each of its
// isolates' sensitivities, which also repeat OBR-4): the service (OBR-4) and the parent result
// (OBR-26, OBR-29) are part of the key, so each group is a report of its own, and a resend or a
// correction of the same group (same order number and service) replaces it. Groups of one
// message that still share a key are told apart by their set id (OBR-1), else their position.
// Without a filler or placer number the key is the message and the OBR's position.
std::string report_key(const Run& run, const Report& rep, const OrderNumber& filler, const OrderNumber& placer,
                       std::vector<std::string>& used_keys) {
  const SegmentRef& obr = rep.obr;
  std::string key;
  if (!filler.value.empty()) key = "filler|" + filler.system + "|" + filler.value;
  else if (!placer.value.empty()) key = "placer|" + placer.system + "|" + placer.value;
  else {
    run.warn(where("OBR", rep.occurrence, 3),
             "no filler or placer order number; the report id comes from the message control id");
    key = "message|" + run.message.control_id() + "|" + std::to_string(rep.occurrence);
  }
  key += "|service|" + value(obr, 4, 1) + "|" + value(obr, 4, 3);
  if (const std::string parent = std::string(obr.raw(26)) + "|" + std::string(obr.raw(29)); parent != "|")
    key += "|parent|" + parent;
  const auto used = [&](const std::string& k) {
    return std::find(used_keys.begin(), used_keys.end(), k) != used_keys.end();
  };
  if (used(key)) {
    const std::string set_id = value(obr, 1);
    std::string distinct = key + "|set|" + set_id;
    if (set_id.empty() || used(distinct)) distinct = key + "|position|" + std::to_string(rep.occurrence);
    key = std::move(distinct);
  }
  used_keys.push_back(key);
  return key;
}

fhir::Status map_report(const Run& run, const Report& rep, std::vector<std::string>& used_keys) {
  const SegmentRef& obr = rep.obr;
  const std::string obr_at = where("OBR", rep.occurrence, 0);
  Json code = codeable_concept(run, obr, 4);
  if (code.is_null()) {
    // Real feeds send result groups without OBR-4 (Epic flowsheet vitals: one OBR per set of
    // readings) and Mirth takes them. DiagnosticReport.code is 1..1 but a CodeableConcept
    // with text alone is valid FHIR R4, so the group is kept under a plain placeholder.
    run.warn(where("OBR", rep.occurrence, 4),
             "no universal service identifier; the report's code is the text \"" + std::string(kUnspecifiedGroup) +
                 "\"");
    code = Json::object();
    code.set("text", Json::string(std::string(kUnspecifiedGroup)));
  }
  auto effective = datetime_field(obr, 7, where("OBR", rep.occurrence, 7));
  if (!effective) return std::move(effective).issue();
  auto issued = fhir_instant(value(obr, 22, 1), where("OBR", rep.occurrence, 22));
  if (!issued) return std::move(issued).issue();

  const OrderNumber filler = order_number(run, obr, rep.orc, 3, "filler-order");
  const OrderNumber placer = order_number(run, obr, rep.orc, 2, "placer-order");
  // Observation ids extend the report's key with OBX-3 and OBX-4.
  const std::string key = report_key(run, rep, filler, placer, used_keys);
  const std::string key_at = !filler.value.empty()   ? where("OBR", rep.occurrence, 3)
                             : !placer.value.empty() ? where("OBR", rep.occurrence, 2)
                                                     : std::string("MSH-10");

  const Json category = observation_category(value(obr, 24));
  Json result_refs = Json::array(), presented = Json::array();
  std::vector<std::string> used_ids;
  for (const Result& r : rep.results) {
    const SegmentRef& obx = r.obx;
    if (const std::string type = value(obx, 2); type == "ED" || type == "RP") {
      auto a = report_attachment(run, r);
      if (!a) return std::move(a).issue();
      if (*a) presented.push_back(std::move(**a));
      if (*a || type == "ED") continue;
    }
    std::string id = resource_id(run, "obs", {key, obx.raw(3, 1, 1), obx.raw(3, 1, 3), value(obx, 4)});
    if (std::find(used_ids.begin(), used_ids.end(), id) != used_ids.end())  // same code and sub-id twice in one OBR
      id = resource_id(run, "obs", {key, obx.raw(3, 1, 1), obx.raw(3, 1, 3), value(obx, 4), value(obx, 1),
                                    std::to_string(r.occurrence)});
    auto o = observation(run, r, code, category, *effective, id);
    if (!o) return std::move(o).issue();
    used_ids.push_back(id);
    run.out.key_locations.emplace_back("Observation/" + id, key_at);
    result_refs.push_back(reference("Observation", id));
    put_resource(run, std::move(*o));
  }

  Json dr = Json::object();
  dr.set("resourceType", Json::string("DiagnosticReport"));
  dr.set("id", Json::string(resource_id(run, "dr", {key})));
  run.out.key_locations.emplace_back("DiagnosticReport/" + std::string(dr.string_at("id")), key_at);
  Json ids = Json::array();
  if (!filler.value.empty()) ids.push_back(order_identifier(filler, "FILL"));
  if (!placer.value.empty()) ids.push_back(order_identifier(placer, "PLAC"));
  set_json(dr, "identifier", std::move(ids));
  dr.set("status", Json::string(std::string(report_status(run, value(obr, 25), obr_at + "-25"))));
  dr.set("category", array_of(service_section(value(obr, 24))));
  dr.set("code", std::move(code));
  set_string(dr, "effectiveDateTime", *effective);
  if (*issued) dr.set("issued", Json::string(**issued));
  else if (!value(obr, 22, 1).empty()) run.warn(obr_at + "-22", "a date without a time; issued is not mapped");
  set_json(dr, "result", std::move(result_refs));
  set_json(dr, "presentedForm", std::move(presented));
  put_resource(run, std::move(dr));
  return fhir::Ok{};
}

// The patient part of a patient observation's key: the NHS number when PID-3 carries a valid
// one, else the first identifier mapped from PID-3, so the key does not depend on the order
// or number of PID-3 repetitions a sender writes.
std::string patient_key(const Run& run) {
  const Json* ids = run.out.patient.find("identifier");
  if (ids == nullptr || ids->size() == 0) return {};
  for (const Json& id : ids->items())
    if (id.string_at("system") == fhir::kNhsNumberSystem) return "nhs|" + std::string(id.string_at("value"));
  const Json& first = ids->items()[0];
  return std::string(first.string_at("system")) + "|" + std::string(first.string_at("value"));
}

// Observations about the patient rather than results of an order: OBX in ORU^R01's PATIENT
// group, after PID/PD1 and before the first ORC/OBR (HL7 v2.6 ch. 7.3.1 added them; v2.7
// names the group PATIENT_OBSERVATION), e.g. a height, a weight or a pregnancy status. Each
// is an Observation of its own, valued as any result, with no DiagnosticReport, category
// (table 0074 describes an order's section) or time other than OBX-14. An id cannot come from
// an order number: it derives from the patient (patient_key), OBX-3, OBX-4 and OBX-14, so a
// resend or a correction of the same reading replaces it and a later reading is a new one;
// without OBX-14, from MSH-10 and the OBX's position, as report_key does without an order.
fhir::Status map_patient_observations(const Run& run, const std::vector<Result>& results) {
  const std::string patient = "patient|" + patient_key(run);
  std::vector<std::string> used_ids;
  for (const Result& r : results) {
    const SegmentRef& obx = r.obx;
    if (value(obx, 2) == "ED") {
      run.warn(where("OBX", r.occurrence, 5), "embedded data outside a report (no OBR to present it); not mapped");
      continue;
    }
    if (codeable_concept(run, obx, 3).is_null()) {
      run.warn(where("OBX", r.occurrence, 3), "a patient observation without an observation identifier; not mapped");
      continue;
    }
    std::string key = patient;
    if (const std::string at = value(obx, 14); !at.empty()) {
      key += "|at|" + at;
    } else {
      run.warn(where("OBX", r.occurrence, 14),
               "no observation time; the observation id comes from the message control id, so a later message adds "
               "a new observation rather than replacing this one");
      key += "|message|" + run.message.control_id() + "|" + std::to_string(r.occurrence);
    }
    std::string id = resource_id(run, "obs", {key, obx.raw(3, 1, 1), obx.raw(3, 1, 3), value(obx, 4)});
    if (std::find(used_ids.begin(), used_ids.end(), id) != used_ids.end())  // the same reading twice
      id = resource_id(run, "obs", {key, obx.raw(3, 1, 1), obx.raw(3, 1, 3), value(obx, 4), value(obx, 1),
                                    std::to_string(r.occurrence)});
    auto o = observation(run, r, Json(), Json(), std::string(), id);
    if (!o) return std::move(o).issue();
    used_ids.push_back(id);
    put_resource(run, std::move(*o));
  }
  return fhir::Ok{};
}

// A repeated PID is the same patient when a PID-3 identifier (CX.1 with its assigning
// authority CX.4) of one is also in the other: the repetitions need not be the same.
bool same_patient(const SegmentRef& first, const SegmentRef& other) {
  if (first.raw(3) == other.raw(3)) return true;
  const std::size_t a = std::min(first.repetition_count(3), kMaxRepetitions),
                    b = std::min(other.repetition_count(3), kMaxRepetitions);
  for (std::size_t i = 1; i <= a; ++i) {
    const std::string id = value(first, 3, 1, 1, i);
    if (id.empty()) continue;
    for (std::size_t j = 1; j <= b; ++j)
      if (value(other, 3, 1, 1, j) == id && value(other, 3, 4, 1, j) == value(first, 3, 4, 1, i)) return true;
  }
  return false;
}

}  // namespace

fhir::Status map_results(const Run& run, std::size_t pid_index) {
  const Message& m = run.message;
  std::vector<Report> reports;
  std::vector<Result> patient_results;  // OBX of the PATIENT group (map_patient_observations)
  std::optional<SegmentRef> orc;
  std::size_t obr_seen = 0, obx_seen = 0, observations = 0, pid_seen = 1;
  bool in_patient = true;  // after a PID, before the ORC or OBR that opens an order
  bool in_specimen = false;
  bool previous_obx = false;               // the segment before was an OBX (text lines must be consecutive)
  std::vector<Result>* noted = nullptr;    // an NTE here annotates the last result of this list
  for (std::size_t i = 0; i < m.segment_count(); ++i) {
    const SegmentRef s = m.segment(i);
    const std::string_view id = s.id();
    if (id == "OBR") ++obr_seen;
    if (id == "OBX") ++obx_seen;
    if (i <= pid_index) continue;
    if (id == "PID") {
      // Some feeds repeat the patient's PID before each order. Another patient's results
      // must neither be filed under the first nor be dropped once the message is
      // acknowledged: a message is applied under one identity, so it is refused.
      ++pid_seen;
      if (same_patient(m.segment(pid_index), s)) {
        in_patient = true;
        noted = nullptr;
        previous_obx = false;
        continue;
      }
      const std::string at = where("PID", pid_seen, 3);
      return Issue::make(ErrorCode::invalid_value,
                         at + " names another patient than the first PID: the gateway files a message under one "
                              "patient; send each patient's results in a message of its own",
                         at);
    }
    if (id == "NTE") {
      // HL7 v2.5 ch. 7.3.1: NTE after an OBX are its notes (the v2.7 PATIENT_OBSERVATION group
      // has none, but senders write them there too, and they are kept the same way).
      if (noted != nullptr) noted->back().notes.push_back(s);
      previous_obx = false;
      continue;
    }
    noted = nullptr;
    if (id == "ORC") {
      orc = s;
      in_patient = false;
    } else if (id == "OBR") {
      if (reports.size() == kMaxReports)
        return Issue::make(ErrorCode::invalid_value,
                           "more than " + std::to_string(kMaxReports) + " OBR segments; split the message", "OBR");
      reports.push_back(Report{s, obr_seen, orc, {}});
      orc.reset();
      in_patient = false;
      in_specimen = false;
    } else if (id == "SPM") {
      in_specimen = true;
    } else if (id == "OBX") {
      std::vector<Result>* results = nullptr;
      if (in_patient) {
        results = &patient_results;
      } else if (reports.empty()) {
        run.warn(where("OBX", obx_seen, 0), "after an ORC but before its OBR; not mapped");
      } else if (in_specimen) {
        run.warn(where("OBX", obx_seen, 0), "describes the specimen (after SPM); not mapped");
      } else {
        results = &reports.back().results;
      }
      if (results != nullptr) {
        if (previous_obx && !results->empty() && continues(results->back(), s)) {
          results->back().lines.push_back(s);
        } else {
          if (++observations > kMaxObservations)
            return Issue::make(ErrorCode::invalid_value,
                               "more than " + std::to_string(kMaxObservations) + " observations; split the message",
                               "OBX");
          results->push_back(Result{s, obx_seen, {}, {}});
        }
        noted = results;
      }
    }
    previous_obx = id == "OBX";
  }
  if (reports.empty()) return Issue::make(ErrorCode::missing_value, "an ORU^R01 needs an OBR segment", "OBR");
  if (auto s = map_patient_observations(run, patient_results); !s) return s;
  std::vector<std::string> used_keys;
  for (const Report& rep : reports)
    if (auto s = map_report(run, rep, used_keys); !s) return s;
  return fhir::Ok{};
}

}  // namespace gw::hl7v2::detail
