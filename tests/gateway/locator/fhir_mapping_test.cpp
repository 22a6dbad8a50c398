// SPDX-License-Identifier: Apache-2.0
// FHIR JSON -> locator values: synthpop's UK Core Patients and NRL-shaped DocumentReferences
// map and import cleanly, and malformed resources are refused naming the element.
#include <doctest/doctest.h>

#include "gateway/locator/fhir_mapping.h"
#include "gateway/locator/index_transaction.h"
#include "locator_test_support.h"
#include "tools/synthpop/population.h"

using namespace gw::locator;
using namespace gw::locator::test;

namespace {

fhir::Json parse(std::string_view text) {
  auto j = fhir::parse_json(text);
  REQUIRE(j.ok());
  return std::move(*j);
}

fhir::Issue patient_issue(std::string_view json) {
  auto r = identity_from_patient(parse(json), "RX1");
  REQUIRE_FALSE(r.ok());
  return r.issue();
}

fhir::Issue docref_issue(std::string_view json) {
  auto r = pointer_from_document_reference(parse(json));
  REQUIRE_FALSE(r.ok());
  return r.issue();
}

constexpr std::string_view kDocRef = R"({"resourceType":"DocumentReference","id":"RX1-1","status":"current",
  "type":{"coding":[{"system":"http://snomed.info/sct","code":"736253002","display":"Mental health crisis plan"}]},
  "category":[{"coding":[{"system":"http://snomed.info/sct","code":"734163000","display":"Care plan"}]}],
  "subject":{"reference":"Patient/abc"},
  "custodian":{"identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"RX1"}},
  "extension":[
    {"url":"https://fhir.example.nhs.uk/StructureDefinition/Extension-RecordLocator-ResourceTypes","valueCode":"CarePlan"},
    {"url":"https://fhir.example.nhs.uk/StructureDefinition/Extension-RecordLocator-ResourceTypes","valueCode":"Goal"}],
  "content":[{"attachment":{"contentType":"application/pdf","url":"https://rx1.example.nhs.uk/plan/1"}}]})";

}  // namespace

TEST_CASE("FHIR mapping: synthpop patients and pointers map and import without loss") {
  synthpop::Options o;
  o.count = 60;
  o.seed = 11;
  o.missing_nhs_rate = 0.1;
  auto gen = synthpop::PopulationGenerator::create(o);
  REQUIRE(gen.ok());
  std::vector<ImportRecord> records;
  std::vector<std::string> nhs_numbers;
  while (!gen->done()) {
    const synthpop::PatientRecord rec = gen->next();
    auto claim = identity_from_patient(rec.patient, "SYN");
    REQUIRE(claim.ok());
    const Demographics& d = claim->demographics;
    CHECK_FALSE(d.family.empty());
    CHECK_FALSE(d.given.empty());
    CHECK(d.birth_date.size() == 10);
    CHECK_FALSE(d.gender.empty());
    CHECK_FALSE(d.postcode.empty());
    CHECK_FALSE(d.gp_practice_ods.empty());
    CHECK(claim->identifiers.size() == 3);
    for (const auto& id : claim->identifiers) CHECK(id.source == "SYN");
    if (!d.nhs_number.empty()) {
      CHECK(fhir::is_valid_nhs_number(d.nhs_number));
      CHECK((d.nhs_number_verification == "01" || d.nhs_number_verification == "02"));
    }
    nhs_numbers.push_back(d.nhs_number);
    ImportRecord ir;
    ir.identity = std::move(*claim);
    REQUIRE(rec.pointers.size() == 5);
    for (const auto& doc : rec.pointers) {
      auto p = pointer_from_document_reference(doc);
      REQUIRE(p.ok());
      CHECK(p->id == doc.string_at("id"));
      CHECK(p->source_ods.size() >= 3);
      CHECK(p->url.rfind("https://", 0) == 0);
      if (p->type_code == "social-care")
        CHECK(p->resource_types.empty());
      else
        CHECK(p->resource_types == std::vector<std::string>{p->type_code});
      const auto subject = subject_identifier(doc);
      REQUIRE(subject.has_value());
      if (!d.nhs_number.empty()) CHECK(subject->value == d.nhs_number);
      ir.pointers.push_back(std::move(*p));
    }
    records.push_back(std::move(ir));
  }
  auto l = make_fake_locator();
  auto result = l->import(records);
  REQUIRE(result.ok());
  CHECK(result->rejected == 0);
  CHECK(result->created + result->matched == records.size());
  CHECK(l->stats()->pointers == static_cast<std::int64_t>(records.size() * 5));
  for (std::size_t i = 0; i < records.size(); ++i) {
    if (nhs_numbers[i].empty()) continue;
    CHECK(*l->lookup_identifier(kNhsNumberSystem, nhs_numbers[i]) == result->records[i]->patient_id);
  }
}

TEST_CASE("FHIR mapping: Patient elements are read as UK Core says") {
  auto claim = identity_from_patient(parse(R"({"resourceType":"Patient","id":"ignored",
    "identifier":[
      {"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919","extension":[{
        "url":"https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-NHSNumberVerificationStatus",
        "valueCodeableConcept":{"coding":[{"system":"https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatusEngland","code":"01"}]}}]},
      {"value":"no-system"},
      {"system":"https://trust.example.nhs.uk/Id/mrn","value":"M1"}],
    "name":[{"use":"maiden","family":"Old","given":["X"]},{"use":"usual","family":"Usual"},
            {"use":"official","family":"Smith","given":["Jane","Ann"]},{"text":"J. Smith"},{"given":["Jo"]}],
    "gender":"female","birthDate":"1980-05","deceasedBoolean":true,
    "address":[{"use":"work","postalCode":"W1 1AA"},{"use":"home","postalCode":"LS1 4AB"}],
    "generalPractitioner":[{"reference":"Practitioner/1"},
      {"identifier":{"system":"https://fhir.hl7.org.uk/Id/gmp-number","value":"G1"}},
      {"type":"Organization","identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"B86001"}}]})"),
                                     "RX1");
  REQUIRE(claim.ok());
  const Demographics& d = claim->demographics;
  CHECK(claim->source_ods == "RX1");
  CHECK(d.nhs_number == "9434765919");
  CHECK(d.nhs_number_verification == "01");
  REQUIRE(claim->identifiers.size() == 1);  // the one without a system cannot be indexed
  CHECK(claim->identifiers[0].value == "M1");
  CHECK(claim->identifiers[0].source == "RX1");
  CHECK(d.family == "Smith");
  CHECK(d.given == std::vector<std::string>{"Jane", "Ann"});
  // Every other name with a family or given name, in order (text alone cannot be searched).
  CHECK(d.other_names ==
        std::vector<HumanName>{{"maiden", "Old", {"X"}}, {"usual", "Usual", {}}, {"", "", {"Jo"}}});
  CHECK(d.birth_date == "1980-05");
  CHECK(d.gender == "female");
  CHECK(d.deceased.empty());
  CHECK(d.postcode == "LS1 4AB");
  CHECK(d.gp_practice_ods == "B86001");

  auto usual = identity_from_patient(
      parse(R"({"resourceType":"Patient","identifier":[{"system":"https://rx1.example.nhs.uk/mrn","value":"U1"}],
                "name":[{"family":"First"},{"use":"usual","family":"Usual"}],
                "address":[{"postalCode":"M1 1AA"}],"deceasedDateTime":"2020-01-02T03:04:05Z"})"),
      "RX1");
  REQUIRE(usual.ok());
  CHECK(usual->demographics.family == "Usual");
  CHECK(usual->demographics.postcode == "M1 1AA");
  CHECK(usual->demographics.deceased == "2020-01-02T03:04:05Z");
}

TEST_CASE("FHIR mapping: malformed Patients are refused naming the element") {
  CHECK(patient_issue(R"({"resourceType":"Observation"})").expression == "Patient.resourceType");
  CHECK(patient_issue(R"({"resourceType":"Patient","identifier":{}})").expression == "Patient.identifier");
  CHECK(patient_issue(R"({"resourceType":"Patient","identifier":[{"system":"s","value":7}]})").expression ==
        "Patient.identifier[0].value");
  const fhir::Issue two = patient_issue(R"({"resourceType":"Patient","identifier":[
      {"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"},
      {"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9000000009"}]})");
  CHECK(two.expression == "Patient.identifier[1]");
  CHECK(two.diagnostics.find("9000000009") == std::string::npos);  // values are never echoed
  CHECK(patient_issue(R"({"resourceType":"Patient","birthDate":"1980-02-30"})").expression == "Patient.birthDate");
  CHECK(patient_issue(R"({"resourceType":"Patient","birthDate":"1980-02-03T10:00:00Z"})").expression ==
        "Patient.birthDate");
  CHECK(patient_issue(R"({"resourceType":"Patient","gender":"F"})").expression == "Patient.gender");
  CHECK(patient_issue(R"({"resourceType":"Patient","name":[{"given":"Jane"}]})").expression == "Patient.name[0].given");
  CHECK(patient_issue(R"({"resourceType":"Patient","name":[{"family":"A"},{"given":"Jane"}]})").expression ==
        "Patient.name[1].given");
  CHECK(patient_issue(R"({"resourceType":"Patient","name":[{"family":"A"},{"use":"previous","family":"B"}]})")
            .expression == "Patient.name[1].use");
  std::string eleven = R"({"resourceType":"Patient","name":[{"family":"A"})";
  for (int i = 0; i < 10; ++i) eleven += R"(,{"family":"B"})";
  CHECK(patient_issue(eleven + "]}").expression == "Patient.name");
  CHECK(patient_issue(R"({"resourceType":"Patient","address":[{"postalCode":["LS1"]}]})").expression ==
        "Patient.address[0].postalCode");
  CHECK(patient_issue(R"({"resourceType":"Patient","deceasedDateTime":"yesterday"})").expression ==
        "Patient.deceasedDateTime");
}

TEST_CASE("FHIR mapping: a Patient with nothing to match on is refused, not indexed as a new record each time") {
  const fhir::Issue none = patient_issue(R"({"resourceType":"Patient","name":[{"family":"Smith"}],"gender":"male"})");
  CHECK(none.expression == "Patient.identifier");
  CHECK(none.code == fhir::ErrorCode::missing_value);
  CHECK(none.diagnostics.find("no identifier the index can match on") != std::string::npos);
  CHECK(patient_issue(R"({"resourceType":"Patient"})").expression == "Patient.identifier");
  // Identifiers without a system, or without a value, are counted in the refusal.
  const fhir::Issue unusable = patient_issue(
      R"({"resourceType":"Patient","identifier":[{"value":"abc"},{"system":"","value":"abc"},{"system":"urn:x"}]})");
  CHECK(unusable.expression == "Patient.identifier");
  CHECK(unusable.diagnostics.find("3 identifier(s) without a system or value") != std::string::npos);
  // One usable identifier is enough; an NHS number that fails its check digit is kept as received.
  CHECK(identity_from_patient(parse(R"({"resourceType":"Patient","identifier":[{"value":"abc"},
      {"system":"https://rx1.example.nhs.uk/mrn","value":"M1"}]})"), "RX1").ok());
  auto bad_check = identity_from_patient(
      parse(R"({"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765918"}]})"),
      "RX1");
  REQUIRE(bad_check.ok());
  CHECK(bad_check->demographics.nhs_number == "9434765918");
}

TEST_CASE("FHIR mapping: DocumentReference becomes a Pointer") {
  auto p = pointer_from_document_reference(parse(kDocRef));
  REQUIRE(p.ok());
  CHECK(p->id == "RX1-1");
  CHECK(p->patient_id == "abc");
  CHECK(p->source_ods == "RX1");
  CHECK(p->type_system == "http://snomed.info/sct");
  CHECK(p->type_code == "736253002");
  CHECK(p->type_display == "Mental health crisis plan");
  CHECK(p->category_code == "734163000");
  CHECK(p->category_display == "Care plan");
  CHECK(p->resource_types == std::vector<std::string>{"CarePlan", "Goal"});
  CHECK(p->url == "https://rx1.example.nhs.uk/plan/1");
  CHECK(p->content_type == "application/pdf");
  CHECK_FALSE(subject_identifier(parse(kDocRef)).has_value());

  const auto with = [](std::string_view from, std::string_view to) {
    std::string s(kDocRef);
    const auto at = s.find(from);
    REQUIRE(at != std::string::npos);
    s.replace(at, from.size(), to);
    return docref_issue(s);
  };
  CHECK(with(R"("status":"current")", R"("status":"superseded")").expression == "DocumentReference.status");
  CHECK(with(R"("status":"current",)", "").code == fhir::ErrorCode::missing_value);
  CHECK(with("https://fhir.nhs.uk/Id/ods-organization-code", "https://example.org/other").expression ==
        "DocumentReference.custodian.identifier");
  CHECK(with(R"("url":"https://rx1.example.nhs.uk/plan/1")", R"("title":"x")").expression ==
        "DocumentReference.content[0].attachment.url");
  // Only https URLs to a host: clients follow them with their credentials.
  for (const std::string_view url : {"javascript:alert(1)", "http://rx1.example.nhs.uk/plan/1", "data:text/html,x",
                                     "https://", "https://:443/x", "https://me@rx1.example.nhs.uk/plan/1",
                                     "https://rx1.example.nhs.uk/plan 1", "ftp://rx1.example.nhs.uk/plan/1"}) {
    CAPTURE(url);
    const fhir::Issue i = with("https://rx1.example.nhs.uk/plan/1", url);
    CHECK(i.code == fhir::ErrorCode::invalid_value);
    CHECK(i.expression == "DocumentReference.content[0].attachment.url");
  }
  CHECK(pointer_from_document_reference(parse([] {
          std::string s(kDocRef);
          return s.replace(s.find("https://rx1"), 11, "HTTPS://rx1");
        }())).ok());
  CHECK(with(R"("valueCode":"Goal")", R"("valueCode":"Goals")").expression == "DocumentReference.extension[1].valueCode");
  CHECK(with(R"("reference":"Patient/abc")", R"("reference":"Group/abc")").expression ==
        "DocumentReference.subject.reference");
  CHECK(with(R"("code":"736253002",)", "").expression == "DocumentReference.type.coding");
  CHECK(docref_issue(R"({"resourceType":"Patient"})").expression == "DocumentReference.resourceType");

  auto by_identifier = parse(R"({"resourceType":"DocumentReference","subject":{"identifier":{
      "system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}}})");
  const auto subject = subject_identifier(by_identifier);
  REQUIRE(subject.has_value());
  CHECK(subject->system == kNhsNumberSystem);
  CHECK(subject->value == "9434765919");
}

// Found by fuzz_import: a malformed id passed the mapping, and the locator's check then
// refused the whole import record, so the Patient the pointer was attached to was rejected
// for a fault of another entry, under that Patient's name.
TEST_CASE("FHIR mapping: a DocumentReference id that is no FHIR id is refused at the DocumentReference") {
  for (const std::string_view id : {"bad id!", "a/b", "RX1_1", "\u00e9t\u00e9",
                                    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}) {
    CAPTURE(id);
    std::string doc(kDocRef);
    doc.replace(doc.find("RX1-1"), 5, id);
    const fhir::Issue i = docref_issue(doc);
    CHECK(i.code == fhir::ErrorCode::invalid_value);
    CHECK(i.expression == "DocumentReference.id");
  }
  // What the mapping accepts, the import's own check accepts too.
  auto p = pointer_from_document_reference(parse(kDocRef));
  REQUIRE(p.ok());
  ImportRecord record;
  record.identity.source_ods = "RX1";
  record.identity.identifiers.push_back({"https://rx1.example.nhs.uk/mrn", "M1", "RX1"});
  record.pointers.push_back(*p);
  CHECK(check_import_record(record).ok());
}
