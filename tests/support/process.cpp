// SPDX-License-Identifier: Apache-2.0
#include "support/process.h"

#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <regex>
#include <thread>

#include "fhir/nhs_number.h"
#include "support/paths.h"

namespace gw::test {

ToolRun run_tool(const std::string& binary, const std::string& args) {
  static std::atomic<int> n{0};
  const auto err = temp_dir("tool-stderr") / ("stderr-" + std::to_string(++n));
  ToolRun r;
  const std::string cmd = binary + " " + args + " 2>" + err.string();
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::array<char, 4096> buf{};
  std::size_t got;
  while ((got = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), got);
  const int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  r.err = read_file(err);
  return r;
}

std::string test_nhs_number(int serial) {
  for (int j = 0; j < 10; ++j) {
    char nine[32];
    std::snprintf(nine, sizeof nine, "999%05d%d", serial, j);
    int sum = 0;
    for (int i = 0; i < 9; ++i) sum += (nine[i] - '0') * (10 - i);
    int check = 11 - sum % 11;
    if (check == 11) check = 0;
    if (check == 10) continue;
    std::string out = std::string(nine) + static_cast<char>('0' + check);
    REQUIRE(fhir::is_valid_nhs_number(out));
    return out;
  }
  FAIL("no valid NHS number for serial " << serial);
  return {};
}

ChildGateway start_child_gateway(const std::string& binary, const std::string& config, const std::string& log_file,
                                 const std::string& port_pattern) {
  ChildGateway g;
  g.pid = ::fork();
  REQUIRE(g.pid >= 0);
  if (g.pid == 0) {
    FILE* f = std::freopen(log_file.c_str(), "w", stderr);
    (void)f;
    ::execl(binary.c_str(), binary.c_str(), "--config", config.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  const std::regex started(port_pattern);
  for (int i = 0; i < 600 && g.port == 0; ++i) {
    std::smatch m;
    const std::string text = read_file(log_file);
    if (std::regex_search(text, m, started)) g.port = static_cast<std::uint16_t>(std::stoi(m[1]));
    int status = 0;
    if (::waitpid(g.pid, &status, WNOHANG) == g.pid) FAIL("the gateway exited during start-up:\n" << text);
    if (g.port == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  REQUIRE_MESSAGE(g.port != 0, "no start-up line matching " << port_pattern << " in " << log_file << ":\n"
                                                           << read_file(log_file));
  return g;
}

int wait_child_exit(pid_t pid) {
  int status = 0;
  for (int i = 0; i < 600; ++i) {
    if (::waitpid(pid, &status, WNOHANG) == pid) return status;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);
  FAIL("the gateway did not exit within 30 s");
  return status;
}

}  // namespace gw::test
