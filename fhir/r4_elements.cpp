// SPDX-License-Identifier: Apache-2.0
#include "fhir/r4_elements.h"

#include <algorithm>
#include <array>

namespace fhir::r4 {
namespace {

using K = ElementKind;
using P = Primitive;

#include "fhir/r4_elements.inc"

constexpr bool types_sorted() {
  for (std::size_t i = 1; i < std::size(kTypes); ++i)
    if (!(kTypes[i - 1].name < kTypes[i].name)) return false;
  return true;
}
constexpr bool elements_sorted() {
  for (const TypeDef& t : kTypes)
    for (std::size_t i = t.first + 1; i < std::size_t(t.first) + t.count; ++i)
      if (!(kElements[i - 1].name < kElements[i].name)) return false;
  return true;
}
static_assert(types_sorted() && elements_sorted(), "r4_elements.inc must be sorted (binary search)");
constexpr bool choices_fit() {
  for (const ElementDef& e : kElements)
    if (e.choice >= kMaxChoiceGroups) return false;
  return true;
}
static_assert(choices_fit(), "raise kMaxChoiceGroups: a type has more choice elements than element_check tracks");

constexpr std::array<std::string_view, 21> kPrimitiveNames = {
    "",        "base64Binary", "boolean", "canonical", "code",   "date",        "dateTime",
    "decimal", "id",           "instant", "integer",   "markdown", "oid",       "positiveInt",
    "string",  "time",         "unsignedInt", "uri",   "url",    "uuid",        "xhtml"};

}  // namespace

std::span<const TypeDef> types() { return kTypes; }

const TypeDef* find_type(std::string_view name) {
  auto it = std::lower_bound(std::begin(kTypes), std::end(kTypes), name,
                             [](const TypeDef& t, std::string_view n) { return t.name < n; });
  return it != std::end(kTypes) && it->name == name ? &*it : nullptr;
}

std::span<const ElementDef> elements(const TypeDef& type) {
  return std::span<const ElementDef>(kElements).subspan(type.first, type.count);
}

const ElementDef* find_element(const TypeDef& type, std::string_view name) {
  auto els = elements(type);
  auto it = std::lower_bound(els.begin(), els.end(), name,
                             [](const ElementDef& e, std::string_view n) { return e.name < n; });
  return it != els.end() && it->name == name ? &*it : nullptr;
}

std::span<const std::string_view> codes(std::uint16_t code_set) {
  if (code_set == 0 || code_set >= std::size(kCodeSets)) return {};
  return std::span<const std::string_view>(kCodes).subspan(kCodeSets[code_set].first, kCodeSets[code_set].count);
}

std::string_view primitive_name(Primitive p) { return kPrimitiveNames[static_cast<std::size_t>(p)]; }

}  // namespace fhir::r4
