// SPDX-License-Identifier: Apache-2.0
// MLLP framing state machine (HL7 v2.5 Appendix C.4.2 "Minimal Lower Layer Protocol"): payload
// bytes are appended in bulk between delimiters, so feeding is linear in the bytes fed however
// they are split.
#include "adapters/hl7v2/mllp_framer.h"

#include <algorithm>

namespace gw::hl7v2 {

std::string_view event_name(FrameEvent e) {
  switch (e) {
    case FrameEvent::stray_bytes_skipped: return "stray_bytes_skipped";
    case FrameEvent::stray_limit_exceeded: return "stray_limit_exceeded";
    case FrameEvent::message_too_large: return "message_too_large";
    case FrameEvent::oversize_limit_exceeded: return "oversize_limit_exceeded";
    case FrameEvent::missing_carriage_return: return "missing_carriage_return";
    case FrameEvent::start_inside_frame: return "start_inside_frame";
  }
  return "unknown";
}

bool MllpFramer::in_frame() const { return state_ == State::in_frame || state_ == State::oversize; }

std::size_t MllpFramer::pending_bytes() const {
  if (state_ == State::oversize) return oversize_bytes_;
  return state_ == State::in_frame ? partial_.size() : 0;
}

std::string MllpFramer::frame(std::string_view message) {
  std::string out;
  out.reserve(message.size() + 3);
  out.push_back(kStartBlock);
  out.append(message);
  out.push_back(kEndBlock);
  out.push_back(kCarriageReturn);
  return out;
}

void MllpFramer::skip_stray(std::size_t count, FramerOutput& out) {
  // One event per gap, at its first byte, so the events do not depend on how reads split.
  if (stray_run_ == 0) out.events.push_back(FrameEvent::stray_bytes_skipped);
  std::size_t allowed = limits_.max_stray_bytes - std::min(stray_run_, limits_.max_stray_bytes);
  if (count > allowed) {
    out.skipped += allowed;
    stray_run_ += allowed;
    out.events.push_back(FrameEvent::stray_limit_exceeded);
    fail(out);
    return;
  }
  out.skipped += count;
  stray_run_ += count;
}

void MllpFramer::fail(FramerOutput& out) {
  out.fatal = true;
  state_ = State::failed;
  partial_.clear();
  partial_.shrink_to_fit();
}

void MllpFramer::start_frame() {
  state_ = State::in_frame;
  stray_run_ = 0;
  partial_.clear();
}

void MllpFramer::feed(std::string_view bytes, FramerOutput& out) {
  std::size_t i = 0;
  const std::size_t n = bytes.size();
  while (i < n && state_ != State::failed) {
    switch (state_) {
      case State::in_frame: {
        // Bulk-append up to the next delimiter that matters inside a payload.
        std::size_t stop = i;
        while (stop < n && bytes[stop] != kEndBlock && bytes[stop] != kStartBlock) ++stop;
        if (stop - i > limits_.max_message_bytes - std::min(partial_.size(), limits_.max_message_bytes)) {
          // Over the limit: keep the head, drop the rest as it comes (State::oversize).
          state_ = State::oversize;
          oversize_bytes_ = partial_.size();
          partial_.resize(std::min({partial_.size(), kOversizeHeadBytes, limits_.max_message_bytes}));
          break;
        }
        partial_.append(bytes.data() + i, stop - i);
        i = stop;
        if (i == n) break;
        if (bytes[i] == kStartBlock) {
          out.events.push_back(FrameEvent::start_inside_frame);
          partial_.clear();
          ++i;
          break;
        }
        // <FS>: the payload is complete. It is delivered now, not at the <CR>, so a sender
        // that omits the <CR> and waits for its ACK is not left hanging.
        out.frames.push_back(std::move(partial_));
        partial_.clear();
        state_ = State::after_end;
        ++i;
        break;
      }
      case State::oversize: {
        std::size_t stop = i;
        while (stop < n && bytes[stop] != kEndBlock && bytes[stop] != kStartBlock) ++stop;
        const std::size_t head = std::min(kOversizeHeadBytes, limits_.max_message_bytes);
        if (partial_.size() < head) partial_.append(bytes.data() + i, std::min(stop - i, head - partial_.size()));
        oversize_bytes_ += stop - i;
        i = stop;
        if (oversize_bytes_ > limits_.max_oversize_bytes) {
          // Reading on to the end block is for answering the sender; past this, it is abuse.
          out.events.push_back(FrameEvent::oversize_limit_exceeded);
          fail(out);
          return;
        }
        if (i == n) break;
        if (bytes[i] == kStartBlock) {
          out.events.push_back(FrameEvent::start_inside_frame);
          partial_.clear();
          state_ = State::in_frame;
          ++i;
          break;
        }
        out.events.push_back(FrameEvent::message_too_large);
        out.oversize.push_back(OversizeFrame{out.frames.size(), oversize_bytes_});
        out.frames.push_back(std::move(partial_));
        partial_.clear();
        state_ = State::after_end;
        ++i;
        break;
      }
      case State::after_end:
        if (bytes[i] == kCarriageReturn) {
          state_ = State::after_frame;
          ++i;
        } else {
          out.events.push_back(FrameEvent::missing_carriage_return);
          state_ = State::between;  // this byte is read again as a between-frames byte
        }
        break;
      case State::after_frame:
        // A LF or CRLF after <FS><CR> is common (file-oriented senders): tolerated silently.
        if (bytes[i] == '\n') {
          state_ = State::between;
          ++i;
        } else if (bytes[i] == kCarriageReturn) {
          state_ = State::after_frame_cr;
          ++i;
        } else {
          state_ = State::between;
        }
        break;
      case State::after_frame_cr:
        if (bytes[i] == '\n') {
          ++i;
        } else {
          skip_stray(1, out);  // the lone CR was stray after all
        }
        if (state_ != State::failed) state_ = State::between;
        break;
      case State::between: {
        std::size_t stop = i;
        while (stop < n && bytes[stop] != kStartBlock) ++stop;
        if (stop > i) skip_stray(stop - i, out);
        i = stop;
        if (state_ == State::failed || i == n) break;
        start_frame();
        ++i;
        break;
      }
      case State::failed: break;
    }
  }
}

}  // namespace gw::hl7v2
