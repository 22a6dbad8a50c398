// SPDX-License-Identifier: Apache-2.0
// The Locator conformance suite: every case runs against SqliteLocator and FakeLocator (and
// must pass unchanged for any future backend, e.g. PostgreSQL). Care relationships have their
// part of the suite in care_relationships_test.cpp.
#include <doctest/doctest.h>

#include <algorithm>
#include <set>

#include "gateway/locator/index_transaction.h"
#include "locator_test_support.h"

using namespace gw::locator;
using namespace gw::locator::test;

namespace {

std::optional<std::string> lookup(Locator& l, std::string_view system, std::string_view value) {
  auto r = l.lookup_identifier(system, value);
  REQUIRE(r.ok());
  return *r;
}

bool has_identifier(const PatientRecord& p, std::string_view system, std::string_view value) {
  return std::any_of(p.identifiers.begin(), p.identifiers.end(),
                     [&](const Identifier& i) { return i.system == system && i.value == value; });
}

// "ge1980-06-01" -> (ge, the range of 1980-06-01), as the search layer hands it over.
std::pair<fhir::Prefix, fhir::DateRange> date_param(std::string_view text) {
  static const std::pair<std::string_view, fhir::Prefix> kPrefixes[] = {
      {"eq", fhir::Prefix::eq}, {"ne", fhir::Prefix::ne}, {"gt", fhir::Prefix::gt},
      {"lt", fhir::Prefix::lt}, {"ge", fhir::Prefix::ge}, {"le", fhir::Prefix::le},
      {"sa", fhir::Prefix::sa}, {"eb", fhir::Prefix::eb}, {"ap", fhir::Prefix::ap}};
  fhir::Prefix prefix = fhir::Prefix::eq;
  for (const auto& [name, p] : kPrefixes) {
    if (text.substr(0, 2) == name) {
      prefix = p;
      text.remove_prefix(2);
      break;
    }
  }
  auto range = fhir::parse_fhir_date(text);
  REQUIRE(range.ok());
  return {prefix, *range};
}

std::vector<std::string> ids_of(const Page<PatientRecord>& page) {
  std::vector<std::string> out;
  for (const auto& p : page.items) out.push_back(p.id);
  return out;
}

}  // namespace

TEST_CASE_TEMPLATE("Locator: a new claim creates a record; a trusted NHS number then matches it", B, LOCATOR_BACKENDS) {
  auto l = B::make();
  const std::string id = resolve_ok(*l, claim("RX1", nhs(0), {{kMrnA, "RX10000001", ""}},
                                              person("Smith", "John", "1980-05-01", "male", "LS1 4AB")),
                                    MatchOutcome::created);
  CHECK(id.find(nhs(0)) == std::string::npos);  // opaque: no NHS number inside

  // Another source, another local identifier, the same NHS number: the same person.
  const std::string again =
      resolve_ok(*l, claim("RY2", nhs(0), {{kMrnB, "B-77", ""}}), MatchOutcome::matched_nhs_number);
  CHECK(again == id);
  const PatientRecord p = read_ok(*l, id);
  CHECK(p.nhs_number_trusted);
  CHECK(p.demographics.nhs_number == nhs(0));
  CHECK(p.demographics.family == "Smith");
  CHECK(p.demographics.given == std::vector<std::string>{"John"});
  CHECK(p.version == 2);  // gained an identifier
  REQUIRE(p.identifiers.size() == 2);
  CHECK(has_identifier(p, kMrnA, "RX10000001"));
  CHECK(has_identifier(p, kMrnB, "B-77"));
  CHECK(p.identifiers[0].source == "RX1");  // filled from the claim's source
  CHECK(p.identifiers[1].source == "RY2");
  CHECK_FALSE(p.last_updated.empty());

  CHECK(lookup(*l, kNhsNumberSystem, nhs(0)) == id);
  CHECK(lookup(*l, kMrnA, "RX10000001") == id);
  CHECK(lookup(*l, kMrnB, "B-77") == id);
  CHECK_FALSE(lookup(*l, kMrnB, "RX10000001"));  // value under another system
  CHECK_FALSE(lookup(*l, kNhsNumberSystem, nhs(1)));
  CHECK_FALSE(l->lookup_identifier("", "B-77").ok());
  auto missing = l->read_patient("no-such-id");
  REQUIRE(missing.ok());
  CHECK_FALSE(missing->has_value());
}

TEST_CASE_TEMPLATE("Locator: a local identifier matches when there is no NHS number match", B, LOCATOR_BACKENDS) {
  auto l = B::make();
  const std::string id = resolve_ok(*l, claim("RX1", "", {{kMrnA, "M1", ""}}), MatchOutcome::created);
  // The same MRN with demographics: matched, and the missing demographics are added.
  CHECK(resolve_ok(*l, claim("RX1", "", {{kMrnA, "M1", ""}}, person("Patel", "Asha", "1975-03-15", "female", "M1 1AA")),
                   MatchOutcome::matched_identifier) == id);
  // Later the NHS number arrives with the MRN: attached to the same record.
  CHECK(resolve_ok(*l, claim("RX1", nhs(1), {{kMrnA, "M1", ""}}, person("Other", "Name", "2001-01-01", "male", "")),
                   MatchOutcome::matched_identifier) == id);
  const PatientRecord p = read_ok(*l, id);
  CHECK(p.demographics.family == "Other");  // the newer claim's values win
  CHECK(p.demographics.birth_date == "2001-01-01");
  CHECK(p.demographics.postcode == "M1 1AA");  // an empty field clears nothing
  CHECK(p.demographics.nhs_number == nhs(1));
  CHECK(p.nhs_number_trusted);
  CHECK(lookup(*l, kNhsNumberSystem, nhs(1)) == id);
  CHECK(resolve_ok(*l, claim("RZ3", nhs(1), {}), MatchOutcome::matched_nhs_number) == id);
}

TEST_CASE_TEMPLATE("Locator: the demographic rule matches one record, folding case, accents and spaces", B,
                   LOCATOR_BACKENDS) {
  auto l = B::make();
  const std::string id =
      resolve_ok(*l, claim("RX1", "", {}, person("Brontë", "Zoë", "1990-02-03", "female", "BD22 8DR")),
                 MatchOutcome::created);
  CHECK(resolve_ok(*l, claim("RY2", "", {{kMrnB, "Z1", ""}}, person(" BRONTE ", "zoe", "1990-02-03", "female", "bd228dr")),
                   MatchOutcome::matched_demographics) == id);
  CHECK(lookup(*l, kMrnB, "Z1") == id);
  // One differing field (birth date) is no match.
  CHECK(resolve_ok(*l, claim("RY2", "", {}, person("Bronte", "Zoe", "1990-02-04", "female", "BD22 8DR")),
                   MatchOutcome::created) != id);
  // A claim lacking a field the rule compares never matches on the rest.
  CHECK(resolve_ok(*l, claim("RY2", "", {}, person("Bronte", "Zoe", "1990-02-03", "female", "")),
                   MatchOutcome::created) != id);
}

TEST_CASE_TEMPLATE("Locator: an ambiguous or disabled demographic rule creates a new record", B, LOCATOR_BACKENDS) {
  const Demographics d = person("Jones", "Mary", "1960-07-07", "female", "CF10 1AA");
  SUBCASE("two records fit: no guess") {
    auto l = B::make();
    const std::string a = resolve_ok(*l, claim("RX1", nhs(2), {}, d), MatchOutcome::created);
    // Same demographics, another trusted NHS number: kept apart (and the conflict recorded).
    auto second = l->resolve(claim("RX1", nhs(3), {}, d));
    REQUIRE(second.ok());
    CHECK(second->outcome == MatchOutcome::created);
    CHECK(second->patient_id != a);
    CHECK(second->conflicts.size() == 1);
    const std::string c = resolve_ok(*l, claim("RY2", "", {}, d), MatchOutcome::created);
    CHECK(c != a);
    CHECK(c != second->patient_id);
    CHECK(l->stats()->patients == 3);
  }
  SUBCASE("rule disabled") {
    DemographicRule off;
    off.enabled = false;
    auto l = B::make(off);
    const std::string a = resolve_ok(*l, claim("RX1", "", {}, d), MatchOutcome::created);
    CHECK(resolve_ok(*l, claim("RX1", "", {}, d), MatchOutcome::created) != a);
  }
  SUBCASE("rule on fewer fields") {
    DemographicRule family_and_birth;
    family_and_birth.given = family_and_birth.gender = family_and_birth.postcode = false;
    auto l = B::make(family_and_birth);
    const std::string a = resolve_ok(*l, claim("RX1", "", {}, d), MatchOutcome::created);
    CHECK(resolve_ok(*l, claim("RX1", "", {}, person("JONES", "", "1960-07-07", "", "")),
                     MatchOutcome::matched_demographics) == a);
  }
}

TEST_CASE_TEMPLATE("Locator: an invalid NHS number is kept as received but never used for matching", B,
                   LOCATOR_BACKENDS) {
  auto l = B::make();
  const std::string a = resolve_ok(*l, claim("RX1", bad_nhs(4), {}), MatchOutcome::created);
  const PatientRecord p = read_ok(*l, a);
  CHECK(p.demographics.nhs_number == bad_nhs(4));
  CHECK_FALSE(p.nhs_number_trusted);
  const std::string b = resolve_ok(*l, claim("RX1", bad_nhs(4), {}), MatchOutcome::created);
  CHECK(b != a);
  CHECK_FALSE(lookup(*l, kNhsNumberSystem, bad_nhs(4)));
  const std::string c = resolve_ok(*l, claim("RX1", "12345", {}), MatchOutcome::created);  // wrong length
  CHECK(read_ok(*l, c).demographics.nhs_number == "12345");
  CHECK(l->stats()->nhs_numbers_untrusted == 3);

  // The valid number later replaces the untrusted one on the record an identifier finds.
  const std::string d = resolve_ok(*l, claim("RX1", bad_nhs(5), {{kMrnA, "T1", ""}}), MatchOutcome::created);
  CHECK(resolve_ok(*l, claim("RX1", nhs(5), {{kMrnA, "T1", ""}}), MatchOutcome::matched_identifier) == d);
  CHECK(read_ok(*l, d).nhs_number_trusted);
  CHECK(lookup(*l, kNhsNumberSystem, nhs(5)) == d);
}

TEST_CASE_TEMPLATE("Locator: two different valid NHS numbers are never merged; the conflict is recorded", B,
                   LOCATOR_BACKENDS) {
  auto l = B::make();
  const std::string a = resolve_ok(*l, claim("RX1", nhs(6), {{kMrnA, "C1", ""}}), MatchOutcome::created);
  // The MRN says it is A, the NHS number says it is someone else.
  auto r = l->resolve(claim("RY2", nhs(7), {{kMrnA, "C1", ""}}));
  REQUIRE(r.ok());
  CHECK(r->outcome == MatchOutcome::created);
  CHECK(r->patient_id != a);
  REQUIRE(r->conflicts.size() == 1);
  CHECK(r->conflicts[0].rfind("nhs-number-mismatch: ", 0) == 0);
  CHECK(r->conflicts[0].find(nhs(6)) == std::string::npos);  // no NHS numbers in the detail
  CHECK(r->conflicts[0].find(nhs(7)) == std::string::npos);
  CHECK(lookup(*l, kMrnA, "C1") == a);  // the identifier stays where it was
  CHECK(lookup(*l, kNhsNumberSystem, nhs(7)) == r->patient_id);
  CHECK(read_ok(*l, a).demographics.nhs_number == nhs(6));

  auto conflicts = l->conflicts(10, 0);
  REQUIRE(conflicts.ok());
  REQUIRE(conflicts->size() == 1);
  const Conflict& c = conflicts->front();
  CHECK(c.id > 0);
  CHECK(c.patient_id == a);
  CHECK(c.source_ods == "RY2");
  CHECK(c.kind == "nhs-number-mismatch");
  CHECK(c.detail.find(r->patient_id) != std::string::npos);
  CHECK_FALSE(c.recorded_at.empty());
  CHECK(l->stats()->conflicts == 1);
  CHECK(l->conflicts(10, 1)->empty());

  // And the two can never be merged. The refusal is on record too (the refused write rolled
  // back, its conflict did not), and nothing of the merge was applied.
  auto m = l->merge(a, r->patient_id, "RX1");
  REQUIRE_FALSE(m.ok());
  CHECK(m.issue().code == fhir::ErrorCode::conflict);
  auto after = l->conflicts(10, 0);
  REQUIRE(after.ok());
  REQUIRE(after->size() == 2);
  const auto refused = std::find_if(after->begin(), after->end(),
                                    [](const Conflict& x) { return x.detail.find("merge") != std::string::npos; });
  REQUIRE(refused != after->end());
  CHECK(refused->kind == "nhs-number-mismatch");
  CHECK(refused->patient_id == r->patient_id);  // the survivor named by the merge
  CHECK(refused->source_ods == "RX1");
  CHECK(refused->detail.find(a) != std::string::npos);
  CHECK(refused->detail.find(nhs(6)) == std::string::npos);  // no NHS numbers in the detail
  CHECK(refused->detail.find(nhs(7)) == std::string::npos);
  CHECK_FALSE(read_ok(*l, a).merged_into.has_value());
  CHECK(l->stats()->conflicts == 2);
}

TEST_CASE_TEMPLATE("Locator: a known identifier held by another record is not moved by ingest", B, LOCATOR_BACKENDS) {
  auto l = B::make();
  const std::string a = resolve_ok(*l, claim("RX1", "", {{kMrnA, "H1", ""}}), MatchOutcome::created);
  const std::string b = resolve_ok(*l, claim("RY2", nhs(8), {}), MatchOutcome::created);
  auto r = l->resolve(claim("RX1", nhs(8), {{kMrnA, "H1", ""}, {kMrnA, "H2", ""}}));
  REQUIRE(r.ok());
  CHECK(r->outcome == MatchOutcome::matched_nhs_number);
  CHECK(r->patient_id == b);
  REQUIRE(r->conflicts.size() == 1);
  CHECK(r->conflicts[0].rfind("identifier-mismatch: ", 0) == 0);
  CHECK(lookup(*l, kMrnA, "H1") == a);
  CHECK(lookup(*l, kMrnA, "H2") == b);  // the new one is linked
  CHECK(l->conflicts(10, 0)->front().kind == "identifier-mismatch");
}

TEST_CASE_TEMPLATE("Locator: the identifier systems the index holds are known; others are not", B, LOCATOR_BACKENDS) {
  auto l = B::make();
  CHECK(*l->knows_identifier_system(kNhsNumberSystem));  // always, even in an empty index
  CHECK_FALSE(*l->knows_identifier_system(kMrnA));
  resolve_ok(*l, claim("RX1", nhs(9), {{kMrnA, "S1", ""}}), MatchOutcome::created);
  CHECK(*l->knows_identifier_system(kMrnA));
  CHECK_FALSE(*l->knows_identifier_system("urn:oid:1.2.3"));
  CHECK_FALSE(*l->knows_identifier_system(""));
  // A second identifier of the same system, and a refused claim, change nothing.
  resolve_ok(*l, claim("RX1", nhs(10), {{kMrnA, "S2", ""}}), MatchOutcome::created);
  CHECK_FALSE(l->resolve(claim("RX1", "", {{"urn:oid:7.7", "x", ""}, {"urn:oid:7.7", "", ""}})).ok());
  CHECK_FALSE(*l->knows_identifier_system("urn:oid:7.7"));
  CHECK(*l->knows_identifier_system(kMrnA));
}

TEST_CASE_TEMPLATE("Locator: invalid claims are refused naming the field", B, LOCATOR_BACKENDS) {
  auto l = B::make();
  const auto refused = [&](IdentityClaim c, std::string_view expression) {
    auto r = l->resolve(c);
    REQUIRE_FALSE(r.ok());
    CHECK(r.issue().expression == expression);
  };
  refused(claim("RX1", "", {}, person("A", "B", "1980-13-01", "", "")), "demographics.birth_date");
  refused(claim("RX1", "", {}, person("A", "B", "1980-01-01T10:00:00Z", "", "")), "demographics.birth_date");
  refused(claim("RX1", "", {}, person("A", "B", "", "m", "")), "demographics.gender");
  refused(claim("RX1", "", {{"", "x", ""}}), "identifiers[0].system");
  refused(claim("RX1", "", {{kMrnA, "ok", ""}, {kMrnA, "", ""}}), "identifiers[1].value");
  refused(claim("RX1", "", {{std::string(kNhsNumberSystem), nhs(0), ""}}), "identifiers[0].system");
  refused(claim("RX1", "", {}, person(std::string(300, 'x'), "", "", "", "")), "demographics.family");
  CHECK(l->stats()->patients == 0);
}

TEST_CASE_TEMPLATE("Locator: patient search by each parameter, with a stable order, total and paging", B,
                   LOCATOR_BACKENDS) {
  auto l = B::make();
  const std::string p1 = resolve_ok(*l, claim("RX1", nhs(10), {{kMrnA, "111", ""}},
                                              person("Smith", "John", "1980-05-01", "male", "LS1 4AB")),
                                    MatchOutcome::created);
  const std::string p2 = resolve_ok(*l, claim("RX1", "", {}, person("Smithson", "Jane", "1980-12-31", "female", "ls14ab")),
                                    MatchOutcome::created);
  const std::string p3 = resolve_ok(*l, claim("RX1", "", {}, person("Ó Briain", "Zoë", "1975-03-15", "female", "M1 1AA")),
                                    MatchOutcome::created);
  const std::string p4 = resolve_ok(*l, claim("RX1", "", {}, person("SMITH", "Adam", "1990-01-01", "male", "LS1 4AB")),
                                    MatchOutcome::created);
  Demographics d5 = person("Jones", "Mary", "1969", "female", "CF10 1AA");
  d5.given.push_back("Johanna");
  const std::string p5 = resolve_ok(*l, claim("RX1", "", {{kMrnB, "555", ""}}, d5), MatchOutcome::created);
  const std::string p6 = resolve_ok(*l, claim("RX1", "", {}, person("Smith", "Zed", "", "unknown", "")),
                                    MatchOutcome::created);

  const auto search = [&](PatientQuery q) {
    auto r = l->search_patients(q);
    REQUIRE(r.ok());
    return *r;
  };
  const auto by_birthdate = [&](std::string_view text) {
    PatientQuery q;
    q.birthdate.push_back(date_param(text));
    return ids_of(search(q));
  };

  PatientQuery q;
  q.family = "smi";
  auto page = search(q);
  CHECK(page.total == 4);
  CHECK(ids_of(page) == std::vector<std::string>{p4, p1, p6, p2});  // family, first given, id
  REQUIRE(page.items.size() == 4);
  CHECK(page.items[1].identifiers.size() == 1);  // records come complete
  q.family = "SMÍTHS";  // accent- and case-insensitive
  CHECK(ids_of(search(q)) == std::vector<std::string>{p2});
  q.family = "o briain";
  CHECK(ids_of(search(q)) == std::vector<std::string>{p3});

  // id: that one record, if it matches the rest (a patient/ scope's launch context).
  q = {};
  q.family = "smi";
  q.id = p1;
  auto one = search(q);
  CHECK(one.total == 1);
  CHECK(ids_of(one) == std::vector<std::string>{p1});
  q.id = p3;  // not a Smith
  CHECK(search(q).total == 0);
  q.family.clear();
  CHECK(ids_of(search(q)) == std::vector<std::string>{p3});

  q = {};
  q.given = "joh";  // any given name
  CHECK(ids_of(search(q)) == std::vector<std::string>{p5, p1});
  q = {};
  q.name = "jo";  // family or given
  CHECK(ids_of(search(q)) == std::vector<std::string>{p5, p1});
  q = {};
  q.gender = "female";
  CHECK(ids_of(search(q)) == std::vector<std::string>{p5, p3, p2});
  q = {};
  q.postcode = "ls1 4ab";
  CHECK(ids_of(search(q)) == std::vector<std::string>{p4, p1, p2});
  q.postcode = "Ls1";  // a string search starts with its value (R4 search.html#string)
  CHECK(ids_of(search(q)) == std::vector<std::string>{p4, p1, p2});
  q.postcode = "ls14";  // spaces ignored on both sides
  CHECK(ids_of(search(q)) == std::vector<std::string>{p4, p1, p2});
  q.postcode = "cf1";  // CF10 1AA: the prefix need not end at the outward code
  CHECK(ids_of(search(q)) == std::vector<std::string>{p5});
  q.postcode = "ls1 4ab";
  q.family = "smith";
  q.gender = "male";  // parameters AND together
  CHECK(ids_of(search(q)) == std::vector<std::string>{p4, p1});

  q = {};
  q.identifier = Identifier{std::string(kNhsNumberSystem), nhs(10), ""};
  CHECK(ids_of(search(q)) == std::vector<std::string>{p1});
  q.identifier = Identifier{kMrnB, "555", ""};
  CHECK(ids_of(search(q)) == std::vector<std::string>{p5});
  q.identifier = Identifier{kMrnA, "555", ""};
  CHECK(search(q).total == 0);
  q.identifier = Identifier{"", "111", ""};  // any system
  CHECK(ids_of(search(q)) == std::vector<std::string>{p1});
  q.identifier = Identifier{"", nhs(10), ""};
  CHECK(ids_of(search(q)) == std::vector<std::string>{p1});

  CHECK(by_birthdate("1980") == std::vector<std::string>{p1, p2});
  CHECK(by_birthdate("eq1980-05") == std::vector<std::string>{p1});
  CHECK(by_birthdate("ge1980-06-01") == std::vector<std::string>{p4, p2});
  CHECK(by_birthdate("lt1980") == std::vector<std::string>{p5, p3});
  CHECK(by_birthdate("le1975-03-15") == std::vector<std::string>{p5, p3});
  CHECK(by_birthdate("gt1989") == std::vector<std::string>{p4});
  CHECK(by_birthdate("sa1980") == std::vector<std::string>{p4});
  CHECK(by_birthdate("eb1975-03-15") == std::vector<std::string>{p5});
  CHECK(by_birthdate("ne1980") == std::vector<std::string>{p5, p3, p4});  // p6 has no birth date
  CHECK(by_birthdate("eq1969-06-01") == std::vector<std::string>{});      // "1969" is not within one day
  CHECK(by_birthdate("ge1969-06-01") == std::vector<std::string>{p5, p3, p4, p1, p2});
  const auto ap = by_birthdate("ap1980-05-01");
  CHECK(std::count(ap.begin(), ap.end(), p1) == 1);
  CHECK(std::count(ap.begin(), ap.end(), p4) == 0);
  {
    PatientQuery range;  // repeated parameters AND: a range
    range.birthdate.push_back(date_param("ge1980-01-01"));
    range.birthdate.push_back(date_param("le1980-06"));
    CHECK(ids_of(search(range)) == std::vector<std::string>{p1});
  }

  // Paging: total counts every match; pages follow the same order.
  q = {};
  q.family = "smi";
  q.count = 2;
  page = search(q);
  CHECK(page.total == 4);
  CHECK(ids_of(page) == std::vector<std::string>{p4, p1});
  q.offset = 2;
  page = search(q);
  CHECK(ids_of(page) == std::vector<std::string>{p6, p2});
  CHECK(page.total == 4);  // a full last page: the total is counted
  q.count = 3;
  q.offset = 3;
  page = search(q);
  CHECK(ids_of(page) == std::vector<std::string>{p2});
  CHECK(page.total == 4);  // a short last page ends the matches
  q.count = 5;
  q.offset = 0;
  page = search(q);
  CHECK(page.items.size() == 4);
  CHECK(page.total == 4);  // one short page holds them all
  q.count = 2;
  q.offset = 4;
  page = search(q);
  CHECK(page.items.empty());
  CHECK(page.total == 4);
  q.offset = 0;
  q.count = 0;  // total only
  page = search(q);
  CHECK(page.items.empty());
  CHECK(page.total == 4);

  // Retired records only on request.
  REQUIRE(l->merge(p2, p1, "RX1").ok());
  q = {};
  q.family = "smi";
  CHECK(search(q).total == 3);
  q.include_retired = true;
  CHECK(search(q).total == 4);
}

TEST_CASE_TEMPLATE("Locator: pointers are created, updated and deleted only by their custodian", B, LOCATOR_BACKENDS) {
  auto l = B::make();
  const std::string pid = resolve_ok(*l, claim("RX1", nhs(20), {}), MatchOutcome::created);
  auto created = l->put_pointer("RX1", pointer(pid), {});
  REQUIRE(created.ok());
  CHECK_FALSE(created->id.empty());
  CHECK(created->version == 1);
  CHECK(created->source_ods == "RX1");
  CHECK_FALSE(created->last_updated.empty());

  auto read = l->read_pointer(created->id);
  REQUIRE(read.ok());
  REQUIRE(read->has_value());
  CHECK((*read)->url == created->url);
  CHECK((*read)->resource_types == std::vector<std::string>{"Encounter"});
  CHECK((*read)->type_system == "http://snomed.info/sct");
  CHECK((*read)->content_type == "application/fhir+json");

  Pointer update = **read;
  update.url = "https://rx1.example.nhs.uk/fhir/Encounter?patient=2";
  update.resource_types = {"Encounter", "Observation"};
  auto updated = l->put_pointer("RX1", update, {});
  REQUIRE(updated.ok());
  CHECK(updated->id == created->id);
  CHECK(updated->version == 2);
  CHECK((*l->read_pointer(created->id))->resource_types == std::vector<std::string>{"Encounter", "Observation"});

  SUBCASE("another source may not change or delete it") {
    auto other = l->put_pointer("RY2", update, {});
    REQUIRE_FALSE(other.ok());
    CHECK(other.issue().code == fhir::ErrorCode::forbidden);
    Pointer claims_other = pointer(pid);
    claims_other.source_ods = "RY2";  // writing as custodian RY2 while acting as RX1
    auto spoof = l->put_pointer("RX1", claims_other, {});
    REQUIRE_FALSE(spoof.ok());
    CHECK(spoof.issue().code == fhir::ErrorCode::forbidden);
    auto del = l->delete_pointer("RY2", created->id, {});
    REQUIRE_FALSE(del.ok());
    CHECK(del.issue().code == fhir::ErrorCode::forbidden);
    CHECK((*l->read_pointer(created->id))->version == 2);
  }
  SUBCASE("the custodian deletes it") {
    REQUIRE(l->delete_pointer("RX1", created->id, {}).ok());
    CHECK_FALSE(l->read_pointer(created->id)->has_value());
    CHECK(l->pointers_for(pid)->empty());
    auto again = l->delete_pointer("RX1", created->id, {});
    REQUIRE_FALSE(again.ok());
    CHECK(again.issue().code == fhir::ErrorCode::not_found);
  }
  SUBCASE("an unknown patient is not_found, bad pointers are refused") {
    auto orphan = l->put_pointer("RX1", pointer("no-such-patient"), {});
    REQUIRE_FALSE(orphan.ok());
    CHECK(orphan.issue().code == fhir::ErrorCode::not_found);
    Pointer bad = pointer(pid);
    bad.resource_types = {"NotAType"};
    auto r = l->put_pointer("RX1", bad, {});
    REQUIRE_FALSE(r.ok());
    CHECK(r.issue().expression == "resource_types[0]");
    bad = pointer(pid);
    bad.url.clear();
    CHECK(l->put_pointer("RX1", bad, {}).issue().code == fhir::ErrorCode::missing_value);
    CHECK(l->put_pointer("", pointer(pid), {}).issue().code == fhir::ErrorCode::forbidden);
    CHECK(l->pointers_for("no-such-patient").issue().code == fhir::ErrorCode::not_found);
    CHECK(l->stats()->pointers == 1);
  }
  SUBCASE("If-Match: the write applies only to a version it names, checked in its transaction") {
    VersionMatch v1{false, {1}};
    auto stale = l->put_pointer("RX1", update, v1);  // the pointer is at version 2
    REQUIRE_FALSE(stale.ok());
    CHECK(stale.issue().code == fhir::ErrorCode::precondition_failed);
    CHECK(stale.issue().diagnostics == "If-Match names another version than the current W/\"2\"; read it again and retry");
    CHECK((*l->read_pointer(created->id))->version == 2);  // nothing written
    auto matched = l->put_pointer("RX1", update, VersionMatch{false, {7, 2}});
    REQUIRE(matched.ok());
    CHECK(matched->version == 3);
    CHECK(l->put_pointer("RX1", update, VersionMatch{true, {}})->version == 4);  // If-Match: *
    Pointer absent = pointer(pid);
    absent.id = "RX1-absent";
    auto none = l->put_pointer("RX1", absent, VersionMatch{true, {}});
    REQUIRE_FALSE(none.ok());
    CHECK(none.issue().diagnostics == "If-Match names a version, but there is no such DocumentReference");
    CHECK_FALSE(l->read_pointer("RX1-absent")->has_value());  // If-Match never creates
    auto del_stale = l->delete_pointer("RX1", created->id, v1);
    REQUIRE_FALSE(del_stale.ok());
    CHECK(del_stale.issue().code == fhir::ErrorCode::precondition_failed);
    REQUIRE(l->delete_pointer("RX1", created->id, VersionMatch{false, {4}}).ok());
    CHECK(l->delete_pointer("RX1", created->id, VersionMatch{false, {4}}).issue().code ==
          fhir::ErrorCode::precondition_failed);
  }
  SUBCASE("the source's date is kept apart from the index's time of writing") {
    Pointer dated = pointer(pid, "Condition");
    dated.date = "2019-04-01T10:15:00.5+01:00";
    auto put = l->put_pointer("RX1", dated, {});
    REQUIRE(put.ok());
    CHECK(put->date == "2019-04-01T10:15:00.5+01:00");
    auto read = l->read_pointer(put->id);
    REQUIRE(read.ok());
    REQUIRE(read->has_value());
    CHECK((*read)->date == "2019-04-01T10:15:00.5+01:00");
    CHECK((*read)->last_updated != (*read)->date);
    for (const std::string bad : {"2019-04-01", "2019-04-01T10:15Z", "2019-04-01T10:15:00", "2019-13-01T10:15:00Z",
                                  "2019-04-01T10:15:00.Z", "yesterday"}) {
      CAPTURE(bad);
      dated.date = bad;
      auto refused = l->put_pointer("RX1", dated, {});
      REQUIRE_FALSE(refused.ok());
      CHECK(refused.issue().code == fhir::ErrorCode::invalid_value);
      CHECK(refused.issue().expression == "date");
    }
  }
  SUBCASE("a client-chosen id creates, then updates") {
    Pointer p = pointer(pid, "Condition");
    p.id = "RX1-chosen.1";
    auto first = l->put_pointer("RX1", p, {});
    REQUIRE(first.ok());
    CHECK(first->id == "RX1-chosen.1");
    CHECK(first->version == 1);
    CHECK(l->put_pointer("RX1", p, {})->version == 2);
    p.id = "bad id!";
    CHECK(l->put_pointer("RX1", p, {}).issue().expression == "id");
    auto list = l->pointers_for(pid);
    REQUIRE(list.ok());
    CHECK(list->size() == 2);
  }
}

TEST_CASE_TEMPLATE("Locator: an A40 merge retires a record into its survivor", B, LOCATOR_BACKENDS) {
  auto l = B::make();
  const std::string r = resolve_ok(*l, claim("RX1", nhs(30), {{kMrnA, "R1", ""}}), MatchOutcome::created);
  const std::string s = resolve_ok(*l, claim("RY2", "", {{kMrnB, "S1", ""}}, person("Khan", "Ali", "", "", "")),
                                   MatchOutcome::created);
  auto rp = l->put_pointer("RX1", pointer(r), {});
  auto sp = l->put_pointer("RY2", pointer(s, "Observation"), {});
  REQUIRE(rp.ok());
  REQUIRE(sp.ok());
  REQUIRE(l->set_objection(r, true).ok());

  REQUIRE(l->merge(r, s, "RX1").ok());
  const PatientRecord retired = read_ok(*l, r);
  REQUIRE(retired.merged_into);
  CHECK(*retired.merged_into == s);
  CHECK(retired.identifiers.empty());
  const PatientRecord survivor = read_ok(*l, s);
  CHECK_FALSE(survivor.merged_into);
  CHECK(survivor.merged_from == std::vector<std::string>{r});
  CHECK(has_identifier(survivor, kMrnA, "R1"));
  CHECK(has_identifier(survivor, kMrnB, "S1"));
  CHECK(survivor.demographics.nhs_number == nhs(30));  // the survivor takes the trusted number
  CHECK(survivor.demographics.family == "Khan");
  CHECK(survivor.objection);  // dissent survives the merge

  CHECK(lookup(*l, kMrnA, "R1") == s);
  CHECK(lookup(*l, kNhsNumberSystem, nhs(30)) == s);
  auto pointers = l->pointers_for(s);
  REQUIRE(pointers.ok());
  CHECK(pointers->size() == 2);
  CHECK((*l->read_pointer(rp->id))->patient_id == s);
  CHECK(l->pointers_for(r)->size() == 2);  // a retired id follows the merge
  CHECK(resolve_ok(*l, claim("RX1", nhs(30), {}), MatchOutcome::matched_nhs_number) == s);
  auto moved = l->put_pointer("RX1", pointer(r, "Procedure"), {});  // a pointer on a retired id
  REQUIRE(moved.ok());
  CHECK(moved->patient_id == s);

  Stats st = *l->stats();
  CHECK(st.patients == 1);
  CHECK(st.retired == 1);

  CHECK(l->merge(r, s, "RX1").ok());  // the same A40 again
  CHECK(l->merge(s, s, "RX1").issue().code == fhir::ErrorCode::invalid_value);
  CHECK(l->merge(s, r, "RX1").issue().code == fhir::ErrorCode::conflict);  // would be a cycle
  CHECK(l->merge("nobody", s, "RX1").issue().code == fhir::ErrorCode::not_found);
  CHECK(l->merge(s, "nobody", "RX1").issue().code == fhir::ErrorCode::not_found);
}

TEST_CASE_TEMPLATE("Locator: merge chains resolve to the last survivor", B, LOCATOR_BACKENDS) {
  auto l = B::make();
  const std::string a = resolve_ok(*l, claim("RX1", "", {{kMrnA, "A", ""}}), MatchOutcome::created);
  const std::string b = resolve_ok(*l, claim("RX1", "", {{kMrnA, "B", ""}}), MatchOutcome::created);
  const std::string c = resolve_ok(*l, claim("RX1", "", {{kMrnA, "C", ""}}), MatchOutcome::created);
  REQUIRE(l->merge(a, b, "RX1").ok());
  REQUIRE(l->merge(b, c, "RX1").ok());
  CHECK(lookup(*l, kMrnA, "A") == c);
  CHECK(lookup(*l, kMrnA, "B") == c);
  CHECK(*read_ok(*l, a).merged_into == c);  // records retired into b now point at c
  std::vector<std::string> from = read_ok(*l, c).merged_from;
  std::sort(from.begin(), from.end());
  std::vector<std::string> expected{a, b};
  std::sort(expected.begin(), expected.end());
  CHECK(from == expected);
  CHECK(l->merge(c, a, "RX1").issue().code == fhir::ErrorCode::conflict);  // cycle refused
  CHECK(l->merge(a, c, "RX1").ok());
  CHECK(l->merge(a, b, "RX1").ok());  // b now means c
  const std::string d = resolve_ok(*l, claim("RX1", "", {{kMrnA, "D", ""}}), MatchOutcome::created);
  CHECK(l->merge(a, d, "RX1").issue().code == fhir::ErrorCode::conflict);  // already merged elsewhere
  CHECK(l->stats()->retired == 2);
}

TEST_CASE_TEMPLATE("Locator: the objection flag is recorded and versioned", B, LOCATOR_BACKENDS) {
  auto l = B::make();
  const std::string id = resolve_ok(*l, claim("RX1", nhs(40), {}), MatchOutcome::created);
  CHECK_FALSE(read_ok(*l, id).objection);
  REQUIRE(l->set_objection(id, true).ok());
  PatientRecord p = read_ok(*l, id);
  CHECK(p.objection);
  CHECK(p.version == 2);
  REQUIRE(l->set_objection(id, true).ok());  // unchanged: no new version
  CHECK(read_ok(*l, id).version == 2);
  REQUIRE(l->set_objection(id, false).ok());
  CHECK_FALSE(read_ok(*l, id).objection);
  CHECK(l->set_objection("nobody", true).issue().code == fhir::ErrorCode::not_found);
}

TEST_CASE_TEMPLATE("Locator: an objection change is kept with its row awaiting the audit record", B, LOCATOR_BACKENDS) {
  auto l = B::make();
  const std::string retired = resolve_ok(*l, claim("RX1", "", {{kMrnA, "OC-1", ""}}), MatchOutcome::created);
  const std::string id = resolve_ok(*l, claim("RX1", nhs(41), {}), MatchOutcome::created);
  REQUIRE(l->merge(retired, id, "RX1").ok());
  auto change = [&](const std::string& patient, bool objection, std::int64_t at) {
    ObjectionChange c;
    c.id = new_objection_change_id();
    c.patient_id = patient;
    c.nhs_number = nhs(41);
    c.objection = objection;
    c.by = "user ig-jones (X26)";
    c.note = "request ref 42";
    c.request_id = "req-" + std::to_string(at);
    c.time_ms = at;
    return c;
  };
  // Recorded through the retired id: the survivor changes, and its row names the survivor.
  const ObjectionChange first = change(retired, true, 2000);
  auto changed = l->change_objection(first);
  REQUIRE(changed.ok());
  CHECK(*changed);
  CHECK(read_ok(*l, id).objection);
  // Already recorded: nothing changes and no row is kept.
  changed = l->change_objection(change(id, true, 3000));
  REQUIRE(changed.ok());
  CHECK_FALSE(*changed);
  const ObjectionChange second = change(id, false, 1000);
  REQUIRE(*l->change_objection(second));
  auto rows = l->unaudited_objection_changes(10);
  REQUIRE(rows.ok());
  REQUIRE(rows->size() == 2);  // oldest first
  CHECK(rows->at(0).id == second.id);
  CHECK_FALSE(rows->at(0).objection);
  CHECK(rows->at(1).id == first.id);
  CHECK(rows->at(1).patient_id == id);
  CHECK(rows->at(1).objection);
  CHECK(rows->at(1).nhs_number == nhs(41));
  CHECK(rows->at(1).by == "user ig-jones (X26)");
  CHECK(rows->at(1).note == "request ref 42");
  CHECK(rows->at(1).request_id == "req-2000");
  CHECK(rows->at(1).time_ms == 2000);
  CHECK(l->unaudited_objection_changes(1)->size() == 1);
  // Refused changes keep nothing, the objection neither.
  CHECK(l->change_objection(change("nobody", true, 4000)).issue().code == fhir::ErrorCode::not_found);
  ObjectionChange no_id = change(id, true, 4000);
  no_id.id.clear();
  CHECK(l->change_objection(no_id).issue().code == fhir::ErrorCode::missing_value);
  ObjectionChange long_note = change(id, true, 4000);
  long_note.note.assign(kMaxObjectionNoteBytes + 1, 'x');
  CHECK(l->change_objection(long_note).issue().expression == "note");
  CHECK_FALSE(read_ok(*l, id).objection);
  CHECK(l->unaudited_objection_changes(10)->size() == 2);
  // Forgotten once audited; an unknown id is ignored.
  REQUIRE(l->forget_objection_changes({first.id, "unknown"}).ok());
  rows = l->unaudited_objection_changes(10);
  REQUIRE(rows.ok());
  REQUIRE(rows->size() == 1);
  CHECK(rows->front().id == second.id);
}

TEST_CASE_TEMPLATE("Locator: source systems and statistics", B, LOCATOR_BACKENDS) {
  auto l = B::make();
  REQUIRE(l->upsert_source_system({"RX1", "Synthetic Trust", "hl7v2", "mllp://127.0.0.1:2575"}).ok());
  REQUIRE(l->upsert_source_system({"RX1", "Synthetic Trust (renamed)", "fhir", "https://rx1.example"}).ok());
  REQUIRE(l->upsert_source_system({"A12345", "Practice", "gpconnect", ""}).ok());
  CHECK(l->upsert_source_system({"", "x", "", ""}).issue().code == fhir::ErrorCode::missing_value);
  auto s = l->source_system("RX1");
  REQUIRE(s.ok());
  REQUIRE(s->has_value());
  CHECK((*s)->name == "Synthetic Trust (renamed)");
  CHECK((*s)->adapter == "fhir");
  CHECK_FALSE(l->source_system("ZZZ")->has_value());

  const std::string a = resolve_ok(*l, claim("RX1", nhs(50), {{kMrnA, "1", ""}, {kMrnB, "2", ""}}), MatchOutcome::created);
  const std::string b = resolve_ok(*l, claim("RX1", bad_nhs(51), {}), MatchOutcome::created);
  REQUIRE(l->put_pointer("RX1", pointer(a), {}).ok());
  REQUIRE(l->merge(b, a, "RX1").ok());
  const Stats st = *l->stats();
  CHECK(st.patients == 1);
  CHECK(st.retired == 1);
  CHECK(st.identifiers == 2);
  CHECK(st.pointers == 1);
  CHECK(st.source_systems == 2);
  CHECK(st.conflicts == 0);
  CHECK(st.nhs_numbers_untrusted == 0);
}

TEST_CASE_TEMPLATE("Locator: import keeps good records and reports a bad one without writing any of it", B,
                   LOCATOR_BACKENDS) {
  auto l = B::make();
  std::vector<ImportRecord> records(4);
  records[0].identity = claim("RX1", nhs(60), {{kMrnA, "I0", ""}}, person("Ada", "Lovelace", "1815-12-10", "female", ""));
  records[0].pointers = {pointer(""), pointer("", "Condition")};
  records[0].pointers[0].id = "RX1-import-0";
  records[0].pointers[1].id = "RX1-import-0b";
  records[1].identity = claim("RX1", nhs(61), {{kMrnA, "I1", ""}});
  records[1].pointers = {pointer(""), pointer("")};
  records[1].pointers[0].id = "RX1-import-1";
  records[1].pointers[1].url.clear();  // the second pointer is bad: the whole record goes
  records[2].identity = claim("RX1", "", {{kMrnA, "I2", ""}}, person("X", "Y", "", "robot", ""));
  records[3].identity = claim("RX1", nhs(63), {{kMrnA, "I3", ""}});
  records[3].pointers = {pointer("")};
  records[3].pointers[0].source_ods = "RZ9";  // another custodian, named in the record

  auto result = l->import(records);
  REQUIRE(result.ok());
  REQUIRE(result->records.size() == 4);
  CHECK(result->created == 2);
  CHECK(result->matched == 0);
  CHECK(result->rejected == 2);
  REQUIRE(result->records[0].ok());
  REQUIRE_FALSE(result->records[1].ok());
  CHECK(result->records[1].issue().expression == "pointers[1].url");
  REQUIRE_FALSE(result->records[2].ok());
  CHECK(result->records[2].issue().expression == "identity.demographics.gender");
  REQUIRE(result->records[3].ok());

  // Nothing of the rejected records was written.
  CHECK_FALSE(lookup(*l, kMrnA, "I1"));
  CHECK_FALSE(lookup(*l, kNhsNumberSystem, nhs(61)));
  CHECK_FALSE(l->read_pointer("RX1-import-1")->has_value());
  CHECK_FALSE(lookup(*l, kMrnA, "I2"));
  const Stats st = *l->stats();
  CHECK(st.patients == 2);
  CHECK(st.pointers == 3);
  CHECK(st.identifiers == 2);

  const std::string first = result->records[0]->patient_id;
  CHECK(lookup(*l, kMrnA, "I0") == first);
  CHECK((*l->read_pointer("RX1-import-0"))->patient_id == first);
  auto theirs = l->pointers_for(result->records[3]->patient_id);
  REQUIRE(theirs.ok());
  REQUIRE(theirs->size() == 1);
  CHECK(theirs->front().source_ods == "RZ9");

  // Importing again matches and updates in place: no duplicates.
  auto again = l->import({records[0]});
  REQUIRE(again.ok());
  REQUIRE(again->records[0].ok());
  CHECK(again->matched == 1);
  CHECK(again->records[0]->patient_id == first);
  CHECK((*l->read_pointer("RX1-import-0"))->version == 2);
  CHECK(l->stats()->pointers == 3);

  // A pointer id owned by another custodian rejects the record.
  ImportRecord hijack;
  hijack.identity = claim("RY2", nhs(64), {});
  hijack.pointers = {pointer("")};
  hijack.pointers[0].id = "RX1-import-0";
  auto h = l->import({hijack});
  REQUIRE(h.ok());
  REQUIRE_FALSE(h->records[0].ok());
  CHECK(h->records[0].issue().code == fhir::ErrorCode::forbidden);
  CHECK_FALSE(lookup(*l, kNhsNumberSystem, nhs(64)));

  // The same refusal between good records of one call: they go in, it leaves nothing.
  std::vector<ImportRecord> mixed(3);
  mixed[0].identity = claim("RY2", nhs(65), {{kMrnB, "X0", ""}});
  mixed[0].pointers = {pointer("")};
  mixed[0].pointers[0].id = "RY2-mixed-0";
  mixed[1] = hijack;
  mixed[1].identity.identifiers = {{kMrnB, "X1", ""}};
  mixed[2].identity = claim("RY2", nhs(66), {});
  auto m = l->import(mixed);
  REQUIRE(m.ok());
  CHECK(m->created == 2);
  CHECK(m->rejected == 1);
  REQUIRE_FALSE(m->records[1].ok());
  CHECK(m->records[1].issue().code == fhir::ErrorCode::forbidden);
  CHECK(m->records[1].issue().expression == "pointers[0].id");
  CHECK_FALSE(lookup(*l, kMrnB, "X1"));
  CHECK_FALSE(lookup(*l, kNhsNumberSystem, nhs(64)));
  CHECK(lookup(*l, kMrnB, "X0") == m->records[0]->patient_id);
  CHECK(l->read_pointer("RY2-mixed-0")->has_value());
  CHECK(lookup(*l, kNhsNumberSystem, nhs(66)) == m->records[2]->patient_id);
  CHECK((*l->read_pointer("RX1-import-0"))->source_ods == "RX1");
}

TEST_CASE_TEMPLATE("Locator: ingest resolves, records the encounter and keeps one pointer per source", B,
                   LOCATOR_BACKENDS) {
  auto l = B::make();
  IngestUpdate u;
  u.identity = claim("RX1", nhs(40), {{kMrnA, "I-1", ""}}, person("Patel", "Asha", "1990-02-03", "female", "LS1 4AB"));
  u.encounters.push_back(Encounter{"RX1", 1790000000, ""});
  Pointer p = pointer("");
  p.patient_id.clear();
  p.id.clear();
  p.url = "https://gw.example/Encounter?patient={patient}";
  p.resource_types = {"Encounter"};
  u.pointer = p;
  auto first = l->ingest(u);
  REQUIRE(first.ok());
  const std::string id = first->resolution.patient_id;
  CHECK(outcome_name(first->resolution.outcome) == outcome_name(MatchOutcome::created));
  REQUIRE(first->pointer);
  CHECK(first->pointer->url == "https://gw.example/Encounter?patient=" + id);  // {patient} filled in
  CHECK(first->pointer->id == id + "-RX1");
  const PatientRecord rec = read_ok(*l, id);
  REQUIRE(rec.encounters.size() == 1);
  CHECK(rec.encounters[0].organisation_ods == "RX1");
  CHECK(rec.encounters[0].source_ods == "RX1");

  // The next unit from the same source: the same record, the same pointer, types accumulate.
  u.pointer->resource_types = {"Observation"};
  auto second = l->ingest(u);
  REQUIRE(second.ok());
  CHECK(second->resolution.patient_id == id);
  REQUIRE(second->pointer);
  CHECK(second->pointer->id == first->pointer->id);
  CHECK(second->pointer->resource_types == std::vector<std::string>{"Encounter", "Observation"});
  CHECK(l->pointers_for(id)->size() == 1);
  CHECK(read_ok(*l, id).encounters.size() == 1);  // the same encounter again changes nothing
}

TEST_CASE_TEMPLATE("Locator: an ingested A40 merges the record its prior identifiers name", B, LOCATOR_BACKENDS) {
  auto l = B::make();
  const std::string old_rec = resolve_ok(*l, claim("RX1", "", {{kMrnA, "OLD-1", ""}}), MatchOutcome::created);
  IngestUpdate u;
  u.identity = claim("RX1", nhs(41), {{kMrnA, "NEW-1", ""}});
  u.retired = {Identifier{kMrnA, "OLD-1", "RX1"}};
  auto merged = l->ingest(u);
  REQUIRE(merged.ok());
  const std::string survivor = merged->resolution.patient_id;
  CHECK(survivor != old_rec);
  CHECK(merged->retired_patient_id == old_rec);
  CHECK(*read_ok(*l, old_rec).merged_into == survivor);
  CHECK(lookup(*l, kMrnA, "OLD-1") == survivor);

  // The same A40 again: harmless, still merged.
  auto again = l->ingest(u);
  REQUIRE(again.ok());
  CHECK(again->resolution.patient_id == survivor);
  CHECK(read_ok(*l, survivor).merged_from == std::vector<std::string>{old_rec});

  // Prior identifiers nobody holds: not_found, and nothing of the update is written.
  IngestUpdate unknown;
  unknown.identity = claim("RX1", nhs(42), {{kMrnA, "NEW-2", ""}});
  unknown.retired = {Identifier{kMrnA, "NOBODY", "RX1"}};
  auto refused = l->ingest(unknown);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.issue().code == fhir::ErrorCode::not_found);
  CHECK(refused.issue().expression == "retired");
  CHECK_FALSE(lookup(*l, kNhsNumberSystem, nhs(42)));
  CHECK_FALSE(lookup(*l, kMrnA, "NEW-2"));
}

TEST_CASE_TEMPLATE("Locator: an A40 whose PID-3 carries the retired record's NHS number merges it into the record its "
                   "local identifier names", B, LOCATOR_BACKENDS) {
  // The PAS moves everything of the retired MRN, NHS number included, to the surviving MRN,
  // and the A40's PID-3 says so: resolving the survivor by that NHS number would find the
  // retired record itself and the merge would be skipped as if done already.
  auto l = B::make();
  const std::string old_rec = resolve_ok(*l, claim("RX1", nhs(43), {{kMrnA, "OLD-3", ""}}), MatchOutcome::created);
  const std::string keep = resolve_ok(*l, claim("RX1", "", {{kMrnA, "KEEP-3", ""}}), MatchOutcome::created);
  IngestUpdate u;
  u.identity = claim("RX1", nhs(43), {{kMrnA, "KEEP-3", ""}});
  u.retired = {Identifier{kMrnA, "OLD-3", "RX1"}};
  auto merged = l->ingest(u);
  REQUIRE(merged.ok());
  CHECK(merged->resolution.patient_id == keep);
  CHECK(merged->retired_patient_id == old_rec);
  const PatientRecord retired = read_ok(*l, old_rec);
  REQUIRE(retired.merged_into);
  CHECK(*retired.merged_into == keep);
  const PatientRecord survivor = read_ok(*l, keep);
  CHECK(survivor.demographics.nhs_number == nhs(43));
  CHECK(survivor.nhs_number_trusted);
  CHECK(survivor.merged_from == std::vector<std::string>{old_rec});
  CHECK(lookup(*l, kNhsNumberSystem, nhs(43)) == keep);
  CHECK(lookup(*l, kMrnA, "OLD-3") == keep);
  CHECK(l->conflicts(10, 0)->empty());  // nothing left "held by another record"

  // The same A40 again: harmless, still one merge.
  auto again = l->ingest(u);
  REQUIRE(again.ok());
  CHECK(again->resolution.patient_id == keep);
  CHECK(read_ok(*l, keep).merged_from == std::vector<std::string>{old_rec});
  CHECK(l->stats()->retired == 1);
}

TEST_CASE_TEMPLATE("Locator: an ingested A40 leaves its source one pointer for the survivor, holding the retired "
                   "record's resource types", B, LOCATOR_BACKENDS) {
  auto l = B::make();
  const auto unit = [](const std::string& mrn, const std::string& type) {
    IngestUpdate u;
    u.identity = claim("RX1", "", {{kMrnA, mrn, ""}});
    Pointer p = pointer("");
    p.patient_id.clear();
    p.id.clear();
    p.url = "https://gw.example/Patient/{patient}";
    p.resource_types = {type};
    u.pointer = p;
    return u;
  };
  auto old_unit = l->ingest(unit("OLD-4", "Encounter"));
  auto keep_unit = l->ingest(unit("KEEP-4", "Observation"));
  REQUIRE(old_unit.ok());
  REQUIRE(keep_unit.ok());
  const std::string old_rec = old_unit->resolution.patient_id;
  const std::string keep = keep_unit->resolution.patient_id;
  REQUIRE(old_rec != keep);

  IngestUpdate merge = unit("KEEP-4", "Patient");
  merge.retired = {Identifier{kMrnA, "OLD-4", "RX1"}};
  auto merged = l->ingest(merge);
  REQUIRE(merged.ok());
  CHECK(merged->resolution.patient_id == keep);
  auto pointers = l->pointers_for(keep);
  REQUIRE(pointers.ok());
  REQUIRE(pointers->size() == 1);  // not the survivor's and the retired record's
  CHECK((*pointers)[0].id == keep + "-RX1");
  CHECK((*pointers)[0].resource_types == std::vector<std::string>{"Encounter", "Observation", "Patient"});
  CHECK_FALSE(*l->read_pointer(old_rec + "-RX1"));

  // The same A40 again changes nothing more.
  auto again = l->ingest(merge);
  REQUIRE(again.ok());
  CHECK(l->pointers_for(keep)->size() == 1);
}

TEST_CASE_TEMPLATE("Locator: an ingest pointer's url follows the resource types of every unit so far, a folded "
                   "pointer's too", B, LOCATOR_BACKENDS) {
  // Issue #4: a source that sent an A01 (Encounter) and then an A31 without PV1 (Patient only)
  // keeps a pointer holding Encounter: its url must still read the Encounters.
  auto l = B::make();
  const auto unit = [](const std::string& mrn, std::vector<std::string> types) {
    IngestUpdate u;
    u.identity = claim("RX1", "", {{kMrnA, mrn, ""}});
    Pointer p = pointer("");
    p.patient_id.clear();
    p.id.clear();
    p.url = "https://elsewhere.example/not-used";
    p.resource_types = std::move(types);
    u.pointer = p;
    u.pointer_base_url = "https://gw.example";
    return u;
  };
  auto a01 = l->ingest(unit("URL-1", {"Encounter", "Patient"}));
  REQUIRE(a01.ok());
  REQUIRE(a01->pointer);
  const std::string visited = a01->resolution.patient_id;
  CHECK(a01->pointer->url == "https://gw.example/Encounter?patient=" + visited);
  auto a31 = l->ingest(unit("URL-1", {"Patient"}));
  REQUIRE(a31.ok());
  REQUIRE(a31->pointer);
  CHECK(a31->pointer->resource_types == std::vector<std::string>{"Encounter", "Patient"});
  CHECK(a31->pointer->url == "https://gw.example/Encounter?patient=" + visited);
  auto stored = l->read_pointer(visited + "-RX1");
  REQUIRE(stored.ok());
  REQUIRE(stored->has_value());
  CHECK((*stored)->url == "https://gw.example/Encounter?patient=" + visited);

  // Results first: the url reads the reports, through a unit without any, until a visit comes.
  auto oru = l->ingest(unit("URL-2", {"DiagnosticReport", "Observation", "Patient"}));
  REQUIRE(oru.ok());
  REQUIRE(oru->pointer);
  const std::string tested = oru->resolution.patient_id;
  CHECK(oru->pointer->url == "https://gw.example/DiagnosticReport?patient=" + tested);
  auto a28 = l->ingest(unit("URL-2", {"Patient"}));
  REQUIRE(a28.ok());
  REQUIRE(a28->pointer);
  CHECK(a28->pointer->url == "https://gw.example/DiagnosticReport?patient=" + tested);
  auto admitted = l->ingest(unit("URL-2", {"Encounter", "Patient"}));
  REQUIRE(admitted.ok());
  REQUIRE(admitted->pointer);
  CHECK(admitted->pointer->url == "https://gw.example/Encounter?patient=" + tested);

  // A patient known only by demographics so far: the Patient itself. An A40 of the visited
  // record into it folds in that record's pointer, whose Encounters the survivor's url now reads.
  auto registered = l->ingest(unit("URL-3", {"Patient"}));
  REQUIRE(registered.ok());
  REQUIRE(registered->pointer);
  const std::string survivor = registered->resolution.patient_id;
  CHECK(registered->pointer->url == "https://gw.example/Patient/" + survivor);
  IngestUpdate a40 = unit("URL-3", {"Patient"});
  a40.retired = {Identifier{kMrnA, "URL-1", "RX1"}};
  auto merged = l->ingest(a40);
  REQUIRE(merged.ok());
  CHECK(merged->resolution.patient_id == survivor);
  CHECK(merged->retired_patient_id == visited);
  auto pointers = l->pointers_for(survivor);
  REQUIRE(pointers.ok());
  REQUIRE(pointers->size() == 1);
  CHECK((*pointers)[0].resource_types == std::vector<std::string>{"Encounter", "Patient"});
  CHECK((*pointers)[0].url == "https://gw.example/Encounter?patient=" + survivor);
}

TEST_CASE_TEMPLATE("Locator: an ingested A40 re-points every source's gateway-built pointer url at the survivor, "
                   "never a url a source gave", B, LOCATOR_BACKENDS) {
  auto l = B::make();
  const auto unit = [](const std::string& source, const std::string& nhs_number, const Identifier& mrn,
                       std::vector<std::string> types) {
    IngestUpdate u;
    u.identity = claim(source, nhs_number, {mrn});
    Pointer p = pointer("");
    p.patient_id.clear();
    p.id.clear();
    p.resource_types = std::move(types);
    u.pointer = p;
    u.pointer_base_url = "https://gw.example";
    return u;
  };
  // The record to retire: RX1's feed and RY2's feed both hold it (the same NHS number), and
  // RY3 keeps pointers of its own made through the FHIR pointer API.
  auto rx1 = l->ingest(unit("RX1", nhs(50), {kMrnA, "OLD-5", ""}, {"Patient"}));
  REQUIRE(rx1.ok());
  const std::string old_rec = rx1->resolution.patient_id;
  auto ry2 = l->ingest(unit("RY2", nhs(50), {kMrnB, "Y-5", ""}, {"Encounter", "Patient"}));
  REQUIRE(ry2.ok());
  REQUIRE(ry2->resolution.patient_id == old_rec);
  REQUIRE(ry2->pointer);
  const Pointer built = *ry2->pointer;
  REQUIRE(built.url == "https://gw.example/Encounter?patient=" + old_rec);
  Pointer given = pointer(old_rec);
  given.url = "https://ry3.example.nhs.uk/fhir/Encounter?patient=" + old_rec;
  auto external = l->put_pointer("RY3", given, {});
  REQUIRE(external.ok());
  // A source-given url on the gateway's own base, but not what ingest builds for its types.
  given.url = "https://gw.example/Patient/" + old_rec;
  auto lookalike = l->put_pointer("RY3", given, {});
  REQUIRE(lookalike.ok());

  // RX1's A40: OLD-5 merged into KEEP-5.
  auto keep_unit = l->ingest(unit("RX1", "", {kMrnA, "KEEP-5", ""}, {"Patient"}));
  REQUIRE(keep_unit.ok());
  const std::string keep = keep_unit->resolution.patient_id;
  REQUIRE(keep != old_rec);
  IngestUpdate a40 = unit("RX1", "", {kMrnA, "KEEP-5", ""}, {"Patient"});
  a40.retired = {Identifier{kMrnA, "OLD-5", "RX1"}};
  auto merged = l->ingest(a40);
  REQUIRE(merged.ok());
  REQUIRE(merged->resolution.patient_id == keep);
  REQUIRE(merged->retired_patient_id == old_rec);

  // RY2's pointer: moved, and its url names the survivor (one version for the move).
  auto moved = l->read_pointer(built.id);
  REQUIRE(moved.ok());
  REQUIRE(moved->has_value());
  CHECK((*moved)->patient_id == keep);
  CHECK((*moved)->url == "https://gw.example/Encounter?patient=" + keep);
  CHECK((*moved)->version == built.version + 1);
  CHECK((*moved)->source_ods == "RY2");
  CHECK((*moved)->resource_types == built.resource_types);
  // RY3's: moved, their urls as RY3 gave them.
  for (const Pointer& p : {*external, *lookalike}) {
    CAPTURE(p.id);
    auto now = l->read_pointer(p.id);
    REQUIRE(now.ok());
    REQUIRE(now->has_value());
    CHECK((*now)->patient_id == keep);
    CHECK((*now)->url == p.url);
    CHECK((*now)->version == p.version + 1);
  }
  // RX1's own: folded into the survivor's, as before.
  auto pointers = l->pointers_for(keep);
  REQUIRE(pointers.ok());
  CHECK(pointers->size() == 4);
  for (const Pointer& p : *pointers)
    if (p.source_ods != "RY3") CHECK(p.url.find(old_rec) == std::string::npos);

  // The same A40 again changes nothing more.
  auto again = l->ingest(a40);
  REQUIRE(again.ok());
  auto still = l->read_pointer(built.id);
  REQUIRE(still.ok());
  REQUIRE(still->has_value());
  CHECK((*still)->version == built.version + 1);
}
