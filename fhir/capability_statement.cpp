// SPDX-License-Identifier: Apache-2.0
#include "fhir/capability_statement.h"

namespace fhir {
namespace {

Json str(std::string s) { return Json::string(std::move(s)); }

Json operations_json(const std::vector<OperationCapability>& ops) {
  Json list = Json::array();
  for (const OperationCapability& op : ops) {
    Json o = Json::object();
    o.set("name", str(op.name));
    o.set("definition", str(op.definition));
    list.push_back(std::move(o));
  }
  return list;
}

}  // namespace

Json capability_statement(const ServerDescription& server, const std::vector<ResourceCapability>& resources,
                          const std::vector<OperationCapability>& system_operations,
                          const SearchParamRegistry& search_params) {
  Json cs = Json::object();
  cs.set("resourceType", str("CapabilityStatement"));
  cs.set("status", str("active"));
  cs.set("date", str(server.release_date));
  cs.set("publisher", str(server.software_name));
  cs.set("kind", str("instance"));
  Json software = Json::object();
  software.set("name", str(server.software_name));
  software.set("version", str(server.software_version));
  software.set("releaseDate", str(server.release_date));
  cs.set("software", std::move(software));
  Json impl = Json::object();
  impl.set("description", str(server.description));
  impl.set("url", str(server.base_url));
  cs.set("implementation", std::move(impl));
  cs.set("fhirVersion", str("4.0.1"));
  Json formats = Json::array();
  formats.push_back(str("json"));
  formats.push_back(str("application/fhir+json"));
  cs.set("format", std::move(formats));

  Json rest = Json::object();
  rest.set("mode", str("server"));
  if (server.smart_on_fhir) {
    Json coding = Json::object();
    coding.set("system", str("http://terminology.hl7.org/CodeSystem/restful-security-service"));
    coding.set("code", str("SMART-on-FHIR"));
    Json codings = Json::array();
    codings.push_back(std::move(coding));
    Json service = Json::object();
    service.set("coding", std::move(codings));
    Json services = Json::array();
    services.push_back(std::move(service));
    Json security = Json::object();
    if (!server.authorize_url.empty() || !server.token_url.empty()) {
      Json inner = Json::array();
      auto uri = [&inner](const char* name, const std::string& value) {
        if (value.empty()) return;
        Json e = Json::object();
        e.set("url", str(name));
        e.set("valueUri", Json::string(value));
        inner.push_back(std::move(e));
      };
      uri("authorize", server.authorize_url);
      uri("token", server.token_url);
      Json ext = Json::object();
      ext.set("url", str("http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"));
      ext.set("extension", std::move(inner));
      Json exts = Json::array();
      exts.push_back(std::move(ext));
      security.set("extension", std::move(exts));
    }
    security.set("service", std::move(services));
    security.set("description", str("Bearer tokens per SMART App Launch v2; see /.well-known/smart-configuration"));
    rest.set("security", std::move(security));
  }
  if (!resources.empty()) {
    Json list = Json::array();
    for (const ResourceCapability& rc : resources) {
      Json r = Json::object();
      r.set("type", str(rc.type));
      if (!rc.profile.empty()) r.set("profile", str(rc.profile));
      if (!rc.interactions.empty()) {
        Json inter = Json::array();
        for (const std::string& code : rc.interactions) {
          Json i = Json::object();
          i.set("code", str(code));
          inter.push_back(std::move(i));
        }
        r.set("interaction", std::move(inter));
      }
      if (rc.update_create) r.set("updateCreate", Json::boolean(true));
      if (!rc.conditional_read.empty()) r.set("conditionalRead", str(rc.conditional_read));
      const auto& params = search_params.params_for(rc.type);
      if (!params.empty()) {
        Json sp = Json::array();
        for (const SearchParamDef& d : params) {
          Json p = Json::object();
          p.set("name", str(d.name));
          if (!d.definition.empty()) p.set("definition", str(d.definition));
          p.set("type", str(std::string(search_param_type_name(d.type))));
          if (!d.documentation.empty()) p.set("documentation", str(d.documentation));
          sp.push_back(std::move(p));
        }
        r.set("searchParam", std::move(sp));
      }
      if (!rc.operations.empty()) r.set("operation", operations_json(rc.operations));
      list.push_back(std::move(r));
    }
    rest.set("resource", std::move(list));
  }
  if (!system_operations.empty()) rest.set("operation", operations_json(system_operations));
  Json rests = Json::array();
  rests.push_back(std::move(rest));
  cs.set("rest", std::move(rests));
  return cs;
}

}  // namespace fhir
