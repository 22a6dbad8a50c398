// SPDX-License-Identifier: Apache-2.0
// PluginAdapter: a vendor's shared library (gw_adapter_abi.h) driven as an Adapter. Every
// function the plug-in can call (host table, fetch completion) is a noexcept trampoline that
// catches everything, copies what it needs and moves the work onto the gateway's executor.
#include "adapters/plugin/plugin_adapter.h"

#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include "adapters/plugin/gw_adapter_abi.h"
#include "fhir/date_range.h"
#include "fhir/nhs_number.h"

namespace gw::adapters {

namespace asio = boost::asio;
using fhir::ErrorCode;
using fhir::Issue;

namespace {

constexpr std::size_t kMaxLogBytes = 1024;
// Read past the cut, so that an NHS number across it is still recognised (loggable_text).
constexpr std::size_t kMaxLogReadBytes = kMaxLogBytes + 12;
constexpr std::size_t kMaxPluginTextBytes = 300;  // reasons and diagnostics taken from a plug-in

// ---------------------------------------------------------------------------------------
// Logging

std::string_view level_name(LogLevel level) {
  switch (level) {
    case LogLevel::debug: return "debug";
    case LogLevel::info: return "info";
    case LogLevel::warn: return "warn";
    case LogLevel::error: return "error";
  }
  return "info";
}

// The gateway's log line format (gateway/observe/log.h, which adapters may not depend on):
// {"ts":"<RFC 3339 UTC>","level","msg",<fields>}, the fields being those AdapterContext::log
// gets after start(), so a plug-in's line reads the same before start (create()) as after.
void write_stderr_line(const PluginLogLine& line) {
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  fhir::Json o = fhir::Json::object();
  o.set("ts", fhir::Json::string(
                  fhir::format_instant(std::chrono::duration_cast<std::chrono::milliseconds>(now).count())));
  o.set("level", fhir::Json::string(std::string(level_name(line.level))));
  o.set("msg", fhir::Json::string(std::string(line.message)));
  // Empty fields are left out, as the gateway's logger does.
  if (!line.source.empty()) o.set("source", fhir::Json::string(std::string(line.source)));
  o.set("origin", fhir::Json::string(std::string(line.origin)));
  std::string text = fhir::to_json(o);
  text.push_back('\n');
  // One write(2) per line so that lines from different threads never interleave.
  ssize_t written = ::write(STDERR_FILENO, text.data(), text.size());
  (void)written;
}

struct LogRouter {
  std::mutex mutex;
  std::shared_ptr<const PluginLogSink> sink;
};

// Never destroyed: plug-in threads may log while static destructors run at exit.
LogRouter& log_router() {
  static auto* router = new LogRouter;
  return *router;
}

// What a log line may show of a plug-in's text: printable, cut short, and with every NHS
// number replaced by words naming it. Plug-ins are told to log no patient data
// (gw_adapter_abi.h), but a vendor's line quoting the patient it worked on, or an ingest
// refusal the host passed back that the plug-in logs, must not carry one into the log.
std::string loggable_text(std::string_view message) {
  std::string text = fhir::without_nhs_numbers(printable_text(message, kMaxLogReadBytes), "(NHS number removed)");
  if (text.size() > kMaxLogBytes) text.resize(kMaxLogBytes);
  return text;
}

// To the process-wide plug-in sink.
void emit(LogLevel level, std::string_view source, std::string_view origin, std::string_view message) noexcept {
  try {
    std::string text = loggable_text(message);
    PluginLogLine line{level, source, origin, text};
    std::shared_ptr<const PluginLogSink> sink;
    {
      std::lock_guard lock(log_router().mutex);
      sink = log_router().sink;
    }
    if (sink)
      (*sink)(line);
    else
      write_stderr_line(line);
  } catch (...) {
    // A failing log sink must not take a plug-in call down with it.
  }
}

// Where one source's lines go: the gateway's AdapterContext::log once start() gave one,
// else the process-wide plug-in sink. Shared by everything that may outlive the adapter.
class LogTarget {
 public:
  explicit LogTarget(std::string source) : source_(std::move(source)) {}

  const std::string& source() const { return source_; }

  void set(AdapterLog log) {
    auto shared = log ? std::make_shared<const AdapterLog>(std::move(log)) : nullptr;
    std::lock_guard lock(mutex_);
    log_ = std::move(shared);
  }

  void write(LogLevel level, std::string_view origin, std::string_view message) const noexcept {
    try {
      std::shared_ptr<const AdapterLog> log;
      {
        std::lock_guard lock(mutex_);
        log = log_;
      }
      if (!log) {
        emit(level, source_, origin, message);
        return;
      }
      (*log)(level, loggable_text(message), {{"source", source_}, {"origin", std::string(origin)}});
    } catch (...) {
      // As in emit: logging never fails a plug-in call.
    }
  }

  // The loader's own lines.
  void host(LogLevel level, std::string_view message) const noexcept { write(level, "host", message); }

 private:
  std::string source_;
  mutable std::mutex mutex_;
  std::shared_ptr<const AdapterLog> log_;
};

// ---------------------------------------------------------------------------------------
// Per-instance host state (gw_host_v1.host_ctx points here).

// Whether the plug-in's code may still be called. Completions hold it shared while they call
// into the plug-in; the adapter's destructor takes it exclusively to end that before destroy.
struct PluginLife {
  std::shared_mutex mutex;
  bool alive = true;
};

struct HostState {
  explicit HostState(const std::string& source_name) : source(source_name), log(std::make_shared<LogTarget>(source_name)) {}
  std::string source;
  std::shared_ptr<LogTarget> log;
  PluginLimits limits;
  gw_host_v1 table{};
  std::shared_ptr<PluginLife> life = std::make_shared<PluginLife>();
  // Written by start() before `accepting` is set (release), read after it is seen (acquire).
  asio::any_io_executor executor;
  IngestSink* sink = nullptr;
  std::atomic<bool> accepting{false};
};

// The plug-in's ingest done callback, owed exactly once for every accepted batch. If the sink
// drops its completion, or the executor is destroyed with the submission still queued, the
// destructor still answers (GW_ERR_STOPPED), so the plug-in never waits forever.
class IngestReply {
 public:
  IngestReply(std::shared_ptr<PluginLife> life, std::shared_ptr<LogTarget> log, gw_ingest_done_fn done, void* cookie)
      : life_(std::move(life)), log_(std::move(log)), done_(done), cookie_(cookie) {}
  IngestReply(const IngestReply&) = delete;
  IngestReply& operator=(const IngestReply&) = delete;
  ~IngestReply() { send(GW_ERR_STOPPED, "the gateway stopped before the batch was stored"); }

  void send(int status, const std::string& error) noexcept {
    if (sent_.exchange(true)) return;
    try {
      std::shared_lock lock(life_->mutex);
      if (!life_->alive) return;  // the instance is gone: nobody is left to tell
      done_(cookie_, status, error.c_str());
    } catch (...) {
      log_->host(LogLevel::error, "could not report a batch's outcome to the plug-in");
    }
  }

 private:
  std::shared_ptr<PluginLife> life_;
  std::shared_ptr<LogTarget> log_;
  gw_ingest_done_fn done_;
  void* cookie_;
  std::atomic<bool> sent_{false};
};

int ingest_status(ErrorCode code) {
  return code == ErrorCode::payload_too_large ? GW_ERR_TOO_LARGE : GW_ERR_INVALID;
}

// gw_host_v1.ingest. Parses on the plug-in's thread (so a malformed batch is refused before
// anything is queued) and submits on the executor.
int host_ingest(void* host_ctx, const char* batch_json, size_t len, gw_ingest_done_fn done, void* cookie) noexcept {
  auto* host = static_cast<HostState*>(host_ctx);
  if (host == nullptr) return GW_ERR_INVALID;
  try {
    if (done == nullptr || (batch_json == nullptr && len != 0)) {
      host->log->host(LogLevel::error, "batch refused: ingest called without a done callback or data");
      return GW_ERR_INVALID;
    }
    if (!host->accepting.load(std::memory_order_acquire)) {
      host->log->host(LogLevel::warn, "batch refused: the source is not started or is stopping");
      return GW_ERR_STOPPED;
    }
    if (host->sink == nullptr) {
      host->log->host(LogLevel::warn, "batch refused: this source has no ingest sink (pull only)");
      return GW_ERR_UNSUPPORTED;
    }
    auto read = read_plugin_batch(std::string_view(batch_json == nullptr ? "" : batch_json, len), host->source,
                                  host->limits);
    if (auto* failure = std::get_if<IngestFailure>(&read)) {
      std::string line = "batch refused: ";
      line.append(failure->issue.diagnostics);
      host->log->host(LogLevel::warn, line);
      const int status = ingest_status(failure->issue.code);
      // Kept, counted and audited like a message an MLLP listener rejects (AR): the refusal
      // must be visible to operators and to IG officers, not only in a log line.
      asio::post(host->executor, [sink = host->sink, log = host->log, failure = std::move(*failure)]() mutable {
        sink->record_failure(std::move(failure), [log](fhir::Status stored) {
          if (!stored) log->host(LogLevel::error, "a refused batch could not be recorded: " + stored.issue().diagnostics);
        });
      });
      return status;
    }
    auto reply = std::make_shared<IngestReply>(host->life, host->log, done, cookie);
    asio::post(host->executor, [sink = host->sink, batch = std::get<IngestBatch>(std::move(read)), reply]() mutable {
      // A duplicate (a resend of a unit already applied) is acknowledged like a commit.
      sink->submit(std::move(batch), [reply](fhir::Result<IngestReceipt> receipt) {
        if (receipt.ok())
          reply->send(GW_OK, {});
        else
          reply->send(GW_ERR_FAILED, receipt.issue().diagnostics);
      });
    });
    return GW_OK;
  } catch (...) {
    host->log->host(LogLevel::error, "batch refused: internal error while accepting it");
    return GW_ERR_FAILED;
  }
}

// gw_host_v1.log
void host_plugin_log(void* host_ctx, int level, const char* msg) noexcept {
  auto* host = static_cast<HostState*>(host_ctx);
  if (host == nullptr || msg == nullptr) return;
  LogLevel l = level <= GW_LOG_DEBUG  ? LogLevel::debug
               : level == GW_LOG_INFO ? LogLevel::info
               : level == GW_LOG_WARN ? LogLevel::warn
                                      : LogLevel::error;
  // Bounded read: never scan an unterminated string further than a log line can hold.
  host->log->write(l, "plugin", std::string_view(msg, ::strnlen(msg, kMaxLogReadBytes)));
}

// ---------------------------------------------------------------------------------------
// Fetches in flight.

// One fetch. The deadline timer and the completion both run on `strand`; `completed` makes
// the first of them win and the other a no-op.
struct FetchCall {
  FetchCall(std::shared_ptr<LogTarget> log_target, asio::any_io_executor executor, FetchHandler done, PluginLimits lim,
            std::string asked_nhs_number)
      : source(log_target->source()), log(std::move(log_target)), strand(asio::make_strand(executor)), timer(strand),
        handler(std::move(done)), limits(std::move(lim)), nhs_number(std::move(asked_nhs_number)) {}
  std::string source;
  std::shared_ptr<LogTarget> log;
  asio::strand<asio::any_io_executor> strand;
  asio::steady_timer timer;
  FetchHandler handler;
  PluginLimits limits;
  std::string nhs_number;  // of the patient asked for (empty when not known): the answer must not name another
  std::atomic<bool> completed{false};
};

// The cookie handed to a plug-in is an id in this process-wide table, never a pointer: an
// answer for a call that is finished, unknown or answered twice is found missing and
// ignored instead of touching freed memory.
class CallTable {
 public:
  // 0 when `owner` already has `max_pending` calls in flight.
  std::uintptr_t add(const void* owner, std::shared_ptr<FetchCall> call, std::size_t max_pending) {
    std::lock_guard lock(mutex_);
    std::size_t& count = per_owner_[owner];
    if (count >= max_pending) return 0;
    ++count;
    std::uintptr_t id = next_++;
    if (next_ == 0) next_ = 1;
    calls_.emplace(id, Entry{owner, std::move(call)});
    return id;
  }

  // Call `id` answered by the plug-in (or refused by fetch's return value): the call, or null
  // when it is finished or unknown. Its source's log target is kept (see expire), so that a
  // second answer is logged under its source.
  std::shared_ptr<FetchCall> take(std::uintptr_t id) {
    std::lock_guard lock(mutex_);
    auto it = calls_.find(id);
    if (it == calls_.end()) return nullptr;
    auto call = std::move(it->second.call);
    finish(id, it->second.owner, call->log, false);
    calls_.erase(it);
    return call;
  }

  // The deadline answered call `id`: it no longer counts toward its owner's limit (a plug-in
  // that never answers must not block every later fetch), and only the source's log target
  // is kept, so that a late answer is logged under its source and otherwise ignored. The
  // most recent kMaxFinished finished calls are remembered; an answer older than that is
  // "unknown".
  void expire(std::uintptr_t id) {
    std::lock_guard lock(mutex_);
    auto it = calls_.find(id);
    if (it == calls_.end()) return;  // answered or refused meanwhile: already released
    finish(id, it->second.owner, it->second.call->log, true);
    calls_.erase(it);
  }

  // A finished call (take, expire): its source's log target and whether the deadline
  // finished it. Null log when `id` is unknown or forgotten.
  struct Finished {
    std::shared_ptr<LogTarget> log;
    bool timed_out = false;
  };
  Finished take_finished(std::uintptr_t id) {
    std::lock_guard lock(mutex_);
    auto it = finished_.find(id);
    if (it == finished_.end()) return {};
    Finished finished{std::move(it->second.log), it->second.timed_out};
    finished_.erase(it);
    return finished;
  }

  std::vector<std::shared_ptr<FetchCall>> take_all(const void* owner) {
    std::lock_guard lock(mutex_);
    std::vector<std::shared_ptr<FetchCall>> out;
    for (auto it = calls_.begin(); it != calls_.end();) {
      if (it->second.owner == owner) {
        out.push_back(std::move(it->second.call));
        it = calls_.erase(it);
      } else {
        ++it;
      }
    }
    per_owner_.erase(owner);
    std::erase_if(finished_, [owner](const auto& e) { return e.second.owner == owner; });
    return out;
  }

 private:
  static constexpr std::size_t kMaxFinished = 4096;
  struct Entry {
    const void* owner;
    std::shared_ptr<FetchCall> call;
  };
  struct Done {
    const void* owner;
    std::shared_ptr<LogTarget> log;
    bool timed_out;  // else answered or refused
  };

  // With mutex_ held: call `id` of `owner` no longer counts toward its limit and is remembered.
  void finish(std::uintptr_t id, const void* owner, std::shared_ptr<LogTarget> log, bool timed_out) {
    finished_.emplace(id, Done{owner, std::move(log), timed_out});
    if (finished_.size() > kMaxFinished) finished_.erase(finished_.begin());  // ids grow: the oldest
    if (--per_owner_[owner] == 0) per_owner_.erase(owner);
  }
  std::mutex mutex_;
  std::unordered_map<std::uintptr_t, Entry> calls_;
  std::unordered_map<const void*, std::size_t> per_owner_;
  std::map<std::uintptr_t, Done> finished_;
  std::uintptr_t next_ = 1;
};

// Never destroyed: a misbehaving plug-in thread may still answer during exit.
CallTable& call_table() {
  static auto* table = new CallTable;
  return *table;
}

void log_late_answer(const LogTarget& log) {
  log.host(LogLevel::warn, "an answer that arrived after the fetch deadline was ignored");
}

// Completes `call` with `result` on its strand, unless the deadline already did.
void complete(const std::shared_ptr<FetchCall>& call, fhir::Result<FetchResult> result) {
  asio::post(call->strand, [call, result = std::move(result)]() mutable {
    if (call->completed.exchange(true)) {
      log_late_answer(*call->log);
      return;
    }
    call->timer.cancel();
    FetchHandler handler = std::move(call->handler);
    handler(std::move(result));
  });
}

// gw_fetch_done_fn given to the plug-in. Parses on the plug-in's thread, off the executor.
void on_fetch_done(void* cookie, int status, const char* json, size_t len) noexcept {
  try {
    const auto id = reinterpret_cast<std::uintptr_t>(cookie);
    auto call = call_table().take(id);
    if (!call) {
      CallTable::Finished finished = call_table().take_finished(id);
      if (!finished.log)
        emit(LogLevel::warn, "", "host", "a fetch answer for an unknown or already answered call was ignored");
      else if (finished.timed_out)
        log_late_answer(*finished.log);
      else
        finished.log->host(LogLevel::warn, "a second answer to a fetch that was already answered or refused was ignored: "
                                           "call done exactly once, and never after fetch returned non-zero");
      return;
    }
    if (call->completed.load()) {
      log_late_answer(*call->log);
      return;
    }
    std::string_view text = json == nullptr ? std::string_view() : std::string_view(json, len);
    complete(call, parse_plugin_answer(status, text, call->source, call->limits, call->nhs_number));
  } catch (...) {
    emit(LogLevel::error, "", "host", "internal error while taking a fetch answer; the fetch will time out");
  }
}

// ---------------------------------------------------------------------------------------
// The adapter.

struct LibraryCloser {
  void operator()(void* handle) const {
    if (handle != nullptr) ::dlclose(handle);
  }
};
using LibraryHandle = std::unique_ptr<void, LibraryCloser>;

class PluginAdapter final : public Adapter {
 public:
  PluginAdapter(LibraryHandle library, const gw_adapter_v1* table, std::unique_ptr<HostState> host, void* instance)
      : library_(std::move(library)), table_(table), host_(std::move(host)), instance_(instance) {}

  PluginAdapter(const PluginAdapter&) = delete;
  PluginAdapter& operator=(const PluginAdapter&) = delete;

  ~PluginAdapter() override {
    stop();  // the ABI promises the plug-in stop() before destroy() once start() ran
    {
      // Waits for any done callback running in the plug-in; none starts afterwards.
      std::unique_lock lock(host_->life->mutex);
      host_->life->alive = false;
    }
    table_->destroy(instance_);
    // The plug-in is gone: whatever it never answered is answered here, exactly once.
    for (auto& call : call_table().take_all(host_.get()))
      if (!call->completed.load())  // the deadline has not answered it either
        complete(call, Issue::make(ErrorCode::not_ready,
                                   "source '" + host_->source + "' was shut down before it answered", "source"));
  }

  std::string_view kind() const override { return "plugin"; }

  fhir::Status start(AdapterContext& context) override {
    if (started_.exchange(true))
      return Issue::make(ErrorCode::internal_error, "source '" + host_->source + "' was started twice", "source");
    if (!context.executor)
      return Issue::make(ErrorCode::internal_error, "source '" + host_->source + "' was started without an executor",
                         "source");
    host_->executor = context.executor;
    host_->sink = context.sink;
    host_->log->set(context.log);
    // Accept batches before the plug-in's start(): it may push its first batch from there.
    host_->accepting.store(true, std::memory_order_release);
    if (table_->start != nullptr) {
      int rc = table_->start(instance_);
      if (rc != GW_OK) {
        host_->accepting.store(false);
        return Issue::make(ErrorCode::not_ready,
                           "plug-in '" + std::string(table_->name) + "' of source '" + host_->source +
                               "' failed to start (status " + std::to_string(rc) + "); see its log lines",
                           "source");
      }
    }
    running_.store(true);
    return fhir::Ok{};
  }

  void stop() override {
    host_->accepting.store(false);
    if (!running_.exchange(false)) return;
    if (table_->stop != nullptr) table_->stop(instance_);
  }

  void fetch(const PatientKey& patient, const FetchScope& scope, std::chrono::steady_clock::time_point deadline,
             FetchHandler done) override {
    if (!running_.load()) {
      fail_now(std::move(done), ErrorCode::not_ready, "is not running");
      return;
    }
    if (table_->fetch == nullptr) {
      fail_now(std::move(done), ErrorCode::not_supported, "is push-only and cannot be asked for records");
      return;
    }
    auto now = std::chrono::steady_clock::now();
    if (deadline <= now) {
      fail_now(std::move(done), ErrorCode::timeout, "was asked after the deadline had passed");
      return;
    }
    auto call = std::make_shared<FetchCall>(host_->log, host_->executor, std::move(done), host_->limits,
                                            patient.nhs_number);
    std::uintptr_t id = call_table().add(host_.get(), call, host_->limits.max_pending_fetches);
    if (id == 0) {
      complete(call, Issue::make(ErrorCode::not_ready,
                                 "source '" + host_->source + "' has too many fetches in flight", "source"));
      return;
    }
    // The timer is armed before the plug-in can answer, so nothing but the strand touches it
    // afterwards.
    call->timer.expires_at(deadline);
    call->timer.async_wait([call, id](const boost::system::error_code& ec) {
      if (ec || call->completed.exchange(true)) return;
      call_table().expire(id);
      FetchHandler handler = std::move(call->handler);
      handler(Issue::make(ErrorCode::timeout, "source '" + call->source + "' did not answer before the deadline",
                          "source"));
    });

    std::string request = plugin_fetch_request_json(patient, scope);
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count();
    auto timeout_ms = static_cast<std::uint32_t>(
        std::clamp<long long>(left, 1, std::numeric_limits<std::uint32_t>::max()));
    int rc = table_->fetch(instance_, request.c_str(), request.size(), timeout_ms, &on_fetch_done,
                           reinterpret_cast<void*>(id));
    if (rc != GW_OK) {
      // Refused at once; if the plug-in answered anyway, that answer already won.
      if (auto refused = call_table().take(id))
        complete(refused, Issue::make(ErrorCode::not_ready,
                                      "source '" + host_->source + "' refused the fetch (plug-in status " +
                                          std::to_string(rc) + ")",
                                      "source"));
    }
  }

 private:
  // Answers on the executor when there is one (the contract), else at once (never started).
  void fail_now(FetchHandler done, ErrorCode code, const std::string& why) {
    Issue issue = Issue::make(code, "source '" + host_->source + "' " + why, "source");
    if (host_->executor)
      asio::post(host_->executor, [done = std::move(done), issue = std::move(issue)]() mutable { done(std::move(issue)); });
    else
      done(std::move(issue));
  }

  LibraryHandle library_;  // declared first: unloaded last
  const gw_adapter_v1* table_;
  std::unique_ptr<HostState> host_;
  void* instance_;
  std::atomic<bool> started_{false};
  std::atomic<bool> running_{false};
};

Issue load_error(const SourceSystem& source, std::string text) {
  std::string diagnostics = "source '" + source.name + "': ";
  diagnostics.append(text);
  return Issue::make(ErrorCode::invalid_value, std::move(diagnostics), "plugin");  // the key under the source
}

bool printable_name(const char* name) {
  if (name == nullptr) return false;
  std::size_t n = ::strnlen(name, 65);
  if (n == 0 || n > 64) return false;
  return std::all_of(name, name + n, [](char c) { return c > 0x20 && c < 0x7f; });
}

const char* missing_function(const gw_adapter_v1& t) {
  if (t.create == nullptr) return "create";
  if (t.destroy == nullptr) return "destroy";
  if (t.free_string == nullptr) return "free_string";
  return nullptr;
}

}  // namespace

// ---------------------------------------------------------------------------------------

void set_plugin_log_sink(PluginLogSink sink) {
  auto shared = sink ? std::make_shared<const PluginLogSink>(std::move(sink)) : nullptr;
  std::lock_guard lock(log_router().mutex);
  log_router().sink = std::move(shared);
}

fhir::Result<std::unique_ptr<Adapter>> load_plugin(const SourceSystem& source, const PluginLimits& limits) {
  const std::string& path = source.plugin;
  if (path.empty())
    return load_error(source, "adapter \"plugin\" needs the plug-in library's path (plugin = \"/path/lib.so\")");
  // A bare file name would make dlopen search the system library path: refuse it.
  if (path.find('/') == std::string::npos)
    return load_error(source, "plug-in '" + path + "' must be a path to the library, not a bare file name");
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0)
    return load_error(source, "plug-in library '" + path + "' does not exist or cannot be read");
  if (!S_ISREG(info.st_mode)) return load_error(source, "plug-in library '" + path + "' is not a regular file");

  ::dlerror();
  LibraryHandle library(::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL));
  if (!library) {
    const char* why = ::dlerror();
    return load_error(source, "'" + path + "' could not be loaded as a shared library: " +
                                  printable_text(why == nullptr ? "unknown reason" : why, kMaxPluginTextBytes));
  }
  ::dlerror();
  void* symbol = ::dlsym(library.get(), GW_ADAPTER_ENTRY_SYMBOL);
  if (symbol == nullptr)
    return load_error(source, "'" + path + "' is not a gateway adapter plug-in: it does not export " +
                                  GW_ADAPTER_ENTRY_SYMBOL);
  // POSIX guarantees that a dlsym result for a function converts to a function pointer.
  auto entry = reinterpret_cast<gw_adapter_entry_fn>(symbol);
  const std::string host_version = std::to_string(GW_ADAPTER_ABI_VERSION);
  const gw_adapter_v1* table = entry(GW_ADAPTER_ABI_VERSION);
  if (table == nullptr)
    return load_error(source, "plug-in '" + path + "' declined this gateway's adapter ABI version " + host_version);
  if (table->abi_version != GW_ADAPTER_ABI_VERSION)
    return load_error(source, "plug-in '" + path + "' was built for gateway adapter ABI version " +
                                  std::to_string(table->abi_version) + ", but this gateway speaks version " +
                                  host_version + ": rebuild the plug-in against gw_adapter_abi.h version " +
                                  host_version);
  if (table->struct_size < sizeof(gw_adapter_v1))
    return load_error(source, "plug-in '" + path + "' has an adapter table of " + std::to_string(table->struct_size) +
                                  " bytes, smaller than the " + std::to_string(sizeof(gw_adapter_v1)) +
                                  " bytes of ABI version " + host_version + ": rebuild it against gw_adapter_abi.h");
  if (!printable_name(table->name))
    return load_error(source, "plug-in '" + path + "' has an empty or unprintable name (1 to 64 printable characters)");
  if (const char* missing = missing_function(*table))
    return load_error(source, "plug-in '" + path + "' (" + table->name + ") lacks the required function " + missing);

  auto host = std::make_unique<HostState>(source.name);
  host->limits = limits;
  host->table.abi_version = GW_ADAPTER_ABI_VERSION;
  host->table.struct_size = sizeof(gw_host_v1);
  host->table.host_ctx = host.get();
  host->table.ingest = &host_ingest;
  host->table.log = &host_plugin_log;

  std::string config = plugin_config_json(source);
  char* error = nullptr;
  void* instance = table->create(&host->table, config.c_str(), &error);
  std::string why = error == nullptr ? std::string() : printable_text(std::string_view(error, ::strnlen(error, 4096)),
                                                                kMaxPluginTextBytes);
  if (error != nullptr) table->free_string(error);
  if (instance == nullptr)
    return load_error(source, "plug-in '" + std::string(table->name) + "' refused the configuration: " +
                                  (why.empty() ? std::string("no reason given") : why));
  return std::unique_ptr<Adapter>(std::make_unique<PluginAdapter>(std::move(library), table, std::move(host), instance));
}

}  // namespace gw::adapters
