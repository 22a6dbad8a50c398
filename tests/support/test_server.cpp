// SPDX-License-Identifier: Apache-2.0
#include "support/test_server.h"

#include <doctest/doctest.h>

#include <filesystem>

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
  // Private, as the gateway makes a data directory it creates (else start-up warns of it).
  std::filesystem::permissions(cfg.data_dir, std::filesystem::perms::owner_all, std::filesystem::perm_options::replace);
  cfg.access_log = false;
  cfg.limits.read_timeout = std::chrono::milliseconds(2000);
  cfg.auth.jwks_file = test_tokens().jwks_path;
  cfg.auth.jwks_refresh = std::chrono::seconds(0);
  cfg.audit.signing_key = certs.audit_key;
  if (tweak) tweak(cfg);
  config::validate(cfg);
  app_ = std::make_unique<App>(cfg, AppInfo{"test", "2026-11-23", std::move(routes)});
  app_->server().start(false);
  thread_ = std::thread([this] {
    app_->server().run();
    stopped_ = true;
  });
}

TestServer::~TestServer() {
  app_->server().shutdown();
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

HttpResponse request(TestServer& s, const std::string& method, const std::string& target, const std::string& headers,
                  const std::string& body, const std::string& content_type) {
  std::string raw = method + " " + target + " HTTP/1.1\r\nHost: localhost\r\n" + headers;
  if (!body.empty() || method == "POST" || method == "PUT")
    raw += "Content-Type: " + content_type + "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  raw += "Connection: close\r\n\r\n" + body;
  auto ex = exchange(s.port(), raw, 1, s.client());
  REQUIRE_MESSAGE(ex.responses.size() == 1, ex.error);
  return ex.responses.front();
}

}  // namespace gw::test
