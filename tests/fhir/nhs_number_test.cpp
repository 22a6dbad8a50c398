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

TEST_CASE("NHS number in free text: found plain or grouped 3-3-4, never inside a longer number") {
  CHECK(fhir::find_nhs_number("fetch for 9434765919 failed") == std::pair<std::size_t, std::size_t>{10, 20});
  CHECK(fhir::find_nhs_number("9434765919") == std::pair<std::size_t, std::size_t>{0, 10});
  CHECK(fhir::find_nhs_number("patient 943 476 5919.") == std::pair<std::size_t, std::size_t>{8, 20});
  CHECK(fhir::find_nhs_number("corr-943-476-5919") == std::pair<std::size_t, std::size_t>{5, 17});
  CHECK(fhir::find_nhs_number("id:9434765919x") == std::pair<std::size_t, std::size_t>{3, 13});
  // Not an NHS number: a bad check digit, a longer or shorter run, mixed or doubled separators.
  for (const char* none : {"9434765918", "94347659190", "19434765919", "943476591", "943 476-5919", "943  476 5919",
                           "943 476 59190", "1943 476 5919", "2026-12-07T20:10:08", "req-1765100000123", ""}) {
    CAPTURE(none);
    CHECK_FALSE(fhir::find_nhs_number(none).has_value());
  }
  CHECK(fhir::find_nhs_number("9434765919 and 9000000009", 1) == std::pair<std::size_t, std::size_t>{15, 25});
}

TEST_CASE("NHS number in free text: every one replaced, the rest kept") {
  CHECK(fhir::without_nhs_numbers("batch for 9434765919 (943 476 5919) refused: 9434765918", "[NHS number]") ==
        "batch for [NHS number] ([NHS number]) refused: 9434765918");
  CHECK(fhir::without_nhs_numbers("no patient data", "x") == "no patient data");
  CHECK(fhir::without_nhs_numbers("9000000009", "") == "");
}
