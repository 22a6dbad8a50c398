// SPDX-License-Identifier: Apache-2.0
// England / UK Core naming systems, profiles and extensions used across the gateway, the
// adapters and the tools (../shared/CONVENTIONS.md "UK Core", "ODS codes"). One place, so a
// canonical URL is never spelled two ways. The NHS number system is in fhir/nhs_number.h.
#pragma once

#include <string_view>

namespace fhir::uk {

inline constexpr std::string_view kOdsOrganisationSystem = "https://fhir.nhs.uk/Id/ods-organization-code";
inline constexpr std::string_view kPatientProfile = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient";
inline constexpr std::string_view kDocumentReferenceProfile =
    "https://fhir.hl7.org.uk/StructureDefinition/UKCore-DocumentReference";
inline constexpr std::string_view kNhsNumberVerificationExtension =
    "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-NHSNumberVerificationStatus";
inline constexpr std::string_view kNhsNumberVerificationSystem =
    "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatusEngland";
inline constexpr std::string_view kSnomedSystem = "http://snomed.info/sct";
// HL7 v3 ActCode: BTG ("break the glass") marks emergency access in meta.security.
inline constexpr std::string_view kActCodeSystem = "http://terminology.hl7.org/CodeSystem/v3-ActCode";


// The display of a UK Core NHSNumberVerificationStatusEngland code ("01".."08"), or empty
// for any other code.
inline std::string_view nhs_number_verification_display(std::string_view code) {
  static constexpr std::string_view kNames[] = {
      "Number present and verified",
      "Number present but not traced",
      "Trace required",
      "Trace attempted - No match or multiple match found",
      "Trace needs to be resolved - (NHS number or patient detail conflict)",
      "Trace in progress",
      "Number not present and trace not required",
      "Trace postponed (baby under six weeks old)",
  };
  if (code.size() != 2 || code[0] != '0' || code[1] < '1' || code[1] > '8') return {};
  return kNames[code[1] - '1'];
}

}  // namespace fhir::uk
