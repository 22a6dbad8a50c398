// SPDX-License-Identifier: Apache-2.0
// The bridge between network coroutines and a blocking backend (DESIGN.md "Storage": no
// blocking SQLite call on a network thread). call() runs a function on the pool's own threads
// and resumes the awaiting coroutine on its executor (the connection's strand), keeping that
// executor's work count up meanwhile so a draining server waits for it. Used for the record
// locator, the message store and the audit log's reads.
//
// Two kinds of call, on two sets of threads when the pool is given write threads:
//  - call(): a read, busy on a CPU from start to end. As many threads as the backend has read
//    connections: more only queue for a connection, and each extra runnable thread costs a
//    context switch per call (measured on the locator: 4 connections and 8 threads gave 1.3
//    switches and 36-38 us of pool CPU per Patient search, 2 and 2 gave 0.3 and 27 us).
//  - call_write(): a write, which mostly waits for its group commit. On threads of its own,
//    so writes waiting for a commit never hold up reads.
#pragma once

#include <memory>
#include <optional>
#include <utility>

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "fhir/result.h"
#include "gateway/observe/thread_name.h"

namespace gw::sqlite {

template <class Backend>
class BlockingPool {
 public:
  // `threads`: reads in flight at once (the backend's read connections). `write_threads`:
  // writes in flight at once; 0 runs them on the read threads.
  BlockingPool(Backend& backend, std::size_t threads, std::size_t write_threads = 0)
      : backend_(backend), pool_(threads) {
    observe::name_pool_threads(pool_, threads, "gw-storage");
    if (write_threads > 0) {
      writes_ = std::make_unique<boost::asio::thread_pool>(write_threads);
      observe::name_pool_threads(*writes_, write_threads, "gw-storage-wr");
    }
  }
  ~BlockingPool() {
    pool_.join();
    if (writes_) writes_->join();
  }
  BlockingPool(const BlockingPool&) = delete;
  BlockingPool& operator=(const BlockingPool&) = delete;

  Backend& backend() { return backend_; }

  //   auto op = [id](Locator& l) { return l.read_patient(id); };
  //   auto result = co_await pool.call(op);
  // Pass a named function object, never a temporary: g++ 12 destroys non-trivial temporaries
  // of a co_await full-expression twice (GCC PR 100611), so call() takes a reference and
  // copies it into the initiation, and is not a coroutine itself.
  template <class F>
  auto call(const F& fn) -> boost::asio::awaitable<decltype(fn(std::declval<Backend&>()))> {
    using R = decltype(fn(std::declval<Backend&>()));
    return boost::asio::async_initiate<const boost::asio::use_awaitable_t<>&, void(R)>(
        Initiation<F>{this, &pool_, fn}, boost::asio::use_awaitable);
  }

  // The same for a call that writes (and so waits for a commit).
  template <class F>
  auto call_write(const F& fn) -> boost::asio::awaitable<decltype(fn(std::declval<Backend&>()))> {
    using R = decltype(fn(std::declval<Backend&>()));
    return boost::asio::async_initiate<const boost::asio::use_awaitable_t<>&, void(R)>(
        Initiation<F>{this, writes_ ? writes_.get() : &pool_, fn}, boost::asio::use_awaitable);
  }

 private:
  template <class F>
  struct Initiation {
    BlockingPool* self;
    boost::asio::thread_pool* threads;
    F fn;
    template <class Handler>
    void operator()(Handler handler) {
      using R = decltype(fn(std::declval<Backend&>()));
      auto ex = boost::asio::prefer(boost::asio::get_associated_executor(handler),
                                    boost::asio::execution::outstanding_work.tracked);
      boost::asio::post(*threads, [self = self, fn = std::move(fn), handler = std::move(handler), ex]() mutable {
        std::optional<R> r;
        try {
          r.emplace(fn(self->backend_));
        } catch (...) {
          // A broken invariant in a backend: reported as an internal error, never thrown
          // across threads.
          r.emplace(fhir::Issue::make(fhir::ErrorCode::internal_error, "a storage call failed"));
        }
        boost::asio::dispatch(ex, [handler = std::move(handler), r = std::move(r)]() mutable {
          std::move(handler)(std::move(*r));
        });
      });
    }
  };

  Backend& backend_;
  boost::asio::thread_pool pool_;
  std::unique_ptr<boost::asio::thread_pool> writes_;
};

}  // namespace gw::sqlite
