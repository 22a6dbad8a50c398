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

namespace {

bool digit_at(std::string_view t, std::size_t i) { return i < t.size() && t[i] >= '0' && t[i] <= '9'; }

// The NHS number starting at `i` (the first digit of a run), written plain or grouped: its end.
std::optional<std::size_t> nhs_number_at(std::string_view t, std::size_t i) {
  std::size_t run = i;
  while (digit_at(t, run)) ++run;
  if (run - i == 10) return is_valid_nhs_number(t.substr(i, 10)) ? std::optional<std::size_t>(run) : std::nullopt;
  // 3-3-4 with the same single separator twice, and no digit after the last group.
  if (run - i != 3 || run + 9 > t.size()) return std::nullopt;
  const char sep = t[run];
  if ((sep != ' ' && sep != '-') || t[run + 4] != sep) return std::nullopt;
  for (std::size_t k : {1, 2, 3, 5, 6, 7, 8})
    if (!digit_at(t, run + k)) return std::nullopt;
  if (digit_at(t, run + 9)) return std::nullopt;
  std::string digits(t.substr(i, 3));
  digits.append(t.substr(run + 1, 3)).append(t.substr(run + 5, 4));
  return is_valid_nhs_number(digits) ? std::optional<std::size_t>(run + 9) : std::nullopt;
}

}  // namespace

std::optional<std::pair<std::size_t, std::size_t>> find_nhs_number(std::string_view text, std::size_t from) {
  for (std::size_t i = from; i < text.size(); ++i) {
    if (!digit_at(text, i) || (i > 0 && digit_at(text, i - 1))) continue;  // only where a run starts
    if (auto end = nhs_number_at(text, i)) return std::pair{i, *end};
  }
  return std::nullopt;
}

std::string without_nhs_numbers(std::string_view text, std::string_view replacement) {
  std::string out;
  std::size_t at = 0;
  while (auto found = find_nhs_number(text, at)) {
    out.append(text.substr(at, found->first - at)).append(replacement);
    at = found->second;
  }
  out.append(text.substr(at));
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
