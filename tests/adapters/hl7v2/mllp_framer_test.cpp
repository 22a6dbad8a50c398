// SPDX-License-Identifier: Apache-2.0
// MLLP framer: frames across and within feeds, stray bytes, trailing LF/CRLF, a missing CR
// after FS, a start block inside a frame, limits, and byte-at-a-time feeding.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "adapters/hl7v2/mllp_framer.h"

using gw::hl7v2::FrameEvent;
using gw::hl7v2::FramerLimits;
using gw::hl7v2::FramerOutput;
using gw::hl7v2::MllpFramer;

namespace {

const std::string kA = "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.4\rPID|1||9000000009^^^NHS^NH\r";
const std::string kB = "MSH|^~\\&|A|B|C|D|20240101||ADT^A02|2|P|2.4\rPV1|1|I\r";
const std::string kVT(1, '\x0B');
const std::string kFS(1, '\x1C');

FramerOutput feed_all(MllpFramer& f, std::string_view bytes) {
  FramerOutput out;
  f.feed(bytes, out);
  return out;
}

FramerOutput feed_bytewise(MllpFramer& f, std::string_view bytes) {
  FramerOutput out;
  for (char c : bytes) f.feed(std::string_view(&c, 1), out);
  return out;
}

}  // namespace

TEST_CASE("MllpFramer: frame() wraps a message in VT ... FS CR") {
  CHECK(MllpFramer::frame("abc") == "\x0B" "abc\x1C\r");
  CHECK(MllpFramer::frame("") == "\x0B\x1C\r");
  MllpFramer f;
  auto out = feed_all(f, MllpFramer::frame(kA));
  REQUIRE(out.frames.size() == 1);
  CHECK(out.frames[0] == kA);
  CHECK(out.events.empty());
  CHECK(out.skipped == 0);
  CHECK_FALSE(out.fatal);
  CHECK_FALSE(f.in_frame());
}

TEST_CASE("MllpFramer: a frame split across feeds at every position") {
  const std::string wire = MllpFramer::frame(kA);
  for (std::size_t cut = 0; cut <= wire.size(); ++cut) {
    CAPTURE(cut);
    MllpFramer f;
    FramerOutput out;
    f.feed(std::string_view(wire).substr(0, cut), out);
    CHECK(out.frames.empty() == (cut < wire.size() - 1));  // delivered once FS is seen
    if (cut > 0 && cut < wire.size() - 1) {
      CHECK(f.in_frame());
      CHECK(f.pending_bytes() == cut - 1);
    }
    f.feed(std::string_view(wire).substr(cut), out);
    REQUIRE(out.frames.size() == 1);
    CHECK(out.frames[0] == kA);
    CHECK(out.events.empty());
    CHECK_FALSE(f.in_frame());
    CHECK(f.pending_bytes() == 0);
  }
}

TEST_CASE("MllpFramer: many frames in one feed, with a tolerated LF or CRLF between them") {
  MllpFramer f;
  const std::string wire = MllpFramer::frame(kA) + MllpFramer::frame(kB) + "\n" + MllpFramer::frame(kA) + "\r\n" +
                           MllpFramer::frame("") + MllpFramer::frame(kB) + "\r\n";
  auto out = feed_all(f, wire);
  REQUIRE(out.frames.size() == 5);
  CHECK(out.frames[0] == kA);
  CHECK(out.frames[1] == kB);
  CHECK(out.frames[2] == kA);
  CHECK(out.frames[3].empty());
  CHECK(out.frames[4] == kB);
  CHECK(out.events.empty());
  CHECK(out.skipped == 0);
}

TEST_CASE("MllpFramer: stray bytes before a start block are skipped and reported") {
  MllpFramer f;
  auto out = feed_all(f, "GET / HTTP/1.1\r\n" + MllpFramer::frame(kA));
  REQUIRE(out.frames.size() == 1);
  CHECK(out.frames[0] == kA);
  REQUIRE(out.events.size() == 1);
  CHECK(out.events[0] == FrameEvent::stray_bytes_skipped);
  CHECK(out.skipped == 16);
  CHECK_FALSE(out.fatal);

  // Between frames too, also a lone CR after FS CR, and a second LF.
  MllpFramer g;
  auto between = feed_all(g, MllpFramer::frame(kA) + "\r" + MllpFramer::frame(kB) + "\n\n" + MllpFramer::frame(kA));
  CHECK(between.frames.size() == 3);
  CHECK(between.skipped == 2);
  CHECK(between.events == std::vector<FrameEvent>{FrameEvent::stray_bytes_skipped, FrameEvent::stray_bytes_skipped});
}

TEST_CASE("MllpFramer: stray bytes over the limit are fatal; the limit is per gap") {
  FramerLimits limits;
  limits.max_stray_bytes = 10;
  MllpFramer at_limit(limits);
  auto ok = feed_all(at_limit, std::string(10, 'x') + MllpFramer::frame(kA) + std::string(10, 'y') +
                                   MllpFramer::frame(kB));
  CHECK(ok.frames.size() == 2);
  CHECK(ok.skipped == 20);
  CHECK_FALSE(ok.fatal);

  MllpFramer over(limits);
  FramerOutput out;
  over.feed(std::string(6, 'x'), out);
  CHECK_FALSE(out.fatal);
  over.feed(std::string(5, 'x') + MllpFramer::frame(kA), out);
  CHECK(out.fatal);
  CHECK(out.frames.empty());
  CHECK(out.events == std::vector<FrameEvent>{FrameEvent::stray_bytes_skipped, FrameEvent::stray_limit_exceeded});
  // After a fatal event nothing more happens.
  FramerOutput later;
  over.feed(MllpFramer::frame(kB), later);
  CHECK(later.frames.empty());
  CHECK(later.events.empty());
  CHECK_FALSE(over.in_frame());
}

TEST_CASE("MllpFramer: FS without CR still delivers the frame, with an event") {
  MllpFramer f;
  FramerOutput out;
  f.feed(kVT + kA + kFS, out);
  REQUIRE(out.frames.size() == 1);  // delivered at FS: a sender waiting for its ACK is served
  CHECK(out.frames[0] == kA);
  CHECK(out.events.empty());
  f.feed(kVT + kB + kFS + "\r", out);  // the next frame follows at once
  REQUIRE(out.frames.size() == 2);
  CHECK(out.frames[1] == kB);
  CHECK(out.events == std::vector<FrameEvent>{FrameEvent::missing_carriage_return});
  CHECK(out.skipped == 0);

  MllpFramer g;
  auto stray = feed_all(g, kVT + kA + kFS + "x" + MllpFramer::frame(kB));
  CHECK(stray.frames.size() == 2);
  CHECK(stray.events ==
        std::vector<FrameEvent>{FrameEvent::missing_carriage_return, FrameEvent::stray_bytes_skipped});
  CHECK(stray.skipped == 1);
}

TEST_CASE("MllpFramer: a start block inside a frame drops the partial frame and starts again") {
  MllpFramer f;
  FramerOutput out;
  f.feed(kVT + "MSH|partial", out);
  CHECK(f.in_frame());
  CHECK(f.pending_bytes() == 11);
  f.feed(MllpFramer::frame(kA), out);
  REQUIRE(out.frames.size() == 1);
  CHECK(out.frames[0] == kA);
  CHECK(out.events == std::vector<FrameEvent>{FrameEvent::start_inside_frame});
  CHECK_FALSE(out.fatal);
}

TEST_CASE("MllpFramer: a payload over the limit is read to its end and delivered as its head; at the limit whole") {
  FramerLimits limits;
  limits.max_message_bytes = 100;
  MllpFramer at_limit(limits);
  auto ok = feed_all(at_limit, MllpFramer::frame(std::string(100, 'm')));
  REQUIRE(ok.frames.size() == 1);
  CHECK(ok.frames[0].size() == 100);
  CHECK(ok.oversize.empty());
  CHECK_FALSE(ok.fatal);

  // Over the limit: the sender is answered rather than cut off, so the framer reads on to the
  // end block, keeps the head (here the whole limit: less than kOversizeHeadBytes) and the
  // real size, and the next frame on the connection is delivered as usual.
  MllpFramer over(limits);
  FramerOutput out;
  over.feed(kVT + std::string(60, 'h') + std::string(40, 'm'), out);
  CHECK_FALSE(out.fatal);
  over.feed(std::string(41, 'm'), out);
  CHECK(over.in_frame());
  CHECK(over.pending_bytes() == 141);
  over.feed(std::string(1000, 'x') + kFS + "\r" + MllpFramer::frame(kA), out);
  CHECK_FALSE(out.fatal);
  REQUIRE(out.frames.size() == 2);
  CHECK(out.frames[0] == std::string(60, 'h') + std::string(40, 'm'));
  CHECK(out.oversize == std::vector<gw::hl7v2::OversizeFrame>{{0, 1141}});
  CHECK(out.frames[1] == kA);
  CHECK(out.events == std::vector<FrameEvent>{FrameEvent::message_too_large});
  CHECK_FALSE(over.in_frame());

  // Bounded: no end block within max_oversize_bytes is fatal.
  limits.max_oversize_bytes = 500;
  MllpFramer endless(limits);
  FramerOutput cut;
  endless.feed(kVT + std::string(400, 'm'), cut);
  CHECK_FALSE(cut.fatal);
  endless.feed(std::string(101, 'm'), cut);
  CHECK(cut.fatal);
  CHECK(cut.frames.empty());
  CHECK(cut.events == std::vector<FrameEvent>{FrameEvent::oversize_limit_exceeded});
  CHECK_FALSE(endless.in_frame());
  FramerOutput later;
  endless.feed(MllpFramer::frame("x"), later);
  CHECK(later.frames.empty());

  // The head is at most kOversizeHeadBytes, however large the limit.
  FramerLimits big;
  big.max_message_bytes = 2 * gw::hl7v2::kOversizeHeadBytes;
  MllpFramer large(big);
  auto head = feed_all(large, MllpFramer::frame(std::string(3 * gw::hl7v2::kOversizeHeadBytes, 'm')));
  REQUIRE(head.frames.size() == 1);
  CHECK(head.frames[0].size() == gw::hl7v2::kOversizeHeadBytes);
  CHECK(head.oversize == std::vector<gw::hl7v2::OversizeFrame>{{0, 3 * gw::hl7v2::kOversizeHeadBytes}});
}

TEST_CASE("MllpFramer: byte-at-a-time feeding of a multi-frame stream equals one feed") {
  const std::string wire = "junk" + MllpFramer::frame(kA) + "\r\n" + kVT + "MSH|dropped" + MllpFramer::frame(kB) +
                           kVT + kA + kFS + kVT + kB + kFS + "\r\n" + MllpFramer::frame("") + "\r" + "tail" +
                           kVT + "unfinished";
  MllpFramer whole;
  auto expected = feed_all(whole, wire);
  REQUIRE(expected.frames == std::vector<std::string>{kA, kB, kA, kB, ""});
  CHECK(expected.events == std::vector<FrameEvent>{FrameEvent::stray_bytes_skipped, FrameEvent::start_inside_frame,
                                                   FrameEvent::missing_carriage_return,
                                                   FrameEvent::stray_bytes_skipped});
  CHECK(expected.skipped == 4 + 5);  // "junk", then "\r" + "tail"
  CHECK(whole.in_frame());
  CHECK(whole.pending_bytes() == 10);

  MllpFramer bytewise;
  auto got = feed_bytewise(bytewise, wire);
  CHECK(got.frames == expected.frames);
  CHECK(got.events == expected.events);
  CHECK(got.skipped == expected.skipped);
  CHECK(bytewise.in_frame());
  CHECK(bytewise.pending_bytes() == 10);
}

TEST_CASE("MllpFramer: event names") {
  CHECK(gw::hl7v2::event_name(FrameEvent::stray_bytes_skipped) == "stray_bytes_skipped");
  CHECK(gw::hl7v2::event_name(FrameEvent::stray_limit_exceeded) == "stray_limit_exceeded");
  CHECK(gw::hl7v2::event_name(FrameEvent::message_too_large) == "message_too_large");
  CHECK(gw::hl7v2::event_name(FrameEvent::oversize_limit_exceeded) == "oversize_limit_exceeded");
  CHECK(gw::hl7v2::event_name(FrameEvent::missing_carriage_return) == "missing_carriage_return");
  CHECK(gw::hl7v2::event_name(FrameEvent::start_inside_frame) == "start_inside_frame");
}
