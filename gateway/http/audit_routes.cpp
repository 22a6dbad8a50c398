// SPDX-License-Identifier: Apache-2.0
#include "gateway/http/audit_routes.h"

#include <algorithm>
#include <charconv>
#include <memory>

#include "fhir/date_range.h"
#include "fhir/nhs_number.h"
#include "gateway/audit/merkle.h"

namespace gw::http {

// "9000000009" or "https://fhir.nhs.uk/Id/nhs-number|9000000009".
fhir::Result<std::string> nhs_number_param(std::string_view v, const char* name) {
  constexpr std::string_view prefix = "https://fhir.nhs.uk/Id/nhs-number|";
  if (v.substr(0, prefix.size()) == prefix) v.remove_prefix(prefix.size());
  auto ok = fhir::validate_nhs_number(v);
  if (!ok) {
    fhir::Issue i = ok.issue();
    i.expression = name;
    return i;
  }
  return std::string(v);
}

// Free text without leading and trailing white space: "   " is no note at all.
std::string trimmed(std::string_view s) {
  constexpr std::string_view kSpace = " \t\r\n\f\v";
  const std::size_t b = s.find_first_not_of(kSpace);
  if (b == std::string_view::npos) return {};
  return std::string(s.substr(b, s.find_last_not_of(kSpace) - b + 1));
}

namespace {

using boost::asio::awaitable;
using fhir::ErrorCode;
using fhir::Issue;
using fhir::Json;

Json str(std::string s) { return Json::string(std::move(s)); }

std::optional<std::uint64_t> parse_u64(std::string_view v) {
  std::uint64_t n = 0;
  if (v.empty() || v.size() > 19) return std::nullopt;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || p != v.data() + v.size()) return std::nullopt;
  return n;
}

// The first `max` bytes of received text for an error message, cut on a character boundary
// (the message is JSON, and it goes into the audit record).
std::string head(std::string_view s, std::size_t max) { return std::string(s.substr(0, fhir::utf8_cut(s, max))); }

Issue bad_param(std::string text, std::string name) {
  return Issue::make(ErrorCode::invalid_search_parameter, std::move(text), std::move(name));
}

// The diagnostics for a proof parameter (a leaf index or a tree size) that is missing or not a
// whole number.
std::string size_param_text(std::string_view name, const std::optional<std::string_view>& given) {
  const std::string what = name == "index" ? "a record's index" : "a tree size";
  std::string text(name);
  text += given ? " must be " + what + ": a whole number from 0 (got \"" + head(*given, 32) + "\")"
                : " (" + what + ", a whole number) is required";
  return text;
}

// date=ge2026-11-01&date=lt2026-12-01 -> [from, to) in milliseconds.
fhir::Status apply_date(std::string_view v, audit::Query& q) {
  fhir::Prefix prefix = fhir::Prefix::eq;
  static constexpr std::pair<std::string_view, fhir::Prefix> kPrefixes[] = {
      {"eq", fhir::Prefix::eq}, {"ge", fhir::Prefix::ge}, {"gt", fhir::Prefix::gt},
      {"le", fhir::Prefix::le}, {"lt", fhir::Prefix::lt}};
  if (v.size() > 2 && std::isalpha(static_cast<unsigned char>(v[0]))) {
    bool known = false;
    for (const auto& [name, p] : kPrefixes)
      if (v.substr(0, 2) == name) {
        prefix = p;
        known = true;
      }
    if (!known) return bad_param("date supports the prefixes eq, ge, gt, le and lt", "date");
    v.remove_prefix(2);
  }
  auto range = fhir::parse_fhir_date(v);
  if (!range) return bad_param("date: " + range.issue().diagnostics, "date");
  std::int64_t begin = range->begin * 1000, end = range->end * 1000;
  // Records keep milliseconds; parse_fhir_date's ranges are whole seconds. A dateTime given
  // with a fraction is the range of that precision: .9 is 100 ms wide, .941 (or finer) 1 ms.
  if (const std::size_t t = v.find('T'); t != std::string_view::npos && v.size() > t + 9 && v[t + 9] == '.') {
    std::int64_t frac = 0, width = 1000;
    for (std::size_t i = t + 10; i < v.size() && v[i] >= '0' && v[i] <= '9' && width > 1; ++i) {
      width /= 10;
      frac += (v[i] - '0') * width;
    }
    if (width < 1000) {
      begin += frac;
      end = begin + width;
    }
  }
  auto lower = [&q](std::int64_t ms) { q.from_ms = q.from_ms ? std::max(*q.from_ms, ms) : ms; };
  auto upper = [&q](std::int64_t ms) { q.to_ms = q.to_ms ? std::min(*q.to_ms, ms) : ms; };
  switch (prefix) {
    case fhir::Prefix::eq: lower(begin); upper(end); break;
    case fhir::Prefix::ge: lower(begin); break;
    case fhir::Prefix::gt: lower(end); break;
    case fhir::Prefix::le: upper(end); break;
    case fhir::Prefix::lt: upper(begin); break;
    default: break;
  }
  return fhir::Ok{};
}

std::string html_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

// A read of what the route serves: GET, or HEAD (the same answer without its body).
bool reads(const audit::Record& r) { return r.method == "GET" || r.method == "HEAD"; }

// An IG officer's own call (their queries name the patients they concern too).
bool ig_route(const audit::Record& r) { return r.route.rfind("/AuditEvent", 0) == 0 || r.route.rfind("/audit", 0) == 0; }

// Plain-language "what" for a patient's access report (docs/audit.md): every route that can
// name a patient has its own words; the fallback names the kind of access, never a code.
std::string what_text(const audit::Record& r) {
  const std::string& route = r.route;
  if (r.kind == "ingest") return "sent information about you to the shared record";
  if (route == "/audit/flagged-patients/{nhs}")
    return r.method == "DELETE" ? "ended the extra monitoring of who looks at your record (information governance)"
                                : "flagged your record for extra monitoring of who looks at it (information governance)";
  if (route == "/audit/objections/{nhs}" || r.action == "objection-recorded" || r.action == "objection-withdrawn") {
    if (r.status >= 400) return "tried to change your objection to sharing your record, but nothing was changed";
    const bool unchanged = r.detail.note.find("(it already was)") != std::string::npos;
    if ((r.method == "DELETE" || r.action == "objection-withdrawn") && unchanged)
      return "checked that your objection to sharing your record was already withdrawn; nothing changed "
             "(information governance)";
    if ((r.method == "PUT" || r.action == "objection-recorded") && unchanged)
      return "checked that your objection to sharing your record was already recorded; nothing changed "
             "(information governance)";
    if (r.method == "DELETE" || r.action == "objection-withdrawn")
      return "withdrew your objection to sharing your record (information governance)";
    if (r.method == "PUT" || r.action == "objection-recorded")
      return "recorded your objection to sharing your record: it is hidden from everyone, except in an emergency "
             "(information governance)";
    return "checked whether you have objected to sharing your record (information governance)";
  }
  if (route == "/audit/flagged-patients")
    return "looked at the list of records whose access is monitored (information governance)";
  if (ig_route(r)) return "reviewed who has accessed your record (information governance)";
  if (route == "/Patient/{id}") return "looked at your details (name, date of birth, address, GP practice)";
  if (route == "/Patient" || route == "/Patient/_search")
    return r.detail.returned.empty() ? "searched for you" : "searched for you and saw your details";
  if (route == "/Patient/$ihe-pix") return "looked up the numbers other care systems use for you";
  if (route == "/Patient/$record-encounter") return "recorded that you were seen by their organisation";
  if (route == "/Patient/$care-team")
    return r.detail.note.rfind("care team member removed", 0) == 0 ? "removed someone from your care team"
                                                                   : "added someone to your care team";
  if (route == "/Encounter") return "looked at your hospital and clinic visits (encounters)";
  if (route == "/Encounter/{id}") return "looked at one of your hospital or clinic visits";
  if (route == "/Observation") return "looked at your test results and measurements";
  if (route == "/Observation/{id}") return "looked at one of your test results or measurements";
  if (route == "/DiagnosticReport") return "looked at your test reports (such as blood tests and scans)";
  if (route == "/DiagnosticReport/{id}") return "looked at one of your test reports";
  if ((route == "/DocumentReference" && reads(r)) || route == "/DocumentReference/_search")
    return "looked at the list of care services that hold records about you";
  if (route == "/DocumentReference/{id}/_history/{vid}") return "looked at one entry in the list of services holding records about you";
  if (route == "/DocumentReference/{id}") {
    if (reads(r)) return "looked at one entry in the list of services holding records about you";
    if (r.method == "DELETE") return "removed an entry from the list of services holding records about you";
    return "updated the list of care services holding records about you";
  }
  if (route == "/DocumentReference" && r.method == "POST")
    return "added to the list of care services holding records about you";
  if (r.action == "read" || r.action == "search-type" || reads(r)) return "looked at your record";
  return "changed information held about you";
}

// A write that lost to the current state of the record (RFC 9110 section 15.5.10 and 15.5.13:
// a 412 is an If-Match naming a version someone else had already replaced, a 409 a conflict
// with what is there now): access was allowed, the change was not made.
bool lost_to_conflict(const audit::Record& r) { return r.status == 409 || r.status == 412; }

std::string why_text(const audit::Record& r) {
  const std::string& b = r.detail.basis;
  if (!r.detail.break_glass_reason.empty() || b == "break-glass") {
    std::string t = "emergency access (\"break-glass\"), reason: " + r.detail.break_glass_reason;
    if (!r.detail.break_glass_justification.empty()) t += "; they wrote: \"" + r.detail.break_glass_justification + "\"";
    return t;
  }
  if (b == "registered-practice") return "you are registered with their GP practice";
  if (b == "care-team") return "they are part of your care team";
  if (b == "encounter") return "you were recently seen by their organisation";
  if (b == "emergency-purpose") return "emergency care (for example an ambulance crew attending you)";
  if (r.route == "/audit/objections/{nhs}" || r.action == "objection-recorded" || r.action == "objection-withdrawn")
    return "your request about sharing your record";
  if (r.route.rfind("/audit/flagged-patients", 0) == 0)
    return "information governance: some records (for example of staff) are watched more closely";
  if (ig_route(r)) return "information governance review";
  if (b == "system" || r.agent_kind == "system" || r.kind == "ingest")
    return "a connected care system keeping its records up to date";
  // A refusal, or a lookup that showed nothing (no relationship: 200 with an empty answer).
  if ((r.status >= 400 && !lost_to_conflict(r)) || ((reads(r) || r.action == "search-type") && r.detail.returned.empty()))
    return "no access was given";
  return "no reason was recorded";
}

// Plain-language outcome. A refusal can also be an empty answer (a search without a
// relationship is 200 with nothing in it), so what was shown decides, not the status alone.
std::string outcome_text(const audit::Record& r) {
  if (r.status == 412) return "not changed: someone else had changed it first (version conflict, 412)";
  if (r.status == 409) return "not changed: it conflicted with what is held now (conflict, 409)";
  if (r.status >= 400) return "access refused (" + std::to_string(r.status) + ")";
  std::string withheld;
  if (const std::size_t n = r.detail.withheld.size(); n > 0)
    withheld = std::to_string(n) + (n == 1 ? " entry" : " entries") + " withheld";
  // Handlers that disclose patient data list what they returned; IG queries and writes do not.
  const bool ig = ig_route(r);
  // Reads and searches (a POST _search is a search too), not writes.
  const bool lookup = reads(r) || r.action == "search-type" || r.action == "read";
  if (r.kind == "rest" && lookup && !ig && r.detail.returned.empty()) {
    std::string t = r.action == "search-type" ? "searched, nothing shown" : "nothing shown";
    return withheld.empty() ? t : t + " (" + withheld + ")";
  }
  return withheld.empty() ? "access given" : "access given; " + withheld;
}

Json report_entry(const audit::Record& r) {
  Json e = Json::object();
  e.set("when", str(audit::format_time_ms(r.time_ms)));
  e.set("who", str(r.user.empty() ? std::string("unknown caller") : r.user));
  // The gateway's name for the role; the claim as the token sent it when that named none (and
  // in records written before the name was kept).
  e.set("role", str(r.role_name.empty() ? r.role : r.role_name));
  e.set("organisation", str(r.organisation));
  e.set("what", str(what_text(r)));
  e.set("why", str(why_text(r)));
  e.set("outcome", str(outcome_text(r)));
  e.set("auditRecord", str(std::to_string(r.seq)));
  return e;
}

std::string report_html(const std::string& nhs, const std::vector<audit::Record>& records, std::uint64_t total,
                        const std::string& generated, const std::string& checkpoint_line, const std::string& warning,
                        const std::string& next) {
  std::string h;
  h += "<!DOCTYPE html>\n<html lang=\"en-GB\"><head><meta charset=\"utf-8\"><title>Who has accessed this record</title>\n";
  h += "<style>body{font-family:Arial,sans-serif;margin:2em;color:#212b32}table{border-collapse:collapse;width:100%}"
       "th,td{border:1px solid #aeb7bd;padding:6px;text-align:left;vertical-align:top;font-size:14px}"
       "th{background:#f0f4f5}.refused{color:#d5281b}@media print{body{margin:0}}</style></head><body>\n";
  h += "<h1>Who has accessed the shared care record</h1>\n";
  std::string spaced = nhs.size() == 10 ? nhs.substr(0, 3) + " " + nhs.substr(3, 3) + " " + nhs.substr(6) : nhs;
  h += "<p>NHS number <strong>" + html_escape(spaced) + "</strong>. Report produced " + html_escape(generated) +
       ". It lists " + std::to_string(records.size()) + " of " + std::to_string(total) +
       " recorded accesses, newest first.</p>\n";
  if (!warning.empty()) h += "<p class=\"refused\">" + html_escape(warning) + "</p>\n";
  h += "<table><thead><tr><th>When (UTC)</th><th>Who</th><th>Organisation (ODS)</th><th>What they did</th>"
       "<th>Why</th><th>Outcome</th></tr></thead><tbody>\n";
  for (const auto& r : records) {
    Json e = report_entry(r);
    const bool refused = r.status >= 400 && !lost_to_conflict(r);
    h += refused ? "<tr class=\"refused\">" : "<tr>";
    h += "<td>" + html_escape(e.string_at("when")) + "</td>";
    std::string who = std::string(e.string_at("who"));
    if (const std::string role = std::string(e.string_at("role")); !role.empty()) who += " (" + role + ")";
    h += "<td>" + html_escape(who) + "</td>";
    h += "<td>" + html_escape(e.string_at("organisation")) + "</td>";
    h += "<td>" + html_escape(e.string_at("what")) + "</td>";
    h += "<td>" + html_escape(e.string_at("why")) + "</td>";
    h += "<td>" + html_escape(e.string_at("outcome")) + "</td></tr>\n";
  }
  h += "</tbody></table>\n";
  if (!next.empty())
    h += "<p>Older accesses: <a href=\"" + html_escape(next) + "\">" + html_escape(next) + "</a></p>\n";
  h += "<p>This report is drawn from a tamper-evident audit log. " + html_escape(checkpoint_line) +
       "</p>\n</body></html>\n";
  return h;
}

Json b64_list(const std::vector<audit::merkle::Hash>& hashes) {
  Json a = Json::array();
  for (const auto& h : hashes) a.push_back(str(audit::merkle::to_base64(h)));
  return a;
}

// `base` with `query` (its parameters in order, percent-encoded).
std::string url_with(const std::string& base, const fhir::QueryParams& query) {
  std::string url = base;
  char sep = '?';
  for (const auto& [k, v] : query) {
    url.push_back(sep);
    url.append(fhir::percent_encode(k)).append("=").append(fhir::percent_encode(v));
    sep = '&';
  }
  return url;
}

// The same query with the cursor moved past `last` (keyset paging: a sequence number, or an
// NHS number for the flagged records).
std::string next_url(const std::string& base, const fhir::QueryParams& query, const std::string& last) {
  fhir::QueryParams moved = query;
  std::erase_if(moved, [](const auto& kv) { return kv.first == "_cursor"; });
  moved.emplace_back("_cursor", last);
  return url_with(base, moved);
}
std::string next_url(const std::string& base, const fhir::QueryParams& query, std::uint64_t last_seq) {
  return next_url(base, query, std::to_string(last_seq));
}

// The most flagged records one GET /audit/flagged-patients returns.
constexpr std::size_t kMaxFlaggedPage = 1000;
// The most accesses one page of an access report lists (and its default).
constexpr std::size_t kMaxReportPage = 1000;
// The most alerts one page of the review queue lists (and its default).
constexpr std::size_t kMaxAlertPage = 1000;

// The most AuditEvents an IG query's own audit record lists one by one (an export returns up
// to export_max); the note gives the count and the range of sequence numbers in every case.
constexpr std::size_t kMaxListedRecords = 100;

// What a read says of the records in its range that do not decode (audit::Page::damaged): they
// are left out, the rest is served, and audit-verify is the tool that says what happened.
std::string damaged_text(const std::vector<std::uint64_t>& damaged) {
  constexpr std::size_t kMaxNamed = 10;
  const bool one = damaged.size() == 1;
  std::string text = one ? "AuditEvent " : "AuditEvents ";
  for (std::size_t i = 0; i < damaged.size() && i < kMaxNamed; ++i)
    text += (i > 0 ? ", " : "") + std::to_string(damaged[i]);
  if (damaged.size() > kMaxNamed) text += " and " + std::to_string(damaged.size() - kMaxNamed) + " more";
  text += one ? " matches but cannot be read (audit.db holds a damaged record there) and is left out"
              : " match but cannot be read (audit.db holds damaged records there) and are left out";
  return text + "; run audit-verify";
}

fhir::Json damaged_outcome(const std::vector<std::uint64_t>& damaged) {
  Issue w = Issue::make(ErrorCode::internal_error, damaged_text(damaged));
  w.severity = fhir::Severity::warning;
  return fhir::operation_outcome(w);
}

// Tells the IG officer's own audit record which AuditEvents the query showed: each as
// "AuditEvent/{seq}" in `returned` (the first kMaxListedRecords), and in the note what the
// query was, how many it returned and their lowest and highest sequence numbers.
void note_returned(Request& req, const std::string& what, const std::vector<audit::Record>& records,
                   const std::vector<std::uint64_t>& damaged = {}) {
  std::string note = what + ": returned " + std::to_string(records.size()) +
                     (records.size() == 1 ? " AuditEvent" : " AuditEvents");
  if (!records.empty()) {
    auto [lo, hi] = std::minmax_element(records.begin(), records.end(),
                                        [](const audit::Record& a, const audit::Record& b) { return a.seq < b.seq; });
    note += " (sequence numbers " + std::to_string(lo->seq) + " to " + std::to_string(hi->seq) + ")";
  }
  if (records.size() > kMaxListedRecords) note += "; the first " + std::to_string(kMaxListedRecords) + " are listed";
  if (!damaged.empty()) note += "; " + damaged_text(damaged);
  for (std::size_t i = 0; i < records.size() && i < kMaxListedRecords; ++i)
    req.audit.returned.push_back("AuditEvent/" + std::to_string(records[i].seq));
  req.audit.note = std::move(note);
}

class AuditApi {
 public:
  explicit AuditApi(AuditRouteDeps deps) : deps_(std::move(deps)) {}

  // GET /AuditEvent
  awaitable<Response> search(Request& req) {
    audit::Query q;
    q.count = std::min<std::size_t>(50, deps_.max_page);
    for (const auto& [k, v] : *req.query) {
      if (k == "patient" || k == "patient.identifier" || k == "entity.identifier") {
        auto nhs = nhs_number_param(v, "patient");
        if (!nhs) co_return error_response(nhs.issue(), req.format.pretty);
        q.patient = *nhs;
        req.audit.patients.push_back(*nhs);
      } else if (k == "agent" || k == "agent.identifier") {
        if (v.empty() || v.size() > 256) co_return error_response(bad_param("agent needs a user id", "agent"), req.format.pretty);
        q.agent = v.substr(v.find('|') == std::string::npos ? 0 : v.find('|') + 1);
      } else if (k == "date") {
        if (auto s = apply_date(v, q); !s) co_return error_response(s.issue(), req.format.pretty);
      } else if (k == "outcome") {
        if (v != "0" && v != "4" && v != "8" && v != "12")
          co_return error_response(bad_param("outcome is 0 (success), 4, 8 or 12", "outcome"), req.format.pretty);
        q.outcome = std::stoi(v);
      } else if (k == "subtype") {
        if (v.empty() || v.size() > 64) co_return error_response(bad_param("subtype needs a code", "subtype"), req.format.pretty);
        q.subtype = v.substr(v.find('|') == std::string::npos ? 0 : v.find('|') + 1);
      } else if (k == "_count") {
        auto n = parse_u64(v);
        if (!n || *n == 0)
          co_return error_response(bad_param("_count must be a positive integer", "_count"), req.format.pretty);
        q.count = std::min<std::size_t>(*n, deps_.max_page);
      } else if (k == "_cursor") {
        auto n = parse_u64(v);
        if (!n) co_return error_response(bad_param("_cursor must come from a next link", "_cursor"), req.format.pretty);
        q.after_seq = *n;
      } else if (k == "_format" || k == "_pretty") {
      } else {
        co_return error_response(bad_param("unknown AuditEvent search parameter " + head(k, 64) +
                                               "; use patient, agent, date, outcome, subtype, _count",
                                           head(k, 64)),
                                 req.format.pretty);
      }
    }
    // A next link only when rows follow this page (audit::Page::next_after): not for a full
    // last page, and still for a page that damaged records left short.
    auto run = [q](audit::Log& log) { return log.search(q); };
    auto page = co_await deps_.audit.call(run);
    if (!page) co_return error_response(page.issue(), req.format.pretty);
    Json bundle = Json::object();
    bundle.set("resourceType", str("Bundle"));
    bundle.set("type", str("searchset"));
    bundle.set("total", Json::integer(static_cast<std::int64_t>(page->total)));
    Json links = Json::array();
    auto link = [&links](std::string rel, std::string url) {
      Json l = Json::object();
      l.set("relation", str(std::move(rel)));
      l.set("url", str(std::move(url)));
      links.push_back(std::move(l));
    };
    // The self link says the page size applied (a _count above max_page is cut to it).
    fhir::QueryParams applied = *req.query;
    for (auto& p : applied)
      if (p.first == "_count") p.second = std::to_string(q.count);
    link("self", url_with(deps_.base_url + "/AuditEvent", applied));
    if (page->next_after) link("next", next_url(deps_.base_url + "/AuditEvent", applied, *page->next_after));
    note_returned(req, "AuditEvent search", page->records, page->damaged);
    bundle.set("link", std::move(links));
    Json entries = Json::array();
    for (const auto& r : page->records) {
      Json e = Json::object();
      e.set("fullUrl", str(deps_.base_url + "/AuditEvent/" + std::to_string(r.seq)));
      e.set("resource", audit::to_audit_event(r, deps_.observer));
      Json s = Json::object();
      s.set("mode", str("match"));
      e.set("search", std::move(s));
      entries.push_back(std::move(e));
    }
    if (!page->damaged.empty()) {  // R4 search.html: an OperationOutcome about the search itself
      Json e = Json::object();
      e.set("resource", damaged_outcome(page->damaged));
      Json s = Json::object();
      s.set("mode", str("outcome"));
      e.set("search", std::move(s));
      entries.push_back(std::move(e));
    }
    // FHIR JSON has no empty arrays (R4 json.html): no match, no entry element.
    if (!entries.items().empty()) bundle.set("entry", std::move(entries));
    co_return fhir_response(200, bundle, req.format.pretty);
  }

  // GET /AuditEvent/{id}
  awaitable<Response> read(Request& req) {
    auto seq = parse_u64(req.path_params.at(0));
    Issue unknown = Issue::make(ErrorCode::not_found, "no AuditEvent with that id");
    if (!seq) co_return error_response(unknown, req.format.pretty);
    const std::uint64_t n = *seq;
    auto get = [n](audit::Log& log) { return log.get(n); };
    auto rec = co_await deps_.audit.call(get);
    if (!rec) co_return error_response(rec.issue(), req.format.pretty);
    if (!*rec) {
      // Content removed by retention: the record was there, and the log says when it went
      // (410 Gone, as FHIR answers for a deleted resource).
      auto find = [n](audit::Log& log) { return log.removal(n); };
      auto removed = co_await deps_.audit.call(find);
      if (!removed) co_return error_response(removed.issue(), req.format.pretty);
      if (!*removed) co_return error_response(unknown, req.format.pretty);
      std::string text = "AuditEvent " + std::to_string(n) + " was removed by retention";
      if ((*removed)->time_ms) text += " on " + audit::format_time_ms(*(*removed)->time_ms);
      text += "; its leaf hash remains, so GET /audit/proof/inclusion still proves it was in the log";
      req.audit.note = "AuditEvent read: " + text;
      co_return error_response(Issue::make(ErrorCode::gone, text), req.format.pretty);
    }
    note_returned(req, "AuditEvent read", {**rec});
    co_return fhir_response(200, audit::to_audit_event(**rec, deps_.observer), req.format.pretty);
  }

  // GET /AuditEvent/$access-report?patient=NHS[&_format=html]
  awaitable<Response> access_report(Request& req) {
    std::optional<std::string> nhs;
    bool html = req.header("accept").find("text/html") != std::string_view::npos;
    audit::Query q;
    std::size_t count = kMaxReportPage;
    for (const auto& [k, v] : *req.query) {
      if (k == "_count") {
        auto n = parse_u64(v);
        if (!n || *n == 0 || *n > kMaxReportPage)
          co_return error_response(bad_param("_count must be 1 to " + std::to_string(kMaxReportPage), "_count"));
        count = static_cast<std::size_t>(*n);
      } else if (k == "_cursor") {
        auto n = parse_u64(v);
        if (!n) co_return error_response(bad_param("_cursor must come from a next link", "_cursor"));
        q.after_seq = *n;
      } else if (k == "patient") {
        auto n = nhs_number_param(v, "patient");
        if (!n) co_return error_response(n.issue());
        nhs = *n;
      } else if (k == "_format") {
        html = v == "html" || v == "text/html";
        if (!html && v != "json" && v != "application/json")
          co_return error_response(bad_param("_format is json or html", "_format"));
      } else if (k == "date") {
        if (auto s = apply_date(v, q); !s) co_return error_response(s.issue());
      } else {
        co_return error_response(bad_param("unknown parameter " + head(k, 64) +
                                               "; use patient, date, _format, _count, _cursor",
                                           head(k, 64)));
      }
    }
    if (!nhs) co_return error_response(bad_param("patient (an NHS number) is required", "patient"));
    req.audit.patients.push_back(*nhs);
    q.patient = *nhs;
    // Newest first, with a next link while older accesses remain (audit::Page::next_after), so
    // a flood of newer accesses cannot push an older one out of the report's reach.
    q.count = count;
    auto run = [q](audit::Log& log) { return log.search(q); };
    auto page = co_await deps_.audit.call(run);
    if (!page) co_return error_response(page.issue());
    std::string next;
    if (page->next_after)
      next = next_url(deps_.base_url + "/AuditEvent/$access-report", *req.query, *page->next_after);
    auto cps = [](audit::Log& log) { return log.checkpoints(1); };
    auto latest = co_await deps_.audit.call(cps);
    std::string cp_line = "No signed checkpoint has been written yet.";
    if (latest && !latest->empty())
      cp_line = "Latest signed checkpoint: " + std::to_string(latest->front().size) + " records, root " +
                audit::merkle::to_base64(latest->front().root) + ", " + audit::format_time_ms(latest->front().time_ms) + ".";
    const std::string generated = audit::format_time_ms(audit::now_ms());
    note_returned(req, "access report for NHS number " + *nhs + " (" + std::to_string(page->total) + " accesses on record)",
                  page->records, page->damaged);
    const std::string warning = page->damaged.empty() ? std::string() : damaged_text(page->damaged);
    if (html) {
      Response r = text_response(200, "text/html; charset=utf-8",
                                 report_html(*nhs, page->records, page->total, generated, cp_line, warning, next));
      // The page shows text callers chose (user ids, break-glass justifications), escaped; as
      // defence in depth it may run nothing, load nothing but its own inline style, and not
      // be framed (no clickjacking of a page an IG officer or a patient is shown).
      r.set_header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'");
      r.set_header("X-Frame-Options", "DENY");
      co_return r;
    }
    Json out = Json::object();
    out.set("nhsNumber", str(*nhs));
    out.set("generated", str(generated));
    out.set("total", Json::integer(static_cast<std::int64_t>(page->total)));
    out.set("shown", Json::integer(static_cast<std::int64_t>(page->records.size())));
    Json entries = Json::array();
    for (const auto& r : page->records) entries.push_back(report_entry(r));
    out.set("accesses", std::move(entries));
    out.set("integrity", str(cp_line));
    if (!warning.empty()) out.set("warning", str(warning));
    if (!next.empty()) out.set("next", str(next));
    co_return text_response(200, "application/json", fhir::to_json(out, req.query_value("_pretty") == "true"));
  }

  // GET /AuditEvent/$export?start=...&end=...[&_cursor=]
  awaitable<Response> export_ndjson(Request& req) {
    audit::Query q;
    q.newest_first = false;
    q.count = deps_.export_max;
    for (const auto& [k, v] : *req.query) {
      if (k == "start" || k == "end") {
        auto range = fhir::parse_fhir_date(v);
        if (!range) co_return error_response(bad_param(k + ": " + range.issue().diagnostics, k));
        if (k == "start") q.from_ms = range->begin * 1000;
        else q.to_ms = range->end * 1000;
      } else if (k == "_cursor") {
        auto n = parse_u64(v);
        if (!n) co_return error_response(bad_param("_cursor must come from a next link", "_cursor"));
        q.after_seq = *n;
      } else {
        co_return error_response(bad_param("unknown parameter " + head(k, 64) + "; use start, end", head(k, 64)));
      }
    }
    if (!q.from_ms || !q.to_ms)
      co_return error_response(bad_param("start and end are required (e.g. start=2026-11-01&end=2026-11-30)", "start"));
    auto run = [q](audit::Log& log) { return log.search(q); };
    auto page = co_await deps_.audit.call(run);
    if (!page) co_return error_response(page.issue());
    note_returned(req, "AuditEvent export", page->records, page->damaged);
    std::string body;
    for (const auto& r : page->records) {
      fhir::append_json(audit::to_audit_event(r, deps_.observer), body);
      body += '\n';
    }
    // The gap is stated in the file itself, so an archived export says what it lacks.
    if (!page->damaged.empty()) {
      fhir::append_json(damaged_outcome(page->damaged), body);
      body += '\n';
    }
    Response resp = text_response(200, "application/fhir+ndjson", std::move(body));
    if (page->next_after) {
      std::string link = "<";
      link.append(next_url(deps_.base_url + "/AuditEvent/$export", *req.query, *page->next_after))
          .append(">; rel=\"next\"");
      resp.set_header("Link", std::move(link));
    }
    resp.set_header("X-Total-Count", std::to_string(page->total));
    co_return resp;
  }

  awaitable<Response> checkpoint(Request& req) {
    (void)req;
    auto cps = [](audit::Log& log) { return log.checkpoints(1); };
    auto latest = co_await deps_.audit.call(cps);
    if (!latest) co_return error_response(latest.issue());
    if (latest->empty())
      co_return error_response(Issue::make(ErrorCode::not_found, "no checkpoint has been signed yet"));
    co_return text_response(200, "text/plain; charset=utf-8", audit::serialise(latest->front()));
  }

  awaitable<Response> inclusion(Request& req) {
    auto index = req.query_value("index");
    auto size = req.query_value("size");
    auto i = index ? parse_u64(*index) : std::nullopt;
    auto n = size ? parse_u64(*size) : std::nullopt;
    if (!i) co_return error_response(bad_param(size_param_text("index", index), "index"));
    if (!n) co_return error_response(bad_param(size_param_text("size", size), "size"));
    const std::uint64_t idx = *i, sz = *n;
    auto run = [idx, sz](audit::Log& log) { return log.inclusion_proof(idx, sz); };
    auto p = co_await deps_.audit.call(run);
    if (!p) co_return error_response(p.issue());
    // The proof carries the record's canonical bytes (unless retention removed them).
    if (!p->record.empty()) req.audit.returned.push_back("AuditEvent/" + std::to_string(p->index));
    Json out = Json::object();
    out.set("leafIndex", Json::integer(static_cast<std::int64_t>(p->index)));
    out.set("treeSize", Json::integer(static_cast<std::int64_t>(p->size)));
    out.set("leafHash", str(audit::merkle::to_base64(p->leaf)));
    out.set("rootHash", str(audit::merkle::to_base64(p->root)));
    out.set("proof", b64_list(p->path));
    out.set("record", str(p->record));
    co_return text_response(200, "application/json", fhir::to_json(out));
  }

  awaitable<Response> consistency(Request& req) {
    auto from = req.query_value("from");
    auto to = req.query_value("to");
    auto a = from ? parse_u64(*from) : std::nullopt;
    auto b = to ? parse_u64(*to) : std::nullopt;
    if (!a) co_return error_response(bad_param(size_param_text("from", from), "from"));
    if (!b) co_return error_response(bad_param(size_param_text("to", to), "to"));
    const std::uint64_t s1 = *a, s2 = *b;
    auto run = [s1, s2](audit::Log& log) { return log.consistency_proof(s1, s2); };
    auto p = co_await deps_.audit.call(run);
    if (!p) co_return error_response(p.issue());
    auto roots = [s1, s2](audit::Log& log) -> fhir::Result<std::pair<audit::merkle::Hash, audit::merkle::Hash>> {
      auto r1 = log.root_at(s1);
      if (!r1) return std::move(r1).issue();
      auto r2 = log.root_at(s2);
      if (!r2) return std::move(r2).issue();
      return std::make_pair(*r1, *r2);
    };
    auto rs = co_await deps_.audit.call(roots);
    if (!rs) co_return error_response(rs.issue());
    Json out = Json::object();
    out.set("size1", Json::integer(static_cast<std::int64_t>(s1)));
    out.set("size2", Json::integer(static_cast<std::int64_t>(s2)));
    out.set("root1", str(audit::merkle::to_base64(rs->first)));
    out.set("root2", str(audit::merkle::to_base64(rs->second)));
    out.set("proof", b64_list(*p));
    co_return text_response(200, "application/json", fhir::to_json(out));
  }

  awaitable<Response> alerts(Request& req) {
    std::string status = "open";
    if (auto s = req.query_value("status")) {
      if (*s != "open" && *s != "reviewed" && *s != "all")
        co_return error_response(bad_param("status is open, reviewed or all", "status"));
      status = *s == "all" ? "" : std::string(*s);
    }
    // Newest first, a page at a time: however many alerts are raised after it (a flood of
    // refused break-glass attempts, say), an older one is never out of reach.
    std::size_t count = kMaxAlertPage;
    std::optional<std::int64_t> before;
    if (auto c = req.query_value("_count")) {
      auto n = parse_u64(*c);
      if (!n || *n == 0 || *n > kMaxAlertPage)
        co_return error_response(bad_param("_count must be 1 to " + std::to_string(kMaxAlertPage), "_count"));
      count = static_cast<std::size_t>(*n);
    }
    if (auto c = req.query_value("_cursor")) {
      auto n = parse_u64(*c);
      if (!n || *n > static_cast<std::uint64_t>(INT64_MAX))
        co_return error_response(bad_param("_cursor must come from a next link", "_cursor"));
      before = static_cast<std::int64_t>(*n);
    }
    // One more than asked (whether there is a next page), and the queue's total, in one visit
    // to the audit readers.
    using AlertPage = std::pair<std::vector<audit::Alert>, std::uint64_t>;
    auto run = [status, count, before](audit::Log& log) -> fhir::Result<AlertPage> {
      auto found = log.alerts(status, count + 1, before);
      if (!found) return std::move(found).issue();
      auto counted = log.alert_count(status);
      if (!counted) return std::move(counted).issue();
      return AlertPage{std::move(*found), *counted};
    };
    auto page = co_await deps_.audit.call(run);
    if (!page) co_return error_response(page.issue());
    std::vector<audit::Alert>& alerts = page->first;
    const std::uint64_t total = page->second;
    const bool more = alerts.size() > count;
    if (more) alerts.pop_back();
    // The IG officer's record names the alerts shown and the AuditEvents they point to.
    std::string note = "alert queue (" + (status.empty() ? std::string("all") : status) + "): returned " +
                       std::to_string(alerts.size()) + " of " + std::to_string(total) +
                       (total == 1 ? " alert" : " alerts");
    if (!alerts.empty())
      note += " (ids " + std::to_string(alerts.back().id) + " to " + std::to_string(alerts.front().id) + ")";
    if (alerts.size() > kMaxListedRecords) note += "; the first " + std::to_string(kMaxListedRecords) + " are listed";
    req.audit.note = std::move(note);
    for (std::size_t i = 0; i < alerts.size() && i < kMaxListedRecords; ++i)
      req.audit.returned.push_back("AuditEvent/" + std::to_string(alerts[i].seq));
    Json items = Json::array();
    for (const auto& a : alerts) {
      Json o = Json::object();
      o.set("id", Json::integer(a.id));
      o.set("rule", str(a.rule));
      o.set("detail", str(a.detail));
      o.set("auditEvent", str(deps_.base_url + "/AuditEvent/" + std::to_string(a.seq)));
      o.set("raised", str(audit::format_time_ms(a.raised_ms)));
      o.set("status", str(a.status));
      // Retention removed the detail and note with the record that raised the alert: said so
      // plainly, so that a client need not recognise the placeholder text.
      if (audit::is_retention_redaction(a.detail)) o.set("redacted", Json::boolean(true));
      if (a.status == "reviewed") {
        o.set("reviewer", str(a.reviewer));
        o.set("outcome", str(a.review_outcome));
        o.set("note", str(a.review_note));
        o.set("reviewed", str(audit::format_time_ms(a.reviewed_ms)));
      }
      items.push_back(std::move(o));
    }
    Json out = Json::object();
    out.set("total", Json::integer(static_cast<std::int64_t>(total)));
    out.set("alerts", std::move(items));
    if (more)
      out.set("next", str(next_url(deps_.base_url + "/audit/alerts", *req.query, std::to_string(alerts.back().id))));
    co_return text_response(200, "application/json", fhir::to_json(out));
  }

  awaitable<Response> review(Request& req) {
    auto id = parse_u64(req.path_params.at(0));
    if (!id) co_return error_response(Issue::make(ErrorCode::not_found, "no such alert"));
    const Json& body = *req.json_body;
    std::string outcome(body.is_object() ? body.string_at("outcome") : std::string_view());
    std::string note = trimmed(body.is_object() ? body.string_at("note") : std::string_view());
    static constexpr std::string_view kOutcomes[] = {"appropriate", "inappropriate", "referred", "no-further-action"};
    if (std::find(std::begin(kOutcomes), std::end(kOutcomes), outcome) == std::end(kOutcomes))
      co_return error_response(Issue::make(ErrorCode::invalid_value,
                                           "outcome must be appropriate, inappropriate, referred or no-further-action",
                                           "outcome"));
    if (note.size() > 2000)
      co_return error_response(Issue::make(ErrorCode::invalid_value, "note is limited to 2000 characters", "note"));
    if (outcome != "appropriate" && note.empty())
      co_return error_response(Issue::make(ErrorCode::missing_value, "a note is required unless the access was appropriate",
                                           "note"));
    const std::int64_t alert = static_cast<std::int64_t>(*id);
    const std::string review = outcome + (note.empty() ? "" : " - " + note);
    // Made with this request's record, in one commit (Request::audit_change): unknown, or
    // reviewed before (409), this attempt changes nothing, and the record says so.
    req.audit_change = Request::AuditChange{
        audit::Log::review_alert(alert, req.principal->subject, outcome, note), [alert, review](const Issue& refusal) {
          return "alert " + std::to_string(alert) + " not reviewed (" + head(refusal.diagnostics, 200) +
                 "); attempted: " + review;
        }};
    req.audit.note = "alert " + std::to_string(alert) + " reviewed: " + review;
    Json out = Json::object();
    out.set("id", Json::integer(alert));
    out.set("status", str("reviewed"));
    out.set("outcome", str(outcome));
    co_return text_response(200, "application/json", fhir::to_json(out));
  }

  awaitable<Response> flag(Request& req) {
    auto nhs = nhs_number_param(req.path_params.at(0), "nhsNumber");
    if (!nhs) co_return error_response(nhs.issue());
    const Json& body = *req.json_body;
    std::string reason = trimmed(body.is_object() ? body.string_at("reason") : std::string_view());
    if (reason.empty() || reason.size() > 500)
      co_return error_response(Issue::make(ErrorCode::invalid_value, "reason (1-500 characters, e.g. \"staff member\") is required",
                                           "reason"));
    req.audit.patients.push_back(*nhs);
    req.audit.note = "record flagged for access alerts: " + reason;
    req.audit_change = Request::AuditChange{audit::Log::flag_patient(*nhs, reason, req.principal->subject),
                                            [](const Issue& refusal) {
                                              return "record not flagged: " + head(refusal.diagnostics, 200);
                                            }};
    Json out = Json::object();
    out.set("nhsNumber", str(*nhs));
    out.set("flagged", Json::boolean(true));
    out.set("reason", str(reason));
    co_return text_response(200, "application/json", fhir::to_json(out));
  }

  // GET /audit/flagged-patients[?_count=&_cursor=]
  awaitable<Response> flagged(Request& req) {
    std::size_t count = std::min<std::size_t>(100, kMaxFlaggedPage);
    std::string after;
    for (const auto& [k, v] : *req.query) {
      if (k == "_count") {
        auto n = parse_u64(v);
        if (!n || *n == 0 || *n > kMaxFlaggedPage)
          co_return error_response(bad_param("_count must be 1 to " + std::to_string(kMaxFlaggedPage), "_count"));
        count = static_cast<std::size_t>(*n);
      } else if (k == "_cursor") {
        auto nhs = nhs_number_param(v, "_cursor");
        if (!nhs) co_return error_response(bad_param("_cursor must come from a next link", "_cursor"));
        after = *nhs;
      } else {
        co_return error_response(bad_param("unknown parameter " + head(k, 64) + "; use _count", head(k, 64)));
      }
    }
    // One more than asked: whether there is a next page.
    auto run = [after, count](audit::Log& log) { return log.flagged_patients(after, count + 1); };
    auto page = co_await deps_.audit.call(run);
    if (!page) co_return error_response(page.issue());
    const bool more = page->items.size() > count;
    if (more) page->items.pop_back();
    Json items = Json::array();
    for (const auto& f : page->items) {
      Json o = Json::object();
      o.set("nhsNumber", str(f.nhs_number));
      o.set("reason", str(f.reason));
      o.set("flaggedBy", str(f.flagged_by));
      o.set("flagged", str(audit::format_time_ms(f.flagged_ms)));
      items.push_back(std::move(o));
      // The NHS numbers shown are in the IG officer's own record, as any disclosure is.
      req.audit.patients.push_back(f.nhs_number);
    }
    req.audit.note = "flagged records list: returned " + std::to_string(page->items.size()) + " of " +
                     std::to_string(page->total);
    Json out = Json::object();
    out.set("total", Json::integer(static_cast<std::int64_t>(page->total)));
    out.set("flaggedPatients", std::move(items));
    if (more)
      out.set("next", str(next_url(deps_.base_url + "/audit/flagged-patients", *req.query, page->items.back().nhs_number)));
    co_return text_response(200, "application/json", fhir::to_json(out));
  }

  // DELETE /audit/flagged-patients/{nhs}
  awaitable<Response> unflag(Request& req) {
    auto nhs = nhs_number_param(req.path_params.at(0), "nhsNumber");
    if (!nhs) co_return error_response(nhs.issue());
    req.audit.patients.push_back(*nhs);
    // Not flagged (404), or flagged by the configuration (409): refused at commit, and the
    // record says so.
    req.audit_change = Request::AuditChange{audit::Log::unflag_patient(*nhs), [](const Issue& refusal) {
                                              return "record not unflagged: " + head(refusal.diagnostics, 200);
                                            }};
    req.audit.note = "record unflagged: accesses to it no longer raise flagged-record alerts";
    Json out = Json::object();
    out.set("nhsNumber", str(*nhs));
    out.set("flagged", Json::boolean(false));
    co_return text_response(200, "application/json", fhir::to_json(out));
  }

 private:
  AuditRouteDeps deps_;
};

}  // namespace

void register_audit_search_params(fhir::SearchParamRegistry& registry) {
  using T = fhir::SearchParamType;
  const std::string sp = "http://hl7.org/fhir/SearchParameter/AuditEvent-";
  registry.add("AuditEvent", {"patient", T::reference, sp + "patient",
                              "the NHS number, alone or as https://fhir.nhs.uk/Id/nhs-number|{number}"});
  registry.add("AuditEvent", {"agent", T::reference, sp + "agent", "the user id (token subject), or system|id"});
  registry.add("AuditEvent", {"date", T::date, sp + "date", "prefixes eq ge gt le lt; repeat for a range"});
  registry.add("AuditEvent", {"outcome", T::token, sp + "outcome", "0 (success), 4, 8 or 12"});
  registry.add("AuditEvent", {"subtype", T::token, sp + "subtype", "the action (read, search-type, ...), the operation, or break-glass"});
}

void add_audit_routes(Router& router, AuditRouteDeps deps) {
  auto api = std::make_shared<AuditApi>(std::move(deps));
  using auth::Interaction;
  // `check`: the AuditEvent permission the token's scopes must grant (the pipeline also wants
  // the role's audit access; POST and PUT here need both read and search).
  auto opts = [](std::string interaction, std::string operation, bool fhir_json, Interaction check) {
    RouteOptions o;
    o.access = Access::audit;
    o.auth_interaction = check;
    o.fhir = fhir_json;
    o.resource_type = fhir_json ? "AuditEvent" : "";
    o.interaction = std::move(interaction);
    o.operation = std::move(operation);
    return o;
  };
  // Operations of this gateway's own, named under its canonical base as the relationship
  // operations are (CapabilityStatement.rest.resource.operation.definition is 1..1).
  RouteOptions report = opts("", "access-report", false, Interaction::search);
  report.resource_type = "AuditEvent";
  report.operation_definition = "https://fhir-gateway.nhs.example/OperationDefinition/AuditEvent-access-report";
  RouteOptions exp = opts("", "export", false, Interaction::search);
  exp.resource_type = "AuditEvent";
  exp.operation_definition = "https://fhir-gateway.nhs.example/OperationDefinition/AuditEvent-export";
  router.add("GET", "/AuditEvent/$access-report", [api](Request& r) { return api->access_report(r); }, report);
  router.add("GET", "/AuditEvent/$export", [api](Request& r) { return api->export_ndjson(r); }, exp);
  router.add("GET", "/AuditEvent", [api](Request& r) { return api->search(r); },
             opts("search-type", "", true, Interaction::search));
  router.add("GET", "/AuditEvent/{id}", [api](Request& r) { return api->read(r); },
             opts("read", "", true, Interaction::read));
  router.add("GET", "/audit/checkpoint", [api](Request& r) { return api->checkpoint(r); },
             opts("", "", false, Interaction::read));
  router.add("GET", "/audit/proof/inclusion", [api](Request& r) { return api->inclusion(r); },
             opts("", "", false, Interaction::read));
  router.add("GET", "/audit/proof/consistency", [api](Request& r) { return api->consistency(r); },
             opts("", "", false, Interaction::read));
  router.add("GET", "/audit/alerts", [api](Request& r) { return api->alerts(r); },
             opts("", "", false, Interaction::search));
  RouteOptions with_body = opts("", "", false, Interaction::search);
  with_body.json_body = true;
  router.add("POST", "/audit/alerts/{id}/review", [api](Request& r) { return api->review(r); }, with_body);
  router.add("PUT", "/audit/flagged-patients/{nhs}", [api](Request& r) { return api->flag(r); }, with_body);
  router.add("GET", "/audit/flagged-patients", [api](Request& r) { return api->flagged(r); },
             opts("", "", false, Interaction::search));
  // DELETE needs read and search, as PUT does (the pipeline asks both of every non-GET).
  router.add("DELETE", "/audit/flagged-patients/{nhs}", [api](Request& r) { return api->unflag(r); },
             opts("", "", false, Interaction::search));
}

}  // namespace gw::http
