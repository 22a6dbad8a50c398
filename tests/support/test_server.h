// SPDX-License-Identifier: Apache-2.0
// Runs the real gateway (gw::App: TLS, pipeline, access control, record locator, routes)
// in-process on an ephemeral loopback port, with optional extra routes, for integration tests.
// Tokens from support/tokens.h are trusted.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <thread>

#include "fhir/search_params.h"
#include "gateway/app.h"
#include "gateway/config/config.h"
#include "gateway/http/router.h"
#include "support/https_client.h"
#include "support/tokens.h"

namespace gw::test {

class TestServer {
 public:
  using Tweak = std::function<void(config::Config&)>;
  using Routes = std::function<void(http::Router&, fhir::SearchParamRegistry&)>;

  explicit TestServer(Tweak tweak = {}, Routes routes = {});
  ~TestServer();

  std::uint16_t port() const { return app_->server().https_port(); }
  std::uint16_t plain_port() const { return app_->server().http_port(); }
  ClientOptions client() const;
  void shutdown() { app_->server().shutdown(); }
  // Waits (bounded) for the server thread to finish after shutdown(); true when it did.
  bool wait_stopped(std::chrono::milliseconds limit);

  App& app() { return *app_; }
  locator::Locator& locator() { return app_->locator(); }
  observe::Metrics& metrics() { return app_->metrics(); }
  observe::Health& health() { return app_->health(); }

  config::Config cfg;

 private:
  std::unique_ptr<App> app_;
  std::thread thread_;
  std::atomic<bool> stopped_{false};
};

// One request over a new TLS connection to `s` (Connection: close), checked to get exactly one
// response. `headers` are whole header lines, each ending in CRLF. A body, or a POST or PUT,
// comes with Content-Type `content_type` and its Content-Length.
HttpResponse request(TestServer& s, const std::string& method, const std::string& target, const std::string& headers,
                  const std::string& body = {}, const std::string& content_type = "application/json");

}  // namespace gw::test
