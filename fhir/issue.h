// SPDX-License-Identifier: Apache-2.0
// The single error vocabulary of the gateway (DESIGN.md "Errors"): an Issue names what went
// wrong with one ErrorCode; one table (issue.cpp) maps each code to a FHIR IssueType, an
// HTTP status and an optional NHS Spine-ErrorOrWarningCode for OperationOutcome.details.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace fhir {

class Json;

// FHIR R4 IssueSeverity (http://hl7.org/fhir/issue-severity).
enum class Severity { fatal, error, warning, information };

// What went wrong, at the granularity a client can act on. Add a row to the table in
// issue.cpp when adding a value here.
enum class ErrorCode {
  bad_request,              // malformed HTTP or request line
  invalid_json,             // body is not well-formed JSON / not UTF-8
  invalid_resource,         // JSON is well-formed but not a valid resource
  invalid_search_parameter, // unknown (under strict handling) or malformed search parameter
  invalid_value,            // a parameter or element value is out of range or badly formed
  invalid_nhs_number,       // NHS number fails length, digit or Modulus 11 check
  unknown_identifier_system,  // an identifier's assigning authority is unknown (PIXm ITI-83 sourceIdentifier)
  unknown_target_system,    // a cross-reference target domain is unknown (PIXm ITI-83 targetSystem)
  missing_value,            // a required parameter or element is absent
  unknown_resource_type,    // no such FHIR resource type served here
  unsupported_interaction,  // a FHIR interaction this server does not offer (e.g. vread, _history)
  not_found,                // resource id unknown
  gone,                     // resource was deleted
  method_not_allowed,       // route exists, method does not
  not_acceptable,           // only formats we do not produce were asked for (e.g. XML)
  unsupported_media_type,   // request body in a format we do not accept
  not_supported,            // content of a kind the gateway does not process (e.g. an HL7 message type)
  payload_too_large,        // body over the configured limit
  headers_too_large,        // request headers over the configured limit
  uri_too_long,             // the request line alone over the header limit, or a query over its own
  too_costly,               // a search matching more than the server will examine or list: narrow it
  request_timeout,          // client did not send a complete request in time
  tls_required,             // plain HTTP on a TLS port
  unauthenticated,          // no or invalid credentials
  forbidden,                // authenticated but not allowed
  precondition_failed,      // If-Match / version conflict
  conflict,                 // business conflict (e.g. duplicate)
  too_many_requests,        // rate or connection limit
  not_ready,                // service starting or draining
  timeout,                  // a source or store did not answer in time
  informational,            // not an error: an outcome that reports success (e.g. $validate)
  internal_error,           // broken invariant; last-resort catch
};

struct Issue {
  ErrorCode code = ErrorCode::internal_error;
  std::string diagnostics;  // for the user: what was wrong and what to do; never PHI/SQL/paths
  std::string expression;   // FHIRPath-ish location, e.g. "Patient.birthDate" or a parameter name
  Severity severity = Severity::error;

  static Issue make(ErrorCode code, std::string diagnostics, std::string expression = {}) {
    return Issue{code, std::move(diagnostics), std::move(expression), Severity::error};
  }
};

// The mapping row for a code: everything the HTTP and HL7 layers need.
struct IssueMapping {
  std::string_view issue_type;  // FHIR IssueType code, e.g. "not-found"
  int http_status;
  std::string_view spine_code;  // Spine-ErrorOrWarningCode; empty only for non-errors (informational)
  std::string_view display;     // short human text for details.coding.display
};

const IssueMapping& mapping_for(ErrorCode code);
int http_status_for(ErrorCode code);
std::string_view severity_name(Severity s);

inline constexpr std::string_view kSpineErrorSystem =
    "https://fhir.nhs.uk/R4/CodeSystem/Spine-ErrorOrWarningCode";

// Builds an OperationOutcome resource with one entry per issue. Precondition: non-empty.
Json operation_outcome(const std::vector<Issue>& issues);
Json operation_outcome(const Issue& issue);

}  // namespace fhir
