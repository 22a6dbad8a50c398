// SPDX-License-Identifier: Apache-2.0
// locator.db's schema, one numbered migration at a time (gateway/sqlite/migrations.h applies
// them). Released migrations are never edited: a change is a new migration at the end.
#include "gateway/locator/schema.h"

namespace gw::locator {
namespace {

// 1: as first released by gateway/store/databases.cpp (every file says who made it).
const char* const kGatewayInfo =
    "CREATE TABLE gateway_info (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;"
    "INSERT INTO gateway_info(key, value) VALUES ('created_at', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));"
    "INSERT INTO gateway_info(key, value) VALUES ('role', 'locator');";

// 2: the index (issue #3). Patients are keyed by an integer pk inside the file and by the
// opaque id outside it. *_norm columns hold normalise_name / normalise_postcode output and
// carry the search and demographic-rule indexes; birth_begin/end are the birth date as a
// half-open UTC range in epoch seconds, so FHIR date prefixes become range comparisons.
// At most one active record holds a given trusted NHS number (partial unique index).
const char* const kIndex = R"sql(
CREATE TABLE source_systems (
  ods_code   TEXT PRIMARY KEY,
  name       TEXT NOT NULL,
  adapter    TEXT NOT NULL,
  endpoint   TEXT NOT NULL,
  updated_at TEXT NOT NULL
) STRICT;

CREATE TABLE patients (
  pk                 INTEGER PRIMARY KEY,
  id                 TEXT NOT NULL UNIQUE,
  nhs_number         TEXT NOT NULL,
  nhs_number_trusted INTEGER NOT NULL CHECK (nhs_number_trusted IN (0, 1)),
  nhs_verification   TEXT NOT NULL,
  family             TEXT NOT NULL,
  family_norm        TEXT NOT NULL,
  given_norm         TEXT NOT NULL,
  birth_date         TEXT NOT NULL,
  birth_begin        INTEGER,
  birth_end          INTEGER,
  gender             TEXT NOT NULL,
  postcode           TEXT NOT NULL,
  postcode_norm      TEXT NOT NULL,
  gp_practice_ods    TEXT NOT NULL,
  deceased           TEXT NOT NULL,
  objection          INTEGER NOT NULL DEFAULT 0 CHECK (objection IN (0, 1)),
  merged_into        INTEGER REFERENCES patients(pk),
  version            INTEGER NOT NULL,
  last_updated       TEXT NOT NULL
) STRICT;
CREATE UNIQUE INDEX patients_trusted_nhs_number ON patients(nhs_number)
  WHERE nhs_number_trusted = 1 AND merged_into IS NULL;
CREATE INDEX patients_family ON patients(family_norm, birth_date);
CREATE INDEX patients_birth ON patients(birth_begin);
CREATE INDEX patients_postcode ON patients(postcode_norm);
CREATE INDEX patients_merged_into ON patients(merged_into) WHERE merged_into IS NOT NULL;

CREATE TABLE given_names (
  patient    INTEGER NOT NULL REFERENCES patients(pk),
  position   INTEGER NOT NULL,
  value      TEXT NOT NULL,
  value_norm TEXT NOT NULL,
  PRIMARY KEY (patient, position)
) STRICT, WITHOUT ROWID;
CREATE INDEX given_names_norm ON given_names(value_norm);

-- Keyed (value, system): the same uniqueness as (system, value), and it also serves
-- identifier searches that give a value without a system.
CREATE TABLE identifiers (
  value      TEXT NOT NULL,
  system     TEXT NOT NULL,
  patient    INTEGER NOT NULL REFERENCES patients(pk),
  source_ods TEXT NOT NULL,
  PRIMARY KEY (value, system)
) STRICT, WITHOUT ROWID;
CREATE INDEX identifiers_patient ON identifiers(patient);

CREATE TABLE pointers (
  pk               INTEGER PRIMARY KEY,
  id               TEXT NOT NULL UNIQUE,
  patient          INTEGER NOT NULL REFERENCES patients(pk),
  source_ods       TEXT NOT NULL,
  type_system      TEXT NOT NULL,
  type_code        TEXT NOT NULL,
  type_display     TEXT NOT NULL,
  category_code    TEXT NOT NULL,
  category_display TEXT NOT NULL,
  resource_types   TEXT NOT NULL,
  url              TEXT NOT NULL,
  content_type     TEXT NOT NULL,
  version          INTEGER NOT NULL,
  last_updated     TEXT NOT NULL
) STRICT;
CREATE INDEX pointers_patient ON pointers(patient);

CREATE TABLE merges (
  pk         INTEGER PRIMARY KEY,
  retired    INTEGER NOT NULL REFERENCES patients(pk),
  survivor   INTEGER NOT NULL REFERENCES patients(pk),
  source_ods TEXT NOT NULL,
  merged_at  TEXT NOT NULL
) STRICT;

CREATE TABLE conflicts (
  id          INTEGER PRIMARY KEY,
  patient_id  TEXT NOT NULL,
  source_ods  TEXT NOT NULL,
  kind        TEXT NOT NULL,
  detail      TEXT NOT NULL,
  recorded_at TEXT NOT NULL
) STRICT;
)sql";

// 3: care relationships for the legitimate-relationship check of issue #5: who is in the
// patient's care team (until when) and which organisations saw them (when). Superseded in
// part by migration 4.
const char* const kCareRelationships = R"sql(
CREATE TABLE care_team (
  patient INTEGER NOT NULL REFERENCES patients(pk),
  member  TEXT NOT NULL,
  until   TEXT,
  PRIMARY KEY (patient, member)
) STRICT, WITHOUT ROWID;

CREATE TABLE encounters (
  pk               INTEGER PRIMARY KEY,
  patient          INTEGER NOT NULL REFERENCES patients(pk),
  organisation_ods TEXT NOT NULL,
  at               TEXT NOT NULL
) STRICT;
CREATE INDEX encounters_patient ON encounters(patient, organisation_ods);
)sql";

// 4: care relationships as the locator writes them (Locator::add_care_team_member,
// record_encounter): each row names the source system that recorded it; an encounter's time
// is epoch seconds (INTEGER: version 3 had TEXT, which orders "999" after "1000"), one row per
// (patient, organisation, time), with an index for reading a patient's newest first. Rows of
// version 3 are kept when their time is digits or a date SQLite reads; nothing wrote them yet.
const char* const kCareRelationshipSources = R"sql(
ALTER TABLE care_team ADD COLUMN source_ods TEXT NOT NULL DEFAULT '';

CREATE TABLE encounters_v4 (
  pk               INTEGER PRIMARY KEY,
  patient          INTEGER NOT NULL REFERENCES patients(pk),
  organisation_ods TEXT NOT NULL,
  at               INTEGER NOT NULL,
  source_ods       TEXT NOT NULL
) STRICT;
CREATE UNIQUE INDEX encounters_patient_organisation ON encounters_v4(patient, organisation_ods, at);
CREATE INDEX encounters_recent ON encounters_v4(patient, at DESC, organisation_ods);
INSERT OR IGNORE INTO encounters_v4(patient, organisation_ods, at, source_ods)
  SELECT patient, organisation_ods, seconds, '' FROM (
    SELECT patient, organisation_ods,
           CASE WHEN at GLOB '[0-9]*' AND at NOT GLOB '*[^0-9]*' THEN CAST(at AS INTEGER)
                ELSE CAST(strftime('%s', at) AS INTEGER) END AS seconds
    FROM encounters)
  WHERE seconds IS NOT NULL;
DROP TABLE encounters;
ALTER TABLE encounters_v4 RENAME TO encounters;
)sql";

// 5: a patient's identifiers read from the index alone. identifiers_patient held (patient) and,
// as every index of a WITHOUT ROWID table, the key (value, system): reading a patient's
// identifiers then looked each one up again in the table for source_ods, one more descent of
// the largest b-tree per identifier, and sorted them. Keyed (patient, system, value,
// source_ods), the read is one descent, already in order (Patient search: 27 -> 19 us of
// read-thread CPU per search on 100,000 patients).
const char* const kIdentifiersCovering = R"sql(
DROP INDEX identifiers_patient;
CREATE INDEX identifiers_patient ON identifiers(patient, system, value, source_ods);
)sql";

// 6: the identifier systems the index holds, for IHE PIXm (ITI-83), which answers an unknown
// assigning authority (400) and an unknown target system (403) apart from an unknown patient
// (404). `identifiers` is keyed (value, system): asking it for a system would read every row.
// The writer adds a system the first time it inserts an identifier of it.
const char* const kIdentifierSystems = R"sql(
CREATE TABLE identifier_systems (
  system TEXT PRIMARY KEY
) STRICT, WITHOUT ROWID;
INSERT OR IGNORE INTO identifier_systems(system) SELECT DISTINCT system FROM identifiers;
)sql";

// 7: a pointer's DocumentReference.date as its source gave it. last_updated is when the index
// wrote the row; served as the date it hid when the record was made (an import stamped every
// pointer with the time of the import). '' where the source gave none: the date served is
// then last_updated, as before.
const char* const kPointerDate = R"sql(
ALTER TABLE pointers ADD COLUMN date TEXT NOT NULL DEFAULT '';
)sql";

// 8: every Patient.name (issue #3 "names"; FHIR family/given/name search covers them all): a
// maiden or previous name is kept and found. The primary name stays in patients and
// given_names, so a patient with one name (most of them) costs no row here; each other name is
// a row of other_names (position: its place among the patient's other names, in Patient.name
// order) and its given names rows of other_given_names, with normalised columns for search.
const char* const kOtherNames = R"sql(
CREATE TABLE other_names (
  patient     INTEGER NOT NULL REFERENCES patients(pk),
  position    INTEGER NOT NULL,
  use         TEXT NOT NULL,
  family      TEXT NOT NULL,
  family_norm TEXT NOT NULL,
  PRIMARY KEY (patient, position)
) STRICT, WITHOUT ROWID;
CREATE INDEX other_names_family ON other_names(family_norm);

CREATE TABLE other_given_names (
  patient    INTEGER NOT NULL REFERENCES patients(pk),
  name       INTEGER NOT NULL,
  position   INTEGER NOT NULL,
  value      TEXT NOT NULL,
  value_norm TEXT NOT NULL,
  PRIMARY KEY (patient, name, position)
) STRICT, WITHOUT ROWID;
CREATE INDEX other_given_names_norm ON other_given_names(value_norm);
)sql";

// 9: which identifiers a merge retired. A merge moves the retired record's identifiers to the
// survivor, so they keep finding the patient; marked retired, a message naming only them (from
// a sender that has not caught up with the merge) no longer replaces the survivor's
// demographics with what are probably the retired record's. The identifiers of merges made
// before this version are not marked: which of the survivor's identifiers came from the
// retired record was not kept.
const char* const kRetiredIdentifiers = R"sql(
ALTER TABLE identifiers ADD COLUMN retired INTEGER NOT NULL DEFAULT 0 CHECK (retired IN (0, 1));
)sql";

// 10: objection changes awaiting their audit record (Locator::change_objection). An
// objection lives here and its audit record in audit.db, which cannot commit together: the row
// is written in the change's own transaction and removed once the record is committed, so a
// change whose record never was (audit.db failed, or the process stopped between the two
// commits) is still known, and the gateway audits it (gateway/objection_audit.h). Few rows,
// and short-lived: no index beyond the key.
const char* const kObjectionChanges = R"sql(
CREATE TABLE objection_changes (
  id         TEXT PRIMARY KEY,
  patient_id TEXT NOT NULL,
  nhs_number TEXT NOT NULL,
  objection  INTEGER NOT NULL CHECK (objection IN (0, 1)),
  made_by    TEXT NOT NULL,
  note       TEXT NOT NULL,
  request_id TEXT NOT NULL,
  made_ms    INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
)sql";

}  // namespace

const std::vector<sqlite::Migration>& migrations() {
  static const std::vector<sqlite::Migration> m{
      {1, "gateway_info", kGatewayInfo},
      {2, "record locator index", kIndex},
      {3, "care relationships", kCareRelationships},
      {4, "care relationship sources", kCareRelationshipSources},
      {5, "patient identifiers covered by their index", kIdentifiersCovering},
      {6, "identifier systems", kIdentifierSystems},
      {7, "pointer dates from their source", kPointerDate},
      {8, "other names", kOtherNames},
      {9, "identifiers retired by a merge", kRetiredIdentifiers},
      {10, "objection changes awaiting their audit record", kObjectionChanges},
  };
  return m;
}

}  // namespace gw::locator
