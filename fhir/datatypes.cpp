// SPDX-License-Identifier: Apache-2.0
#include "fhir/datatypes.h"

namespace fhir {

Json coding(std::string_view system, std::string_view code, std::string_view display) {
  Json c = Json::object();
  c.set("system", text(system));
  c.set("code", text(code));
  if (!display.empty()) c.set("display", text(display));
  return c;
}

Json codeable_concept(Json c) {
  Json cc = Json::object();
  Json arr = Json::array();
  arr.push_back(std::move(c));
  cc.set("coding", std::move(arr));
  return cc;
}

Json identifier(std::string_view system, std::string_view value) {
  Json id = Json::object();
  id.set("system", text(system));
  id.set("value", text(value));
  return id;
}

}  // namespace fhir
