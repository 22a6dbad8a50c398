// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the MLLP framer. The first two bytes pick small limits and the chunk sizes;
// the rest is the byte stream. Properties: never crashes; feeding the stream in chunks gives
// exactly the frames, oversize heads, events, skipped count and final state of feeding it at once; frames
// never hold a start or end block and never exceed the limit.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "adapters/hl7v2/mllp_framer.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  gw::hl7v2::FramerLimits limits;
  limits.max_message_bytes = 16 + (data[0] & 0x3F) * 16u;
  limits.max_stray_bytes = 1 + (data[0] >> 6) * 8u;
  limits.max_oversize_bytes = limits.max_message_bytes * 4;
  const std::size_t max_chunk = 1 + (data[1] & 0x1F);
  std::uint32_t seed = data[1] | (static_cast<std::uint32_t>(data[0]) << 8) | 1u;
  std::string_view stream(reinterpret_cast<const char*>(data) + 2, size - 2);

  gw::hl7v2::MllpFramer whole(limits);
  gw::hl7v2::FramerOutput expected;
  whole.feed(stream, expected);

  gw::hl7v2::MllpFramer chunked(limits);
  gw::hl7v2::FramerOutput got;
  std::size_t pos = 0;
  while (pos < stream.size()) {
    seed = seed * 1103515245u + 12345u;  // split positions derived from the first bytes
    std::size_t len = 1 + (seed >> 16) % max_chunk;
    if (len > stream.size() - pos) len = stream.size() - pos;
    chunked.feed(stream.substr(pos, len), got);
    pos += len;
  }
  if (got.frames != expected.frames || got.oversize != expected.oversize || got.events != expected.events ||
      got.skipped != expected.skipped ||
      got.fatal != expected.fatal || chunked.in_frame() != whole.in_frame() ||
      chunked.pending_bytes() != whole.pending_bytes())
    __builtin_trap();
  for (const auto& frame : expected.frames) {
    if (frame.size() > limits.max_message_bytes) __builtin_trap();
    if (frame.find(gw::hl7v2::kStartBlock) != std::string::npos || frame.find(gw::hl7v2::kEndBlock) != std::string::npos)
      __builtin_trap();
  }
  return 0;
}
