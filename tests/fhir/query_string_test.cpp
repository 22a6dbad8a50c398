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

TEST_CASE("Query string: utf8_cut never splits a character, whatever the limit") {
  const std::string s = "ab\xC3\xA9" "c\xE2\x82\xAC" "d\xF0\x9F\x98\x80";  // ab é c € d 😀
  for (std::size_t max = 0; max <= s.size() + 1; ++max) {
    const std::size_t n = fhir::utf8_cut(s, max);
    CHECK(n <= max);
    CHECK(fhir::is_valid_utf8(std::string_view(s).substr(0, n)));
  }
  CHECK(fhir::utf8_cut(s, 3) == 2);   // inside é: cut before it
  CHECK(fhir::utf8_cut(s, 4) == 4);   // right after é
  CHECK(fhir::utf8_cut(s, 12) == 9);  // inside the emoji
  CHECK(fhir::utf8_cut(s, 100) == s.size());
}

TEST_CASE("Query string: valid_utf8 replaces every ill-formed byte with U+FFFD and keeps the rest") {
  const std::string fffd = "\xEF\xBF\xBD";
  CHECK(fhir::valid_utf8("Ordóñez") == "Ordóñez");
  CHECK(fhir::valid_utf8("") == "");
  CHECK(fhir::valid_utf8("abc\xC3") == "abc" + fffd);                       // cut inside a character
  CHECK(fhir::valid_utf8("\xC0\xAFx") == fffd + fffd + "x");                // overlong
  CHECK(fhir::valid_utf8("\xED\xA0\x80") == fffd + fffd + fffd);            // surrogate
  CHECK(fhir::valid_utf8("\xF4\x90\x80\x80") == fffd + fffd + fffd + fffd);  // above U+10FFFF
  CHECK(fhir::valid_utf8("a\xFF" "b\xE2\x82\xAC") == "a" + fffd + "b\xE2\x82\xAC");
  for (const std::string bad : {"\xC3", "\x80\x80", "x\xE2\x82", "\xF0\x9F\x98"})
    CHECK(fhir::is_valid_utf8(fhir::valid_utf8(bad)));
}
