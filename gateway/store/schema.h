// SPDX-License-Identifier: Apache-2.0
// store.db's numbered migrations: inbound messages (raw, with status and the reply sent) and
// the FHIR resources push sources delivered. Append only; never edit a released migration.
#pragma once

#include <vector>

#include "gateway/sqlite/migrations.h"

namespace gw::store {

const std::vector<sqlite::Migration>& schema_migrations();

}  // namespace gw::store
