// SPDX-License-Identifier: Apache-2.0
// The audit log (gateway/audit/log.h) on a real audit.db: records as chained Merkle leaves,
// restart, checkpoints in and outside the database (refusal to start on a rolled-back copy),
// retention that keeps the tree verifiable, the canonical encoding, and UK local time.
#include <doctest/doctest.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <atomic>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <rapidjson/writer.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <fstream>
#include <random>

#include "fhir/query_string.h"
#include "gateway/audit/log.h"
#include "gateway/audit/schema.h"
#include "gateway/audit/verify.h"
#include "gateway/sqlite/database.h"
#include "gateway/observe/log.h"
#include "support/paths.h"
#include "support/stderr_capture.h"

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

// Back to the indexes of migrations 2 and 3: one table audit_patient keyed (nhs_number, seq),
// holding every row, and audit_record's agent and time indexes (and no later ones).
void downgrade_indexes(gw::sqlite::Database& db) {
  REQUIRE(db.exec("BEGIN;"
                  "DROP INDEX audit_record_prune;"
                  "DROP TABLE audit_agent_index; DROP TABLE audit_time_index; DROP TABLE audit_index_state;"
                  "CREATE INDEX audit_record_agent ON audit_record(agent, seq) WHERE agent <> '';"
                  "CREATE INDEX audit_record_time ON audit_record(time_ms);"
                  "CREATE TABLE audit_patient_v3 (nhs_number TEXT NOT NULL, seq INTEGER NOT NULL"
                  " REFERENCES audit_record(seq), PRIMARY KEY (nhs_number, seq)) STRICT, WITHOUT ROWID;"
                  "INSERT INTO audit_patient_v3 SELECT nhs_number, seq FROM audit_patient;"
                  "DROP VIEW audit_patient; DROP TABLE audit_patient_recent; DROP TABLE audit_patient_index;"
                  "ALTER TABLE audit_patient_v3 RENAME TO audit_patient; COMMIT;")
              .ok());
}

std::int64_t count_rows(gw::sqlite::Database& db, const std::string& sql) {
  auto st = db.prepare(sql);
  REQUIRE(st.ok());
  auto row = st->step();
  REQUIRE((row.ok() && *row));
  return st->column_int64(0);
}

// audit-verify's core over the file at `path`, with the public key of `signer`.
fhir::Result<VerifyReport> verify_with(const std::shared_ptr<const CheckpointSigner>& signer, const std::string& path) {
  auto key = CheckpointVerifier::from_pem(signer->public_key_pem(), "test-audit");
  REQUIRE(key.ok());
  VerifyOptions vo;
  vo.key = &*key;
  return verify_database(path, vo);
}

LogOptions options(const std::filesystem::path& dir) {
  LogOptions o;
  o.path = (dir / "audit.db").string();
  o.checkpoint_file = (dir / "checkpoints.log").string();
  o.rules.out_of_hours = false;
  return o;
}

// The encoding as it was first released (rapidjson::Writer into a string): every record stored
// before encode() got its own writer was made this way, so both must agree byte for byte.
struct StringSink {
  using Ch = char;
  std::string& out;
  void Put(char c) { out.push_back(c); }
  void Flush() {}
};
std::string rapidjson_encoding(const Record& r) {
  std::string out;
  StringSink sink{out};
  rapidjson::Writer<StringSink> w(sink);
  auto text = [&w](const char* key, const std::string& v) {
    w.Key(key);
    w.String(v.data(), static_cast<rapidjson::SizeType>(v.size()));
  };
  auto integer = [&w](const char* key, std::int64_t v) {
    w.Key(key);
    w.Int64(v);
  };
  auto list = [&w](const char* key, const std::vector<std::string>& v) {
    w.Key(key);
    w.StartArray();
    for (const auto& s : v) w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
    w.EndArray();
  };
  w.StartObject();
  integer("v", r.version);
  integer("seq", static_cast<std::int64_t>(r.seq));
  text("prev", r.prev);
  integer("time", r.time_ms);
  text("kind", r.kind);
  text("action", r.action);
  text("method", r.method);
  text("target", r.target);
  text("route", r.route);
  integer("status", r.status);
  text("outcome", r.outcome_text);
  text("agentKind", r.agent_kind);
  text("user", r.user);
  text("role", r.role);
  text("org", r.organisation);
  text("client", r.client_id);
  text("tokenId", r.token_id);
  text("purpose", r.purpose);
  text("address", r.address);
  text("clientCert", r.client_certificate);
  text("requestId", r.request_id);
  text("correlationId", r.correlation_id);
  text("source", r.source);
  list("patients", r.detail.patients);
  list("returned", r.detail.returned);
  list("withheld", r.detail.withheld);
  text("basis", r.detail.basis);
  text("breakGlass", r.detail.break_glass_reason);
  text("breakGlassText", r.detail.break_glass_justification);
  list("failedSources", r.detail.failed_sources);
  text("operation", r.detail.operation);
  text("note", r.detail.note);
  if (r.version >= 2) text("roleName", r.role_name);
  w.EndObject();
  return out;
}

}  // namespace

TEST_CASE("Audit record: encode() writes exactly what rapidjson::Writer wrote, for every byte") {
  Record r = access(7);
  r.seq = 123456789012345;
  r.prev = std::string(64, 'f');
  r.time_ms = -1;
  r.status = 0;
  r.detail.withheld = {"", "DocumentReference/x"};
  r.detail.failed_sources = {"a", "b", "c"};
  r.role_name = "clinician";
  CHECK(encode(r) == rapidjson_encoding(r));
  Record v1 = r;  // records written before version 2 keep their bytes
  v1.version = 1;
  CHECK(encode(v1) == rapidjson_encoding(v1));
  CHECK(encode(v1).find("roleName") == std::string::npos);
  // Every byte value, alone and inside plain text, in a text member and in a list. A lone byte
  // from 0x80 up is not UTF-8: it is written as U+FFFD (what rapidjson writes for the repaired
  // record), so decode() reads every encoding back.
  for (int c = 0; c < 256; ++c) {
    const std::string one(1, static_cast<char>(c));
    r.target = one;
    r.outcome_text = "ab" + one + "cd" + one;
    r.detail.patients = {one, "x" + one};
    INFO("byte " << c);
    Record repaired = r;
    make_valid_utf8(repaired);
    REQUIRE(encode(r) == rapidjson_encoding(repaired));
    auto back = decode(encode(r));
    REQUIRE(back.ok());
    CHECK(back->target == (c < 0x80 ? one : "\xEF\xBF\xBD"));
  }
  // Random strings over all bytes (invalid UTF-8 included).
  std::mt19937 rng(6);
  for (int n = 0; n < 2000; ++n) {
    std::string s(rng() % 40, '\0');
    for (auto& ch : s) ch = static_cast<char>(rng() % 256);
    r.detail.note = s;
    r.user = s.substr(0, s.size() / 2);
    r.time_ms = static_cast<std::int64_t>(rng()) * (n % 2 ? -1 : 1) * 1000003;
    Record repaired = r;
    make_valid_utf8(repaired);
    REQUIRE(encode(r) == rapidjson_encoding(repaired));
    REQUIRE(decode(encode(r)).ok());
  }
}

TEST_CASE("Audit record: no string member, text or list, can make the encoding invalid UTF-8") {
  // A character cut in two (a header or a target cut at a byte limit), a stray continuation
  // byte, an overlong and a surrogate, in every string the record has.
  const std::string fffd = "\xEF\xBF\xBD";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"cut \xC3", "cut " + fffd}, {"\x80stray", fffd + "stray"}, {"\xC0\xAF", fffd + fffd}, {"\xED\xA0\x80", fffd + fffd + fffd}};
  for (const auto& [bad, shown] : cases) {
    Record r;
    for (std::string* field : {&r.prev, &r.kind, &r.action, &r.method, &r.target, &r.route, &r.outcome_text,
                               &r.agent_kind, &r.user, &r.role, &r.organisation, &r.client_id, &r.token_id,
                               &r.purpose, &r.address, &r.client_certificate, &r.request_id, &r.correlation_id,
                               &r.source, &r.role_name, &r.detail.basis, &r.detail.break_glass_reason,
                               &r.detail.break_glass_justification, &r.detail.operation, &r.detail.note})
      *field = bad;
    for (auto* list : {&r.detail.patients, &r.detail.returned, &r.detail.withheld, &r.detail.failed_sources})
      *list = {"ok", bad};
    const std::string bytes = encode(r);
    INFO(bytes);
    CHECK(fhir::is_valid_utf8(bytes));
    auto back = decode(bytes);
    REQUIRE_MESSAGE(back.ok(), back.issue().diagnostics);
    // Every string member came back repaired: the repaired record encodes to the same bytes,
    // and none of its members kept the bad text.
    CHECK(bytes.find(bad) == std::string::npos);
    CHECK(back->detail.break_glass_justification == shown);
    CHECK(back->detail.failed_sources == std::vector<std::string>{"ok", shown});
    make_valid_utf8(r);
    CHECK(encode(r) == bytes);
    CHECK(r.user == shown);
    CHECK(r.detail.patients.back() == shown);
  }
}

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

TEST_CASE("Audit record: version 1 records (no roleName) still read back byte for byte; version 2 needs it") {
  Record r = access(3);
  r.role = "R8000";
  r.role_name = "clinician";
  const std::string v2 = encode(r);
  CHECK(v2.rfind("{\"v\":2,", 0) == 0);
  CHECK(v2.find(",\"note\":\"\",\"roleName\":\"clinician\"}") != std::string::npos);
  auto back2 = decode(v2);
  REQUIRE(back2.ok());
  CHECK(back2->version == 2);
  CHECK(back2->role_name == "clinician");
  CHECK(encode(*back2) == v2);

  Record old = r;
  old.version = 1;
  old.role_name.clear();
  const std::string v1 = encode(old);
  CHECK(v1.rfind("{\"v\":1,", 0) == 0);
  CHECK(v1.find("roleName") == std::string::npos);
  auto back1 = decode(v1);
  REQUIRE(back1.ok());
  CHECK(back1->version == 1);
  CHECK(back1->role == "R8000");
  CHECK(back1->role_name.empty());
  CHECK(encode(*back1) == v1);  // its leaf hash is unchanged

  // Version 1 with the version 2 member, version 2 without it, an unknown version: refused.
  std::string v1_extra = v1;
  v1_extra.insert(v1_extra.size() - 1, ",\"roleName\":\"clinician\"");
  auto e1 = decode(v1_extra);
  REQUIRE_FALSE(e1.ok());
  CHECK(e1.issue().diagnostics.find("unexpected member after \"note\"") != std::string::npos);
  std::string v2_short = v1;
  v2_short.replace(0, 6, "{\"v\":2");
  CHECK_FALSE(decode(v2_short).ok());
  for (const char* v : {"0", "3", "-1"}) {
    std::string other = v2;
    other.replace(0, 6, std::string("{\"v\":") + v);
    auto e = decode(other);
    REQUIRE_FALSE(e.ok());
    CHECK(e.issue().diagnostics.find(std::string("unknown record version ") + v) != std::string::npos);
  }
}

TEST_CASE("Audit record: redact_target keeps the query but not the credentials in it") {
  const std::string jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJkci1zbWl0aCJ9.c2lnbmF0dXJlLWJ5dGVz";
  CHECK(redact_target("/Patient?access_token=" + jwt + "&family=x") == "/Patient?access_token=[redacted]&family=x");
  CHECK(redact_target("/Patient?family=x&token=opaque-123") == "/Patient?family=x&token=[redacted]");
  CHECK(redact_target("/Patient?ACCESS%5FTOKEN=abc&id_token=d&refresh_token=e&client_secret=f") ==
        "/Patient?ACCESS%5FTOKEN=[redacted]&id_token=[redacted]&refresh_token=[redacted]&client_secret=[redacted]");
  // A JWT under any name, percent-encoded or not, and in the path.
  CHECK(redact_target("/Patient?identifier=x%7C" + jwt) == "/Patient?identifier=[redacted]");
  CHECK(redact_target("/Patient?q=%65yJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln") == "/Patient?q=[redacted]");
  CHECK(redact_target("/Patient/" + jwt + "/_history") == "/Patient/[redacted]/_history");
  CHECK(redact_target("/Patient?" + jwt) == "/Patient?[redacted]");
  // `code` is a credential only in an OAuth authorization response; otherwise a search term.
  CHECK(redact_target("/Observation?code=http://loinc.org|8867-4&patient=p1") ==
        "/Observation?code=http://loinc.org|8867-4&patient=p1");
  CHECK(redact_target("/callback?code=SplxlOBeZQQYbYS6WxSbIA&state=xyz") == "/callback?code=[redacted]&state=xyz");
  // Nothing else changes; no false positives on ordinary values.
  for (std::string t : {"/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9000000009", "/metadata", "/",
                        "/Patient?family=eyJones&given=a.b.c", "/AuditEvent?agent=dr-smith&_count=5", ""})
    CHECK(redact_target(t) == t);
  // Bytes a target may not hold (RFC 9112: visible ASCII) are kept as %XX, a cut character too.
  CHECK(redact_target("/Patient?family=Ord\xC3\xB3\xC3") == "/Patient?family=Ord%C3%B3%C3");
  CHECK(redact_target("/Patient?family=a\tb\x7F") == "/Patient?family=a%09b%7F");
  CHECK(redact_tokens("bad value '" + jwt + "' in x") == "bad value '[redacted]' in x");
  CHECK(redact_tokens("nothing here") == "nothing here");
}

TEST_CASE("Audit record: a source system's agent carries its ODS code under the ODS system, its name apart") {
  const std::string ods = "https://fhir.nhs.uk/Id/ods-organization-code";
  Record ingest;
  ingest.kind = "ingest";
  ingest.action = "ingest-applied";
  ingest.status = 200;
  ingest.agent_kind = "system";
  ingest.user = "demo-epr";
  ingest.organisation = "RGT";
  ingest.source = "demo-epr";
  fhir::Json ev = to_audit_event(ingest, "test");
  const fhir::Json& a = ev.find("agent")->items().at(0);
  CHECK(a.find("type")->find("coding")->items()[0].string_at("code") == "110150");
  CHECK(a.string_at("name") == "demo-epr");
  CHECK(a.find("who")->find("identifier")->string_at("system") == ods);
  CHECK(a.find("who")->find("identifier")->string_at("value") == "RGT");
  CHECK(a.find("who")->string_at("display") == "demo-epr");
  // Nothing anywhere puts the source name under the ODS system.
  const std::string text = fhir::to_json(ev);
  CHECK(text.find(R"("system":")" + ods + R"(","value":"demo-epr")") == std::string::npos);
  CHECK(text.find(R"("system":")" + ods + R"(","value":"RGT")") != std::string::npos);

  Record retention;
  retention.kind = "system";
  retention.action = "retention-prune";
  retention.status = 200;
  retention.agent_kind = "system";
  retention.user = "retention";
  fhir::Json rev = to_audit_event(retention, "test");
  const fhir::Json& ra = rev.find("agent")->items().at(0);
  CHECK(ra.find("type")->find("coding")->items()[0].string_at("code") == "110150");
  CHECK(ra.string_at("name") == "retention");
  CHECK(ra.find("who") == nullptr);
  CHECK(fhir::to_json(rev).find(ods) == std::string::npos);

  // People are still information recipients named by their SDS user id.
  Record user = access(1);
  fhir::Json uev = to_audit_event(user, "test");
  const fhir::Json& ua = uev.find("agent")->items().at(0);
  CHECK(ua.find("type")->find("coding")->items()[0].string_at("code") == "IRCP");
  CHECK(ua.find("who")->find("identifier")->string_at("system") == "https://fhir.nhs.uk/Id/sds-user-id");
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

TEST_CASE("Audit log: a record holding text that is not UTF-8 is committed repaired, read back and verified") {
  auto dir = test::temp_dir("audit-log-utf8");
  auto signer = ed25519_signer();
  auto log = Log::open(options(dir), signer);
  REQUIRE(log.ok());
  REQUIRE((*log)->append_sync(access(0)).ok());
  // A break-glass justification cut inside "é", and a user id with a stray byte.
  Record r = access(1, "dr-\xA9");
  r.status = 400;
  r.detail.break_glass_reason = "emergency-care";
  r.detail.break_glass_justification = std::string(999, 'a') + "\xC3";
  auto seq = (*log)->append_sync(r);
  REQUIRE(seq.ok());
  REQUIRE((*log)->append_sync(access(2)).ok());
  auto got = (*log)->get(*seq);
  REQUIRE_MESSAGE(got.ok(), got.issue().diagnostics);
  REQUIRE(*got);
  CHECK((*got)->detail.break_glass_justification == std::string(999, 'a') + "\xEF\xBF\xBD");
  CHECK((*got)->user == "dr-\xEF\xBF\xBD");
  Query q;
  auto page = (*log)->search(q);
  REQUIRE_MESSAGE(page.ok(), page.issue().diagnostics);
  CHECK(page->records.size() == 3);
  // The agent column holds the repaired id too, so a search by it finds the record.
  q.agent = "dr-\xEF\xBF\xBD";
  page = (*log)->search(q);
  REQUIRE(page.ok());
  CHECK(page->total == 1);
  // The alert the refused break-glass attempt raised is UTF-8 as well.
  auto alerts = (*log)->alerts("open", 100);
  REQUIRE(alerts.ok());
  REQUIRE(!alerts->empty());
  for (const auto& a : *alerts) CHECK(fhir::is_valid_utf8(a.detail));
  REQUIRE((*log)->checkpoint_now().ok());
  (*log)->stop();
  auto report = verify_with(signer, (dir / "audit.db").string());
  REQUIRE(report.ok());
  CHECK(report->ok);
}

TEST_CASE("Audit log: a file from before migration 3 verifies as it is, then upgrades with its tree intact") {
  auto dir = test::temp_dir("audit-log-v2");
  auto signer = ed25519_signer();
  const std::string db_path = (dir / "audit.db").string();
  constexpr int kBefore = 300;  // a tree nine levels high
  {
    auto log = Log::open(options(dir), signer);
    REQUIRE(log.ok());
    for (int i = 0; i < kBefore; ++i)
      REQUIRE((*log)->append_sync(access(i, "dr-a", std::to_string(9000000000 + i % 7))).ok());
    REQUIRE((*log)->checkpoint_now().ok());
  }
  auto exec = [](gw::sqlite::Database& db, const char* sql) { REQUIRE(db.exec(sql).ok()); };
  std::int64_t nodes_before = 0;
  {
    // Back to migration 2's layout: the table audit_node keyed (level, idx).
    auto db = gw::sqlite::Database::open(db_path);
    REQUIRE(db.ok());
    exec(*db,
         "BEGIN;"
         "CREATE TABLE audit_node_v2 (level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL,"
         " PRIMARY KEY (level, idx)) STRICT, WITHOUT ROWID;"
         "INSERT INTO audit_node_v2 SELECT level, idx, hash FROM audit_node;"
         "DROP VIEW audit_node; DROP TABLE audit_tree; ALTER TABLE audit_node_v2 RENAME TO audit_node;"
         "PRAGMA user_version = 2; COMMIT;");
    downgrade_indexes(*db);
    auto n = db->prepare("SELECT count(*) FROM audit_node");
    REQUIRE(n.ok());
    REQUIRE(n->step().ok());
    nodes_before = n->column_int64(0);
    CHECK(nodes_before == 2 * kBefore - 4);  // 300 leaves, 296 perfect subtrees above them (300 = 256+32+8+4)
  }
  auto key = CheckpointVerifier::from_pem(signer->public_key_pem(), "test-audit");
  REQUIRE(key.ok());
  auto verify_here = [&](const std::string& path) {
    VerifyOptions vo;
    vo.key = &*key;
    return verify_database(path, vo);
  };
  SUBCASE("the verifier reads the old layout as it is") {
    auto rep = verify_here(db_path);
    REQUIRE(rep.ok());
    CHECK(rep->ok);
    CHECK(rep->records == kBefore);
    CHECK(rep->covered == kBefore);
    // and still finds a damaged node in it
    auto db = gw::sqlite::Database::open(db_path);
    REQUIRE(db.ok());
    exec(*db, "UPDATE audit_node SET hash = zeroblob(32) WHERE level = 3 AND idx = 2");
    auto bad = verify_here(db_path);
    REQUIRE(bad.ok());
    CHECK_FALSE(bad->ok);
    bool damaged = false;
    for (const auto& p : bad->problems) damaged = damaged || p.kind == "damaged-tree";
    CHECK(damaged);
  }
  SUBCASE("opening it migrates the nodes into audit_tree; the log carries on and verifies") {
    {
      auto log = Log::open(options(dir), signer);  // also checks the tree against the checkpoint
      REQUIRE(log.ok());
      for (int i = kBefore; i < kBefore + 20; ++i) REQUIRE((*log)->append_sync(access(i)).ok());
      auto proof = (*log)->inclusion_proof(5, kBefore + 20);
      REQUIRE(proof.ok());
      CHECK(merkle::verify_inclusion(5, kBefore + 20, merkle::leaf_hash(proof->record), proof->path, proof->root));
      REQUIRE((*log)->checkpoint_now().ok());
    }
    auto db = gw::sqlite::Database::open(db_path, gw::sqlite::Database::Mode::read_only);
    REQUIRE(db.ok());
    auto version = db->user_version();
    REQUIRE(version.ok());
    CHECK(*version >= 3);
    auto n = db->prepare("SELECT count(*) FROM audit_tree");
    REQUIRE(n.ok());
    REQUIRE(n->step().ok());
    CHECK(n->column_int64(0) == 2 * (kBefore + 20) - 2);  // 320 = 256+64: two bits set, so 2n - 2
    // The view gives the old columns back.
    auto v = db->prepare("SELECT hash FROM audit_node WHERE level = 8 AND idx = 0");
    REQUIRE(v.ok());
    auto row = v->step();
    REQUIRE((row.ok() && *row));
    auto rep = verify_here(db_path);
    REQUIRE(rep.ok());
    CHECK(rep->ok);
    CHECK(rep->records == kBefore + 20);
    CHECK(rep->covered == kBefore + 20);
  }
}

TEST_CASE("Audit log: with a commit delay every record is still committed, in order, and the log verifies") {
  auto dir = test::temp_dir("audit-delay");
  LogOptions o = options(dir);
  o.commit_delay = std::chrono::microseconds(2000);
  o.commit_siblings = 1;  // wait before every commit after the first
  auto signer = ed25519_signer();
  auto log = Log::open(o, signer);
  REQUIRE(log.ok());
  constexpr int kThreads = 4, kEach = 25;
  std::vector<std::thread> threads;
  std::atomic<int> failed{0};
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i)
        if (!(*log)->append_sync(access(t * kEach + i)).ok()) ++failed;
    });
  for (auto& th : threads) th.join();
  CHECK(failed == 0);
  CHECK((*log)->stats().size == kThreads * kEach);
  // The chain links every record to the one committed before it, whatever the grouping.
  for (std::uint64_t seq = 1; seq < kThreads * kEach; ++seq) {
    auto prev = (*log)->get(seq - 1);
    auto cur = (*log)->get(seq);
    REQUIRE((prev.ok() && cur.ok() && *prev && *cur));
    CHECK((*cur)->prev == merkle::to_hex(merkle::leaf_hash(encode(**prev))));
  }
  REQUIRE((*log)->checkpoint_now().ok());
  (*log)->stop();
  auto report = verify_with(signer, o.path);
  REQUIRE(report.ok());
  CHECK(report->ok);
  CHECK(report->records == kThreads * kEach);
}

TEST_CASE("Audit log: the patient index takes rows in append order and merges them sorted; searches see both") {
  auto dir = test::temp_dir("audit-patient-merge");
  LogOptions o = options(dir);
  o.index_merge_rows = 16;
  auto signer = ed25519_signer();
  const std::vector<std::string> patients{"9000000009", "9434765919", "9000000017", "9000000025", "9000000033"};
  constexpr int kRecords = 103;
  auto expect_counts = [&](Log& log, int records) {
    for (std::size_t p = 0; p < patients.size(); ++p) {
      Query q;
      q.patient = patients[p];
      q.count = 200;
      auto page = log.search(q);
      REQUIRE(page.ok());
      int expected = 0;
      for (int i = 0; i < records; ++i) expected += (static_cast<std::size_t>(i) % patients.size() == p) ? 1 : 0;
      CHECK(page->total == static_cast<std::uint64_t>(expected));
      CHECK(page->records.size() == static_cast<std::size_t>(expected));
      for (const auto& r : page->records) CHECK(r.detail.patients.front() == patients[p]);
    }
  };
  {
    auto log = Log::open(o, signer);
    REQUIRE(log.ok());
    for (int i = 0; i < kRecords; ++i) {
      Record r = access(i, "dr-a", patients[static_cast<std::size_t>(i) % patients.size()]);
      // A record naming its patient twice still has one index row for them.
      if (i % 10 == 0) r.detail.patients.push_back(r.detail.patients.front());
      REQUIRE((*log)->append_sync(std::move(r)).ok());
      if (i == 7) expect_counts(**log, 8);  // all in the recent rows, before any merge
    }
    const Stats st = (*log)->stats();
    CHECK(st.index_merges == kRecords / 16);  // one merge each time 16 rows have gathered
    CHECK(st.patient_rows_merged == 16 * (kRecords / 16));
    CHECK(st.records_indexed == 16 * (kRecords / 16));
    expect_counts(**log, kRecords);
    // The agent and time indexes hold the first 96 records; searches read the rest from
    // audit_record. Both sides of that line are found.
    Query q;
    q.agent = "dr-a";
    q.count = 200;
    auto page = (*log)->search(q);
    REQUIRE(page.ok());
    CHECK(page->total == kRecords);
    q.from_ms = 1'790'000'000'000 + 90 * 1000;
    q.to_ms = 1'790'000'000'000 + 100 * 1000;
    page = (*log)->search(q);
    REQUIRE(page.ok());
    CHECK(page->total == 10);  // 90..95 indexed, 96..99 not yet
    q.agent = "dr-b";
    page = (*log)->search(q);
    REQUIRE(page.ok());
    CHECK(page->total == 0);
    REQUIRE((*log)->checkpoint_now().ok());
  }
  {
    auto db = gw::sqlite::Database::open(o.path, gw::sqlite::Database::Mode::read_only);
    REQUIRE(db.ok());
    CHECK(count_rows(*db, "SELECT count(*) FROM audit_patient_index") == 16 * (kRecords / 16));
    CHECK(count_rows(*db, "SELECT count(*) FROM audit_patient_recent") == kRecords % 16);
    CHECK(count_rows(*db, "SELECT count(*) FROM audit_patient") == kRecords);
  }
  // Reopened, the log counts the rows still waiting and merges on from there.
  {
    auto log = Log::open(o, signer);
    REQUIRE(log.ok());
    for (int i = kRecords; i < kRecords + 16; ++i)
      REQUIRE((*log)->append_sync(access(i, "dr-a", patients[static_cast<std::size_t>(i) % patients.size()])).ok());
    CHECK((*log)->stats().index_merges == 1);
    expect_counts(**log, kRecords + 16);
    REQUIRE((*log)->checkpoint_now().ok());
  }
  auto report = verify_with(signer, o.path);
  REQUIRE(report.ok());
  CHECK(report->ok);
  CHECK(report->records == kRecords + 16);
  // A row removed from either half is missed by the verifier.
  for (const char* table : {"audit_patient_index", "audit_patient_recent"}) {
    CAPTURE(table);
    auto copy = dir / (std::string(table) + ".db");
    std::filesystem::copy_file(o.path, copy);
    {
      auto db = gw::sqlite::Database::open(copy.string());
      REQUIRE(db.ok());
      const std::int64_t seq = count_rows(*db, std::string("SELECT max(seq) FROM ") + table);
      REQUIRE(db->exec(std::string("DELETE FROM ") + table + " WHERE seq = " + std::to_string(seq)).ok());
    }
    auto bad = verify_with(signer, copy.string());
    REQUIRE(bad.ok());
    CHECK_FALSE(bad->ok);
  }
}

TEST_CASE("Audit log: a search by patient finds records in every epoch of the patient index") {
  // The index is keyed (epoch, nhs_number, seq) with epoch = seq >> 16: 70,000 records span
  // epochs 0 and 1, and a patient read at both ends of each must be found in both.
  auto dir = test::temp_dir("audit-patient-epochs");
  LogOptions o = options(dir);
  o.rules = {};
  o.rules.out_of_hours = false;
  o.rules.without_relationship = false;
  o.rules.max_patients_per_hour = 0;
  auto log = Log::open(o, nullptr);
  REQUIRE(log.ok());
  constexpr std::uint64_t kRecords = 70'000;
  const std::vector<std::uint64_t> special{0, 10, 65'535, 65'536, 69'999};
  std::mutex mu;
  std::condition_variable cv;
  std::uint64_t done = 0, failed = 0, in_flight = 0;
  for (std::uint64_t i = 0; i < kRecords; ++i) {
    const bool is_special = std::find(special.begin(), special.end(), i) != special.end();
    Record r = access(static_cast<int>(i % 1000), "dr-a", is_special ? "9434765919" : (i % 2 ? "9000000009" : "9000000017"));
    {
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return in_flight < 256; });
      ++in_flight;
    }
    (*log)->append(std::move(r), [&](fhir::Result<std::uint64_t> res) {
      std::lock_guard lock(mu);
      --in_flight;
      ++done;
      if (!res) ++failed;
      cv.notify_all();
    });
  }
  {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return done == kRecords; });
  }
  REQUIRE(failed == 0);
  CHECK((*log)->stats().index_merges > 0);
  Query q;
  q.patient = "9434765919";
  q.count = 10;
  q.newest_first = false;
  auto page = (*log)->search(q);
  REQUIRE(page.ok());
  CHECK(page->total == special.size());
  REQUIRE(page->records.size() == special.size());
  for (std::size_t i = 0; i < special.size(); ++i) CHECK(page->records[i].seq == special[i]);
  q.patient = "9000000009";
  q.count = 1;
  page = (*log)->search(q);
  REQUIRE(page.ok());
  CHECK(page->total == kRecords / 2 - 2);  // the odd seqs but 65,535 and 69,999
  // By agent and by time, across the epochs and the not yet indexed tail.
  q = {};
  q.agent = "dr-a";
  q.count = 1;
  page = (*log)->search(q);
  REQUIRE(page.ok());
  CHECK(page->total == kRecords);
  q.from_ms = 1'790'000'000'000 + 998 * 1000;  // access(i % 1000): two of every thousand records
  page = (*log)->search(q);
  REQUIRE(page.ok());
  CHECK(page->total == 2 * kRecords / 1000);
  {
    auto db = gw::sqlite::Database::open(o.path, gw::sqlite::Database::Mode::read_only);
    REQUIRE(db.ok());
    CHECK(count_rows(*db, "SELECT count(DISTINCT epoch) FROM audit_patient_index") == 2);
    CHECK(count_rows(*db, "SELECT count(*) FROM audit_patient WHERE nhs_number = '9434765919'") == 5);
  }
}

TEST_CASE("Audit log: a file from before migrations 4 and 5 keeps its indexes through the upgrade") {
  auto dir = test::temp_dir("audit-log-v3");
  LogOptions o = options(dir);
  auto signer = ed25519_signer();
  {
    auto log = Log::open(o, signer);
    REQUIRE(log.ok());
    for (int i = 0; i < 40; ++i) REQUIRE((*log)->append_sync(access(i, "dr-a", i % 2 ? "9000000009" : "9434765919")).ok());
    REQUIRE((*log)->checkpoint_now().ok());
  }
  {
    auto db = gw::sqlite::Database::open(o.path);
    REQUIRE(db.ok());
    downgrade_indexes(*db);
    REQUIRE(db->exec("PRAGMA user_version = 3").ok());
    CHECK(count_rows(*db, "SELECT count(*) FROM audit_patient") == 40);
  }
  auto log = Log::open(o, signer);
  REQUIRE(log.ok());
  {
    auto db = gw::sqlite::Database::open(o.path, gw::sqlite::Database::Mode::read_only);
    REQUIRE(db.ok());
    auto version = db->user_version();
    REQUIRE(version.ok());
    CHECK(*version == static_cast<int>(migrations().size()));
    CHECK(count_rows(*db, "SELECT count(*) FROM audit_patient_index") == 40);
    CHECK(count_rows(*db, "SELECT count(*) FROM audit_patient_recent") == 0);
    CHECK(count_rows(*db, "SELECT count(*) FROM audit_agent_index WHERE agent = 'dr-a'") == 40);
    CHECK(count_rows(*db, "SELECT count(*) FROM audit_time_index") == 40);
    CHECK(count_rows(*db, "SELECT value FROM audit_index_state WHERE key = 'indexed_below'") == 40);
  }
  REQUIRE((*log)->append_sync(access(40, "dr-a", "9434765919")).ok());
  REQUIRE((*log)->append_sync(access(41, "dr-b", "9434765919")).ok());
  Query q;
  q.patient = "9434765919";
  auto page = (*log)->search(q);
  REQUIRE(page.ok());
  CHECK(page->total == 22);  // 20 from before the upgrade (in the index), two after (recent)
  q = {};
  q.agent = "dr-a";
  page = (*log)->search(q);
  REQUIRE(page.ok());
  CHECK(page->total == 41);  // 40 indexed, one not yet
  q.from_ms = 1'790'000'000'000 + 35 * 1000;
  page = (*log)->search(q);
  REQUIRE(page.ok());
  CHECK(page->total == 6);  // records 35..40 of dr-a
  q = {};
  q.from_ms = 1'790'000'000'000 + 39 * 1000;
  q.to_ms = 1'790'000'000'000 + 41 * 1000;
  page = (*log)->search(q);
  REQUIRE(page.ok());
  CHECK(page->total == 2);  // 39 (indexed) and 40 (not yet)
  REQUIRE((*log)->checkpoint_now().ok());
  (*log)->stop();
  auto report = verify_with(signer, o.path);
  REQUIRE(report.ok());
  CHECK(report->ok);
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
    for (int i = 5; i < 7; ++i) REQUIRE((*log)->append_sync(access(i)).ok());
    REQUIRE((*log)->checkpoint_now().ok());  // at 7: the first beyond the copy
    for (int i = 7; i < 9; ++i) REQUIRE((*log)->append_sync(access(i)).ok());
  }  // stop() writes a checkpoint at 9 into the database and the checkpoint file
  std::filesystem::remove(dir / "audit.db-wal");
  std::filesystem::remove(dir / "audit.db-shm");
  std::filesystem::copy_file(dir / "old.db", db, std::filesystem::copy_options::overwrite_existing);
  auto reopened = Log::open(options(dir), signer);
  REQUIRE_FALSE(reopened.ok());
  CHECK(reopened.issue().diagnostics.find("rolled back") != std::string::npos);
  // The newest checkpoint in the file, not the first beyond the copy: how much was lost.
  CHECK_MESSAGE(reopened.issue().diagnostics.find("covers 9 records but audit.db holds 5") != std::string::npos,
                reopened.issue().diagnostics);

  // Without the external file the old copy is self-consistent: that is why the file is kept
  // outside the database (and audit-verify is given it).
  LogOptions no_file = options(dir);
  no_file.checkpoint_file.clear();
  {
    auto log = Log::open(no_file, signer);
    CHECK(log.ok());
  }
}

// Records of the log's own doing whose action is `action`.
std::vector<Record> system_records(Log& log, const std::string& action) {
  Query q;
  q.subtype = action;
  q.count = 100;
  auto page = log.search(q);
  REQUIRE(page.ok());
  return page->records;
}

TEST_CASE("Audit log: search indexes that do not match the records are rebuilt at start, and the log says so") {
  auto dir = test::temp_dir("audit-index-rebuild");
  LogOptions o = options(dir);
  o.index_merge_rows = 16;
  auto signer = ed25519_signer();
  constexpr int kRecords = 40;
  {
    auto log = Log::open(o, signer);
    REQUIRE(log.ok());
    for (int i = 0; i < kRecords; ++i) REQUIRE((*log)->append_sync(access(i, i % 2 ? "dr-er" : "dr-a")).ok());
    CHECK((*log)->start_warnings().empty());
  }
  auto expect_found = [&](Log& log) {
    Query q;
    q.agent = "dr-er";
    q.count = 100;
    auto page = log.search(q);
    REQUIRE(page.ok());
    CHECK(page->total == kRecords / 2);
    Query d;
    d.from_ms = 1'790'000'000'000;
    d.count = 100;
    d.subtype = "read";
    page = log.search(d);
    REQUIRE(page.ok());
    CHECK(page->total == kRecords);
  };
  struct Edit {
    const char* what;
    const char* sql;
  };
  for (const Edit& e : {Edit{"indexed_below beyond the log", "UPDATE audit_index_state SET value = 1000000"},
                        Edit{"one user's rows deleted",
                             "DELETE FROM audit_time_index WHERE seq IN (SELECT seq FROM audit_agent_index WHERE agent "
                             "= 'dr-er'); DELETE FROM audit_agent_index WHERE agent = 'dr-er'"},
                        Edit{"indexed_below deleted", "DELETE FROM audit_index_state"}}) {
    CAPTURE(e.what);
    const auto copy = dir / "copy";
    std::filesystem::remove_all(copy);
    std::filesystem::create_directories(copy);
    std::filesystem::copy_file(o.path, copy / "audit.db");
    std::filesystem::copy_file(o.checkpoint_file, copy / "checkpoints.log");
    {
      auto db = gw::sqlite::Database::open((copy / "audit.db").string());
      REQUIRE(db.ok());
      REQUIRE(db->exec(e.sql).ok());
    }
    LogOptions co = o;
    co.path = (copy / "audit.db").string();
    co.checkpoint_file = (copy / "checkpoints.log").string();
    {
      auto log = Log::open(co, signer);
      REQUIRE(log.ok());
      expect_found(**log);
      REQUIRE((*log)->start_warnings().size() == 1);
      CHECK((*log)->start_warnings()[0].find("were rebuilt") != std::string::npos);
      // The rebuild is in the tamper-evident log, for IG officers to see.
      auto rebuilt = system_records(**log, "index-rebuild");
      REQUIRE(rebuilt.size() == 1);
      CHECK(rebuilt[0].detail.note.find("did not match its 40 records") != std::string::npos);
    }
    auto report = verify_with(signer, co.path);
    REQUIRE(report.ok());
    CHECK(report->ok);
    // Repaired: the next start finds nothing to say.
    auto again = Log::open(co, signer);
    REQUIRE(again.ok());
    CHECK((*again)->start_warnings().empty());
  }
}

TEST_CASE("Audit log: records no checkpoint signed are warned about at start, and recorded, before they are signed") {
  auto dir = test::temp_dir("audit-unsigned-tail");
  LogOptions o = options(dir);
  auto signer = ed25519_signer();
  {
    auto log = Log::open(o, signer);
    REQUIRE(log.ok());
    for (int i = 0; i < 3; ++i) REQUIRE((*log)->append_sync(access(i)).ok());
    CHECK((*log)->start_warnings().empty());
  }  // a clean stop signs them all
  {
    auto log = Log::open(o, signer);
    REQUIRE(log.ok());
    CHECK((*log)->start_warnings().empty());
  }
  // Records 3 and 4 written by something that signs nothing: what a gateway killed before its
  // next checkpoint leaves, or records added to audit.db while no gateway ran.
  {
    auto log = Log::open(o, nullptr);
    REQUIRE(log.ok());
    for (int i = 3; i < 5; ++i) REQUIRE((*log)->append_sync(access(i)).ok());
  }
  auto log = Log::open(o, signer);
  REQUIRE(log.ok());
  REQUIRE((*log)->start_warnings().size() == 1);
  const std::string& w = (*log)->start_warnings()[0];
  CHECK(w.find("records 3 to 4 were in audit.db beyond its newest signed checkpoint (3 records) when the gateway "
               "started") != std::string::npos);
  auto recorded = system_records(**log, "unsigned-tail");
  REQUIRE(recorded.size() == 1);
  CHECK(recorded[0].seq == 5u);  // the first record this start writes
  CHECK(recorded[0].detail.note == w);
  (*log)->stop();
  auto again = Log::open(o, signer);
  REQUIRE(again.ok());
  CHECK((*again)->start_warnings().empty());
}

TEST_CASE("Audit log: a checkpoint file behind audit.db is warned about at start, and recorded") {
  auto dir = test::temp_dir("audit-checkpoint-file-behind");
  LogOptions o = options(dir);
  auto signer = ed25519_signer();
  auto run = [&](int from, int to) {
    auto log = Log::open(o, signer);
    REQUIRE(log.ok());
    for (int i = from; i < to; ++i) REQUIRE((*log)->append_sync(access(i)).ok());
    REQUIRE((*log)->checkpoint_now().ok());
    return std::move(*log);
  };
  run(0, 5)->stop();
  const std::string older = test::read_file(o.checkpoint_file);  // the checkpoint at 5
  run(5, 9)->stop();

  struct Case {
    const char* what;
    std::function<void()> edit;
    const char* says;
  };
  const Case cases[] = {
      {"emptied", [&] { std::ofstream(o.checkpoint_file, std::ios::trunc); }, "holds no checkpoint"},
      {"deleted", [&] { std::filesystem::remove(o.checkpoint_file); }, "is missing or unreadable"},
      {"an older copy", [&] { std::ofstream(o.checkpoint_file, std::ios::trunc) << older; },
       "holds 1 checkpoint(s), the newest of 5 records"},
  };
  int newest = 9;  // audit.db's newest checkpoint; each case adds a record and a checkpoint at stop()
  for (const Case& c : cases) {
    CAPTURE(c.what);
    c.edit();
    auto log = Log::open(o, signer);
    REQUIRE(log.ok());  // audit.db matches its own checkpoints: the gateway starts, and says so
    REQUIRE((*log)->start_warnings().size() == 1);
    const std::string& w = (*log)->start_warnings()[0];
    CHECK(w.find(o.checkpoint_file) != std::string::npos);
    CHECK(w.find(c.says) != std::string::npos);
    CHECK(w.find("newest signed checkpoint covers " + std::to_string(newest) + " records") != std::string::npos);
    auto recorded = system_records(**log, "checkpoint-file-behind");
    REQUIRE_FALSE(recorded.empty());
    CHECK(recorded.front().detail.note.find(c.says) != std::string::npos);
    CHECK(recorded.front().detail.note.find(o.checkpoint_file) == std::string::npos);  // no paths in the record
    (*log)->stop();
    ++newest;
  }
  // A file that holds audit.db's newest checkpoint: nothing to say.
  std::filesystem::remove(o.checkpoint_file);
  {
    auto log = Log::open(o, signer);
    REQUIRE(log.ok());
    CHECK((*log)->start_warnings().size() == 1);
  }  // the checkpoint written at stop() goes to the file too
  auto log = Log::open(o, signer);
  REQUIRE(log.ok());
  CHECK((*log)->start_warnings().empty());
}

TEST_CASE("Audit log: a checkpoint file whose last note was cut short is warned about, cut back and appended to") {
  auto dir = test::temp_dir("audit-checkpoint-file-torn");
  LogOptions o = options(dir);
  auto signer = ed25519_signer();
  auto run = [&](int from, int to) {
    auto log = Log::open(o, signer);
    REQUIRE(log.ok());
    for (int i = from; i < to; ++i) REQUIRE((*log)->append_sync(access(i)).ok());
    REQUIRE((*log)->checkpoint_now().ok());
    return std::move(*log);
  };
  run(0, 5)->stop();
  const std::string first = test::read_file(o.checkpoint_file);  // the checkpoint at 5, and a blank line
  run(5, 9)->stop();
  const std::string whole = test::read_file(o.checkpoint_file);
  REQUIRE(whole.size() > first.size() + 30);

  // A crash 30 bytes before the end of an append.
  std::ofstream(o.checkpoint_file, std::ios::binary | std::ios::trunc) << whole.substr(0, whole.size() - 30);
  {
    gw::observe::set_level(gw::observe::Level::warn);
    test::StderrCapture captured;
    auto log = Log::open(o, signer);
    // The operator's log line says what docs/audit.md promises it says: the cut as well as
    // the file being behind.
    const std::string line = test::log_line(captured.text(), "audit checkpoint file is behind audit.db");
    INFO(line);
    CHECK(line.find("ended in an incomplete checkpoint note (") != std::string::npos);
    CHECK(line.find("which was removed; it holds 1 checkpoint(s), the newest of 5 records") != std::string::npos);
    REQUIRE(log.ok());  // as for any file behind audit.db: it starts, and says so
    REQUIRE((*log)->start_warnings().size() == 1);
    const std::string& w = (*log)->start_warnings()[0];
    CHECK(w.find("checkpoint file " + o.checkpoint_file + " ended in an incomplete checkpoint note (" +
                 std::to_string(whole.size() - 30 - first.size()) + " bytes") != std::string::npos);
    CHECK(w.find("which was removed; it holds 1 checkpoint(s), the newest of 5 records") != std::string::npos);
    CHECK(w.find("newest signed checkpoint covers 9 records") != std::string::npos);
    auto recorded = system_records(**log, "checkpoint-file-behind");
    REQUIRE_FALSE(recorded.empty());
    CHECK(recorded.front().detail.note.find("ended in an incomplete checkpoint note") != std::string::npos);
    CHECK(test::read_file(o.checkpoint_file) == first);  // cut back to its last complete note
    REQUIRE((*log)->append_sync(access(9)).ok());
    REQUIRE((*log)->checkpoint_now().ok());
    (*log)->stop();
  }
  // The notes appended after the cut are whole and readable.
  auto notes = parse_checkpoints(test::read_file(o.checkpoint_file));
  REQUIRE_MESSAGE(notes.ok(), notes.issue().diagnostics);
  REQUIRE(notes->size() == 2);
  CHECK(notes->back().size == 11);  // 9, the start-up finding and one access
  {
    auto log = Log::open(o, signer);
    REQUIRE(log.ok());
    CHECK((*log)->start_warnings().empty());
  }

  // A torn note after audit.db's newest checkpoint (a second append cut short): still warned of.
  const std::string complete = test::read_file(o.checkpoint_file);
  std::ofstream(o.checkpoint_file, std::ios::binary | std::ios::app) << complete.substr(0, 40);
  {
    auto log = Log::open(o, signer);
    REQUIRE(log.ok());
    REQUIRE((*log)->start_warnings().size() == 1);
    CHECK((*log)->start_warnings()[0].find("ended in an incomplete checkpoint note (40 bytes") != std::string::npos);
    CHECK((*log)->start_warnings()[0].find("the complete checkpoints before it match audit.db") != std::string::npos);
    CHECK_FALSE(system_records(**log, "checkpoint-file-torn").empty());
    CHECK(test::read_file(o.checkpoint_file) == complete);
  }

  // Damage before the last note is not a torn tail: the gateway refuses to start, as before.
  std::ofstream(o.checkpoint_file, std::ios::binary | std::ios::trunc) << complete.substr(0, 20) + complete.substr(50);
  auto damaged = Log::open(o, signer);
  REQUIRE_FALSE(damaged.ok());
  CHECK(damaged.issue().diagnostics.find("is unreadable: checkpoint note 1") != std::string::npos);
}

TEST_CASE("Audit log: a torn checkpoint file that cannot be cut back is left alone for the run, and said so") {
  auto dir = test::temp_dir("audit-checkpoint-file-torn-uncut");
  LogOptions o = options(dir);
  auto signer = ed25519_signer();
  {
    auto log = Log::open(o, signer);
    REQUIRE(log.ok());
    for (int i = 0; i < 5; ++i) REQUIRE((*log)->append_sync(access(i)).ok());
    REQUIRE((*log)->checkpoint_now().ok());
    (*log)->stop();  // and the checkpoint at stop()
  }
  const std::string whole = test::read_file(o.checkpoint_file);
  auto notes = parse_checkpoints(whole);
  REQUIRE(notes.ok());
  REQUIRE(notes->size() == 1);  // stop() found nothing new to sign
  // A crash 30 bytes before the end of an append, in a file truncate(2) refuses to cut (as
  // for a file with the append-only attribute: EPERM).
  const std::string torn = whole.substr(0, whole.size() - 30);
  std::ofstream(o.checkpoint_file, std::ios::binary | std::ios::trunc) << torn;
  std::vector<std::pair<std::string, std::uint64_t>> cuts;
  LogOptions refused = o;
  refused.truncate_checkpoint_file = [&cuts](const std::string& file, std::uint64_t length) {
    cuts.emplace_back(file, length);
    return EPERM;
  };
  {
    auto log = Log::open(refused, signer);
    REQUIRE(log.ok());  // it starts, and says so
    REQUIRE(cuts.size() == 1);
    CHECK(cuts[0].first == o.checkpoint_file);
    CHECK(cuts[0].second == 0);  // the only note was the torn one
    REQUIRE((*log)->start_warnings().size() == 1);
    const std::string& w = (*log)->start_warnings()[0];
    CHECK(w.find("checkpoint file " + o.checkpoint_file + " ended in an incomplete checkpoint note (" +
                 std::to_string(torn.size()) + " bytes") != std::string::npos);
    CHECK(w.find(std::string("which could not be removed (") + std::strerror(EPERM) +
                 "): no checkpoint is appended to it until those bytes are removed and the gateway restarted") !=
          std::string::npos);
    CHECK(w.find("it holds no checkpoint, but audit.db's newest signed checkpoint covers 5 records") != std::string::npos);
    auto recorded = system_records(**log, "checkpoint-file-behind");
    REQUIRE_FALSE(recorded.empty());
    CHECK(recorded.front().detail.note.find("which could not be removed") != std::string::npos);
    // Checkpoints go on into audit.db, but nothing is glued onto the torn note.
    REQUIRE((*log)->append_sync(access(5)).ok());
    auto c = (*log)->checkpoint_now();
    REQUIRE(c.ok());
    CHECK(c->size == 7);  // 5, the start-up finding and one access
    (*log)->stop();
    auto stored = (*log)->checkpoints(1);
    REQUIRE(stored.ok());
    REQUIRE(stored->size() == 1);
    CHECK(stored->front().size == 7);
  }
  CHECK(test::read_file(o.checkpoint_file) == torn);

  // Once truncate(2) works again, the next start cuts the tail and appends whole notes.
  {
    auto log = Log::open(o, signer);
    REQUIRE(log.ok());
    REQUIRE((*log)->start_warnings().size() == 1);
    CHECK((*log)->start_warnings()[0].find("which was removed") != std::string::npos);
    CHECK(test::read_file(o.checkpoint_file).empty());
    REQUIRE((*log)->checkpoint_now().ok());
    (*log)->stop();
  }
  auto after = parse_checkpoints(test::read_file(o.checkpoint_file));
  REQUIRE_MESSAGE(after.ok(), after.issue().diagnostics);
  REQUIRE(after->size() == 1);
  CHECK(after->front().size == 8);  // and the second start's finding
}

TEST_CASE("Audit log: a log keeps the origin it was created with when public_base_url changes, and verifies") {
  auto dir = test::temp_dir("audit-origin-kept");
  LogOptions o = options(dir);
  auto signer = ed25519_signer();
  const std::string created = "fhir-gateway/audit https://localhost:19310";
  o.origin = created;
  {
    auto log = Log::open(o, signer);
    REQUIRE(log.ok());
    for (int i = 0; i < 5; ++i) REQUIRE((*log)->append_sync(access(i)).ok());
    REQUIRE((*log)->checkpoint_now().ok());
    (*log)->stop();
  }
  o.origin = "fhir-gateway/audit https://localhost:19320";  // public_base_url edited
  {
    auto log = Log::open(o, signer);
    REQUIRE(log.ok());
    CHECK((*log)->start_warnings().empty());
    CHECK((*log)->options().origin == created);
    for (int i = 5; i < 8; ++i) REQUIRE((*log)->append_sync(access(i)).ok());
    auto c = (*log)->checkpoint_now();
    REQUIRE(c.ok());
    CHECK(c->origin == created);
    (*log)->stop();
  }
  auto key = CheckpointVerifier::from_pem(signer->public_key_pem(), "test-audit");
  REQUIRE(key.ok());
  VerifyOptions vo;
  vo.key = &*key;
  auto file = parse_checkpoints(test::read_file(o.checkpoint_file));
  REQUIRE(file.ok());
  REQUIRE(file->size() == 2);
  vo.checkpoints = *file;
  vo.checkpoint_files_given = true;
  auto describe = [](const VerifyReport& r) {
    std::string s;
    for (const auto& p : r.problems) s += p.kind + ": " + p.text + "\n";
    return s;
  };
  {
    auto r = verify_database(o.path, vo);
    REQUIRE(r.ok());
    INFO(describe(*r));
    CHECK(r->ok);
    CHECK(r->checkpoints_verified == 2);
    auto stored = read_stored_log(o.path);
    REQUIRE(stored.ok());
    CHECK(stored->origin == created);
    CHECK(verify_log(*stored, vo).ok);
  }

  // The origin audit.db keeps is what every checkpoint signed: editing it fails them all.
  auto edit = [&](const std::string& sql) {
    auto db = gw::sqlite::Database::open(o.path);
    REQUIRE(db.ok());
    REQUIRE(db->exec(sql).ok());
  };
  edit("UPDATE gateway_info SET value = 'fhir-gateway/audit https://elsewhere' WHERE key = 'audit_origin'");
  {
    auto r = verify_database(o.path, vo);
    REQUIRE(r.ok());
    INFO(describe(*r));
    CHECK_FALSE(r->ok);
    CHECK(r->checkpoints_verified == 0);
    bool named = false;
    for (const auto& p : r->problems)
      named |= p.kind == "bad-checkpoint" &&
               p.text.find("is for another log (\"" + created +
                           "\"), not this one (\"fhir-gateway/audit https://elsewhere\", as audit.db names it)") !=
                   std::string::npos;
    CHECK(named);
  }

  // A database from before the origin was kept: named by its oldest checkpoint, which the
  // gateway then keeps.
  edit("DELETE FROM gateway_info WHERE key = 'audit_origin'");
  {
    auto r = verify_database(o.path, vo);
    REQUIRE(r.ok());
    INFO(describe(*r));
    CHECK(r->ok);
  }
  {
    auto log = Log::open(o, signer);
    REQUIRE(log.ok());
    CHECK((*log)->options().origin == created);
  }
  auto stored = read_stored_log(o.path);
  REQUIRE(stored.ok());
  CHECK(stored->origin == created);
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

TEST_CASE("Audit log: a prune and its retention record commit together or not at all") {
  auto dir = test::temp_dir("audit-retention-atomic");
  auto signer = ed25519_signer();
  auto log = Log::open(options(dir), signer);
  REQUIRE(log.ok());
  for (int i = 0; i < 12; ++i) REQUIRE((*log)->append_sync(access(i)).ok());
  REQUIRE((*log)->checkpoint_now().ok());
  // The commit fails where a crash could strike: after the prune, with its record.
  (*log)->inject_write_failure(true);
  auto failed = (*log)->prune_before(1'790'000'000'000 + 5 * 1000, "retention");
  CHECK_FALSE(failed.ok());
  (*log)->inject_write_failure(false);
  auto kept = (*log)->get(2);
  REQUIRE(kept.ok());
  CHECK(kept->has_value());  // nothing was pruned without its record
  (*log)->stop();
  log->reset();
  auto report = verify_database(options(dir).path, VerifyOptions{});
  REQUIRE(report.ok());
  CHECK(report->ok);
  CHECK(report->pruned == 0);

  // And when it commits, both are there.
  auto again = Log::open(options(dir), signer);
  REQUIRE(again.ok());
  auto pruned = (*again)->prune_before(1'790'000'000'000 + 5 * 1000, "retention");
  REQUIRE(pruned.ok());
  CHECK(*pruned == 5);
  (*again)->stop();
  again->reset();
  auto after = verify_database(options(dir).path, VerifyOptions{});
  REQUIRE(after.ok());
  CHECK(after->ok);
  CHECK(after->pruned == 5);
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

namespace {

// The record of an IG officer's request as the gateway writes it (gateway/http/audit_routes.cpp):
// what audit-verify checks the review queue and the flagged records against.
Record ig_request(int i, const std::string& method, const std::string& route, const std::string& note,
                  const std::string& nhs = "") {
  Record r;
  r.time_ms = 1'790'000'000'000 + i * 1000;
  r.kind = "rest";
  r.action = method == "POST" ? "create" : method == "PUT" ? "update" : "delete";
  r.method = method;
  r.target = route;
  r.route = route;
  r.status = 200;
  r.agent_kind = "user";
  r.user = "ig-1";
  r.role = "ig-officer";
  r.request_id = "ig-" + std::to_string(i);
  if (!nhs.empty()) r.detail.patients = {nhs};
  r.detail.note = note;
  return r;
}

const std::string kReviewRoute = "/audit/alerts/{id}/review";
const std::string kFlagRoute = "/audit/flagged-patients/{nhs}";

std::vector<std::string> alert_rules_raised(Log& log) {
  auto alerts = log.alerts("", 100);
  REQUIRE(alerts.ok());
  std::vector<std::string> rules;
  for (const auto& a : *alerts) rules.push_back(a.rule);
  return rules;
}

// Whether audit-verify passes the file at `path` and finds the review queue and the flagged
// records as the records say.
bool verifies(const std::shared_ptr<const CheckpointSigner>& signer, const std::string& path) {
  auto report = verify_with(signer, path);
  REQUIRE(report.ok());
  bool mismatch = false;
  for (const auto& p : report->problems) {
    MESSAGE(p.kind << ": " << p.text);
    mismatch = mismatch || p.kind == "alert-mismatch" || p.kind == "flag-mismatch";
  }
  return report->ok && !mismatch;
}

}  // namespace

TEST_CASE("Audit log: an IG officer's change commits with its request's record, or neither does") {
  auto dir = test::temp_dir("audit-change");
  auto signer = ed25519_signer();
  auto log = Log::open(options(dir), signer);
  REQUIRE(log.ok());
  Log& audit = **log;
  Record glass = access(0, "dr-a", "9000000009");
  glass.detail.basis = "break-glass";
  glass.detail.break_glass_reason = "emergency-care";
  REQUIRE(audit.append_sync(glass).ok());
  REQUIRE(alert_rules_raised(audit) == std::vector<std::string>{"break-glass"});
  const std::string staff = "9000000017";
  const Record review = ig_request(1, "POST", kReviewRoute, "alert 1 reviewed: appropriate");
  const Record flag = ig_request(2, "PUT", kFlagRoute, "record flagged for access alerts: staff member", staff);

  // The audit store refuses the commit: the change is not made either.
  audit.inject_write_failure(true);
  auto failed = audit.append_sync(review, Log::review_alert(1, "ig-1", "appropriate", ""));
  REQUIRE_FALSE(failed.ok());
  CHECK(failed.issue().code == fhir::ErrorCode::not_ready);
  auto failed_flag = audit.append_sync(flag, Log::flag_patient(staff, "staff member", "ig-1"));
  REQUIRE_FALSE(failed_flag.ok());
  CHECK(failed_flag.issue().code == fhir::ErrorCode::not_ready);
  audit.inject_write_failure(false);
  auto open_alerts = audit.alerts("open", 10);
  REQUIRE(open_alerts.ok());
  REQUIRE(open_alerts->size() == 1);
  CHECK(open_alerts->front().reviewer.empty());
  auto flagged = audit.flagged_patients("", 10);
  REQUIRE(flagged.ok());
  CHECK(flagged->items.empty());
  CHECK(audit.stats().size == 1);
  // Nor does the writer's own copy of the flags follow the failed one: no flagged-record alert.
  REQUIRE(audit.append_sync(access(3, "dr-b", staff)).ok());
  CHECK(alert_rules_raised(audit) == std::vector<std::string>{"break-glass"});

  // Committed: the change and its record both.
  auto reviewed = audit.append_sync(review, Log::review_alert(1, "ig-1", "appropriate", ""));
  REQUIRE(reviewed.ok());
  auto rec = audit.get(*reviewed);
  REQUIRE((rec.ok() && *rec));
  CHECK((*rec)->detail.note == "alert 1 reviewed: appropriate");
  auto done = audit.alerts("reviewed", 10);
  REQUIRE(done.ok());
  REQUIRE(done->size() == 1);
  CHECK(done->front().reviewer == "ig-1");
  REQUIRE(audit.append_sync(flag, Log::flag_patient(staff, "staff member", "ig-1")).ok());
  REQUIRE(audit.append_sync(access(4, "dr-c", staff)).ok());
  CHECK(alert_rules_raised(audit) == std::vector<std::string>{"flagged-record", "break-glass"});

  // Refused at commit: the caller is told, and neither the change nor the record is stored,
  // while the records queued around it (most likely in the same batch) are.
  const std::uint64_t size = audit.stats().size;
  std::mutex m;
  std::condition_variable cv;
  int completed = 0;
  std::vector<std::pair<fhir::Result<std::uint64_t>, bool>> changes;
  std::vector<fhir::Result<std::uint64_t>> plain;
  auto on_change = [&](fhir::Result<std::uint64_t> r, bool refused) {
    std::lock_guard l(m);
    changes.emplace_back(std::move(r), refused);
    ++completed;
    cv.notify_one();
  };
  auto on_plain = [&](fhir::Result<std::uint64_t> r) {
    std::lock_guard l(m);
    plain.push_back(std::move(r));
    ++completed;
    cv.notify_one();
  };
  audit.append(access(5, "dr-d"), on_plain);
  audit.append(review, Log::review_alert(1, "ig-2", "referred", "again"), on_change);
  audit.append(ig_request(6, "DELETE", kFlagRoute, "record unflagged: x", "9000000025"),
               Log::unflag_patient("9000000025"), on_change);
  audit.append(access(7, "dr-e"), on_plain);
  {
    std::unique_lock l(m);
    REQUIRE(cv.wait_for(l, std::chrono::seconds(30), [&] { return completed == 4; }));
  }
  REQUIRE(plain.size() == 2);
  CHECK(plain[0].ok());
  CHECK(plain[1].ok());
  REQUIRE(changes.size() == 2);
  CHECK(changes[0].second);
  REQUIRE_FALSE(changes[0].first.ok());
  CHECK(changes[0].first.issue().code == fhir::ErrorCode::conflict);
  CHECK(changes[1].second);
  REQUIRE_FALSE(changes[1].first.ok());
  CHECK(changes[1].first.issue().code == fhir::ErrorCode::not_found);
  CHECK(audit.stats().size == size + 2);
  done = audit.alerts("reviewed", 10);
  REQUIRE(done.ok());
  CHECK(done->front().reviewer == "ig-1");
  CHECK(audit.stats().failed_batches == 2);  // the two injected failures only

  audit.stop();
  CHECK(verifies(signer, options(dir).path));
}

TEST_CASE("Audit log: paging over damaged records: the rows decide the next page, each damaged one named once") {
  auto dir = test::temp_dir("audit-damaged-paging");
  const std::string nhs = "9000000009";
  {
    auto log = Log::open(options(dir), nullptr);
    REQUIRE(log.ok());
    // 0-4 readable, 5-134 to be damaged (more than one page reads past), 135-139 readable.
    for (int i = 0; i < 140; ++i) REQUIRE((*log)->append_sync(access(i, "dr-" + std::to_string(i % 7), nhs)).ok());
    (*log)->stop();
  }
  // A copy of audit.db with the middle records altered so that they no longer decode.
  const auto copy = dir / "copy";
  std::filesystem::create_directories(copy);
  std::filesystem::copy_file(dir / "audit.db", copy / "audit.db");
  {
    auto db = gw::sqlite::Database::open((copy / "audit.db").string());
    REQUIRE(db.ok());
    REQUIRE(db->exec("UPDATE audit_record SET record = CAST('{\"v\":1' AS BLOB) WHERE seq BETWEEN 5 AND 134").ok());
    CHECK(db->changes() == 130);
  }
  LogOptions o = options(copy);
  o.checkpoint_file.clear();
  auto log = Log::open(o, nullptr);
  REQUIRE(log.ok());
  for (const bool newest_first : {true, false}) {
    CAPTURE(newest_first);
    Query q;
    q.patient = nhs;
    q.count = 3;
    q.newest_first = newest_first;
    std::vector<std::uint64_t> readable, damaged;
    std::size_t pages = 0;
    for (; pages < 100; ++pages) {
      auto page = (*log)->search(q);
      REQUIRE(page.ok());
      CHECK(page->total == 140);
      CHECK(page->records.size() <= 3);
      CHECK(page->damaged.size() <= kMaxDamagedPerPage);
      for (const auto& r : page->records) readable.push_back(r.seq);
      damaged.insert(damaged.end(), page->damaged.begin(), page->damaged.end());
      if (!page->next_after) break;
      q.after_seq = page->next_after;
    }
    // Every row once, in order, and the paging ran to the end.
    std::vector<std::uint64_t> want_readable, want_damaged;
    for (std::uint64_t s = 0; s < 140; ++s) (s >= 5 && s <= 134 ? want_damaged : want_readable).push_back(s);
    if (newest_first) {
      std::reverse(want_readable.begin(), want_readable.end());
      std::reverse(want_damaged.begin(), want_damaged.end());
    }
    CHECK(readable == want_readable);
    CHECK(damaged == want_damaged);
    CHECK(pages < 100);
  }
  // A page that ends on its last row has no next page; one that is full with rows left has.
  Query all;
  all.patient = nhs;
  all.count = 140;
  auto page = (*log)->search(all);
  REQUIRE(page.ok());
  CHECK(page->records.size() == 5);
  CHECK(page->damaged.size() == kMaxDamagedPerPage);
  REQUIRE(page->next_after.has_value());
  CHECK(*page->next_after == 35u);  // newest first: 139..135 readable, then 134..35 damaged
  Query first;
  first.patient = nhs;
  first.count = 5;
  page = (*log)->search(first);
  REQUIRE(page.ok());
  CHECK(page->records.size() == 5);
  CHECK(page->damaged.empty());
  REQUIRE(page->next_after.has_value());
  CHECK(*page->next_after == 135u);
  first.newest_first = false;
  first.after_seq = 134;
  page = (*log)->search(first);
  REQUIRE(page.ok());
  CHECK(page->records.size() == 5);
  CHECK_FALSE(page->next_after.has_value());
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

// What retention removes leaves the disk, not only the rows: an IG officer deleting records at
// the end of their retention period expects their content gone from audit.db and its WAL, not
// left readable in free pages for anyone with a copy of the file.
TEST_CASE("Audit log: the content retention removes is gone from audit.db and its WAL, byte for byte") {
  auto dir = test::temp_dir("audit-retention-bytes");
  LogOptions o = options(dir);
  o.rules.max_patients_per_hour = 0;  // no alerts: their text outlives the records by design
  auto log = Log::open(o, ed25519_signer());
  REQUIRE(log.ok());
  const std::string old_user = "dr-retired-5e1d";  // only in the records retention removes
  const std::string old_patient = "9991112223";
  for (int i = 0; i < 5; ++i) {
    // A search that returned many resources: a record longer than a page, whose overflow
    // pages the prune frees whole.
    Record r = access(i, old_user, old_patient);
    for (int k = 0; k < 300; ++k) r.detail.returned.push_back("Observation/" + old_user + "-" + std::to_string(k));
    REQUIRE((*log)->append_sync(std::move(r)).ok());
  }
  for (int i = 5; i < 12; ++i) REQUIRE((*log)->append_sync(access(i)).ok());
  REQUIRE((*log)->checkpoint_now().ok());
  const auto on_disk = [&dir] {
    std::string bytes;
    for (const char* name : {"audit.db", "audit.db-wal"}) {
      std::ifstream in(dir / name, std::ios::binary);
      bytes += std::string(std::istreambuf_iterator<char>(in), {});
    }
    return bytes;
  };
  REQUIRE(on_disk().find(old_user) != std::string::npos);  // the check can see it while it is there

  auto pruned = (*log)->prune_before(1'790'000'000'000 + 5 * 1000, "retention");
  REQUIRE(pruned.ok());
  CHECK(*pruned == 5);
  const std::string bytes = on_disk();
  CHECK(bytes.find(old_user) == std::string::npos);
  CHECK(bytes.find(old_patient) == std::string::npos);
  CHECK(bytes.find("dr-a") != std::string::npos);  // the records kept are still there
  (*log)->stop();
  log->reset();
  auto report = verify_database(o.path, VerifyOptions{});
  REQUIRE(report.ok());
  CHECK(report->ok);
  CHECK(report->pruned == 5);
}

// Retention never prunes a record the SIEM does not hold yet (the forwarder's cursor): the
// prune stops there, says so in its note, and a later prune takes the rest.
TEST_CASE("Audit log: retention keeps records at or after keep_from, and its note says how many") {
  auto dir = test::temp_dir("audit-retention-keep");
  auto log = Log::open(options(dir), ed25519_signer());
  REQUIRE(log.ok());
  for (int i = 0; i < 12; ++i) REQUIRE((*log)->append_sync(access(i)).ok());
  const std::int64_t cutoff = 1'790'000'000'000 + 5 * 1000;  // records 0..4 are older
  auto pruned = (*log)->prune_before(cutoff, "retention", 3);
  REQUIRE(pruned.ok());
  CHECK(*pruned == 3);
  for (std::uint64_t seq : {2, 3, 4}) {
    auto r = (*log)->get(seq);
    REQUIRE(r.ok());
    CHECK(r->has_value() == (seq >= 3));
  }
  Query q;
  q.subtype = "retention-prune";
  auto page = (*log)->search(q);
  REQUIRE(page.ok());
  REQUIRE(page->records.size() == 1);
  const std::string note = page->records[0].detail.note;
  CHECK(note.find("records 0 to 2 (3 records)") != std::string::npos);
  CHECK(note.find("records 3 onwards (2 records)") != std::string::npos);
  CHECK(prune_range(note) == std::optional<std::pair<std::uint64_t, std::uint64_t>>({0, 2}));

  // Nothing older than the cutoff is prunable yet: no prune, no record.
  auto none = (*log)->prune_before(cutoff, "retention", 3);
  REQUIRE(none.ok());
  CHECK(*none == 0);
  // Once delivered, the rest goes.
  auto rest = (*log)->prune_before(cutoff, "retention", 13);
  REQUIRE(rest.ok());
  CHECK(*rest == 2);
  (*log)->stop();
  log->reset();
  auto report = verify_database(options(dir).path, VerifyOptions{});
  REQUIRE(report.ok());
  CHECK(report->ok);
  CHECK(report->pruned == 5);
}
