// SPDX-License-Identifier: Apache-2.0
// Issue #6: "every request in the access-control suites produces exactly one matching audit
// record". Suites collect the responses they got and hand them to this check at the end.
#pragma once

#include <vector>

#include "support/https_client.h"
#include "support/test_server.h"

namespace gw::test {

// For each response: its X-Request-ID names exactly one record in the server's audit log,
// with the same HTTP status. Returns how many responses were checked.
std::size_t check_one_audit_record_each(TestServer& s, const std::vector<HttpResponse>& responses);

// The audit records whose X-Request-ID is response `r`'s, newest first.
std::vector<audit::Record> audit_records_of(TestServer& s, const HttpResponse& r);
// The one audit record of response `r`: the test stops when there is not exactly one.
audit::Record audit_record_of(TestServer& s, const HttpResponse& r);

}  // namespace gw::test
