// SPDX-License-Identifier: Apache-2.0
// The adapter contract (DESIGN.md "Contracts"): how a source system's data enters the gateway
// (push: IngestBatches handed to an IngestSink, acknowledged on the wire only when the sink
// reports the batch committed) and how the gateway asks a source for a patient's records
// (pull: fetch under a deadline). Built-in adapters are registered by name in
// AdapterRegistry; vendor plug-ins load through the C ABI in adapters/plugin/.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/any_io_executor.hpp>

#include "fhir/json.h"
#include "fhir/result.h"

namespace gw::adapters {

// A configured source system ([[source_systems]] in the configuration).
struct SourceSystem {
  std::string name;      // unique, e.g. "royal-infirmary-pas"
  std::string ods_code;  // the organisation's ODS code
  std::string adapter;   // registered adapter name ("hl7v2", ...) or "plugin"
  std::string plugin;    // path of the shared library when adapter == "plugin"
  std::string endpoint;  // adapter-specific: listen address, base URL
  // RFC 2253 subject (as OpenSSL prints it, e.g. "CN=epr,O=Trust") the source's verified TLS
  // client certificate must carry; empty = not checked. A listener that accepts TLS enforces it.
  std::string client_certificate_subject;
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds fetch_timeout{10000};  // default deadline of one fetch
  // Adapter-specific settings (string values, as written in the configuration). Never
  // secrets: those go in `credentials`.
  std::vector<std::pair<std::string, std::string>> settings;
  // The content of the source's credentials_file (plug-ins get it in create()'s
  // configuration as "credentials"); empty when none. A secret: never log or quote it.
  std::string credentials;
  // The value of `settings` key `key`, or `fallback`.
  std::string setting(std::string_view key, std::string_view fallback = {}) const {
    for (const auto& [k, v] : settings)
      if (k == key) return v;
    return std::string(fallback);
  }
};

// One inbound unit (an HL7 message, a social care record ...) normalised to FHIR R4.
struct IngestBatch {
  std::string source;                // SourceSystem::name
  fhir::Json identity;               // Patient-shaped identity: identifiers + demographics
  std::vector<fhir::Json> resources; // R4 resources derived from the unit
  std::string raw;                   // the unit as received, kept in store.db

  // Optional, for sources that have them.
  std::string kind;                  // e.g. "ADT^A01": shown in the message store and audit
  // The sender's own key for the unit (HL7: MSH-3|MSH-4|MSH-10). A unit with the same key and
  // the same raw bytes as one already applied is a resend: it is not applied again.
  std::string dedupe_key;
  // What the adapter will answer on success (an HL7 AA); stored with the unit so that a
  // resend gets the same answer.
  std::string reply;
  // What the adapter will answer when the unit cannot be applied (an HL7 AE with its ERR),
  // built from the issue as reported to it: the ingest path stores it with the unit's error
  // row, so the message store shows the reply sent. The adapter must send these bytes.
  std::function<std::string(const fhir::Issue&)> error_reply;
  // What the adapter will answer on success when the ingest path adds warnings of its own (an
  // identity conflict the record locator recorded: the unit was filed apart from the record
  // its identifiers named), built from every warning of the unit; the ingest path stores it
  // as `reply`, and the adapter must then send these bytes. Unset: `reply` is sent.
  std::function<std::string(const std::vector<std::string>&)> reply_with_warnings;
  // A merge (HL7 A40): identifiers of a record to retire into `identity`'s record, each a
  // FHIR Identifier {system, value}.
  std::vector<fhir::Json> retired_identifiers;
  // Contacts to record for the access policy: (organisation ODS code, FHIR dateTime).
  std::vector<std::pair<std::string, std::string>> encounters;
  // Where the identity and the merge came from in the unit (HL7: "PID-3", "MRG-1"), so that
  // failures stored and reported name the sender's own location.
  std::string identity_location;
  std::string merge_location;
  // Where in the unit each resource's id comes from ("Encounter/enc-1" -> HL7 "PV1-19", the
  // visit number), so that a refusal naming the resource names the sender's location.
  std::vector<std::pair<std::string, std::string>> key_locations;
  // Where the unit came from (e.g. "10.1.2.3:50123"), for its audit record.
  std::string peer;
  // What the adapter could not take as sent but did not stop the unit (a malformed birth
  // date left out, a value kept as text), each "LOCATION: text" with the unit's own location
  // first ("PID-7: ..."). No patient data: stored with the unit's row, counted and logged.
  std::vector<std::string> warnings;
  // Set by the adapter that built the batch once `resources`, exactly as handed over, passed
  // check_batch_resources (the plug-in loader checks them to refuse a batch at once): the
  // ingest path then does not check them again. Left false, the ingest path checks them.
  bool resources_checked = false;
};

// Resources one batch may carry.
inline constexpr std::size_t kMaxBatchResources = 10000;

// The resource types a batch may carry: those the gateway keeps in its store and serves
// (gateway/http/clinical_routes registers its read routes from this list). Any other type
// would be stored and acknowledged but never shown to a clinician.
inline constexpr std::array<std::string_view, 5> kStoredResourceTypes = {"DiagnosticReport", "Encounter", "Location",
                                                                         "Observation", "Practitioner"};

// What any resource from a source must be, pushed or fetched: a JSON object of an R4
// resource type with a valid FHIR id (1 to 64 of A-Z a-z 0-9 - .; the source's own, so that a
// later copy replaces it), that is valid FHIR R4 JSON: fhir::check_structure_and_elements
// (json.html rules; for the types in the element table, every element known, of the right JSON
// type and cardinality, required elements present, required codes and date/time formats right).
// `where` names it in the issue ("batch.resources[2]"); the first problem is returned, with the
// resource's type/id and FHIR path in the text and `where` + the path as the expression
// ("batch.resources[2].valueQuantity.value"), and how many more there are.
fhir::Status check_resource(const fhir::Json& resource, const std::string& where);

// Checks what every adapter's resources must be before any part of a batch is applied: each
// passes check_resource and is of one of kStoredResourceTypes (so never Patient: that is the
// identity); resource ids are one namespace per type across sources (an id another source
// holds is refused when the batch is applied). At most kMaxBatchResources. The issue names
// the resource (batch.resources[i]).
fhir::Status check_batch_resources(const std::vector<fhir::Json>& resources);

// Checks a batch's identity before anything is queued: a Patient that is valid FHIR R4 JSON
// (fhir::check_structure_and_elements, as check_resource; no id needed: the first problem as
// "batch.identity (Patient) is not valid FHIR R4: Patient.birthDate: ...", expression
// "batch.identity.birthDate"), with at least one identifier the record locator can match on
// (an entry with both system and value, e.g. the NHS number). Without one, every later unit
// for the same person would make another record, so the locator refuses it; checked here so
// that an adapter can refuse the unit at once (the locator applies its own limits and value
// checks later). The issue's expression is "batch.identity", "batch.identity.<path>" or
// "batch.identity.identifier".
fhir::Status check_batch_identity(const fhir::Json& identity);

// A failed unit the adapter could not turn into a batch (unparseable, unsupported, bad
// content): kept in store.db with its status so it can be listed and replayed.
struct IngestFailure {
  std::string source;
  std::string raw;
  std::string kind;
  std::string dedupe_key;
  bool rejected = false;             // true: refused as unreadable/unsupported (HL7 AR);
                                     // false: readable but not applicable (HL7 AE)
  // A unit of a type or event the adapter does not map, acknowledged as accepted because its
  // source is set to (hl7v2: unmapped = "filter"): stored with status filtered, nothing applied.
  // `rejected` is then false and `issue` says what was not mapped.
  bool filtered = false;
  fhir::Issue issue;                 // why
  std::string peer;                  // where it came from, as IngestBatch::peer
  // A valid NHS number the unit names, when it could be read: the audit record of the
  // failure names the patient, so that "who sent what about this person" stays complete.
  std::string nhs_number;
  // What the adapter answers (an HL7 AR/AE with its ERR), stored with the row.
  std::string reply;
};

struct IngestReceipt {
  std::int64_t message_id = 0;       // the unit's row in store.db
  bool duplicate = false;            // a resend of an applied unit: nothing applied again
  std::string prior_reply;           // for a duplicate: the reply stored with the original
  std::string patient_id;            // the gateway id the unit was filed under
};

// Where adapters deliver batches. `done` runs exactly once, on any thread: with the receipt
// after the batch is committed, or with the Issue that stopped it (nothing of the batch is
// then stored; the failure itself is recorded as by record_failure). Issues: the batch's
// content (invalid_value, missing_value, not_found for a merge of an unknown record,
// conflict), or the gateway's (not_ready, too_many_requests, internal_error: retry later).
class IngestSink {
 public:
  virtual ~IngestSink() = default;
  virtual void submit(IngestBatch batch, std::function<void(fhir::Result<IngestReceipt>)> done) = 0;
  // Records a unit that failed before it became a batch; `done` after commit.
  virtual void record_failure(IngestFailure failure, std::function<void(fhir::Status)> done) = 0;
};

// Who the gateway is asking about, in every form a source may know the patient by.
struct PatientKey {
  std::string patient_id;  // the gateway's id
  std::string nhs_number;  // trusted NHS number, when known
  // The source's own identifiers for the patient: (system, value).
  std::vector<std::pair<std::string, std::string>> local_identifiers;
};

// What to fetch: FHIR resource types (empty: everything the source offers).
struct FetchScope {
  std::vector<std::string> resource_types;
};

struct FetchResult {
  std::string source;                 // SourceSystem::name
  std::vector<fhir::Json> resources;  // FHIR R4 resources
};

// Completion of one fetch: the resources, or an Issue whose diagnostics name the source
// (timeout when the deadline passed, not_ready when the source is down or refused).
using FetchHandler = std::function<void(fhir::Result<FetchResult>)>;

// Operational log lines from adapters (the gateway routes them to its JSON log). Never pass
// patient data: fields carry counts, names of sources, protocol events. Adapters log short
// events (source, event, peer and a few details): the gateway writes the first
// kMaxLogFields fields of a line and, when there were more, the field "fields_dropped" with
// how many it left out.
enum class LogLevel { debug, info, warn, error };
inline constexpr std::size_t kMaxLogFields = 8;
using AdapterLog = std::function<void(LogLevel level, std::string_view message,
                                      const std::vector<std::pair<std::string, std::string>>& fields)>;

// What the gateway gives an adapter when it starts.
struct AdapterContext {
  boost::asio::any_io_executor executor;  // for the adapter's sockets and timers
  IngestSink* sink = nullptr;             // where push adapters deliver batches
  AdapterLog log;                         // may be empty: then nothing is logged
  // The gateway's TLS server context (its certificate, and client CA for mutual TLS), for
  // adapters whose listeners speak TLS; null when the gateway has none. Opaque here so that
  // the contract does not pull in OpenSSL headers: a boost::asio::ssl::context*.
  void* tls_server_context = nullptr;
};

class Adapter {
 public:
  virtual ~Adapter() = default;
  virtual std::string_view kind() const = 0;
  // Starts listeners for push adapters; pull-only adapters keep the executor for fetches.
  // Called once, on the start-up thread, before any fetch.
  virtual fhir::Status start(AdapterContext& context) = 0;
  // Stops accepting new work; in-flight batches and fetches still complete.
  virtual void stop() = 0;
  // Pull: asks the source for the patient's records. `done` runs exactly once, on the
  // adapter's executor, by `deadline` at the latest. A push-only adapter answers at once
  // with not_supported.
  virtual void fetch(const PatientKey& patient, const FetchScope& scope,
                     std::chrono::steady_clock::time_point deadline, FetchHandler done) = 0;
  // Work a graceful shutdown waits for after stop() (e.g. connections still answering).
  virtual std::size_t in_flight() const { return 0; }
};

using AdapterFactory = std::function<fhir::Result<std::unique_ptr<Adapter>>(const SourceSystem&)>;

// The one explicit registry of built-in adapters, filled at start-up (not thread-safe until
// then, read-only afterwards).
class AdapterRegistry {
 public:
  // Throws std::invalid_argument on a duplicate name (a start-up programming error).
  void add(std::string name, AdapterFactory factory);
  // Fails with a message listing the registered names when `source.adapter` is unknown.
  fhir::Result<std::unique_ptr<Adapter>> create(const SourceSystem& source) const;
  std::vector<std::string> names() const;

 private:
  std::vector<std::pair<std::string, AdapterFactory>> factories_;
};

}  // namespace gw::adapters
