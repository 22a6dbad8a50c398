// SPDX-License-Identifier: Apache-2.0
#include "gateway/http/locator_routes.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <ctime>
#include <memory>
#include <set>

#include "fhir/bundle.h"
#include "fhir/content_negotiation.h"
#include "fhir/datatypes.h"
#include "fhir/date_range.h"
#include "fhir/nhs_number.h"
#include "fhir/query_string.h"
#include "fhir/structure_check.h"
#include "fhir/uk_core.h"
#include "gateway/auth/authenticator.h"
#include "gateway/http/locator_resources.h"
#include "gateway/http/patient_gate.h"
#include "gateway/http/search_pages.h"
#include "gateway/locator/fhir_mapping.h"
#include "gateway/locator/index_transaction.h"
#include "gateway/observe/log.h"

namespace gw::http {

using boost::asio::awaitable;
using fhir::ErrorCode;
using fhir::Issue;
using fhir::Json;

namespace {

using fhir::uk::kDocumentReferenceProfile;
using fhir::uk::kPatientProfile;

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Json str(std::string_view s) { return fhir::text(s); }


// A pointer id in the URL that is not a FHIR id can name no pointer: 400 on read, update and
// delete alike, whatever its length (R4 datatypes.html#id). Nothing is looked up, so the
// answer says nothing about what the index holds.
Issue malformed_pointer_id() {
  return Issue::make(ErrorCode::invalid_value,
                     "a DocumentReference id is 1 to 64 characters, each a letter, digit, '-' or '.'", "id");
}

// Locator::search_patients returns at most this many rows per call.
constexpr std::size_t kLocatorPageCap = 1000;

Response with_version_headers(Response r, std::int64_t version) {
  r.set_header("ETag", "W/\"" + std::to_string(version) + "\"");
  return r;
}

Response not_modified(std::int64_t version) {
  Response r;
  r.status = 304;
  return with_version_headers(std::move(r), version);
}

// The versions an entity-tag list (If-None-Match, If-Match) names, by the weak comparison
// RFC 9110 13.1.2 asks of If-None-Match: W/"3", "3" and * all name version 3. A tag may hold
// commas, so the list is read tag by tag rather than split; a tag that is not a version names
// nothing, and the list ends at anything that is not an entity tag.
locator::VersionMatch etag_versions(std::string_view list) {
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

bool if_none_match_hits(std::string_view header, std::int64_t version) {
  if (header.empty()) return false;
  const locator::VersionMatch named = etag_versions(header);
  return named.any || std::find(named.versions.begin(), named.versions.end(), version) != named.versions.end();
}

// The If-Match of a pointer write, checked by the locator inside the write's transaction
// (Locator::put_pointer): nullopt when there is none. Read up to 256 bytes: a longer header
// names no more versions worth comparing.
std::optional<locator::VersionMatch> if_match_of(const Request& req) {
  std::string_view h = req.header("if-match");
  if (h.empty()) return std::nullopt;
  return etag_versions(h.substr(0, 256));
}

// A pointer write's outcome, with the patients whose list of record holders it changed or
// tried to change: each is named in the audit record, so the write shows in that patient's
// "who accessed my record" report whether it succeeded or was refused.
template <class T>
struct Touching {
  // Implicit from a Result (and so from an Issue): BlockingPool reports a call that threw as
  // an Issue, and builds its answer from one (clang 14 has no parenthesised aggregate init).
  Touching(fhir::Result<T> r, std::vector<locator::PatientRecord> p = {})
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

// The parameters of a POST _search (R4 http.html#search): an application/x-www-form-urlencoded
// body, so NHS numbers stay out of URLs and logs, merged with any in the URL.
fhir::Result<fhir::QueryParams> form_search_params(const Request& req) {
  std::string_view ct = req.header("content-type");
  std::string media(ct.substr(0, ct.find(';')));
  while (!media.empty() && media.back() == ' ') media.pop_back();
  for (char& c : media) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));  // RFC 9110 8.3.1
  if (media != "application/x-www-form-urlencoded")
    return Issue::make(ErrorCode::unsupported_media_type,
                       "send the search parameters as application/x-www-form-urlencoded");
  fhir::QueryLimits limits;
  limits.what = "Form body";
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

Issue unknown_patient() {
  return Issue::make(ErrorCode::not_found, "No patient with that identity is known to this gateway, or you have no "
                                           "legitimate relationship with them");
}

// The token search for a single identifier value: validates NHS numbers (400 on a bad one).
fhir::Result<locator::Identifier> identifier_from_token(const fhir::TokenValue& t, std::string_view param) {
  if (t.system_match != fhir::TokenValue::SystemMatch::exact || t.system.empty() || t.code.empty())
    return Issue::make(ErrorCode::invalid_search_parameter,
                       std::string(param) + " needs system|value, e.g. https://fhir.nhs.uk/Id/nhs-number|9000000009",
                       std::string(param));
  if (t.system == locator::kNhsNumberSystem) {
    auto ok = fhir::validate_nhs_number(t.code);
    if (!ok) {
      Issue i = ok.issue();
      i.expression = std::string(param);
      return i;
    }
  }
  return locator::Identifier{t.system, t.code, {}};
}

class LocatorApi : public std::enable_shared_from_this<LocatorApi> {
 public:
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

  // How a search arrived, which decides how its Bundle's links are written: a GET search links
  // to GET URLs carrying its parameters; a POST _search, and every page fetched through its
  // handle, link through the handle only.
  enum class Via { get, post, page };

  // The parameters behind GET [base]/{type}?_getpages=...&_offset=n: the kept search with the
  // link's _offset. Only _offset, _format and _pretty may come with the handle: anything else
  // would be a different search under the same handle.
  fhir::Result<fhir::QueryParams> page_params(const Request& req, std::string_view type) {
    std::string_view handle;
    std::optional<std::string> offset;
    for (const auto& [k, v] : *req.query) {
      if (k == kPageHandleParam && handle.empty()) {
        handle = v;
      } else if (k == "_offset" && !offset) {
        offset = v;
      } else if (k != "_format" && k != "_pretty") {
        return Issue::make(ErrorCode::invalid_search_parameter,
                           "a page link carries its search: send only _getpages and _offset (and _format or "
                           "_pretty), as the link gives them",
                           k.substr(0, 64));
      }
    }
    auto kept = pages_.find(handle, *req.principal, type);
    if (!kept) return kept;
    if (offset) kept->emplace_back("_offset", *offset);
    return kept;
  }

  // Replaces the GET links make_searchset wrote with links through a page handle: `handle`
  // for a page, a new one for a POST _search. `params` are the search's parameters.
  fhir::Status link_through_handle(Json& bundle, const Request& req, std::string_view type, Via via,
                                   std::string handle, const fhir::QueryParams& params,
                                   const fhir::SearchRequest& parsed, bool has_more) {
    if (via == Via::get) return fhir::Ok{};
    if (via == Via::post) {
      auto made = pages_.keep(*req.principal, type, params);
      if (!made) return std::move(made).issue();
      handle = std::move(*made);
    }
    bundle.set("link", page_links(deps_.base_url, type, handle, parsed.offset, parsed.count, has_more));
    return fhir::Ok{};
  }

  // ---- Patient ------------------------------------------------------------------------------

  awaitable<Response> read_patient(Request& req) {
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
    if (!d.break_glass && if_none_match_hits(req.header("if-none-match"), record.version))
      co_return not_modified(record.version);
    req.audit.returned.push_back("Patient/" + record.id);
    Response r = with_version_headers(
        fhir_response(200, subsetted(patient_json(record, d.break_glass), *subset), req.format.pretty), record.version);
    if (d.break_glass) r.set_header("X-Emergency-Access", "break-glass");
    co_return r;
  }

  // Builds the locator query from a parsed search; 400 for what this index cannot answer.
  fhir::Result<locator::PatientQuery> patient_query(const fhir::SearchRequest& s) {
    locator::PatientQuery q;
    bool any = false;
    for (const auto& p : s.params) {
      if (!p.modifier.empty())
        return Issue::make(ErrorCode::invalid_search_parameter,
                           "modifier :" + p.modifier + " is not supported on " + p.name, p.name);
      if (p.name != "birthdate" && p.values.size() != 1)
        return Issue::make(ErrorCode::invalid_search_parameter, p.name + " takes exactly one value here", p.name);
      any = true;
      if (p.name == "identifier") {
        if (q.identifier)
          return Issue::make(ErrorCode::invalid_search_parameter, "identifier may be given once", p.name);
        auto id = identifier_from_token(std::get<fhir::TokenValue>(p.values[0]), p.name);
        if (!id) return id.issue();
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
    if (!s.include.empty() || !s.revinclude.empty() || !s.sort.empty())
      return Issue::make(ErrorCode::invalid_search_parameter, "_include, _revinclude and _sort are not supported on Patient");
    if (!any)
      return Issue::make(ErrorCode::missing_value,
                         "give at least one of identifier, family, given, name, birthdate, gender, address-postalcode");
    return q;
  }

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
  awaitable<fhir::Result<Visible>> visible_matches(Request& req, locator::PatientQuery query) {
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
          co_return Issue::make(ErrorCode::invalid_value,
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
        if (out.records.size() == deps_.max_search_matches)
          co_return Issue::make(ErrorCode::invalid_value,
                                "more than " + std::to_string(deps_.max_search_matches) +
                                    " patients you may see match; add criteria (e.g. birthdate or identifier)");
        note_basis(req, d);
        out.records.push_back(std::move(rec));
        out.break_glass.push_back(d.break_glass);
      }
    }
    co_return out;
  }

  awaitable<Response> search_patients(Request& req, const fhir::QueryParams& params, Via via,
                                      std::string handle = {}) {
    auto parsed = fhir::parse_search("Patient", params, registry_, fhir::handling_from_prefer(req.header("prefer")));
    if (!parsed) co_return error_response(parsed.issue(), req.format.pretty);
    auto q = patient_query(*parsed);
    if (!q) co_return error_response(q.issue(), req.format.pretty);
    auto subset = subset_of(*parsed);
    if (!subset) co_return error_response(subset.issue(), req.format.pretty);
    auto found = co_await visible_matches(req, std::move(*q));
    if (!found) co_return error_response(found.issue(), req.format.pretty);
    const Visible& visible = *found;
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
    const bool has_more = out.has_more;
    Json bundle = fhir::make_searchset(deps_.base_url, *parsed, std::move(out), now_ms());
    if (auto s = link_through_handle(bundle, req, "Patient", via, std::move(handle), params, *parsed, has_more); !s)
      co_return error_response(s.issue(), req.format.pretty);
    Response r = fhir_response(200, bundle, req.format.pretty);
    if (break_glass) r.set_header("X-Emergency-Access", "break-glass");
    co_return r;
  }

  // GET /Patient: a search, or a page of a POST _search by its handle.
  awaitable<Response> search_patients_get(Request& req) {
    if (auto handle = req.query_value(kPageHandleParam)) {
      auto params = page_params(req, "Patient");
      if (!params) co_return error_response(params.issue(), req.format.pretty);
      co_return co_await search_patients(req, *params, Via::page, std::string(*handle));
    }
    co_return co_await search_patients(req, *req.query, Via::get);
  }

  // POST /Patient/_search: parameters in the form body (form_search_params).
  awaitable<Response> search_patients_post(Request& req) {
    auto all = form_search_params(req);
    if (!all) co_return error_response(all.issue(), req.format.pretty);
    co_return co_await search_patients(req, *all, Via::post);
  }

  // GET /Patient/$ihe-pix?sourceIdentifier=system|value[&targetSystem=...]
  awaitable<Response> pix(Request& req) {
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
    const locator::Identifier idf = std::move(*ident);
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
      co_return error_response(Issue::make(ErrorCode::invalid_value, "sourceIdentifier Assigning Authority not found",
                                           "sourceIdentifier"),
                               req.format.pretty);
    if (*unknown < static_cast<int>(targets.size()))
      co_return error_response(Issue::make(ErrorCode::forbidden, "targetSystem not found", "targetSystem"),
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

  // ---- DocumentReference (pointers) ---------------------------------------------------------

  // Which categories of `p` this caller may not see (empty = visible).
  bool withheld(const Request& req, const locator::Pointer& p) {
    for (const auto& cat : deps_.policy.categories_of(p.type_system, p.type_code))
      if (!deps_.policy.may_see(*req.principal, cat)) return true;
    for (const auto& cat : deps_.policy.categories_of(fhir::uk::kSnomedSystem, p.category_code))
      if (!deps_.policy.may_see(*req.principal, cat)) return true;
    return false;
  }

  // GET /DocumentReference: a search, or a page of a POST _search by its handle.
  awaitable<Response> search_pointers_get(Request& req) {
    if (auto handle = req.query_value(kPageHandleParam)) {
      auto params = page_params(req, "DocumentReference");
      if (!params) co_return error_response(params.issue(), req.format.pretty);
      co_return co_await search_pointers(req, *params, Via::page, std::string(*handle));
    }
    co_return co_await search_pointers(req, *req.query, Via::get);
  }

  // POST /DocumentReference/_search, as NRL clients send it: parameters in the form body.
  awaitable<Response> search_pointers_post(Request& req) {
    auto all = form_search_params(req);
    if (!all) co_return error_response(all.issue(), req.format.pretty);
    co_return co_await search_pointers(req, *all, Via::post);
  }

  awaitable<Response> search_pointers(Request& req, const fhir::QueryParams& params, Via via,
                                      std::string handle = {}) {
    auto parsed = fhir::parse_search("DocumentReference", params, registry_,
                                     fhir::handling_from_prefer(req.header("prefer")));
    if (!parsed) co_return error_response(parsed.issue(), req.format.pretty);
    std::optional<locator::Identifier> by_identifier;
    std::string patient_id;
    std::optional<fhir::TokenValue> type;
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
        by_identifier = std::move(*id);
      } else if ((p.name == "subject" || p.name == "patient") && (p.modifier.empty() || p.modifier == "Patient")) {
        const auto& ref = std::get<fhir::ReferenceValue>(p.values[0]);
        if (!ref.type.empty() && ref.type != "Patient")
          co_return error_response(Issue::make(ErrorCode::invalid_search_parameter, p.name + " must reference a Patient",
                                               p.name), req.format.pretty);
        patient_id = ref.id;
      } else if (p.name == "type" && p.modifier.empty()) {
        type = std::get<fhir::TokenValue>(p.values[0]);
      } else {
        co_return error_response(Issue::make(ErrorCode::invalid_search_parameter,
                                             p.name + (p.modifier.empty() ? "" : ":" + p.modifier) +
                                                 " is not supported on DocumentReference here",
                                             p.name), req.format.pretty);
      }
    }
    if (!parsed->include.empty() || !parsed->revinclude.empty() || !parsed->sort.empty())
      co_return error_response(Issue::make(ErrorCode::invalid_search_parameter,
                                           "_include, _revinclude and _sort are not supported on DocumentReference"),
                               req.format.pretty);
    // As on the clinical searches: _summary=count and _elements are served, _summary=true and
    // text are not (search_subset).
    auto subset = search_subset(*parsed, fhir::handling_from_prefer(req.header("prefer")), "DocumentReference");
    if (!subset) co_return error_response(subset.issue(), req.format.pretty);
    if (by_identifier.has_value() == !patient_id.empty())
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
    for (const auto& p : *pointers) {
      if (type) {
        if (type->system_match == fhir::TokenValue::SystemMatch::exact && type->system != p.type_system) continue;
        if (!type->code.empty() && type->code != p.type_code) continue;
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
    if (held_back > 0) {
      Issue w = Issue::make(ErrorCode::forbidden,
                            std::to_string(held_back) + " record pointer(s) for this patient are withheld under the "
                                                        "sensitivity policy for your role; they are not counted in total");
      w.severity = fhir::Severity::warning;
      out.outcomes.push_back(fhir::operation_outcome(w));
    }
    auto bundle = searchset(std::move(out));
    if (!bundle) co_return error_response(bundle.issue(), req.format.pretty);
    Response r = fhir_response(200, *bundle, req.format.pretty);
    if (d.break_glass) r.set_header("X-Emergency-Access", "break-glass");
    co_return r;
  }

  awaitable<Response> read_pointer(Request& req) {
    const std::string id = req.path_params.at(0);
    Issue unknown = Issue::make(ErrorCode::not_found, "No such DocumentReference, or you may not see it");
    if (!fhir::is_valid_id(id)) co_return error_response(malformed_pointer_id(), req.format.pretty);
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
    if (!d.break_glass && if_none_match_hits(req.header("if-none-match"), p.version)) co_return not_modified(p.version);
    req.audit.returned.push_back("DocumentReference/" + p.id);
    const locator::PatientRecord& patient = access->judged;
    const std::string nhs = patient.nhs_number_trusted ? patient.demographics.nhs_number : std::string();
    Response r = with_version_headers(fhir_response(200, pointer_json(p, nhs, d.break_glass), req.format.pretty), p.version);
    if (d.break_glass) r.set_header("X-Emergency-Access", "break-glass");
    co_return r;
  }

  // Create (POST) or update (PUT) by the owning source system.
  awaitable<Response> write_pointer(Request& req, bool create) {
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
    auto mapped = locator::pointer_from_document_reference(body);
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
    Response r = with_version_headers(
        fhir_response(created ? 201 : 200, pointer_json(stored, {}, false), req.format.pretty), stored.version);
    if (created) r.set_header("Location", deps_.base_url + "/DocumentReference/" + stored.id);
    co_return r;
  }

  awaitable<Response> delete_pointer(Request& req) {
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
    Response r;
    r.status = 204;
    co_return r;
  }

 private:
  const fhir::SearchParamRegistry& registry_;
  LocatorRouteDeps deps_;
  PatientGate gate_;
  SearchPages pages_;
};

}  // namespace

void register_locator_search_params(fhir::SearchParamRegistry& registry) {
  using T = fhir::SearchParamType;
  const std::string sp = "http://hl7.org/fhir/SearchParameter/";
  registry.add("Patient", {"identifier", T::token, sp + "Patient-identifier", "system|value; NHS numbers are checked"});
  registry.add("Patient", {"family", T::string, sp + "individual-family", "starts with, case and accent insensitive"});
  registry.add("Patient", {"given", T::string, sp + "individual-given", "starts with, case and accent insensitive"});
  registry.add("Patient", {"name", T::string, sp + "Patient-name", "family or given, starts with"});
  registry.add("Patient", {"birthdate", T::date, sp + "individual-birthdate", "prefixes eq ne gt lt ge le sa eb ap"});
  registry.add("Patient", {"gender", T::token, sp + "individual-gender", "male | female | other | unknown"});
  registry.add("Patient", {"address-postalcode", T::string, sp + "individual-address-postalcode",
                           "exact, ignoring case and spaces"});
  registry.add("DocumentReference", {"subject", T::reference, sp + "DocumentReference-subject",
                                     "Patient/{id}, or :identifier=https://fhir.nhs.uk/Id/nhs-number|..."});
  registry.add("DocumentReference", {"patient", T::reference, sp + "clinical-patient", "Patient id"});
  registry.add("DocumentReference", {"type", T::token, sp + "clinical-type", "record type, system|code"});
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
  router.add("GET", "/Patient/{id}", [api](Request& r) { return api->read_patient(r); },
             opts("Patient", "read", Interaction::read));
  router.add("GET", "/Patient", [api](Request& r) { return api->search_patients_get(r); },
             opts("Patient", "search-type", Interaction::search));

  router.add("GET", "/DocumentReference", [api](Request& r) { return api->search_pointers_get(r); },
             opts("DocumentReference", "search-type", Interaction::search));
  router.add("POST", "/DocumentReference/_search", [api](Request& r) { return api->search_pointers_post(r); },
             opts("DocumentReference", "", Interaction::search));
  router.add("GET", "/DocumentReference/{id}", [api](Request& r) { return api->read_pointer(r); },
             opts("DocumentReference", "read", Interaction::read));
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
