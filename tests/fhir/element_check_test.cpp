// SPDX-License-Identifier: Apache-2.0
// fhir/element_check: element-level checks against the table generated from the R4 JSON schema,
// and conformance of what the gateway itself produces (the HL7 v2 golden cases) and of the
// official R4 spec examples (shared data, skipped when absent).
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <set>

#include "fhir/element_check.h"
#include "fhir/json.h"
#include "fhir/r4_elements.h"
#include "support/paths.h"

using namespace fhir;

namespace {

std::vector<Issue> check(const std::string& json) {
  auto j = parse_json(json);
  REQUIRE(j.ok());
  return check_elements(*j);
}

// The issue at `path`, or nullptr.
const Issue* at(const std::vector<Issue>& issues, std::string_view path) {
  auto it = std::find_if(issues.begin(), issues.end(), [&](const Issue& i) { return i.expression == path; });
  return it == issues.end() ? nullptr : &*it;
}

bool mentions(const Issue* issue, std::string_view text) {
  return issue != nullptr && issue->diagnostics.find(text) != std::string::npos;
}

std::string paths(const std::vector<Issue>& issues) {
  std::string out;
  for (const Issue& i : issues) out += i.expression + " | " + i.diagnostics + "\n";
  return out;
}

constexpr const char* kGoodObservation = R"({
  "resourceType": "Observation", "id": "bp-1",
  "meta": {"lastUpdated": "2024-05-01T10:00:00.123+01:00", "profile": ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-Observation"]},
  "contained": [{"resourceType": "Practitioner", "id": "p1", "name": [{"family": "Jones", "given": ["Ann", null], "_given": [null, {"extension": [{"url": "http://example.org/x", "valueBoolean": true}]}]}]}],
  "extension": [{"url": "http://example.org/ext", "extension": [{"url": "inner", "valueCodeableConcept": {"text": "x"}}]}],
  "modifierExtension": [{"url": "http://example.org/mod", "valueString": "y"}],
  "status": "final", "_status": {"extension": [{"url": "http://example.org/why", "valueString": "checked"}]},
  "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
  "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
  "subject": {"reference": "Patient/example"},
  "effectiveDateTime": "2024-05-01T09:30:00Z",
  "issued": "2024-05-01T09:31:00.5Z",
  "valueQuantity": {"value": 72.50, "unit": "beats/minute", "system": "http://unitsofmeasure.org", "code": "/min", "comparator": "<"},
  "referenceRange": [{"low": {"value": 60}, "high": {"value": 100}, "text": "normal"}],
  "component": [{"code": {"text": "c"}, "valueInteger": -3}, {"code": {"text": "d"}, "valueSampledData": {"origin": {"value": 0}, "period": 1, "dimensions": 1, "data": "1 2 3"}}]
})";

}  // namespace

TEST_CASE("Elements: a valid Observation with extensions, contained and primitive extensions passes") {
  auto issues = check(kGoodObservation);
  CHECK_MESSAGE(issues.empty(), paths(issues));
  CHECK(elements_known("Observation"));
  CHECK_FALSE(elements_known("Medication"));
  CHECK_FALSE(elements_known("Quantity"));  // a datatype, not a resource
}

TEST_CASE("Elements: the reviewer's Observation is refused element by element, with FHIR paths") {
  auto issues = check(R"({"resourceType":"Observation","id":"o1","status":12345,"code":"notacodeableconcept",
                          "valueQuantity":{"value":"seventy"},"bogusElement":true})");
  CHECK_MESSAGE(issues.size() == 4, paths(issues));
  CHECK(mentions(at(issues, "Observation.status"), "a code must be a JSON string, not a number"));
  CHECK(mentions(at(issues, "Observation.code"), "must be a JSON object (CodeableConcept), not a string"));
  CHECK(mentions(at(issues, "Observation.valueQuantity.value"), "a decimal must be a JSON number, not a string"));
  CHECK(mentions(at(issues, "Observation.bogusElement"), "unknown element: Observation has no element of this name"));
  CHECK(mentions(at(check(R"({"resourceType":"Observation","code":{"text":"x"},"referenceRange":[{"txt":"n"}]})"),
                    "Observation.referenceRange[0].txt"),
                 "Observation.ReferenceRange has no element"));
  for (const Issue& i : issues) CHECK(i.severity == Severity::error);
}

TEST_CASE("Elements: arrays and single values, with their cardinality") {
  auto issues = check(R"({"resourceType":"Patient","name":{"family":"X"},"gender":["male"],
                          "identifier":[{"system":"s","value":"v","period":[{"start":"2020"}]}]})");
  CHECK(mentions(at(issues, "Patient.name"), "must be an array of HumanName"));
  CHECK(mentions(at(issues, "Patient.gender"), "must be a single code, not an array"));
  CHECK(mentions(at(issues, "Patient.identifier[0].period"), "must be a single Period"));
  CHECK(issues.size() == 3);
  // a backbone element is named with a dot
  CHECK(mentions(at(check(R"({"resourceType":"Observation","code":{"text":"x"},"referenceRange":{"text":"n"}})"),
                    "Observation.referenceRange"),
                 "Observation.ReferenceRange"));
}

TEST_CASE("Elements: missing required elements, at the top and in backbone elements") {
  auto issues = check(R"({"resourceType":"Observation","status":"final","component":[{"valueString":"x"}]})");
  REQUIRE(issues.size() == 2);
  CHECK(at(issues, "Observation.code")->code == ErrorCode::missing_value);
  CHECK(at(issues, "Observation.component[0].code")->code == ErrorCode::missing_value);
  auto enc = check(R"({"resourceType":"Encounter","status":"finished","location":[{"status":"active"}]})");
  CHECK(at(enc, "Encounter.class") != nullptr);
  CHECK(at(enc, "Encounter.location[0].location") != nullptr);
}

TEST_CASE("Elements: codes of required bindings") {
  auto issues = check(R"({"resourceType":"Observation","status":"done","code":{"text":"x"},
                          "valueQuantity":{"value":1,"comparator":"=="}})");
  REQUIRE(issues.size() == 2);
  CHECK(mentions(at(issues, "Observation.status"), "not in the required value set (allowed: registered, preliminary, final"));
  CHECK(at(issues, "Observation.status")->code == ErrorCode::invalid_value);
  CHECK(at(issues, "Observation.valueQuantity.comparator") != nullptr);
  CHECK(at(check(R"({"resourceType":"Patient","gender":"M"})"), "Patient.gender") != nullptr);
  CHECK(check(R"({"resourceType":"Patient","gender":"unknown"})").empty());
  // a code with doubled whitespace fails the code pattern before the binding is looked at
  CHECK(mentions(at(check(R"({"resourceType":"Patient","gender":"fe  male"})"), "Patient.gender"), "not a valid code"));
  // the schema is the 4.0.0 build: the generator adds 4.0.1 to the FHIR version enums
  CHECK(check(R"({"resourceType":"CapabilityStatement","status":"active","date":"2024","kind":"instance","fhirVersion":"4.0.1","format":["json"]})").empty());
  CHECK(at(check(R"({"resourceType":"CapabilityStatement","status":"active","date":"2024","kind":"instance","fhirVersion":"4.0.2","format":["json"]})"),
           "CapabilityStatement.fhirVersion") != nullptr);
}

TEST_CASE("Elements: JSON kinds of primitives") {
  auto issues = check(R"({"resourceType":"Patient","active":"true","multipleBirthInteger":2.5,
                          "birthDate":19741225,"photo":[{"size":-1,"contentType":"image/png"}],
                          "communication":[{"language":{"text":"en"},"preferred":1}]})");
  CHECK(mentions(at(issues, "Patient.active"), "must be true or false"));
  CHECK(mentions(at(issues, "Patient.multipleBirthInteger"), "whole number"));
  CHECK(mentions(at(issues, "Patient.birthDate"), "a date must be a JSON string, not a number"));
  CHECK(mentions(at(issues, "Patient.photo[0].size"), "from 0 to 2147483647"));
  CHECK(mentions(at(issues, "Patient.communication[0].preferred"), "true or false"));
  CHECK(issues.size() == 5);
  CHECK(at(check(R"({"resourceType":"Patient","multipleBirthInteger":2147483648})"), "Patient.multipleBirthInteger") != nullptr);
  CHECK(check(R"({"resourceType":"Patient","multipleBirthInteger":-2147483648})").empty());
  CHECK(at(check(R"({"resourceType":"Observation","code":{"text":"x"},"valueSampledData":{"origin":{"value":0},"period":1,"dimensions":0,"data":"1"}})"),
           "Observation.valueSampledData.dimensions") != nullptr);  // positiveInt
  CHECK(at(check(R"({"resourceType":"Observation","code":{"text":"x"},"valueQuantity":{"value":-1.50e3}})"),
           "Observation.valueQuantity.value") == nullptr);  // any JSON number is a decimal
}

TEST_CASE("Elements: date, dateTime, instant, time, id, uri, oid and uuid formats") {
  using r4::Primitive;
  for (const char* ok : {"2024", "2024-02", "2024-02-29", "0001-01-01"}) CHECK_MESSAGE(matches_r4_format(Primitive::date, ok), ok);
  for (const char* bad : {"0000", "24", "2024-13", "2024-00-01", "2024-01-32", "2024-1-1", "2024-01-01T10:00:00Z", "20240101", "2024-"})
    CHECK_MESSAGE(!matches_r4_format(Primitive::date, bad), bad);
  for (const char* ok : {"2024", "2024-05", "2024-05-01", "2024-05-01T10:00:00Z", "2024-05-01T23:59:60.123+14:00",
                         "2024-05-01T10:00:00-13:59"})
    CHECK_MESSAGE(matches_r4_format(Primitive::dateTime, ok), ok);
  for (const char* bad : {"2024-05-01T10:00:00", "2024-05-01T10:00Z", "2024-05-01T24:00:00Z", "2024-05-01T10:00:00+14:30",
                          "2024-05-01 10:00:00Z", "2024-05T10:00:00Z", "2024-05-01T10:00:00.Z", "2024-05-01T10:00:00z"})
    CHECK_MESSAGE(!matches_r4_format(Primitive::dateTime, bad), bad);
  CHECK(matches_r4_format(Primitive::instant, "2024-05-01T10:00:00.5+01:00"));
  CHECK_FALSE(matches_r4_format(Primitive::instant, "2024-05-01"));
  CHECK(matches_r4_format(Primitive::time, "23:59:59.9"));
  CHECK_FALSE(matches_r4_format(Primitive::time, "23:59"));
  CHECK_FALSE(matches_r4_format(Primitive::id, "a b"));
  CHECK_FALSE(matches_r4_format(Primitive::uri, "http://x/ y"));
  CHECK(matches_r4_format(Primitive::oid, "urn:oid:2.16.840.1.113883"));
  CHECK_FALSE(matches_r4_format(Primitive::oid, "urn:oid:2.016"));
  CHECK_FALSE(matches_r4_format(Primitive::oid, "urn:oid:3.1"));
  CHECK(matches_r4_format(Primitive::uuid, "urn:uuid:c757873d-ec9a-4326-a141-556f43239520"));
  CHECK_FALSE(matches_r4_format(Primitive::uuid, "urn:uuid:C757873D-EC9A-4326-A141-556F43239520"));
  CHECK(matches_r4_format(Primitive::string, " any  thing "));

  auto issues = check(R"({"resourceType":"Observation","code":{"text":"x"},"effectiveDateTime":"01/05/2024",
                          "issued":"2024-05-01","meta":{"versionId":"v 1","source":"urn:a b"}})");
  CHECK(mentions(at(issues, "Observation.effectiveDateTime"), "is not a valid dateTime"));
  CHECK(mentions(at(issues, "Observation.issued"), "is not a valid instant"));
  CHECK(mentions(at(issues, "Observation.meta.versionId"), "is not a valid id"));
  CHECK(mentions(at(issues, "Observation.meta.source"), "is not a valid uri"));
  CHECK(issues.size() == 4);
}

TEST_CASE("Elements: primitive extensions (_name) follow json.html") {
  CHECK(check(R"({"resourceType":"Patient","_gender":{"extension":[{"url":"http://x","valueString":"y"}]}})").empty());
  auto issues = check(R"({"resourceType":"Patient","gender":"male","_gender":"x","_name":{"id":"a"},"_nope":{"id":"a"},
                          "_birthDate":{"extension":[{"url":"http://x","valueBogus":1}]}})");
  CHECK(mentions(at(issues, "Patient._gender"), "must be a JSON object"));
  CHECK(mentions(at(issues, "Patient._name"), "not a primitive element"));
  CHECK(mentions(at(issues, "Patient._nope"), "unknown element"));
  CHECK(mentions(at(issues, "Patient._birthDate.extension[0].valueBogus"), "unknown element"));
  CHECK(issues.size() == 4);
  // repeating primitives: _given is an array of objects and nulls, of the same length;
  // a null among the values only where _given holds an extension
  auto names = check(R"({"resourceType":"Patient","name":[
      {"given":["A",null],"_given":[null,{"id":"g"}]},
      {"given":["A",null],"_given":[{"id":"g"},null]},
      {"given":["A","B"],"_given":{"id":"g"}},
      {"given":["A","B"],"_given":[null]},
      {"given":["A"],"_given":["x"]}]})");
  CHECK(at(names, "Patient.name[0].given[1]") == nullptr);
  CHECK(mentions(at(names, "Patient.name[1].given[1]"), "only allowed where _given holds an extension"));
  CHECK(mentions(at(names, "Patient.name[2]._given"), "must be an array"));
  CHECK(mentions(at(names, "Patient.name[3]._given"), "as many items as given (2)"));
  CHECK(mentions(at(names, "Patient.name[4]._given[0]"), "JSON object (id and extension) or null"));
  CHECK(names.size() == 4);
  CHECK(mentions(at(check(R"({"resourceType":"Patient","name":[{"family":"X"},null]})"), "Patient.name[1]"),
                 "null is not allowed in an array of HumanName"));
}

TEST_CASE("Elements: extension and modifierExtension are checked wherever they appear") {
  auto issues = check(R"({"resourceType":"Observation","code":{"text":"x","extension":{"url":"http://x"}},
      "subject":{"reference":"Patient/1","modifierExtension":[{"url":"http://y"}]},
      "referenceRange":[{"text":"n","modifierExtension":[{"url":"http://y","valueQuantity":{"value":"1"}}]}],
      "extension":[{"url":"http://z","valueString":"a","valueBoolean":true},{"url":"http://z","valueFoo":1}]})");
  CHECK(mentions(at(issues, "Observation.code.extension"), "must be an array of Extension"));
  // datatypes carry extension only; modifierExtension belongs to resources and backbone elements
  CHECK(mentions(at(issues, "Observation.subject.modifierExtension"), "unknown element"));
  CHECK(at(issues, "Observation.referenceRange[0].modifierExtension[0].valueQuantity.value") != nullptr);
  CHECK(mentions(at(issues, "Observation.extension[0].valueBoolean"), "only one of the alternatives"));
  CHECK(at(issues, "Observation.extension[1].valueFoo") != nullptr);
  CHECK_MESSAGE(issues.size() == 5, paths(issues));
}

TEST_CASE("Elements: only one alternative of a choice element [x]") {
  auto issues = check(R"({"resourceType":"Observation","code":{"text":"x"},"valueString":"a","valueQuantity":{"value":1},
                          "effectivePeriod":{"start":"2024"},"effectiveDateTime":"2024"})");
  CHECK(mentions(at(issues, "Observation.valueQuantity"), "valueString is present too"));
  CHECK(mentions(at(issues, "Observation.effectiveDateTime"), "effectivePeriod is present too"));
  CHECK(issues.size() == 2);
}

TEST_CASE("Elements: contained, Bundle.entry.resource and Parameters resources are checked by their own type") {
  auto issues = check(R"({"resourceType":"Bundle","type":"collection","entry":[
      {"fullUrl":"urn:uuid:c757873d-ec9a-4326-a141-556f43239520","resource":{"resourceType":"Observation","status":"final","code":"x"}},
      {"resource":{"resourceType":"Encounter","status":"finished","class":{"code":"IMP"},"contained":[{"resourceType":"Location","status":"bogus"}]}},
      {"resource":{"resourceType":"Medication","notAnElement":1}},
      {"resource":{"resourceType":"Parameters","parameter":[{"name":"r","resource":{"resourceType":"Patient","gender":1}}]}}]})");
  CHECK(at(issues, "Bundle.entry[0].resource.code") != nullptr);
  CHECK(at(issues, "Bundle.entry[1].resource.contained[0].status") != nullptr);
  CHECK(at(issues, "Bundle.entry[3].resource.parameter[0].resource.gender") != nullptr);
  // Medication is not in the table: structure_check only
  CHECK_MESSAGE(issues.size() == 3, paths(issues));
  CHECK(at(check(R"({"resourceType":"Bundle","type":"collection","entry":[{"resource":"Patient/1"}]})"), "Bundle.entry[0].resource") != nullptr);
  CHECK(check(R"({"resourceType":"Medication","notAnElement":1})").empty());
}

TEST_CASE("Elements: check_structure_and_elements reports both, without duplicating the structural ones") {
  auto j = parse_json(R"({"resourceType":"Observation","id":"bad id!","status":"","code":{"text":"x"},"bogus":1,"issued":null})");
  REQUIRE(j.ok());
  auto issues = check_structure_and_elements(*j, "Observation");
  CHECK_MESSAGE(issues.size() == 4, paths(issues));
  CHECK(at(issues, "Observation.id") != nullptr);
  CHECK(at(issues, "Observation.status") != nullptr);
  CHECK(at(issues, "Observation.bogus") != nullptr);
  CHECK(at(issues, "Observation.issued") != nullptr);
}

TEST_CASE("Elements: at most 100 issues are collected") {
  std::string body = R"({"resourceType":"Patient","name":[)";
  for (int i = 0; i < 300; ++i) body += std::string(i ? "," : "") + R"({"x":1})";
  body += "]}";
  CHECK(check(body).size() == 100);
}

TEST_CASE("Elements: the generated table is sorted, closed and covers the served types") {
  for (std::string_view t : {"Patient", "Encounter", "Observation", "DiagnosticReport", "Location", "Practitioner",
                             "DocumentReference", "AuditEvent", "OperationOutcome", "Bundle", "Parameters", "CapabilityStatement"})
    CHECK_MESSAGE(elements_known(t), t);
  for (std::string_view t : {"CodeableConcept", "Coding", "Quantity", "Reference", "Period", "Identifier", "HumanName", "Address",
                             "ContactPoint", "Attachment", "Annotation", "Range", "Ratio", "SampledData", "Timing", "Meta",
                             "Narrative", "Extension", "Element", "Observation_ReferenceRange"})
    CHECK_MESSAGE(r4::find_type(t) != nullptr, t);
  const r4::TypeDef* obs = r4::find_type("Observation");
  REQUIRE(obs);
  const r4::ElementDef* status = r4::find_element(*obs, "status");
  REQUIRE(status);
  CHECK(status->kind == r4::ElementKind::primitive);
  CHECK(status->primitive == r4::Primitive::code);
  auto codes = r4::codes(status->code_set);
  CHECK(std::find(codes.begin(), codes.end(), "final") != codes.end());
  CHECK(r4::find_element(*obs, "code")->required);
  CHECK(r4::find_element(*obs, "component")->array);
  CHECK(r4::find_element(*obs, "contained")->kind == r4::ElementKind::resource);
  CHECK(r4::find_element(*obs, "_status") == nullptr);
  for (const r4::TypeDef& t : r4::types())
    for (const r4::ElementDef& e : r4::elements(t))
      if (e.kind == r4::ElementKind::complex) CHECK(e.type < r4::types().size());
}

namespace {

void check_clean(const Json& resource, const std::string& label) {
  auto issues = check_structure_and_elements(resource);
  CHECK_MESSAGE(issues.empty(), label, ":\n", paths(issues));
}

}  // namespace

TEST_CASE("Elements: every HL7 v2 golden case maps to resources that pass (what ingest will accept)") {
  const auto dir = gw::test::source_dir() / "tests" / "golden" / "hl7v2";
  int files = 0, resources = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".json") continue;
    auto doc = parse_json(gw::test::read_file(entry.path()));
    REQUIRE(doc.ok());
    ++files;
    const std::string name = entry.path().filename().string();
    if (const Json* patient = doc->find("patient"); patient && patient->is_object()) {
      check_clean(*patient, name + " patient");
      ++resources;
    }
    if (const Json* rs = doc->find("resources"); rs && rs->is_array())
      for (std::size_t i = 0; i < rs->items().size(); ++i, ++resources)
        check_clean(rs->items()[i], name + " resources[" + std::to_string(i) + "]");
  }
  CHECK(files >= 20);
  CHECK(resources >= 50);
}

TEST_CASE("Elements: the official R4 spec examples of the covered types pass (shared data)") {
  auto data = gw::test::shared_data_dir();
  if (!data) {
    MESSAGE("skipped: ../shared/data (fhir-r4-spec-examples) is absent");
    return;
  }
  const auto dir = *data / "fhir-r4-spec-examples" / "examples";
  if (!std::filesystem::is_directory(dir)) {
    MESSAGE("skipped: ", dir.string(), " is absent");
    return;
  }
  // SOURCE.md lists 2 examples that fail the R4 schema upstream (CapabilityStatement-base2 and
  // -measure-processor, one error each): it is the schema's FHIR version enum, which stops at
  // 4.0.0 while they say "4.0.1". The generated table adds 4.0.1 (tools/fhir-elements/generate),
  // so they pass here; they are counted to prove they were looked at.
  int checked = 0, upstream_schema_failures = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    auto doc = parse_json(gw::test::read_file(entry.path()));
    if (!doc.ok() || !doc->is_object()) continue;
    if (!elements_known(doc->string_at("resourceType"))) continue;
    const std::string name = entry.path().filename().string();
    if (name == "CapabilityStatement-base2.json" || name == "CapabilityStatement-measure-processor.json") {
      CHECK(doc->string_at("fhirVersion") == "4.0.1");
      ++upstream_schema_failures;
    }
    ++checked;
    CHECK_MESSAGE(check_structure_and_elements(*doc).empty(), name, ":\n", paths(check_structure_and_elements(*doc)));
  }
  MESSAGE(checked, " spec examples of the covered types checked");
  CHECK(checked >= 100);
  CHECK(upstream_schema_failures == 2);
}
