// SPDX-License-Identifier: Apache-2.0
// PopulationGenerator: a seeded, deterministic synthetic England-shaped population of UK Core
// Patients plus NRL-shaped DocumentReference "record pointers", as NDJSON or transaction Bundles.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <random>

#include "fhir/json.h"
#include "fhir/result.h"

namespace synthpop {

enum class Format { ndjson, bundle };

struct Options {
  std::uint64_t count = 100;        // patients, 1..10,000,000
  std::uint64_t seed = 1;
  int locals = 3;                   // hospital MRNs per patient, 0..kMaxLocals
  int pointers = 5;                 // DocumentReferences per patient, 0..kMaxPointers
  int practices = 50;               // GP practice pool, 1..kMaxPractices
  double missing_nhs_rate = 0.02;   // 0..1
  Format format = Format::ndjson;
  std::size_t bundle_size = 1000;   // entries per Bundle, 1..kMaxBundleSize
};

inline constexpr std::uint64_t kMaxCount = 10'000'000;
inline constexpr int kMaxLocals = 20;  // = the number of built-in synthetic trusts
inline constexpr int kMaxPointers = 50;
inline constexpr int kMaxPractices = 100'000;
inline constexpr std::size_t kMaxBundleSize = 100'000;

// Fixed "today" so output never depends on the clock.
inline constexpr std::string_view kReferenceDate = "2026-01-01";

// Fails with invalid_value naming the option and its allowed range.
fhir::Status validate_options(const Options& options);

// Deterministic pseudo-random permutation of [0, size) (4-round Feistel network with cycle
// walking), so sequential counters map to unique, scattered values. size <= 2^40.
class Permutation {
 public:
  Permutation(std::uint64_t size, std::uint64_t key);
  std::uint64_t at(std::uint64_t index) const;  // Precondition: index < size.

 private:
  std::uint64_t size_;
  std::uint64_t key_;
  unsigned half_bits_ = 1;
  std::uint64_t half_mask_ = 1;
};

// mt19937_64 with our own mappings: the engine's output is fixed by the standard, the
// std:: distributions are not, so these keep output identical across standard libraries.
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : engine_(seed) {}
  std::uint64_t next() { return engine_(); }
  std::uint64_t below(std::uint64_t n);  // uniform in [0, n); Precondition: n > 0
  double unit();                         // uniform in [0, 1), 53 bits
  bool chance(double p) { return unit() < p; }

 private:
  std::mt19937_64 engine_;
};

struct Trust {
  std::string code;  // ODS, e.g. "RX1"
  std::string name;
  std::string mrn_system;
};

struct Practice {
  std::string code;  // ODS, letter + 5 digits
  std::size_t city = 0;
};

struct PatientRecord {
  fhir::Json patient;
  std::vector<fhir::Json> pointers;  // DocumentReferences
  std::string patient_uuid;          // also Patient.id
  std::vector<std::string> pointer_uuids;  // for Bundle fullUrl
};

class PopulationGenerator {
 public:
  // Precondition: validate_options(options).ok() (checked; failure returned).
  static fhir::Result<PopulationGenerator> create(const Options& options);

  bool done() const { return generated_ >= options_.count; }
  // The next patient with its pointers. Precondition: !done().
  PatientRecord next();

  std::uint64_t generated() const { return generated_; }
  // Patients that should have had an NHS number after the ~909,000 valid numbers of the
  // 999 test range were used up; they carry local identifiers only.
  std::uint64_t nhs_exhausted() const { return nhs_exhausted_; }
  const std::vector<Trust>& trusts() const { return trusts_; }
  const std::vector<Practice>& practices() const { return practices_; }

 private:
  explicit PopulationGenerator(const Options& options);
  bool next_nhs_number(std::string& out);
  std::string uuid_for(std::uint64_t index, std::uint64_t slot) const;

  Options options_;
  Rng rng_;
  Permutation nhs_perm_;
  std::uint64_t nhs_pos_ = 0;
  std::uint64_t nhs_exhausted_ = 0;
  std::uint64_t generated_ = 0;
  std::uint64_t uuid_key_ = 0;
  std::vector<Trust> trusts_;
  std::vector<Permutation> mrn_perms_;
  std::vector<std::uint64_t> mrn_next_;
  std::vector<Practice> practices_;
  std::vector<std::vector<std::size_t>> practices_by_city_;
};

struct RunStats {
  std::uint64_t patients = 0;
  std::uint64_t pointers = 0;
  std::uint64_t bytes = 0;
  std::uint64_t bundles = 0;
  std::uint64_t nhs_exhausted = 0;
};

// Receives output. NDJSON: runs of whole lines (each ending "\n"). Bundle: one whole compact
// Bundle per call, without a trailing newline. Returns false to stop (e.g. a write failed).
using ChunkSink = std::function<bool(std::string_view chunk)>;
// Called after every `progress_every` patients with the number generated so far.
using ProgressFn = std::function<void(std::uint64_t patients)>;

// Generates the whole population into `sink`. Fails with invalid_value on bad options and
// internal_error when the sink refused a chunk.
fhir::Result<RunStats> generate(const Options& options, const ChunkSink& sink,
                                const ProgressFn& progress = {},
                                std::uint64_t progress_every = 100'000);

// Convenience for tests and small runs: the whole output in memory (bundles one per line).
fhir::Result<std::string> generate_to_string(const Options& options);

}  // namespace synthpop
