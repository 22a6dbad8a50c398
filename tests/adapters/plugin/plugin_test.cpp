// SPDX-License-Identifier: Apache-2.0
// The plug-in loader against the real example plug-in (adapters/examples/example_adapter.c,
// built as shared libraries): loading and refusals, fetch success, failure and deadline,
// ingest through the host table, and the JSON shapes that cross the C ABI.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/executor_work_guard.hpp>

#include "adapters/plugin/plugin_adapter.h"
#include "fhir/json.h"
#include "support/paths.h"

namespace {

using namespace gw::adapters;
using namespace std::chrono_literals;
using fhir::ErrorCode;

constexpr const char* kSourceName = "example-source";
constexpr const char* kNhsNumber = "9434765919";
constexpr const char* kFailNhsNumber = "9999999999";  // the example's documented failure trigger

SourceSystem example_source(std::vector<std::pair<std::string, std::string>> settings = {},
                            std::string plugin = GW_EXAMPLE_PLUGIN) {
  SourceSystem s;
  s.name = kSourceName;
  s.ods_code = "RXX01";
  s.adapter = "plugin";
  s.plugin = std::move(plugin);
  s.endpoint = "example://nowhere";
  s.settings = std::move(settings);
  return s;
}

// Collects the log lines of every plug-in (and of the loader) while alive.
class LogCapture {
 public:
  LogCapture() {
    set_plugin_log_sink([this](const PluginLogLine& line) {
      std::lock_guard lock(mutex_);
      lines_.push_back(std::string(line.origin) + "|" + std::string(line.source) + "|" + std::string(line.message));
    });
  }
  ~LogCapture() { set_plugin_log_sink({}); }
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;

  bool contains(const std::string& text) const {
    std::lock_guard lock(mutex_);
    for (const auto& line : lines_)
      if (line.find(text) != std::string::npos) return true;
    return false;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::string> lines_;
};

// Records batches and keeps their completions for the test to run, as the writer would after
// its commit. Called on the executor (the test thread).
class FakeSink : public IngestSink {
 public:
  void submit(IngestBatch batch, std::function<void(fhir::Result<IngestReceipt>)> done) override {
    batches.push_back(std::move(batch));
    pending.push_back(std::move(done));
  }
  void record_failure(IngestFailure failure, std::function<void(fhir::Status)> done) override {
    failures.push_back(std::move(failure));
    done(fhir::Ok{});
  }
  std::vector<IngestBatch> batches;
  std::vector<std::function<void(fhir::Result<IngestReceipt>)>> pending;
  std::vector<IngestFailure> failures;
};

struct Loop {
  boost::asio::io_context io;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard{io.get_executor()};

  // Runs the loop until `done()` holds, for at most ~10 s. Returns done().
  bool run_until(const std::function<bool()>& done) {
    for (int i = 0; i < 1000 && !done(); ++i) io.run_for(10ms);
    return done();
  }
};

AdapterContext make_context(Loop& loop, IngestSink* sink) {
  AdapterContext context;
  context.executor = loop.io.get_executor();
  context.sink = sink;
  return context;
}

std::unique_ptr<Adapter> load(const SourceSystem& source) {
  auto loaded = load_plugin(source);
  if (!loaded) FAIL_CHECK(loaded.issue().diagnostics);
  REQUIRE(loaded.ok());
  return std::move(loaded).value();
}

PatientKey patient(const std::string& nhs_number) {
  PatientKey key;
  key.patient_id = "p-1";
  key.nhs_number = nhs_number;
  key.local_identifiers.emplace_back("https://example.nhs.uk/mrn", "MRN-42");
  return key;
}

// One fetch, run to completion; counts how often the handler ran.
struct FetchOutcome {
  int calls = 0;
  std::optional<fhir::Result<FetchResult>> result;
};

void start_fetch(Adapter& adapter, const PatientKey& key, std::chrono::steady_clock::duration budget,
                 FetchOutcome& out) {
  adapter.fetch(key, FetchScope{{"Observation"}}, std::chrono::steady_clock::now() + budget,
                [&out](fhir::Result<FetchResult> r) {
                  ++out.calls;
                  out.result.emplace(std::move(r));
                });
}

std::string load_failure(const SourceSystem& source) {
  auto loaded = load_plugin(source);
  REQUIRE_FALSE(loaded.ok());
  CHECK(loaded.issue().code == ErrorCode::invalid_value);
  CHECK(loaded.issue().diagnostics.find(kSourceName) != std::string::npos);
  return loaded.issue().diagnostics;
}

}  // namespace

TEST_CASE("PluginAdapter: the example plug-in answers a fetch with a Bundle of resources") {
  LogCapture log;
  Loop loop;
  auto adapter = load(example_source());
  CHECK(adapter->kind() == "plugin");
  AdapterContext context = make_context(loop, nullptr);
  REQUIRE(adapter->start(context).ok());

  FetchOutcome out;
  start_fetch(*adapter, patient(kNhsNumber), 30s, out);
  REQUIRE(loop.run_until([&] { return out.calls > 0; }));
  CHECK(out.calls == 1);
  REQUIRE(out.result->ok());
  const FetchResult& result = out.result->value();
  CHECK(result.source == kSourceName);
  REQUIRE(result.resources.size() == 1);
  CHECK(result.resources[0].string_at("resourceType") == "Observation");
  // The request JSON reached the plug-in: it echoes the NHS number in the subject.
  const fhir::Json* subject = result.resources[0].find("subject");
  REQUIRE(subject != nullptr);
  CHECK(subject->find("identifier")->string_at("value") == kNhsNumber);
  CHECK(log.contains("plugin|example-source|example: created"));
  adapter->stop();
}

TEST_CASE("load_plugin: the source's credentials reach the plug-in's create() and no log line") {
  LogCapture log;
  SourceSystem source = example_source();
  source.credentials = "api_key=k-0123456789\n";
  auto adapter = load(source);
  CHECK(log.contains("plugin|example-source|example: created (delay 0 ms, credentials given)"));
  CHECK_FALSE(log.contains("k-0123456789"));
  auto without = load(example_source());
  CHECK(log.contains("example: created (delay 0 ms, no credentials)"));
}

TEST_CASE("PluginAdapter: one library serves two sources with separate instances") {
  LogCapture log;
  Loop loop;
  auto first = load(example_source());
  SourceSystem other = example_source();
  other.name = "other-source";
  auto second = load(other);
  AdapterContext context = make_context(loop, nullptr);
  REQUIRE(first->start(context).ok());
  REQUIRE(second->start(context).ok());
  FetchOutcome a, b;
  start_fetch(*first, patient(kNhsNumber), 30s, a);
  start_fetch(*second, patient(kNhsNumber), 30s, b);
  REQUIRE(loop.run_until([&] { return a.calls > 0 && b.calls > 0; }));
  REQUIRE(a.result->ok());
  REQUIRE(b.result->ok());
  CHECK(a.result->value().source == kSourceName);
  CHECK(b.result->value().source == "other-source");
}

TEST_CASE("PluginAdapter: after start, log lines go to the gateway's AdapterContext::log") {
  LogCapture before_start;
  Loop loop;
  FakeSink sink;
  std::mutex mutex;
  std::vector<std::string> lines;
  auto adapter = load(example_source({{"ingest_on_start", "true"}}));
  CHECK(before_start.contains("plugin|example-source|example: created"));
  AdapterContext context = make_context(loop, &sink);
  context.log = [&](LogLevel level, std::string_view message, const std::vector<std::pair<std::string, std::string>>& fields) {
    std::string line(message);
    for (const auto& [key, value] : fields) line.append(" ").append(key).append("=").append(value);
    std::lock_guard lock(mutex);
    lines.push_back(line);
  };
  REQUIRE(adapter->start(context).ok());
  REQUIRE(loop.run_until([&] { return !sink.pending.empty(); }));
  sink.pending[0](IngestReceipt{});
  auto seen = [&] {
    std::lock_guard lock(mutex);
    return std::find(lines.begin(), lines.end(), "example: batch stored source=example-source origin=plugin") !=
           lines.end();
  };
  CHECK(loop.run_until(seen));
  CHECK_FALSE(before_start.contains("example: batch stored"));
}

TEST_CASE("PluginAdapter: without a sink, lines written during create() use the gateway's log format") {
  // stderr goes to a file while the plug-in is loaded (its create() logs one line).
  const auto path = gw::test::temp_dir("plugin_log") / "stderr.txt";
  const int file = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  REQUIRE(file >= 0);
  const int saved = ::dup(STDERR_FILENO);
  REQUIRE(saved >= 0);
  ::dup2(file, STDERR_FILENO);
  ::close(file);
  auto loaded = load_plugin(example_source());
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
  REQUIRE(loaded.ok());

  std::ifstream in(path);
  std::string text, line;
  while (std::getline(in, line))
    if (line.find("example: created") != std::string::npos) text = line;
  REQUIRE_MESSAGE(!text.empty(), "no line from create() on stderr");
  auto json = fhir::parse_json(text);
  REQUIRE_MESSAGE(json.ok(), text);
  // {"ts":"2026-11-23T10:15:00.123Z","level":"info","msg":<the line>,"source","origin"}
  const std::string ts(json->string_at("ts"));
  CHECK_MESSAGE(ts.size() == 24, text);
  CHECK(ts[4] == '-');
  CHECK(ts[10] == 'T');
  CHECK(ts.back() == 'Z');
  CHECK(json->string_at("level") == "info");
  CHECK(json->string_at("msg").find("example: created") == 0);
  CHECK(json->string_at("source") == kSourceName);
  CHECK(json->string_at("origin") == "plugin");
  CHECK(json->find("text") == nullptr);
}

TEST_CASE("PluginAdapter: a failed fetch becomes an Issue naming the source") {
  LogCapture log;
  Loop loop;
  auto adapter = load(example_source());
  AdapterContext context = make_context(loop, nullptr);
  REQUIRE(adapter->start(context).ok());

  FetchOutcome out;
  start_fetch(*adapter, patient(kFailNhsNumber), 30s, out);
  REQUIRE(loop.run_until([&] { return out.calls > 0; }));
  REQUIRE_FALSE(out.result->ok());
  const fhir::Issue& issue = out.result->issue();
  CHECK(issue.code == ErrorCode::not_ready);
  CHECK(issue.diagnostics.find("source 'example-source'") != std::string::npos);
  // The OperationOutcome's diagnostics and the plug-in's status travel with it.
  CHECK(issue.diagnostics.find("unavailable (failure trigger)") != std::string::npos);
  CHECK(issue.diagnostics.find("status 6") != std::string::npos);
}

TEST_CASE("PluginAdapter: the deadline wins over a slow plug-in and its late answer is ignored") {
  LogCapture log;
  Loop loop;
  auto adapter = load(example_source({{"delay_ms", "1500"}}));
  AdapterContext context = make_context(loop, nullptr);
  REQUIRE(adapter->start(context).ok());

  FetchOutcome out;
  start_fetch(*adapter, patient(kNhsNumber), 20ms, out);
  REQUIRE(loop.run_until([&] { return out.calls > 0; }));
  REQUIRE_FALSE(out.result->ok());
  CHECK(out.result->issue().code == ErrorCode::timeout);
  CHECK(out.result->issue().diagnostics.find("source 'example-source'") != std::string::npos);

  // Keep the loop running until the plug-in's answer arrives: it is logged and dropped.
  CHECK(loop.run_until([&] { return log.contains("host|example-source|an answer that arrived after the fetch deadline"); }));
  loop.io.run_for(20ms);
  CHECK(out.calls == 1);
  CHECK(out.result->issue().code == ErrorCode::timeout);
}

TEST_CASE("PluginAdapter: a second answer to a fetch is ignored and logged under its source") {
  LogCapture log;
  Loop loop;
  auto adapter = load(example_source({{"answer_twice", "true"}}));
  AdapterContext context = make_context(loop, nullptr);
  REQUIRE(adapter->start(context).ok());

  FetchOutcome out;
  start_fetch(*adapter, patient(kNhsNumber), 30s, out);
  // The operator can tell which plug-in broke the rule of one answer per fetch.
  CHECK(loop.run_until([&] {
    return out.calls > 0 && log.contains("host|example-source|a second answer to a fetch that was already answered");
  }));
  loop.io.run_for(20ms);
  CHECK(out.calls == 1);
  REQUIRE(out.result.has_value());
  CHECK(out.result->ok());
  CHECK_FALSE(log.contains("unknown or already answered"));
}

TEST_CASE("PluginAdapter: a timed-out fetch no longer counts toward the in-flight limit") {
  LogCapture log;
  Loop loop;
  PluginLimits limits;
  limits.max_pending_fetches = 2;
  auto loaded = load_plugin(example_source({{"delay_ms", "600000"}}), limits);  // never answers in time
  REQUIRE(loaded.ok());
  auto adapter = std::move(loaded).value();
  AdapterContext context = make_context(loop, nullptr);
  REQUIRE(adapter->start(context).ok());

  // Two rounds of two fetches each: every one must reach the plug-in and time out, none be
  // refused for "too many fetches in flight".
  std::vector<FetchOutcome> rounds(4);
  for (std::size_t round = 0; round < 2; ++round) {
    for (std::size_t i = 0; i < 2; ++i) start_fetch(*adapter, patient(kNhsNumber), 50ms, rounds[round * 2 + i]);
    REQUIRE(loop.run_until([&] { return rounds[round * 2].calls > 0 && rounds[round * 2 + 1].calls > 0; }));
  }
  for (const FetchOutcome& out : rounds) {
    CHECK(out.calls == 1);
    REQUIRE_FALSE(out.result->ok());
    CHECK(out.result->issue().code == ErrorCode::timeout);
  }

  // The plug-in answers all four from destroy(), after their deadlines: each late answer is
  // logged under its source and dropped, and no handler runs twice.
  adapter.reset();
  loop.io.run_for(50ms);
  CHECK(log.contains("host|example-source|an answer that arrived after the fetch deadline"));
  CHECK_FALSE(log.contains("unknown or already answered"));
  for (const FetchOutcome& out : rounds) CHECK(out.calls == 1);
}

TEST_CASE("PluginAdapter: fetch outside start..stop and past the deadline fails at once") {
  LogCapture log;
  Loop loop;
  auto adapter = load(example_source());
  FetchOutcome before;
  start_fetch(*adapter, patient(kNhsNumber), 30s, before);  // not started: no executor yet
  CHECK(before.calls == 1);
  REQUIRE_FALSE(before.result->ok());
  CHECK(before.result->issue().code == ErrorCode::not_ready);

  AdapterContext context = make_context(loop, nullptr);
  REQUIRE(adapter->start(context).ok());
  FetchOutcome late;
  start_fetch(*adapter, patient(kNhsNumber), -1s, late);
  REQUIRE(loop.run_until([&] { return late.calls > 0; }));
  CHECK(late.result->issue().code == ErrorCode::timeout);

  adapter->stop();
  FetchOutcome after;
  start_fetch(*adapter, patient(kNhsNumber), 30s, after);
  REQUIRE(loop.run_until([&] { return after.calls > 0; }));
  CHECK(after.calls == 1);
  CHECK(after.result->issue().code == ErrorCode::not_ready);
  CHECK(after.result->issue().diagnostics.find("example-source") != std::string::npos);
}

TEST_CASE("PluginAdapter: destroying the adapter answers a fetch still in flight exactly once") {
  LogCapture log;
  Loop loop;
  auto adapter = load(example_source({{"delay_ms", "600000"}}));
  AdapterContext context = make_context(loop, nullptr);
  REQUIRE(adapter->start(context).ok());
  FetchOutcome out;
  start_fetch(*adapter, patient(kNhsNumber), 60s, out);
  loop.io.run_for(10ms);
  CHECK(out.calls == 0);
  adapter->stop();
  adapter.reset();  // the example answers pending fetches from destroy; the library unloads
  REQUIRE(loop.run_until([&] { return out.calls > 0; }));
  loop.io.run_for(20ms);
  CHECK(out.calls == 1);
  REQUIRE_FALSE(out.result->ok());
  CHECK(out.result->issue().code == ErrorCode::not_ready);
  CHECK(out.result->issue().diagnostics.find("shutting down") != std::string::npos);
}

TEST_CASE("PluginAdapter: a fetch the plug-in refuses at once fails at once") {
  LogCapture log;
  Loop loop;
  auto adapter = load(example_source({{"delay_ms", "600000"}}));
  AdapterContext context = make_context(loop, nullptr);
  REQUIRE(adapter->start(context).ok());
  // The example holds at most 64 fetches in flight and refuses the 65th (GW_ERR_UNAVAILABLE).
  std::vector<FetchOutcome> held(64);
  for (auto& out : held) start_fetch(*adapter, patient(kNhsNumber), 60s, out);
  FetchOutcome refused;
  start_fetch(*adapter, patient(kNhsNumber), 60s, refused);
  REQUIRE(loop.run_until([&] { return refused.calls > 0; }));
  CHECK(refused.result->issue().code == ErrorCode::not_ready);
  CHECK(refused.result->issue().diagnostics.find("refused the fetch (plug-in status 6)") != std::string::npos);
  CHECK(held[0].calls == 0);

  adapter.reset();  // the 64 held fetches are answered by the plug-in's destroy
  REQUIRE(loop.run_until([&] {
    return std::all_of(held.begin(), held.end(), [](const FetchOutcome& o) { return o.calls > 0; });
  }));
  loop.io.run_for(20ms);
  CHECK(std::all_of(held.begin(), held.end(), [](const FetchOutcome& o) { return o.calls == 1 && !o.result->ok(); }));
  CHECK(refused.calls == 1);
}

TEST_CASE("PluginAdapter: a batch pushed on start reaches the sink and the plug-in hears after the commit") {
  LogCapture log;
  Loop loop;
  FakeSink sink;
  auto adapter = load(example_source({{"ingest_on_start", "true"}}));
  AdapterContext context = make_context(loop, &sink);
  REQUIRE(adapter->start(context).ok());
  REQUIRE(loop.run_until([&] { return !sink.batches.empty(); }));

  REQUIRE(sink.batches.size() == 1);
  const IngestBatch& batch = sink.batches[0];
  CHECK(batch.source == kSourceName);
  CHECK(batch.identity.string_at("resourceType") == "Patient");
  REQUIRE(batch.resources.size() == 1);
  CHECK(batch.resources[0].string_at("resourceType") == "Observation");
  CHECK(batch.raw == "EXAMPLE|1|9000000009|72.5 kg");

  SUBCASE("commit: the plug-in is told only once the sink completes") {
    loop.io.run_for(20ms);
    CHECK_FALSE(log.contains("example: batch stored"));
    sink.pending[0](IngestReceipt{7, false, {}, "p-7"});
    CHECK(loop.run_until([&] { return log.contains("plugin|example-source|example: batch stored"); }));
  }
  SUBCASE("failure: the sink's error text reaches the plug-in") {
    sink.pending[0](fhir::Issue::make(ErrorCode::conflict, "store refused the batch"));
    CHECK(loop.run_until([&] { return log.contains("example: batch failed (status 5): store refused the batch"); }));
    CHECK_FALSE(log.contains("example: batch stored"));
  }
  SUBCASE("failure: an NHS number in the error text the plug-in logs is not in the log line") {
    sink.pending[0](fhir::Issue::make(ErrorCode::conflict, "batch for 9434765919 (943 476 5919) refused"));
    CHECK(loop.run_until([&] {
      return log.contains("example: batch failed (status 5): batch for (NHS number removed) ((NHS number removed)) refused");
    }));
    CHECK_FALSE(log.contains("9434765919"));
    CHECK_FALSE(log.contains("943 476 5919"));
  }
  SUBCASE("dropped: a completion the sink never runs still answers the plug-in") {
    sink.pending.clear();
    CHECK(loop.run_until([&] { return log.contains("example: batch failed (status 3)"); }));
  }
}

TEST_CASE("PluginAdapter: a malformed batch is refused at once and nothing is submitted") {
  LogCapture log;
  Loop loop;
  FakeSink sink;
  auto adapter = load(example_source({{"ingest_on_start", "malformed"}}));
  AdapterContext context = make_context(loop, &sink);
  REQUIRE(adapter->start(context).ok());
  REQUIRE(loop.run_until([&] { return log.contains("example: batch refused at once (status 1)"); }));
  CHECK(log.contains("host|example-source|batch refused: batch is not valid JSON: "));
  CHECK_FALSE(log.contains("Body is not valid JSON"));
  // Nothing submitted, but the refusal is recorded (stored as rejected, counted, audited),
  // as an MLLP listener records a message it rejects.
  REQUIRE(loop.run_until([&] { return !sink.failures.empty(); }));
  CHECK(sink.batches.empty());
  REQUIRE(sink.failures.size() == 1);
  const IngestFailure& f = sink.failures[0];
  CHECK(f.rejected);
  CHECK(f.source == kSourceName);
  CHECK(f.issue.code == ErrorCode::invalid_json);
  CHECK(f.raw == R"({"identity":{"resourceType":"Patient"},"resources":[)");  // the text as received
  CHECK(f.nhs_number.empty());
}

TEST_CASE("PluginAdapter: a batch refused for its content is recorded with its raw, kind and patient") {
  LogCapture log;
  Loop loop;
  FakeSink sink;
  auto adapter = load(example_source({{"ingest_on_start", "unserved"}}));
  AdapterContext context = make_context(loop, &sink);
  REQUIRE(adapter->start(context).ok());
  REQUIRE(loop.run_until([&] { return !sink.failures.empty(); }));
  CHECK(log.contains("example: batch refused at once (status 1)"));
  CHECK(sink.batches.empty());
  const IngestFailure& f = sink.failures[0];
  CHECK(f.rejected);
  CHECK(f.issue.diagnostics.find("is a Condition, which this gateway does not store") != std::string::npos);
  CHECK(f.raw == "EXAMPLE|2|9000000009|condition");
  CHECK(f.kind == "EXAMPLE^CONDITION");
  CHECK(f.nhs_number == "9000000009");  // the audit record of the refusal names the patient
}

TEST_CASE("PluginAdapter: a batch for a source without a sink is refused as unsupported") {
  LogCapture log;
  Loop loop;
  auto adapter = load(example_source({{"ingest_on_start", "true"}}));
  AdapterContext context = make_context(loop, nullptr);
  REQUIRE(adapter->start(context).ok());
  CHECK(loop.run_until([&] { return log.contains("example: batch refused at once (status 4)"); }));
}

TEST_CASE("load_plugin: an ABI version mismatch is refused naming both versions") {
  std::string why = load_failure(example_source({}, GW_EXAMPLE_PLUGIN_BADABI));
  CHECK(why.find("ABI version 999") != std::string::npos);
  CHECK(why.find("this gateway speaks version 1") != std::string::npos);
  CHECK(why.find(GW_EXAMPLE_PLUGIN_BADABI) != std::string::npos);
}

TEST_CASE("load_plugin: refusals name the library and say what is wrong") {
  SUBCASE("missing file") {
    std::string why = load_failure(example_source({}, "/nonexistent/dir/libvendor.so"));
    CHECK(why.find("'/nonexistent/dir/libvendor.so' does not exist") != std::string::npos);
  }
  SUBCASE("not a shared library") {
    auto path = gw::test::temp_dir("plugin_test") / "not-a-library.so";
    std::ofstream(path) << "this is text, not ELF\n";
    std::string why = load_failure(example_source({}, path.string()));
    CHECK(why.find("could not be loaded as a shared library") != std::string::npos);
    CHECK(why.find(path.string()) != std::string::npos);
  }
  SUBCASE("no entry point") {
    std::string why = load_failure(example_source({}, GW_EXAMPLE_PLUGIN_NOENTRY));
    CHECK(why.find("does not export gw_adapter_entry") != std::string::npos);
  }
  SUBCASE("bare file name") {
    std::string why = load_failure(example_source({}, "libvendor.so"));
    CHECK(why.find("must be a path") != std::string::npos);
  }
  SUBCASE("no path at all") {
    std::string why = load_failure(example_source({}, ""));
    CHECK(why.find("plugin = ") != std::string::npos);
  }
  SUBCASE("create fails with the plug-in's reason") {
    std::string why = load_failure(example_source({{"delay_ms", "soon"}}));
    CHECK(why.find("plug-in 'example' refused the configuration") != std::string::npos);
    CHECK(why.find("delay_ms must be a whole number") != std::string::npos);
  }
}

TEST_CASE("plugin JSON: the configuration and fetch request carry what the ABI documents") {
  SourceSystem source = example_source({{"delay_ms", "25"}, {"ingest_on_start", "true"}});
  auto config = fhir::parse_json(plugin_config_json(source));
  REQUIRE(config.ok());
  CHECK(config->string_at("name") == kSourceName);
  CHECK(config->string_at("ods_code") == "RXX01");
  CHECK(config->string_at("endpoint") == "example://nowhere");
  CHECK(config->find("fetch_timeout_ms")->as_int64() == 10000);
  CHECK(config->find("settings")->string_at("delay_ms") == "25");
  CHECK(config->find("credentials") == nullptr);  // none configured
  source.credentials = "token=\"abc\"\n";
  auto with_credentials = fhir::parse_json(plugin_config_json(source));
  REQUIRE(with_credentials.ok());
  CHECK(with_credentials->string_at("credentials") == "token=\"abc\"\n");

  auto request = fhir::parse_json(plugin_fetch_request_json(patient(kNhsNumber), FetchScope{{"Observation"}}));
  REQUIRE(request.ok());
  const fhir::Json* p = request->find("patient");
  REQUIRE(p != nullptr);
  CHECK(p->string_at("id") == "p-1");
  CHECK(p->string_at("nhs_number") == kNhsNumber);
  REQUIRE(p->find("identifiers")->size() == 1);
  CHECK(p->find("identifiers")->items()[0].string_at("value") == "MRN-42");
  CHECK(request->find("scope")->find("resource_types")->items()[0].text() == "Observation");

  auto anonymous = fhir::parse_json(plugin_fetch_request_json(patient(""), FetchScope{}));
  REQUIRE(anonymous.ok());
  CHECK(anonymous->find("patient")->find("nhs_number") == nullptr);
  CHECK(anonymous->find("scope")->find("resource_types")->size() == 0);
}

TEST_CASE("parse_plugin_batch: shapes that are refused") {
  const std::string source = kSourceName;
  auto ok = parse_plugin_batch(R"({"identity":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}]},"resources":[]})", source);
  REQUIRE(ok.ok());
  CHECK(ok->source == source);
  CHECK(ok->resources.empty());
  CHECK(ok->raw.empty());

  struct Case {
    const char* json;
    ErrorCode code;
    const char* text;
  };
  const Case cases[] = {
      {R"([1,2])", ErrorCode::invalid_value, "not a JSON object"},
      {R"({"resources":[]})", ErrorCode::invalid_resource, "identity must be a Patient"},
      {R"({"identity":{"resourceType":"Practitioner"},"resources":[]})", ErrorCode::invalid_resource,
       "identity must be a Patient"},
      // Nothing the record locator could match the patient on: refused now, not after queueing.
      {R"({"identity":{"resourceType":"Patient","name":[{"family":"X"}]},"resources":[]})", ErrorCode::missing_value,
       "batch.identity has no identifier the gateway can match the patient on"},
      {R"({"identity":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number"}]},"resources":[]})",
       ErrorCode::missing_value, "batch.identity has no identifier"},
      {R"({"identity":{"resourceType":"Patient","identifier":{"value":"x"}},"resources":[]})",
       ErrorCode::invalid_resource, "batch.identity (Patient) is not valid FHIR R4: Patient.identifier: must be an array"},
      {R"({"identity":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}]}})", ErrorCode::invalid_resource, "resources must be an array"},
      {R"({"identity":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}]},"resources":[{"id":"x"}]})", ErrorCode::invalid_resource,
       "resources[0] is not a FHIR resource"},
      {R"({"source":"someone-else","identity":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}]},"resources":[]})",
       ErrorCode::invalid_value, "names another source"},
      {R"({"identity":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}]},"resources":[],"raw":7})", ErrorCode::invalid_value,
       "raw must be a string"},
      {R"({"identity":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}]},"resources":[],"kind":["A01"]})", ErrorCode::invalid_value,
       "kind must be a string"},
      {R"({"identity":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}]},"resources":[],"retired_identifiers":[{"system":"s"}]})",
       ErrorCode::invalid_value, "without system and value"},
      {R"({"identity":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}]},"resources":[],"encounters":[{"date":"2024"}]})",
       ErrorCode::invalid_value, "without organisation and date"},
      {R"({"identity":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}]},"identity":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}]},"resources":[]})",
       ErrorCode::invalid_json, "not valid JSON"},
      // Encounters the record locator could not take: refused at once, naming the entry.
      {R"({"identity":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}]},"resources":[],"encounters":[{"organisation":"RXX01","date":"2024-01-15"},{"organisation":"RXX01","date":"yesterday"}]})",
       ErrorCode::invalid_value, "batch.encounters[1].date is not a FHIR date or dateTime"},
      {R"({"identity":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}]},"resources":[],"encounters":[{"organisation":"Royal Infirmary","date":"2024-01-15"}]})",
       ErrorCode::invalid_value, "batch.encounters[0].organisation must be an ODS code: 1-64 letters and digits"},
      // The adapter contract's resource checks (check_batch_resources), refused at once.
      {R"({"identity":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}]},"resources":[{"resourceType":"Banana","id":"b"}]})",
       ErrorCode::invalid_resource, "'Banana' is not a FHIR R4 resource type"},
      {R"({"identity":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}]},"resources":[{"resourceType":"Patient","id":"p"}]})",
       ErrorCode::invalid_resource, "the patient goes in the batch's identity"},
      // An R4 type the gateway neither stores nor serves: refused naming it and the types it takes.
      {R"({"identity":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}]},"resources":[{"resourceType":"Condition","id":"c1"}]})",
       ErrorCode::invalid_resource,
       "resources[0] is a Condition, which this gateway does not store or serve; a batch may carry DiagnosticReport, "
       "Encounter, Location, Observation, Practitioner"},
      {R"({"identity":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}]},"resources":[{"resourceType":"Observation"}]})",
       ErrorCode::missing_value, "resources[0] (Observation) has no id"},
      {R"({"identity":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}]},"resources":[{"resourceType":"Observation","id":"../x y"}]})",
       ErrorCode::invalid_value, "resources[0].id is not a FHIR id"},
      // Not valid FHIR R4 (fhir/element_check): refused naming the resource and the FHIR path.
      {R"({"identity":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}]},"resources":[{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"x"},"valueQuantity":{"value":"seventy"},"bogusElement":true}]})",
       ErrorCode::invalid_resource,
       "resources[0] (Observation/o1) is not valid FHIR R4: Observation.valueQuantity.value: a decimal must be a JSON number, "
       "not a string (and 1 more problem;"},
      // The identity is valid FHIR R4 JSON too: refused now, not when the batch is applied.
      {R"({"identity":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}],"name":"SMITH"},"resources":[]})",
       ErrorCode::invalid_resource, "batch.identity (Patient) is not valid FHIR R4: Patient.name: "},
      {R"({"identity":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}],"birthDate":"03/02/1980","gender":"F"},"resources":[]})",
       ErrorCode::invalid_value, "batch.identity (Patient) is not valid FHIR R4: Patient.birthDate: "},
      {R"({"identity":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}],"bogusElement":1},"resources":[]})",
       ErrorCode::invalid_resource, "batch.identity (Patient) is not valid FHIR R4: Patient.bogusElement"},
      // A resource about someone else than the identity would be filed under the identity's
      // record: refused, without quoting either number.
      {R"({"identity":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}]},"resources":[{"resourceType":"Observation","id":"o2","status":"final","code":{"text":"x"},"subject":{"identifier":{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9000000009"}}}]})",
       ErrorCode::invalid_value,
       "batch.resources[0] (Observation/o2) is about another patient: its subject names another NHS number than the "
       "batch's identity"},
      // Without a valid NHS number in the identity, one in a subject cannot be checked: refused.
      {R"({"identity":{"resourceType":"Patient","identifier":[{"system":"https://example.org/mrn","value":"M1"}]},"resources":[{"resourceType":"Observation","id":"o3","status":"final","code":{"text":"x"},"subject":{"identifier":{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9000000009"}}}]})",
       ErrorCode::invalid_value,
       "batch.resources[0] (Observation/o3) names an NHS number in its subject, but the batch's identity carries no "
       "valid NHS number"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.json);
    auto r = parse_plugin_batch(c.json, source);
    REQUIRE_FALSE(r.ok());
    CHECK(r.issue().code == c.code);
    CHECK_MESSAGE(r.issue().diagnostics.find(c.text) != std::string::npos, r.issue().diagnostics);
  }

  auto full = parse_plugin_batch(
      R"({"source":"example-source","identity":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}]},"resources":[{"resourceType":"Encounter","id":"e1","status":"finished","class":{"code":"IMP"}}],)"
      R"("raw":"R","kind":"ADT^A40","dedupe_key":"PAS|RXX01|1","retired_identifiers":[{"system":"s","value":"v"}],)"
      R"("encounters":[{"organisation":"RXX01","date":"2024-01-15"}],"future_member":true})",
      source);
  REQUIRE(full.ok());
  CHECK(full->raw == "R");
  CHECK(full->kind == "ADT^A40");
  CHECK(full->dedupe_key == "PAS|RXX01|1");
  REQUIRE(full->retired_identifiers.size() == 1);
  CHECK(full->retired_identifiers[0].string_at("value") == "v");
  REQUIRE(full->encounters.size() == 1);
  CHECK(full->encounters[0] == std::pair<std::string, std::string>{"RXX01", "2024-01-15"});

  // About the identity's own NHS number: accepted.
  auto own = parse_plugin_batch(
      R"({"identity":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}],"birthDate":"1980-02-03","gender":"female"},)"
      R"("resources":[{"resourceType":"Observation","id":"o3","status":"final","code":{"text":"x"},"subject":{"identifier":{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}}}]})",
      source);
  CHECK(own.ok());

  PluginLimits small;
  small.max_batch_bytes = 16;
  auto big = parse_plugin_batch(R"({"identity":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}]},"resources":[]})", source, small);
  REQUIRE_FALSE(big.ok());
  CHECK(big.issue().code == ErrorCode::payload_too_large);
}

TEST_CASE("read_plugin_batch: one parse gives the checked batch, or the refusal with what is kept of it") {
  const std::string source = kSourceName;
  const std::string identity =
      R"("identity":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}]})";
  const std::string observation =
      R"({"resourceType":"Observation","id":"o1","status":"final","code":{"text":"x"},"valueQuantity":{"value":72}})";

  // Accepted: the resources passed check_batch_resources here, so ingest does not walk them again.
  auto accepted = read_plugin_batch("{" + identity + R"(,"resources":[)" + observation + "]}", source);
  REQUIRE(std::holds_alternative<IngestBatch>(accepted));
  const IngestBatch& batch = std::get<IngestBatch>(accepted);
  CHECK(batch.resources_checked);
  REQUIRE(batch.resources.size() == 1);
  CHECK(batch.identity.string_at("resourceType") == "Patient");
  CHECK(parse_plugin_batch("{" + identity + R"(,"resources":[]})", source)->resources_checked);

  // Refused after its identity and resources were read (a bad encounter): the refusal still
  // names the patient and keeps raw, kind and key from the same parse.
  auto late = read_plugin_batch("{" + identity + R"(,"resources":[)" + observation +
                                    R"(],"raw":"R","kind":"ADT^A01","dedupe_key":"PAS|1","encounters":[{"date":"2024"}]})",
                                source);
  REQUIRE(std::holds_alternative<IngestFailure>(late));
  const IngestFailure& f = std::get<IngestFailure>(late);
  CHECK(f.rejected);
  CHECK(f.source == source);
  CHECK(f.issue.code == ErrorCode::invalid_value);
  CHECK(f.issue.diagnostics == "batch.encounters holds an entry without organisation and date");
  CHECK(f.raw == "R");
  CHECK(f.kind == "ADT^A01");
  CHECK(f.dedupe_key == "PAS|1");
  CHECK(f.nhs_number == "9434765919");

  // Not JSON: the text as received is kept; over the size limit, nothing of it.
  auto broken = read_plugin_batch(R"({"raw":"R",)", source);
  REQUIRE(std::holds_alternative<IngestFailure>(broken));
  CHECK(std::get<IngestFailure>(broken).issue.code == ErrorCode::invalid_json);
  CHECK(std::get<IngestFailure>(broken).raw == R"({"raw":"R",)");
  PluginLimits small;
  small.max_batch_bytes = 16;
  auto big = read_plugin_batch("{" + identity + R"(,"resources":[]})", source, small);
  REQUIRE(std::holds_alternative<IngestFailure>(big));
  CHECK(std::get<IngestFailure>(big).issue.code == ErrorCode::payload_too_large);
  CHECK(std::get<IngestFailure>(big).raw.empty());
  CHECK(std::get<IngestFailure>(big).nhs_number.empty());
}

TEST_CASE("parse_plugin_answer: malformed answers name the source") {
  const std::string source = kSourceName;
  auto empty_bundle = parse_plugin_answer(0, R"({"resourceType":"Bundle","type":"collection"})", source);
  REQUIRE(empty_bundle.ok());
  CHECK(empty_bundle->resources.empty());

  const char* bad[] = {
      "",
      "{not json",
      R"({"resourceType":"Patient"})",
      R"({"resourceType":"Bundle","type":"transaction","entry":[]})",
      R"({"resourceType":"Bundle","type":"collection","entry":{}})",
      R"({"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"urn:x"}]})",
      R"({"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"exception","diagnostics":"down"}]})",
  };
  for (const char* json : bad) {
    CAPTURE(json);
    auto r = parse_plugin_answer(0, json, source);
    REQUIRE_FALSE(r.ok());
    CHECK(r.issue().code == ErrorCode::not_ready);
    CHECK(r.issue().diagnostics.find("source 'example-source'") != std::string::npos);
  }

  // The checks a pushed resource gets: an R4 type, a valid id, valid FHIR R4 JSON.
  const char* unchecked[][2] = {
      {R"({"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Foo","id":"x"}}]})",
       "Bundle.entry[0].resource.resourceType 'Foo' is not a FHIR R4 resource type"},
      {R"({"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Observation","id":"x y"}}]})",
       "Bundle.entry[0].resource.id is not a FHIR id"},
      {R"({"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Observation"}}]})",
       "Bundle.entry[0].resource (Observation) has no id"},
      // and valid FHIR R4 (fhir/element_check)
      {R"({"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Observation","id":"o1","status":"final","code":"x"}}]})",
       "Bundle.entry[0].resource (Observation/o1) is not valid FHIR R4: Observation.code: must be a JSON object (CodeableConcept)"},
  };
  for (const auto& answer : unchecked) {
    const char* json = answer[0];  // not a structured binding: clang 14 cannot capture one
    CAPTURE(json);
    auto r = parse_plugin_answer(0, json, source);
    REQUIRE_FALSE(r.ok());
    CHECK(r.issue().code == ErrorCode::not_ready);
    CHECK(r.issue().diagnostics.find(answer[1]) != std::string::npos);
  }

  // Another patient than the one asked for (kNhsNumber): the whole answer is refused, and the
  // diagnostics (which are logged) name no NHS number.
  const std::string other_patient =
      R"({"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"x"}}},)"
      R"({"resource":{"resourceType":"Patient","id":"p9","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9000000009"}]}}]})";
  auto mixed = parse_plugin_answer(0, other_patient, source, {}, kNhsNumber);
  REQUIRE_FALSE(mixed.ok());
  CHECK(mixed.issue().diagnostics.find("Bundle.entry[1].resource is about another patient") != std::string::npos);
  CHECK(mixed.issue().diagnostics.find("9000000009") == std::string::npos);
  const std::string other_subject =
      R"({"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Observation","id":"o1",)"
      R"("status":"final","code":{"text":"x"},"subject":{"identifier":{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9000000009"}}}}]})";
  CHECK_FALSE(parse_plugin_answer(0, other_subject, source, {}, kNhsNumber).ok());
  // The same patient, or a fetch that did not know the NHS number, passes.
  const std::string same_patient =
      R"({"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Patient","id":"p1",)"
      R"("identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}]}}]})";
  auto same = parse_plugin_answer(0, same_patient, source, {}, kNhsNumber);
  REQUIRE(same.ok());
  CHECK(same->resources.size() == 1);
  CHECK(parse_plugin_answer(0, other_patient, source).ok());

  auto silent_failure = parse_plugin_answer(6, "", source);
  REQUIRE_FALSE(silent_failure.ok());
  CHECK(silent_failure.issue().diagnostics.find("plug-in status 6") != std::string::npos);
}
