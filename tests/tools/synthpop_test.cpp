// SPDX-License-Identifier: Apache-2.0
// Tests of tools/synthpop: determinism, NHS number / ODS / postcode shapes, FHIR structure of
// every line, Bundle mode, and rejection of bad options (library and command line).
#include <doctest/doctest.h>

#include <sys/wait.h>

#include <cstdlib>
#include <regex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "fhir/json.h"
#include "fhir/nhs_number.h"
#include "fhir/structure_check.h"
#include "tools/synthpop/population.h"

namespace {

std::vector<std::string_view> lines_of(std::string_view text) {
  std::vector<std::string_view> lines;
  while (!text.empty()) {
    const auto nl = text.find('\n');
    lines.push_back(text.substr(0, nl));
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
  return lines;
}

std::string generate(const synthpop::Options& o) {
  auto out = synthpop::generate_to_string(o);
  REQUIRE(out.ok());
  return std::move(out).value();
}

int run_tool(const std::string& args) {
  const std::string cmd = std::string(SYNTHPOP_BIN) + " " + args + " >/dev/null 2>&1";
  const int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

}  // namespace

TEST_CASE("synthpop: same seed gives identical output, another seed differs") {
  synthpop::Options o;
  o.count = 300;
  const std::string a = generate(o);
  CHECK(a == generate(o));
  o.seed = 2;
  CHECK(a != generate(o));
  // A shorter run is a prefix of a longer one with the same seed.
  o.seed = 1;
  o.count = 100;
  const std::string shorter = generate(o);
  CHECK(a.substr(0, shorter.size()) == shorter);
}

TEST_CASE("synthpop: Rng::below and Permutation are exact") {
  synthpop::Rng r1(7), r2(7);
  for (int i = 0; i < 1000; ++i) {
    const auto v = r1.below(11);
    CHECK(v < 11);
    CHECK(v == r2.below(11));
  }
  for (std::uint64_t size : {1ULL, 2ULL, 10ULL, 1000ULL, 4097ULL}) {
    synthpop::Permutation p(size, 42);
    std::set<std::uint64_t> seen;
    for (std::uint64_t i = 0; i < size; ++i) seen.insert(p.at(i));
    CHECK(seen.size() == size);
    CHECK(*seen.rbegin() == size - 1);
  }
}

TEST_CASE("synthpop: 20,000 patients are well-formed, unique and correctly shaped") {
  synthpop::Options o;
  o.count = 20'000;
  o.seed = 12345;
  const std::string out = generate(o);
  const auto lines = lines_of(out);

  const std::regex postcode(R"(^[A-Z]{1,2}[0-9][A-Z0-9]? [0-9][ABD-HJLNP-UW-Z]{2}$)");
  const std::regex gp_ods(R"(^[A-Z][0-9]{5}$)");
  const std::regex custodian_ods(R"(^([A-Z][0-9]{5}|R[XYZ][1-9]|LA[0-9]{3})$)");
  const std::regex mrn(R"(^R[XYZ][1-9][0-9]{7}$)");
  const std::regex mrn_system(R"(^https://fhir\.r[xyz][1-9]\.example\.nhs\.uk/Id/mrn$)");
  std::set<std::string> nhs_numbers, mrns, ids;
  std::size_t patients = 0, pointers = 0, missing_nhs = 0, deceased = 0, non_ascii = 0;
  std::set<std::string> genders;

  for (const auto line : lines) {
    auto parsed = fhir::parse_json(line);
    REQUIRE_MESSAGE(parsed.ok(), line);
    const fhir::Json& r = *parsed;
    const auto issues = fhir::check_structure(r);
    CHECK_MESSAGE(issues.empty(), line);
    CHECK(ids.insert(std::string(r.string_at("id"))).second);
    const auto type = r.string_at("resourceType");
    if (type == "Patient") {
      ++patients;
      genders.insert(std::string(r.string_at("gender")));
      if (r.find("deceasedDateTime") != nullptr) ++deceased;
      const auto birth = r.string_at("birthDate");
      CHECK(birth >= "1925-01-01");
      CHECK(birth < std::string_view(synthpop::kReferenceDate));
      const auto* profile = r.find("meta")->find("profile");
      REQUIRE(profile != nullptr);
      CHECK(profile->items()[0].text() == "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient");
      bool has_nhs = false;
      std::size_t locals = 0;
      for (const auto& id : r.find("identifier")->items()) {
        if (id.string_at("system") == fhir::kNhsNumberSystem) {
          has_nhs = true;
          const std::string v(id.string_at("value"));
          CHECK(fhir::is_valid_nhs_number(v));
          CHECK(v.rfind("999", 0) == 0);
          CHECK(nhs_numbers.insert(v).second);
          const auto& ext = id.find("extension")->items()[0];
          CHECK(ext.string_at("url") ==
                "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-NHSNumberVerificationStatus");
          const auto code = ext.find("valueCodeableConcept")->find("coding")->items()[0].string_at("code");
          CHECK((code == "01" || code == "02"));
        } else {
          ++locals;
          const std::string v(id.string_at("value"));
          CHECK(std::regex_match(v, mrn));
          CHECK(std::regex_match(std::string(id.string_at("system")), mrn_system));
          CHECK(mrns.insert(v).second);
        }
      }
      CHECK(locals == 3);
      if (!has_nhs) ++missing_nhs;
      const auto& addr = r.find("address")->items()[0];
      CHECK_MESSAGE(std::regex_match(std::string(addr.string_at("postalCode")), postcode), line);
      const auto& gp = r.find("generalPractitioner")->items()[0];
      CHECK(gp.find("identifier")->string_at("system") == "https://fhir.nhs.uk/Id/ods-organization-code");
      CHECK(std::regex_match(std::string(gp.find("identifier")->string_at("value")), gp_ods));
      const auto family = r.find("name")->items()[0].string_at("family");
      for (unsigned char c : family) {
        if (c >= 0x80) {
          ++non_ascii;
          break;
        }
      }
    } else {
      REQUIRE(type == "DocumentReference");
      ++pointers;
      CHECK(r.string_at("status") == "current");
      const auto* custodian = r.find("custodian")->find("identifier");
      CHECK(custodian->string_at("system") == "https://fhir.nhs.uk/Id/ods-organization-code");
      CHECK(std::regex_match(std::string(custodian->string_at("value")), custodian_ods));
      const auto& att = r.find("content")->items()[0].find("attachment");
      CHECK(att->string_at("contentType") == "application/fhir+json");
      CHECK(att->string_at("url").rfind("https://", 0) == 0);
      CHECK(r.find("subject") != nullptr);
    }
  }
  CHECK(patients == 20'000);
  CHECK(pointers == 100'000);
  CHECK(missing_nhs > 200);  // ~2%
  CHECK(missing_nhs < 700);
  CHECK(deceased > 0);
  CHECK(non_ascii > 0);
  CHECK(genders.size() == 4);
}

TEST_CASE("synthpop: bundle mode makes transaction Bundles of at most --bundle-size entries") {
  synthpop::Options o;
  o.count = 1000;
  o.format = synthpop::Format::bundle;
  o.bundle_size = 100;
  const std::string out = generate(o);
  std::size_t entries = 0, bundles = 0;
  std::set<std::string> full_urls;
  for (const auto line : lines_of(out)) {
    auto parsed = fhir::parse_json(line);
    REQUIRE(parsed.ok());
    CHECK(fhir::check_structure(*parsed).empty());
    CHECK(parsed->string_at("type") == "transaction");
    const auto& items = parsed->find("entry")->items();
    CHECK(items.size() <= 100);
    CHECK(!items.empty());
    for (const auto& e : items) {
      const std::string full_url(e.string_at("fullUrl"));
      CHECK(full_url.rfind("urn:uuid:", 0) == 0);
      CHECK(full_url.size() == 45);
      CHECK(full_urls.insert(full_url).second);
      CHECK(e.find("request")->string_at("method") == "PUT");
      const auto* res = e.find("resource");
      const std::string expected =
          std::string(res->string_at("resourceType")) + "/" + std::string(res->string_at("id"));
      CHECK(e.find("request")->string_at("url") == expected);
    }
    entries += items.size();
    ++bundles;
  }
  CHECK(entries == 6000);
  // A patient and its 5 pointers stay together: 16 groups (96 entries) per Bundle.
  CHECK(bundles == 63);

  // Same population as NDJSON, in the same order.
  synthpop::Options nd = o;
  nd.format = synthpop::Format::ndjson;
  const std::string ndjson = generate(nd);
  auto first = fhir::parse_json(lines_of(out)[0]);
  auto patient = fhir::parse_json(lines_of(ndjson)[0]);
  REQUIRE(first.ok());
  REQUIRE(patient.ok());
  CHECK(*first->find("entry")->items()[0].find("resource") == *patient);
}

TEST_CASE("synthpop: a patient and its pointers never straddle two Bundles") {
  // 4 patients of 1 + 5 entries: with --bundle-size 4 each group is larger than a Bundle and
  // gets one of its own; with 13, two groups fit in one.
  for (const std::size_t size : {std::size_t{4}, std::size_t{13}}) {
    CAPTURE(size);
    synthpop::Options o;
    o.count = 4;
    o.format = synthpop::Format::bundle;
    o.bundle_size = size;
    std::size_t bundles = 0, patients = 0;
    const std::string out = generate(o);
    for (const auto line : lines_of(out)) {
      auto bundle = fhir::parse_json(line);
      REQUIRE(bundle.ok());
      ++bundles;
      // Every pointer's subject is a Patient of the same Bundle (by NHS number or MRN).
      std::set<std::string> here;
      for (const auto& e : bundle->find("entry")->items()) {
        const auto& r = *e.find("resource");
        if (r.string_at("resourceType") != "Patient") continue;
        ++patients;
        for (const auto& id : r.find("identifier")->items())
          here.insert(std::string(id.string_at("system")) + "|" + std::string(id.string_at("value")));
      }
      for (const auto& e : bundle->find("entry")->items()) {
        const auto& r = *e.find("resource");
        if (r.string_at("resourceType") != "DocumentReference") continue;
        const auto* id = r.find("subject")->find("identifier");
        REQUIRE(id != nullptr);
        CHECK(here.count(std::string(id->string_at("system")) + "|" + std::string(id->string_at("value"))) == 1);
      }
    }
    CHECK(patients == 4);
    CHECK(bundles == (size == 4 ? 4 : 2));
  }
}

TEST_CASE("synthpop: bad options are rejected") {
  const auto bad = [](auto mutate) {
    synthpop::Options o;
    mutate(o);
    const auto st = synthpop::validate_options(o);
    CHECK(!st.ok());
    if (!st.ok()) CHECK(st.issue().code == fhir::ErrorCode::invalid_value);
    CHECK(!synthpop::generate_to_string(o).ok());
  };
  bad([](synthpop::Options& o) { o.count = 0; });
  bad([](synthpop::Options& o) { o.count = 10'000'001; });
  bad([](synthpop::Options& o) { o.locals = -1; });
  bad([](synthpop::Options& o) { o.locals = 21; });
  bad([](synthpop::Options& o) { o.pointers = 51; });
  bad([](synthpop::Options& o) { o.practices = 0; });
  bad([](synthpop::Options& o) { o.missing_nhs_rate = 1.5; });
  bad([](synthpop::Options& o) { o.missing_nhs_rate = -0.1; });
  bad([](synthpop::Options& o) { o.bundle_size = 0; });
  CHECK(synthpop::validate_options(synthpop::Options{}).ok());

  CHECK(run_tool("--count 0") == 2);
  CHECK(run_tool("--count 10000001") == 2);
  CHECK(run_tool("--count abc") == 2);
  CHECK(run_tool("--count -5") == 2);
  CHECK(run_tool("--format xml") == 2);
  CHECK(run_tool("--missing-nhs-rate 2") == 2);
  CHECK(run_tool("--no-such-option") == 2);
  CHECK(run_tool("--help") == 0);
  CHECK(run_tool("--count 3 --quiet") == 0);
  // An --out that cannot be written is a write failure (1), not a usage error.
  CHECK(run_tool("--count 3 --quiet --out /nonexistent-dir/x.ndjson") == 1);
  CHECK(run_tool("--count 3 --quiet --format bundle --out /proc/no-bundles-here") == 1);
}

TEST_CASE("synthpop: edge options still give valid resources") {
  synthpop::Options o;
  o.count = 200;
  o.locals = 0;
  o.pointers = 50;  // more than the distinct (source, category) pairs: capped
  o.practices = 1;
  o.missing_nhs_rate = 1.0;
  const std::string out = generate(o);
  for (const auto line : lines_of(out)) {
    auto parsed = fhir::parse_json(line);
    REQUIRE(parsed.ok());
    CHECK(fhir::check_structure(*parsed).empty());
    if (parsed->string_at("resourceType") == "DocumentReference") {
      CHECK(parsed->find("subject")->string_at("reference").rfind("Patient/", 0) == 0);
    }
  }
}
