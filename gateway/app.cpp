// SPDX-License-Identifier: Apache-2.0
#include "gateway/app.h"

#include <filesystem>
#include <stdexcept>

#include "gateway/http/locator_routes.h"
#include "gateway/http/smart_routes.h"
#include "gateway/http/system_routes.h"
#include "gateway/locator/sqlite_locator.h"
#include "gateway/observe/log.h"

namespace gw {

App::App(config::Config cfg, AppInfo info) : cfg_(std::move(cfg)) {
  auto dbs = store::Databases::open(cfg_.data_dir);
  if (!dbs) throw std::runtime_error("cannot open databases: " + dbs.issue().diagnostics);
  databases_ = std::make_unique<store::Databases>(std::move(*dbs));

  locator::SqliteLocatorOptions lo;
  auto loc = locator::open_sqlite_locator((std::filesystem::path(cfg_.data_dir) / "locator.db").string(), lo);
  if (!loc) throw std::runtime_error("cannot open the record locator: " + loc.issue().diagnostics);
  locator_ = std::move(*loc);
  async_locator_ = std::make_unique<locator::AsyncLocator>(*locator_, lo.read_connections + 4);
  for (const auto& s : cfg_.source_systems) {
    auto ok = locator_->upsert_source_system(locator::SourceSystem{s.ods_code, s.name, s.adapter, s.endpoint});
    if (!ok) throw std::runtime_error("cannot register source system " + s.ods_code + ": " + ok.issue().diagnostics);
  }
  health_.databases_ready = true;

  auto policy = auth::Policy::make(cfg_.auth.policy);
  if (!policy)
    throw config::ConfigError(cfg_.source_file.empty() ? "(defaults)" : cfg_.source_file, "auth",
                              policy.issue().diagnostics);
  policy_ = std::make_unique<auth::Policy>(std::move(*policy));
  authenticator_ = std::make_unique<auth::Authenticator>(cfg_.auth, cfg_.source_systems);
  if (!cfg_.auth.enabled)
    observe::log(observe::Level::warn, "token validation is DISABLED (development mode, loopback only)",
                 {{"role", cfg_.auth.development_role}});

  fhir::ServerDescription server{"fhir-gateway", info.version, cfg_.public_base_url,
                                 "Single patient record interoperability gateway", info.release_date,
                                 cfg_.auth.enabled, cfg_.auth.authorization_endpoint, cfg_.auth.token_endpoint};
  http::SystemRouteDeps deps{health_, metrics_, search_params_, server, cfg_.metrics_allow_remote};
  http::add_system_routes(router_, deps);
  http::add_smart_configuration_route(router_, cfg_);
  http::register_locator_search_params(search_params_);
  http::add_locator_routes(router_, search_params_,
                           http::LocatorRouteDeps{*async_locator_, *policy_, break_glass_, cfg_.public_base_url});
  if (info.extra_routes) info.extra_routes(router_, search_params_);
  http::add_metadata_route(router_, deps);  // last: generated from the final route table

  http::PipelineLimits limits;
  limits.json.max_bytes = cfg_.limits.max_body_bytes;
  pipeline_ = std::make_unique<http::Pipeline>(router_, limits, authenticator_.get(), policy_.get());
  server_ = std::make_unique<net::Server>(cfg_, *pipeline_, metrics_, health_);

  if (cfg_.auth.enabled && cfg_.auth.jwks_refresh.count() > 0) refresher_ = std::thread([this] { refresh_loop(); });
}

App::~App() {
  {
    std::lock_guard lock(refresh_mu_);
    stopping_ = true;
  }
  refresh_cv_.notify_all();
  if (refresher_.joinable()) refresher_.join();
  server_.reset();          // no more requests
  async_locator_.reset();   // finish queued locator calls
  locator_.reset();
}

void App::refresh_loop() {
  std::unique_lock lock(refresh_mu_);
  while (!stopping_) {
    refresh_cv_.wait_for(lock, cfg_.auth.jwks_refresh, [this] { return stopping_; });
    if (stopping_) break;
    lock.unlock();
    authenticator_->refresh_keys();
    lock.lock();
  }
}

}  // namespace gw
