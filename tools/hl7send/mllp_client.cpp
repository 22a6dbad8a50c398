// SPDX-License-Identifier: Apache-2.0
// MllpClient (see mllp_client.h): Asio operations run on a private io_context one at a time,
// each bounded by run_one_for() against a deadline; a deadline passed closes the socket, which
// completes the operation with an error, so nothing blocks for ever.
#include "tools/hl7send/mllp_client.h"

#include <poll.h>

#include <algorithm>
#include <array>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <deque>
#include <thread>
#if GW_WITH_TLS
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/ssl/stream.hpp>
#endif

#include "adapters/hl7v2/ack.h"
#include "adapters/hl7v2/message.h"
#include "adapters/hl7v2/mllp_framer.h"

namespace gw::hl7send {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using fhir::ErrorCode;
using fhir::Issue;

std::vector<std::string_view> split_lines(std::string_view text) {
  std::vector<std::string_view> lines;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t eol = text.find_first_of("\r\n", pos);
    if (eol == std::string_view::npos) eol = text.size();
    lines.push_back(text.substr(pos, eol - pos));
    pos = eol;
    if (pos < text.size() && text[pos] == '\r') ++pos;
    if (pos < text.size() && text[pos] == '\n') ++pos;
  }
  return lines;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  std::size_t pos = 0;
  for (;;) {
    const std::size_t next = s.find(sep, pos);
    out.push_back(s.substr(pos, next == std::string_view::npos ? std::string_view::npos : next - pos));
    if (next == std::string_view::npos) return out;
    pos = next + 1;
  }
}

std::string_view part(const std::vector<std::string_view>& v, std::size_t i) {
  return i < v.size() ? v[i] : std::string_view();
}

bool blank(std::string_view line) { return line.find_first_not_of(" \t") == std::string_view::npos; }

std::string_view strip_bom(std::string_view text) {
  if (text.size() >= 3 && text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);
  return text;
}

// "OBX" "2" "5" -> "OBX[2]-5"; the form the gateway's error locations take.
std::string location_text(std::string_view segment, std::string_view sequence, std::string_view field) {
  if (segment.empty()) return {};
  std::string out(segment);
  if (!sequence.empty() && sequence != "1") out.append("[").append(sequence).append("]");
  if (!field.empty()) out.append("-").append(field);
  return out;
}

}  // namespace

// ---- messages and acknowledgements --------------------------------------------------------

namespace {

// normalise_message, also giving the file line of each line kept: `message` starts on file
// line `first_line`, and every line of it, blank or not, counts.
std::string normalise(std::string_view message, std::size_t first_line, std::vector<std::size_t>& lines) {
  std::string out;
  out.reserve(message.size() + 1);
  std::size_t line_number = first_line;
  for (std::string_view line : split_lines(strip_bom(message))) {
    const std::size_t at = line_number++;
    if (blank(line)) continue;
    out.append(line);
    out += '\r';
    lines.push_back(at);
  }
  return out;
}

// The lines text[from, to) ends: CR, LF and CR LF each end one, as split_lines reads them.
std::size_t line_ends(std::string_view text, std::size_t from, std::size_t to) {
  std::size_t n = 0;
  for (std::size_t i = from; i < to; ++i) {
    if (text[i] != '\r' && text[i] != '\n') continue;
    ++n;
    if (text[i] == '\r' && i + 1 < to && text[i + 1] == '\n') ++i;
  }
  return n;
}

}  // namespace

std::string normalise_message(std::string_view message) {
  std::vector<std::size_t> lines;
  return normalise(message, 1, lines);
}

std::vector<FileMessage> split_file(std::string_view text) {
  std::vector<FileMessage> out;
  text = strip_bom(text);
  std::size_t counted = 0, line = 1;  // text[0, counted) holds line - 1 line ends
  for (std::string_view m : hl7v2::split_messages(text)) {
    // Each message is a view into `text` that starts at a line start: its first line's number
    // is one more than the line ends before it (counted once over the whole file).
    const auto start = static_cast<std::size_t>(m.data() - text.data());
    line += line_ends(text, counted, start);
    counted = start;
    FileMessage fm;
    fm.text = normalise(m, line, fm.lines);
    if (!fm.text.empty()) out.push_back(std::move(fm));
  }
  return out;
}

namespace {

bool is_segment_line(std::string_view line, char field_separator) {
  auto id_char = [](char c) { return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); };
  return line.size() >= 3 && id_char(line[0]) && id_char(line[1]) && id_char(line[2]) &&
         (line.size() == 3 || line[3] == field_separator);
}

char field_separator_of(std::string_view message) {
  const hl7v2::MshSummary msh = hl7v2::read_msh(message);
  return msh.found ? msh.field_separator : '|';
}

}  // namespace

std::vector<ForeignLine> foreign_lines(std::string_view message) {
  std::vector<ForeignLine> out;
  const char fs = field_separator_of(message);
  std::size_t number = 0;
  for (std::string_view line : split_lines(message)) {
    ++number;
    if (is_segment_line(line, fs)) continue;
    ForeignLine f;
    f.line = number;
    for (char c : line.substr(0, 60)) f.text.push_back(c >= 0x20 && c < 0x7F ? c : '?');
    out.push_back(std::move(f));
  }
  return out;
}

std::string drop_foreign_lines(std::string_view message) {
  std::string out;
  out.reserve(message.size());
  const char fs = field_separator_of(message);
  for (std::string_view line : split_lines(message)) {
    if (!is_segment_line(line, fs)) continue;
    out.append(line);
    out += '\r';
  }
  return out;
}

Ack parse_ack(std::string_view raw) {
  Ack a;
  a.raw = std::string(raw);
  const hl7v2::MshSummary msh = hl7v2::read_msh(raw);
  hl7v2::Delimiters d;
  d.field = msh.found ? msh.field_separator : '|';
  const std::string& enc = msh.encoding_characters;
  if (enc.size() >= 1) d.component = enc[0];
  if (enc.size() >= 2) d.repetition = enc[1];
  if (enc.size() >= 3) d.escape = enc[2];
  if (enc.size() >= 4) d.subcomponent = enc[3];
  auto text = [&](std::string_view v) { return hl7v2::unescape(v, d); };
  bool seen_msa = false, seen_err = false;
  std::string msa_text, err_user, err_short;
  for (std::string_view line : split_lines(strip_bom(raw))) {
    if (line.size() < 3) continue;
    const std::string_view id = line.substr(0, 3);
    const auto f = split(line, d.field);
    if (id == "MSA" && !seen_msa) {
      seen_msa = true;
      a.code = text(part(f, 1));
      a.control_id = std::string(part(f, 2));  // as sent, escapes included: compared with MSH-10 as sent
      msa_text = text(part(f, 3));
    } else if (id == "ERR" && !seen_err) {
      seen_err = true;
      if (!part(f, 1).empty()) {
        // v2.4 and earlier: ERR-1 is an ELD, segment^sequence^field^code&text&table.
        const auto eld = split(split(part(f, 1), d.repetition)[0], d.component);
        a.error_location = location_text(part(eld, 0), part(eld, 1), part(eld, 2));
        const auto code = split(part(eld, 3), d.subcomponent);
        a.error_code = text(part(code, 0));
        err_short = text(part(code, 1));
      } else {
        // v2.5+: ERR-2 location (ERL), ERR-3 code (CWE), ERR-8 user message.
        const auto erl = split(split(part(f, 2), d.repetition)[0], d.component);
        a.error_location = location_text(part(erl, 0), part(erl, 1), part(erl, 2));
        const auto code = split(part(f, 3), d.component);
        a.error_code = text(part(code, 0));
        err_short = text(part(code, 1));
        err_user = text(part(f, 8));
      }
    }
  }
  a.text = !err_user.empty() ? err_user : !msa_text.empty() ? msa_text : err_short;
  return a;
}

bool AckRequest::holds(const std::string& condition, bool applied) {
  if (condition.empty() || condition == "NE") return false;
  if (condition == "ER") return !applied;
  if (condition == "SU") return applied;
  return true;  // AL, and values outside table 0155 (as the gateway reads them)
}

bool AckRequest::none() const {
  return enhanced && !holds(accept, true) && !holds(accept, false) && !holds(application, true) &&
         !holds(application, false);
}

AckRequest ack_request(std::string_view message) {
  const hl7v2::AckMode m = hl7v2::ack_mode(hl7v2::read_msh(message));
  return AckRequest{m.enhanced, m.accept, m.application};
}

std::string_view status_name(SendStatus s) {
  switch (s) {
    case SendStatus::acknowledged: return "acknowledged";
    case SendStatus::not_requested: return "not_requested";
    case SendStatus::timeout: return "timeout";
    case SendStatus::disconnected: return "disconnected";
    case SendStatus::connect_failed: return "connect_failed";
    case SendStatus::mismatch: return "mismatch";
  }
  return "disconnected";
}

std::string SendResult::code() const {
  std::string worst;
  auto rank = [](const std::string& c) {
    return c.size() == 2 ? (c[1] == 'R' ? 3 : c[1] == 'E' ? 2 : c[1] == 'A' ? 1 : 0) : 0;
  };
  for (const Ack& a : acks)
    if (worst.empty() || rank(a.code) >= rank(worst)) worst = a.code;
  return worst;
}

bool SendResult::accepted() const {
  if (status != SendStatus::acknowledged || acks.empty()) return false;
  for (const Ack& a : acks)
    if (a.code != "AA" && a.code != "CA") return false;
  return true;
}

// ---- the connection -----------------------------------------------------------------------

struct MllpClient::Impl {
  explicit Impl(const ClientOptions& o) : limits(framer_limits(o)), framer(limits) {}
  static hl7v2::FramerLimits framer_limits(const ClientOptions& o) {
    hl7v2::FramerLimits l;
    l.max_message_bytes = o.max_ack_bytes;
    return l;
  }
  const hl7v2::FramerLimits limits;

  asio::io_context ioc;
  std::unique_ptr<tcp::socket> plain;
#if GW_WITH_TLS
  std::unique_ptr<asio::ssl::context> ssl_ctx;
  std::unique_ptr<asio::ssl::stream<tcp::socket>> ssl;
#endif
  bool open = false;
  bool broken = false;  // the framer gave up on this connection
  hl7v2::MllpFramer framer;
  std::deque<std::string> frames;  // complete frames not yet handed out
  std::array<char, 16 * 1024> buf{};

  tcp::socket* socket() {
#if GW_WITH_TLS
    if (ssl) return &ssl->next_layer();
#endif
    return plain.get();
  }

  // Runs the io_context until `done` or `deadline`. Past the deadline `cancel` runs (closing
  // the socket or cancelling the resolver) and the aborted operation is drained. True when the
  // operation completed in time.
  template <class Cancel>
  bool wait(const bool& done, Clock::time_point deadline, Cancel cancel) {
    ioc.restart();
    while (!done) {
      const auto now = Clock::now();
      if (now >= deadline) break;
      if (ioc.run_one_for(deadline - now) == 0 && ioc.stopped()) break;  // nothing pending: cannot finish
    }
    if (done) return true;
    cancel();
    ioc.restart();
    ioc.run();  // every handler (ours included) completes with operation_aborted
    return false;
  }

  void close() {
    boost::system::error_code ignored;
    if (tcp::socket* s = socket()) s->close(ignored);
    ioc.restart();
    ioc.run();  // nothing should be pending; drain anyway
    plain.reset();
#if GW_WITH_TLS
    ssl.reset();
#endif
    open = false;
    broken = false;
    framer = hl7v2::MllpFramer(limits);
    frames.clear();
  }

  template <class F>
  void with_stream(F&& f) {
#if GW_WITH_TLS
    if (ssl) return f(*ssl);
#endif
    f(*plain);
  }

  // Writes all of `bytes`; false with `error` set on failure or timeout.
  bool write(std::string_view bytes, Clock::time_point deadline, std::string& error) {
    bool done = false;
    boost::system::error_code ec;
    with_stream([&](auto& stream) {
      asio::async_write(stream, asio::buffer(bytes.data(), bytes.size()),
                        [&](boost::system::error_code e, std::size_t) {
                          ec = e;
                          done = true;
                        });
    });
    if (!wait(done, deadline, [this] { close_socket(); })) {
      error = "the message could not be written in time";
      return false;
    }
    if (ec) {
      error = "sending failed: " + ec.message();
      return false;
    }
    return true;
  }

  // True when the idle connection has bytes waiting (an answer nobody asked for) or was
  // closed by the peer: it is not fit to carry the next message.
  bool stale() {
    if (broken || !frames.empty()) return true;
    tcp::socket* s = socket();
    if (!s || !s->is_open()) return true;
    pollfd p{s->native_handle(), POLLIN, 0};
    return ::poll(&p, 1, 0) != 0;
  }

  void close_socket() {
    boost::system::error_code ignored;
    if (tcp::socket* s = socket()) s->close(ignored);
  }

  enum class ReadOutcome { frame, timeout, closed };
  // The next complete frame into `frame`.
  ReadOutcome read_frame(Clock::time_point deadline, std::string& frame, std::string& error) {
    while (frames.empty()) {
      bool done = false;
      boost::system::error_code ec;
      std::size_t n = 0;
      with_stream([&](auto& stream) {
        stream.async_read_some(asio::buffer(buf), [&](boost::system::error_code e, std::size_t got) {
          ec = e;
          n = got;
          done = true;
        });
      });
      if (!wait(done, deadline, [this] { close_socket(); })) return ReadOutcome::timeout;
      if (ec) {
        error = ec == asio::error::eof ? "the connection was closed before the acknowledgement"
                                       : "reading the acknowledgement failed: " + ec.message();
        return ReadOutcome::closed;
      }
      hl7v2::FramerOutput out;
      framer.feed(std::string_view(buf.data(), n), out);
      for (std::string& f : out.frames) frames.push_back(std::move(f));
      broken = broken || out.fatal;
      if (broken && frames.empty()) {
        error = "the peer broke MLLP framing (an acknowledgement over " + std::to_string(limits.max_message_bytes) +
                " bytes, or too many bytes outside a frame)";
        return ReadOutcome::closed;
      }
    }
    frame = std::move(frames.front());
    frames.pop_front();
    return ReadOutcome::frame;
  }
};

MllpClient::MllpClient(ClientOptions options) : options_(std::move(options)), impl_(std::make_unique<Impl>(options_)) {}

MllpClient::~MllpClient() { close(); }

bool MllpClient::connected() const { return impl_->open; }

void MllpClient::close() {
  if (impl_->open || impl_->socket()) impl_->close();
}

fhir::Status MllpClient::connect() {
  if (impl_->open) return fhir::Ok{};
  Impl& im = *impl_;
  const std::string where = options_.host + ":" + std::to_string(options_.port);
  const auto deadline = Clock::now() + options_.connect_timeout;
  auto failed = [&](std::string why) -> fhir::Status {
    im.close();
    return Issue::make(ErrorCode::not_ready, "cannot connect to " + where + ": " + why);
  };

#if GW_WITH_TLS
  if (options_.tls && !im.ssl_ctx) {
    auto ctx = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
    boost::system::error_code ec;
    ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                         asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1,
                     ec);
    if (options_.ca_file.empty())
      ctx->set_default_verify_paths(ec);
    else
      ctx->load_verify_file(options_.ca_file, ec);
    if (ec)
      return Issue::make(ErrorCode::not_ready,
                         "cannot load the CA certificates " +
                             (options_.ca_file.empty() ? std::string("(system store)") : options_.ca_file) + ": " +
                             ec.message());
    if (!options_.cert_file.empty()) {
      ctx->use_certificate_chain_file(options_.cert_file, ec);
      if (ec)
        return Issue::make(ErrorCode::not_ready,
                           "cannot load the client certificate " + options_.cert_file + ": " + ec.message());
      ctx->use_private_key_file(options_.key_file, asio::ssl::context::pem, ec);
      if (ec)
        return Issue::make(ErrorCode::not_ready,
                           "cannot load the client key " + options_.key_file + ": " + ec.message());
    }
    ctx->set_verify_mode(asio::ssl::verify_peer);
    im.ssl_ctx = std::move(ctx);
  }
  if (options_.tls)
    im.ssl = std::make_unique<asio::ssl::stream<tcp::socket>>(im.ioc, *im.ssl_ctx);
  else
    im.plain = std::make_unique<tcp::socket>(im.ioc);
#else
  if (options_.tls) return Issue::make(ErrorCode::not_supported, "this build has no TLS");
  im.plain = std::make_unique<tcp::socket>(im.ioc);
#endif

  // Resolve (a name or an address literal).
  tcp::resolver resolver(im.ioc);
  tcp::resolver::results_type endpoints;
  {
    bool done = false;
    boost::system::error_code ec;
    resolver.async_resolve(options_.host, std::to_string(options_.port),
                           [&](boost::system::error_code e, tcp::resolver::results_type r) {
                             ec = e;
                             endpoints = std::move(r);
                             done = true;
                           });
    if (!im.wait(done, deadline, [&resolver] { resolver.cancel(); })) return failed("name resolution timed out");
    if (ec) return failed("cannot resolve '" + options_.host + "': " + ec.message());
  }
  {
    bool done = false;
    boost::system::error_code ec;
    asio::async_connect(*im.socket(), endpoints, [&](boost::system::error_code e, const tcp::endpoint&) {
      ec = e;
      done = true;
    });
    if (!im.wait(done, deadline, [&im] { im.close_socket(); })) return failed("connection timed out");
    if (ec) return failed(ec.message());
    im.socket()->set_option(tcp::no_delay(true), ec);
  }
#if GW_WITH_TLS
  if (im.ssl) {
    const std::string name = options_.server_name.empty() ? options_.host : options_.server_name;
    boost::system::error_code ec;
    asio::ip::make_address(name, ec);
    // SNI carries host names only (RFC 6066 section 3), never address literals.
    if (ec && !SSL_set_tlsext_host_name(im.ssl->native_handle(), name.c_str()))
      return failed("cannot set the TLS server name");
    im.ssl->set_verify_callback(asio::ssl::host_name_verification(name));
    bool done = false;
    im.ssl->async_handshake(asio::ssl::stream_base::client, [&](boost::system::error_code e) {
      ec = e;
      done = true;
    });
    if (!im.wait(done, deadline, [&im] { im.close_socket(); })) return failed("TLS handshake timed out");
    if (ec)
      return failed("TLS handshake failed (is the certificate trusted and issued for '" + name +
                    "'?): " + ec.message());
  }
#endif
  im.open = true;
  return fhir::Ok{};
}

SendResult MllpClient::send(std::string_view message, int retries) {
  SendResult r;
  const AckRequest request = ack_request(message);
  const std::string control_id = hl7v2::read_msh(message).field(10);
  const std::string wire = hl7v2::MllpFramer::frame(message);
  Impl& im = *impl_;
  auto mismatch = [&](const Ack& a) {
    close();  // the connection is out of step: nothing more read on it may be trusted
    r.status = SendStatus::mismatch;
    r.error = "MSA-2 '" + a.control_id + "' of the acknowledgement does not echo MSH-10 '" + control_id +
              "' of the message sent";
  };
  std::chrono::milliseconds pause = options_.retry_backoff;
  for (int attempt = 0; attempt <= retries; ++attempt) {
    if (attempt > 0) {
      std::this_thread::sleep_for(pause);
      pause = std::min<std::chrono::milliseconds>(pause * 2, std::chrono::seconds(5));
    }
    r.attempts = attempt + 1;
    r.acks.clear();
    r.error.clear();
    if (connected() && im.stale()) close();
    if (!connected()) {
      if (fhir::Status c = connect(); !c) {
        r.status = SendStatus::connect_failed;
        r.error = c.issue().diagnostics;
        continue;
      }
    }
    const auto start = Clock::now();
    if (!im.write(wire, start + options_.ack_timeout, r.error)) {
      close();
      r.status = SendStatus::disconnected;
      continue;
    }
    r.written = true;
    if (request.none()) {
      r.status = SendStatus::not_requested;
      r.latency = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start);
      return r;
    }
    std::string frame;
    auto got = im.read_frame(Clock::now() + options_.ack_timeout, frame, r.error);
    if (got == Impl::ReadOutcome::timeout && request.enhanced && !AckRequest::holds(request.accept, true) &&
        !AckRequest::holds(request.application, true)) {
      // Only errors are acknowledged (ER): silence means applied.
      close();
      r.status = SendStatus::not_requested;
      r.error.clear();
      r.latency = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start);
      return r;
    }
    if (got != Impl::ReadOutcome::frame) {
      close();
      r.status = got == Impl::ReadOutcome::timeout ? SendStatus::timeout : SendStatus::disconnected;
      if (got == Impl::ReadOutcome::timeout)
        r.error = "no acknowledgement within " + std::to_string(options_.ack_timeout.count()) + " ms";
      continue;
    }
    r.acks.push_back(parse_ack(frame));
    if (r.acks.back().control_id != control_id) {
      mismatch(r.acks.back());
      return r;
    }
    // Enhanced mode: after the accept ACK, the application ACK when MSH-16 asks for one (HL7
    // v2.5 ch. 2.9.3). A CE/CR means the message was not taken in, so not applied. A CA
    // (table 0008: committed to safe storage) does not say whether it could be applied: with
    // MSH-16 ER or SU the application ACK may or may not follow, and silence means the
    // outcome the condition leaves out (ER: applied; SU: not applied).
    const std::string& first = r.acks.back().code;
    const bool committed = first == "CA";
    const bool conditional = committed && (request.application == "ER" || request.application == "SU");
    if (request.enhanced && first.size() == 2 && first[0] == 'C' &&
        (conditional || AckRequest::holds(request.application, committed))) {
      got = im.read_frame(Clock::now() + options_.ack_timeout, frame, r.error);
      if (got == Impl::ReadOutcome::timeout && conditional) {
        const bool applied = request.application == "ER";
        r.status = applied ? SendStatus::acknowledged : SendStatus::timeout;
        r.error = applied ? std::string() : "committed (CA), but no application acknowledgement: with MSH-16 SU that "
                                            "means it was not applied (gw-messages list shows why)";
        r.latency = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start);
        return r;
      }
      if (got != Impl::ReadOutcome::frame) {
        close();
        r.status = got == Impl::ReadOutcome::timeout ? SendStatus::timeout : SendStatus::disconnected;
        if (got == Impl::ReadOutcome::timeout)
          r.error = "no application acknowledgement within " + std::to_string(options_.ack_timeout.count()) +
                    " ms after the accept acknowledgement";
        continue;
      }
      r.acks.push_back(parse_ack(frame));
      if (r.acks.back().control_id != control_id) {
        mismatch(r.acks.back());
        return r;
      }
    }
    r.status = SendStatus::acknowledged;
    r.latency = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start);
    return r;
  }
  return r;
}

}  // namespace gw::hl7send
