// SPDX-License-Identifier: Apache-2.0
// Builds the CapabilityStatement served at GET [base]/metadata from what the server actually
// registered (route table + search-parameter registry), so it cannot drift from behaviour.
#pragma once

#include <string>
#include <vector>

#include "fhir/json.h"
#include "fhir/search_params.h"

namespace fhir {

struct OperationCapability {
  std::string name;        // without '$', e.g. "summary"
  std::string definition;  // canonical OperationDefinition URL
};

struct ResourceCapability {
  std::string type;                       // e.g. "Patient"
  std::string profile;                    // canonical, e.g. UK Core profile; may be empty
  std::vector<std::string> interactions;  // read, vread, search-type, create, update, delete ...
  std::vector<OperationCapability> operations;
  bool update_create = false;             // an update to an unknown id creates the resource
  std::string conditional_read;           // conditionalRead code (not-supported when empty: not declared)
};

struct ServerDescription {
  std::string software_name;
  std::string software_version;
  std::string base_url;
  std::string description;
  std::string release_date;  // R4 dateTime, e.g. "2026-11-23"
  bool smart_on_fhir = false;
  // SMART oauth-uris extension (http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris)
  // so clients that read only the CapabilityStatement find the identity provider too.
  std::string authorize_url;
  std::string token_url;
};

Json capability_statement(const ServerDescription& server, const std::vector<ResourceCapability>& resources,
                          const std::vector<OperationCapability>& system_operations,
                          const SearchParamRegistry& search_params);

}  // namespace fhir
