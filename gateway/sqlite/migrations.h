// SPDX-License-Identifier: Apache-2.0
// Numbered schema migrations applied at start-up. The version is PRAGMA user_version; each
// migration runs in its own transaction with the version bump, so a crash leaves the file at
// a whole version. A database newer than the code is refused rather than touched.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "gateway/sqlite/database.h"

namespace gw::sqlite {

struct Migration {
  int version;       // 1, 2, 3 ... with no gaps
  std::string name;  // short description, logged when applied
  std::string sql;
  // Run after `sql`, in the same transaction, when the new contents take more than SQL: an
  // index re-computed from the stored JSON by the code that writes it.
  std::function<fhir::Status(Database&)> code = {};
};

// Applies every migration newer than the file's version, in order. Returns the final version.
// Fails (not_ready) when the file is newer than `migrations` knows or a migration fails.
fhir::Result<int> migrate(Database& db, const std::vector<Migration>& migrations);

}  // namespace gw::sqlite
