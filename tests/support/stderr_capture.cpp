// SPDX-License-Identifier: Apache-2.0
#include "support/stderr_capture.h"

#include <fcntl.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "support/paths.h"

namespace gw::test {

StderrCapture::StderrCapture() : path_(temp_dir("stderr") / "stderr.log") {
  saved_ = ::dup(STDERR_FILENO);
  const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ::dup2(fd, STDERR_FILENO);
  ::close(fd);
}

StderrCapture::~StderrCapture() { restore(); }

std::string StderrCapture::text() {
  restore();
  std::ifstream in(path_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void StderrCapture::restore() {
  if (saved_ < 0) return;
  ::dup2(saved_, STDERR_FILENO);
  ::close(saved_);
  saved_ = -1;
}

std::string log_line(const std::string& log, const std::string& msg) {
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);)
    if (line.find("\"msg\":\"" + msg + "\"") != std::string::npos) return line;
  return {};
}

}  // namespace gw::test
