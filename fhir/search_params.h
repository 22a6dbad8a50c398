// SPDX-License-Identifier: Apache-2.0
// FHIR R4 search input: the registry of search parameters each resource type supports (it
// also feeds the CapabilityStatement) and the parser turning decoded query pairs into a typed
// SearchRequest. Storage layers execute a SearchRequest; they never see raw query text.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "fhir/date_range.h"
#include "fhir/query_string.h"
#include "fhir/result.h"

namespace fhir {

enum class SearchParamType { number, date, string, token, reference, quantity, uri, special };
std::string_view search_param_type_name(SearchParamType t);

struct SearchParamDef {
  std::string name;        // e.g. "birthdate"
  SearchParamType type;
  std::string definition;  // canonical SearchParameter URL
  std::string documentation;
};

// Which search parameters each resource type supports. Filled once at start-up, read-only
// afterwards (safe to share between threads).
class SearchParamRegistry {
 public:
  void add(const std::string& resource_type, SearchParamDef def);
  const SearchParamDef* find(std::string_view resource_type, std::string_view name) const;
  const std::vector<SearchParamDef>& params_for(std::string_view resource_type) const;
  bool has_type(std::string_view resource_type) const;

 private:
  std::map<std::string, std::vector<SearchParamDef>, std::less<>> by_type_;
};

// ---- Typed values -------------------------------------------------------------------------

struct StringValue {
  std::string text;
};

// Token forms: "code", "system|code", "|code" (no system), "system|" (any code in system).
struct TokenValue {
  enum class SystemMatch { any, none, exact };
  SystemMatch system_match = SystemMatch::any;
  std::string system;
  std::string code;  // empty with SystemMatch::exact means "any code in that system"
};

struct DateValue {
  Prefix prefix = Prefix::eq;
  DateRange range;
  std::string text;  // as given, without the prefix
};

struct NumberValue {
  Prefix prefix = Prefix::eq;
  std::string text;  // decimal text, precision kept
};

// "Patient/123", "123" (type from the modifier or the parameter's target), or an absolute URL.
struct ReferenceValue {
  std::string type;  // empty when not given
  std::string id;
  std::string url;   // set for absolute references
};

struct MissingValue {
  bool missing = true;
};

using SearchValue = std::variant<StringValue, TokenValue, DateValue, NumberValue, ReferenceValue, MissingValue>;

// One query parameter occurrence. Values are ORed; repeated parameters are ANDed.
struct SearchParam {
  const SearchParamDef* def = nullptr;
  std::string name;
  std::string modifier;  // "exact", "contains", "not", "identifier", "missing", a type name, ...
  std::vector<SearchValue> values;
  std::string raw_value;  // as decoded from the query, for the self link
};

enum class SummaryMode { none, true_, text, data, count, false_ };
enum class TotalMode { none, estimate, accurate };
enum class Handling { lenient, strict };

struct SortKey {
  std::string name;
  bool descending = false;
};

struct SearchLimits {
  int default_count = 50;
  int max_count = 1000;
  std::size_t max_values_per_param = 32;
};

struct SearchRequest {
  std::string resource_type;
  std::vector<SearchParam> params;
  int count = 50;
  std::int64_t offset = 0;
  SummaryMode summary = SummaryMode::none;
  std::vector<std::string> elements;
  TotalMode total = TotalMode::accurate;
  std::vector<SortKey> sort;
  std::vector<std::string> include;
  std::vector<std::string> revinclude;
  std::vector<std::string> ignored;  // unknown parameters skipped under lenient handling

  // The applied parameters re-encoded, in input order, without paging: the query for
  // Bundle.link self/next/previous. Ignored parameters are left out (R4 search.html).
  std::string canonical_query() const;
};

// Parses decoded query pairs for `resource_type`. Result parameters (_count, _summary,
// _elements, _sort, _total, _include, _revinclude, _offset) are understood here; _format and
// _pretty are accepted and left to content negotiation. Errors are invalid_search_parameter
// or invalid_value with the parameter name as expression. Unknown parameters are ignored
// (and listed in `ignored`) unless `handling` is strict.
Result<SearchRequest> parse_search(std::string_view resource_type, const QueryParams& query,
                                   const SearchParamRegistry& registry, Handling handling,
                                   const SearchLimits& limits = {});

// The value of preference `name` in a Prefer field value (RFC 7240 section 2): names compare
// case-insensitively, whitespace may surround '=', a quoted-string value is unquoted,
// parameters after ';' are ignored, and when the preference occurs more than once only the
// first counts. "" for a preference without value; nullopt when absent. Malformed elements are
// skipped.
std::optional<std::string> prefer_value(std::string_view prefer_header, std::string_view name);

// Reads `Prefer: handling=strict|lenient` (value case-insensitive; the first handling wins).
Handling handling_from_prefer(std::string_view prefer_header);

// Splits on commas not escaped with a backslash and unescapes \, \| \$ \\ (R4 search.html
// "Escaping Search Parameters"). Exposed for tests and composite parameters.
std::vector<std::string> split_search_values(std::string_view value);

}  // namespace fhir
