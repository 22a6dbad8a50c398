// SPDX-License-Identifier: Apache-2.0
// identity_from_patient / pointer_from_document_reference (see fhir_mapping.h). Element
// shapes follow FHIR R4 Patient and DocumentReference and the UK Core Patient profile
// (NHS number slice with the NHSNumberVerificationStatus extension inside the identifier).
#include "gateway/locator/fhir_mapping.h"

#include <string>

#include "fhir/date_range.h"
#include "fhir/resource_types.h"
#include "fhir/structure_check.h"
#include "gateway/locator/index_transaction.h"

namespace gw::locator {
namespace {

using fhir::ErrorCode;
using fhir::Issue;
using fhir::Json;

std::string at(std::string_view base, std::size_t i) { return std::string(base) + "[" + std::to_string(i) + "]"; }

std::string dot(std::string_view base, std::string_view field) {
  std::string s(base);
  s += '.';
  s += field;
  return s;
}

// Reads optional member `key` of `obj` as a string into `out` (bounded by `limit`).
fhir::Status read_string(const Json& obj, std::string_view key, const std::string& expr, std::size_t limit,
                         std::string& out) {
  const Json* v = obj.find(key);
  if (v == nullptr) return fhir::Ok{};
  if (!v->is_string()) return Issue::make(ErrorCode::invalid_resource, expr + " must be a string", expr);
  if (v->text().size() > limit)
    return Issue::make(ErrorCode::invalid_value, expr + " is longer than " + std::to_string(limit) + " bytes", expr);
  out = v->text();
  return fhir::Ok{};
}

// Member `key` as an array, or null when absent; invalid_resource when present but not one.
fhir::Result<const Json*> read_array(const Json& obj, std::string_view key, const std::string& expr) {
  const Json* v = obj.find(key);
  if (v == nullptr) return static_cast<const Json*>(nullptr);
  if (!v->is_array()) return Issue::make(ErrorCode::invalid_resource, expr + " must be an array", expr);
  return v;
}

fhir::Status expect_object(const Json& v, const std::string& expr) {
  if (!v.is_object()) return Issue::make(ErrorCode::invalid_resource, expr + " must be an object", expr);
  return fhir::Ok{};
}

fhir::Status expect_type(const Json& resource, std::string_view type) {
  if (!resource.is_object() || resource.string_at("resourceType") != type)
    return Issue::make(ErrorCode::invalid_resource, "expected a " + std::string(type) + " resource",
                       std::string(type) + ".resourceType");
  return fhir::Ok{};
}

// The UK Core verification status code inside an NHS number identifier.
fhir::Status read_verification(const Json& identifier, const std::string& expr, std::string& out) {
  auto exts = read_array(identifier, "extension", dot(expr, "extension"));
  if (!exts) return std::move(exts).issue();
  if (*exts == nullptr) return fhir::Ok{};
  for (std::size_t i = 0; i < (*exts)->items().size(); ++i) {
    const Json& ext = (*exts)->items()[i];
    const std::string e = at(dot(expr, "extension"), i);
    if (auto s = expect_object(ext, e); !s) return s;
    if (ext.string_at("url") != kNhsNumberVerificationExtension) continue;
    const Json* cc = ext.find("valueCodeableConcept");
    if (cc == nullptr) continue;
    if (auto s = expect_object(*cc, dot(e, "valueCodeableConcept")); !s) return s;
    auto codings = read_array(*cc, "coding", dot(e, "valueCodeableConcept.coding"));
    if (!codings) return std::move(codings).issue();
    if (*codings == nullptr) continue;
    for (std::size_t k = 0; k < (*codings)->items().size(); ++k) {
      const Json& coding = (*codings)->items()[k];
      const std::string ce = at(dot(e, "valueCodeableConcept.coding"), k);
      if (auto s = expect_object(coding, ce); !s) return s;
      std::string code;
      if (auto s = read_string(coding, "code", dot(ce, "code"), kMaxCodeBytes, code); !s) return s;
      if (!code.empty()) {
        out = code;
        return fhir::Ok{};
      }
    }
  }
  return fhir::Ok{};
}

// Identifiers without both a system and a value cannot be indexed; `unusable` counts them.
fhir::Status read_identifiers(const Json& patient, std::string_view source_ods, IdentityClaim& claim,
                              std::size_t& unusable) {
  auto ids = read_array(patient, "identifier", "Patient.identifier");
  if (!ids) return std::move(ids).issue();
  if (*ids == nullptr) return fhir::Ok{};
  if ((*ids)->items().size() > kMaxIdentifiers)
    return Issue::make(ErrorCode::invalid_value, "more than " + std::to_string(kMaxIdentifiers) + " identifiers",
                       "Patient.identifier");
  bool have_nhs = false;
  for (std::size_t i = 0; i < (*ids)->items().size(); ++i) {
    const Json& id = (*ids)->items()[i];
    const std::string e = at("Patient.identifier", i);
    if (auto s = expect_object(id, e); !s) return s;
    std::string system, value;
    if (auto s = read_string(id, "system", dot(e, "system"), kMaxUriBytes, system); !s) return s;
    if (auto s = read_string(id, "value", dot(e, "value"), kMaxTextBytes, value); !s) return s;
    if (system.empty() || value.empty()) {  // not indexable
      ++unusable;
      continue;
    }
    if (system == kNhsNumberSystem) {
      if (have_nhs && value != claim.demographics.nhs_number)
        return Issue::make(ErrorCode::invalid_resource, "a Patient carries at most one NHS number", e);
      if (value.size() > kMaxCodeBytes)
        return Issue::make(ErrorCode::invalid_value, "NHS number is too long", dot(e, "value"));
      have_nhs = true;
      claim.demographics.nhs_number = value;
      if (auto s = read_verification(id, e, claim.demographics.nhs_number_verification); !s) return s;
      continue;
    }
    claim.identifiers.push_back({std::move(system), std::move(value), std::string(source_ods)});
  }
  return fhir::Ok{};
}

// The family and given names of Patient.name[i] (`e`), bounded.
fhir::Status read_human_name(const Json& name, const std::string& e, std::string& family,
                             std::vector<std::string>& given) {
  if (auto s = expect_object(name, e); !s) return s;
  if (auto s = read_string(name, "family", dot(e, "family"), kMaxTextBytes, family); !s) return s;
  auto givens = read_array(name, "given", dot(e, "given"));
  if (!givens) return std::move(givens).issue();
  if (*givens == nullptr) return fhir::Ok{};
  if ((*givens)->items().size() > kMaxGivenNames)
    return Issue::make(ErrorCode::invalid_value, "more than " + std::to_string(kMaxGivenNames) + " given names",
                       dot(e, "given"));
  for (std::size_t i = 0; i < (*givens)->items().size(); ++i) {
    const Json& g = (*givens)->items()[i];
    const std::string ge = at(dot(e, "given"), i);
    if (!g.is_string()) return Issue::make(ErrorCode::invalid_resource, ge + " must be a string", ge);
    if (g.text().size() > kMaxTextBytes) return Issue::make(ErrorCode::invalid_value, ge + " is too long", ge);
    given.push_back(g.text());
  }
  return fhir::Ok{};
}

// The primary name into family/given; every other name with a family or given name into
// other_names, in order (a name with only text cannot be searched and is not kept).
fhir::Status read_names(const Json& patient, Demographics& d) {
  auto names = read_array(patient, "name", "Patient.name");
  if (!names) return std::move(names).issue();
  if (*names == nullptr || (*names)->items().empty()) return fhir::Ok{};
  const auto& items = (*names)->items();
  if (items.size() > kMaxNames)
    return Issue::make(ErrorCode::invalid_value, "more than " + std::to_string(kMaxNames) + " names", "Patient.name");
  std::size_t pick = 0;
  bool found = false;
  for (std::string_view use : {"official", "usual"}) {
    for (std::size_t i = 0; i < items.size() && !found; ++i) {
      if (items[i].is_object() && items[i].string_at("use") == use) {
        pick = i;
        found = true;
      }
    }
  }
  for (std::size_t i = 0; i < items.size(); ++i) {
    const std::string e = at("Patient.name", i);
    if (i == pick) {
      if (auto s = read_human_name(items[i], e, d.family, d.given); !s) return s;
      continue;
    }
    HumanName other;
    if (auto s = read_human_name(items[i], e, other.family, other.given); !s) return s;
    if (other.family.empty() && other.given.empty()) continue;
    if (auto s = read_string(items[i], "use", dot(e, "use"), kMaxCodeBytes, other.use); !s) return s;
    if (!other.use.empty() && !is_name_use(other.use))
      return Issue::make(ErrorCode::invalid_value, dot(e, "use") + " is not a FHIR name use code", dot(e, "use"));
    d.other_names.push_back(std::move(other));
  }
  return fhir::Ok{};
}

fhir::Status read_postcode(const Json& patient, Demographics& d) {
  auto addresses = read_array(patient, "address", "Patient.address");
  if (!addresses) return std::move(addresses).issue();
  if (*addresses == nullptr) return fhir::Ok{};
  std::string fallback;
  for (std::size_t i = 0; i < (*addresses)->items().size(); ++i) {
    const Json& a = (*addresses)->items()[i];
    const std::string e = at("Patient.address", i);
    if (auto s = expect_object(a, e); !s) return s;
    std::string pc;
    if (auto s = read_string(a, "postalCode", dot(e, "postalCode"), kMaxCodeBytes, pc); !s) return s;
    if (pc.empty()) continue;
    if (a.string_at("use") == "home") {
      d.postcode = pc;
      return fhir::Ok{};
    }
    if (fallback.empty()) fallback = pc;
  }
  d.postcode = fallback;
  return fhir::Ok{};
}

// The ODS code of an organisation Reference given by identifier; empty when it has none.
fhir::Result<std::string> ods_of_reference(const Json& ref, const std::string& expr) {
  if (auto s = expect_object(ref, expr); !s) return std::move(s).issue();
  const Json* id = ref.find("identifier");
  if (id == nullptr) return std::string();
  if (auto s = expect_object(*id, dot(expr, "identifier")); !s) return std::move(s).issue();
  std::string system, value;
  if (auto s = read_string(*id, "system", dot(expr, "identifier.system"), kMaxUriBytes, system); !s)
    return std::move(s).issue();
  if (auto s = read_string(*id, "value", dot(expr, "identifier.value"), kMaxCodeBytes, value); !s)
    return std::move(s).issue();
  if (system != kOdsOrganisationSystem) return std::string();
  return value;
}

fhir::Status read_gp(const Json& patient, Demographics& d) {
  auto gps = read_array(patient, "generalPractitioner", "Patient.generalPractitioner");
  if (!gps) return std::move(gps).issue();
  if (*gps == nullptr) return fhir::Ok{};
  for (std::size_t i = 0; i < (*gps)->items().size(); ++i) {
    auto ods = ods_of_reference((*gps)->items()[i], at("Patient.generalPractitioner", i));
    if (!ods) return std::move(ods).issue();
    if (!ods->empty()) {
      d.gp_practice_ods = std::move(*ods);
      break;
    }
  }
  return fhir::Ok{};
}

// The first coding with a code of CodeableConcept `cc`.
fhir::Status read_coding(const Json& cc, const std::string& expr, std::string* system, std::string& code,
                         std::string& display) {
  if (auto s = expect_object(cc, expr); !s) return s;
  auto codings = read_array(cc, "coding", dot(expr, "coding"));
  if (!codings) return std::move(codings).issue();
  if (*codings == nullptr) return fhir::Ok{};
  for (std::size_t i = 0; i < (*codings)->items().size(); ++i) {
    const Json& c = (*codings)->items()[i];
    const std::string e = at(dot(expr, "coding"), i);
    if (auto s = expect_object(c, e); !s) return s;
    std::string sys, cd, disp;
    if (auto s = read_string(c, "system", dot(e, "system"), kMaxUriBytes, sys); !s) return s;
    if (auto s = read_string(c, "code", dot(e, "code"), kMaxTextBytes, cd); !s) return s;
    if (auto s = read_string(c, "display", dot(e, "display"), kMaxTextBytes, disp); !s) return s;
    if (cd.empty()) continue;
    if (system != nullptr && !sys.empty()) *system = sys;
    code = cd;
    display = disp;
    return fhir::Ok{};
  }
  return fhir::Ok{};
}

bool is_date(std::string_view v) {
  return (v.size() == 4 || v.size() == 7 || v.size() == 10) && fhir::parse_fhir_date(v).ok();
}

}  // namespace

fhir::Result<IdentityClaim> identity_from_patient(const Json& patient, std::string_view source_ods) {
  if (auto s = expect_type(patient, "Patient"); !s) return std::move(s).issue();
  if (source_ods.size() > kMaxCodeBytes)
    return Issue::make(ErrorCode::invalid_value, "source ODS code is too long", "source_ods");
  IdentityClaim claim;
  claim.source_ods = std::string(source_ods);
  Demographics& d = claim.demographics;
  std::size_t unusable = 0;
  if (auto s = read_identifiers(patient, source_ods, claim, unusable); !s) return std::move(s).issue();
  if (auto s = read_names(patient, d); !s) return std::move(s).issue();
  if (auto s = read_string(patient, "birthDate", "Patient.birthDate", kMaxCodeBytes, d.birth_date); !s)
    return std::move(s).issue();
  if (!d.birth_date.empty() && !is_date(d.birth_date))
    return Issue::make(ErrorCode::invalid_value, "Patient.birthDate must be YYYY, YYYY-MM or YYYY-MM-DD",
                       "Patient.birthDate");
  if (auto s = read_string(patient, "gender", "Patient.gender", kMaxCodeBytes, d.gender); !s)
    return std::move(s).issue();
  if (!d.gender.empty() && d.gender != "male" && d.gender != "female" && d.gender != "other" && d.gender != "unknown")
    return Issue::make(ErrorCode::invalid_value, "Patient.gender must be male, female, other or unknown",
                       "Patient.gender");
  if (auto s = read_string(patient, "deceasedDateTime", "Patient.deceasedDateTime", kMaxCodeBytes, d.deceased); !s)
    return std::move(s).issue();
  if (!d.deceased.empty() && !fhir::parse_fhir_date(d.deceased).ok())
    return Issue::make(ErrorCode::invalid_value, "Patient.deceasedDateTime must be a FHIR dateTime",
                       "Patient.deceasedDateTime");
  if (auto s = read_postcode(patient, d); !s) return std::move(s).issue();
  if (auto s = read_gp(patient, d); !s) return std::move(s).issue();
  // With nothing to match on, every later claim for the same person would make yet another
  // record (an NHS number that fails its check is still kept: it is matched as received by
  // nothing, but it is the source's assertion).
  if (d.nhs_number.empty() && claim.identifiers.empty()) {
    std::string why = "the Patient has no identifier the index can match on: give an NHS number (system ";
    why.append(kNhsNumberSystem).append(") or a local identifier with both system and value");
    if (unusable > 0) why.append("; ").append(std::to_string(unusable)).append(" identifier(s) without a system or value");
    return Issue::make(ErrorCode::missing_value, std::move(why), "Patient.identifier");
  }
  return claim;
}

namespace {

// Where a pointer may send a client: https only (RFC 9110 4.2.2), to a host, with no user
// information and no spaces or control characters. Anything else (javascript:, data:, file:,
// plain http) would have clients follow a URL that no TLS certificate vouches for.
bool is_https_url(std::string_view url) {
  constexpr std::string_view kScheme = "https://";
  if (url.size() <= kScheme.size()) return false;
  for (std::size_t i = 0; i < kScheme.size(); ++i) {
    const char c = url[i];
    if ((c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c) != kScheme[i]) return false;
  }
  for (const char c : url)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return false;
  const std::string_view rest = url.substr(kScheme.size());
  const std::string_view authority = rest.substr(0, rest.find_first_of("/?#"));
  return !authority.empty() && authority.find('@') == std::string_view::npos && authority.front() != ':';
}

}  // namespace

fhir::Result<Pointer> pointer_from_document_reference(const Json& doc, bool id_ignored) {
  if (auto s = expect_type(doc, "DocumentReference"); !s) return std::move(s).issue();
  Pointer p;
  if (!id_ignored)
    if (auto s = read_string(doc, "id", "DocumentReference.id", kMaxIdBytes, p.id); !s) return std::move(s).issue();
  // Refused here, naming the DocumentReference: the locator's check would refuse the pointer
  // later, and with it the whole import record (its Patient and that Patient's other pointers).
  if (!p.id.empty() && !fhir::is_valid_id(p.id))
    return Issue::make(ErrorCode::invalid_value,
                       "DocumentReference.id must be 1-64 characters of A-Z, a-z, 0-9, '-' and '.'",
                       "DocumentReference.id");
  std::string status;
  if (auto s = read_string(doc, "status", "DocumentReference.status", kMaxCodeBytes, status); !s)
    return std::move(s).issue();
  if (status.empty())
    return Issue::make(ErrorCode::missing_value, "DocumentReference.status is required", "DocumentReference.status");
  if (status != "current")
    return Issue::make(ErrorCode::invalid_value,
                       "only current pointers are indexed; delete a superseded or entered-in-error one instead",
                       "DocumentReference.status");

  const Json* type = doc.find("type");
  if (type == nullptr)
    return Issue::make(ErrorCode::missing_value, "DocumentReference.type is required", "DocumentReference.type");
  if (auto s = read_coding(*type, "DocumentReference.type", &p.type_system, p.type_code, p.type_display); !s)
    return std::move(s).issue();
  if (p.type_code.empty())
    return Issue::make(ErrorCode::missing_value, "DocumentReference.type needs a coding with a code",
                       "DocumentReference.type.coding");

  auto categories = read_array(doc, "category", "DocumentReference.category");
  if (!categories) return std::move(categories).issue();
  if (*categories != nullptr && !(*categories)->items().empty()) {
    if (auto s = read_coding((*categories)->items()[0], "DocumentReference.category[0]", nullptr, p.category_code,
                             p.category_display);
        !s)
      return std::move(s).issue();
  }

  const Json* custodian = doc.find("custodian");
  if (custodian == nullptr)
    return Issue::make(ErrorCode::missing_value, "DocumentReference.custodian (the owner's ODS code) is required",
                       "DocumentReference.custodian");
  auto ods = ods_of_reference(*custodian, "DocumentReference.custodian");
  if (!ods) return std::move(ods).issue();
  if (ods->empty())
    return Issue::make(ErrorCode::missing_value,
                       "DocumentReference.custodian needs an identifier with system " +
                           std::string(kOdsOrganisationSystem),
                       "DocumentReference.custodian.identifier");
  p.source_ods = std::move(*ods);

  if (const Json* subject = doc.find("subject"); subject != nullptr) {
    if (auto s = expect_object(*subject, "DocumentReference.subject"); !s) return std::move(s).issue();
    std::string ref;
    if (auto s = read_string(*subject, "reference", "DocumentReference.subject.reference", kMaxTextBytes, ref); !s)
      return std::move(s).issue();
    if (!ref.empty()) {
      if (ref.rfind("Patient/", 0) != 0 || ref.size() == 8)
        return Issue::make(ErrorCode::invalid_value, "DocumentReference.subject.reference must be Patient/<id>",
                           "DocumentReference.subject.reference");
      p.patient_id = ref.substr(8);
    }
  }

  // The source's own date is kept (the index's time of writing is meta.lastUpdated), so a
  // pointer imported or maintained long after the record was made still says when that was.
  if (auto s = read_string(doc, "date", "DocumentReference.date", kMaxCodeBytes, p.date); !s)
    return std::move(s).issue();
  if (!p.date.empty() && !is_fhir_instant(p.date))
    return Issue::make(ErrorCode::invalid_value,
                       "DocumentReference.date must be a FHIR instant with seconds and a time zone, e.g. "
                       "2026-03-01T09:30:00Z",
                       "DocumentReference.date");

  auto contents = read_array(doc, "content", "DocumentReference.content");
  if (!contents) return std::move(contents).issue();
  if (*contents == nullptr || (*contents)->items().empty())
    return Issue::make(ErrorCode::missing_value, "DocumentReference.content is required", "DocumentReference.content");
  const Json& content = (*contents)->items()[0];
  if (auto s = expect_object(content, "DocumentReference.content[0]"); !s) return std::move(s).issue();
  const Json* attachment = content.find("attachment");
  if (attachment == nullptr)
    return Issue::make(ErrorCode::missing_value, "DocumentReference.content[0].attachment is required",
                       "DocumentReference.content[0].attachment");
  if (auto s = expect_object(*attachment, "DocumentReference.content[0].attachment"); !s)
    return std::move(s).issue();
  if (auto s = read_string(*attachment, "url", "DocumentReference.content[0].attachment.url", kMaxUrlBytes, p.url); !s)
    return std::move(s).issue();
  if (p.url.empty())
    return Issue::make(ErrorCode::missing_value, "the pointer needs content[0].attachment.url: where the record is",
                       "DocumentReference.content[0].attachment.url");
  if (!is_https_url(p.url))
    return Issue::make(ErrorCode::invalid_value,
                       "content[0].attachment.url must be an https:// URL naming a host (clients fetch the record "
                       "from it with their credentials)",
                       "DocumentReference.content[0].attachment.url");
  std::string content_type;
  if (auto s = read_string(*attachment, "contentType", "DocumentReference.content[0].attachment.contentType",
                           kMaxTextBytes, content_type);
      !s)
    return std::move(s).issue();
  if (!content_type.empty()) p.content_type = content_type;

  auto exts = read_array(doc, "extension", "DocumentReference.extension");
  if (!exts) return std::move(exts).issue();
  if (*exts != nullptr) {
    for (std::size_t i = 0; i < (*exts)->items().size(); ++i) {
      const Json& ext = (*exts)->items()[i];
      const std::string e = at("DocumentReference.extension", i);
      if (auto s = expect_object(ext, e); !s) return std::move(s).issue();
      if (ext.string_at("url") != kResourceTypesExtension) continue;
      std::string code;
      if (auto s = read_string(ext, "valueCode", dot(e, "valueCode"), kMaxTextBytes, code); !s)
        return std::move(s).issue();
      if (!fhir::is_r4_resource_type(code))
        return Issue::make(ErrorCode::invalid_value, "not a FHIR R4 resource type", dot(e, "valueCode"));
      if (p.resource_types.size() >= kMaxResourceTypes)
        return Issue::make(ErrorCode::invalid_value, "too many resource types", e);
      p.resource_types.push_back(code);
    }
  }
  if (p.resource_types.empty() && fhir::is_r4_resource_type(p.type_code)) p.resource_types.push_back(p.type_code);
  return p;
}

std::optional<Identifier> subject_identifier(const Json& doc) {
  const Json* subject = doc.is_object() ? doc.find("subject") : nullptr;
  const Json* id = subject != nullptr && subject->is_object() ? subject->find("identifier") : nullptr;
  if (id == nullptr || !id->is_object()) return std::nullopt;
  const std::string_view system = id->string_at("system"), value = id->string_at("value");
  if (system.empty() || value.empty()) return std::nullopt;
  return Identifier{std::string(system), std::string(value), std::string()};
}

}  // namespace gw::locator
