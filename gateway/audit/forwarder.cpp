// SPDX-License-Identifier: Apache-2.0
// The audit forwarder: reads stored records, has them formatted as RFC 5424 messages
// (syslog_format.cpp) and writes them to a SIEM over TLS (RFC 5425, syslog_tls_session.h) from
// its own thread, confirming delivery as forwarder.h describes. The thread polls the socket, a
// wake-up pipe and the clock at once, so every wait has a deadline.
#include "gateway/audit/forwarder.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "gateway/audit/syslog_tls_session.h"
#include "gateway/observe/log.h"
#include "gateway/observe/thread_name.h"
#include "gateway/sqlite/database.h"

namespace gw::audit {

using fhir::ErrorCode;
using fhir::Issue;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::size_t kMaxWriteBytes = 1024 * 1024;     // bytes handed to TLS per round
constexpr auto kCursorPersistInterval = std::chrono::seconds(1);
constexpr auto kCloseTimeout = std::chrono::seconds(2);
constexpr auto kErrorLogInterval = std::chrono::seconds(60);
constexpr auto kCoalesceWrites = std::chrono::milliseconds(100);

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

std::string local_hostname() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "-";
  return buf;
}

}  // namespace

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
  std::unique_ptr<SyslogTlsSession> session;
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
    local.saved_cursor = persisted;
    local.connected = session != nullptr;
    std::lock_guard lock(stats_mu);
    shared = local;
  }

  // How many committed records the SIEM does not hold for certain (the log's head minus the
  // cursor, as /metrics shows it), for the warnings: an operator reading the log sees the
  // backlog a receiver that stays down builds up. -1 when audit.db cannot be read.
  std::int64_t backlog() {
    if (!reader) {
      auto db = sqlite::Database::open(opt.database, sqlite::Database::Mode::read_only);
      if (!db) return -1;
      reader.emplace(std::move(*db));
    }
    auto st = reader->prepare("SELECT coalesce(max(seq) + 1, 0) FROM audit_record");
    if (!st) return -1;
    auto row = st->step();
    if (!row || !*row) return -1;
    const auto head = static_cast<std::uint64_t>(st->column_int64(0));
    return static_cast<std::int64_t>(head - std::min(head, confirmed));
  }

  void note_error(std::string text, const char* what) {
    local.last_error = text;
    const auto now = Clock::now();
    if (text != logged_error || now - logged_at >= kErrorLogInterval) {
      observe::log(observe::Level::warn, what,
                   {{"forwarder", opt.name}, {"error", text}, {"cursor", confirmed}, {"backlog", backlog()},
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
                 {{"forwarder", opt.name}, {"error", error}, {"unconfirmed", unconfirmed}, {"cursor", confirmed},
                  {"backlog", backlog()}});
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
      // Pruned before they were forwarded: retention stops at the cursor (the gateway passes it
      // to Log::prune_before), so only what was pruned before this receiver's cursor existed.
      if (row.seq > gap_from) skipped += row.seq - gap_from;
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
  impl.local.cursor = impl.local.saved_cursor = cursor;
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
