// SPDX-License-Identifier: Apache-2.0
#include "fhir/search_params.h"

#include <algorithm>
#include <cctype>
#include <charconv>

#include "fhir/nhs_number.h"

namespace fhir {

std::string_view search_param_type_name(SearchParamType t) {
  switch (t) {
    case SearchParamType::number: return "number";
    case SearchParamType::date: return "date";
    case SearchParamType::string: return "string";
    case SearchParamType::token: return "token";
    case SearchParamType::reference: return "reference";
    case SearchParamType::quantity: return "quantity";
    case SearchParamType::uri: return "uri";
    case SearchParamType::special: return "special";
  }
  return "special";
}

void SearchParamRegistry::add(const std::string& resource_type, SearchParamDef def) {
  by_type_[resource_type].push_back(std::move(def));
}

const SearchParamDef* SearchParamRegistry::find(std::string_view type, std::string_view name) const {
  auto it = by_type_.find(type);
  if (it == by_type_.end()) return nullptr;
  for (const SearchParamDef& d : it->second)
    if (d.name == name) return &d;
  return nullptr;
}

const std::vector<SearchParamDef>& SearchParamRegistry::params_for(std::string_view type) const {
  static const std::vector<SearchParamDef> kNone;
  auto it = by_type_.find(type);
  return it == by_type_.end() ? kNone : it->second;
}

bool SearchParamRegistry::has_type(std::string_view type) const { return by_type_.count(type) != 0; }

std::vector<std::string> split_search_values(std::string_view value) {
  std::vector<std::string> out(1);
  for (std::size_t i = 0; i < value.size(); ++i) {
    char c = value[i];
    if (c == '\\' && i + 1 < value.size() &&
        (value[i + 1] == ',' || value[i + 1] == '|' || value[i + 1] == '$' || value[i + 1] == '\\')) {
      // Keep the escape for '|' so the token splitter can still tell it from a separator.
      if (value[i + 1] == '|') out.back().push_back('\\');
      out.back().push_back(value[++i]);
    } else if (c == ',') {
      out.emplace_back();
    } else {
      out.back().push_back(c);
    }
  }
  return out;
}

namespace {

Issue param_error(ErrorCode code, const std::string& name, std::string why) {
  return Issue::make(code, std::move(why), name);
}

// Splits "system|code" on the first unescaped '|', removing the remaining escapes.
std::optional<std::pair<std::string, std::string>> split_pipe(const std::string& v) {
  std::string left, right;
  bool seen = false;
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (v[i] == '\\' && i + 1 < v.size() && v[i + 1] == '|') {
      (seen ? right : left).push_back('|');
      ++i;
    } else if (v[i] == '|' && !seen) {
      seen = true;
    } else {
      (seen ? right : left).push_back(v[i]);
    }
  }
  if (!seen) return std::nullopt;
  return std::make_pair(std::move(left), std::move(right));
}

std::string unescape_pipes(const std::string& v) {
  std::string out;
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (v[i] == '\\' && i + 1 < v.size() && v[i + 1] == '|') ++i;
    out.push_back(v[i]);
  }
  return out;
}

Prefix take_prefix(std::string& v) {
  static constexpr std::pair<std::string_view, Prefix> kPrefixes[] = {
      {"eq", Prefix::eq}, {"ne", Prefix::ne}, {"gt", Prefix::gt}, {"lt", Prefix::lt}, {"ge", Prefix::ge},
      {"le", Prefix::le}, {"sa", Prefix::sa}, {"eb", Prefix::eb}, {"ap", Prefix::ap}};
  if (v.size() > 2) {
    for (const auto& [text, p] : kPrefixes) {
      if (v.compare(0, 2, text) == 0) {
        v.erase(0, 2);
        return p;
      }
    }
  }
  return Prefix::eq;
}

bool modifier_allowed(SearchParamType type, std::string_view m) {
  if (m.empty() || m == "missing") return true;
  switch (type) {
    case SearchParamType::string: return m == "exact" || m == "contains";
    case SearchParamType::token: return m == "not" || m == "text" || m == "of-type";
    case SearchParamType::reference:
      return m == "identifier" || (!m.empty() && m[0] >= 'A' && m[0] <= 'Z');
    case SearchParamType::uri: return m == "below" || m == "above";
    default: return false;
  }
}

Result<TokenValue> parse_token(const std::string& name, const std::string& v) {
  TokenValue t;
  if (auto parts = split_pipe(v)) {
    if (parts->first.empty()) {
      t.system_match = TokenValue::SystemMatch::none;
    } else {
      t.system_match = TokenValue::SystemMatch::exact;
      t.system = std::move(parts->first);
    }
    t.code = std::move(parts->second);
    if (t.system_match == TokenValue::SystemMatch::none && t.code.empty())
      return param_error(ErrorCode::invalid_search_parameter, name,
                         "Parameter '" + name + "' has neither a system nor a code (got '|')");
  } else {
    t.code = unescape_pipes(v);
  }
  // NHS numbers are validated wherever they appear as a token, so a mistyped number is a 400,
  // not a silent empty result (issue: "invalid NHS number in a search -> 400").
  if (t.system_match == TokenValue::SystemMatch::exact && t.system == kNhsNumberSystem && !t.code.empty()) {
    Status ok = validate_nhs_number(t.code);
    if (!ok) {
      Issue issue = ok.issue();
      issue.expression = name;
      return issue;
    }
  }
  return t;
}

Result<ReferenceValue> parse_reference(const std::string& name, const std::string& modifier,
                                       const std::string& v) {
  ReferenceValue r;
  if (v.rfind("http://", 0) == 0 || v.rfind("https://", 0) == 0 || v.rfind("urn:", 0) == 0) {
    r.url = v;
    return r;
  }
  std::size_t slash = v.find('/');
  if (slash == std::string::npos) {
    r.type = modifier;  // "subject:Patient=123"
    r.id = v;
  } else {
    r.type = v.substr(0, slash);
    r.id = v.substr(slash + 1);
    if (!modifier.empty() && modifier != r.type)
      return param_error(ErrorCode::invalid_search_parameter, name,
                         "Parameter '" + name + "' names type '" + modifier + "' but the value is a " +
                             r.type + " reference");
  }
  // R4 id: [A-Za-z0-9\-\.]{1,64}
  auto id_ok = !r.id.empty() && r.id.size() <= 64 && std::all_of(r.id.begin(), r.id.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
  });
  if (!id_ok || (r.type.empty() == false && !(r.type[0] >= 'A' && r.type[0] <= 'Z')))
    return param_error(ErrorCode::invalid_search_parameter, name,
                       "Parameter '" + name + "' is not a valid reference (expected Type/id or id)");
  return r;
}

Result<SearchValue> parse_value(const SearchParamDef& def, const std::string& name,
                                const std::string& modifier, std::string v) {
  if (modifier == "missing") {
    if (v != "true" && v != "false")
      return param_error(ErrorCode::invalid_search_parameter, name,
                         "':missing' takes true or false (got '" + v.substr(0, 20) + "')");
    return SearchValue{MissingValue{v == "true"}};
  }
  if (v.empty())
    return param_error(ErrorCode::invalid_search_parameter, name,
                       "Parameter '" + name + "' has an empty value");
  if (modifier == "identifier") {
    auto t = parse_token(name, v);
    if (!t) return std::move(t).issue();
    return SearchValue{std::move(*t)};
  }
  switch (def.type) {
    case SearchParamType::string:
    case SearchParamType::uri:
      return SearchValue{StringValue{unescape_pipes(v)}};
    case SearchParamType::token: {
      auto t = parse_token(name, v);
      if (!t) return std::move(t).issue();
      return SearchValue{std::move(*t)};
    }
    case SearchParamType::date: {
      DateValue d;
      d.prefix = take_prefix(v);
      auto range = parse_fhir_date(v);
      if (!range) {
        Issue issue = range.issue();
        issue.code = ErrorCode::invalid_search_parameter;
        issue.diagnostics = "Parameter '" + name + "': " + issue.diagnostics;
        issue.expression = name;
        return issue;
      }
      d.range = *range;
      d.text = std::move(v);
      return SearchValue{std::move(d)};
    }
    case SearchParamType::number:
    case SearchParamType::quantity: {
      NumberValue n;
      n.prefix = take_prefix(v);
      double ignored = 0;
      auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), ignored);
      if (ec != std::errc() || p != v.data() + v.size())
        return param_error(ErrorCode::invalid_search_parameter, name,
                           "Parameter '" + name + "' must be a number");
      n.text = std::move(v);
      return SearchValue{std::move(n)};
    }
    case SearchParamType::reference: {
      auto r = parse_reference(name, modifier, v);
      if (!r) return std::move(r).issue();
      return SearchValue{std::move(*r)};
    }
    case SearchParamType::special:
      return SearchValue{StringValue{std::move(v)}};
  }
  return param_error(ErrorCode::internal_error, name, "unhandled search parameter type");
}

Result<int> parse_non_negative(const std::string& name, const std::string& v, int max) {
  int n = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  // A whole number too large for an int is past any cap: the cap, as a large one within range.
  if (ec == std::errc::result_out_of_range && p == v.data() + v.size() && !v.empty() && v.front() != '-') return max;
  if (ec != std::errc() || p != v.data() + v.size() || n < 0)
    return param_error(ErrorCode::invalid_search_parameter, name,
                       "Parameter '" + name + "' must be a non-negative integer (got '" + v.substr(0, 20) + "')");
  return std::min(n, max);
}

bool is_element_name(std::string_view s) {
  if (s.empty() || s.size() > 64 || !(s[0] >= 'a' && s[0] <= 'z')) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  });
}

}  // namespace

std::optional<std::string> prefer_value(std::string_view prefer, std::string_view name) {
  // RFC 7240 section 2: preference = token [ BWS "=" BWS word ] *( OWS ";" [ OWS parameter ] ),
  // word = token / quoted-string, in a comma-separated list (RFC 9110 section 5.6.1).
  auto tchar = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
  };
  auto ows = [](char c) { return c == ' ' || c == '\t'; };
  auto lower = [](char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); };
  std::size_t i = 0;
  const std::size_t n = prefer.size();
  // Skips to just past the next comma that is not inside a quoted string.
  auto next_element = [&] {
    bool quoted = false;
    for (; i < n; ++i) {
      if (quoted && prefer[i] == '\\') ++i;
      else if (prefer[i] == '"') quoted = !quoted;
      else if (!quoted && prefer[i] == ',') break;
    }
    if (i < n) ++i;
  };
  while (i < n) {
    while (i < n && (ows(prefer[i]) || prefer[i] == ',')) ++i;
    const std::size_t start = i;
    while (i < n && tchar(prefer[i])) ++i;
    const std::string_view token = prefer.substr(start, i - start);
    bool valid = !token.empty();
    std::string value;
    while (i < n && ows(prefer[i])) ++i;
    if (valid && i < n && prefer[i] == '=') {
      ++i;
      while (i < n && ows(prefer[i])) ++i;
      if (i < n && prefer[i] == '"') {
        bool closed = false;
        for (++i; i < n; ++i) {
          if (prefer[i] == '\\' && i + 1 < n) value.push_back(prefer[++i]);
          else if (prefer[i] == '"') { closed = true; ++i; break; }
          else value.push_back(prefer[i]);
        }
        valid = closed;
      } else {
        const std::size_t v = i;
        while (i < n && tchar(prefer[i])) ++i;
        value = std::string(prefer.substr(v, i - v));
        valid = !value.empty();
      }
      while (i < n && ows(prefer[i])) ++i;
    }
    // Then parameters after ';' (ignored), or the end of the element.
    if (i < n && prefer[i] != ';' && prefer[i] != ',') valid = false;
    next_element();
    if (!valid || token.size() != name.size()) continue;
    bool same = true;
    for (std::size_t k = 0; k < name.size(); ++k) same = same && lower(token[k]) == lower(name[k]);
    // The first instance of a preference is the one considered (RFC 7240 section 2).
    if (same) return value;
  }
  return std::nullopt;
}

Handling handling_from_prefer(std::string_view prefer) {
  const auto value = prefer_value(prefer, "handling");
  if (!value || value->size() != 6) return Handling::lenient;
  std::string v = *value;
  for (char& c : v) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return v == "strict" ? Handling::strict : Handling::lenient;
}

Result<SearchRequest> parse_search(std::string_view resource_type, const QueryParams& query,
                                   const SearchParamRegistry& registry, Handling handling,
                                   const SearchLimits& limits) {
  SearchRequest req;
  req.resource_type = std::string(resource_type);
  req.count = limits.default_count;
  for (const auto& pair : query) {
    const std::string& full_name = pair.first;
    const std::string& value = pair.second;  // named, not a structured binding: clang 14 lambdas
    std::size_t colon = full_name.find(':');
    std::string name = full_name.substr(0, colon);
    std::string modifier = colon == std::string::npos ? std::string() : full_name.substr(colon + 1);

    if (name == "_format" || name == "_pretty") continue;  // content negotiation
    if (name == "_count") {
      auto n = parse_non_negative(name, value, limits.max_count);
      if (!n) return std::move(n).issue();
      req.count = *n;
      continue;
    }
    if (name == "_offset") {
      auto n = parse_non_negative(name, value, 1000000000);
      if (!n) return std::move(n).issue();
      req.offset = *n;
      continue;
    }
    if (name == "_summary") {
      static constexpr std::pair<std::string_view, SummaryMode> kModes[] = {
          {"true", SummaryMode::true_}, {"text", SummaryMode::text}, {"data", SummaryMode::data},
          {"count", SummaryMode::count}, {"false", SummaryMode::false_}};
      auto it = std::find_if(std::begin(kModes), std::end(kModes), [&](auto& m) { return m.first == value; });
      if (it == std::end(kModes))
        return param_error(ErrorCode::invalid_search_parameter, name,
                           "_summary must be one of true, text, data, count, false");
      req.summary = it->second;
      continue;
    }
    if (name == "_total") {
      if (value == "none") req.total = TotalMode::none;
      else if (value == "estimate") req.total = TotalMode::estimate;
      else if (value == "accurate") req.total = TotalMode::accurate;
      else
        return param_error(ErrorCode::invalid_search_parameter, name,
                           "_total must be one of none, estimate, accurate");
      continue;
    }
    if (name == "_elements") {
      for (std::string& e : split_search_values(value)) {
        if (!is_element_name(e))
          return param_error(ErrorCode::invalid_search_parameter, name,
                             "_elements lists an invalid element name '" + e.substr(0, 40) + "'");
        req.elements.push_back(std::move(e));
      }
      continue;
    }
    if (name == "_sort") {
      for (std::string& key : split_search_values(value)) {
        SortKey k;
        if (!key.empty() && key[0] == '-') {
          k.descending = true;
          key.erase(0, 1);
        }
        if (key != "_id" && key != "_lastUpdated" && !registry.find(resource_type, key))
          return param_error(ErrorCode::invalid_search_parameter, name,
                             "Cannot sort " + std::string(resource_type) + " by '" + key.substr(0, 40) + "'");
        k.name = std::move(key);
        req.sort.push_back(std::move(k));
      }
      continue;
    }
    if (name == "_include" || name == "_revinclude") {
      // Shape Type:param[:targetType]; execution is the query layer's job.
      std::size_t c = value.find(':');
      if (c == std::string::npos || c == 0 || c + 1 == value.size())
        return param_error(ErrorCode::invalid_search_parameter, name,
                           name + " must look like Type:parameter[:targetType]");
      (name == "_include" ? req.include : req.revinclude).push_back(value);
      continue;
    }

    const SearchParamDef* def = registry.find(resource_type, name);
    if (!def) {
      if (handling == Handling::strict)
        return param_error(ErrorCode::invalid_search_parameter, name,
                           "Unknown search parameter '" + name.substr(0, 64) + "' for " +
                               std::string(resource_type) + " (Prefer: handling=strict)");
      req.ignored.push_back(full_name);
      continue;
    }
    if (!modifier_allowed(def->type, modifier))
      // R4 search.html: servers SHALL reject unsupported modifiers, whatever the handling.
      return param_error(ErrorCode::invalid_search_parameter, full_name,
                         "Modifier ':" + modifier.substr(0, 32) + "' is not supported on " +
                             std::string(search_param_type_name(def->type)) + " parameter '" + name + "'");
    SearchParam param;
    param.def = def;
    param.name = name;
    param.modifier = modifier;
    param.raw_value = value;
    std::vector<std::string> values = split_search_values(value);
    if (values.size() > limits.max_values_per_param)
      return param_error(ErrorCode::invalid_search_parameter, name,
                         "Parameter '" + name + "' has more than " +
                             std::to_string(limits.max_values_per_param) + " comma-separated values");
    for (std::string& v : values) {
      auto parsed = parse_value(*def, name, modifier, std::move(v));
      if (!parsed) return std::move(parsed).issue();
      param.values.push_back(std::move(*parsed));
    }
    req.params.push_back(std::move(param));
  }
  return req;
}

std::string SearchRequest::canonical_query() const {
  std::string q;
  auto add = [&](std::string_view name, std::string_view value) {
    if (!q.empty()) q.push_back('&');
    q.append(percent_encode(name)).push_back('=');
    q.append(percent_encode(value));
  };
  for (const SearchParam& p : params) add(p.modifier.empty() ? p.name : p.name + ":" + p.modifier, p.raw_value);
  for (const std::string& i : include) add("_include", i);
  for (const std::string& i : revinclude) add("_revinclude", i);
  if (!sort.empty()) {
    std::string s;
    for (const SortKey& k : sort) {
      if (!s.empty()) s.push_back(',');
      if (k.descending) s.push_back('-');
      s.append(k.name);
    }
    add("_sort", s);
  }
  if (!elements.empty()) {
    std::string s;
    for (const std::string& e : elements) {
      if (!s.empty()) s.push_back(',');
      s.append(e);
    }
    add("_elements", s);
  }
  static constexpr std::string_view kSummary[] = {"", "true", "text", "data", "count", "false"};
  if (summary != SummaryMode::none) add("_summary", kSummary[static_cast<int>(summary)]);
  add("_count", std::to_string(count));
  return q;
}

}  // namespace fhir
