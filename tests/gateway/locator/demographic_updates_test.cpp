// SPDX-License-Identifier: Apache-2.0
// Part of the Locator conformance suite (both backends): a matched claim's newer demographics
// replace the record's (most recent update wins), an empty field clears nothing, the NHS
// number is never replaced by another, a merge still only fills what the survivor lacks (and so
// does a claim naming only identifiers a merge retired), and resolve, import and ingest say
// which records changed.
#include <doctest/doctest.h>

#include "locator_test_support.h"

using namespace gw::locator;
using namespace gw::locator::test;

namespace {

Demographics butler() {
  Demographics d = person("Butler", "Ann", "1980-05-01", "female", "LS1 4AB");
  d.gp_practice_ods = "Y72780";
  return d;
}

std::vector<std::string> updated_fields(Locator& l, const IdentityClaim& c) {
  auto r = l.resolve(c);
  REQUIRE(r.ok());
  return r->updated_fields;
}

std::int64_t total_for(Locator& l, PatientQuery q) {
  auto page = l.search_patients(q);
  REQUIRE(page.ok());
  return page->total;
}

}  // namespace

TEST_CASE_TEMPLATE("Locator: a matched claim's newer demographics replace the record's, in a new version", B,
                   LOCATOR_BACKENDS) {
  auto l = B::make();
  const std::string id = resolve_ok(*l, claim("RX1", nhs(0), {{kMrnA, "M1", ""}}, butler()), MatchOutcome::created);
  // The same claim again changes nothing.
  CHECK(updated_fields(*l, claim("RX1", nhs(0), {{kMrnA, "M1", ""}}, butler())).empty());
  CHECK(read_ok(*l, id).version == 1);

  // The patient moved, married and registered with another practice: the re-import carries the
  // new surname, postcode and GP, and no given name or gender (not sent: nothing is cleared).
  Demographics moved;
  moved.family = "Butler-Smith";
  moved.postcode = "LS2 9JT";
  moved.gp_practice_ods = "B86001";
  moved.birth_date = "1980-05-01";
  CHECK(updated_fields(*l, claim("RX1", nhs(0), {}, moved)) ==
        std::vector<std::string>{"family", "postcode", "gp_practice_ods"});
  PatientRecord p = read_ok(*l, id);
  CHECK(p.version == 2);
  CHECK_FALSE(p.last_updated.empty());
  CHECK(p.demographics.family == "Butler-Smith");
  CHECK(p.demographics.postcode == "LS2 9JT");
  CHECK(p.demographics.gp_practice_ods == "B86001");
  CHECK(p.demographics.given == std::vector<std::string>{"Ann"});
  CHECK(p.demographics.gender == "female");
  CHECK(p.demographics.nhs_number == nhs(0));

  // Search sees the new values only.
  PatientQuery by_family;
  by_family.family = "butler-smith";
  CHECK(total_for(*l, by_family) == 1);
  PatientQuery old_postcode;
  old_postcode.postcode = "LS1 4AB";
  CHECK(total_for(*l, old_postcode) == 0);
  PatientQuery new_postcode;
  new_postcode.postcode = "ls29jt";
  CHECK(total_for(*l, new_postcode) == 1);

  // Given names and a date of death are replaced the same way, matched by a local identifier.
  Demographics later;
  later.given = {"Annie", "May"};
  later.deceased = "2026-01-02";
  CHECK(updated_fields(*l, claim("RY2", "", {{kMrnA, "M1", ""}}, later)) ==
        std::vector<std::string>{"given", "deceased"});
  p = read_ok(*l, id);
  CHECK(p.version == 3);
  CHECK(p.demographics.given == std::vector<std::string>{"Annie", "May"});
  CHECK(p.demographics.deceased == "2026-01-02");
  CHECK(p.demographics.family == "Butler-Smith");
}

TEST_CASE_TEMPLATE("Locator: 'unknown' gender and a name in other case or accents are no news", B,
                   LOCATOR_BACKENDS) {
  auto l = B::make();
  Demographics d = butler();
  d.given = {"Zoë", "Ann"};
  const std::string id = resolve_ok(*l, claim("RX1", nhs(0), {{kMrnA, "M1", ""}}, d), MatchOutcome::created);
  // A PAS feed: upper case, no diaeresis, gender "U" (unknown). Nothing in it is new.
  Demographics feed = d;
  feed.family = "BUTLER";
  feed.given = {"ZOE", "ANN"};
  feed.gender = "unknown";
  CHECK(updated_fields(*l, claim("RX1", nhs(0), {}, feed)).empty());
  PatientRecord p = read_ok(*l, id);
  CHECK(p.version == 1);
  CHECK(p.demographics.family == "Butler");
  CHECK(p.demographics.given == std::vector<std::string>{"Zoë", "Ann"});
  CHECK(p.demographics.gender == "female");
  // A real change in the same feed still lands; a known gender replaces a known one.
  feed.family = "BUTLER-SMITH";
  feed.gender = "male";
  CHECK(updated_fields(*l, claim("RX1", nhs(0), {}, feed)) == std::vector<std::string>{"family", "gender"});
  p = read_ok(*l, id);
  CHECK(p.demographics.family == "BUTLER-SMITH");
  CHECK(p.demographics.gender == "male");
  // "unknown" still fills a record that has no gender at all.
  Demographics bare = person("Jones", "Kim", "1990-01-01", "", "M1 1AA");
  const std::string other = resolve_ok(*l, claim("RX1", nhs(1), {}, bare), MatchOutcome::created);
  bare.gender = "unknown";
  CHECK(updated_fields(*l, claim("RX1", nhs(1), {}, bare)) == std::vector<std::string>{"gender"});
  CHECK(read_ok(*l, other).demographics.gender == "unknown");
}

TEST_CASE_TEMPLATE("Locator: ingest never replaces one NHS number with another", B, LOCATOR_BACKENDS) {
  auto l = B::make();
  const std::string id = resolve_ok(*l, claim("RX1", bad_nhs(0), {{kMrnA, "M1", ""}}), MatchOutcome::created);
  // Another untrusted number for the same local identifier: the first one stays.
  CHECK(updated_fields(*l, claim("RX1", bad_nhs(1), {{kMrnA, "M1", ""}})).empty());
  CHECK(read_ok(*l, id).demographics.nhs_number == bad_nhs(0));
  // A trusted one replaces an untrusted one (as before) ...
  CHECK(updated_fields(*l, claim("RX1", nhs(2), {{kMrnA, "M1", ""}})) == std::vector<std::string>{"nhs_number"});
  // ... and is then never replaced, by an untrusted one either.
  CHECK(updated_fields(*l, claim("RX1", bad_nhs(3), {{kMrnA, "M1", ""}})).empty());
  const PatientRecord p = read_ok(*l, id);
  CHECK(p.demographics.nhs_number == nhs(2));
  CHECK(p.nhs_number_trusted);
}

TEST_CASE_TEMPLATE("Locator: a merge only fills what the survivor lacks", B, LOCATOR_BACKENDS) {
  auto l = B::make();
  const std::string survivor =
      resolve_ok(*l, claim("RX1", "", {{kMrnA, "S1", ""}}, person("Survivor", "Sam", "1970-01-01", "male", "")),
                 MatchOutcome::created);
  const std::string retired =
      resolve_ok(*l, claim("RX1", "", {{kMrnA, "R1", ""}}, person("Retired", "Rob", "1971-01-01", "male", "M1 1AA")),
                 MatchOutcome::created);
  REQUIRE(l->merge(retired, survivor, "RX1").ok());
  const PatientRecord p = read_ok(*l, survivor);
  CHECK(p.demographics.family == "Survivor");
  CHECK(p.demographics.birth_date == "1970-01-01");
  CHECK(p.demographics.postcode == "M1 1AA");
}

TEST_CASE_TEMPLATE("Locator: a claim naming only identifiers a merge retired fills what the survivor lacks and "
                   "replaces nothing", B, LOCATOR_BACKENDS) {
  auto l = B::make();
  const std::string survivor =
      resolve_ok(*l, claim("RX1", "", {{kMrnA, "S2", ""}}, person("Survivor", "Sam", "1970-01-01", "male", "")),
                 MatchOutcome::created);
  const std::string retired =
      resolve_ok(*l, claim("RX1", "", {{kMrnA, "R2", ""}}, person("Retired", "Rob", "1971-01-01", "male", "")),
                 MatchOutcome::created);
  REQUIRE(l->merge(retired, survivor, "RX1").ok());
  const std::int64_t version = read_ok(*l, survivor).version;

  // The PAS has not caught up with the merge: an update naming the retired MRN alone, with the
  // retired record's details, a postcode and a GP practice the survivor lacks.
  Demographics stale = person("Retired", "Rob", "1971-01-01", "male", "M1 1AA");
  stale.gp_practice_ods = "B86001";
  auto r = l->resolve(claim("RX1", "", {{kMrnA, "R2", ""}}, stale));
  REQUIRE(r.ok());
  CHECK(r->patient_id == survivor);
  CHECK(outcome_name(r->outcome) == outcome_name(MatchOutcome::matched_retired_identifier));
  CHECK(r->updated_fields == std::vector<std::string>{"postcode", "gp_practice_ods"});
  PatientRecord p = read_ok(*l, survivor);
  CHECK(p.version == version + 1);
  CHECK(p.demographics.family == "Survivor");
  CHECK(p.demographics.given == std::vector<std::string>{"Sam"});
  CHECK(p.demographics.birth_date == "1970-01-01");
  CHECK(p.demographics.postcode == "M1 1AA");
  CHECK(p.demographics.gp_practice_ods == "B86001");
  // The same again changes nothing.
  CHECK(updated_fields(*l, claim("RX1", "", {{kMrnA, "R2", ""}}, stale)).empty());

  // Named with a current identifier too, or by it alone, the most recent update wins again.
  CHECK(resolve_ok(*l, claim("RX1", "", {{kMrnA, "R2", ""}, {kMrnA, "S2", ""}}, person("Newer", "", "", "", "")),
                   MatchOutcome::matched_identifier) == survivor);
  CHECK(read_ok(*l, survivor).demographics.family == "Newer");
  CHECK(resolve_ok(*l, claim("RX1", "", {{kMrnA, "S2", ""}}, person("Newest", "", "", "", "")),
                   MatchOutcome::matched_identifier) == survivor);
  CHECK(read_ok(*l, survivor).demographics.family == "Newest");

  // A merge of the survivor in turn retires its own identifiers, and keeps those retired before.
  const std::string third =
      resolve_ok(*l, claim("RX1", "", {{kMrnA, "T2", ""}}, person("Third", "Tom", "1972-01-01", "male", "")),
                 MatchOutcome::created);
  REQUIRE(l->merge(survivor, third, "RX1").ok());
  for (const char* mrn : {"S2", "R2"}) {
    CAPTURE(mrn);
    CHECK(resolve_ok(*l, claim("RX1", "", {{kMrnA, mrn, ""}}, person("Stale", "", "", "", "")),
                     MatchOutcome::matched_retired_identifier) == third);
  }
  CHECK(read_ok(*l, third).demographics.family == "Third");
}

TEST_CASE_TEMPLATE("Locator: a merge retires only the merging source's identifiers; another source's stay current",
                   B, LOCATOR_BACKENDS) {
  auto l = B::make();
  const std::string survivor =
      resolve_ok(*l, claim("RX1", "", {{kMrnA, "S4", ""}}, person("Survivor", "Sam", "1970-01-01", "male", "")),
                 MatchOutcome::created);
  // A second source (a lab) filed its own record, with its own identifier, that the PAS later
  // finds is the same person and merges.
  const std::string retired =
      resolve_ok(*l, claim("RY2", "", {{kMrnB, "L4", ""}}, person("Labrec", "Sam", "1970-01-01", "male", "")),
                 MatchOutcome::created);
  REQUIRE(l->merge(retired, survivor, "RX1").ok());
  // The lab merged nothing and goes on sending its identifier: an update by it is an update.
  CHECK(resolve_ok(*l, claim("RY2", "", {{kMrnB, "L4", ""}}, person("Later", "", "", "", "")),
                   MatchOutcome::matched_identifier) == survivor);
  CHECK(read_ok(*l, survivor).demographics.family == "Later");
}

TEST_CASE_TEMPLATE("Locator: import and ingest say which matched records changed", B, LOCATOR_BACKENDS) {
  auto l = B::make();
  const auto record = [](int n, const std::string& family) {
    ImportRecord r;
    r.identity = claim("RX1", nhs(n), {}, person(family, "Ann", "1980-05-01", "female", ""));
    return r;
  };
  auto first = l->import({record(0, "Okafor"), record(1, "Jones")});
  REQUIRE(first.ok());
  CHECK(first->created == 2);
  CHECK(first->updated == 0);
  auto again = l->import({record(0, "Okafor"), record(1, "Jones-Okafor")});
  REQUIRE(again.ok());
  CHECK(again->matched == 2);
  CHECK(again->updated == 1);
  REQUIRE(again->records[1].ok());
  CHECK(again->records[0]->updated_fields.empty());
  CHECK(again->records[1]->updated_fields == std::vector<std::string>{"family"});

  // An HL7 A08 ("update patient information") is an ingest: the record changes, so its
  // version (the ETag clients revalidate with) moves on.
  IngestUpdate a08;
  a08.identity = claim("RX1", nhs(0), {}, person("Okafor", "Ann", "1980-05-01", "female", "LS2 9JT"));
  auto ingested = l->ingest(a08);
  REQUIRE(ingested.ok());
  CHECK(ingested->resolution.updated_fields == std::vector<std::string>{"postcode"});
  const PatientRecord p = read_ok(*l, ingested->resolution.patient_id);
  CHECK(p.version == 2);
  CHECK(p.demographics.postcode == "LS2 9JT");
}
