// SPDX-License-Identifier: Apache-2.0
// gw-locator's writing commands against a real gateway data directory: refused while a gateway
// runs on it, audited in the gateway's own log (signed, so audit-verify passes), and a
// patient's objection recorded and withdrawn with the effect docs/access-policy.md describes.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "gateway/audit/log.h"
#include "gateway/sqlite/database.h"
#include "support/certs.h"
#include "support/https_client.h"
#include "support/paths.h"
#include "support/process.h"
#include "support/test_server.h"
#include "support/tokens.h"

using namespace gw;
namespace fs = std::filesystem;

namespace {

constexpr const char* kNhs = "9990000018";
constexpr const char* kPractice = "A81001";

// A gateway configuration file for `data`, with the key and files TestServer uses.
std::string write_config(const fs::path& dir, const fs::path& data) {
  const auto& certs = test::dev_certs();
  const fs::path file = dir / "gateway.toml";
  std::ofstream(file) << "[server.https]\nport = 0\ncertificate = \"" << certs.server_cert << "\"\nprivate_key = \""
                      << certs.server_key << "\"\n[storage]\ndata_dir = \"" << data.string()
                      << "\"\n[auth]\njwks_file = \"" << test::test_tokens().jwks_path << "\"\n[audit]\nsigning_key = \""
                      << certs.audit_key << "\"\n";
  return file.string();
}

// One Patient registered at kPractice.
std::string write_bundle(const fs::path& dir) {
  const fs::path file = dir / "patients.json";
  std::ofstream(file) << R"({"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"urn:uuid:p1","resource":)"
                      << R"({"resourceType":"Patient","id":"p1","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":")"
                      << kNhs << R"("}],"name":[{"family":"Okafor","given":["Ada"]}],"gender":"female","birthDate":"1970-01-01",)"
                      << R"("generalPractitioner":[{"identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":")"
                      << kPractice << R"("}}]}}]})";
  return file.string();
}

test::ToolRun gw_locator(const std::string& args) { return test::run_tool(GW_LOCATOR_BIN, args); }

std::unique_ptr<test::TestServer> gateway_on(const fs::path& data) {
  return std::make_unique<test::TestServer>([&](config::Config& c) { c.data_dir = data.string(); });
}

// How many Patients a search by NHS number shows the registered practice's clinician.
int visible(test::TestServer& s) {
  test::TokenClaims gp;
  gp.org = kPractice;
  const auto r = test::get(s.port(), std::string("/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|") + kNhs,
                           s.client(), test::test_tokens().header(gp));
  REQUIRE(r.status == 200);
  if (r.body.find("\"total\":1") != std::string::npos) return 1;
  return r.body.find("\"total\":0") != std::string::npos ? 0 : -1;
}

// The records of the log for the patient, newest first, as "action|note" lines.
std::string audit_of(test::TestServer& s, const std::string& patient) {
  audit::Query q;
  q.patient = patient;
  q.count = 20;
  auto page = s.app().audit_log()->search(q);
  REQUIRE(page.ok());
  std::string out;
  for (const auto& r : page->records) out += r.action + "|" + r.detail.note + "\n";
  return out;
}

// Objection changes awaiting their audit record in `data`'s locator.db.
std::int64_t waiting_rows(const fs::path& data) {
  auto db = sqlite::Database::open((data / "locator.db").string(), sqlite::Database::Mode::read_only);
  REQUIRE(db.ok());
  auto st = db->prepare("SELECT count(*) FROM objection_changes");
  REQUIRE(st.ok());
  REQUIRE(*st->step());
  return st->column_int64(0);
}

int audit_verify(const fs::path& data) {
  const test::ToolRun v = test::run_tool(AUDIT_VERIFY_BIN, "--db " + (data / "audit.db").string() + " --checkpoints " +
                                                               (data / "audit-checkpoints.log").string() + " --key " +
                                                               test::dev_certs().audit_pub_key);
  INFO(v.out, v.err);
  return v.status;
}

}  // namespace

TEST_CASE("gw-locator: import and objection are refused while a gateway runs on the data directory") {
  const fs::path dir = test::temp_dir("gwloc-lock");
  const fs::path data = dir / "data";
  const std::string config = write_config(dir, data);
  const std::string bundle = write_bundle(dir);
  auto s = gateway_on(data);
  const auto before = s->app().audit_log()->stats().size;

  const test::ToolRun imp = gw_locator("import --config " + config + " --source RX8 --quiet " + bundle);
  CHECK(imp.status == 1);
  CHECK_MESSAGE(imp.err.find("is in use (pid ") != std::string::npos, imp.err);
  CHECK(imp.err.find("stop the gateway first") != std::string::npos);
  CHECK(imp.out.find("created") == std::string::npos);  // nothing imported
  const test::ToolRun obj = gw_locator("objection --config " + config + " --nhs-number " + kNhs + " --record");
  CHECK(obj.status == 1);
  CHECK(obj.err.find("is in use") != std::string::npos);
  CHECK(s->app().audit_log()->stats().size == before);
  CHECK(s->locator().lookup_identifier(locator::kNhsNumberSystem, kNhs)->has_value() == false);
}

TEST_CASE("gw-locator: an import is recorded in the gateway's audit log, signed; --data is refused once there is one") {
  const fs::path dir = test::temp_dir("gwloc-audit");
  const fs::path data = dir / "data";
  const std::string config = write_config(dir, data);
  const std::string bundle = write_bundle(dir);
  { auto first = gateway_on(data); }  // the gateway has run: the directory has its audit log

  const test::ToolRun bare = gw_locator("import --data " + data.string() + " --source RX8 --quiet " + bundle);
  CHECK(bare.status == 2);
  CHECK_MESSAGE(bare.err.find("give --config") != std::string::npos, bare.err);

  const test::ToolRun imp = gw_locator("import --config " + config + " --source RX8 --quiet " + bundle);
  REQUIRE_MESSAGE(imp.status == 0, imp.out, imp.err);
  CHECK(audit_verify(data) == 0);  // the import's record is covered by a signed checkpoint

  auto s = gateway_on(data);
  audit::Query q;
  q.subtype = "locator-import";
  auto page = s->app().audit_log()->search(q);
  REQUIRE(page.ok());
  REQUIRE(page->records.size() == 1);
  const audit::Record& r = page->records[0];
  CHECK(r.kind == "ingest");
  CHECK(r.user == "gw-locator");
  CHECK(r.source == "RX8");
  CHECK(r.target.find(bundle) != std::string::npos);
  CHECK_MESSAGE(r.detail.note.find("run by OS user ") != std::string::npos, r.detail.note);
  CHECK(r.detail.note.find("created 1, matched 0") != std::string::npos);
  CHECK(r.detail.note.find("rejected entries 0") != std::string::npos);
}

TEST_CASE("gw-locator: a recorded objection hides the patient from their own GP; withdrawn, the record is seen again") {
  const fs::path dir = test::temp_dir("gwloc-objection");
  const fs::path data = dir / "data";
  const std::string config = write_config(dir, data);
  REQUIRE(gw_locator("import --config " + config + " --source RX8 --quiet " + write_bundle(dir)).status == 0);
  {
    auto s = gateway_on(data);
    CHECK(visible(*s) == 1);  // registered at the clinician's practice
  }

  const test::ToolRun bad = gw_locator("objection --config " + config + " --nhs-number 9990000017 --record");
  CHECK(bad.status == 2);  // check digit
  const test::ToolRun neither = gw_locator("objection --config " + config + " --nhs-number " + kNhs);
  CHECK(neither.status == 2);
  CHECK(neither.err.find("--record or --withdraw") != std::string::npos);

  const test::ToolRun rec =
      gw_locator("objection --config " + config + " --nhs-number " + kNhs + " --record --note 'request ref 42'");
  REQUIRE_MESSAGE(rec.status == 0, rec.out, rec.err);
  CHECK(rec.out.find("objection recorded for NHS number 9990000018") != std::string::npos);
  {
    auto s = gateway_on(data);
    CHECK(visible(*s) == 0);  // hidden exactly as an unknown patient
    const std::string trail = audit_of(*s, kNhs);
    CHECK_MESSAGE(trail.find("objection-recorded|objection to sharing recorded (change ") != std::string::npos, trail);
    CHECK(trail.find(") by OS user ") != std::string::npos);
    CHECK(trail.find(": request ref 42") != std::string::npos);
  }

  const test::ToolRun wd = gw_locator("objection --config " + config + " --nhs-number " + kNhs + " --withdraw");
  REQUIRE_MESSAGE(wd.status == 0, wd.out, wd.err);
  {
    auto s = gateway_on(data);
    CHECK(visible(*s) == 1);
    CHECK(audit_of(*s, kNhs).find("objection-withdrawn|objection to sharing withdrawn") != std::string::npos);
  }
  CHECK(audit_verify(data) == 0);
  CHECK(waiting_rows(data) == 0);  // each change's row went once its record was committed
}

TEST_CASE("gw-locator objection: a change a stop left without its audit record is audited once, first") {
  const fs::path dir = test::temp_dir("gwloc-objection-left");
  const fs::path data = dir / "data";
  const std::string config = write_config(dir, data);
  REQUIRE(gw_locator("import --config " + config + " --source RX8 --quiet " + write_bundle(dir)).status == 0);
  std::string patient;
  {
    auto s = gateway_on(data);  // creates the audit log
    patient = s->locator().lookup_identifier(locator::kNhsNumberSystem, kNhs).value().value();
  }
  // An earlier run recorded an objection and stopped between its change's commit and its
  // record's: the objection stands, and its row awaits the record.
  const std::string left =
      "INSERT INTO objection_changes VALUES ('0190aaaa-0000-7000-8000-000000000001', '" + patient + "', '" + kNhs +
      "', 1, 'OS user admin (uid 1000)', 'request ref 41', '', " + std::to_string(audit::now_ms() - 5000) + ")";
  {
    auto db = sqlite::Database::open((data / "locator.db").string());
    REQUIRE(db.ok());
    REQUIRE(db->exec(left + "; UPDATE patients SET objection = 1 WHERE id = '" + patient + "'").ok());
  }
  const test::ToolRun wd = gw_locator("objection --config " + config + " --nhs-number " + kNhs + " --withdraw");
  REQUIRE_MESSAGE(wd.status == 0, wd.out, wd.err);
  CHECK(wd.err.find("1 earlier objection change(s) without their audit record audited now") != std::string::npos);
  CHECK(waiting_rows(data) == 0);
  // A stop after that record's commit, before its row went: the next run finds the record.
  {
    auto db = sqlite::Database::open((data / "locator.db").string());
    REQUIRE(db.ok());
    REQUIRE(db->exec(left).ok());
  }
  const test::ToolRun again = gw_locator("objection --config " + config + " --nhs-number " + kNhs + " --withdraw");
  REQUIRE_MESSAGE(again.status == 0, again.out, again.err);
  CHECK(again.err.find("audited now") == std::string::npos);
  CHECK(waiting_rows(data) == 0);
  auto s = gateway_on(data);
  const std::string trail = audit_of(*s, kNhs);
  INFO(trail);
  // The earlier change, once; then the withdrawal and its repeat.
  const std::string recovered = "objection-recorded|objection to sharing recorded (change "
                                "0190aaaa-0000-7000-8000-000000000001) by OS user admin (uid 1000) at ";
  const auto first = trail.find(recovered);
  CHECK(first != std::string::npos);
  CHECK(trail.find(recovered, first + 1) == std::string::npos);
  CHECK(trail.find("its own audit record was not committed; recovered by gw-locator objection; note: request ref 41") !=
        std::string::npos);
  CHECK(trail.find("objection-withdrawn|objection to sharing withdrawn (change ") != std::string::npos);
  CHECK(trail.find("objection-withdrawn|objection to sharing withdrawn (it already was) by OS user") != std::string::npos);
  CHECK(audit_verify(data) == 0);
}
