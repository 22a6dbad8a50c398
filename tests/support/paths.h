// SPDX-License-Identifier: Apache-2.0
// Where tests find the source tree and the shared third-party data (../shared/data beside the
// checkout). Tests that need shared data call shared_data_dir() and skip with a message when
// it is absent.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

namespace gw::test {

std::filesystem::path source_dir();
// ../shared/data next to the checkout, or nullopt (with a message printed once).
std::optional<std::filesystem::path> shared_data_dir();
std::string read_file(const std::filesystem::path& p);
// A fresh empty directory under the system temp dir, removed at exit.
std::filesystem::path temp_dir(const std::string& name);

}  // namespace gw::test
