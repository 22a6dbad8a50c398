// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include "fhir/nhs_number.h"

TEST_CASE("NHS number: valid numbers pass Modulus 11") {
  for (const char* n : {"9000000009", "9434765919", "9912003888", "4010232137"}) {
    CAPTURE(n);
    CHECK(fhir::is_valid_nhs_number(n));
  }
}

TEST_CASE("NHS number: wrong check digit, check digit 10, length and non-digits fail with reasons") {
  auto wrong = fhir::validate_nhs_number("9434765918");
  REQUIRE_FALSE(wrong.ok());
  CHECK(wrong.issue().code == fhir::ErrorCode::invalid_nhs_number);
  CHECK(wrong.issue().diagnostics.find("check digit does not match") != std::string::npos);

  // 1000000000 -> sum 10, 11 - 10 = 1 ... find a prefix whose check would be 10: 0000000060
  // sum = 6*3 + 0... weights: digit 9 has weight 2, digit 8 weight 3: "000000006" -> 6*2 = 12,
  // 12 mod 11 = 1, 11 - 1 = 10.
  CHECK_FALSE(fhir::nhs_check_digit("000000006").has_value());
  auto ten = fhir::validate_nhs_number("0000000060");
  REQUIRE_FALSE(ten.ok());
  CHECK(ten.issue().diagnostics.find("would be 10") != std::string::npos);

  CHECK(fhir::validate_nhs_number("943476591").issue().diagnostics.find("exactly 10 digits") != std::string::npos);
  CHECK(fhir::validate_nhs_number("943 476 5919").issue().diagnostics.find("exactly 10 digits") != std::string::npos);
  CHECK(fhir::validate_nhs_number("94347659A9").issue().diagnostics.find("digits only") != std::string::npos);
  CHECK_FALSE(fhir::is_valid_nhs_number(""));
}

TEST_CASE("NHS number: remainder 0 gives check digit 0") {
  // 11 - (sum mod 11) = 11 -> 0
  auto d = fhir::nhs_check_digit("000000000");
  REQUIRE(d.has_value());
  CHECK(*d == '0');
  CHECK(fhir::format_nhs_number("9434765919") == "943 476 5919");
}
