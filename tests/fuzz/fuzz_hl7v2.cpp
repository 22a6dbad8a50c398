// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: HL7 v2 parsing, field access and re-encoding. Properties: never crashes;
// anything that parses encodes to text that parses to the same text (encode() is a fixed
// point); escape() output unescapes to the value it was given (line breaks aside).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "adapters/hl7v2/message.h"

namespace {

void check_escape_round_trip(const std::string& value, const gw::hl7v2::Delimiters& d) {
  if (value.find('\r') != std::string::npos || value.find('\n') != std::string::npos) return;
  if (gw::hl7v2::unescape(gw::hl7v2::escape(value, d), d) != value) __builtin_trap();
}

void exercise(const gw::hl7v2::Message& m) {
  (void)m.message_type();
  (void)m.message_type_as_sent();
  (void)m.control_id();
  (void)m.version();
  (void)m.charset();
  (void)m.find("PID", 1);
  const std::size_t segments = std::min<std::size_t>(m.segment_count(), 64);
  for (std::size_t s = 0; s < segments; ++s) {
    gw::hl7v2::SegmentRef seg = m.segment(s);
    const std::size_t fields = std::min<std::size_t>(seg.field_count() + 1, 40);
    for (std::size_t f = 0; f <= fields; ++f) {
      (void)seg.repetition_count(f);
      (void)seg.raw(f, 2, 0);
      (void)seg.raw(f, 1, 2, 2);
      (void)seg.is_null(f);
      std::string value = seg.get(f);
      check_escape_round_trip(value, m.delimiters());
      (void)seg.get(f, 3, 2, 2);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  (void)gw::hl7v2::unescape(text, gw::hl7v2::Delimiters{});
  if (gw::hl7v2::is_batch(text)) {
    auto batch = gw::hl7v2::read_batch(text, 1000);
    if (!batch && (batch.issue().diagnostics.empty() || batch.issue().expression.empty())) __builtin_trap();
  }
  for (std::string_view part : gw::hl7v2::split_messages(text)) {
    if (part.size() == text.size()) break;  // the whole input is parsed below
    (void)gw::hl7v2::Message::parse(part);
  }
  auto parsed = gw::hl7v2::Message::parse(text);
  if (!parsed) {
    if (parsed.issue().diagnostics.empty() || parsed.issue().expression.empty()) __builtin_trap();
    return 0;
  }
  exercise(*parsed);
  const std::string once = parsed->encode();
  auto again = gw::hl7v2::Message::parse(once);
  if (!again) {
    // Conversion to UTF-8 may grow a message past the size limit; nothing else may fail.
    if (again.issue().code != fhir::ErrorCode::payload_too_large) __builtin_trap();
    return 0;
  }
  if (again->encode() != once || again->segment_count() != parsed->segment_count()) __builtin_trap();
  return 0;
}
