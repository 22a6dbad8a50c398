// SPDX-License-Identifier: Apache-2.0
// merkle_bench (issue #6): times the audit log's Merkle tree in process. Hashes N synthetic
// audit records of about 400 bytes into leaf hashes, computes root_of over them, appends them
// to a CompactRange that stores every completed node in memory, then times inclusion and
// consistency proof generation (through a NodeSource over the stored nodes) and verification.
// Figures go to stdout.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "gateway/audit/merkle.h"

namespace {

using Clock = std::chrono::steady_clock;
using namespace gw::audit::merkle;

constexpr int kExitUsage = 2;
constexpr int kExitFailed = 1;
constexpr std::size_t kRecordBytes = 400;
constexpr std::size_t kBatch = 4096;  // records built per batch; only the hashing is timed

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Deterministic pseudo-random numbers (xorshift64*), so every run hashes the same records.
struct Rng {
  std::uint64_t state;
  std::uint64_t next() {
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return state * 0x2545F4914F6CDD1DULL;
  }
};

// An audit-record-like line of exactly kRecordBytes bytes.
void build_record(std::uint64_t seq, Rng& rng, std::string& out) {
  static constexpr const char* kRoutes[] = {"/Patient", "/Observation", "/Patient/$summary", "/metadata"};
  char head[256];
  const int n = std::snprintf(
      head, sizeof head,
      "{\"seq\":%llu,\"time\":\"2026-11-23T14:05:%02llu.%03lluZ\",\"client\":\"client-%llu\",\"route\":\"%s\","
      "\"status\":200,\"request_id\":\"%016llx%016llx\",\"patient\":\"Patient/%llu\",\"pad\":\"",
      static_cast<unsigned long long>(seq), static_cast<unsigned long long>(seq / 1000 % 60),
      static_cast<unsigned long long>(seq % 1000), static_cast<unsigned long long>(rng.next() % 500),
      kRoutes[rng.next() % 4], static_cast<unsigned long long>(rng.next()),
      static_cast<unsigned long long>(rng.next()), static_cast<unsigned long long>(rng.next() % 1'000'000));
  out.assign(head, static_cast<std::size_t>(n > 0 ? n : 0));
  while (out.size() + 2 < kRecordBytes) out.push_back(static_cast<char>('a' + rng.next() % 26));
  out.append("\"}");
}

}  // namespace

int main(int argc, char** argv) {
  std::uint64_t count = 1'000'000;
  std::uint64_t proofs = 200'000;
  CLI::App app{"merkle_bench: leaf hashing, root_of, CompactRange and proof throughput of the audit Merkle tree"};
  app.add_option("--records", count, "records (leaves), 1..100000000")->capture_default_str();
  app.add_option("--proofs", proofs, "proofs of each kind to generate and verify, 1..10000000")->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "merkle_bench: %s\nRun with --help for usage.\n", e.what());
    return kExitUsage;
  }
  if (count < 2 || count > 100'000'000 || proofs < 1 || proofs > 10'000'000) {
    std::fprintf(stderr, "merkle_bench: --records must be 2..100000000 and --proofs 1..10000000\n");
    return kExitUsage;
  }

  // 1. Leaf hashes of the records.
  std::vector<Hash> leaves(count);
  std::vector<std::string> batch(kBatch);
  Rng rng{0x9E3779B97F4A7C15ULL};
  double leaf_seconds = 0;
  std::uint64_t record_bytes = 0;
  for (std::uint64_t base = 0; base < count; base += kBatch) {
    const std::uint64_t n = std::min<std::uint64_t>(kBatch, count - base);
    for (std::uint64_t i = 0; i < n; ++i) {
      build_record(base + i, rng, batch[i]);
      record_bytes += batch[i].size();
    }
    const auto t0 = Clock::now();
    for (std::uint64_t i = 0; i < n; ++i) leaves[base + i] = leaf_hash(batch[i]);
    leaf_seconds += seconds_since(t0);
  }

  // 2. root_of over all leaf hashes.
  auto t0 = Clock::now();
  const Hash root = root_of(leaves);
  const double root_seconds = seconds_since(t0);

  // 3. The audit log's path: append each leaf, storing every completed node.
  std::vector<std::vector<Hash>> levels(64);
  CompactRange range;
  t0 = Clock::now();
  for (const Hash& leaf : leaves)
    range.append(leaf, [&levels](const CompactRange::Node& node) { levels[node.level].push_back(node.hash); });
  const double append_seconds = seconds_since(t0);
  if (range.root() != root) {
    std::fprintf(stderr, "merkle_bench: CompactRange root differs from root_of\n");
    return kExitFailed;
  }
  std::uint64_t reads = 0;
  const NodeSource nodes = [&levels, &reads](unsigned level, std::uint64_t index) {
    ++reads;
    return levels[level][index];
  };

  // 4. Inclusion proofs for random leaves of the full tree.
  std::vector<std::uint64_t> indices(proofs);
  for (auto& i : indices) i = rng.next() % count;
  std::vector<std::vector<Hash>> made(proofs);
  t0 = Clock::now();
  for (std::uint64_t p = 0; p < proofs; ++p) made[p] = inclusion_proof(indices[p], count, nodes);
  const double incl_gen_seconds = seconds_since(t0);
  const std::uint64_t incl_reads = reads;
  std::uint64_t failures = 0;
  t0 = Clock::now();
  for (std::uint64_t p = 0; p < proofs; ++p)
    failures += verify_inclusion(indices[p], count, leaves[indices[p]], made[p], root) ? 0 : 1;
  const double incl_verify_seconds = seconds_since(t0);

  // 5. Consistency proofs from random earlier sizes to the full tree.
  std::vector<std::uint64_t> sizes(proofs);
  for (auto& s : sizes) s = 1 + rng.next() % (count - 1);
  std::vector<Hash> old_roots(proofs);
  for (std::uint64_t p = 0; p < proofs; ++p) old_roots[p] = range_hash(0, sizes[p], nodes);
  reads = 0;
  t0 = Clock::now();
  for (std::uint64_t p = 0; p < proofs; ++p) made[p] = consistency_proof(sizes[p], count, nodes);
  const double cons_gen_seconds = seconds_since(t0);
  const std::uint64_t cons_reads = reads;
  t0 = Clock::now();
  for (std::uint64_t p = 0; p < proofs; ++p)
    failures += verify_consistency(sizes[p], count, old_roots[p], root, made[p]) ? 0 : 1;
  const double cons_verify_seconds = seconds_since(t0);

  const auto per_second = [](std::uint64_t n, double s) { return s > 0 ? static_cast<double>(n) / s : 0.0; };
  std::printf("merkle_bench: %llu records, %.0f bytes on average\n", static_cast<unsigned long long>(count),
              static_cast<double>(record_bytes) / static_cast<double>(count));
  std::printf("  leaf hashes (SHA-256 of each record)   %8.3f s  %10.0f records/s\n", leaf_seconds,
              per_second(count, leaf_seconds));
  std::printf("  root_of over %llu leaf hashes      %8.3f s\n", static_cast<unsigned long long>(count), root_seconds);
  std::printf("  leaf hashes + root_of                  %8.3f s\n", leaf_seconds + root_seconds);
  std::printf("  CompactRange append, nodes kept        %8.3f s  %10.0f appends/s\n", append_seconds,
              per_second(count, append_seconds));
  std::printf("  inclusion proof generation             %8.3f s  %10.0f proofs/s  (%.1f node reads each)\n",
              incl_gen_seconds, per_second(proofs, incl_gen_seconds),
              static_cast<double>(incl_reads) / static_cast<double>(proofs));
  std::printf("  inclusion proof verification           %8.3f s  %10.0f proofs/s\n", incl_verify_seconds,
              per_second(proofs, incl_verify_seconds));
  std::printf("  consistency proof generation           %8.3f s  %10.0f proofs/s  (%.1f node reads each)\n",
              cons_gen_seconds, per_second(proofs, cons_gen_seconds),
              static_cast<double>(cons_reads) / static_cast<double>(proofs));
  std::printf("  consistency proof verification         %8.3f s  %10.0f proofs/s\n", cons_verify_seconds,
              per_second(proofs, cons_verify_seconds));
  std::printf("  root %s\n", to_hex(root).c_str());
  if (failures != 0) {
    std::fprintf(stderr, "merkle_bench: %llu proofs failed to verify\n", static_cast<unsigned long long>(failures));
    return kExitFailed;
  }
  return 0;
}
