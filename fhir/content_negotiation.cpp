// SPDX-License-Identifier: Apache-2.0
#include "fhir/content_negotiation.h"

#include <cctype>
#include <charconv>
#include <string>

namespace fhir {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool is_json_type(const std::string& t) {
  return t == "application/fhir+json" || t == "application/json" || t == "application/json+fhir";
}

// Media range matches JSON if it names JSON or is a wildcard that covers it.
bool range_covers_json(const std::string& t) {
  return is_json_type(t) || t == "*/*" || t == "application/*";
}

// Whether the media type parameters after the first ';' of `item` allow FHIR R4: no
// fhirVersion, or fhirVersion 4.0 (R4 http.html#version-parameter; 4.0.1 read the same). A
// client asking for another FHIR version SHOULD get 406, not R4 it may misread.
bool r4_allowed(std::string_view item) {
  std::size_t semi = item.find(';');
  while (semi != std::string_view::npos) {
    item.remove_prefix(semi + 1);
    semi = item.find(';');
    std::string_view param = item.substr(0, semi);
    const std::size_t eq = param.find('=');
    if (eq == std::string_view::npos || lower(trim(param.substr(0, eq))) != "fhirversion") continue;
    std::string_view v = trim(param.substr(eq + 1));
    if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
    if (v != "4.0" && v != "4.0.1") return false;
  }
  return true;
}

Issue not_acceptable(std::string_view what) {
  return Issue::make(ErrorCode::not_acceptable,
                     "This server produces FHIR JSON only; " + std::string(what) +
                         ". Ask for application/fhir+json (or _format=json).");
}

}  // namespace

bool is_json_media_type(std::string_view content_type) {
  std::string_view type = trim(content_type.substr(0, content_type.find(';')));
  return is_json_type(lower(type));
}

Result<ResponseFormat> negotiate_format(std::string_view accept,
                                        std::optional<std::string_view> format_param,
                                        std::optional<std::string_view> pretty_param) {
  ResponseFormat out;
  if (pretty_param) {
    if (*pretty_param == "true") out.pretty = true;
    else if (*pretty_param != "false")
      return Issue::make(ErrorCode::invalid_search_parameter, "_pretty must be true or false", "_pretty");
  }
  if (format_param) {
    std::string f = lower(trim(format_param->substr(0, format_param->find(';'))));
    // An unencoded '+' arrives as a space after form decoding ("application/fhir json").
    for (char& c : f)
      if (c == ' ') c = '+';
    if ((f == "json" || is_json_type(f)) && r4_allowed(*format_param)) return out;
    return not_acceptable("_format=" + std::string(format_param->substr(0, 40)) + " was requested");
  }
  accept = trim(accept);
  if (accept.empty()) return out;
  bool any_listed = false;
  while (!accept.empty()) {
    std::size_t comma = accept.find(',');
    std::string_view item = accept.substr(0, comma);
    accept = comma == std::string_view::npos ? std::string_view() : accept.substr(comma + 1);
    std::string_view type = trim(item.substr(0, item.find(';')));
    if (type.empty()) continue;
    any_listed = true;
    double q = 1.0;
    std::size_t qpos = item.find("q=");
    if (qpos != std::string_view::npos) {
      std::string_view qv = trim(item.substr(qpos + 2));
      std::from_chars(qv.data(), qv.data() + qv.size(), q);
    }
    if (q > 0 && range_covers_json(lower(type)) && r4_allowed(item)) return out;
  }
  if (!any_listed) return out;
  return not_acceptable("the Accept header does not allow it");
}

}  // namespace fhir
