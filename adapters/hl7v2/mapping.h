// SPDX-License-Identifier: Apache-2.0
// HL7 v2 -> FHIR R4 mapping (issue #4 item 4): ADT A01/A02/A03/A04/A05/A08/A11/A13/A28/A31 ->
// Patient + Encounter (+ Location, Practitioner); A40 -> a merge request; ORU^R01 ->
// DiagnosticReport + Observation. Pure: no I/O, no clock; the same message and context always
// give the same resources (ids are derived from the source and the message's own keys, so a
// resend or an update of the same visit or result replaces rather than duplicates).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "adapters/hl7v2/message.h"
#include "fhir/json.h"
#include "fhir/result.h"

namespace gw::hl7v2 {

struct MappingContext {
  std::string source_name;  // configured source system name, e.g. "royal-infirmary-pas"
  std::string source_ods;   // its ODS code, e.g. "RRK"; the default assigning authority
  // Namespace for local identifier systems: an assigning authority "X" becomes
  // identifier_system_base + "/" + X (lower-cased, non-alphanumerics as '-').
  std::string identifier_system_base = "https://fhir.nhs.uk/Id/local";
};

// A40 (merge patient - patient identifier list): PID names the survivor; each MRG carries the
// identifiers of a record that is retired into it.
struct MergeRequest {
  std::vector<fhir::Json> retired_identifiers;  // FHIR Identifier objects from MRG-1 (and MRG-2/3)
};

// A contact of the patient with an organisation, for the access policy's "encounter"
// relationship (the locator's record_encounter).
struct EncounterEvent {
  std::string organisation_ods;  // MSH-4 facility when it looks like an ODS code, else the source ODS
  std::string at;                // FHIR dateTime: PV1-44 admit time, else EVN-2, else MSH-7
};

struct MappedMessage {
  std::string message_type;  // e.g. "ADT^A01", "ORU^R01"
  std::string event;         // trigger, e.g. "A01"
  // The identity the message carries, as a UK Core-shaped Patient: identifiers (the NHS
  // number with system https://fhir.nhs.uk/Id/nhs-number and its verification status
  // extension when PID-32 gives one; local identifiers with systems from their assigning
  // authority and type v2-0203), name, birthDate, gender, address (postcode),
  // generalPractitioner (ODS identifier of PD1-3/PD1-4), deceased[x]. No id: the gateway
  // resolves who this is.
  fhir::Json patient;
  // Resources derived from the message, each with resourceType and a deterministic id (up to
  // 64 characters of [A-Za-z0-9-.]). Clinical resources (Encounter, Observation,
  // DiagnosticReport) carry no `subject`: the gateway sets it to the resolved patient.
  // References between the message's own resources use "Type/id".
  std::vector<fhir::Json> resources;
  std::optional<MergeRequest> merge;        // A40 only
  std::optional<EncounterEvent> encounter;  // ADT with a visit
  // Data-quality notes that did not stop the mapping (e.g. "PID-3[2]: NHS number fails the
  // check digit; kept as received, never used to match the patient"), with the HL7 location first.
  std::vector<std::string> warnings;
  // Where each clinical resource's id comes from: ("Encounter/<id>", "PV1-19") for a visit
  // number, ("DiagnosticReport/<id>", "OBR[1]-3") for an order number, "MSH-10" without one.
  std::vector<std::pair<std::string, std::string>> key_locations;
};

// Maps a parsed message. Failures:
//   not_supported  -> the message type or trigger is not one this adapter maps (ACK: AR);
//   missing_value / invalid_value -> required content absent or malformed, e.g. no PID
//   segment, no identifier in PID-3, an unparseable date (ACK: AE). The Issue's expression
//   gives the HL7 location ("PID-3", "OBX[2]-5") for the ERR segment.
fhir::Result<MappedMessage> map_message(const Message& message, const MappingContext& context);
// The valid NHS number the first PID's PID-3 carries (read as map_message reads it), or "":
// a message that cannot be mapped is still audited against the patient it names.
std::string nhs_number_of(const Message& message, const MappingContext& context);

// True for the message types map_message accepts ("ADT^A01" ... "ORU^R01").
bool is_supported(std::string_view message_type);

}  // namespace gw::hl7v2
