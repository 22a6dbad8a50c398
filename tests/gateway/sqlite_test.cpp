// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include "gateway/sqlite/database.h"

#include <pthread.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <future>
#include <string>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include "gateway/sqlite/blocking_pool.h"
#include "gateway/sqlite/group_writer.h"
#include "gateway/sqlite/migrations.h"
#include "gateway/store/databases.h"
#include <fstream>

#include "support/paths.h"

using namespace gw::sqlite;

namespace {
std::vector<Migration> three() {
  return {{1, "a", "CREATE TABLE a(x INTEGER) STRICT;"},
          {2, "b", "CREATE TABLE b(y TEXT) STRICT; INSERT INTO b VALUES ('seed');"},
          {3, "c", "ALTER TABLE a ADD COLUMN z TEXT;"}};
}
}  // namespace

TEST_CASE("SQLite: opens in WAL mode with synchronous FULL and foreign keys on") {
  auto db = Database::open((gw::test::temp_dir("sqlite") / "t.db").string());
  REQUIRE(db.ok());
  auto mode = db->prepare("PRAGMA journal_mode");
  REQUIRE(mode.ok());
  REQUIRE(*mode->step());
  CHECK(mode->column_text(0) == "wal");
  auto sync = db->prepare("PRAGMA synchronous");
  REQUIRE(*sync->step());
  CHECK(sync->column_int64(0) == 2);  // FULL
  auto fk = db->prepare("PRAGMA foreign_keys");
  REQUIRE(*fk->step());
  CHECK(fk->column_int64(0) == 1);
}

TEST_CASE("Migrations: upgrading from every earlier version reaches the same schema") {
  const auto all = three();
  for (std::size_t start = 0; start <= all.size(); ++start) {
    CAPTURE(start);
    auto db = Database::open((gw::test::temp_dir("mig") / "m.db").string());
    REQUIRE(db.ok());
    std::vector<Migration> first(all.begin(), all.begin() + static_cast<long>(start));
    REQUIRE(migrate(*db, first).ok());
    auto v = migrate(*db, all);
    REQUIRE(v.ok());
    CHECK(*v == 3);
    CHECK(*db->user_version() == 3);
    auto cols = db->prepare("SELECT count(*) FROM pragma_table_info('a')");
    REQUIRE(*cols->step());
    CHECK(cols->column_int64(0) == 2);
    auto seed = db->prepare("SELECT count(*) FROM b");
    REQUIRE(*seed->step());
    CHECK(seed->column_int64(0) == 1);  // the data migration ran exactly once
  }
}

TEST_CASE("Migrations: a failing migration leaves the file at the last whole version") {
  auto db = Database::open((gw::test::temp_dir("mig") / "f.db").string());
  REQUIRE(db.ok());
  std::vector<Migration> bad{{1, "a", "CREATE TABLE a(x INTEGER);"},
                             {2, "broken", "CREATE TABLE b(y); INSERT INTO nowhere VALUES (1);"}};
  auto r = migrate(*db, bad);
  REQUIRE_FALSE(r.ok());
  CHECK(r.issue().diagnostics.find("migration 2 (broken) failed") != std::string::npos);
  CHECK(*db->user_version() == 1);
  auto b = db->prepare("SELECT count(*) FROM sqlite_master WHERE name = 'b'");
  REQUIRE(*b->step());
  CHECK(b->column_int64(0) == 0);  // the half of migration 2 that ran was rolled back
}

TEST_CASE("Migrations: a migration's code runs after its SQL, in its transaction, and once") {
  auto db = Database::open((gw::test::temp_dir("mig") / "c.db").string());
  REQUIRE(db.ok());
  int runs = 0;
  // Reads what its own SQL wrote: the code sees the migration's SQL, uncommitted.
  auto copy = [&runs](Database& d) -> fhir::Status {
    ++runs;
    return d.exec("INSERT INTO b SELECT y || ' copied' FROM b;");
  };
  std::vector<Migration> all = three();
  all[1].code = copy;
  REQUIRE(migrate(*db, all).ok());
  REQUIRE(migrate(*db, all).ok());  // at the latest version: nothing runs again
  CHECK(runs == 1);
  auto rows = db->prepare("SELECT group_concat(y, ',') FROM (SELECT y FROM b ORDER BY y)");
  REQUIRE(*rows->step());
  CHECK(rows->column_text(0) == "seed,seed copied");

  // Failing code undoes its migration's SQL and leaves the version where it was.
  auto other = Database::open((gw::test::temp_dir("mig") / "cf.db").string());
  REQUIRE(other.ok());
  std::vector<Migration> failing = three();
  failing[1].code = [](Database&) -> fhir::Status {
    return fhir::Issue::make(fhir::ErrorCode::internal_error, "no index for you");
  };
  auto r = migrate(*other, failing);
  REQUIRE_FALSE(r.ok());
  CHECK(r.issue().diagnostics.find("migration 2 (b) failed: no index for you") != std::string::npos);
  CHECK(*other->user_version() == 1);
  auto b = other->prepare("SELECT count(*) FROM sqlite_master WHERE name = 'b'");
  REQUIRE(*b->step());
  CHECK(b->column_int64(0) == 0);
}

TEST_CASE("Migrations: a database newer than the code is refused") {
  auto db = Database::open((gw::test::temp_dir("mig") / "n.db").string());
  REQUIRE(db.ok());
  REQUIRE(migrate(*db, three()).ok());
  auto r = migrate(*db, {{1, "a", "SELECT 1;"}});
  REQUIRE_FALSE(r.ok());
  CHECK(r.issue().diagnostics.find("newer than this gateway") != std::string::npos);
}

TEST_CASE("SQLite: the statement cache is bounded, and a statement in use survives its eviction") {
  auto db = Database::open((gw::test::temp_dir("sqlite-cache-bound") / "b.db").string());
  REQUIRE(db.ok());
  REQUIRE(db->exec("CREATE TABLE t(x INTEGER); INSERT INTO t VALUES (1), (2), (3);").ok());
  // Held across the evictions below, mid-read.
  auto held = db->cached("SELECT x FROM t ORDER BY x");
  REQUIRE(held.ok());
  REQUIRE(*held->step());
  CHECK(held->column_int64(0) == 1);
  // Texts built per request (a search's shape): 1,000 different ones.
  std::size_t most = 0;
  for (int i = 0; i < 1000; ++i) {
    auto st = db->cached("SELECT x FROM t WHERE x > " + std::to_string(i));
    REQUIRE(st.ok());
    CHECK(*st->step() == (i < 3));  // rows only while some x is above i
    most = std::max(most, db->cached_count());
  }
  CHECK(most <= 256);
  CHECK(db->cached_count() >= 1);
  // The held statement kept its place.
  REQUIRE(*held->step());
  CHECK(held->column_int64(0) == 2);
  // And a text evicted earlier is prepared again and answers.
  auto again = db->cached("SELECT x FROM t WHERE x > 0");
  REQUIRE(again.ok());
  REQUIRE(*again->step());
  CHECK(again->column_int64(0) == 1);
}

TEST_CASE("SQLite: cached statements are reused, reset on release, and never shared by nested uses") {
  const std::string path = (gw::test::temp_dir("sqlite-cache") / "c.db").string();
  auto db = Database::open(path);
  REQUIRE(db.ok());
  REQUIRE(db->exec("CREATE TABLE t(x INTEGER); INSERT INTO t VALUES (1), (2), (3);").ok());
  const char* sql = "SELECT x FROM t WHERE x >= ? ORDER BY x";
  sqlite3_stmt* first = nullptr;
  {
    auto a = db->cached(sql);
    REQUIRE(a.ok());
    a->bind(1, std::int64_t{2});
    REQUIRE(*a->step());
    CHECK(a->column_int64(0) == 2);
    first = a->handle();
    // A nested use of the same text while `a` is mid-read: a statement of its own, so `a`'s
    // position is not lost.
    auto b = db->cached(sql);
    REQUIRE(b.ok());
    CHECK(b->handle() != first);
    b->bind(1, std::int64_t{1});
    REQUIRE(*b->step());
    CHECK(b->column_int64(0) == 1);
    REQUIRE(*a->step());
    CHECK(a->column_int64(0) == 3);
  }
  {
    // The same statement again, with its bindings cleared (NULL: no row matches).
    auto c = db->cached(sql);
    REQUIRE(c.ok());
    CHECK(c->handle() == first);
    CHECK_FALSE(*c->step());
  }
  // Released mid-read, the statement no longer holds a read snapshot: another connection's
  // checkpoint can reset the WAL.
  {
    auto d = db->cached(sql);
    d->bind(1, std::int64_t{1});
    REQUIRE(*d->step());
  }
  auto w = Database::open(path);
  REQUIRE(w.ok());
  REQUIRE(w->exec("INSERT INTO t VALUES (4)").ok());
  auto busy = w->prepare("PRAGMA wal_checkpoint(TRUNCATE)");
  REQUIRE(*busy->step());
  CHECK(busy->column_int64(0) == 0);  // not blocked by a reader
  auto bad = db->cached("SELECT nope FROM nowhere");
  CHECK_FALSE(bad.ok());
  CHECK(db->run_cached("INSERT INTO t VALUES (5)").ok());
  CHECK(db->run_cached("INSERT INTO t VALUES (6)").ok());
  auto n = db->prepare("SELECT count(*) FROM t");
  REQUIRE(*n->step());
  CHECK(n->column_int64(0) == 6);
}

TEST_CASE("Transaction: rolls back unless committed") {
  auto db = Database::open((gw::test::temp_dir("tx") / "t.db").string());
  REQUIRE(db.ok());
  REQUIRE(db->exec("CREATE TABLE t(x)").ok());
  {
    Transaction tx(*db);
    REQUIRE(db->exec("INSERT INTO t VALUES (1)").ok());
  }
  {
    Transaction tx(*db);
    REQUIRE(db->exec("INSERT INTO t VALUES (2)").ok());
    REQUIRE(tx.commit().ok());
  }
  auto st = db->prepare("SELECT group_concat(x) FROM t");
  REQUIRE(*st->step());
  CHECK(st->column_text(0) == "2");
}

TEST_CASE("Databases: creates locator, store and audit files at their latest schema") {
  auto dir = gw::test::temp_dir("dbs");
  auto dbs = gw::store::Databases::open((dir / "data").string());
  REQUIRE(dbs.ok());
  CHECK(*dbs->locator().user_version() == gw::store::locator_migrations().back().version);
  CHECK(*dbs->store().user_version() == gw::store::store_migrations().back().version);
  CHECK(*dbs->audit().user_version() == gw::store::audit_migrations().back().version);
  CHECK(std::filesystem::exists(dir / "data" / "audit.db"));
  auto again = gw::store::Databases::open((dir / "data").string());  // reopening is a no-op
  CHECK(again.ok());
}

TEST_CASE("Databases: an unusable data directory is reported, not thrown") {
  auto dir = gw::test::temp_dir("dbs");
  std::ofstream(dir / "file") << "x";
  auto dbs = gw::store::Databases::open((dir / "file" / "data").string());
  REQUIRE_FALSE(dbs.ok());
  CHECK(dbs.issue().diagnostics.find("cannot create data directory") != std::string::npos);
}

namespace {
unsigned mode_of(const std::filesystem::path& p) {
  struct stat info {};
  REQUIRE(::stat(p.c_str(), &info) == 0);
  return static_cast<unsigned>(info.st_mode & 07777);
}
}  // namespace

TEST_CASE("Databases: under the usual umask 022 the data directory and every database file are private") {
  const mode_t saved = ::umask(022);
  const auto data = gw::test::temp_dir("dbs-private") / "data";
  {
    auto dbs = gw::store::Databases::open(data.string());
    REQUIRE(dbs.ok());
    CHECK(mode_of(data) == 0700);
    for (const char* db : {"locator.db", "store.db", "audit.db"}) {
      CAPTURE(db);
      // The -wal and -shm files exist while a connection is open; they hold patient data too.
      for (const char* suffix : {"", "-wal", "-shm"}) {
        CAPTURE(suffix);
        REQUIRE(std::filesystem::exists(data / (std::string(db) + suffix)));
        CHECK(mode_of(data / (std::string(db) + suffix)) == 0600);
      }
    }
    CHECK(gw::store::exposed_to_others(data.string()).empty());
  }
  ::umask(saved);

  // What an older gateway, or a folder made by hand, left readable is found (start-up warns).
  std::filesystem::permissions(data, std::filesystem::perms::others_read | std::filesystem::perms::others_exec,
                               std::filesystem::perm_options::add);
  std::filesystem::permissions(data / "store.db", std::filesystem::perms::others_read,
                               std::filesystem::perm_options::add);
  const auto exposed = gw::store::exposed_to_others(data.string());
  REQUIRE(exposed.size() == 2);
  CHECK(exposed[0].path == data.string());
  CHECK(exposed[0].mode == "0705");
  CHECK(exposed[1].path == (data / "store.db").string());
  CHECK(exposed[1].mode == "0604");
}

TEST_CASE("Databases: a file that is not a database is named in the error") {
  for (const char* damaged : {"locator.db", "store.db", "audit.db"}) {
    CAPTURE(damaged);
    const auto data = gw::test::temp_dir("dbs-notadb") / "data";
    REQUIRE(gw::store::Databases::open(data.string()).ok());
    std::ofstream(data / damaged, std::ios::trunc) << std::string(8192, 'x');
    for (const char* suffix : {"-wal", "-shm"}) std::filesystem::remove(data / (std::string(damaged) + suffix));
    auto dbs = gw::store::Databases::open(data.string());
    REQUIRE_FALSE(dbs.ok());
    INFO(dbs.issue().diagnostics);
    CHECK(dbs.issue().diagnostics.find((data / damaged).string()) != std::string::npos);
    CHECK(dbs.issue().diagnostics.find("file is not a database") != std::string::npos);
  }
}

TEST_CASE("Databases: an empty data_dir is refused by name") {
  auto dbs = gw::store::Databases::open("");
  REQUIRE_FALSE(dbs.ok());
  CHECK(dbs.issue().diagnostics == "no data directory given (storage.data_dir is empty)");
}

namespace {
// A backend whose write blocks until a read has finished: on one shared set of threads the
// read would queue behind it.
struct GateBackend {
  std::promise<void> read_finished;
  std::shared_future<void> read_done = read_finished.get_future().share();
};

std::string this_thread_name() {
  char name[32] = {};
  pthread_getname_np(pthread_self(), name, sizeof name);
  return name;
}
}  // namespace

TEST_CASE("BlockingPool: a write waiting on its commit does not hold up reads") {
  GateBackend backend;
  gw::sqlite::BlockingPool<GateBackend> pool(backend, 1, 1);
  boost::asio::io_context io;
  std::string write_result, read_result;
  auto write = [](GateBackend& b) -> fhir::Result<std::string> {
    // Bounded: a read that never runs ends the wait (and fails the test) after 30 s.
    if (b.read_done.wait_for(std::chrono::seconds(30)) != std::future_status::ready) return std::string("read never ran");
    return this_thread_name();
  };
  auto read = [](GateBackend& b) -> fhir::Result<std::string> {
    std::string name = this_thread_name();
    b.read_finished.set_value();
    return name;
  };
  boost::asio::co_spawn(io, [&]() -> boost::asio::awaitable<void> { write_result = *co_await pool.call_write(write); },
                        boost::asio::detached);
  boost::asio::co_spawn(io, [&]() -> boost::asio::awaitable<void> { read_result = *co_await pool.call(read); },
                        boost::asio::detached);
  io.run();
  CHECK(read_result == "gw-storage");
  CHECK(write_result == "gw-storage-wr");
}

namespace {

// A GroupWriter on a fresh file with table t(x), and a way to count its rows from outside.
struct DeferFixture {
  std::string path;
  std::unique_ptr<GroupWriter> writer;
  explicit DeferFixture(std::chrono::microseconds defer_max) {
    path = (gw::test::temp_dir("group-writer") / "w.db").string();
    auto db = Database::open(path);
    REQUIRE(db.ok());
    REQUIRE(db->exec("CREATE TABLE t(x INTEGER)").ok());
    GroupWriterOptions o;
    o.name = "test";
    o.defer_max = defer_max;
    writer = std::make_unique<GroupWriter>(std::move(*db), o);
  }
  static GroupWriter::Body insert(int x) {
    return [x](Database& db) { return db.exec("INSERT INTO t VALUES (" + std::to_string(x) + ")"); };
  }
  std::string rows() const {
    auto db = Database::open(path);
    REQUIRE(db.ok());
    auto st = db->prepare("SELECT coalesce(group_concat(x), '') FROM (SELECT x FROM t ORDER BY x)");
    REQUIRE(st.ok());
    REQUIRE(*st->step());
    return std::string(st->column_text(0));
  }
};

// The done callback's status, delivered to the test thread.
struct Outcome {
  std::promise<fhir::Status> p;
  std::future<fhir::Status> f = p.get_future();
  GroupWriter::Done done() {
    return [this](fhir::Status st) { p.set_value(std::move(st)); };
  }
  fhir::Status get() {
    // A guard against a hang only: a writer that never completes the job fails here.
    REQUIRE(f.wait_for(std::chrono::seconds(120)) == std::future_status::ready);
    return f.get();
  }
};

}  // namespace

TEST_CASE("GroupWriter: a deferrable job rides in the commit the next job starts, and completes after it") {
  DeferFixture fx(std::chrono::hours(1));  // it would wait that long alone
  Outcome later, now;
  fx.writer->submit_deferrable(DeferFixture::insert(1), later.done());
  fx.writer->submit(DeferFixture::insert(2), now.done());
  CHECK(now.get().ok());
  CHECK(later.get().ok());
  fx.writer->stop();  // the counters are updated after the callbacks: read them when it is idle
  const GroupWriter::Counters c = fx.writer->counters();
  CHECK(c.commits == 1);  // one transaction carried both
  CHECK(c.jobs == 2);
  CHECK(c.deferred_alone == 0);
  CHECK(fx.rows() == "1,2");
}

TEST_CASE("GroupWriter: a deferrable job with no company commits alone after defer_max") {
  DeferFixture fx(std::chrono::milliseconds(20));
  Outcome later;
  fx.writer->submit_deferrable(DeferFixture::insert(7), later.done());
  CHECK(later.get().ok());
  fx.writer->stop();
  const GroupWriter::Counters c = fx.writer->counters();
  CHECK(c.commits == 1);
  CHECK(c.deferred_alone == 1);
  CHECK(fx.rows() == "7");
}

TEST_CASE("GroupWriter: stop() commits a waiting deferrable job at once; one whose body fails leaves nothing") {
  DeferFixture fx(std::chrono::hours(1));
  Outcome later, bad;
  fx.writer->submit_deferrable(DeferFixture::insert(3), later.done());
  fx.writer->submit_deferrable([](Database& db) { return db.exec("INSERT INTO missing VALUES (1)"); }, bad.done());
  fx.writer->stop();  // would otherwise wait an hour
  CHECK(later.get().ok());
  CHECK_FALSE(bad.get().ok());
  CHECK(fx.writer->counters().commits == 1);
  CHECK(fx.rows() == "3");
  // After stop(), refused at once like any other job.
  Outcome refused;
  fx.writer->submit_deferrable(DeferFixture::insert(4), refused.done());
  CHECK_FALSE(refused.get().ok());
}
