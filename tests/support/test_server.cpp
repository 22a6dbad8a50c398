// SPDX-License-Identifier: Apache-2.0
#include "support/test_server.h"

#include "gateway/http/system_routes.h"
#include "gateway/observe/log.h"
#include "support/certs.h"
#include "support/paths.h"

namespace gw::test {

TestServer::TestServer(Tweak tweak, Routes routes) {
  observe::set_level(observe::Level::warn);
  const DevCerts& certs = dev_certs();
  cfg.https.port = 0;
  cfg.https.certificate = certs.server_cert;
  cfg.https.private_key = certs.server_key;
  cfg.data_dir = temp_dir("server").string();
  cfg.access_log = false;
  cfg.limits.read_timeout = std::chrono::milliseconds(2000);
  if (tweak) tweak(cfg);
  config::validate(cfg);
  health.databases_ready = true;
  http::SystemRouteDeps deps{health, metrics, params_,
                             fhir::ServerDescription{"fhir-gateway", "test", cfg.public_base_url, "test", "2026-11-23",
                                                     false},
                             cfg.metrics_allow_remote};
  http::add_system_routes(router_, deps);
  if (routes) routes(router_, params_);
  http::add_metadata_route(router_, deps);
  http::PipelineLimits limits;
  limits.json.max_bytes = cfg.limits.max_body_bytes;
  pipeline_ = std::make_unique<http::Pipeline>(router_, limits);
  server_ = std::make_unique<net::Server>(cfg, *pipeline_, metrics, health);
  server_->start(false);
  thread_ = std::thread([this] {
    server_->run();
    stopped_ = true;
  });
}

TestServer::~TestServer() {
  server_->shutdown();
  if (thread_.joinable()) thread_.join();
}

bool TestServer::wait_stopped(std::chrono::milliseconds limit) {
  auto until = std::chrono::steady_clock::now() + limit;
  while (!stopped_ && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  return stopped_;
}

ClientOptions TestServer::client() const {
  ClientOptions o;
  o.ca_file = dev_certs().ca;
  return o;
}

}  // namespace gw::test
