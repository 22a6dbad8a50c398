// SPDX-License-Identifier: Apache-2.0
// A thin RAII layer over the SQLite C API shared by the locator, store and audit databases.
// Errors on open/prepare/step are returned as fhir::Result values; a Database is used by one
// thread at a time (the caller's pool or writer owns it). Never call from a network thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "fhir/result.h"

struct sqlite3;
struct sqlite3_stmt;

namespace gw::sqlite {

class Statement;

class Database {
 public:
  // read_only_immutable: a file nobody is writing (no -wal beside it), read without locks and
  // without creating -shm or -wal files, so a copy in a folder the reader may not write to
  // can be read (SQLite's immutable=1).
  enum class Mode { read_write_create, read_only, read_only_immutable };

  // Opens `path`, sets WAL, synchronous=FULL, foreign_keys=ON and a busy timeout. Failures
  // say which file could not be opened and why (not_ready).
  static fhir::Result<Database> open(const std::string& path, Mode mode = Mode::read_write_create);

  Database(Database&& other) noexcept;
  Database& operator=(Database&& other) noexcept;
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;
  ~Database();

  // Runs one or more statements without results.
  fhir::Status exec(std::string_view sql);
  fhir::Result<Statement> prepare(std::string_view sql);
  // The same, from this connection's cache of prepared statements: the first call with a
  // given text prepares it, later calls reuse it (parsing and planning cost more than many
  // statements take to run). When the handle is destroyed the statement is reset and its
  // bindings cleared, not finalized. A text whose cached statement is still in use (a nested
  // use of the same statement) gets a fresh one. Use for statements run again and again;
  // the cache keeps at most 256 texts (see Cache), so texts built per request are safe too.
  fhir::Result<Statement> cached(std::string_view sql);
  std::size_t cached_count() const;  // statements in the cache now
  // Runs one statement without results through cached(): for BEGIN, SAVEPOINT, COMMIT and
  // the like on hot paths.
  fhir::Status run_cached(std::string_view sql);

  // PRAGMA user_version: the number of the last migration applied.
  fhir::Result<int> user_version();
  const std::string& path() const { return path_; }
  sqlite3* handle() { return db_; }
  std::int64_t last_insert_rowid() const;
  int changes() const;

 private:
  struct Cache;
  Database(sqlite3* db, std::string path);
  void close();
  sqlite3* db_ = nullptr;
  std::string path_;
  std::unique_ptr<Cache> cache_;
};

class Statement {
 public:
  Statement(Statement&& other) noexcept;
  Statement& operator=(Statement&& other) noexcept;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement();

  // Parameters are 1-based, as in SQLite.
  Statement& bind(int index, std::int64_t value);
  Statement& bind(int index, std::string_view text);
  Statement& bind_null(int index);
  Statement& bind_blob(int index, const void* data, std::size_t size);

  // Advances: true with a row, false when done; an Issue on error.
  fhir::Result<bool> step();
  // Steps to completion, expecting no rows.
  fhir::Status run();
  void reset();

  std::int64_t column_int64(int col) const;
  std::string column_text(int col) const;
  std::string column_blob(int col) const;  // bytes of a BLOB (or TEXT) column
  bool column_is_null(int col) const;
  sqlite3_stmt* handle() const { return stmt_; }

 private:
  friend class Database;
  Statement(sqlite3_stmt* stmt, sqlite3* db, bool* in_use = nullptr) : stmt_(stmt), db_(db), in_use_(in_use) {}
  void release();  // finalize an owned statement; reset and hand back a cached one
  sqlite3_stmt* stmt_ = nullptr;
  sqlite3* db_ = nullptr;
  bool* in_use_ = nullptr;  // set for a statement borrowed from Database::cached()
};

// BEGIN IMMEDIATE on construction; ROLLBACK in the destructor unless commit() succeeded.
class Transaction {
 public:
  explicit Transaction(Database& db);
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  const fhir::Status& begun() const { return begun_; }
  fhir::Status commit();

 private:
  Database& db_;
  fhir::Status begun_;
  bool done_ = false;
};

}  // namespace gw::sqlite
