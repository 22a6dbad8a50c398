// SPDX-License-Identifier: Apache-2.0
// Mutation tests of the audit verifier (issue #6 part 7): a real 200-record log written by
// gw::audit::Log and checkpointed with a key made here, then every single-byte flip, deleted,
// swapped, inserted and forged records, edited search columns, a truncated tail, an older copy
// of the database, bad checkpoint signatures, and the audit-verify tool as an IG officer runs it.
#include <doctest/doctest.h>

#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "fhir/json.h"
#include "gateway/audit/log.h"
#include "gateway/audit/verify.h"
#include "gateway/sqlite/database.h"
#include "support/paths.h"

namespace fs = std::filesystem;
using gw::audit::Checkpoint;
using gw::audit::CheckpointSigner;
using gw::audit::CheckpointVerifier;
using gw::audit::Log;
using gw::audit::Record;
using gw::audit::VerifyOptions;
using gw::audit::VerifyReport;
using gw::audit::merkle::Hash;

namespace {

constexpr int kRecords = 200;
constexpr std::size_t kIndexMergeRows = 16;
constexpr std::int64_t kBaseTimeMs = 1767607200000;  // 2026-01-05T10:00:00Z, a Monday

std::string ed25519_pem() {
  EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
  REQUIRE(key != nullptr);
  BIO* bio = BIO_new(BIO_s_mem());
  REQUIRE(PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr) == 1);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<std::size_t>(n));
  BIO_free(bio);
  EVP_PKEY_free(key);
  return pem;
}

struct Key {
  std::shared_ptr<const CheckpointSigner> signer;
  std::shared_ptr<const CheckpointVerifier> verifier;
  std::string public_pem;
};

Key make_key(const std::string& name = "test-audit-key") {
  const std::string pem = ed25519_pem();
  auto signer = CheckpointSigner::from_pem(pem, name);
  REQUIRE(signer);
  Key k;
  k.public_pem = signer->public_key_pem();
  auto verifier = CheckpointVerifier::from_pem(k.public_pem, name);
  REQUIRE(verifier);
  k.signer = std::make_shared<const CheckpointSigner>(std::move(*signer));
  k.verifier = std::make_shared<const CheckpointVerifier>(std::move(*verifier));
  return k;
}

const char* const kNhs[] = {"9000000009", "9000000017", "9000000025", "9000000033", "9000000041", "9000000068"};
const char* const kUsers[] = {"555123456789", "555987654321", "555000111222", "RX809-system"};
const char* const kRoles[] = {"R8000", "R8003", "R0260", ""};

// Varied records: users and systems, one to three patients, searches, break-glass, ingests,
// refusals and failures.
Record sample(int i) {
  Record r;
  r.time_ms = kBaseTimeMs + static_cast<std::int64_t>(i) * 60'000;
  const bool ingest = i % 11 == 5;
  r.kind = ingest ? "ingest" : "rest";
  r.agent_kind = ingest ? "system" : "user";
  r.user = ingest ? kUsers[3] : kUsers[i % 3];
  r.role = ingest ? "" : kRoles[i % 3];
  r.organisation = i % 2 ? "RX809" : "A81001";
  r.client_id = "ambulance-app";
  r.token_id = "jti-" + std::to_string(1000 + i);
  r.purpose = "TREAT";
  r.address = "10.1.2." + std::to_string(i % 250);
  r.client_certificate = "CN=device-" + std::to_string(i % 7) + ",O=Trust";
  r.request_id = "req-" + std::to_string(i);
  r.correlation_id = "corr-" + std::to_string(i * 7);
  if (ingest) {
    r.action = i % 2 ? "ingest-applied" : "ingest-rejected";
    r.status = i % 2 ? 200 : 400;
    r.source = "RX809";
    r.route = "mllp";
    r.detail.patients = {kNhs[i % 6]};
  } else if (i % 4 == 0) {
    r.action = "search-type";
    r.method = "GET";
    r.target = "/Observation?patient.identifier=https://fhir.nhs.uk/Id/nhs-number|" + std::string(kNhs[i % 6]);
    r.route = "/Observation";
    r.status = 200;
    r.detail.patients = {kNhs[i % 6]};
    r.detail.returned = {"Observation/obs-" + std::to_string(i), "Observation/obs-" + std::to_string(i + 1)};
  } else {
    r.action = "read";
    r.method = "GET";
    r.target = "/Patient/" + std::to_string(i);
    r.route = "/Patient/{id}";
    r.status = i % 9 == 0 ? 403 : (i % 23 == 0 ? 500 : 200);
    r.detail.patients = {kNhs[i % 6]};
    if (i % 5 == 0) r.detail.patients.push_back(kNhs[(i + 1) % 6]);
    r.detail.returned = {"Patient/" + std::to_string(i)};
  }
  r.detail.basis = "registered-practice";
  if (i % 17 == 3 && !ingest) {
    r.detail.basis = "break-glass";
    r.detail.break_glass_reason = "EMERG";
    r.detail.break_glass_justification = "unconscious patient in A&E, no relationship on record";
  }
  if (r.status >= 400) r.outcome_text = r.status == 403 ? "no legitimate relationship" : "source timed out";
  if (r.status == 500) r.detail.failed_sources = {"gp-connect"};
  if (i % 13 == 0) r.detail.withheld = {"DocumentReference/sensitive-" + std::to_string(i)};
  return r;
}

struct Built {
  fs::path dir;
  std::string db;
  std::string checkpoints;  // the checkpoint file
  Key key;
};

std::unique_ptr<gw::audit::Log> open_log(const Built& b) {
  gw::audit::LogOptions o;
  o.path = b.db;
  o.checkpoint_file = b.checkpoints;
  o.checkpoint_interval = std::chrono::hours(1);
  // Small index merges: the agent and time indexes hold some records and not others.
  o.index_merge_rows = kIndexMergeRows;
  auto log = gw::audit::Log::open(o, b.key.signer);
  REQUIRE(log);
  return std::move(*log);
}

// Appends records [from, to), one commit each (so the index merges, one after each commit
// that leaves kIndexMergeRows unindexed, always end in the same state), then checkpoints.
void append_and_checkpoint(gw::audit::Log& log, int from, int to) {
  for (int i = from; i < to; ++i) REQUIRE(log.append_sync(sample(i)));
  auto c = log.checkpoint_now();
  REQUIRE(c);
  REQUIRE(c->size == static_cast<std::uint64_t>(to));
}

// A log of `records` records with checkpoints at 100 and at the end.
Built build(const std::string& name, int records = kRecords) {
  Built b;
  b.dir = gw::test::temp_dir(name);
  b.db = (b.dir / "audit.db").string();
  b.checkpoints = (b.dir / "audit-checkpoints.log").string();
  b.key = make_key();
  auto log = open_log(b);
  append_and_checkpoint(*log, 0, std::min(records, 100));
  if (records > 100) append_and_checkpoint(*log, 100, records);
  log->stop();
  return b;
}

// A private copy of the built database to tamper with.
std::string copy_db(const Built& b, const std::string& name) {
  const fs::path to = b.dir / (name + ".db");
  fs::copy_file(b.db, to, fs::copy_options::overwrite_existing);
  if (fs::exists(b.db + "-wal")) fs::copy_file(b.db + "-wal", to.string() + "-wal", fs::copy_options::overwrite_existing);
  return to.string();
}

std::vector<Checkpoint> file_checkpoints(const std::string& path) {
  auto notes = gw::audit::parse_checkpoints(gw::test::read_file(path));
  REQUIRE(notes);
  return std::move(*notes);
}

VerifyOptions options_for(const Built& b, bool with_file = true) {
  VerifyOptions o;
  o.key = b.key.verifier.get();
  if (with_file) {
    o.checkpoints = file_checkpoints(b.checkpoints);
    o.checkpoint_files_given = true;
  }
  return o;
}

VerifyReport verify(const std::string& db, const VerifyOptions& o) {
  auto r = gw::audit::verify_database(db, o);
  REQUIRE(r);
  return std::move(*r);
}

bool has_problem(const VerifyReport& r, const std::string& kind, std::optional<std::uint64_t> index) {
  for (const auto& p : r.problems)
    if (p.kind == kind && p.index == index) return true;
  return false;
}

std::string describe(const VerifyReport& r) {
  std::string s = r.ok ? "ok" : "not ok";
  for (const auto& p : r.problems)
    s += "\n  " + (p.index ? std::to_string(*p.index) : std::string("-")) + " " + p.kind + ": " + p.text;
  for (const auto& w : r.warnings) s += "\n  warning " + w.kind + ": " + w.text;
  return s;
}

// The attacker's connection: no foreign-key checks getting in the way of renumbering.
gw::sqlite::Database open_rw(const std::string& path) {
  auto db = gw::sqlite::Database::open(path);
  REQUIRE(db);
  REQUIRE(db->exec("PRAGMA foreign_keys=OFF"));
  return std::move(*db);
}

void exec(gw::sqlite::Database& db, const std::string& sql) {
  auto s = db.exec(sql);
  INFO(sql);
  REQUIRE(s);
}

std::string record_bytes(gw::sqlite::Database& db, std::uint64_t seq) {
  auto s = db.prepare("SELECT record FROM audit_record WHERE seq = ?1");
  REQUIRE(s);
  s->bind(1, static_cast<std::int64_t>(seq));
  auto row = s->step();
  REQUIRE(row);
  REQUIRE(*row);
  return s->column_blob(0);
}

void set_record(gw::sqlite::Database& db, std::uint64_t seq, const std::string& bytes) {
  auto s = db.prepare("UPDATE audit_record SET record = ?2 WHERE seq = ?1");
  REQUIRE(s);
  s->bind(1, static_cast<std::int64_t>(seq)).bind_blob(2, bytes.data(), bytes.size());
  REQUIRE(s->run());
}

std::optional<Hash> node(gw::sqlite::Database& db, unsigned level, std::uint64_t idx) {
  auto s = db.prepare("SELECT hash FROM audit_node WHERE level = ?1 AND idx = ?2");
  REQUIRE(s);
  s->bind(1, static_cast<std::int64_t>(level)).bind(2, static_cast<std::int64_t>(idx));
  auto row = s->step();
  REQUIRE(row);
  if (!*row) return std::nullopt;
  Hash h{};
  const std::string b = s->column_blob(0);
  REQUIRE(b.size() == h.size());
  std::copy(b.begin(), b.end(), h.begin());
  return h;
}

void set_node(gw::sqlite::Database& db, unsigned level, std::uint64_t idx, const Hash& h) {
  auto s = db.prepare("INSERT OR REPLACE INTO audit_node(level, idx, hash) VALUES (?1, ?2, ?3)");
  REQUIRE(s);
  s->bind(1, static_cast<std::int64_t>(level)).bind(2, static_cast<std::int64_t>(idx)).bind_blob(3, h.data(), h.size());
  REQUIRE(s->run());
}

// What a careful attacker does after replacing record `seq`: store its new leaf hash and
// recompute every stored node above it.
void rewrite_tree_above(gw::sqlite::Database& db, std::uint64_t seq, const std::string& bytes) {
  set_node(db, 0, seq, gw::audit::merkle::leaf_hash(bytes));
  for (unsigned level = 1; level < 64; ++level) {
    const std::uint64_t idx = seq >> level;
    if (!node(db, level, idx)) break;
    auto left = node(db, level - 1, 2 * idx);
    auto right = node(db, level - 1, 2 * idx + 1);
    REQUIRE(left);
    REQUIRE(right);
    set_node(db, level, idx, gw::audit::merkle::node_hash(*left, *right));
  }
}

struct Run {
  int status = -1;
  std::string out;
};

Run audit_verify(const std::string& args) {
  Run r;
  const std::string cmd = std::string(AUDIT_VERIFY_BIN) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::array<char, 4096> buf{};
  std::size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

const Built& shared_log() {
  static const Built b = build("verify-shared");
  return b;
}

}  // namespace

TEST_CASE("audit verify: a clean 200-record log with signed checkpoints verifies") {
  const Built& b = shared_log();
  VerifyReport r = verify(b.db, options_for(b));
  INFO(describe(r));
  CHECK(r.ok);
  CHECK(r.records == kRecords);
  CHECK(r.tree_size == kRecords);
  CHECK(r.covered == kRecords);
  REQUIRE(r.covering);
  CHECK(r.covering->size == kRecords);
  CHECK(r.checkpoints == 2);  // the same two notes in audit.db and in the file
  CHECK(r.checkpoints_verified == 2);
  CHECK(r.signatures_checked);
  CHECK_FALSE(r.first_bad_index);
  CHECK(r.problems.empty());
  CHECK(r.warnings.empty());

  // The in-memory path agrees.
  auto log = gw::audit::read_stored_log(b.db);
  REQUIRE(log);
  CHECK(log->rows.size() == kRecords);
  VerifyReport m = gw::audit::verify_log(*log, options_for(b));
  CHECK(m.ok);
  CHECK(m.covered == kRecords);

  // Without a key the roots are still checked, and the missing signature check is said.
  VerifyOptions unsigned_opts = options_for(b);
  unsigned_opts.key = nullptr;
  VerifyReport u = verify(b.db, unsigned_opts);
  CHECK(u.ok);
  CHECK_FALSE(u.signatures_checked);
  REQUIRE(u.warnings.size() == 1);
  CHECK(u.warnings[0].kind == "signatures-unchecked");
}

TEST_CASE("audit verify: every single-byte flip of every record is caught at that record") {
  const Built& b = shared_log();
  auto log = gw::audit::read_stored_log(b.db);
  REQUIRE(log);
  REQUIRE(log->rows.size() == kRecords);
  VerifyOptions o = options_for(b);
  o.stop_at_first_bad = true;

  std::vector<Checkpoint> table;
  for (const auto& n : log->checkpoint_notes) {
    auto c = gw::audit::parse_checkpoint(n);
    REQUIRE(c);
    table.push_back(*c);
  }
  const auto* nodes = &log->nodes;
  gw::audit::StoredNodes source = [nodes](unsigned level, std::uint64_t index) -> std::optional<Hash> {
    auto it = nodes->find({level, index});
    if (it == nodes->end()) return std::nullopt;
    return it->second;
  };
  std::vector<gw::audit::RowCheck> checks;
  for (const auto& row : log->rows) checks.push_back(gw::audit::check_row(row));
  auto leaf = [&](std::size_t j) { return std::optional<Hash>(log->nodes.at({0u, j})); };

  // check_row() looks at one row alone, so the verifier state after the intact rows 0..j-1 is
  // the same for every mutation of row j: build it once per j.
  std::vector<gw::audit::LogVerifier> before;
  gw::audit::LogVerifier v(o, table, source);
  for (std::size_t j = 0; j < log->rows.size(); ++j) {
    before.push_back(v);
    v.add(j, &log->rows[j], &checks[j], leaf(j));
  }
  CHECK(v.finish().ok);

  std::uint64_t flips = 0, caught = 0, bytes_total = 0, compared = 0, agreed = 0;
  std::string first_miss;
  auto try_flip = [&](std::size_t j, std::size_t pos, std::uint8_t mask) {
    gw::audit::StoredRow row = log->rows[j];
    (*row.record)[pos] = static_cast<char>(static_cast<std::uint8_t>((*row.record)[pos]) ^ mask);
    const gw::audit::RowCheck check = gw::audit::check_row(row);
    if (pos % 16 == 0) {  // check_row's fast reader agrees with decode() on what is a record
      auto decoded = gw::audit::decode(*row.record);
      ++compared;
      if (decoded.ok() == check.decoded && (!decoded || decoded->seq == check.seq)) ++agreed;
    }
    gw::audit::LogVerifier w = before[j];
    w.add(j, &row, &check, leaf(j));
    if (!w.settled() && j + 1 < log->rows.size()) w.add(j + 1, &log->rows[j + 1], &checks[j + 1], leaf(j + 1));
    const VerifyReport r = w.finish();
    ++flips;
    if (!r.ok && r.first_bad_index == j) ++caught;
    else if (first_miss.empty())
      first_miss = "record " + std::to_string(j) + " byte " + std::to_string(pos) + ": " + describe(r);
  };
  for (std::size_t j = 0; j < log->rows.size(); ++j) {
    const std::size_t size = log->rows[j].record->size();
    bytes_total += size;
    for (std::size_t pos = 0; pos < size; ++pos) try_flip(j, pos, 0x01);
    for (std::size_t pos = j % 7; pos < size; pos += 7) try_flip(j, pos, 0x80);
  }
  INFO(first_miss);
  CHECK(bytes_total > 300 * kRecords);  // realistic records, hundreds of bytes each
  CHECK(flips > bytes_total);
  CHECK(caught == flips);
  CHECK(compared > 0);
  CHECK(agreed == compared);

  // The same without any shortcut, for a sample of flips: full verification of the whole log.
  o.stop_at_first_bad = false;
  std::uint64_t sampled = 0, sampled_caught = 0;
  for (std::size_t j = 0; j < log->rows.size(); j += 3) {
    gw::audit::StoredLog copy = *log;
    std::string& bytes = *copy.rows[j].record;
    const std::size_t pos = (j * 37) % bytes.size();
    bytes[pos] = static_cast<char>(bytes[pos] ^ (j % 2 ? 0x01 : 0x80));
    const VerifyReport r = gw::audit::verify_log(copy, o);
    ++sampled;
    if (!r.ok && r.first_bad_index == j && has_problem(r, "changed", j)) ++sampled_caught;
    else if (first_miss.empty()) first_miss = "full run, record " + std::to_string(j) + ": " + describe(r);
  }
  INFO(first_miss);
  CHECK(sampled_caught == sampled);
}

TEST_CASE("audit verify: check_row reads exactly the records decode() accepts") {
  std::vector<std::string> inputs;
  Record plain = sample(4);
  plain.seq = 4;
  plain.prev = std::string(64, 'a');
  inputs.push_back(gw::audit::encode(plain));
  for (const std::string text : {"caf\xc3\xa9 \xe2\x80\x94 note", "say \"hi\"", "back\\slash", "tab\there",
                                 "line\nbreak", "del\x7f", "ctl\x01", "/slash/"}) {
    Record r = plain;
    r.detail.note = text;
    r.target = text;
    inputs.push_back(gw::audit::encode(r));
  }
  for (std::int64_t t : {std::int64_t{0}, std::int64_t{-1}, INT64_MAX, INT64_MIN}) {
    Record r = plain;
    r.time_ms = t;
    inputs.push_back(gw::audit::encode(r));
  }
  Record empty;
  inputs.push_back(gw::audit::encode(empty));
  Record named = plain;  // version 2's member, and a version 1 record without it
  named.role_name = "clinician";
  inputs.push_back(gw::audit::encode(named));
  Record v1 = plain;
  v1.version = 1;
  inputs.push_back(gw::audit::encode(v1));
  const std::string base = inputs.front();
  auto with = [&base](const std::string& from, const std::string& to) {
    std::string s = base;
    const auto at = s.find(from);
    REQUIRE(at != std::string::npos);
    s.replace(at, from.size(), to);
    return s;
  };
  // Not canonical: decode() rejects all of these, and so must check_row.
  inputs.push_back(with("\"seq\":4", "\"seq\":04"));
  inputs.push_back(with("\"seq\":4", "\"seq\":-0"));
  inputs.push_back(with("\"seq\":4", "\"seq\":-4"));
  inputs.push_back(with("\"seq\":4", "\"seq\":4.0"));
  inputs.push_back(with("\"seq\":4", "\"seq\": 4"));
  inputs.push_back(with("\"v\":2", "\"v\":3"));
  inputs.push_back(with("\"v\":2", "\"v\":1"));  // a version 1 record holding roleName
  inputs.push_back(with("\"v\":2", "\"v\":0"));
  inputs.push_back(with("\"status\":200", "\"status\":1000"));
  inputs.push_back(with("\"status\":200", "\"status\":\"200\""));
  inputs.push_back(with("\"kind\":\"rest\"", "\"kind\":\"r\\u0065st\""));
  inputs.push_back(with("\"time\":", "\"time\":99999999999999999999"));
  inputs.push_back(with("\"patients\":[", "\"patients\":[1,"));
  inputs.push_back(base + " ");
  inputs.push_back(base.substr(0, base.size() - 1));
  for (const auto& bytes : inputs) {
    CAPTURE(bytes);
    gw::audit::StoredRow row;
    row.record = bytes;
    const gw::audit::RowCheck check = gw::audit::check_row(row);
    auto decoded = gw::audit::decode(bytes);
    REQUIRE(decoded.ok() == check.decoded);
    if (!decoded) continue;
    CHECK(decoded->seq == check.seq);
    CHECK(gw::audit::encode(*decoded) == bytes);
  }
}

TEST_CASE("audit verify: byte flips written into audit.db with SQL are caught at their record") {
  const Built& b = shared_log();
  for (std::uint64_t seq : {0u, 1u, 57u, 128u, 199u}) {
    CAPTURE(seq);
    const std::string db_path = copy_db(b, "flip-" + std::to_string(seq));
    {
      auto db = open_rw(db_path);
      std::string bytes = record_bytes(db, seq);
      const std::size_t pos = (seq * 13 + 5) % bytes.size();
      bytes[pos] = static_cast<char>(bytes[pos] ^ 0x01);
      set_record(db, seq, bytes);
    }
    VerifyReport r = verify(db_path, options_for(b));
    INFO(describe(r));
    CHECK_FALSE(r.ok);
    CHECK(r.first_bad_index == seq);
    CHECK(has_problem(r, "changed", seq));
  }
}

TEST_CASE("audit verify: deleted, swapped and inserted records are caught where they happened") {
  const Built& b = shared_log();

  SUBCASE("a deleted record (its row removed, the tree left alone)") {
    const std::string path = copy_db(b, "deleted");
    {
      auto db = open_rw(path);
      exec(db, "DELETE FROM audit_patient WHERE seq = 57; DELETE FROM audit_record WHERE seq = 57;");
    }
    VerifyReport r = verify(path, options_for(b));
    INFO(describe(r));
    CHECK_FALSE(r.ok);
    CHECK(r.first_bad_index == 57u);
    CHECK(has_problem(r, "missing", 57u));
    CHECK(r.records == kRecords - 1);
  }
  SUBCASE("a deleted record with the later records renumbered to close the gap") {
    const std::string path = copy_db(b, "deleted-renumbered");
    {
      auto db = open_rw(path);
      exec(db,
           "DELETE FROM audit_patient WHERE seq = 57; DELETE FROM audit_record WHERE seq = 57;"
           "UPDATE audit_patient SET seq = -(seq - 1) WHERE seq > 57; UPDATE audit_patient SET seq = -seq WHERE seq < 0;"
           "UPDATE audit_record SET seq = -(seq - 1) WHERE seq > 57; UPDATE audit_record SET seq = -seq WHERE seq < 0;");
    }
    VerifyReport r = verify(path, options_for(b));
    INFO(describe(r));
    CHECK(r.first_bad_index == 57u);
    CHECK(has_problem(r, "missing", 57u));
  }
  SUBCASE("two records swapped") {
    const std::string path = copy_db(b, "swapped");
    {
      auto db = open_rw(path);
      exec(db,
           "UPDATE audit_patient SET seq = -1 WHERE seq = 57; UPDATE audit_patient SET seq = 57 WHERE seq = 58;"
           "UPDATE audit_patient SET seq = 58 WHERE seq = -1;"
           "UPDATE audit_record SET seq = -1 WHERE seq = 57; UPDATE audit_record SET seq = 57 WHERE seq = 58;"
           "UPDATE audit_record SET seq = 58 WHERE seq = -1;");
    }
    VerifyReport r = verify(path, options_for(b));
    INFO(describe(r));
    CHECK(r.first_bad_index == 57u);
    CHECK(has_problem(r, "reordered", 57u));
    CHECK(has_problem(r, "reordered", 58u));
  }
  SUBCASE("an inserted record, the later ones moved up, the tree's leaf hashes moved with them") {
    const std::string path = copy_db(b, "inserted");
    {
      auto db = open_rw(path);
      exec(db,
           "UPDATE audit_patient SET seq = -(seq + 1) WHERE seq >= 57; UPDATE audit_patient SET seq = -seq WHERE seq < 0;"
           "UPDATE audit_record SET seq = -(seq + 1) WHERE seq >= 57; UPDATE audit_record SET seq = -seq WHERE seq < 0;"
           "UPDATE audit_node SET idx = -(idx + 1) WHERE level = 0 AND idx >= 57;"
           "UPDATE audit_node SET idx = -idx WHERE level = 0 AND idx < 0;");
      // A well-formed record that claims to be number 57 and links to record 56.
      Record fake = sample(57);
      fake.user = "555000999888";
      fake.seq = 57;
      fake.prev = gw::audit::merkle::to_hex(*node(db, 0, 56));
      const std::string bytes = gw::audit::encode(fake);
      auto s = db.prepare(
          "INSERT INTO audit_record(seq, record, time_ms, agent, outcome, subtypes) VALUES (57, ?1, ?2, ?3, 0, ' read ')");
      REQUIRE(s);
      s->bind_blob(1, bytes.data(), bytes.size()).bind(2, fake.time_ms).bind(3, fake.user);
      REQUIRE(s->run());
      exec(db, "INSERT INTO audit_patient(nhs_number, seq) VALUES ('" + fake.detail.patients[0] + "', 57)");
      set_node(db, 0, 57, gw::audit::merkle::leaf_hash(bytes));
    }
    VerifyReport r = verify(path, options_for(b));
    INFO(describe(r));
    CHECK(r.first_bad_index == 57u);
    CHECK(has_problem(r, "inserted", 57u));
  }
}

TEST_CASE("audit verify: a forged record with its hashes recomputed is caught") {
  const Built& b = shared_log();

  SUBCASE("inside the log: the next record's link gives it away") {
    const std::string path = copy_db(b, "forged");
    {
      auto db = open_rw(path);
      auto rec = gw::audit::decode(record_bytes(db, 57));
      REQUIRE(rec);
      rec->user = "555000999888";  // pin the access on someone else
      const std::string bytes = gw::audit::encode(*rec);
      set_record(db, 57, bytes);
      exec(db, "UPDATE audit_record SET agent = '555000999888' WHERE seq = 57");
      rewrite_tree_above(db, 57, bytes);
    }
    VerifyReport r = verify(path, options_for(b));
    INFO(describe(r));
    CHECK_FALSE(r.ok);
    CHECK(r.first_bad_index == 57u);
    CHECK(has_problem(r, "forged", 57u));
  }
  SUBCASE("the last record: only the checkpoint gives it away, bounded by the checkpoint below") {
    const std::string path = copy_db(b, "forged-last");
    {
      auto db = open_rw(path);
      auto rec = gw::audit::decode(record_bytes(db, 199));
      REQUIRE(rec);
      rec->target += "&_count=1";
      const std::string bytes = gw::audit::encode(*rec);
      set_record(db, 199, bytes);
      rewrite_tree_above(db, 199, bytes);
    }
    VerifyReport r = verify(path, options_for(b));
    INFO(describe(r));
    CHECK_FALSE(r.ok);
    CHECK(r.first_bad_index == 100u);  // the checkpoint at 100 still verifies
    CHECK(has_problem(r, "forged", 100u));
    CHECK(r.covered == 100);
  }
}

TEST_CASE("audit verify: edits to the search columns that would hide an access are caught") {
  const Built& b = shared_log();
  SUBCASE("agent column") {
    const std::string path = copy_db(b, "agent");
    {
      auto db = open_rw(path);
      exec(db, "UPDATE audit_record SET agent = 'someone-else' WHERE seq = 42");
    }
    VerifyReport r = verify(path, options_for(b));
    INFO(describe(r));
    CHECK_FALSE(r.ok);
    CHECK(r.first_bad_index == 42u);
    CHECK(has_problem(r, "column-mismatch", 42u));
  }
  SUBCASE("a patient index row removed") {
    const std::string path = copy_db(b, "patient");
    {
      auto db = open_rw(path);
      exec(db, "DELETE FROM audit_patient WHERE seq = 60");
    }
    VerifyReport r = verify(path, options_for(b));
    INFO(describe(r));
    CHECK(r.first_bad_index == 60u);
    CHECK(has_problem(r, "column-mismatch", 60u));
  }
  SUBCASE("time, outcome and subtype columns") {
    const std::string path = copy_db(b, "columns");
    {
      auto db = open_rw(path);
      exec(db,
           "UPDATE audit_record SET subtypes = ' search-type ' WHERE seq = 88;"
           "UPDATE audit_record SET outcome = 0 WHERE seq = 90; UPDATE audit_record SET time_ms = 0 WHERE seq = 150;");
    }
    VerifyReport r = verify(path, options_for(b));
    INFO(describe(r));
    CHECK(r.first_bad_index == 88u);  // record 88 was a break-glass access: hidden from that search
    CHECK(has_problem(r, "column-mismatch", 88u));
    CHECK(has_problem(r, "column-mismatch", 90u));
    CHECK(has_problem(r, "column-mismatch", 150u));
  }
  SUBCASE("a patient index row moved to another epoch, where no search by patient looks") {
    // The view audit_patient shows (nhs_number, seq) only; a search probes each row's own epoch.
    const std::string path = copy_db(b, "patient-epoch");
    {
      auto db = open_rw(path);
      exec(db, "UPDATE audit_patient_index SET epoch = 9999 WHERE seq = 62");  // a read of 9000000025
      REQUIRE(db.changes() == 1);
    }
    VerifyReport r = verify(path, options_for(b));
    INFO(describe(r));
    CHECK_FALSE(r.ok);
    CHECK(r.first_bad_index == 62u);
    CHECK(has_problem(r, "column-mismatch", 62u));
    auto log = gw::audit::read_stored_log(path);
    REQUIRE(log);
    VerifyReport m = gw::audit::verify_log(*log, options_for(b));
    CHECK(m.first_bad_index == 62u);
    CHECK(has_problem(m, "column-mismatch", 62u));

    // What the edit does: the patient's search (and so their access report) no longer shows it.
    Built copy = b;
    copy.db = path;
    copy.checkpoints = (b.dir / "patient-epoch-checkpoints.log").string();
    fs::copy_file(b.checkpoints, copy.checkpoints, fs::copy_options::overwrite_existing);
    auto opened = open_log(copy);
    gw::audit::Query q;
    q.patient = "9000000025";
    q.count = 1000;
    auto page = opened->search(q);
    REQUIRE(page);
    std::vector<std::uint64_t> seqs;
    for (const auto& rec : page->records) seqs.push_back(rec.seq);
    CHECK(std::find(seqs.begin(), seqs.end(), 56u) != seqs.end());  // another read of the same patient
    CHECK(std::find(seqs.begin(), seqs.end(), 62u) == seqs.end());
    opened->stop();
  }
  SUBCASE("a patient index row pointing at a record that does not name the patient") {
    const std::string path = copy_db(b, "patient-extra");
    {
      auto db = open_rw(path);
      exec(db, "INSERT INTO audit_patient(nhs_number, seq) VALUES ('9000000076', 33)");
    }
    VerifyReport r = verify(path, options_for(b));
    CHECK(r.first_bad_index == 33u);
  }
}

// What an IG officer's request leaves in the log (gateway/http/audit_routes.cpp).
Record ig_record(std::int64_t minute, const std::string& method, const std::string& target, const std::string& route,
                 const std::string& note) {
  Record r;
  r.time_ms = kBaseTimeMs + minute * 60'000;
  r.kind = "rest";
  r.action = method == "POST" ? "create" : method == "PUT" ? "update" : "delete";
  r.method = method;
  r.target = target;
  r.route = route;
  r.status = 200;
  r.agent_kind = "user";
  r.user = "ig-officer-1";
  r.role = "ig-officer";
  r.detail.note = note;
  return r;
}

// A log whose break-glass accesses raised alerts 1 to 3 (sample(3), sample(20) and sample(37)),
// of which an IG officer reviewed alert 1 as the gateway does: the review with its own record
// (record 40). Then the officer flagged 9000000041 (record 41), and flagged and unflagged
// 9000000068 (records 42 and 43).
const Built& alert_log() {
  static const Built b = [] {
    Built built = build("verify-alerts", 40);
    auto log = open_log(built);
    auto alerts = log->alerts("", 100);
    REQUIRE(alerts);
    REQUIRE(alerts->size() == 3);
    REQUIRE(log->append_sync(ig_record(50, "POST", "/audit/alerts/1/review", "/audit/alerts/{id}/review",
                                       "alert 1 reviewed: inappropriate - no care relationship"),
                             Log::review_alert(1, "ig-officer-1", "inappropriate", "no care relationship")));
    const std::string flag_route = "/audit/flagged-patients/{nhs}";
    Record flag = ig_record(51, "PUT", "/audit/flagged-patients/9000000041", flag_route,
                            "record flagged for access alerts: staff member");
    flag.detail.patients = {"9000000041"};
    REQUIRE(log->append_sync(flag, Log::flag_patient("9000000041", "staff member", "ig-officer-1")));
    flag = ig_record(52, "PUT", "/audit/flagged-patients/9000000068", flag_route,
                     "record flagged for access alerts: public figure");
    flag.detail.patients = {"9000000068"};
    REQUIRE(log->append_sync(flag, Log::flag_patient("9000000068", "public figure", "ig-officer-1")));
    flag = ig_record(53, "DELETE", "/audit/flagged-patients/9000000068", flag_route,
                     "record unflagged: accesses to it no longer raise flagged-record alerts");
    flag.detail.patients = {"9000000068"};
    REQUIRE(log->append_sync(flag, Log::unflag_patient("9000000068")));
    REQUIRE(log->checkpoint_now());
    log->stop();
    return built;
  }();
  return b;
}

// A copy of `b`'s audit.db with one row changed by `sql` (exactly one: the edit must land).
std::string edited_copy(const Built& b, const std::string& name, const std::string& sql) {
  const std::string path = copy_db(b, name);
  auto db = open_rw(path);
  exec(db, sql);
  REQUIRE(db.changes() == 1);
  return path;
}

// Whether `r` reports a problem of `kind` whose text holds `text`.
bool reports(const VerifyReport& r, const std::string& kind, const std::string& text) {
  for (const auto& p : r.problems)
    if (p.kind == kind && p.text.find(text) != std::string::npos) return true;
  return false;
}

TEST_CASE("audit verify: edits to the alert review queue are caught") {
  const Built& b = alert_log();
  {
    VerifyReport r = verify(b.db, options_for(b));
    INFO(describe(r));
    REQUIRE(r.ok);
  }
  auto tampered = [&b](const std::string& name, const std::string& sql) { return edited_copy(b, name, sql); };
  auto said = [](const VerifyReport& r, const std::string& text) { return reports(r, "alert-mismatch", text); };
  SUBCASE("a review's outcome changed after the fact") {
    const std::string path = tampered(
        "alert-outcome", "UPDATE audit_alert SET review_outcome = 'appropriate', review_note = '' WHERE id = 1");
    VerifyReport r = verify(path, options_for(b));
    INFO(describe(r));
    CHECK_FALSE(r.ok);
    CHECK(r.first_bad_index == 40u);  // the review's own record
    CHECK(has_problem(r, "alert-mismatch", 40u));
    CHECK(said(r, "alert 1's review was changed after it was made: the review queue says \"ig-officer-1\" decided "
                  "\"appropriate\", but record 40, the review itself, says \"ig-officer-1\" decided "
                  "\"inappropriate - no care relationship\""));
    auto log = gw::audit::read_stored_log(path);
    REQUIRE(log);
    VerifyReport m = gw::audit::verify_log(*log, options_for(b));
    CHECK(has_problem(m, "alert-mismatch", 40u));
  }
  SUBCASE("a review undone: the alert open again") {
    const std::string path = tampered(
        "alert-reopened",
        "UPDATE audit_alert SET status = 'open', reviewer = '', review_outcome = '', review_note = '' WHERE id = 1");
    VerifyReport r = verify(path, options_for(b));
    INFO(describe(r));
    CHECK_FALSE(r.ok);
    CHECK(has_problem(r, "alert-mismatch", 40u));
    CHECK(said(r, "the review was undone in audit.db"));
  }
  SUBCASE("an alert closed without a review") {
    const std::string path = tampered(
        "alert-closed", "UPDATE audit_alert SET status = 'reviewed', reviewer = 'ig-officer-1', "
                        "review_outcome = 'appropriate' WHERE id = 2");
    VerifyReport r = verify(path, options_for(b));
    INFO(describe(r));
    CHECK_FALSE(r.ok);
    CHECK(has_problem(r, "alert-mismatch", std::nullopt));
    CHECK(said(r, "alert 2 is marked reviewed by \"ig-officer-1\" (\"appropriate\"), but no audit record of that "
                  "review exists"));
  }
  SUBCASE("an open alert deleted from the queue") {
    const std::string path = tampered("alert-deleted", "DELETE FROM audit_alert WHERE id = 2");
    VerifyReport r = verify(path, options_for(b));
    INFO(describe(r));
    CHECK_FALSE(r.ok);
    CHECK(said(r, "alert 2 is missing from the review queue"));
  }
  SUBCASE("a reviewed alert deleted from the queue") {
    const std::string path = tampered("alert-reviewed-deleted", "DELETE FROM audit_alert WHERE id = 1");
    VerifyReport r = verify(path, options_for(b));
    INFO(describe(r));
    CHECK_FALSE(r.ok);
    CHECK(has_problem(r, "alert-mismatch", 40u));
    CHECK(said(r, "but the review queue has no alert 1"));
    CHECK(said(r, "alert 1 is missing from the review queue"));
  }
  SUBCASE("the tool says TAMPERED") {
    const std::string path = tampered(
        "alert-tool", "UPDATE audit_alert SET review_outcome = 'no-further-action' WHERE id = 1");
    const std::string key = (b.dir / "audit-key.pub.pem").string();
    std::ofstream(key) << b.key.public_pem;
    Run tool = audit_verify("--db " + path + " --checkpoints " + b.checkpoints + " --key " + key);
    INFO(tool.out);
    CHECK(tool.status == 1);
    CHECK(tool.out.find("TAMPERED: first bad record 40: alert 1's review was changed after it was made") !=
          std::string::npos);
  }
}

// The alert queue by id (Log::alerts lists it newest first).
std::map<std::int64_t, gw::audit::Alert> alerts_by_id(const Log& log) {
  auto listed = log.alerts("", 100);
  REQUIRE(listed);
  std::map<std::int64_t, gw::audit::Alert> out;
  for (auto& a : *listed) out[a.id] = a;
  return out;
}

TEST_CASE("audit verify: retention redacts the reviewed alerts of pruned records in its own commit, and nothing else") {
  // Alerts 1 to 3, raised by records 3, 20 and 37 (break-glass in sample()). An IG officer
  // reviews alerts 1 and 3 (records 40 and 41); alert 2 stays open. Retention then removes
  // records 0 to 29: alert 1's detail and note go, alert 2 (open) and alert 3 (its record kept)
  // keep theirs.
  Built b = build("verify-redact", 40);
  const std::int64_t cutoff = kBaseTimeMs + 30 * 60'000;
  {
    auto log = open_log(b);
    REQUIRE(log->append_sync(ig_record(50, "POST", "/audit/alerts/1/review", "/audit/alerts/{id}/review",
                                       "alert 1 reviewed: inappropriate - no care relationship with 9000000009"),
                             Log::review_alert(1, "ig-officer-1", "inappropriate", "no care relationship with 9000000009")));
    REQUIRE(log->append_sync(ig_record(51, "POST", "/audit/alerts/3/review", "/audit/alerts/{id}/review",
                                       "alert 3 reviewed: referred - to the caldicott guardian"),
                             Log::review_alert(3, "ig-officer-1", "referred", "to the caldicott guardian")));
    const auto before = alerts_by_id(*log);
    REQUIRE(before.size() == 3);
    REQUIRE(before.at(1).detail == "break-glass access, reason EMERG");

    // The commit fails where a crash could strike: neither the content nor an alert changes.
    log->inject_write_failure(true);
    CHECK_FALSE(log->prune_before(cutoff, "retention-job"));
    log->inject_write_failure(false);
    auto kept = log->get(3);
    REQUIRE(kept);
    CHECK(kept->has_value());
    auto unchanged = alerts_by_id(*log);
    CHECK(unchanged.at(1).detail == before.at(1).detail);
    CHECK(unchanged.at(1).review_note == "no care relationship with 9000000009");

    auto pruned = log->prune_before(cutoff, "retention-job");
    REQUIRE(pruned);
    CHECK(*pruned == 30);
    gw::audit::Query q;
    q.subtype = "retention-prune";
    auto prunes = log->search(q);
    REQUIRE(prunes);
    REQUIRE(prunes->records.size() == 1);
    const Record& prune = prunes->records[0];
    CHECK(prune.detail.note.find("; the detail and review note of 1 alert raised by pruned records and reviewed were "
                                 "removed (1 alert still open keeps its detail until reviewed)") != std::string::npos);
    const std::string placeholder = gw::audit::retention_redaction(prune.time_ms);
    auto after = alerts_by_id(*log);
    REQUIRE(after.size() == 3);
    // Alert 1: what it was about is gone, the rest of the row stays.
    CHECK(after.at(1).detail == placeholder);
    CHECK(after.at(1).review_note == placeholder);
    CHECK(after.at(1).seq == 3u);
    CHECK(after.at(1).rule == before.at(1).rule);
    CHECK(after.at(1).status == "reviewed");
    CHECK(after.at(1).reviewer == "ig-officer-1");
    CHECK(after.at(1).review_outcome == "inappropriate");
    CHECK(after.at(1).raised_ms == before.at(1).raised_ms);
    CHECK(after.at(1).reviewed_ms == before.at(1).reviewed_ms);
    // Alert 2: open, its record pruned: kept for the IG officer to review.
    CHECK(after.at(2).status == "open");
    CHECK(after.at(2).detail == before.at(2).detail);
    // Alert 3: reviewed, its record kept.
    CHECK(after.at(3).detail == before.at(3).detail);
    CHECK(after.at(3).review_note == "to the caldicott guardian");

    // Alert 2 reviewed since: the next prune removes its detail, and leaves alert 1's as it was.
    REQUIRE(log->append_sync(ig_record(52, "POST", "/audit/alerts/2/review", "/audit/alerts/{id}/review",
                                       "alert 2 reviewed: appropriate"),
                             Log::review_alert(2, "ig-officer-1", "appropriate", "")));
    auto more = log->prune_before(cutoff + 60'000, "retention-job");
    REQUIRE(more);
    CHECK(*more == 1);
    auto later = alerts_by_id(*log);
    CHECK(gw::audit::is_retention_redaction(later.at(2).detail));
    CHECK(later.at(1).detail == placeholder);
    CHECK(later.at(3).detail == before.at(3).detail);
    REQUIRE(log->checkpoint_now());
    log->stop();
  }
  {
    VerifyReport r = verify(b.db, options_for(b));
    INFO(describe(r));
    CHECK(r.ok);
    CHECK(r.pruned == 31);
  }
  const std::string fake = gw::audit::retention_redaction(kBaseTimeMs + 90 * 60'000);
  auto said = [](const VerifyReport& r, const std::string& text) { return reports(r, "alert-mismatch", text); };
  SUBCASE("the placeholder written by hand over an alert whose record was not pruned") {
    const std::string path = edited_copy(
        b, "redact-unpruned", "UPDATE audit_alert SET detail = '" + fake + "', review_note = '" + fake + "' WHERE id = 3");
    VerifyReport r = verify(path, options_for(b));
    INFO(describe(r));
    CHECK_FALSE(r.ok);
    CHECK(said(r, "alert 3's detail says \"" + fake + "\", but record 37, which raised it, was not pruned"));
  }
  SUBCASE("the detail alone replaced by hand, the review note left") {
    const std::string path =
        edited_copy(b, "redact-detail", "UPDATE audit_alert SET detail = '" + fake + "' WHERE id = 3");
    VerifyReport r = verify(path, options_for(b));
    INFO(describe(r));
    CHECK_FALSE(r.ok);
    CHECK(said(r, "alert 3's detail says"));
  }
  SUBCASE("a redacted alert's review changed after the fact") {
    const std::string path =
        edited_copy(b, "redact-outcome", "UPDATE audit_alert SET review_outcome = 'appropriate' WHERE id = 1");
    VerifyReport r = verify(path, options_for(b));
    INFO(describe(r));
    CHECK_FALSE(r.ok);
    CHECK(has_problem(r, "alert-mismatch", 40u));
    CHECK(said(r, "alert 1's review was changed after it was made"));
  }
  SUBCASE("a redacted alert reopened") {
    const std::string path = edited_copy(b, "redact-reopened", "UPDATE audit_alert SET status = 'open' WHERE id = 2");
    VerifyReport r = verify(path, options_for(b));
    INFO(describe(r));
    CHECK_FALSE(r.ok);
    CHECK(said(r, "retention keeps an open alert's detail"));
  }
  SUBCASE("a redacted alert's review note rewritten (its review record, which retention kept, holds no note to compare)") {
    const std::string path =
        edited_copy(b, "redact-note", "UPDATE audit_alert SET review_note = 'nothing to see' WHERE id = 1");
    VerifyReport r = verify(path, options_for(b));
    INFO(describe(r));
    CHECK_FALSE(r.ok);
    CHECK(said(r, "retention replaces the detail and the review note together"));
  }
}

TEST_CASE("audit verify: edits to the flagged records that would silence their alerts are caught") {
  const Built& b = alert_log();
  auto tampered = [&b](const std::string& name, const std::string& sql) { return edited_copy(b, name, sql); };
  auto said = [](const VerifyReport& r, const std::string& text) { return reports(r, "flag-mismatch", text); };
  SUBCASE("a flag deleted") {
    const std::string path = tampered("flag-deleted", "DELETE FROM audit_flagged_patient WHERE nhs_number = '9000000041'");
    VerifyReport r = verify(path, options_for(b));
    INFO(describe(r));
    CHECK_FALSE(r.ok);
    CHECK(r.first_bad_index == 41u);
    CHECK(said(r, "record 41 says \"ig-officer-1\" flagged NHS number 9000000041 for access alerts, and no later record "
                  "unflagged it, but audit_flagged_patient no longer holds it"));
    auto log = gw::audit::read_stored_log(path);
    REQUIRE(log);
    VerifyReport m = gw::audit::verify_log(*log, options_for(b));
    CHECK(has_problem(m, "flag-mismatch", 41u));
  }
  SUBCASE("a flag's reason edited") {
    const std::string path = tampered(
        "flag-reason", "UPDATE audit_flagged_patient SET reason = 'test' WHERE nhs_number = '9000000041'");
    VerifyReport r = verify(path, options_for(b));
    INFO(describe(r));
    CHECK(has_problem(r, "flag-mismatch", 41u));
  }
  SUBCASE("an unflagged record flagged again without a record, and one flagged out of nowhere") {
    const std::string path = copy_db(b, "flag-added");
    {
      auto db = open_rw(path);
      exec(db,
           "INSERT INTO audit_flagged_patient(nhs_number, reason, flagged_by, flagged_ms) VALUES "
           "('9000000068', 'public figure', 'ig-officer-1', 0), ('9000000009', 'decoy', 'nobody', 0)");
    }
    VerifyReport r = verify(path, options_for(b));
    INFO(describe(r));
    CHECK_FALSE(r.ok);
    CHECK(has_problem(r, "flag-mismatch", 43u));
    CHECK(said(r, "audit_flagged_patient flags NHS number 9000000009 (by \"nobody\"), but no audit record says anyone "
                  "flagged it"));
  }
}

std::int64_t indexed_below(const std::string& db_path) {
  auto db = gw::sqlite::Database::open(db_path, gw::sqlite::Database::Mode::read_only);
  REQUIRE(db);
  auto s = db->prepare("SELECT value FROM audit_index_state WHERE key = 'indexed_below'");
  REQUIRE(s);
  auto row = s->step();
  REQUIRE(row);
  REQUIRE(*row);
  return s->column_int64(0);
}

TEST_CASE("audit verify: edits to the agent and time indexes that would hide an access are caught") {
  const Built& b = shared_log();
  // The indexes hold the records below indexed_below; the searches read the rest from
  // audit_record. The shared log has both kinds.
  const std::int64_t below = indexed_below(b.db);
  REQUIRE(below > 100);
  REQUIRE(below < kRecords);
  const auto first_unindexed = static_cast<std::uint64_t>(below);

  SUBCASE("indexed_below moved beyond the log: later records would be left out of agent and date searches") {
    const std::string path = copy_db(b, "index-state-up");
    {
      auto db = open_rw(path);
      exec(db, "UPDATE audit_index_state SET value = 1000000 WHERE key = 'indexed_below'");
    }
    VerifyReport r = verify(path, options_for(b));
    INFO(describe(r));
    CHECK_FALSE(r.ok);
    CHECK(r.first_bad_index == first_unindexed);  // the first record the indexes were said to hold
    CHECK(has_problem(r, "column-mismatch", first_unindexed));
    // The cause comes first: indexed_below moved beyond the end of the log.
    REQUIRE_FALSE(r.problems.empty());
    CHECK(r.problems[0].index == first_unindexed);
    CHECK(r.problems[0].text == "indexed_below in audit_index_state is 1000000, beyond the end of the log (200 "
                                "records): it was moved forward, so the agent and date searches and the export look "
                                "for records " + std::to_string(below) + " to 199 in the indexes, which do not hold "
                                "them, and miss them");

    const std::string key = (b.dir / "audit-key.pub.pem").string();
    std::ofstream(key) << b.key.public_pem;
    Run tool = audit_verify("--db " + path + " --checkpoints " + b.checkpoints + " --key " + key);
    INFO(tool.out);
    CHECK(tool.status == 1);
    CHECK(tool.out.find("TAMPERED: first bad record " + std::to_string(below)) != std::string::npos);
  }
  SUBCASE("indexed_below moved back") {
    const std::string path = copy_db(b, "index-state-down");
    {
      auto db = open_rw(path);
      exec(db, "UPDATE audit_index_state SET value = 50 WHERE key = 'indexed_below'");
    }
    VerifyReport r = verify(path, options_for(b));
    INFO(describe(r));
    CHECK(r.first_bad_index == 50u);
    CHECK(has_problem(r, "column-mismatch", 50u));
  }
  SUBCASE("the indexed_below row deleted") {
    const std::string path = copy_db(b, "index-state-gone");
    {
      auto db = open_rw(path);
      exec(db, "DELETE FROM audit_index_state");
    }
    VerifyReport r = verify(path, options_for(b));
    INFO(describe(r));
    CHECK_FALSE(r.ok);
    CHECK(has_problem(r, "column-mismatch", std::nullopt));
    // What the gateway does about it now: it starts and rebuilds the indexes.
    bool said = false;
    for (const auto& p : r.problems)
      said |= p.text.find("the row was deleted (the gateway's next start rebuilds both indexes from the records") !=
              std::string::npos;
    CHECK(said);
  }
  SUBCASE("one user's rows deleted from the agent and time indexes") {
    const std::string path = copy_db(b, "index-user");
    {
      auto db = open_rw(path);
      exec(db,
           "DELETE FROM audit_time_index WHERE seq IN (SELECT seq FROM audit_agent_index WHERE agent = '555987654321');"
           "DELETE FROM audit_agent_index WHERE agent = '555987654321';");
    }
    VerifyReport r = verify(path, options_for(b));
    INFO(describe(r));
    CHECK_FALSE(r.ok);
    CHECK(r.first_bad_index == 1u);  // sample(1) is that user's first access
    CHECK(has_problem(r, "column-mismatch", 1u));
    // The in-memory path agrees.
    auto log = gw::audit::read_stored_log(path);
    REQUIRE(log);
    VerifyReport m = gw::audit::verify_log(*log, options_for(b));
    CHECK(m.first_bad_index == 1u);
    CHECK(has_problem(m, "column-mismatch", 1u));
  }
  SUBCASE("an agent index row's user changed") {
    const std::string path = copy_db(b, "index-agent");
    {
      auto db = open_rw(path);
      exec(db, "UPDATE audit_agent_index SET agent = 'someone-else' WHERE seq = 42");
    }
    VerifyReport r = verify(path, options_for(b));
    INFO(describe(r));
    CHECK(r.first_bad_index == 42u);
    CHECK(has_problem(r, "column-mismatch", 42u));
  }
  SUBCASE("an agent index row moved to another epoch, where no search probes") {
    const std::string path = copy_db(b, "index-epoch");
    {
      auto db = open_rw(path);
      exec(db, "UPDATE audit_agent_index SET epoch = 9999 WHERE seq = 30");
    }
    VerifyReport r = verify(path, options_for(b));
    INFO(describe(r));
    CHECK(r.first_bad_index == 30u);
  }
  SUBCASE("a time index row's time changed") {
    const std::string path = copy_db(b, "index-time");
    {
      auto db = open_rw(path);
      exec(db, "UPDATE audit_time_index SET time_ms = 0 WHERE seq = 77");
    }
    VerifyReport r = verify(path, options_for(b));
    INFO(describe(r));
    CHECK(r.first_bad_index == 77u);
    CHECK(has_problem(r, "column-mismatch", 77u));
  }
  SUBCASE("extra index rows: a second user for a record, and a record the log does not hold") {
    const std::string path = copy_db(b, "index-extra");
    {
      auto db = open_rw(path);
      exec(db,
           "INSERT INTO audit_agent_index(epoch, agent, seq) VALUES (0, 'someone-else', 33);"
           "INSERT INTO audit_time_index(time_ms, seq) VALUES (0, 5000);");
    }
    VerifyReport r = verify(path, options_for(b));
    INFO(describe(r));
    CHECK(r.first_bad_index == 33u);
    CHECK(has_problem(r, "column-mismatch", 33u));
    CHECK(has_problem(r, "column-mismatch", 5000u));
  }
  SUBCASE("index rows for records not yet indexed") {
    const std::string path = copy_db(b, "index-early");
    {
      auto db = open_rw(path);
      exec(db, "INSERT INTO audit_time_index(time_ms, seq) SELECT time_ms, seq FROM audit_record WHERE seq = " +
                   std::to_string(below + 1));
    }
    VerifyReport r = verify(path, options_for(b));
    INFO(describe(r));
    CHECK(r.first_bad_index == first_unindexed + 1);
  }
}

TEST_CASE("audit verify: indexed_below beyond a small log is reported as such, not only as records without rows") {
  // The gateway merges its indexes in batches of 2,048: a young log has none of its records
  // indexed yet, so every one of them lacks its rows once indexed_below is moved past the end.
  static const Built b = build("verify-index-beyond", 26);
  const std::string path = copy_db(b, "index-beyond");
  {
    auto db = open_rw(path);
    exec(db,
         "DELETE FROM audit_agent_index; DELETE FROM audit_time_index;"
         "UPDATE audit_index_state SET value = 100 WHERE key = 'indexed_below'");
  }
  const std::string cause =
      "indexed_below in audit_index_state is 100, beyond the end of the log (26 records): it was moved forward, so "
      "the agent and date searches and the export look for records 0 to 25 in the indexes, which do not hold them, "
      "and miss them";
  VerifyReport r = verify(path, options_for(b));
  INFO(describe(r));
  CHECK_FALSE(r.ok);
  CHECK(r.first_bad_index == 0u);
  REQUIRE(r.problems.size() == 27);  // the cause, and each record's missing rows
  CHECK(r.problems[0].text == cause);
  // The in-memory path agrees.
  auto log = gw::audit::read_stored_log(path);
  REQUIRE(log);
  VerifyReport m = gw::audit::verify_log(*log, options_for(b));
  REQUIRE_FALSE(m.problems.empty());
  CHECK(m.problems[0].text == cause);
  // However many records lack their rows, the cause is listed (and is the headline).
  VerifyOptions few = options_for(b);
  few.max_problems = 5;
  VerifyReport f = verify(path, few);
  REQUIRE(f.problems.size() == 5);
  CHECK(f.problems[0].text == cause);

  const std::string key = (b.dir / "audit-key.pub.pem").string();
  std::ofstream(key) << b.key.public_pem;
  Run tool = audit_verify("--db " + path + " --checkpoints " + b.checkpoints + " --key " + key);
  INFO(tool.out);
  CHECK(tool.status == 1);
  CHECK(tool.out.find("TAMPERED: first bad record 0: " + cause) != std::string::npos);
}

TEST_CASE("audit verify: a truncated tail and an older copy of audit.db are caught") {
  const Built& b = shared_log();

  SUBCASE("the last 5 records and their tree nodes deleted") {
    const std::string path = copy_db(b, "truncated");
    {
      auto db = open_rw(path);
      exec(db,
           "DELETE FROM audit_patient WHERE seq >= 195; DELETE FROM audit_record WHERE seq >= 195;"
           "DELETE FROM audit_node WHERE ((idx + 1) << level) > 195;");
    }
    VerifyReport r = verify(path, options_for(b));
    INFO(describe(r));
    CHECK_FALSE(r.ok);
    CHECK(r.first_bad_index == 195u);
    CHECK(has_problem(r, "truncated", 195u));
  }
  SUBCASE("the records deleted but their leaf hashes left behind") {
    const std::string path = copy_db(b, "truncated-rows");
    {
      auto db = open_rw(path);
      exec(db, "DELETE FROM audit_patient WHERE seq >= 190; DELETE FROM audit_record WHERE seq >= 190;");
    }
    VerifyReport r = verify(path, options_for(b, false));
    INFO(describe(r));
    CHECK(r.first_bad_index == 190u);
    CHECK(has_problem(r, "truncated", 190u));
  }
  SUBCASE("the tail and audit.db's own checkpoints deleted, the alerts it raised left: the review queue shows it") {
    const std::string path = copy_db(b, "truncated-alerts");
    {
      auto db = open_rw(path);
      exec(db,
           "DELETE FROM audit_patient WHERE seq >= 150; DELETE FROM audit_record WHERE seq >= 150;"
           "DELETE FROM audit_node WHERE ((idx + 1) << level) > 150; DELETE FROM audit_checkpoint WHERE size > 150;"
           "DELETE FROM audit_agent_index WHERE seq >= 150; DELETE FROM audit_time_index WHERE seq >= 150;"
           "UPDATE audit_index_state SET value = min(value, 150) WHERE key = 'indexed_below';");
    }
    VerifyReport r = verify(path, options_for(b, false));  // no checkpoint file
    INFO(describe(r));
    CHECK_FALSE(r.ok);
    bool said = false;
    for (const auto& p : r.problems)
      said |= p.kind == "alert-mismatch" && p.text.find("was raised by record 156, which audit.db does not hold: records "
                                                         "were deleted from the end of the log") != std::string::npos;
    CHECK(said);
  }
  SUBCASE("the tail and audit.db's own checkpoints deleted: the checkpoint file shows it") {
    const std::string path = copy_db(b, "truncated-cp");
    {
      auto db = open_rw(path);
      exec(db,
           "DELETE FROM audit_patient WHERE seq >= 150; DELETE FROM audit_record WHERE seq >= 150;"
           "DELETE FROM audit_node WHERE ((idx + 1) << level) > 150; DELETE FROM audit_checkpoint WHERE size > 150;"
           // and the search indexes and the alerts those records raised tidied to match
           "DELETE FROM audit_agent_index WHERE seq >= 150; DELETE FROM audit_time_index WHERE seq >= 150;"
           "UPDATE audit_index_state SET value = min(value, 150) WHERE key = 'indexed_below';"
           "DELETE FROM audit_alert WHERE seq >= 150;");
    }
    VerifyReport r = verify(path, options_for(b));
    INFO(describe(r));
    CHECK(r.first_bad_index == 150u);
    CHECK(has_problem(r, "rolled-back", 150u));

    // Without the file nothing in audit.db contradicts it: the unsigned tail is all that shows,
    // and --strict makes that a failure.
    VerifyReport alone = verify(path, options_for(b, false));
    CHECK(alone.ok);
    CHECK(alone.covered == 100);
    REQUIRE(alone.warnings.size() == 1);
    CHECK(alone.warnings[0].kind == "uncovered-tail");
    VerifyOptions strict = options_for(b, false);
    strict.strict = true;
    VerifyReport s = verify(path, strict);
    CHECK_FALSE(s.ok);
    CHECK(s.first_bad_index == 100u);
  }
  SUBCASE("an older copy of audit.db put back") {
    Built fresh;
    fresh.dir = gw::test::temp_dir("verify-rollback");
    fresh.db = (fresh.dir / "audit.db").string();
    fresh.checkpoints = (fresh.dir / "audit-checkpoints.log").string();
    fresh.key = make_key();
    {
      auto log = open_log(fresh);
      append_and_checkpoint(*log, 0, 100);
    }
    const std::string old_copy = copy_db(fresh, "old-copy");
    {
      auto log = open_log(fresh);
      append_and_checkpoint(*log, 100, 200);
    }
    CHECK(verify(fresh.db, options_for(fresh)).ok);
    VerifyReport r = verify(old_copy, options_for(fresh));
    INFO(describe(r));
    CHECK_FALSE(r.ok);
    CHECK(r.first_bad_index == 100u);
    CHECK(has_problem(r, "rolled-back", 100u));
    CHECK(r.covered == 100);  // what it does hold is intact
  }
}

TEST_CASE("audit verify: a checkpoint file emptied or behind audit.db is reported, a failure under --strict") {
  const Built& b = shared_log();
  std::vector<Checkpoint> file = file_checkpoints(b.checkpoints);
  REQUIRE(file.size() == 2);
  auto behind = [](const VerifyReport& r) -> const gw::audit::Problem* {
    for (const auto& w : r.warnings)
      if (w.kind == "checkpoint-file-behind") return &w;
    return nullptr;
  };

  SUBCASE("an empty file") {
    VerifyOptions o = options_for(b);
    o.checkpoints.clear();
    VerifyReport r = verify(b.db, o);
    INFO(describe(r));
    CHECK(r.ok);  // the records are intact; the file is what is missing
    const auto* w = behind(r);
    REQUIRE(w);
    CHECK(w->text.find("hold no checkpoint, but audit.db holds 2, the newest the checkpoint of 200 records") !=
          std::string::npos);
    o.strict = true;
    VerifyReport s = verify(b.db, o);
    CHECK_FALSE(s.ok);
    CHECK(has_problem(s, "checkpoint-file-behind", std::nullopt));
    CHECK_FALSE(s.first_bad_index);
  }
  SUBCASE("only older checkpoints in the file") {
    VerifyOptions o = options_for(b);
    o.checkpoints = {file.front()};
    VerifyReport r = verify(b.db, o);
    INFO(describe(r));
    const auto* w = behind(r);
    REQUIRE(w);
    CHECK(w->text.find("the newest checkpoint in the checkpoint file(s) given is the checkpoint of 100 records") !=
          std::string::npos);
  }
  SUBCASE("no file given at all: the tool's note says so instead") {
    VerifyReport r = verify(b.db, options_for(b, false));
    CHECK_FALSE(behind(r));
  }
  SUBCASE("the audit-verify tool, on a database whose tail and checkpoints were deleted") {
    const std::string path = copy_db(b, "behind-tail");
    {
      auto db = open_rw(path);
      exec(db,
           "DELETE FROM audit_patient WHERE seq >= 150; DELETE FROM audit_record WHERE seq >= 150;"
           "DELETE FROM audit_node WHERE ((idx + 1) << level) > 150; DELETE FROM audit_checkpoint WHERE size > 150;"
           "DELETE FROM audit_agent_index WHERE seq >= 150; DELETE FROM audit_time_index WHERE seq >= 150;"
           "UPDATE audit_index_state SET value = min(value, 150) WHERE key = 'indexed_below';"
           "DELETE FROM audit_alert WHERE seq >= 150;");
    }
    const std::string key = (b.dir / "audit-key.pub.pem").string();
    std::ofstream(key) << b.key.public_pem;
    const std::string empty = (b.dir / "empty-checkpoints.log").string();
    std::ofstream(empty, std::ios::trunc);
    const std::string key_args = " --key " + key + " --key-name test-audit-key";
    Run run = audit_verify("--db " + path + " --checkpoints " + empty + key_args);
    INFO(run.out);
    CHECK(run.status == 0);
    CHECK(run.out.find("Warning: the checkpoint file(s) given hold no checkpoint, but audit.db holds 1, the newest "
                       "the checkpoint of 100 records") != std::string::npos);
    Run strict = audit_verify("--strict --db " + path + " --checkpoints " + empty + key_args);
    INFO(strict.out);
    CHECK(strict.status == 1);
    CHECK(strict.out.find("[checkpoint-file-behind]") != std::string::npos);
  }
}

TEST_CASE("audit verify: a checkpoint file whose last note was cut short is a warning, a failure under --strict") {
  const Built& b = shared_log();
  const std::string whole = gw::test::read_file(b.checkpoints);
  const std::vector<Checkpoint> all = file_checkpoints(b.checkpoints);
  REQUIRE(all.size() == 2);
  // A crash 30 bytes before the end of the second append.
  const std::string torn = (b.dir / "torn-checkpoints.log").string();
  std::ofstream(torn, std::ios::binary | std::ios::trunc) << whole.substr(0, whole.size() - 30);
  const std::string torn_text = gw::test::read_file(torn);
  CHECK_FALSE(gw::audit::parse_checkpoints(torn_text).ok());
  auto file = gw::audit::parse_checkpoint_file(torn_text);
  REQUIRE(file);
  REQUIRE(file->notes.size() == 1);
  CHECK(file->notes[0].size == all[0].size);
  CHECK(file->complete_bytes + file->torn_bytes == torn_text.size());
  CHECK(torn_text.substr(file->complete_bytes) == whole.substr(file->complete_bytes, file->torn_bytes));

  SUBCASE("the report") {
    VerifyOptions o = options_for(b);
    o.checkpoints = file->notes;
    o.torn_checkpoint_files = {{torn, file->torn_bytes}};
    VerifyReport r = verify(b.db, o);
    INFO(describe(r));
    CHECK(r.ok);
    bool warned = false;
    for (const auto& w : r.warnings)
      warned |= w.kind == "checkpoint-file-torn" &&
                w.text.find("the checkpoint file " + torn + " ends in an incomplete checkpoint note (" +
                            std::to_string(file->torn_bytes) + " bytes)") != std::string::npos;
    CHECK(warned);
    o.strict = true;
    VerifyReport s = verify(b.db, o);
    CHECK_FALSE(s.ok);
    CHECK(has_problem(s, "checkpoint-file-torn", std::nullopt));
  }
  SUBCASE("the audit-verify tool") {
    const std::string key = (b.dir / "audit-key.pub.pem").string();
    std::ofstream(key) << b.key.public_pem;
    const std::string key_args = " --key " + key + " --key-name test-audit-key";
    Run run = audit_verify("--db " + b.db + " --checkpoints " + torn + key_args);
    INFO(run.out);
    CHECK(run.status == 0);
    CHECK(run.out.find("Warning: the checkpoint file " + torn + " ends in an incomplete checkpoint note") !=
          std::string::npos);
    CHECK(run.out.find("Checkpoints: 2 examined, 2 verified") != std::string::npos);
    Run strict = audit_verify("--strict --db " + b.db + " --checkpoints " + torn + key_args);
    INFO(strict.out);
    CHECK(strict.status == 1);
    CHECK(strict.out.find("[checkpoint-file-torn]") != std::string::npos);
    // Damage before the last note is not a torn tail: the file is unreadable.
    const std::string damaged = (b.dir / "damaged-checkpoints.log").string();
    std::ofstream(damaged, std::ios::binary | std::ios::trunc) << whole.substr(0, 20) + whole.substr(50);
    Run bad = audit_verify("--db " + b.db + " --checkpoints " + damaged + key_args);
    INFO(bad.out);
    CHECK(bad.status == 2);
    CHECK(bad.out.find("checkpoint file " + damaged + " is not readable: checkpoint note 1: ") != std::string::npos);
  }
}

TEST_CASE("audit verify: bad checkpoint signatures and checkpoints from another key are reported") {
  const Built& b = shared_log();
  std::vector<Checkpoint> file = file_checkpoints(b.checkpoints);
  REQUIRE(file.size() == 2);

  SUBCASE("a signature altered in the checkpoint file") {
    VerifyOptions o = options_for(b);
    o.checkpoints.back().signature.back() ^= 0x01;
    VerifyReport r = verify(b.db, o);
    INFO(describe(r));
    CHECK_FALSE(r.ok);
    CHECK(has_problem(r, "bad-signature", std::nullopt));
    CHECK_FALSE(r.first_bad_index);  // the records themselves are fine
    CHECK(r.covered == kRecords);    // audit.db's own copy of the checkpoint still verifies
  }
  SUBCASE("a checkpoint signed by another key over the right root") {
    const Key other = make_key();
    VerifyOptions o = options_for(b);
    o.checkpoints.push_back(other.signer->sign(file.back().origin, file.back().size, file.back().root,
                                               file.back().time_ms + 1));
    VerifyReport r = verify(b.db, o);
    INFO(describe(r));
    CHECK_FALSE(r.ok);
    CHECK(has_problem(r, "bad-signature", std::nullopt));
  }
  SUBCASE("the wrong key given: nothing verifies") {
    const Key other = make_key();
    VerifyOptions o = options_for(b);
    o.key = other.verifier.get();
    VerifyReport r = verify(b.db, o);
    CHECK_FALSE(r.ok);
    CHECK(r.covered == 0);
    CHECK(r.checkpoints_verified == 0);
  }
  SUBCASE("a second, different checkpoint for a size audit.db matches (a fork)") {
    VerifyOptions o = options_for(b);
    Hash wrong = file.back().root;
    wrong[5] ^= 0x10;
    o.checkpoints.push_back(b.key.signer->sign(file.back().origin, file.back().size, wrong, file.back().time_ms + 9));
    VerifyReport r = verify(b.db, o);
    INFO(describe(r));
    CHECK_FALSE(r.ok);
    CHECK(has_problem(r, "bad-checkpoint", std::nullopt));
    CHECK_FALSE(r.first_bad_index);
    CHECK(r.covered == kRecords);
  }
  SUBCASE("a checkpoint with a root this log never had, properly signed") {
    VerifyOptions o = options_for(b);
    Hash wrong = file.front().root;
    wrong[0] ^= 0xff;
    o.checkpoints.push_back(b.key.signer->sign(file.front().origin, 150, wrong, file.front().time_ms + 5));
    VerifyReport r = verify(b.db, o);
    INFO(describe(r));
    CHECK_FALSE(r.ok);
    CHECK(r.first_bad_index == 100u);
    CHECK(has_problem(r, "forged", 100u));
  }
}

TEST_CASE("audit verify: retention pruning verifies; content removed any other way does not") {
  Built b = build("verify-prune", 120);
  {
    auto log = open_log(b);
    auto pruned = log->prune_before(kBaseTimeMs + 30 * 60'000, "retention-job");
    REQUIRE(pruned);
    CHECK(*pruned == 30);
  }
  VerifyReport r = verify(b.db, options_for(b));
  INFO(describe(r));
  CHECK(r.ok);
  CHECK(r.pruned == 30);
  CHECK(r.records == 121);  // plus the retention-prune record itself

  SUBCASE("a record's content removed in the middle") {
    const std::string path = copy_db(b, "hole");
    {
      auto db = open_rw(path);
      exec(db, "UPDATE audit_record SET record = NULL WHERE seq = 80; DELETE FROM audit_patient WHERE seq = 80;");
    }
    VerifyReport h = verify(path, options_for(b));
    INFO(describe(h));
    CHECK(h.first_bad_index == 80u);
    CHECK(has_problem(h, "changed", 80u));
  }
  SUBCASE("a pruned record's time index row deleted (the record left out of date searches)") {
    const std::string path = copy_db(b, "pruned-time");
    {
      auto db = open_rw(path);
      exec(db, "DELETE FROM audit_time_index WHERE seq = 12");
    }
    VerifyReport h = verify(path, options_for(b));
    INFO(describe(h));
    CHECK(h.first_bad_index == 12u);
    CHECK(has_problem(h, "column-mismatch", 12u));
  }
  SUBCASE("more of the oldest records emptied than retention said") {
    const std::string path = copy_db(b, "overprune");
    {
      auto db = open_rw(path);
      exec(db, "UPDATE audit_record SET record = NULL WHERE seq < 40; DELETE FROM audit_patient WHERE seq < 40;");
    }
    VerifyReport h = verify(path, options_for(b));
    INFO(describe(h));
    CHECK(h.first_bad_index == 30u);
    CHECK(has_problem(h, "unexplained-prune", 30u));
  }
}

TEST_CASE("audit verify: a damaged tree node is reported without blaming the records") {
  const Built& b = shared_log();
  const std::string path = copy_db(b, "node");
  {
    auto db = open_rw(path);
    exec(db, "UPDATE audit_node SET hash = zeroblob(32) WHERE level = 3 AND idx = 2");
  }
  VerifyReport r = verify(path, options_for(b));
  INFO(describe(r));
  CHECK_FALSE(r.ok);
  CHECK(has_problem(r, "damaged-tree", std::nullopt));
  CHECK_FALSE(r.first_bad_index);
  CHECK(r.covered == kRecords);
}

TEST_CASE("audit-verify tool: exit 0 when verified, 1 with the first bad record, 2 on usage errors") {
  const Built& b = shared_log();
  const std::string key = (b.dir / "audit-key.pub.pem").string();
  std::ofstream(key) << b.key.public_pem;
  const std::string common = " --checkpoints " + b.checkpoints + " --key " + key + " --key-name test-audit-key";

  const std::string before = gw::test::read_file(b.db);
  Run ok = audit_verify("--db " + b.db + common);
  INFO(ok.out);
  CHECK(ok.status == 0);
  CHECK(gw::test::read_file(b.db) == before);  // read-only: audit.db is not written
  CHECK(ok.out.find("OK: 200 records, covered by the checkpoint at size 200") != std::string::npos);

  const std::string tampered = copy_db(b, "tool-flip");
  {
    auto db = open_rw(tampered);
    std::string bytes = record_bytes(db, 123);
    bytes[40] = static_cast<char>(bytes[40] ^ 0x01);
    set_record(db, 123, bytes);
  }
  Run bad = audit_verify("--db " + tampered + common);
  INFO(bad.out);
  CHECK(bad.status == 1);
  CHECK(bad.out.find("TAMPERED: first bad record 123") != std::string::npos);

  Run json = audit_verify("--json --db " + tampered + common);
  CHECK(json.status == 1);
  auto parsed = fhir::parse_json(json.out);
  REQUIRE(parsed);
  REQUIRE(parsed->find("firstBadIndex"));
  CHECK(parsed->find("firstBadIndex")->as_int64() == 123);
  CHECK_FALSE(parsed->find("ok")->as_bool());

  // Without --key-name the name comes from the checkpoints; a wrong name verifies nothing.
  CHECK(audit_verify("--db " + b.db + " --checkpoints " + b.checkpoints + " --key " + key).status == 0);
  Run wrong_name =
      audit_verify("--db " + b.db + " --checkpoints " + b.checkpoints + " --key " + key + " --key-name another-key");
  CHECK(wrong_name.status == 1);
  CHECK(wrong_name.out.find("bad-signature") != std::string::npos);

  Run help = audit_verify("--help");
  CHECK(help.status == 0);
  CHECK(help.out.find("Exit codes") != std::string::npos);
  CHECK(audit_verify("").status == 2);
  CHECK(audit_verify("--db " + (b.dir / "no-such.db").string()).status == 2);
  CHECK(audit_verify("--db " + b.db + " --checkpoints " + (b.dir / "none.log").string()).status == 2);
  CHECK(audit_verify("--db " + b.db + " --key " + b.checkpoints).status == 2);
}

TEST_CASE("audit-verify tool: --strict on a live, intact log says records are not yet covered, never TAMPERED") {
  Built b = build("verify-live", 100);
  const std::string key = (b.dir / "audit-key.pub.pem").string();
  std::ofstream(key) << b.key.public_pem;
  const std::string args =
      "--db " + b.db + " --checkpoints " + b.checkpoints + " --key " + key + " --key-name test-audit-key";
  // The gateway still running: records committed since its last checkpoint (interval 1 h).
  auto log = open_log(b);
  for (int i = 100; i < 105; ++i) REQUIRE(log->append_sync(sample(i)));

  Run lenient = audit_verify(args);
  INFO(lenient.out);
  CHECK(lenient.status == 0);
  Run strict = audit_verify("--strict " + args);
  INFO(strict.out);
  CHECK(strict.status == 1);  // --strict's documented rule: not covered is a failure
  CHECK(strict.out.rfind("NOT YET COVERED by a checkpoint: records 100 to 104 came after the last checkpoint", 0) == 0);
  CHECK(strict.out.find("TAMPERED") == std::string::npos);

  // A record altered as well: that is what the headline names, as tampering.
  const std::string tampered = copy_db(b, "live-flip");
  log->stop();
  {
    auto db = open_rw(tampered);
    std::string bytes = record_bytes(db, 42);
    bytes[40] = static_cast<char>(bytes[40] ^ 0x01);
    set_record(db, 42, bytes);
  }
  Run both = audit_verify("--strict --db " + tampered + " --key " + key + " --key-name test-audit-key");
  INFO(both.out);
  CHECK(both.status == 1);
  CHECK(both.out.rfind("TAMPERED: first bad record 42: ", 0) == 0);
}

TEST_CASE("audit verify: a cut copy of audit.db is reported as damaged, with SQLite's own error") {
  const Built& b = shared_log();
  const std::string key = (b.dir / "audit-key.pub.pem").string();
  std::ofstream(key) << b.key.public_pem;
  for (int percent : {99, 95, 50}) {
    CAPTURE(percent);
    const std::string path = copy_db(b, "cut-" + std::to_string(percent));
    fs::remove(path + "-wal");
    fs::resize_file(path, fs::file_size(path) * static_cast<std::uintmax_t>(percent) / 100);
    auto r = gw::audit::verify_database(path, options_for(b));
    REQUIRE_FALSE(r.ok());
    CHECK(r.issue().diagnostics.find("database disk image is malformed") != std::string::npos);
    CHECK(r.issue().diagnostics.find("damaged") != std::string::npos);
    CHECK(r.issue().diagnostics.find("not an audit database") == std::string::npos);
    Run tool = audit_verify("--db " + path + " --checkpoints " + b.checkpoints + " --key " + key);
    INFO(tool.out);  // stdout and stderr
    CHECK(tool.status == 2);
    CHECK(tool.out.find("database disk image is malformed") != std::string::npos);
    CHECK(tool.out.find("first bad record") == std::string::npos);
  }
}

TEST_CASE("audit verify: a copy without a -wal is read as it is, creating nothing beside it") {
  const Built& b = shared_log();
  // '%', '?' and '#' are URI syntax: the immutable open names the file by URI.
  const fs::path dir = b.dir / "odd%41name?x#y";
  fs::create_directories(dir);
  const std::string path = (dir / "audit.db").string();
  fs::remove(path);
  {
    auto src = gw::sqlite::Database::open(copy_db(b, "immutable-source"));  // VACUUM INTO needs a writable connection
    REQUIRE(src.ok());
    REQUIRE(src->exec("VACUUM INTO '" + path + "'").ok());
  }
  REQUIRE_FALSE(fs::exists(path + "-wal"));
  auto r = gw::audit::verify_database(path, options_for(b));
  REQUIRE_MESSAGE(r.ok(), r.issue().diagnostics);
  CHECK(r->ok);
  CHECK(r->records > 0);
  CHECK_FALSE(fs::exists(path + "-wal"));
  CHECK_FALSE(fs::exists(path + "-shm"));
}
