// SPDX-License-Identifier: Apache-2.0
// The record locator's Patient routes (locator_routes.h): read, PDQ-style search (GET and
// POST _search, and pages by handle) and the IHE PIXm cross-reference query ($ihe-pix).
#include <algorithm>
#include <memory>
#include <set>

#include "fhir/bundle.h"
#include "fhir/content_negotiation.h"
#include "fhir/datatypes.h"
#include "fhir/date_range.h"
#include "fhir/nhs_number.h"
#include "fhir/query_string.h"
#include "gateway/http/locator_api.h"
#include "gateway/http/locator_resources.h"
#include "gateway/locator/fhir_mapping.h"
#include "gateway/observe/log.h"

namespace gw::http {

using boost::asio::awaitable;
using fhir::ErrorCode;
using fhir::Issue;
using fhir::Json;

namespace {

// Locator::search_patients returns at most this many rows per call.
constexpr std::size_t kLocatorPageCap = 1000;

Issue unknown_patient() {
  return Issue::make(ErrorCode::not_found, "No patient with that identity is known to this gateway, or you have no "
                                           "legitimate relationship with them");
}

// The letters of a normalised name: ASCII letters and non-ASCII characters (folded accents
// and other scripts); spaces, digits and punctuation ('+', '-', '\'') are not.
std::size_t letters_in(std::string_view normalised) {
  std::size_t n = 0;
  for (char c : normalised) {
    const auto u = static_cast<unsigned char>(c);
    if ((c >= 'a' && c <= 'z') || u >= 0xC0) ++n;  // a UTF-8 lead byte starts one character
  }
  return n;
}

// A trace in the PDS sense: an identifier, or a family name (at least 2 letters once
// normalised, as the query matches it: a blank, '+' or one letter is no name) with a full date
// of birth (one day), optionally narrowed by given name, gender or postcode; `name` is a
// browse parameter, not a trace one. The only Patient search that may find patients on the
// emergency-purpose basis (docs/access-policy.md).
bool is_trace(const locator::PatientQuery& q) {
  if (q.identifier) return true;
  if (!q.name.empty() || letters_in(locator::normalise_name(q.family)) < 2 || q.birthdate.size() != 1) return false;
  const auto& [prefix, range] = q.birthdate.front();
  return prefix == fhir::Prefix::eq && range.end - range.begin <= 24 * 3600;
}

// Whether `rec`, which the search found (names starting with the values sent), is a trace
// match: a patient found on the emergency-purpose basis alone is shown only when the names
// and postcode sent are the patient's own, whole (normalised as the search compares them), as
// PDS matches a trace. Otherwise a prefix (family=Sm, given=A, address-postalcode=L) would
// split a crowd the 10-match cap refuses into pages of strangers. An identifier trace is exact
// already.
bool trace_matches(const locator::PatientQuery& q, const locator::PatientRecord& rec) {
  if (q.identifier) return true;
  const locator::Demographics& d = rec.demographics;
  const std::string family = locator::normalise_name(q.family);
  bool family_ok = locator::normalise_name(d.family) == family;
  for (const auto& n : d.other_names) family_ok = family_ok || locator::normalise_name(n.family) == family;
  if (!family_ok) return false;
  if (const std::string given = locator::normalise_name(q.given); !given.empty()) {
    bool given_ok = false;
    for (const auto& g : d.given) given_ok = given_ok || locator::normalise_name(g) == given;
    for (const auto& n : d.other_names)
      for (const auto& g : n.given) given_ok = given_ok || locator::normalise_name(g) == given;
    if (!given_ok) return false;
  }
  if (const std::string pc = locator::normalise_postcode(q.postcode); !pc.empty())
    if (locator::normalise_postcode(d.postcode) != pc) return false;
  return true;
}

}  // namespace

awaitable<Response> LocatorApi::read_patient(Request& req) {
  const std::string& id = req.path_params.at(0);
  // _summary and _elements apply to a read as to a search (R4 search.html "Summary").
  fhir::QueryParams result_params;
  for (const auto& kv : *req.query)
    if (kv.first == "_summary" || kv.first == "_elements") result_params.push_back(kv);
  auto parsed = fhir::parse_search("Patient", result_params, registry_, fhir::Handling::strict);
  if (!parsed) co_return error_response(parsed.issue(), req.format.pretty);
  if (parsed->summary == fhir::SummaryMode::count)
    co_return error_response(Issue::make(ErrorCode::invalid_search_parameter,
                                         "_summary=count applies to searches, not to a read", "_summary"),
                             req.format.pretty);
  auto subset = subset_of(*parsed);
  if (!subset) co_return error_response(subset.issue(), req.format.pretty);
  const Issue hidden = unknown_patient();
  auto access = co_await patient_access(req, id, hidden);
  if (!access) co_return error_response(access.issue(), req.format.pretty);
  const locator::PatientRecord& record = access->asked;
  const auth::Decision& d = access->decision;
  if (!d.break_glass && unchanged_for(req, record.version, record.last_updated)) co_return not_modified(record.version);
  req.audit.returned.push_back("Patient/" + record.id);
  Response r = with_version_headers(
      fhir_response(200, subsetted(patient_json(record, d.break_glass), *subset), req.format.pretty), record.version,
      record.last_updated);
  if (d.break_glass) r.set_header("X-Emergency-Access", "break-glass");
  co_return r;
}

// Builds the locator query from a parsed search; 400 for what this index cannot answer;
// nullopt for a search that matches nobody.
fhir::Result<std::optional<locator::PatientQuery>> LocatorApi::patient_query(const fhir::SearchRequest& s) {
  locator::PatientQuery q;
  bool any = false;
  bool matches_nobody = false;
  for (const auto& p : s.params) {
    if (!p.modifier.empty())
      return Issue::make(ErrorCode::invalid_search_parameter,
                         "modifier :" + p.modifier + " is not supported on " + p.name, p.name);
    if (p.name != "birthdate" && p.values.size() != 1)
      return Issue::make(ErrorCode::invalid_search_parameter, p.name + " takes exactly one value here", p.name);
    any = true;
    if (p.name == "identifier") {
      if (q.identifier || matches_nobody)
        return Issue::make(ErrorCode::invalid_search_parameter, "identifier may be given once", p.name);
      auto id = identifier_from_token(std::get<fhir::TokenValue>(p.values[0]), p.name);
      if (!id) return id.issue();
      matches_nobody = !id->has_value();
      q.identifier = std::move(*id);
    } else if (p.name == "family" || p.name == "given" || p.name == "name" || p.name == "address-postalcode") {
      std::string text = std::get<fhir::StringValue>(p.values[0]).text;
      if (text.size() > 100) return Issue::make(ErrorCode::invalid_value, p.name + " is too long", p.name);
      std::string& slot = p.name == "family" ? q.family : p.name == "given" ? q.given
                          : p.name == "name"  ? q.name   : q.postcode;
      if (!slot.empty()) return Issue::make(ErrorCode::invalid_search_parameter, p.name + " may be given once", p.name);
      slot = std::move(text);
    } else if (p.name == "gender") {
      const auto& t = std::get<fhir::TokenValue>(p.values[0]);
      if (t.code != "male" && t.code != "female" && t.code != "other" && t.code != "unknown")
        return Issue::make(ErrorCode::invalid_value, "gender must be male, female, other or unknown", p.name);
      q.gender = t.code;
    } else if (p.name == "birthdate") {
      if (p.values.size() != 1)
        return Issue::make(ErrorCode::invalid_search_parameter,
                           "birthdate takes one value per parameter; repeat the parameter for a range", p.name);
      const auto& dv = std::get<fhir::DateValue>(p.values[0]);
      q.birthdate.emplace_back(dv.prefix, dv.range);
    } else {
      return Issue::make(ErrorCode::invalid_search_parameter, p.name + " is not supported on Patient here", p.name);
    }
  }
  if (!any)
    return Issue::make(ErrorCode::missing_value,
                       "give at least one of identifier, family, given, name, birthdate, gender, address-postalcode");
  if (matches_nobody) return std::optional<locator::PatientQuery>();
  return std::optional<locator::PatientQuery>(std::move(q));
}

awaitable<fhir::Result<LocatorApi::Visible>> LocatorApi::visible_matches(Request& req, locator::PatientQuery query) {
  const bool by_identifier = query.identifier.has_value();
  const bool break_glass_asked = !req.header("x-break-glass-reason").empty();
  if (break_glass_asked && !by_identifier) {
    // Judged for nobody first, so a refusal reads as it does on every other route.
    auto bg = gate_.maybe_break_glass(req, nullptr);
    if (!bg) co_return bg.issue();
    co_return Issue::make(ErrorCode::invalid_search_parameter,
                          "break-glass opens one patient's record: search by identifier=system|value, or read "
                          "Patient/{id}",
                          "identifier");
  }
  // The emergency-purpose basis opens any patient's record, so it answers a trace for the
  // patient in front of the paramedic, never a browse of the population: a search that is not
  // a trace lists only patients with a standing relationship, and a trace at most
  // max_emergency_matches patients opened on that basis (more: give more detail, as PDS asks).
  const bool trace = is_trace(query);
  // A patient/ scope lists the patient in the token's launch context only (decide() refuses
  // every other): the index is asked for that one row, so such a search can return at most one
  // patient and never examines, nor is refused as too broad for, the rest of the index.
  if (!req.scope_limits.patient.empty()) query.id = req.scope_limits.patient;
  std::size_t emergency_matches = 0;
  const std::size_t batch = std::min<std::size_t>(kLocatorPageCap, deps_.max_search_examined);
  Visible out;
  std::set<std::string> seen;  // pages are separate snapshots: a concurrent write may repeat a row
  std::int64_t total = 0;
  for (std::size_t offset = 0, round = 0; round == 0 || static_cast<std::int64_t>(offset) < total; ++round) {
    query.count = batch;
    query.offset = offset;
    auto search = [query](locator::Locator& l) { return l.search_patients(query); };
    auto page = co_await deps_.locator.call(search);
    if (!page) co_return page.issue();
    if (round == 0) {
      total = page->total;
      if (total > static_cast<std::int64_t>(deps_.max_search_examined))
        co_return Issue::make(ErrorCode::too_costly,
                              "this search is too broad: it would examine more than " +
                                  std::to_string(deps_.max_search_examined) +
                                  " index entries; add criteria (e.g. birthdate, family or identifier)");
      if (by_identifier && break_glass_asked) {
        // Judged before any decision below, so a grant counts for this very search.
        for (const auto& rec : page->items) note_patient(req, rec);
        auto bg = gate_.maybe_break_glass(req, page->items.size() == 1 ? &page->items.front() : nullptr);
        if (!bg) co_return bg.issue();
        if (page->items.size() > 1)
          co_return Issue::make(ErrorCode::invalid_search_parameter,
                                "break-glass opens one patient's record, and this identifier names more than "
                                "one; read Patient/{id} instead",
                                "identifier");
      }
    }
    if (page->items.empty()) break;  // the index shrank under the scan
    offset += page->items.size();
    for (auto& rec : page->items) {
      if (!seen.insert(rec.id).second) continue;
      if (by_identifier) note_patient(req, rec);
      auth::Decision d = decide(req, rec);
      if (!d.allowed) continue;
      if (d.basis == "emergency-purpose") {
        if (!trace || !trace_matches(query, rec)) continue;
        if (++emergency_matches > deps_.max_emergency_matches)
          co_return Issue::make(ErrorCode::invalid_value,
                                "more than " + std::to_string(deps_.max_emergency_matches) +
                                    " patients match this trace; add detail (given, gender, address-postalcode) or "
                                    "search by identifier",
                                "family");
      }
      if (out.records.size() == deps_.max_search_matches)
        co_return Issue::make(ErrorCode::too_costly,
                              "more than " + std::to_string(deps_.max_search_matches) +
                                  " patients you may see match; add criteria (e.g. birthdate or identifier)");
      note_basis(req, d);
      out.records.push_back(std::move(rec));
      out.break_glass.push_back(d.break_glass);
    }
  }
  co_return out;
}

awaitable<Response> LocatorApi::search_patients(Request& req, const fhir::QueryParams& params, Via via,
                                                std::string handle) {
  auto parsed = fhir::parse_search("Patient", params, registry_, fhir::handling_from_prefer(req.header("prefer")));
  if (!parsed) co_return error_response(parsed.issue(), req.format.pretty);
  if (auto ok = gate_.check_search_scopes(req, *parsed, registry_); !ok)
    co_return error_response(ok.issue(), req.format.pretty);
  if (auto ok = unserved_result_params(*parsed, fhir::handling_from_prefer(req.header("prefer")), "Patient"); !ok)
    co_return error_response(ok.issue(), req.format.pretty);
  auto q = patient_query(*parsed);
  if (!q) co_return error_response(q.issue(), req.format.pretty);
  auto subset = subset_of(*parsed);
  if (!subset) co_return error_response(subset.issue(), req.format.pretty);
  // Said on every such search, whatever it matched, so the note tells nobody who exists.
  const bool trace_rule = deps_.policy.emergency_basis(*req.principal) && *q && !is_trace(**q);
  Visible visible;  // none when the search matches nobody
  if (*q) {
    auto found = co_await visible_matches(req, std::move(**q));
    if (!found) co_return error_response(found.issue(), req.format.pretty);
    visible = std::move(*found);
  }
  fhir::SearchsetPage out;
  out.total = static_cast<std::int64_t>(visible.records.size());
  bool break_glass = false;
  // _summary=count: the total alone; nothing about any patient leaves.
  const std::size_t shown = parsed->summary == fhir::SummaryMode::count ? 0 : visible.records.size();
  const std::size_t from = std::min<std::size_t>(parsed->offset, shown);
  const std::size_t to = std::min<std::size_t>(from + parsed->count, shown);
  for (std::size_t i = from; i < to; ++i) {
    out.matches.push_back(subsetted(patient_json(visible.records[i], visible.break_glass[i]), *subset));
    note_patient(req, visible.records[i]);
    req.audit.returned.push_back("Patient/" + visible.records[i].id);
    break_glass = break_glass || visible.break_glass[i];
  }
  out.has_more = to < shown;
  if (trace_rule) {
    Issue w = Issue::make(ErrorCode::informational,
                          "on an emergency purpose of use, patients you have no relationship with are found only by a "
                          "trace: identifier=system|value, or the whole family name (2 letters or more) with "
                          "birthdate=YYYY-MM-DD (optionally given, gender, address-postalcode, matched whole; no name=); "
                          "this search lists only patients you have a relationship with");
    w.severity = fhir::Severity::warning;
    out.outcomes.push_back(fhir::operation_outcome(w));
  }
  const bool has_more = out.has_more;
  Json bundle = fhir::make_searchset(deps_.base_url, *parsed, std::move(out), now_ms());
  if (auto s = link_through_handle(bundle, req, "Patient", via, std::move(handle), params, *parsed, has_more); !s)
    co_return error_response(s.issue(), req.format.pretty);
  Response r = fhir_response(200, bundle, req.format.pretty);
  if (break_glass) r.set_header("X-Emergency-Access", "break-glass");
  co_return r;
}

// GET /Patient: a search, or a page of a POST _search by its handle.
awaitable<Response> LocatorApi::search_patients_get(Request& req) {
  if (auto handle = req.query_value(kPageHandleParam)) {
    auto params = page_params(req, "Patient");
    if (!params) co_return error_response(params.issue(), req.format.pretty);
    co_return co_await search_patients(req, *params, Via::page, std::string(*handle));
  }
  co_return co_await search_patients(req, *req.query, Via::get);
}

// POST /Patient/_search: parameters in the form body (form_search_params).
awaitable<Response> LocatorApi::search_patients_post(Request& req) {
  auto all = form_search_params(req);
  if (!all) co_return error_response(all.issue(), req.format.pretty);
  co_return co_await search_patients(req, *all, Via::post);
}

// GET /Patient/$ihe-pix?sourceIdentifier=system|value[&targetSystem=...]
awaitable<Response> LocatorApi::pix(Request& req) {
  std::optional<std::string_view> source;
  std::vector<std::string> targets;
  for (const auto& [k, v] : *req.query) {
    if (k == "sourceIdentifier") {
      if (source)
        co_return error_response(Issue::make(ErrorCode::invalid_search_parameter, "sourceIdentifier may be given once",
                                             "sourceIdentifier"), req.format.pretty);
      source = v;
    } else if (k == "targetSystem") {
      targets.push_back(v);
    } else if (k != "_format" && k != "_pretty") {
      co_return error_response(Issue::make(ErrorCode::invalid_search_parameter,
                                           "unknown parameter " + k.substr(0, 64) + " for $ihe-pix", k.substr(0, 64)),
                               req.format.pretty);
    }
  }
  if (!source || source->find('|') == std::string_view::npos || source->front() == '|' || source->back() == '|')
    co_return error_response(Issue::make(ErrorCode::invalid_search_parameter,
                                         "sourceIdentifier is required as system|value", "sourceIdentifier"),
                             req.format.pretty);
  fhir::TokenValue t;
  t.system_match = fhir::TokenValue::SystemMatch::exact;
  t.system = std::string(source->substr(0, source->find('|')));
  t.code = std::string(source->substr(source->find('|') + 1));
  auto ident = identifier_from_token(t, "sourceIdentifier");
  if (!ident) co_return error_response(ident.issue(), req.format.pretty);
  const locator::Identifier idf = std::move(**ident);  // system and value are both there
  // ITI-83 tells three failures apart: an assigning authority the index has never seen
  // (400), a target system it has never seen (403), and an unknown patient (404). Systems
  // are domain names, not patient data: naming them discloses nobody.
  const std::vector<std::string> asked_systems = targets;
  auto unknown_system = [source_system = idf.system, asked_systems](locator::Locator& l) -> fhir::Result<int> {
    auto known = l.knows_identifier_system(source_system);
    if (!known) return std::move(known).issue();
    if (!*known) return -1;
    for (std::size_t i = 0; i < asked_systems.size(); ++i) {
      auto k = l.knows_identifier_system(asked_systems[i]);
      if (!k) return std::move(k).issue();
      if (!*k) return static_cast<int>(i);
    }
    return static_cast<int>(asked_systems.size());
  };
  auto unknown = co_await deps_.locator.call(unknown_system);
  if (!unknown) co_return error_response(unknown.issue(), req.format.pretty);
  if (*unknown < 0)
    co_return error_response(Issue::make(ErrorCode::unknown_identifier_system, "sourceIdentifier Assigning Authority not found",
                                         "sourceIdentifier"),
                             req.format.pretty);
  if (*unknown < static_cast<int>(targets.size()))
    co_return error_response(Issue::make(ErrorCode::unknown_target_system, "targetSystem not found", "targetSystem"),
                             req.format.pretty);
  const Issue not_found =
      Issue::make(ErrorCode::not_found, "sourceIdentifier Patient Identifier not found", "sourceIdentifier");
  auto access = co_await gate_.patient_access_by_identifier(req, idf, not_found);
  if (!access) co_return error_response(access.issue(), req.format.pretty);
  const auth::Decision& d = access->decision;
  const auto& p = access->judged;
  auto wanted = [&targets](std::string_view system) {
    return targets.empty() || std::find(targets.begin(), targets.end(), system) != targets.end();
  };
  Json params = Json::array();
  auto add_identifier = [&params](std::string_view system, std::string_view value) {
    Json prm = Json::object();
    prm.set("name", str("targetIdentifier"));
    Json id = Json::object();
    id.set("system", str(system));
    id.set("value", str(value));
    prm.set("valueIdentifier", std::move(id));
    params.push_back(std::move(prm));
  };
  if (p.nhs_number_trusted && !p.demographics.nhs_number.empty() && wanted(locator::kNhsNumberSystem))
    add_identifier(locator::kNhsNumberSystem, p.demographics.nhs_number);
  for (const auto& l : p.identifiers)
    if (wanted(l.system)) add_identifier(l.system, l.value);
  Json target = Json::object();
  target.set("name", str("targetId"));
  Json ref = Json::object();
  ref.set("reference", Json::string("Patient/" + p.id));
  target.set("valueReference", std::move(ref));
  params.push_back(std::move(target));
  req.audit.returned.push_back("Patient/" + p.id);
  Json out = Json::object();
  out.set("resourceType", str("Parameters"));
  out.set("parameter", std::move(params));
  Response r = fhir_response(200, out, req.format.pretty);
  if (d.break_glass) r.set_header("X-Emergency-Access", "break-glass");
  co_return r;
}

}  // namespace gw::http
