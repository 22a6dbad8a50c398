// SPDX-License-Identifier: Apache-2.0
// The audit forwarder: formats stored records as RFC 5424 messages and writes them to a SIEM
// over TLS (RFC 5425) from its own thread, confirming delivery as forwarder.h describes.
// The TLS client is plain OpenSSL over a non-blocking socket driven by poll(2), so every wait
// has a deadline and the thread can watch the socket, a wake-up pipe and the clock at once.
#include "gateway/audit/forwarder.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#if __has_include(<linux/sockios.h>)
#include <linux/sockios.h>
#endif

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "fhir/query_string.h"
#include "gateway/audit/merkle.h"
#include "gateway/audit/record.h"
#include "gateway/observe/log.h"
#include "gateway/observe/thread_name.h"
#include "gateway/sqlite/database.h"

namespace gw::audit {

using fhir::ErrorCode;
using fhir::Issue;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::size_t kMinMessageBytes = 2048;          // RFC 5425 4.3.1: receivers MUST take 2048
constexpr std::size_t kMaxMessageBytes = 1024 * 1024;
constexpr std::size_t kMaxSdValueBytes = 128;
constexpr std::size_t kMaxPatientParams = 8;
constexpr std::size_t kMaxWriteBytes = 1024 * 1024;     // bytes handed to TLS per round
constexpr auto kCursorPersistInterval = std::chrono::seconds(1);
constexpr auto kCloseTimeout = std::chrono::seconds(2);
constexpr auto kErrorLogInterval = std::chrono::seconds(60);
constexpr auto kCoalesceWrites = std::chrono::milliseconds(100);
constexpr char kBom[] = "\xEF\xBB\xBF";

// The same suites as the gateway's listeners (gateway/net/tls_context.cpp; gw_audit sits below
// gw_core and cannot use its copy): ECDHE key exchange, AEAD ciphers; TLS 1.3 suites are all so.
const char* const kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

Issue invalid(const char* option, std::string what) {
  std::string text = "audit forwarding option ";
  text.append(option).append(": ").append(what);
  return Issue::make(ErrorCode::invalid_value, std::move(text), option);
}

// --- RFC 5424 text --------------------------------------------------------------------

bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t len = 0;
    std::uint32_t cp = 0;
    if (c < 0x80) { ++i; continue; }
    if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
    else return false;
    if (i + len > s.size()) return false;
    for (std::size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    // Overlong forms, UTF-16 surrogates and code points past U+10FFFF are not UTF-8 (RFC 3629).
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += len;
  }
  return true;
}

// HOSTNAME, APP-NAME, PROCID: 1*N PRINTUSASCII (RFC 5424 6.2); "-" is the NILVALUE.
std::string header_field(std::string_view s, std::size_t max) {
  std::string out;
  for (char ch : s.substr(0, std::min(s.size(), max))) {
    const auto c = static_cast<unsigned char>(ch);
    out.push_back(c >= 33 && c <= 126 ? ch : '_');
  }
  return out.empty() ? std::string("-") : out;
}

// SD-NAME: 1*32 PRINTUSASCII except '=', SP, ']' and '"' (RFC 5424 6.3.2).
bool valid_sd_name(std::string_view s) {
  if (s.empty() || s.size() > 32) return false;
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 33 || c > 126 || ch == '=' || ch == ']' || ch == '"') return false;
  }
  return true;
}

// A structured-data value: cut on a character boundary, control characters replaced, escaped.
std::string sd_value(std::string_view v) {
  std::string clean(v.substr(0, fhir::utf8_cut(v, kMaxSdValueBytes)));
  for (char& ch : clean) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7F) ch = '?';
  }
  return escape_sd_value(clean);
}

int severity_for(int outcome) { return outcome == 0 ? 6 : outcome == 4 ? 4 : 3; }

// --- TLS session ------------------------------------------------------------------------

// Waits until `fd` is ready for `events` (or reports hang-up/error) before `deadline`.
bool wait_fd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 1000)));
    if (r > 0) return true;
    if (r < 0 && errno != EINTR) return false;
  }
}

// OpenSSL's error queue as text (and cleared), or the socket error for a system failure.
std::string tls_error_text(SSL* ssl, int ret, const char* what) {
  std::string text = what;
  const int err = SSL_get_error(ssl, ret);
  if (err == SSL_ERROR_ZERO_RETURN) return text + ": the receiver closed the connection";
  if (ssl != nullptr && SSL_get_verify_result(ssl) != X509_V_OK)
    return text + ": certificate verification failed: " +
           X509_verify_cert_error_string(SSL_get_verify_result(ssl));
  if (unsigned long e = ERR_peek_last_error(); e != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    return text + ": " + buf;
  }
  if (err == SSL_ERROR_SYSCALL && errno != 0) return text + ": " + std::strerror(errno);
  return text + ": connection closed";
}

struct Session {
  int fd = -1;
  SSL* ssl = nullptr;
  Session() = default;
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  ~Session() {
    if (ssl) SSL_free(ssl);
    if (fd >= 0) ::close(fd);
  }
};

// Repeats an OpenSSL call on a non-blocking socket until it completes, fails or times out.
template <class Op>
int drive(Session& s, Op op, Clock::time_point deadline, int& ret) {
  for (;;) {
    ERR_clear_error();
    errno = 0;
    ret = op();
    if (ret > 0) return SSL_ERROR_NONE;
    const int err = SSL_get_error(s.ssl, ret);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
      if (!wait_fd(s.fd, err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline)) return -1;
      continue;
    }
    return err;
  }
}

int tcp_connect(const addrinfo* ai, Clock::time_point deadline, std::string& error) {
  const int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
  if (fd < 0) {
    error = std::string("socket: ") + std::strerror(errno);
    return -1;
  }
  if (::connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
    if (errno != EINPROGRESS) {
      error = std::string("connect: ") + std::strerror(errno);
      ::close(fd);
      return -1;
    }
    int so_error = 0;
    socklen_t len = sizeof so_error;
    if (!wait_fd(fd, POLLOUT, deadline)) so_error = ETIMEDOUT;
    else if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len) != 0) so_error = errno;
    if (so_error != 0) {
      error = std::string("connect: ") + std::strerror(so_error);
      ::close(fd);
      return -1;
    }
  }
  // Keepalive finds a receiver that vanished without a reset on an idle session.
  int on = 1, idle = 30, interval = 10, count = 3;
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
  return fd;
}

fhir::Result<std::unique_ptr<Session>> open_session(SSL_CTX* ctx, const ForwarderOptions& o,
                                                    Clock::time_point deadline) {
  auto fail = [](std::string text) { return Issue::make(ErrorCode::not_ready, std::move(text)); };
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(o.port);
  if (int rc = ::getaddrinfo(o.host.c_str(), port.c_str(), &hints, &found); rc != 0)
    return fail(std::string("cannot resolve the receiver's host name: ") + ::gai_strerror(rc));
  auto session = std::make_unique<Session>();
  std::string error = "no address";
  for (const addrinfo* ai = found; ai != nullptr && session->fd < 0; ai = ai->ai_next)
    session->fd = tcp_connect(ai, deadline, error);
  ::freeaddrinfo(found);
  if (session->fd < 0) return fail(std::move(error));

  session->ssl = SSL_new(ctx);
  if (session->ssl == nullptr || SSL_set_fd(session->ssl, session->fd) != 1)
    return fail("cannot create a TLS session");
  // The receiver's certificate must name the host we were told to reach (RFC 5425 5.2; RFC 6125).
  unsigned char addr[sizeof(in6_addr)];
  const bool ip_literal = ::inet_pton(AF_INET, o.host.c_str(), addr) == 1 || ::inet_pton(AF_INET6, o.host.c_str(), addr) == 1;
  if (ip_literal) {
    if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(session->ssl), o.host.c_str()) != 1)
      return fail("cannot set the receiver's address for verification");
  } else {
    SSL_set_hostflags(session->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (SSL_set1_host(session->ssl, o.host.c_str()) != 1 || SSL_set_tlsext_host_name(session->ssl, o.host.c_str()) != 1)
      return fail("cannot set the receiver's host name for verification");
  }
  int ret = 0;
  const int err = drive(*session, [&] { return SSL_connect(session->ssl); }, deadline, ret);
  if (err == -1) return fail("TLS handshake timed out");
  if (err != SSL_ERROR_NONE) return fail(tls_error_text(session->ssl, ret, "TLS handshake failed"));
  return session;
}

fhir::Status write_all(Session& s, std::string_view data, Clock::time_point deadline) {
  std::size_t off = 0;
  while (off < data.size()) {
    const int n = static_cast<int>(std::min<std::size_t>(data.size() - off, 1 << 20));
    int ret = 0;
    const int err = drive(s, [&] { return SSL_write(s.ssl, data.data() + off, n); }, deadline, ret);
    if (err == -1) return Issue::make(ErrorCode::timeout, "write to the receiver timed out");
    if (err != SSL_ERROR_NONE) return Issue::make(ErrorCode::not_ready, tls_error_text(s.ssl, ret, "write failed"));
    off += static_cast<std::size_t>(ret);
  }
  return fhir::Ok{};
}

// A syslog receiver sends no application data (RFC 5425 4.3), so a readable socket means a
// close, a reset or TLS housekeeping (TLS 1.3 session tickets), which is read and dropped.
fhir::Status check_alive(Session& s) {
  char buf[4096];
  for (int round = 0; round < 64; ++round) {
    pollfd p{s.fd, POLLIN, 0};
    if (SSL_pending(s.ssl) == 0 && ::poll(&p, 1, 0) <= 0) return fhir::Ok{};
    ERR_clear_error();
    errno = 0;
    const int ret = SSL_read(s.ssl, buf, sizeof buf);
    if (ret > 0) continue;
    const int err = SSL_get_error(s.ssl, ret);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return fhir::Ok{};
    return Issue::make(ErrorCode::not_ready, tls_error_text(s.ssl, ret, "connection lost"));
  }
  return fhir::Ok{};
}

// Our close_notify, then the receiver's: its close_notify comes after every byte we sent, so
// receiving it proves its TLS layer read them all. Anything else (reset, bare FIN, timeout) is
// not a clean close.
bool close_cleanly(Session& s, Clock::time_point deadline) {
  int ret = 0;
  int err = drive(s, [&] { return SSL_shutdown(s.ssl) >= 0 ? 1 : -1; }, deadline, ret);
  if (err != SSL_ERROR_NONE) return false;
  if ((SSL_get_shutdown(s.ssl) & SSL_RECEIVED_SHUTDOWN) == 0) {
    char buf[1024];
    do {
      err = drive(s, [&] { return SSL_read(s.ssl, buf, sizeof buf); }, deadline, ret);
      // Data after our close_notify is dropped.
    } while (err == SSL_ERROR_NONE && Clock::now() < deadline);
    if (err != SSL_ERROR_ZERO_RETURN) return false;
  }
  ::shutdown(s.fd, SHUT_RDWR);
  return true;
}

// Bytes in the socket's send queue, unsent or not yet acknowledged by the receiver's TCP
// (Linux SIOCOUTQ), or 0 when the platform cannot tell (then a write counts from when it
// was handed over).
std::uint64_t unacknowledged_bytes(int fd) {
#ifdef SIOCOUTQ
  int n = 0;
  if (::ioctl(fd, SIOCOUTQ, &n) == 0 && n > 0) return static_cast<std::uint64_t>(n);
#endif
  (void)fd;
  return 0;
}

std::string local_hostname() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "-";
  return buf;
}

}  // namespace

// --- formatting -------------------------------------------------------------------------

std::string escape_sd_value(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '"' || c == '\\' || c == ']') out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

std::string frame_syslog(std::string_view message) {
  std::string out = std::to_string(message.size());
  out.push_back(' ');
  out.append(message);
  return out;
}

SyslogMessage format_syslog(const ForwarderOptions& options, std::string_view hostname, std::string_view procid,
                            std::uint64_t seq, std::string_view record) {
  auto decoded = decode(record);
  const Record* rec = decoded ? &*decoded : nullptr;
  const std::string leaf = merkle::to_hex(merkle::leaf_hash(record));
  const int facility = std::clamp(options.facility, 0, 23);
  const int severity = rec ? severity_for(outcome_code(rec->status)) : 5;

  std::string header = "<";
  header.append(std::to_string(facility * 8 + severity)).append(">1 ");
  header.append(rec ? format_time_ms(rec->time_ms) : std::string("-")).push_back(' ');
  header.append(header_field(hostname, 255)).push_back(' ');
  header.append(header_field(options.app_name, 48)).push_back(' ');
  header.append(header_field(procid, 128)).append(" audit ");

  const std::string sd_id = valid_sd_name(options.sd_id) ? options.sd_id : std::string("fhirgw@32473");
  auto structured = [&](bool facts, std::optional<std::size_t> truncated_from) {
    std::string sd = "[" + sd_id;
    auto param = [&](const char* name, std::string_view value) {
      sd.append(" ").append(name).append("=\"").append(sd_value(value)).append("\"");
    };
    param("seq", std::to_string(seq));
    param("leaf", leaf);
    if (truncated_from) param("truncated", std::to_string(*truncated_from));
    if (facts && rec) {
      param("kind", rec->kind);
      param("action", rec->action);
      param("status", std::to_string(rec->status));
      param("outcome", std::to_string(outcome_code(rec->status)));
      if (!rec->user.empty()) param("user", rec->user);
      if (!rec->organisation.empty()) param("organisation", rec->organisation);
      // RFC 5424 6.3.3 lets a PARAM-NAME repeat inside one SD-ELEMENT.
      for (std::size_t i = 0; i < rec->detail.patients.size() && i < kMaxPatientParams; ++i)
        param("patient", rec->detail.patients[i]);
    }
    sd.push_back(']');
    return sd;
  };

  const std::size_t max = std::clamp(options.max_message_bytes, kMinMessageBytes, kMaxMessageBytes);
  const bool utf8 = valid_utf8(record);
  const std::size_t bom = utf8 ? 3 : 0;
  SyslogMessage m;
  std::string head = header + structured(true, std::nullopt);
  if (head.size() + 1 + bom + record.size() > max) {
    m.truncated = true;
    head = header + structured(true, record.size());
    // Keep at least half the message for the record itself.
    if (head.size() > max / 2) head = header + structured(false, record.size());
  }
  const std::size_t budget = max - head.size() - 1 - bom;
  const std::size_t keep = m.truncated ? (utf8 ? fhir::utf8_cut(record, budget) : std::min(budget, record.size()))
                                       : record.size();
  m.text.reserve(head.size() + 1 + bom + keep);
  m.text.append(head).push_back(' ');
  if (utf8) m.text.append(kBom, 3);
  m.text.append(record.substr(0, keep));
  return m;
}

// --- the forwarder ------------------------------------------------------------------------

struct Forwarder::Impl {
  struct Row {
    std::uint64_t seq;
    std::string bytes;
  };
  // Writes on the current session not yet confirmed, oldest first.
  struct Pending {
    std::uint64_t end;                          // every seq below this has been written
    std::uint64_t wire_end;                     // TLS bytes handed to the socket by then
    Clock::time_point created;
    std::optional<Clock::time_point> acked_at;  // when the receiver's TCP had acknowledged them
  };

  ForwarderOptions opt;
  std::string hostname;
  std::string procid;
  SSL_CTX* ctx = nullptr;
  std::optional<sqlite::Database> reader;  // read-only; reopened after an error
  std::optional<sqlite::Statement> fetch_stmt;
  std::optional<sqlite::Database> cursor_db;  // read-write, the cursor row only
  int wake[2] = {-1, -1};
  std::atomic<bool> stopping{false};
  std::mutex stop_mu;
  std::thread thread;

  mutable std::mutex stats_mu;
  ForwarderStats shared;  // published copy

  // Thread state.
  ForwarderStats local;
  std::unique_ptr<Session> session;
  std::deque<Pending> pending;
  std::uint64_t confirmed = 0;   // first seq not known delivered
  std::uint64_t persisted = 0;
  std::uint64_t next_send = 0;   // first seq not written on the current session
  std::uint64_t high_water = 0;  // first seq never written by this process
  Clock::duration backoff{};
  Clock::time_point next_connect{};
  Clock::time_point last_persist{};
  std::string logged_error;
  Clock::time_point logged_at{};

  ~Impl() {
    if (ctx) SSL_CTX_free(ctx);
    for (int fd : wake)
      if (fd >= 0) ::close(fd);
  }

  void publish() {
    local.cursor = confirmed;
    local.connected = session != nullptr;
    std::lock_guard lock(stats_mu);
    shared = local;
  }

  void note_error(std::string text, const char* what) {
    local.last_error = text;
    const auto now = Clock::now();
    if (text != logged_error || now - logged_at >= kErrorLogInterval) {
      observe::log(observe::Level::warn, what,
                   {{"forwarder", opt.name}, {"error", text}, {"cursor", confirmed},
                    {"connect_failures", local.connect_failures}});
      logged_error = std::move(text);
      logged_at = now;
    }
  }

  void back_off() {
    next_connect = Clock::now() + backoff;
    backoff = std::min<Clock::duration>(backoff * 2, opt.backoff_max);
  }

  // --- audit.db ---
  fhir::Result<std::vector<Row>> fetch(std::uint64_t from, std::size_t limit) {
    if (!reader) {
      auto db = sqlite::Database::open(opt.database, sqlite::Database::Mode::read_only);
      if (!db) return std::move(db).issue();
      reader.emplace(std::move(*db));
    }
    if (!fetch_stmt) {
      auto st = reader->prepare(
          "SELECT seq, record FROM audit_record WHERE seq >= ?1 AND record IS NOT NULL ORDER BY seq LIMIT ?2");
      if (!st) {
        reader.reset();
        return std::move(st).issue();
      }
      fetch_stmt.emplace(std::move(*st));
    }
    fetch_stmt->reset();
    fetch_stmt->bind(1, static_cast<std::int64_t>(from)).bind(2, static_cast<std::int64_t>(limit));
    std::vector<Row> rows;
    for (;;) {
      auto more = fetch_stmt->step();
      if (!more) {
        fetch_stmt.reset();
        reader.reset();
        return std::move(more).issue();
      }
      if (!*more) break;
      rows.push_back(Row{static_cast<std::uint64_t>(fetch_stmt->column_int64(0)), fetch_stmt->column_blob(1)});
    }
    fetch_stmt->reset();  // ends the read transaction, so WAL checkpoints are not held back
    return rows;
  }

  fhir::Status save_cursor(std::uint64_t seq) {
    auto st = cursor_db->prepare(
        "INSERT INTO audit_forward_cursor(name, seq) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET seq = excluded.seq");
    if (!st) return std::move(st).issue();
    st->bind(1, opt.name).bind(2, static_cast<std::int64_t>(seq));
    return st->run();
  }

  void persist(bool force) {
    const auto now = Clock::now();
    if (confirmed == persisted || (!force && now - last_persist < kCursorPersistInterval)) return;
    last_persist = now;
    if (auto s = save_cursor(confirmed); !s) {
      note_error("cannot save the forwarding cursor: " + s.issue().diagnostics, "audit forwarder cursor not saved");
      return;
    }
    persisted = confirmed;
  }

  // --- the session ---
  void connect(Clock::time_point deadline) {
    auto s = open_session(ctx, opt, deadline);
    if (!s) {
      ++local.connect_failures;
      note_error(s.issue().diagnostics, "audit forwarder cannot connect");
      back_off();
      return;
    }
    session = std::move(*s);
    ++local.connects;
    pending.clear();
    next_send = confirmed;  // resend everything not confirmed
    observe::log(observe::Level::info, "audit forwarder connected", {{"forwarder", opt.name}, {"cursor", confirmed}});
  }

  void lose_session(const std::string& error) {
    ++local.disconnects;
    const auto unconfirmed = next_send - confirmed;
    session.reset();
    pending.clear();
    next_send = confirmed;
    // A write to a reset socket raised SIGPIPE on this thread, where it is blocked: discard it.
    sigset_t pipe_set;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    timespec zero{};
    while (::sigtimedwait(&pipe_set, nullptr, &zero) > 0) {
    }
    local.last_error = error;
    observe::log(observe::Level::warn, "audit forwarder connection lost",
                 {{"forwarder", opt.name}, {"error", error}, {"unconfirmed", unconfirmed}, {"cursor", confirmed}});
    back_off();
  }

  // Writes one round; true when more rows are probably waiting.
  bool send(const std::vector<Row>& rows, Clock::time_point deadline) {
    std::string buf;
    std::uint64_t end = next_send, expect = next_send, resent = 0, truncated = 0, skipped = 0;
    std::size_t used = 0;
    for (const Row& row : rows) {
      if (buf.size() >= kMaxWriteBytes) break;
      const std::uint64_t gap_from = std::max(expect, high_water);
      if (row.seq > gap_from) skipped += row.seq - gap_from;  // pruned before they were forwarded
      SyslogMessage m = format_syslog(opt, hostname, procid, row.seq, row.bytes);
      buf.append(frame_syslog(m.text));
      if (row.seq < high_water) ++resent;
      else if (m.truncated) ++truncated;
      end = expect = row.seq + 1;
      ++used;
    }
    if (auto s = write_all(*session, buf, deadline); !s) {
      lose_session(s.issue().diagnostics);
      return false;
    }
    // Writes close together share one entry, so the list stays short under a steady load.
    const std::uint64_t wire = BIO_number_written(SSL_get_wbio(session->ssl));
    const auto now = Clock::now();
    if (!pending.empty() && !pending.back().acked_at && now - pending.back().created < kCoalesceWrites) {
      pending.back().end = end;
      pending.back().wire_end = wire;
    } else {
      pending.push_back(Pending{end, wire, now, std::nullopt});
    }
    next_send = end;
    high_water = std::max(high_water, end);
    local.sent += used;
    local.resent += resent;
    local.truncated += truncated;
    local.skipped_pruned += skipped;
    return used < rows.size() || rows.size() == opt.batch_size;
  }

  // A write counts once the receiver's TCP has acknowledged it and the session then stayed
  // healthy for resend_window.
  void confirm(Clock::time_point now) {
    if (!session) return;
    const std::uint64_t written = BIO_number_written(SSL_get_wbio(session->ssl));
    const std::uint64_t acked = written - std::min<std::uint64_t>(written, unacknowledged_bytes(session->fd));
    for (Pending& p : pending) {
      if (p.acked_at) continue;
      if (p.wire_end > acked) break;
      p.acked_at = now;
    }
    while (!pending.empty() && pending.front().acked_at && now - *pending.front().acked_at >= opt.resend_window) {
      confirmed = pending.front().end;
      pending.pop_front();
      backoff = opt.backoff_min;  // the receiver is working: a later loss reconnects quickly
    }
  }

  void finish() {
    if (session) {
      if (close_cleanly(*session, Clock::now() + std::min<Clock::duration>(kCloseTimeout, opt.io_timeout))) {
        confirmed = next_send;
        pending.clear();
        session.reset();
      } else {
        lose_session("the receiver did not complete the TLS close");
      }
    }
    persist(true);
    publish();
    observe::log(observe::Level::info, "audit forwarder stopped",
                 {{"forwarder", opt.name}, {"cursor", confirmed}, {"sent", local.sent}, {"resent", local.resent}});
  }

  void wait(Clock::time_point until) {
    pollfd fds[2] = {{wake[0], POLLIN, 0}, {session ? session->fd : -1, POLLIN, 0}};
    const auto ms = std::chrono::ceil<std::chrono::milliseconds>(until - Clock::now()).count();
    if (::poll(fds, 2, static_cast<int>(std::clamp<long long>(ms, 0, 60'000))) > 0 && (fds[0].revents & POLLIN)) {
      char buf[64];
      while (::read(wake[0], buf, sizeof buf) > 0) {
      }
    }
  }

  void run() {
    sigset_t pipe_set;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, nullptr);

    bool draining = false;
    Clock::time_point drain_deadline{};
    for (;;) {
      auto now = Clock::now();
      if (!draining && stopping.load()) {
        draining = true;
        drain_deadline = now + opt.drain_timeout;
      }
      if (session)
        if (auto s = check_alive(*session); !s) lose_session(s.issue().diagnostics);
      confirm(now);
      persist(false);

      bool more = false;
      bool caught_up = false;
      bool waiting_rows = false;
      // While backing off, only ask whether anything is waiting.
      const bool may_send = session != nullptr || now >= next_connect;
      auto rows = fetch(next_send, may_send ? opt.batch_size : 1);
      if (!rows) {
        note_error("cannot read audit.db: " + rows.issue().diagnostics, "audit forwarder cannot read");
      } else if (rows->empty()) {
        caught_up = true;
      } else {
        waiting_rows = true;
        auto deadline = now + opt.io_timeout;
        if (draining) deadline = std::min(deadline, drain_deadline);
        if (may_send && !session) connect(deadline);
        if (may_send && session) more = send(*rows, deadline);
      }
      publish();
      if (draining && (caught_up || Clock::now() >= drain_deadline)) {
        finish();
        return;
      }
      if (more) continue;
      auto until = Clock::now() + opt.poll_interval;
      if (!pending.empty() && pending.front().acked_at)
        until = std::min(until, *pending.front().acked_at + opt.resend_window);
      if (waiting_rows && !session) until = std::min(until, next_connect);
      if (draining) until = std::min(until, drain_deadline);
      wait(until);
    }
  }
};

Forwarder::Forwarder(ForwarderOptions options) : options_(std::move(options)) {}

Forwarder::~Forwarder() { stop(); }

namespace {

// The option checks start() and check() share (`database` is start()'s alone).
fhir::Status check_options(const ForwarderOptions& o) {
  using std::chrono::milliseconds;
  if (o.name.empty()) return invalid("name", "give each receiver a name for its cursor");
  if (o.host.empty()) return invalid("host", "the receiver's host name or address is required");
  if (o.port == 0) return invalid("port", "must be 1..65535");
  if (o.ca_file.empty()) return invalid("ca_file", "a CA bundle to verify the receiver is required");
  if (o.client_certificate.empty() != o.client_key.empty())
    return invalid("client_certificate", "give both client_certificate and client_key, or neither");
  if (o.app_name.empty()) return invalid("app_name", "must not be empty");
  if (!valid_sd_name(o.sd_id)) return invalid("sd_id", "must be 1..32 printable ASCII characters without '=', ' ', ']' or '\"'");
  if (o.facility < 0 || o.facility > 23) return invalid("facility", "must be 0..23 (RFC 5424 6.2.1)");
  if (o.batch_size == 0 || o.batch_size > 10'000) return invalid("batch_size", "must be 1..10000");
  if (o.max_message_bytes < kMinMessageBytes || o.max_message_bytes > kMaxMessageBytes)
    return invalid("max_message_bytes", "must be 2048..1048576");
  if (o.poll_interval <= milliseconds(0)) return invalid("poll_interval", "must be positive");
  if (o.io_timeout <= milliseconds(0)) return invalid("io_timeout", "must be positive");
  if (o.drain_timeout < milliseconds(0)) return invalid("drain_timeout", "must not be negative");
  if (o.resend_window < milliseconds(0)) return invalid("resend_window", "must not be negative");
  if (o.backoff_min <= milliseconds(0) || o.backoff_max < o.backoff_min)
    return invalid("backoff_min", "backoff must be positive and backoff_max at least backoff_min");
  return fhir::Ok{};
}

// "<what> <path>: <OpenSSL's reason>" (e.g. "key values mismatch" for a key that is not the
// certificate's), as the HTTPS listener reports its own files: the operator sees which file
// and why.
std::string tls_file_error(const char* what, const std::string& path) {
  const unsigned long e = ERR_peek_last_error();
  const char* reason = e != 0 ? ERR_reason_error_string(e) : nullptr;
  std::string text = what;
  text.append(" ").append(path).append(": ").append(reason ? reason : "not a readable PEM file");
  return text;
}

// The client TLS context: protocol floor, ciphers, the CA and the client credentials.
fhir::Status configure_tls(SSL_CTX* ctx, const ForwarderOptions& opt) {
  ERR_clear_error();  // the reasons reported below are this function's own
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (SSL_CTX_set_cipher_list(ctx, kTls12Ciphers) != 1)
    return Issue::make(ErrorCode::internal_error, "OpenSSL rejected the cipher list");
  if (SSL_CTX_load_verify_locations(ctx, opt.ca_file.c_str(), nullptr) != 1)
    return invalid("ca_file", tls_file_error("cannot load the PEM CA bundle", opt.ca_file));
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  if (!opt.client_certificate.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx, opt.client_certificate.c_str()) != 1)
      return invalid("client_certificate",
                     tls_file_error("cannot load the PEM certificate chain", opt.client_certificate));
    // OpenSSL checks the key against the certificate as it loads it: a key of the wrong pair
    // fails here with "key values mismatch".
    if (SSL_CTX_use_PrivateKey_file(ctx, opt.client_key.c_str(), SSL_FILETYPE_PEM) != 1)
      return invalid("client_key", tls_file_error("cannot load the PEM private key", opt.client_key));
    if (SSL_CTX_check_private_key(ctx) != 1)
      return invalid("client_key", "the private key " + opt.client_key + " does not match the client certificate " +
                                       opt.client_certificate);
  }
  return fhir::Ok{};
}

}  // namespace

fhir::Status Forwarder::check(const ForwarderOptions& o) {
  if (auto st = check_options(o); !st) return st;
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_client_method()), &SSL_CTX_free);
  if (!ctx) return Issue::make(ErrorCode::internal_error, "cannot create a TLS context");
  auto st = configure_tls(ctx.get(), o);
  ERR_clear_error();
  return st;
}

fhir::Result<std::unique_ptr<Forwarder>> Forwarder::start(ForwarderOptions o) {
  if (o.database.empty()) return invalid("database", "the audit.db path is required");
  if (auto st = check_options(o); !st) return std::move(st).issue();

  std::unique_ptr<Forwarder> f(new Forwarder(o));
  f->impl_ = std::make_unique<Impl>();
  Impl& impl = *f->impl_;
  impl.opt = std::move(o);
  const ForwarderOptions& opt = impl.opt;

  impl.ctx = SSL_CTX_new(TLS_client_method());
  if (impl.ctx == nullptr) return Issue::make(ErrorCode::internal_error, "cannot create a TLS context");
  if (auto st = configure_tls(impl.ctx, opt); !st) return std::move(st).issue();
  ERR_clear_error();

  // Read-only first: a wrong path must not create an empty database.
  auto size_of_log = [&]() -> fhir::Result<std::uint64_t> {
    auto db = sqlite::Database::open(opt.database, sqlite::Database::Mode::read_only);
    if (!db) return std::move(db).issue();
    auto st = db->prepare("SELECT COALESCE(MAX(seq) + 1, 0) FROM audit_record");
    if (!st) return Issue::make(ErrorCode::not_ready, "audit.db has no audit log yet: open the audit log first");
    auto row = st->step();
    if (!row) return std::move(row).issue();
    return static_cast<std::uint64_t>(st->column_int64(0));
  };
  auto size = size_of_log();
  if (!size) return std::move(size).issue();
  auto cdb = sqlite::Database::open(opt.database);
  if (!cdb) return std::move(cdb).issue();
  impl.cursor_db.emplace(std::move(*cdb));
  // (The statement is finalised here, before the thread takes the connection over.)
  auto stored = [&]() -> fhir::Result<std::optional<std::uint64_t>> {
    auto sel = impl.cursor_db->prepare("SELECT seq FROM audit_forward_cursor WHERE name = ?1");
    if (!sel) return Issue::make(ErrorCode::not_ready, "audit.db has no forwarding cursor table: open the audit log first");
    sel->bind(1, opt.name);
    auto row = sel->step();
    if (!row) return std::move(row).issue();
    if (!*row) return std::optional<std::uint64_t>();
    return std::optional<std::uint64_t>(static_cast<std::uint64_t>(sel->column_int64(0)));
  }();
  if (!stored) return std::move(stored).issue();
  std::uint64_t cursor = stored->value_or(opt.from_start ? 0 : *size);
  bool save = !stored->has_value();  // a first start with from_start=false must not skip what comes next
  if (cursor > *size) {
    // The log is shorter than what was already forwarded: an older copy of audit.db was
    // restored. Forward from its end; the SIEM will see sequence numbers again.
    observe::log(observe::Level::error, "audit forwarding cursor is past the end of the audit log (restored database?)",
                 {{"forwarder", opt.name}, {"cursor", cursor}, {"log_size", *size}});
    cursor = *size;
    save = true;
  }
  if (save)
    if (auto s = impl.save_cursor(cursor); !s) return std::move(s).issue();
  impl.confirmed = impl.persisted = impl.next_send = impl.high_water = cursor;
  impl.backoff = opt.backoff_min;
  impl.hostname = opt.hostname.empty() ? local_hostname() : opt.hostname;
  impl.procid = std::to_string(::getpid());
  impl.local.cursor = cursor;
  impl.shared = impl.local;

  if (::pipe2(impl.wake, O_NONBLOCK | O_CLOEXEC) != 0)
    return Issue::make(ErrorCode::internal_error, "cannot create the forwarder's wake-up pipe");
  impl.thread = std::thread([&impl] {
    observe::name_this_thread("gw-audit-fwd");
    impl.run();
  });
  return f;
}

void Forwarder::notify() {
  if (!impl_) return;
  const char one = 1;
  // A full pipe already guarantees a wake-up.
  [[maybe_unused]] auto n = ::write(impl_->wake[1], &one, 1);
}

void Forwarder::stop() {
  if (!impl_) return;
  std::lock_guard lock(impl_->stop_mu);
  impl_->stopping.store(true);
  notify();
  if (impl_->thread.joinable()) impl_->thread.join();
}

ForwarderStats Forwarder::stats() const {
  std::lock_guard lock(impl_->stats_mu);
  return impl_->shared;
}

}  // namespace gw::audit
