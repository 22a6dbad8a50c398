// SPDX-License-Identifier: Apache-2.0
// fsync_latency (issue #4 item 11, "fsync latency"): how long this machine takes to make a
// small write durable in a given folder: write 4 KiB, then fdatasync (or fsync), N rounds,
// and print p50/p99/max. Every acknowledged MLLP message waits for at least one such sync
// (SQLite WAL commits with synchronous=FULL), so this is the floor under the gateway's ACK
// latency; tools/bench/mllp-ingest runs it in the gateway's data directory.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace {

using Clock = std::chrono::steady_clock;

constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  const std::size_t k = std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

bool write_fully(int fd, const char* data, std::size_t size, off_t offset) {
  std::size_t done = 0;
  while (done < size) {
    const ssize_t n = ::pwrite(fd, data + done, size - done, offset + static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

// One series: `rounds` times write `block` at the next offset and sync; milliseconds each.
bool measure(int fd, bool data_only, bool append, std::size_t rounds, const std::string& block,
             std::vector<double>& out) {
  out.clear();
  out.reserve(rounds);
  const off_t base = append ? ::lseek(fd, 0, SEEK_END) : 0;
  for (std::size_t r = 0; r < rounds; ++r) {
    const off_t at = base + static_cast<off_t>(r * block.size());
    const auto t0 = Clock::now();
    if (!write_fully(fd, block.data(), block.size(), at)) return false;
    if ((data_only ? ::fdatasync(fd) : ::fsync(fd)) != 0) return false;
    out.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "fsync_latency: writes BYTES and syncs them (fdatasync and/or fsync) ROUNDS times in a file under DIR and "
      "prints the latency p50/p99/max in milliseconds, plus one RESULT line per sync call for scripts. By default "
      "the writes overwrite a preallocated file (a SQLite WAL in steady state); --append grows the file instead."};
  std::string dir = ".";
  std::size_t rounds = 1000;
  std::size_t bytes = 4096;
  std::string sync = "both";
  bool append = false;
  app.add_option("--dir", dir, "folder to measure (the file is created there and removed)")
      ->check(CLI::ExistingDirectory);
  app.add_option("--rounds", rounds, "writes per sync call")->check(CLI::Range(1, 1000000));
  app.add_option("--bytes", bytes, "bytes per write")->check(CLI::Range(1, 16 * 1024 * 1024));
  app.add_option("--sync", sync, "fdatasync | fsync | both")->check(CLI::IsMember({"fdatasync", "fsync", "both"}));
  app.add_flag("--append", append, "append to a growing file instead of overwriting a preallocated one");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : kExitUsage;
  }

  std::string path = dir + "/.fsync-latency-XXXXXX";
  std::vector<char> name(path.begin(), path.end());
  name.push_back('\0');
  const int fd = ::mkstemp(name.data());
  if (fd < 0) {
    std::fprintf(stderr, "fsync_latency: cannot create a file in %s: %s\n", dir.c_str(), std::strerror(errno));
    return kExitFailed;
  }
  path.assign(name.data());
  const std::string block(bytes, 'x');
  int rc = 0;
  if (!append) {
    // Preallocate with real writes, synced, so the timed writes change no file size.
    const std::string zeros(bytes, '\0');
    for (std::size_t r = 0; r < rounds && rc == 0; ++r)
      if (!write_fully(fd, zeros.data(), zeros.size(), static_cast<off_t>(r * bytes))) rc = kExitFailed;
    if (rc == 0 && ::fsync(fd) != 0) rc = kExitFailed;
  }
  std::printf("fsync_latency: %zu rounds of %zu bytes in %s (%s)\n", rounds, bytes, dir.c_str(),
              append ? "appending" : "overwriting a preallocated file");
  for (const char* call : {"fdatasync", "fsync"}) {
    if (rc != 0) break;
    if (sync != "both" && sync != call) continue;
    std::vector<double> ms;
    if (!measure(fd, std::string(call) == "fdatasync", append, rounds, block, ms)) {
      std::fprintf(stderr, "fsync_latency: write or %s failed: %s\n", call, std::strerror(errno));
      rc = kExitFailed;
      break;
    }
    double sum = 0;
    for (double v : ms) sum += v;
    const double p50 = percentile(ms, 0.50), p99 = percentile(ms, 0.99);
    const double max = *std::max_element(ms.begin(), ms.end());
    std::printf("  write+%-9s p50 %.3f ms  p99 %.3f ms  max %.3f ms  mean %.3f ms\n", call, p50, p99, max,
                sum / static_cast<double>(ms.size()));
    std::printf("RESULT sync=%s rounds=%zu bytes=%zu p50_ms=%.3f p99_ms=%.3f max_ms=%.3f mean_ms=%.3f\n", call, rounds,
                bytes, p50, p99, max, sum / static_cast<double>(ms.size()));
  }
  ::close(fd);
  ::unlink(path.c_str());
  return rc;
}
