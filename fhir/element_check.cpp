// SPDX-License-Identifier: Apache-2.0
#include "fhir/element_check.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>

#include "fhir/structure_check.h"

namespace fhir {

namespace {

using r4::ElementDef;
using r4::ElementKind;
using r4::Primitive;
using r4::TypeDef;

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Reads `n` digits at s[i] as a number in [lo, hi]; advances i.
bool number_at(std::string_view s, std::size_t& i, std::size_t n, int lo, int hi) {
  if (s.size() < i + n) return false;
  int v = 0;
  for (std::size_t k = 0; k < n; ++k) {
    if (!is_digit(s[i + k])) return false;
    v = v * 10 + (s[i + k] - '0');
  }
  i += n;
  return v >= lo && v <= hi;
}

bool char_at(std::string_view s, std::size_t& i, char c) {
  if (i >= s.size() || s[i] != c) return false;
  ++i;
  return true;
}

// hh:mm:ss(.f+)? with ss up to 60 (leap second), as the R4 time pattern.
bool time_at(std::string_view s, std::size_t& i) {
  if (!number_at(s, i, 2, 0, 23) || !char_at(s, i, ':') || !number_at(s, i, 2, 0, 59) || !char_at(s, i, ':') ||
      !number_at(s, i, 2, 0, 60))
    return false;
  if (i < s.size() && s[i] == '.') {
    std::size_t start = ++i;
    while (i < s.size() && is_digit(s[i])) ++i;
    if (i == start) return false;
  }
  return true;
}

// Z or +hh:mm / -hh:mm with hh up to 13, or 14:00.
bool zone_at(std::string_view s, std::size_t& i) {
  if (char_at(s, i, 'Z')) return true;
  if (!char_at(s, i, '+') && !char_at(s, i, '-')) return false;
  if (s.substr(i) == "14:00") return i += 5, true;
  return number_at(s, i, 2, 0, 13) && char_at(s, i, ':') && number_at(s, i, 2, 0, 59);
}

// YYYY, YYYY-MM or YYYY-MM-DD (year 0000 excluded); returns how many parts were read (0 = bad).
int date_at(std::string_view s, std::size_t& i) {
  if (s.size() < 4 || s.substr(0, 4) == "0000" || !number_at(s, i, 4, 0, 9999)) return 0;
  if (i == s.size() || s[i] != '-') return 1;
  if (!char_at(s, i, '-') || !number_at(s, i, 2, 1, 12)) return 0;
  if (i == s.size() || s[i] != '-') return 2;
  if (!char_at(s, i, '-') || !number_at(s, i, 2, 1, 31)) return 0;
  return 3;
}

bool is_date(std::string_view s) {
  std::size_t i = 0;
  return date_at(s, i) > 0 && i == s.size();
}

bool is_date_time(std::string_view s, bool instant) {
  std::size_t i = 0;
  int parts = date_at(s, i);
  if (parts == 0) return false;
  if (i == s.size()) return !instant;
  return parts == 3 && char_at(s, i, 'T') && time_at(s, i) && zone_at(s, i) && i == s.size();
}

bool is_oid(std::string_view s) {
  constexpr std::string_view prefix = "urn:oid:";
  if (!s.starts_with(prefix)) return false;
  std::size_t i = prefix.size();
  if (i >= s.size() || s[i] < '0' || s[i] > '2') return false;
  ++i;
  int arcs = 0;
  while (i < s.size()) {
    if (!char_at(s, i, '.') || i >= s.size() || !is_digit(s[i])) return false;
    if (s[i] == '0' && i + 1 < s.size() && is_digit(s[i + 1])) return false;
    while (i < s.size() && is_digit(s[i])) ++i;
    ++arcs;
  }
  return arcs > 0;
}

bool is_uuid(std::string_view s) {
  constexpr std::string_view prefix = "urn:uuid:";
  if (!s.starts_with(prefix) || s.size() != prefix.size() + 36) return false;
  for (std::size_t k = 0; k < 36; ++k) {
    char c = s[prefix.size() + k];
    bool dash = k == 8 || k == 13 || k == 18 || k == 23;
    if (dash ? c != '-' : !(is_digit(c) || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool is_code(std::string_view s) {
  if (s.empty() || is_space(s.front()) || is_space(s.back())) return false;
  for (std::size_t k = 1; k < s.size(); ++k)
    if (is_space(s[k]) && is_space(s[k - 1])) return false;
  return true;
}

constexpr std::size_t kMaxIssues = 100;

// The JSON representation of each primitive (R4 json.html "Primitive types").
enum class JsonForm { string, boolean, decimal, integer };
JsonForm json_form(Primitive p) {
  switch (p) {
    case Primitive::boolean: return JsonForm::boolean;
    case Primitive::decimal: return JsonForm::decimal;
    case Primitive::integer:
    case Primitive::positiveInt:
    case Primitive::unsignedInt: return JsonForm::integer;
    default: return JsonForm::string;
  }
}

std::string_view kind_name(const Json& v) {
  switch (v.kind()) {
    case Json::Kind::null: return "null";
    case Json::Kind::boolean: return "a boolean";
    case Json::Kind::number: return "a number";
    case Json::Kind::string: return "a string";
    case Json::Kind::array: return "an array";
    case Json::Kind::object: return "an object";
  }
  return "a value";
}

// A table type for people: backbone element "Observation_ReferenceRange" -> "Observation.ReferenceRange".
std::string dotted(std::string_view type_name) {
  std::string name(type_name);
  std::replace(name.begin(), name.end(), '_', '.');
  return name;
}

std::string type_label(const ElementDef& el) {
  if (el.kind == ElementKind::primitive) return std::string(r4::primitive_name(el.primitive));
  if (el.kind == ElementKind::resource) return "resource";
  return dotted(r4::types()[el.type].name);
}

class ElementChecker {
 public:
  std::vector<Issue> issues;

  void report(ErrorCode code, std::string path, std::string what) {
    if (issues.size() >= kMaxIssues) return;
    std::string diagnostics = path + ": " + what;
    issues.push_back(Issue::make(code, std::move(diagnostics), std::move(path)));
  }

  // A resource wherever it occurs; types outside the table get structure_check only.
  void check_resource(const Json& r, const std::string& path) {
    const TypeDef* type = r4::find_type(r.string_at("resourceType"));
    if (type == nullptr || !type->resource) return;
    check_object(r, *type, path);
  }

 private:
  void check_object(const Json& obj, const TypeDef& type, const std::string& path) {
    std::array<std::string_view, r4::kMaxChoiceGroups> choice_seen{};  // first member seen per choice group
    for (const auto& [key, value] : obj.members()) {
      if (type.resource && (key == "resourceType" || key == "id")) continue;  // structure_check's
      if (!key.empty() && key.front() == '_') {
        check_primitive_extension(obj, type, key, value, path);
        continue;
      }
      const ElementDef* el = r4::find_element(type, key);
      if (el == nullptr) {
        report(ErrorCode::invalid_resource, path + "." + key,
               "unknown element: " + dotted(type.name) +
                   " has no element of this name in FHIR R4 (check the spelling and case; extra data goes in an "
                   "extension)");
        continue;
      }
      if (el->choice != 0) {
        std::string_view& first = choice_seen[el->choice];
        if (first.empty()) first = key;
        else
          report(ErrorCode::invalid_resource, path + "." + key,
                 "only one of the alternatives of a choice element [x] may be present, and " + std::string(first) +
                     " is present too");
      }
      check_member(obj, *el, value, path + "." + key);
    }
    for (const ElementDef& el : r4::elements(type))
      if (el.required && obj.find(el.name) == nullptr)
        report(ErrorCode::missing_value, path + "." + std::string(el.name),
               "required element is missing (minimum cardinality 1)");
  }

  void check_member(const Json& owner, const ElementDef& el, const Json& value, const std::string& path) {
    if (value.is_null()) return;  // structure_check reports a null outside an array
    if (!el.array) {
      if (value.is_array())
        report(ErrorCode::invalid_resource, path,
               "must be a single " + type_label(el) + ", not an array (its cardinality is 0..1 or 1..1)");
      else check_single(el, value, path);
      return;
    }
    if (!value.is_array()) {
      report(ErrorCode::invalid_resource, path,
             "must be an array of " + type_label(el) + " (its cardinality is 0..*), even with a single item");
      return;
    }
    std::string ext_name(1, '_');
    ext_name.append(el.name);
    const Json* ext = el.kind == ElementKind::primitive ? owner.find(ext_name) : nullptr;
    for (std::size_t i = 0; i < value.items().size(); ++i) {
      const Json& item = value.items()[i];
      const std::string item_path = path + "[" + std::to_string(i) + "]";
      if (!item.is_null()) {
        check_single(el, item, item_path);
        continue;
      }
      // json.html: null only holds the place of a primitive whose extension is in _name[i].
      bool has_extension = ext != nullptr && ext->is_array() && i < ext->items().size() && ext->items()[i].is_object();
      if (!has_extension)
        report(ErrorCode::invalid_resource, item_path,
               el.kind == ElementKind::primitive
                   ? "null in an array is only allowed where " + ext_name + " holds an extension at the same index"
                   : "null is not allowed in an array of " + type_label(el));
    }
  }

  void check_single(const ElementDef& el, const Json& value, const std::string& path) {
    switch (el.kind) {
      case ElementKind::primitive:
        check_primitive(el, value, path);
        return;
      case ElementKind::complex:
        if (!value.is_object())
          report(ErrorCode::invalid_resource, path,
                 "must be a JSON object (" + type_label(el) + "), not " + std::string(kind_name(value)));
        else check_object(value, r4::types()[el.type], path);
        return;
      case ElementKind::resource:
        if (!value.is_object()) report(ErrorCode::invalid_resource, path, "must be a resource (a JSON object with resourceType)");
        else check_resource(value, path);
        return;
    }
  }

  void check_primitive(const ElementDef& el, const Json& value, const std::string& path) {
    const std::string type(r4::primitive_name(el.primitive));
    switch (json_form(el.primitive)) {
      case JsonForm::boolean:
        if (!value.is_bool()) report(ErrorCode::invalid_resource, path, "must be true or false (a JSON boolean), not " + std::string(kind_name(value)));
        return;
      case JsonForm::decimal:
        if (!value.is_number())
          report(ErrorCode::invalid_resource, path, "a decimal must be a JSON number, not " + std::string(kind_name(value)));
        return;
      case JsonForm::integer: {
        if (!value.is_number()) {
          report(ErrorCode::invalid_resource, path, "an " + type + " must be a JSON number, not " + std::string(kind_name(value)));
          return;
        }
        // R4 datatypes.html: integer is a signed 32-bit value, with no fraction or exponent.
        auto n = value.as_int64();
        const std::int64_t lo = el.primitive == Primitive::positiveInt   ? 1
                                : el.primitive == Primitive::unsignedInt ? 0
                                                                         : INT32_MIN;
        if (!n || *n < lo || *n > INT32_MAX)
          report(ErrorCode::invalid_value, path,
                 "must be a whole number from " + std::to_string(lo) + " to " + std::to_string(INT32_MAX) + " (" + type + ")");
        return;
      }
      case JsonForm::string:
        break;
    }
    if (!value.is_string()) {
      report(ErrorCode::invalid_resource, path,
             "a " + type + " must be a JSON string, not " + std::string(kind_name(value)));
      return;
    }
    const std::string& text = value.text();
    if (text.empty()) return;  // structure_check's
    if (!matches_r4_format(el.primitive, text)) {
      report(ErrorCode::invalid_value, path, "is not a valid " + type + format_hint(el.primitive));
      return;
    }
    auto allowed = r4::codes(el.code_set);
    if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), text) == allowed.end()) {
      std::string list;
      for (std::size_t i = 0; i < allowed.size() && i < 12; ++i) list.append(i ? ", " : "").append(allowed[i]);
      if (allowed.size() > 12) list.append(", ...");
      report(ErrorCode::invalid_value, path, "code is not in the required value set (allowed: " + list + ")");
    }
  }

  static std::string format_hint(Primitive p) {
    switch (p) {
      case Primitive::date: return " (YYYY, YYYY-MM or YYYY-MM-DD)";
      case Primitive::dateTime: return " (YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss with a time zone)";
      case Primitive::instant: return " (YYYY-MM-DDThh:mm:ss[.sss] with a time zone, Z or +hh:mm)";
      case Primitive::time: return " (hh:mm:ss)";
      case Primitive::id: return " (1 to 64 of A-Z a-z 0-9 - .)";
      case Primitive::code: return " (no leading, trailing or repeated whitespace)";
      case Primitive::oid: return " (urn:oid:...)";
      case Primitive::uuid: return " (urn:uuid: and lower-case hex)";
      default: return " (no whitespace)";
    }
  }

  // json.html "Representing primitive elements": _name carries the id and extensions of the
  // primitive name; an object, or for a repeating primitive an array of objects and nulls.
  void check_primitive_extension(const Json& obj, const TypeDef& type, const std::string& key, const Json& value,
                                 const std::string& path) {
    const std::string p = path + "." + key;
    const ElementDef* el = r4::find_element(type, std::string_view(key).substr(1));
    if (el == nullptr || el->kind != ElementKind::primitive) {
      report(ErrorCode::invalid_resource, p,
             "unknown element: " + key.substr(1) + " is not a primitive element here, so " + key + " cannot carry its extensions");
      return;
    }
    const TypeDef* element_type = r4::find_type("Element");
    if (value.is_null()) return;
    if (!el->array) {
      if (!value.is_object()) report(ErrorCode::invalid_resource, p, "must be a JSON object (id and extension), not " + std::string(kind_name(value)));
      else if (element_type) check_object(value, *element_type, p);
      return;
    }
    if (!value.is_array()) {
      report(ErrorCode::invalid_resource, p, "must be an array (of objects and nulls), as " + key.substr(1) + " repeats");
      return;
    }
    if (const Json* values = obj.find(key.substr(1)); values && values->is_array() && values->size() != value.size())
      report(ErrorCode::invalid_resource, p,
             "must have as many items as " + key.substr(1) + " (" + std::to_string(values->size()) + "), nulls where there is no extension");
    for (std::size_t i = 0; i < value.items().size(); ++i) {
      const Json& item = value.items()[i];
      const std::string item_path = p + "[" + std::to_string(i) + "]";
      if (item.is_null()) continue;
      if (!item.is_object()) report(ErrorCode::invalid_resource, item_path, "must be a JSON object (id and extension) or null");
      else if (element_type) check_object(item, *element_type, item_path);
    }
  }
};

}  // namespace

bool matches_r4_format(r4::Primitive type, std::string_view s) {
  switch (type) {
    case Primitive::date: return is_date(s);
    case Primitive::dateTime: return is_date_time(s, false);
    case Primitive::instant: return is_date_time(s, true);
    case Primitive::time: {
      std::size_t i = 0;
      return time_at(s, i) && i == s.size();
    }
    case Primitive::id: return is_valid_id(s);
    case Primitive::code: return is_code(s);
    case Primitive::uri:
    case Primitive::url:
    case Primitive::canonical: return std::none_of(s.begin(), s.end(), is_space);
    case Primitive::oid: return is_oid(s);
    case Primitive::uuid: return is_uuid(s);
    default: return true;
  }
}

bool elements_known(std::string_view type) {
  const r4::TypeDef* t = r4::find_type(type);
  return t != nullptr && t->resource;
}

std::vector<Issue> check_elements(const Json& resource) {
  ElementChecker c;
  if (!resource.is_object()) return c.issues;  // check_structure reports it
  std::string_view type = resource.string_at("resourceType");
  c.check_resource(resource, std::string(type));
  return std::move(c.issues);
}

std::vector<Issue> check_structure_and_elements(const Json& resource, std::string_view expected_type) {
  std::vector<Issue> issues = check_structure(resource, expected_type);
  std::vector<Issue> more = check_elements(resource);
  for (Issue& i : more) {
    if (issues.size() >= kMaxIssues) break;
    issues.push_back(std::move(i));
  }
  return issues;
}

}  // namespace fhir
