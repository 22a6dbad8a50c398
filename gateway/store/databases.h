// SPDX-License-Identifier: Apache-2.0
// The gateway's three SQLite files (DESIGN.md "Storage"): locator.db, store.db and audit.db in
// the configured data directory, each opened and migrated at start-up before listeners open.
#pragma once

#include <string>
#include <vector>

#include "fhir/result.h"
#include "gateway/sqlite/database.h"
#include "gateway/sqlite/migrations.h"

namespace gw::store {

// Each database's numbered migrations; later issues append to these lists, never edit them.
const std::vector<sqlite::Migration>& locator_migrations();
const std::vector<sqlite::Migration>& store_migrations();
const std::vector<sqlite::Migration>& audit_migrations();

// Creates `data_dir` (and missing parents) if needed; the folder itself is made 0700 (before
// the umask), because it holds every patient's identity, every stored message and the audit
// trail. An existing folder's mode is left alone (exposed_to_others reports it). Failures name
// the folder (not_ready).
fhir::Status create_data_dir(const std::string& data_dir);

// The data directory, and the database files in it that exist (locator.db, store.db, audit.db
// and their -wal and -shm files), that others (neither the owner nor the group) may read,
// write or enter, with their modes as "0755". Start-up logs a warning for each; empty when all
// is private. Group access is left to the operator (a backup group, say).
struct ExposedPath {
  std::string path;
  std::string mode;
};
std::vector<ExposedPath> exposed_to_others(const std::string& data_dir);

class Databases {
 public:
  // Creates `data_dir` if needed, opens the three files and applies pending migrations.
  // Failures name the file and reason (not_ready). Start-up thread only.
  static fhir::Result<Databases> open(const std::string& data_dir);

  sqlite::Database& locator() { return locator_; }
  sqlite::Database& store() { return store_; }
  sqlite::Database& audit() { return audit_; }

 private:
  Databases(sqlite::Database l, sqlite::Database s, sqlite::Database a)
      : locator_(std::move(l)), store_(std::move(s)), audit_(std::move(a)) {}
  sqlite::Database locator_;
  sqlite::Database store_;
  sqlite::Database audit_;
};

}  // namespace gw::store
