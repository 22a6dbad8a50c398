// SPDX-License-Identifier: Apache-2.0
// audit.db's numbered migrations. Append only; never edit a released migration.
#pragma once

#include <vector>

#include "gateway/sqlite/migrations.h"

namespace gw::audit {

const std::vector<sqlite::Migration>& migrations();

}  // namespace gw::audit
