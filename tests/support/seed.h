// SPDX-License-Identifier: Apache-2.0
// Seeding the record locator for integration tests: valid NHS numbers, patients registered at
// a practice, and record pointers.
#pragma once

#include <string>

#include "gateway/locator/locator.h"

namespace gw::test {

inline constexpr const char* kMrn = "https://trust.example.nhs.uk/Id/mrn";

// A valid (Modulus 11) NHS number in the 999 test range derived from n.
std::string nhs(int n);

struct Seeded {
  std::string id;
  std::string nhs_number;
  std::string mrn;
};

Seeded add_patient(locator::Locator& l, int n, const std::string& family, const std::string& gp,
                   const std::string& source = "RX1");
std::string add_pointer(locator::Locator& l, const std::string& patient, const std::string& source,
                        const std::string& code, const std::string& display);

}  // namespace gw::test
