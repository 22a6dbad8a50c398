// SPDX-License-Identifier: Apache-2.0
#include "gateway/sqlite/migrations.h"

#include "gateway/observe/log.h"

namespace gw::sqlite {

fhir::Result<int> migrate(Database& db, const std::vector<Migration>& migrations) {
  auto current = db.user_version();
  if (!current) return std::move(current).issue();
  const int latest = migrations.empty() ? 0 : migrations.back().version;
  if (*current > latest)
    return fhir::Issue::make(fhir::ErrorCode::not_ready,
                             db.path() + " has schema version " + std::to_string(*current) +
                                 ", newer than this gateway understands (" + std::to_string(latest) +
                                 "); run the newer gateway or restore a matching backup");
  int expected = 1;
  for (const Migration& m : migrations) {
    if (m.version != expected++)
      return fhir::Issue::make(fhir::ErrorCode::internal_error, "migrations are not numbered 1..N without gaps");
    if (m.version <= *current) continue;
    Transaction tx(db);
    if (!tx.begun()) return tx.begun().issue();
    fhir::Status s = db.exec(m.sql);
    if (s && m.code) s = m.code(db);
    if (!s)
      return fhir::Issue::make(fhir::ErrorCode::not_ready, db.path() + ": migration " + std::to_string(m.version) +
                                                               " (" + m.name + ") failed: " + s.issue().diagnostics);
    if (fhir::Status s = db.exec("PRAGMA user_version=" + std::to_string(m.version)); !s) return std::move(s).issue();
    if (fhir::Status s = tx.commit(); !s) return std::move(s).issue();
    observe::log(observe::Level::info, "schema migration applied",
                 {{"database", db.path()}, {"version", m.version}, {"name", m.name}});
  }
  return latest;
}

}  // namespace gw::sqlite
