// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: query-string decoding, search-parameter parsing and content negotiation
// on arbitrary input. Property: never crashes; errors always carry diagnostics.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "fhir/content_negotiation.h"
#include "fhir/search_params.h"

namespace {
const fhir::SearchParamRegistry& registry() {
  static const fhir::SearchParamRegistry r = [] {
    fhir::SearchParamRegistry reg;
    reg.add("Patient", {"identifier", fhir::SearchParamType::token, "", ""});
    reg.add("Patient", {"family", fhir::SearchParamType::string, "", ""});
    reg.add("Patient", {"birthdate", fhir::SearchParamType::date, "", ""});
    reg.add("Patient", {"general-practitioner", fhir::SearchParamType::reference, "", ""});
    reg.add("Patient", {"age", fhir::SearchParamType::number, "", ""});
    return reg;
  }();
  return r;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto query = fhir::parse_query_string(text);
  if (query) {
    for (fhir::Handling h : {fhir::Handling::lenient, fhir::Handling::strict}) {
      auto req = fhir::parse_search("Patient", *query, registry(), h);
      if (req) (void)req->canonical_query();
      else if (req.issue().diagnostics.empty()) std::abort();
    }
  } else if (query.issue().diagnostics.empty()) {
    std::abort();
  }
  (void)fhir::negotiate_format(text, std::nullopt, std::nullopt);
  (void)fhir::handling_from_prefer(text);
  (void)fhir::parse_fhir_date(text);
  return 0;
}
