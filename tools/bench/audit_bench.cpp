// SPDX-License-Identifier: Apache-2.0
// audit_bench (issue #6 part 8): writes N (default 1,000,000) realistic audit records, about
// 500 bytes each, into a fresh audit.db through gw::audit::Log (group commit), checkpoints it
// with a key made for the run, then times the offline verifier (verify_database) over it.
// Figures go to stdout; the files live in a temp dir (or --dir) removed unless --keep.
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <unistd.h>

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

}  // namespace

int main(int argc, char** argv) {
  std::uint64_t records = 1'000'000;
  unsigned threads = 2;
  std::string dir_option;
  bool keep = false;
  CLI::App app{"audit_bench: append N audit records through the audit log, checkpoint, then time audit-verify's core"};
  app.add_option("--records", records, "records to write")->capture_default_str();
  app.add_option("--threads", threads, "verifier threads")->capture_default_str();
  app.add_option("--dir", dir_option, "directory for audit.db (default: a fresh temp dir)");
  app.add_flag("--keep", keep, "keep the files afterwards");
  CLI11_PARSE(app, argc, argv);
  if (records == 0 || threads == 0 || threads > 64) {
    std::fprintf(stderr, "audit_bench: --records must be > 0 and --threads 1..64\n");
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
  {
    gw::audit::LogOptions o;
    o.path = db.string();
    o.checkpoint_file = checkpoints.string();
    o.checkpoint_interval = std::chrono::seconds(60);
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
    const auto t0 = Clock::now();
    for (std::uint64_t i = 0; i < records; ++i) {
      gw::audit::Record r = record(i, base);
      if (i < 1000) record_bytes += gw::audit::encode(r).size();
      {
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return in_flight < kMaxInFlight; });
        ++in_flight;
      }
      (*log)->append(std::move(r), [&](fhir::Result<std::uint64_t> res) {
        std::lock_guard lock(mu);
        --in_flight;
        if (!res) ++failed;
        cv.notify_one();
      });
    }
    {
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return in_flight == 0; });
    }
    append_s = seconds_since(t0);
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
  std::printf("group commit: %llu batches, %.1f records per batch on average, largest %llu, failed %llu\n",
              static_cast<unsigned long long>(stats.batches),
              static_cast<double>(stats.size) / static_cast<double>(std::max<std::uint64_t>(stats.batches, 1)),
              static_cast<unsigned long long>(stats.largest_batch),
              static_cast<unsigned long long>(stats.failed_batches));
  std::printf("audit.db: %.1f MiB (%.0f bytes per record)\n", static_cast<double>(size) / (1024.0 * 1024.0),
              static_cast<double>(size) / static_cast<double>(records));

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
