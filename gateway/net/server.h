// SPDX-License-Identifier: Apache-2.0
// The HTTPS (and optional loopback plain-HTTP) server: listeners, TLS detection, one session
// coroutine per connection on its own strand, explicit limits and timeouts, graceful drain.
// Requests go to http::Pipeline; this layer owns only bytes, framing and connection policy.
#pragma once

#include <cstdint>
#include <cstddef>
#include <functional>
#include <memory>

#include "gateway/config/config.h"
#include "gateway/http/pipeline.h"
#include "gateway/observe/health.h"
#include "gateway/observe/metrics.h"

namespace boost::asio {
class io_context;
namespace ssl {
class context;
}
}  // namespace boost::asio

namespace gw::net {

class Server {
 public:
  // All references must outlive the server. `tls` is the HTTPS listener's context, as
  // check_startup loaded it from [server.https] (null when HTTPS is off): the server never
  // reads the certificate or key files itself.
  Server(const config::Config& cfg, const http::Pipeline& pipeline, observe::Metrics& metrics,
         observe::Health& health, std::shared_ptr<boost::asio::ssl::context> tls);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds the listeners (port 0 picks a free port) and starts accepting. With
  // `handle_signals`, SIGINT/SIGTERM begin a graceful shutdown (a second signal stops at
  // once), and SIGHUP (systemctl reload, a closed terminal) never stops the server: it is
  // logged and passed to the on_hangup handler; the handlers are installed before the
  // "listening" log line. Throws
  // config::ConfigError when HTTPS is on in a build without TLS, std::runtime_error naming the
  // address on bind failure, std::logic_error when HTTPS is on and no context was given.
  void start(bool handle_signals = true);

  // Runs the event loop on cfg.threads threads (including the caller's) until the server has
  // stopped.
  void run();

  // Graceful shutdown, safe from any thread, idempotent: stop accepting, mark not-ready,
  // close idle connections, let in-flight requests finish within shutdown_grace, then stop.
  void shutdown();

  // Other listeners on this server's event loop (MLLP) join the drain: `begin` runs when the
  // drain starts (stop accepting, close idle connections); the server stops only when
  // `in_flight()` is 0 too (or the grace expires). Call before start().
  void add_drain_participant(std::function<void()> begin, std::function<std::size_t()> in_flight);

  // What SIGHUP does besides being logged (App: re-read the JWKS file). Runs on the event
  // loop thread, so it must only hand the work on, never block. Call before start().
  void on_hangup(std::function<void()> handler);

  std::uint16_t https_port() const;
  std::uint16_t http_port() const;
  boost::asio::io_context& io_context();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace gw::net
