// SPDX-License-Identifier: Apache-2.0
// Json: the in-memory FHIR JSON tree. Parsed with RapidJSON's SAX reader (iterative, UTF-8
// validated) into our own small DOM so that decimals keep their exact text (FHIR R4 json.html:
// "1.50" must stay "1.50"), duplicate keys are rejected and nesting depth is capped.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fhir/result.h"

namespace fhir {

class Json {
 public:
  enum class Kind : std::uint8_t { null, boolean, number, string, array, object };
  using Member = std::pair<std::string, Json>;

  Json() = default;  // null

  static Json null() { return Json(); }
  static Json boolean(bool b);
  static Json integer(std::int64_t n);
  // Number from its JSON text, kept verbatim. Returns nullopt when `text` is not a JSON
  // number (RFC 8259 section 6), so untrusted decimals (e.g. HL7 OBX-5) can never break output.
  static std::optional<Json> decimal(std::string_view text);
  static Json string(std::string s);
  static Json array();
  static Json object();

  Kind kind() const { return kind_; }
  bool is_null() const { return kind_ == Kind::null; }
  bool is_bool() const { return kind_ == Kind::boolean; }
  bool is_number() const { return kind_ == Kind::number; }
  bool is_string() const { return kind_ == Kind::string; }
  bool is_array() const { return kind_ == Kind::array; }
  bool is_object() const { return kind_ == Kind::object; }

  bool as_bool() const { return bool_; }
  // String value, or the number's original text.
  const std::string& text() const { return text_; }
  // Integer value when this is a number without fraction or exponent that fits int64.
  std::optional<std::int64_t> as_int64() const;

  // Arrays.
  const std::vector<Json>& items() const { return items_; }
  std::vector<Json>& items() { return items_; }
  void push_back(Json v) { items_.push_back(std::move(v)); }

  // Objects keep insertion order (FHIR convention: resourceType first).
  const std::vector<Member>& members() const { return members_; }
  const Json* find(std::string_view key) const;
  Json* find(std::string_view key);
  // The string value of member `key`, or empty when absent or not a string.
  std::string_view string_at(std::string_view key) const;
  // Replaces an existing member or appends a new one.
  void set(std::string key, Json v);
  bool erase(std::string_view key);

  std::size_t size() const { return kind_ == Kind::array ? items_.size() : members_.size(); }

  friend bool operator==(const Json& a, const Json& b);

 private:
  friend class JsonBuilder;
  Kind kind_ = Kind::null;
  bool bool_ = false;
  std::string text_;
  std::vector<Json> items_;
  std::vector<Member> members_;
};

struct JsonLimits {
  std::size_t max_bytes = 16 * 1024 * 1024;
  std::size_t max_depth = 100;  // FHIR resources nest far less; Questionnaire items rarely pass 20
  std::size_t max_members = 100000;  // per object or array
};

// Parses one JSON document. Failures (ErrorCode::invalid_json) say what and where (byte
// offset), e.g. "JSON nesting deeper than 100 levels at offset 412". Thread-safe.
Result<Json> parse_json(std::string_view text, const JsonLimits& limits = {});

// Serialises `value`. Compact by default; `pretty` indents two spaces (for _pretty=true).
std::string to_json(const Json& value, bool pretty = false);
void append_json(const Json& value, std::string& out, bool pretty = false);
// Appends `s` as a JSON string (quotes included) with exactly the escapes of to_json (those
// of RapidJSON's Writer): for encoders that write JSON text without a Json tree.
void append_json_string(std::string& out, std::string_view s);

}  // namespace fhir
