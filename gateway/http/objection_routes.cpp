// SPDX-License-Identifier: Apache-2.0
#include "gateway/http/objection_routes.h"

#include <memory>

#include "fhir/content_negotiation.h"
#include "fhir/nhs_number.h"
#include "fhir/query_string.h"
#include "gateway/http/audit_routes.h"

namespace gw::http {
namespace {

using boost::asio::awaitable;
using fhir::ErrorCode;
using fhir::Issue;
using fhir::Json;

constexpr std::size_t kMaxNoteBytes = 500;

// The patient an objection concerns, and whether one is recorded now.
struct Standing {
  std::string patient_id;
  bool objection = false;
};

class ObjectionApi {
 public:
  ObjectionApi(LocatorRouteDeps deps, ObjectionAudit& changes) : deps_(std::move(deps)), changes_(changes) {}

  // GET /audit/objections/{nhs}
  awaitable<Response> read(Request& req) {
    auto nhs = nhs_number_param(req.path_params.at(0), "nhsNumber");
    if (!nhs) co_return error_response(nhs.issue());
    req.audit.patients.push_back(*nhs);
    const std::string n = *nhs;
    // Named, as every lambda given to a co_await in this project is: with a temporary one, the
    // g++ 12 build crashed freeing the coroutine's frame.
    auto look = [n](locator::Locator& l) { return standing(l, n); };
    auto now = co_await deps_.locator.call(look);
    if (!now) co_return error_response(now.issue());
    req.audit.returned.push_back("Patient/" + now->patient_id);
    req.audit.note = now->objection ? "objection to sharing: recorded" : "objection to sharing: none recorded";
    co_return answer(n, *now, std::nullopt);
  }

  // PUT /audit/objections/{nhs} (record) and DELETE (withdraw).
  awaitable<Response> change(Request& req, bool object) {
    auto nhs = nhs_number_param(req.path_params.at(0), "nhsNumber");
    if (!nhs) co_return error_response(nhs.issue());
    // PUT needs the note (the patient's request); DELETE may give one in an optional body.
    std::optional<Json> parsed;
    if (!object && !req.body.empty()) {
      if (!fhir::is_json_media_type(req.header("content-type")))
        co_return error_response(Issue::make(ErrorCode::unsupported_media_type,
                                             "a DELETE body is optional; when given it is JSON {\"note\": \"...\"} "
                                             "with Content-Type application/json"));
      fhir::JsonLimits limits;
      limits.max_bytes = 4096;
      auto body = fhir::parse_json(req.body, limits);
      if (!body) co_return error_response(body.issue());
      parsed = std::move(*body);
    }
    const Json* body = object ? &*req.json_body : parsed ? &*parsed : nullptr;
    auto note = note_of(body, object);
    if (!note) co_return error_response(note.issue());
    req.audit.patients.push_back(*nhs);
    // The same subtype as gw-locator objection's records, so that one AuditEvent search
    // (subtype=objection-recorded) finds every change however it was made.
    req.audit.operation = object ? "objection-recorded" : "objection-withdrawn";
    const std::string n = *nhs;
    // The change commits with a row awaiting this request's record (gateway/objection_audit.h):
    // in flight from before it is written, so that recovery leaves it to this request.
    locator::ObjectionChange c;
    c.id = changes_.begin_change();
    c.nhs_number = n;
    c.objection = object;
    if (req.principal) {
      // Within the row's limit whatever the token says (the record itself names them in full).
      const std::string& sub = req.principal->subject;
      const std::string& org = req.principal->organisation;
      c.by = "user " + sub.substr(0, fhir::utf8_cut(sub, 160)) +
             (org.empty() ? std::string() : " (" + org.substr(0, fhir::utf8_cut(org, 64)) + ")");
    }
    c.note = *note;
    c.request_id = req.request_id;
    c.time_ms = audit::now_ms();
    // The lookup and the change run together on the locator's writer, so no other change of
    // this patient's objection comes between them and `changed` is exact.
    auto op = [n, c](locator::Locator& l) -> fhir::Result<std::pair<Standing, bool>> {
      auto before = standing(l, n);
      if (!before) return std::move(before).issue();
      locator::ObjectionChange change = c;
      change.patient_id = before->patient_id;
      auto changed = l.change_objection(std::move(change));
      if (!changed) return std::move(changed).issue();
      before->objection = c.objection;
      return std::make_pair(std::move(*before), *changed);
    };
    auto done = co_await deps_.locator.call_write(op);
    const std::string what = object ? "objection to sharing recorded" : "objection to sharing withdrawn";
    if (!done || !done->second) changes_.dropped(c.id);  // no row was written
    if (!done) {
      req.audit.note = (object ? "objection to sharing not recorded: " : "objection to sharing not withdrawn: ") +
                       done.issue().diagnostics.substr(0, fhir::utf8_cut(done.issue().diagnostics, 200)) +
                       (note->empty() ? "" : "; note: " + *note);
      co_return error_response(done.issue());
    }
    req.audit.returned.push_back("Patient/" + done->first.patient_id);
    req.audit.note = (done->second ? objection_change_note(c) : what + " (it already was)") +
                     (note->empty() ? "" : ": " + *note);
    if (done->second) {
      ObjectionAudit* changes = &changes_;
      req.change_made = Request::ChangeMade{
          object ? "The objection to sharing was recorded" : "The objection to sharing was withdrawn",
          [changes, id = c.id](bool committed) { changes->audited(id, committed); }};
    }
    co_return answer(n, done->first, done->second);
  }

 private:
  static fhir::Result<Standing> standing(locator::Locator& l, const std::string& nhs) {
    auto id = l.lookup_identifier(fhir::kNhsNumberSystem, nhs);
    if (!id) return std::move(id).issue();
    if (!*id) return Issue::make(ErrorCode::not_found, "no patient with NHS number " + nhs + " is in the index", "nhsNumber");
    auto p = l.read_patient(**id);
    if (!p) return std::move(p).issue();
    if (!*p) return Issue::make(ErrorCode::not_found, "no patient with NHS number " + nhs + " is in the index", "nhsNumber");
    return Standing{(*p)->id, (*p)->objection};
  }

  // The note of a body ({"note": "..."} and nothing else): one line of 1-500 bytes; required
  // for PUT, optional (empty when there is no body) for DELETE.
  static fhir::Result<std::string> note_of(const Json* body, bool required) {
    const std::string rule = "one line of 1-500 bytes naming the patient's request (e.g. \"request ref 42\")";
    if (!body) return std::string();
    if (!body->is_object())
      return Issue::make(ErrorCode::invalid_value, "the body must be a JSON object: {\"note\": \"...\"}");
    for (const auto& member : body->members())
      if (member.first != "note") {
        const std::string key = member.first.substr(0, fhir::utf8_cut(member.first, 64));
        return Issue::make(ErrorCode::invalid_value, "unknown field \"" + key + "\"; the body takes only \"note\"", key);
      }
    std::string note = trimmed(body->string_at("note"));
    if (note.size() > kMaxNoteBytes || has_control(note) || (required && note.empty()))
      return Issue::make(ErrorCode::invalid_value, (required ? "note is required: " : "note must be ") + rule, "note");
    return note;
  }

  static bool has_control(std::string_view s) {
    for (unsigned char c : s)
      if (c < 0x20 || c == 0x7f) return true;
    return false;
  }

  static Response answer(const std::string& nhs, const Standing& s, std::optional<bool> changed) {
    Json out = Json::object();
    out.set("nhsNumber", Json::string(nhs));
    out.set("patient", Json::string("Patient/" + s.patient_id));
    out.set("objection", Json::boolean(s.objection));
    if (changed) out.set("changed", Json::boolean(*changed));
    out.set("effect", Json::string(s.objection ? "the shared record is hidden from every user; only a break-glass "
                                                 "grant opens it"
                                               : "the shared record is visible to users with a legitimate relationship"));
    return text_response(200, "application/json", fhir::to_json(out));
  }

  LocatorRouteDeps deps_;
  ObjectionAudit& changes_;
};

}  // namespace

void add_objection_routes(Router& router, LocatorRouteDeps deps, ObjectionAudit& changes) {
  auto api = std::make_shared<ObjectionApi>(std::move(deps), changes);
  // As the other /audit routes: the role's audit access, and the token's AuditEvent scopes
  // (read, and search for a change: the pipeline asks both of every non-GET).
  auto opts = [](auth::Interaction check, bool body) {
    RouteOptions o;
    o.access = Access::audit;
    o.auth_interaction = check;
    o.fhir = false;
    o.json_body = body;
    return o;
  };
  router.add("GET", "/audit/objections/{nhs}", [api](Request& r) { return api->read(r); },
             opts(auth::Interaction::read, false));
  router.add("PUT", "/audit/objections/{nhs}", [api](Request& r) { return api->change(r, true); },
             opts(auth::Interaction::search, true));
  router.add("DELETE", "/audit/objections/{nhs}", [api](Request& r) { return api->change(r, false); },
             opts(auth::Interaction::search, false));
}

}  // namespace gw::http
