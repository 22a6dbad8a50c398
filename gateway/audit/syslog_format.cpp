// SPDX-License-Identifier: Apache-2.0
// The forwarder's messages (forwarder.h): a stored audit record as an RFC 5424 syslog message
// with structured data, and its RFC 5425 octet-counting frame.
#include "gateway/audit/forwarder.h"

#include <algorithm>
#include <optional>
#include <string>

#include "fhir/query_string.h"
#include "gateway/audit/merkle.h"
#include "gateway/audit/record.h"

namespace gw::audit {

namespace {

constexpr std::size_t kMaxSdValueBytes = 128;
constexpr std::size_t kMaxPatientParams = 8;
constexpr char kBom[] = "\xEF\xBB\xBF";

bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t len = 0;
    std::uint32_t cp = 0;
    if (c < 0x80) { ++i; continue; }
    if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
    else return false;
    if (i + len > s.size()) return false;
    for (std::size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    // Overlong forms, UTF-16 surrogates and code points past U+10FFFF are not UTF-8 (RFC 3629).
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += len;
  }
  return true;
}

// HOSTNAME, APP-NAME, PROCID: 1*N PRINTUSASCII (RFC 5424 6.2); "-" is the NILVALUE.
std::string header_field(std::string_view s, std::size_t max) {
  std::string out;
  for (char ch : s.substr(0, std::min(s.size(), max))) {
    const auto c = static_cast<unsigned char>(ch);
    out.push_back(c >= 33 && c <= 126 ? ch : '_');
  }
  return out.empty() ? std::string("-") : out;
}

// A structured-data value: cut on a character boundary, control characters replaced, escaped.
std::string sd_value(std::string_view v) {
  std::string clean(v.substr(0, fhir::utf8_cut(v, kMaxSdValueBytes)));
  for (char& ch : clean) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7F) ch = '?';
  }
  return escape_sd_value(clean);
}

int severity_for(int outcome) { return outcome == 0 ? 6 : outcome == 4 ? 4 : 3; }

}  // namespace

bool valid_sd_name(std::string_view s) {
  if (s.empty() || s.size() > 32) return false;
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 33 || c > 126 || ch == '=' || ch == ']' || ch == '"') return false;
  }
  return true;
}

std::string escape_sd_value(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '"' || c == '\\' || c == ']') out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

std::string frame_syslog(std::string_view message) {
  std::string out = std::to_string(message.size());
  out.push_back(' ');
  out.append(message);
  return out;
}

SyslogMessage format_syslog(const ForwarderOptions& options, std::string_view hostname, std::string_view procid,
                            std::uint64_t seq, std::string_view record) {
  auto decoded = decode(record);
  const Record* rec = decoded ? &*decoded : nullptr;
  const std::string leaf = merkle::to_hex(merkle::leaf_hash(record));
  const int facility = std::clamp(options.facility, 0, 23);
  const int severity = rec ? severity_for(outcome_code(rec->status)) : 5;

  std::string header = "<";
  header.append(std::to_string(facility * 8 + severity)).append(">1 ");
  header.append(rec ? format_time_ms(rec->time_ms) : std::string("-")).push_back(' ');
  header.append(header_field(hostname, 255)).push_back(' ');
  header.append(header_field(options.app_name, 48)).push_back(' ');
  header.append(header_field(procid, 128)).append(" audit ");

  const std::string sd_id = valid_sd_name(options.sd_id) ? options.sd_id : std::string("fhirgw@32473");
  auto structured = [&](bool facts, std::optional<std::size_t> truncated_from) {
    std::string sd = "[" + sd_id;
    auto param = [&](const char* name, std::string_view value) {
      sd.append(" ").append(name).append("=\"").append(sd_value(value)).append("\"");
    };
    param("seq", std::to_string(seq));
    param("leaf", leaf);
    if (truncated_from) param("truncated", std::to_string(*truncated_from));
    if (facts && rec) {
      param("kind", rec->kind);
      param("action", rec->action);
      param("status", std::to_string(rec->status));
      param("outcome", std::to_string(outcome_code(rec->status)));
      if (!rec->user.empty()) param("user", rec->user);
      if (!rec->organisation.empty()) param("organisation", rec->organisation);
      // RFC 5424 6.3.3 lets a PARAM-NAME repeat inside one SD-ELEMENT.
      for (std::size_t i = 0; i < rec->detail.patients.size() && i < kMaxPatientParams; ++i)
        param("patient", rec->detail.patients[i]);
    }
    sd.push_back(']');
    return sd;
  };

  const std::size_t max = std::clamp(options.max_message_bytes, kMinMessageBytes, kMaxMessageBytes);
  const bool utf8 = valid_utf8(record);
  const std::size_t bom = utf8 ? 3 : 0;
  SyslogMessage m;
  std::string head = header + structured(true, std::nullopt);
  if (head.size() + 1 + bom + record.size() > max) {
    m.truncated = true;
    head = header + structured(true, record.size());
    // Keep at least half the message for the record itself.
    if (head.size() > max / 2) head = header + structured(false, record.size());
  }
  const std::size_t budget = max - head.size() - 1 - bom;
  const std::size_t keep = m.truncated ? (utf8 ? fhir::utf8_cut(record, budget) : std::min(budget, record.size()))
                                       : record.size();
  m.text.reserve(head.size() + 1 + bom + keep);
  m.text.append(head).push_back(' ');
  if (utf8) m.text.append(kBom, 3);
  m.text.append(record.substr(0, keep));
  return m;
}

}  // namespace gw::audit
