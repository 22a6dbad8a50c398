// SPDX-License-Identifier: Apache-2.0
// Part of the Locator conformance suite (both backends): every Patient.name is kept (a maiden
// or previous name besides the primary one), read back in order, and found by family, given
// and name searches; the demographic rule still compares the primary name.
#include <doctest/doctest.h>

#include "locator_test_support.h"

using namespace gw::locator;
using namespace gw::locator::test;

namespace {

// Jane Smith, born Murazik, once Janet Jones.
Demographics jane() {
  Demographics d = person("Smith", "Jane", "1980-05-01", "female", "LS1 4AB");
  d.other_names = {{"maiden", "Murazik", {"Jane"}}, {"old", "Jönes", {"Janet", "Ann"}}};
  return d;
}

std::int64_t total_for(Locator& l, const std::string& family, const std::string& given, const std::string& name) {
  PatientQuery q;
  q.family = family;
  q.given = given;
  q.name = name;
  auto page = l.search_patients(q);
  REQUIRE(page.ok());
  return page->total;
}

}  // namespace

TEST_CASE_TEMPLATE("Locator: every name is kept, read back in order and found by name searches", B,
                   LOCATOR_BACKENDS) {
  auto l = B::make();
  const std::string id = resolve_ok(*l, claim("RX1", nhs(0), {{kMrnA, "M1", ""}}, jane()), MatchOutcome::created);
  resolve_ok(*l, claim("RX1", nhs(1), {}, person("Murray", "Bob", "1970-01-01", "male", "")), MatchOutcome::created);
  const PatientRecord p = read_ok(*l, id);
  CHECK(p.demographics.family == "Smith");
  CHECK(p.demographics.other_names == jane().other_names);

  // Starts-with, case- and accent-insensitive, over every name.
  CHECK(total_for(*l, "Murazik", "", "") == 1);
  CHECK(total_for(*l, "muRAZ", "", "") == 1);
  CHECK(total_for(*l, "jones", "", "") == 1);
  CHECK(total_for(*l, "Mur", "", "") == 2);  // Murazik (another name) and Murray (primary)
  CHECK(total_for(*l, "", "janet", "") == 1);
  CHECK(total_for(*l, "", "Ann", "") == 1);
  CHECK(total_for(*l, "", "", "MURAZ") == 1);
  CHECK(total_for(*l, "", "", "janet") == 1);
  CHECK(total_for(*l, "Smith", "Janet", "") == 1);  // family and given may come from different names
  CHECK(total_for(*l, "Murazik", "Bob", "") == 0);

  // The demographic rule compares the primary name only: the maiden name creates a new record.
  Demographics maiden = person("Murazik", "Jane", "1980-05-01", "female", "LS1 4AB");
  resolve_ok(*l, claim("RY2", "", {{kMrnB, "B1", ""}}, maiden), MatchOutcome::created);
  Demographics same = person("Smith", "Jane", "1980-05-01", "female", "LS1 4AB");
  CHECK(resolve_ok(*l, claim("RZ3", "", {{"https://rz3.example/mrn", "Z1", ""}}, same),
                   MatchOutcome::matched_demographics) == id);
}

TEST_CASE_TEMPLATE("Locator: other names follow the update rules: newest list wins, empty clears nothing", B,
                   LOCATOR_BACKENDS) {
  auto l = B::make();
  const std::string id = resolve_ok(*l, claim("RX1", nhs(0), {}, jane()), MatchOutcome::created);
  // A claim without other names leaves them.
  auto same = l->resolve(claim("RX1", nhs(0), {}, person("Smith", "Jane", "", "", "")));
  REQUIRE(same.ok());
  CHECK(same->updated_fields.empty());
  CHECK(read_ok(*l, id).demographics.other_names.size() == 2);
  // A claim with other names replaces the list, in a new version.
  Demographics renamed = person("Smith", "Jane", "", "", "");
  renamed.other_names = {{"maiden", "Murazik", {}}};
  auto changed = l->resolve(claim("RX1", nhs(0), {}, renamed));
  REQUIRE(changed.ok());
  CHECK(changed->updated_fields == std::vector<std::string>{"other_names"});
  const PatientRecord p = read_ok(*l, id);
  CHECK(p.version == 2);
  CHECK(p.demographics.other_names == renamed.other_names);
  CHECK(total_for(*l, "jones", "", "") == 0);
  CHECK(total_for(*l, "", "janet", "") == 0);
  CHECK(total_for(*l, "murazik", "", "") == 1);

  // A merge gives the survivor the other names it lacks.
  const std::string survivor =
      resolve_ok(*l, claim("RX1", "", {{kMrnA, "S1", ""}}, person("Smith", "Jane", "", "", "")), MatchOutcome::created);
  REQUIRE(l->merge(id, survivor, "RX1").ok());
  CHECK(read_ok(*l, survivor).demographics.other_names == renamed.other_names);
  CHECK(total_for(*l, "murazik", "", "") == 1);  // the retired record is not found, the survivor is
}

TEST_CASE_TEMPLATE("Locator: other names are bounded and checked", B, LOCATOR_BACKENDS) {
  auto l = B::make();
  const auto refused = [&](const Demographics& d) {
    auto r = l->resolve(claim("RX1", nhs(0), {}, d));
    REQUIRE_FALSE(r.ok());
    return r.issue().expression;
  };
  Demographics d = person("Smith", "Jane", "", "", "");
  d.other_names.assign(kMaxNames, HumanName{"old", "Jones", {}});
  CHECK(refused(d) == "demographics.other_names");
  d.other_names.resize(kMaxNames - 1);  // ten names in all: accepted
  CHECK(l->resolve(claim("RX1", nhs(0), {}, d)).ok());
  Demographics empty = person("Smith", "Jane", "", "", "");
  empty.other_names = {{"old", "", {}}};
  CHECK(refused(empty) == "demographics.other_names[0]");
  Demographics bad_use = person("Smith", "Jane", "", "", "");
  bad_use.other_names = {{"previous", "Jones", {}}};
  CHECK(refused(bad_use) == "demographics.other_names[0].use");
  Demographics long_given = person("Smith", "Jane", "", "", "");
  long_given.other_names = {{"old", "Jones", {std::string(300, 'x')}}};
  CHECK(refused(long_given) == "demographics.other_names[0].given[0]");
}
