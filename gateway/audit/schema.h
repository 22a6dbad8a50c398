// SPDX-License-Identifier: Apache-2.0
// audit.db's numbered migrations. Append only; never edit a released migration.
#pragma once

#include <cstdint>
#include <vector>

#include "gateway/sqlite/migrations.h"

namespace gw::audit {

const std::vector<sqlite::Migration>& migrations();

// audit_tree's key for the perfect subtree (level, idx) (migration 3): ((idx + 1) << level) * 64
// + level, the number of leaves up to the node's end, then its level. Nodes are stored in the
// order the log completes them, so a commit appends them all at the end of one b-tree. The
// audit_node view decodes it: level = pos & 63, idx = ((pos >> 6) >> level) - 1.
constexpr std::int64_t tree_pos(unsigned level, std::int64_t idx) {
  return static_cast<std::int64_t>((static_cast<std::uint64_t>(idx + 1) << level) * 64 + level);
}

}  // namespace gw::audit
