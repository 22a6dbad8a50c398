// SPDX-License-Identifier: Apache-2.0
#include "support/audit_check.h"

#include <doctest/doctest.h>

#include <map>

namespace gw::test {

std::size_t check_one_audit_record_each(TestServer& s, const std::vector<HttpResponse>& responses) {
  REQUIRE(s.app().audit_log() != nullptr);
  audit::Query q;
  q.count = 1000000;
  q.newest_first = false;
  auto page = s.app().audit_log()->search(q);
  REQUIRE_MESSAGE(page.ok(), page.issue().diagnostics);
  std::map<std::string, std::vector<int>> statuses;  // request id -> statuses of its records
  for (const auto& r : page->records) statuses[r.request_id].push_back(r.status);
  std::size_t checked = 0, missing = 0, duplicated = 0, mismatched = 0;
  for (const auto& r : responses) {
    const std::string id = r.header("x-request-id");
    REQUIRE(!id.empty());
    const auto it = statuses.find(id);
    if (it == statuses.end()) ++missing;
    else if (it->second.size() != 1) ++duplicated;
    else if (it->second.front() != r.status) ++mismatched;
    ++checked;
  }
  CHECK(missing == 0);
  CHECK(duplicated == 0);
  CHECK(mismatched == 0);
  return checked;
}

std::vector<audit::Record> audit_records_of(TestServer& s, const HttpResponse& r) {
  REQUIRE(s.app().audit_log() != nullptr);
  const std::string id = r.header("x-request-id");
  REQUIRE(!id.empty());
  audit::Query q;
  q.count = 100000;
  auto page = s.app().audit_log()->search(q);
  REQUIRE_MESSAGE(page.ok(), page.issue().diagnostics);
  std::vector<audit::Record> found;
  for (auto& rec : page->records)
    if (rec.request_id == id) found.push_back(std::move(rec));
  return found;
}

audit::Record audit_record_of(TestServer& s, const HttpResponse& r) {
  std::vector<audit::Record> found = audit_records_of(s, r);
  REQUIRE_MESSAGE(found.size() == 1, "audit records for " << r.header("x-request-id") << ": " << found.size());
  return std::move(found.front());
}

}  // namespace gw::test
