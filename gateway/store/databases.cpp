// SPDX-License-Identifier: Apache-2.0
#include "gateway/store/databases.h"

#include <filesystem>

#include "gateway/audit/schema.h"
#include "gateway/locator/schema.h"

namespace gw::store {
namespace {

// Every file records who created it and with which schema line, for support and restores.
const char* const kGatewayInfo =
    "CREATE TABLE gateway_info (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;"
    "INSERT INTO gateway_info(key, value) VALUES ('created_at', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));";

std::string info_for(const char* role) {
  return std::string(kGatewayInfo) + "INSERT INTO gateway_info(key, value) VALUES ('role', '" + role + "');";
}

fhir::Result<sqlite::Database> open_one(const std::filesystem::path& path, const std::vector<sqlite::Migration>& m) {
  auto db = sqlite::Database::open(path.string());
  if (!db) return std::move(db).issue();
  auto version = sqlite::migrate(*db, m);
  if (!version) return std::move(version).issue();
  return std::move(*db);
}

}  // namespace

// Owned by the locator (gateway/locator/schema.cpp); its migration 1 is info_for("locator").
const std::vector<sqlite::Migration>& locator_migrations() { return locator::migrations(); }

const std::vector<sqlite::Migration>& store_migrations() {
  static const std::vector<sqlite::Migration> m{{1, "gateway_info", info_for("store")}};
  return m;
}

// Owned by the audit log (gateway/audit/schema.cpp); its migration 1 is info_for("audit").
const std::vector<sqlite::Migration>& audit_migrations() { return audit::migrations(); }

fhir::Result<Databases> Databases::open(const std::string& data_dir) {
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  if (ec)
    return fhir::Issue::make(fhir::ErrorCode::not_ready,
                             "cannot create data directory " + data_dir + ": " + ec.message());
  const std::filesystem::path dir(data_dir);
  auto locator = open_one(dir / "locator.db", locator_migrations());
  if (!locator) return std::move(locator).issue();
  auto store = open_one(dir / "store.db", store_migrations());
  if (!store) return std::move(store).issue();
  auto audit = open_one(dir / "audit.db", audit_migrations());
  if (!audit) return std::move(audit).issue();
  return Databases(std::move(*locator), std::move(*store), std::move(*audit));
}

}  // namespace gw::store
