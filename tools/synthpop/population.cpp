// SPDX-License-Identifier: Apache-2.0
// PopulationGenerator (see population.h): one mt19937_64 stream per run, Feistel permutations
// for unique NHS numbers / MRNs, FHIR JSON built with fhir::Json and serialised compactly.
#include "tools/synthpop/population.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <span>
#include <utility>

#include "fhir/datatypes.h"
#include "fhir/nhs_number.h"
#include "fhir/uk_core.h"
#include "tools/synthpop/tables.h"

namespace synthpop {
namespace {

using fhir::Json;

using fhir::coding;
using fhir::uk::kNhsNumberVerificationExtension;
using fhir::uk::kNhsNumberVerificationSystem;
using fhir::uk::kOdsOrganisationSystem;
using fhir::uk::kPatientProfile;
constexpr std::string_view kCategorySystem =
    "https://fhir.example.nhs.uk/CodeSystem/synthpop-record-category";
constexpr std::uint64_t kNhsPrefixBase = 999'000'000;
constexpr std::uint64_t kNhsPrefixCount = 1'000'000;
constexpr std::uint64_t kMrnSpace = 10'000'000;  // 7 digits; >= kMaxCount

// splitmix64 finaliser: a bijection on 64-bit values.
constexpr std::uint64_t mix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Days since 1970-01-01 for a proleptic Gregorian date (H. Hinnant's days_from_civil).
constexpr std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

struct Civil {
  std::int64_t y;
  unsigned m, d;
};

constexpr Civil civil_from_days(std::int64_t z) {
  z += 719468;
  const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const unsigned doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const std::int64_t y = static_cast<std::int64_t>(yoe) + era * 400;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned d = doy - (153 * mp + 2) / 5 + 1;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  return {y + (m <= 2), m, d};
}

constexpr std::int64_t kReferenceDay = days_from_civil(2026, 1, 1);
constexpr std::int64_t kEarliestBirthDay = days_from_civil(1925, 1, 1);
constexpr std::int64_t kPointerEpochDay = days_from_civil(2015, 1, 1);

std::string format_date(std::int64_t day) {
  const Civil c = civil_from_days(day);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02u", static_cast<int>(c.y), c.m, c.d);
  return buf;
}

// R4 instant / dateTime with seconds, UTC.
std::string format_instant_at(std::int64_t day, std::uint64_t second_of_day) {
  const Civil c = civil_from_days(day);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02u:%02u:%02uZ", static_cast<int>(c.y), c.m, c.d,
                static_cast<unsigned>(second_of_day / 3600), static_cast<unsigned>(second_of_day / 60 % 60),
                static_cast<unsigned>(second_of_day % 60));
  return buf;
}

std::string zero_pad(std::uint64_t value, int width) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%0*llu", width, static_cast<unsigned long long>(value));
  return buf;
}

std::string to_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

Json str(std::string_view s) { return fhir::text(s); }

Json ods_identifier(std::string_view code) { return fhir::identifier(kOdsOrganisationSystem, code); }

template <class T>
const T& pick(Rng& rng, std::span<const T> items) {
  return items[rng.below(items.size())];
}

std::size_t pick_weighted_city(Rng& rng) {
  const auto cities = tables::cities();
  std::uint64_t total = 0;
  for (const auto& c : cities) total += c.weight;
  std::uint64_t r = rng.below(total);
  for (std::size_t i = 0; i < cities.size(); ++i) {
    if (r < cities[i].weight) return i;
    r -= cities[i].weight;
  }
  return 0;
}

// Birth day: an age band by England's shape, then a uniform day inside it.
std::int64_t pick_birth_day(Rng& rng) {
  const auto bands = tables::age_bands();
  std::uint64_t total = 0;
  for (const auto& b : bands) total += b.weight;
  std::uint64_t r = rng.below(total);
  std::size_t i = 0;
  for (; i + 1 < bands.size(); ++i) {
    if (r < bands[i].weight) break;
    r -= bands[i].weight;
  }
  const std::int64_t youngest = kReferenceDay - static_cast<std::int64_t>(bands[i].from_years * 36525 / 100);
  std::int64_t oldest = kReferenceDay - static_cast<std::int64_t>(bands[i].to_years * 36525 / 100);
  if (oldest < kEarliestBirthDay) oldest = kEarliestBirthDay;
  const std::int64_t span = youngest - oldest;  // days; > 0 for every band
  return oldest + static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(span)));
}

std::string postcode(Rng& rng, std::string_view outward) {
  std::string pc(outward);
  pc += ' ';
  pc += static_cast<char>('0' + rng.below(10));
  pc += tables::kInwardLetters[rng.below(tables::kInwardLetters.size())];
  pc += tables::kInwardLetters[rng.below(tables::kInwardLetters.size())];
  return pc;
}

struct Source {
  enum class Kind { trust, practice, council } kind;
  std::string code;      // ODS code (custodian)
  std::string local_id;  // what the source calls the patient
};

constexpr std::array<std::string_view, 7> kTrustCategories = {
    "Encounter", "Observation", "MedicationRequest", "Condition",
    "Procedure", "DiagnosticReport", "AllergyIntolerance"};
constexpr std::array<std::string_view, 6> kPracticeCategories = {
    "Encounter", "Observation", "MedicationRequest", "Condition", "Immunization", "AllergyIntolerance"};

std::string council_code(std::size_t city) { return "LA" + zero_pad(101 + city, 3); }

}  // namespace

// ---- options ----------------------------------------------------------------------------

fhir::Status validate_options(const Options& o) {
  auto bad = [](std::string what) {
    return fhir::Status(fhir::Issue::make(fhir::ErrorCode::invalid_value, std::move(what)));
  };
  if (o.count < 1 || o.count > kMaxCount) return bad("--count must be between 1 and 10000000");
  if (o.locals < 0 || o.locals > kMaxLocals) return bad("--locals must be between 0 and 20");
  if (o.pointers < 0 || o.pointers > kMaxPointers) return bad("--pointers must be between 0 and 50");
  if (o.practices < 1 || o.practices > kMaxPractices) return bad("--practices must be between 1 and 100000");
  if (!(o.missing_nhs_rate >= 0.0 && o.missing_nhs_rate <= 1.0)) {
    return bad("--missing-nhs-rate must be between 0 and 1");
  }
  if (o.bundle_size < 1 || o.bundle_size > kMaxBundleSize) {
    return bad("--bundle-size must be between 1 and 100000");
  }
  return fhir::Ok{};
}

// ---- Permutation / Rng ------------------------------------------------------------------

Permutation::Permutation(std::uint64_t size, std::uint64_t key) : size_(size), key_(key) {
  while ((std::uint64_t{1} << (2 * half_bits_)) < size_) ++half_bits_;
  half_mask_ = (std::uint64_t{1} << half_bits_) - 1;
}

std::uint64_t Permutation::at(std::uint64_t index) const {
  std::uint64_t x = index;
  do {  // cycle walking: a permutation of [0, 2^2h) restricted to [0, size)
    std::uint64_t left = x >> half_bits_;
    std::uint64_t right = x & half_mask_;
    for (std::uint64_t round = 0; round < 4; ++round) {
      const std::uint64_t f = mix64(key_ ^ (round << 56) ^ right) & half_mask_;
      const std::uint64_t next_right = left ^ f;
      left = right;
      right = next_right;
    }
    x = (left << half_bits_) | right;
  } while (x >= size_);
  return x;
}

std::uint64_t Rng::below(std::uint64_t n) {
  // Rejection keeps the mapping exactly uniform: drop the low 2^64 mod n raw values.
  const std::uint64_t threshold = (0 - n) % n;
  for (;;) {
    const std::uint64_t r = engine_();
    if (r >= threshold) return r % n;
  }
}

double Rng::unit() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }

// ---- PopulationGenerator ----------------------------------------------------------------

fhir::Result<PopulationGenerator> PopulationGenerator::create(const Options& options) {
  if (auto st = validate_options(options); !st) return std::move(st).issue();
  return PopulationGenerator(options);
}

PopulationGenerator::PopulationGenerator(const Options& options)
    : options_(options),
      rng_(mix64(options.seed ^ 0x5eed0001ULL)),
      nhs_perm_(kNhsPrefixCount, mix64(options.seed ^ 0x5eed0002ULL)),
      uuid_key_(mix64(options.seed ^ 0x5eed0003ULL)) {
  // Reference data comes from its own stream so it does not depend on --count.
  Rng setup(mix64(options.seed ^ 0x5eed0004ULL));
  const auto cities = tables::cities();
  static constexpr std::string_view kTrustPrefixes[] = {"RX", "RY", "RZ"};
  for (int i = 0; i < kMaxLocals; ++i) {
    Trust t;
    t.code = kTrustPrefixes[i / 9];
    t.code.push_back(static_cast<char>('1' + i % 9));
    const auto& city = cities[static_cast<std::size_t>(i) % cities.size()];
    t.name = "Synthetic " + std::string(city.name) + " Hospitals NHS Trust " + t.code;
    t.mrn_system = "https://fhir." + to_lower(t.code) + ".example.nhs.uk/Id/mrn";
    trusts_.push_back(std::move(t));
    mrn_perms_.emplace_back(kMrnSpace, mix64(options.seed ^ (0x3a40000ULL + static_cast<std::uint64_t>(i))));
    mrn_next_.push_back(0);
  }
  // GP practices: letter + 5 digits, unique, spread over the cities.
  static constexpr std::string_view kPracticeLetters = "ABCDEFGHJKLMNPY";
  Permutation practice_perm(kPracticeLetters.size() * 100'000, setup.next());
  practices_by_city_.resize(cities.size());
  for (int i = 0; i < options.practices; ++i) {
    const std::uint64_t v = practice_perm.at(static_cast<std::uint64_t>(i));
    Practice p;
    p.code = std::string(1, kPracticeLetters[v / 100'000]) + zero_pad(v % 100'000, 5);
    p.city = setup.below(cities.size());
    practices_by_city_[p.city].push_back(practices_.size());
    practices_.push_back(std::move(p));
  }
}

bool PopulationGenerator::next_nhs_number(std::string& out) {
  while (nhs_pos_ < kNhsPrefixCount) {
    const std::string nine = std::to_string(kNhsPrefixBase + nhs_perm_.at(nhs_pos_++));
    if (const auto check = fhir::nhs_check_digit(nine)) {
      out = nine;
      out += *check;
      return true;
    }
  }
  return false;
}

std::string PopulationGenerator::uuid_for(std::uint64_t index, std::uint64_t slot) const {
  // a = bijection of a unique (index, slot) pair, so the 64 bits it contributes are unique
  // per run; version (4) and variant bits land only in b's bits.
  const std::uint64_t a = mix64(uuid_key_ ^ ((index << 8) | slot));
  const std::uint64_t b = mix64(a ^ uuid_key_);
  char buf[40];
  std::snprintf(buf, sizeof buf, "%08x-%04x-4%03x-%04x-%012llx", static_cast<unsigned>(a >> 32),
                static_cast<unsigned>(b & 0xffff), static_cast<unsigned>((b >> 16) & 0xfff),
                static_cast<unsigned>(0x8000 | ((b >> 28) & 0x3fff)),
                static_cast<unsigned long long>((a & 0xffffffffULL) << 16 | ((b >> 42) & 0xffff)));
  return buf;
}

PatientRecord PopulationGenerator::next() {
  const std::uint64_t index = generated_++;
  Rng& rng = rng_;
  PatientRecord rec;
  rec.patient_uuid = uuid_for(index, 0);

  // Who they are.
  const std::uint64_t g = rng.below(1000);
  const std::string_view gender = g < 490 ? "male" : g < 985 ? "female" : g < 990 ? "other" : "unknown";
  const bool male_names = gender == "male" || (gender != "female" && rng.chance(0.5));
  const auto given_pool = male_names ? tables::male_given_names() : tables::female_given_names();
  const std::string_view family = pick(rng, tables::family_names());
  const std::string_view given1 = pick(rng, given_pool);
  const bool has_middle = rng.chance(0.4);
  const std::string_view given2 = has_middle ? pick(rng, given_pool) : std::string_view{};
  const std::int64_t birth_day = pick_birth_day(rng);
  const std::int64_t age_years = (kReferenceDay - birth_day) / 365;
  const bool deceased = rng.chance(age_years >= 80 ? 0.08 : age_years >= 60 ? 0.015 : 0.002);
  std::int64_t death_day = 0;
  std::uint64_t death_second = 0;
  if (deceased) {
    const std::int64_t from = std::max(birth_day + 1, kReferenceDay - 3650);
    death_day = from + static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(kReferenceDay - from)));
    death_second = rng.below(86400);
  }

  // Where they live and who looks after them.
  const std::size_t city_index = pick_weighted_city(rng);
  const auto& city = tables::cities()[city_index];
  const std::string_view outward = pick(rng, city.outward_codes);
  const std::string pc = postcode(rng, outward);
  const std::uint64_t house = 1 + rng.below(180);
  const std::string_view street = pick(rng, tables::street_names());
  const auto& local_practices = practices_by_city_[city_index];
  const Practice& practice = local_practices.empty()
                                 ? practices_[rng.below(practices_.size())]
                                 : practices_[local_practices[rng.below(local_practices.size())]];

  // Identifiers.
  std::string nhs;
  bool has_nhs = !rng.chance(options_.missing_nhs_rate);
  if (has_nhs && !next_nhs_number(nhs)) {
    has_nhs = false;
    ++nhs_exhausted_;
  }
  const bool verified = rng.chance(0.97);
  std::array<std::size_t, kMaxLocals> trust_order{};
  for (std::size_t i = 0; i < trust_order.size(); ++i) trust_order[i] = i;
  const auto locals = static_cast<std::size_t>(options_.locals);
  for (std::size_t i = 0; i < locals; ++i) {  // partial Fisher-Yates: distinct trusts
    const std::size_t j = i + rng.below(trust_order.size() - i);
    std::swap(trust_order[i], trust_order[j]);
  }
  std::vector<std::string> mrns;
  for (std::size_t i = 0; i < locals; ++i) {
    const std::size_t t = trust_order[i];
    mrns.push_back(trusts_[t].code + zero_pad(mrn_perms_[t].at(mrn_next_[t]++), 7));
  }

  Json patient = Json::object();
  patient.set("resourceType", str("Patient"));
  patient.set("id", str(rec.patient_uuid));
  {
    Json meta = Json::object();
    Json profiles = Json::array();
    profiles.push_back(str(kPatientProfile));
    meta.set("profile", std::move(profiles));
    patient.set("meta", std::move(meta));
  }
  Json identifiers = Json::array();
  if (has_nhs) {
    Json cc = Json::object();
    Json codings = Json::array();
    codings.push_back(verified ? coding(kNhsNumberVerificationSystem, "01", "Number present and verified")
                               : coding(kNhsNumberVerificationSystem, "02", "Number present but not traced"));
    cc.set("coding", std::move(codings));
    Json ext = Json::object();
    ext.set("url", str(kNhsNumberVerificationExtension));
    ext.set("valueCodeableConcept", std::move(cc));
    Json exts = Json::array();
    exts.push_back(std::move(ext));
    Json id = Json::object();
    id.set("extension", std::move(exts));
    id.set("system", str(fhir::kNhsNumberSystem));
    id.set("value", str(nhs));
    identifiers.push_back(std::move(id));
  }
  for (std::size_t i = 0; i < locals; ++i) {
    Json id = Json::object();
    id.set("use", str("secondary"));
    id.set("system", str(trusts_[trust_order[i]].mrn_system));
    id.set("value", str(mrns[i]));
    identifiers.push_back(std::move(id));
  }
  if (identifiers.size() > 0) patient.set("identifier", std::move(identifiers));
  {
    Json name = Json::object();
    name.set("use", str("official"));
    name.set("family", str(family));
    Json given = Json::array();
    given.push_back(str(given1));
    if (has_middle) given.push_back(str(given2));
    name.set("given", std::move(given));
    Json names = Json::array();
    names.push_back(std::move(name));
    patient.set("name", std::move(names));
  }
  patient.set("gender", str(gender));
  patient.set("birthDate", str(format_date(birth_day)));
  if (deceased) patient.set("deceasedDateTime", str(format_instant_at(death_day, death_second)));
  {
    Json address = Json::object();
    address.set("use", str("home"));
    Json lines = Json::array();
    lines.push_back(str(std::to_string(house) + " " + std::string(street)));
    address.set("line", std::move(lines));
    address.set("city", str(city.name));
    address.set("postalCode", str(pc));
    address.set("country", str("GB"));
    Json addresses = Json::array();
    addresses.push_back(std::move(address));
    patient.set("address", std::move(addresses));
  }
  {
    Json gp = Json::object();
    gp.set("type", str("Organization"));
    gp.set("identifier", ods_identifier(practice.code));
    Json gps = Json::array();
    gps.push_back(std::move(gp));
    patient.set("generalPractitioner", std::move(gps));
  }
  rec.patient = std::move(patient);

  // Record pointers: distinct (source, category) pairs drawn without replacement.
  const std::string fallback_id = has_nhs ? nhs : rec.patient_uuid;
  std::vector<std::pair<std::size_t, std::string_view>> candidates;  // source index, category
  std::vector<Source> sources;
  for (std::size_t i = 0; i < locals; ++i) {
    sources.push_back({Source::Kind::trust, trusts_[trust_order[i]].code, mrns[i]});
    for (auto c : kTrustCategories) candidates.emplace_back(sources.size() - 1, c);
  }
  sources.push_back({Source::Kind::practice, practice.code, fallback_id});
  for (auto c : kPracticeCategories) candidates.emplace_back(sources.size() - 1, c);
  sources.push_back({Source::Kind::council, council_code(city_index), fallback_id});
  candidates.emplace_back(sources.size() - 1, "social-care");
  const std::size_t n_pointers = std::min(static_cast<std::size_t>(options_.pointers), candidates.size());

  Json subject = Json::object();
  if (has_nhs) {
    Json id = Json::object();
    id.set("system", str(fhir::kNhsNumberSystem));
    id.set("value", str(nhs));
    subject.set("identifier", std::move(id));
  } else if (locals > 0) {
    Json id = Json::object();
    id.set("system", str(trusts_[trust_order[0]].mrn_system));
    id.set("value", str(mrns[0]));
    subject.set("identifier", std::move(id));
  } else {
    subject.set("reference", str("Patient/" + rec.patient_uuid));
  }

  for (std::size_t k = 0; k < n_pointers; ++k) {
    const std::size_t j = k + rng.below(candidates.size() - k);
    std::swap(candidates[k], candidates[j]);
    const Source& src = sources[candidates[k].first];
    const std::string_view category = candidates[k].second;
    const std::int64_t from = std::max(birth_day, kPointerEpochDay);
    const std::int64_t day =
        from + static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(std::max<std::int64_t>(1, kReferenceDay - from))));
    const std::uint64_t second = rng.below(86400);

    const std::string uuid = uuid_for(index, 1 + k);
    Json doc = Json::object();
    doc.set("resourceType", str("DocumentReference"));
    doc.set("id", str(src.code + "-" + uuid));
    doc.set("status", str("current"));
    {
      Json type = Json::object();
      Json codings = Json::array();
      codings.push_back(coding(kCategorySystem, category, category));
      type.set("coding", std::move(codings));
      type.set("text", str(category));
      doc.set("type", std::move(type));
    }
    doc.set("subject", subject);
    doc.set("date", str(format_instant_at(day, second)));
    {
      Json author = Json::object();
      author.set("identifier", ods_identifier(src.code));
      Json authors = Json::array();
      authors.push_back(std::move(author));
      doc.set("author", std::move(authors));
      Json custodian = Json::object();
      custodian.set("identifier", ods_identifier(src.code));
      doc.set("custodian", std::move(custodian));
    }
    {
      Json attachment = Json::object();
      attachment.set("contentType", str("application/fhir+json"));
      attachment.set("url", str("https://" + to_lower(src.code) + ".example.nhs.uk/fhir/" +
                                std::string(category) + "?patient=" + src.local_id));
      Json content = Json::object();
      content.set("attachment", std::move(attachment));
      Json contents = Json::array();
      contents.push_back(std::move(content));
      doc.set("content", std::move(contents));
    }
    rec.pointers.push_back(std::move(doc));
    rec.pointer_uuids.push_back(uuid);
  }
  return rec;
}

// ---- output -----------------------------------------------------------------------------

namespace {

constexpr std::size_t kChunkBytes = 1 << 20;

Json bundle_entry(const std::string& uuid, Json resource, std::string_view type, std::string_view id) {
  Json request = Json::object();
  request.set("method", str("PUT"));
  request.set("url", str(std::string(type) + "/" + std::string(id)));
  Json entry = Json::object();
  entry.set("fullUrl", str("urn:uuid:" + uuid));
  entry.set("resource", std::move(resource));
  entry.set("request", std::move(request));
  return entry;
}

}  // namespace

fhir::Result<RunStats> generate(const Options& options, const ChunkSink& sink, const ProgressFn& progress,
                                std::uint64_t progress_every) {
  auto created = PopulationGenerator::create(options);
  if (!created) return std::move(created).issue();
  PopulationGenerator& gen = *created;
  RunStats stats;
  std::string buffer;
  const auto sink_failed = [] {
    return fhir::Issue::make(fhir::ErrorCode::internal_error, "output could not be written");
  };
  const auto emit = [&](std::string_view chunk) {
    stats.bytes += chunk.size();
    return sink(chunk);
  };

  Json bundle_entries = Json::array();
  const std::uint64_t bundle_key = mix64(options.seed ^ 0xb0d1eULL);
  const auto flush_bundle = [&]() -> bool {
    if (bundle_entries.size() == 0) return true;
    Json bundle = Json::object();
    bundle.set("resourceType", str("Bundle"));
    const std::uint64_t a = mix64(bundle_key ^ stats.bundles);
    char id[40];
    std::snprintf(id, sizeof id, "synthpop-bundle-%016llx", static_cast<unsigned long long>(a));
    bundle.set("id", str(id));
    bundle.set("type", str("transaction"));
    bundle.set("entry", std::move(bundle_entries));
    bundle_entries = Json::array();
    buffer.clear();
    fhir::append_json(bundle, buffer);
    ++stats.bundles;
    return emit(buffer);
  };

  if (options.format == Format::ndjson) {
    while (!gen.done()) {
      const PatientRecord rec = gen.next();
      ++stats.patients;
      stats.pointers += rec.pointers.size();
      fhir::append_json(rec.patient, buffer);
      buffer += '\n';
      for (const auto& doc : rec.pointers) {
        fhir::append_json(doc, buffer);
        buffer += '\n';
      }
      if (buffer.size() >= kChunkBytes) {
        if (!emit(buffer)) return sink_failed();
        buffer.clear();
      }
      if (progress && progress_every > 0 && stats.patients % progress_every == 0) progress(stats.patients);
    }
    if (!buffer.empty() && !emit(buffer)) return sink_failed();
  } else {
    while (!gen.done()) {
      PatientRecord rec = gen.next();
      ++stats.patients;
      stats.pointers += rec.pointers.size();
      // A patient and its pointers always share a Bundle: the pointers' subject is the
      // Patient's fullUrl, which means nothing in another file. A group that does not fit
      // starts a new Bundle, and one larger than bundle_size has a Bundle of its own.
      const std::size_t group = 1 + rec.pointers.size();
      if (bundle_entries.size() > 0 && bundle_entries.size() + group > options.bundle_size && !flush_bundle())
        return sink_failed();
      const auto add = [&](const std::string& uuid, Json resource, std::string_view type) {
        const std::string id(resource.string_at("id"));
        bundle_entries.push_back(bundle_entry(uuid, std::move(resource), type, id));
      };
      add(rec.patient_uuid, std::move(rec.patient), "Patient");
      for (std::size_t k = 0; k < rec.pointers.size(); ++k)
        add(rec.pointer_uuids[k], std::move(rec.pointers[k]), "DocumentReference");
      if (bundle_entries.size() >= options.bundle_size && !flush_bundle()) return sink_failed();
      if (progress && progress_every > 0 && stats.patients % progress_every == 0) progress(stats.patients);
    }
    if (!flush_bundle()) return sink_failed();
  }
  stats.nhs_exhausted = gen.nhs_exhausted();
  return stats;
}

fhir::Result<std::string> generate_to_string(const Options& options) {
  std::string out;
  const auto stats = generate(options, [&](std::string_view chunk) {
    out += chunk;
    if (options.format == Format::bundle) out += '\n';
    return true;
  });
  if (!stats) return stats.issue();
  return out;
}

}  // namespace synthpop
