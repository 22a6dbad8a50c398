// SPDX-License-Identifier: Apache-2.0
// How every command-line tool hands its arguments to CLI11 (header only): one rule on top of
// app.parse, so that all of them report a mistyped option the same way.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>

namespace gw::tools {

// app.parse(argc, argv), except that an argument nothing matched is reported before a missing
// required option, positional or subcommand. CLI11 checks requirements first, so `tool --nope`
// would say "--db is required" when the mistake is the unknown (often misspelt) option: this
// throws CLI::ExtrasError naming it instead ("The following argument was not expected:
// --nope"). Any other error is rethrown as it came.
inline void parse(CLI::App& app, int argc, const char* const* argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::RequiredError&) {
    std::vector<std::string> unmatched = app.remaining(true);
    if (unmatched.empty()) throw;
    throw CLI::ExtrasError(std::move(unmatched));
  }
}

}  // namespace gw::tools
