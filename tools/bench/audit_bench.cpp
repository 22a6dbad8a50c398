// SPDX-License-Identifier: Apache-2.0
// audit_bench (issue #6 part 8): writes N (default 1,000,000) realistic audit records, about
// 600 bytes each, into a fresh audit.db through gw::audit::Log (group commit), checkpoints it
// with a key made for the run, then times the offline verifier (verify_database) over it.
// Figures go to stdout; the files live in a temp dir (or --dir) removed unless --keep.
//
// --shape read writes what http_bench --scenario audit makes the gateway write instead: one
// paramedic (EMERGENCY purpose) reading Patient records, ids in random order from --patients
// patients, with at most --in-flight appends outstanding (64 connections waiting for their
// record give group commits of a dozen or so records, not the default's full batches).
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <sys/resource.h>
#include <unistd.h>
#include <vector>

#include <CLI/CLI.hpp>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "gateway/audit/log.h"
#include "gateway/audit/verify.h"
#include "gateway/observe/log.h"

namespace {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr std::size_t kMaxInFlight = 32768;  // below LogOptions::max_queue

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// User + system CPU seconds of the whole process (every thread: the log's writer and
// checkpointer, and this one building records).
double cpu_seconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// User and system CPU seconds of this process's threads named `name` (the audit log names its
// writer "gw-audit-wr" and its WAL checkpointer "gw-audit-wal"), from /proc/self/task.
struct ThreadCpu {
  double user = 0;
  double system = 0;
};
ThreadCpu thread_cpu(const std::string& name) {
  ThreadCpu t;
  const double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
  std::error_code ec;
  for (const auto& task : fs::directory_iterator("/proc/self/task", ec)) {
    std::ifstream comm(task.path() / "comm");
    std::string c;
    if (!std::getline(comm, c) || c != name) continue;
    std::ifstream stat(task.path() / "stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    // Fields after the ")" closing the command: state is field 3, utime 14, stime 15.
    std::istringstream rest(line.substr(line.rfind(')') + 2));
    std::string field;
    for (int i = 3; i <= 15 && rest >> field; ++i) {
      if (i == 14) t.user += std::stod(field) / tick;
      if (i == 15) t.system += std::stod(field) / tick;
    }
  }
  return t;
}

std::uintmax_t file_bytes(const fs::path& p) {
  std::error_code ec;
  const auto n = fs::file_size(p, ec);
  return ec ? 0 : n;
}

std::string ed25519_pem() {
  EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
  if (!key) return {};
  BIO* bio = BIO_new(BIO_s_mem());
  std::string pem;
  if (bio && PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr) == 1) {
    char* data = nullptr;
    const long n = BIO_get_mem_data(bio, &data);
    pem.assign(data, static_cast<std::size_t>(n));
  }
  BIO_free(bio);
  EVP_PKEY_free(key);
  return pem;
}

// A paramedic or GP reading or searching a record, now and then an ingest or a break-glass.
gw::audit::Record record(std::uint64_t i, std::int64_t base_ms) {
  static const char* const kRoles[] = {"R8000", "R8003", "R0260", "R1975"};
  gw::audit::Record r;
  r.time_ms = base_ms + static_cast<std::int64_t>(i) * 250;
  const std::string nhs = std::to_string(9000000000ULL + (i * 7919) % 1000000);
  const std::string user = "5551" + std::to_string(10000000 + i % 5000);
  r.agent_kind = "user";
  r.user = user;
  r.role = kRoles[i % 4];
  r.organisation = i % 3 ? "RX809" : "A81001";
  r.client_id = "ambulance-epr";
  r.token_id = std::to_string(100000000 + i);
  r.purpose = "TREAT";
  r.address = "10.8." + std::to_string(i % 250) + ".17";
  r.request_id = std::to_string(100000000000ULL + i);
  r.kind = "rest";
  r.method = "GET";
  r.status = i % 50 == 7 ? 403 : 200;
  r.detail.patients = {nhs};
  r.detail.basis = "registered-practice";
  if (i % 10 == 3) {
    r.action = "search-type";
    r.target = "/DocumentReference?patient.identifier=https://fhir.nhs.uk/Id/nhs-number|" + nhs;
    r.route = "/DocumentReference";
    r.detail.returned = {"DocumentReference/doc-" + std::to_string(i), "DocumentReference/doc-" + std::to_string(i + 1)};
  } else if (i % 25 == 11) {
    r.kind = "ingest";
    r.action = "ingest-applied";
    r.method.clear();
    r.agent_kind = "system";
    r.user = "RX809";
    r.target = "ADT^A08 control id MSG" + std::to_string(i);
    r.route = "mllp";
    r.source = "RX809";
  } else {
    r.action = "read";
    r.target = "/Patient/" + std::to_string(i % 1000000) + "/$summary";
    r.route = "/Patient/{id}/$summary";
    r.detail.operation = "$summary";
    r.detail.returned = {"Patient/" + std::to_string(i % 1000000)};
  }
  if (r.status == 403) r.outcome_text = "no legitimate relationship with this patient";
  if (i % 1000 == 999) {
    r.detail.basis = "break-glass";
    r.detail.break_glass_reason = "EMERG";
    r.detail.break_glass_justification = "patient unconscious, no prior relationship";
  }
  return r;
}

// A Patient read as the gateway's pipeline records it for http_bench --scenario audit.
gw::audit::Record read_record(std::uint64_t i, std::uint64_t patient, std::int64_t base_ms) {
  gw::audit::Record r;
  r.time_ms = base_ms + static_cast<std::int64_t>(i / 8);
  char id[48];
  std::snprintf(id, sizeof id, "%08llx-9246-78a2-b97f-c307e97fae9c", static_cast<unsigned long long>(patient));
  r.kind = "rest";
  r.action = "read";
  r.method = "GET";
  r.target = std::string("/Patient/") + id;
  r.route = "/Patient/{id}";
  r.status = 200;
  r.agent_kind = "user";
  r.user = "bench-paramedic";
  r.role = "paramedic";
  r.organisation = "AMB01";
  r.client_id = "http-bench";
  r.token_id = "6a0d36364b884ef0a28660b933216fae";
  r.purpose = "EMERGENCY";
  r.address = "127.0.0.1";
  char rid[48];
  std::snprintf(rid, sizeof rid, "4e1aef24-dcdb-433a-ae8b-%012llx", static_cast<unsigned long long>(i));
  r.request_id = rid;
  r.detail.patients = {std::to_string(9990000000ULL + patient)};
  r.detail.returned = {std::string("Patient/") + id};
  r.detail.basis = "emergency-purpose";
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  std::uint64_t records = 1'000'000;
  unsigned threads = 2;
  std::string dir_option;
  bool keep = false;
  std::string shape = "mixed";
  std::size_t in_flight_max = kMaxInFlight;
  std::uint64_t patients = 10000;
  CLI::App app{"audit_bench: append N audit records through the audit log, checkpoint, then time audit-verify's core"};
  app.add_option("--records", records, "records to write")->capture_default_str();
  app.add_option("--threads", threads, "verifier threads")->capture_default_str();
  app.add_option("--dir", dir_option, "directory for audit.db (default: a fresh temp dir)");
  app.add_flag("--keep", keep, "keep the files afterwards");
  app.add_option("--shape", shape, "records: mixed (reads, searches, ingests, break-glass) or read (one paramedic's "
                                   "Patient reads, as http_bench --scenario audit)")
      ->check(CLI::IsMember({"mixed", "read"}))
      ->capture_default_str();
  app.add_option("--in-flight", in_flight_max, "appends outstanding at most (1..32768)")->capture_default_str();
  app.add_option("--patients", patients, "--shape read: distinct patients, read in random order")
      ->capture_default_str();
  std::size_t merge_rows = gw::audit::LogOptions{}.index_merge_rows;
  app.add_option("--patient-merge-rows", merge_rows,
                 "rows merged into the audit indexes at a time (LogOptions::index_merge_rows; "
                 "0 never merges)")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{0}, std::size_t{1} << 20));
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {  // exit 2 as for the checks below, not CLI11's 105-109
    std::fprintf(stderr, "audit_bench: %s\nRun with --help for usage.\n", e.what());
    return kExitUsage;
  }
  if (records == 0 || threads == 0 || threads > 64 || in_flight_max == 0 || in_flight_max > kMaxInFlight ||
      patients == 0) {
    std::fprintf(stderr, "audit_bench: --records and --patients must be > 0, --threads 1..64, --in-flight 1..32768\n");
    return kExitUsage;
  }
  gw::observe::set_level(gw::observe::Level::warn);

  const fs::path dir = dir_option.empty()
                           ? fs::temp_directory_path() / ("audit-bench-" + std::to_string(::getpid()))
                           : fs::path(dir_option);
  fs::create_directories(dir);
  const fs::path db = dir / "audit.db";
  const fs::path checkpoints = dir / "audit-checkpoints.log";
  auto cleanup = [&] {
    if (!keep && dir_option.empty()) fs::remove_all(dir);
  };

  auto signer = gw::audit::CheckpointSigner::from_pem(ed25519_pem(), "bench-audit-key");
  if (!signer) {
    std::fprintf(stderr, "audit_bench: key: %s\n", signer.issue().diagnostics.c_str());
    cleanup();
    return kExitFailed;
  }
  const std::string public_pem = signer->public_key_pem();
  auto shared_signer = std::make_shared<const gw::audit::CheckpointSigner>(std::move(*signer));

  // --- append ---------------------------------------------------------------------------
  std::uint64_t record_bytes = 0;
  gw::audit::Stats stats;
  double append_s = 0;
  double append_cpu_s = 0;
  ThreadCpu writer_cpu;
  ThreadCpu checkpointer_cpu;
  std::uintmax_t live_bytes = 0;
  double slowest_commit_s = 0;
  std::uint64_t slow_commits = 0;  // appends that waited over 100 ms for their commit
  {
    gw::audit::LogOptions o;
    o.path = db.string();
    o.checkpoint_file = checkpoints.string();
    o.checkpoint_interval = std::chrono::seconds(60);
    o.index_merge_rows = merge_rows;
    auto log = gw::audit::Log::open(o, shared_signer);
    if (!log) {
      std::fprintf(stderr, "audit_bench: %s\n", log.issue().diagnostics.c_str());
      cleanup();
      return kExitFailed;
    }
    std::mutex mu;
    std::condition_variable cv;
    std::size_t in_flight = 0;
    std::uint64_t failed = 0;
    const std::int64_t base = gw::audit::now_ms() - static_cast<std::int64_t>(records) * 250;
    std::mt19937_64 rng(42);
    std::vector<std::uint64_t> order(patients);
    for (std::uint64_t p = 0; p < patients; ++p) order[p] = p;
    const auto t0 = Clock::now();
    const double cpu0 = cpu_seconds();
    const ThreadCpu writer0 = thread_cpu("gw-audit-wr");
    const ThreadCpu checkpointer0 = thread_cpu("gw-audit-wal");
    for (std::uint64_t i = 0; i < records; ++i) {
      if (shape == "read" && i % patients == 0) std::shuffle(order.begin(), order.end(), rng);
      gw::audit::Record r = shape == "read" ? read_record(i, order[i % patients], base) : record(i, base);
      if (i < 1000) record_bytes += gw::audit::encode(r).size();
      {
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return in_flight < in_flight_max; });
        ++in_flight;
      }
      (*log)->append(std::move(r), [&, queued = Clock::now()](fhir::Result<std::uint64_t> res) {
        // Time from append() to the commit: what an HTTP response waits for its record.
        const double wait = seconds_since(queued);
        std::lock_guard lock(mu);
        --in_flight;
        if (!res) ++failed;
        slowest_commit_s = std::max(slowest_commit_s, wait);
        if (wait > 0.1) ++slow_commits;
        cv.notify_one();
      });
    }
    {
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return in_flight == 0; });
    }
    append_s = seconds_since(t0);
    append_cpu_s = cpu_seconds() - cpu0;
    const ThreadCpu writer1 = thread_cpu("gw-audit-wr");
    const ThreadCpu checkpointer1 = thread_cpu("gw-audit-wal");
    writer_cpu = {writer1.user - writer0.user, writer1.system - writer0.system};
    checkpointer_cpu = {checkpointer1.user - checkpointer0.user, checkpointer1.system - checkpointer0.system};
    // What the log occupies while the gateway runs: audit.db and its WAL (stop() folds the WAL
    // in and truncates it, so the size after the run alone would hide it).
    live_bytes = file_bytes(db) + file_bytes(db.string() + "-wal");
    auto c = (*log)->checkpoint_now();
    stats = (*log)->stats();
    (*log)->stop();
    if (failed > 0 || !c) {
      std::fprintf(stderr, "audit_bench: %llu appends failed\n", static_cast<unsigned long long>(failed));
      cleanup();
      return kExitFailed;
    }
  }
  const std::uintmax_t size = file_bytes(db) + file_bytes(db.string() + "-wal");
  std::printf("append: %llu records (%.0f bytes each on average) in %.2f s = %.0f records/s\n",
              static_cast<unsigned long long>(records),
              static_cast<double>(record_bytes) / static_cast<double>(std::min<std::uint64_t>(records, 1000)), append_s,
              static_cast<double>(records) / append_s);
  std::printf("append CPU: %.2f s user+system, all threads = %.1f us per record\n", append_cpu_s,
              append_cpu_s * 1e6 / static_cast<double>(records));
  const double per_record = 1e6 / static_cast<double>(records);
  std::printf("  of which the log's writer thread: %.1f us user + %.1f us system per record; its WAL checkpointer: "
              "%.1f us + %.1f us\n",
              writer_cpu.user * per_record, writer_cpu.system * per_record, checkpointer_cpu.user * per_record,
              checkpointer_cpu.system * per_record);
  std::printf("wait for the commit: slowest %.1f ms, %llu appends over 100 ms\n", slowest_commit_s * 1e3,
              static_cast<unsigned long long>(slow_commits));
  std::printf("group commit: %llu batches, %.1f records per batch on average, largest %llu, failed %llu\n",
              static_cast<unsigned long long>(stats.batches),
              static_cast<double>(stats.size) / static_cast<double>(std::max<std::uint64_t>(stats.batches, 1)),
              static_cast<unsigned long long>(stats.largest_batch),
              static_cast<unsigned long long>(stats.failed_batches));
  std::printf("index merges: %llu, %.0f patient rows each on average, %.1f ms each on average (the writer's, between "
              "commits)\n",
              static_cast<unsigned long long>(stats.index_merges),
              static_cast<double>(stats.patient_rows_merged) / static_cast<double>(std::max<std::uint64_t>(stats.index_merges, 1)),
              static_cast<double>(stats.index_merge_us) / 1e3 / static_cast<double>(std::max<std::uint64_t>(stats.index_merges, 1)));
  std::printf("audit.db: %.1f MiB (%.0f bytes per record); with its WAL at the end of the appends: %.1f MiB (%.0f "
              "bytes per record)\n",
              static_cast<double>(size) / (1024.0 * 1024.0), static_cast<double>(size) / static_cast<double>(records),
              static_cast<double>(live_bytes) / (1024.0 * 1024.0),
              static_cast<double>(live_bytes) / static_cast<double>(records));

  // --- verify ---------------------------------------------------------------------------
  auto key = gw::audit::CheckpointVerifier::from_pem(public_pem, "bench-audit-key");
  std::string text;
  if (FILE* f = std::fopen(checkpoints.string().c_str(), "rb")) {
    char buf[65536];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
    std::fclose(f);
  }
  auto notes = gw::audit::parse_checkpoints(text);
  if (!key || !notes) {
    std::fprintf(stderr, "audit_bench: cannot read the key or the checkpoint file\n");
    cleanup();
    return kExitFailed;
  }
  gw::audit::VerifyOptions vo;
  vo.key = &*key;
  vo.checkpoints = std::move(*notes);
  vo.threads = threads;
  const auto t1 = Clock::now();
  auto report = gw::audit::verify_database(db.string(), vo);
  const double verify_s = seconds_since(t1);
  if (!report) {
    std::fprintf(stderr, "audit_bench: verify: %s\n", report.issue().diagnostics.c_str());
    cleanup();
    return kExitFailed;
  }
  std::printf("verify: %llu records, %llu checkpoints (%llu verified), ok=%s, in %.2f s = %.0f records/s (%u threads)\n",
              static_cast<unsigned long long>(report->records), static_cast<unsigned long long>(report->checkpoints),
              static_cast<unsigned long long>(report->checkpoints_verified), report->ok ? "yes" : "NO", verify_s,
              static_cast<double>(report->records) / verify_s, threads);
  for (const auto& p : report->problems) std::printf("  problem [%s]: %s\n", p.kind.c_str(), p.text.c_str());
  cleanup();
  return report->ok ? 0 : kExitFailed;
}
