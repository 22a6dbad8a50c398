// SPDX-License-Identifier: Apache-2.0
#include "gateway/sqlite/database.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <mutex>
#include <unordered_map>

#include <sqlite3.h>

namespace gw::sqlite {
namespace {

// Storage failures are reported without SQL text or paths in the user-facing part
// (STYLE.md "Errors"); operators get the SQLite message in the log via the caller.
fhir::Issue storage_issue(sqlite3* db, std::string_view what) {
  std::string msg = std::string(what) + ": " + (db ? sqlite3_errmsg(db) : "out of memory");
  return fhir::Issue::make(fhir::ErrorCode::internal_error, std::move(msg));
}

// A new database file is made here, owner-only, before SQLite opens it: SQLite would create it
// with the umask's mode (0644 as a rule: any local user could read every patient's record),
// and it gives the -wal and -shm files the mode of the database file. An empty file is an
// empty database to SQLite. Names such as ":memory:" or "file:" URIs are SQLite's to handle.
fhir::Status create_private(const std::string& path) {
  if (path.empty() || path == ":memory:" || path.rfind("file:", 0) == 0) return fhir::Ok{};
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0600);
  if (fd >= 0) {
    ::close(fd);
  } else if (errno != EEXIST) {
    return fhir::Issue::make(fhir::ErrorCode::not_ready, "cannot create database " + path + ": " + std::strerror(errno));
  }
  return fhir::Ok{};
}

}  // namespace

fhir::Result<Database> Database::open(const std::string& path, Mode mode) {
  sqlite3* db = nullptr;
  // SQLite's memory statistics take a global mutex on every allocation (about 3% of a
  // writer's time); the gateway never reads them. Only possible before SQLite initialises:
  // later calls are refused harmlessly.
  static std::once_flag no_memstatus;
  std::call_once(no_memstatus, [] { (void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0); });
  const bool read_only = mode != Mode::read_write_create;
  int flags = SQLITE_OPEN_NOMUTEX | (read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  if (mode == Mode::read_write_create)
    if (fhir::Status made = create_private(path); !made) return std::move(made).issue();
  std::string name = path;
  if (mode == Mode::read_only_immutable) {
    // A URI filename (sqlite.org/uri.html): '%', '?' and '#' in the path are percent-encoded.
    name = "file:";
    for (char c : path) {
      if (c == '%' || c == '?' || c == '#') {
        static constexpr char kHex[] = "0123456789ABCDEF";
        name += '%';
        name += kHex[static_cast<unsigned char>(c) >> 4];
        name += kHex[static_cast<unsigned char>(c) & 15];
      } else {
        name += c;
      }
    }
    name += "?immutable=1";
    flags |= SQLITE_OPEN_URI;
  }
  int rc = sqlite3_open_v2(name.c_str(), &db, flags, nullptr);
  if (rc != SQLITE_OK) {
    fhir::Issue issue = fhir::Issue::make(fhir::ErrorCode::not_ready,
                                          "cannot open database " + path + ": " +
                                              (db ? sqlite3_errmsg(db) : sqlite3_errstr(rc)));
    sqlite3_close(db);
    return issue;
  }
  Database d(db, path);
  sqlite3_busy_timeout(db, 5000);
  sqlite3_extended_result_codes(db, 1);
  // WAL lets readers proceed during the writer's commit; FULL makes each commit durable
  // before we acknowledge anything built on it (DESIGN.md "Storage"). Temporary b-trees and
  // statement journals stay in memory: on disk they cost a create, unlink and writes of a
  // scratch file in /var/tmp for many single statements.
  const char* pragmas =
      read_only
          ? "PRAGMA foreign_keys=ON; PRAGMA query_only=ON; PRAGMA temp_store=MEMORY;"
          : "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA temp_store=MEMORY;";
  // The first statements are the first to read the file: a damaged or foreign one ("file is
  // not a database") fails here, and the message must say which file it is.
  if (fhir::Status s = d.exec(pragmas); !s)
    return fhir::Issue::make(fhir::ErrorCode::not_ready, "cannot open database " + path + ": " + s.issue().diagnostics);
  return d;
}

// Prepared statements by SQL text. An entry in use is never erased, so the `in_use` flag a
// borrowed Statement points at stays valid (unordered_map nodes do not move). Bounded: texts
// built from a request (a search's shape) could otherwise grow it without end; when full, the
// entries not in use are finalized and the cache refills with what is asked for next.
struct Database::Cache {
  static constexpr std::size_t kMaxEntries = 256;
  struct Entry {
    sqlite3_stmt* stmt = nullptr;
    bool in_use = false;
  };
  // Looked up by string_view: a hit allocates nothing.
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, Entry, Hash, std::equal_to<>> entries;
};

Database::Database(sqlite3* db, std::string path)
    : db_(db), path_(std::move(path)), cache_(std::make_unique<Cache>()) {}

Database::Database(Database&& o) noexcept : db_(o.db_), path_(std::move(o.path_)), cache_(std::move(o.cache_)) {
  o.db_ = nullptr;
}

Database& Database::operator=(Database&& o) noexcept {
  if (this != &o) {
    close();
    db_ = o.db_;
    path_ = std::move(o.path_);
    cache_ = std::move(o.cache_);
    o.db_ = nullptr;
  }
  return *this;
}

Database::~Database() { close(); }

void Database::close() {
  if (cache_)
    for (auto& [sql, e] : cache_->entries) sqlite3_finalize(e.stmt);
  cache_.reset();
  sqlite3_close_v2(db_);
  db_ = nullptr;
}

fhir::Status Database::exec(std::string_view sql) {
  std::string text(sql);
  char* err = nullptr;
  if (sqlite3_exec(db_, text.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    return fhir::Issue::make(fhir::ErrorCode::internal_error, "database error: " + msg);
  }
  return fhir::Ok{};
}

fhir::Result<Statement> Database::prepare(std::string_view sql) {
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT, &stmt,
                         nullptr) != SQLITE_OK)
    return storage_issue(db_, "prepare failed");
  return Statement(stmt, db_);
}

fhir::Result<Statement> Database::cached(std::string_view sql) {
  if (!cache_) return prepare(sql);
  auto it = cache_->entries.find(sql);
  const bool added = it == cache_->entries.end();
  if (added && cache_->entries.size() >= Cache::kMaxEntries)
    std::erase_if(cache_->entries, [](auto& kv) {
      if (kv.second.in_use) return false;
      sqlite3_finalize(kv.second.stmt);
      return true;
    });
  if (added) it = cache_->entries.try_emplace(std::string(sql)).first;
  Cache::Entry& e = it->second;
  if (added) {
    if (sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT, &e.stmt,
                           nullptr) != SQLITE_OK) {
      fhir::Issue issue = storage_issue(db_, "prepare failed");
      cache_->entries.erase(it);
      return issue;
    }
  } else if (e.in_use) {
    return prepare(sql);  // nested use of the same text: a private statement
  }
  e.in_use = true;
  return Statement(e.stmt, db_, &e.in_use);
}

std::size_t Database::cached_count() const { return cache_ ? cache_->entries.size() : 0; }

fhir::Status Database::run_cached(std::string_view sql) {
  auto st = cached(sql);
  if (!st) return std::move(st).issue();
  return st->run();
}

fhir::Result<int> Database::user_version() {
  auto st = prepare("PRAGMA user_version");
  if (!st) return std::move(st).issue();
  auto row = st->step();
  if (!row) return std::move(row).issue();
  return static_cast<int>(st->column_int64(0));
}

std::int64_t Database::last_insert_rowid() const { return sqlite3_last_insert_rowid(db_); }
int Database::changes() const { return sqlite3_changes(db_); }

Statement::Statement(Statement&& o) noexcept : stmt_(o.stmt_), db_(o.db_), in_use_(o.in_use_) {
  o.stmt_ = nullptr;
  o.in_use_ = nullptr;
}

Statement& Statement::operator=(Statement&& o) noexcept {
  if (this != &o) {
    release();
    stmt_ = o.stmt_;
    db_ = o.db_;
    in_use_ = o.in_use_;
    o.stmt_ = nullptr;
    o.in_use_ = nullptr;
  }
  return *this;
}

Statement::~Statement() { release(); }

void Statement::release() {
  if (!in_use_) {
    sqlite3_finalize(stmt_);
  } else if (stmt_) {
    // Ends a half-read SELECT too, so the connection does not keep its read snapshot.
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
    *in_use_ = false;
  }
  stmt_ = nullptr;
  in_use_ = nullptr;
}

Statement& Statement::bind(int index, std::int64_t value) {
  sqlite3_bind_int64(stmt_, index, value);
  return *this;
}

Statement& Statement::bind(int index, std::string_view text) {
  sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
  return *this;
}

Statement& Statement::bind_blob(int index, const void* data, std::size_t size) {
  sqlite3_bind_blob(stmt_, index, data, static_cast<int>(size), SQLITE_TRANSIENT);
  return *this;
}

Statement& Statement::bind_null(int index) {
  sqlite3_bind_null(stmt_, index);
  return *this;
}

fhir::Result<bool> Statement::step() {
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return storage_issue(db_, "statement failed");
}

fhir::Status Statement::run() {
  while (true) {
    auto r = step();
    if (!r) return std::move(r).issue();
    if (!*r) break;
  }
  reset();
  return fhir::Ok{};
}

void Statement::reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

std::int64_t Statement::column_int64(int col) const { return sqlite3_column_int64(stmt_, col); }

std::string Statement::column_text(int col) const {
  const unsigned char* p = sqlite3_column_text(stmt_, col);
  int n = sqlite3_column_bytes(stmt_, col);
  return p ? std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n)) : std::string();
}

std::string Statement::column_blob(int col) const {
  const void* p = sqlite3_column_blob(stmt_, col);
  int n = sqlite3_column_bytes(stmt_, col);
  return p ? std::string(static_cast<const char*>(p), static_cast<std::size_t>(n)) : std::string();
}

bool Statement::column_is_null(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }

Transaction::Transaction(Database& db) : db_(db), begun_(db.run_cached("BEGIN IMMEDIATE")) {}

Transaction::~Transaction() {
  if (begun_ && !done_) (void)db_.run_cached("ROLLBACK");
}

fhir::Status Transaction::commit() {
  if (!begun_) return begun_;
  fhir::Status s = db_.run_cached("COMMIT");
  if (s) done_ = true;
  return s;
}

}  // namespace gw::sqlite
