// SPDX-License-Identifier: Apache-2.0
// hl7send: sends HL7 v2 messages from files and folders over MLLP (optionally TLS) and
// reports every acknowledgement (issue #4 item 7).
//   hl7send [--host H] [--port P] [--tls --ca F [--cert F --key F]] [--connections N]
//           [--retries N] [--timeout-ms MS] [--json] [--quiet] FILE|DIR...
// Each file may hold many messages (split on lines starting with MSH; batch envelopes and
// blank lines dropped; segments sent CR-terminated); a message with a line that is not a
// segment is not sent (or sent without such lines: --drop-non-segments). Exit codes: 0 every
// message got AA/CA (or asked for no ACK), 1 otherwise, 2 usage.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "adapters/hl7v2/ack.h"
#include "fhir/json.h"
#include "tools/cli/parse.h"
#include "tools/hl7send/cli_options.h"
#include "tools/hl7send/mllp_client.h"

namespace fs = std::filesystem;
using gw::hl7send::SendResult;
using gw::hl7send::SendStatus;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::uintmax_t kMaxFileBytes = 256ull * 1024 * 1024;
constexpr std::uintmax_t kMaxTotalBytes = 2ull * 1024 * 1024 * 1024;
constexpr std::size_t kMaxFiles = 1'000'000;

struct Item {
  std::string file;
  std::size_t index = 0;  // 1-based position of the message in its file
  std::string bytes;      // normalised: segments end in CR
  std::string control_id;
};

// Every regular file named, and every regular file under the folders named (recursively,
// sorted by path), in argument order.
bool list_files(const std::vector<std::string>& inputs, std::vector<fs::path>& files, std::string& error) {
  for (const auto& in : inputs) {
    std::error_code ec;
    if (fs::is_directory(in, ec)) {
      std::vector<fs::path> found;
      for (auto it = fs::recursive_directory_iterator(in, ec); !ec && it != fs::recursive_directory_iterator();
           it.increment(ec)) {
        if (!it->is_regular_file(ec)) continue;
        found.push_back(it->path());
        if (found.size() + files.size() > kMaxFiles) {
          error = "more than 1,000,000 files to send";
          return false;
        }
      }
      if (ec) {
        error = "cannot list " + in + ": " + ec.message();
        return false;
      }
      std::sort(found.begin(), found.end());
      files.insert(files.end(), found.begin(), found.end());
    } else if (fs::is_regular_file(in, ec)) {
      files.emplace_back(in);
    } else {
      error = in + ": no such file or directory";
      return false;
    }
  }
  return true;
}

// Reads and splits every file; a file without a message is named on stderr (unless quiet).
// A message with lines that are not HL7 segments is named on stderr with the first of them,
// and counted in `skipped` instead of being sent; with `drop_non_segments` those lines are
// dropped (and named unless quiet) and the rest is sent.
bool load_messages(const std::vector<fs::path>& files, bool quiet, bool drop_non_segments, std::vector<Item>& items,
                   std::size_t& skipped, std::string& error) {
  std::uintmax_t total = 0;
  for (const fs::path& p : files) {
    std::error_code ec;
    const auto size = fs::file_size(p, ec);
    if (ec) {
      error = p.string() + ": cannot read: " + ec.message();
      return false;
    }
    if (size > kMaxFileBytes) {
      error = p.string() + ": larger than 256 MiB; split it";
      return false;
    }
    total += size;
    if (total > kMaxTotalBytes) {
      error = "more than 2 GiB of input; send it in parts";
      return false;
    }
    std::ifstream in(p, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    if (!in && !in.eof()) {
      error = p.string() + ": cannot read";
      return false;
    }
    std::vector<gw::hl7send::FileMessage> messages = gw::hl7send::split_file(ss.str());
    if (messages.empty() && !quiet)
      std::fprintf(stderr, "hl7send: %s: no HL7 v2 message (no line starts with MSH), skipped\n", p.string().c_str());
    std::size_t index = 0;
    for (gw::hl7send::FileMessage& fm : messages) {
      std::string& m = fm.text;
      Item it;
      it.file = p.string();
      it.index = ++index;
      it.control_id = gw::hl7v2::read_msh(m).field(10);
      if (const auto foreign = gw::hl7send::foreign_lines(m); !foreign.empty()) {
        // Named by its line in the file, not in the message, so that it can be found in a
        // file of many messages; the message's number and MSH-10 say which one is held back.
        const std::string where = it.file + "#" + std::to_string(it.index) + " (MSH-10 '" + it.control_id + "')";
        const std::string first = "file line " + std::to_string(fm.lines[foreign[0].line - 1]) + " '" +
                                  foreign[0].text + "'" +
                                  (foreign.size() > 1 ? " and " + std::to_string(foreign.size() - 1) + " more" : "");
        if (!drop_non_segments) {
          std::fprintf(stderr,
                       "hl7send: %s: not sent: %s not an HL7 segment (a segment id and the field separator); "
                       "fix the file, or send with --drop-non-segments\n",
                       where.c_str(), (first + (foreign.size() > 1 ? " are" : " is")).c_str());
          ++skipped;
          continue;
        }
        if (!quiet)
          std::fprintf(stderr, "hl7send: %s: dropped %s (not HL7 segments)\n", where.c_str(), first.c_str());
        m = gw::hl7send::drop_foreign_lines(m);
      }
      it.bytes = std::move(m);
      items.push_back(std::move(it));
    }
  }
  return true;
}

// not_connected: never written (no connection could be made on any attempt), so not "sent".
enum class Bucket { ok, error, rejected, no_ack, mismatched, not_requested, not_connected };

Bucket bucket_of(const SendResult& r) {
  switch (r.status) {
    case SendStatus::mismatch: return Bucket::mismatched;
    case SendStatus::not_requested: return Bucket::not_requested;
    case SendStatus::connect_failed:
      if (!r.written) return Bucket::not_connected;
      return Bucket::no_ack;
    case SendStatus::timeout:
    case SendStatus::disconnected: return Bucket::no_ack;
    case SendStatus::acknowledged: break;
  }
  if (r.accepted()) return Bucket::ok;
  const std::string code = r.code();
  return code.size() == 2 && code[1] == 'R' ? Bucket::rejected : Bucket::error;
}

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

double millis(std::chrono::microseconds us) { return static_cast<double>(us.count()) / 1000.0; }

// The ACK that explains the outcome: the one carrying the worst code.
const gw::hl7send::Ack* deciding_ack(const SendResult& r) {
  const std::string code = r.code();
  for (const auto& a : r.acks)
    if (a.code == code) return &a;
  return r.acks.empty() ? nullptr : &r.acks.back();
}

std::string json_line(const Item& it, const SendResult& r) {
  fhir::Json o = fhir::Json::object();
  o.set("file", fhir::Json::string(it.file));
  o.set("index", fhir::Json::integer(static_cast<std::int64_t>(it.index)));
  o.set("control_id", fhir::Json::string(it.control_id));
  o.set("status", fhir::Json::string(std::string(gw::hl7send::status_name(r.status))));
  o.set("ack_code", fhir::Json::string(r.code()));
  fhir::Json codes = fhir::Json::array();
  for (const auto& a : r.acks) codes.push_back(fhir::Json::string(a.code));
  o.set("ack_codes", std::move(codes));
  const gw::hl7send::Ack* a = deciding_ack(r);
  o.set("text", fhir::Json::string(a ? a->text : std::string()));
  o.set("error_location", fhir::Json::string(a ? a->error_location : std::string()));
  o.set("error_code", fhir::Json::string(a ? a->error_code : std::string()));
  o.set("error", fhir::Json::string(r.error));
  o.set("latency_ms", *fhir::Json::decimal(fixed(millis(r.latency), 3)));
  o.set("attempts", fhir::Json::integer(r.attempts));
  return fhir::to_json(o);
}

std::string text_line(const Item& it, const SendResult& r) {
  std::string line = it.file + "#" + std::to_string(it.index) + "  " +
                     (it.control_id.empty() ? std::string("(no MSH-10)") : it.control_id) + "  ";
  switch (r.status) {
    case SendStatus::acknowledged: {
      line += r.code();
      if (r.acks.size() > 1) {
        line += " (";
        for (std::size_t i = 0; i < r.acks.size(); ++i) line.append(i ? "," : "").append(r.acks[i].code);
        line += ")";
      }
      line += "  " + fixed(millis(r.latency), 2) + " ms";
      const gw::hl7send::Ack* a = deciding_ack(r);
      if (!r.accepted() && a) {
        if (!a->error_location.empty()) line += "  " + a->error_location;
        if (!a->error_code.empty()) line += "  [" + a->error_code + "]";
        if (!a->text.empty()) line += "  " + a->text;
      } else if (a && !a->text.empty()) {
        // An AA/CA with warnings: the first one's location and text (docs/hl7v2.md), so what
        // the gateway could not take as sent is seen without --json.
        line += "  warning:";
        if (!a->error_location.empty()) line += " " + a->error_location;
        line += "  " + a->text;
      }
      break;
    }
    case SendStatus::not_requested: line += "sent (no ACK asked for by MSH-15/16)"; break;
    case SendStatus::mismatch: line += "MISMATCH  " + r.error; break;
    case SendStatus::timeout:
    case SendStatus::disconnected:
    case SendStatus::connect_failed:
      line += (r.written ? "no ACK (" : "not sent (") + std::string(gw::hl7send::status_name(r.status)) + ")  " +
              r.error;
  }
  if (r.attempts > 1) line += "  (" + std::to_string(r.attempts) + " attempts)";
  return line;
}

// Nearest-rank percentile of sorted values.
double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  std::size_t rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(sorted.size())));
  return sorted[std::min(sorted.size(), std::max<std::size_t>(rank, 1)) - 1];
}

struct Report {
  bool json = false, quiet = false;
  std::size_t total = 0;
  Clock::time_point start = Clock::now();
  std::mutex m;
  std::size_t done = 0, last_progress_done = 0;
  Clock::time_point last_progress = Clock::now();
  std::size_t counts[7] = {0, 0, 0, 0, 0, 0, 0};
  std::string connect_error;  // the first connection failure, for the summary
  std::vector<double> latencies_ms;
  std::size_t not_sent = 0;  // messages with lines that are not segments (load_messages)

  void add(const Item& it, const SendResult& r) {
    const Bucket b = bucket_of(r);
    std::lock_guard lock(m);
    ++done;
    ++counts[static_cast<int>(b)];
    if (b == Bucket::not_connected && connect_error.empty()) connect_error = r.error;
    if (!r.acks.empty()) latencies_ms.push_back(millis(r.latency));
    if (json)
      std::printf("%s\n", json_line(it, r).c_str());
    else if (!quiet || (b != Bucket::ok && b != Bucket::not_requested))
      std::printf("%s\n", text_line(it, r).c_str());
    const auto now = Clock::now();
    if (!quiet && done < total &&
        (done - last_progress_done >= 1000 || now - last_progress >= std::chrono::seconds(2))) {
      const double secs = std::chrono::duration<double>(now - start).count();
      std::fprintf(stderr, "hl7send: %zu/%zu messages sent, %s messages/s\n", done, total,
                   fixed(secs > 0 ? static_cast<double>(done) / secs : 0.0, 1).c_str());
      last_progress_done = done;
      last_progress = now;
    }
  }

  std::size_t count(Bucket b) const { return counts[static_cast<int>(b)]; }

  void summary() {
    std::fflush(stdout);
    FILE* out = json ? stderr : stdout;
    const double secs = std::chrono::duration<double>(Clock::now() - start).count();
    std::sort(latencies_ms.begin(), latencies_ms.end());
    // Only messages that reached the gateway count as sent.
    const std::size_t sent = done - count(Bucket::not_connected);
    std::fprintf(out, "sent:             %zu messages in %s s (%s messages/s)\n", sent, fixed(secs, 2).c_str(),
                 fixed(secs > 0 ? static_cast<double>(sent) / secs : 0.0, 1).c_str());
    std::fprintf(out, "AA/CA:            %zu\n", count(Bucket::ok));
    std::fprintf(out, "AE/CE:            %zu\n", count(Bucket::error));
    std::fprintf(out, "AR/CR:            %zu\n", count(Bucket::rejected));
    std::fprintf(out, "no ACK:           %zu\n", count(Bucket::no_ack));
    std::fprintf(out, "mismatched:       %zu\n", count(Bucket::mismatched));
    if (not_sent > 0) std::fprintf(out, "not sent:         %zu (lines that are not HL7 segments)\n", not_sent);
    if (count(Bucket::not_connected) > 0)
      std::fprintf(out, "not connected:    %zu (not sent: %s)\n", count(Bucket::not_connected), connect_error.c_str());
    if (count(Bucket::not_requested) > 0) std::fprintf(out, "no ACK asked for: %zu\n", count(Bucket::not_requested));
    std::fprintf(out, "latency p50/p99:  %s / %s ms\n", fixed(percentile(latencies_ms, 0.50), 2).c_str(),
                 fixed(percentile(latencies_ms, 0.99), 2).c_str());
  }
};

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);  // a peer that closed mid-write is an error value, not a signal
  CLI::App app{
      "hl7send: send HL7 v2 messages over MLLP and report every acknowledgement.\n"
      "Inputs are files and folders (recursively, sorted by name). What is done to the input: a file is "
      "split into messages, one starting at each line that begins with MSH and running to the next; lines "
      "before the first MSH and batch envelope lines (FHS, BHS, BTS, FTS) are dropped. In each message a "
      "UTF-8 byte order mark is removed, LF and CRLF line ends become CR, blank lines are dropped and a final "
      "CR is added; nothing else is changed. A message holding a line that is not an HL7 segment (three "
      "upper-case letters or digits, then the field separator), such as a '//' comment, is not sent: it is "
      "named on stderr with the file line of that line (CR, LF and CRLF each end a line) and counted as not "
      "sent (see --drop-non-segments). Each message goes in its own MLLP "
      "frame, and each ACK's MSA-2 must echo the message's MSH-10. Only messages written to a connection "
      "count as sent; one that never got a connection is reported 'not sent (connect_failed)' and counted as "
      "not connected. Exit code 0 when every message was sent "
      "and got AA or CA (or asked for no ACK in MSH-15/16), 1 otherwise, 2 for usage errors."};
  gw::hl7send::ClientFlags flags;
  std::vector<std::string> inputs;
  std::size_t connections = 1;
  bool json = false, quiet = false, drop_non_segments = false;
  gw::hl7send::add_client_options(app, flags);
  app.add_flag("--drop-non-segments", drop_non_segments,
               "send a message holding lines that are not HL7 segments without those lines (each named on stderr) "
               "instead of not sending it");
  app.add_option("--connections", connections, "send over N parallel connections (messages dealt round-robin)")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  app.add_flag("--json", json,
               "one JSON line per message on stdout (file, index, control_id, status, ack_code, ack_codes, text, "
               "error_location, error_code, error, latency_ms, attempts); the summary goes to stderr");
  app.add_flag("--quiet", quiet, "print only failed messages and the summary (no progress)");
  app.add_option("inputs", inputs, "HL7 v2 files and folders to send")->required();
  try {
    gw::tools::parse(app, argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  std::vector<fs::path> files;
  std::vector<Item> items;
  std::string error;
  std::size_t not_sent = 0;
  if (!list_files(inputs, files, error) || !load_messages(files, quiet, drop_non_segments, items, not_sent, error)) {
    std::fprintf(stderr, "hl7send: %s\n", error.c_str());
    return 2;
  }
  if (items.empty() && not_sent > 0) {
    std::fprintf(stderr, "hl7send: nothing sent: every message holds lines that are not HL7 segments\n");
    return 1;
  }
  if (items.empty()) {
    std::fprintf(stderr, "hl7send: no HL7 v2 messages (lines starting with MSH) in the inputs\n");
    return 2;
  }

  Report report;
  report.json = json;
  report.quiet = quiet;
  report.total = items.size();
  report.not_sent = not_sent;
  const gw::hl7send::ClientOptions options = flags.client_options();
  connections = std::min(connections, items.size());
  auto worker = [&](std::size_t k) {
    gw::hl7send::MllpClient client(options);
    for (std::size_t i = k; i < items.size(); i += connections)
      report.add(items[i], client.send(items[i].bytes, flags.retries));
  };
  if (connections == 1) {
    worker(0);
  } else {
    std::vector<std::thread> threads;
    for (std::size_t k = 0; k < connections; ++k) threads.emplace_back(worker, k);
    for (auto& t : threads) t.join();
  }
  report.summary();
  return not_sent == 0 && report.count(Bucket::ok) + report.count(Bucket::not_requested) == items.size() ? 0 : 1;
}
