// SPDX-License-Identifier: Apache-2.0
// Running the project's own programs from tests: command-line tools (output and exit status)
// and the gateway as a child process (started, waited for, killed), plus test NHS numbers.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

namespace gw::test {

struct ToolRun {
  int status = -1;  // exit status, -1 when killed by a signal
  std::string out, err;
};

// Runs `binary args` through the shell (the caller quotes `args`); stdout and stderr apart.
ToolRun run_tool(const std::string& binary, const std::string& args);

// A valid NHS number in the 999 test range, one per `serial` (0..99999): 999<serial><j> with
// the first j whose Modulus 11 check digit exists (weights 10..2; 11 -> 0; 10: none), then
// that check digit.
std::string test_nhs_number(int serial);

struct ChildGateway {
  pid_t pid = -1;
  std::uint16_t port = 0;  // from the start-up line that matched
};

// Starts `binary --config config` with its stderr (the JSON log) in `log_file`, and waits,
// for at most 30 s, for a log line matching `port_pattern`, a regular expression whose first
// group is a port number. Fails the test when the process exits or the line never comes.
ChildGateway start_child_gateway(const std::string& binary, const std::string& config, const std::string& log_file,
                                 const std::string& port_pattern);

// Waits up to 30 s for `pid` to exit and returns its wait status; after that kills it
// (SIGKILL) and fails the test.
int wait_child_exit(pid_t pid);

}  // namespace gw::test
