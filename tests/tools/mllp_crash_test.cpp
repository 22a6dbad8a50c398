// SPDX-License-Identifier: Apache-2.0
// Issue #4 item 9: durable MLLP ingest under kill -9. Four senders stream thousands of
// distinct HL7 v2 messages (ADT^A01, ADT^A08, ORU^R01 for a few hundred synthetic patients;
// a quarter in enhanced mode, acknowledged by CA) to the real fhir-gateway binary over MLLP,
// one message at a time per connection, resending the same bytes until acknowledged. The
// gateway is killed with SIGKILL at random (seeded, printed) points and restarted on the same
// data directory. Afterwards every acknowledged message is in store.db exactly once with
// status applied, no message is applied twice, every patient resolved to one identity, the
// three databases pass PRAGMA integrity_check, the audit log verifies, and each acknowledged
// message's resources are readable through the FHIR API after a restart. Set GW_MLLP_CRASH_SEED to replay a run's kill points.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <random>
#include <regex>
#include <set>
#include <thread>
#include <vector>

#include "fhir/nhs_number.h"
#include "gateway/audit/log.h"
#include "gateway/sqlite/database.h"
#include "support/certs.h"
#include "support/https_client.h"
#include "support/paths.h"
#include "support/process.h"

using namespace gw;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

constexpr std::size_t kMessages = 3000;
constexpr std::size_t kPatients = 300;
constexpr int kSenders = 4;
constexpr int kMaxAttempts = 400;                 // per message, connection failures included
constexpr milliseconds kAckTimeout{20000};        // far above a healthy gateway's ACK time
constexpr std::chrono::seconds kRunLimit{240};    // the whole streaming phase

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// ---- synthetic data ------------------------------------------------------------------------

// NHS Data Dictionary "NHS NUMBER": weights 10..2 on the first nine digits; the check digit is
// 11 minus the sum modulo 11 (11 -> 0); a result of 10 means no valid number has that prefix.
std::optional<char> modulus11(const std::string& nine) {
  int sum = 0;
  for (std::size_t i = 0; i < 9; ++i) sum += (nine[i] - '0') * static_cast<int>(10 - i);
  const int check = 11 - sum % 11;
  if (check == 10) return std::nullopt;
  return static_cast<char>('0' + (check == 11 ? 0 : check));
}

struct Patient {
  std::string nhs, mrn, family, given, birth_date, sex;
};

// `count` patients with NHS numbers in the 999 test range (never issued to real people).
std::vector<Patient> make_patients(std::size_t count) {
  static const char* const families[] = {"ASHWORTH", "BRENNAN", "CHOWDHURY", "DAVIES", "EVANS", "FLETCHER", "GREEN"};
  static const char* const givens[] = {"Amira", "Ben", "Ciara", "Dev", "Eleanor", "Femi", "Gwen", "Hamish"};
  std::vector<Patient> out;
  for (int k = 0; out.size() < count && k < 1000000; ++k) {
    char nine[16];
    std::snprintf(nine, sizeof nine, "999%06d", 100000 + k * 7);
    const auto check = modulus11(nine);
    if (!check) continue;
    Patient p;
    p.nhs = std::string(nine) + *check;
    p.mrn = "RGT" + std::to_string(5000000 + out.size());
    p.family = families[out.size() % 7];
    p.given = givens[out.size() % 8];
    char dob[16];
    std::snprintf(dob, sizeof dob, "19%02zu%02zu%02zu", 30 + out.size() % 60, 1 + out.size() % 12, 1 + out.size() % 28);
    p.birth_date = dob;
    p.sex = out.size() % 2 ? "F" : "M";
    out.push_back(std::move(p));
  }
  return out;
}

struct Outbound {
  std::string control_id;   // MSH-10, unique per message
  std::string dedupe_key;   // MSH-3|MSH-4|MSH-10 as the gateway stores it
  std::size_t patient = 0;
  std::string framed;       // <VT>message<FS><CR>
};

std::string pid_segment(const Patient& p) {
  std::string s = "PID|1||";
  s.append(p.nhs).append("^^^NHS^NH~").append(p.mrn).append("^^^RGT^MR||").append(p.family).append("^").append(p.given);
  s.append("||").append(p.birth_date).append("|").append(p.sex).append("|||");
  s.append("12 Mill Road^^Cambridge^Cambridgeshire^CB1 2AB^GBR^H\r");
  return s;
}

// Message i: ADT^A01 (new visit), ADT^A08 (demographics update) or ORU^R01 (a result).
Outbound make_message(std::size_t i, const std::vector<Patient>& patients, const std::string& run) {
  Outbound m;
  const int kind = static_cast<int>(i % 3);
  // Message i's patient depends on i modulo 300 (as many as there are patients), so all of a
  // patient's messages are one kind: a result goes to the patient of the A01s 148 messages on,
  // so that every patient has an Encounter at the hospital (the relationship its FHIR reads
  // need) and no two messages of one patient are sent close together.
  m.patient = ((kind == 2 ? i + 148 : i) * 7919) % patients.size();
  const Patient& p = patients[m.patient];
  m.control_id = "DUR" + run + "-" + std::to_string(i);
  char ts[32];
  std::snprintf(ts, sizeof ts, "202407%02zu%02zu%02zu00", 1 + i % 28, 8 + i % 10, i % 60);
  // Every fourth message asks for enhanced mode's accept acknowledgement only (MSH-15 AL,
  // MSH-16 NE): its CA, like an AA, may only come after the commit.
  const std::string modes = i % 4 == 3 ? "|||AL|NE" : "";
  std::string msg;
  if (kind < 2) {
    const char* trigger = kind == 0 ? "A01" : "A08";
    m.dedupe_key = "PAS|RGT01|" + m.control_id;
    msg.append("MSH|^~\\&|PAS|RGT01|GATEWAY|RGT01|").append(ts).append("||ADT^").append(trigger).append("^ADT_");
    msg.append(kind == 0 ? "A01" : "A08").append("|").append(m.control_id).append("|P|2.4").append(modes).append("\r");
    msg.append("EVN|").append(trigger).append("|").append(ts).append("\r");
    msg.append(pid_segment(p));
    msg.append("PV1|1|I|WARD 5^BAY 2^BED 4^RGT01||||C4567890^OKAFOR^CHIDI^^^Dr|||300|||||||||V");
    msg.append(m.control_id).append("^^^RGT01^VN|||||||||||||||||||||||||").append(ts).append("\r");
  } else {
    m.dedupe_key = "WINPATH|RGT01|" + m.control_id;
    msg.append("MSH|^~\\&|WINPATH|RGT01|GATEWAY|RGT01|").append(ts).append("||ORU^R01^ORU_R01|");
    msg.append(m.control_id).append("|P|2.4").append(modes).append("\r");
    msg.append(pid_segment(p));
    msg.append("ORC|RE|ORD").append(m.control_id).append("^EPR|LAB").append(m.control_id).append("^WINPATH\r");
    msg.append("OBR|1|ORD").append(m.control_id).append("^EPR|LAB").append(m.control_id);
    msg.append("^WINPATH|UE^Urea and electrolytes^WINPATH|||").append(ts).append("|||||||||||||||").append(ts);
    msg.append("||CH|F\r");
    msg.append("OBX|1|NM|NA^Sodium^WINPATH||").append(std::to_string(130 + i % 15)).append("|mmol/L|133-146|N|||F\r");
    msg.append("OBX|2|NM|K^Potassium^WINPATH||4.").append(std::to_string(i % 10)).append("|mmol/L|3.5-5.3|N|||F\r");
  }
  m.framed.reserve(msg.size() + 3);
  m.framed.push_back('\x0b');
  m.framed.append(msg);
  m.framed.append("\x1c\x0d");
  return m;
}

// ---- a minimal MLLP client (plain TCP, loopback) -------------------------------------------

class MllpConnection {
 public:
  ~MllpConnection() { close(); }
  bool open(std::uint16_t port) {
    close();
    if (port == 0) return false;
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return false;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      close();
      return false;
    }
    return true;
  }
  bool is_open() const { return fd_ >= 0; }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    buffer_.clear();
  }
  bool send(const std::string& bytes) {
    std::size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return false;
      done += static_cast<std::size_t>(n);
    }
    return true;
  }
  // The next frame's payload, or nullopt on close, error or timeout.
  std::optional<std::string> receive(milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    for (int rounds = 0; rounds < 100000; ++rounds) {
      const auto start = buffer_.find('\x0b');
      if (start != std::string::npos) {
        const auto end = buffer_.find("\x1c\x0d", start);
        if (end != std::string::npos) {
          std::string payload = buffer_.substr(start + 1, end - start - 1);
          buffer_.erase(0, end + 2);
          return payload;
        }
      }
      const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) return std::nullopt;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left)) <= 0) return std::nullopt;
      char buf[4096];
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) return std::nullopt;
      buffer_.append(buf, static_cast<std::size_t>(n));
      if (buffer_.size() > 1024 * 1024) return std::nullopt;  // no ACK is this large
    }
    return std::nullopt;
  }

 private:
  int fd_ = -1;
  std::string buffer_;
};

// MSA-1 and MSA-2 of an acknowledgement.
struct Ack {
  std::string code, control_id;
};
std::optional<Ack> read_ack(const std::string& payload) {
  std::size_t pos = 0;
  while (pos < payload.size()) {
    std::size_t end = payload.find('\r', pos);
    if (end == std::string::npos) end = payload.size();
    const std::string segment = payload.substr(pos, end - pos);
    if (segment.rfind("MSA|", 0) == 0) {
      std::vector<std::string> f;
      std::size_t b = 0;
      for (std::size_t e; (e = segment.find('|', b)) != std::string::npos; b = e + 1)
        f.push_back(segment.substr(b, e - b));
      f.push_back(segment.substr(b));
      if (f.size() < 3) return std::nullopt;
      return Ack{f[1], f[2]};
    }
    pos = end + 1;
  }
  return std::nullopt;
}

// ---- the gateway process -------------------------------------------------------------------

struct Gateway {
  pid_t pid = -1;
  std::uint16_t mllp_port = 0;
};

Gateway start_gateway(const std::string& config, const std::string& log_file) {
  const auto child = test::start_child_gateway(GATEWAY_BIN, config, log_file,
                                               "\"msg\":\"mllp listener started\"[^}]*\"port\":\"?([0-9]+)");
  return Gateway{child.pid, child.port};
}

int wait_exit(pid_t pid) { return test::wait_child_exit(pid); }

std::string integrity(const std::filesystem::path& db_path) {
  auto db = sqlite::Database::open(db_path.string(), sqlite::Database::Mode::read_only);
  if (!db) return "cannot open: " + db.issue().diagnostics;
  auto st = db->prepare("PRAGMA integrity_check");
  if (!st) return "cannot prepare: " + st.issue().diagnostics;
  std::string out;
  for (int i = 0; i < 100; ++i) {
    auto row = st->step();
    if (!row) return "step failed: " + row.issue().diagnostics;
    if (!*row) break;
    if (!out.empty()) out += "; ";
    out += st->column_text(0);
  }
  return out;
}

// What the senders saw, shared with the killer (atomics: written from the sender threads).
struct SendLog {
  std::vector<std::atomic<int>> acked;   // per message: 1 once an AA came back
  std::atomic<std::size_t> next{0}, acked_count{0}, sends{0}, connects_failed{0};
  std::atomic<std::size_t> ae{0}, ar{0}, mismatched{0}, unreadable{0}, gave_up{0};
  std::atomic<std::size_t> accepts{0};   // of acked_count: CA (enhanced mode), the rest AA
  std::atomic<int> senders_done{0};
  explicit SendLog(std::size_t n) : acked(n) {}
};

// One MLLP sender: takes the next message, sends it, waits for its ACK; after a timeout or a
// lost connection it reconnects (with backoff while the gateway is down) and resends the same
// bytes; after an AR it waits a little and resends. Every loop is bounded (attempts per
// message, a deadline for the run).
void sender(const std::vector<Outbound>& messages, const std::atomic<std::uint16_t>& port, SendLog& out,
            Clock::time_point deadline) {
  MllpConnection conn;
  for (std::size_t i; (i = out.next.fetch_add(1)) < messages.size();) {
    const Outbound& m = messages[i];
    bool done = false;
    int backoff_ms = 5;
    for (int attempt = 0; attempt < kMaxAttempts && !done && Clock::now() < deadline; ++attempt) {
      if (!conn.is_open() && !conn.open(port.load())) {
        ++out.connects_failed;
        std::this_thread::sleep_for(milliseconds(backoff_ms));
        backoff_ms = std::min(backoff_ms * 2, 200);
        continue;
      }
      ++out.sends;
      if (!conn.send(m.framed)) {
        conn.close();
        continue;
      }
      const auto payload = conn.receive(kAckTimeout);
      if (!payload) {
        conn.close();  // killed, closed or too slow: resend on a new connection
        continue;
      }
      const auto ack = read_ack(*payload);
      if (!ack) {
        ++out.unreadable;
        conn.close();
        continue;
      }
      if (ack->control_id != m.control_id) {
        ++out.mismatched;
        conn.close();
        continue;
      }
      backoff_ms = 5;
      if (ack->code == "AA" || ack->code == "CA") {
        out.acked[i] = 1;
        ++out.acked_count;
        out.accepts += ack->code == "CA" ? 1 : 0;
        done = true;
      } else if (ack->code == "AR" || ack->code == "CE") {
        ++out.ar;  // HL7 v2.5 ch. 2.9.2: the receiver is not able to take it now: resend later
        std::this_thread::sleep_for(milliseconds(20));
      } else {
        ++out.ae;  // not applied and not to be resent: recorded, the test fails on it
        done = true;
      }
    }
    if (!done) ++out.gave_up;
  }
  ++out.senders_done;
}

}  // namespace

TEST_CASE("MLLP crash: kill -9 while senders stream; every ACKed message is stored exactly once") {
  std::uint64_t seed = std::random_device{}();
  if (const char* s = std::getenv("GW_MLLP_CRASH_SEED"); s && *s) seed = std::strtoull(s, nullptr, 10);
  MESSAGE("seed " << seed << " (GW_MLLP_CRASH_SEED=" << seed << " replays these kill points)");
  std::mt19937_64 rng(seed);

  const auto patients = make_patients(kPatients);
  REQUIRE(patients.size() == kPatients);
  std::size_t valid_numbers = 0;
  for (const auto& p : patients) valid_numbers += fhir::is_valid_nhs_number(p.nhs) ? 1 : 0;
  REQUIRE(valid_numbers == kPatients);  // our Modulus 11 agrees with the gateway's

  const std::string run = std::to_string(seed % 100000);
  std::vector<Outbound> messages;
  messages.reserve(kMessages);
  for (std::size_t i = 0; i < kMessages; ++i) messages.push_back(make_message(i, patients, run));

  const auto dir = test::temp_dir("mllp-crash");
  const auto data = dir / "data";
  std::filesystem::create_directories(data);
  const auto& certs = test::dev_certs();
  const std::string config = (dir / "gateway.toml").string();
  std::ofstream(config) << "[server]\npublic_base_url = \"https://localhost:8443\"\nthreads = 2\n"
                        << "[server.https]\naddress = \"127.0.0.1\"\nport = 0\ncertificate = \"" << certs.server_cert
                        << "\"\nprivate_key = \"" << certs.server_key << "\"\n"
                        << "[storage]\ndata_dir = \"" << data.string() << "\"\n"
                        // The development principal acts for the hospital, whose encounters (July
                        // 2024, within the window) give it a relationship with each patient.
                        << "[auth]\nenabled = false\ndevelopment_organisation = \"RGT01\"\n"
                        << "encounter_window_days = 3650\n"
                        << "[audit]\nsigning_key = \"" << certs.audit_key << "\"\ncheckpoint_interval_s = 1\n"
                        << "[log]\naccess_log = false\n"
                        << "[store]\ningest_threads = 32\n"
                        << "[[source_systems]]\nods_code = \"RGT01\"\nname = \"cuh-pas\"\nadapter = \"hl7v2\"\n"
                        << "endpoint = \"127.0.0.1:0\"\n";

  int run_no = 1;
  auto log_path = [&] { return (dir / ("run" + std::to_string(run_no) + ".log")).string(); };
  Gateway g = start_gateway(config, log_path());
  std::atomic<std::uint16_t> port{g.mllp_port};

  // Kill points: after a seeded number of ACKs, plus a seeded delay of a few milliseconds so
  // the kill lands at different stages of the messages in flight.
  const int planned_kills = 3 + static_cast<int>(rng() % 3);
  std::vector<std::size_t> kill_after;
  for (int k = 0; k < planned_kills; ++k) kill_after.push_back(kMessages / 20 + rng() % (kMessages * 17 / 20));
  std::sort(kill_after.begin(), kill_after.end());

  SendLog log(kMessages);
  const auto started = Clock::now();
  const auto deadline = started + kRunLimit;
  std::vector<std::thread> senders;
  for (int t = 0; t < kSenders; ++t)
    senders.emplace_back([&messages, &port, &log, deadline] { sender(messages, port, log, deadline); });

  int kills = 0;
  std::size_t acked_at_restart = 0;
  for (std::size_t k = 0; k < kill_after.size(); ++k) {
    const std::size_t target = std::max(kill_after[k], acked_at_restart + 25);
    for (int i = 0; i < 24000 && log.acked_count < target && log.senders_done < kSenders; ++i)
      std::this_thread::sleep_for(milliseconds(5));
    if (log.senders_done == kSenders || log.acked_count < target) break;
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 20000));
    const std::size_t acked_before = log.acked_count;
    REQUIRE(::kill(g.pid, SIGKILL) == 0);
    const int status = wait_exit(g.pid);
    CHECK(WIFSIGNALED(status));
    port = 0;
    ++kills;
    MESSAGE("kill " << kills << ": after " << acked_before << " ACKs (point " << kill_after[k] << ")");
    std::this_thread::sleep_for(milliseconds(rng() % 300));  // senders find nobody listening
    ++run_no;
    g = start_gateway(config, log_path());
    port = g.mllp_port;
    acked_at_restart = log.acked_count;
  }
  for (auto& s : senders) s.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - started).count();

  // A clean stop after the last restart: drains and writes the final audit checkpoint.
  REQUIRE(::kill(g.pid, SIGTERM) == 0);
  const int status = wait_exit(g.pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);

  const std::size_t acked = log.acked_count;
  const std::size_t resends = log.sends - kMessages;
  CHECK(kills == planned_kills);
  CHECK(acked == kMessages);
  CHECK(log.accepts.load() == kMessages / 4);  // the enhanced-mode messages got CA, the others AA
  CHECK(log.gave_up.load() == 0);
  CHECK(log.ae.load() == 0);
  CHECK(log.mismatched.load() == 0);   // MSA-2 always echoed the MSH-10 sent
  CHECK(log.unreadable.load() == 0);

  // store.db: every acknowledged message exactly once as applied; none applied twice.
  std::map<std::string, std::size_t> index;  // dedupe key -> message
  for (std::size_t i = 0; i < messages.size(); ++i) index[messages[i].dedupe_key] = i;
  std::vector<int> applied(kMessages, 0);
  std::vector<std::set<std::string>> identities(kPatients);
  std::size_t unknown_rows = 0, failed_rows = 0;
  {
    auto db = sqlite::Database::open((data / "store.db").string(), sqlite::Database::Mode::read_only);
    REQUIRE_MESSAGE(db.ok(), (db.ok() ? std::string() : db.issue().diagnostics));
    auto st = db->prepare("SELECT dedupe_key, status, patient_id FROM message");
    REQUIRE(st.ok());
    for (std::size_t rows = 0; rows < 10 * kMessages; ++rows) {
      auto row = st->step();
      REQUIRE(row.ok());
      if (!*row) break;
      const auto it = index.find(st->column_text(0));
      if (it == index.end()) {
        ++unknown_rows;
        continue;
      }
      if (st->column_text(1) != "applied") {
        ++failed_rows;
        continue;
      }
      ++applied[it->second];
      identities[messages[it->second].patient].insert(st->column_text(2));
    }
  }
  std::size_t missing = 0, doubled = 0, split = 0;
  for (std::size_t i = 0; i < kMessages; ++i) {
    missing += log.acked[i] && applied[i] == 0 ? 1 : 0;
    doubled += applied[i] > 1 ? 1 : 0;
  }
  for (const auto& ids : identities) split += ids.size() > 1 ? 1 : 0;
  CHECK_MESSAGE(missing == 0, missing << " acknowledged messages are not stored as applied");
  CHECK_MESSAGE(doubled == 0, doubled << " messages are stored as applied more than once");
  CHECK_MESSAGE(split == 0, split << " patients resolved to more than one patient id");
  CHECK(unknown_rows == 0);
  CHECK_MESSAGE(failed_rows == 0, failed_rows << " valid messages stored with status error or rejected");

  // Through the FHIR API of the gateway started once more on the same data: every
  // acknowledged message's resources are readable (an ADT's Encounter by its visit number V<id>,
  // an ORU's DiagnosticReport by its filler number LAB<id>), found by the patient's NHS number.
  {
    ++run_no;
    const auto child = test::start_child_gateway(GATEWAY_BIN, config, log_path(),
                                                 "\"msg\":\"listening\",\"scheme\":\"https\"[^}]*\"port\":\"?([0-9]+)");
    test::ClientOptions opts;
    opts.ca_file = certs.ca;
    opts.timeout = std::chrono::milliseconds(10000);
    opts.close_wait = std::chrono::milliseconds(0);
    std::size_t unreadable = 0, failed_reads = 0;
    for (std::size_t p = 0; p < kPatients; ++p) {
      if (identities[p].empty()) continue;  // sent nothing
      std::string bodies;
      for (const char* type : {"Encounter", "DiagnosticReport"}) {
        const auto r = test::get(child.port,
                                 std::string("/") + type + "?patient:identifier=https://fhir.nhs.uk/Id/nhs-number%7C" +
                                     patients[p].nhs + "&_count=200",
                                 opts);
        if (r.status != 200) ++failed_reads;
        bodies += r.body;
      }
      for (std::size_t i = 0; i < kMessages; ++i) {
        if (messages[i].patient != p || !log.acked[i]) continue;
        const std::string key = (i % 3 < 2 ? "\"V" : "\"LAB") + messages[i].control_id + "\"";
        if (bodies.find(key) == std::string::npos) ++unreadable;
      }
    }
    CHECK_MESSAGE(failed_reads == 0, failed_reads << " FHIR searches did not answer 200");
    CHECK_MESSAGE(unreadable == 0, unreadable << " acknowledged messages have no resource readable through the FHIR API");
    REQUIRE(::kill(child.pid, SIGTERM) == 0);
    const int stopped = wait_exit(child.pid);
    CHECK(WIFEXITED(stopped));
  }

  for (const char* name : {"store.db", "locator.db", "audit.db"}) {
    INFO(name);
    CHECK(integrity(data / name) == "ok");
  }

  // The audit log verifies offline against its checkpoint file ...
  const std::string cmd = std::string(AUDIT_VERIFY_BIN) + " --db " + (data / "audit.db").string() + " --checkpoints " +
                          (data / "audit-checkpoints.log").string() + " --key " + certs.audit_pub_key + " > " +
                          (dir / "verify.out").string() + " 2>&1";
  const int rc = std::system(cmd.c_str());
  CHECK_MESSAGE(WIFEXITED(rc), slurp((dir / "verify.out").string()));
  CHECK_MESSAGE(WEXITSTATUS(rc) == 0, slurp((dir / "verify.out").string()));

  // ... and names every acknowledged message (applied, or a resend answered from the store).
  std::size_t duplicates_answered = 0, unaudited = 0, applied_twice_audited = 0;
  {
    audit::LogOptions lo;
    lo.path = (data / "audit.db").string();
    lo.checkpoint_file = (data / "audit-checkpoints.log").string();
    auto alog = audit::Log::open(lo, nullptr);
    REQUIRE_MESSAGE(alog.ok(), (alog.ok() ? std::string() : alog.issue().diagnostics));
    std::map<std::string, int> applied_records, duplicate_records;
    for (const char* subtype : {"ingest-applied", "ingest-duplicate"}) {
      audit::Query q;
      q.subtype = subtype;
      q.count = 1000000;
      q.newest_first = false;
      auto page = (*alog)->search(q);
      REQUIRE(page.ok());
      auto& into = std::string(subtype) == "ingest-applied" ? applied_records : duplicate_records;
      for (const auto& r : page->records) {
        const auto space = r.target.rfind(' ');
        ++into[space == std::string::npos ? r.target : r.target.substr(space + 1)];
      }
    }
    (*alog)->stop();
    for (const auto& [key, n] : duplicate_records) duplicates_answered += static_cast<std::size_t>(n);
    for (const auto& m : messages) {
      if (!log.acked[index[m.dedupe_key]]) continue;
      if (applied_records[m.dedupe_key] + duplicate_records[m.dedupe_key] == 0) ++unaudited;
      if (applied_records[m.dedupe_key] > 1) ++applied_twice_audited;
    }
  }
  CHECK_MESSAGE(unaudited == 0, unaudited << " acknowledged messages have no ingest audit record");
  CHECK(applied_twice_audited == 0);

  MESSAGE("messages " << kMessages << ", acknowledged " << acked << ", kills " << kills << ", sends "
                      << log.sends.load() << ", resends " << resends << ", AR answers " << log.ar.load()
                      << ", refused connects " << log.connects_failed.load() << ", duplicates answered "
                      << duplicates_answered << ", " << seconds << " s");
}
