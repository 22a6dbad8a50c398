// SPDX-License-Identifier: Apache-2.0
// hl7v2_parse_bench (issue #4 item 11): HL7 v2 parse rate on one thread. Loads every message
// from the files and folders given (split with split_messages), keeps those that parse, then
// parses them all for a fixed number of rounds and prints messages/s and MB/s; a second figure
// also walks every field, repetition and component after parsing (the work a parser that
// splits eagerly does up front). --export writes the timed messages for
// hl7v2_medplum_parse.mjs, so both parsers time the same bytes (tools/bench/hl7v2-parse).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "adapters/hl7v2/message.h"

namespace {

using Clock = std::chrono::steady_clock;
using gw::hl7v2::Message;

constexpr int kExitUsage = 2;
constexpr int kExitFailed = 1;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::string read_all(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Documentation that sits beside data sets (SOURCE.md, INDEX.tsv) is not a message file.
bool is_data_file(const std::filesystem::path& p) {
  const std::string ext = p.extension().string();
  return ext != ".md" && ext != ".tsv";
}

struct Corpus {
  std::vector<std::string> messages;
  std::size_t bytes = 0;
  std::size_t files = 0;
  std::size_t refused = 0;
};

bool load(const std::vector<std::string>& paths, Corpus& corpus) {
  std::vector<std::filesystem::path> files;
  for (const auto& arg : paths) {
    std::error_code ec;
    if (std::filesystem::is_directory(arg, ec)) {
      for (const auto& e : std::filesystem::recursive_directory_iterator(arg))
        if (e.is_regular_file() && is_data_file(e.path())) files.push_back(e.path());
    } else if (std::filesystem::is_regular_file(arg, ec)) {
      files.push_back(arg);
    } else {
      std::fprintf(stderr, "hl7v2_parse_bench: %s: no such file or directory\n", arg.c_str());
      return false;
    }
  }
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    const std::string text = read_all(f);
    ++corpus.files;
    for (std::string_view part : gw::hl7v2::split_messages(text)) {
      if (!Message::parse(part)) {
        ++corpus.refused;
        continue;
      }
      corpus.messages.emplace_back(part);
      corpus.bytes += part.size();
    }
  }
  return true;
}

// "<length>\n<bytes>\n" per message: trivial to read from JavaScript, binary-safe.
bool export_corpus(const Corpus& corpus, const std::string& path) {
  std::ofstream out(path, std::ios::binary);
  for (const auto& m : corpus.messages) {
    out << m.size() << '\n';
    out.write(m.data(), static_cast<std::streamsize>(m.size()));
    out << '\n';
  }
  return static_cast<bool>(out);
}

// Every field, repetition and component as a view (what an eager splitter builds up front):
// each field's raw text split in one pass.
std::size_t walk(const Message& m) {
  const char rep_sep = m.delimiters().repetition;
  const char comp_sep = m.delimiters().component;
  std::size_t pieces = 0;
  for (std::size_t s = 0; s < m.segment_count(); ++s) {
    const auto seg = m.segment(s);
    for (std::size_t f = 1; f <= seg.field_count(); ++f) {
      const std::string_view field = seg.raw(f);
      std::size_t begin = 0;
      for (std::size_t i = 0; i <= field.size(); ++i) {
        if (i == field.size() || field[i] == rep_sep || field[i] == comp_sep) {
          std::string_view piece = field.substr(begin, i - begin);
          pieces += 1 + piece.size();
          begin = i + 1;
        }
      }
    }
  }
  return pieces;
}

struct Rate {
  double seconds = 0;
  double messages_per_s = 0;
  double mb_per_s = 0;
};

template <class Body>
Rate time_rounds(const Corpus& corpus, int rounds, Body body) {
  const auto t0 = Clock::now();
  for (int r = 0; r < rounds; ++r)
    for (const auto& m : corpus.messages) body(m);
  Rate rate;
  rate.seconds = seconds_since(t0);
  const double n = static_cast<double>(corpus.messages.size()) * rounds;
  rate.messages_per_s = n / rate.seconds;
  rate.mb_per_s = static_cast<double>(corpus.bytes) * rounds / rate.seconds / 1e6;
  return rate;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> paths;
  int rounds = 200;
  std::string export_path;
  CLI::App app{"hl7v2_parse_bench: HL7 v2 messages parsed per second on one thread"};
  app.add_option("paths", paths, "message files or folders (searched recursively; *.md and *.tsv skipped)")
      ->required();
  app.add_option("--rounds", rounds, "times every message is parsed, 1..100000")->capture_default_str();
  app.add_option("--export", export_path, "also write the timed messages to FILE for hl7v2_medplum_parse.mjs");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "hl7v2_parse_bench: %s\nRun with --help for usage.\n", e.what());
    return kExitUsage;
  }
  if (rounds < 1 || rounds > 100000) {
    std::fprintf(stderr, "hl7v2_parse_bench: --rounds must be 1..100000\n");
    return kExitUsage;
  }
  Corpus corpus;
  if (!load(paths, corpus)) return kExitUsage;
  if (corpus.messages.empty()) {
    std::fprintf(stderr, "hl7v2_parse_bench: no message parsed in %zu files\n", corpus.files);
    return kExitFailed;
  }
  if (!export_path.empty() && !export_corpus(corpus, export_path)) {
    std::fprintf(stderr, "hl7v2_parse_bench: cannot write %s\n", export_path.c_str());
    return kExitFailed;
  }
  std::printf("corpus: %zu files, %zu messages (%.2f MB) timed, %zu refused by the parser and left out\n",
              corpus.files, corpus.messages.size(), static_cast<double>(corpus.bytes) / 1e6, corpus.refused);

  std::size_t sink = 0;
  (void)time_rounds(corpus, 1, [&](const std::string& m) { sink += Message::parse(m)->segment_count(); });  // warm-up
  const Rate parse = time_rounds(corpus, rounds, [&](const std::string& m) {
    auto r = Message::parse(m);
    sink += r->segment_count();
  });
  const Rate walked = time_rounds(corpus, rounds, [&](const std::string& m) {
    auto r = Message::parse(m);
    sink += walk(*r);
  });
  std::printf("parse:        %10.0f messages/s  %8.1f MB/s  (%d rounds, %.2f s)\n", parse.messages_per_s,
              parse.mb_per_s, rounds, parse.seconds);
  std::printf("parse + walk: %10.0f messages/s  %8.1f MB/s  (every field, repetition and component)\n",
              walked.messages_per_s, walked.mb_per_s);
  // One line for scripts (tools/bench/hl7v2-parse).
  std::printf("RESULT messages_per_s=%.0f mb_per_s=%.2f walk_messages_per_s=%.0f messages=%zu sink=%zu\n",
              parse.messages_per_s, parse.mb_per_s, walked.messages_per_s, corpus.messages.size(), sink % 10);
  return 0;
}
