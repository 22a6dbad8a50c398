// SPDX-License-Identifier: Apache-2.0
#include "adapters/hl7v2/ack.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cctype>
#include <cstdlib>
#include <ctime>

namespace gw::hl7v2 {
namespace {

bool version_at_least(const std::string& version, int major, int minor) {
  int a = 0, b = 0;
  if (std::sscanf(version.c_str(), "%d.%d", &a, &b) < 1) return true;  // unknown: assume current
  return a > major || (a == major && b >= minor);
}

// Characters that would break the ACK's structure are replaced: error texts are ours, but
// echoed fields come from the sender.
std::string clean(std::string_view text, const MshSummary& msh) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == msh.field_separator || c == '\r' || c == '\n' ||
        msh.encoding_characters.find(c) != std::string::npos)
      out += ' ';
    else
      out += c;
  }
  return out;
}

// "OBX[2]-5" -> segment OBX, sequence 2, field 5.
struct Location {
  std::string segment;
  int sequence = 1;
  int field = 0;
};
Location parse_location(std::string_view s) {
  Location l;
  // Only HL7 locations ("PID-3", "OBX[2]-5"): a segment id is three upper-case letters or
  // digits, followed by nothing, '[' or '-'.
  if (s.size() < 3 || (s.size() > 3 && s[3] != '[' && s[3] != '-')) return l;
  for (std::size_t k = 0; k < 3; ++k)
    if (!std::isupper(static_cast<unsigned char>(s[k])) && !std::isdigit(static_cast<unsigned char>(s[k]))) return l;
  l.segment = std::string(s.substr(0, 3));
  std::size_t i = 3;
  if (i < s.size() && s[i] == '[') {
    l.sequence = std::atoi(std::string(s.substr(i + 1)).c_str());
    if (l.sequence <= 0) l.sequence = 1;
    i = s.find(']', i);
    if (i == std::string_view::npos) return l;
    ++i;
  }
  if (i < s.size() && s[i] == '-') l.field = std::atoi(std::string(s.substr(i + 1)).c_str());
  return l;
}

bool condition_holds(const std::string& condition, Outcome outcome) {
  if (condition == "NE" || condition.empty()) return false;
  if (condition == "ER") return outcome != Outcome::applied;
  if (condition == "SU") return outcome == Outcome::applied;
  return true;  // AL, and values outside table 0155
}

}  // namespace

std::string MshSummary::component(std::size_t n, std::size_t c) const {
  const std::string f = field(n);
  const char sep = encoding_characters.empty() ? '^' : encoding_characters[0];
  std::size_t begin = 0;
  for (std::size_t k = 1; k < c; ++k) {
    begin = f.find(sep, begin);
    if (begin == std::string::npos) return {};
    ++begin;
  }
  const std::size_t end = f.find(sep, begin);
  return f.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
}

MshSummary read_msh(std::string_view raw) {
  MshSummary m;
  if (raw.size() >= 3 && static_cast<unsigned char>(raw[0]) == 0xEF && static_cast<unsigned char>(raw[1]) == 0xBB &&
      static_cast<unsigned char>(raw[2]) == 0xBF)
    raw.remove_prefix(3);
  if (raw.size() < 4 || raw.substr(0, 3) != "MSH") return m;
  const char fs = raw[3];
  if (fs == '\r' || fs == '\n' || static_cast<unsigned char>(fs) < 0x20 || std::isalnum(static_cast<unsigned char>(fs)))
    return m;
  const std::size_t eol = raw.find_first_of("\r\n");
  std::string_view seg = raw.substr(0, eol);
  m.found = true;
  m.field_separator = fs;
  m.fields.emplace_back("MSH");
  m.fields.emplace_back(1, fs);
  std::size_t pos = 4;
  bool first = true;
  while (pos <= seg.size()) {
    std::size_t next = seg.find(fs, pos);
    if (next == std::string_view::npos) next = seg.size();
    m.fields.emplace_back(seg.substr(pos, next - pos));
    if (first) {
      m.encoding_characters = m.fields.back();
      first = false;
    }
    pos = next + 1;
  }
  return m;
}

std::string_view ack_code_name(AckCode c) {
  switch (c) {
    case AckCode::AA: return "AA";
    case AckCode::AE: return "AE";
    case AckCode::AR: return "AR";
    case AckCode::CA: return "CA";
    case AckCode::CE: return "CE";
    case AckCode::CR: return "CR";
  }
  return "AR";
}

AckError ack_error_for(const fhir::Issue& issue) {
  using fhir::ErrorCode;
  AckError e;
  e.location = issue.expression;
  e.text = issue.diagnostics;
  switch (issue.code) {
    case ErrorCode::not_supported: e.code = issue.expression == "MSH-12" ? 203 : 200; break;
    case ErrorCode::missing_value: e.code = 101; break;
    case ErrorCode::invalid_value:
    case ErrorCode::invalid_nhs_number:
    case ErrorCode::invalid_resource: e.code = 102; break;
    case ErrorCode::not_found: e.code = 204; break;
    case ErrorCode::payload_too_large: e.code = 100; break;
    default: e.code = 207; break;
  }
  return e;
}

AckMode ack_mode(const MshSummary& msh) {
  // Real feeds pad fields with spaces (Mirth's sample set has "MSH-15 = ' '"): a blank
  // field is an empty one, and the codes are compared without padding.
  auto trimmed = [](std::string v) {
    const auto b = v.find_first_not_of(" \t");
    if (b == std::string::npos) return std::string();
    return v.substr(b, v.find_last_not_of(" \t") - b + 1);
  };
  AckMode m;
  m.accept = trimmed(msh.component(15, 1));
  m.application = trimmed(msh.component(16, 1));
  m.enhanced = !m.accept.empty() || !m.application.empty();
  return m;
}

AckClock next_ack_clock() {
  static std::atomic<std::uint32_t> counter{0};
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char ts[32];
  std::strftime(ts, sizeof ts, "%Y%m%d%H%M%S+0000", &tm);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  char id[32];
  std::snprintf(id, sizeof id, "GW%011llx%07x", static_cast<unsigned long long>(ms) & 0xFFFFFFFFFFFull,
                static_cast<unsigned>(counter.fetch_add(1) & 0xFFFFFFF));
  return AckClock{ts, id};
}

std::string build_ack(const MshSummary& in, AckCode code, const std::optional<AckError>& error, const AckClock& clock) {
  const char fs = in.found ? in.field_separator : '|';
  const std::string enc = in.found && in.encoding_characters.size() >= 4 ? in.encoding_characters : "^~\\&";
  MshSummary ctx;
  ctx.field_separator = fs;
  ctx.encoding_characters = enc;
  const char comp = enc[0];
  const char sub = enc.size() > 3 ? enc[3] : '&';
  const std::string version = in.component(12, 1);
  const std::string trigger = in.component(9, 2);

  std::string f;  // field separator as a string
  f += fs;
  std::string msh = "MSH" + f + enc;
  auto add = [&](std::string_view v) {
    msh += fs;
    msh += v;
  };
  add(in.field(5));  // MSH-3 <- receiving application
  add(in.field(6));  // MSH-4 <- receiving facility
  add(in.field(3));  // MSH-5 <- sending application
  add(in.field(4));  // MSH-6 <- sending facility
  add(clock.timestamp);
  add("");           // MSH-8 security
  std::string type = "ACK";
  if (!trigger.empty()) {
    type += comp;
    type += clean(trigger, ctx);
    if (version_at_least(version, 2, 4)) {
      type += comp;
      type += "ACK";
    }
  }
  add(type);
  add(clock.control_id);
  add(in.field(11).empty() ? "P" : in.field(11));
  add(version.empty() ? "2.5" : in.field(12));
  std::string out = msh + "\r";

  out += "MSA" + f + std::string(ack_code_name(code)) + f + clean(in.field(10), ctx);
  if (error && !error->text.empty()) out += f + clean(error->text.substr(0, 80), ctx);
  out += "\r";

  if (error) {
    const Location loc = parse_location(error->location);
    const std::string code_text = std::to_string(error->code);
    if (version_at_least(version, 2, 5)) {
      std::string erl;
      if (!loc.segment.empty()) {
        erl = loc.segment + comp + std::to_string(loc.sequence);
        if (loc.field > 0) erl += comp + std::to_string(loc.field);
      }
      out += "ERR" + f + f + erl + f + code_text + comp + clean(error->text.substr(0, 80), ctx) + comp + "HL70357" + f +
             "E" + f + f + f + f + clean(error->text, ctx) + "\r";
    } else {
      std::string eld = loc.segment + comp + (loc.segment.empty() ? "" : std::to_string(loc.sequence)) + comp +
                        (loc.field > 0 ? std::to_string(loc.field) : "") + comp + code_text + sub +
                        clean(error->text.substr(0, 80), ctx) + sub + "HL70357";
      out += "ERR" + f + eld + "\r";
    }
  }
  return out;
}

std::vector<std::string> acknowledgements(const MshSummary& inbound, Outcome outcome,
                                          const std::optional<AckError>& error) {
  std::vector<std::string> out;
  const AckMode mode = ack_mode(inbound);
  const AckCode app = outcome == Outcome::applied ? AckCode::AA
                      : outcome == Outcome::error ? AckCode::AE
                                                  : AckCode::AR;
  const std::optional<AckError> err = outcome == Outcome::applied ? std::nullopt : error;
  if (!mode.enhanced) {
    out.push_back(build_ack(inbound, app, err, next_ack_clock()));
    return out;
  }
  if (condition_holds(mode.accept, outcome)) {
    // The message is committed (or refused) before this is sent, so the commit
    // acknowledgement already reflects the outcome: CE for content the gateway cannot apply,
    // CR for a message it cannot read or does not take.
    const AckCode accept = outcome == Outcome::applied ? AckCode::CA
                           : outcome == Outcome::error ? AckCode::CE
                                                       : AckCode::CR;
    out.push_back(build_ack(inbound, accept, err, next_ack_clock()));
  }
  if (condition_holds(mode.application, outcome)) out.push_back(build_ack(inbound, app, err, next_ack_clock()));
  return out;
}

}  // namespace gw::hl7v2
