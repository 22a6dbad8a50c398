// SPDX-License-Identifier: Apache-2.0
#include "fhir/query_string.h"

namespace fhir {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::size_t utf8_cut(std::string_view s, std::size_t max) {
  if (s.size() <= max) return s.size();
  std::size_t n = max;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return n;
}

namespace {

// Length of the well-formed UTF-8 character at p[i] (RFC 3629 section 4: no overlongs, no
// surrogates, nothing above U+10FFFF), or 0 when the bytes there are not one.
std::size_t utf8_char_length(const unsigned char* p, std::size_t i, std::size_t n) {
  const unsigned char c = p[i];
  if (c < 0x80) return 1;
  std::size_t len = 0;
  unsigned cp = 0;
  if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
  else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
  else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
  else return 0;
  if (i + len > n) return 0;
  for (std::size_t k = 1; k < len; ++k) {
    if ((p[i + k] & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (p[i + k] & 0x3F);
  }
  if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000)) return 0;
  if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return len;
}

}  // namespace

bool is_valid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t len = utf8_char_length(p, i, s.size());
    if (len == 0) return false;
    i += len;
  }
  return true;
}

std::string valid_utf8(std::string_view s) {
  constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD
  std::string out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t len = utf8_char_length(p, i, s.size());
    if (len == 0) {
      out.append(kReplacement);
      ++i;
    } else {
      out.append(s.substr(i, len));
      i += len;
    }
  }
  return out;
}

Result<std::string> percent_decode(std::string_view s, bool plus_is_space, std::string_view what) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '%') {
      if (i + 2 >= s.size() || hex_value(s[i + 1]) < 0 || hex_value(s[i + 2]) < 0)
        return Issue::make(ErrorCode::bad_request, "Malformed percent-encoding in the " + std::string(what) +
                                                       " (expected %XX with hex digits)");
      char decoded = static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
      if (decoded == '\0')
        return Issue::make(ErrorCode::bad_request, "The " + std::string(what) + " contains an encoded NUL byte");
      out.push_back(decoded);
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  if (!is_valid_utf8(out))
    return Issue::make(ErrorCode::bad_request, "The " + std::string(what) + " is not valid UTF-8 after percent-decoding");
  return out;
}

namespace {
// "Query string" -> "query string", for the middle of a sentence.
std::string lowered(std::string_view what) {
  std::string out(what);
  if (!out.empty() && out[0] >= 'A' && out[0] <= 'Z') out[0] = static_cast<char>(out[0] - 'A' + 'a');
  return out;
}
}  // namespace

Result<QueryParams> parse_query_string(std::string_view query, const QueryLimits& limits) {
  if (query.size() > limits.max_bytes)
    return Issue::make(limits.too_long,
                       std::string(limits.what) + " longer than " + std::to_string(limits.max_bytes) + " bytes");
  QueryParams out;
  while (!query.empty()) {
    std::size_t amp = query.find('&');
    std::string_view piece = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (piece.empty()) continue;
    if (out.size() >= limits.max_params)
      return Issue::make(ErrorCode::bad_request,
                         "More than " + std::to_string(limits.max_params) + " parameters in the " + lowered(limits.what));
    std::size_t eq = piece.find('=');
    // Errors name the text as the limits do ("query string", "form body").
    auto name = percent_decode(piece.substr(0, eq), true, lowered(limits.what));
    if (!name) return std::move(name).issue();
    auto value = percent_decode(eq == std::string_view::npos ? std::string_view() : piece.substr(eq + 1), true,
                                lowered(limits.what));
    if (!value) return std::move(value).issue();
    if (name->empty()) return Issue::make(ErrorCode::bad_request, "A query parameter has an empty name");
    out.emplace_back(std::move(*name), std::move(*value));
  }
  return out;
}

std::string percent_encode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    bool unreserved = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                      c == '-' || c == '.' || c == '_' || c == '~';
    if (unreserved) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

}  // namespace fhir
