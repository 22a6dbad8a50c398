// SPDX-License-Identifier: Apache-2.0
// Hl7v2Adapter (see hl7v2_adapter.h). One coroutine per connection, on its own strand:
// read -> frame -> for each frame in order: parse -> map -> sink -> acknowledge.
#include "adapters/hl7v2/hl7v2_adapter.h"

#include <algorithm>
#include <iterator>
#include <mutex>
#include <set>
#include <utility>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#if GW_WITH_TLS
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#endif

#include "adapters/hl7v2/ack.h"
#include "adapters/hl7v2/mapping.h"
#include "gateway/net/peer_subject.h"

namespace gw::hl7v2 {
namespace {

namespace asio = boost::asio;
using asio::awaitable;
using asio::ip::tcp;
using adapters::IngestReceipt;
using adapters::LogLevel;
using fhir::ErrorCode;
using fhir::Issue;
using ReceiptResult = fhir::Result<IngestReceipt>;

using Fields = std::vector<std::pair<std::string, std::string>>;

// IngestSink calls as awaitables: the sink completes on any thread; the coroutine resumes on
// its own executor. `Call` starts the sink call with the (copyable) completion it is given.
template <class Result, class Arg, class Call>
struct SinkInitiation {
  Call call;
  template <class Handler>
  void operator()(Handler handler, Arg arg) {
    auto ex = asio::get_associated_executor(handler);
    auto h = std::make_shared<Handler>(std::move(handler));
    call(std::move(arg), [h, ex](Result r) {
      asio::post(ex, [h, r = std::move(r)]() mutable { std::move(*h)(std::move(r)); });
    });
  }
};
template <class Result, class Arg, class Call>
awaitable<Result> sink_async(Call call, Arg& arg) {
  return asio::async_initiate<const asio::use_awaitable_t<>&, void(Result)>(SinkInitiation<Result, Arg, Call>{call},
                                                                          asio::use_awaitable, std::move(arg));
}
awaitable<ReceiptResult> submit_async(adapters::IngestSink& sink, adapters::IngestBatch& batch) {
  auto call = [&sink](adapters::IngestBatch b, std::function<void(ReceiptResult)> done) {
    sink.submit(std::move(b), std::move(done));
  };
  return sink_async<ReceiptResult>(call, batch);
}
awaitable<fhir::Status> record_async(adapters::IngestSink& sink, adapters::IngestFailure& failure) {
  auto call = [&sink](adapters::IngestFailure f, std::function<void(fhir::Status)> done) {
    sink.record_failure(std::move(f), std::move(done));
  };
  return sink_async<fhir::Status>(call, failure);
}

bool transient(const Issue& i) {
  return i.code == ErrorCode::internal_error || i.code == ErrorCode::not_ready ||
         i.code == ErrorCode::too_many_requests || i.code == ErrorCode::timeout;
}

// HL7 v2.x: the parser and mapping handle 2.3-2.8; older 2.x messages are read the same way
// (their segments are a subset), as Mirth does. Anything else is refused.
bool version_accepted(const std::string& v) { return v.size() >= 3 && v[0] == '2' && v[1] == '.'; }

std::string join_replies(const std::vector<std::string>& replies) {
  std::string out;
  for (const auto& r : replies) {
    if (!out.empty()) out += '\n';  // ACK segments end in CR only, so LF separates them
    out += r;
  }
  return out;
}

std::vector<std::string> split_replies(const std::string& joined) {
  std::vector<std::string> out;
  std::size_t begin = 0;
  while (begin < joined.size()) {
    std::size_t end = joined.find('\n', begin);
    if (end == std::string::npos) end = joined.size();
    out.push_back(joined.substr(begin, end - begin));
    begin = end + 1;
  }
  return out;
}

std::string dedupe_key(const MshSummary& msh) {
  return msh.field(3) + "|" + msh.field(4) + "|" + msh.field(10);
}

// "address:port" of the connected sender, "" when the socket cannot say.
std::string peer_address(const tcp::socket& socket) {
  boost::system::error_code ec;
  const auto remote = socket.remote_endpoint(ec);
  return ec ? std::string() : remote.address().to_string() + ":" + std::to_string(remote.port());
}

// Messages one batch frame may carry: each is committed in turn while the connection waits,
// so a frame's cost is bounded by its count as well as by its bytes.
constexpr std::size_t kMaxBatchMessages = 1000;

// Framing violation lines one connection may write. Every violation is counted; the lines
// are capped because each one is a sender's byte (a <VT> inside a frame, a stray gap) that
// would otherwise cost a log line, so anyone who can reach the port could fill the disk the
// audit log shares. The rest are summed up in one line when the connection closes.
constexpr std::size_t kMaxViolationLinesPerConnection = 20;

// A connection's framing violations not yet logged, and what its budget let through.
struct ViolationLog {
  // Per kind, in order of first occurrence since the last flush: how many, and (for
  // stray_bytes_skipped) the bytes skipped.
  struct Pending {
    FrameEvent event;
    std::uint64_t count = 0;
    std::uint64_t bytes = 0;
  };
  std::vector<Pending> pending;
  std::size_t lines = 0;
  std::uint64_t suppressed = 0;  // violations counted but not logged (over the budget)
  std::string suppressed_kinds;  // their events, comma-separated, each once

  void add(FrameEvent e, std::uint64_t bytes) {
    auto it = std::find_if(pending.begin(), pending.end(), [e](const Pending& p) { return p.event == e; });
    if (it == pending.end()) it = pending.insert(pending.end(), Pending{e});
    ++it->count;
    it->bytes += bytes;
  }
};


}  // namespace

struct Hl7v2Adapter::State : std::enable_shared_from_this<Hl7v2Adapter::State> {
  adapters::SourceSystem source;
  ListenerOptions options;
  adapters::IngestSink* sink = nullptr;
  adapters::AdapterLog log;
  void* tls = nullptr;
  asio::any_io_executor executor;
  std::unique_ptr<tcp::acceptor> acceptor;
  std::atomic<std::uint16_t> bound_port{0};
  std::atomic<bool> stopping{false};

  // Open connections, so stop() can close the idle ones.
  // A connection as stop() sees it. Touched only on the connection's strand (`executor`):
  // `socket` is set while the connection is being served and cleared before its coroutine
  // frame goes, so a close posted by stop() never reaches a socket that is gone.
  struct Conn {
    asio::any_io_executor executor;
    tcp::socket::lowest_layer_type* socket = nullptr;
    bool busy = false;  // a message is being processed: let it finish and answer
  };
  std::mutex conns_m;
  std::set<std::shared_ptr<Conn>> conns;

  std::atomic<std::uint64_t> connections{0}, open_connections{0}, refused{0}, frames{0}, applied{0}, duplicates{0},
      errors{0}, rejected{0}, retry_later{0}, violations{0}, idle_closes{0}, acks_sent{0}, ack_write_failures{0},
      filtered{0};

  void say(LogLevel level, std::string_view msg, Fields fields = {}) {
    if (!log) return;
    fields.insert(fields.begin(), {"source", source.name});
    log(level, msg, fields);
  }

  // A sender fault. `peer` (the sender's address, "" when unknown; not patient data) is in
  // every line, so the operator knows which system to chase.
  void violation(std::string_view what, const std::string& peer, Fields fields = {}) {
    ++violations;
    log_violation(what, peer, std::move(fields));
  }
  void log_violation(std::string_view what, const std::string& peer, Fields fields) {
    fields.insert(fields.begin(), {"peer", peer.empty() ? std::string("(unknown)") : peer});
    fields.insert(fields.begin(), {"event", std::string(what)});
    say(LogLevel::warn, "mllp protocol violation", std::move(fields));
  }

  // The framer's events of one read: each counted at once (gateway_mllp_protocol_violations_total),
  // held in `vlog` and logged by flush_violations, one line per kind with its count.
  void note_violations(const FramerOutput& out, ViolationLog& vlog) {
    std::uint64_t skipped = out.skipped;  // the read's stray bytes, all its gaps: given to the first
    for (FrameEvent e : out.events) {
      ++violations;
      // message_too_large is logged as its frame is answered, with its size and MSH-10.
      if (e == FrameEvent::message_too_large) continue;
      vlog.add(e, e == FrameEvent::stray_bytes_skipped ? std::exchange(skipped, 0) : 0);
    }
  }

  // Logs what `vlog` holds, one line per kind (with "count", and "bytes" for stray bytes),
  // while the connection's budget lasts; past it, only counts what it drops.
  void flush_violations(ViolationLog& vlog, const std::string& peer) {
    for (const ViolationLog::Pending& p : vlog.pending) {
      const std::string_view name = event_name(p.event);
      if (vlog.lines >= kMaxViolationLinesPerConnection) {
        vlog.suppressed += p.count;
        if (vlog.suppressed_kinds.find(name) == std::string::npos)
          vlog.suppressed_kinds.append(vlog.suppressed_kinds.empty() ? "" : ",").append(name);
        continue;
      }
      ++vlog.lines;
      Fields f{{"count", std::to_string(p.count)}};
      if (p.event == FrameEvent::stray_bytes_skipped) f.emplace_back("bytes", std::to_string(p.bytes));
      log_violation(name, peer, std::move(f));
    }
    vlog.pending.clear();
  }

  // How a message that never became a batch is kept (IngestFailure): refused (AR), not
  // applicable (AE), or filtered (AA, setting unmapped = "filter").
  enum class Kept { error, rejected, filtered };

  // Stores a message that never became a batch, with `replies` (built first, so the message
  // store shows the reply sent), and audits it; then those replies. When not even that can be
  // stored, the sender is asked to resend later.
  awaitable<std::vector<std::string>> keep(const std::string& frame, const MshSummary& msh, const Issue& issue,
                                           Kept how, std::vector<std::string> replies, const std::string& peer,
                                           const Message* parsed) {
    adapters::IngestFailure f;
    f.source = source.name;
    f.peer = peer;
    if (parsed) f.nhs_number = nhs_number_of(*parsed, mapping_context());
    f.raw = frame;
    if (parsed) {
      f.kind = parsed->message_type();
    } else {
      f.kind = msh.component(9, 1);
      if (const std::string trigger = msh.component(9, 2); !trigger.empty()) f.kind.append("^").append(trigger);
    }
    f.dedupe_key = parsed ? dedupe_key(read_msh(parsed->text())) : msh.found ? dedupe_key(msh) : std::string();
    f.rejected = how == Kept::rejected;
    f.filtered = how == Kept::filtered;
    f.reply = join_replies(replies);
    f.issue = issue;
    fhir::Status stored = co_await record_async(*sink, f);
    if (!stored) {
      ++retry_later;
      co_return acknowledgements(msh, Outcome::not_committed, ack_error_for(stored.issue()));
    }
    ++(how == Kept::filtered ? filtered : how == Kept::rejected ? rejected : errors);
    co_return replies;
  }

  // Stores a message that never became a batch, then the acknowledgements for it (AR or AE).
  awaitable<std::vector<std::string>> refuse(const std::string& frame, const MshSummary& msh, Issue issue,
                                             bool rejected_kind, const std::string& peer,
                                             const Message* parsed = nullptr) {
    std::vector<std::string> replies =
        acknowledgements(msh, rejected_kind ? Outcome::rejected : Outcome::error, ack_error_for(issue, frame));
    co_return co_await keep(frame, msh, issue, rejected_kind ? Kept::rejected : Kept::error, std::move(replies), peer,
                            parsed);
  }

  // ADT events that are never filtered, mapped or not: they merge, link, unlink, move or
  // re-key patients, visits or accounts, delete them, or cancel an event this adapter applies
  // (A12 an A02, A38 an A05). Answered AA without being applied, each would leave the record
  // wrong for good (a duplicate patient, a ward never left) while the sender moves on; so they
  // stay AR, for the sender's team to see and handle.
  static bool never_filtered(std::string_view type) {
    static constexpr std::string_view kNeverFiltered[] = {
        "ADT^A12", "ADT^A18", "ADT^A23", "ADT^A24", "ADT^A29", "ADT^A30", "ADT^A34", "ADT^A35", "ADT^A36",
        "ADT^A37", "ADT^A38", "ADT^A39", "ADT^A41", "ADT^A42", "ADT^A43", "ADT^A44", "ADT^A45", "ADT^A46",
        "ADT^A47", "ADT^A48", "ADT^A49", "ADT^A50", "ADT^A51"};
    return std::find(std::begin(kNeverFiltered), std::end(kNeverFiltered), type) != std::end(kNeverFiltered);
  }

  // A message of a type or event not mapped, from a source set to filter them (setting
  // unmapped = "filter"): stored raw with status filtered and audited, then acknowledged as
  // accepted (AA; CA and AA in enhanced mode, as MSH-15/16 ask) with `issue` as a warning, so
  // the sender's queue moves on and nobody is told it was applied when it was only kept.
  awaitable<std::vector<std::string>> filter(const std::string& frame, const MshSummary& msh, const Issue& issue,
                                             const std::string& peer, const Message& parsed) {
    const std::string warning = (issue.expression.empty() ? std::string("MSH-9") : issue.expression) + ": " +
                                issue.diagnostics + " (stored as filtered, not applied: setting unmapped = \"filter\")";
    std::vector<std::string> replies = acknowledgements(msh, Outcome::applied, std::nullopt);
    for (std::string& ack : replies) ack = with_warnings(msh, std::move(ack), {warning});
    co_return co_await keep(frame, msh, issue, Kept::filtered, std::move(replies), peer, &parsed);
  }

  // One frame -> the acknowledgements to send (possibly none), after everything behind them
  // is committed.
  MappingContext mapping_context() const {
    MappingContext ctx;
    ctx.source_name = source.name;
    ctx.source_ods = source.ods_code;
    ctx.identifier_system_base = options.identifier_system_base;
    return ctx;
  }

  // `peer`: the sender's address, for the audit record. A frame holds one message, or one
  // FHS/BHS batch answered by one batch acknowledgement.
  awaitable<std::vector<std::string>> process(std::string frame, const std::string& peer) {
    ++frames;
    if (is_batch(frame)) co_return co_await process_batch(frame, peer);
    co_return co_await process_message(std::move(frame), peer);
  }

  // A frame over max_message_bytes, of which the framer kept `head` (see kOversizeHeadBytes):
  // refused (AR, ERR 207: table 0357 has no code for a size limit, "application internal
  // error" is its catch-all in every 2.x version) under the MSH in the head, so the sender
  // matches the answer by MSA-2 and stops resending, and stored as rejected with the head only
  // (the body is not kept: the limit is what the store accepts). Counted and logged with its
  // size and the sender's address.
  awaitable<std::vector<std::string>> process_oversize(const std::string& head, std::size_t bytes,
                                                       const std::string& peer) {
    ++frames;
    std::string_view first = head;
    if (is_batch(head)) {
      const std::vector<std::string_view> messages = split_messages(head);
      first = messages.empty() ? std::string_view() : messages.front();
    }
    const MshSummary msh = read_msh(first);
    violation("message_too_large", peer,
              {{"bytes", std::to_string(bytes)},
               {"max_message_bytes", std::to_string(options.max_message_bytes)},
               {"control_id", msh.field(10).substr(0, 64)}});
    Issue issue = Issue::make(ErrorCode::payload_too_large,
                              "the message is " + std::to_string(bytes) + " bytes, over this source's limit of " +
                                  std::to_string(options.max_message_bytes) +
                                  " (max_message_bytes): not applied, only its first " + std::to_string(head.size()) +
                                  " bytes are kept; split it, or have the limit raised",
                              "message");
    co_return co_await refuse(head, msh, std::move(issue), true, peer);
  }

  // A batch (HL7 v2.5 ch. 2.10.3): each message is processed as if it had come in a frame of
  // its own, in order, each committed (or its failure stored) before the next starts; the
  // answer is one batch acknowledgement holding every message's acknowledgements, so each
  // message is acknowledged for itself and a resent batch applies only what was not. A batch
  // that cannot be read (envelope out of order, BTS-1 not its message count, too many
  // messages) is refused whole before anything is applied, answered under its first MSH.
  awaitable<std::vector<std::string>> process_batch(const std::string& frame, const std::string& peer) {
    auto batch = read_batch(frame, kMaxBatchMessages);
    if (!batch) {
      const std::vector<std::string_view> messages = split_messages(frame);
      const MshSummary first = messages.empty() ? MshSummary{} : read_msh(messages.front());
      co_return co_await refuse(frame, first, std::move(batch).issue(), true, peer);
    }
    std::vector<std::string> acks;
    for (std::string_view message : batch->messages) {
      std::vector<std::string> replies = co_await process_message(std::string(message), peer);
      for (std::string& r : replies) acks.push_back(std::move(r));
    }
    co_return std::vector<std::string>{build_batch_ack(batch->fhs, batch->bhs, acks, next_ack_clock())};
  }

  awaitable<std::vector<std::string>> process_message(std::string frame, const std::string& peer) {
    ParseOptions popts;
    popts.max_message_bytes = options.max_message_bytes;
    auto parsed = Message::parse(frame, popts);
    if (!parsed) {
      const MshSummary raw_msh = read_msh(frame);
      // Several messages in one frame outside a batch: Mirth applies the first and drops the
      // rest unseen. Refused whole (one frame gets one answer), and a sender fault to see.
      if (parsed.issue().expression == "MSH[2]")
        violation("several messages in one frame", peer, {{"detail", parsed.issue().diagnostics}});
      co_return co_await refuse(frame, raw_msh, std::move(parsed).issue(), true, peer);
    }
    const Message& message = *parsed;
    // The ACK is built from the MSH as received, so it echoes the sender's bytes in the
    // sender's character set; the key resends are matched by stays the UTF-8 text, as stored.
    const MshSummary msh = read_msh(frame, message);
    const std::string version = message.version();
    if (!version_accepted(version))
      co_return co_await refuse(frame, msh,
                                Issue::make(ErrorCode::not_supported,
                                            "HL7 version '" + version + "' is not accepted (2.x expected)", "MSH-12"),
                                true, peer, &message);
    // MSH-11: only the processing ids this source is configured to apply (P by default), so a
    // training (T) or debugging (D) system pointed at a production listener changes nothing.
    const std::string processing = msh.component(11, 1);
    const std::vector<std::string>& accepted = options.processing_ids;
    if (std::find(accepted.begin(), accepted.end(), processing.empty() ? std::string("P") : processing) ==
        accepted.end()) {
      std::string listed;
      for (const std::string& p : accepted) listed.append(listed.empty() ? "" : ", ").append(p);
      const std::string shown = processing.size() <= 8 ? processing : processing.substr(0, 8) + "...";
      co_return co_await refuse(frame, msh,
                                Issue::make(ErrorCode::not_supported,
                                            "processing id '" + shown + "' is not applied by this source (accepted: " +
                                                listed + "; setting processing_ids)",
                                            "MSH-11"),
                                true, peer, &message);
    }

    // MSH-10 is a required field: the ACK echoes it for the sender to match,
    // and resends are recognised by it; without it every resend would be applied again.
    if (msh.field(10).find_first_not_of(' ') == std::string::npos)
      co_return co_await refuse(
          frame, msh,
          Issue::make(ErrorCode::missing_value,
                      "MSH-10 (message control id) is required: give every message a unique control id", "MSH-10"),
          true, peer, &message);

    auto mapped = map_message(message, mapping_context());
    if (!mapped) {
      Issue issue = std::move(mapped).issue();
      const bool unsupported = issue.code == ErrorCode::not_supported;
      // Only a type or event not mapped (ERR 200/201) may be filtered; anything wrong with a
      // message of a mapped type is refused as before.
      if (unsupported && options.filter_unmapped && issue.expression.rfind("MSH-9", 0) == 0) {
        if (!never_filtered(message.message_type())) co_return co_await filter(frame, msh, issue, peer, message);
        issue.diagnostics += " (never filtered: an event that merges, links, moves, re-keys or deletes a patient, "
                             "visit or account, or cancels an applied event)";
      }
      co_return co_await refuse(frame, msh, std::move(issue), unsupported, peer, &message);
    }

    adapters::IngestBatch batch;
    batch.source = source.name;
    batch.identity = std::move(mapped->patient);
    batch.resources = std::move(mapped->resources);
    batch.raw = frame;
    batch.kind = mapped->message_type;
    batch.dedupe_key = dedupe_key(read_msh(message.text()));
    batch.identity_location = "PID-3";
    batch.merge_location = "MRG-1";
    batch.key_locations = std::move(mapped->key_locations);
    batch.peer = peer;
    // What the mapping could not take as sent goes back with the acknowledgement (ERR,
    // severity W) and is kept with the message.
    std::vector<std::string> success = acknowledgements(msh, Outcome::applied, std::nullopt);
    for (std::string& ack : success) ack = with_warnings(msh, std::move(ack), mapped->warnings);
    batch.reply = join_replies(success);
    batch.warnings = std::move(mapped->warnings);
    if (mapped->merge) batch.retired_identifiers = std::move(mapped->merge->retired_identifiers);
    if (mapped->encounter) batch.encounters.emplace_back(mapped->encounter->organisation_ods, mapped->encounter->at);
    // The AE for a unit the ingest path cannot apply, built there (and kept with its error
    // row) from the issue it reports; sent as built. Read here after the sink completed.
    auto success_replies = std::make_shared<std::vector<std::string>>();
    batch.reply_with_warnings = [msh, success_replies](const std::vector<std::string>& warnings) {
      *success_replies = acknowledgements(msh, Outcome::applied, std::nullopt);
      for (std::string& ack : *success_replies) ack = with_warnings(msh, std::move(ack), warnings);
      return join_replies(*success_replies);
    };
    auto error_replies = std::make_shared<std::vector<std::string>>();
    batch.error_reply = [msh, error_replies](const Issue& why) {
      *error_replies = acknowledgements(msh, Outcome::error, ack_error_for(why));
      return join_replies(*error_replies);
    };

    ReceiptResult r = co_await submit_async(*sink, batch);
    if (r) {
      if (r->duplicate) {
        ++duplicates;
        co_return split_replies(r->prior_reply);
      }
      ++applied;
      if (!success_replies->empty()) co_return *success_replies;
      co_return success;
    }
    const Issue& issue = r.issue();
    if (transient(issue)) {
      // HL7 v2.5 ch. 2.9.2: AR also covers "the receiving system is down": resend later.
      ++retry_later;
      say(LogLevel::warn, "message not applied: gateway unavailable, sender asked to resend",
          {{"kind", batch.kind}, {"reason", issue.diagnostics}});
      co_return acknowledgements(msh, Outcome::not_committed, ack_error_for(issue));
    }
    ++errors;  // stored with status error by the sink, with the reply it had built
    if (!error_replies->empty()) co_return *error_replies;
    co_return acknowledgements(msh, Outcome::error, ack_error_for(issue));
  }

  // `peer`: the sender's address ("" when unknown).
  template <class Stream>
  awaitable<void> serve(Stream& stream, tcp::socket::lowest_layer_type& socket, std::shared_ptr<Conn> conn,
                        const std::string& peer) {
    auto ex = co_await asio::this_coro::executor;
    asio::steady_timer watchdog(ex);
    conn->socket = &socket;
    bool& busy = conn->busy;
    // `what` == nullptr: the idle timeout, which is no fault of the sender's. A keep-alive
    // connection with nothing to send is closed as the configuration asks, counted on its own
    // (gateway_mllp_idle_closes_total) and logged at info, so that a quiet feed does not raise
    // protocol-violation alerts; the sender reconnects when it has a message.
    auto arm_at = [&](std::chrono::steady_clock::time_point at, const char* what) {
      watchdog.expires_at(at);
      watchdog.async_wait([this, &socket, &peer, what](boost::system::error_code ec) {
        if (ec) return;  // cancelled: the operation finished in time
        if (what) {
          violation(what, peer);
        } else {
          ++idle_closes;
          say(LogLevel::info, "mllp connection closed: idle",
              {{"peer", peer}, {"idle_timeout_s", std::to_string(options.idle_timeout.count())}});
        }
        boost::system::error_code ignored;
        socket.close(ignored);
      });
    };
    auto arm = [&](std::chrono::seconds after, const char* what) {
      arm_at(std::chrono::steady_clock::now() + after, what);
    };

    FramerLimits limits;
    limits.max_message_bytes = options.max_message_bytes;
    // An oversize frame is read on (and dropped) to answer it, up to four times the limit.
    limits.max_oversize_bytes = 4 * options.max_message_bytes;
    MllpFramer framer(limits);
    ViolationLog vlog;
    std::vector<char> buf(64 * 1024);
    // The idle timeout runs per read; the frame timeout runs from the read that brought a
    // frame's start block until its end block, however the sender spaces the bytes in
    // between: re-arming it per read would let a sender trickling a byte at a time hold a
    // connection (and one of max_connections) for ever. A <VT> inside a frame restarts the
    // frame but not its deadline, for the same reason.
    std::chrono::steady_clock::time_point frame_deadline{};
    for (;;) {
      if (stopping && !framer.in_frame()) break;
      if (framer.in_frame()) arm_at(frame_deadline, "frame timeout");
      else arm(options.idle_timeout, nullptr);
      boost::system::error_code ec;
      const std::size_t n =
          co_await stream.async_read_some(asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
      watchdog.cancel();
      if (ec) {
        if (framer.in_frame()) {
          flush_violations(vlog, peer);
          violation("connection closed inside a frame", peer,
                    {{"pending_bytes", std::to_string(framer.pending_bytes())}});
        }
        break;
      }
      FramerOutput out;
      const bool continued_frame = framer.in_frame();
      framer.feed(std::string_view(buf.data(), n), out);
      // A frame begun in this read (alone, or after frames it completed). Its deadline is set
      // once those frames are answered below: the time the gateway spends on them is not the
      // sender's.
      const bool frame_begun = framer.in_frame() && (!continued_frame || !out.frames.empty());
      // Logged when the frame they happened in ends (or the gap between frames, the read):
      // 20,000 <VT>s inside one frame are one line with their count, not 20,000 lines.
      note_violations(out, vlog);
      if (!framer.in_frame() || out.fatal) flush_violations(vlog, peer);
      busy = true;
      bool write_failed = false;
      for (std::size_t i = 0; i < out.frames.size(); ++i) {
        std::string& frame = out.frames[i];
        const auto over = std::find_if(out.oversize.begin(), out.oversize.end(),
                                       [i](const OversizeFrame& o) { return o.frame == i; });
        std::vector<std::string> replies;
        if (over == out.oversize.end()) replies = co_await process(std::move(frame), peer);
        else replies = co_await process_oversize(frame, over->bytes, peer);
        for (const std::string& ack : replies) {
          const std::string wire = MllpFramer::frame(ack);
          arm(options.write_timeout, "acknowledgement write timeout");
          co_await asio::async_write(stream, asio::buffer(wire), asio::redirect_error(asio::use_awaitable, ec));
          watchdog.cancel();
          if (ec) {
            // The message is committed; the sender resends and gets this ACK again.
            ++ack_write_failures;
            say(LogLevel::warn, "acknowledgement not delivered: connection lost", {{"error", ec.message()}});
            write_failed = true;
            break;
          }
          ++acks_sent;
        }
        if (write_failed) break;
      }
      busy = false;
      if (write_failed || out.fatal) break;
      if (frame_begun) frame_deadline = std::chrono::steady_clock::now() + options.frame_timeout;
    }
    flush_violations(vlog, peer);  // a frame cut short by a timeout or stop()
    if (vlog.suppressed > 0)
      say(LogLevel::warn, "mllp protocol violations not logged",
          {{"peer", peer.empty() ? std::string("(unknown)") : peer},
           {"suppressed", std::to_string(vlog.suppressed)},
           {"events", vlog.suppressed_kinds},
           {"max_lines_per_connection", std::to_string(kMaxViolationLinesPerConnection)}});
    conn->socket = nullptr;
    boost::system::error_code ignored;
    socket.close(ignored);
    co_return;
  }

  awaitable<void> connection(tcp::socket socket) {
    auto conn = std::make_shared<Conn>();
    conn->executor = co_await asio::this_coro::executor;  // before stop() can see it
    {
      std::lock_guard lock(conns_m);
      conns.insert(conn);
    }
    ++open_connections;
    // The sender's address, for its log lines and the audit records of what it sends.
    const std::string peer = peer_address(socket);
#if GW_WITH_TLS
    if (options.tls && tls) {
      asio::ssl::stream<tcp::socket> stream(std::move(socket), *static_cast<asio::ssl::context*>(tls));
      asio::steady_timer hs(co_await asio::this_coro::executor);
      hs.expires_after(options.frame_timeout);
      auto& lowest = stream.lowest_layer();
      hs.async_wait([&lowest](boost::system::error_code ec) {
        if (!ec) {
          boost::system::error_code ignored;
          lowest.close(ignored);
        }
      });
      boost::system::error_code ec;
      co_await stream.async_handshake(asio::ssl::stream_base::server, asio::redirect_error(asio::use_awaitable, ec));
      hs.cancel();
      if (ec) {
        violation("tls handshake failed", peer, {{"error", ec.message()}});
      } else if (const std::string subject = net::verified_peer_subject(stream.native_handle());
                 !options.client_certificate_subject.empty() && subject != options.client_certificate_subject) {
        // Another certificate from the same client CA must not push messages as this source
        // (a sender without one fails the handshake: the gateway gives this listener a context
        // that requires one; an empty subject here is refused all the same). Refused before
        // a byte of HL7 is read, so nothing is stored or acknowledged.
        violation("client certificate refused", peer,
                  {{"subject", subject.empty() ? std::string("(none verified)") : subject.substr(0, 256)}});
        boost::system::error_code ignored;
        stream.lowest_layer().close(ignored);
      } else {
        co_await serve(stream, stream.lowest_layer(), conn, peer);
      }
    } else {
      co_await serve(socket, socket.lowest_layer(), conn, peer);
    }
#else
    co_await serve(socket, socket.lowest_layer(), conn, peer);
#endif
    --open_connections;
    std::lock_guard lock(conns_m);
    conns.erase(conn);
  }

  awaitable<void> accept_loop() {
    for (;;) {
      boost::system::error_code ec;
      tcp::socket socket(asio::make_strand(executor));
      co_await acceptor->async_accept(socket, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        if (stopping || !acceptor->is_open()) co_return;
        say(LogLevel::warn, "mllp accept failed", {{"error", ec.message()}});
        continue;
      }
      if (open_connections >= options.max_connections) {
        ++refused;
        violation("connection limit reached", peer_address(socket),
                  {{"max_connections", std::to_string(options.max_connections)}});
        socket.close(ec);
        continue;
      }
      ++connections;
      auto ex = socket.get_executor();
      // The connection keeps the listener's state alive for as long as it runs.
      asio::co_spawn(
          ex, [self = shared_from_this(), sock = std::move(socket)]() mutable { return self->connection(std::move(sock)); },
          asio::detached);
    }
  }
};

fhir::Result<ListenerOptions> listener_options(const adapters::SourceSystem& source) {
  // Every key this function reads. Anything else is refused, so a misspelt limit
  // (max_mesage_bytes) is an error rather than a default silently kept.
  static constexpr std::string_view kSettings[] = {"frame_timeout_s",   "identifier_system_base", "idle_timeout_s",
                                                   "max_connections",   "max_message_bytes",      "processing_ids",
                                                   "tls",               "unmapped"};
  for (const auto& [key, value] : source.settings) {
    if (std::find(std::begin(kSettings), std::end(kSettings), key) != std::end(kSettings)) continue;
    std::string known;
    for (std::string_view k : kSettings) known.append(known.empty() ? "" : ", ").append(k);
    return Issue::make(ErrorCode::invalid_value,
                       "source '" + source.name + "': unknown hl7v2 setting '" + key.substr(0, 64) +
                           "' (known: " + known + ")",
                       "settings." + key.substr(0, 64));
  }
  ListenerOptions o;
  const std::string& ep = source.endpoint;
  if (!ep.empty()) {
    const auto colon = ep.rfind(':');
    if (colon == std::string::npos || colon == 0)
      return Issue::make(ErrorCode::invalid_value, "source '" + source.name + "': endpoint must be host:port", "endpoint");
    o.address = ep.substr(0, colon);
    if (o.address.size() > 2 && o.address.front() == '[' && o.address.back() == ']')
      o.address = o.address.substr(1, o.address.size() - 2);
    const std::string port = ep.substr(colon + 1);
    char* end = nullptr;
    const long p = std::strtol(port.c_str(), &end, 10);
    if (port.empty() || *end || p < 0 || p > 65535)
      return Issue::make(ErrorCode::invalid_value, "source '" + source.name + "': endpoint port must be 0-65535",
                         "endpoint");
    o.port = static_cast<std::uint16_t>(p);
    // The listener binds an address, not a name: a name ("localhost") would only fail at
    // start, after the configuration was reported valid.
    boost::system::error_code ec;
    asio::ip::make_address(o.address, ec);
    if (ec)
      return Issue::make(ErrorCode::invalid_value,
                         "source '" + source.name + "': endpoint host '" + o.address +
                             "' is not an IP address (use 127.0.0.1 or ::1 for loopback, 0.0.0.0 for every interface)",
                         "endpoint");
  }
  auto number = [&](std::string_view key, std::int64_t lo, std::int64_t hi, std::int64_t& out) -> fhir::Status {
    const std::string v = source.setting(key);
    if (v.empty()) return fhir::Ok{};
    char* end = nullptr;
    const long long n = std::strtoll(v.c_str(), &end, 10);
    if (*end || n < lo || n > hi)
      return Issue::make(ErrorCode::invalid_value,
                         "source '" + source.name + "': " + std::string(key) + " must be a whole number from " +
                             std::to_string(lo) + " to " + std::to_string(hi),
                         "settings." + std::string(key));
    out = n;
    return fhir::Ok{};
  };
  std::int64_t conns = static_cast<std::int64_t>(o.max_connections), bytes = static_cast<std::int64_t>(o.max_message_bytes),
               idle = o.idle_timeout.count(), frame = o.frame_timeout.count();
  if (auto s = number("max_connections", 1, 10000, conns); !s) return std::move(s).issue();
  if (auto s = number("max_message_bytes", 1024, 64 * 1024 * 1024, bytes); !s) return std::move(s).issue();
  if (auto s = number("idle_timeout_s", 1, 86400, idle); !s) return std::move(s).issue();
  if (auto s = number("frame_timeout_s", 1, 3600, frame); !s) return std::move(s).issue();
  o.max_connections = static_cast<std::size_t>(conns);
  o.max_message_bytes = static_cast<std::size_t>(bytes);
  o.idle_timeout = std::chrono::seconds(idle);
  o.frame_timeout = std::chrono::seconds(frame);
  const std::string tls = source.setting("tls", "false");
  if (tls != "true" && tls != "false")
    return Issue::make(ErrorCode::invalid_value, "source '" + source.name + "': tls must be true or false",
                       "settings.tls");
  o.tls = tls == "true";
  if (o.tls) o.client_certificate_subject = source.client_certificate_subject;
  // processing_ids: the MSH-11 values applied, a list of P, T and D (a TOML array of strings
  // reaches the adapter comma-separated; "P,T" is read the same).
  {
    const std::string ids = source.setting("processing_ids", "P");
    o.processing_ids.clear();
    std::size_t begin = 0;
    while (begin <= ids.size()) {
      std::size_t end = ids.find(',', begin);
      if (end == std::string::npos) end = ids.size();
      std::string id = ids.substr(begin, end - begin);
      const auto first = id.find_first_not_of(' ');
      id = first == std::string::npos ? std::string() : id.substr(first, id.find_last_not_of(' ') - first + 1);
      if (id != "P" && id != "T" && id != "D")
        return Issue::make(ErrorCode::invalid_value,
                           "source '" + source.name +
                               "': processing_ids must list MSH-11 processing ids P (production), T (training) or "
                               "D (debugging), e.g. [\"P\"]",
                           "settings.processing_ids");
      if (std::find(o.processing_ids.begin(), o.processing_ids.end(), id) == o.processing_ids.end())
        o.processing_ids.push_back(std::move(id));
      begin = end + 1;
    }
  }
  const std::string unmapped = source.setting("unmapped", "reject");
  if (unmapped != "reject" && unmapped != "filter")
    return Issue::make(ErrorCode::invalid_value,
                       "source '" + source.name + "': unmapped must be \"reject\" (refuse, AR) or \"filter\" (store as "
                           "filtered and acknowledge AA) for messages of a type or event this adapter does not map",
                       "settings.unmapped");
  o.filter_unmapped = unmapped == "filter";
  const std::string base = source.setting("identifier_system_base");
  if (!base.empty()) o.identifier_system_base = base;
  return o;
}

Hl7v2Adapter::Hl7v2Adapter(adapters::SourceSystem source, ListenerOptions options) : s_(std::make_shared<State>()) {
  s_->source = std::move(source);
  s_->options = std::move(options);
}

Hl7v2Adapter::~Hl7v2Adapter() { stop(); }

fhir::Status Hl7v2Adapter::start(adapters::AdapterContext& context) {
  if (!context.sink) return Issue::make(ErrorCode::internal_error, "the hl7v2 adapter needs an ingest sink");
  s_->sink = context.sink;
  s_->log = context.log;
  s_->tls = context.tls_server_context;
  s_->executor = context.executor;
#if !GW_WITH_TLS
  if (s_->options.tls)
    return Issue::make(ErrorCode::invalid_value, "source '" + s_->source.name + "': this build has no TLS",
                       "settings.tls");
#endif
  if (s_->options.tls && !s_->tls)
    return Issue::make(ErrorCode::invalid_value,
                       "source '" + s_->source.name + "': tls = true needs the gateway's HTTPS certificate configured",
                       "settings.tls");
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(s_->options.address, ec);
  if (ec)
    return Issue::make(ErrorCode::invalid_value,
                       "source '" + s_->source.name + "': '" + s_->options.address + "' is not an IP address", "endpoint");
  auto acceptor = std::make_unique<tcp::acceptor>(asio::make_strand(s_->executor));
  const tcp::endpoint endpoint(address, s_->options.port);
  acceptor->open(endpoint.protocol(), ec);
  if (!ec) acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor->bind(endpoint, ec);
  if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    return Issue::make(ErrorCode::not_ready, "source '" + s_->source.name + "': cannot listen for MLLP on " +
                                                 s_->options.address + ":" + std::to_string(s_->options.port) + ": " +
                                                 ec.message());
  s_->bound_port = acceptor->local_endpoint().port();
  s_->acceptor = std::move(acceptor);
  s_->say(LogLevel::info, "mllp listener started",
          {{"address", s_->options.address}, {"port", std::to_string(s_->bound_port.load())},
           {"tls", s_->options.tls ? "true" : "false"}});
  asio::co_spawn(s_->acceptor->get_executor(), [s = s_]() { return s->accept_loop(); }, asio::detached);
  return fhir::Ok{};
}

void Hl7v2Adapter::stop() {
  if (!s_ || s_->stopping.exchange(true)) return;
  if (s_->acceptor) {
    auto s = s_;
    asio::post(s_->acceptor->get_executor(), [s] {
      boost::system::error_code ignored;
      s->acceptor->close(ignored);
    });
  }
  std::lock_guard lock(s_->conns_m);
  for (const auto& c : s_->conns) {
    asio::post(c->executor, [c] {
      if (c->socket && !c->busy) {
        boost::system::error_code ignored;
        c->socket->close(ignored);
      }
    });
  }
}

void Hl7v2Adapter::fetch(const adapters::PatientKey&, const adapters::FetchScope&, std::chrono::steady_clock::time_point,
                         adapters::FetchHandler done) {
  done(Issue::make(ErrorCode::not_supported, "source '" + s_->source.name + "' pushes HL7 v2 and cannot be queried"));
}

std::uint16_t Hl7v2Adapter::port() const { return s_->bound_port; }

std::size_t Hl7v2Adapter::in_flight() const { return static_cast<std::size_t>(s_->open_connections.load()); }

Hl7v2Adapter::Stats Hl7v2Adapter::stats() const {
  Stats st;
  st.connections = s_->connections;
  st.open_connections = s_->open_connections;
  st.refused_connections = s_->refused;
  st.frames = s_->frames;
  st.applied = s_->applied;
  st.duplicates = s_->duplicates;
  st.errors = s_->errors;
  st.rejected = s_->rejected;
  st.retry_later = s_->retry_later;
  st.filtered = s_->filtered;
  st.protocol_violations = s_->violations;
  st.idle_closes = s_->idle_closes;
  st.acks_sent = s_->acks_sent;
  st.ack_write_failures = s_->ack_write_failures;
  return st;
}

void register_hl7v2(adapters::AdapterRegistry& registry) {
  registry.add("hl7v2", [](const adapters::SourceSystem& source) -> fhir::Result<std::unique_ptr<adapters::Adapter>> {
    auto options = listener_options(source);
    if (!options) return std::move(options).issue();
    return std::unique_ptr<adapters::Adapter>(std::make_unique<Hl7v2Adapter>(source, std::move(*options)));
  });
}

}  // namespace gw::hl7v2
