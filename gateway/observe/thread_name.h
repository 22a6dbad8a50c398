// SPDX-License-Identifier: Apache-2.0
// Names the calling thread, as `top -H`, `ps -L`, perf and gdb show it (Linux keeps 15
// bytes; a longer name is cut). Every long-lived gateway thread is named "gw-<role>", so an
// operator can tell the audit writer from an event loop without a debugger.
#pragma once

#include <pthread.h>

#include <cstring>

namespace gw::observe {

inline void name_this_thread(const char* name) {
  char buf[16];
  std::strncpy(buf, name, sizeof buf - 1);
  buf[sizeof buf - 1] = '\0';
  (void)::pthread_setname_np(::pthread_self(), buf);
}

}  // namespace gw::observe
