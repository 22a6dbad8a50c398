// SPDX-License-Identifier: Apache-2.0
#include "gateway/store/databases.h"

#include <filesystem>

#include "gateway/audit/schema.h"
#include "gateway/locator/schema.h"
#include "gateway/store/schema.h"

namespace gw::store {
namespace {

fhir::Result<sqlite::Database> open_one(const std::filesystem::path& path, const std::vector<sqlite::Migration>& m) {
  auto db = sqlite::Database::open(path.string());
  if (!db) return std::move(db).issue();
  auto version = sqlite::migrate(*db, m);
  if (!version) return std::move(version).issue();
  return std::move(*db);
}

}  // namespace

// Owned by the locator (gateway/locator/schema.cpp); its migration 1 is the gateway_info table.
const std::vector<sqlite::Migration>& locator_migrations() { return locator::migrations(); }

// Owned by the message and resource store (gateway/store/schema.cpp).
const std::vector<sqlite::Migration>& store_migrations() { return schema_migrations(); }

// Owned by the audit log (gateway/audit/schema.cpp); its migration 1 is the gateway_info table.
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
