// SPDX-License-Identifier: Apache-2.0
// The JSON shapes that cross the plug-in C ABI (gw_adapter_abi.h): what the loader sends a
// plug-in (its configuration, fetch requests) and how it reads what comes back (ingest
// batches, fetch answers). Pure functions, no I/O; the loader is plugin_adapter.h.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <variant>

#include "adapters/adapter.h"
#include "fhir/json.h"
#include "fhir/result.h"

namespace gw::adapters {

struct PluginLimits {
  std::size_t max_batch_bytes = 16 * 1024 * 1024;     // one ingest batch (GW_ERR_TOO_LARGE above)
  std::size_t max_response_bytes = 16 * 1024 * 1024;  // one fetch answer
  std::size_t max_pending_fetches = 1024;  // per source; more in flight are refused (not_ready)
  fhir::JsonLimits json;                   // depth and width of both
};

// The configuration create() receives: name, ods_code, endpoint, timeouts, settings and,
// when the source has a credentials_file, "credentials" (its content; a secret).
std::string plugin_config_json(const SourceSystem& source);

// The fetch request: {"patient":{"id","nhs_number","identifiers":[...]},"scope":{...}}.
std::string plugin_fetch_request_json(const PatientKey& patient, const FetchScope& scope);

// An ingest batch from the plug-in of `source` (identity, resources, raw and the optional
// kind, dedupe_key, retired_identifiers, encounters). Fails with payload_too_large over
// limits.max_batch_bytes, invalid_json when not JSON, invalid_resource or invalid_value when
// the shape is wrong (identity not a Patient, a resource without resourceType, another
// source's name, a member of the wrong type, an encounter whose organisation is no ODS code or
// whose date no FHIR date), the identity fails check_batch_identity, a resource fails
// check_batch_resources or its subject names another NHS number than the identity's. An
// accepted batch has resources_checked set: the ingest path does not check them again.
[[nodiscard]] fhir::Result<IngestBatch> parse_plugin_batch(std::string_view json, const std::string& source,
                                                           const PluginLimits& limits = {});

// parse_plugin_batch as the loader calls it, from one parse of the text: the batch, or when it
// is refused, what the gateway keeps of it for the message store and the audit trail
// (IngestSink::record_failure; rejected, with parse_plugin_batch's issue), as an MLLP
// listener keeps a message it rejects: the batch's own "raw" (else the batch text itself;
// nothing when over limits.max_batch_bytes), its kind and dedupe_key when they are strings,
// and the identity's NHS number when it is a valid one, so that the audit record names the
// patient.
[[nodiscard]] std::variant<IngestBatch, IngestFailure> read_plugin_batch(std::string_view json,
                                                                         const std::string& source,
                                                                         const PluginLimits& limits = {});

// A fetch answer from the plug-in of `source`: status 0 with a Bundle gives its entries'
// resources; a non-zero status, an OperationOutcome or anything malformed gives a not_ready
// Issue whose diagnostics name the source (and carry the outcome's first diagnostics).
// Malformed includes an entry that fails check_resource (not an R4 type, no valid id) and,
// when `nhs_number` (the patient asked for) is given, a Patient, or a resource whose subject
// is given by identifier, with another NHS number.
[[nodiscard]] fhir::Result<FetchResult> parse_plugin_answer(int status, std::string_view json,
                                                            const std::string& source,
                                                            const PluginLimits& limits = {},
                                                            std::string_view nhs_number = {});

// `text` from a plug-in made safe for logs and Issue diagnostics: bytes outside printable
// ASCII become '?', and it is cut at `max_bytes`.
std::string printable_text(std::string_view text, std::size_t max_bytes);

}  // namespace gw::adapters
