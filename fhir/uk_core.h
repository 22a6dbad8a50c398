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

}  // namespace fhir::uk
