// SPDX-License-Identifier: Apache-2.0
// FHIR R4 JSON -> locator values, for the bulk import tool, the FHIR routes and the benchmark:
// a UK Core Patient becomes an IdentityClaim, an NRL-shaped DocumentReference a Pointer.
// (The reverse mapping, locator values -> FHIR, lives with the routes.) Pure functions.
#pragma once

#include <optional>
#include <string_view>

#include "fhir/json.h"
#include "fhir/result.h"
#include "fhir/uk_core.h"
#include "gateway/locator/locator.h"

namespace gw::locator {

using fhir::uk::kNhsNumberVerificationExtension;
using fhir::uk::kOdsOrganisationSystem;
// Our extension on DocumentReference naming the FHIR resource types the record holds, one
// valueCode per type (repeat the extension for several).
inline constexpr std::string_view kResourceTypesExtension =
    "https://fhir.example.nhs.uk/StructureDefinition/Extension-RecordLocator-ResourceTypes";

// Patient -> IdentityClaim asserted by `source_ods` (which also becomes each identifier's
// source). Reads:
//   identifier[]        NHS number system -> demographics.nhs_number (kept as received, even
//                       when invalid) with its UK Core verification status code from the
//                       identifier's extension; every other identifier with both system and
//                       value -> a local identifier (ones lacking either cannot be indexed and
//                       are skipped);
//   name[]              the official name, else usual, else the first -> family, given; every
//                       other name with a family or given name -> other_names (use, family,
//                       given), in order; at most kMaxNames names;
//   birthDate, gender, deceasedDateTime (deceasedBoolean carries no date and is not kept);
//   address[]           postalCode of the first home address having one, else of any;
//   generalPractitioner the first reference with an ODS organisation code identifier.
// Patient.id is ignored: the gateway assigns its own ids. Fails with invalid_resource /
// invalid_value / missing_value whose expression names the field, e.g.
// "Patient.identifier[2].value", and never echoes the value itself.
fhir::Result<IdentityClaim> identity_from_patient(const fhir::Json& patient, std::string_view source_ods);

// DocumentReference -> Pointer. Reads id (kept: a re-import updates the same pointer; when
// present it must be a FHIR id, else invalid_value at DocumentReference.id),
// status (must be "current"), type.coding[0], category[0].coding[0], custodian.identifier
// (ODS organisation code, required: the pointer's owner), date (kept as the source gave it;
// it must be a FHIR instant), subject.reference "Patient/<id>"
// -> patient_id (a subject given by identifier is for the caller to resolve: see
// subject_identifier), content[0].attachment.url (required; an https:// URL naming a host,
// anything else is invalid_value) and contentType, and the
// resource types from kResourceTypesExtension, else the type code when it is itself a FHIR
// resource type name (as synthpop's record categories are). With `id_ignored` (a FHIR create,
// whose id the server SHALL ignore, R4 http.html#create) the id is not read at all.
fhir::Result<Pointer> pointer_from_document_reference(const fhir::Json& docref, bool id_ignored = false);

// DocumentReference.subject.identifier as a locator Identifier (source left empty), when it
// has both system and value.
std::optional<Identifier> subject_identifier(const fhir::Json& docref);

}  // namespace gw::locator
