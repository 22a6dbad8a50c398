// SPDX-License-Identifier: Apache-2.0
// POST _search page handles (gateway/http/search_pages.h): bound to their owner, expiring,
// bounded in number, and links that carry nothing but the handle and an offset.
#include <doctest/doctest.h>

#include <set>

#include "gateway/http/search_pages.h"

using namespace gw;
using gw::http::SearchPages;
using gw::http::SearchPagesOptions;

namespace {

struct FakeClock {
  std::chrono::steady_clock::time_point now{};
  SearchPages::Clock fn() {
    return [this] { return now; };
  }
};

auth::Principal user(const std::string& sub, const std::string& client = "app-1") {
  auth::Principal p;
  p.subject = sub;
  p.client_id = client;
  return p;
}

const fhir::QueryParams kSearch{{"identifier", "https://fhir.nhs.uk/Id/nhs-number|9990000018"},
                                {"_count", "10"},
                                {"_offset", "20"}};

}  // namespace

TEST_CASE("SearchPages: a handle gives its owner the search back, without its _offset") {
  FakeClock clock;
  SearchPages pages({}, clock.fn());
  auto handle = pages.keep(user("dr-1"), "Patient", kSearch);
  REQUIRE(handle.ok());
  CHECK(handle->size() == 32);
  CHECK(handle->find_first_not_of("0123456789abcdef") == std::string::npos);
  auto found = pages.find(*handle, user("dr-1"), "Patient");
  REQUIRE(found.ok());
  CHECK(*found == fhir::QueryParams{{"identifier", "https://fhir.nhs.uk/Id/nhs-number|9990000018"}, {"_count", "10"}});
  // Unguessable: no two alike.
  std::set<std::string> seen{*handle};
  for (int i = 0; i < 100; ++i) CHECK(seen.insert(*pages.keep(user("dr-1"), "Patient", kSearch)).second);
}

TEST_CASE("SearchPages: another user's or client's handle is 403; an unknown one, or another type's, is 410") {
  FakeClock clock;
  SearchPages pages({}, clock.fn());
  const std::string handle = *pages.keep(user("dr-1"), "Patient", kSearch);
  for (const auth::Principal& other : {user("dr-2"), user("dr-1", "other-app")}) {
    auto refused = pages.find(handle, other, "Patient");
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.issue().code == fhir::ErrorCode::forbidden);
    CHECK(refused.issue().diagnostics ==
          "this search page belongs to a search another user or client ran; send your own search");
  }
  auth::Principal system = user("dr-1");
  system.kind = auth::Principal::Kind::system;  // the same name as a system is someone else
  CHECK(pages.find(handle, system, "Patient").issue().code == fhir::ErrorCode::forbidden);
  CHECK(pages.find(handle, user("dr-1"), "DocumentReference").issue().code == fhir::ErrorCode::gone);
  auto unknown = pages.find("0123456789abcdef0123456789abcdef", user("dr-1"), "Patient");
  REQUIRE_FALSE(unknown.ok());
  CHECK(unknown.issue().code == fhir::ErrorCode::gone);
  CHECK(fhir::http_status_for(unknown.issue().code) == 410);
}

TEST_CASE("SearchPages: a handle expires after its time to live") {
  FakeClock clock;
  SearchPagesOptions o;
  o.ttl = std::chrono::seconds(600);
  SearchPages pages(o, clock.fn());
  const std::string handle = *pages.keep(user("dr-1"), "Patient", kSearch);
  clock.now += std::chrono::seconds(599);
  CHECK(pages.find(handle, user("dr-1"), "Patient").ok());
  clock.now += std::chrono::seconds(1);
  auto expired = pages.find(handle, user("dr-1"), "Patient");
  REQUIRE_FALSE(expired.ok());
  CHECK(expired.issue().code == fhir::ErrorCode::gone);
  CHECK(expired.issue().diagnostics.find("expired") != std::string::npos);
  CHECK(pages.size() == 0);  // and its memory is given back
}

TEST_CASE("SearchPages: at most `capacity` handles are kept, the oldest given up first") {
  FakeClock clock;
  SearchPagesOptions o;
  o.capacity = 3;
  SearchPages pages(o, clock.fn());
  std::vector<std::string> handles;
  for (int i = 0; i < 5; ++i) {
    handles.push_back(*pages.keep(user("dr-1"), "Patient", kSearch));
    clock.now += std::chrono::seconds(1);
  }
  CHECK(pages.size() == 3);
  CHECK(pages.find(handles[0], user("dr-1"), "Patient").issue().code == fhir::ErrorCode::gone);
  CHECK(pages.find(handles[1], user("dr-1"), "Patient").issue().code == fhir::ErrorCode::gone);
  for (int i = 2; i < 5; ++i) CHECK(pages.find(handles[i], user("dr-1"), "Patient").ok());
}

TEST_CASE("SearchPages: page links carry the handle and an offset, nothing of the search") {
  const fhir::Json links = http::page_links("https://gw.example/fhir", "Patient", "abc123", 20, 10, true);
  std::vector<std::pair<std::string, std::string>> got;
  for (const auto& l : links.items()) got.emplace_back(l.string_at("relation"), l.string_at("url"));
  const std::string stem = "https://gw.example/fhir/Patient?_getpages=abc123&_offset=";
  CHECK(got == std::vector<std::pair<std::string, std::string>>{
                   {"self", stem + "20"}, {"first", stem + "0"}, {"previous", stem + "10"}, {"next", stem + "30"}});
  const fhir::Json last = http::page_links("https://gw.example/fhir", "Patient", "abc123", 0, 10, false);
  CHECK(last.items().size() == 2);  // self and first: no previous before 0, no next after the end
}
