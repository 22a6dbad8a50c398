// SPDX-License-Identifier: Apache-2.0
// HL7 v2 -> FHIR R4 (see mapping.h): the dispatch on MSH-9, the patient identity (PID, PD1),
// the visit of ADT events (PV1 -> Encounter, Location, Practitioner) and A40 merges. Results
// (ORU^R01) are in results_mapping.cpp; datatype conversions in datatypes.cpp.
// Field numbers follow HL7 v2.5 ch. 3 (ADT: EVN, PID, PD1, PV1, MRG) and the UK shapes in
// CONVENTIONS.md 1.5 (NHS number in PID-3 with CX.5 "NH" or assigning authority "NHS").
#include "adapters/hl7v2/mapping.h"

#include <algorithm>
#include <array>
#include <optional>
#include <utility>
#include <vector>

#include "adapters/hl7v2/datatypes.h"
#include "adapters/hl7v2/results_mapping.h"
#include "fhir/datatypes.h"
#include "fhir/date_range.h"
#include "fhir/nhs_number.h"
#include "fhir/uk_core.h"

namespace gw::hl7v2 {
namespace {

using detail::Run;
using fhir::ErrorCode;
using fhir::Issue;
using fhir::Json;

constexpr std::array<std::string_view, 12> kSupported = {
    "ADT^A01", "ADT^A02", "ADT^A03", "ADT^A04", "ADT^A05", "ADT^A08",
    "ADT^A11", "ADT^A13", "ADT^A28", "ADT^A31", "ADT^A40", "ORU^R01"};

constexpr std::string_view kActCodeSystem = fhir::uk::kActCodeSystem;
constexpr std::string_view kNullFlavorSystem = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor";
constexpr std::string_view kParticipationTypeSystem = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
constexpr std::string_view kLocationTypeSystem = "http://terminology.hl7.org/CodeSystem/location-physical-type";

std::string supported_list() {
  std::string s;
  for (std::string_view t : kSupported) {
    if (!s.empty()) s += ", ";
    s += t;
  }
  return s;
}

// ---- identifiers (CX) ------------------------------------------------------------------


// Reads CX repetitions of one field into FHIR Identifiers. An NHS number (CX.5 "NH", or
// assigning authority CX.4 or facility CX.6 "NHS") is trusted only with a valid Modulus 11
// check digit; the first invalid one is handed to the locator as untrusted (see identifiers()),
// and a warning says so.
class IdentifierReader {
 public:
  explicit IdentifierReader(const Run& run) : run_(run) {}

  void read(const SegmentRef& s, std::string_view segment, std::size_t occurrence, std::size_t field) {
    const std::string location = detail::where(segment, occurrence, field);
    const std::size_t n = detail::repetitions(run_, s, location, field);
    for (std::size_t r = 1; r <= n; ++r) add(s, field, r, detail::where(segment, occurrence, field, r));
  }

  // The identifiers read. An NHS number that is not valid (issue #3: "kept as received but
  // never trusted for matching") is added last, under the NHS number system, and only when no
  // valid one was read: the record locator keeps it on the patient as untrusted and never
  // matches on it. Under a local identifier system it would have been an exact-match key, and
  // every patient sent with the same mistyped number would have become one record.
  Json& identifiers() {
    if (nhs_.empty() && unverified_ && !unverified_added_) {
      push(fhir::identifier(fhir::kNhsNumberSystem, unverified_->first), unverified_->second);
      unverified_added_ = true;
    }
    return ids_;
  }
  // Where each identifier came from ("MRG-1[2]"), in the order of identifiers().
  const std::vector<std::string>& locations() const { return locations_; }
  const std::string& nhs_number() const { return nhs_; }

 private:
  void add(const SegmentRef& s, std::size_t field, std::size_t r, const std::string& location) {
    const std::string v = detail::value(s, field, 1, 1, r);
    if (v.empty()) return;
    std::string authority = detail::value(s, field, 4, 1, r);
    if (authority.empty()) authority = detail::value(s, field, 4, 2, r);  // HD universal id
    const std::string type = detail::value(s, field, 5, 1, r);
    const std::string facility = detail::value(s, field, 6, 1, r);
    if (type == "NH" || detail::iequals(type, "NHS") || detail::iequals(authority, "NHS") ||
        detail::iequals(facility, "NHS")) {
      std::string digits;
      for (char c : v)
        if (c != ' ' && c != '-') digits += c;
      const bool ten_digits =
          digits.size() == 10 && std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; });
      const bool valid = ten_digits && fhir::is_valid_nhs_number(digits);
      if (valid && (nhs_.empty() || nhs_ == digits)) {
        if (nhs_.empty()) push(fhir::identifier(fhir::kNhsNumberSystem, digits), location);
        nhs_ = digits;
        return;
      }
      if (valid) {
        // A patient has one NHS number; which of the two is right cannot be told here.
        run_.warn(location, "a second, different NHS number; not indexed (the message is stored as received)");
        return;
      }
      const std::string why = ten_digits ? "NHS number fails the check digit" : "NHS number is not 10 digits";
      if (unverified_) {
        run_.warn(location, why + "; not indexed, a first invalid one is kept (the message is stored as received)");
        return;
      }
      run_.warn(location, why + "; kept as received, never used to match the patient");
      unverified_.emplace(v, location);
      return;
    }
    Json id = Json::object();
    detail::set_json(id, "type", detail::identifier_type(type));
    id.set("system", Json::string(detail::local_system(run_, authority)));
    id.set("value", Json::string(v));
    push(std::move(id), location);
  }

  void push(Json id, const std::string& location) {
    for (const Json& other : ids_.items())
      if (other.string_at("system") == id.string_at("system") && other.string_at("value") == id.string_at("value"))
        return;
    ids_.push_back(std::move(id));
    locations_.push_back(location);
  }

  const Run& run_;
  Json ids_ = Json::array();
  std::vector<std::string> locations_;
  std::string nhs_;
  std::optional<std::pair<std::string, std::string>> unverified_;  // the first invalid NHS number, where
  bool unverified_added_ = false;
};

// ---- patient (PID, PD1) ----------------------------------------------------------------

std::string_view name_use(std::string_view xpn7) {  // HL7 table 0200
  if (xpn7 == "L") return "official";
  if (xpn7 == "D") return "usual";
  if (xpn7 == "M") return "maiden";
  if (xpn7 == "N") return "nickname";
  if (xpn7 == "A") return "anonymous";
  return {};
}

std::string_view gender(std::string_view pid8) {  // HL7 table 0001 -> FHIR administrative-gender
  if (pid8.empty()) return {};
  if (detail::iequals(pid8, "M")) return "male";
  if (detail::iequals(pid8, "F")) return "female";
  if (detail::iequals(pid8, "O")) return "other";
  return "unknown";
}

// PD1-3 (registered practice, XON) and PD1-4 (GP, XCN) as references by identifier.
Json general_practitioners(const Run& run, const SegmentRef& pd1) {
  Json gps = Json::array();
  const std::size_t orgs = detail::repetitions(run, pd1, "PD1-3", 3, 3);
  for (std::size_t r = 1; r <= orgs; ++r) {
    const std::string name = detail::value(pd1, 3, 1, 1, r);
    std::string code = detail::value(pd1, 3, 10, 1, r);  // XON.10 organisation identifier (v2.5+)
    if (code.empty()) code = detail::value(pd1, 3, 3, 1, r);  // XON.3 id number (earlier versions)
    Json ref = Json::object();
    ref.set("type", Json::string("Organization"));
    if (detail::looks_like_ods(code)) {
      ref.set("identifier", fhir::identifier(fhir::uk::kOdsOrganisationSystem, code));
    } else if (!code.empty()) {
      run.warn(detail::where("PD1", 0, 3, r), "the practice code is not an ODS code; only the name is kept");
    }
    detail::set_string(ref, "display", name);
    if (ref.size() > 1) gps.push_back(std::move(ref));
  }
  const std::size_t gp_count = detail::repetitions(run, pd1, "PD1-4", 4, 3);
  for (std::size_t r = 1; r <= gp_count; ++r) {
    Json ref = Json::object();
    ref.set("type", Json::string("Practitioner"));
    detail::set_json(ref, "identifier",
                     detail::professional_identifier(run, detail::value(pd1, 4, 1, 1, r),
                                                     detail::value(pd1, 4, 9, 1, r), detail::value(pd1, 4, 13, 1, r)));
    detail::set_string(ref, "display", detail::display_name(detail::human_name(pd1, 4, r, 2, {})));
    if (ref.size() > 1) gps.push_back(std::move(ref));
  }
  return gps;
}

fhir::Status map_patient(const Run& run, const SegmentRef& pid) {
  IdentifierReader reader(run);
  reader.read(pid, "PID", 0, 3);
  Json& ids = reader.identifiers();
  if (ids.size() == 0)
    return Issue::make(ErrorCode::missing_value, "PID-3 (patient identifier list) carries no identifier", "PID-3");
  // UK Core: the verification status extension sits inside the NHS number identifier.
  const std::string status = detail::value(pid, 32, 1, 1, 1);
  if (!reader.nhs_number().empty() && !fhir::uk::nhs_number_verification_display(status).empty()) {
    for (Json& id : ids.items()) {
      if (id.string_at("system") != fhir::kNhsNumberSystem) continue;
      Json ext = Json::object();
      ext.set("url", Json::string(std::string(fhir::uk::kNhsNumberVerificationExtension)));
      ext.set("valueCodeableConcept", fhir::codeable_concept(fhir::coding(fhir::uk::kNhsNumberVerificationSystem,
                                                                          status, fhir::uk::nhs_number_verification_display(status))));
      Json with = Json::object();
      with.set("extension", detail::array_of(std::move(ext)));
      for (const auto& [k, v] : id.members()) with.set(k, v);
      id = std::move(with);
    }
  }

  Json patient = Json::object();
  patient.set("resourceType", Json::string("Patient"));
  patient.set("identifier", std::move(ids));

  // HL7 v2.5 2.A.88: the legal name goes in the first repetition of PID-5.
  Json names = Json::array();
  const std::size_t name_count = detail::repetitions(run, pid, "PID-5", 5, 10);
  for (std::size_t r = 1; r <= name_count; ++r) {
    const std::string_view use = r == 1 ? std::string_view("official") : name_use(detail::value(pid, 5, 7, 1, r));
    Json n = detail::human_name(pid, 5, r, 1, use);
    if (!n.is_null()) names.push_back(std::move(n));
  }
  detail::set_json(patient, "name", std::move(names));

  Json telecom = Json::array();
  // PID-13 (home) and PID-14 (business), replaced from v2.7 by PID-40 (use from XTN.2).
  for (auto [field, use] : {std::pair<std::size_t, std::string_view>{13, "home"}, {14, "work"}, {40, ""}}) {
    const std::size_t n = detail::repetitions(run, pid, detail::where("PID", 0, field), field, 10);
    for (std::size_t r = 1; r <= n; ++r) {
      Json cp = detail::contact_point(pid, field, r, use);
      if (!cp.is_null()) telecom.push_back(std::move(cp));
    }
  }
  detail::set_json(patient, "telecom", std::move(telecom));

  detail::set_string(patient, "gender", std::string(gender(detail::value(pid, 8))));
  // A malformed birth date does not stop the message (Mirth takes it; the real UCLH
  // blood-product ORU has PID-7 "12312321"): the identity is PID-3, and a birth date that
  // cannot be read is left out rather than guessed.
  if (auto birth = detail::fhir_date(detail::value(pid, 7, 1), "PID-7"))
    detail::set_string(patient, "birthDate", std::move(*birth));
  else
    run.warn("PID-7", "not a valid HL7 date (YYYY[MM[DD]]); the birth date is not mapped");

  auto death = detail::datetime_field(pid, 29, "PID-29");
  if (!death) return std::move(death).issue();
  const std::string indicator = detail::value(pid, 30);
  if (indicator == "Y") {
    if (!death->empty()) patient.set("deceasedDateTime", Json::string(*death));
    else patient.set("deceasedBoolean", Json::boolean(true));
  } else if (indicator == "N") {
    patient.set("deceasedBoolean", Json::boolean(false));
    if (!death->empty()) run.warn("PID-29", "a date of death with PID-30 'N' (not deceased); the date is not mapped");
  } else if (!death->empty()) {
    patient.set("deceasedDateTime", Json::string(*death));
  }

  Json addresses = Json::array();
  const std::size_t address_count = detail::repetitions(run, pid, "PID-11", 11, 10);
  for (std::size_t r = 1; r <= address_count; ++r) {
    Json a = detail::address(run, pid, 11, r);
    if (!a.is_null()) addresses.push_back(std::move(a));
  }
  detail::set_json(patient, "address", std::move(addresses));

  if (auto pd1 = run.message.find("PD1"))
    detail::set_json(patient, "generalPractitioner", general_practitioners(run, *pd1));
  run.out.patient = std::move(patient);
  return fhir::Ok{};
}

// ---- visit (PV1) -> Encounter ----------------------------------------------------------

struct EncounterClass {
  std::string_view system, code, display;
};

EncounterClass encounter_class(const Run& run, std::string_view pv1_2) {  // HL7 table 0004
  if (pv1_2 == "E") return {kActCodeSystem, "EMER", "emergency"};
  if (pv1_2 == "I" || pv1_2 == "B") return {kActCodeSystem, "IMP", "inpatient encounter"};
  if (pv1_2 == "O" || pv1_2 == "R") return {kActCodeSystem, "AMB", "ambulatory"};
  if (pv1_2 == "P") return {kActCodeSystem, "PRENC", "pre-admission"};
  if (!pv1_2.empty() && pv1_2 != "U" && pv1_2 != "N" && pv1_2 != "C")
    run.warn("PV1-2", "patient class is not one of HL7 table 0004's E, I, O, P, R, B; the class is unknown");
  return {kNullFlavorSystem, "UNK", "unknown"};
}

// Encounter.status from the trigger (HL7 v2.5 ch. 3.3); updates (A08, A28, A31) read it off
// the visit's admit and discharge times.
std::string_view encounter_status(std::string_view event, bool admitted, bool discharged) {
  if (event == "A01" || event == "A02" || event == "A13") return "in-progress";
  if (event == "A04") return "arrived";
  if (event == "A03") return "finished";
  if (event == "A05") return "planned";
  if (event == "A11") return "cancelled";
  if (discharged) return "finished";
  if (admitted) return "in-progress";
  return "unknown";
}

std::string_view location_status(std::string_view encounter_status) {
  if (encounter_status == "finished") return "completed";
  if (encounter_status == "planned") return "planned";
  if (encounter_status == "in-progress" || encounter_status == "arrived") return "active";
  return {};
}

struct Added {
  std::string id, display;
};

// PL (PV1-3, PV1-6) -> Location. Its id is derived from the facility, building, floor, point
// of care, room and bed, so every message naming the same bed refers to one resource.
std::optional<Added> add_location(const Run& run, const SegmentRef& pv1, std::size_t field) {
  const std::string poc = detail::value(pv1, field, 1), room = detail::value(pv1, field, 2),
                    bed = detail::value(pv1, field, 3), facility = detail::value(pv1, field, 4),
                    building = detail::value(pv1, field, 7), floor = detail::value(pv1, field, 8),
                    description = detail::value(pv1, field, 9);
  std::string name;
  for (const std::string* part : {&poc, &room, &bed}) {
    if (part->empty()) continue;
    if (!name.empty()) name += ", ";
    name += *part;
  }
  if (name.empty()) name = description;
  if (name.empty()) return std::nullopt;
  Added added{detail::resource_id(run, "loc", {facility, building, floor, poc, room, bed}), name};
  Json loc = Json::object();
  loc.set("resourceType", Json::string("Location"));
  loc.set("id", Json::string(added.id));
  loc.set("status", Json::string("active"));
  loc.set("name", Json::string(name));
  if (description != name) detail::set_string(loc, "description", description);
  loc.set("mode", Json::string("instance"));
  if (!bed.empty())
    loc.set("physicalType", fhir::codeable_concept(fhir::coding(kLocationTypeSystem, "bd", "Bed")));
  else if (!room.empty())
    loc.set("physicalType", fhir::codeable_concept(fhir::coding(kLocationTypeSystem, "ro", "Room")));
  detail::put_resource(run, std::move(loc));
  return added;
}

// XCN (PV1-7) -> Practitioner. Repetitions naming the same person (same family name, or none)
// are read as further identifiers of that person. Without any identifier no resource is made
// (a name alone cannot tell two doctors apart): the participant keeps the name as display.
std::optional<Added> add_practitioner(const Run& run, const SegmentRef& pv1, std::size_t field) {
  const std::string location = detail::where("PV1", 0, field);
  const std::size_t n = detail::repetitions(run, pv1, location, field, 5);
  Json ids = Json::array(), name;
  std::string family;
  for (std::size_t r = 1; r <= n; ++r) {
    Json this_name = detail::human_name(pv1, field, r, 2, {});
    const std::string this_family(this_name.is_null() ? std::string_view() : this_name.string_at("family"));
    if (name.is_null() && !this_name.is_null()) {
      name = std::move(this_name);
      family = this_family;
    } else if (!this_family.empty() && !family.empty() && this_family != family) {
      run.warn(detail::where("PV1", 0, field, r), "a second practitioner; only the first is mapped");
      continue;
    }
    Json id = detail::professional_identifier(run, detail::value(pv1, field, 1, 1, r),
                                              detail::value(pv1, field, 9, 1, r), detail::value(pv1, field, 13, 1, r));
    if (id.is_null()) continue;
    bool seen = false;
    for (const Json& other : ids.items()) seen = seen || other == id;
    if (!seen) ids.push_back(std::move(id));
  }
  const std::string display = name.is_null() ? std::string() : detail::display_name(name);
  if (ids.size() == 0) {
    if (display.empty()) return std::nullopt;
    return Added{{}, display};
  }
  const Json& first = ids.items().front();
  Added added{detail::resource_id(run, "prac", {first.string_at("system"), first.string_at("value")}), display};
  Json p = Json::object();
  p.set("resourceType", Json::string("Practitioner"));
  p.set("id", Json::string(added.id));
  p.set("identifier", std::move(ids));
  if (!name.is_null()) p.set("name", detail::array_of(std::move(name)));
  detail::put_resource(run, std::move(p));
  return added;
}

Json location_entry(const Added& loc, std::string_view status, std::string_view period_key, const std::string& when) {
  Json e = Json::object();
  e.set("location", detail::reference("Location", loc.id, loc.display));
  if (!status.empty()) e.set("status", Json::string(std::string(status)));
  if (!when.empty()) {
    Json period = Json::object();
    period.set(std::string(period_key), Json::string(when));
    e.set("period", std::move(period));
  }
  return e;
}

// An event or admit time (EVN-2, EVN-6, PV1-44, MSH-7), converted; "" when absent or, with
// a warning naming the field, malformed: these times only place the visit in time, so a
// sender's bad value (EVN-2 "yesterday") leaves the time out rather than the whole message.
std::string optional_time(const Run& run, const SegmentRef& s, std::string_view segment, std::size_t field) {
  const std::string location = detail::where(segment, 0, field);
  auto t = detail::datetime_field(s, field, location);
  if (t) return std::move(*t);
  run.warn(location, "not a valid HL7 date/time (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]); the time is not mapped");
  return {};
}

// The first valid non-empty of several HL7 times, converted (optional_time).
struct TimeField {
  std::optional<SegmentRef> segment;
  std::string_view name;
  std::size_t field;
};

std::string first_time(const Run& run, std::initializer_list<TimeField> fields) {
  for (const TimeField& f : fields) {
    if (!f.segment) continue;
    if (std::string t = optional_time(run, *f.segment, f.name, f.field); !t.empty()) return t;
  }
  return std::string();
}

bool before(const std::string& a, const std::string& b) {
  auto ra = fhir::parse_fhir_date(a), rb = fhir::parse_fhir_date(b);
  return ra && rb && ra->begin < rb->begin;
}

fhir::Status map_visit(const Run& run) {
  const std::string& event = run.out.event;
  const bool person_event = event == "A28" || event == "A31";
  const auto pv1 = run.message.find("PV1");
  if (!pv1) {
    if (!person_event) run.warn("PV1", "no PV1 segment; only the Patient is mapped");
    return fhir::Ok{};
  }
  const std::string visit = detail::value(*pv1, 19, 1);
  if (person_event && visit.empty()) return fhir::Ok{};  // a person-level update without a visit
  const auto evn = run.message.find("EVN");
  const SegmentRef msh = run.message.msh();

  const std::string admit = optional_time(run, *pv1, "PV1", 44);
  auto discharge = detail::datetime_field(*pv1, 45, "PV1-45");
  if (!discharge) return std::move(discharge).issue();
  const std::string_view status = encounter_status(event, !admit.empty(), !discharge->empty());

  std::string visit_system, encounter_id;
  if (!visit.empty()) {
    std::string authority = detail::value(*pv1, 19, 4, 1);
    if (authority.empty()) authority = detail::value(*pv1, 19, 4, 2);
    visit_system = detail::local_system(run, authority, "visit");
    encounter_id = detail::resource_id(run, "enc", {"visit", visit_system, visit});
  } else {
    run.warn("PV1-19", "no visit number; the Encounter id comes from the message control id, so later messages "
                       "about this visit cannot update it");
    encounter_id = detail::resource_id(run, "enc", {"message", run.message.control_id()});
  }
  run.out.key_locations.emplace_back("Encounter/" + encounter_id, visit.empty() ? "MSH-10" : "PV1-19");

  // Period: PV1-44/45; an admission or registration without PV1-44 starts at the event time
  // (EVN-6, else EVN-2), a discharge without PV1-45 ends then. The end is kept only for a
  // finished encounter (A13 cancels the discharge PV1-45 may still carry).
  std::string start = admit, end = status == "finished" ? *discharge : std::string();
  if (start.empty() && (event == "A01" || event == "A04")) start = first_time(run, {{evn, "EVN", 6}, {evn, "EVN", 2}});
  if (end.empty() && event == "A03") end = first_time(run, {{evn, "EVN", 6}, {evn, "EVN", 2}});
  if (!start.empty() && !end.empty() && before(end, start)) {
    run.warn("PV1-45", "the discharge is before the admission; the end of the period is not mapped");
    end.clear();
  }

  Json encounter = Json::object();
  encounter.set("resourceType", Json::string("Encounter"));
  encounter.set("id", Json::string(encounter_id));
  if (!visit.empty()) {
    Json id = Json::object();
    id.set("type", detail::identifier_type("VN"));
    id.set("system", Json::string(visit_system));
    id.set("value", Json::string(visit));
    encounter.set("identifier", detail::array_of(std::move(id)));
  }
  encounter.set("status", Json::string(std::string(status)));
  const EncounterClass cls = encounter_class(run, detail::value(*pv1, 2));
  encounter.set("class", fhir::coding(cls.system, cls.code, cls.display));

  if (auto doctor = add_practitioner(run, *pv1, 7)) {
    Json participant = Json::object();
    participant.set("type", detail::array_of(fhir::codeable_concept(
                                fhir::coding(kParticipationTypeSystem, "ATND", "attender"))));
    if (!doctor->id.empty()) {
      participant.set("individual", detail::reference("Practitioner", doctor->id, doctor->display));
    } else {
      Json individual = Json::object();
      individual.set("display", Json::string(doctor->display));
      participant.set("individual", std::move(individual));
    }
    encounter.set("participant", detail::array_of(std::move(participant)));
  }

  if (!start.empty() || !end.empty()) {
    Json period = Json::object();
    detail::set_string(period, "start", start);
    detail::set_string(period, "end", end);
    encounter.set("period", std::move(period));
  }

  Json locations = Json::array();
  const auto current = add_location(run, *pv1, 3);
  if (event == "A02") {
    // A transfer: PV1-3 is the new location, PV1-6 the one the patient left (HL7 v2.5 3.3.2).
    const std::string moved = first_time(run, {{evn, "EVN", 6}, {evn, "EVN", 2}});
    const auto prior = add_location(run, *pv1, 6);
    if (prior && (!current || prior->id != current->id))
      locations.push_back(location_entry(*prior, "completed", "end", moved));
    if (current) locations.push_back(location_entry(*current, "active", "start", moved));
  } else if (current) {
    locations.push_back(location_entry(*current, location_status(status), {}, {}));
  }
  detail::set_json(encounter, "location", std::move(locations));

  const std::string facility = detail::value(msh, 4, 1);
  const std::string ods = detail::looks_like_ods(facility) ? facility : run.context.source_ods;
  if (!ods.empty()) {
    Json provider = Json::object();
    provider.set("identifier", fhir::identifier(fhir::uk::kOdsOrganisationSystem, ods));
    encounter.set("serviceProvider", std::move(provider));
  }
  detail::put_resource(run, std::move(encounter));

  // The contact for the access policy: PV1-44, else EVN-2, else MSH-7 (mapping.h). A
  // cancelled admission (A11) records none: it may have been entered for the wrong patient.
  if (status == "cancelled") return fhir::Ok{};
  const std::string at = first_time(run, {{pv1, "PV1", 44}, {evn, "EVN", 2}, {msh, "MSH", 7}});
  if (ods.empty() || at.empty()) {
    run.warn(ods.empty() ? "MSH-4" : "MSH-7", "no time or organisation for the encounter event; none is recorded");
  } else {
    run.out.encounter = EncounterEvent{ods, at};
  }
  return fhir::Ok{};
}

// ---- A40 merge ---------------------------------------------------------------------------

fhir::Status map_merge(const Run& run, std::size_t pid_index) {
  const Message& m = run.message;
  IdentifierReader reader(run);
  std::size_t mrg_count = 0;
  for (std::size_t i = pid_index + 1; i < m.segment_count(); ++i) {
    const SegmentRef s = m.segment(i);
    if (s.id() == "PID") {
      // HL7 lets an A40 carry several patient groups; merging only the first would drop
      // the others after the message is acknowledged, so the message is refused instead.
      return Issue::make(ErrorCode::invalid_value,
                         "PID[2]: a second patient group; the gateway applies one merge per message: send each in a "
                         "message of its own",
                         "PID[2]");
    }
    if (s.id() != "MRG") continue;
    ++mrg_count;
    const std::size_t occurrence = mrg_count == 1 ? 0 : mrg_count;
    reader.read(s, "MRG", occurrence, 1);  // prior patient identifier list
    reader.read(s, "MRG", occurrence, 2);  // prior alternate patient id
  }
  if (mrg_count == 0)
    return Issue::make(ErrorCode::missing_value, "an A40 needs an MRG segment naming the record that is merged", "MRG");

  const Json* survivors = run.out.patient.find("identifier");
  MergeRequest merge;
  for (std::size_t i = 0; i < reader.identifiers().items().size(); ++i) {
    Json& id = reader.identifiers().items()[i];
    bool same = false;
    for (const Json& s : survivors->items())
      same = same || (s.string_at("system") == id.string_at("system") && s.string_at("value") == id.string_at("value"));
    if (same) {
      run.warn(reader.locations()[i], "an identifier the surviving patient also carries; it is not retired");
      continue;
    }
    merge.retired_identifiers.push_back(std::move(id));
  }
  if (merge.retired_identifiers.empty())
    return Issue::make(ErrorCode::missing_value, "MRG-1 (prior patient identifier list) names no other identifier",
                       "MRG-1");
  run.out.merge = std::move(merge);
  return fhir::Ok{};
}

}  // namespace

bool is_supported(std::string_view message_type) {
  return std::find(kSupported.begin(), kSupported.end(), message_type) != kSupported.end();
}

std::string nhs_number_of(const Message& message, const MappingContext& context) {
  MappedMessage scratch;
  const Run run{message, context, scratch};
  for (std::size_t i = 0; i < message.segment_count(); ++i) {
    if (message.segment(i).id() != "PID") continue;
    IdentifierReader ids(run);
    ids.read(message.segment(i), "PID", 0, 3);
    return ids.nhs_number();
  }
  return {};
}

fhir::Result<MappedMessage> map_message(const Message& message, const MappingContext& context) {
  const std::string type = message.message_type();
  if (!is_supported(type)) {
    // A type we take with a trigger we do not (or none at all) is an unsupported event
    // (MSH-9.2, table 0357 code 201), not an unsupported message type. The text names MSH-9
    // as received, not as read.
    const std::string_view code = std::string_view(type).substr(0, type.find('^'));
    const bool known_type = std::any_of(kSupported.begin(), kSupported.end(),
                                        [&](std::string_view t) { return t.substr(0, t.find('^')) == code; });
    return Issue::make(ErrorCode::not_supported,
                       message.message_type_as_sent() + " is not mapped; this adapter maps " + supported_list(),
                       known_type ? "MSH-9.2" : "MSH-9");
  }
  MappedMessage out;
  out.message_type = type;
  out.event = type.substr(4);
  const Run run{message, context, out};

  std::optional<std::size_t> pid_index;
  for (std::size_t i = 0; i < message.segment_count() && !pid_index; ++i)
    if (message.segment(i).id() == "PID") pid_index = i;
  if (!pid_index)
    return Issue::make(ErrorCode::missing_value, "the message has no PID segment: the patient is required", "PID");
  if (auto s = map_patient(run, message.segment(*pid_index)); !s) return std::move(s).issue();

  fhir::Status s = fhir::Ok{};
  if (out.event == "A40") s = map_merge(run, *pid_index);
  else if (type == "ORU^R01") s = detail::map_results(run, *pid_index);
  else s = map_visit(run);
  if (!s) return std::move(s).issue();
  return out;
}

}  // namespace gw::hl7v2
