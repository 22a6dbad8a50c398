// SPDX-License-Identifier: Apache-2.0
#include "gateway/http/smart_routes.h"

#include <memory>

#include "fhir/json.h"

namespace gw::http {

void add_smart_configuration_route(Router& router, const config::Config& cfg) {
  using fhir::Json;
  auto strings = [](std::initializer_list<const char*> xs) {
    Json a = Json::array();
    for (const char* x : xs) a.push_back(Json::string(x));
    return a;
  };
  const auto& a = cfg.auth;
  Json doc = Json::object();
  doc.set("issuer", Json::string(a.jwt.issuer));
  if (!a.jwks_uri.empty()) doc.set("jwks_uri", Json::string(a.jwks_uri));
  doc.set("authorization_endpoint", Json::string(a.authorization_endpoint));
  doc.set("token_endpoint", Json::string(a.token_endpoint));
  doc.set("grant_types_supported", strings({"authorization_code", "client_credentials"}));
  doc.set("token_endpoint_auth_methods_supported", strings({"private_key_jwt"}));
  doc.set("token_endpoint_auth_signing_alg_values_supported", strings({"RS256", "ES256"}));
  doc.set("scopes_supported", strings({"openid", "fhirUser", "launch/patient", "offline_access", "patient/*.rs",
                                       "user/*.rs", "system/*.cruds", "user/Patient.rs", "user/DocumentReference.rs"}));
  doc.set("response_types_supported", strings({"code"}));
  doc.set("code_challenge_methods_supported", strings({"S256"}));
  Json caps = strings({"launch-standalone", "client-public", "client-confidential-asymmetric",
                       "context-standalone-patient", "permission-v1", "permission-v2", "permission-patient",
                       "permission-user"});
  // SMART 2.0: sso-openid-connect requires issuer and jwks_uri, so it is claimed only when
  // the identity provider's jwks_uri is configured.
  if (!a.jwks_uri.empty()) caps.push_back(Json::string("sso-openid-connect"));
  doc.set("capabilities", std::move(caps));
  auto body = std::make_shared<std::string>(fhir::to_json(doc, true));
  RouteOptions o;
  o.access = Access::open;
  o.fhir = false;  // application/json whatever Accept says
  o.resource_type.clear();
  router.add("GET", "/.well-known/smart-configuration", [body](Request&) -> boost::asio::awaitable<Response> {
    co_return text_response(200, "application/json", *body);
  }, o);
}

}  // namespace gw::http
