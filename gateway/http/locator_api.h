// SPDX-License-Identifier: Apache-2.0
// Inside the record locator's FHIR API (locator_routes.h): LocatorApi, the handlers its routes
// call. Patient read, search and PIX are in locator_patient_routes.cpp, DocumentReference
// pointers in locator_pointer_routes.cpp, what both use in locator_routes.cpp.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fhir/search_params.h"
#include "gateway/http/locator_routes.h"
#include "gateway/http/patient_gate.h"
#include "gateway/http/search_pages.h"

namespace gw::http {

class LocatorApi : public std::enable_shared_from_this<LocatorApi> {
 public:
  template <class T>
  using awaitable = boost::asio::awaitable<T>;
  using Issue = fhir::Issue;
  using Json = fhir::Json;

  LocatorApi(const fhir::SearchParamRegistry& registry, LocatorRouteDeps deps)
      : registry_(registry), deps_(std::move(deps)), gate_(deps_), pages_(deps_.search_pages) {}

  // ---- access (patient_gate.h) -------------------------------------------------------------

  using PatientAccess = PatientGate::PatientAccess;
  auth::Decision decide(const Request& req, const locator::PatientRecord& rec) { return gate_.decide(req, rec); }
  awaitable<fhir::Result<PatientAccess>> patient_access(Request& req, const std::string& patient_id,
                                                        const Issue& hidden) {
    return gate_.patient_access(req, patient_id, hidden);
  }
  static void note_patient(Request& req, const locator::PatientRecord& rec) { PatientGate::note_patient(req, rec); }
  static void note_basis(Request& req, const auth::Decision& d) { PatientGate::note_basis(req, d); }

  // ---- POST _search pages (search_pages.h) ---------------------------------------------------

  using Via = SearchVia;
  // http::page_params and http::link_through_handle over this API's handles.
  fhir::Result<fhir::QueryParams> page_params(const Request& req, std::string_view type);
  fhir::Status link_through_handle(Json& bundle, const Request& req, std::string_view type, Via via,
                                   std::string handle, const fhir::QueryParams& params,
                                   const fhir::SearchRequest& parsed, bool has_more);

  // ---- Patient (locator_patient_routes.cpp) ----------------------------------------------------

  awaitable<Response> read_patient(Request& req);
  // Builds the locator query from a parsed search; 400 for what this index cannot answer;
  // nullopt for a search that matches nobody (identifier=|value).
  fhir::Result<std::optional<locator::PatientQuery>> patient_query(const fhir::SearchRequest& s);

  // The patients a search matches that this caller may see, found by a bounded scan: the
  // relationship filter runs before the cap, so totals, paging and the cap describe only what
  // this caller may see (issue #5 "totals and paging stay honest"). At most
  // max_search_examined index entries are examined (more: 400, the search is too broad, whoever
  // asks), and more than max_search_matches visible ones is a 400 as well. An identifier search
  // names every patient it matched in the audit, visible or not (IG officers see attempts as
  // well as disclosures), and honours break-glass when it names one patient, as the read does.
  struct Visible {
    std::vector<locator::PatientRecord> records;
    std::vector<bool> break_glass;
  };
  awaitable<fhir::Result<Visible>> visible_matches(Request& req, locator::PatientQuery query);

  awaitable<Response> search_patients(Request& req, const fhir::QueryParams& params, Via via,
                                      std::string handle = {});
  // GET /Patient: a search, or a page of a POST _search by its handle.
  awaitable<Response> search_patients_get(Request& req);
  // POST /Patient/_search: parameters in the form body (form_search_params).
  awaitable<Response> search_patients_post(Request& req);
  // GET /Patient/$ihe-pix?sourceIdentifier=system|value[&targetSystem=...]
  awaitable<Response> pix(Request& req);

  // ---- DocumentReference (pointers: locator_pointer_routes.cpp) -------------------------------

  // Which categories of `p` this caller may not see (empty = visible).
  bool withheld(const Request& req, const locator::Pointer& p);
  // GET /DocumentReference: a search, or a page of a POST _search by its handle.
  awaitable<Response> search_pointers_get(Request& req);
  // POST /DocumentReference/_search, as NRL clients send it: parameters in the form body.
  awaitable<Response> search_pointers_post(Request& req);
  awaitable<Response> search_pointers(Request& req, const fhir::QueryParams& params, Via via,
                                      std::string handle = {});
  // GET /DocumentReference/{id}, and GET /DocumentReference/{id}/_history/{vid} (a vread: the
  // same answer when {vid} is the current version, else 404).
  awaitable<Response> read_pointer(Request& req);
  // Create (POST) or update (PUT) by the owning source system.
  awaitable<Response> write_pointer(Request& req, bool create);
  awaitable<Response> delete_pointer(Request& req);

  // ---- shared by both (locator_routes.cpp) ----------------------------------------------------

  static std::int64_t now_ms();
  static Json str(std::string_view s);
  // ETag from `version`, and Last-Modified from `last_updated` (meta.lastUpdated) when it parses.
  static Response with_version_headers(Response r, std::int64_t version, const std::string& last_updated);
  static Response not_modified(std::int64_t version);
  // The epoch second of a FHIR instant, the resolution of an HTTP-date; nullopt if it does not parse.
  static std::optional<std::int64_t> last_modified_seconds(const std::string& last_updated);
  // Epoch seconds as an RFC 9110 IMF-fixdate, e.g. "Sun, 06 Nov 1994 08:49:37 GMT".
  static std::string http_date(std::int64_t epoch_seconds);
  // An RFC 9110 HTTP-date in any of its three forms as epoch seconds; nullopt when it is none.
  static std::optional<std::int64_t> http_date_seconds(std::string_view text);
  // Whether a conditional read may answer 304 (R4 http.html "conditional read"): If-None-Match
  // names `version`, or, without If-None-Match, If-Modified-Since is not before `last_updated`.
  static bool unchanged_for(const Request& req, std::int64_t version, const std::string& last_updated);
  // The versions an entity-tag list (If-None-Match, If-Match) names, by the weak comparison
  // RFC 9110 13.1.2 asks of If-None-Match: W/"3", "3" and * all name version 3. A tag may hold
  // commas, so the list is read tag by tag rather than split; a tag that is not a version names
  // nothing, and the list ends at anything that is not an entity tag.
  static locator::VersionMatch etag_versions(std::string_view list);
  static bool if_none_match_hits(std::string_view header, std::int64_t version);
  // The parameters of a POST _search (R4 http.html#search): an application/x-www-form-urlencoded
  // body, so NHS numbers stay out of URLs and logs, merged with any in the URL.
  static fhir::Result<fhir::QueryParams> form_search_params(const Request& req);
  // The identifier a token search names (R4 search.html#token), `param` naming it in errors:
  // system|value, or value alone as an identifier with an empty system (any system); nullopt
  // for |value, which matches nothing here; system| is invalid_search_parameter, and an
  // invalid NHS number under the NHS number system is invalid_nhs_number.
  static fhir::Result<std::optional<locator::Identifier>> identifier_from_token(const fhir::TokenValue& t,
                                                                                std::string_view param);

 private:
  const fhir::SearchParamRegistry& registry_;
  LocatorRouteDeps deps_;
  PatientGate gate_;
  SearchPages pages_;
};

}  // namespace gw::http
