// SPDX-License-Identifier: Apache-2.0
// hl7send, run as a user would, against the real gateway's MLLP listener (gw::App in-process):
// folders of multi-message files, rejections, --json, enhanced acknowledgements, TLS, parallel
// connections; and against a scripted listener for what a healthy gateway never does (an ACK
// for another message, silence, a dropped connection). Also the splitting and ACK reading of
// the shared MLLP client library.
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "adapters/hl7v2/ack.h"
#include "adapters/hl7v2/hl7v2_adapter.h"
#include "adapters/hl7v2/mllp_framer.h"
#include "fhir/json.h"
#include "fhir/nhs_number.h"
#include "support/certs.h"
#include "support/paths.h"
#include "support/process.h"
#include "support/test_server.h"
#include "tools/hl7send/mllp_client.h"

using namespace gw;
namespace fs = std::filesystem;

namespace {

constexpr const char* kSource = "rgt-pas";

// Runs hl7send with `args` (shell-quoted by the caller); stdout and stderr apart.
test::ToolRun run_hl7send(const std::string& args) { return test::run_tool(HL7SEND_BIN, args); }

std::string nhs(int serial) { return test::test_nhs_number(serial); }

std::string msh(const std::string& type, const std::string& control, const std::string& extra = "") {
  return "MSH|^~\\&|PAS|RGT01|GW|GW|20261123101500||" + type + "|" + control + "|P|2.4" + extra + "\r";
}

// An admission for a new patient: PID-3 carries the NHS number and the trust's MRN.
std::string a01(const std::string& control, const std::string& nhs_number, const std::string& mrn,
                const std::string& msh_extra = "") {
  return msh("ADT^A01^ADT_A01", control, msh_extra) + "EVN|A01|20261123101500\r" + "PID|1||" + nhs_number +
         "^^^NHS^NH~" + mrn + "^^^RGT01^MR||OKAFOR^ADA||19700101|F|||1 HIGH ST^^CAMBRIDGE^^CB2 0QQ\r" +
         "PV1|1|I|WARD1^BED2^^RGT01|||||||||||||||V-" + control + "\r";
}

// A message in a version the gateway does not take: rejected (AR).
std::string v3(const std::string& control) {
  return "MSH|^~\\&|PAS|RGT01|GW|GW|20261123101500||ADT^A01^ADT_A01|" + control + "|P|3.0\rEVN|A01|20261123101500\r";
}

// A merge naming a prior record nobody holds: an application error (AE).
std::string a40_unknown(const std::string& control, const std::string& nhs_number) {
  return msh("ADT^A40^ADT_A39", control) + "EVN|A40|20261123101500\r" + "PID|1||" + nhs_number + "^^^NHS^NH~MRN-S-" +
         control + "^^^RGT01^MR||OKAFOR^ADA||19700101|F\r" + "MRG|MRN-GONE-" + control + "^^^RGT01^MR\r";
}

std::unique_ptr<test::TestServer> mllp_server(bool tls = false) {
  return std::make_unique<test::TestServer>([tls](config::Config& c) {
    config::SourceSystemConfig s;
    s.ods_code = "RGT01";
    s.name = kSource;
    s.adapter = "hl7v2";
    s.endpoint = "127.0.0.1:0";
    if (tls) s.settings.emplace_back("tls", "true");
    c.source_systems.push_back(s);
  });
}

std::uint16_t mllp_port(test::TestServer& s) {
  auto* a = dynamic_cast<hl7v2::Hl7v2Adapter*>(s.app().adapter(kSource));
  REQUIRE(a != nullptr);
  REQUIRE(a->port() != 0);
  return a->port();
}

std::vector<store::StoredMessage> stored(test::TestServer& s, store::MessageStatus status) {
  store::MessageQuery q;
  q.status = status;
  q.limit = 1000;
  auto list = s.app().store().list_messages(q);
  REQUIRE(list.ok());
  return *list;
}

std::string line_of(const std::string& text, const std::string& label) {
  auto at = text.find(label);
  if (at == std::string::npos) return {};
  return text.substr(at, text.find('\n', at) - at);
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    if (eol > pos) out.push_back(text.substr(pos, eol - pos));
    pos = eol + 1;
  }
  return out;
}

std::vector<fhir::Json> json_lines(const std::string& out) {
  std::vector<fhir::Json> v;
  for (const std::string& l : lines(out)) {
    auto j = fhir::parse_json(l);
    REQUIRE_MESSAGE(j.ok(), l);
    v.push_back(std::move(*j));
  }
  return v;
}

void write(const fs::path& p, const std::string& bytes) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << bytes;
}

std::string with_lf(std::string m) {
  for (char& c : m)
    if (c == '\r') c = '\n';
  return m;
}

std::string with_crlf(const std::string& m) {
  std::string out;
  for (char c : m) {
    if (c == '\r')
      out += "\r\n";
    else
      out += c;
  }
  return out;
}

// A scripted MLLP listener on loopback. For every frame received, `script(connection, frame)`
// says what to do: nullopt closes the connection, "" answers nothing, anything else is sent
// back framed. Connections are served one at a time, numbered from 0. Bounded: it stops when
// destroyed, and every wait polls at most 50 ms.
class ScriptedListener {
 public:
  using Script = std::function<std::optional<std::string>(int connection, const std::string& frame)>;
  explicit ScriptedListener(Script script) : script_(std::move(script)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(fd_, 8) == 0);
    socklen_t len = sizeof a;
    REQUIRE(::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~ScriptedListener() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  std::uint16_t port() const { return port_; }
  int connections() const { return connections_; }
  int frames() const { return frames_; }

 private:
  bool readable(int fd) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, 50) > 0;
  }
  void serve() {
    while (!stop_) {
      if (!readable(fd_)) continue;
      const int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) continue;
      const int index = connections_++;
      hl7v2::MllpFramer framer;
      bool open = true;
      while (open && !stop_) {
        if (!readable(c)) continue;
        char buf[4096];
        const ssize_t n = ::read(c, buf, sizeof buf);
        if (n <= 0) break;
        hl7v2::FramerOutput out;
        framer.feed(std::string_view(buf, static_cast<std::size_t>(n)), out);
        for (const std::string& f : out.frames) {
          ++frames_;
          std::optional<std::string> reply = script_(index, f);
          if (!reply) {
            open = false;
            break;
          }
          if (reply->empty()) continue;
          const std::string wire = hl7v2::MllpFramer::frame(*reply);
          if (::send(c, wire.data(), wire.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(wire.size())) open = false;
        }
      }
      ::close(c);
    }
  }
  Script script_;
  int fd_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> connections_{0}, frames_{0};
  std::thread thread_;
};

// An AA for `frame`, answering `control_id` in MSA-2.
std::string ack_for(const std::string& frame, const std::string& control_id) {
  hl7v2::MshSummary m = hl7v2::read_msh(frame);
  if (m.fields.size() > 10) m.fields[10] = control_id;
  return hl7v2::build_ack(m, hl7v2::AckCode::AA, std::nullopt, hl7v2::next_ack_clock());
}

}  // namespace

TEST_CASE("hl7send client: a file splits into normalised messages; envelopes, blank lines and the BOM go") {
  const std::string text =
      "\xEF\xBB\xBF"
      "FHS|^~\\&|PAS\r\nBHS|^~\\&|PAS\r\n" +
      with_crlf(msh("ADT^A01", "M1")) + "PID|1\r\n\r\n" + with_lf(msh("ADT^A08", "M2")) + "PID|2\n   \nBTS|2\rFTS|1\r" +
      msh("ADT^A03", "M3") + "PID|3";
  const std::vector<hl7send::FileMessage> m = hl7send::split_file(text);
  REQUIRE(m.size() == 3);
  CHECK(m[0].text == msh("ADT^A01", "M1") + "PID|1\r");
  CHECK(m[1].text == msh("ADT^A08", "M2") + "PID|2\r");
  CHECK(m[2].text == msh("ADT^A03", "M3") + "PID|3\r");
  // Each kept line's number in the file: CR LF, LF and CR each end one line, and the envelope
  // and blank lines count though they are dropped.
  CHECK(m[0].lines == std::vector<std::size_t>{3, 4});
  CHECK(m[1].lines == std::vector<std::size_t>{6, 7});
  CHECK(m[2].lines == std::vector<std::size_t>{11, 12});
  CHECK(hl7send::split_file("no message here\r\n").empty());
  CHECK(hl7send::normalise_message("\xEF\xBB\xBFMSH|^~\\&\nPID|1\r\n") == "MSH|^~\\&\rPID|1\r");
}

TEST_CASE("hl7send client: lines that are not HL7 segments are found, and can be dropped") {
  // HAPI's messages.txt: a "// ***" comment line after a message's segments.
  const std::string m = msh("ADT^A01", "C-1") + "PID|1\r// *** Original message ver 2.1\rZZ1\rPV1|1\rpv1|x\r";
  const auto foreign = hl7send::foreign_lines(m);
  REQUIRE(foreign.size() == 2);
  CHECK(foreign[0].line == 3);
  CHECK(foreign[0].text == "// *** Original message ver 2.1");
  CHECK(foreign[1].line == 6);
  CHECK(hl7send::drop_foreign_lines(m) == msh("ADT^A01", "C-1") + "PID|1\rZZ1\rPV1|1\r");
  // The field separator is the message's own.
  CHECK(hl7send::foreign_lines("MSH#^~\\&#A\rPID#1\rPV1|1\r").size() == 1);
  CHECK(hl7send::foreign_lines(a01("C-2", nhs(1), "MRN")).empty());
}

TEST_CASE("hl7send client: ACKs are read for code, MSA-2, text and the error location in both ERR forms") {
  // v2.5+: ERR-2 location, ERR-3 code, ERR-8 user message.
  hl7v2::MshSummary in = hl7v2::read_msh("MSH|^~\\&|PAS|RGT01|GW|GW|20261123||ORU^R01|C-9|P|2.5\r");
  const std::string v25 = hl7v2::build_ack(
      in, hl7v2::AckCode::AE, hl7v2::AckError{"OBX[2]-5", 102, "value is not a number"}, hl7v2::next_ack_clock());
  hl7send::Ack a = hl7send::parse_ack(v25);
  CHECK(a.code == "AE");
  CHECK(a.control_id == "C-9");
  CHECK(a.error_location == "OBX[2]-5");
  CHECK(a.error_code == "102");
  CHECK(a.text == "value is not a number");
  // v2.4: ERR-1 as an ELD.
  in = hl7v2::read_msh("MSH|^~\\&|PAS|RGT01|GW|GW|20261123||ADT^A40|C-10|P|2.4\r");
  a = hl7send::parse_ack(hl7v2::build_ack(in, hl7v2::AckCode::AR, hl7v2::AckError{"MRG-1", 204, "unknown record"},
                                          hl7v2::next_ack_clock()));
  CHECK(a.code == "AR");
  CHECK(a.control_id == "C-10");
  CHECK(a.error_location == "MRG-1");
  CHECK(a.error_code == "204");
  CHECK(a.text == "unknown record");
  // Not an ACK at all: no code, no control id.
  a = hl7send::parse_ack("garbage");
  CHECK(a.code.empty());
  CHECK(a.control_id.empty());
  // What MSH-15/16 ask for.
  CHECK_FALSE(hl7send::ack_request(msh("ADT^A01", "X")).enhanced);
  CHECK(hl7send::ack_request(msh("ADT^A01", "X", "|||NE|NE")).none());
  CHECK_FALSE(hl7send::ack_request(msh("ADT^A01", "X", "|||AL|NE")).none());
  CHECK_FALSE(hl7send::ack_request(msh("ADT^A01", "X", "|||ER|ER")).none());
}

TEST_CASE("hl7send: a folder of multi-message files is sent in name order and every message gets AA") {
  auto s = mllp_server();
  const std::uint16_t port = mllp_port(*s);
  const fs::path dir = test::temp_dir("hl7send-folder");
  // a.hl7: a BOM, a batch envelope and LF line ends; b.txt: CRLF and blank lines; sub/c.hl7.
  write(dir / "in" / "a.hl7",
        "\xEF\xBB\xBF"
        "FHS|^~\\&|PAS|RGT01\nBHS|^~\\&|PAS|RGT01\n" +
            with_lf(a01("F-1", nhs(101), "MRN-F1")) + with_lf(a01("F-2", nhs(102), "MRN-F2")) + "BTS|2\nFTS|1\n");
  write(dir / "in" / "b.txt",
        with_crlf(a01("F-3", nhs(103), "MRN-F3")) + "\r\n\r\n" + with_crlf(a01("F-4", nhs(104), "MRN-F4")));
  write(dir / "in" / "sub" / "c.hl7", a01("F-5", nhs(105), "MRN-F5"));

  test::ToolRun r = run_hl7send("--port " + std::to_string(port) + " " + (dir / "in").string());
  CHECK_MESSAGE(r.status == 0, (r.out + r.err));
  const std::vector<std::string> out = lines(r.out);
  REQUIRE(out.size() >= 5);
  // One line per message, in file-name order, each with its control id and AA.
  const char* expected[] = {"a.hl7#1  F-1  AA", "a.hl7#2  F-2  AA", "b.txt#1  F-3  AA", "b.txt#2  F-4  AA",
                            "c.hl7#1  F-5  AA"};
  for (int i = 0; i < 5; ++i)
    CHECK_MESSAGE(out[static_cast<std::size_t>(i)].find(expected[i]) != std::string::npos,
                  out[static_cast<std::size_t>(i)]);
  CHECK(line_of(r.out, "sent:").find(" 5 messages") != std::string::npos);
  CHECK(line_of(r.out, "AA/CA:").find(" 5") != std::string::npos);
  CHECK(line_of(r.out, "AE/CE:").find(" 0") != std::string::npos);
  CHECK(line_of(r.out, "no ACK:").find(" 0") != std::string::npos);
  CHECK(line_of(r.out, "mismatched:").find(" 0") != std::string::npos);
  CHECK(line_of(r.out, "latency p50/p99:").find("ms") != std::string::npos);

  // The gateway applied all five, each stored exactly as normalised (CR only, no BOM).
  const auto applied = stored(*s, store::MessageStatus::applied);
  REQUIRE(applied.size() == 5);
  for (const auto& m : applied) {
    auto full = s->app().store().message(m.id);
    REQUIRE(full.ok());
    REQUIRE(full->has_value());
    const std::string& raw = (*full)->raw;
    CHECK(raw.rfind("MSH|", 0) == 0);
    CHECK(raw.find('\n') == std::string::npos);
    CHECK(raw.back() == '\r');
    CHECK(raw.find("BHS") == std::string::npos);
  }

  // The same folder again: resends, answered with the original ACKs and not applied twice.
  r = run_hl7send("--quiet --port " + std::to_string(port) + " " + (dir / "in").string());
  CHECK_MESSAGE(r.status == 0, (r.out + r.err));
  CHECK(line_of(r.out, "AA/CA:").find(" 5") != std::string::npos);
  CHECK(line_of(r.out, "a.hl7#1") == "");  // --quiet: successes are not listed
  CHECK(stored(*s, store::MessageStatus::applied).size() == 5);
}

TEST_CASE("hl7send: a message the gateway rejects is reported with AR and its ERR, and fails the run") {
  auto s = mllp_server();
  const std::uint16_t port = mllp_port(*s);
  const fs::path dir = test::temp_dir("hl7send-reject");
  write(dir / "mixed.hl7", a01("R-1", nhs(201), "MRN-R1") + v3("R-2") + a01("R-3", nhs(203), "MRN-R3"));
  test::ToolRun r = run_hl7send("--port " + std::to_string(port) + " " + (dir / "mixed.hl7").string());
  CHECK_MESSAGE(r.status == 1, (r.out + r.err));
  const std::string rejected = line_of(r.out, "mixed.hl7#2");
  CHECK_MESSAGE(rejected.find("R-2  AR") != std::string::npos, rejected);
  CHECK(rejected.find("MSH-12") != std::string::npos);                        // where, from the ERR segment
  CHECK(rejected.find("[203]") != std::string::npos);                         // table 0357: unsupported version id
  CHECK(line_of(r.out, "mixed.hl7#3").find("R-3  AA") != std::string::npos);  // the run went on
  // An AA with warnings shows the first one, its location and text, without --json too.
  const std::string warned = line_of(r.out, "mixed.hl7#1");
  CHECK_MESSAGE(warned.find("R-1  AA") != std::string::npos, warned);
  CHECK_MESSAGE(warned.find("  warning: PV1-19  PV1-19: no visit number") != std::string::npos, warned);
  CHECK(line_of(r.out, "AA/CA:").find(" 2") != std::string::npos);
  CHECK(line_of(r.out, "AR/CR:").find(" 1") != std::string::npos);
  CHECK(stored(*s, store::MessageStatus::rejected).size() == 1);
}

TEST_CASE("hl7send: a message with a line that is not a segment is not sent, unless --drop-non-segments") {
  auto s = mllp_server();
  const std::uint16_t port = mllp_port(*s);
  const fs::path dir = test::temp_dir("hl7send-foreign");
  write(dir / "commented.txt", "/*\n * sample messages\n */\n" + a01("F-1", nhs(301), "MRN-F1") +
                                   "\n// *** Original message ver 2.1\n" + a01("F-2", nhs(302), "MRN-F2"));
  const std::string file = (dir / "commented.txt").string();
  test::ToolRun r = run_hl7send("--port " + std::to_string(port) + " " + file);
  CHECK_MESSAGE(r.status == 1, (r.out + r.err));
  // Named by its line in the file (8; the 5th line of message 1), so it can be found there.
  CHECK(r.err.find("commented.txt#1 (MSH-10 'F-1'): not sent: file line 8 '// *** Original message ver 2.1' is "
                   "not an HL7 segment") != std::string::npos);
  CHECK(r.err.find("--drop-non-segments") != std::string::npos);
  CHECK(line_of(r.out, "commented.txt#2").find("F-2  AA") != std::string::npos);  // the rest is sent
  CHECK(line_of(r.out, "not sent:").find(" 1") != std::string::npos);
  CHECK(stored(*s, store::MessageStatus::rejected).empty());  // the gateway never saw it
  CHECK(stored(*s, store::MessageStatus::applied).size() == 1);

  r = run_hl7send("--drop-non-segments --port " + std::to_string(port) + " " + file);
  CHECK_MESSAGE(r.status == 0, (r.out + r.err));
  CHECK(r.err.find("commented.txt#1 (MSH-10 'F-1'): dropped file line 8 '// *** Original message ver 2.1'") !=
        std::string::npos);
  CHECK(line_of(r.out, "commented.txt#1").find("F-1  AA") != std::string::npos);
  CHECK(stored(*s, store::MessageStatus::applied).size() == 2);
}

TEST_CASE("hl7send: a control id with escape sequences is echoed by the gateway and matches") {
  // MSH-10 "ID\F\X2" (an escaped field separator): the ACK used to carry "ID F X2".
  auto s = mllp_server();
  const std::uint16_t port = mllp_port(*s);
  const fs::path dir = test::temp_dir("hl7send-escaped-id");
  write(dir / "escaped.hl7", a01("ID\\F\\X2", nhs(211), "MRN-E1") + a01("ID^7", nhs(212), "MRN-E2"));
  test::ToolRun r = run_hl7send("--port " + std::to_string(port) + " " + (dir / "escaped.hl7").string());
  CHECK_MESSAGE(r.status == 0, (r.out + r.err));
  CHECK(line_of(r.out, "escaped.hl7#1").find("ID\\F\\X2  AA") != std::string::npos);
  CHECK(line_of(r.out, "escaped.hl7#2").find("ID^7  AA") != std::string::npos);
  CHECK(line_of(r.out, "mismatched:").find(" 0") != std::string::npos);
  // The MSA-2 sent is MSH-10 byte for byte.
  hl7send::ClientOptions o;
  o.port = port;
  hl7send::MllpClient client(o);
  const hl7send::SendResult again = client.send(a01("ID\\F\\X2", nhs(211), "MRN-E1"));
  REQUIRE(again.status == hl7send::SendStatus::acknowledged);
  REQUIRE(again.acks.size() == 1);
  CHECK(again.acks[0].control_id == "ID\\F\\X2");
  CHECK(again.acks[0].raw.find("\rMSA|AA|ID\\F\\X2\r") != std::string::npos);
}

TEST_CASE("hl7send: --json gives one parseable line per message with the ACK, its text and location") {
  auto s = mllp_server();
  const std::uint16_t port = mllp_port(*s);
  const fs::path dir = test::temp_dir("hl7send-json");
  write(dir / "three.hl7", a01("J-1", nhs(301), "MRN-J1") + a40_unknown("J-2", nhs(302)) + v3("J-3"));
  test::ToolRun r = run_hl7send("--json --port " + std::to_string(port) + " " + (dir / "three.hl7").string());
  CHECK_MESSAGE(r.status == 1, (r.out + r.err));
  const std::vector<fhir::Json> j = json_lines(r.out);  // stdout holds nothing but JSON
  REQUIRE(j.size() == 3);
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK(j[i].string_at("file") == (dir / "three.hl7").string());
    REQUIRE(j[i].find("index") != nullptr);
    CHECK(j[i].find("index")->as_int64() == static_cast<std::int64_t>(i + 1));
    CHECK(j[i].string_at("control_id") == "J-" + std::to_string(i + 1));
    CHECK(j[i].string_at("status") == "acknowledged");  // every MSA-2 echoed its MSH-10
    REQUIRE(j[i].find("latency_ms") != nullptr);
    CHECK(j[i].find("latency_ms")->is_number());
    REQUIRE(j[i].find("attempts") != nullptr);
    CHECK(j[i].find("attempts")->as_int64() == 1);
  }
  CHECK(j[0].string_at("ack_code") == "AA");
  // The AA carries the mapping's warning (ERR severity W): this A01 has no PV1-19.
  CHECK(j[0].string_at("text").rfind("PV1-19: no visit number", 0) == 0);
  CHECK(j[1].string_at("ack_code") == "AE");
  CHECK(j[1].string_at("text").find("prior identifiers") != std::string::npos);
  CHECK(j[1].string_at("error_code") == "204");  // not found
  CHECK(j[1].string_at("error_location") == "MRG-1");
  CHECK(j[2].string_at("ack_code") == "AR");
  CHECK(j[2].string_at("error_location") == "MSH-12");
  // The summary went to stderr.
  CHECK(line_of(r.err, "AE/CE:").find(" 1") != std::string::npos);
  CHECK(line_of(r.err, "AR/CR:").find(" 1") != std::string::npos);
}

TEST_CASE("hl7send: enhanced mode reads the accept and the application ACK; NE/NE waits for none") {
  auto s = mllp_server();
  const std::uint16_t port = mllp_port(*s);
  const fs::path dir = test::temp_dir("hl7send-enhanced");
  write(dir / "e.hl7", a01("E-1", nhs(401), "MRN-E1", "|||AL|AL") + a01("E-2", nhs(402), "MRN-E2", "|||NE|NE") +
                           a01("E-3", nhs(403), "MRN-E3", "|||AL|NE") + a01("E-4", nhs(404), "MRN-E4"));
  test::ToolRun r = run_hl7send("--json --port " + std::to_string(port) + " " + (dir / "e.hl7").string());
  CHECK_MESSAGE(r.status == 0, (r.out + r.err));
  const std::vector<fhir::Json> j = json_lines(r.out);
  REQUIRE(j.size() == 4);
  auto codes = [](const fhir::Json& x) {
    std::string out;
    for (const auto& c : x.find("ack_codes")->items()) out.append(out.empty() ? "" : ",").append(c.text());
    return out;
  };
  CHECK(codes(j[0]) == "CA,AA");
  CHECK(j[0].string_at("ack_code") == "AA");
  CHECK(j[1].string_at("status") == "not_requested");
  CHECK(codes(j[1]) == "");
  CHECK(codes(j[2]) == "CA");
  // The message after the NE/NE one got its own ACK, not a stray one.
  CHECK(codes(j[3]) == "AA");
  CHECK(j[3].string_at("control_id") == "E-4");
  CHECK(stored(*s, store::MessageStatus::applied).size() == 4);

  // A message committed but not applicable gets CA (HL7 table 0008), and with MSH-16 ER its AE
  // follows: read as the application ACK, not left to be mistaken for the next message's.
  std::string er = a40_unknown("E-5", nhs(405));
  er.insert(er.find('\r'), "|||AL|ER");
  write(dir / "er.hl7", er + a01("E-6", nhs(406), "MRN-E6"));
  r = run_hl7send("--json --port " + std::to_string(port) + " " + (dir / "er.hl7").string());
  CHECK_MESSAGE(r.status == 1, (r.out + r.err));
  const std::vector<fhir::Json> j2 = json_lines(r.out);
  REQUIRE(j2.size() == 2);
  CHECK(codes(j2[0]) == "CA,AE");
  CHECK(j2[0].string_at("ack_code") == "AE");
  CHECK(codes(j2[1]) == "AA");
  CHECK(j2[1].string_at("status") == "acknowledged");
}

TEST_CASE("hl7send: an ACK echoing another control id is a mismatch, and the next message uses a new connection") {
  ScriptedListener fake([](int, const std::string& frame) -> std::optional<std::string> {
    const std::string id = hl7v2::read_msh(frame).field(10);
    return ack_for(frame, id == "M-1" ? std::string("SOMEONE-ELSE") : id);
  });
  const fs::path dir = test::temp_dir("hl7send-mismatch");
  write(dir / "m.hl7", a01("M-1", nhs(501), "MRN-M1") + a01("M-2", nhs(502), "MRN-M2"));
  test::ToolRun r = run_hl7send("--port " + std::to_string(fake.port()) + " " + (dir / "m.hl7").string());
  CHECK_MESSAGE(r.status == 1, (r.out + r.err));
  const std::string first = line_of(r.out, "m.hl7#1");
  CHECK_MESSAGE(first.find("MISMATCH") != std::string::npos, first);
  CHECK(first.find("SOMEONE-ELSE") != std::string::npos);
  CHECK(line_of(r.out, "m.hl7#2").find("M-2  AA") != std::string::npos);
  CHECK(line_of(r.out, "mismatched:").find(" 1") != std::string::npos);
  CHECK(line_of(r.out, "AA/CA:").find(" 1") != std::string::npos);
  CHECK(fake.connections() == 2);  // nothing more was read on the connection out of step
}

TEST_CASE("hl7send: a dropped connection or silence is retried with the same bytes when --retries allows") {
  std::vector<std::string> received;
  std::mutex m;
  ScriptedListener fake([&](int connection, const std::string& frame) -> std::optional<std::string> {
    {
      std::lock_guard lock(m);
      received.push_back(frame);
    }
    if (connection == 0) return std::nullopt;   // drop the first connection unanswered
    if (connection == 1) return std::string();  // then say nothing at all
    return ack_for(frame, hl7v2::read_msh(frame).field(10));
  });
  const fs::path dir = test::temp_dir("hl7send-retry");
  const std::string message = a01("T-1", nhs(601), "MRN-T1");
  write(dir / "t.hl7", message);
  test::ToolRun r = run_hl7send("--json --retries 3 --timeout-ms 1000 --port " + std::to_string(fake.port()) + " " +
                      (dir / "t.hl7").string());
  CHECK_MESSAGE(r.status == 0, (r.out + r.err));
  const std::vector<fhir::Json> j = json_lines(r.out);
  REQUIRE(j.size() == 1);
  CHECK(j[0].string_at("ack_code") == "AA");
  CHECK(j[0].find("attempts")->as_int64() == 3);
  std::lock_guard lock(m);
  REQUIRE(received.size() == 3);
  for (const auto& f : received) CHECK(f == message);  // byte for byte the same each time

  // Without retries the silence is reported as no ACK.
  ScriptedListener mute([](int, const std::string&) -> std::optional<std::string> { return std::string(); });
  r = run_hl7send("--timeout-ms 200 --port " + std::to_string(mute.port()) + " " + (dir / "t.hl7").string());
  CHECK(r.status == 1);
  CHECK(line_of(r.out, "t.hl7#1").find("no ACK (timeout)") != std::string::npos);
  CHECK(line_of(r.out, "no ACK:").find(" 1") != std::string::npos);
}

TEST_CASE("hl7send: TLS with the gateway's CA, and parallel connections") {
  auto s = mllp_server(true);
  const std::uint16_t port = mllp_port(*s);
  const fs::path dir = test::temp_dir("hl7send-tls");
  std::string many;
  for (int i = 1; i <= 9; ++i) many += a01("P-" + std::to_string(i), nhs(700 + i), "MRN-P" + std::to_string(i));
  write(dir / "many.hl7", many);
  test::ToolRun r = run_hl7send("--tls --ca " + test::dev_certs().ca + " --connections 3 --port " + std::to_string(port) + " " +
                      (dir / "many.hl7").string());
  CHECK_MESSAGE(r.status == 0, (r.out + r.err));
  CHECK(line_of(r.out, "AA/CA:").find(" 9") != std::string::npos);
  CHECK(stored(*s, store::MessageStatus::applied).size() == 9);

  // A certificate the client cannot verify: nothing is sent, every message fails.
  r = run_hl7send("--tls --ca " + test::dev_certs().ca + " --server-name not-the-gateway.example --port " +
                  std::to_string(port) + " " + (dir / "many.hl7").string());
  CHECK(r.status == 1);
  CHECK(line_of(r.out, "many.hl7#1").find("not sent (connect_failed)") != std::string::npos);
  // Never written, so neither "sent" nor "no ACK": counted as not connected.
  CHECK(line_of(r.out, "sent:").find(" 0 messages") != std::string::npos);
  CHECK(line_of(r.out, "no ACK:").find(" 0") != std::string::npos);
  CHECK(line_of(r.out, "not connected:").find(" 9 (not sent: ") != std::string::npos);
}

TEST_CASE("hl7send: to a port nobody listens on, nothing counts as sent and the run fails naming why") {
  const fs::path dir = test::temp_dir("hl7send-closed");
  write(dir / "two.hl7", a01("C-1", nhs(810), "MRN-C1") + a01("C-2", nhs(811), "MRN-C2"));
  // A loopback port just released: nothing listens there.
  std::uint16_t closed = 0;
  {
    auto s = mllp_server();
    closed = mllp_port(*s);
  }
  test::ToolRun r = run_hl7send("--port " + std::to_string(closed) + " " + (dir / "two.hl7").string());
  CHECK_MESSAGE(r.status == 1, (r.out + r.err));
  CHECK_MESSAGE(line_of(r.out, "sent:").find(" 0 messages") != std::string::npos, r.out);
  CHECK(line_of(r.out, "two.hl7#1").find("C-1  not sent (connect_failed)") != std::string::npos);
  const std::string not_connected = line_of(r.out, "not connected:");
  CHECK_MESSAGE(not_connected.find(" 2 (not sent: ") != std::string::npos, r.out);
  CHECK(not_connected.find(std::to_string(closed)) != std::string::npos);  // the error names where
  CHECK(line_of(r.out, "no ACK:").find(" 0") != std::string::npos);
}

TEST_CASE("hl7send: usage errors exit 2 and --help exits 0") {
  const fs::path dir = test::temp_dir("hl7send-usage");
  write(dir / "one.hl7", a01("U-1", nhs(800), "MRN-U1"));
  write(dir / "empty.txt", "not hl7\n");
  const std::string one = (dir / "one.hl7").string();
  test::ToolRun help = run_hl7send("--help");
  CHECK(help.status == 0);
  CHECK(help.out.find("--retries") != std::string::npos);
  // It says what it does to the input.
  for (const char* says : {"byte order mark", "LF and CRLF line ends become CR", "blank lines are dropped",
                           "one starting at each line that begins with MSH", "not an HL7 segment",
                           "with the file line of that line",
                           "--drop-non-segments"}) {
    CAPTURE(says);
    CHECK(help.out.find(says) != std::string::npos);
  }
  CHECK(run_hl7send("").status == 2);                                 // no inputs
  CHECK(run_hl7send("/nonexistent/hl7send/input").status == 2);       // missing input
  CHECK(run_hl7send("--port 0 " + one).status == 2);                  // port out of range
  CHECK(run_hl7send("--ca " + one + " " + one).status == 2);          // --ca without --tls
  CHECK(run_hl7send("--tls --cert " + one + " " + one).status == 2);  // --cert without --key
  CHECK(run_hl7send("--connections 0 " + one).status == 2);
  test::ToolRun r = run_hl7send((dir / "empty.txt").string());
  CHECK(r.status == 2);
  CHECK(r.err.find("no HL7 v2 messages") != std::string::npos);
  CHECK(r.err.find("empty.txt: no HL7 v2 message") != std::string::npos);  // which file was skipped
}
