// SPDX-License-Identifier: Apache-2.0
// gw-messages, run as an operator would, against the store.db of a running gateway (gw::App
// in-process, its MLLP listener fed by the shared MLLP client): errored and rejected messages
// listed and shown, an errored merge replayed after the fix and its row marked 'replayed',
// statistics, one source per replay, and usage errors.
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "adapters/hl7v2/hl7v2_adapter.h"
#include "fhir/json.h"
#include "fhir/nhs_number.h"
#include "gateway/sqlite/database.h"
#include "support/certs.h"
#include "support/paths.h"
#include "support/process.h"
#include "support/test_server.h"
#include "tools/hl7send/mllp_client.h"

using namespace gw;
namespace fs = std::filesystem;

namespace {

constexpr const char* kPas = "rgt-pas";
constexpr const char* kLab = "rgt-lab";

// Runs gw-messages with `args` (shell-quoted by the caller); stdout and stderr apart.
test::ToolRun gw_messages(const std::string& args) { return test::run_tool(GW_MESSAGES_BIN, args); }

std::string nhs(int serial) { return test::test_nhs_number(serial); }

std::string msh(const std::string& type, const std::string& control, const std::string& version = "2.4") {
  return "MSH|^~\\&|PAS|RGT01|GW|GW|20261123101500||" + type + "|" + control + "|P|" + version + "\r";
}

// A40: the record holding `prior_mrn` is merged into the patient of PID-3.
std::string a40(const std::string& control, const std::string& nhs_number, const std::string& prior_mrn) {
  return msh("ADT^A40^ADT_A39", control) + "EVN|A40|20261123101500\r" + "PID|1||" + nhs_number +
         "^^^NHS^NH~MRN-KEEP^^^RGT01^MR||OKAFOR^ADA||19700101|F\r" + "MRG|" + prior_mrn + "^^^RGT01^MR\r";
}

// An admission of a patient known only by the trust's MRN (no NHS number yet).
std::string a01_mrn_only(const std::string& control, const std::string& mrn) {
  return msh("ADT^A01^ADT_A01", control) + "EVN|A01|20261123101500\r" + "PID|1||" + mrn +
         "^^^RGT01^MR||MENSAH^KOFI||19520304|M\r" + "PV1|1|I|WARD3^BED1^^RGT01|||||||||||||||V-" + control + "\r";
}

// A version the gateway does not take: rejected.
std::string v3(const std::string& control) { return msh("ADT^A01^ADT_A01", control, "3.0") + "EVN|A01|20261123\r"; }

std::unique_ptr<test::TestServer> mllp_server(std::vector<std::string> names = {kPas}) {
  return std::make_unique<test::TestServer>([names](config::Config& c) {
    for (const auto& name : names) {
      config::SourceSystemConfig s;
      s.ods_code = name == kPas ? "RGT01" : "RGT02";
      s.name = name;
      s.adapter = "hl7v2";
      s.endpoint = "127.0.0.1:0";
      c.source_systems.push_back(s);
    }
  });
}

// Frames the listener of source `name` has received.
std::uint64_t mllp_frames(test::TestServer& s, const std::string& name) {
  auto* a = dynamic_cast<hl7v2::Hl7v2Adapter*>(s.app().adapter(name));
  REQUIRE(a != nullptr);
  return a->stats().frames;
}

std::uint16_t mllp_port(test::TestServer& s, const std::string& name) {
  auto* a = dynamic_cast<hl7v2::Hl7v2Adapter*>(s.app().adapter(name));
  REQUIRE(a != nullptr);
  REQUIRE(a->port() != 0);
  return a->port();
}

hl7send::SendResult send(std::uint16_t port, const std::string& message) {
  hl7send::ClientOptions o;
  o.port = port;
  hl7send::MllpClient client(o);
  return client.send(message);
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

std::string line_of(const std::string& text, const std::string& label) {
  auto at = text.find(label);
  if (at == std::string::npos) return {};
  return text.substr(at, text.find('\n', at) - at);
}

// The whole line holding `needle`.
std::string line_with(const std::string& text, const std::string& needle) {
  const auto at = text.find(needle);
  if (at == std::string::npos) return {};
  const auto begin = text.rfind('\n', at);
  const auto from = begin == std::string::npos ? 0 : begin + 1;
  return text.substr(from, text.find('\n', at) - from);
}

std::int64_t id_of(const fhir::Json& row) {
  const fhir::Json* id = row.find("id");
  REQUIRE(id != nullptr);
  REQUIRE(id->as_int64().has_value());
  return *id->as_int64();
}

}  // namespace

TEST_CASE("gw-messages: an errored merge is listed, shown, replayed after the fix, and its row marked replayed") {
  auto s = mllp_server();
  const std::uint16_t port = mllp_port(*s, kPas);
  const std::string data = "--data " + s->cfg.data_dir;
  const std::string merge = a40("MERGE-1", nhs(1), "MRN-OLD");

  // A merge naming a record nobody holds yet: AE, stored as an error. And one rejected message.
  hl7send::SendResult r = send(port, merge);
  REQUIRE(r.status == hl7send::SendStatus::acknowledged);
  CHECK(r.code() == "AE");
  r = send(port, v3("REJ-1"));
  CHECK(r.code() == "AR");

  // list: the failed ones by default, with status and error.
  test::ToolRun list = gw_messages("list " + data);
  CHECK_MESSAGE(list.status == 0, (list.out + list.err));
  const std::string merge_line = line_with(list.out, "ADT^A40");
  CHECK_MESSAGE(merge_line.find(kPas) != std::string::npos, list.out);
  CHECK(merge_line.find("error") != std::string::npos);
  CHECK(merge_line.find("prior identifiers") != std::string::npos);
  CHECK(line_with(list.out, "ADT^A01").find("rejected") != std::string::npos);
  CHECK(line_with(list.out, "ADT^A01").find("MSH-12") != std::string::npos);
  CHECK(line_with(list.out, "ADT^A01").find(kPas) != std::string::npos);
  CHECK(list.out.find("2 message(s)") != std::string::npos);

  test::ToolRun errors = gw_messages("list --status error --json " + data);
  REQUIRE(errors.status == 0);
  std::vector<fhir::Json> rows = json_lines(errors.out);
  REQUIRE(rows.size() == 1);
  const std::int64_t errored_id = id_of(rows[0]);
  CHECK(rows[0].string_at("status") == "error");
  CHECK(rows[0].string_at("kind") == "ADT^A40");
  CHECK(rows[0].string_at("control_id") == "MERGE-1");
  CHECK(rows[0].string_at("source") == kPas);
  CHECK(rows[0].string_at("error").find("prior identifiers") != std::string::npos);
  // The ACK names MRG-1 (hl7send_test); the row keeps the ingest service's own name for the
  // part at fault (today "retired"), recorded before the adapter translates it.
  CHECK(rows[0].string_at("error_location") == "MRG-1");  // the sender's location, as in the ACK
  CHECK(rows[0].string_at("received").size() == 24);  // 2026-11-23T10:15:00.123Z

  // show: the fields and the message, one segment per line; --raw: the exact bytes.
  test::ToolRun show = gw_messages("show " + data + " " + std::to_string(errored_id));
  CHECK_MESSAGE(show.status == 0, show.err);
  CHECK(line_of(show.out, "status:").find("error") != std::string::npos);
  CHECK(line_of(show.out, "control id:").find("MERGE-1") != std::string::npos);
  CHECK(line_of(show.out, "error:").find("prior identifiers") != std::string::npos);
  CHECK(show.out.find("\nMRG|MRN-OLD^^^RGT01^MR\n") != std::string::npos);
  CHECK(show.out.find('\r') == std::string::npos);
  // The AE sent is kept with the row and shown, its ERR included, as an applied message's AA is.
  CHECK(show.out.find("reply sent:") != std::string::npos);
  CHECK(show.out.find("\nMSA|AE|MERGE-1|") != std::string::npos);
  CHECK(show.out.find("\nERR|MRG^1^1^204&") != std::string::npos);
  // So is a rejection's AR.
  const auto rejected_rows = json_lines(gw_messages("list --status rejected --json " + data).out);
  REQUIRE(rejected_rows.size() == 1);
  test::ToolRun show_rejected = gw_messages("show " + data + " " + std::to_string(id_of(rejected_rows[0])));
  CHECK(show_rejected.out.find("reply sent:") != std::string::npos);
  CHECK(show_rejected.out.find("\nMSA|AR|") != std::string::npos);
  CHECK_MESSAGE(line_with(show_rejected.out, "ERR|").find("MSH^1^12") != std::string::npos, show_rejected.out);
  test::ToolRun raw = gw_messages("show --raw " + data + " " + std::to_string(errored_id));
  CHECK(raw.status == 0);
  CHECK(raw.out == merge);

  // The fix: the record the merge names arrives.
  r = send(port, a01_mrn_only("FIX-1", "MRN-OLD"));
  CHECK(r.code() == "AA");

  // Replay the errored messages: applied now.
  test::ToolRun replay = gw_messages("replay " + data + " --status error --port " + std::to_string(port));
  CHECK_MESSAGE(replay.status == 0, (replay.out + replay.err));
  CHECK(line_of(replay.out, "id " + std::to_string(errored_id)).find("MERGE-1  AA") != std::string::npos);
  CHECK(line_of(replay.out, "replayed:").find(" 1") != std::string::npos);
  CHECK(line_of(replay.out, "AA/CA:").find(" 1") != std::string::npos);

  // The original row is now 'replayed'; no error is left; the merge is applied.
  test::ToolRun replayed = gw_messages("list --status replayed --json " + data);
  rows = json_lines(replayed.out);
  REQUIRE(rows.size() == 1);
  CHECK(id_of(rows[0]) == errored_id);
  CHECK(rows[0].string_at("status") == "replayed");
  CHECK(gw_messages("list --status error " + data).out.find("0 message(s)") != std::string::npos);
  test::ToolRun applied = gw_messages("list --status applied --json " + data);
  rows = json_lines(applied.out);
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].string_at("control_id") == "FIX-1");
  CHECK(rows[1].string_at("control_id") == "MERGE-1");
  CHECK(id_of(rows[1]) > errored_id);

  // Nothing errored is left to replay.
  test::ToolRun again = gw_messages("replay " + data + " --status error --port " + std::to_string(port));
  CHECK(again.status == 0);
  CHECK(again.out.find("no messages to replay") != std::string::npos);

  // A rejected message replayed unchanged is rejected again: reported, exit 1.
  test::ToolRun rej = gw_messages("replay " + data + " --status rejected --port " + std::to_string(port));
  CHECK(rej.status == 1);
  CHECK(line_of(rej.out, "REJ-1").find("AR") != std::string::npos);
  CHECK(line_of(rej.out, "AR/CR:").find(" 1") != std::string::npos);
  // Each replay that fails again updates the message's one failed row: none piles up.
  rej = gw_messages("replay " + data + " --status rejected --port " + std::to_string(port));
  CHECK(rej.status == 1);
  rows = json_lines(gw_messages("list --status rejected --json " + data).out);
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].string_at("control_id") == "REJ-1");
  CHECK(rows[0].string_at("error_location") == "MSH-12");

  // stats: A40 replayed; A01 and A40 applied; the rejected message once, however often replayed.
  test::ToolRun st = gw_messages("stats " + data);
  CHECK_MESSAGE(st.status == 0, st.err);
  CHECK(line_of(st.out, "messages:").find(" 4") != std::string::npos);
  CHECK(line_of(st.out, "applied:").find(" 2") != std::string::npos);
  CHECK(line_of(st.out, "rejected:").find(" 1") != std::string::npos);
  CHECK(line_of(st.out, "replayed:").find(" 1") != std::string::npos);
  CHECK(line_of(st.out, "error:").find(" 0") != std::string::npos);
  CHECK(line_of(st.out, "oldest received:").find("Z") != std::string::npos);
  test::ToolRun stj = gw_messages("stats --json " + data);
  rows = json_lines(stj.out);
  REQUIRE(rows.size() == 1);
  const fhir::Json* by_source = rows[0].find("by_source");
  REQUIRE(by_source != nullptr);
  const fhir::Json* pas = by_source->find(kPas);
  REQUIRE(pas != nullptr);
  CHECK(pas->find("applied")->as_int64() == 2);
  CHECK(pas->find("replayed")->as_int64() == 1);
}

TEST_CASE("gw-messages: a replayed message that asks for no ACK (MSH-15/16 NE/NE) is reported as such, exit 0") {
  auto s = mllp_server();
  const std::uint16_t port = mllp_port(*s, kPas);
  const std::string data = "--data " + s->cfg.data_dir;
  // A merge nobody can apply yet, sent asking for no acknowledgement: stored as an error.
  std::string merge = a40("MERGE-NE", nhs(2), "MRN-NONE");
  merge.replace(merge.find("|P|2.4\r"), 7, "|P|2.4|||NE|NE\r");
  const hl7send::SendResult r = send(port, merge);
  CHECK(r.status == hl7send::SendStatus::not_requested);
  std::vector<fhir::Json> rows;
  for (int i = 0; i < 50 && rows.empty(); ++i) {  // no ACK to wait for: poll until it is stored
    rows = json_lines(gw_messages("list --status error --json " + data).out);
    if (rows.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  REQUIRE(rows.size() == 1);

  test::ToolRun replay = gw_messages("replay " + data + " --status error --port " + std::to_string(port));
  CHECK_MESSAGE(replay.status == 0, (replay.out + replay.err));
  CHECK(line_of(replay.out, "MERGE-NE").find("no ACK asked for") != std::string::npos);
  CHECK(line_of(replay.out, "no ACK:").find(" 0") != std::string::npos);
  CHECK(line_of(replay.out, "no ACK asked for:").find(" 1") != std::string::npos);
}

TEST_CASE("gw-messages: an applied message's mapping warnings are listed and shown") {
  auto s = mllp_server();
  const std::uint16_t port = mllp_port(*s, kPas);
  const std::string data = "--data " + s->cfg.data_dir;
  // EVN-2 and PID-7 are no dates: applied without them, with two warnings.
  const std::string a01 = msh("ADT^A01^ADT_A01", "WARN-1") + "EVN|A01|yesterday\r" +
                          "PID|1||MRN-W^^^RGT01^MR||MENSAH^KOFI||12312321|M\r" +
                          "PV1|1|I|WARD3^BED1^^RGT01|||||||||||||||V-WARN-1\r";
  const hl7send::SendResult r = send(port, a01);
  CHECK(r.status == hl7send::SendStatus::acknowledged);
  const auto rows = json_lines(gw_messages("list --status applied --json " + data).out);
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].string_at("error_location") == "PID-7");
  test::ToolRun show = gw_messages("show " + data + " " + std::to_string(id_of(rows[0])));
  CHECK_MESSAGE(show.status == 0, show.err);
  CHECK(line_of(show.out, "warnings:").find("PID-7: not a valid HL7 date") != std::string::npos);
  CHECK(line_with(show.out, "EVN-2: not a valid HL7 date/time").rfind("                EVN-2", 0) == 0);
  CHECK(show.out.find("error:") == std::string::npos);
  // The reply stored (and shown) carries them as ERR segments (v2.4: ERR-1 repeating).
  CHECK(show.out.find("\nERR|PID^1^7^0&PID-7: not a valid HL7 date") != std::string::npos);
}

TEST_CASE("gw-messages: list pages by id and filters by source; replay takes one source at a time") {
  auto s = mllp_server({kPas, kLab});
  const std::uint16_t pas = mllp_port(*s, kPas), lab = mllp_port(*s, kLab);
  const std::string data = "--data " + s->cfg.data_dir;
  CHECK(send(pas, v3("P-1")).code() == "AR");
  CHECK(send(lab, v3("L-1")).code() == "AR");
  CHECK(send(pas, v3("P-2")).code() == "AR");

  test::ToolRun page = gw_messages("list --limit 2 --json " + data);
  std::vector<fhir::Json> rows = json_lines(page.out);
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].string_at("control_id") == "P-1");
  CHECK(rows[1].string_at("control_id") == "L-1");
  test::ToolRun text = gw_messages("list --limit 2 " + data);
  CHECK(text.out.find("more may follow: --after-id " + std::to_string(id_of(rows[1]))) != std::string::npos);
  test::ToolRun next = gw_messages("list --json --after-id " + std::to_string(id_of(rows[1])) + " " + data);
  rows = json_lines(next.out);
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].string_at("control_id") == "P-2");
  rows = json_lines(gw_messages("list --json --source " + std::string(kLab) + " " + data).out);
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].string_at("control_id") == "L-1");

  // Two sources selected: refused before anything is sent (each has its own port).
  test::ToolRun mixed = gw_messages("replay " + data + " --status failed --port " + std::to_string(pas));
  CHECK(mixed.status == 2);
  CHECK(mixed.err.find("2 sources") != std::string::npos);
  CHECK(mixed.err.find("--source") != std::string::npos);
  // --id of another source's message with --source: refused too.
  test::ToolRun wrong = gw_messages(
      "replay " + data + " --source " + std::string(kPas) + " --id " +
      std::to_string(id_of(json_lines(gw_messages("list --json --source " + std::string(kLab) + " " + data).out)[0])) +
      " --port " + std::to_string(pas));
  CHECK(wrong.status == 2);
  // A dry run lists; one source replays.
  test::ToolRun dry = gw_messages("replay " + data + " --dry-run --status rejected --source " + std::string(kLab) + " --port " +
                        std::to_string(lab));
  CHECK(dry.status == 0);
  CHECK(line_of(dry.out, "L-1").find("would be sent") != std::string::npos);
  test::ToolRun one = gw_messages("replay " + data + " --json --status rejected --source " + std::string(kLab) + " --port " +
                        std::to_string(lab));
  CHECK(one.status == 1);  // rejected again
  rows = json_lines(one.out);
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].string_at("control_id") == "L-1");
  CHECK(rows[0].string_at("ack_code") == "AR");
  CHECK(rows[0].string_at("error_location") == "MSH-12");
  CHECK(line_of(one.err, "AR/CR:").find(" 1") != std::string::npos);
}

TEST_CASE("gw-messages: a missing store, an unknown id and bad arguments are clear errors") {
  const fs::path empty = test::temp_dir("gw-messages-empty");
  test::ToolRun missing = gw_messages("list --data " + empty.string());
  CHECK(missing.status == 2);
  CHECK(missing.err.find("no message store at " + (empty / "store.db").string() +
                         " (is --data the gateway's data directory?)") != std::string::npos);
  CHECK(gw_messages("stats --data " + empty.string()).status == 2);

  auto s = mllp_server();
  const std::string data = "--data " + s->cfg.data_dir;
  test::ToolRun unknown = gw_messages("show " + data + " 999999");
  CHECK(unknown.status == 1);
  CHECK(unknown.err.find("no message with id 999999") != std::string::npos);
  // Ids start at 1, and the error says so (not "Value 0 not in range 0.000000 to 1.79e308").
  for (const std::string& command : {"show " + data + " 0", "replay " + data + " --id 0 --port 2575"}) {
    test::ToolRun zero = gw_messages(command);
    CHECK(zero.status == 2);
    CHECK_MESSAGE(zero.err.find("'0' is not a message id: ids are whole numbers from 1") != std::string::npos, zero.err);
    CHECK(zero.err.find("not in range") == std::string::npos);
  }
  test::ToolRun no_selection = gw_messages("replay " + data + " --port 2575");
  CHECK(no_selection.status == 2);
  CHECK(no_selection.err.find("--id N or --status") != std::string::npos);
  CHECK(gw_messages("replay " + data + " --id 1 --status error --port 2575").status == 2);
  CHECK(gw_messages("list --status sideways " + data).status == 2);
  CHECK(gw_messages("").status == 2);
  test::ToolRun help = gw_messages("--help");
  CHECK(help.status == 0);
  CHECK(help.out.find("replay") != std::string::npos);
  test::ToolRun replay_help = gw_messages("replay --help");
  CHECK(replay_help.status == 0);
  CHECK(replay_help.out.find("--tls") != std::string::npos);
  // An empty store: stats says so.
  test::ToolRun st = gw_messages("stats " + data);
  CHECK(st.status == 0);
  CHECK(line_of(st.out, "messages:").find(" 0") != std::string::npos);
}

TEST_CASE("gw-messages: replay sends to the source's own port from --config, refuses another source's, needs --port without") {
  auto s = mllp_server({kPas, kLab});
  const std::uint16_t pas = mllp_port(*s, kPas), lab = mllp_port(*s, kLab);
  const std::string data = "--data " + s->cfg.data_dir;
  CHECK(send(lab, v3("L-9")).code() == "AR");
  const std::string lab_id =
      std::to_string(id_of(json_lines(gw_messages("list --json --source " + std::string(kLab) + " " + data).out)[0]));

  // The gateway's configuration file, as the operator has it: both listeners' endpoints.
  const fs::path dir = test::temp_dir("gw-messages-config");
  fs::create_directories(dir / "certs");
  std::ofstream(dir / "certs" / "jwks.json") << "{\"keys\":[]}";
  std::ofstream(dir / "certs" / "audit-key.pem") << "placeholder";
  const auto& certs = test::dev_certs();
  std::ofstream(dir / "gateway.toml")
      << "[server.https]\ncertificate = \"" << certs.server_cert << "\"\nprivate_key = \"" << certs.server_key
      << "\"\n[storage]\ndata_dir = \"" << s->cfg.data_dir << "\"\n"
      << "[[source_systems]]\nods_code = \"RGT\"\nname = \"" << kPas << "\"\nadapter = \"hl7v2\"\nendpoint = \"127.0.0.1:"
      << pas << "\"\n"
      << "[[source_systems]]\nods_code = \"RGT02\"\nname = \"" << kLab << "\"\nadapter = \"hl7v2\"\nendpoint = \"127.0.0.1:"
      << lab << "\"\n";
  const std::string config = "--config " + (dir / "gateway.toml").string();

  // Without --config the port must be given: no silent default.
  test::ToolRun no_port = gw_messages("replay " + data + " --id " + lab_id);
  CHECK(no_port.status == 2);
  CHECK(no_port.err.find("give --port, the MLLP port of source 'rgt-lab''s listener") != std::string::npos);
  // With it: --data and the port come from the configuration; the run says where it sends.
  test::ToolRun own = gw_messages("replay " + config + " --id " + lab_id);
  CHECK(own.status == 1);  // rejected again (v2.3), but by the right listener
  CHECK_MESSAGE(own.out.find("replaying 1 message from source 'rgt-lab' to 127.0.0.1:" + std::to_string(lab)) !=
                    std::string::npos,
                (own.out + own.err));
  CHECK(line_of(own.out, "AR/CR:").find(" 1") != std::string::npos);
  // Another source's port is refused before anything is sent, unless forced.
  const auto before = mllp_frames(*s, kPas);
  test::ToolRun other = gw_messages("replay " + config + " --id " + lab_id + " --port " + std::to_string(pas));
  CHECK(other.status == 2);
  CHECK(other.err.find("is the listener of source 'rgt-pas', not of 'rgt-lab'") != std::string::npos);
  CHECK(mllp_frames(*s, kPas) == before);
  test::ToolRun forced =
      gw_messages("replay " + config + " --id " + lab_id + " --port " + std::to_string(pas) + " --force-port");
  CHECK(forced.out.find("from source 'rgt-lab' to 127.0.0.1:" + std::to_string(pas)) != std::string::npos);
  CHECK(mllp_frames(*s, kPas) == before + 1);
  // A port that is none of this gateway's listeners (another gateway's, perhaps) is refused
  // too, unless forced.
  test::ToolRun elsewhere = gw_messages("replay " + config + " --id " + lab_id + " --port 1");
  CHECK(elsewhere.status == 2);
  CHECK(elsewhere.err.find("port 1 is not the MLLP port of source 'rgt-lab'") != std::string::npos);
  CHECK(elsewhere.out.find("replaying") == std::string::npos);
  test::ToolRun elsewhere_forced =
      gw_messages("replay " + config + " --id " + lab_id + " --port 1 --force-port");
  CHECK(elsewhere_forced.out.find("from source 'rgt-lab' to 127.0.0.1:1") != std::string::npos);
  // Without --config, the line says which source and which port too.
  test::ToolRun given = gw_messages("replay " + data + " --id " + lab_id + " --port " + std::to_string(lab));
  CHECK(given.out.find("replaying 1 message from source 'rgt-lab' to 127.0.0.1:" + std::to_string(lab)) !=
        std::string::npos);
}

TEST_CASE("gw-messages: a pending message (committed, its ACK perhaps not sent) is listed, shown, counted and "
          "replayed as pending") {
  auto s = mllp_server();
  const std::uint16_t port = mllp_port(*s, kPas);
  const std::string data = "--data " + s->cfg.data_dir;
  REQUIRE(send(port, a01_mrn_only("PEND-1", "MRN-P1")).status == hl7send::SendStatus::acknowledged);
  REQUIRE(send(port, a01_mrn_only("PEND-2", "MRN-P2")).status == hl7send::SendStatus::acknowledged);
  // Each mark is cleared just after its ACK, in the next store.db commit or alone within 10 ms
  // (docs/hl7v2.md): wait, at most 5 s, for both to be settled.
  std::vector<fhir::Json> rows;
  for (int i = 0; i < 500; ++i) {
    rows = json_lines(gw_messages("list --status applied --json " + data).out);
    if (rows.size() == 2 && !rows[0].find("pending")->as_bool() && !rows[1].find("pending")->as_bool()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  REQUIRE(rows.size() == 2);
  CHECK(rows[1].find("pending")->as_bool() == false);
  CHECK(rows[0].find("pending")->as_bool() == false);
  // The state a message is left in when its audit record cannot be confirmed (docs/hl7v2.md
  // "When a database cannot commit"): set here directly on the first one.
  const std::int64_t first = id_of(rows[0]);
  {
    auto db = sqlite::Database::open(s->cfg.data_dir + "/store.db");
    REQUIRE(db.ok());
    REQUIRE(db->exec("UPDATE message SET pending = 1 WHERE id = " + std::to_string(first)).ok());
  }
  rows = json_lines(gw_messages("list --status applied --json " + data).out);
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].find("pending")->as_bool() == true);
  CHECK(rows[1].find("pending")->as_bool() == false);
  CHECK(rows[0].string_at("status") == "applied");
  const std::string table = gw_messages("list --status applied " + data).out;
  CHECK(line_with(table, "ADT^A01").find("pending") != std::string::npos);
  test::ToolRun show = gw_messages("show " + data + " " + std::to_string(first));
  CHECK_MESSAGE(show.status == 0, show.err);
  CHECK(line_of(show.out, "pending:").find("its acknowledgement may not have been sent") != std::string::npos);
  CHECK(line_of(show.out, "pending:").find("gw-messages replay --id " + std::to_string(first)) != std::string::npos);
  CHECK(show.out.find("never acknowledged") == std::string::npos);
  CHECK(gw_messages("show " + data + " " + std::to_string(id_of(rows[1]))).out.find("pending:") == std::string::npos);
  test::ToolRun stats = gw_messages("stats --json " + data);
  REQUIRE_MESSAGE(stats.status == 0, stats.err);
  auto counted = fhir::parse_json(stats.out);
  REQUIRE(counted.ok());
  CHECK(counted->find("pending")->as_int64() == 1);
  const std::string counted_line = line_of(gw_messages("stats " + data).out, "pending:");
  CHECK(counted_line.find(" 1 ") != std::string::npos);
  CHECK(counted_line.find("may not have been sent") != std::string::npos);
  CHECK(counted_line.find("never acknowledged") == std::string::npos);
  // --status pending: only the pending one, in list and in replay.
  test::ToolRun listed = gw_messages("list --status pending --json " + data);
  REQUIRE_MESSAGE(listed.status == 0, listed.err);
  rows = json_lines(listed.out);
  REQUIRE(rows.size() == 1);
  CHECK(id_of(rows[0]) == first);
  test::ToolRun replayed =
      gw_messages("replay --status pending " + data + " --port " + std::to_string(port));
  CHECK_MESSAGE(replayed.status == 0, (replayed.out + replayed.err));
  CHECK(replayed.out.find("replaying 1 message from source") != std::string::npos);
  // Its ingest-applied record is in audit.db: answered as a duplicate, its mark cleared.
  bool cleared = false;
  for (int i = 0; i < 500 && !cleared; ++i) {
    cleared = json_lines(gw_messages("list --status pending --json " + data).out).empty();
    if (!cleared) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(cleared);
}
