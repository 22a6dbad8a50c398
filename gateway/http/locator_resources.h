// SPDX-License-Identifier: Apache-2.0
// Record locator values as the FHIR resources its routes serve (locator_routes.h): a UK Core
// Patient, an NRL-shaped DocumentReference, and a Patient cut down by _summary or _elements;
// the break-glass label and the withheld-entries warning, which the clinical routes share.
// The reverse mapping, FHIR -> locator values, is gateway/locator/fhir_mapping.h.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "fhir/json.h"
#include "fhir/result.h"
#include "fhir/search_params.h"
#include "gateway/locator/locator.h"

namespace gw::http {

// Our extension on a Patient's local identifier naming the source system (by ODS code, as a
// valueReference) that sent it to the index. It is not Identifier.assigner: the index does not
// know which organisation issued a number, only who recorded it.
inline constexpr std::string_view kIdentifierSourceExtension =
    "https://fhir.example.nhs.uk/StructureDefinition/Extension-RecordLocator-IdentifierSource";

// The Patient for `p`: NHS number only when trusted, local identifiers with the source that
// recorded each (kIdentifierSourceExtension; never as assigner), Patient.link for merges;
// meta.security BTG when shown under break-glass.
fhir::Json patient_json(const locator::PatientRecord& p, bool break_glass);
// The DocumentReference for pointer `p`; `nhs_number` (may be empty) goes in subject.identifier.
fhir::Json pointer_json(const locator::Pointer& p, const std::string& nhs_number, bool break_glass);
// Marks a resource shown under break-glass (docs/access-policy.md "Break-glass"): meta.security
// gains v3-ActCode BTG, once, beside any labels it already carries. The label travels with the
// data where the X-Emergency-Access header does not.
void mark_break_glass(fhir::Json& resource);
// The warning entry of a searchset that withheld `count` entries, each a `what` (e.g. "record
// pointer", "Observation"), under the sensitivity policy (docs/access-policy.md rule 5).
fhir::Json withheld_outcome(std::size_t count, std::string_view what);
// The DocumentReference.date pointer_json serves: the date the source gave, else the index's
// own time of writing ("" when neither is known).
const std::string& served_date(const locator::Pointer& p);

// _summary and _elements (R4 search.html "Summary" and "Elements"), on Patient search and read.
struct Subset {
  fhir::SummaryMode summary = fhir::SummaryMode::none;
  std::vector<std::string> elements;
  bool applies() const {
    return !elements.empty() || summary == fhir::SummaryMode::true_ || summary == fhir::SummaryMode::text;
  }
};

// The result parameters of `s` as a Subset; invalid_search_parameter when both are given.
fhir::Result<Subset> subset_of(const fhir::SearchRequest& s);
// subset_of for a search of `type` whose resources are served without a summary form (every
// search but Patient's): _summary=true and text are refused under strict handling, and under
// lenient taken out of `s`, so that the self link shows they were not applied.
fhir::Result<Subset> search_subset(fhir::SearchRequest& s, fhir::Handling handling, std::string_view type);
// _summary and _elements on a read of `type`, taken from the request's `query` (R4
// search.html "Summary" applies to a read as to a search): _summary=count is a search's
// (invalid_search_parameter); other than on Patient, _summary=true and text are treated as on
// the type's searches (search_subset, under `handling`).
fhir::Result<Subset> read_subset(const fhir::QueryParams& query, fhir::Handling handling,
                                 const fhir::SearchParamRegistry& registry, std::string_view type);
// _sort is not served by any search here. Under strict handling it is refused (with _include
// and _revinclude, refused whatever the handling: `type` names the search); under lenient
// handling it is taken out of `s`, so that the self link shows it was not applied (R4
// search.html "Handling errors": an unsupported parameter is ignored unless strict).
fhir::Status unserved_result_params(fhir::SearchRequest& s, fhir::Handling handling, std::string_view type);
// `r` cut down to what `s` asks for (_elements on any type; _summary=true and text as for a
// Patient, the only type served with them): resourceType, id and meta always stay, and a
// cut-down resource is tagged SUBSETTED. Unchanged when `s` asks for nothing.
fhir::Json subsetted(const fhir::Json& r, const Subset& s);

// The patient id a reference search parameter `param` names (R4 search.html#reference): id,
// Patient/{id}, or the absolute URL of a Patient on this server ([base]/Patient/{id}). Another
// server's URL names nobody held here, so it is refused (invalid_search_parameter) rather than
// answered with an empty Bundle; so is a reference to another type.
fhir::Result<std::string> patient_id_of(const fhir::ReferenceValue& ref, const std::string& base_url,
                                        const std::string& param);

}  // namespace gw::http
