// SPDX-License-Identifier: Apache-2.0
#include "gateway/store/databases.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "gateway/audit/schema.h"
#include "gateway/locator/schema.h"
#include "gateway/store/schema.h"

namespace gw::store {
namespace {

// Database::open names the file in its own failures; a migration's failure ("file is not a
// database" surfaces there when the header is only read at the first statement) may not, and
// an operator restoring one of three files from a backup must know which one.
fhir::Result<sqlite::Database> open_one(const std::filesystem::path& path, const std::vector<sqlite::Migration>& m) {
  auto db = sqlite::Database::open(path.string());
  if (!db) return std::move(db).issue();
  auto version = sqlite::migrate(*db, m);
  if (!version) {
    fhir::Issue issue = std::move(version).issue();
    if (issue.diagnostics.find(path.string()) == std::string::npos)
      issue.diagnostics = path.string() + ": " + issue.diagnostics;
    return issue;
  }
  return std::move(*db);
}

}  // namespace

// Owned by the locator (gateway/locator/schema.cpp); its migration 1 is the gateway_info table.
const std::vector<sqlite::Migration>& locator_migrations() { return locator::migrations(); }

// Owned by the message and resource store (gateway/store/schema.cpp).
const std::vector<sqlite::Migration>& store_migrations() { return schema_migrations(); }

// Owned by the audit log (gateway/audit/schema.cpp); its migration 1 is the gateway_info table.
const std::vector<sqlite::Migration>& audit_migrations() { return audit::migrations(); }

fhir::Status create_data_dir(const std::string& data_dir) {
  const auto fail = [&data_dir](const std::string& why) {
    return fhir::Issue::make(fhir::ErrorCode::not_ready, "cannot create data directory " + data_dir + ": " + why);
  };
  if (data_dir.empty())
    return fhir::Issue::make(fhir::ErrorCode::not_ready, "no data directory given (storage.data_dir is empty)");
  const std::filesystem::path dir = std::filesystem::path(data_dir).lexically_normal();
  std::error_code ec;
  if (std::filesystem::is_directory(dir, ec)) return fhir::Ok{};
  // Parents as the umask makes them; the data directory itself private from its first moment.
  if (dir.has_parent_path()) {
    std::filesystem::create_directories(dir.parent_path(), ec);
    if (ec) return fail(ec.message());
  }
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return fail(std::strerror(errno));
  if (!std::filesystem::is_directory(dir, ec)) return fail("it exists and is not a folder");
  return fhir::Ok{};
}

std::vector<ExposedPath> exposed_to_others(const std::string& data_dir) {
  std::vector<ExposedPath> found;
  const auto check = [&found](const std::string& path) {
    struct stat info {};
    if (::stat(path.c_str(), &info) != 0 || (info.st_mode & S_IRWXO) == 0) return;
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(info.st_mode & 07777));
    found.push_back(ExposedPath{path, mode});
  };
  check(data_dir);
  const std::filesystem::path dir(data_dir);
  for (const char* db : {"locator.db", "store.db", "audit.db"})
    for (const char* suffix : {"", "-wal", "-shm"}) check((dir / (std::string(db) + suffix)).string());
  return found;
}

fhir::Result<Databases> Databases::open(const std::string& data_dir) {
  if (auto made = create_data_dir(data_dir); !made) return std::move(made).issue();
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
