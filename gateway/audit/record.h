// SPDX-License-Identifier: Apache-2.0
// One audit record: who did what to whose record, why, from where, and how it ended (issue
// #6). Records are the leaves of the audit log's Merkle tree, so each has exactly one
// canonical byte encoding (compact JSON, fixed member order, every member present), and the
// record carries its own sequence number and the leaf hash of its predecessor: a record moved,
// removed or inserted is caught at its own index, not just somewhere under a checkpoint.
//
// The record is the only place patient identifiers go (operational logs never hold them). It
// is served to IG officers as a FHIR AuditEvent shaped after IHE BALP (to_audit_event).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <optional>
#include <string_view>
#include <vector>

#include "fhir/json.h"
#include "fhir/result.h"

namespace gw::audit {

// What a handler tells the audit about the request it served (the pipeline adds the rest).
struct Detail {
  std::vector<std::string> patients;    // NHS numbers the request concerned or disclosed
  std::vector<std::string> returned;    // "Patient/9000000009", "DocumentReference/…"
  std::vector<std::string> withheld;    // entries withheld by consent or sensitivity
  std::string basis;                    // why access was legitimate: registered-practice, care-team,
                                        // encounter, emergency-purpose, break-glass, system, role
  std::string break_glass_reason;       // reason code when break-glass was used or asked for
  std::string break_glass_justification;
  std::vector<std::string> failed_sources;  // sources that did not answer
  std::string operation;                // e.g. "$ihe-pix", "$access-report" ("" for plain REST)
  std::string note;                     // free text for IG review (e.g. alert review outcome)
  bool audited = true;                  // false only for routes that opt out (health probes)
};

// The canonical encoding's version (the record's "v"). Version 2 appended `roleName`; records
// of version 1 stay readable and keep their bytes (decode() sets Record::version).
inline constexpr std::int64_t kRecordVersion = 2;

struct Record {
  std::int64_t version = kRecordVersion;  // encoding version; 1 only for records read back
  std::uint64_t seq = 0;      // leaf index (assigned by the log)
  std::string prev;           // hex leaf hash of record seq-1 ("" for seq 0; assigned by the log)
  std::int64_t time_ms = 0;   // UTC, milliseconds since the Unix epoch
  std::string kind;           // "rest" (an HTTP request), "ingest" (a message), "system"
  std::string action;         // read, vread, search-type, create, update, delete, operation,
                              // ingest-received/applied/rejected, retention-prune, start, stop
  std::string method;         // HTTP method ("" for non-REST)
  std::string target;         // request path and query as received (may name the patient)
  std::string route;          // matched route template ("unmatched" when none)
  int status = 0;             // HTTP status, or 200/400/500-like for ingests
  std::string outcome_text;   // error diagnostics for failures

  // Who.
  std::string agent_kind;     // "user", "system", "anonymous"
  std::string user;           // token subject, or certificate-mapped system
  std::string role;           // the role claim as the token sent it (e.g. a CIS2 role code)
  std::string organisation;   // ODS code
  std::string client_id;
  std::string token_id;       // jti only; never token material
  // Why.
  std::string purpose;        // purpose of use
  // From where.
  std::string address;
  std::string client_certificate;
  std::string request_id;
  std::string correlation_id;
  std::string source;         // source system for ingests

  Detail detail;
  // The gateway's role for `role` ("clinician", "paramedic", ...: the access policy's name),
  // "" when the claim named no configured role or there was no caller. Version 2 and later.
  std::string role_name;
};

// FHIR AuditEvent.outcome code for an HTTP status: 0 success, 4 minor failure (4xx),
// 8 serious failure (5xx).
int outcome_code(int status);
// BALP-style subtype of a record for the `subtype` search: the action, "break-glass" when
// break-glass was used, and the operation name when there is one.
std::vector<std::string> subtypes(const Record& r);

// The range [first, last] a retention-prune record's note states (Log::prune_before writes
// "...records B to E (N records)..."); empty when it removed nothing or says something else.
std::optional<std::pair<std::uint64_t, std::uint64_t>> prune_range(std::string_view note);

// What retention leaves of a reviewed alert's detail and review note once the record that
// raised it is pruned (Log::prune_before): "removed by audit retention at <time>", the time of
// the prune. The alert's other columns stay. is_retention_redaction() recognises the text.
inline constexpr std::string_view kRetentionRedaction = "removed by audit retention at ";
std::string retention_redaction(std::int64_t time_ms);
bool is_retention_redaction(std::string_view text);

// The canonical encoding: compact JSON, members in a fixed order, all present. Always valid
// UTF-8: a string that is not is written with U+FFFD for each ill-formed byte (as
// make_valid_utf8 would make it).
std::string encode(const Record& r);
// Replaces, in every string of `r`, each byte that is not part of a well-formed UTF-8
// character with U+FFFD. The log does this before a record is encoded, so its search columns
// and alerts hold the text the record holds.
void make_valid_utf8(Record& r);
// Parses an encoding; fails on anything not produced by encode() (unknown or missing members,
// wrong types, non-canonical text: re-encoding must give back the same bytes).
fhir::Result<Record> decode(std::string_view bytes);

// The FHIR R4 AuditEvent (IHE BALP shape) for a stored record; id = the sequence number.
fhir::Json to_audit_event(const Record& r, std::string_view observer);

// The request target as the audit keeps it: the values of credential-bearing query parameters
// (access_token, token, id_token, refresh_token, client_secret, client_assertion, and `code`
// beside `state`, the OAuth 2.0 authorization response) and any path segment or query value
// holding a JWT become "[redacted]". The record holds a token id, never token material, and
// it is append-only and exported, so nothing written can be taken back. Bytes outside visible
// ASCII (a target may hold none, RFC 9112 section 3.2) are kept as %XX.
std::string redact_target(std::string_view target);
// Free text (error diagnostics) with every JWT-shaped run replaced by "[redacted]".
std::string redact_tokens(std::string_view text);

std::string format_time_ms(std::int64_t time_ms);  // RFC 3339 UTC with milliseconds
std::int64_t now_ms();

}  // namespace gw::audit
