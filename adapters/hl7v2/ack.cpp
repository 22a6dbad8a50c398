// SPDX-License-Identifier: Apache-2.0
#include "adapters/hl7v2/ack.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cctype>
#include <cstdlib>
#include <ctime>

#include "adapters/hl7v2/message.h"
#include "fhir/query_string.h"

namespace gw::hl7v2 {
namespace {

bool version_at_least(const std::string& version, int major, int minor) {
  int a = 0, b = 0;
  if (std::sscanf(version.c_str(), "%d.%d", &a, &b) < 1) return true;  // unknown: assume current
  return a > major || (a == major && b >= minor);
}

// The delimiters an acknowledgement is written with: the inbound message's own, whenever
// they are usable, so that echoed fields (MSA-2 above all) go back exactly as they were sent,
// escapes included; else (no MSH, or MSH-1/MSH-2 the parser refused) the standard |^~\&.
struct AckDelimiters {
  Delimiters ack;
  bool inbound = false;  // `ack` is the inbound message's set
  bool latin1 = false;   // the ACK is written in ISO 8859-1 (MshSummary::latin1)
};
AckDelimiters ack_delimiters(const MshSummary& in) {
  AckDelimiters d;
  if (!in.found) return d;
  d.latin1 = in.latin1;
  if (auto declared = read_delimiters(in.field_separator, in.encoding_characters)) {
    d.ack = *declared;
    d.inbound = true;
  }
  return d;
}

// A field of the inbound MSH as the ACK carries it. With the inbound delimiters the raw text
// is already valid (read_msh split it on its field separator; it holds no segment
// terminator) and is echoed unchanged. Otherwise the inbound delimiters could not be read, so
// the text is taken literally and escaped.
std::string echo(std::string_view raw, const AckDelimiters& d) {
  return d.inbound ? std::string(raw) : escape(raw, d.ack);
}

// `text` (UTF-8, as the gateway's texts are) in ISO 8859-1. MSH-18 names the character set
// of the whole message (HL7 v2.5 ch. 2.15.9.18), so an ACK to a Latin-1 sender must not carry
// UTF-8 bytes, which it would read as two characters each. A character outside ISO 8859-1 (and
// a byte that is not UTF-8) becomes '?', before escaping, so it can never act as a delimiter.
std::string to_latin1(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
      ++i;
      continue;
    }
    // A two-byte sequence C2/C3 xx is U+0080..U+00FF, the upper half of ISO 8859-1.
    if ((c == 0xC2 || c == 0xC3) && i + 1 < text.size() && (static_cast<unsigned char>(text[i + 1]) & 0xC0) == 0x80) {
      out.push_back(static_cast<char>(((c & 0x03) << 6) | (static_cast<unsigned char>(text[i + 1]) & 0x3F)));
      i += 2;
      continue;
    }
    // Anything else: one '?' for the character (its lead byte and continuation bytes).
    out.push_back('?');
    ++i;
    while (i < text.size() && (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80) ++i;
  }
  return out;
}

// Text the ACK carries as one value (a component or sub-component): in the ACK's character
// set, escaped, never blanked, so the receiver reads back what was meant (e.g. an error naming
// the delimiter '^').
std::string value(std::string_view text, const AckDelimiters& d) {
  return escape(d.latin1 ? to_latin1(text) : std::string(text), d.ack);
}

// `text` whole when it fits in `max_bytes`; else cut at its last space that leaves room for
// "..." (or, in one long word, at a UTF-8 character boundary) and marked with it, so that a
// receiver never shows half a word as if it were the whole message.
std::string clipped(std::string_view text, std::size_t max_bytes) {
  if (text.size() <= max_bytes) return std::string(text);
  std::size_t n = max_bytes - 3;
  if (const std::size_t space = text.rfind(' ', n); space != std::string_view::npos && space > 0) {
    n = space;
  } else {
    n = fhir::utf8_cut(text, n);
  }
  std::string out(text.substr(0, n));
  out.erase(out.find_last_not_of(' ') + 1);
  return out + "...";
}

// "OBX[2]-5" -> segment OBX, sequence 2, field 5; "MSH-9.2" -> MSH, 1, field 9, component 2;
// "pv1[1]" (a malformed segment named as sent, see locate_segment) -> pv1, 1.
struct Location {
  std::string segment;
  int sequence = 1;
  int field = 0;
  int component = 0;
};
Location parse_location(std::string_view s) {
  Location l;
  // Only HL7 locations: a segment id of one to three printable characters (three upper-case
  // letters or digits unless it names a malformed segment as sent), followed by nothing, '['
  // or '-'. "segment 4", "message" and "" name no segment.
  const std::size_t id_end = std::min(s.find_first_of("[-"), s.size());
  if (id_end == 0 || id_end > 3) return l;
  for (std::size_t k = 0; k < id_end; ++k)
    if (s[k] <= 0x20 || s[k] >= 0x7F || s[k] == ']') return l;
  l.segment = std::string(s.substr(0, id_end));
  std::size_t i = id_end;
  if (i < s.size() && s[i] == '[') {
    l.sequence = std::atoi(std::string(s.substr(i + 1)).c_str());
    if (l.sequence <= 0) l.sequence = 1;
    i = s.find(']', i);
    if (i == std::string_view::npos) return l;
    ++i;
  }
  if (i < s.size() && s[i] == '-') {
    l.field = std::atoi(std::string(s.substr(i + 1)).c_str());
    if (const std::size_t dot = s.find('.', i); l.field > 0 && dot != std::string_view::npos)
      l.component = std::max(0, std::atoi(std::string(s.substr(dot + 1)).c_str()));
  }
  return l;
}

// The parser names a segment it cannot read by its position ("segment 4"); ERR names a
// segment by its id and its occurrence among segments with that id (HL7 v2.5 ch. 2.A.27 ERL).
// Reads both from `raw`, the message as received (lines ending CR, LF or CRLF, empty lines not
// counted, as the parser counts them): "pv1[1]". The id is kept as sent, non-printable bytes as
// '?'. "" when `raw` has no such segment.
std::string locate_segment(std::string_view raw, std::size_t number) {
  if (raw.substr(0, 3) == "\xEF\xBB\xBF") raw.remove_prefix(3);
  std::vector<std::string> ids;
  std::size_t line = 0;
  while (line < raw.size() && ids.size() < number) {
    std::size_t eol = line;
    while (eol < raw.size() && raw[eol] != '\r' && raw[eol] != '\n') ++eol;
    if (eol > line) {
      std::string id(raw.substr(line, std::min<std::size_t>(3, eol - line)));
      for (char& c : id)
        if (c <= 0x20 || c >= 0x7F || c == '[' || c == ']' || c == '-') c = '?';
      ids.push_back(std::move(id));
    }
    line = eol + 1;
  }
  if (ids.size() < number) return {};
  const std::string& id = ids.back();
  return id + "[" + std::to_string(std::count(ids.begin(), ids.end(), id)) + "]";
}

// A location that names a whole segment ("PID", "OBR"), not a field in it.
bool names_segment(std::string_view location) {
  if (location.size() != 3) return false;
  return std::all_of(location.begin(), location.end(), [](char c) {
    return std::isupper(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c));
  });
}

// HL7 table 0155: whether an acknowledgement is sent, given whether what it reports succeeded.
bool condition_holds(const std::string& condition, bool success) {
  if (condition == "NE" || condition.empty()) return false;
  if (condition == "ER") return !success;
  if (condition == "SU") return success;
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

namespace {

// read_msh() for any header segment that declares its delimiters as MSH does (MSH, FHS, BHS).
MshSummary read_header(std::string_view raw, std::string_view id) {
  MshSummary m;
  if (raw.size() >= 3 && static_cast<unsigned char>(raw[0]) == 0xEF && static_cast<unsigned char>(raw[1]) == 0xBB &&
      static_cast<unsigned char>(raw[2]) == 0xBF)
    raw.remove_prefix(3);
  if (raw.size() < 4 || raw.substr(0, 3) != id) return m;
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
  m.fields[0] = std::string(id);
  // MSH-18's first repetition decides the set, as Message::parse reads it.
  const std::string msh18 = m.field(18);
  const char rep_sep = m.encoding_characters.size() > 1 ? m.encoding_characters[1] : '~';
  m.latin1 = read_as_latin1(std::string_view(msh18).substr(0, msh18.find(rep_sep)), raw);
  return m;
}

}  // namespace

MshSummary read_msh(std::string_view raw) { return read_header(raw, "MSH"); }

MshSummary read_msh(std::string_view raw, const Message& parsed) {
  MshSummary m = read_msh(raw);
  const std::string type = parsed.message_type();
  if (const std::size_t caret = type.find('^'); caret != std::string::npos) m.trigger = type.substr(caret + 1);
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
  const std::string& at = issue.expression;
  // HL7 table 0357 (v2.5 ch. 2.15.5 ERR-3).
  switch (issue.code) {
    case ErrorCode::not_supported:
      if (at == "MSH-9.2") e.code = 201;        // unsupported event code (a trigger of a type we take)
      else if (at == "MSH-11") e.code = 202;    // unsupported processing id
      else if (at == "MSH-12") e.code = 203;    // unsupported version id
      else if (at.rfind("MSH-9", 0) == 0) e.code = 200;  // unsupported message type
      else e.code = 207;  // e.g. an MSH-18 character set: no code of its own, so the catch-all
      break;
    case ErrorCode::missing_value:
      // A required segment absent is a segment sequence error; a required field, 101.
      e.code = names_segment(at) ? 100 : 101;
      break;
    case ErrorCode::invalid_value:
    case ErrorCode::invalid_nhs_number:
    case ErrorCode::invalid_resource: {
      // "segment N", or a segment occurrence without a field ("MSH[2]"): the message's
      // structure (no MSH first, a malformed segment id, a second MSH); else a data type error.
      const Location loc = parse_location(at);
      e.code = at.rfind("segment", 0) == 0 || (!loc.segment.empty() && loc.field == 0) ? 100 : 102;
      break;
    }
    case ErrorCode::not_found: e.code = 204; break;  // unknown key identifier (e.g. an A40's patient)
    // duplicate key identifier: a visit or order number that names another patient's record
    // (or another source's)
    case ErrorCode::conflict: e.code = 205; break;
    default: e.code = 207; break;                    // application internal error (also: too large)
  }
  return e;
}

AckError ack_error_for(const fhir::Issue& issue, std::string_view raw) {
  AckError e = ack_error_for(issue);
  if (e.location.rfind("segment ", 0) == 0) {
    const long number = std::atol(e.location.c_str() + 8);
    if (number > 0) {
      if (std::string named = locate_segment(raw, static_cast<std::size_t>(number)); !named.empty())
        e.location = std::move(named);
    }
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
  const AckDelimiters d = ack_delimiters(in);
  const char fs = d.ack.field;
  const char comp = d.ack.component;
  const char sub = d.ack.subcomponent;  // '\0' when the inbound MSH-2 has three characters
  const std::string version = in.component(12, 1);
  // An ACK's MSH-9 names the event it answers: the trigger the message was read as, which for
  // a v2.1-2.3 sender may be EVN-1 rather than MSH-9.2. Unescaped.
  // One component: whatever the sender put in it is escaped (a repetition separator in it
  // would otherwise start a second MSH-9). `in.trigger` is UTF-8 (read from the parsed text);
  // MSH-9.2 as sent is already in the message's own set.
  std::string trigger;
  if (!in.trigger.empty()) {
    trigger = value(in.trigger, d);
  } else {
    std::string sent = in.component(9, 2);  // padded by some senders ("A01 "): not echoed
    sent.erase(0, std::min(sent.find_first_not_of(' '), sent.size()));
    sent.erase(sent.find_last_not_of(' ') + 1);
    if (d.inbound) sent = unescape(sent, d.ack);
    trigger = escape(sent, d.ack);
  }

  std::string f;  // field separator as a string
  f += fs;
  std::string msh = "MSH" + f + d.ack.encoding_characters();
  auto add = [&](std::string_view v) {
    msh += fs;
    msh += v;
  };
  add(echo(in.field(5), d));  // MSH-3 <- receiving application
  add(echo(in.field(6), d));  // MSH-4 <- receiving facility
  add(echo(in.field(3), d));  // MSH-5 <- sending application
  add(echo(in.field(4), d));  // MSH-6 <- sending facility
  add(clock.timestamp);
  add("");           // MSH-8 security
  std::string type = "ACK";
  if (!trigger.empty()) {
    type += comp;
    type += trigger;
    if (version_at_least(version, 2, 4)) {
      type += comp;
      type += "ACK";
    }
  }
  add(type);
  add(clock.control_id);
  add(in.field(11).empty() ? "P" : echo(in.field(11), d));
  add(version.empty() ? "2.5" : echo(in.field(12), d));
  std::string out;  // the segments after MSH; MSH-18 depends on them (below)

  // MSA-2 echoes MSH-10 as sent (HL7 v2.5 ch. 2.14.1.2): senders compare it byte for byte.
  out += "MSA" + f + std::string(ack_code_name(code)) + f + echo(in.field(10), d);
  if (error && !error->text.empty()) out += f + value(clipped(error->text, 80), d);
  out += "\r";

  if (error) {
    const Location loc = parse_location(error->location);
    const std::string code_text = std::to_string(error->code);
    // The segment id as the location names it: escaped, as it may be a malformed id as sent.
    const std::string segment = value(loc.segment, d);
    // ERR-2 (ERL): segment ^ sequence ^ field ^ repetition ^ component; ERR-3 code ^ text ^
    // table, ERR-4 severity, ERR-8 the user message.
    auto v25_fields = [&] {
      std::string erl;
      if (!loc.segment.empty()) {
        erl = segment + comp + std::to_string(loc.sequence);
        if (loc.field > 0) erl += comp + std::to_string(loc.field);
        if (loc.field > 0 && loc.component > 0) erl += comp + std::string("1") + comp + std::to_string(loc.component);
      }
      return f + erl + f + code_text + comp + value(clipped(error->text, 80), d) + comp + "HL70357" + f + "E" + f +
             f + f + f + value(clipped(error->text, kMaxAckTextBytes), d);
    };
    if (version_at_least(version, 2, 5)) {
      out += "ERR" + f + v25_fields() + "\r";
    } else {
      // ERR-1 (ELD): segment ^ sequence ^ field ^ code & text & table. Without a sub-component
      // separator (a three-character MSH-2) the code goes alone, so the v2.5 fields follow it
      // to carry the location and the text (a pre-2.5 receiver ignores fields it does not know).
      std::string eld = segment + comp + (loc.segment.empty() ? "" : std::to_string(loc.sequence)) + comp +
                        (loc.field > 0 ? std::to_string(loc.field) : "") + comp + code_text;
      if (sub != '\0') eld += sub + value(clipped(error->text, kMaxAckTextBytes), d) + sub + "HL70357";
      out += "ERR" + f + eld + (sub == '\0' ? v25_fields() : std::string()) + "\r";
    }
  }

  // MSH-18: the ACK is in the message's character set, and says so when the message did, as
  // long as that is true. Not echoed for a set the gateway does not read (the message was
  // refused for it), nor for UTF-8 when the sender's bytes echoed in MSH and MSA-2 are not
  // UTF-8 (the message was refused for them): such an ACK would declare a set it is not
  // written in, and no parser here (nor, likely, the sender's) could read it. Without MSH-18
  // it echoes the same bytes and reads as ISO 8859-1. Likewise ASCII over bytes that are not.
  const auto declares_ascii = [](std::string_view name) {
    while (!name.empty() && name.front() == ' ') name.remove_prefix(1);
    while (!name.empty() && name.back() == ' ') name.remove_suffix(1);
    return name.size() == 5 && (name[0] | 0x20) == 'a' && (name[1] | 0x20) == 's' && (name[2] | 0x20) == 'c' &&
           (name[3] | 0x20) == 'i' && (name[4] | 0x20) == 'i';
  };
  const auto all_ascii = [](std::string_view text) {
    return std::all_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
  };
  if (const std::string charset = echo(in.field(18), d);
      !charset.empty() && is_supported_charset(std::string_view(charset).substr(0, charset.find(d.ack.repetition))) &&
      (d.latin1 || fhir::is_valid_utf8(msh + out)) &&
      !(declares_ascii(std::string_view(charset).substr(0, charset.find(d.ack.repetition))) &&
        !(all_ascii(msh) && all_ascii(out)))) {
    for (int n = 13; n <= 17; ++n) add("");
    add(charset);
  }
  return msh + "\r" + out;
}

std::string with_warnings(const MshSummary& in, std::string ack, const std::vector<std::string>& warnings) {
  if (warnings.empty()) return ack;
  const AckDelimiters d = ack_delimiters(in);
  const std::string f(1, d.ack.field);
  const char comp = d.ack.component, sub = d.ack.subcomponent;
  const bool v25 = version_at_least(in.component(12, 1), 2, 5);
  const std::size_t n = std::min(warnings.size(), kMaxAckWarnings);
  std::vector<std::string> shown(warnings.begin(), warnings.begin() + static_cast<std::ptrdiff_t>(n));
  if (warnings.size() > kMaxAckWarnings)
    shown.push_back(std::to_string(warnings.size() - kMaxAckWarnings) +
                    " further warnings are kept with the message in the gateway's message store");
  std::string eld_repetitions;  // v2.4 and earlier
  for (const std::string& w : shown) {
    const std::size_t colon = w.find(": ");
    const Location loc = parse_location(colon == std::string::npos ? std::string_view()
                                                                   : std::string_view(w).substr(0, colon));
    const std::string code = "0";  // table 0357: message accepted; ERR-4 W says what is wrong
    if (v25) {
      std::string erl;
      if (!loc.segment.empty()) {
        erl = loc.segment + comp + std::to_string(loc.sequence);
        if (loc.field > 0) erl += comp + std::to_string(loc.field);
        if (loc.field > 0 && loc.component > 0) erl += comp + std::string("1") + comp + std::to_string(loc.component);
      }
      ack += "ERR" + f + f + erl + f + code + comp + value(clipped(w, 80), d) + comp + "HL70357" + f + "W" + f + f +
             f + f + value(clipped(w, kMaxAckTextBytes), d) + "\r";
    } else {
      std::string eld = loc.segment + comp + (loc.segment.empty() ? "" : std::to_string(loc.sequence)) + comp +
                        (loc.field > 0 ? std::to_string(loc.field) : "") + comp + code;
      if (sub != '\0') eld += sub + value(clipped(w, kMaxAckTextBytes), d) + sub + "HL70357";
      if (!eld_repetitions.empty()) eld_repetitions += d.ack.repetition;
      eld_repetitions += eld;
    }
  }
  if (v25) return ack;
  ack += "ERR" + f + eld_repetitions + "\r";
  if (sub == '\0') {
    // Without a sub-component separator (a three-character MSH-2) an ELD's code carries no
    // text, so the warnings would reach the sender as bare locations. Up to v2.4 the ACK has
    // one more place for text, MSA-3 ("text message", HL7 v2.4 ch. 2 MSA; deprecated from
    // v2.4, withdrawn in v2.7): the warnings go there, joined, and clipped like ERR-1's texts
    // rather than at MSA-3's 80 (HL7 length), as this is the only copy the sender reads.
    std::string text = warnings.size() > 1 ? std::to_string(warnings.size()) + " warnings: " : std::string();
    for (std::size_t i = 0; i < shown.size() && text.size() <= kMaxAckTextBytes; ++i)
      text += (i > 0 ? " / " : "") + shown[i];
    // An AA/CA from build_ack ends its MSA at MSA-2 (the control id echoed holds no field
    // separator): MSA-3 is appended there.
    const std::size_t msa = ack.find("\rMSA" + f);
    const std::size_t end = msa == std::string::npos ? msa : ack.find('\r', msa + 1);
    if (end != std::string::npos && std::count(ack.begin() + static_cast<std::ptrdiff_t>(msa),
                                               ack.begin() + static_cast<std::ptrdiff_t>(end), d.ack.field) == 2)
      ack.insert(end, f + value(clipped(text, kMaxAckTextBytes), d));
  }
  return ack;
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
  // HL7 v2.5 ch. 2.9.3 and table 0008. The accept acknowledgement says whether the gateway
  // took responsibility for the message, not whether it could apply it: a message stored
  // with status error is committed to safe storage (replayable), so CA, and its AE follows
  // as the application acknowledgement. CR is for what table 0008 names (message type,
  // event, processing id, version not supported); CE for a message not accepted for any
  // other reason (unreadable, or the gateway unable to commit it: the sender may resend).
  AckCode accept = AckCode::CA;
  if (outcome == Outcome::rejected)
    accept = error && error->code >= 200 && error->code <= 203 ? AckCode::CR : AckCode::CE;
  else if (outcome == Outcome::not_committed)
    accept = AckCode::CE;
  if (condition_holds(mode.accept, accept == AckCode::CA))
    out.push_back(build_ack(inbound, accept, accept == AckCode::CA ? std::nullopt : err, next_ack_clock()));
  if (condition_holds(mode.application, outcome == Outcome::applied))
    out.push_back(build_ack(inbound, app, err, next_ack_clock()));
  return out;
}

std::string build_batch_ack(std::string_view fhs, std::string_view bhs, const std::vector<std::string>& acks,
                            const AckClock& clock) {
  // The envelope is written with the inbound header's delimiters (each ACK message inside
  // declares its own in its MSH), so the echoed fields stay as sent.
  const MshSummary file = read_header(fhs, "FHS");
  const MshSummary batch = read_header(bhs, "BHS");
  const MshSummary& declared = batch.found ? batch : file;
  const AckDelimiters d = ack_delimiters(declared);
  const std::string f(1, d.ack.field);
  // FHS/BHS: 3-6 sender and receiver swapped, 7 the time, 11 a new control id, 12 the
  // control id of the file or batch acknowledged (its FHS-11/BHS-11).
  auto header = [&](const MshSummary& in, std::string_view id, std::string_view control_id) {
    std::string h = std::string(id) + f + d.ack.encoding_characters();
    for (std::size_t n : {5, 6, 3, 4}) h += f + echo(in.field(n), d);
    h += f + clock.timestamp + f + f + f + f + std::string(control_id) + f + echo(in.field(11), d) + "\r";
    return h;
  };
  std::string out;
  if (file.found) out += header(file, "FHS", clock.control_id);
  out += header(batch.found ? batch : file, "BHS", clock.control_id);
  for (const std::string& ack : acks) out += ack;
  out += "BTS" + f + std::to_string(acks.size()) + "\r";  // BTS-1: the messages in this batch
  if (file.found) out += "FTS" + f + "1\r";              // FTS-1: the batches in this file
  return out;
}

}  // namespace gw::hl7v2
