// SPDX-License-Identifier: Apache-2.0
#include "fhir/nhs_number.h"

namespace fhir {

std::optional<char> nhs_check_digit(std::string_view first_nine) {
  // Weights 10..2 on digits 1-9; check = 11 - (sum mod 11); 11 -> 0; 10 -> invalid.
  int sum = 0;
  for (int i = 0; i < 9; ++i) sum += (first_nine[static_cast<std::size_t>(i)] - '0') * (10 - i);
  int check = 11 - (sum % 11);
  if (check == 11) check = 0;
  if (check == 10) return std::nullopt;
  return static_cast<char>('0' + check);
}

Status validate_nhs_number(std::string_view value) {
  if (value.size() != 10)
    return Issue::make(ErrorCode::invalid_nhs_number,
                       "NHS number must be exactly 10 digits (got " + std::to_string(value.size()) +
                           " characters)");
  for (char c : value)
    if (c < '0' || c > '9')
      return Issue::make(ErrorCode::invalid_nhs_number, "NHS number must contain digits only");
  std::optional<char> check = nhs_check_digit(value.substr(0, 9));
  if (!check)
    return Issue::make(ErrorCode::invalid_nhs_number,
                       "NHS number is invalid: its Modulus 11 check digit would be 10");
  if (*check != value[9])
    return Issue::make(ErrorCode::invalid_nhs_number,
                       "NHS number check digit does not match (Modulus 11)");
  return Ok{};
}

std::string format_nhs_number(std::string_view value) {
  std::string out;
  out.reserve(12);
  out.append(value.substr(0, 3)).push_back(' ');
  out.append(value.substr(3, 3)).push_back(' ');
  out.append(value.substr(6));
  return out;
}

std::string trusted_nhs_number(const Json& patient) {
  if (const Json* ids = patient.find("identifier"); ids != nullptr && ids->is_array())
    for (const Json& id : ids->items())
      if (id.is_object() && id.string_at("system") == kNhsNumberSystem && is_valid_nhs_number(id.string_at("value")))
        return std::string(id.string_at("value"));
  return {};
}

}  // namespace fhir
