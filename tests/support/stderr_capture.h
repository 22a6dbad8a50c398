// SPDX-License-Identifier: Apache-2.0
// Captures the gateway's structured log lines (stderr, one write(2) per line) while it lives,
// for tests of what an operator sees.
#pragma once

#include <filesystem>
#include <string>

namespace gw::test {

class StderrCapture {
 public:
  // Redirects stderr (file descriptor 2) to a temporary file.
  StderrCapture();
  // Restores stderr if text() has not.
  ~StderrCapture();
  StderrCapture(const StderrCapture&) = delete;
  StderrCapture& operator=(const StderrCapture&) = delete;
  // Restores stderr and returns everything written to it meanwhile.
  std::string text();

 private:
  void restore();
  std::filesystem::path path_;
  int saved_ = -1;
};

// The first line of `log` whose "msg" is `msg`; "" when none.
std::string log_line(const std::string& log, const std::string& msg);

}  // namespace gw::test
