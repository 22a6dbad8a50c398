// SPDX-License-Identifier: Apache-2.0
#include "gateway/http/clinical_routes.h"

#include <algorithm>
#include <chrono>
#include <memory>

#include "adapters/adapter.h"
#include "fhir/bundle.h"
#include "fhir/nhs_number.h"
#include "fhir/structure_check.h"
#include "gateway/http/locator_api.h"
#include "gateway/http/locator_resources.h"
#include "gateway/http/patient_gate.h"
#include "gateway/http/search_pages.h"

namespace gw::http {

using boost::asio::awaitable;
using fhir::ErrorCode;
using fhir::Issue;
using fhir::Json;

namespace {

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

constexpr const char* kSearchTypes[] = {"Encounter", "Observation", "DiagnosticReport"};

Issue bad_param(const std::string& name, const std::string& why) {
  return Issue::make(ErrorCode::invalid_search_parameter, name + ": " + why, name);
}

class ClinicalApi {
 public:
  ClinicalApi(const fhir::SearchParamRegistry& registry, ClinicalRouteDeps deps)
      : registry_(registry), deps_(std::move(deps)), gate_(deps_.locator), pages_(deps_.locator.search_pages) {}

  // GET /{type}: a search, or a page of a POST _search by its handle.
  awaitable<Response> search_get(Request& req, std::string type) {
    if (auto handle = req.query_value(kPageHandleParam)) {
      auto params = page_params(pages_, req, type);
      if (!params) co_return error_response(params.issue(), req.format.pretty);
      co_return co_await search(req, type, *params, SearchVia::page, std::string(*handle));
    }
    co_return co_await search(req, type, *req.query, SearchVia::get, {});
  }

  // POST /{type}/_search: parameters in a form body, so the NHS number stays out of the URL and
  // of every page link.
  awaitable<Response> search_post(Request& req, std::string type) {
    auto all = LocatorApi::form_search_params(req);
    if (!all) co_return error_response(all.issue(), req.format.pretty);
    co_return co_await search(req, type, *all, SearchVia::post, {});
  }

  awaitable<Response> search(Request& req, const std::string& type, const fhir::QueryParams& params, SearchVia via,
                             std::string handle) {
    auto parsed = fhir::parse_search(type, params, registry_, fhir::handling_from_prefer(req.header("prefer")));
    if (!parsed) co_return error_response(parsed.issue(), req.format.pretty);
    if (auto ok = gate_.check_search_scopes(req, *parsed, registry_); !ok)
      co_return error_response(ok.issue(), req.format.pretty);
    std::string patient_id;
    std::optional<locator::Identifier> by_identifier;
    store::ResourceQuery q;
    q.type = type;
    // The patient is named once, as on DocumentReference: repeated parameters are ANDed (R4
    // search.html), so two patients would match nothing and the same one twice adds nothing;
    // either is a client's mistake, answered as one rather than with an empty Bundle.
    const std::size_t patient_params = std::count_if(parsed->params.begin(), parsed->params.end(), [](const auto& p) {
      return p.name == "patient" || p.name == "subject";
    });
    if (patient_params > 1)
      co_return error_response(bad_param("patient", "name the patient once: give exactly one patient, as patient={id}, "
                                                    "subject=Patient/{id} or patient:identifier="
                                                    "https://fhir.nhs.uk/Id/nhs-number|..."),
                               req.format.pretty);
    for (const auto& p : parsed->params) {
      if ((p.name == "patient" || p.name == "subject") && p.modifier == "identifier") {
        const auto& t = std::get<fhir::TokenValue>(p.values.at(0));
        // The NHS number alone is taken as NRL consumers send it to DocumentReference.
        const bool nhs = t.system_match == fhir::TokenValue::SystemMatch::any ||
                         (t.system_match == fhir::TokenValue::SystemMatch::exact && t.system == locator::kNhsNumberSystem);
        if (p.values.size() != 1 || !nhs)
          co_return error_response(bad_param(p.name, "give one https://fhir.nhs.uk/Id/nhs-number|<number>, or the "
                                                     "NHS number alone"),
                                   req.format.pretty);
        if (auto ok = fhir::validate_nhs_number(t.code); !ok) {
          Issue i = ok.issue();
          i.expression = p.name;
          co_return error_response(i, req.format.pretty);
        }
        by_identifier = locator::Identifier{std::string(locator::kNhsNumberSystem), t.code, {}};
      } else if (p.name == "patient" || p.name == "subject") {
        if (p.values.size() != 1 || !(p.modifier.empty() || p.modifier == "Patient"))
          co_return error_response(bad_param(p.name, "takes one Patient reference"), req.format.pretty);
        auto id = patient_id_of(std::get<fhir::ReferenceValue>(p.values[0]), deps_.locator.base_url, p.name);
        if (!id) co_return error_response(id.issue(), req.format.pretty);
        patient_id = std::move(*id);
      } else if (p.name == "code" && p.modifier.empty()) {
        // Repeats are ANDed, commas ORed (R4 search.html): each parameter is one group.
        std::vector<store::CodeMatch>& alternatives = q.codes.emplace_back();
        for (const auto& v : p.values) {
          const auto& t = std::get<fhir::TokenValue>(v);
          // code alone: any system; system|code: that system; |code: no system at all;
          // system| (the code empty): any code in that system.
          store::CodeMatch m{std::nullopt, t.code};
          if (t.system_match != fhir::TokenValue::SystemMatch::any)
            m.system = t.system_match == fhir::TokenValue::SystemMatch::exact ? t.system : std::string();
          alternatives.push_back(std::move(m));
        }
      } else if (p.name == "date" && p.modifier.empty()) {
        if (p.values.size() != 1)
          co_return error_response(bad_param("date", "repeat the parameter to AND dates; commas are not supported"),
                                   req.format.pretty);
        const auto& d = std::get<fhir::DateValue>(p.values[0]);
        q.dates.emplace_back(d.prefix, d.range);
      } else {
        co_return error_response(bad_param(p.name, "is not supported on " + type + " here"), req.format.pretty);
      }
    }
    if (auto ok = unserved_result_params(*parsed, fhir::handling_from_prefer(req.header("prefer")), type); !ok)
      co_return error_response(ok.issue(), req.format.pretty);
    // _summary=count and _elements are served; _summary=true and text are not (search_subset).
    auto subset = search_subset(*parsed, fhir::handling_from_prefer(req.header("prefer")), type);
    if (!subset) co_return error_response(subset.issue(), req.format.pretty);
    if (by_identifier.has_value() == !patient_id.empty())
      co_return error_response(Issue::make(ErrorCode::missing_value,
                                           "give exactly one patient: patient={id}, subject=Patient/{id} or "
                                           "patient:identifier=https://fhir.nhs.uk/Id/nhs-number|..."),
                               req.format.pretty);
    // One searchset for every answer below, its links through a page handle for POST _search.
    auto searchset = [&](fhir::SearchsetPage page) -> fhir::Result<Json> {
      const bool has_more = page.has_more;
      Json bundle = fhir::make_searchset(deps_.locator.base_url, *parsed, std::move(page), now_ms());
      if (auto s = link_through_handle(pages_, deps_.locator.base_url, bundle, req, type, via, handle, params, *parsed,
                                       has_more);
          !s)
        return std::move(s).issue();
      return bundle;
    };
    auto respond = [&](fhir::SearchsetPage page) {
      auto bundle = searchset(std::move(page));
      return bundle ? fhir_response(200, *bundle, req.format.pretty) : error_response(bundle.issue(), req.format.pretty);
    };
    const Issue hidden = Issue::make(ErrorCode::not_found, "no such patient");
    auto access = co_await gate_.patient_access_to(req, by_identifier, patient_id, hidden);
    if (!access) {
      if (access.issue().code == ErrorCode::not_found) {
        fhir::SearchsetPage none;
        none.total = 0;
        co_return respond(std::move(none));
      }
      co_return error_response(access.issue(), req.format.pretty);
    }
    const auth::Decision& decision = access->decision;
    // The patient and every record merged into them: resources stay filed under the id they
    // arrived for.
    q.patient_ids.push_back(access->judged.id);
    if (access->asked.id != access->judged.id) q.patient_ids.push_back(access->asked.id);
    std::string survivor = access->asked.merged_into.value_or(access->asked.id);
    q.patient_ids.push_back(survivor);
    std::vector<std::string> from = access->judged.merged_from;
    if (survivor != access->judged.id) {
      auto read = [survivor](locator::Locator& l) { return l.read_patient(survivor); };
      auto s = co_await deps_.locator.locator.call(read);
      if (s && *s) from = (*s)->merged_from;
    }
    for (auto& m : from) q.patient_ids.push_back(std::move(m));
    std::sort(q.patient_ids.begin(), q.patient_ids.end());
    q.patient_ids.erase(std::unique(q.patient_ids.begin(), q.patient_ids.end()), q.patient_ids.end());
    // Sensitive entries are withheld by the store, before counting: total and paging describe
    // only what this caller is shown.
    q.withheld_codings = hidden_codings(decision);
    q.count = static_cast<std::size_t>(parsed->count);
    q.offset = static_cast<std::size_t>(parsed->offset);
    auto run = [q](store::Store& s) { return s.search(q); };
    auto page = co_await deps_.store.call(run);
    if (!page) co_return error_response(page.issue(), req.format.pretty);
    for (const auto& w : page->withheld) req.audit.withheld.push_back(w);
    fhir::SearchsetPage out;
    out.total = page->total;
    const bool count_only = parsed->summary == fhir::SummaryMode::count;
    for (const auto& r : page->items) {
      if (count_only) break;  // the total alone: nothing is disclosed, nothing is listed
      auto json = fhir::parse_json(r.json);
      if (!json) continue;  // written by us; unreadable only if the file was damaged
      req.audit.returned.push_back(r.type + "/" + r.id);
      if (decision.break_glass) mark_break_glass(*json);
      out.matches.push_back(subsetted(*json, *subset));
    }
    out.has_more = !count_only && static_cast<std::int64_t>(q.offset + page->items.size()) < page->total;
    if (!page->withheld.empty()) out.outcomes.push_back(withheld_outcome(page->withheld.size(), type));
    if (page->truncated) {
      // too-costly, not throttled: retrying the same search gets the same cut; narrowing it helps.
      Issue w = Issue::make(ErrorCode::too_costly,
                            "more records match than one search examines; narrow it with code or date");
      w.severity = fhir::Severity::warning;
      out.outcomes.push_back(fhir::operation_outcome(w));
    }
    Response resp = respond(std::move(out));
    if (decision.break_glass && resp.status == 200) resp.set_header("X-Emergency-Access", "break-glass");
    co_return resp;
  }

  awaitable<Response> read(Request& req, std::string type) {
    const std::string id = req.path_params.at(0);
    const Issue unknown = Issue::make(ErrorCode::not_found, type + "/" + id.substr(0, 64) + " is not known here");
    auto subset = read_subset(*req.query, fhir::handling_from_prefer(req.header("prefer")), registry_, type);
    if (!subset) co_return error_response(subset.issue(), req.format.pretty);
    auto get = [type, id](store::Store& s) { return s.read(type, id); };
    auto found = co_await deps_.store.call(get);
    if (!found) co_return error_response(found.issue(), req.format.pretty);
    if (!*found) co_return error_response(unknown, req.format.pretty);
    auto json = fhir::parse_json((*found)->json);
    if (!json) co_return error_response(Issue::make(ErrorCode::internal_error, "a stored record could not be read"),
                                        req.format.pretty);
    bool break_glass = false;
    if (const Json* subject = json->find("subject")) {
      std::string_view ref = subject->string_at("reference");
      if (ref.substr(0, 8) != "Patient/") co_return error_response(unknown, req.format.pretty);
      const std::string pid(ref.substr(8));
      auto access = co_await gate_.patient_access(req, pid, unknown);
      if (!access) co_return error_response(access.issue(), req.format.pretty);
      if (store::carries_coding(*json, hidden_codings(access->decision))) {
        req.audit.withheld.push_back(type + "/" + id);
        co_return error_response(Issue::make(ErrorCode::forbidden, "this " + type +
                                                                       " is withheld under the sensitivity policy "
                                                                       "for your role"),
                                 req.format.pretty);
      }
      break_glass = access->decision.break_glass;
    }
    // Conditional read (R4 http.html), decided after access as on Patient: a 304 tells only
    // someone who may see the resource that it has not changed. Under break-glass the whole
    // resource goes back, with its label.
    const std::int64_t version = (*found)->version;
    const Json* meta = json->find("meta");
    const std::string last_updated(meta ? meta->string_at("lastUpdated") : std::string_view());
    if (!break_glass && LocatorApi::unchanged_for(req, version, last_updated)) co_return LocatorApi::not_modified(version);
    req.audit.returned.push_back(type + "/" + id);
    if (break_glass) mark_break_glass(*json);
    Response r = LocatorApi::with_version_headers(fhir_response(200, subsetted(*json, *subset), req.format.pretty),
                                                  version, last_updated);
    if (break_glass) r.set_header("X-Emergency-Access", "break-glass");
    co_return r;
  }

 private:
  // The codings of every sensitive category `d` does not let the caller see
  // (docs/access-policy.md "Sensitive categories"); break-glass does not widen them.
  std::vector<std::pair<std::string, std::string>> hidden_codings(const auth::Decision& d) const {
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& c : deps_.locator.policy.config().sensitive_categories)
      if (std::find(d.allowed_sensitive.begin(), d.allowed_sensitive.end(), c.name) == d.allowed_sensitive.end())
        out.insert(out.end(), c.codes.begin(), c.codes.end());
    return out;
  }

  const fhir::SearchParamRegistry& registry_;
  ClinicalRouteDeps deps_;
  PatientGate gate_;
  // The page handles of these types' POST _search, kept apart from the locator's (each
  // handle is bound to its type anyway), with the same limits.
  SearchPages pages_;
};

}  // namespace

void register_clinical_search_params(fhir::SearchParamRegistry& registry) {
  using T = fhir::SearchParamType;
  const std::string sp = "http://hl7.org/fhir/SearchParameter/";
  for (const char* type : kSearchTypes) {
    const std::string t = type;
    registry.add(t, {"patient", T::reference, sp + "clinical-patient",
                     "the patient: {id}, Patient/{id} or [base]/Patient/{id}; or :identifier with an NHS number; "
                     "once per search"});
    registry.add(t, {"subject", T::reference, sp + t + "-subject", "Patient/{id}"});
    registry.add(t, {"date", T::date, sp + "clinical-date",
                     t == "Encounter" ? "period, as a range" : "effective[x], a Period or Timing as a range; not issued"});
    if (t != "Encounter")
      registry.add(t, {"code", T::token, sp + "clinical-code",
                       "system|code, code (any system), |code (no system) or system| (any code in it); "
                       "several ORed"});
  }
}

void add_clinical_routes(Router& router, const fhir::SearchParamRegistry& registry, ClinicalRouteDeps deps) {
  auto api = std::make_shared<ClinicalApi>(registry, std::move(deps));
  auto opts = [](std::string type, std::string interaction, auth::Interaction check) {
    RouteOptions o;
    o.access = Access::resource;
    o.resource_type = std::move(type);
    o.interaction = std::move(interaction);
    o.auth_interaction = check;
    return o;
  };
  for (const char* type : kSearchTypes) {
    const std::string t = type;
    router.add("POST", "/" + t + "/_search", [api, t](Request& r) { return api->search_post(r, t); },
               opts(t, "", auth::Interaction::search));
    router.add("GET", "/" + t, [api, t](Request& r) { return api->search_get(r, t); },
               opts(t, "search-type", auth::Interaction::search));
  }
  // Every type push sources may deliver (the adapter contract refuses the others), so that
  // nothing stored is out of a clinician's reach. Reads answer If-None-Match and
  // If-Modified-Since with 304, as Patient's do.
  for (std::string_view type : adapters::kStoredResourceTypes) {
    const std::string t(type);
    RouteOptions read = opts(t, "read", auth::Interaction::read);
    read.conditional_read = "full-support";
    router.add("GET", "/" + t + "/{id}", [api, t](Request& r) { return api->read(r, t); }, read);
  }
}

}  // namespace gw::http
