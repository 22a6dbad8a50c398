// SPDX-License-Identifier: Apache-2.0
// Built-in lookup tables for synthpop: names, cities with outward codes, streets, age bands.
// All invented or generic; no real person, practice or address is described.
#pragma once

#include <span>
#include <string_view>

namespace synthpop::tables {

struct City {
  std::string_view name;
  std::span<const std::string_view> outward_codes;
  unsigned weight;              // relative share of the population
  std::string_view council;     // synthetic local-authority name
};

struct AgeBand {
  unsigned from_years;  // inclusive
  unsigned to_years;    // exclusive
  unsigned weight;      // relative share (England, roughly mid-2020s shape)
};

std::span<const std::string_view> family_names();
std::span<const std::string_view> male_given_names();
std::span<const std::string_view> female_given_names();
std::span<const std::string_view> street_names();
std::span<const City> cities();
std::span<const AgeBand> age_bands();

// Inward-code letters: A-Z without C I K M O V (Royal Mail rule).
inline constexpr std::string_view kInwardLetters = "ABDEFGHJLNPQRSTUWXYZ";

}  // namespace synthpop::tables
