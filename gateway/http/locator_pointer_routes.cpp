// SPDX-License-Identifier: Apache-2.0
// The record locator's DocumentReference routes (locator_routes.h): NRL-shaped pointers, read
// and searched by clinicians, created, updated and deleted by the owning source system only.
#include <algorithm>
#include <memory>

#include "fhir/bundle.h"
#include "fhir/content_negotiation.h"
#include "fhir/datatypes.h"
#include "fhir/date_range.h"
#include "fhir/nhs_number.h"
#include "fhir/structure_check.h"
#include "fhir/uk_core.h"
#include "gateway/http/locator_api.h"
#include "gateway/http/locator_resources.h"
#include "gateway/locator/fhir_mapping.h"
#include "gateway/locator/index_transaction.h"
#include "gateway/observe/log.h"

namespace gw::http {

using boost::asio::awaitable;
using fhir::ErrorCode;
using fhir::Issue;
using fhir::Json;

namespace {

// A pointer id in the URL that is not a FHIR id can name no pointer: 400 on read, update and
// delete alike, whatever its length (R4 datatypes.html#id). Nothing is looked up, so the
// answer says nothing about what the index holds.
Issue malformed_pointer_id() {
  return Issue::make(ErrorCode::invalid_value,
                     "a DocumentReference id is 1 to 64 characters, each a letter, digit, '-' or '.'", "id");
}

// The If-Match of a pointer write, checked by the locator inside the write's transaction
// (Locator::put_pointer): nullopt when there is none. Read up to 256 bytes: a longer header
// names no more versions worth comparing.
std::optional<locator::VersionMatch> if_match_of(const Request& req) {
  std::string_view h = req.header("if-match");
  if (h.empty()) return std::nullopt;
  return LocatorApi::etag_versions(h.substr(0, 256));
}

// A pointer write's outcome, with the patients whose list of record holders it changed or
// tried to change: each is named in the audit record, so the write shows in that patient's
// "who accessed my record" report whether it succeeded or was refused.
template <class T>
struct Touching {
  // Implicit from a Result (and so from an Issue): BlockingPool reports a call that threw as
  // an Issue, and builds its answer from one (clang 14 has no parenthesised aggregate init).
  Touching(fhir::Result<T>&& r, std::vector<locator::PatientRecord> p = {})
      : result(std::move(r)), patients(std::move(p)) {}
  fhir::Result<T> result;
  std::vector<locator::PatientRecord> patients;
};

// Adds to `out` the active record `patient_id` resolves to (a retired record's survivor, where
// put_pointer files a pointer); an id the index does not hold adds nothing. Called before the
// write, so a failed read stops the write rather than leave it unnamed in the audit.
fhir::Status name_patient(locator::Locator& l, const std::string& patient_id, std::vector<locator::PatientRecord>& out) {
  auto rec = l.read_patient(patient_id);
  for (int hops = 0; rec && *rec && (*rec)->merged_into && hops < locator::kMaxMergeDepth; ++hops) {
    const std::string survivor = *(*rec)->merged_into;
    rec = l.read_patient(survivor);
  }
  if (!rec) return std::move(rec).issue();
  if (*rec) out.push_back(std::move(**rec));
  return fhir::Ok{};
}

}  // namespace

// Which categories of `p` this caller may not see (empty = visible).
bool LocatorApi::withheld(const Request& req, const locator::Pointer& p) {
  for (const auto& cat : deps_.policy.categories_of(p.type_system, p.type_code))
    if (!deps_.policy.may_see(*req.principal, cat)) return true;
  for (const auto& cat : deps_.policy.categories_of(fhir::uk::kSnomedSystem, p.category_code))
    if (!deps_.policy.may_see(*req.principal, cat)) return true;
  return false;
}

// GET /DocumentReference: a search, or a page of a POST _search by its handle.
awaitable<Response> LocatorApi::search_pointers_get(Request& req) {
  if (auto handle = req.query_value(kPageHandleParam)) {
    auto params = page_params(req, "DocumentReference");
    if (!params) co_return error_response(params.issue(), req.format.pretty);
    co_return co_await search_pointers(req, *params, Via::page, std::string(*handle));
  }
  co_return co_await search_pointers(req, *req.query, Via::get);
}

// POST /DocumentReference/_search, as NRL clients send it: parameters in the form body.
awaitable<Response> LocatorApi::search_pointers_post(Request& req) {
  auto all = form_search_params(req);
  if (!all) co_return error_response(all.issue(), req.format.pretty);
  co_return co_await search_pointers(req, *all, Via::post);
}

awaitable<Response> LocatorApi::search_pointers(Request& req, const fhir::QueryParams& params, Via via,
                                                std::string handle) {
  auto parsed = fhir::parse_search("DocumentReference", params, registry_,
                                   fhir::handling_from_prefer(req.header("prefer")));
  if (!parsed) co_return error_response(parsed.issue(), req.format.pretty);
  if (auto ok = gate_.check_search_scopes(req, *parsed, registry_); !ok)
    co_return error_response(ok.issue(), req.format.pretty);
  std::optional<locator::Identifier> by_identifier;
  bool matches_nobody = false;
  std::string patient_id;
  std::optional<fhir::TokenValue> type;
  std::optional<std::string> custodian;  // ODS code
  std::vector<std::pair<fhir::Prefix, fhir::DateRange>> dates;  // all must hold (AND), as birthdate
  // The patient is named once: subject=A&patient=B would otherwise answer for whichever came
  // last (and the same patient twice gains nothing).
  const std::size_t patient_params = std::count_if(parsed->params.begin(), parsed->params.end(), [](const auto& p) {
    return p.name == "subject" || p.name == "patient";
  });
  if (patient_params > 1)
    co_return error_response(Issue::make(ErrorCode::invalid_search_parameter,
                                         "name the patient once: give exactly one of subject:identifier=..., "
                                         "subject=Patient/{id} or patient={id}",
                                         "patient"),
                             req.format.pretty);
  for (const auto& p : parsed->params) {
    if (p.values.size() != 1)
      co_return error_response(Issue::make(ErrorCode::invalid_search_parameter, p.name + " takes one value here", p.name),
                               req.format.pretty);
    if ((p.name == "subject" || p.name == "patient") && p.modifier == "identifier") {
      auto id = identifier_from_token(std::get<fhir::TokenValue>(p.values[0]), p.name + ":identifier");
      if (!id) co_return error_response(id.issue(), req.format.pretty);
      if (!*id) {
        matches_nobody = true;  // |value: no identifier without a system is held
      } else if ((*id)->system.empty()) {
        // A value alone names one patient only as an NHS number, as NRL consumers send it
        // (NRL subject:identifier is the NHS number); a local value could name several.
        if (!fhir::is_valid_nhs_number((*id)->value))
          co_return error_response(
              Issue::make(ErrorCode::invalid_search_parameter,
                          p.name + ":identifier without a system must be a valid NHS number; for a local "
                                   "identifier give system|value",
                          p.name + ":identifier"),
              req.format.pretty);
        (*id)->system = locator::kNhsNumberSystem;
      }
      by_identifier = std::move(*id);
    } else if ((p.name == "subject" || p.name == "patient") && (p.modifier.empty() || p.modifier == "Patient")) {
      auto id = patient_id_of(std::get<fhir::ReferenceValue>(p.values[0]), deps_.base_url, p.name);
      if (!id) co_return error_response(id.issue(), req.format.pretty);
      patient_id = std::move(*id);
    } else if (p.name == "type" && p.modifier.empty()) {
      // Repeats are ANDed (R4 search.html) and a pointer has one type, so type=a&type=b could
      // only match nothing; the last one silently winning (as before) would widen a search
      // past the type=a a constrained scope granted. Refused as the client's mistake it is.
      if (type)
        co_return error_response(Issue::make(ErrorCode::invalid_search_parameter,
                                             "type may be given once (a pointer has one type)", "type"),
                                 req.format.pretty);
      type = std::get<fhir::TokenValue>(p.values[0]);
    } else if (p.name == "custodian" && p.modifier == "identifier") {
      // NRL consumers filter by the custodian's ODS code (custodian:identifier, R4 search.html
      // #reference); the index keeps custodians as ODS codes only.
      const auto& t = std::get<fhir::TokenValue>(p.values[0]);
      const bool ods = t.system_match == fhir::TokenValue::SystemMatch::any ||
                       (t.system_match == fhir::TokenValue::SystemMatch::exact && t.system == fhir::uk::kOdsOrganisationSystem);
      if (!ods || t.code.empty() || custodian)
        co_return error_response(Issue::make(ErrorCode::invalid_search_parameter,
                                             "custodian:identifier takes one ODS code: " +
                                                 std::string(fhir::uk::kOdsOrganisationSystem) + "|{code}, or the code alone",
                                             "custodian:identifier"), req.format.pretty);
      custodian = t.code;
    } else if (p.name == "date" && p.modifier.empty()) {
      const auto& dv = std::get<fhir::DateValue>(p.values[0]);
      dates.emplace_back(dv.prefix, dv.range);
    } else {
      co_return error_response(Issue::make(ErrorCode::invalid_search_parameter,
                                           p.name + (p.modifier.empty() ? "" : ":" + p.modifier) +
                                               " is not supported on DocumentReference here",
                                           p.name), req.format.pretty);
    }
  }
  if (auto ok = unserved_result_params(*parsed, fhir::handling_from_prefer(req.header("prefer")), "DocumentReference");
      !ok)
    co_return error_response(ok.issue(), req.format.pretty);
  // As on the clinical searches: _summary=count and _elements are served, _summary=true and
  // text are not (search_subset).
  auto subset = search_subset(*parsed, fhir::handling_from_prefer(req.header("prefer")), "DocumentReference");
  if (!subset) co_return error_response(subset.issue(), req.format.pretty);
  if ((by_identifier.has_value() || matches_nobody) == !patient_id.empty())
    co_return error_response(Issue::make(ErrorCode::missing_value,
                                         "give exactly one of subject:identifier=https://fhir.nhs.uk/Id/nhs-number|..., "
                                         "subject=Patient/{id} or patient={id}"),
                             req.format.pretty);
  // One searchset for every answer below, its links through a page handle for POST _search.
  auto searchset = [&](fhir::SearchsetPage page) -> fhir::Result<Json> {
    const bool has_more = page.has_more;
    Json bundle = fhir::make_searchset(deps_.base_url, *parsed, std::move(page), now_ms());
    if (auto s = link_through_handle(bundle, req, "DocumentReference", via, handle, params, *parsed, has_more); !s)
      return std::move(s).issue();
    return bundle;
  };
  // An empty Bundle for an unknown or hidden patient: the same answer either way.
  auto empty = [&]() {
    fhir::SearchsetPage none;
    none.total = 0;
    auto bundle = searchset(std::move(none));
    return bundle ? fhir_response(200, *bundle, req.format.pretty) : error_response(bundle.issue(), req.format.pretty);
  };
  if (matches_nobody) co_return empty();
  const Issue hidden = Issue::make(ErrorCode::not_found, "no such patient");
  auto access = co_await gate_.patient_access_to(req, by_identifier, patient_id, hidden);
  if (!access) {
    // Unknown and hidden patients: the same empty Bundle.
    if (access.issue().code == ErrorCode::not_found) co_return empty();
    co_return error_response(access.issue(), req.format.pretty);
  }
  const locator::PatientRecord& patient = access->judged;
  const auth::Decision& d = access->decision;
  const std::string pid = access->asked.id;  // pointers_for follows merges to the survivor
  auto list_pointers = [pid](locator::Locator& l) { return l.pointers_for(pid); };
  auto pointers = co_await deps_.locator.call(list_pointers);
  if (!pointers) co_return error_response(pointers.issue(), req.format.pretty);
  std::vector<Json> visible;
  std::size_t held_back = 0;
  const std::string nhs = patient.nhs_number_trusted ? patient.demographics.nhs_number : std::string();
  const std::int64_t now_seconds = now_ms() / 1000;
  for (const auto& p : *pointers) {
    if (type) {
      // |code asks for a type without a system (R4 search.html#token); every pointer's type has
      // one (validate_pointer), so it matches none rather than the code in any system.
      if (type->system_match == fhir::TokenValue::SystemMatch::none && !p.type_system.empty()) continue;
      if (type->system_match == fhir::TokenValue::SystemMatch::exact && type->system != p.type_system) continue;
      if (!type->code.empty() && type->code != p.type_code) continue;
    }
    if (custodian && p.source_ods != *custodian) continue;
    // date compares DocumentReference.date as served (R4 search.html#date: the value is a range
    // at its precision); a pointer without one matches no date.
    if (!dates.empty()) {
      auto served = fhir::parse_fhir_date(served_date(p));
      if (!served || !std::all_of(dates.begin(), dates.end(), [&](const auto& want) {
            return fhir::date_matches(want.first, want.second, *served, now_seconds);
          }))
        continue;
    }
    if (withheld(req, p)) {
      ++held_back;
      req.audit.withheld.push_back("DocumentReference/" + p.id);
      continue;
    }
    visible.push_back(pointer_json(p, nhs, d.break_glass));
  }
  fhir::SearchsetPage out;
  out.total = static_cast<std::int64_t>(visible.size());
  const bool count_only = parsed->summary == fhir::SummaryMode::count;  // the total alone
  const std::size_t from = std::min<std::size_t>(parsed->offset, visible.size());
  const std::size_t to = count_only ? from : std::min<std::size_t>(from + parsed->count, visible.size());
  for (std::size_t i = from; i < to; ++i) {
    req.audit.returned.push_back("DocumentReference/" + std::string(visible[i].string_at("id")));
    out.matches.push_back(subsetted(visible[i], *subset));
  }
  out.has_more = !count_only && to < visible.size();
  if (held_back > 0) out.outcomes.push_back(withheld_outcome(held_back, "record pointer"));
  auto bundle = searchset(std::move(out));
  if (!bundle) co_return error_response(bundle.issue(), req.format.pretty);
  Response r = fhir_response(200, *bundle, req.format.pretty);
  if (d.break_glass) r.set_header("X-Emergency-Access", "break-glass");
  co_return r;
}

awaitable<Response> LocatorApi::read_pointer(Request& req) {
  const std::string id = req.path_params.at(0);
  Issue unknown = Issue::make(ErrorCode::not_found, "No such DocumentReference, or you may not see it");
  if (!fhir::is_valid_id(id)) co_return error_response(malformed_pointer_id(), req.format.pretty);
  auto subset = read_subset(*req.query, fhir::handling_from_prefer(req.header("prefer")), registry_, "DocumentReference");
  if (!subset) co_return error_response(subset.issue(), req.format.pretty);
  auto read = [id](locator::Locator& l) { return l.read_pointer(id); };
  auto ptr = co_await deps_.locator.call(read);
  if (!ptr) co_return error_response(ptr.issue(), req.format.pretty);
  if (!*ptr) co_return error_response(unknown, req.format.pretty);
  locator::Pointer p = std::move(**ptr);
  auto access = co_await patient_access(req, p.patient_id, unknown);
  if (!access) co_return error_response(access.issue(), req.format.pretty);
  const auth::Decision& d = access->decision;
  if (withheld(req, p)) {
    req.audit.withheld.push_back("DocumentReference/" + p.id);
    co_return error_response(Issue::make(ErrorCode::forbidden,
                                         "this record pointer is withheld under the sensitivity policy for your role"),
                             req.format.pretty);
  }
  // A vread (GET .../_history/{vid}, the form of a create's Location): the index keeps only
  // the current version, which it answers as a read; any other is gone. Told only to a caller
  // who may read the pointer, after the same checks as a read.
  if (req.path_params.size() > 1 && req.path_params[1] != std::to_string(p.version))
    co_return error_response(Issue::make(ErrorCode::not_found,
                                         "No such version of this DocumentReference: only the current version, " +
                                             std::to_string(p.version) + ", is kept (GET /DocumentReference/" + p.id +
                                             " reads it)"),
                             req.format.pretty);
  if (!d.break_glass && unchanged_for(req, p.version, p.last_updated)) co_return not_modified(p.version);
  req.audit.returned.push_back("DocumentReference/" + p.id);
  const locator::PatientRecord& patient = access->judged;
  const std::string nhs = patient.nhs_number_trusted ? patient.demographics.nhs_number : std::string();
  Response r = with_version_headers(
      fhir_response(200, subsetted(pointer_json(p, nhs, d.break_glass), *subset), req.format.pretty), p.version,
      p.last_updated);
  if (d.break_glass) r.set_header("X-Emergency-Access", "break-glass");
  co_return r;
}

// Create (POST) or update (PUT) by the owning source system.
awaitable<Response> LocatorApi::write_pointer(Request& req, bool create) {
  const auth::Principal& who = *req.principal;
  if (who.kind != auth::Principal::Kind::system || who.organisation.empty())
    co_return error_response(Issue::make(ErrorCode::forbidden,
                                         "only a source system (system token or client certificate with an ODS "
                                         "code) may maintain record pointers"),
                             req.format.pretty);
  // The URL's id first, so a malformed one reads the same whatever the body holds.
  if (!create && !fhir::is_valid_id(req.path_params.at(0)))
    co_return error_response(malformed_pointer_id(), req.format.pretty);
  const Json& body = *req.json_body;
  if (body.string_at("resourceType") != "DocumentReference")
    co_return error_response(Issue::make(ErrorCode::invalid_resource, "the body must be a DocumentReference",
                                         "resourceType"), req.format.pretty);
  auto mapped = locator::pointer_from_document_reference(body, create);
  if (!mapped) co_return error_response(mapped.issue(), req.format.pretty);
  locator::Pointer p = std::move(*mapped);
  if (p.source_ods != who.organisation)
    co_return error_response(Issue::make(ErrorCode::forbidden, "custodian " + p.source_ods.substr(0, 16) +
                                                                   " is not your organisation; a source may only "
                                                                   "maintain its own pointers",
                                         "DocumentReference.custodian"), req.format.pretty);
  if (create) {
    p.id.clear();
  } else {
    const std::string& id = req.path_params.at(0);
    std::string_view body_id = body.string_at("id");
    if (body_id != id)
      co_return error_response(Issue::make(ErrorCode::invalid_resource, "the body's id must equal the id in the URL",
                                           "DocumentReference.id"), req.format.pretty);
    p.id = id;
  }
  // Subject by NHS number (NRL style), by reference, or both; both must then name the same
  // patient: a pointer silently filed under the other one would send clinicians to the
  // wrong person's record.
  const Json* subject = body.find("subject");
  const Json* ident = subject && subject->is_object() ? subject->find("identifier") : nullptr;
  const bool by_nhs = ident && ident->is_object() && ident->string_at("system") == locator::kNhsNumberSystem;
  if (p.patient_id.empty() && !by_nhs)
    co_return error_response(Issue::make(ErrorCode::invalid_resource,
                                         "subject needs reference Patient/{id} or an NHS number identifier",
                                         "DocumentReference.subject"), req.format.pretty);
  if (by_nhs) {
    std::string nhs(ident->string_at("value"));
    auto ok = fhir::validate_nhs_number(nhs);
    if (!ok) {
      Issue i = ok.issue();
      i.expression = "DocumentReference.subject.identifier.value";
      co_return error_response(i, req.format.pretty);
    }
    req.audit.patients.push_back(nhs);
    const std::string referenced = p.patient_id;
    // The NHS number's patient, and whether the reference names it (or a record merged into it).
    auto lookup = [nhs, referenced](locator::Locator& l) -> fhir::Result<std::pair<std::optional<std::string>, bool>> {
      auto found = l.lookup_identifier(locator::kNhsNumberSystem, nhs);
      if (!found) return std::move(found).issue();
      if (referenced.empty() || !*found || **found == referenced) return std::make_pair(*found, true);
      auto rec = l.read_patient(referenced);
      if (!rec) return std::move(rec).issue();
      return std::make_pair(*found, *rec && (*rec)->merged_into == **found);
    };
    auto found = co_await deps_.locator.call(lookup);
    if (!found) co_return error_response(found.issue(), req.format.pretty);
    if (!referenced.empty() && (!found->first || !found->second))
      co_return error_response(Issue::make(ErrorCode::invalid_resource,
                                           "subject.reference and subject.identifier name different patients; "
                                           "send one of them, or both for the same patient",
                                           "DocumentReference.subject"), req.format.pretty);
    if (!found->first)
      co_return error_response(Issue::make(ErrorCode::not_found, "no patient with that NHS number is indexed",
                                           "DocumentReference.subject"), req.format.pretty);
    if (referenced.empty()) p.patient_id = *found->first;
  }
  // If-Match (FHIR http.html "Managing Resource Contention"): the update applies only to the
  // version named, compared inside the locator's write transaction, so that of two updates
  // naming the same version one succeeds and the other gets 412.
  const std::optional<locator::VersionMatch> if_match = if_match_of(req);
  if (create && if_match)
    co_return error_response(Issue::make(ErrorCode::invalid_value, "If-Match applies to an update (PUT), not a create",
                                         "If-Match"), req.format.pretty);
  std::string acting = who.organisation;
  // The patients named are the one the pointer listed before (an update may move it to
  // another patient, or be refused) and the one it lists now.
  auto save = [acting, p, if_match](locator::Locator& l) -> Touching<locator::Pointer> {
    std::vector<locator::PatientRecord> named;
    fhir::Result<locator::Pointer> result = [&]() -> fhir::Result<locator::Pointer> {
      if (!p.id.empty()) {
        auto current = l.read_pointer(p.id);
        if (!current) return std::move(current).issue();
        if (*current)
          if (auto s = name_patient(l, (*current)->patient_id, named); !s) return s.issue();
      }
      if (auto s = name_patient(l, p.patient_id, named); !s) return s.issue();
      return l.put_pointer(acting, p, if_match);
    }();
    return {std::move(result), std::move(named)};
  };
  auto written = co_await deps_.locator.call_write(save);
  for (const auto& patient : written.patients) note_patient(req, patient);
  if (!written.result) co_return error_response(written.result.issue(), req.format.pretty);
  const locator::Pointer& stored = *written.result;
  req.audit.returned.push_back("DocumentReference/" + stored.id);
  // A PUT to an id the index does not know creates the pointer under it (updateCreate): 201.
  // Told by the version the write gave it, not by a read before the write, which another
  // write may have overtaken.
  const bool created = stored.version == 1;
  // Committed in locator.db before the record can be: a 503 from the audit step must not read
  // as "nothing happened" (a client that repeats a create makes a second pointer).
  req.change_made =
      Request::ChangeMade{"DocumentReference/" + stored.id + (created ? " was created" : " was updated"), nullptr};
  Response r = with_version_headers(
      fhir_response(created ? 201 : 200, pointer_json(stored, {}, false), req.format.pretty), stored.version,
      stored.last_updated);
  // R4 http.html#create: "Location: [base]/[type]/[id]/_history/[vid]", the version created.
  if (created)
    r.set_header("Location", deps_.base_url + "/DocumentReference/" + stored.id + "/_history/" +
                                 std::to_string(stored.version));
  co_return r;
}

awaitable<Response> LocatorApi::delete_pointer(Request& req) {
  const auth::Principal& who = *req.principal;
  if (who.kind != auth::Principal::Kind::system || who.organisation.empty())
    co_return error_response(Issue::make(ErrorCode::forbidden, "only a source system may maintain record pointers"),
                             req.format.pretty);
  const std::string id = req.path_params.at(0);
  if (!fhir::is_valid_id(id)) co_return error_response(malformed_pointer_id(), req.format.pretty);
  // If-Match as on PUT: the delete applies only to the version named, compared inside the
  // locator's write transaction.
  const std::optional<locator::VersionMatch> if_match = if_match_of(req);
  std::string acting = who.organisation;
  // The pointer's patient is named whether the delete succeeds or is refused.
  auto remove = [acting, id, if_match](locator::Locator& l) -> Touching<fhir::Ok> {
    std::vector<locator::PatientRecord> named;
    fhir::Status result = [&]() -> fhir::Status {
      auto current = l.read_pointer(id);
      if (!current) return std::move(current).issue();
      if (*current)
        if (auto s = name_patient(l, (*current)->patient_id, named); !s) return s.issue();
      return l.delete_pointer(acting, id, if_match);
    }();
    return {std::move(result), std::move(named)};
  };
  auto removed = co_await deps_.locator.call_write(remove);
  for (const auto& patient : removed.patients) note_patient(req, patient);
  if (!removed.result) co_return error_response(removed.result.issue(), req.format.pretty);
  req.audit.returned.push_back("DocumentReference/" + id);
  req.change_made = Request::ChangeMade{"DocumentReference/" + id + " was deleted", nullptr};
  Response r;
  r.status = 204;
  co_return r;
}

}  // namespace gw::http
