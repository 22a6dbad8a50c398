// SPDX-License-Identifier: Apache-2.0
// tools/cli/parse.h, through the real tools: an unknown option is named before a required one
// that is missing (CLI11 alone reports the missing one, hiding the typo).
#include <doctest/doctest.h>

#include <filesystem>
#include <string>

#include "fhir/json.h"
#include "gateway/auth/jwks.h"
#include "support/certs.h"
#include "support/paths.h"
#include "support/process.h"

TEST_CASE("Tools: an unknown option is reported before a missing required one") {
  struct Case {
    const char* binary;
    const char* args;
    const char* missing;  // what plain CLI11 would have reported
  };
  const Case cases[] = {
      {MINT_TOKEN_BIN, "--nope", "--key is required"},
      {HL7SEND_BIN, "--nope", "inputs is required"},
      {AUDIT_VERIFY_BIN, "--nope", "--db is required"},
      {GW_LOCATOR_BIN, "import --nope", "inputs is required"},
      {GW_LOCATOR_BIN, "--nope", "A subcommand is required"},
      {GW_MESSAGES_BIN, "show --nope", "id is required"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.binary);
    CAPTURE(c.args);
    const gw::test::ToolRun r = gw::test::run_tool(c.binary, c.args);
    CHECK(r.status == 2);
    CHECK(r.err.find("The following argument was not expected: --nope") != std::string::npos);
    CHECK(r.err.find(c.missing) == std::string::npos);
  }
  // With nothing unknown, the missing requirement is still what is reported.
  const gw::test::ToolRun bare = gw::test::run_tool(AUDIT_VERIFY_BIN, "");
  CHECK(bare.status == 2);
  CHECK(bare.err.find("--db is required") != std::string::npos);
}

#ifdef AUDIT_BENCH_BIN  // the benchmarks are built by CMake only (tools/bench), not by Meson
TEST_CASE("audit_bench: a mistyped option or a bad value exits 2 with the tool's name, as its own checks do") {
  const gw::test::ToolRun typo = gw::test::run_tool(AUDIT_BENCH_BIN, "--recods");
  CHECK(typo.status == 2);
  CHECK(typo.err.find("audit_bench: The following argument was not expected: --recods") != std::string::npos);
  const gw::test::ToolRun shape = gw::test::run_tool(AUDIT_BENCH_BIN, "--shape sideways");
  CHECK(shape.status == 2);
  CHECK(shape.err.find("audit_bench: --shape: sideways not in {mixed,read}") != std::string::npos);
  CHECK(gw::test::run_tool(AUDIT_BENCH_BIN, "--records 0").status == 2);
}
#endif

TEST_CASE("mint-token: --patient sets the launch-context claim; there is no break-glass flag") {
  const std::string key = "--key " + gw::test::dev_certs().dir + "/token-key.pem --sub dr-1 --scope 'patient/*.rs' ";
  const gw::test::ToolRun minted = gw::test::run_tool(MINT_TOKEN_BIN, key + "--patient pat-0042");
  REQUIRE_MESSAGE(minted.status == 0, minted.err);
  const std::string token = minted.out.substr(0, minted.out.find('\n'));
  const std::size_t dot = token.find('.');
  auto payload = gw::auth::base64url_decode(token.substr(dot + 1, token.rfind('.') - dot - 1));
  REQUIRE(payload.ok());
  auto claims = fhir::parse_json(*payload);
  REQUIRE(claims.ok());
  CHECK(claims->string_at("patient") == "pat-0042");
  CHECK(claims->find("break_glass_reason") == nullptr);

  // A value the gateway would refuse as a patient claim is refused here.
  const gw::test::ToolRun reference = gw::test::run_tool(MINT_TOKEN_BIN, key + "--patient Patient/pat-0042");
  CHECK(reference.status == 2);
  CHECK(reference.err.find("--patient must be a Patient id") != std::string::npos);
  // Break-glass is asked for per request, in headers: no token flag pretends otherwise.
  const gw::test::ToolRun glass = gw::test::run_tool(MINT_TOKEN_BIN, key + "--break-glass-reason emergency-care");
  CHECK(glass.status == 2);
  CHECK(glass.err.find("--break-glass-reason") != std::string::npos);
}

TEST_CASE("tools/demo: a missing or bad option value exits 2 naming it, before anything is built or written") {
  const std::string demo = (gw::test::source_dir() / "tools" / "demo").string();
  const std::filesystem::path data = gw::test::temp_dir("demo-args") / "data";
  // An option at the end with no value: named, not a shell "unbound variable" (exit 1).
  const gw::test::ToolRun bare = gw::test::run_tool(demo, "--no-build --data " + data.string() + " --port");
  REQUIRE(bare.status == 2);
  CHECK(bare.err.find("tools/demo: --port needs a value") != std::string::npos);
  struct Case {
    const char* args;
    const char* says;
  };
  const Case cases[] = {
      {"--port abc", "--port must be a port number 1..65535 (got 'abc')"},
      {"--port 70000", "--port must be a port number 1..65535 (got '70000')"},
      {"--mllp-port 0", "--mllp-port must be a port number 1..65535 (got '0')"},
      {"--patients 1x", "--patients must be 1..1000000 (got '1x')"},
      {"--data --no-build", "--data needs a value"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.args);
    const gw::test::ToolRun r = gw::test::run_tool(demo, "--no-build --data " + data.string() + " " + c.args);
    CHECK(r.status == 2);
    CHECK(r.err.find(c.says) != std::string::npos);
    CHECK(r.out.empty());  // nothing installed, built or started
    CHECK_FALSE(std::filesystem::exists(data));
  }
}

TEST_CASE("Shell tools: an option given last without its value exits 2 naming it") {
  struct Case {
    const char* script;
    const char* option;
    const char* name;  // how the script names itself
  };
  const Case cases[] = {
      {"tools/test", "--build-dir", "tools/test"},
      {"tools/test", "--label", "tools/test"},
      {"certs/make-dev-certs", "--dir", "make-dev-certs"},
      {"tools/bench/mllp-ingest", "--messages", "mllp-ingest"},
      {"tools/bench/hl7v2-parse", "--rounds", "hl7v2-parse"},
      {"tools/bench/http_bench", "--duration", "http_bench"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.script);
    CAPTURE(c.option);
    const gw::test::ToolRun r = gw::test::run_tool((gw::test::source_dir() / c.script).string(), c.option);
    CHECK(r.status == 2);  // not bash's "$2: unbound variable", exit 1
    CHECK(r.err == std::string(c.name) + ": " + c.option + " needs a value (see --help)\n");
    CHECK(r.out.empty());
  }
}
