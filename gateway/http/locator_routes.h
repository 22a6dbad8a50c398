// SPDX-License-Identifier: Apache-2.0
// The record locator's FHIR API (issue #3 item 4), every route behind authentication and the
// access policy (issue #5):
//   GET  /Patient/{id}                  read (ETag, Last-Modified, If-None-Match by weak
//                                       comparison, else If-Modified-Since; _summary,
//                                       _elements); a retired id reads
//                                       with Patient.link replaced-by
//   GET  /Patient, POST /Patient/_search  PDQ-style search (identifier, family, given, name,
//                                       birthdate, gender, address-postalcode, _count, _offset,
//                                       _summary=count, _elements); a POST _search's Bundle
//                                       links through a page handle (search_pages.h) that
//                                       GET /Patient?_getpages=...&_offset=n fetches, so no
//                                       search value appears in a URL
//   GET  /Patient/$ihe-pix              IHE PIXm cross-reference query (ITI-83)
//   GET  /DocumentReference             NRL-shaped pointers (subject:identifier, subject, patient;
//                                       type, custodian:identifier, date);
//                                       POST /DocumentReference/_search pages as Patient's
//   GET  /DocumentReference/{id}        read, conditional as Patient's
//   POST /DocumentReference, PUT/DELETE /DocumentReference/{id}   pointer maintenance by the
//                                       owning source system only; https URLs only; a PUT to
//                                       an unknown id creates it (201); If-Match on PUT and
//                                       DELETE, compared inside the write's own transaction
// Patient-level decisions (relationship, objection, break-glass, sensitivity) are made here
// because they need the locator's facts; a hidden patient is answered exactly as an unknown one.
#pragma once

#include <string>

#include "fhir/search_params.h"
#include "gateway/auth/policy.h"
#include "gateway/http/router.h"
#include "gateway/http/search_pages.h"
#include "gateway/locator/async_locator.h"
#include "gateway/observe/metrics.h"

namespace gw::http {

struct LocatorRouteDeps {
  locator::AsyncLocator& locator;
  const auth::Policy& policy;
  auth::BreakGlassRegistry& break_glass;
  std::string base_url;
  // Patient search: at most this many patients the caller may see (more: refine the search),
  // found among at most max_search_examined index entries (more: the search is too broad).
  std::size_t max_search_matches = 1000;
  std::size_t max_search_examined = 20000;
  // A trace on the emergency-purpose basis (no relationship): at most this many patients
  // opened on that basis (more: add detail), as PDS answers a trace.
  std::size_t max_emergency_matches = 10;
  // How long, and how many, POST _search page handles are kept (search_pages.h).
  SearchPagesOptions search_pages{};
};

// Declares the Patient and DocumentReference search parameters this API understands.
void register_locator_search_params(fhir::SearchParamRegistry& registry);

void add_locator_routes(Router& router, const fhir::SearchParamRegistry& registry, LocatorRouteDeps deps);

}  // namespace gw::http
