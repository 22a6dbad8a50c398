// SPDX-License-Identifier: Apache-2.0
#include "gateway/http/locator_routes.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <ctime>
#include <memory>

#include "fhir/datatypes.h"
#include "fhir/date_range.h"
#include "fhir/nhs_number.h"
#include "gateway/net/http_date.h"
#include "fhir/query_string.h"
#include "fhir/uk_core.h"
#include "gateway/auth/authenticator.h"
#include "gateway/http/locator_api.h"

namespace gw::http {

using fhir::ErrorCode;
using fhir::Issue;
using fhir::Json;

using fhir::uk::kDocumentReferenceProfile;
using fhir::uk::kPatientProfile;

std::int64_t LocatorApi::now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Json LocatorApi::str(std::string_view s) { return fhir::text(s); }

Response LocatorApi::with_version_headers(Response r, std::int64_t version, const std::string& last_updated) {
  r.set_header("ETag", "W/\"" + std::to_string(version) + "\"");
  // R4 http.html "Resource Metadata and Versioning": Last-Modified SHOULD carry meta.lastUpdated.
  if (auto seconds = last_modified_seconds(last_updated)) r.set_header("Last-Modified", http_date(*seconds));
  return r;
}

// RFC 9110 15.4.5: a 304 carries the ETag the 200 would have; Last-Modified adds nothing to it.
Response LocatorApi::not_modified(std::int64_t version) {
  Response r;
  r.status = 304;
  r.set_header("ETag", "W/\"" + std::to_string(version) + "\"");
  return r;
}

std::optional<std::int64_t> LocatorApi::last_modified_seconds(const std::string& last_updated) {
  if (last_updated.empty()) return std::nullopt;
  auto range = fhir::parse_fhir_date(last_updated);
  if (!range) return std::nullopt;
  return range->begin;  // an HTTP-date has whole seconds: the second the instant falls in
}

std::string LocatorApi::http_date(std::int64_t epoch_seconds) {
  return net::format_http_date(static_cast<std::time_t>(epoch_seconds));
}

std::optional<std::int64_t> LocatorApi::http_date_seconds(std::string_view text) {
  if (text.empty() || text.size() > 64) return std::nullopt;
  const std::string s(text);
  // RFC 9110 5.6.7: recipients accept IMF-fixdate and the obsolete RFC 850 and asctime forms.
  for (const char* format : {"%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"}) {
    std::tm tm{};
    const char* end = strptime(s.c_str(), format, &tm);
    if (end != nullptr && *end == '\0') return static_cast<std::int64_t>(timegm(&tm));
  }
  return std::nullopt;
}

bool LocatorApi::unchanged_for(const Request& req, std::int64_t version, const std::string& last_updated) {
  // RFC 9110 13.2.2: If-None-Match, when present, decides alone; If-Modified-Since only
  // without it, and one that is not a valid HTTP-date is ignored (13.1.3).
  if (const std::string_view tags = req.header("if-none-match"); !tags.empty()) return if_none_match_hits(tags, version);
  const auto since = http_date_seconds(req.header("if-modified-since"));
  const auto modified = last_modified_seconds(last_updated);
  return since && modified && *modified <= *since;
}

locator::VersionMatch LocatorApi::etag_versions(std::string_view list) {
  locator::VersionMatch out;
  std::size_t i = 0;
  while (i < list.size()) {
    const char c = list[i];
    if (c == ' ' || c == '\t' || c == ',') {
      ++i;
      continue;
    }
    if (c == '*') {
      out.any = true;
      break;
    }
    if (list.compare(i, 2, "W/") == 0) i += 2;
    if (i >= list.size() || list[i] != '"') break;
    const std::size_t close = list.find('"', i + 1);
    if (close == std::string_view::npos) break;
    const std::string_view tag = list.substr(i + 1, close - i - 1);
    std::int64_t version = 0;
    const auto [end, ec] = std::from_chars(tag.data(), tag.data() + tag.size(), version);
    // Only the exact text a version is served as ("3", not "03" or "+3") names it.
    if (ec == std::errc() && end == tag.data() + tag.size() && tag == std::to_string(version))
      out.versions.push_back(version);
    i = close + 1;
  }
  return out;
}

bool LocatorApi::if_none_match_hits(std::string_view header, std::int64_t version) {
  if (header.empty()) return false;
  const locator::VersionMatch named = etag_versions(header);
  return named.any || std::find(named.versions.begin(), named.versions.end(), version) != named.versions.end();
}

fhir::Result<fhir::QueryParams> LocatorApi::form_search_params(const Request& req) {
  std::string_view ct = req.header("content-type");
  // No content, so no media type (RFC 9110 8.3): the parameters are all in the URL, which R4
  // http.html#search allows for POST _search as well.
  if (req.body.empty() && ct.empty()) return *req.query;
  std::string media(ct.substr(0, ct.find(';')));
  while (!media.empty() && media.back() == ' ') media.pop_back();
  for (char& c : media) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));  // RFC 9110 8.3.1
  if (media != "application/x-www-form-urlencoded")
    return Issue::make(ErrorCode::unsupported_media_type,
                       "send the search parameters as application/x-www-form-urlencoded");
  fhir::QueryLimits limits;
  limits.what = "Form body";
  limits.too_long = ErrorCode::payload_too_large;
  auto body = fhir::parse_query_string(req.body, limits);
  if (!body) return std::move(body).issue();
  fhir::QueryParams all = *req.query;
  for (auto& kv : *body) {
    if (auth::is_token_parameter(kv.first))
      return Issue::make(ErrorCode::unauthenticated,
                         "access tokens are not accepted in the body; send Authorization: Bearer");
    all.push_back(std::move(kv));
  }
  return all;
}

// The four token forms of R4 search.html#token, as a patient index can answer them.
fhir::Result<std::optional<locator::Identifier>> LocatorApi::identifier_from_token(const fhir::TokenValue& t,
                                                                                   std::string_view param) {
  using SystemMatch = fhir::TokenValue::SystemMatch;
  // |value asks for identifiers without a system. The index holds none (every identifier it
  // keeps has a system: validate_claim), so the answer is an empty result, not an error.
  if (t.system_match == SystemMatch::none) return std::optional<locator::Identifier>();
  // system| would list everyone holding an identifier of that system: a patient index answers
  // for one person (PDQm ITI-78 matches a person), and the index is not keyed by system.
  if (t.system_match == SystemMatch::exact && t.code.empty())
    return Issue::make(ErrorCode::invalid_search_parameter,
                       std::string(param) + "=system| (every patient with an identifier in that system) is not "
                                            "supported: give system|value, or the value alone",
                       std::string(param));
  if (t.system == locator::kNhsNumberSystem) {
    auto ok = fhir::validate_nhs_number(t.code);
    if (!ok) {
      Issue i = ok.issue();
      i.expression = std::string(param);
      return i;
    }
  }
  // A value alone (SystemMatch::any) keeps the empty system: Locator::search_patients then
  // matches it in any system, as a trusted NHS number only when it is a valid one.
  return std::optional<locator::Identifier>(locator::Identifier{t.system, t.code, {}});
}

fhir::Result<fhir::QueryParams> LocatorApi::page_params(const Request& req, std::string_view type) {
  return http::page_params(pages_, req, type);
}

fhir::Status LocatorApi::link_through_handle(Json& bundle, const Request& req, std::string_view type, Via via,
                                             std::string handle, const fhir::QueryParams& params,
                                             const fhir::SearchRequest& parsed, bool has_more) {
  return http::link_through_handle(pages_, deps_.base_url, bundle, req, type, via, std::move(handle), params, parsed,
                                   has_more);
}

void register_locator_search_params(fhir::SearchParamRegistry& registry) {
  using T = fhir::SearchParamType;
  const std::string sp = "http://hl7.org/fhir/SearchParameter/";
  registry.add("Patient", {"identifier", T::token, sp + "Patient-identifier",
                           "system|value or value (any system); NHS numbers are checked; |value matches nothing, "
                           "system| is refused"});
  registry.add("Patient", {"family", T::string, sp + "individual-family", "starts with, case and accent insensitive"});
  registry.add("Patient", {"given", T::string, sp + "individual-given", "starts with, case and accent insensitive"});
  registry.add("Patient", {"name", T::string, sp + "Patient-name", "family or given, starts with"});
  registry.add("Patient", {"birthdate", T::date, sp + "individual-birthdate", "prefixes eq ne gt lt ge le sa eb ap"});
  registry.add("Patient", {"gender", T::token, sp + "individual-gender", "male | female | other | unknown"});
  registry.add("Patient", {"address-postalcode", T::string, sp + "individual-address-postalcode",
                           "starts with, ignoring case and spaces"});
  registry.add("DocumentReference", {"subject", T::reference, sp + "DocumentReference-subject",
                                     "Patient/{id}, or :identifier=https://fhir.nhs.uk/Id/nhs-number|... (or the NHS "
                                     "number alone)"});
  registry.add("DocumentReference", {"patient", T::reference, sp + "clinical-patient", "Patient id"});
  registry.add("DocumentReference", {"type", T::token, sp + "clinical-type",
                                     "record type: system|code, code (any system) or system| (any code); |code "
                                     "matches none, as every type has a system"});
  registry.add("DocumentReference", {"custodian", T::reference, sp + "DocumentReference-custodian",
                                     ":identifier=https://fhir.nhs.uk/Id/ods-organization-code|{ODS code}"});
  registry.add("DocumentReference", {"date", T::date, sp + "DocumentReference-date",
                                     "prefixes eq ne gt lt ge le sa eb ap; repeat for a range"});
}

void add_locator_routes(Router& router, const fhir::SearchParamRegistry& registry, LocatorRouteDeps deps) {
  auto api = std::make_shared<LocatorApi>(registry, std::move(deps));
  using auth::Interaction;
  auto opts = [](std::string type, std::string interaction, Interaction check) {
    RouteOptions o;
    o.access = Access::resource;
    o.resource_type = std::move(type);
    o.interaction = std::move(interaction);
    o.auth_interaction = check;
    if (o.resource_type == "Patient") o.profile = std::string(kPatientProfile);
    if (o.resource_type == "DocumentReference") o.profile = std::string(kDocumentReferenceProfile);
    return o;
  };
  // Specific paths before /Patient/{id}.
  RouteOptions pix = opts("Patient", "", Interaction::search);
  pix.operation = "ihe-pix";
  pix.operation_definition = "https://profiles.ihe.net/ITI/PIXm/OperationDefinition/IHE.PIXm.pix";
  router.add("GET", "/Patient/$ihe-pix", [api](Request& r) { return api->pix(r); }, pix);
  RouteOptions post_search = opts("Patient", "", Interaction::search);
  router.add("POST", "/Patient/_search", [api](Request& r) { return api->search_patients_post(r); }, post_search);
  // Reads answer If-None-Match and If-Modified-Since with 304 (unchanged_for).
  RouteOptions read_patient = opts("Patient", "read", Interaction::read);
  read_patient.conditional_read = "full-support";
  router.add("GET", "/Patient/{id}", [api](Request& r) { return api->read_patient(r); }, read_patient);
  router.add("GET", "/Patient", [api](Request& r) { return api->search_patients_get(r); },
             opts("Patient", "search-type", Interaction::search));

  router.add("GET", "/DocumentReference", [api](Request& r) { return api->search_pointers_get(r); },
             opts("DocumentReference", "search-type", Interaction::search));
  router.add("POST", "/DocumentReference/_search", [api](Request& r) { return api->search_pointers_post(r); },
             opts("DocumentReference", "", Interaction::search));
  RouteOptions read_pointer = opts("DocumentReference", "read", Interaction::read);
  read_pointer.conditional_read = "full-support";
  router.add("GET", "/DocumentReference/{id}", [api](Request& r) { return api->read_pointer(r); }, read_pointer);
  // A create's Location names [id]/_history/[vid] (R4 http.html#create): a vread of the current
  // version, the only one kept, answers it; /_history itself stays not-supported (Router).
  RouteOptions vread_pointer = opts("DocumentReference", "vread", Interaction::read);
  vread_pointer.conditional_read = "full-support";
  router.add("GET", "/DocumentReference/{id}/_history/{vid}", [api](Request& r) { return api->read_pointer(r); },
             vread_pointer);
  RouteOptions create = opts("DocumentReference", "create", Interaction::create);
  create.json_body = true;
  router.add("POST", "/DocumentReference", [api](Request& r) { return api->write_pointer(r, true); }, create);
  RouteOptions update = opts("DocumentReference", "update", Interaction::update);
  update.json_body = true;
  update.update_create = true;  // Locator::put_pointer creates under an id it does not know
  router.add("PUT", "/DocumentReference/{id}", [api](Request& r) { return api->write_pointer(r, false); }, update);
  router.add("DELETE", "/DocumentReference/{id}", [api](Request& r) { return api->delete_pointer(r); },
             opts("DocumentReference", "delete", Interaction::remove));
}

}  // namespace gw::http
