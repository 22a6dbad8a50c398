// SPDX-License-Identifier: Apache-2.0
// The audit forwarder (gateway/audit/forwarder.h) against an in-test RFC 5425 receiver on
// 127.0.0.1: strict octet-counting framing, RFC 5424 syntax, byte-identical records, at least
// once across receiver resets and restarts, certificate checks, the persisted cursor, and
// truncation of oversized records.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <regex>
#include <set>
#include <thread>

#include "gateway/audit/forwarder.h"
#include "gateway/audit/log.h"
#include "gateway/audit/merkle.h"
#include "gateway/sqlite/database.h"
#include "gateway/store/databases.h"
#include "gateway/store/store.h"
#include "support/certs.h"
#include "support/paths.h"
#include "support/stderr_capture.h"
#include "support/syslog_receiver.h"
#include "support/test_server.h"

using namespace gw;
using namespace gw::audit;
using namespace std::chrono_literals;

namespace {

using test::next_frame;
using test::parse_5424;
using test::Receiver;
using test::ReceiverOptions;
using test::Syslog;

// --- helpers --------------------------------------------------------------------------------

template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = 30s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return pred();
}

Record access(int i) {
  Record r;
  r.time_ms = 1'790'000'000'000 + i * 1000;
  r.kind = "rest";
  r.action = "read";
  r.method = "GET";
  r.target = "/Patient/9000000009";
  r.route = "/Patient/{id}";
  r.status = i % 9 == 8 ? 404 : 200;
  r.agent_kind = "user";
  r.user = "dr-" + std::to_string(i % 5);
  r.role = "clinician";
  r.organisation = "A81001";
  r.detail.patients = {"9000000009"};
  r.detail.basis = "registered-practice";
  return r;
}

struct AuditDb {
  std::string path;
  std::unique_ptr<Log> log;
  explicit AuditDb(const char* name) : path((test::temp_dir(name) / "audit.db").string()) {
    LogOptions o;
    o.path = path;
    o.rules.out_of_hours = false;
    auto l = Log::open(o, nullptr);
    REQUIRE_MESSAGE(l.ok(), (l.ok() ? "" : l.issue().diagnostics));
    log = std::move(*l);
  }
  void append(int from, int to) {
    for (int i = from; i < to; ++i) {
      Record r = access(i);
      auto seq = log->append_sync(std::move(r));
      REQUIRE(seq.ok());
      REQUIRE(*seq == static_cast<std::uint64_t>(i));
    }
  }
  std::string stored(std::uint64_t seq) const {
    auto db = sqlite::Database::open(path, sqlite::Database::Mode::read_only);
    REQUIRE(db.ok());
    auto st = db->prepare("SELECT record FROM audit_record WHERE seq = ?1");
    REQUIRE(st.ok());
    st->bind(1, static_cast<std::int64_t>(seq));
    auto row = st->step();
    REQUIRE((row.ok() && *row));
    return st->column_blob(0);
  }
  std::optional<std::uint64_t> cursor(const std::string& name) const {
    auto db = sqlite::Database::open(path, sqlite::Database::Mode::read_only);
    REQUIRE(db.ok());
    auto st = db->prepare("SELECT seq FROM audit_forward_cursor WHERE name = ?1");
    REQUIRE(st.ok());
    st->bind(1, name);
    auto row = st->step();
    REQUIRE(row.ok());
    if (!*row) return std::nullopt;
    return static_cast<std::uint64_t>(st->column_int64(0));
  }
};

ForwarderOptions options_for(const AuditDb& db, std::uint16_t port) {
  ForwarderOptions o;
  o.database = db.path;
  o.host = "127.0.0.1";
  o.port = port;
  o.ca_file = test::dev_certs().ca;
  o.hostname = "gw-test-host";
  o.poll_interval = 50ms;
  o.resend_window = 300ms;
  o.backoff_min = 20ms;
  o.backoff_max = 300ms;
  o.io_timeout = 3s;
  o.drain_timeout = 5s;
  return o;
}

std::unique_ptr<Forwarder> start(ForwarderOptions o) {
  auto f = Forwarder::start(std::move(o));
  REQUIRE_MESSAGE(f.ok(), (f.ok() ? "" : f.issue().diagnostics));
  return std::move(*f);
}

std::set<std::uint64_t> range_set(std::uint64_t n) {
  std::set<std::uint64_t> s;
  for (std::uint64_t i = 0; i < n; ++i) s.insert(i);
  return s;
}

std::uint16_t free_port() {
  Receiver probe(ReceiverOptions{});
  const auto p = probe.port();
  probe.stop();
  return p;
}

// A certificate made with the openssl CLI (as certs/make-dev-certs does), in `dir`.
void openssl(const std::string& args) {
  const std::string cmd = "openssl " + args + " >/dev/null 2>&1";
  REQUIRE_MESSAGE(std::system(cmd.c_str()) == 0, cmd);
}

}  // namespace

TEST_CASE("Forwarder: 500 records arrive in order over mutual TLS, each MSG byte-identical to the stored record") {
  AuditDb db("fwd-order");
  ReceiverOptions ro;
  ro.client_ca = test::dev_certs().ca;
  Receiver rx(ro);
  ForwarderOptions o = options_for(db, rx.port());
  o.host = "localhost";  // DNS-name verification this time
  o.client_certificate = test::dev_certs().client_cert;
  o.client_key = test::dev_certs().client_key;
  o.batch_size = 64;
  auto f = start(o);
  for (int chunk = 0; chunk < 10; ++chunk) {
    db.append(chunk * 50, chunk * 50 + 50);
    f->notify();
  }
  // stop() drains: what was committed before it is sent, and the clean close (the receiver's
  // close_notify comes after it has read everything) confirms it.
  f->stop();

  const auto seqs = rx.seqs();
  REQUIRE(seqs.size() == 500);
  for (std::uint64_t i = 0; i < 500; ++i) CHECK(seqs[i] == i);
  const auto msgs = rx.messages();
  int bad = 0;
  for (std::uint64_t i = 0; i < 500; ++i) {
    const Syslog s = parse_5424(msgs[i]);
    const std::string stored = db.stored(i);
    const bool ok = s.error.empty() && s.msgid == "audit" && s.app_name == "fhir-gateway" &&
                    s.hostname == "gw-test-host" && s.sd_id == "fhirgw@32473" && s.param("seq") == std::to_string(i) &&
                    s.param("leaf") == merkle::to_hex(merkle::leaf_hash(stored)) &&
                    s.msg == std::string("\xEF\xBB\xBF") + stored && s.params.count("truncated") == 0;
    if (!ok) ++bad;
  }
  CHECK(bad == 0);
  // Facility authpriv (10); severity 6 for a success, 4 for the 404s.
  CHECK(parse_5424(msgs[0]).pri == 10 * 8 + 6);
  CHECK(parse_5424(msgs[8]).pri == 10 * 8 + 4);
  CHECK(parse_5424(msgs[0]).timestamp == format_time_ms(access(0).time_ms));
  CHECK(parse_5424(msgs[3]).param("user") == "dr-3");
  CHECK(parse_5424(msgs[3]).param("patient") == "9000000009");
  CHECK(rx.framing_errors() == 0);
  CHECK(rx.syntax_errors() == 0);
  CHECK(rx.clean_closes() == 1);  // stop() closed with close_notify both ways
  const ForwarderStats st = f->stats();
  CHECK(st.sent == 500);
  CHECK(st.resent == 0);
  CHECK(st.connects == 1);
  CHECK(st.cursor == 500);
  CHECK(st.saved_cursor == 500);  // stop() saved it
  CHECK(db.cursor("siem") == std::optional<std::uint64_t>(500));
}

TEST_CASE("Forwarder: a receiver reset and a receiver restart lose nothing; duplicates carry their seq") {
  AuditDb db("fwd-restart");
  const std::uint16_t port = free_port();
  ReceiverOptions ro;
  ro.port = port;
  ro.reset_first_session_after = 60;  // reads 60, then resets with the rest accepted by TCP but unread
  auto rx1 = std::make_unique<Receiver>(ro);
  db.append(0, 150);
  ForwarderOptions o = options_for(db, port);
  o.resend_window = 1s;
  auto f = start(o);
  REQUIRE(eventually([&] { return rx1->distinct().size() >= 150; }));
  CHECK(rx1->sessions() >= 2);
  // How the forwarder counts the session it lost (disconnects, resent) depends on timing (the
  // reset can land mid-write or between writes); what it must do does not: the records the
  // reset session read are delivered again (duplicates > 0 below) and none is lost.

  // The receiver goes down; records keep coming; the forwarder keeps trying.
  rx1->stop();
  const auto received_by_rx1 = rx1->seqs();
  const auto failures_before = f->stats().connect_failures;
  db.append(150, 250);
  f->notify();
  REQUIRE(eventually([&] { return f->stats().connect_failures >= failures_before + 2; }));
  CHECK(f->stats().cursor <= 250);

  // Back on the same port: everything after the cursor is sent again.
  ReceiverOptions ro2;
  ro2.port = port;
  Receiver rx2(ro2);
  REQUIRE(eventually([&] {
    auto got = rx2.distinct();
    got.insert(received_by_rx1.begin(), received_by_rx1.end());
    return got.size() >= 250;
  }));
  db.append(250, 260);
  f->notify();
  REQUIRE(eventually([&] { return rx2.distinct().count(259) == 1; }));
  // Still connected: the cursor moves once the session has stayed healthy for resend_window.
  REQUIRE(eventually([&] { return f->stats().cursor == 260; }));
  CHECK(f->stats().connected);
  REQUIRE(eventually([&] { return db.cursor("siem") == std::optional<std::uint64_t>(260); }));
  // What retention counts from: the cursor as saved, which a restart would resume at.
  REQUIRE(eventually([&] { return f->stats().saved_cursor == 260; }));
  f->stop();

  std::set<std::uint64_t> all(received_by_rx1.begin(), received_by_rx1.end());
  const auto second = rx2.seqs();
  all.insert(second.begin(), second.end());
  CHECK(all == range_set(260));
  const std::size_t duplicates = received_by_rx1.size() + second.size() - all.size();
  MESSAGE("duplicates delivered: " << duplicates);
  CHECK(duplicates > 0);  // the reset session's 60 at least
  // rx2 got one contiguous run, from the cursor it resumed at up to 259.
  REQUIRE(!second.empty());
  for (std::size_t i = 1; i < second.size(); ++i) CHECK(second[i] == second[i - 1] + 1);
  CHECK(second.back() == 259);
  CHECK(rx1->framing_errors() + rx2.framing_errors() == 0);
  CHECK(f->stats().cursor == 260);
  CHECK(db.cursor("siem") == std::optional<std::uint64_t>(260));
}

TEST_CASE("Forwarder: a receiver whose certificate the CA did not sign, or that names another host, gets nothing") {
  AuditDb db("fwd-certs");
  const auto dir = test::temp_dir("fwd-rogue").string();
  const auto& dev = test::dev_certs();
  SUBCASE("self-signed") {
    openssl("req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout " + dir + "/key.pem -out " +
            dir + "/cert.pem -days 2 -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1");
  }
  SUBCASE("signed by the right CA for another host") {
    openssl("ecparam -name prime256v1 -genkey -noout -out " + dir + "/key.pem");
    openssl("req -new -key " + dir + "/key.pem -subj /CN=siem.example -out " + dir + "/req.csr");
    std::ofstream(dir + "/ext.cnf") << "subjectAltName=DNS:siem.example\nextendedKeyUsage=serverAuth\n";
    openssl("x509 -req -in " + dir + "/req.csr -CA " + dev.ca + " -CAkey " + dev.dir + "/ca-key.pem -set_serial 4242" +
            " -days 2 -sha256 -extfile " + dir + "/ext.cnf -out " + dir + "/cert.pem");
  }
  const std::uint16_t port = free_port();
  ReceiverOptions bad;
  bad.port = port;
  bad.cert = dir + "/cert.pem";
  bad.key = dir + "/key.pem";
  auto rogue = std::make_unique<Receiver>(bad);
  auto f = start(options_for(db, port));
  db.append(0, 20);
  f->notify();
  REQUIRE(eventually([&] { return f->stats().connect_failures >= 3; }));
  CHECK(rogue->count() == 0);
  CHECK(rogue->handshake_failures() >= 1);
  CHECK(f->stats().connects == 0);
  CHECK(f->stats().sent == 0);
  CHECK(f->stats().cursor == 0);
  CHECK(f->stats().last_error.find("certificate") != std::string::npos);
  rogue->stop();

  ReceiverOptions good;
  good.port = port;
  Receiver rx(good);
  REQUIRE(eventually([&] { return rx.distinct() == range_set(20); }));
  f->stop();
  CHECK(f->stats().connects >= 1);
  CHECK(db.cursor("siem") == std::optional<std::uint64_t>(20));
}

TEST_CASE("Forwarder: the cursor survives a restart; a new forwarder resumes after it") {
  AuditDb db("fwd-cursor");
  Receiver rx(ReceiverOptions{});
  db.append(0, 100);
  {
    auto f = start(options_for(db, rx.port()));
    REQUIRE(eventually([&] { return rx.count() >= 100; }));
    f->stop();
    CHECK(f->stats().cursor == 100);
  }
  CHECK(db.cursor("siem") == std::optional<std::uint64_t>(100));
  db.append(100, 150);

  auto again = start(options_for(db, rx.port()));
  CHECK(again->stats().cursor == 100);
  REQUIRE(eventually([&] { return rx.count() >= 150; }));
  again->stop();
  const auto seqs = rx.seqs();
  CHECK(seqs.size() == 150);  // nothing sent twice
  CHECK(std::set<std::uint64_t>(seqs.begin(), seqs.end()) == range_set(150));
  CHECK(again->stats().sent == 50);
  CHECK(again->stats().resent == 0);
  CHECK(db.cursor("siem") == std::optional<std::uint64_t>(150));

  SUBCASE("a new name starts from the beginning, or from the end with from_start = false") {
    Receiver rx2(ReceiverOptions{});
    ForwarderOptions o = options_for(db, rx2.port());
    o.name = "second-siem";
    o.from_start = false;
    auto fresh = start(o);
    CHECK(db.cursor("second-siem") == std::optional<std::uint64_t>(150));
    db.append(150, 155);
    fresh->notify();
    REQUIRE(eventually([&] { return rx2.count() >= 5; }));
    fresh->stop();
    CHECK(rx2.distinct() == std::set<std::uint64_t>{150, 151, 152, 153, 154});
    CHECK(db.cursor("siem") == std::optional<std::uint64_t>(150));  // each receiver has its own row
  }
}

// A receiver that stays down: the warning an operator reads says how many records are waiting,
// not only that connecting fails.
TEST_CASE("Forwarder: the warnings for a receiver that is down give the backlog") {
  AuditDb db("fwd-backlog");
  db.append(0, 40);
  test::StderrCapture captured;
  ForwarderOptions o = options_for(db, free_port());
  auto f = start(o);
  REQUIRE(eventually([&] { return f->stats().connect_failures >= 1; }));
  f->stop();
  CHECK(f->stats().cursor == 0);
  const std::string line = test::log_line(captured.text(), "audit forwarder cannot connect");
  INFO(line);
  CHECK(line.find("\"backlog\":40") != std::string::npos);
}

TEST_CASE("Forwarder: oversized records are cut on a character boundary and marked; framing stays strict") {
  SUBCASE("an oversized record is truncated and says so; the next record is whole") {
    AuditDb db("fwd-big");
    Receiver rx(ReceiverOptions{});
    Record big = access(0);
    big.detail.note.clear();
    for (int i = 0; i < 3000; ++i) big.detail.note.append("\xC3\xA9");  // "é": 2 bytes each
    big.user = "dr \"quoted\" \\ back]slash";
    REQUIRE(db.log->append_sync(big).ok());
    REQUIRE(db.log->append_sync(access(1)).ok());
    ForwarderOptions o = options_for(db, rx.port());
    o.max_message_bytes = 2048;
    auto f = start(o);
    REQUIRE(eventually([&] { return rx.count() >= 2; }));
    f->stop();
    const auto msgs = rx.messages();
    REQUIRE(msgs.size() == 2);
    const std::string stored = db.stored(0);
    REQUIRE(stored.size() > 6000);
    CHECK(msgs[0].size() <= 2048);
    const Syslog s = parse_5424(msgs[0]);
    CHECK(s.error == "");
    CHECK(s.param("truncated") == std::to_string(stored.size()));
    CHECK(s.param("leaf") == merkle::to_hex(merkle::leaf_hash(stored)));
    CHECK(s.param("user") == big.user);  // escaped on the wire, the same after unescaping
    REQUIRE(s.msg.rfind("\xEF\xBB\xBF", 0) == 0);
    const std::string part = s.msg.substr(3);
    CHECK(part.size() > 1000);
    CHECK(stored.compare(0, part.size(), part) == 0);
    CHECK((static_cast<unsigned char>(part.back()) & 0xC0) != 0xC0);  // no dangling lead byte
    CHECK((static_cast<unsigned char>(stored[part.size()]) & 0xC0) != 0x80);  // cut before a character
    const Syslog whole = parse_5424(msgs[1]);
    CHECK(whole.params.count("truncated") == 0);
    CHECK(whole.msg == "\xEF\xBB\xBF" + db.stored(1));
    CHECK(f->stats().truncated == 1);
  }

  SUBCASE("formatting: octet counting and RFC 5424 escaping") {
    CHECK(frame_syslog("<86>1 - - - - - -") == "17 <86>1 - - - - - -");
    CHECK(escape_sd_value(R"(a"b\c]d)") == R"(a\"b\\c\]d)");
    ForwarderOptions o;
    o.hostname = "host with space";
    const std::string rec = encode(access(2));
    const SyslogMessage m = format_syslog(o, o.hostname, "42", 2, rec);
    const Syslog s = parse_5424(m.text);
    CHECK(s.error == "");
    CHECK(s.hostname == "host_with_space");
    CHECK(s.procid == "42");
    CHECK(!m.truncated);
    // Something that is not a canonical record still goes out, identified by seq and leaf.
    const SyslogMessage junk = format_syslog(o, "h", "1", 7, "not a record");
    const Syslog j = parse_5424(junk.text);
    CHECK(j.error == "");
    CHECK(j.param("seq") == "7");
    CHECK(j.timestamp == "-");
    CHECK(j.msg == "\xEF\xBB\xBFnot a record");
  }

  SUBCASE("the test receiver's framing check is strict") {
    std::string out;
    for (const char* bad : {"03 abc", "abc", "3abc", "-1 x", "12345678 x", " 3 abc"}) {
      std::string b = bad;
      CHECK_MESSAGE(next_frame(b, out) == -1, bad);
    }
    std::string partial = "5 ab";
    CHECK(next_frame(partial, out) == 0);
    std::string two = "3 abc1 d";
    CHECK(next_frame(two, out) == 1);
    CHECK(out == "abc");
    CHECK(next_frame(two, out) == 1);
    CHECK(out == "d");
  }

  SUBCASE("an endpoint that does not speak TLS is a connect failure; nothing counts as delivered") {
    AuditDb db("fwd-plain");
    const std::uint16_t port = free_port();
    ReceiverOptions junk;
    junk.port = port;
    junk.plain_garbage = true;
    auto plain = std::make_unique<Receiver>(junk);
    auto f = start(options_for(db, port));
    db.append(0, 5);
    f->notify();
    REQUIRE(eventually([&] { return f->stats().connect_failures >= 2; }));
    CHECK(f->stats().sent == 0);
    CHECK(f->stats().cursor == 0);
    plain->stop();
    ReceiverOptions good;
    good.port = port;
    Receiver rx(good);
    REQUIRE(eventually([&] { return rx.distinct() == range_set(5); }));
    f->stop();
    CHECK(rx.framing_errors() == 0);
  }
}

TEST_CASE("Forwarder: options are checked at start") {
  AuditDb db("fwd-options");
  ForwarderOptions o = options_for(db, 6514);
  SUBCASE("missing CA") { o.ca_file = db.path + ".missing"; }
  SUBCASE("key without certificate") { o.client_key = test::dev_certs().client_key; }
  SUBCASE("message limit below RFC 5425's 2048") { o.max_message_bytes = 1000; }
  SUBCASE("database that the Log never created") { o.database = db.path + "-nothing-here.db"; }
  auto f = Forwarder::start(o);
  CHECK(!f.ok());
  CHECK(!std::filesystem::exists(db.path + "-nothing-here.db"));
}

TEST_CASE("Forwarder: a TLS file it cannot use is named, with OpenSSL's reason") {
  AuditDb db("fwd-tls-files");
  ForwarderOptions o = options_for(db, 6514);
  SUBCASE("a valid key of another pair than the client certificate") {
    o.client_certificate = test::dev_certs().client_cert;
    o.client_key = test::dev_certs().server_key;
    const auto st = Forwarder::check(o);
    REQUIRE_FALSE(st.ok());
    CHECK(st.issue().expression == "client_key");
    CHECK(st.issue().diagnostics == "audit forwarding option client_key: cannot load the PEM private key " +
                                        o.client_key + ": key values mismatch");
  }
  SUBCASE("a CA bundle that is not there") {
    o.ca_file = db.path + ".missing-ca.pem";
    const auto st = Forwarder::check(o);
    REQUIRE_FALSE(st.ok());
    CHECK(st.issue().expression == "ca_file");
    const std::string prefix = "audit forwarding option ca_file: cannot load the PEM CA bundle " + o.ca_file + ": ";
    CHECK(st.issue().diagnostics.rfind(prefix, 0) == 0);
    CHECK(st.issue().diagnostics.size() > prefix.size());
  }
}

TEST_CASE("App: /metrics shows the SIEM copy: records behind, connection, connect failures, messages sent") {
  // A port with nothing listening yet: the SIEM is down when the gateway starts.
  std::uint16_t port = 0;
  {
    Receiver probe(ReceiverOptions{});
    port = probe.port();
  }
  test::TestServer s([port](config::Config& c) {
    c.audit.forward_enabled = true;
    c.audit.forward.host = "127.0.0.1";
    c.audit.forward.port = port;
    c.audit.forward.ca_file = test::dev_certs().ca;
    c.audit.forward.poll_interval = 10ms;
    c.audit.forward.backoff_min = 10ms;
    c.audit.forward.backoff_max = 200ms;
    c.audit.forward.resend_window = 0ms;
  });
  // The value of the unlabelled sample `name` on /metrics (-1 when absent).
  const auto metric = [&s](const std::string& name) -> long long {
    const std::string body = test::request(s, "GET", "/metrics", "").body;
    const auto at = body.find("\n" + name + " ");
    return at == std::string::npos ? -1 : std::stoll(body.substr(at + name.size() + 2));
  };
  // Waits (bounded) until `name` satisfies `ok`; its last value.
  const auto await = [&metric](const std::string& name, auto ok) {
    long long v = metric(name);
    for (int i = 0; i < 300 && !ok(v); ++i) {
      std::this_thread::sleep_for(20ms);
      v = metric(name);
    }
    return v;
  };
  CHECK(await("gateway_audit_forward_connect_failures_total", [](long long v) { return v >= 1; }) >= 1);
  CHECK(metric("gateway_audit_forward_connected") == 0);
  CHECK(metric("gateway_audit_forward_lag_records") >= 1);  // at least the "gateway started" record
  CHECK(metric("gateway_audit_forward_sent_total") == 0);
  CHECK(metric("gateway_audit_forward_resent_total") == 0);

  // The SIEM comes up: the backlog drains and the session shows.
  ReceiverOptions up;
  up.port = port;
  Receiver receiver(up);
  CHECK(await("gateway_audit_forward_lag_records", [](long long v) { return v == 0; }) == 0);
  CHECK(metric("gateway_audit_forward_connected") == 1);
  CHECK(metric("gateway_audit_forward_sent_total") >= 1);
  CHECK(receiver.count() >= 1);
}

// Retention must not prune what the SIEM has not received (issue #6 items 5 and 6): with the
// receiver down, records older than retention_days keep their content, the gateway says why,
// and the receiver gets every one of them, whole, once it is back.
TEST_CASE("App: audit retention keeps the records the SIEM does not hold yet; they arrive once it is back") {
  std::uint16_t port = 0;
  {
    Receiver probe(ReceiverOptions{});
    port = probe.port();
  }
  const std::int64_t old_ms = audit::now_ms() - 3 * 86400 * 1000LL;
  std::vector<std::uint64_t> old_seqs;
  test::StderrCapture captured;
  auto s = std::make_unique<test::TestServer>([&](config::Config& c) {
    c.audit.retention_days = 1;
    c.store.message_retention_days = 1;
    c.audit.forward_enabled = true;
    c.audit.forward.host = "127.0.0.1";
    c.audit.forward.port = port;
    c.audit.forward.ca_file = test::dev_certs().ca;
    c.audit.forward.poll_interval = 10ms;
    c.audit.forward.backoff_min = 10ms;
    c.audit.forward.backoff_max = 100ms;
    c.audit.forward.resend_window = 0ms;
    // Three days of history, in the databases the gateway is about to open: audit records
    // (with their checkpoint, signed by the gateway's key) and one raw message, whose
    // retention record tells the test that the maintenance run has been.
    REQUIRE(store::Databases::open(c.data_dir).ok());
    auto signer = CheckpointSigner::from_pem_file(c.audit.signing_key, c.audit.key_name);
    REQUIRE(signer.ok());
    LogOptions lo;
    lo.path = (std::filesystem::path(c.data_dir) / "audit.db").string();
    lo.checkpoint_file = (std::filesystem::path(c.data_dir) / "audit-checkpoints.log").string();
    lo.origin = "fhir-gateway/audit " + c.public_base_url;
    auto log = Log::open(lo, std::make_shared<const CheckpointSigner>(std::move(*signer)));
    REQUIRE(log.ok());
    for (int i = 0; i < 3; ++i) {
      Record r;
      r.time_ms = old_ms + i;
      r.kind = "rest";
      r.action = "read";
      r.status = 200;
      r.agent_kind = "user";
      r.user = "dr-old-" + std::to_string(i);
      auto seq = (*log)->append_sync(std::move(r));
      REQUIRE(seq.ok());
      old_seqs.push_back(*seq);
    }
    REQUIRE((*log)->checkpoint_now().ok());
    (*log)->stop();
    auto st = store::Store::open((std::filesystem::path(c.data_dir) / "store.db").string());
    REQUIRE(st.ok());
    store::MessageWrite m;
    m.source = "cuh-pas";
    m.kind = "ADT^A01";
    m.dedupe_key = "PAS|RGT01|OLD-1";
    m.raw = "MSH|^~\\&|PAS|RGT01|GW|GW|20261123101500||ADT^A01^ADT_A01|OLD-1|P|2.4\r";
    m.reply = "MSA|AA|OLD-1";
    m.status = store::MessageStatus::error;
    m.received_ms = old_ms;
    std::promise<fhir::Result<std::int64_t>> written;
    (*st)->record(m, [&](fhir::Result<std::int64_t> r) { written.set_value(std::move(r)); });
    REQUIRE(written.get_future().get().ok());
  });
  REQUIRE(old_seqs.size() == 3);
  // The maintenance run prunes the audit log, then the messages: once the message prune is on
  // the record, the audit prune has run.
  Query q;
  q.subtype = "message-retention-prune";
  bool maintained = false;
  for (int i = 0; i < 200 && !maintained; ++i) {
    auto page = s->app().audit_log()->search(q);
    REQUIRE(page.ok());
    maintained = !page->records.empty();
    if (!maintained) std::this_thread::sleep_for(50ms);
  }
  REQUIRE(maintained);
  for (std::uint64_t seq : old_seqs) {
    auto r = s->app().audit_log()->get(seq);
    REQUIRE(r.ok());
    CHECK_MESSAGE(r->has_value(), "record " << seq << " was pruned before the SIEM had it");
  }
  Query prunes;
  prunes.subtype = "retention-prune";
  auto none = s->app().audit_log()->search(prunes);
  REQUIRE(none.ok());
  CHECK(none->records.empty());

  // The SIEM comes back: each old record arrives whole (its leaf hash matches).
  ReceiverOptions up;
  up.port = port;
  Receiver receiver(up);
  bool all = false;
  for (int i = 0; i < 300 && !all; ++i) {
    const auto got = receiver.distinct();
    all = std::all_of(old_seqs.begin(), old_seqs.end(), [&got](std::uint64_t seq) { return got.count(seq) > 0; });
    if (!all) std::this_thread::sleep_for(20ms);
  }
  CHECK(all);
  for (const std::string& text : receiver.messages()) {
    const Syslog m = parse_5424(text);
    if (m.param("seq") != std::to_string(old_seqs[0])) continue;
    CHECK(m.msg.find("dr-old-0") != std::string::npos);
  }
  s.reset();
  const std::string line = test::log_line(captured.text(), "audit retention kept records the SIEM does not hold yet");
  CHECK(line.find("\"records\":3") != std::string::npos);
}
