// SPDX-License-Identifier: Apache-2.0
// Shared by the locator tests: the backends the conformance suite runs against, valid and
// invalid NHS numbers from the 999 test range, small builders for claims and pointers, and
// checked resolve and read.
#pragma once

#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

#include "fhir/nhs_number.h"
#include "gateway/locator/fake_locator.h"
#include "gateway/locator/sqlite_locator.h"
#include "support/paths.h"

namespace gw::locator::test {

// The n-th (0-based) valid NHS number of the 999 test range.
inline std::string nhs(int n) {
  for (long long nine = 999000000;; ++nine) {
    const std::string s = std::to_string(nine);
    if (auto check = fhir::nhs_check_digit(s)) {
      if (n-- == 0) return s + *check;
    }
  }
}

// nhs(n) with a wrong check digit.
inline std::string bad_nhs(int n) {
  std::string s = nhs(n);
  s.back() = s.back() == '9' ? '0' : static_cast<char>(s.back() + 1);
  return s;
}

inline constexpr const char* kMrnA = "https://fhir.rx1.example.nhs.uk/Id/mrn";
inline constexpr const char* kMrnB = "https://fhir.ry2.example.nhs.uk/Id/mrn";

inline Demographics person(std::string family, std::string given, std::string birth, std::string gender,
                           std::string postcode) {
  Demographics d;
  d.family = std::move(family);
  if (!given.empty()) d.given.push_back(std::move(given));
  d.birth_date = std::move(birth);
  d.gender = std::move(gender);
  d.postcode = std::move(postcode);
  return d;
}

inline IdentityClaim claim(std::string source, std::string nhs_number, std::vector<Identifier> ids,
                           Demographics d = {}) {
  IdentityClaim c;
  c.source_ods = std::move(source);
  c.demographics = std::move(d);
  c.demographics.nhs_number = std::move(nhs_number);
  c.identifiers = std::move(ids);
  return c;
}

// Resolves `c`, expecting `expected`; the patient id.
inline std::string resolve_ok(Locator& l, const IdentityClaim& c, MatchOutcome expected) {
  auto r = l.resolve(c);
  REQUIRE(r.ok());
  CHECK(outcome_name(r->outcome) == outcome_name(expected));
  return r->patient_id;
}

inline PatientRecord read_ok(Locator& l, const std::string& id) {
  auto r = l.read_patient(id);
  REQUIRE(r.ok());
  REQUIRE(r->has_value());
  return **r;
}

inline Pointer pointer(std::string patient_id, std::string type_code = "Encounter",
                       std::string url = "https://rx1.example.nhs.uk/fhir/Encounter?patient=1") {
  Pointer p;
  p.patient_id = std::move(patient_id);
  p.type_code = type_code;
  p.type_display = type_code;
  p.resource_types = {std::move(type_code)};
  p.url = std::move(url);
  return p;
}

struct SqliteBackend {
  static std::unique_ptr<Locator> make(DemographicRule rule = {}) {
    SqliteLocatorOptions o;
    o.rule = rule;
    o.read_connections = 2;
    o.mmap_mib = 16;
    auto l = open_sqlite_locator((gw::test::temp_dir("locator") / "locator.db").string(), o);
    REQUIRE(l.ok());
    return std::move(*l);
  }
};

struct FakeBackend {
  static std::unique_ptr<Locator> make(DemographicRule rule = {}) { return make_fake_locator(rule); }
};

}  // namespace gw::locator::test

// The conformance suite's backends (TEST_CASE_TEMPLATE(..., B, LOCATOR_BACKENDS)).
TYPE_TO_STRING(gw::locator::test::SqliteBackend);
TYPE_TO_STRING(gw::locator::test::FakeBackend);
#define LOCATOR_BACKENDS gw::locator::test::SqliteBackend, gw::locator::test::FakeBackend
