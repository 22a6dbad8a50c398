// SPDX-License-Identifier: Apache-2.0
// Runs the real gateway server (TLS, pipeline, system routes) in-process on an ephemeral
// loopback port, with optional extra routes, for integration tests.
#pragma once

#include <functional>
#include <memory>
#include <thread>

#include "fhir/search_params.h"
#include "gateway/config/config.h"
#include "gateway/http/pipeline.h"
#include "gateway/http/router.h"
#include "gateway/net/server.h"
#include "gateway/observe/health.h"
#include "gateway/observe/metrics.h"
#include "support/https_client.h"

namespace gw::test {

class TestServer {
 public:
  using Tweak = std::function<void(config::Config&)>;
  using Routes = std::function<void(http::Router&, fhir::SearchParamRegistry&)>;

  explicit TestServer(Tweak tweak = {}, Routes routes = {});
  ~TestServer();

  std::uint16_t port() const { return server_->https_port(); }
  std::uint16_t plain_port() const { return server_->http_port(); }
  ClientOptions client() const;
  void shutdown() { server_->shutdown(); }
  // Waits (bounded) for the server thread to finish after shutdown(); true when it did.
  bool wait_stopped(std::chrono::milliseconds limit);

  config::Config cfg;
  observe::Health health;
  observe::Metrics metrics;

 private:
  fhir::SearchParamRegistry params_;
  http::Router router_;
  std::unique_ptr<http::Pipeline> pipeline_;
  std::unique_ptr<net::Server> server_;
  std::thread thread_;
  std::atomic<bool> stopped_{false};
};

}  // namespace gw::test
