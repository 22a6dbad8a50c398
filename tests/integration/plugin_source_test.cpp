// SPDX-License-Identifier: Apache-2.0
// Plug-in sources in a running gateway (gw::App with the example plug-in,
// adapters/examples/example_adapter.c): what a refused batch leaves behind for operators and
// IG officers, and a plug-in whose start fails.
#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <thread>

#include "gateway/audit/log.h"
#include "gateway/store/store.h"
#include "support/https_client.h"
#include "support/test_server.h"

namespace gw {
namespace {

using namespace std::chrono_literals;

config::SourceSystemConfig example_source(std::vector<std::pair<std::string, std::string>> settings) {
  config::SourceSystemConfig src;
  src.ods_code = "RXP01";
  src.name = "vendor-example";
  src.adapter = "plugin";
  src.plugin = GW_EXAMPLE_PLUGIN;
  src.settings = std::move(settings);
  return src;
}

// Polls `done` for up to ~5 s.
bool eventually(const std::function<bool()>& done) {
  for (int i = 0; i < 100 && !done(); ++i) std::this_thread::sleep_for(50ms);
  return done();
}

}  // namespace

TEST_CASE("Plug-in source: a refused batch is counted as rejected, kept, and audited naming its patient") {
  // The example pushes, on start, a batch with a Condition (not a type the gateway serves):
  // refused at once, GW_ERR_INVALID.
  test::TestServer s([](config::Config& c) { c.source_systems.push_back(example_source({{"ingest_on_start", "unserved"}})); });
  REQUIRE(eventually([&] {
    return s.metrics().render().find("gateway_ingest_units_total{outcome=\"rejected\"} 1") != std::string::npos;
  }));

  store::MessageQuery q;
  q.status = store::MessageStatus::rejected;
  auto rejected = s.app().store().list_messages(q);
  REQUIRE(rejected.ok());
  REQUIRE(rejected->size() == 1);
  CHECK((*rejected)[0].source == "vendor-example");

  REQUIRE(s.app().audit_log() != nullptr);
  std::vector<audit::Record> records;
  REQUIRE(eventually([&] {
    audit::Query aq;
    aq.patient = "9000000009";
    auto page = s.app().audit_log()->search(aq);
    REQUIRE(page.ok());
    records = page->records;
    return !records.empty();
  }));
  REQUIRE(records.size() == 1);
  CHECK(records[0].action == "ingest-rejected");
  CHECK(records[0].source == "vendor-example");
  CHECK(records[0].outcome_text.find("is a Condition") != std::string::npos);
}

TEST_CASE("Plug-in source: a plug-in whose start fails leaves that source down, not the gateway") {
  // Before the fix the whole App refused to start (an exception out of the constructor).
  test::TestServer s([](config::Config& c) {
    auto down = example_source({{"fail_start", "true"}});
    down.name = "vendor-down";
    down.ods_code = "RXD01";
    c.source_systems.push_back(down);
    c.source_systems.push_back(example_source({}));
  });
  CHECK(s.app().adapter("vendor-down") == nullptr);
  CHECK(s.app().adapter("vendor-example") != nullptr);
  const std::string metrics = s.metrics().render();
  CHECK(metrics.find("gateway_source_up{source=\"vendor-down\"} 0") != std::string::npos);
  CHECK(metrics.find("gateway_source_up{source=\"vendor-example\"} 1") != std::string::npos);
  // The FHIR API is up and ready.
  test::HttpResponse ready = test::get(s.port(), "/readyz", s.client());
  CHECK(ready.status == 200);
  CHECK(test::get(s.port(), "/metadata", s.client()).status == 200);
}

}  // namespace gw
