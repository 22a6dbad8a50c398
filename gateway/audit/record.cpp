// SPDX-License-Identifier: Apache-2.0
#include "gateway/audit/record.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <initializer_list>
#include <tuple>
#include <type_traits>

#include "fhir/datatypes.h"
#include "fhir/json.h"
#include "fhir/query_string.h"

namespace gw::audit {

namespace {

constexpr std::size_t kMaxRecordBytes = 256 * 1024;
constexpr std::size_t kMaxListItems = 4096;

fhir::Issue bad(std::string what) {
  return fhir::Issue::make(fhir::ErrorCode::invalid_value, "audit record is not canonical: " + what);
}

// The canonical members, in their order: encode() and decode() both walk this, so the two
// cannot disagree. Member order is the encoding: never reorder, only append new members in a
// new record version. `R` is Record or const Record. "v" is read first, so a reader knows which
// members follow.
template <class R, class Visitor>
void visit_members(R& r, Visitor& v) {
  v.integer("v", r.version);
  v.integer("seq", r.seq);
  v.text("prev", r.prev);
  v.integer("time", r.time_ms);
  v.text("kind", r.kind);
  v.text("action", r.action);
  v.text("method", r.method);
  v.text("target", r.target);
  v.text("route", r.route);
  v.integer("status", r.status);
  v.text("outcome", r.outcome_text);
  v.text("agentKind", r.agent_kind);
  v.text("user", r.user);
  v.text("role", r.role);
  v.text("org", r.organisation);
  v.text("client", r.client_id);
  v.text("tokenId", r.token_id);
  v.text("purpose", r.purpose);
  v.text("address", r.address);
  v.text("clientCert", r.client_certificate);
  v.text("requestId", r.request_id);
  v.text("correlationId", r.correlation_id);
  v.text("source", r.source);
  v.list("patients", r.detail.patients);
  v.list("returned", r.detail.returned);
  v.list("withheld", r.detail.withheld);
  v.text("basis", r.detail.basis);
  v.text("breakGlass", r.detail.break_glass_reason);
  v.text("breakGlassText", r.detail.break_glass_justification);
  v.list("failedSources", r.detail.failed_sources);
  v.text("operation", r.detail.operation);
  v.text("note", r.detail.note);
  if (r.version >= 2) v.text("roleName", r.role_name);
}

}  // namespace

int outcome_code(int status) {
  if (status >= 500) return 8;
  if (status >= 400) return 4;
  return 0;
}

std::vector<std::string> subtypes(const Record& r) {
  std::vector<std::string> out{r.action};
  if (!r.detail.operation.empty()) out.push_back(r.detail.operation);
  if (r.detail.basis == "break-glass" || !r.detail.break_glass_reason.empty()) out.push_back("break-glass");
  return out;
}

namespace {

constexpr std::string_view kRedacted = "[redacted]";

bool is_base64url(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

// Finds the next JWS or JWE in compact serialisation (RFC 7515 / 7516 section 7.1) in `s` from
// `from`: base64url segments joined by at least two dots, the first a JSON header, which
// base64url-encodes to "eyJ". Returns [begin, end) or {npos, npos}.
std::pair<std::size_t, std::size_t> find_jwt(std::string_view s, std::size_t from) {
  constexpr std::size_t kMinLength = 16;
  for (std::size_t at = s.find("eyJ", from); at != std::string_view::npos; at = s.find("eyJ", at + 1)) {
    if (at > 0 && is_base64url(s[at - 1])) continue;  // inside a longer word
    std::size_t end = at;
    int dots = 0;
    while (end < s.size() && (is_base64url(s[end]) || s[end] == '.')) dots += s[end++] == '.';
    if (dots >= 2 && end - at >= kMinLength) return {at, end};
  }
  return {std::string_view::npos, std::string_view::npos};
}

// A JWT in the raw text or, hidden by percent-encoding, in its decoded form.
bool holds_jwt(std::string_view raw) {
  if (find_jwt(raw, 0).first != std::string_view::npos) return true;
  if (raw.find('%') == std::string_view::npos) return false;
  auto decoded = fhir::percent_decode(raw);
  return decoded.ok() && find_jwt(*decoded, 0).first != std::string_view::npos;
}

std::string lower_decoded(std::string_view raw) {
  auto decoded = fhir::percent_decode(raw);
  std::string out = decoded.ok() ? std::move(*decoded) : std::string(raw);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Parameter names whose values are credentials (RFC 6749 sections 2.3.1, 4.1.2, 5.1; RFC 7521;
// OpenID Connect Core 3.1.2.5). `code` is also a FHIR search parameter (Observation?code=)
// whose value the audit must keep, so it counts only in an authorization response, beside
// `state`.
bool is_credential_name(std::string_view name, bool oauth_response) {
  for (std::string_view n : {"access_token", "token", "id_token", "refresh_token", "client_secret", "client_assertion"})
    if (name == n) return true;
  return oauth_response && name == "code";
}

// RFC 9112 section 3.2 and RFC 3986 section 2.1: a target is visible ASCII; anything else a
// client sent is kept as %XX, so the record shows the bytes that came and stays ASCII.
std::string escape_non_ascii(std::string text) {
  const auto outside = [](char c) { return static_cast<unsigned char>(c) < 0x21 || static_cast<unsigned char>(c) > 0x7E; };
  if (std::none_of(text.begin(), text.end(), outside)) return text;
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size() + 16);
  for (char c : text) {
    if (!outside(c)) {
      out.push_back(c);
      continue;
    }
    const auto b = static_cast<unsigned char>(c);
    out.push_back('%');
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 0xF]);
  }
  return out;
}

// The target with the values of credential parameters and any JWT replaced (redact_target).
std::string redact_credentials(std::string_view target) {
  const std::size_t q = target.find('?');
  std::string_view path = target.substr(0, q);
  std::string out;
  out.reserve(target.size());
  for (std::size_t pos = 0; pos <= path.size();) {
    std::size_t slash = path.find('/', pos);
    std::string_view seg = path.substr(pos, slash == std::string_view::npos ? std::string_view::npos : slash - pos);
    out.append(holds_jwt(seg) ? kRedacted : seg);
    if (slash == std::string_view::npos) break;
    out.push_back('/');
    pos = slash + 1;
  }
  if (q == std::string_view::npos) return out;

  std::string_view query = target.substr(q + 1);
  auto parts = [&query](auto&& each) {
    for (std::size_t pos = 0; pos <= query.size();) {
      std::size_t amp = query.find('&', pos);
      each(query.substr(pos, amp == std::string_view::npos ? std::string_view::npos : amp - pos));
      if (amp == std::string_view::npos) break;
      pos = amp + 1;
    }
  };
  bool oauth_response = false;
  parts([&](std::string_view part) { oauth_response |= lower_decoded(part.substr(0, part.find('='))) == "state"; });
  out.push_back('?');
  bool first = true;
  parts([&](std::string_view part) {
    if (!first) out.push_back('&');
    first = false;
    const std::size_t eq = part.find('=');
    if (eq == std::string_view::npos) {
      out.append(holds_jwt(part) ? kRedacted : part);
      return;
    }
    const std::string_view value = part.substr(eq + 1);
    out.append(part.substr(0, eq + 1));
    const bool secret = is_credential_name(lower_decoded(part.substr(0, eq)), oauth_response) && !value.empty();
    out.append(secret || holds_jwt(value) ? kRedacted : value);
  });
  return out;
}

}  // namespace

std::string redact_target(std::string_view target) { return escape_non_ascii(redact_credentials(target)); }

std::string redact_tokens(std::string_view text) {
  std::string out;
  std::size_t done = 0;
  for (auto [at, end] = find_jwt(text, 0); at != std::string_view::npos; std::tie(at, end) = find_jwt(text, end)) {
    out.append(text.substr(done, at - done));
    out.append(kRedacted);
    done = end;
  }
  out.append(text.substr(done));
  return out;
}

namespace {

// Reads a decimal number off the front of `s`.
std::optional<std::uint64_t> read_number(std::string_view& s) {
  std::uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p == s.data()) return std::nullopt;
  s.remove_prefix(static_cast<std::size_t>(p - s.data()));
  return v;
}

bool eat(std::string_view& s, std::string_view word) {
  if (s.substr(0, word.size()) != word) return false;
  s.remove_prefix(word.size());
  return true;
}

}  // namespace

std::optional<std::pair<std::uint64_t, std::uint64_t>> prune_range(std::string_view note) {
  const auto at = note.find("records ");
  if (at == std::string_view::npos) return std::nullopt;
  std::string_view s = note.substr(at + 8);
  auto first = read_number(s);
  if (!first || !eat(s, " to ")) return std::nullopt;
  auto last = read_number(s);
  if (!last || !eat(s, " (")) return std::nullopt;
  auto count = read_number(s);
  if (!count || *count == 0 || *last < *first || *last - *first + 1 != *count) return std::nullopt;
  return std::pair{*first, *last};
}

std::string retention_redaction(std::int64_t time_ms) {
  return std::string(kRetentionRedaction) + format_time_ms(time_ms);
}

bool is_retention_redaction(std::string_view text) {
  // The prefix and a time as format_time_ms() writes it (2026-12-07T20:05:53.000Z).
  return text.size() == kRetentionRedaction.size() + 24 &&
         text.substr(0, kRetentionRedaction.size()) == kRetentionRedaction && text.back() == 'Z';
}

std::string format_time_ms(std::int64_t time_ms) {
  std::time_t secs = static_cast<std::time_t>(time_ms / 1000);
  int ms = static_cast<int>(time_ms % 1000);
  if (ms < 0) {
    ms += 1000;
    --secs;
  }
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
  return buf;
}

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

namespace {

// encode(): compact JSON written straight into a std::string, byte for byte what
// rapidjson::Writer (fhir::to_json, and every record stored so far) writes: the record's bytes
// are hashed into the tree, so the encoding must never change. Strings go through
// fhir::append_json_string (the escapes of rapidjson's writer); tests/gateway/audit/log_test.cpp
// compares the result with rapidjson::Writer. The writer thread encodes every record and
// decode() re-encodes every record it reads, so this is on the hot paths of the log and of the
// verifier.
// A record is never refused, so text that is not UTF-8 (a header or target cut inside a
// character, bytes a client sent) is written with U+FFFD in place of each bad byte: the stored
// bytes must parse as JSON (RFC 8259 section 8.1), or every read of the record fails.
void append_quoted(std::string& out, std::string_view s) {
  if (fhir::is_valid_utf8(s)) fhir::append_json_string(out, s);
  else fhir::append_json_string(out, fhir::valid_utf8(s));
}

struct MemberWriter {
  std::string& out;
  bool first = true;
  // Member names are the fixed ASCII literals of visit_members: nothing to escape.
  void key(const char* k) {
    out.push_back(first ? '{' : ',');
    first = false;
    out.push_back('"');
    out.append(k);
    out.append("\":", 2);
  }
  void text(const char* k, const std::string& v) {
    key(k);
    append_quoted(out, v);
  }
  template <class Int>
  void integer(const char* k, const Int& v) {
    key(k);
    char buf[24];
    const auto end = std::to_chars(buf, buf + sizeof buf, static_cast<std::int64_t>(v)).ptr;
    out.append(buf, static_cast<std::size_t>(end - buf));
  }
  void list(const char* k, const std::vector<std::string>& v) {
    key(k);
    out.push_back('[');
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (i > 0) out.push_back(',');
      append_quoted(out, v[i]);
    }
    out.push_back(']');
  }
};

// Walks the members in canonical order, each at its own position with its own type.
struct MemberReader {
  const std::vector<fhir::Json::Member>& members;
  std::size_t next = 0;
  std::string error;
  const fhir::Json* at(const char* key) {
    if (!error.empty()) return nullptr;
    if (next >= members.size() || members[next].first != key) {
      error = "member " + std::to_string(next) + " is not \"" + key + "\"";
      return nullptr;
    }
    return &members[next++].second;
  }
  void text(const char* key, std::string& out) {
    const fhir::Json* v = at(key);
    if (!v) return;
    if (!v->is_string()) error = std::string(key) + " is not a string";
    else out = v->text();
  }
  template <class Int>
  void integer(const char* key, Int& out) {
    const fhir::Json* v = at(key);
    if (!v) return;
    auto i = v->is_number() ? v->as_int64() : std::nullopt;
    if (!i) {
      error = std::string(key) + " is not an integer";
    } else if (std::string_view(key) == "v" && (*i < 1 || *i > kRecordVersion)) {
      // Before anything else is read: which members follow depends on it.
      error = "unknown record version " + std::to_string(*i);
    } else if constexpr (std::is_same_v<Int, std::uint64_t>) {  // seq
      if (*i < 0) error = "negative sequence number";
      else out = static_cast<Int>(*i);
    } else if constexpr (std::is_same_v<Int, int>) {  // status
      if (*i < 0 || *i > 999) error = "status out of range";
      else out = static_cast<Int>(*i);
    } else {
      out = *i;
    }
  }
  void list(const char* key, std::vector<std::string>& out) {
    const fhir::Json* v = at(key);
    if (!v) return;
    if (!v->is_array() || v->items().size() > kMaxListItems) {
      error = std::string(key) + " is not a list";
      return;
    }
    for (const auto& item : v->items()) {
      if (!item.is_string()) {
        error = std::string(key) + " holds a non-string";
        return;
      }
      out.push_back(item.text());
    }
  }
};

}  // namespace

namespace {

struct TextRepairer {
  void text(const char*, std::string& v) {
    if (!fhir::is_valid_utf8(v)) v = fhir::valid_utf8(v);
  }
  void list(const char*, std::vector<std::string>& v) {
    for (auto& item : v) text(nullptr, item);
  }
  template <class Int>
  void integer(const char*, Int&) {}
};

}  // namespace

void make_valid_utf8(Record& r) {
  TextRepairer repairer;
  visit_members(r, repairer);
}

std::string encode(const Record& r) {
  std::string out;
  out.reserve(1024);  // a Patient read's record is about 750 bytes
  MemberWriter writer{out};
  visit_members(r, writer);
  out.push_back('}');
  return out;
}

fhir::Result<Record> decode(std::string_view bytes) {
  if (bytes.size() > kMaxRecordBytes) return bad("longer than 256 KiB");
  fhir::JsonLimits limits;
  limits.max_depth = 4;
  auto parsed = fhir::parse_json(bytes, limits);
  if (!parsed) return bad(parsed.issue().diagnostics);
  const fhir::Json& o = *parsed;
  if (!o.is_object()) return bad("not an object");
  MemberReader reader{o.members(), 0, {}};
  Record r;
  r.version = 0;
  visit_members(r, reader);
  if (!reader.error.empty()) return bad(reader.error);
  if (reader.next != o.members().size())
    return bad(std::string("unexpected member after \"") + (r.version >= 2 ? "roleName" : "note") + "\"");
  if (encode(r) != bytes) return bad("re-encoding differs from the stored bytes");
  return r;
}

namespace {

constexpr std::string_view kDcm = "http://dicom.nema.org/resources/ontology/DCM";
constexpr std::string_view kEntityType = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
constexpr std::string_view kObjectRole = "http://terminology.hl7.org/CodeSystem/object-role";
constexpr std::string_view kActReason = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
constexpr std::string_view kOdsOrganisation = "https://fhir.nhs.uk/Id/ods-organization-code";
constexpr std::string_view kBalp = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.";

std::string action_code(const Record& r) {
  if (r.action == "create" || r.action == "ingest-applied") return "C";
  if (r.action == "update") return "U";
  if (r.action == "delete" || r.action == "retention-prune") return "D";
  if (r.action == "read" || r.action == "vread" || r.action == "search-type" || r.action == "search") return "R";
  return "E";
}

std::string balp_profile(const Record& r) {
  std::string base;
  if (r.action == "read" || r.action == "vread") base = "Read";
  else if (r.action == "search-type" || r.action == "search") base = "Query";
  else if (r.action == "create") base = "Create";
  else if (r.action == "update") base = "Update";
  else if (r.action == "delete") base = "Delete";
  else return {};
  if (!r.detail.patients.empty() && r.status < 400) base = "Patient" + base;
  return std::string(kBalp) + base;
}

fhir::Json agent(std::string_view type_system, std::string_view type_code, std::string_view display,
                 bool requestor) {
  fhir::Json a = fhir::Json::object();
  a.set("type", fhir::codeable_concept(fhir::coding(type_system, type_code, display)));
  a.set("requestor", fhir::Json::boolean(requestor));
  return a;
}

fhir::Json identifier_ref(std::string_view system, std::string_view value, std::string_view display = {}) {
  fhir::Json ref = fhir::Json::object();
  ref.set("identifier", fhir::identifier(system, value));
  if (!display.empty()) ref.set("display", fhir::Json::string(std::string(display)));
  return ref;
}

fhir::Json entity(fhir::Json what, std::string_view type_code, std::string_view type_display,
                  std::string_view role_code, std::string_view role_display) {
  fhir::Json e = fhir::Json::object();
  e.set("what", std::move(what));
  e.set("type", fhir::coding(kEntityType, type_code, type_display));
  e.set("role", fhir::coding(kObjectRole, role_code, role_display));
  return e;
}

fhir::Json reference(std::string ref) {
  fhir::Json o = fhir::Json::object();
  o.set("reference", fhir::Json::string(std::move(ref)));
  return o;
}

}  // namespace

fhir::Json to_audit_event(const Record& r, std::string_view observer) {
  fhir::Json ev = fhir::Json::object();
  ev.set("resourceType", fhir::Json::string("AuditEvent"));
  ev.set("id", fhir::Json::string(std::to_string(r.seq)));
  fhir::Json meta = fhir::Json::object();
  if (auto profile = balp_profile(r); !profile.empty()) {
    fhir::Json profiles = fhir::Json::array();
    profiles.push_back(fhir::Json::string(profile));
    meta.set("profile", std::move(profiles));
  }
  if (!r.detail.break_glass_reason.empty() || r.detail.basis == "break-glass") {
    fhir::Json sec = fhir::Json::array();
    sec.push_back(fhir::coding(kActReason, "BTG", "break the glass"));
    meta.set("security", std::move(sec));
  }
  if (meta.size() > 0) ev.set("meta", std::move(meta));

  if (r.kind == "rest") {
    ev.set("type", fhir::coding("http://terminology.hl7.org/CodeSystem/audit-event-type", "rest", "RESTful Operation"));
  } else if (r.kind == "ingest") {
    ev.set("type", fhir::coding(kDcm, "110107", "Import"));
  } else {
    ev.set("type", fhir::coding(kDcm, "110100", "Application Activity"));
  }
  fhir::Json sub = fhir::Json::array();
  for (const auto& s : subtypes(r)) {
    if (s == "break-glass") sub.push_back(fhir::coding("https://fhir-gateway.nhs.example/CodeSystem/audit-subtype", s, "Break-glass access"));
    else if (r.kind == "rest" && s.front() != '$')
      sub.push_back(fhir::coding("http://hl7.org/fhir/restful-interaction", s, s));
    else
      sub.push_back(fhir::coding("https://fhir-gateway.nhs.example/CodeSystem/audit-subtype", s, s));
  }
  ev.set("subtype", std::move(sub));
  ev.set("action", fhir::Json::string(action_code(r)));
  ev.set("recorded", fhir::Json::string(format_time_ms(r.time_ms)));
  ev.set("outcome", fhir::Json::string(std::to_string(outcome_code(r.status))));
  std::string outcome_desc = std::to_string(r.status);
  if (!r.outcome_text.empty()) outcome_desc += " " + r.outcome_text;
  ev.set("outcomeDesc", fhir::Json::string(outcome_desc));
  if (!r.purpose.empty() || !r.detail.break_glass_reason.empty()) {
    fhir::Json pou = fhir::Json::array();
    if (!r.purpose.empty()) pou.push_back(fhir::codeable_concept(fhir::coding(kActReason, r.purpose, r.purpose)));
    if (!r.detail.break_glass_reason.empty()) pou.push_back(fhir::codeable_concept(fhir::coding(kActReason, "BTG", "break the glass")));
    ev.set("purposeOfEvent", std::move(pou));
  }

  fhir::Json agents = fhir::Json::array();
  const std::string& role_display = r.role_name.empty() ? r.role : r.role_name;
  if (!r.user.empty() || r.agent_kind == "anonymous") {
    fhir::Json user;
    if (r.agent_kind == "system") {
      // A source system or the gateway itself (ingest, retention, start and stop): software, not
      // a recipient of information. Its name (the configured source name, or "retention") is
      // not an ODS code; the organisation's ODS code, when known, goes under the ODS system.
      user = agent(kDcm, "110150", "Application", true);
      if (!r.organisation.empty()) user.set("who", identifier_ref(kOdsOrganisation, r.organisation, r.user));
      user.set("name", fhir::Json::string(r.user));
    } else {
      user = agent("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "IRCP", "information recipient", true);
      if (!r.user.empty()) user.set("who", identifier_ref("https://fhir.nhs.uk/Id/sds-user-id", r.user, role_display));
    }
    if (!r.token_id.empty()) {
      fhir::Json policy = fhir::Json::array();
      policy.push_back(fhir::Json::string(r.token_id));
      user.set("policy", std::move(policy));
    }
    if (!r.role.empty()) {
      fhir::Json roles = fhir::Json::array();
      // The claim as sent is the code; the display is the gateway's name for the role.
      roles.push_back(
          fhir::codeable_concept(fhir::coding("https://fhir-gateway.nhs.example/CodeSystem/role", r.role, role_display)));
      user.set("role", std::move(roles));
    }
    if (!r.purpose.empty()) {
      fhir::Json pou = fhir::Json::array();
      pou.push_back(fhir::codeable_concept(fhir::coding(kActReason, r.purpose, r.purpose)));
      user.set("purposeOfUse", std::move(pou));
    }
    agents.push_back(std::move(user));
  }
  fhir::Json client = agent(kDcm, "110153", "Source Role ID", false);
  if (!r.client_id.empty()) client.set("who", identifier_ref("urn:ietf:params:oauth:client-id", r.client_id));
  if (!r.client_certificate.empty()) client.set("name", fhir::Json::string(r.client_certificate));
  if (!r.address.empty()) {
    fhir::Json net = fhir::Json::object();
    net.set("address", fhir::Json::string(r.address));
    net.set("type", fhir::Json::string("2"));
    client.set("network", std::move(net));
  }
  agents.push_back(std::move(client));
  fhir::Json server = agent(kDcm, "110152", "Destination Role ID", false);
  server.set("who", identifier_ref("urn:ietf:rfc:3986", observer));
  agents.push_back(std::move(server));
  ev.set("agent", std::move(agents));

  fhir::Json source = fhir::Json::object();
  fhir::Json obs = fhir::Json::object();
  obs.set("display", fhir::Json::string(std::string(observer)));
  source.set("observer", std::move(obs));
  fhir::Json stypes = fhir::Json::array();
  stypes.push_back(fhir::coding("http://terminology.hl7.org/CodeSystem/security-source-type", "4", "Application Server"));
  source.set("type", std::move(stypes));
  ev.set("source", std::move(source));

  fhir::Json entities = fhir::Json::array();
  for (const auto& nhs : r.detail.patients)
    entities.push_back(entity(identifier_ref("https://fhir.nhs.uk/Id/nhs-number", nhs), "1", "Person", "1", "Patient"));
  for (const auto& ref : r.detail.returned)
    entities.push_back(entity(reference(ref), "2", "System Object", "4", "Domain Resource"));
  for (const auto& ref : r.detail.withheld) {
    fhir::Json e = entity(reference(ref), "2", "System Object", "4", "Domain Resource");
    e.set("description", fhir::Json::string("withheld from the response"));
    entities.push_back(std::move(e));
  }
  if (!r.target.empty()) {
    fhir::Json q = entity(fhir::Json::object(), "2", "System Object", "24", "Query");
    q.erase("what");
    q.set("description", fhir::Json::string(r.method + " " + r.target));
    entities.push_back(std::move(q));
  }
  if (!r.source.empty()) {
    fhir::Json what = fhir::Json::object();
    if (!r.organisation.empty()) what = identifier_ref(kOdsOrganisation, r.organisation, r.source);
    else what.set("display", fhir::Json::string(r.source));
    entities.push_back(entity(std::move(what), "2", "System Object", "3", "Report"));
  }
  if (!entities.items().empty()) ev.set("entity", std::move(entities));

  // Gateway-specific facts that have no AuditEvent element, as one extension.
  fhir::Json ext = fhir::Json::array();
  auto add = [&ext](std::string_view url, std::string value) {
    if (value.empty()) return;
    fhir::Json e = fhir::Json::object();
    e.set("url", fhir::Json::string(std::string(url)));
    e.set("valueString", fhir::Json::string(std::move(value)));
    ext.push_back(std::move(e));
  };
  const std::string base = "https://fhir-gateway.nhs.example/StructureDefinition/audit-";
  add(base + "organisation", r.organisation);
  add(base + "request-id", r.request_id);
  add(base + "correlation-id", r.correlation_id);
  add(base + "basis", r.detail.basis);
  add(base + "break-glass-reason", r.detail.break_glass_reason);
  add(base + "break-glass-justification", r.detail.break_glass_justification);
  for (const auto& s : r.detail.failed_sources) add(base + "failed-source", s);
  add(base + "note", r.detail.note);
  add(base + "previous-leaf-hash", r.prev);
  if (!ext.items().empty()) ev.set("extension", std::move(ext));
  return ev;
}

}  // namespace gw::audit
