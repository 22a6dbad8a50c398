// SPDX-License-Identifier: Apache-2.0
// The adapter contract (DESIGN.md "Contracts"): how a source system's data enters the gateway.
// Push adapters hand IngestBatches to an IngestSink and acknowledge on the wire only when the
// sink reports the batch committed. Pull (fetch under a deadline) and the plug-in C ABI are
// added with the adapters issue; this header fixes the shapes they plug into.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "fhir/json.h"
#include "fhir/result.h"

namespace gw::adapters {

// A configured source system ([[sources]] in the configuration).
struct SourceSystem {
  std::string name;      // unique, e.g. "royal-infirmary-pas"
  std::string ods_code;  // the organisation's ODS code
  std::string adapter;   // registered adapter name, e.g. "hl7v2"
  std::string endpoint;  // adapter-specific: listen address, base URL, plug-in path
};

// One inbound unit (an HL7 message, a social care record ...) normalised to FHIR R4.
struct IngestBatch {
  std::string source;                // SourceSystem::name
  fhir::Json identity;               // Patient-shaped identity: identifiers + demographics
  std::vector<fhir::Json> resources; // R4 resources derived from the unit
  std::string raw;                   // the unit as received, kept in store.db
};

// Where adapters deliver batches. `done` runs exactly once: with Ok after the batch is
// committed, or with the Issue that stopped it (nothing of the batch is then stored).
class IngestSink {
 public:
  virtual ~IngestSink() = default;
  virtual void submit(IngestBatch batch, std::function<void(fhir::Status)> done) = 0;
};

class Adapter {
 public:
  virtual ~Adapter() = default;
  virtual std::string_view kind() const = 0;
  // Starts listeners for push adapters; pull-only adapters do nothing.
  virtual fhir::Status start(IngestSink& sink) = 0;
  virtual void stop() = 0;
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
