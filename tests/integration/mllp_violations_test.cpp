// SPDX-License-Identifier: Apache-2.0
// Issue #4 item 3 over real sockets: every MLLP protocol violation is counted, while the log
// a sender can cause stays bounded (one line per kind per frame, a budget per connection).
#include <doctest/doctest.h>

#include <thread>

#include "adapters/hl7v2/hl7v2_adapter.h"
#include "support/mllp_client.h"
#include "support/stderr_capture.h"
#include "support/test_server.h"

using namespace gw;
using namespace std::chrono_literals;

namespace {

constexpr const char* kSource = "cuh-pas";

std::unique_ptr<test::TestServer> mllp_server() {
  return std::make_unique<test::TestServer>([](config::Config& c) {
    config::SourceSystemConfig s;
    s.ods_code = "RGT01";
    s.name = kSource;
    s.adapter = "hl7v2";
    s.endpoint = "127.0.0.1:0";
    c.source_systems.push_back(s);
  });
}

hl7v2::Hl7v2Adapter& listener(test::TestServer& s) {
  auto* a = dynamic_cast<hl7v2::Hl7v2Adapter*>(s.app().adapter(kSource));
  REQUIRE(a != nullptr);
  return *a;
}

std::string a01(const std::string& control) {
  return "MSH|^~\\&|PAS|RGT01|GW|GW|20261123101500||ADT^A01^ADT_A01|" + control +
         "|P|2.4\rEVN|A01|20261123101500\rPID|1||9990000018^^^NHS^NH~MRN-V^^^RGT01^MR||SMITH^JOHN||19700101|M\r"
         "PV1|1|I|WARD1^BED2^^RGT01\r";
}

// The connection's summary line is written as the listener closes it: wait for that.
bool all_closed(test::TestServer& s) {
  for (int i = 0; i < 500 && listener(s).stats().open_connections > 0; ++i) std::this_thread::sleep_for(10ms);
  return listener(s).stats().open_connections == 0;
}

std::size_t count_lines(const std::string& log, const std::string& msg) {
  std::size_t n = 0;
  const std::string needle = "\"msg\":\"" + msg + "\"";
  for (std::size_t at = log.find(needle); at != std::string::npos; at = log.find(needle, at + 1)) ++n;
  return n;
}

}  // namespace

TEST_CASE("MLLP: 20,000 <VT>s inside one frame are 20,000 violations counted and one log line") {
  auto s = mllp_server();
  const std::uint64_t before = listener(*s).stats().protocol_violations;
  test::StderrCapture capture;
  {
    test::MllpConnection c(listener(*s).port());
    REQUIRE(c.ok());
    std::string frame(1, '\x0b');
    frame += a01("VT-FLOOD");
    frame.append(20000, '\x0b');
    frame += "\x1c\r";
    REQUIRE(c.send_raw(frame));
    // Each <VT> restarted the frame: what is left is an empty one, refused.
    const auto acks = c.read_frames(1, 10s);
    REQUIRE(acks.size() == 1);
    CHECK(test::hl7_field(acks[0], "MSA", 1) == "AR");
  }
  REQUIRE(all_closed(*s));
  const std::string log = capture.text();
  CHECK(listener(*s).stats().protocol_violations == before + 20000);
  CHECK_MESSAGE(count_lines(log, "mllp protocol violation") == 1, log.substr(0, 2000));
  const std::string line = test::log_line(log, "mllp protocol violation");
  CHECK(line.find("\"event\":\"start_inside_frame\"") != std::string::npos);
  CHECK(line.find("\"count\":\"20000\"") != std::string::npos);
  CHECK(line.find("\"peer\":\"127.0.0.1:") != std::string::npos);
  CHECK(count_lines(log, "mllp protocol violations not logged") == 0);  // within the budget
}

TEST_CASE("MLLP: a connection's violation lines are capped; the rest are counted and summed up at close") {
  auto s = mllp_server();
  const std::uint64_t before = listener(*s).stats().protocol_violations;
  test::StderrCapture capture;
  constexpr int kFrames = 30;
  {
    test::MllpConnection c(listener(*s).port());
    REQUIRE(c.ok());
    // One frame at a time, each with a <VT> inside: one violation, one line, per frame.
    for (int i = 0; i < kFrames; ++i) {
      REQUIRE(c.send_raw("\x0b"));
      REQUIRE(c.send(a01("VT-CAP")));
      REQUIRE(c.read_frames(1, 10s).size() == 1);
    }
  }
  REQUIRE(all_closed(*s));
  const std::string log = capture.text();
  CHECK(listener(*s).stats().protocol_violations == before + kFrames);
  CHECK(count_lines(log, "mllp protocol violation") == 20);
  REQUIRE(count_lines(log, "mllp protocol violations not logged") == 1);
  const std::string summary = test::log_line(log, "mllp protocol violations not logged");
  CHECK(summary.find("\"suppressed\":\"10\"") != std::string::npos);
  CHECK(summary.find("\"events\":\"start_inside_frame\"") != std::string::npos);
  CHECK(summary.find("\"peer\":\"127.0.0.1:") != std::string::npos);
}
