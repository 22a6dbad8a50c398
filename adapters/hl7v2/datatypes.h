// SPDX-License-Identifier: Apache-2.0
// HL7 v2 datatypes (DTM/TS, NM, CX, EI, XPN, XCN, XAD, XTN, CWE/CE) read out of a parsed
// message and written as FHIR R4 datatypes, plus the state one mapping run shares. Internal
// to the HL7 v2 -> FHIR mapping (mapping.cpp, results_mapping.cpp); not a public API.
#pragma once

#include <cstddef>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

#include "adapters/hl7v2/mapping.h"
#include "adapters/hl7v2/message.h"
#include "fhir/json.h"
#include "fhir/result.h"

namespace gw::hl7v2::detail {

inline constexpr std::string_view kV2IdentifierTypeSystem = "http://terminology.hl7.org/CodeSystem/v2-0203";
inline constexpr std::string_view kUcumSystem = "http://unitsofmeasure.org";
inline constexpr std::string_view kGmcSystem = "https://fhir.hl7.org.uk/Id/gmc-number";
inline constexpr std::string_view kGmpSystem = "https://fhir.hl7.org.uk/Id/gmp-number";
inline constexpr std::size_t kMaxRepetitions = 20;  // names, addresses, identifiers read per field
inline constexpr std::size_t kMaxTextBytes = 1024 * 1024;  // FHIR strings stay under 1 MB

// One mapping run: the message, its context and the result being built.
struct Run {
  const Message& message;
  const MappingContext& context;
  MappedMessage& out;
  void warn(const std::string& where, std::string_view what) const;
};

// HL7 locations for warnings and Issue expressions: "PID-3", "PID-3[2]", "OBX[4]-5".
// `occurrence` 0 leaves the segment index out; `repetition` 0 leaves the repetition out.
std::string where(std::string_view segment, std::size_t occurrence, std::size_t field, std::size_t repetition = 0);

// One component as text: unescaped, control characters turned into spaces, trimmed; empty
// for absent values and for HL7's explicit null `""`.
std::string value(const SegmentRef& s, std::size_t field, std::size_t component = 1, std::size_t sub = 1,
                  std::size_t repetition = 1);
// value() for a FHIR code (Coding.code, Quantity.code): runs of spaces made one, as a code
// may hold single inner spaces only. "mg  /L" (or control characters, which value() turns
// into spaces) would otherwise make the resource invalid FHIR and the whole message refused
// at ingest, away from its HL7 location.
std::string code_value(const SegmentRef& s, std::size_t field, std::size_t component = 1, std::size_t sub = 1,
                       std::size_t repetition = 1);
// `text` with each run of spaces made one space.
std::string single_spaced(std::string_view text);
// All sub-components of a component joined by single spaces (e.g. SAD street address).
std::string joined_subcomponents(const Run& run, const SegmentRef& s, std::size_t field, std::size_t component,
                                 std::size_t repetition);
// Free text (TX/FT/NTE): like value() but keeps line breaks (\.br\ decodes to "\n").
std::string text_value(const Run& run, const SegmentRef& s, std::size_t field, std::size_t repetition);
// Number of repetitions of `field`, capped at `limit`; a warning names what was dropped.
std::size_t repetitions(const Run& run, const SegmentRef& s, const std::string& location, std::size_t field,
                        std::size_t limit = kMaxRepetitions);

bool iequals(std::string_view a, std::string_view b);

// Dates (HL7 v2.5 ch. 2.A.22 DTM / 2.A.74 TS: YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]).
// FHIR dateTime: the precision sent is kept down to the day; a time is completed to seconds
// (FHIR needs them) and gets the sender's offset, or, without one, the offset of UK local
// time (Europe/London: GMT, BST from the last Sunday of March to the last Sunday of October)
// on that date. Empty input gives "". Malformed input -> invalid_value at `location`.
fhir::Result<std::string> fhir_datetime(std::string_view hl7, const std::string& location);
// FHIR date (YYYY, YYYY-MM or YYYY-MM-DD): the date as sent, any time part validated and dropped.
fhir::Result<std::string> fhir_date(std::string_view hl7, const std::string& location);
// FHIR instant: for values with a time (completed to seconds like fhir_datetime); nullopt (not
// an error) for a date alone.
fhir::Result<std::optional<std::string>> fhir_instant(std::string_view hl7, const std::string& location);
// Convenience: the first component of a TS/DTM field.
fhir::Result<std::string> datetime_field(const SegmentRef& s, std::size_t field, const std::string& location);

// HL7 NM -> JSON number text ("+007.50" -> "7.50", ".5" -> "0.5"); nullopt when not a number.
std::optional<std::string> hl7_number(std::string_view text);

// Deterministic resource id: prefix + "-" + 32 hex digits of SHA-256 over the source name and
// the parts (length-prefixed, so ("ab","c") and ("a","bc") differ). Always matches
// [A-Za-z0-9\-.]{1,64}.
std::string resource_id(const Run& run, std::string_view prefix, std::initializer_list<std::string_view> parts);

// Lower-cased, every non-alphanumeric byte '-', at most 64 bytes.
std::string slug(std::string_view text);
// identifier_system_base + "/" + slug(authority, else the source ODS) [+ "/" + kind].
std::string local_system(const Run& run, std::string_view authority, std::string_view kind = {});
// ODS organisation code shape: 3, 5 or 6 upper-case letters and digits, at least one letter.
bool looks_like_ods(std::string_view code);

// FHIR Identifier.type for a v2-0203 code: a coding when the code is one we know is in the
// table, else text only. Null Json when `code` is empty.
fhir::Json identifier_type(std::string_view code);
// Coding system name (HL7 table 0396, e.g. "LN", "SCT", "HL70078") -> FHIR system URI; "" when
// not known.
std::string code_system_uri(std::string_view hl7_system);
// The system of a coding system this mapping does not know (a lab's own, "L", "99zzz",
// "WinPath"): identifier_system_base + "/code-system/" + slug(source name) + "/" +
// slug(name), so the same code from two sources stays two codes.
std::string local_code_system(const Run& run, std::string_view hl7_system);
// CWE/CE/CNE at (field, repetition), components starting at `first` -> CodeableConcept; null
// Json when it carries neither a code nor text. A coding names its system when the sender
// does: a known one's URI, else local_code_system.
fhir::Json codeable_concept(const Run& run, const SegmentRef& s, std::size_t field, std::size_t repetition = 1,
                            std::size_t first = 1);
// XPN (first = 1) or the name part of XCN (first = 2) -> HumanName; null Json when empty.
fhir::Json human_name(const SegmentRef& s, std::size_t field, std::size_t repetition, std::size_t first,
                      std::string_view use);
// "prefix given family" of such a name, for Reference.display.
std::string display_name(const fhir::Json& human_name);
// XAD -> Address; null Json when empty.
fhir::Json address(const Run& run, const SegmentRef& s, std::size_t field, std::size_t repetition);
// XTN -> ContactPoint (`field_use`: "home" for PID-13, "work" for PID-14, none for PID-40); null
// Json when empty, and for an e-mail address without "@".
fhir::Json contact_point(const SegmentRef& s, std::size_t field, std::size_t repetition, std::string_view field_use);

// Healthcare professional identifier of an XCN/CX-like value: a GMC, GMP, NMC or HCPC number
// when the assigning authority or identifier type says so (or, with neither, when the value
// has the shape of a GMC "C" + 7 digits or GP "G" + 7 digits code), else a local identifier
// in the source's practitioner namespace. Null Json when `id` is empty.
fhir::Json professional_identifier(const Run& run, std::string_view id, std::string_view authority,
                                   std::string_view type);

// Units of OBX-6 for Quantity: UCUM (system + code) when the coding system says UCUM or the
// unit is a common UCUM unit, else unit text only.
struct Units {
  std::string unit, system, code;
};
Units units(const SegmentRef& s, std::size_t field);
// Quantity {value, comparator, unit, system, code}; `number` must be JSON number text.
fhir::Json quantity(std::string_view number, const Units& u, std::string_view comparator = {});

// Small JSON helpers: set only when non-empty / non-null.
void set_string(fhir::Json& obj, std::string key, std::string value);
void set_json(fhir::Json& obj, std::string key, fhir::Json value);
fhir::Json array_of(fhir::Json item);
fhir::Json reference(std::string_view type, std::string_view id, std::string_view display = {});
// Adds a resource to run.out.resources; one with the same type and id (the same bed, doctor,
// or a result resent later in the message) is replaced where it stands.
void put_resource(const Run& run, fhir::Json resource);

}  // namespace gw::hl7v2::detail
