// SPDX-License-Identifier: Apache-2.0
#include "fhir/structure_check.h"

#include <algorithm>
#include <string>

#include "fhir/resource_types.h"

namespace fhir {

bool is_valid_id(std::string_view id) {
  return !id.empty() && id.size() <= 64 && std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
  });
}

namespace {

constexpr std::size_t kMaxIssues = 100;

std::string quoted(std::string_view s) {
  std::string out = "'";
  out.append(s.substr(0, 64));
  out.push_back('\'');
  return out;
}

class Checker {
 public:
  std::vector<Issue> issues;

  void report(std::string path, std::string what) {
    if (issues.size() >= kMaxIssues) return;
    issues.push_back(Issue::make(ErrorCode::invalid_resource, std::move(what), std::move(path)));
  }

  // Recursion depth is bounded by the parser's depth limit.
  void walk(const Json& v, const std::string& path, bool in_array) {
    switch (v.kind()) {
      case Json::Kind::null:
        if (!in_array) report(path, "null is not allowed here (FHIR JSON omits absent elements)");
        break;
      case Json::Kind::string:
        if (v.text().empty()) report(path, "empty strings are not allowed in FHIR JSON");
        break;
      case Json::Kind::array:
        if (v.items().empty()) report(path, "empty arrays are not allowed in FHIR JSON");
        for (std::size_t i = 0; i < v.items().size(); ++i) {
          const Json& item = v.items()[i];
          const std::string item_path = path + "[" + std::to_string(i) + "]";
          // contained[] and Bundle.entry[].resource hold whole resources
          if (item.is_object() && item.find("resourceType")) check_resource(item, item_path);
          else walk(item, item_path, true);
        }
        break;
      case Json::Kind::object:
        if (v.members().empty()) report(path, "empty objects are not allowed in FHIR JSON");
        for (const auto& [key, child] : v.members()) {
          if (child.is_object() && child.find("resourceType")) check_resource(child, path + "." + key);
          else walk(child, path + "." + key, false);
        }
        break;
      default:
        break;
    }
  }

  void check_resource(const Json& r, const std::string& where) {
    std::string_view type = r.string_at("resourceType");
    std::string path = where.empty() ? std::string(type.empty() ? "Resource" : type) : where;
    if (type.empty()) {
      report(path, "resourceType is missing or not a string");
    } else if (!is_r4_resource_type(type)) {
      report(path + ".resourceType", quoted(type) + " is not a FHIR R4 resource type");
    }
    if (const Json* id = r.find("id")) {
      if (!id->is_string() || !is_valid_id(id->text()))
        report(path + ".id", "id must be 1-64 characters of A-Z, a-z, 0-9, '-' and '.'");
    }
    for (const auto& [key, child] : r.members()) {
      if (key == "resourceType") continue;
      if (child.is_object() && child.find("resourceType")) check_resource(child, path + "." + key);
      else walk(child, path + "." + key, false);
    }
  }
};

}  // namespace

std::vector<Issue> check_structure(const Json& resource, std::string_view expected_type) {
  Checker c;
  if (!resource.is_object()) {
    c.report("", "a FHIR resource must be a JSON object");
    return c.issues;
  }
  c.check_resource(resource, "");
  std::string_view type = resource.string_at("resourceType");
  if (!expected_type.empty() && !type.empty() && type != expected_type)
    c.report(std::string(type) + ".resourceType", "resourceType " + quoted(type) + " does not match the type in the URL (" +
                                                      quoted(expected_type) + ")");
  return c.issues;
}

}  // namespace fhir
