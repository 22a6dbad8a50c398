// SPDX-License-Identifier: Apache-2.0
// Shared by SqliteTransaction's own files only (sqlite_transaction*.cpp, see
// sqlite_transaction.h): the index of its prepared statements (in the order of kSql in
// sqlite_transaction.cpp), the storage error, and the key hashes the absent-key filters and
// the lookups they answer for share.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <string_view>

#include "gateway/locator/sqlite_transaction.h"

namespace gw::locator {

enum class SqliteTransaction::S : std::size_t {
  begin, commit, rollback,
  savepoint_job, release_job, rollback_job,
  savepoint_record, release_record, rollback_record,
  patient_by_id, given_of, other_names_of, pk_of, active_nhs, identifier_owner,
  insert_patient, update_patient, delete_given, insert_given, delete_other_names, delete_other_given,
  insert_other_name, insert_other_given, repoint_retired,
  insert_identifier, insert_identifier_system, move_identifiers, insert_conflict, insert_merge,
  pointer_by_id, insert_pointer, insert_pointer_if_new, update_pointer, delete_pointer, move_pointers,
  pointers_of,
  upsert_source,
  care_team_of, upsert_care_team, delete_care_team_member,
  encounters_of, insert_encounter_if_new, trim_encounters_organisation, trim_encounters_patient, delete_encounters,
  insert_objection_change, objection_changes, delete_objection_change,
  count
};

inline fhir::Issue storage(const fhir::Issue& cause) {
  return fhir::Issue::make(fhir::ErrorCode::internal_error, "record locator storage error: " + cause.diagnostics);
}

inline std::uint64_t mix(std::uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

// Order-sensitive hash of several fields; a collision only costs a B-tree search.
inline std::uint64_t key_hash(std::initializer_list<std::string_view> fields) {
  std::uint64_t h = 0x6a09e667f3bcc909ULL;
  for (std::string_view f : fields) h = mix(h ^ std::hash<std::string_view>{}(f)) + f.size();
  return mix(h);
}

inline std::uint64_t identifier_key(std::string_view system, std::string_view value) { return key_hash({system, value}); }

// The fields demographic_matches compares when its rule enables all of them, as stored.
inline std::uint64_t demographic_key(const Demographics& d) {
  const std::string family = normalise_name(d.family), given = first_given_normalised(d),
                    postcode = normalise_postcode(d.postcode);
  return key_hash({family, given, d.birth_date, d.gender, postcode});
}

}  // namespace gw::locator
