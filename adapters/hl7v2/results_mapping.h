// SPDX-License-Identifier: Apache-2.0
// ORU^R01 -> DiagnosticReport (one per OBR) + Observation (one per OBX, or per run of text
// lines; patient observations before any ORC/OBR stand alone), the result half of the HL7 v2
// mapping (mapping.h). Internal to the adapter.
#pragma once

#include <cstddef>

#include "adapters/hl7v2/datatypes.h"
#include "fhir/result.h"

namespace gw::hl7v2::detail {

// Appends the reports and observations of the patient whose PID is segment `pid_index` to
// run.out.resources: first the patient observations (OBX after a PID, before any ORC/OBR),
// then each report's observations before the report that lists them (ED documents and RP
// URLs as the report's presentedForm). A repeated PID of the same patient (a PID-3
// identifier in common) is read through. Fails with missing_value when there is no OBR,
// invalid_value for a PID of another patient (expression "PID[n]-3": one patient per
// message), malformed dates, embedded data or over-limit messages.
fhir::Status map_results(const Run& run, std::size_t pid_index);

}  // namespace gw::hl7v2::detail
