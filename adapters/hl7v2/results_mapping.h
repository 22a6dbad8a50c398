// SPDX-License-Identifier: Apache-2.0
// ORU^R01 -> DiagnosticReport (one per OBR) + Observation (one per OBX, or per run of text
// lines), the result half of the HL7 v2 mapping (mapping.h). Internal to the adapter.
#pragma once

#include <cstddef>

#include "adapters/hl7v2/datatypes.h"
#include "fhir/result.h"

namespace gw::hl7v2::detail {

// Appends the reports and observations of the patient whose PID is segment `pid_index` to
// run.out.resources (observations before the report that lists them). A repeated PID of the
// same patient (same PID-3) is read through; one of another patient stops the mapping with a
// warning (one patient per message). Fails with missing_value when there is no OBR or an
// OBR has no code, invalid_value for malformed dates or over-limit messages.
fhir::Status map_results(const Run& run, std::size_t pid_index);

}  // namespace gw::hl7v2::detail
