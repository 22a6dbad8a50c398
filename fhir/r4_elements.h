// SPDX-License-Identifier: Apache-2.0
// The FHIR R4 element table that element_check walks: per type, its JSON properties with kind,
// cardinality and required codes. The data (r4_elements.inc) is generated from the official R4
// JSON schema by tools/fhir-elements/generate and committed; nothing reads the schema at run time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace fhir::r4 {

// FHIR primitive types (R4 datatypes.html#primitive), in the generator's PRIMITIVES order.
enum class Primitive : std::uint8_t {
  none, base64Binary, boolean, canonical, code, date, dateTime, decimal, id, instant, integer, markdown, oid,
  positiveInt, string, time, unsignedInt, uri, url, uuid, xhtml,
};

enum class ElementKind : std::uint8_t {
  primitive,  // a JSON string, number or boolean (see Primitive), with an optional _name sibling
  complex,    // a JSON object of the datatype or backbone element `type`
  resource,   // a whole resource (contained, Bundle.entry.resource, Parameters.parameter.resource)
};

// Choice groups per type are numbered 1..kMaxChoiceGroups - 1 (checked when the table compiles).
inline constexpr std::size_t kMaxChoiceGroups = 8;

struct ElementDef {
  std::string_view name;   // JSON property name, e.g. "valueQuantity"
  ElementKind kind;
  Primitive primitive;     // kind == primitive
  std::uint16_t type;      // kind == complex: index into types()
  std::uint16_t code_set;  // required binding: index into the code sets (0: none)
  bool array;              // max > 1: always a JSON array
  bool required;           // min >= 1 (the schema's "required" list)
  std::uint8_t choice;     // 0, or the choice group ([x]) it shares with its alternatives in this type
};

struct TypeDef {
  std::string_view name;    // "Observation", "Observation_ReferenceRange", "Quantity"
  std::uint16_t first;      // its elements, sorted by name: elements()[first, first + count)
  std::uint16_t count;
  bool resource;            // a resource type (has resourceType) rather than a datatype
};

struct CodeSet {
  std::uint16_t first;
  std::uint16_t count;
};

std::span<const TypeDef> types();
// The type named `name` (datatype, backbone element "Observation_Component" or resource), or
// nullptr when the table does not cover it.
const TypeDef* find_type(std::string_view name);
std::span<const ElementDef> elements(const TypeDef& type);
// The element `name` of `type` (binary search), or nullptr.
const ElementDef* find_element(const TypeDef& type, std::string_view name);
// The codes of a required binding; empty for code_set 0.
std::span<const std::string_view> codes(std::uint16_t code_set);
std::string_view primitive_name(Primitive p);

}  // namespace fhir::r4
