// SPDX-License-Identifier: Apache-2.0
// An in-memory Locator with the same observable behaviour as SqliteLocator. It exists so the
// conformance suite proves the contract is not SQLite-shaped (a PostgreSQL backend must fit),
// and so HTTP-layer tests can run without a database file.
#pragma once

#include <memory>

#include "gateway/locator/locator.h"

namespace gw::locator {

std::unique_ptr<Locator> make_fake_locator(DemographicRule rule = {});

}  // namespace gw::locator
