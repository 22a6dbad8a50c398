// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: FHIR JSON parsing, structural checking and re-serialisation. Properties:
// never crashes, and anything that parses serialises to text that parses to the same tree.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "fhir/json.h"
#include "fhir/structure_check.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto parsed = fhir::parse_json(text);
  if (!parsed) return 0;
  (void)fhir::check_structure(*parsed);
  auto again = fhir::parse_json(fhir::to_json(*parsed));
  if (!again || !(*again == *parsed)) std::abort();
  return 0;
}
