// SPDX-License-Identifier: Apache-2.0
// mllp_bench (issue #4 item 11, "Durable MLLP ingest"): an HL7 v2 MLLP load generator. N
// sender connections each send one message, wait for its acknowledgement, then send the next
// (how MLLP senders behave); M messages in all, a mix of ADT^A01, ADT^A08 and ORU^R01 for a
// few thousand synthetic patients (NHS numbers in the 999 test range), each with its own
// control id. Prints messages/s, ACK latency p50/p99/max (first send to acknowledgement) and
// counts of AA/AE/AR, timeouts and lost connections, plus one RESULT line for scripts
// (tools/bench/mllp-ingest). A message whose ACK does not come is resent (same bytes) on a new
// connection, up to --attempts times.
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#if MLLP_BENCH_TLS
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#endif

#include "fhir/nhs_number.h"

namespace {

using Clock = std::chrono::steady_clock;

constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr std::size_t kMaxAckBytes = 1024 * 1024;

struct Options {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  bool tls = false;
  std::string ca_file;          // TLS: verify the server against this CA bundle (empty: no check)
  int senders = 1;
  std::size_t messages = 100000;
  std::size_t patients = 5000;
  int timeout_ms = 10000;       // per acknowledgement
  int attempts = 3;             // sends per message before it counts as lost
  double max_seconds = 3600;    // the whole run, then the senders stop early
  std::string run_id;           // control id prefix (default: from the clock)
  std::string label = "mllp";
};

// ---- synthetic messages --------------------------------------------------------------------

struct Patient {
  std::string nhs, mrn, family, given, birth_date, sex;
};

std::vector<Patient> make_patients(std::size_t count) {
  static const char* const families[] = {"ASHWORTH", "BRENNAN", "CHOWDHURY", "DAVIES", "EVANS",
                                         "FLETCHER", "GREEN",    "HUSSAIN",   "IQBAL",  "JONES"};
  static const char* const givens[] = {"Amira", "Ben", "Ciara", "Dev", "Eleanor", "Femi", "Gwen", "Hamish", "Isla"};
  std::vector<Patient> out;
  out.reserve(count);
  for (std::size_t k = 0; out.size() < count && k < 900000; ++k) {
    char nine[16];
    std::snprintf(nine, sizeof nine, "999%06zu", (100000 + k * 7) % 1000000);
    const auto check = fhir::nhs_check_digit(nine);
    if (!check) continue;  // Modulus 11 gives 10: no valid NHS number has these nine digits
    const std::size_t n = out.size();
    Patient p;
    p.nhs = std::string(nine) + *check;
    p.mrn = "RGT" + std::to_string(7000000 + n);
    p.family = families[n % 10];
    p.given = givens[n % 9];
    char dob[16];
    std::snprintf(dob, sizeof dob, "19%02zu%02zu%02zu", 30 + n % 60, 1 + n % 12, 1 + n % 28);
    p.birth_date = dob;
    p.sex = n % 2 ? "F" : "M";
    out.push_back(std::move(p));
  }
  return out;
}

// Message i, framed (<VT>...<FS><CR>), into `wire`; its control id into `control_id`.
void build_message(std::size_t i, const std::vector<Patient>& patients, const std::string& run, std::string& wire,
                   std::string& control_id) {
  const Patient& p = patients[(i * 7919) % patients.size()];
  control_id = run;
  control_id.append("-").append(std::to_string(i));
  char ts[32];
  std::snprintf(ts, sizeof ts, "202407%02zu%02zu%02zu00", 1 + i % 28, 8 + i % 10, i % 60);
  std::string pid = "PID|1||";
  pid.append(p.nhs).append("^^^NHS^NH~").append(p.mrn).append("^^^RGT^MR||").append(p.family).append("^");
  pid.append(p.given).append("||").append(p.birth_date).append("|").append(p.sex).append("|||");
  pid.append("12 Mill Road^^Cambridge^Cambridgeshire^CB1 2AB^GBR^H\r");
  wire.clear();
  wire.push_back('\x0b');
  const int kind = static_cast<int>(i % 3);
  if (kind < 2) {
    const char* trigger = kind == 0 ? "A01" : "A08";
    wire.append("MSH|^~\\&|PAS|RGT01|GATEWAY|RGT01|").append(ts).append("||ADT^").append(trigger).append("^ADT_");
    wire.append(trigger).append("|").append(control_id).append("|P|2.4\r");
    wire.append("EVN|").append(trigger).append("|").append(ts).append("\r");
    wire.append(pid);
    wire.append("PV1|1|I|WARD 5^BAY 2^BED 4^RGT01||||C4567890^OKAFOR^CHIDI^^^Dr|||300|||||||||V");
    wire.append(control_id).append("^^^RGT01^VN|||||||||||||||||||||||||").append(ts).append("\r");
  } else {
    wire.append("MSH|^~\\&|WINPATH|RGT01|GATEWAY|RGT01|").append(ts).append("||ORU^R01^ORU_R01|");
    wire.append(control_id).append("|P|2.4\r");
    wire.append(pid);
    wire.append("ORC|RE|ORD").append(control_id).append("^EPR|LAB").append(control_id).append("^WINPATH\r");
    wire.append("OBR|1|ORD").append(control_id).append("^EPR|LAB").append(control_id);
    wire.append("^WINPATH|UE^Urea and electrolytes^WINPATH|||").append(ts).append("|||||||||||||||").append(ts);
    wire.append("||CH|F\r");
    wire.append("OBX|1|NM|NA^Sodium^WINPATH||").append(std::to_string(130 + i % 15)).append("|mmol/L|133-146|N|||F\r");
    wire.append("OBX|2|NM|K^Potassium^WINPATH||4.").append(std::to_string(i % 10)).append("|mmol/L|3.5-5.3|N|||F\r");
  }
  wire.append("\x1c\x0d");
}

// MSA-1 and MSA-2 of an acknowledgement.
struct Ack {
  std::string code, control_id;
};
std::optional<Ack> read_ack(const std::string& payload) {
  for (std::size_t pos = 0; pos < payload.size();) {
    std::size_t end = payload.find_first_of("\r\n", pos);
    if (end == std::string::npos) end = payload.size();
    if (payload.compare(pos, 4, "MSA|") == 0) {
      const std::size_t f1 = pos + 4;
      const std::size_t bar = payload.find('|', f1);
      if (bar == std::string::npos || bar > end) return std::nullopt;
      std::size_t f2end = payload.find_first_of("|^", bar + 1);
      if (f2end == std::string::npos || f2end > end) f2end = end;
      return Ack{payload.substr(f1, bar - f1), payload.substr(bar + 1, f2end - bar - 1)};
    }
    pos = end + 1;
  }
  return std::nullopt;
}

// ---- a minimal MLLP client (blocking socket, optional TLS) ---------------------------------

#if MLLP_BENCH_TLS
SSL_CTX* make_tls_context(const std::string& ca_file) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) return nullptr;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  if (!ca_file.empty()) {
    if (SSL_CTX_load_verify_locations(ctx, ca_file.c_str(), nullptr) != 1) {
      SSL_CTX_free(ctx);
      return nullptr;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  }
  return ctx;
}
#else
using SSL_CTX = void;
#endif

enum class Received { frame, timeout, closed };

class Connection {
 public:
  explicit Connection(SSL_CTX* tls) : tls_(tls) {}
  ~Connection() { close(); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  bool open(const std::string& host, std::uint16_t port, const std::string& verify_name) {
    close();
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res) != 0) return false;
    for (addrinfo* a = res; a && fd_ < 0; a = a->ai_next) {
      fd_ = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
      if (fd_ < 0) continue;
      if (::connect(fd_, a->ai_addr, a->ai_addrlen) != 0) {
        ::close(fd_);
        fd_ = -1;
      }
    }
    ::freeaddrinfo(res);
    if (fd_ < 0) return false;
    const int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
#if MLLP_BENCH_TLS
    if (tls_) {
      ssl_ = SSL_new(tls_);
      if (!ssl_ || SSL_set_fd(ssl_, fd_) != 1) return fail();
      // An address is checked against the certificate's IP SANs, a name against its DNS SANs.
      in6_addr scratch{};
      const bool is_ip = ::inet_pton(AF_INET, verify_name.c_str(), &scratch) == 1 ||
                         ::inet_pton(AF_INET6, verify_name.c_str(), &scratch) == 1;
      if (is_ip) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), verify_name.c_str());
      } else {
        SSL_set_tlsext_host_name(ssl_, verify_name.c_str());
        SSL_set1_host(ssl_, verify_name.c_str());
      }
      if (SSL_connect(ssl_) != 1) return fail();
    }
#else
    (void)verify_name;
#endif
    return true;
  }

  bool is_open() const { return fd_ >= 0; }

  void close() {
#if MLLP_BENCH_TLS
    if (ssl_) SSL_free(ssl_);
    ssl_ = nullptr;
#endif
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    buffer_.clear();
  }

  bool send(const std::string& bytes) {
    for (std::size_t done = 0; done < bytes.size();) {
      ssize_t n;
#if MLLP_BENCH_TLS
      if (ssl_) n = SSL_write(ssl_, bytes.data() + done, static_cast<int>(bytes.size() - done));
      else
#endif
        n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return false;
      done += static_cast<std::size_t>(n);
    }
    return true;
  }

  // The next frame's payload into `payload`; bounded by `deadline` and kMaxAckBytes.
  Received receive(Clock::time_point deadline, std::string& payload) {
    for (int rounds = 0; rounds < 1000000; ++rounds) {
      const auto start = buffer_.find('\x0b');
      if (start != std::string::npos) {
        const auto end = buffer_.find("\x1c\x0d", start);
        if (end != std::string::npos) {
          payload.assign(buffer_, start + 1, end - start - 1);
          buffer_.erase(0, end + 2);
          return Received::frame;
        }
      }
      if (buffer_.size() > kMaxAckBytes) return Received::closed;
      bool pending = false;
#if MLLP_BENCH_TLS
      pending = ssl_ && SSL_pending(ssl_) > 0;
#endif
      if (!pending) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0) return Received::timeout;
        pollfd p{fd_, POLLIN, 0};
        const int ready = ::poll(&p, 1, static_cast<int>(left));
        if (ready == 0) return Received::timeout;
        if (ready < 0) return Received::closed;
      }
      char buf[8192];
      ssize_t n;
#if MLLP_BENCH_TLS
      if (ssl_) n = SSL_read(ssl_, buf, sizeof buf);
      else
#endif
        n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) return Received::closed;
      buffer_.append(buf, static_cast<std::size_t>(n));
    }
    return Received::closed;
  }

 private:
#if MLLP_BENCH_TLS
  bool fail() {
    close();
    return false;
  }
  SSL* ssl_ = nullptr;
#endif
  [[maybe_unused]] SSL_CTX* tls_ = nullptr;
  int fd_ = -1;
  std::string buffer_;
};

// ---- the run -------------------------------------------------------------------------------

struct Totals {
  std::atomic<std::size_t> next{0};
  std::atomic<std::uint64_t> aa{0}, ae{0}, ar{0}, other{0}, timeouts{0}, disconnects{0}, connect_failures{0},
      resends{0}, mismatched{0}, unreadable{0}, lost{0};
  std::atomic<bool> out_of_time{false};
};

void sender(const Options& o, SSL_CTX* tls, const std::vector<Patient>& patients, Clock::time_point end_by,
            Totals& t, std::vector<std::uint32_t>& latencies_us) {
  Connection conn(tls);
  std::string wire, control_id, payload;
  for (std::size_t i; (i = t.next.fetch_add(1)) < o.messages;) {
    if (Clock::now() >= end_by) {
      t.out_of_time = true;
      break;
    }
    build_message(i, patients, o.run_id, wire, control_id);
    const auto t0 = Clock::now();
    bool answered = false;
    int backoff_ms = 10;
    // Attempts, with up to 50 failed connects (backoff up to 1 s) that do not count as sends.
    for (int attempt = 0, connects = 0; attempt < o.attempts && connects < 50 && !answered;) {
      if (!conn.is_open() && !conn.open(o.host, o.port, o.host)) {
        ++t.connect_failures;
        ++connects;
        std::this_thread::sleep_for(std::chrono::milliseconds(backoff_ms));
        backoff_ms = std::min(backoff_ms * 2, 1000);
        continue;
      }
      if (attempt++ > 0) ++t.resends;
      if (!conn.send(wire)) {
        ++t.disconnects;
        conn.close();
        continue;
      }
      const Received r = conn.receive(Clock::now() + std::chrono::milliseconds(o.timeout_ms), payload);
      if (r != Received::frame) {
        ++(r == Received::timeout ? t.timeouts : t.disconnects);
        conn.close();
        continue;
      }
      const auto ack = read_ack(payload);
      if (!ack) {
        ++t.unreadable;
        conn.close();
        continue;
      }
      if (ack->control_id != control_id) {
        ++t.mismatched;
        conn.close();
        continue;
      }
      answered = true;
      latencies_us.push_back(static_cast<std::uint32_t>(
          std::min<std::int64_t>(std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count(),
                                 UINT32_MAX)));
      if (ack->code == "AA" || ack->code == "CA") ++t.aa;
      else if (ack->code == "AE" || ack->code == "CE") ++t.ae;
      else if (ack->code == "AR" || ack->code == "CR") ++t.ar;
      else ++t.other;
    }
    if (!answered) ++t.lost;
  }
}

double percentile_ms(std::vector<std::uint32_t>& v, double p) {
  if (v.empty()) return 0;
  const std::size_t k = std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k] / 1000.0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "mllp_bench: HL7 v2 over MLLP load generator. SENDERS connections each send one message and wait for its "
      "acknowledgement before sending the next; MESSAGES in all (ADT^A01, ADT^A08, ORU^R01 for PATIENTS synthetic "
      "patients, unique control ids). Prints messages/s, ACK latency p50/p99/max and the AA/AE/AR/timeout counts, "
      "then a RESULT line. Exit 1 when a message got no acknowledgement or a wrong one."};
  Options o;
  app.add_option("--host", o.host, "address of the MLLP listener");
  app.add_option("--port", o.port, "port of the MLLP listener")->required()->check(CLI::Range(1, 65535));
#if MLLP_BENCH_TLS
  app.add_flag("--tls", o.tls, "MLLP over TLS (source setting tls = true)");
  app.add_option("--ca", o.ca_file, "with --tls: verify the server's certificate against this CA bundle")
      ->check(CLI::ExistingFile);
#endif
  app.add_option("--senders", o.senders, "concurrent sender connections")->check(CLI::Range(1, 1024));
  app.add_option("--messages", o.messages, "messages in all")->check(CLI::Range(1, 100000000));
  app.add_option("--patients", o.patients, "synthetic patients the messages are about")->check(CLI::Range(1, 500000));
  app.add_option("--timeout-ms", o.timeout_ms, "wait this long for each acknowledgement")->check(CLI::Range(1, 600000));
  app.add_option("--attempts", o.attempts, "sends per message (resends after a timeout or a lost connection)")
      ->check(CLI::Range(1, 100));
  app.add_option("--max-seconds", o.max_seconds, "stop sending after this long")->check(CLI::Range(1.0, 86400.0));
  app.add_option("--run-id", o.run_id, "control id prefix (default: from the clock; unique per run)")
      ->check([](const std::string& s) {
        if (s.empty() || s.size() > 12) return std::string("1 to 12 characters");
        for (char c : s)
          if (!std::isalnum(static_cast<unsigned char>(c))) return std::string("letters and digits only");
        return std::string();
      });
  app.add_option("--label", o.label, "name of this load in the RESULT line");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : kExitUsage;
  }
  if (o.run_id.empty()) {
    const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
    o.run_id = "B" + std::to_string(now % 10000000000LL);
  }

  SSL_CTX* tls = nullptr;
#if MLLP_BENCH_TLS
  if (o.tls) {
    tls = make_tls_context(o.ca_file);
    if (!tls) {
      std::fprintf(stderr, "mllp_bench: cannot set up TLS (CA bundle %s unreadable?)\n", o.ca_file.c_str());
      return kExitFailed;
    }
  }
#endif

  const auto patients = make_patients(o.patients);
  if (patients.size() != o.patients) {
    std::fprintf(stderr, "mllp_bench: could only make %zu patients\n", patients.size());
    return kExitFailed;
  }
  Totals totals;
  std::vector<std::vector<std::uint32_t>> latencies(static_cast<std::size_t>(o.senders));
  for (auto& l : latencies) l.reserve(o.messages / static_cast<std::size_t>(o.senders) + 1);
  const auto t0 = Clock::now();
  const auto end_by = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.max_seconds));
  std::vector<std::thread> threads;
  for (int s = 0; s < o.senders; ++s)
    threads.emplace_back([&o, tls, &patients, end_by, &totals, &latencies, s] {
      sender(o, tls, patients, end_by, totals, latencies[static_cast<std::size_t>(s)]);
    });
  for (auto& th : threads) th.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
#if MLLP_BENCH_TLS
  if (tls) SSL_CTX_free(tls);
#endif

  std::vector<std::uint32_t> all;
  for (auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
  const std::size_t answered = all.size();
  const double rate = seconds > 0 ? static_cast<double>(answered) / seconds : 0;
  const double p50 = percentile_ms(all, 0.50), p99 = percentile_ms(all, 0.99);
  const double max = all.empty() ? 0 : *std::max_element(all.begin(), all.end()) / 1000.0;
  std::printf("mllp_bench %s: %d sender(s), %zu messages to %s:%u%s, run id %s\n", o.label.c_str(), o.senders,
              o.messages, o.host.c_str(), o.port, o.tls ? " (TLS)" : "", o.run_id.c_str());
  std::printf("  answered %zu in %.2f s: %.0f messages/s\n", answered, seconds, rate);
  std::printf("  ACK latency p50 %.3f ms  p99 %.3f ms  max %.3f ms\n", p50, p99, max);
  std::printf("  AA %llu  AE %llu  AR %llu  other %llu  timeouts %llu  lost connections %llu  resends %llu  "
              "failed connects %llu  wrong MSA-2 %llu  unreadable %llu  unanswered %llu%s\n",
              static_cast<unsigned long long>(totals.aa.load()), static_cast<unsigned long long>(totals.ae.load()),
              static_cast<unsigned long long>(totals.ar.load()), static_cast<unsigned long long>(totals.other.load()),
              static_cast<unsigned long long>(totals.timeouts.load()),
              static_cast<unsigned long long>(totals.disconnects.load()),
              static_cast<unsigned long long>(totals.resends.load()),
              static_cast<unsigned long long>(totals.connect_failures.load()),
              static_cast<unsigned long long>(totals.mismatched.load()),
              static_cast<unsigned long long>(totals.unreadable.load()),
              static_cast<unsigned long long>(totals.lost.load()),
              totals.out_of_time ? "  (stopped at --max-seconds)" : "");
  std::printf(
      "RESULT label=%s senders=%d messages=%zu answered=%zu seconds=%.3f rate=%.1f p50_ms=%.3f p99_ms=%.3f "
      "max_ms=%.3f aa=%llu ae=%llu ar=%llu timeouts=%llu disconnects=%llu resends=%llu lost=%llu mismatched=%llu\n",
      o.label.c_str(), o.senders, o.messages, answered, seconds, rate, p50, p99, max,
      static_cast<unsigned long long>(totals.aa.load()), static_cast<unsigned long long>(totals.ae.load()),
      static_cast<unsigned long long>(totals.ar.load()), static_cast<unsigned long long>(totals.timeouts.load()),
      static_cast<unsigned long long>(totals.disconnects.load()),
      static_cast<unsigned long long>(totals.resends.load()),
      static_cast<unsigned long long>(totals.lost.load()), static_cast<unsigned long long>(totals.mismatched.load()));
  const bool complete = answered == o.messages && totals.mismatched == 0 && totals.unreadable == 0;
  return complete ? 0 : kExitFailed;
}
