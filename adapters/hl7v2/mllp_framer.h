// SPDX-License-Identifier: Apache-2.0
// MLLP framing (HL7 v2.5 Appendix C, "Minimal Lower Layer Protocol"): <VT> message <FS><CR>.
// A byte-level state machine the listener feeds with whatever each read returned; it knows
// nothing of sockets, so it is unit-tested and fuzzed on its own.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace gw::hl7v2 {

inline constexpr char kStartBlock = 0x0B;  // VT
inline constexpr char kEndBlock = 0x1C;    // FS
inline constexpr char kCarriageReturn = 0x0D;

struct FramerLimits {
  std::size_t max_message_bytes = 4 * 1024 * 1024;  // payload between VT and FS
  std::size_t max_stray_bytes = 4096;                // bytes skipped outside frames, per gap
  // A payload over max_message_bytes is read on to its end block, its bytes past the head
  // dropped, so that it can be answered (AR) and the connection kept; up to this many bytes,
  // beyond which it is fatal.
  std::size_t max_oversize_bytes = 16 * 1024 * 1024;
};

// The bytes kept of a payload over the limit (at most max_message_bytes): room for its MSH,
// so its answer can echo MSH-10, and for the message store's note of it.
inline constexpr std::size_t kOversizeHeadBytes = 4096;

// What the framer saw besides complete frames. Every one is a protocol violation that the
// listener logs and counts (none is silent).
enum class FrameEvent {
  stray_bytes_skipped,   // bytes before a start block (count in FramerOutput::skipped)
  stray_limit_exceeded,  // more than max_stray_bytes outside a frame: close the connection
  message_too_large,     // payload over max_message_bytes: delivered as its head (FramerOutput::oversize)
  oversize_limit_exceeded,  // no end block within max_oversize_bytes: close the connection
  missing_carriage_return,  // <FS> not followed by <CR>: the frame is still delivered
  start_inside_frame,    // <VT> inside a payload: the partial frame is dropped, a new one starts
};

std::string_view event_name(FrameEvent e);

// A frame whose payload was over max_message_bytes: frames[frame] holds only its first
// kOversizeHeadBytes (or max_message_bytes, if less); `bytes` is the payload's real size.
struct OversizeFrame {
  std::size_t frame = 0;
  std::size_t bytes = 0;
  bool operator==(const OversizeFrame&) const = default;
};

struct FramerOutput {
  std::vector<std::string> frames;  // complete payloads, in order
  std::vector<OversizeFrame> oversize;  // which of `frames` are heads of payloads over the limit
  std::vector<FrameEvent> events;   // in order of occurrence
  std::size_t skipped = 0;          // stray bytes skipped during this feed
  bool fatal = false;               // stray_limit_exceeded or oversize_limit_exceeded: stop reading
};

class MllpFramer {
 public:
  explicit MllpFramer(FramerLimits limits = {}) : limits_(limits) {}
  // Consumes `bytes` (any split: a frame may span many feeds, a feed may hold many frames)
  // and appends what completed to `out`. A LF (or CRLF) after <FS><CR> between frames is
  // tolerated silently. After a fatal event, further feeds do nothing.
  void feed(std::string_view bytes, FramerOutput& out);
  // True while inside a frame (a start block seen, no end block yet), one over the limit
  // included: a connection closed now truncated a message.
  bool in_frame() const;
  // Bytes of the frame being assembled (read so far, for one over the limit).
  std::size_t pending_bytes() const;

  // Frames `message` for the wire.
  static std::string frame(std::string_view message);

 private:
  // between: outside a frame; in_frame: after <VT>; after_end: after <FS>, expecting <CR>;
  // after_frame: after <FS><CR>, a LF or CRLF may follow; after_frame_cr: after <FS><CR><CR>;
  // oversize: in a payload over the limit, its head kept, the rest counted and dropped.
  enum class State : std::uint8_t { between, in_frame, oversize, after_end, after_frame, after_frame_cr, failed };
  void skip_stray(std::size_t count, FramerOutput& out);
  void fail(FramerOutput& out);
  void start_frame();

  FramerLimits limits_;
  State state_ = State::between;
  std::string partial_;
  std::size_t stray_run_ = 0;  // bytes skipped in the current gap between frames
  std::size_t oversize_bytes_ = 0;  // in State::oversize: the payload's bytes so far
};

}  // namespace gw::hl7v2
