// SPDX-License-Identifier: Apache-2.0
// The record locator as network coroutines call it: a BlockingPool over the Locator.
#pragma once

#include "gateway/locator/locator.h"
#include "gateway/sqlite/blocking_pool.h"

namespace gw::locator {

using AsyncLocator = sqlite::BlockingPool<Locator>;

}  // namespace gw::locator
