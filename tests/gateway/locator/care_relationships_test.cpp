// SPDX-License-Identifier: Apache-2.0
// The conformance suite's part for care relationships (issue #5 "legitimate relationship"):
// care team membership and encounters, their bounds, merges and input checks, run against
// SqliteLocator and FakeLocator alike.
#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "locator_test_support.h"

using namespace gw::locator;
using namespace gw::locator::test;
using fhir::ErrorCode;

namespace {

// A patient with local identifier kMrnA|CR<n> and no NHS number (so any two can merge).
std::string new_patient(Locator& l, int n) {
  std::string mrn = "CR";
  mrn += std::to_string(n);
  auto r = l.resolve(claim("RX1", "", {{kMrnA, mrn, ""}}));
  REQUIRE(r.ok());
  return r->patient_id;
}

std::vector<std::string> members(const PatientRecord& p) {
  std::vector<std::string> out;
  for (const auto& m : p.care_team) out.push_back(m.member);
  return out;
}

const CareTeamMember& member_of(const PatientRecord& p, const std::string& member) {
  auto it = std::find_if(p.care_team.begin(), p.care_team.end(),
                         [&](const CareTeamMember& m) { return m.member == member; });
  REQUIRE(it != p.care_team.end());
  return *it;
}

// "<organisation>@<at>"
std::string enc(const std::string& organisation, std::int64_t at) {
  std::string s = organisation;
  s += "@";
  s += std::to_string(at);
  return s;
}

// enc() of each encounter, in order.
std::vector<std::string> encounters(const PatientRecord& p) {
  std::vector<std::string> out;
  for (const auto& e : p.encounters) out.push_back(enc(e.organisation_ods, e.at));
  return out;
}

std::string numbered(const char* prefix, int n) {
  std::string s = prefix;
  if (n < 100) s += '0';
  if (n < 10) s += '0';
  s += std::to_string(n);
  return s;
}

std::int64_t epoch(std::string_view date) {
  auto r = fhir::parse_fhir_date(date);
  REQUIRE(r.ok());
  return r->begin;
}

void refused(const fhir::Status& s, ErrorCode code, std::string_view expression) {
  REQUIRE_FALSE(s.ok());
  CHECK(s.issue().code == code);
  CHECK(s.issue().expression == expression);
  CHECK_FALSE(s.issue().diagnostics.empty());
}

}  // namespace

TEST_CASE_TEMPLATE("Locator: care team members are added with their until and source, replaced and removed", B,
                   LOCATOR_BACKENDS) {
  auto l = B::make();
  const std::string id = new_patient(*l, 0);
  REQUIRE(l->add_care_team_member("RX1", id, "user-1", std::nullopt).ok());
  REQUIRE(l->add_care_team_member("RX1", id, "RX1", std::string("2999-12-31")).ok());
  REQUIRE(l->add_care_team_member("RY2", id, "sds|5555 0001", std::string("2999-06-30T17:00:00Z")).ok());

  PatientRecord p = read_ok(*l, id);
  CHECK(members(p) == std::vector<std::string>{"RX1", "sds|5555 0001", "user-1"});  // ordered by member
  CHECK(member_of(p, "RX1").until == "2999-12-31");
  CHECK(member_of(p, "RX1").source_ods == "RX1");
  CHECK(member_of(p, "sds|5555 0001").until == "2999-06-30T17:00:00Z");
  CHECK(member_of(p, "sds|5555 0001").source_ods == "RY2");
  CHECK(member_of(p, "user-1").until.empty());
  CHECK(p.version == 1);  // not part of the Patient resource
  CHECK(p.encounters.empty());

  // The same member again replaces its until and source: still one row.
  REQUIRE(l->add_care_team_member("RY2", id, "user-1", std::string("2999-01-01")).ok());
  p = read_ok(*l, id);
  CHECK(p.care_team.size() == 3);
  CHECK(member_of(p, "user-1").until == "2999-01-01");
  CHECK(member_of(p, "user-1").source_ods == "RY2");
  REQUIRE(l->add_care_team_member("RX1", id, "user-1", std::string()).ok());  // empty: open-ended again
  CHECK(member_of(read_ok(*l, id), "user-1").until.empty());

  // Search results come complete too.
  PatientQuery q;
  q.identifier = Identifier{kMrnA, "CR0", ""};
  auto found = l->search_patients(q);
  REQUIRE(found.ok());
  REQUIRE(found->items.size() == 1);
  CHECK(members(found->items[0]) == members(read_ok(*l, id)));

  // Any source may remove a member; a second removal finds nothing.
  REQUIRE(l->remove_care_team_member("RX1", id, "sds|5555 0001").ok());
  CHECK(members(read_ok(*l, id)) == std::vector<std::string>{"RX1", "user-1"});
  refused(l->remove_care_team_member("RX1", id, "sds|5555 0001"), ErrorCode::not_found, "member");
  CHECK(members(read_ok(*l, id)) == std::vector<std::string>{"RX1", "user-1"});
}

TEST_CASE("Locator: a care team member is current until the end of its until") {
  const auto current = [](std::string until, std::string_view at) {
    return care_team_member_current(CareTeamMember{"user-1", std::move(until), "RX1"}, epoch(at));
  };
  CHECK(current("", "2999-01-01"));                        // open-ended
  CHECK(current("2026-03-31", "2026-03-31T23:59:59Z"));    // a date lasts to its end
  CHECK_FALSE(current("2026-03-31", "2026-04-01"));
  CHECK(current("2026-03", "2026-03-31T12:00:00Z"));       // a month lasts the month
  CHECK(current("2026-03-31T17:00:00Z", "2026-03-31T17:00:00Z"));  // to the end of that second
  CHECK_FALSE(current("2026-03-31T17:00:00Z", "2026-03-31T17:00:01Z"));
  CHECK_FALSE(current("2026-03-31T18:00:00+01:00", "2026-03-31T17:00:01Z"));  // zones honoured
  CHECK_FALSE(current("not a date", "1970-01-01"));        // unreadable: ended
}

TEST_CASE_TEMPLATE("Locator: encounters are recorded once each and read newest first", B, LOCATOR_BACKENDS) {
  auto l = B::make();
  const std::string id = new_patient(*l, 1);
  REQUIRE(l->record_encounter("RX1", id, "RX1", 1000).ok());
  REQUIRE(l->record_encounter("RY2", id, "RY2", 3000).ok());
  REQUIRE(l->record_encounter("RX1", id, "RX1", 2000).ok());
  REQUIRE(l->record_encounter("RY2", id, "RX1", 2000).ok());  // the same encounter from another feed
  REQUIRE(l->record_encounter("RX1", id, "RZ3", 3000).ok());  // same time: ordered by organisation
  REQUIRE(l->record_encounter("RX1", id, "rx1", 0).ok());     // as sent: ODS codes are not case-folded
  const PatientRecord p = read_ok(*l, id);
  CHECK(encounters(p) == std::vector<std::string>{"RY2@3000", "RZ3@3000", "RX1@2000", "RX1@1000", "rx1@0"});
  REQUIRE(p.encounters.size() == 5);
  CHECK(p.encounters[2].source_ods == "RX1");  // the first report is kept
  CHECK(p.encounters[0].source_ods == "RY2");
  CHECK(p.version == 1);
}

TEST_CASE_TEMPLATE("Locator: encounters are bounded per organisation and per patient", B, LOCATOR_BACKENDS) {
  auto l = B::make();
  const std::string id = new_patient(*l, 2);
  REQUIRE(l->record_encounter("RY2", id, "RY2", 5).ok());
  // 15 at RX1, out of order: the newest 10 stay.
  for (int t : {8, 3, 15, 1, 12, 9, 2, 14, 6, 11, 4, 13, 7, 10, 5})
    REQUIRE(l->record_encounter("RX1", id, "RX1", t).ok());
  PatientRecord p = read_ok(*l, id);
  std::vector<std::string> expected;
  for (int t = 15; t >= 6; --t) {
    expected.push_back(enc("RX1", t));
    if (t == 6) expected.push_back("RY2@5");  // another organisation's encounter is not crowded out
  }
  CHECK(encounters(p) == expected);
  REQUIRE(kMaxEncountersPerOrganisation == 10);
  // Older than every one kept: accepted, not kept.
  REQUIRE(l->record_encounter("RX1", id, "RX1", 1).ok());
  CHECK(encounters(read_ok(*l, id)) == expected);

  // 100 newer encounters at 10 other organisations: the patient keeps the newest 100.
  for (int org = 0; org < 10; ++org)
    for (int k = 0; k < 10; ++k)
      REQUIRE(l->record_encounter("RZ3", id, numbered("RA", org), 1000 + org * 10 + k).ok());
  p = read_ok(*l, id);
  REQUIRE(p.encounters.size() == kMaxEncountersPerPatient);
  CHECK(p.encounters.front().organisation_ods == "RA009");
  CHECK(p.encounters.front().at == 1099);
  CHECK(p.encounters.back().at == 1000);
  CHECK(std::none_of(p.encounters.begin(), p.encounters.end(),
                     [](const Encounter& e) { return e.organisation_ods == "RX1" || e.organisation_ods == "RY2"; }));
  // A newer one still gets in, pushing out the oldest.
  REQUIRE(l->record_encounter("RX1", id, "RX1", 5000).ok());
  p = read_ok(*l, id);
  REQUIRE(p.encounters.size() == kMaxEncountersPerPatient);
  CHECK(encounters(p).front() == "RX1@5000");
  CHECK(p.encounters.back().at == 1001);
}

TEST_CASE_TEMPLATE("Locator: a care team is bounded by its current members; ended ones make way", B,
                   LOCATOR_BACKENDS) {
  auto l = B::make();
  const std::string s = new_patient(*l, 3);
  for (int i = 0; i < static_cast<int>(kMaxCareTeamMembers); ++i)
    REQUIRE(l->add_care_team_member("RX1", s, numbered("m", i), std::nullopt).ok());
  refused(l->add_care_team_member("RX1", s, "m100", std::nullopt), ErrorCode::conflict, "member");
  REQUIRE(l->add_care_team_member("RX1", s, "m050", std::string("2999-01-01")).ok());  // a member already there
  CHECK(read_ok(*l, s).care_team.size() == kMaxCareTeamMembers);

  // An ended member is kept until the next addition (here it comes in through a merge).
  const std::string r = new_patient(*l, 4);
  REQUIRE(l->add_care_team_member("RX1", r, "gone", std::string("2001-01-01")).ok());
  CHECK(members(read_ok(*l, r)) == std::vector<std::string>{"gone"});
  REQUIRE(l->merge(r, s, "RX1").ok());
  CHECK(read_ok(*l, s).care_team.size() == kMaxCareTeamMembers + 1);

  // Still 100 current members: refused, and the ended member's clean-up is undone with it.
  refused(l->add_care_team_member("RX1", s, "m100", std::nullopt), ErrorCode::conflict, "member");
  PatientRecord p = read_ok(*l, s);
  CHECK(p.care_team.size() == kMaxCareTeamMembers + 1);
  CHECK(member_of(p, "gone").until == "2001-01-01");

  REQUIRE(l->remove_care_team_member("RX1", s, "m000").ok());
  REQUIRE(l->add_care_team_member("RX1", s, "m100", std::nullopt).ok());
  p = read_ok(*l, s);
  CHECK(p.care_team.size() == kMaxCareTeamMembers);
  CHECK(std::none_of(p.care_team.begin(), p.care_team.end(),
                     [](const CareTeamMember& m) { return m.member == "gone"; }));
  CHECK(p.care_team.back().member == "m100");
}

TEST_CASE_TEMPLATE("Locator: care relationships of a merged record count for the survivor", B, LOCATOR_BACKENDS) {
  auto l = B::make();
  const std::string r = new_patient(*l, 5);
  const std::string s = new_patient(*l, 6);
  REQUIRE(l->add_care_team_member("RX1", r, "A", std::nullopt).ok());
  REQUIRE(l->add_care_team_member("RX1", r, "B", std::string("2999-01-01")).ok());
  REQUIRE(l->add_care_team_member("RX1", r, "C", std::string("2999-12-31")).ok());
  REQUIRE(l->add_care_team_member("RY2", s, "B", std::nullopt).ok());
  REQUIRE(l->add_care_team_member("RY2", s, "C", std::string("2999-06")).ok());
  REQUIRE(l->add_care_team_member("RY2", s, "D", std::nullopt).ok());
  for (int t = 1; t <= 10; ++t) REQUIRE(l->record_encounter("RX1", r, "RX1", t).ok());
  REQUIRE(l->record_encounter("RX1", r, "RZ3", 100).ok());
  for (int t = 8; t <= 17; ++t) REQUIRE(l->record_encounter("RX1", s, "RX1", t).ok());
  REQUIRE(l->record_encounter("RY2", s, "RY2", 50).ok());

  REQUIRE(l->merge(r, s, "RX1").ok());
  const PatientRecord retired = read_ok(*l, r);
  CHECK(retired.care_team.empty());  // moved, not copied
  CHECK(retired.encounters.empty());
  PatientRecord p = read_ok(*l, s);
  CHECK(members(p) == std::vector<std::string>{"A", "B", "C", "D"});
  CHECK(member_of(p, "A").source_ods == "RX1");
  CHECK(member_of(p, "B").until.empty());  // open-ended outlasts any date
  CHECK(member_of(p, "B").source_ods == "RY2");
  CHECK(member_of(p, "C").until == "2999-12-31");  // the later end wins
  CHECK(member_of(p, "C").source_ods == "RX1");
  // Encounters joined without duplicates, then bounded: RX1 keeps its newest 10 (8..17).
  std::vector<std::string> expected{"RZ3@100", "RY2@50"};
  for (int t = 17; t >= 8; --t) expected.push_back(enc("RX1", t));
  CHECK(encounters(p) == expected);

  // Writes through the retired id reach the survivor.
  REQUIRE(l->add_care_team_member("RX1", r, "E", std::nullopt).ok());
  REQUIRE(l->record_encounter("RX1", r, "RX1", 200).ok());
  REQUIRE(l->remove_care_team_member("RX1", r, "A").ok());
  p = read_ok(*l, s);
  CHECK(members(p) == std::vector<std::string>{"B", "C", "D", "E"});
  CHECK(encounters(p).front() == "RX1@200");
  CHECK(read_ok(*l, r).care_team.empty());
}

TEST_CASE_TEMPLATE("Locator: care relationships of an unknown patient are not_found", B, LOCATOR_BACKENDS) {
  auto l = B::make();
  refused(l->add_care_team_member("RX1", "no-such-patient", "user-1", std::nullopt), ErrorCode::not_found,
          "patient_id");
  refused(l->remove_care_team_member("RX1", "no-such-patient", "user-1"), ErrorCode::not_found, "patient_id");
  refused(l->record_encounter("RX1", "no-such-patient", "RX1", 1000), ErrorCode::not_found, "patient_id");
  CHECK(l->stats()->patients == 0);
}

TEST_CASE_TEMPLATE("Locator: bad care relationship input is refused naming the parameter, writing nothing", B,
                   LOCATOR_BACKENDS) {
  auto l = B::make();
  const std::string id = new_patient(*l, 7);
  const auto add = [&](std::string acting, std::string patient, std::string member,
                       std::optional<std::string> until = std::nullopt) {
    return l->add_care_team_member(acting, patient, member, std::move(until));
  };

  refused(add("", id, "user-1"), ErrorCode::forbidden, "source_ods");
  refused(add(std::string(65, 'R'), id, "user-1"), ErrorCode::invalid_value, "source_ods");
  refused(add("RX1", "", "user-1"), ErrorCode::missing_value, "patient_id");
  refused(add("RX1", std::string(65, 'p'), "user-1"), ErrorCode::invalid_value, "patient_id");
  refused(add("RX1", id, ""), ErrorCode::missing_value, "member");
  refused(add("RX1", id, std::string(129, 'u')), ErrorCode::invalid_value, "member");
  refused(add("RX1", id, "user\t1"), ErrorCode::invalid_value, "member");
  refused(add("RX1", id, " user-1"), ErrorCode::invalid_value, "member");
  refused(add("RX1", id, "user-1 "), ErrorCode::invalid_value, "member");
  refused(add("RX1", id, "us\xC3\xA9r"), ErrorCode::invalid_value, "member");
  refused(add("RX1", id, std::string("user\0x", 6)), ErrorCode::invalid_value, "member");
  for (const char* until : {"2026-13-01", "tomorrow", "2026-01-01T25:00:00Z", "2026-01-01 10:00", " 2026"})
    refused(add("RX1", id, "user-1", std::string(until)), ErrorCode::invalid_value, "until");
  refused(add("RX1", id, "user-1", std::string(65, '1')), ErrorCode::invalid_value, "until");
  refused(l->remove_care_team_member("", id, "user-1"), ErrorCode::forbidden, "source_ods");
  refused(l->remove_care_team_member("RX1", id, "user\n1"), ErrorCode::invalid_value, "member");

  refused(l->record_encounter("", id, "RX1", 1000), ErrorCode::forbidden, "source_ods");
  refused(l->record_encounter("RX1", "", "RX1", 1000), ErrorCode::missing_value, "patient_id");
  refused(l->record_encounter("RX1", id, "", 1000), ErrorCode::missing_value, "organisation_ods");
  const std::vector<std::string> bad_ods{"RX1 ", "R-X1", "RX1;--", "RX\xC3\x89", std::string(65, 'R')};
  for (const std::string& ods : bad_ods)
    refused(l->record_encounter("RX1", id, ods, 1000), ErrorCode::invalid_value, "organisation_ods");
  refused(l->record_encounter("RX1", id, "RX1", -1), ErrorCode::invalid_value, "at");
  refused(l->record_encounter("RX1", id, "RX1", 253402300800), ErrorCode::invalid_value, "at");

  PatientRecord p = read_ok(*l, id);
  CHECK(p.care_team.empty());
  CHECK(p.encounters.empty());
  CHECK(p.version == 1);

  // The limits themselves are accepted.
  REQUIRE(add("RX1", id, std::string(128, 'u')).ok());
  REQUIRE(add(std::string(64, 'R'), id, "~!user 1@", std::string("2026")).ok());
  REQUIRE(l->record_encounter("RX1", id, std::string(64, 'R'), 253402300799).ok());
  REQUIRE(l->record_encounter("RX1", id, "a1", 0).ok());
  p = read_ok(*l, id);
  CHECK(p.care_team.size() == 2);
  CHECK(member_of(p, "~!user 1@").source_ods == std::string(64, 'R'));
  CHECK(encounters(p) == std::vector<std::string>{enc(std::string(64, 'R'), 253402300799), "a1@0"});
}
