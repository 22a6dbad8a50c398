// SPDX-License-Identifier: Apache-2.0
// Shape follows Beast's advanced_server_flex_awaitable example: listener -> detect TLS ->
// TLS or plain session, explicit limits, one place that classifies failures.
#include "gateway/net/server.h"
#include "gateway/net/http_date.h"

#if GW_WITH_TLS
#include <openssl/ssl.h>
#include <openssl/x509.h>
#endif

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstring>
#include <ctime>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <thread>
#include <tuple>
#include <type_traits>
#include <unordered_map>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <vector>

#include <boost/asio/signal_set.hpp>
#if GW_WITH_TLS
#include <boost/asio/ssl/stream.hpp>
#endif
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/detect_ssl.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#if GW_WITH_TLS
#include <boost/beast/ssl/ssl_stream.hpp>

#include "gateway/net/peer_subject.h"
#endif
#include "fhir/nhs_number.h"
#include "fhir/query_string.h"
#include "gateway/observe/log.h"
#include "gateway/observe/thread_name.h"

namespace gw::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using asio::awaitable;
using asio::ip::tcp;
using boost::system::error_code;
using Strand = asio::strand<asio::io_context::executor_type>;

namespace {

auto nothrow(error_code& ec) { return asio::redirect_error(asio::use_awaitable, ec); }

// The longest request target an audit record keeps of a refused request (the pipeline keeps
// as much of any target, after redaction).
constexpr std::size_t kMaxAuditedTarget = 4096;

std::string new_request_id() {
  // UUID version 4 (RFC 4122 section 4.4).
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uint64_t hi = rng(), lo = rng();
  hi = (hi & 0xFFFFFFFFFFFF0FFFULL) | 0x0000000000004000ULL;
  lo = (lo & 0x3FFFFFFFFFFFFFFFULL) | 0x8000000000000000ULL;
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id(36, '-');
  int pos = 0;
  auto put = [&](std::uint64_t v, int nibbles) {
    for (int k = nibbles - 1; k >= 0; --k) id[static_cast<std::size_t>(pos++)] = kHex[(v >> (k * 4)) & 0xF];
  };
  put(hi >> 32, 8);
  ++pos;
  put(hi >> 16, 4);
  ++pos;
  put(hi, 4);
  ++pos;
  put(lo >> 48, 4);
  ++pos;
  put(lo, 12);
  return id;
}

// Client-supplied ids are mirrored only when short and made of safe characters, so they can
// go into logs and headers without escaping surprises. A refused X-Request-ID is replaced by a
// generated one. An id holding an NHS number (a caller keying its ids by patient) is still
// mirrored, but log lines give it without the number (Request::logged_request_id): about one
// random 10-digit run in eleven passes the check digit, epoch seconds included.
bool acceptable_id(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id)
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
          c == '.' || c == ':'))
      return false;
  return true;
}

// "HTTP/1.1 200 OK\r\n".
void append_status_line(std::string& out, unsigned version, int status) {
  out.append(version >= 11 ? "HTTP/1.1 " : "HTTP/1.0 ");
  out.append(std::to_string(status));
  out.push_back(' ');
  const auto reason = bhttp::obsolete_reason(static_cast<bhttp::status>(status));
  out.append(reason.data(), reason.size());
  out.append("\r\n");
}

// "Name: value\r\n". Values come from the gateway's own code, but a CR or LF in one would
// split the header block, so they become spaces.
void append_field(std::string& out, std::string_view name, std::string_view value) {
  out.append(name);
  out.append(": ");
  if (!std::memchr(value.data(), '\r', value.size()) && !std::memchr(value.data(), '\n', value.size())) {
    out.append(value);
  } else {
    for (char c : value) out.push_back(c == '\r' || c == '\n' ? ' ' : c);
  }
  out.append("\r\n");
}

const std::string& http_date() {
  thread_local std::time_t cached_second = 0;
  thread_local std::string cached;
  std::time_t now = std::time(nullptr);
  if (now != cached_second) {
    cached = format_http_date(now);
    cached_second = now;
  }
  return cached;
}


struct ConnectionInfo {
  std::string remote_address;
  std::string client_subject;
  bool tls = false;
};

// What the session loop tells its caller about a protocol failure.
struct ProtocolFailure {
  fhir::Issue issue;
  const char* kind;
};

// One periodic timer per connection enforces the idle, read and write timeouts. Moving a
// deadline is a plain store, so a keep-alive request costs no timer operations (Beast's
// per-operation expiry arms and cancels a timer for every read and write). Strand-only.
struct Watchdog {
  enum class Action { close, cancel };  // cancel: abort the read but keep the socket for a 408
  using Clock = std::chrono::steady_clock;

  Watchdog(const asio::any_io_executor& ex, beast::tcp_stream* s) : timer(ex), stream(s) {}

  void arm(std::chrono::milliseconds after, Action a) {
    deadline = Clock::now() + after;
    action = a;
    fired = false;
  }
  void disarm() { deadline = Clock::time_point::max(); }
  void stop() {
    stopped = true;
    stream = nullptr;
    timer.cancel();
  }

  asio::steady_timer timer;
  beast::tcp_stream* stream;
  Clock::time_point deadline = Clock::time_point::max();
  Action action = Action::close;
  bool fired = false;
  bool stopped = false;
};

void run_watchdog(std::shared_ptr<Watchdog> w, std::chrono::milliseconds every) {
  w->timer.expires_after(every);
  w->timer.async_wait([w, every](error_code ec) {
    if (ec || w->stopped) return;
    if (w->stream && Watchdog::Clock::now() >= w->deadline) {
      w->fired = true;
      w->disarm();
      error_code ignored;
      if (w->action == Watchdog::Action::cancel) w->stream->socket().cancel(ignored);
      else w->stream->socket().close(ignored);
    }
    run_watchdog(std::move(w), every);
  });
}

// Checked often enough that the shortest timeout is honoured to within a quarter of itself.
std::chrono::milliseconds watchdog_tick(const config::Limits& l) {
  auto shortest = std::min({l.idle_timeout, l.read_timeout, l.write_timeout});
  return std::clamp(shortest / 4, std::chrono::milliseconds(10), std::chrono::milliseconds(1000));
}

// Feeds already-buffered bytes to the parser. True when a whole request was parsed; false
// with `ec` clear when more bytes are needed; false with `ec` set on a malformed request.
bool parse_buffered(bhttp::request_parser<bhttp::string_body>& parser, beast::flat_buffer& buffer, error_code& ec) {
  while (buffer.size() > 0 && !parser.is_done()) {
    std::size_t used = parser.put(buffer.data(), ec);
    buffer.consume(used);
    if (ec == bhttp::error::need_more) {
      ec = {};
      return false;
    }
    if (ec) return false;
    if (used == 0) return false;
  }
  return parser.is_done();
}

// Feeds the buffered bytes of a request's header section (request line, fields, blank line) to
// the parser, never more than `limit` bytes of it in all. Beast alone applies its header limit
// to each put's unconsumed bytes, and consumes the request line and each whole field as they
// arrive, so a header read in several pieces could exceed the limit by about a read's size.
// `consumed`: header bytes the parser has taken so far. Returns true when the header section is
// complete; false with `ec` clear when more bytes are needed; false with `ec` set on a malformed
// header or `header_limit` when the section does not end within `limit` bytes.
bool feed_header(bhttp::request_parser<bhttp::string_body>& parser, beast::flat_buffer& buffer, std::size_t& consumed,
                 std::size_t limit, error_code& ec) {
  while (!parser.is_header_done()) {
    const std::size_t allowed = limit - consumed;
    const std::size_t window = std::min(buffer.size(), allowed);
    if (window == 0) {
      if (allowed == 0) ec = bhttp::error::header_limit;
      return false;
    }
    const std::size_t used = parser.put(asio::const_buffer(buffer.data().data(), window), ec);
    buffer.consume(used);
    consumed += used;
    if (ec == bhttp::error::need_more) {
      ec = {};
      // Every byte the limit allows was offered and the header section is still open.
      if (window == allowed) ec = bhttp::error::header_limit;
      return false;
    }
    if (ec) return false;
    if (used == 0) return false;
  }
  return true;
}

bool peer_went_away(const error_code& ec) {
#if GW_WITH_TLS
  if (ec == asio::ssl::error::stream_truncated) return true;
#endif
  return ec == bhttp::error::end_of_stream || ec == asio::error::eof || ec == asio::error::connection_reset ||
         ec == asio::error::operation_aborted;
}

// `line_parsed`: the parser got past the request line. When it did not, the line alone
// outgrew the header limit: that is a URL too long (414, RFC 9110 section 15.5.15), which a
// client fixes differently from too many or too large header fields (431).
ProtocolFailure classify(const error_code& ec, bool timed_out, bool line_parsed) {
  using fhir::ErrorCode;
  if (timed_out)
    return {fhir::Issue::make(ErrorCode::request_timeout,
                              "The request was not received completely in time (is Content-Length larger than "
                              "the body?)"),
            "request_timeout"};
  if ((ec == bhttp::error::header_limit || ec == bhttp::error::buffer_overflow) && !line_parsed)
    return {fhir::Issue::make(ErrorCode::uri_too_long,
                              "The request URL exceeds the server's limit; shorten it, or send the search "
                              "parameters in the body of POST [type]/_search"),
            "uri_too_long"};
  if (ec == bhttp::error::header_limit || ec == bhttp::error::buffer_overflow)
    return {fhir::Issue::make(ErrorCode::headers_too_large, "Request headers exceed the server's limit"),
            "headers_too_large"};
  if (ec == bhttp::error::body_limit)
    return {fhir::Issue::make(ErrorCode::payload_too_large, "Request body exceeds the server's limit"),
            "body_too_large"};
  return {fhir::Issue::make(ErrorCode::bad_request, "Malformed HTTP request: " + ec.message()), "malformed_http"};
}

// True for an RFC 9112 section 6.1 Transfer-Encoding the gateway frames a body by: one field
// line whose value is the single coding "chunked" (any case, with optional whitespace around
// it). Beast frames a request as chunked only when "chunked" occurs once and last, and takes
// anything else as "no body"; "chunked, chunked" (which RFC 9112 forbids: chunked is never
// applied twice) ends in "chunked" yet is framed as no body, so a check of the last coding alone
// would let its body through as the next request.
bool chunked_alone(const bhttp::fields& fields) {
  if (fields.count(bhttp::field::transfer_encoding) != 1) return false;
  std::string_view v = fields.find(bhttp::field::transfer_encoding)->value();
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return beast::iequals(v, "chunked");
}

// True for a Host value that is an RFC 3986 uri-host with an optional port (RFC 9112 section
// 3.2, RFC 9110 section 7.2): a reg-name (unreserved, %-encoded and sub-delims characters) or
// an IP literal in brackets, then ":" and digits. Empty is valid (a target without authority).
bool valid_host(std::string_view h) {
  auto unreserved_or_sub = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || std::string_view("-._~!$&'()*+,;=").find(c) != std::string_view::npos;
  };
  auto hex = [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; };
  std::size_t i = 0;
  if (!h.empty() && h.front() == '[') {
    const std::size_t close = h.find(']');
    if (close == std::string_view::npos || close == 1) return false;
    for (char c : h.substr(1, close - 1))
      if (!unreserved_or_sub(c) && c != ':') return false;
    i = close + 1;
  } else {
    while (i < h.size() && h[i] != ':') {
      if (h[i] == '%') {
        if (i + 2 >= h.size() || !hex(h[i + 1]) || !hex(h[i + 2])) return false;
        i += 3;
      } else if (unreserved_or_sub(h[i])) {
        ++i;
      } else {
        return false;
      }
    }
  }
  if (i == h.size()) return true;
  if (h[i] != ':') return false;
  for (char c : h.substr(i + 1))
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  return true;
}

// A parsed request whose framing or Host the gateway will not trust, or nothing. Beast frames
// a request by a final "chunked" coding or by Content-Length, and takes any other
// Transfer-Encoding as "no body": the body would then be read as the next request (request
// smuggling behind a proxy that frames it differently). RFC 9112 section 6.3 item 4 asks 400
// and a closed connection for that, section 6.1 treats Transfer-Encoding in HTTP/1.0 and next
// to Content-Length as faulty framing, and section 3.2 asks 400 for a request with more than
// one Host or an invalid one, and for an HTTP/1.1 request with none. `parser_chunked`: whether
// the parser itself framed the body as chunked (both must agree).
std::optional<ProtocolFailure> framing_failure(const bhttp::request<bhttp::string_body>& msg, bool parser_chunked) {
  using fhir::ErrorCode;
  const bool has_te = msg.find(bhttp::field::transfer_encoding) != msg.end();
  if (has_te && (!chunked_alone(msg) || !parser_chunked || msg.version() < 11 ||
                 msg.find(bhttp::field::content_length) != msg.end()))
    return ProtocolFailure{fhir::Issue::make(ErrorCode::bad_request,
                                             "Transfer-Encoding must be exactly \"chunked\" (one field, one "
                                             "coding), in HTTP/1.1, without Content-Length; send the body with "
                                             "Content-Length or chunked alone"),
                           "bad_transfer_encoding"};
  const std::size_t hosts = msg.count(bhttp::field::host);
  if (hosts > 1 || (msg.version() >= 11 && hosts == 0))
    return ProtocolFailure{fhir::Issue::make(ErrorCode::bad_request,
                                             "A request carries at most one Host header, and an HTTP/1.1 request "
                                             "exactly one (RFC 9112 section 3.2)"),
                           "bad_host"};
  if (hosts == 1 && !valid_host(msg.find(bhttp::field::host)->value()))
    return ProtocolFailure{fhir::Issue::make(ErrorCode::bad_request,
                                             "The Host header must be a host name or IP address with an optional "
                                             ":port (RFC 9112 section 3.2)"),
                           "bad_host"};
  return std::nullopt;
}

// The header fields into `req`, names lower-cased as the pipeline looks them up.
void copy_headers(const bhttp::fields& fields, http::Request& req) {
  for (const auto& field : fields) {
    std::string name(field.name_string());
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    req.headers.emplace_back(std::move(name), std::string(field.value()));
  }
}

// A method as the audit may keep it: an RFC 9110 token of at most 20 characters, else "-".
std::string method_token(std::string_view m) {
  if (m.empty() || m.size() > 20) return "-";
  for (char c : m)
    if (!std::isalnum(static_cast<unsigned char>(c)) && std::string_view("!#$%&'*+-.^_`|~").find(c) == std::string_view::npos)
      return "-";
  return std::string(m);
}

// The method and target of the request line at the start of `raw` (the bytes received so far),
// for a request refused before the parser got past it (oversized headers, a malformed line).
// Only visible ASCII is kept. A line that does not end within `max_bytes` is cut back to its
// last delimiter, so no fragment of a credential that the audit's redaction would no longer
// recognise is kept.
std::pair<std::string, std::string> raw_request_line(std::string_view raw, std::size_t max_bytes) {
  raw = raw.substr(0, std::min(raw.size(), max_bytes));
  const bool cut = raw.find_first_of("\r\n") == std::string_view::npos;
  std::string_view line = raw.substr(0, raw.find_first_of("\r\n"));
  const std::size_t sp = line.find(' ');
  if (sp == std::string_view::npos) return {method_token(line), {}};
  std::string_view target = line.substr(sp + 1);
  if (cut) target = target.substr(0, target.find_last_of("/?&=;,") + 1);
  else if (const std::size_t v = target.rfind(" HTTP/"); v != std::string_view::npos) target = target.substr(0, v);
  else target = target.substr(0, target.find(' '));
  std::string out(target);
  for (char& c : out)
    if (c < 0x21 || c > 0x7e) c = '?';
  return {method_token(line.substr(0, sp)), std::move(out)};
}

}  // namespace

// Per-connection handle the server uses to close idle connections when draining. Touched
// only on the connection's strand.
struct SessionControl {
  explicit SessionControl(Strand s) : strand(std::move(s)) {}
  Strand strand;
  beast::tcp_stream* stream = nullptr;
  bool idle = false;
};

struct Server::Impl {
  Impl(const config::Config& c, const http::Pipeline& p, observe::Metrics& m, observe::Health& h,
       std::shared_ptr<asio::ssl::context> t)
      : cfg(c), pipeline(p), metrics(m), health(h), workers(make_workers(c.threads)), ioc(1), tls(std::move(t)),
        signals(ioc), hangup(ioc), drain_timer(ioc) {}

  static std::vector<std::unique_ptr<asio::io_context>> make_workers(unsigned threads) {
    std::vector<std::unique_ptr<asio::io_context>> w;
    for (unsigned t = 1; t < std::max(1u, threads); ++t) w.push_back(std::make_unique<asio::io_context>(1));
    return w;
  }

  const config::Config& cfg;
  const std::string hsts = "max-age=" + std::to_string(cfg.https.hsts_max_age.count());  // after cfg
  const http::Pipeline& pipeline;
  observe::Metrics& metrics;
  observe::Health& health;
  // One io_context per thread, each run by its own thread (as nginx runs one worker per
  // core): a connection lives on one thread from accept to close, with no scheduler shared
  // between threads. `ioc` (the first) also holds the acceptors, signals, the drain timer and
  // the adapters' listeners; connections are dealt round-robin to all of them.
  // `workers` is declared before `ioc` so that it is destroyed after it: the accept loops'
  // frames, destroyed with `ioc`, hold a strand on the next connection's context.
  std::vector<std::unique_ptr<asio::io_context>> workers;  // the other threads' contexts
  asio::io_context ioc;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> keep_running;
  std::size_t next_worker = 0;  // only the accept loops (on ioc) use it
  std::shared_ptr<asio::ssl::context> tls;  // from check_startup (App)
  std::optional<tcp::acceptor> https_acceptor;
  std::optional<tcp::acceptor> http_acceptor;
  asio::signal_set signals;
  asio::signal_set hangup;  // SIGHUP, apart: it never begins the drain
  std::function<void()> on_hangup;
  asio::steady_timer drain_timer;
  std::atomic<bool> stopping{false};
  std::chrono::steady_clock::time_point drain_deadline;
  struct DrainParticipant {
    std::function<void()> begin;
    std::function<std::size_t()> in_flight;
  };
  std::vector<DrainParticipant> participants;

  // The context of the next connection (called on ioc only).
  asio::io_context& next_context() {
    const std::size_t k = next_worker++ % (workers.size() + 1);
    return k == 0 ? ioc : *workers[k - 1];
  }

  void stop_all() {
    ioc.stop();
    for (auto& w : workers) w->stop();
  }

  std::mutex sessions_mu;
  std::unordered_map<std::uint64_t, std::shared_ptr<SessionControl>> sessions;
  std::uint64_t next_session = 0;

  tcp::acceptor bind(const std::string& address, std::uint16_t port) {
    error_code ec;
    auto addr = asio::ip::make_address(address == "localhost" ? "127.0.0.1" : address, ec);
    if (ec) throw std::runtime_error("invalid listen address " + address);
    tcp::endpoint ep(addr, port);
    tcp::acceptor acc(ioc);
    acc.open(ep.protocol(), ec);
    if (!ec) acc.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acc.bind(ep, ec);
    if (!ec) acc.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) throw std::runtime_error("cannot listen on " + address + ":" + std::to_string(port) + ": " + ec.message());
    return acc;
  }

  awaitable<void> accept_loop(tcp::acceptor& acceptor, bool tls_port) {
    for (;;) {
      Strand strand = asio::make_strand(next_context());
      tcp::socket socket(strand);
      error_code ec;
      co_await acceptor.async_accept(socket, nothrow(ec));
      if (stopping) co_return;
      if (ec) {
        if (ec == asio::error::operation_aborted) co_return;
        observe::log(observe::Level::warn, "accept failed", {{"error", ec.message()}});
        // Out of descriptors and similar: back off rather than spin.
        asio::steady_timer pause(co_await asio::this_coro::executor, std::chrono::milliseconds(100));
        co_await pause.async_wait(nothrow(ec));
        continue;
      }
      // Without TCP_NODELAY, Nagle + delayed ACK adds ~40 ms to the first response on each
      // new TLS connection (the handshake's small writes wait for an ACK).
      socket.set_option(tcp::no_delay(true), ec);
      if (static_cast<std::size_t>(metrics.open_connections()) >= cfg.limits.max_connections) {
        metrics.connection_rejected();
        socket.close(ec);
        continue;
      }
      auto control = std::make_shared<SessionControl>(strand);
      std::uint64_t id;
      {
        std::lock_guard lock(sessions_mu);
        id = next_session++;
        sessions.emplace(id, control);
      }
      metrics.connection_opened();
      asio::co_spawn(strand, session(std::move(socket), tls_port, control),
                     [this, id](std::exception_ptr e) {
                       if (e) {
                         try {
                           std::rethrow_exception(e);
                         } catch (const std::exception& ex) {
                           observe::log(observe::Level::error, "session failed", {{"error", ex.what()}});
                         } catch (...) {
                         }
                       }
                       metrics.connection_closed();
                       std::lock_guard lock(sessions_mu);
                       sessions.erase(id);
                     });
    }
  }

  awaitable<void> session(tcp::socket socket, bool tls_port, std::shared_ptr<SessionControl> control) {
    ConnectionInfo info;
    error_code ec;
    auto remote = socket.remote_endpoint(ec);
    if (!ec) info.remote_address = remote.address().to_string();
    beast::tcp_stream stream(std::move(socket));
    control->stream = &stream;
    beast::flat_buffer buffer(cfg.limits.max_header_bytes + 8192);

#if GW_WITH_TLS
    if (!tls_port) {
#else
    {
#endif
      co_await serve(stream, stream, buffer, info, *control, false);
      co_await close_plain(stream);
      control->stream = nullptr;
      co_return;
    }
#if GW_WITH_TLS
    stream.expires_after(cfg.limits.read_timeout);
    bool is_tls = co_await beast::async_detect_ssl(stream, buffer, nothrow(ec));
    if (ec) {
      control->stream = nullptr;
      co_return;
    }
    if (!is_tls) {
      metrics.protocol_error("plain_http_on_tls_port");
      co_await serve(stream, stream, buffer, info, *control, true);
      co_await close_plain(stream);
      control->stream = nullptr;
      co_return;
    }
    // The TLS stream takes over the TCP stream; the control handle follows it.
    beast::ssl_stream<beast::tcp_stream> tls_stream(std::move(stream), *tls);
    beast::tcp_stream& lowest = tls_stream.next_layer();
    control->stream = &lowest;
    lowest.expires_after(cfg.limits.read_timeout);
    std::size_t used = co_await tls_stream.async_handshake(asio::ssl::stream_base::server, buffer.data(), nothrow(ec));
    if (ec) {
      metrics.protocol_error("tls_handshake");
      observe::log(observe::Level::debug, "TLS handshake failed", {{"error", ec.message()}});
      control->stream = nullptr;
      co_return;
    }
    buffer.consume(used);
    info.tls = true;
    info.client_subject = verified_peer_subject(tls_stream.native_handle());
    co_await serve(tls_stream, lowest, buffer, info, *control, false);
    lowest.expires_after(std::chrono::seconds(1));
    co_await tls_stream.async_shutdown(nothrow(ec));
    lowest.close();
    control->stream = nullptr;
#endif
  }

  // Half-closes and drains briefly so the peer reads our last response before the socket
  // closes (closing with unread input would send RST and could destroy that response).
  awaitable<void> close_plain(beast::tcp_stream& stream) {
    error_code ec;
    stream.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream.expires_after(std::chrono::milliseconds(500));
    char sink[4096];
    for (int i = 0; i < 16 && !ec; ++i) co_await stream.async_read_some(asio::buffer(sink), nothrow(ec));
    stream.close();
  }

  template <class Stream>
  awaitable<void> serve(Stream& stream, beast::tcp_stream& lowest, beast::flat_buffer& buffer,
                        const ConnectionInfo& info, SessionControl& control, bool tls_required) {
    std::size_t served = 0;
    lowest.expires_never();  // timeouts from here on are the watchdog's
    auto watchdog = std::make_shared<Watchdog>(lowest.get_executor(), &lowest);
    run_watchdog(watchdog, watchdog_tick(cfg.limits));
    struct StopOnExit {
      std::shared_ptr<Watchdog> w;
      ~StopOnExit() { w->stop(); }
    } stop_watchdog{watchdog};
    for (;;) {
      error_code ec;
      // Wait for the first byte of the next request under the idle timeout. A drain closes
      // connections waiting here; the flag is checked on the strand, so none is missed.
      if (buffer.size() == 0) {
        if (stopping) co_return;
        control.idle = true;
        watchdog->arm(cfg.limits.idle_timeout, Watchdog::Action::close);
        std::size_t n = co_await stream.async_read_some(buffer.prepare(4096), nothrow(ec));
        watchdog->disarm();
        control.idle = false;
        if (ec) co_return;
        buffer.commit(n);
      }

      bhttp::request_parser<bhttp::string_body> parser;
      parser.header_limit(static_cast<std::uint32_t>(cfg.limits.max_header_bytes));
      parser.body_limit(cfg.limits.max_body_bytes);
      parser.eager(true);
      // Fast path: a keep-alive request usually arrives whole in one read; parse it straight
      // from the buffer, with no deadline timer and no composed read operation. Otherwise the
      // rest is read under the read timeout: the watchdog cancels the read instead of closing
      // the socket, so a 408 can still be sent. The header section is read here, counted
      // against max_header_bytes as a whole; the body by Beast.
      bool timed_out = false;
      bool armed = false;
      std::size_t header_consumed = 0;
      const std::size_t header_limit = cfg.limits.max_header_bytes;
      while (!feed_header(parser, buffer, header_consumed, header_limit, ec) && !ec) {
        if (!armed) watchdog->arm(cfg.limits.read_timeout, Watchdog::Action::cancel);
        armed = true;
        std::size_t n = co_await stream.async_read_some(buffer.prepare(4096), nothrow(ec));
        if (ec) {
          if (ec == asio::error::eof) ec = bhttp::error::partial_message;  // as Beast's read says it
          break;
        }
        buffer.commit(n);
      }
      if (!ec && !parse_buffered(parser, buffer, ec) && !ec) {
        if (!armed) watchdog->arm(cfg.limits.read_timeout, Watchdog::Action::cancel);
        armed = true;
        co_await bhttp::async_read(stream, buffer, parser, nothrow(ec));
      }
      if (armed) {
        timed_out = watchdog->fired;
        watchdog->disarm();
      }
      const auto received = std::chrono::steady_clock::now();

      if (ec || tls_required) {
        if (!timed_out && !tls_required && peer_went_away(ec))
          co_return;  // the peer went away (or a drain closed it); nobody to answer
        ProtocolFailure f =
            tls_required ? ProtocolFailure{fhir::Issue::make(fhir::ErrorCode::tls_required,
                                                             "This port speaks HTTPS only; use https:// with the "
                                                             "same host and port"),
                                           "plain_http_on_tls_port"}
                         : classify(ec, timed_out, !parser.get().target().empty());
        if (!tls_required) metrics.protocol_error(f.kind);
        http::Request req;
        req.received = received;
        req.remote_address = info.remote_address;
        req.client_certificate_subject = info.client_subject;
        req.tls = info.tls;
        req.route_template = "protocol_error";
        // Every request, refused or not, leaves one audit record (issue #6), with what is
        // known of it: the parsed start line and ids when the parser got that far (a body too
        // large, a timeout in the body), else the request line still in the buffer.
        const auto& partial = parser.get();
        // The header set is whole once the parser is past its blank line, and also when the
        // Content-Length exceeds the body limit: Beast checks that after the last field. Only
        // a whole set may name the caller; a 431 or a malformed header leaves fragments.
        const bool headers_parsed = parser.is_header_done() || ec == bhttp::error::body_limit;
        if (!partial.target().empty()) {
          req.method = method_token(partial.method_string());
          if (req.method == "HEAD") {
            req.method = "GET";  // routed as GET, recorded as HEAD, as in a served request
            req.head = true;
          }
          req.target = std::string(partial.target());  // bounded by the header limit
          // For the route, which names the record's action; a path that does not decode has none.
          if (req.target.front() == '/')
            if (auto path = fhir::percent_decode(std::string_view(req.target).substr(0, req.target.find('?')), false,
                                                 "path"))
              req.path = std::move(*path);
          if (headers_parsed) copy_headers(partial, req);
          if (auto rid = partial.find("x-request-id"); rid != partial.end() && acceptable_id(rid->value()))
            req.request_id = std::string(rid->value());
          if (auto cid = partial.find("x-correlation-id"); cid != partial.end() && acceptable_id(cid->value()))
            req.correlation_id = std::string(cid->value());
        } else {
          const auto* bytes = static_cast<const char*>(buffer.data().data());
          std::tie(req.method, req.target) =
              raw_request_line(std::string_view(bytes, buffer.size()), kMaxAuditedTarget);
        }
        if (req.request_id.empty()) req.request_id = new_request_id();
        http::Response r = co_await pipeline.refused(req, http::error_response(f.issue), headers_parsed);
        r.close = true;
        co_await send(stream, *watchdog, req, r, false, 11, received);
        co_return;
      }

      const bool parser_chunked = parser.chunked();
      bhttp::request<bhttp::string_body> msg = parser.release();
      http::Request req;
      req.received = received;
      req.remote_address = info.remote_address;
      req.client_certificate_subject = info.client_subject;
      req.tls = info.tls;
      req.method = std::string(msg.method_string());
      // HEAD is GET without the body (RFC 9110 section 9.3.2): route it as GET, strip in send().
      req.head = msg.method() == bhttp::verb::head;
      if (req.head) req.method = "GET";
      req.target = std::string(msg.target());
      copy_headers(msg, req);
      req.body = std::move(msg.body());
      std::string_view rid = req.header("x-request-id");
      req.request_id = acceptable_id(rid) ? std::string(rid) : new_request_id();
      std::string_view cid = req.header("x-correlation-id");
      if (acceptable_id(cid)) req.correlation_id = std::string(cid);

      http::Response resp;
      std::string_view target = req.target;
      if (auto f = framing_failure(msg, parser_chunked)) {
        // Refused with the connection closed: bytes after this header may be a body the
        // parser did not frame, never the next request.
        metrics.protocol_error(f->kind);
        req.route_template = "protocol_error";
        resp = co_await pipeline.refused(req, http::error_response(f->issue), true);
        resp.close = true;
      } else if (target.empty() || target.front() != '/') {
        req.route_template = "protocol_error";
        resp = co_await pipeline.refused(
            req,
            http::error_response(fhir::Issue::make(fhir::ErrorCode::bad_request,
                                                   "Request target must be a path starting with '/'")),
            true);
      } else {
        std::size_t q = target.find('?');
        auto path = fhir::percent_decode(target.substr(0, q), false, "path");
        if (!path) {
          req.route_template = "protocol_error";
          resp = co_await pipeline.refused(req, http::error_response(path.issue()), true);
        } else {
          req.path = std::move(*path);
          if (q != std::string_view::npos) req.raw_query = std::string(target.substr(q + 1));
          resp = co_await pipeline.handle(req);
        }
      }
      ++served;
      const bool keep_alive = msg.keep_alive() && !resp.close && !stopping &&
                              served < cfg.limits.max_requests_per_connection;
      if (!co_await send(stream, *watchdog, req, resp, keep_alive, msg.version(), received)) co_return;
      if (!keep_alive) co_return;
    }
  }

  template <class Stream>
  awaitable<bool> send(Stream& stream, Watchdog& watchdog, const http::Request& req, http::Response& r,
                       bool keep_alive, unsigned version, std::chrono::steady_clock::time_point received) {
    // The response is written as one buffer, serialised here: Beast's message serializer walks
    // a sequence of small buffers (one per header field) that costs more than the TLS record
    // on small answers such as /metadata, and a single buffer becomes a single TLS record.
    const bool head = req.head;
    std::string out;
    out.reserve(320 + (head ? 0 : r.body.size()));
    append_status_line(out, version, r.status);
    out.append("Server: fhir-gateway\r\nDate: ");
    out.append(http_date());
    out.append("\r\n");
    if (!r.content_type.empty()) append_field(out, "Content-Type", r.content_type);
    out.append("Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n");
    if constexpr (!std::is_same_v<Stream, beast::tcp_stream>) {
      if (cfg.https.hsts_max_age.count() > 0) append_field(out, "Strict-Transport-Security", hsts);
    }
    append_field(out, "X-Request-ID", req.request_id);
    if (!req.correlation_id.empty()) append_field(out, "X-Correlation-ID", req.correlation_id);
    for (const auto& [k, v] : r.headers) append_field(out, k, v);
    if (!keep_alive && version >= 11) append_field(out, "Connection", "close");
    else if (keep_alive && version < 11) append_field(out, "Connection", "keep-alive");
    // No Content-Length on 1xx, 204 and 304 (RFC 9110 section 8.6); HEAD keeps the GET body's.
    if (!(r.status < 200 || r.status == 204 || r.status == 304))
      append_field(out, "Content-Length", std::to_string(r.body.size()));
    out.append("\r\n");
    if (!head && !(r.status < 200 || r.status == 204 || r.status == 304)) out.append(r.body);

    error_code ec;
    watchdog.arm(cfg.limits.write_timeout, Watchdog::Action::close);
    co_await asio::async_write(stream, asio::buffer(out), nothrow(ec));
    watchdog.disarm();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - received).count();
    // A refused request's method is whatever the client sent: not a metrics label.
    const std::string_view method = req.route_template == "protocol_error" ? std::string_view("-")
                                    : req.head                             ? std::string_view("HEAD")
                                                                           : std::string_view(req.method);
    metrics.observe_request(req.route_template, method, r.status, seconds);
    if (cfg.access_log)
      observe::log(observe::Level::info, "request",
                   {{"request_id", req.logged_request_id()},
                    {"correlation_id", req.logged_correlation_id()},
                    {"method", method},
                    {"route", req.route_template},
                    {"status", r.status},
                    {"duration_ms", seconds * 1000.0},
                    {"remote", req.remote_address}});
    co_return !ec;
  }

  // SIGHUP's default action ends the process on the spot (no drain, no "stop" audit record,
  // no final checkpoint); systemctl reload, log rotation set-ups and a closed terminal send
  // it. It is logged, handed to on_hangup, and waited for again.
  void wait_for_hangup() {
    hangup.async_wait([this](error_code ec, int) {
      if (ec) return;
      observe::log(observe::Level::info, "SIGHUP received; the gateway keeps running");
      if (on_hangup) on_hangup();
      wait_for_hangup();
    });
  }

  void begin_drain() {
    if (stopping.exchange(true)) return;
    health.draining = true;
    // The adapters' listeners (MLLP) drain too: their open connections count here as well.
    std::size_t adapter_connections = 0;
    for (auto& p : participants) adapter_connections += p.in_flight();
    observe::log(observe::Level::info, "shutting down: draining connections",
                 {{"open_connections", metrics.open_connections() + static_cast<std::int64_t>(adapter_connections)},
                  {"http_connections", metrics.open_connections()},
                  {"adapter_connections", adapter_connections}});
    error_code ec;
    if (https_acceptor) https_acceptor->close(ec);
    if (http_acceptor) http_acceptor->close(ec);
    {
      std::lock_guard lock(sessions_mu);
      for (auto& entry : sessions) {
        std::shared_ptr<SessionControl> control = entry.second;
        asio::post(control->strand, [control] {
          if (control->idle && control->stream) control->stream->cancel();
        });
      }
    }
    for (auto& p : participants) p.begin();
    drain_deadline = std::chrono::steady_clock::now() + cfg.limits.shutdown_grace;
    wait_for_drain();
  }

  void wait_for_drain() {
    std::size_t open;
    {
      std::lock_guard lock(sessions_mu);
      open = sessions.size();
    }
    for (auto& p : participants) open += p.in_flight();
    if (open == 0 || std::chrono::steady_clock::now() >= drain_deadline) {
      if (open) observe::log(observe::Level::warn, "shutdown grace expired; closing connections", {{"open", open}});
      signals.cancel();
      hangup.cancel();
      stop_all();
      return;
    }
    drain_timer.expires_after(std::chrono::milliseconds(20));
    drain_timer.async_wait([this](error_code ec) {
      if (!ec) wait_for_drain();
    });
  }
};

Server::Server(const config::Config& cfg, const http::Pipeline& pipeline, observe::Metrics& metrics,
               observe::Health& health, std::shared_ptr<boost::asio::ssl::context> tls)
    : impl_(std::make_unique<Impl>(cfg, pipeline, metrics, health, std::move(tls))) {}

Server::~Server() = default;

void Server::add_drain_participant(std::function<void()> begin, std::function<std::size_t()> in_flight) {
  impl_->participants.push_back(Impl::DrainParticipant{std::move(begin), std::move(in_flight)});
}

void Server::start(bool handle_signals) {
  Impl& i = *impl_;
  // Signal handling is in place before anything announces readiness, so a SIGTERM sent the
  // moment "listening" is logged still drains instead of killing the process.
  if (handle_signals) {
    i.signals.add(SIGINT);
    i.signals.add(SIGTERM);
    i.signals.async_wait([this](error_code ec, int) {
      if (ec) return;
      impl_->begin_drain();
      // A second signal stops at once.
      impl_->signals.async_wait([this](error_code ec2, int) {
        if (!ec2) impl_->stop_all();
      });
    });
    i.hangup.add(SIGHUP);
    i.wait_for_hangup();
  }
  if (i.cfg.https.enabled) {
#if GW_WITH_TLS
    // Loaded once, by check_startup: the files are not read again here, so what was checked
    // is what is served.
    if (!i.tls) throw std::logic_error("HTTPS is enabled but the server was given no TLS context");
#else
    throw config::ConfigError(i.cfg.source_file, "server.https.enabled", "this gateway was built without TLS (tls=OFF)");
#endif
    i.https_acceptor.emplace(i.bind(i.cfg.https.address, i.cfg.https.port));
    asio::co_spawn(i.ioc, i.accept_loop(*i.https_acceptor, true), asio::detached);
    observe::log(observe::Level::info, "listening",
                 {{"scheme", "https"}, {"address", i.cfg.https.address}, {"port", https_port()}});
  }
  if (i.cfg.http.enabled) {
    // config::validate already refused non-loopback plain HTTP; check again at the socket.
    if (!config::is_loopback_address(i.cfg.http.address))
      throw std::runtime_error("plain HTTP refused on non-loopback address " + i.cfg.http.address);
    i.http_acceptor.emplace(i.bind(i.cfg.http.address, i.cfg.http.port));
    asio::co_spawn(i.ioc, i.accept_loop(*i.http_acceptor, false), asio::detached);
    observe::log(observe::Level::info, "listening",
                 {{"scheme", "http"}, {"address", i.cfg.http.address}, {"port", http_port()}});
  }
  i.health.listening = true;
}

void Server::run() {
  Impl& i = *impl_;
  std::vector<std::thread> extra;
  // The other contexts may have no connection for a while: keep their threads waiting.
  for (auto& w : i.workers) i.keep_running.push_back(asio::make_work_guard(*w));
  for (auto& w : i.workers)
    extra.emplace_back([ctx = w.get()] {
      observe::name_this_thread("gw-http");
      ctx->run();
    });
  i.ioc.run();
  i.stop_all();
  for (auto& t : extra) t.join();
  i.keep_running.clear();
}

void Server::shutdown() {
  asio::post(impl_->ioc, [this] { impl_->begin_drain(); });
}

void Server::on_hangup(std::function<void()> handler) { impl_->on_hangup = std::move(handler); }

std::uint16_t Server::https_port() const {
  error_code ec;
  return impl_->https_acceptor ? impl_->https_acceptor->local_endpoint(ec).port() : 0;
}

std::uint16_t Server::http_port() const {
  error_code ec;
  return impl_->http_acceptor ? impl_->http_acceptor->local_endpoint(ec).port() : 0;
}

asio::io_context& Server::io_context() { return impl_->ioc; }

}  // namespace gw::net
