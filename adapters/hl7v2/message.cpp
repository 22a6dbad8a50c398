// SPDX-License-Identifier: Apache-2.0
// HL7 v2 parsing and encoding: one pass copies the message into an owned, normalised buffer
// and records the span of every field; repetitions, components and sub-components are found
// on demand by scanning the (short) field span, so parsing allocates per message, never per
// field.
#include "adapters/hl7v2/message.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <utility>

namespace gw::hl7v2 {
namespace {

using fhir::ErrorCode;
using fhir::Issue;

bool is_upper_or_digit(char c) { return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }

bool is_alnum(char c) { return is_upper_or_digit(c) || (c >= 'a' && c <= 'z'); }

// HL7 v2.5 ch. 2.5.4 lets any non-alphanumeric character delimit; we also refuse controls,
// space and non-ASCII so delimiters survive charset conversion and line-ending normalisation.
bool usable_delimiter(char c) { return c > 0x20 && c < 0x7F && !is_alnum(c); }

std::string describe(char c) {
  if (c > 0x20 && c < 0x7F) {
    std::string out = "'";
    out.push_back(c);
    out.push_back('\'');
    return out;
  }
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out = "byte 0x";
  out.push_back(kHex[static_cast<unsigned char>(c) >> 4]);
  out.push_back(kHex[static_cast<unsigned char>(c) & 0xF]);
  return out;
}

// Printable ASCII only, at most 40 characters: for diagnostics quoting sender text.
std::string printable(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 40)) out.push_back(c >= 0x20 && c < 0x7F ? c : '?');
  return out;
}

Issue invalid(std::string diagnostics, std::string expression) {
  return Issue::make(ErrorCode::invalid_value, std::move(diagnostics), std::move(expression));
}

std::string segment_expression(std::size_t number) {
  std::string out = "segment ";
  out.append(std::to_string(number));
  return out;
}

// Eight bytes at a time (SWAR): parsing is dominated by looking for a few byte values.
constexpr std::uint64_t kOnes = 0x0101010101010101ULL;
constexpr std::uint64_t kHigh = 0x8080808080808080ULL;
constexpr std::uint64_t kLow7 = 0x7F7F7F7F7F7F7F7FULL;

std::uint64_t broadcast(char c) { return kOnes * static_cast<unsigned char>(c); }

std::uint64_t load8(const char* p) {
  std::uint64_t w;
  std::memcpy(&w, p, 8);
  if constexpr (std::endian::native == std::endian::big) w = __builtin_bswap64(w);
  return w;
}

// 0x80 in each byte of `w` equal to the broadcast byte of `pattern`, 0 in the others. Exact:
// no carry crosses a byte, so there are no false positives.
std::uint64_t match_bytes(std::uint64_t w, std::uint64_t pattern) {
  std::uint64_t x = w ^ pattern;
  return ~(((x & kLow7) + kLow7) | x | kLow7);
}

// How many bytes a match_bytes() mask marks (without a popcount instruction, which the
// baseline x86-64 target lacks).
std::size_t count_marked(std::uint64_t mask) { return static_cast<std::size_t>(((mask >> 7) * kOnes) >> 56); }

struct TextStats {
  bool ascii = true;
  std::size_t field_separators = 0;
};

TextStats text_stats(std::string_view s, char fs) {
  const char* p = s.data();
  const std::size_t n = s.size();
  const std::uint64_t fs8 = broadcast(fs);
  std::uint64_t seen = 0;
  TextStats t;
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t w = load8(p + i);
    seen |= w;
    t.field_separators += count_marked(match_bytes(w, fs8));
  }
  for (; i < n; ++i) {
    seen |= static_cast<unsigned char>(p[i]);
    t.field_separators += p[i] == fs;
  }
  t.ascii = !(seen & kHigh);
  return t;
}

// Finds field separators and line breaks. Fields are short (many are empty), so the match
// mask of the last eight bytes loaded is kept and the next search starts from it.
class BreakFinder {
 public:
  BreakFinder(const char* p, std::size_t n, char fs) : p_(p), n_(n), fs_(fs), fs8_(broadcast(fs)) {}

  // The first position >= i holding the field separator, CR or LF; n when none.
  std::size_t find(std::size_t i) {
    if (i >= word_ && i < word_ + 8) {
      std::uint64_t m = mask_ & (~std::uint64_t{0} << ((i - word_) * 8));
      if (m) return word_ + static_cast<std::size_t>(std::countr_zero(m)) / 8;
      i = word_ + 8;
    }
    for (; i + 8 <= n_; i += 8) {
      std::uint64_t w = load8(p_ + i);
      std::uint64_t m = match_bytes(w, fs8_) | match_bytes(w, kCr8) | match_bytes(w, kLf8);
      word_ = i;
      mask_ = m;
      if (m) return i + static_cast<std::size_t>(std::countr_zero(m)) / 8;
    }
    word_ = kNoWord;
    for (; i < n_; ++i)
      if (p_[i] == fs_ || p_[i] == '\r' || p_[i] == '\n') return i;
    return n_;
  }

 private:
  static constexpr std::size_t kNoWord = std::numeric_limits<std::size_t>::max() - 8;
  static constexpr std::uint64_t kCr8 = kOnes * '\r';
  static constexpr std::uint64_t kLf8 = kOnes * '\n';
  const char* p_;
  std::size_t n_;
  char fs_;
  std::uint64_t fs8_;
  std::size_t word_ = kNoWord;  // where the cached eight bytes start
  std::uint64_t mask_ = 0;
};

// Offset of the first byte that is not part of well-formed UTF-8 (RFC 3629: no overlongs, no
// surrogates, nothing above U+10FFFF), or npos.
std::size_t first_invalid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  std::size_t n = s.size(), i = 0;
  while (i < n) {
    if (i + 8 <= n) {
      std::uint64_t w;
      std::memcpy(&w, p + i, 8);
      if (!(w & 0x8080808080808080ULL)) {
        i += 8;
        continue;
      }
    }
    unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return i;
    }
    if (i + len > n) return i;
    if (p[i + 1] < lo || p[i + 1] > hi) return i;
    for (std::size_t k = 2; k < len; ++k)
      if (p[i + k] < 0x80 || p[i + k] > 0xBF) return i;
    i += len;
  }
  return std::string_view::npos;
}

void append_latin1_as_utf8(std::string& out, std::string_view in) {
  for (char ch : in) {
    auto c = static_cast<unsigned char>(ch);
    if (c < 0x80) {
      out.push_back(ch);
    } else {
      out.push_back(static_cast<char>(0xC0 | (c >> 6)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    }
  }
}

// 1-based segment number of byte `offset` in text whose lines end in CR, LF or CRLF (empty
// lines do not count). Only used to word an error.
std::size_t segment_number_at(std::string_view text, std::size_t offset) {
  std::size_t number = 0;
  bool in_line = false;
  for (std::size_t i = 0; i < offset && i < text.size(); ++i) {
    bool eol = text[i] == '\r' || text[i] == '\n';
    if (!eol && !in_line) ++number;
    in_line = !eol;
  }
  if (!in_line) ++number;  // the offending byte starts a new segment
  return number;
}

// The `n`-th (1-based) piece of `s` split on `delim`; empty when absent. A '\0' delimiter
// means "not declared" (three encoding characters): the whole text is the only piece.
std::string_view nth_piece(std::string_view s, char delim, std::size_t n) {
  if (n == 0) return {};
  if (delim == '\0') return n == 1 ? s : std::string_view{};
  // Fields are short: a plain loop beats memchr's call overhead here.
  const std::size_t size = s.size();
  std::size_t begin = 0;
  for (std::size_t k = 1; k < n; ++k) {
    while (begin < size && s[begin] != delim) ++begin;
    if (begin == size) return {};
    ++begin;
  }
  std::size_t stop = begin;
  while (stop < size && s[stop] != delim) ++stop;
  return s.substr(begin, stop - begin);
}

// Segments whose fields 1 and 2 are the field separator and the encoding characters
// (HL7 v2.5 ch. 2.15.9 MSH, 2.15.7 FHS, 2.15.2 BHS).
bool is_header_id(std::string_view id) { return id == "MSH" || id == "FHS" || id == "BHS"; }

// MSH-2 -> delimiters. Tolerated beyond the standard's four or five characters:
// - three characters: no sub-component separator (HAPI test data "^~}" style senders);
// - "^~\\&": a doubled backslash (a string-escaping bug seen in LinuxForHealth data) is read
//   as "^~\&"; the text keeps MSH-2 as sent, which parses the same way again.
fhir::Result<Delimiters> decode_encoding_characters(char field, std::string_view msh2) {
  std::string chars(msh2);
  if (chars.size() == 5 && chars[2] == '\\' && chars[3] == '\\') chars.erase(3, 1);
  if (chars.size() < 3 || chars.size() > 5) {
    std::string d = "MSH-2 must hold the encoding characters (component, repetition, escape, sub-component, "
                    "and from v2.7 truncation, e.g. ^~\\&); found ";
    d.append(std::to_string(msh2.size()));
    d.append(" characters");
    return invalid(std::move(d), "MSH-2");
  }
  std::string seen(1, field);
  for (char c : chars) {
    if (!usable_delimiter(c)) {
      std::string d = "MSH-2 encoding character ";
      d.append(describe(c));
      d.append(" is not allowed: delimiters must be printable, non-alphanumeric ASCII");
      return invalid(std::move(d), "MSH-2");
    }
    if (seen.find(c) != std::string::npos) {
      std::string d = "MSH-2 encoding character ";
      d.append(describe(c));
      d.append(" is used twice (or repeats the MSH-1 field separator): each delimiter must be distinct");
      return invalid(std::move(d), "MSH-2");
    }
    seen.push_back(c);
  }
  Delimiters d;
  d.field = field;
  d.component = chars[0];
  d.repetition = chars[1];
  d.escape = chars[2];
  d.subcomponent = chars.size() > 3 ? chars[3] : '\0';
  d.truncation = chars.size() > 4 ? chars[4] : '\0';
  return d;
}

enum class Charset { unspecified, utf8, latin1 };

std::string upper_trimmed(std::string_view s) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  std::string out(s);
  for (char& c : out)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  return out;
}

// HL7 table 0211. ASCII is read like an absent MSH-18 (senders that declare ASCII often send
// Latin-1 names); UNICODE alone (UCS-2 in v2.3) and the other sets are refused.
std::optional<Charset> classify_charset(std::string_view declared) {
  std::string v = upper_trimmed(declared);
  if (v.empty() || v == "ASCII") return Charset::unspecified;
  if (v == "UNICODE UTF-8" || v == "UTF-8" || v == "UTF8") return Charset::utf8;
  if (v == "8859/1" || v == "ISO-8859-1" || v == "ISO8859-1" || v == "ISO_8859-1" || v == "LATIN1" ||
      v == "LATIN-1")
    return Charset::latin1;
  return std::nullopt;
}

constexpr std::string_view kUtf8Name = "UNICODE UTF-8";

}  // namespace

fhir::Result<Delimiters> read_delimiters(char field_separator, std::string_view encoding_characters) {
  if (!usable_delimiter(field_separator))
    return invalid("MSH-1 (the field separator) must be a printable, non-alphanumeric ASCII character; found " +
                       describe(field_separator),
                   "MSH-1");
  return decode_encoding_characters(field_separator, encoding_characters);
}

std::string Delimiters::encoding_characters() const {
  std::string out{component, repetition, escape};
  if (subcomponent != '\0') out.push_back(subcomponent);
  if (truncation != '\0') out.push_back(truncation);
  return out;
}

fhir::Result<Message> Message::parse(std::string_view bytes, const ParseOptions& options) {
  if (bytes.size() > options.max_message_bytes || bytes.size() >= std::numeric_limits<std::uint32_t>::max() / 2) {
    std::string d = "the message is ";
    d.append(std::to_string(bytes.size()));
    d.append(" bytes; the limit is ");
    d.append(std::to_string(options.max_message_bytes));
    return Issue::make(ErrorCode::payload_too_large, std::move(d), "message");
  }
  std::string_view src = bytes;
  if (src.size() >= 3 && src.substr(0, 3) == "\xEF\xBB\xBF") src.remove_prefix(3);
  while (!src.empty() && (src.front() == '\r' || src.front() == '\n')) src.remove_prefix(1);

  if (src.substr(0, 3) != "MSH")
    return invalid("an HL7 v2 message must start with an MSH segment", "segment 1");
  if (src.size() < 4 || !usable_delimiter(src[3])) {
    std::string d = "MSH-1 (the field separator) must be a printable, non-alphanumeric ASCII character";
    if (src.size() >= 4) {
      d.append("; found ");
      d.append(describe(src[3]));
    }
    return invalid(std::move(d), "MSH-1");
  }
  const char fs = src[3];
  // The first line, to read MSH-2 and MSH-18 before deciding on the character set.
  std::size_t line_end = 4;
  while (line_end < src.size() && src[line_end] != '\r' && src[line_end] != '\n') ++line_end;
  std::string_view msh_line = src.substr(0, line_end);
  std::size_t msh2_end = msh_line.find(fs, 4);
  if (msh2_end == std::string_view::npos) msh2_end = msh_line.size();
  auto delimiters = decode_encoding_characters(fs, msh_line.substr(4, msh2_end - 4));
  if (!delimiters) return std::move(delimiters).issue();

  // MSH-18 starts after the 17th field separator (MSH-1 being the first).
  std::size_t msh18_begin = std::string_view::npos, msh18_end = 0;
  {
    std::size_t separators = 1, pos = 3;
    while (separators < 17) {
      pos = msh_line.find(fs, pos + 1);
      if (pos == std::string_view::npos) break;
      ++separators;
    }
    if (pos != std::string_view::npos && separators == 17) {
      msh18_begin = pos + 1;
      std::size_t end = msh_line.find(fs, msh18_begin);
      msh18_end = end == std::string_view::npos ? msh_line.size() : end;
      auto rep = static_cast<const char*>(
          std::memchr(msh_line.data() + msh18_begin, delimiters->repetition, msh18_end - msh18_begin));
      if (rep) msh18_end = static_cast<std::size_t>(rep - msh_line.data());
    }
  }
  std::string_view declared =
      msh18_begin == std::string_view::npos ? std::string_view{} : msh_line.substr(msh18_begin, msh18_end - msh18_begin);
  auto charset = classify_charset(declared);
  if (!charset) {
    std::string d = "MSH-18 character set '";
    d.append(printable(declared));
    d.append("' is not supported; send UNICODE UTF-8 or 8859/1");
    return Issue::make(ErrorCode::not_supported, std::move(d), "MSH-18");
  }

  // Character set: the indexed text is always UTF-8. When bytes are converted, MSH-18 is
  // rewritten to UNICODE UTF-8 so that the encoded text declares what it holds (and parses
  // again to the same text).
  std::string converted;
  TextStats stats = text_stats(src, fs);
  if (!stats.ascii) {
    bool as_latin1 = *charset == Charset::latin1;
    if (!as_latin1) {
      std::size_t bad = first_invalid_utf8(src);
      if (bad != std::string_view::npos) {
        if (*charset == Charset::utf8) {
          std::string d = "MSH-18 declares UTF-8 but byte ";
          d.append(std::to_string(bad));
          d.append(" is not valid UTF-8");
          return invalid(std::move(d), segment_expression(segment_number_at(src, bad)));
        }
        as_latin1 = true;  // no (or ASCII) MSH-18 and not UTF-8: read as ISO 8859-1
      }
    }
    if (as_latin1) {
      converted.reserve(src.size() * 2);
      if (msh18_begin != std::string_view::npos) {
        append_latin1_as_utf8(converted, src.substr(0, msh18_begin));
        // A '-' delimiter would split the name: MSH-18 is then left empty, which reads as
        // "valid UTF-8 kept" too.
        const std::string enc = delimiters->encoding_characters() + fs;
        if (enc.find('-') == std::string::npos) converted.append(kUtf8Name);
        append_latin1_as_utf8(converted, src.substr(msh18_end));
      } else {
        append_latin1_as_utf8(converted, src);
      }
      if (converted.size() >= std::numeric_limits<std::uint32_t>::max() - 1)
        return Issue::make(ErrorCode::payload_too_large, "the message is too large once converted to UTF-8",
                           "message");
      src = converted;  // only non-ASCII bytes changed: the counts in `stats` still hold
    }
  }

  Message m;
  m.delimiters_ = *delimiters;
  m.text_.reserve(src.size() + 1);
  // Exact for fields (one per separator, plus MSH-1); segments are far fewer and grow.
  m.fields_.reserve(stats.field_separators + 1);
  m.segments_.reserve(32);

  const char* p = src.data();
  const std::size_t n = src.size();
  BreakFinder breaks(p, n, fs);
  std::size_t pos = 0;
  while (pos < n) {
    if (p[pos] == '\r' || p[pos] == '\n') {  // a terminator, or an empty line
      ++pos;
      continue;
    }
    const std::size_t number = m.segments_.size() + 1;
    if (m.segments_.size() >= options.max_segments) {
      std::string d = "the message has more than ";
      d.append(std::to_string(options.max_segments));
      d.append(" segments");
      return Issue::make(ErrorCode::payload_too_large, std::move(d), segment_expression(number));
    }
    // HL7 v2.5 ch. 2.5.2: a segment id is three upper-case letters or digits, then the field
    // separator or the end of the segment.
    const std::size_t ls = pos;
    bool id_ok = n - ls >= 3 && is_upper_or_digit(p[ls]) && is_upper_or_digit(p[ls + 1]) &&
                 is_upper_or_digit(p[ls + 2]);
    bool has_fields = false;
    if (id_ok && n - ls > 3) {
      char after = p[ls + 3];
      has_fields = after == fs;
      id_ok = has_fields || after == '\r' || after == '\n';
    }
    if (!id_ok) {
      std::size_t end = ls;
      while (end < n && end - ls < 12 && p[end] != fs && p[end] != '\r' && p[end] != '\n') ++end;
      std::string d = segment_expression(number);
      d.append(" ('").append(printable(std::string_view(p + ls, end - ls)));
      d.append("'): a segment must start with a three-character id of upper-case letters or digits followed by the "
               "field separator");
      return invalid(std::move(d), segment_expression(number));
    }
    // One message per input. A second MSH starts another message: several messages in one
    // MLLP frame are the batch protocol's (read_batch()), and reading only the first would drop
    // the others unseen. FHS and BHS only ever open a batch.
    if (const std::string_view id(p + ls, 3); number > 1 && is_header_id(id)) {
      std::string d = segment_expression(number);
      if (id == "MSH")
        d.append(" is a second MSH segment: send one message per MLLP frame (several only as an FHS/BHS batch)");
      else
        d.append(" is a batch header (").append(id).append("): a batch must start with FHS or BHS, before any MSH");
      return invalid(std::move(d), std::string(id).append(id == "MSH" ? "[2]" : "[1]"));
    }
    const auto base = static_cast<std::uint32_t>(m.text_.size());
    // Text offset of source byte i is base + (i - ls).
    auto at = [&](std::size_t i) { return static_cast<std::uint32_t>(base + (i - ls)); };
    SegmentIndex seg;
    seg.first_field = static_cast<std::uint32_t>(m.fields_.size());
    std::size_t i = ls + 3;
    std::size_t count = 0;
    if (has_fields) {
      if (is_header_id(std::string_view(p + ls, 3))) {
        m.fields_.push_back(Span{at(ls + 3), at(ls + 4)});  // MSH-1: the separator itself
        ++count;
      }
      ++i;
      std::size_t field_begin = i;
      for (;; ++i) {
        i = breaks.find(i);
        if (++count > options.max_fields_per_segment) {
          std::string d = "a segment has more than ";
          d.append(std::to_string(options.max_fields_per_segment));
          d.append(" fields");
          return Issue::make(ErrorCode::payload_too_large, std::move(d), segment_expression(number));
        }
        m.fields_.push_back(Span{at(field_begin), at(i)});
        if (i == n || p[i] != fs) break;  // CR, LF or the end: the segment is complete
        field_begin = i + 1;
      }
    }
    seg.whole = Span{base, at(i)};
    seg.field_count = static_cast<std::uint32_t>(count);
    m.text_.append(p + ls, i - ls);
    m.text_.push_back('\r');
    m.segments_.push_back(seg);
    pos = i;
  }

  // MSH-9 says what to do with the message; without it nothing downstream can route it.
  if (m.msh().raw(9, 1, 1).empty())
    return invalid("MSH-9 (message type) is required", "MSH-9");
  return m;
}

std::optional<SegmentRef> Message::find(std::string_view id, std::size_t occurrence) const {
  for (std::size_t i = 0; i < segments_.size(); ++i) {
    if (std::string_view(text_).substr(segments_[i].whole.begin, 3) == id) {
      if (occurrence == 0) return segment(i);
      --occurrence;
    }
  }
  return std::nullopt;
}

namespace {

std::string_view trim_spaces(std::string_view s) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return s;
}

}  // namespace

std::string Message::message_type() const {
  SegmentRef h = msh();
  // Real senders pad components ("ADT^A01 "); HL7 values carry no meaningful outer spaces.
  std::string type(trim_spaces(h.get(9, 1)));
  std::string trigger(trim_spaces(h.get(9, 2)));
  // HL7 v2.1-2.2 had no MSH-9.2: the event was EVN-1 (still there, as the event type code,
  // until v2.5), and ORU had one event, R01. Mirth with its strict parser off reads them so.
  if (trigger.empty() && type == "ADT") {
    if (auto evn = find("EVN")) trigger = std::string(trim_spaces(evn->get(1)));
  } else if (trigger.empty() && type == "ORU") {
    trigger = "R01";
  }
  if (!trigger.empty()) {
    type.push_back('^');
    type.append(trigger);
  }
  return type;
}

std::string Message::message_type_as_sent() const {
  std::string out = "MSH-9 '";
  out.append(printable(msh().raw(9, 1)));
  out.push_back('\'');
  if (trim_spaces(msh().get(9, 2)).empty() && trim_spaces(msh().get(9, 1)) == "ADT") {
    const auto evn = find("EVN");
    const std::string_view event = evn ? evn->raw(1, 1) : std::string_view{};
    if (trim_spaces(event).empty()) {
      out.append(" with no trigger event (MSH-9.2 and EVN-1 are empty)");
    } else {
      out.append(" with EVN-1 '").append(printable(event)).push_back('\'');
    }
  }
  return out;
}

std::string Message::control_id() const { return msh().get(10); }
std::string Message::version() const { return msh().get(12, 1); }
bool read_as_latin1(std::string_view msh18, std::string_view bytes) {
  const auto charset = classify_charset(msh18);
  if (!charset) return false;
  if (*charset == Charset::latin1) return true;
  return *charset == Charset::unspecified && first_invalid_utf8(bytes) != std::string_view::npos;
}

bool is_supported_charset(std::string_view msh18) { return classify_charset(msh18).has_value(); }

std::string Message::charset() const { return std::string(msh().raw(18, 1)); }
std::string Message::encode() const { return text_; }

std::string_view SegmentRef::id() const {
  return std::string_view(m_->text_).substr(m_->segments_[index_].whole.begin, 3);
}

std::size_t SegmentRef::field_count() const { return m_->segments_[index_].field_count; }

std::size_t SegmentRef::repetition_count(std::size_t field) const {
  const auto& seg = m_->segments_[index_];
  if (field == 0 || field > seg.field_count) return 0;
  const Message::Span s = m_->fields_[seg.first_field + field - 1];
  if (s.begin == s.end) return 0;
  if (field <= 2 && is_header_id(id())) return 1;
  return 1 + static_cast<std::size_t>(
                 std::count(m_->text_.data() + s.begin, m_->text_.data() + s.end, m_->delimiters_.repetition));
}

std::string_view SegmentRef::raw(std::size_t field, std::size_t repetition, std::size_t component,
                                 std::size_t sub) const {
  const auto& seg = m_->segments_[index_];
  if (field == 0 || field > seg.field_count || repetition == 0) return {};
  const Message::Span s = m_->fields_[seg.first_field + field - 1];
  std::string_view text = std::string_view(m_->text_).substr(s.begin, s.end - s.begin);
  // MSH-1 and MSH-2 hold delimiters, not delimited values.
  if (field <= 2 && is_header_id(id())) return repetition == 1 && component <= 1 && sub <= 1 ? text : std::string_view{};
  const Delimiters& d = m_->delimiters_;
  std::string_view rep = nth_piece(text, d.repetition, repetition);
  if (component == 0) return rep;
  std::string_view comp = nth_piece(rep, d.component, component);
  if (sub == 0) return comp;
  return nth_piece(comp, d.subcomponent, sub);
}

std::string SegmentRef::get(std::size_t field, std::size_t component, std::size_t sub, std::size_t repetition) const {
  std::string_view r = raw(field, repetition, component, sub);
  if (field <= 2 && is_header_id(id())) return std::string(r);
  return unescape(r, m_->delimiters_);
}

bool SegmentRef::is_null(std::size_t field, std::size_t component, std::size_t sub, std::size_t repetition) const {
  return raw(field, repetition, component, sub) == "\"\"";
}

namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

bool all_hex(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return hex_value(c) >= 0; });
}

bool signed_number_or_empty(std::string_view s) {
  if (!s.empty() && (s.front() == '+' || s.front() == '-')) s.remove_prefix(1);
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Formatting and character-set switching sequences (HL7 v2.5 ch. 2.7.2-2.7.6) that carry no
// text of their own: dropped.
bool is_dropped_sequence(std::string_view body) {
  if (body == "H" || body == "N" || body == ".fi" || body == ".nf" || body == ".ce") return true;
  for (std::string_view cmd : {".sp", ".in", ".ti", ".sk"}) {
    if (body.substr(0, 3) == cmd) {
      std::string_view arg = body.substr(3);
      while (!arg.empty() && arg.front() == ' ') arg.remove_prefix(1);
      return signed_number_or_empty(arg);
    }
  }
  if ((body.front() == 'C' && body.size() == 5) || (body.front() == 'M' && (body.size() == 5 || body.size() == 7)))
    return all_hex(body.substr(1));
  return false;
}

// Decodes one escape sequence body (the text between the escape characters). False when it
// is not a sequence we know: the caller keeps it literally.
bool decode_sequence(std::string_view body, const Delimiters& d, std::string& out) {
  if (body.empty()) return false;
  if (body.size() == 1) {
    switch (body[0]) {
      case 'F': out.push_back(d.field); return true;
      case 'S': out.push_back(d.component); return true;
      case 'T': out.push_back(d.subcomponent != '\0' ? d.subcomponent : '&'); return true;
      case 'R': out.push_back(d.repetition); return true;
      case 'E': out.push_back(d.escape); return true;
      case 'P':
        if (d.truncation == '\0') return false;
        out.push_back(d.truncation);
        return true;
      default: break;
    }
  }
  if (body == ".br") {
    out.push_back('\n');
    return true;
  }
  if (body[0] == 'X' && body.size() >= 3 && body.size() % 2 == 1 && all_hex(body.substr(1))) {
    std::string bytes;
    bytes.reserve((body.size() - 1) / 2);
    for (std::size_t i = 1; i < body.size(); i += 2)
      bytes.push_back(static_cast<char>(hex_value(body[i]) * 16 + hex_value(body[i + 1])));
    if (first_invalid_utf8(bytes) == std::string_view::npos)
      out.append(bytes);
    else
      append_latin1_as_utf8(out, bytes);
    return true;
  }
  return is_dropped_sequence(body);
}

}  // namespace

std::string unescape(std::string_view escaped, const Delimiters& d) {
  const char esc = d.escape;
  if (esc == '\0' || escaped.find(esc) == std::string_view::npos) return std::string(escaped);
  std::string out;
  out.reserve(escaped.size());
  std::size_t i = 0;
  while (i < escaped.size()) {
    std::size_t open = escaped.find(esc, i);
    if (open == std::string_view::npos) {
      out.append(escaped.substr(i));
      break;
    }
    out.append(escaped.substr(i, open - i));
    std::size_t close = escaped.find(esc, open + 1);
    if (close == std::string_view::npos) {  // unterminated: kept literally
      out.append(escaped.substr(open));
      break;
    }
    if (decode_sequence(escaped.substr(open + 1, close - open - 1), d, out)) {
      i = close + 1;
    } else {
      // Not a sequence: keep the escape character and read on from the next one, so that
      // "C:\dir\F\" still decodes its \F\.
      out.push_back(esc);
      i = open + 1;
    }
  }
  return out;
}

std::string escape(std::string_view value, const Delimiters& d) {
  std::string out;
  out.reserve(value.size() + 8);
  auto sequence = [&](std::string_view body) {
    out.push_back(d.escape);
    out.append(body);
    out.push_back(d.escape);
  };
  for (std::size_t i = 0; i < value.size(); ++i) {
    char c = value[i];
    if (c == d.escape) {
      sequence("E");
    } else if (c == d.field) {
      sequence("F");
    } else if (c == d.component) {
      sequence("S");
    } else if (c == d.repetition) {
      sequence("R");
    } else if (d.subcomponent != '\0' && c == d.subcomponent) {
      sequence("T");
    } else if (d.truncation != '\0' && c == d.truncation) {
      sequence("P");
    } else if (c == '\r' || c == '\n') {
      if (c == '\r' && i + 1 < value.size() && value[i + 1] == '\n') ++i;
      sequence(".br");
    } else {
      out.push_back(c);
    }
  }
  return out;
}

namespace {

// The segment id of a line (its first three bytes), "" when shorter.
std::string_view line_id(std::string_view line) { return line.size() >= 3 ? line.substr(0, 3) : std::string_view{}; }

std::string_view skip_bom(std::string_view text) {
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);
  return text;
}

}  // namespace

bool is_batch(std::string_view text) {
  text = skip_bom(text);
  const std::size_t first = text.find_first_not_of("\r\n");
  if (first == std::string_view::npos) return false;
  const std::string_view id = line_id(text.substr(first));
  return id == "FHS" || id == "BHS";
}

fhir::Result<Batch> read_batch(std::string_view text, std::size_t max_messages) {
  text = skip_bom(text);
  Batch b;
  // The envelope in its one allowed order; `stage` is how far the reading has come.
  enum Stage { start, file_header, batch_header, messages, batch_trailer, file_trailer } stage = start;
  constexpr std::size_t kNone = std::string_view::npos;
  std::size_t open = kNone;  // start of the message being collected
  auto close = [&](std::size_t end) {
    if (open != kNone) b.messages.push_back(text.substr(open, end - open));
    open = kNone;
  };
  auto out_of_place = [](std::size_t number, std::string_view id, std::string_view why) {
    std::string d = segment_expression(number);
    d.append(" (").append(printable(id)).append(") ").append(why);
    d.append("; a batch is [FHS] BHS, its messages, BTS [FTS], one batch per frame");
    return invalid(std::move(d), segment_expression(number));
  };
  std::size_t number = 0, line = 0;
  while (line < text.size()) {
    std::size_t eol = line;
    while (eol < text.size() && text[eol] != '\r' && text[eol] != '\n') ++eol;
    const std::string_view content = text.substr(line, eol - line);
    if (!content.empty()) {
      ++number;
      const std::string_view id = line_id(content);
      const bool is_fhs = id == "FHS", is_bhs = id == "BHS", is_msh = id == "MSH";
      if (stage == file_trailer) return out_of_place(number, id.empty() ? content : id, "follows the file trailer FTS");
      if (is_fhs || is_bhs) {
        if ((is_fhs && stage != start) || (is_bhs && stage > file_header))
          return out_of_place(number, id, "is a second or misplaced header");
        // The header declares the envelope's delimiters as MSH does (MSH-1, MSH-2).
        const char fs = content.size() > 3 ? content[3] : '\0';
        const std::string_view rest = content.substr(std::min<std::size_t>(4, content.size()));
        auto d = read_delimiters(fs, rest.substr(0, rest.find(fs)));
        if (!d)
          return invalid("the batch header " + std::string(id) + " declares unusable delimiters: " + d.issue().diagnostics,
                         std::string(id) + "-2");
        (is_fhs ? b.fhs : b.bhs) = content;
        stage = is_fhs ? file_header : batch_header;
      } else if (is_msh) {
        if (stage == start) return out_of_place(number, id, "comes before any batch header");
        if (stage > messages) return out_of_place(number, id, "follows the batch trailer");
        close(line);
        if (b.messages.size() >= max_messages) {
          std::string d = "the batch holds more than ";
          d.append(std::to_string(max_messages)).append(" messages; send it in smaller batches");
          return Issue::make(ErrorCode::payload_too_large, std::move(d), segment_expression(number));
        }
        open = line;
        stage = messages;
      } else if (id == "BTS") {
        if (stage == batch_trailer || stage == start) return out_of_place(number, id, "is a second or misplaced trailer");
        close(line);
        b.bts = content;
        stage = batch_trailer;
      } else if (id == "FTS") {
        close(line);
        b.fts = content;
        stage = file_trailer;
      } else if (open == kNone) {
        return out_of_place(number, id.empty() ? content : id, "is outside every message");
      }
    }
    line = eol + 1;
  }
  close(text.size());

  // BTS-1 is the sender's count of the messages: a different count means messages were lost
  // or added on the way, and applying the rest would hide it.
  if (!b.bts.empty()) {
    const char fs = !b.bhs.empty() ? b.bhs[3] : b.fhs[3];
    std::string_view count = b.bts.size() > 4 && b.bts[3] == fs ? b.bts.substr(4) : std::string_view{};
    count = trim_spaces(count.substr(0, count.find(fs)));
    if (!count.empty() && count != std::to_string(b.messages.size())) {
      std::string d = "BTS-1 counts '";
      d.append(printable(count)).append("' messages but the batch holds ");
      d.append(std::to_string(b.messages.size())).append("; nothing was applied");
      return invalid(std::move(d), "BTS-1");
    }
  }
  return b;
}

std::vector<std::string_view> split_messages(std::string_view text) {
  std::vector<std::string_view> out;
  constexpr std::size_t kNone = std::string_view::npos;
  std::size_t open = kNone;  // start of the message being collected
  auto close = [&](std::size_t end) {
    if (open != kNone) out.push_back(text.substr(open, end - open));
    open = kNone;
  };
  std::size_t line = 0;
  while (line < text.size()) {
    std::string_view rest = text.substr(line);
    if (line == 0 && rest.substr(0, 6) == "\xEF\xBB\xBFMSH") {
      open = 0;
    } else {
      std::string_view id = rest.substr(0, 3);
      if (id == "MSH") {
        close(line);
        open = line;
      } else if (id == "FHS" || id == "BHS" || id == "BTS" || id == "FTS") {
        close(line);
      }
    }
    std::size_t eol = line;
    while (eol < text.size() && text[eol] != '\r' && text[eol] != '\n') ++eol;
    if (eol < text.size() && text[eol] == '\r' && eol + 1 < text.size() && text[eol + 1] == '\n') ++eol;
    line = eol + 1;
  }
  close(text.size());
  return out;
}

}  // namespace gw::hl7v2
