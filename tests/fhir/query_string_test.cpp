// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include "fhir/query_string.h"

TEST_CASE("Query string: decodes percent escapes, plus and repeated names in order") {
  auto q = fhir::parse_query_string("a=1&b=x+y%20z&a=%7C&&empty=");
  REQUIRE(q.ok());
  REQUIRE(q->size() == 4);
  CHECK((*q)[0] == std::pair<std::string, std::string>{"a", "1"});
  CHECK((*q)[1].second == "x y z");
  CHECK((*q)[2].second == "|");
  CHECK((*q)[3].second.empty());
}

TEST_CASE("Query string: bad escapes, NUL, invalid UTF-8 and excess are refused") {
  for (const char* bad : {"a=%zz", "a=%4", "a=%00", "a=%C3%28", "=x"}) {
    CAPTURE(bad);
    auto q = fhir::parse_query_string(bad);
    REQUIRE_FALSE(q.ok());
    CHECK(q.issue().code == fhir::ErrorCode::bad_request);
  }
  fhir::QueryLimits limits;
  limits.max_params = 2;
  CHECK_FALSE(fhir::parse_query_string("a=1&b=2&c=3", limits).ok());
  limits.max_bytes = 3;
  CHECK_FALSE(fhir::parse_query_string("a=123", limits).ok());
}

TEST_CASE("Query string: text over the limit is a URL too long (414), a form body too large (413)") {
  fhir::QueryLimits limits;
  limits.max_bytes = 3;
  CHECK(fhir::parse_query_string("a=123", limits).issue().code == fhir::ErrorCode::uri_too_long);
  CHECK(fhir::http_status_for(fhir::ErrorCode::uri_too_long) == 414);
  limits.too_long = fhir::ErrorCode::payload_too_large;
  CHECK(fhir::parse_query_string("a=123", limits).issue().code == fhir::ErrorCode::payload_too_large);
}

TEST_CASE("Query string: percent_decode's errors name the text it was given") {
  auto query = fhir::percent_decode("a%zz");
  REQUIRE_FALSE(query.ok());
  CHECK(query.issue().diagnostics == "Malformed percent-encoding in the query (expected %XX with hex digits)");
  auto path = fhir::percent_decode("/Patient%ZZ/1", false, "path");
  REQUIRE_FALSE(path.ok());
  CHECK(path.issue().diagnostics == "Malformed percent-encoding in the path (expected %XX with hex digits)");
  CHECK(fhir::percent_decode("/a%00", false, "path").issue().diagnostics == "The path contains an encoded NUL byte");
  CHECK(fhir::percent_decode("/%C3%28", false, "path").issue().diagnostics ==
        "The path is not valid UTF-8 after percent-decoding");
  // parse_query_string names its text as its limits do: a POST _search body is not a query.
  CHECK(fhir::parse_query_string("family=%zz").issue().diagnostics ==
        "Malformed percent-encoding in the query string (expected %XX with hex digits)");
  fhir::QueryLimits form;
  form.what = "Form body";
  CHECK(fhir::parse_query_string("family=a%00", form).issue().diagnostics == "The form body contains an encoded NUL byte");
}

TEST_CASE("Query string: percent_encode leaves unreserved characters only") {
  CHECK(fhir::percent_encode("https://fhir.nhs.uk/Id/nhs-number|9000000009") ==
        "https%3A%2F%2Ffhir.nhs.uk%2FId%2Fnhs-number%7C9000000009");
  CHECK(fhir::is_valid_utf8("Ordóñez"));
  CHECK_FALSE(fhir::is_valid_utf8("\xED\xA0\x80"));  // surrogate
  CHECK_FALSE(fhir::is_valid_utf8("\xC0\xAF"));      // overlong
}
