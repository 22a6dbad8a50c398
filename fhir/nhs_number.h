// SPDX-License-Identifier: Apache-2.0
// NHS number: 10 digits, the last a Modulus 11 check digit (NHS Data Dictionary, "NHS NUMBER").
// Used by search-parameter validation, identity resolution and the HL7 v2 adapter.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "fhir/json.h"
#include "fhir/result.h"

namespace fhir {

inline constexpr std::string_view kNhsNumberSystem = "https://fhir.nhs.uk/Id/nhs-number";

// Check digit for the first nine digits; nullopt when the remainder makes it 10 (no valid
// NHS number has those nine digits). Precondition: `first_nine` is 9 ASCII digits.
std::optional<char> nhs_check_digit(std::string_view first_nine);

// Validates the 10-digit form (no spaces). Failures name the rule that failed
// (ErrorCode::invalid_nhs_number), never echoing the number itself.
Status validate_nhs_number(std::string_view value);
inline bool is_valid_nhs_number(std::string_view value) { return validate_nhs_number(value).ok(); }

// The valid NHS number among a Patient's (or an identity's) identifiers, "" when none is:
// the first identifier of kNhsNumberSystem whose value passes the check digit.
std::string trusted_nhs_number(const Json& patient);

// "9434765919" -> "943 476 5919" for display. Precondition: 10 characters.
std::string format_nhs_number(std::string_view value);

// The first NHS number written in free text at or after `from`: ten digits with a valid check
// digit, on their own or grouped 3-3-4 by single spaces or hyphens ("943 476 5919",
// "943-476-5919"), and not part of a longer run of digits. Its [begin, end) offsets; nullopt
// when there is none. For text bound for the operational log, which never holds one.
std::optional<std::pair<std::size_t, std::size_t>> find_nhs_number(std::string_view text, std::size_t from = 0);

// `text` with every NHS number find_nhs_number finds replaced by `replacement` (by default
// kNhsNumberRemoved, what the gateway's own log lines show in its place).
inline constexpr std::string_view kNhsNumberRemoved = "(nhs-number-removed)";
std::string without_nhs_numbers(std::string_view text, std::string_view replacement = kNhsNumberRemoved);

}  // namespace fhir
