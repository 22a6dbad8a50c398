// SPDX-License-Identifier: Apache-2.0
// Names the calling thread, as `top -H`, `ps -L`, perf and gdb show it (Linux keeps 15
// bytes; a longer name is cut). Every long-lived gateway thread is named "gw-<role>", so an
// operator can tell the audit writer from an event loop without a debugger.
#pragma once

#include <pthread.h>

#include <condition_variable>
#include <cstddef>
#include <cstring>
#include <memory>
#include <mutex>

namespace gw::observe {

inline void name_this_thread(const char* name) {
  char buf[16];
  std::strncpy(buf, name, sizeof buf - 1);
  buf[sizeof buf - 1] = '\0';
  (void)::pthread_setname_np(::pthread_self(), buf);
}

// Names every thread of a thread pool (boost::asio::thread_pool) with exactly `threads`
// threads and nothing queued yet: one task per thread, each held until all have started, so no
// thread takes two. Call from a thread outside the pool. The tasks share their state, so the
// last of them may still be leaving after this returns.
template <class Pool>
void name_pool_threads(Pool& pool, std::size_t threads, const char* name) {
  struct State {
    std::mutex m;
    std::condition_variable cv;
    std::size_t arrived = 0;
  };
  auto state = std::make_shared<State>();
  for (std::size_t i = 0; i < threads; ++i)
    post(pool, [state, threads, name] {  // boost::asio::post, found through the pool's namespace
      name_this_thread(name);
      std::unique_lock lock(state->m);
      if (++state->arrived == threads) state->cv.notify_all();
      else state->cv.wait(lock, [&] { return state->arrived >= threads; });
    });
  std::unique_lock lock(state->m);
  state->cv.wait(lock, [&] { return state->arrived >= threads; });
}

}  // namespace gw::observe
