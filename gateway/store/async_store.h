// SPDX-License-Identifier: Apache-2.0
// The message and resource store as network coroutines call it: a BlockingPool over Store.
#pragma once

#include "gateway/sqlite/blocking_pool.h"
#include "gateway/store/store.h"

namespace gw::store {

using AsyncStore = sqlite::BlockingPool<Store>;

}  // namespace gw::store
