// SPDX-License-Identifier: Apache-2.0
// Searches that ask more than the gateway examines: the answer tells the client to narrow the
// search (issue.code too-costly), never to retry it (throttled, which means "back off").
#include <doctest/doctest.h>

#include <condition_variable>
#include <mutex>
#include <optional>

#include "gateway/store/store.h"
#include "support/responses.h"
#include "support/seed.h"
#include "support/test_server.h"

using namespace gw;
using gw::test::HttpResponse;
using gw::test::TestServer;

TEST_CASE("Search cost: a clinical search cut at the store's scan limit warns too-costly, not throttled") {
  TestServer s;
  test::Seeded p = test::add_patient(s.locator(), 1, "Scanned", "A81001");
  // One message with more Observations than one search examines (StoreOptions::max_scan).
  const std::size_t n = store::StoreOptions{}.max_scan + 1;
  std::vector<fhir::Json> obs;
  obs.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    auto j = fhir::parse_json(R"({"resourceType":"Observation","id":"o)" + std::to_string(i) +
                              R"(","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"2093-3"}]},)"
                              R"("subject":{"reference":"Patient/)" + p.id + R"("},"effectiveDateTime":"2026-11-01"})");
    REQUIRE(j.ok());
    obs.push_back(std::move(*j));
  }
  store::MessageWrite m;
  m.source = "pas";
  m.kind = "ORU^R01";
  m.dedupe_key = "many";
  m.raw = "raw";
  m.reply = "MSA|AA|many";
  m.patient_id = p.id;
  std::mutex mu;
  std::condition_variable cv;
  std::optional<fhir::Result<store::ApplyResult>> applied;
  s.app().store().apply(m, std::move(obs), [&](fhir::Result<store::ApplyResult> r) {
    std::lock_guard lock(mu);
    applied.emplace(std::move(r));
    cv.notify_all();
  });
  {
    std::unique_lock lock(mu);
    REQUIRE(cv.wait_for(lock, std::chrono::seconds(120), [&] { return applied.has_value(); }));
  }
  REQUIRE_MESSAGE(applied->ok(), applied->issue().diagnostics);

  // The patient's GP practice: a relationship, so the search is answered.
  HttpResponse r = test::get(s.port(), "/Observation?patient=" + p.id + "&_count=1", s.client(),
                             test::test_tokens().header());
  REQUIRE_MESSAGE(r.status == 200, r.body);
  fhir::Json bundle = test::json_of(r);
  const fhir::Json* warning = nullptr;
  for (const auto& e : bundle.find("entry")->items())
    if (e.find("resource")->string_at("resourceType") == "OperationOutcome") warning = e.find("resource");
  REQUIRE_MESSAGE(warning, r.body);
  const fhir::Json& issue = warning->find("issue")->items().at(0);
  CHECK(issue.string_at("severity") == "warning");
  CHECK(issue.string_at("code") == "too-costly");
  CHECK(issue.string_at("diagnostics").find("narrow it") != std::string_view::npos);
  CHECK(r.body.find("TOO_MANY_REQUESTS") == std::string::npos);
}
