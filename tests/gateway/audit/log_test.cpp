// SPDX-License-Identifier: Apache-2.0
// The audit log (gateway/audit/log.h) on a real audit.db: records as chained Merkle leaves,
// restart, checkpoints in and outside the database (refusal to start on a rolled-back copy),
// retention that keeps the tree verifiable, the canonical encoding, and UK local time.
#include <doctest/doctest.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include <filesystem>
#include <fstream>

#include "gateway/audit/log.h"
#include "support/paths.h"

using namespace gw;
using namespace gw::audit;

namespace {

std::shared_ptr<const CheckpointSigner> ed25519_signer() {
  EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
  REQUIRE(key != nullptr);
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<std::size_t>(n));
  BIO_free(bio);
  EVP_PKEY_free(key);
  auto s = CheckpointSigner::from_pem(pem, "test-audit");
  REQUIRE(s.ok());
  return std::make_shared<const CheckpointSigner>(std::move(*s));
}

Record access(int i, std::string user = "dr-a", std::string nhs = "9000000009") {
  Record r;
  r.time_ms = 1'790'000'000'000 + i * 1000;
  r.kind = "rest";
  r.action = "read";
  r.method = "GET";
  r.target = "/Patient/p" + std::to_string(i);
  r.route = "/Patient/{id}";
  r.status = 200;
  r.agent_kind = "user";
  r.user = std::move(user);
  r.role = "clinician";
  r.organisation = "A81001";
  r.request_id = "req-" + std::to_string(i);
  r.detail.patients = {std::move(nhs)};
  r.detail.returned = {"Patient/p" + std::to_string(i)};
  r.detail.basis = "registered-practice";
  return r;
}

LogOptions options(const std::filesystem::path& dir) {
  LogOptions o;
  o.path = (dir / "audit.db").string();
  o.checkpoint_file = (dir / "checkpoints.log").string();
  o.rules.out_of_hours = false;
  return o;
}

}  // namespace

TEST_CASE("Audit record: canonical encoding round-trips and anything else is refused") {
  Record r = access(1);
  r.seq = 42;
  r.prev = std::string(64, 'a');
  r.detail.break_glass_reason = "emergency-care";
  r.detail.break_glass_justification = "quote \" backslash \\ and ünïcode";
  const std::string bytes = encode(r);
  auto back = decode(bytes);
  REQUIRE(back.ok());
  CHECK(back->seq == 42);
  CHECK(back->detail.break_glass_justification == r.detail.break_glass_justification);
  CHECK(encode(*back) == bytes);
  // Whitespace, reordered members, an extra member, a wrong type: not canonical.
  CHECK_FALSE(decode(" " + bytes).ok());
  std::string spaced = bytes;
  spaced.insert(1, " ");
  CHECK_FALSE(decode(spaced).ok());
  std::string extra = bytes;
  extra.insert(extra.size() - 1, ",\"x\":1");
  CHECK_FALSE(decode(extra).ok());
  std::string wrong = bytes;
  wrong.replace(wrong.find("\"status\":200"), 12, "\"status\":\"2\"");
  CHECK_FALSE(decode(wrong).ok());
  CHECK_FALSE(decode("").ok());
  CHECK_FALSE(decode("[]").ok());
}

TEST_CASE("Audit log: records are chained leaves; restart continues the chain and the tree") {
  auto dir = test::temp_dir("audit-log");
  auto signer = ed25519_signer();
  merkle::Hash root_after_10{};
  {
    auto log = Log::open(options(dir), signer);
    REQUIRE(log.ok());
    for (int i = 0; i < 10; ++i) {
      auto seq = (*log)->append_sync(access(i));
      REQUIRE(seq.ok());
      CHECK(*seq == static_cast<std::uint64_t>(i));
    }
    auto cp = (*log)->checkpoint_now();
    REQUIRE(cp.ok());
    CHECK(cp->size == 10);
    root_after_10 = cp->root;
  }  // stop(): nothing new since the checkpoint
  auto log = Log::open(options(dir), signer);
  REQUIRE(log.ok());
  CHECK((*log)->stats().size == 10);
  for (int i = 10; i < 25; ++i) REQUIRE((*log)->append_sync(access(i)).ok());
  auto r9 = (*log)->get(9);
  auto r10 = (*log)->get(10);
  REQUIRE((r9.ok() && r10.ok() && *r9 && *r10));
  CHECK((*r10)->prev == merkle::to_hex(merkle::leaf_hash(encode(**r9))));
  CHECK((*r10)->seq == 10);
  // Proofs across the restart.
  auto proof = (*log)->inclusion_proof(3, 25);
  REQUIRE(proof.ok());
  CHECK(merkle::verify_inclusion(3, 25, merkle::leaf_hash(proof->record), proof->path, proof->root));
  auto root25 = (*log)->root_at(25);
  auto cons = (*log)->consistency_proof(10, 25);
  REQUIRE((root25.ok() && cons.ok()));
  CHECK(merkle::verify_consistency(10, 25, root_after_10, *root25, *cons));
  // Searching by patient and by agent uses the copied columns.
  (void)(*log)->append_sync(access(25, "dr-b", "9434765919"));
  Query q;
  q.patient = "9434765919";
  auto page = (*log)->search(q);
  REQUIRE(page.ok());
  CHECK(page->total == 1);
  q = {};
  q.agent = "dr-a";
  q.count = 5;
  page = (*log)->search(q);
  REQUIRE(page.ok());
  CHECK(page->total == 25);
  CHECK(page->records.size() == 5);
  CHECK(page->records.front().seq == 24);  // newest first
}

TEST_CASE("Audit log: refuses to start on a rolled-back or altered database") {
  auto dir = test::temp_dir("audit-rollback");
  auto signer = ed25519_signer();
  const auto db = dir / "audit.db";
  {
    auto log = Log::open(options(dir), signer);
    REQUIRE(log.ok());
    for (int i = 0; i < 5; ++i) REQUIRE((*log)->append_sync(access(i)).ok());
    REQUIRE((*log)->checkpoint_now().ok());
  }
  // Keep a copy at 5 records (after a clean stop, the WAL is checkpointed into the file).
  std::filesystem::copy_file(db, dir / "old.db");
  {
    auto log = Log::open(options(dir), signer);
    REQUIRE(log.ok());
    for (int i = 5; i < 9; ++i) REQUIRE((*log)->append_sync(access(i)).ok());
  }  // stop() writes a checkpoint at 9 into the database and the checkpoint file
  std::filesystem::remove(dir / "audit.db-wal");
  std::filesystem::remove(dir / "audit.db-shm");
  std::filesystem::copy_file(dir / "old.db", db, std::filesystem::copy_options::overwrite_existing);
  auto reopened = Log::open(options(dir), signer);
  REQUIRE_FALSE(reopened.ok());
  CHECK(reopened.issue().diagnostics.find("rolled back") != std::string::npos);

  // Without the external file the old copy is self-consistent: that is why the file is kept
  // outside the database (and audit-verify is given it).
  LogOptions no_file = options(dir);
  no_file.checkpoint_file.clear();
  {
    auto log = Log::open(no_file, signer);
    CHECK(log.ok());
  }
}

TEST_CASE("Audit log: retention removes old content but keeps the tree and says so") {
  auto dir = test::temp_dir("audit-retention");
  auto signer = ed25519_signer();
  auto log = Log::open(options(dir), signer);
  REQUIRE(log.ok());
  for (int i = 0; i < 12; ++i) REQUIRE((*log)->append_sync(access(i)).ok());
  auto before = (*log)->root_at(12);
  REQUIRE(before.ok());
  // Records 0..4 are older than the cutoff.
  auto pruned = (*log)->prune_before(1'790'000'000'000 + 5 * 1000, "retention");
  REQUIRE(pruned.ok());
  CHECK(*pruned == 5);
  auto after = (*log)->root_at(12);
  REQUIRE(after.ok());
  CHECK(*after == *before);                           // the tree is untouched
  auto gone = (*log)->get(2);
  REQUIRE(gone.ok());
  CHECK_FALSE(gone->has_value());                     // content removed
  Query q;
  q.subtype = "retention-prune";
  auto page = (*log)->search(q);
  REQUIRE(page.ok());
  REQUIRE(page->records.size() == 1);                 // the prune is itself audited
  CHECK(page->records[0].detail.note.find("records 0 to 4") != std::string::npos);
  auto cps = (*log)->checkpoints(10);
  REQUIRE(cps.ok());
  REQUIRE(!cps->empty());
  CHECK(cps->front().size == 13);                     // and checkpointed
  // A second run has nothing more to prune before the same cutoff.
  auto again = (*log)->prune_before(1'790'000'000'000 + 5 * 1000, "retention");
  REQUIRE(again.ok());
  CHECK(*again == 0);
}

TEST_CASE("Audit log: a failed commit completes every caller with not_ready and leaves nothing") {
  auto dir = test::temp_dir("audit-fail");
  auto log = Log::open(options(dir), nullptr);
  REQUIRE(log.ok());
  REQUIRE((*log)->append_sync(access(0)).ok());
  (*log)->inject_write_failure(true);
  auto failed = (*log)->append_sync(access(1));
  REQUIRE_FALSE(failed.ok());
  CHECK(failed.issue().code == fhir::ErrorCode::not_ready);
  (*log)->inject_write_failure(false);
  auto next = (*log)->append_sync(access(2));
  REQUIRE(next.ok());
  CHECK(*next == 1);  // the failed record took no sequence number
  auto r1 = (*log)->get(1);
  REQUIRE((r1.ok() && *r1));
  CHECK((*r1)->request_id == "req-2");
  CHECK_FALSE((*log)->checkpoint_now().ok());  // no signer configured
}

TEST_CASE("London time: GMT in winter, BST from the last Sunday of March to the last of October") {
  auto at = [](const char* iso) {
    std::tm tm{};
    strptime(iso, "%Y-%m-%dT%H:%M:%S", &tm);
    return static_cast<std::int64_t>(timegm(&tm)) * 1000;
  };
  CHECK(london_time(at("2026-01-15T12:00:00")).minute_of_day == 12 * 60);
  CHECK(london_time(at("2026-07-15T12:00:00")).minute_of_day == 13 * 60);
  // 2026: BST starts 29 March 01:00 UTC and ends 25 October 01:00 UTC.
  CHECK(london_time(at("2026-03-29T00:59:00")).minute_of_day == 59);
  CHECK(london_time(at("2026-03-29T01:00:00")).minute_of_day == 2 * 60);
  CHECK(london_time(at("2026-03-22T12:00:00")).minute_of_day == 12 * 60);
  CHECK(london_time(at("2026-10-25T00:59:00")).minute_of_day == 1 * 60 + 59);
  CHECK(london_time(at("2026-10-25T01:00:00")).minute_of_day == 1 * 60);
  CHECK(london_time(at("2026-10-31T12:00:00")).minute_of_day == 12 * 60);
  CHECK(london_time(at("2026-11-23T23:30:00")).weekday == 1);  // a Monday
  // BST can push the local day forward.
  CHECK(london_time(at("2026-06-06T23:30:00")).weekday == 0);  // Saturday 23:30 UTC = Sunday 00:30 BST
}
