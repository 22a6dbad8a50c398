// SPDX-License-Identifier: Apache-2.0
// check_batch_resources and check_batch_identity (adapter.h): what every adapter's batch
// must be before the gateway applies any part of it.
#include <algorithm>
#include <string>
#include <vector>

#include "adapters/adapter.h"
#include "fhir/element_check.h"
#include "fhir/nhs_number.h"
#include "fhir/resource_types.h"
#include "fhir/structure_check.h"

namespace gw::adapters {

namespace {

// The first of `issues` (fhir::check_structure_and_elements of a `type` at `where`, named
// `label` in the text: "Observation/o1"), by its FHIR path, and how many more there are.
fhir::Issue first_r4_problem(std::vector<fhir::Issue> issues, const std::string& where, const std::string& type,
                             const std::string& label) {
  fhir::Issue first = std::move(issues.front());
  std::string path = first.expression;  // "Observation.valueQuantity.value"
  std::string tail = path.starts_with(type) ? path.substr(type.size()) : std::string();
  first.diagnostics = where + " (" + label + ") is not valid FHIR R4: " +
                      (first.diagnostics.starts_with(path) ? first.diagnostics : path + ": " + first.diagnostics);
  if (issues.size() > 1)
    first.diagnostics += " (and " + std::to_string(issues.size() - 1) + " more problem" + (issues.size() > 2 ? "s" : "") +
                         "; POST the resource to [base]/" + type + "/$validate for the full list)";
  first.expression = where + tail;
  return first;
}

}  // namespace

fhir::Status check_resource(const fhir::Json& r, const std::string& where) {
  using fhir::ErrorCode;
  using fhir::Issue;
  if (!r.is_object()) return Issue::make(ErrorCode::invalid_resource, where + " is not a JSON object", where);
  const std::string type(r.string_at("resourceType"));
  if (!fhir::is_r4_resource_type(type))
    return Issue::make(ErrorCode::invalid_resource,
                       where + ".resourceType '" + type.substr(0, 64) + "' is not a FHIR R4 resource type",
                       where + ".resourceType");
  const fhir::Json* id = r.find("id");
  if (id == nullptr || !id->is_string() || id->text().empty())
    return Issue::make(ErrorCode::missing_value,
                       where + " (" + type + ") has no id: each resource needs the source's own stable id, so that "
                                             "a later message updates it instead of adding a copy",
                       where + ".id");
  if (!fhir::is_valid_id(id->text()))
    return Issue::make(ErrorCode::invalid_value, where + ".id is not a FHIR id (1 to 64 of A-Z a-z 0-9 - .)",
                       where + ".id");
  // The resource as FHIR R4 JSON (json.html rules and the R4 elements: names, JSON types,
  // cardinality, required elements and codes), so that nothing is stored that a FHIR client
  // reading it back would choke on. The first problem is returned, named by its FHIR path.
  std::vector<Issue> issues = fhir::check_structure_and_elements(r);
  if (issues.empty()) return fhir::Ok{};
  return first_r4_problem(std::move(issues), where, type, type + "/" + id->text());
}

fhir::Status check_batch_resources(const std::vector<fhir::Json>& resources) {
  using fhir::ErrorCode;
  using fhir::Issue;
  if (resources.size() > kMaxBatchResources)
    return Issue::make(ErrorCode::invalid_value,
                       "the batch carries " + std::to_string(resources.size()) + " resources, over the limit of " +
                           std::to_string(kMaxBatchResources),
                       "batch.resources");
  for (std::size_t i = 0; i < resources.size(); ++i) {
    const std::string where = "batch.resources[" + std::to_string(i) + "]";
    if (auto checked = check_resource(resources[i], where); !checked) return checked;
    const std::string type(resources[i].string_at("resourceType"));
    // The patient travels as the batch's identity, resolved in the record locator; a second
    // copy among the resources would be a Patient the locator never sees.
    if (type == "Patient")
      return Issue::make(ErrorCode::invalid_resource,
                         where + " is a Patient: the patient goes in the batch's identity, not among its resources",
                         where);
    if (std::find(kStoredResourceTypes.begin(), kStoredResourceTypes.end(), type) == kStoredResourceTypes.end()) {
      std::string stored;
      for (std::string_view t : kStoredResourceTypes) stored.append(stored.empty() ? "" : ", ").append(t);
      return Issue::make(ErrorCode::invalid_resource,
                         where + " is a " + type + ", which this gateway does not store or serve; a batch may carry " +
                             stored,
                         where + ".resourceType");
    }
  }
  return fhir::Ok{};
}

fhir::Status check_batch_identity(const fhir::Json& identity) {
  using fhir::ErrorCode;
  using fhir::Issue;
  if (!identity.is_object() || identity.string_at("resourceType") != "Patient")
    return Issue::make(ErrorCode::invalid_resource, "batch.identity must be a Patient resource", "batch.identity");
  // Valid FHIR R4 JSON, as the resources are: a demographic of the wrong shape (a name that is
  // not an array, a birthDate that is no date) is refused now, not when the batch is applied.
  if (std::vector<Issue> issues = fhir::check_structure_and_elements(identity); !issues.empty())
    return first_r4_problem(std::move(issues), "batch.identity", "Patient", "Patient");
  const fhir::Json* ids = identity.find("identifier");
  if (ids != nullptr && !ids->is_array())
    return Issue::make(ErrorCode::invalid_resource, "batch.identity.identifier must be an array",
                       "batch.identity.identifier");
  if (ids != nullptr)
    for (const fhir::Json& id : ids->items())
      if (id.is_object() && !id.string_at("system").empty() && !id.string_at("value").empty()) return fhir::Ok{};
  return Issue::make(ErrorCode::missing_value,
                     "batch.identity has no identifier the gateway can match the patient on: give the NHS number "
                     "(system " + std::string(fhir::kNhsNumberSystem) + ") or your local identifier, each with both system "
                     "and value",
                     "batch.identity.identifier");
}

}  // namespace gw::adapters
