// SPDX-License-Identifier: Apache-2.0
#include "support/seed.h"

#include <doctest/doctest.h>

#include "fhir/nhs_number.h"

namespace gw::test {

std::string nhs(int n) {
  std::string nine = "999" + std::string(6 - std::to_string(n).size(), '0') + std::to_string(n);
  for (int bump = 0; bump < 20; ++bump) {
    auto c = fhir::nhs_check_digit(nine);
    if (c) return nine + *c;
    nine = "999" + std::string(6 - std::to_string(n + bump + 1).size(), '0') + std::to_string(n + bump + 1);
  }
  FAIL("no NHS number");
  return {};
}

Seeded add_patient(locator::Locator& l, int n, const std::string& family, const std::string& gp,
                   const std::string& source) {
  locator::IdentityClaim c;
  c.source_ods = source;
  c.demographics.nhs_number = nhs(n);
  c.demographics.nhs_number_verification = "01";
  c.demographics.family = family;
  c.demographics.given = {"Alex"};
  c.demographics.birth_date = "1980-05-17";
  c.demographics.gender = "female";
  c.demographics.postcode = "LS1 4AP";
  c.demographics.gp_practice_ods = gp;
  c.identifiers.push_back({kMrn, "MRN" + std::to_string(n), source});
  auto r = l.resolve(c);
  REQUIRE_MESSAGE(r.ok(), r.issue().diagnostics);
  return Seeded{r->patient_id, c.demographics.nhs_number, "MRN" + std::to_string(n)};
}

std::string add_pointer(locator::Locator& l, const std::string& patient, const std::string& source,
                        const std::string& code, const std::string& display) {
  locator::Pointer p;
  p.patient_id = patient;
  p.source_ods = source;
  p.type_code = code;
  p.type_display = display;
  p.category_code = "734163000";
  p.category_display = "Care plan";
  p.resource_types = {"Encounter"};
  p.url = "https://" + source + ".example.nhs.uk/fhir/DocumentReference/" + code;
  auto r = l.put_pointer(source, p, {});
  REQUIRE_MESSAGE(r.ok(), r.issue().diagnostics);
  return r->id;
}

}  // namespace gw::test
