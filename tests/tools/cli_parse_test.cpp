// SPDX-License-Identifier: Apache-2.0
// tools/cli/parse.h, through the real tools: an unknown option is named before a required one
// that is missing (CLI11 alone reports the missing one, hiding the typo).
#include <doctest/doctest.h>

#include <string>

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
