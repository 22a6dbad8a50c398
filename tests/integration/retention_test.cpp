// SPDX-License-Identifier: Apache-2.0
// Message retention ([store] message_retention_days) in a running gateway: what a prune leaves
// on disk and on the audit record.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <iterator>
#include <thread>

#include "gateway/audit/log.h"
#include "gateway/audit/record.h"
#include "gateway/store/databases.h"
#include "gateway/store/store.h"
#include "support/stderr_capture.h"
#include "support/test_server.h"

using namespace gw;
using namespace std::chrono_literals;

TEST_CASE("Message retention: a prune removes the raw text from disk at once and is on the audit record") {
  const std::string marker = "RETAINED-TEXT-51c2";
  std::filesystem::path data_dir;
  const std::int64_t now_ms = audit::now_ms();
  auto s = std::make_unique<test::TestServer>([&](config::Config& c) {
    c.store.message_retention_days = 1;
    data_dir = c.data_dir;
    // A message received three days ago, in the store the gateway is about to open (with the
    // other databases beside it: a data directory holding store.db alone is refused).
    REQUIRE(store::Databases::open(data_dir.string()).ok());
    auto st = store::Store::open((data_dir / "store.db").string());
    REQUIRE(st.ok());
    store::MessageWrite m;
    m.source = "cuh-pas";
    m.kind = "ADT^A01";
    m.dedupe_key = "PAS|RGT01|OLD-1";
    m.raw = "MSH|^~\\&|PAS|RGT01|GW|GW|20261123101500||ADT^A01^ADT_A01|OLD-1|P|2.4\rNTE|1||" + marker + "\r";
    m.reply = "MSA|AA|OLD-1";
    m.status = store::MessageStatus::error;
    m.received_ms = now_ms - 3 * 86400 * 1000LL;
    std::promise<fhir::Result<std::int64_t>> written;
    (*st)->record(m, [&](fhir::Result<std::int64_t> r) { written.set_value(std::move(r)); });
    REQUIRE(written.get_future().get().ok());
  });
  // The maintenance thread prunes once at start, then hourly.
  audit::Query q;
  q.subtype = "message-retention-prune";
  std::vector<audit::Record> records;
  for (int i = 0; i < 100 && records.empty(); ++i) {
    auto page = s->app().audit_log()->search(q);
    REQUIRE(page.ok());
    records = page->records;
    if (records.empty()) std::this_thread::sleep_for(100ms);
  }
  REQUIRE(records.size() == 1);
  CHECK(records[0].kind == "system");
  CHECK(records[0].detail.note.find("deleted 1 raw messages") != std::string::npos);
  CHECK(records[0].detail.note.find("received before " + audit::format_time_ms(now_ms - 86400 * 1000LL).substr(0, 13)) !=
        std::string::npos);  // the cutoff, to the hour
  store::MessageQuery left;
  left.status = store::MessageStatus::error;
  auto rows = s->app().store().list_messages(left);
  REQUIRE(rows.ok());
  CHECK(rows->empty());
  std::string on_disk;
  for (const char* name : {"store.db", "store.db-wal"}) {
    std::ifstream in(data_dir / name, std::ios::binary);
    on_disk += std::string(std::istreambuf_iterator<char>(in), {});
  }
  CHECK(on_disk.find(marker) == std::string::npos);
}

// Retention deletes errored messages too (it is a limit on keeping patient data), but an
// errored message never replayed must not vanish unexplained: the audit record counts what
// went by status and names the errored ones by id, and the log warns.
TEST_CASE("Message retention: what a prune deletes is counted by status, errored messages named by id") {
  std::filesystem::path data_dir;
  const std::int64_t now_ms = audit::now_ms();
  std::int64_t errored_id = 0;
  test::StderrCapture captured;
  auto s = std::make_unique<test::TestServer>([&](config::Config& c) {
    c.store.message_retention_days = 1;
    data_dir = c.data_dir;
    REQUIRE(store::Databases::open(data_dir.string()).ok());
    auto st = store::Store::open((data_dir / "store.db").string());
    REQUIRE(st.ok());
    const auto write = [&st, now_ms](const std::string& id, store::MessageStatus status) {
      store::MessageWrite m;
      m.source = "cuh-pas";
      m.kind = "ADT^A40";
      m.dedupe_key = "PAS|RGT01|" + id;
      m.raw = "MSH|^~\\&|PAS|RGT01|GW|GW|20261123101500||ADT^A40^ADT_A39|" + id + "|P|2.4\r";
      m.reply = "MSA|AE|" + id;
      m.status = status;
      m.received_ms = now_ms - 3 * 86400 * 1000LL;
      std::promise<fhir::Result<std::int64_t>> written;
      if (status == store::MessageStatus::applied)  // applied with no resources: the row is what counts here
        (*st)->apply(m, {}, [&](fhir::Result<store::ApplyResult> r) {
          written.set_value(r ? fhir::Result<std::int64_t>(r->message_id) : fhir::Result<std::int64_t>(r.issue()));
        });
      else
        (*st)->record(m, [&](fhir::Result<std::int64_t> r) { written.set_value(std::move(r)); });
      auto row = written.get_future().get();
      REQUIRE_MESSAGE(row.ok(), (row.ok() ? std::string() : row.issue().diagnostics));
      return *row;
    };
    write("APPLIED-1", store::MessageStatus::applied);
    errored_id = write("MERGE-UNKNOWN-1", store::MessageStatus::error);
    write("GARBAGE-1", store::MessageStatus::rejected);
    write("A60-1", store::MessageStatus::filtered);
  });
  audit::Query q;
  q.subtype = "message-retention-prune";
  std::vector<audit::Record> records;
  for (int i = 0; i < 100 && records.empty(); ++i) {
    auto page = s->app().audit_log()->search(q);
    REQUIRE(page.ok());
    records = page->records;
    if (records.empty()) std::this_thread::sleep_for(100ms);
  }
  REQUIRE(records.size() == 1);
  const std::string note = records[0].detail.note;
  INFO(note);
  CHECK(note.find("deleted 4 raw messages") != std::string::npos);
  CHECK(note.find("applied 1, replayed 0, error 1, rejected 1, pending 0, filtered 1") != std::string::npos);
  CHECK(note.find("errored or pending: 1 (ids " + std::to_string(errored_id) + ")") != std::string::npos);
  s.reset();
  const std::string line = test::log_line(captured.text(), "message retention deleted errored or pending messages");
  CHECK(line.find("errored or pending: 1 (ids " + std::to_string(errored_id) + ")") != std::string::npos);
}
