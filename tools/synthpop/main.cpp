// SPDX-License-Identifier: Apache-2.0
// synthpop: command-line front end of PopulationGenerator. Writes NDJSON (default, stdout or
// --out FILE) or transaction Bundles (--out DIR, else one per line on stdout). Bad input: exit 2.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "tools/cli/parse.h"
#include "tools/synthpop/population.h"

namespace {

constexpr int kExitUsage = 2;
constexpr int kExitIo = 1;

struct FileCloser {
  void operator()(std::FILE* f) const {
    if (f != nullptr && f != stdout) std::fclose(f);
  }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

bool write_all(std::FILE* f, std::string_view data) {
  return std::fwrite(data.data(), 1, data.size(), f) == data.size();
}

}  // namespace

int main(int argc, char** argv) {
  synthpop::Options options;
  std::int64_t count = static_cast<std::int64_t>(options.count);
  std::string format = "ndjson";
  std::string out_path;
  bool quiet = false;

  CLI::App app{"synthpop: synthetic England-shaped FHIR R4 population (UK Core Patients with NHS numbers\n"
               "in the 999 test range, plus NRL-shaped DocumentReference record pointers). Deterministic:\n"
               "the same seed and options give byte-identical output."};
  app.add_option("--count", count, "patients to generate (1..10000000)")->capture_default_str();
  app.add_option("--seed", options.seed, "random seed")->capture_default_str();
  app.add_option("--locals", options.locals, "hospital MRNs per patient (0..20)")->capture_default_str();
  app.add_option("--pointers", options.pointers, "record pointers per patient (0..50)")->capture_default_str();
  app.add_option("--practices", options.practices, "GP practice pool size (1..100000)")->capture_default_str();
  app.add_option("--missing-nhs-rate", options.missing_nhs_rate, "share of patients without an NHS number (0..1)")
      ->capture_default_str();
  app.add_option("--format", format, "ndjson or bundle")->capture_default_str();
  app.add_option("--bundle-size", options.bundle_size, "max entries per transaction Bundle (1..100000)")
      ->capture_default_str();
  app.add_option("--out", out_path, "output file (ndjson) or directory (bundle); default stdout");
  app.add_flag("--quiet", quiet, "no progress or summary on stderr");

  try {
    gw::tools::parse(app, argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "synthpop: %s\nRun with --help for usage.\n", e.what());
    return kExitUsage;
  }

  if (count < 1 || count > static_cast<std::int64_t>(synthpop::kMaxCount)) {
    std::fprintf(stderr, "synthpop: --count must be between 1 and 10000000\n");
    return kExitUsage;
  }
  options.count = static_cast<std::uint64_t>(count);
  if (format == "ndjson") {
    options.format = synthpop::Format::ndjson;
  } else if (format == "bundle") {
    options.format = synthpop::Format::bundle;
  } else {
    std::fprintf(stderr, "synthpop: --format must be ndjson or bundle\n");
    return kExitUsage;
  }
  if (auto st = synthpop::validate_options(options); !st) {
    std::fprintf(stderr, "synthpop: %s\n", st.issue().diagnostics.c_str());
    return kExitUsage;
  }

  const bool bundle_dir = options.format == synthpop::Format::bundle && !out_path.empty();
  FilePtr out;
  std::vector<char> out_buffer(1 << 20);
  if (bundle_dir) {
    std::error_code ec;
    std::filesystem::create_directories(out_path, ec);
    if (ec || !std::filesystem::is_directory(out_path, ec)) {
      std::fprintf(stderr, "synthpop: --out %s is not a usable directory for bundles\n", out_path.c_str());
      return kExitIo;  // a write failure, as the README says (the options themselves were fine)
    }
  } else {
    out.reset(out_path.empty() ? stdout : std::fopen(out_path.c_str(), "wb"));
    if (!out) {
      std::fprintf(stderr, "synthpop: cannot open --out %s for writing\n", out_path.c_str());
      return kExitIo;
    }
    std::setvbuf(out.get(), out_buffer.data(), _IOFBF, out_buffer.size());
  }

  std::uint64_t bundle_no = 0;
  const auto sink = [&](std::string_view chunk) -> bool {
    if (options.format == synthpop::Format::ndjson) return write_all(out.get(), chunk);
    if (!bundle_dir) return write_all(out.get(), chunk) && write_all(out.get(), "\n");
    char name[32];
    std::snprintf(name, sizeof name, "bundle-%06llu.json", static_cast<unsigned long long>(++bundle_no));
    const auto path = std::filesystem::path(out_path) / name;
    FilePtr f(std::fopen(path.c_str(), "wb"));
    return f && write_all(f.get(), chunk) && write_all(f.get(), "\n");
  };
  const auto started = std::chrono::steady_clock::now();
  const auto seconds = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  };
  const auto progress = [&](std::uint64_t done) {
    if (!quiet) std::fprintf(stderr, "synthpop: %llu patients, %.1f s\n", static_cast<unsigned long long>(done), seconds());
  };

  const auto stats = synthpop::generate(options, sink, progress);
  if (!stats) {
    std::fprintf(stderr, "synthpop: %s\n", stats.issue().diagnostics.c_str());
    return kExitIo;
  }
  if (out && std::fflush(out.get()) != 0) {
    std::fprintf(stderr, "synthpop: output could not be written\n");
    return kExitIo;
  }
  if (!quiet) {
    std::fprintf(stderr, "synthpop: done: %llu patients, %llu pointers, %llu bytes", static_cast<unsigned long long>(stats->patients),
                 static_cast<unsigned long long>(stats->pointers), static_cast<unsigned long long>(stats->bytes));
    if (options.format == synthpop::Format::bundle) {
      std::fprintf(stderr, ", %llu bundles", static_cast<unsigned long long>(stats->bundles));
    }
    std::fprintf(stderr, ", %.2f s\n", seconds());
    if (stats->nhs_exhausted > 0) {
      std::fprintf(stderr,
                   "synthpop: warning: the 999 test range ran out of valid NHS numbers; %llu patients have local "
                   "identifiers only\n",
                   static_cast<unsigned long long>(stats->nhs_exhausted));
    }
  }
  return 0;
}
