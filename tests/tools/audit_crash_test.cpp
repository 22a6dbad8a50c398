// SPDX-License-Identifier: Apache-2.0
// Issue #6 item 7: kill -9 under load. The real fhir-gateway binary serves Patient reads from
// several client threads; it is killed with SIGKILL mid-load, restarted on the same data
// directory (which also checks the stored tree against the checkpoint file), and stopped
// cleanly. Every response that came back 2xx must have its audit record, and audit-verify
// must accept the log. The same with forwarding to a SIEM: every record reaches it at least
// once across a receiver restart and a kill -9 of the gateway.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <regex>
#include <set>
#include <thread>
#include <vector>

#include "gateway/audit/log.h"
#include "gateway/locator/sqlite_locator.h"
#include "gateway/sqlite/database.h"
#include "support/certs.h"
#include "support/https_client.h"
#include "support/paths.h"
#include "support/process.h"
#include "support/seed.h"
#include "support/syslog_receiver.h"
#include "support/tokens.h"

using namespace gw;

namespace {

struct Gateway {
  pid_t pid = -1;
  std::uint16_t port = 0;
  std::string log_file;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Starts the gateway with `config`; waits (bounded) for its "listening" line.
// A gateway configuration in `dir` over the data directory `data`: HTTPS on a free loopback port,
// the test tokens' JWKS, audit checkpoints every second, no access log.
std::string write_config(const std::filesystem::path& dir, const std::filesystem::path& data, int threads) {
  const auto& certs = test::dev_certs();
  const std::string config = (dir / "gateway.toml").string();
  std::ofstream(config) << "[server]\npublic_base_url = \"https://localhost:8443\"\nthreads = " << threads << "\n"
                        << "[server.https]\naddress = \"127.0.0.1\"\nport = 0\ncertificate = \"" << certs.server_cert
                        << "\"\nprivate_key = \"" << certs.server_key << "\"\n"
                        << "[storage]\ndata_dir = \"" << data.string() << "\"\n"
                        << "[auth]\njwks_file = \"" << test::test_tokens().jwks_path << "\"\n"
                        << "[audit]\nsigning_key = \"" << certs.audit_key << "\"\ncheckpoint_interval_s = 1\n"
                        << "[log]\naccess_log = false\n";
  return config;
}

Gateway start_gateway(const std::string& config, const std::string& log_file) {
  const auto child = test::start_child_gateway(GATEWAY_BIN, config, log_file,
                                               "\"msg\":\"listening\",\"scheme\":\"https\"[^}]*\"port\":\"?([0-9]+)");
  return Gateway{child.pid, child.port, log_file};
}

int wait_exit(pid_t pid) { return test::wait_child_exit(pid); }

}  // namespace

TEST_CASE("Audit crash: kill -9 under load loses no audit record of a 2xx response; the log verifies") {
  const auto dir = test::temp_dir("audit-crash");
  const auto data = dir / "data";
  std::filesystem::create_directories(data);
  std::vector<test::Seeded> patients;
  {
    auto loc = locator::open_sqlite_locator((data / "locator.db").string(), {});
    REQUIRE(loc.ok());
    for (int i = 0; i < 20; ++i) patients.push_back(test::add_patient(**loc, 100 + i, "Crash", "A81001"));
  }
  const auto& certs = test::dev_certs();
  const std::string config = write_config(dir, data, 2);

  Gateway g = start_gateway(config, (dir / "run1.log").string());
  test::TokenClaims gp;
  gp.org = "A81001";
  const std::string auth = test::test_tokens().header(gp);
  test::ClientOptions opts;
  opts.ca_file = certs.ca;
  opts.timeout = std::chrono::milliseconds(3000);
  opts.close_wait = std::chrono::milliseconds(0);

  std::mutex mu;
  std::vector<std::string> ok_ids;  // X-Request-ID of every 2xx response
  std::atomic<int> failures{0};
  std::atomic<bool> killed{false};
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&, t] {
      for (int i = 0; i < 3000 && failures.load() < 50; ++i) {
        const auto& p = patients[static_cast<std::size_t>((t * 7 + i) % patients.size())];
        const std::string id = "crash-" + std::to_string(t) + "-" + std::to_string(i);
        auto ex = test::exchange(g.port,
                                 "GET /Patient/" + p.id + " HTTP/1.1\r\nHost: localhost\r\nX-Request-ID: " + id +
                                     "\r\n" + auth + "Connection: close\r\n\r\n",
                                 1, opts);
        if (ex.responses.empty()) {
          ++failures;
          if (killed) break;
          continue;
        }
        if (ex.responses[0].status / 100 == 2) {
          std::lock_guard lock(mu);
          ok_ids.push_back(id);
        }
      }
    });
  }
  // Kill once a good number of responses have been acknowledged, while requests are in flight.
  for (int i = 0; i < 600; ++i) {
    {
      std::lock_guard lock(mu);
      if (ok_ids.size() >= 300) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  REQUIRE(::kill(g.pid, SIGKILL) == 0);
  killed = true;
  int status = wait_exit(g.pid);
  CHECK(WIFSIGNALED(status));
  for (auto& c : clients) c.join();
  const std::size_t acknowledged = ok_ids.size();
  MESSAGE("2xx responses before the kill: " << acknowledged);
  REQUIRE(acknowledged >= 300);

  // Restart: the log reopens (tree checked against its checkpoints), then a clean stop.
  Gateway g2 = start_gateway(config, (dir / "run2.log").string());
  auto again = test::exchange(g2.port, "GET /Patient/" + patients[0].id + " HTTP/1.1\r\nHost: localhost\r\n" + auth +
                                           "Connection: close\r\n\r\n", 1, opts);
  REQUIRE(again.responses.size() == 1);
  CHECK(again.responses[0].status == 200);
  REQUIRE(::kill(g2.pid, SIGTERM) == 0);
  status = wait_exit(g2.pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);

  // Every acknowledged read has exactly one audit record.
  {
    audit::LogOptions lo;
    lo.path = (data / "audit.db").string();
    lo.checkpoint_file = (data / "audit-checkpoints.log").string();
    auto log = audit::Log::open(lo, nullptr);
    REQUIRE_MESSAGE(log.ok(), log.issue().diagnostics);
    audit::Query q;
    q.count = 1000000;
    q.newest_first = false;
    auto page = (*log)->search(q);
    REQUIRE(page.ok());
    std::multiset<std::string> audited;
    for (const auto& r : page->records) audited.insert(r.request_id);
    std::size_t missing = 0, duplicated = 0;
    for (const auto& id : ok_ids) {
      missing += audited.count(id) == 0;
      duplicated += audited.count(id) > 1;
    }
    CHECK(missing == 0);
    CHECK(duplicated == 0);
    (*log)->stop();
  }

  // And the offline verifier accepts the log against the checkpoint file.
  const std::string cmd = std::string(AUDIT_VERIFY_BIN) + " --db " + (data / "audit.db").string() + " --checkpoints " +
                          (data / "audit-checkpoints.log").string() + " --key " + certs.audit_pub_key + " > " +
                          (dir / "verify.out").string() + " 2>&1";
  const int rc = std::system(cmd.c_str());
  CHECK_MESSAGE(WIFEXITED(rc), slurp((dir / "verify.out").string()));
  CHECK_MESSAGE(WEXITSTATUS(rc) == 0, slurp((dir / "verify.out").string()));
}

// Issue #6 item 5 as an operator meets it: the real gateway forwards to a SIEM (an in-test
// RFC 5425 receiver) while clients stream audited reads. The SIEM is down at first; when it
// comes up, its first session crashes in the middle of the backlog (dropping what its TCP had
// accepted); later it crashes outright and comes back; then the gateway is killed with SIGKILL,
// restarted on the same data, and at last stopped cleanly (which drains). Every record in audit.db reaches the SIEM at least once,
// each in a well-formed octet-counted RFC 5424 frame whose MSG is the stored record itself.
TEST_CASE("Audit forwarding: a receiver restart and a kill -9 of the gateway lose no record on the way to the SIEM") {
  const auto dir = test::temp_dir("audit-forward-crash");
  const auto data = dir / "data";
  std::filesystem::create_directories(data);
  std::vector<test::Seeded> patients;
  {
    auto loc = locator::open_sqlite_locator((data / "locator.db").string(), {});
    REQUIRE(loc.ok());
    for (int i = 0; i < 5; ++i) patients.push_back(test::add_patient(**loc, 400 + i, "Forward", "A81001"));
  }
  const auto& certs = test::dev_certs();
  // The SIEM's port, with nothing listening on it yet.
  std::uint16_t siem_port = 0;
  {
    test::Receiver probe(test::ReceiverOptions{});
    siem_port = probe.port();
  }
  const std::string config = write_config(dir, data, 2);
  std::ofstream(config, std::ios::app) << "[audit.forward]\nenabled = true\nhost = \"127.0.0.1\"\nport = " << siem_port
                                       << "\nca_file = \"" << certs.ca << "\"\nresend_window_s = 1\n"
                                       << "poll_interval_ms = 20\nbackoff_min_ms = 20\nbackoff_max_s = 1\n";

  Gateway g = start_gateway(config, (dir / "run1.log").string());
  std::atomic<std::uint16_t> port{g.port};
  test::TokenClaims gp;
  gp.org = "A81001";
  const std::string auth = test::test_tokens().header(gp);
  test::ClientOptions opts;
  opts.ca_file = certs.ca;
  opts.timeout = std::chrono::milliseconds(3000);
  opts.close_wait = std::chrono::milliseconds(0);
  std::atomic<int> ok{0};
  std::atomic<bool> done{false};
  std::vector<std::thread> clients;
  for (int t = 0; t < 2; ++t) {
    clients.emplace_back([&, t] {
      for (int i = 0; i < 20000 && !done; ++i) {
        const auto& p = patients[static_cast<std::size_t>((t + i) % patients.size())];
        auto ex = test::exchange(port.load(), "GET /Patient/" + p.id + " HTTP/1.1\r\nHost: localhost\r\n" + auth +
                                                  "Connection: close\r\n\r\n", 1, opts);
        if (!ex.responses.empty() && ex.responses[0].status == 200) ++ok;
        else std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    });
  }
  // Waits (bounded) until `more` further reads have succeeded.
  const auto reads = [&ok](int more) {
    const int target = ok.load() + more;
    for (int i = 0; i < 3000 && ok.load() < target; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return ok.load() >= target;
  };
  std::vector<std::string> received;  // every message every receiver got
  int framing_errors = 0, syntax_errors = 0;
  std::unique_ptr<test::Receiver> rx;
  const auto crash_receiver = [&] {
    rx->stop();  // the session is reset, the port closed
    const auto m = rx->messages();
    received.insert(received.end(), m.begin(), m.end());
    framing_errors += rx->framing_errors();
    syntax_errors += rx->syntax_errors();
  };

  CHECK(reads(100));  // served while the SIEM is down: the records wait in audit.db
  // The SIEM comes up and takes the backlog in one burst, but its first session crashes after
  // 20 messages: what its TCP had accepted beyond them is lost, and must be sent again.
  test::ReceiverOptions first;
  first.port = siem_port;
  first.reset_first_session_after = 20;
  rx = std::make_unique<test::Receiver>(first);
  CHECK(reads(100));
  crash_receiver();  // and later it crashes outright, mid-stream
  CHECK(reads(50));
  test::ReceiverOptions back;
  back.port = siem_port;
  rx = std::make_unique<test::Receiver>(back);
  CHECK(reads(100));
  REQUIRE(::kill(g.pid, SIGKILL) == 0);
  int status = wait_exit(g.pid);
  CHECK(WIFSIGNALED(status));
  Gateway g2 = start_gateway(config, (dir / "run2.log").string());
  port = g2.port;
  CHECK(reads(100));
  done = true;
  for (auto& c : clients) c.join();
  REQUIRE(::kill(g2.pid, SIGTERM) == 0);
  status = wait_exit(g2.pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  crash_receiver();
  CHECK(framing_errors == 0);
  CHECK(syntax_errors == 0);

  std::map<std::uint64_t, std::string> got;  // seq -> MSG (the same bytes each time it came)
  std::size_t mismatched = 0;
  for (const std::string& text : received) {
    const test::Syslog m = test::parse_5424(text);
    const auto seq = std::strtoull(m.param("seq").c_str(), nullptr, 10);
    const auto [it, fresh] = got.emplace(seq, m.msg);
    if (!fresh && it->second != m.msg) ++mismatched;
  }
  CHECK(mismatched == 0);
  std::size_t records = 0, missing = 0, altered = 0;
  {
    auto db = sqlite::Database::open((data / "audit.db").string(), sqlite::Database::Mode::read_only);
    REQUIRE(db.ok());
    auto st = db->prepare("SELECT seq, record FROM audit_record ORDER BY seq");
    REQUIRE(st.ok());
    for (std::size_t i = 0; i < 1000000; ++i) {
      auto row = st->step();
      REQUIRE(row.ok());
      if (!*row) break;
      ++records;
      const auto it = got.find(static_cast<std::uint64_t>(st->column_int64(0)));
      if (it == got.end()) ++missing;
      else if (it->second != "\xEF\xBB\xBF" + st->column_blob(1)) ++altered;
    }
  }
  MESSAGE("records " << records << ", messages received " << received.size() << " (" << got.size() << " distinct)");
  CHECK(records >= 400);
  CHECK_MESSAGE(missing == 0, missing << " audit records never reached the SIEM");
  CHECK_MESSAGE(altered == 0, altered << " records reached the SIEM with other bytes than stored");
}

TEST_CASE("Audit: a second gateway on the same data directory exits 2 and leaves the running one intact") {
  const auto dir = test::temp_dir("audit-second-instance");
  const auto data = dir / "data";
  std::filesystem::create_directories(data);
  test::Seeded p;
  {
    auto loc = locator::open_sqlite_locator((data / "locator.db").string(), {});
    REQUIRE(loc.ok());
    p = test::add_patient(**loc, 300, "Twice", "A81001");
  }
  const auto& certs = test::dev_certs();
  const std::string config = write_config(dir, data, 1);
  Gateway g = start_gateway(config, (dir / "first.log").string());
  test::TokenClaims gp;
  gp.org = "A81001";
  const std::string auth = test::test_tokens().header(gp);
  test::ClientOptions opts;
  opts.ca_file = certs.ca;
  auto read = [&] {
    auto ex = test::exchange(g.port, "GET /Patient/" + p.id + " HTTP/1.1\r\nHost: localhost\r\n" + auth +
                                         "Connection: close\r\n\r\n", 1, opts);
    REQUIRE_MESSAGE(ex.responses.size() == 1, ex.error);
    return ex.responses[0].status;
  };
  REQUIRE(read() == 200);

  // Bounded: a gateway that did start (port 0 is always free) would otherwise run on.
  test::ToolRun second = test::run_tool("timeout", "20 " + std::string(GATEWAY_BIN) + " --config " + config);
  CHECK(second.status == 2);
  CHECK(second.err.find(data.string()) != std::string::npos);
  CHECK(second.err.find("pid " + std::to_string(g.pid)) != std::string::npos);
  // The refused gateway wrote nothing: the first one's audited requests still commit.
  for (int i = 0; i < 3; ++i) CHECK(read() == 200);

  REQUIRE(::kill(g.pid, SIGTERM) == 0);
  const int status = wait_exit(g.pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  audit::LogOptions lo;
  lo.path = (data / "audit.db").string();
  auto log = audit::Log::open(lo, nullptr);
  REQUIRE_MESSAGE(log.ok(), log.issue().diagnostics);
  audit::Query q;
  q.count = 1000;
  q.newest_first = false;
  auto page = (*log)->search(q);
  REQUIRE(page.ok());
  int starts = 0, reads = 0;
  for (const auto& r : page->records) {
    starts += r.action == "start";
    reads += r.action == "read" && r.status == 200;
  }
  CHECK(starts == 1);
  CHECK(reads == 4);
  (*log)->stop();
}
