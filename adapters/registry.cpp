// SPDX-License-Identifier: Apache-2.0
#include <stdexcept>

#include "adapters/adapter.h"

namespace gw::adapters {

void AdapterRegistry::add(std::string name, AdapterFactory factory) {
  for (const auto& [n, f] : factories_)
    if (n == name) throw std::invalid_argument("adapter '" + name + "' registered twice");
  factories_.emplace_back(std::move(name), std::move(factory));
}

fhir::Result<std::unique_ptr<Adapter>> AdapterRegistry::create(const SourceSystem& source) const {
  for (const auto& [n, f] : factories_)
    if (n == source.adapter) return f(source);
  std::string known;
  for (const auto& [n, f] : factories_) {
    if (!known.empty()) known += ", ";
    known += n;
  }
  return fhir::Issue::make(fhir::ErrorCode::invalid_value,
                           "source '" + source.name + "' names adapter '" + source.adapter +
                               "', which is not built in (known: " + (known.empty() ? "none" : known) + ")",
                           "adapter");
}

std::vector<std::string> AdapterRegistry::names() const {
  std::vector<std::string> out;
  for (const auto& [n, f] : factories_) out.push_back(n);
  return out;
}

}  // namespace gw::adapters
