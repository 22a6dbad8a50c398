// SPDX-License-Identifier: Apache-2.0
#include "support/paths.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <vector>

namespace gw::test {

std::filesystem::path source_dir() { return GW_SOURCE_DIR; }

std::optional<std::filesystem::path> shared_data_dir() {
  auto dir = source_dir().parent_path() / "shared" / "data";
  if (std::filesystem::exists(dir / "MANIFEST.md")) return dir;
  static bool warned = false;
  if (!warned) {
    std::fprintf(stderr, "NOTE: %s not found; tests using the shared third-party data are skipped\n",
                 dir.string().c_str());
    warned = true;
  }
  return std::nullopt;
}

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

namespace {
struct TempDirs {
  std::vector<std::filesystem::path> dirs;
  ~TempDirs() {
    std::error_code ec;
    for (auto& d : dirs) std::filesystem::remove_all(d, ec);
  }
};
TempDirs g_temp;
}  // namespace

std::filesystem::path temp_dir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() /
             ("gwtest-" + std::to_string(::getpid()) + "-" + name + "-" + std::to_string(g_temp.dirs.size()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  g_temp.dirs.push_back(dir);
  return dir;
}

}  // namespace gw::test
