// SPDX-License-Identifier: Apache-2.0
// locator_bench (issue #3 item 7, in-process part): loads a synthpop population into a fresh
// SqliteLocator through Locator::import, then times in-process identifier lookups and patient
// reads. Generation and FHIR mapping run on a producer thread, overlapped with the import;
// with --pregenerate they run first and the whole population goes to one import() call (a
// bulk load: the locator defers its secondary indexes for the call, see sqlite_locator.h).
// Figures go to stdout; the database lives in a temp dir (or --dir) removed unless --keep.
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <limits>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <sys/resource.h>

#include <CLI/CLI.hpp>

#include "gateway/locator/fhir_mapping.h"
#include "gateway/locator/sqlite_locator.h"
#include "gateway/observe/log.h"
#include "gateway/sqlite/database.h"
#include "tools/synthpop/population.h"

namespace {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;
using gw::locator::ImportRecord;

constexpr int kExitUsage = 2;
constexpr int kExitFailed = 1;
constexpr const char* kClaimSource = "SYNPOP";  // the ODS-like code the load asserts claims as

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// CPU seconds (user + system) used by the whole process so far.
double process_cpu_seconds() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  const auto tv = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6; };
  return tv(ru.ru_utime) + tv(ru.ru_stime);
}

std::int64_t file_bytes(const fs::path& p) {
  std::error_code ec;
  const auto n = fs::file_size(p, ec);
  return ec ? 0 : static_cast<std::int64_t>(n);
}

std::int64_t db_bytes(const fs::path& db) {
  return file_bytes(db) + file_bytes(db.string() + "-wal") + file_bytes(db.string() + "-shm");
}

std::string mib(std::int64_t bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
  return buf;
}

struct Percentiles {
  double p50 = 0, p99 = 0, max = 0;  // microseconds
};

Percentiles percentiles(std::vector<double>& us) {
  Percentiles p;
  if (us.empty()) return p;
  std::sort(us.begin(), us.end());
  const auto at = [&](double q) {
    return us[std::min(us.size() - 1, static_cast<std::size_t>(q * static_cast<double>(us.size())))];
  };
  p.p50 = at(0.50);
  p.p99 = at(0.99);
  p.max = us.back();
  return p;
}

// Batches of mapped records from the producer to the importer (at most `depth` waiting).
class BatchQueue {
 public:
  explicit BatchQueue(std::size_t depth) : depth_(depth) {}
  void push(std::vector<ImportRecord> batch) {
    std::unique_lock lock(m_);
    not_full_.wait(lock, [&] { return q_.size() < depth_; });
    q_.push_back(std::move(batch));
    not_empty_.notify_one();
  }
  void close() {
    std::lock_guard lock(m_);
    closed_ = true;
    not_empty_.notify_all();
  }
  // False when closed and drained.
  bool pop(std::vector<ImportRecord>& out) {
    std::unique_lock lock(m_);
    not_empty_.wait(lock, [&] { return closed_ || !q_.empty(); });
    if (q_.empty()) return false;
    out = std::move(q_.front());
    q_.pop_front();
    not_full_.notify_one();
    return true;
  }

 private:
  std::size_t depth_;
  std::mutex m_;
  std::condition_variable not_full_, not_empty_;
  std::deque<std::vector<ImportRecord>> q_;
  bool closed_ = false;
};

struct Known {
  std::vector<std::string> nhs_numbers;
  std::vector<std::pair<std::string, std::string>> mrns;  // system, value
  std::string error;                                       // a mapping failure stops the run
};

}  // namespace

int main(int argc, char** argv) {
  std::int64_t count = 1'000'000;
  std::uint64_t seed = 1;
  std::string dir;
  bool keep = false;
  bool pregenerate = false;
  // 0: every record in one import() call with --pregenerate (a bulk load, which lets the
  // locator defer secondary indexes for the whole load), else 100,000 per call.
  std::size_t lookups = 100'000, reads = 100'000, call_batch = 0;
  int locals = 3, pointers = 5;
  gw::locator::SqliteLocatorOptions options;
  // Bulk-load tuning: big transactions (each commit rewrites every index page it dirtied, so
  // fewer commits write less) and a writer cache that holds them. synchronous stays FULL.
  options.import_batch = 100'000;
  options.write_cache_mib = 4096;
  options.read_connections = 2;
  options.read_cache_mib = 1024;
  options.mmap_mib = 0;
  // Progress every 100,000 patients, also inside one long import() call (a bulk load is one).
  std::size_t progress_base = 0, next_report = 100'000;
  Clock::time_point progress_t0 = Clock::now();
  options.on_import_progress = [&](std::size_t done_in_call, std::size_t) {
    const std::size_t done = progress_base + done_in_call;
    while (done >= next_report) {
      const double s = seconds_since(progress_t0);
      std::printf("  %8zu patients  %6.1f s  %8.0f patients/s\n", next_report, s, static_cast<double>(next_report) / s);
      std::fflush(stdout);
      next_report += 100'000;
    }
  };

  CLI::App app{"locator_bench: load N synthetic patients (3 local identifiers, 5 record pointers each) into a\n"
               "fresh SqliteLocator through Locator::import, then time in-process identifier lookups and\n"
               "patient reads. Prints load time, patients/s, database size and latency percentiles."};
  app.add_option("--count", count, "patients to load (1..10000000)")->capture_default_str();
  app.add_option("--seed", seed, "synthpop seed")->capture_default_str();
  app.add_option("--locals", locals, "local identifiers per patient (0..20)")->capture_default_str();
  app.add_option("--pointers", pointers, "record pointers per patient (0..50)")->capture_default_str();
  app.add_option("--dir", dir, "directory for locator.db (default: a new temp dir)");
  app.add_flag("--keep", keep, "keep the database afterwards");
  app.add_flag("--pregenerate", pregenerate,
               "generate and map the whole population first, so the load time is the import alone");
  app.add_option("--lookups", lookups, "timed lookup_identifier calls per pass (half MRNs, half NHS numbers)")
      ->capture_default_str();
  app.add_option("--reads", reads, "timed read_patient calls")->capture_default_str();
  app.add_option("--call-batch", call_batch,
                 "records per Locator::import call (0: all of them, at most 1000000, with --pregenerate, else 100000)")
      ->capture_default_str();
  app.add_option("--import-batch", options.import_batch, "records per import transaction")->capture_default_str();
  app.add_option("--cache-mib", options.write_cache_mib, "writer page cache, MiB")->capture_default_str();
  app.add_option("--read-cache-mib", options.read_cache_mib, "page cache of each read connection, MiB")
      ->capture_default_str();
  app.add_option("--mmap-mib", options.mmap_mib, "memory-mapped I/O per connection, MiB (0: off)")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "locator_bench: %s\nRun with --help for usage.\n", e.what());
    return kExitUsage;
  }
  if (call_batch == 0)
    call_batch = pregenerate ? static_cast<std::size_t>(std::clamp<std::int64_t>(count, 1, 1'000'000)) : 100'000;
  if (count < 1 || count > static_cast<std::int64_t>(synthpop::kMaxCount) || call_batch < 1 ||
      call_batch > 1'000'000 || options.import_batch < 1) {
    std::fprintf(stderr, "locator_bench: --count must be 1..10000000 and batches 1..1000000\n");
    return kExitUsage;
  }
  gw::observe::set_level(gw::observe::Level::warn);

  // The database directory.
  fs::path base;
  bool made_dir = false;
  if (dir.empty()) {
    std::string templ = (fs::temp_directory_path() / "locator-bench-XXXXXX").string();
    if (::mkdtemp(templ.data()) == nullptr) {
      std::fprintf(stderr, "locator_bench: cannot create a temp directory\n");
      return kExitFailed;
    }
    base = templ;
    made_dir = true;
  } else {
    base = dir;
    std::error_code ec;
    fs::create_directories(base, ec);
    made_dir = false;
  }
  const fs::path db_path = base / "locator.db";
  if (fs::exists(db_path)) {
    std::fprintf(stderr, "locator_bench: %s exists; the bench needs a fresh file\n", db_path.string().c_str());
    return kExitUsage;
  }
  const auto cleanup = [&] {
    if (keep) {
      std::printf("kept: %s\n", db_path.string().c_str());
      return;
    }
    std::error_code ec;
    for (const char* suffix : {"", "-wal", "-shm"}) fs::remove(db_path.string() + suffix, ec);
    if (made_dir) fs::remove_all(base, ec);
  };

  int rc = 0;
  {
    auto opened = gw::locator::SqliteLocator::open(db_path.string(), options);
    if (!opened) {
      std::fprintf(stderr, "locator_bench: %s\n", opened.issue().diagnostics.c_str());
      cleanup();
      return kExitFailed;
    }
    gw::locator::SqliteLocator& locator = **opened;

    synthpop::Options pop;
    pop.count = static_cast<std::uint64_t>(count);
    pop.seed = seed;
    pop.locals = locals;
    pop.pointers = pointers;
    if (auto valid = synthpop::validate_options(pop); !valid) {
      std::fprintf(stderr, "locator_bench: %s\n", valid.issue().diagnostics.c_str());
      cleanup();
      return kExitUsage;
    }
    std::printf("locator_bench: %lld patients x (%d local identifiers, %d pointers), seed %llu, import "
                "calls of %zu, transactions of %zu, db %s\n",
                static_cast<long long>(count), locals, pointers, static_cast<unsigned long long>(seed), call_batch,
                options.import_batch, db_path.string().c_str());
    std::fflush(stdout);

    // ---- load ----
    // The locator's info lines during the load are shown (a bulk import logs how long it took
    // to rebuild its deferred indexes); the migrations' ones at open are not.
    gw::observe::set_level(gw::observe::Level::info);
    BatchQueue queue(pregenerate ? std::numeric_limits<std::size_t>::max() : 2);
    Known known;
    known.nhs_numbers.reserve(static_cast<std::size_t>(count));
    known.mrns.reserve(static_cast<std::size_t>(count));
    auto t0 = Clock::now();
    std::thread producer([&] {
      auto gen = synthpop::PopulationGenerator::create(pop);
      if (!gen) {
        known.error = gen.issue().diagnostics;
        queue.close();
        return;
      }
      std::vector<ImportRecord> batch;
      while (!gen->done() && known.error.empty()) {
        const synthpop::PatientRecord rec = gen->next();
        auto claim = gw::locator::identity_from_patient(rec.patient, kClaimSource);
        if (!claim) {
          known.error = claim.issue().expression + ": " + claim.issue().diagnostics;
          break;
        }
        if (!claim->demographics.nhs_number.empty()) known.nhs_numbers.push_back(claim->demographics.nhs_number);
        if (!claim->identifiers.empty())
          known.mrns.emplace_back(claim->identifiers.front().system, claim->identifiers.front().value);
        ImportRecord ir;
        ir.identity = std::move(*claim);
        for (const auto& doc : rec.pointers) {
          auto p = gw::locator::pointer_from_document_reference(doc);
          if (!p) {
            known.error = p.issue().expression + ": " + p.issue().diagnostics;
            break;
          }
          ir.pointers.push_back(std::move(*p));
        }
        batch.push_back(std::move(ir));
        if (batch.size() >= call_batch) {
          queue.push(std::move(batch));
          batch = {};
        }
      }
      if (!batch.empty()) queue.push(std::move(batch));
      queue.close();
    });

    if (pregenerate) {
      producer.join();
      std::printf("  generated and mapped in %.1f s\n", seconds_since(t0));
      t0 = Clock::now();
    }
    std::vector<std::string> patient_ids;
    patient_ids.reserve(static_cast<std::size_t>(count));
    std::size_t created = 0, matched = 0, rejected = 0, conflicts = 0, done = 0;
    progress_t0 = t0;
    double import_seconds = 0;
    const double cpu0 = process_cpu_seconds();
    std::string first_rejection;
    std::vector<ImportRecord> batch;
    while (queue.pop(batch)) {
      const auto t = Clock::now();
      progress_base = done;
      auto result = locator.import(batch);
      import_seconds += seconds_since(t);
      if (!result) {
        std::fprintf(stderr, "locator_bench: import failed: %s\n", result.issue().diagnostics.c_str());
        rc = kExitFailed;
        break;
      }
      created += result->created;
      matched += result->matched;
      rejected += result->rejected;
      conflicts += result->conflicts;
      for (const auto& r : result->records) {
        if (r)
          patient_ids.push_back(r->patient_id);
        else if (first_rejection.empty())
          first_rejection = r.issue().expression + ": " + r.issue().diagnostics;
      }
      done += batch.size();
    }
    // Drain the producer even after a failure so it can finish.
    while (queue.pop(batch)) {
    }
    if (!pregenerate) producer.join();
    const double load_seconds = seconds_since(t0);
    gw::observe::set_level(gw::observe::Level::warn);
    const double load_cpu = process_cpu_seconds() - cpu0;
    if (!known.error.empty()) {
      std::fprintf(stderr, "locator_bench: mapping failed: %s\n", known.error.c_str());
      rc = kExitFailed;
    }

    if (rc == 0) {
      const std::int64_t bytes_after_load = db_bytes(db_path);
      auto stats = locator.stats();
      std::printf("\nload\n");
      std::printf("  patients           %zu (created %zu, matched %zu, rejected %zu, conflicts %zu)\n", done, created,
                  matched, rejected, conflicts);
      if (!first_rejection.empty()) std::printf("  first rejection    %s\n", first_rejection.c_str());
      std::printf("  wall time          %.1f s  (%.0f patients/s; %s)\n", load_seconds,
                  static_cast<double>(done) / load_seconds,
                  pregenerate ? "generated beforehand" : "generation + FHIR mapping overlapped");
      std::printf("  in import()        %.1f s  (%.0f patients/s)\n", import_seconds,
                  static_cast<double>(done) / import_seconds);
      std::printf("  process CPU        %.1f s  during the load%s\n", load_cpu,
                  pregenerate ? " (the import alone)" : " (import + generation)");
      if (stats) {
        std::printf("  index              %lld patients, %lld identifiers, %lld pointers, %lld untrusted NHS "
                    "numbers\n",
                    static_cast<long long>(stats->patients), static_cast<long long>(stats->identifiers),
                    static_cast<long long>(stats->pointers), static_cast<long long>(stats->nhs_numbers_untrusted));
      }
      std::printf("  database size      %s (locator.db + -wal + -shm, straight after the load)\n",
                  mib(bytes_after_load).c_str());
      {
        // A separate connection checkpoints the WAL into the main file (readers are idle).
        auto db = gw::sqlite::Database::open(db_path.string());
        if (db && db->exec("PRAGMA wal_checkpoint(TRUNCATE)"))
          std::printf("  after checkpoint   %s\n", mib(db_bytes(db_path)).c_str());
      }

      // ---- lookups ----
      // Two passes over different random samples: the first runs straight after the load
      // (the read connection's page cache is cold), the second once it has warmed.
      std::mt19937_64 rng(seed ^ 0x10c4a7e5ULL);
      std::size_t misses = 0;
      const auto lookup_pass = [&] {
        std::vector<double> us;
        us.reserve(lookups);
        for (std::size_t i = 0; i < lookups; ++i) {
          const bool nhs = (i % 2 == 0 && !known.nhs_numbers.empty()) || known.mrns.empty();
          std::string system, value;
          if (nhs) {
            system = std::string(gw::locator::kNhsNumberSystem);
            value = known.nhs_numbers[rng() % known.nhs_numbers.size()];
          } else {
            const auto& m = known.mrns[rng() % known.mrns.size()];
            system = m.first;
            value = m.second;
          }
          const auto t = Clock::now();
          auto r = locator.lookup_identifier(system, value);
          us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t).count());
          if (!r || !r->has_value()) ++misses;
        }
        return percentiles(us);
      };
      std::printf("\nlookup_identifier (in process, one thread, %zu random known identifiers per pass, half NHS "
                  "numbers)\n",
                  lookups);
      const Percentiles cold = lookup_pass();
      std::printf("  first pass   p50 %.1f us   p99 %.1f us   max %.1f us\n", cold.p50, cold.p99, cold.max);
      const Percentiles warm = lookup_pass();
      std::printf("  second pass  p50 %.1f us   p99 %.1f us   max %.1f us\n", warm.p50, warm.p99, warm.max);
      std::printf("  not found    %zu\n", misses);

      // ---- reads ----
      std::vector<double> read_us;
      read_us.reserve(reads);
      std::size_t read_misses = 0;
      for (std::size_t i = 0; i < reads && !patient_ids.empty(); ++i) {
        const std::string& id = patient_ids[rng() % patient_ids.size()];
        const auto t = Clock::now();
        auto r = locator.read_patient(id);
        read_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t).count());
        if (!r || !r->has_value()) ++read_misses;
      }
      const Percentiles rp = percentiles(read_us);
      std::printf("\nread_patient (in process, one thread, %zu random patients, with identifiers)\n", read_us.size());
      std::printf("  p50 %.1f us   p99 %.1f us   max %.1f us   not found %zu\n", rp.p50, rp.p99, rp.max,
                  read_misses);
      const auto c = locator.writer_counters();
      std::printf("\nwriter: %llu commits, %llu writes, %llu failed commits\n",
                  static_cast<unsigned long long>(c.commits), static_cast<unsigned long long>(c.writes),
                  static_cast<unsigned long long>(c.failed_commits));
      if (misses != 0 || read_misses != 0) rc = kExitFailed;
    }
  }
  cleanup();
  return rc;
}
