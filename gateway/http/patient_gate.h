// SPDX-License-Identifier: Apache-2.0
// The patient-level access decision every route that discloses one patient's data makes
// (issue #5): a break-glass request judged on the caller alone, the patient's record read
// from the locator, and the policy applied to the current facts (registered practice, care
// team, encounters, objection). Unknown and hidden patients come back as the same `hidden`
// Issue, so the answer never reveals that a hidden patient exists. Used by the locator's
// routes and by the clinical routes over store.db.
#pragma once

#include <optional>
#include <string>

#include <boost/asio/awaitable.hpp>

#include "fhir/search_params.h"
#include "gateway/auth/policy.h"
#include "gateway/http/locator_routes.h"
#include "gateway/http/request.h"
#include "gateway/locator/async_locator.h"

namespace gw::http {

class PatientGate {
 public:
  explicit PatientGate(const LocatorRouteDeps& deps) : deps_(deps) {}

  // A break-glass request (X-Break-Glass-Reason + X-Break-Glass-Justification) is judged on
  // the caller alone, so a refusal is the same whether or not `patient` (null: unknown) exists.
  // Asked for, granted or refused, the audit record carries the reason, the justification and
  // the patient. Returns true when a grant was made for `patient`; false without headers or
  // when there is no patient (the request is still judged, for nobody).
  fhir::Result<bool> maybe_break_glass(Request& req, const locator::PatientRecord* patient);
  // Copies the break-glass headers into the request's audit record (each cut to its limit on a
  // UTF-8 character boundary); false when the request asks for no break-glass. Also used by
  // the pipeline for requests refused before any patient was judged (a role that may not read
  // patient data, a scope that does not cover the route), which are attempts all the same.
  static bool note_break_glass_request(Request& req);

  // The patient-level decision on `rec`, within the request's patient context (patient/ scopes).
  auth::Decision decide(const Request& req, const locator::PatientRecord& rec);

  // The scope check of a search, on the parameters it applies (`search`, as parse_search kept
  // them: an unknown parameter dropped under lenient handling narrows nothing, so it satisfies
  // no constraint). Needed when only constrained scopes could grant the search
  // (req.scope_limits.search_unchecked); sets the patient context a patient/ scope binds the
  // search to. A refusal is `forbidden` naming what the token allows; `registry` lets it say
  // when a constraint names a parameter this gateway does not apply on the type.
  fhir::Status check_search_scopes(Request& req, const fhir::SearchRequest& search,
                                   const fhir::SearchParamRegistry& registry) const;

  // The patient `patient_id` as this caller may see it (a retired id is judged by its
  // survivor). Parameters are references: see AsyncLocator::call on g++ 12 and temporaries.
  struct PatientAccess {
    locator::PatientRecord asked;   // the record for patient_id (possibly retired)
    locator::PatientRecord judged;  // the record the decision was made on (the survivor)
    auth::Decision decision;
  };
  boost::asio::awaitable<fhir::Result<PatientAccess>> patient_access(Request& req, const std::string& patient_id,
                                                                     const fhir::Issue& hidden);
  // The same for the patient an identifier names, looked up and read in one locator call. An
  // unknown identifier gives `hidden` too, after a break-glass request was judged for nobody,
  // so the answers cannot tell unknown from hidden either.
  boost::asio::awaitable<fhir::Result<PatientAccess>> patient_access_by_identifier(
      Request& req, const locator::Identifier& identifier, const fhir::Issue& hidden);
  // For routes that name their patient either way (patient={id} or patient:identifier=...):
  // by the identifier when there is one, else by the id.
  boost::asio::awaitable<fhir::Result<PatientAccess>> patient_access_to(
      Request& req, const std::optional<locator::Identifier>& by_identifier, const std::string& patient_id,
      const fhir::Issue& hidden);

  // Adds the patient's NHS number to the request's audit record.
  static void note_patient(Request& req, const locator::PatientRecord& rec);
  // Keeps the weakest basis seen (break-glass, then emergency purpose, then any standing one).
  static void note_basis(Request& req, const auth::Decision& d);

 private:
  // The decision on a record read: a retired one judged by its survivor; `asked` is moved from.
  boost::asio::awaitable<fhir::Result<PatientAccess>> judge(Request& req, locator::PatientRecord& asked,
                                                            const fhir::Issue& hidden);
  const LocatorRouteDeps& deps_;
};

}  // namespace gw::http
