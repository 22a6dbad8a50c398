// SPDX-License-Identifier: Apache-2.0
// The hospital EPR adapter (issue #4): an MLLP listener (optionally TLS) for one source
// system. Each frame (one message, or one FHS/BHS batch of them) is parsed, mapped to FHIR R4
// and handed to the IngestSink; the acknowledgement goes back only after the sink reports the
// message committed (or its failure stored). Messages on one connection are processed in order, one at a time, so ACKs
// can never be sent out of order (MSA-2 always echoes the MSH-10 being answered).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "adapters/adapter.h"
#include "adapters/hl7v2/message.h"
#include "adapters/hl7v2/mllp_framer.h"

namespace gw::hl7v2 {

// From the source's settings in the configuration ([[source_systems]] with adapter = "hl7v2").
struct ListenerOptions {
  std::string address = "127.0.0.1";   // endpoint "host:port"
  std::uint16_t port = 2575;
  bool tls = false;                     // setting tls = "true": the gateway's certificate
  // With tls: the source's client_certificate_subject. A connection whose verified client
  // certificate has another subject, or none, is closed before anything is read from it.
  std::string client_certificate_subject;
  std::size_t max_connections = 64;    // setting max_connections
  std::size_t max_message_bytes = 4 * 1024 * 1024;  // setting max_message_bytes
  std::chrono::seconds idle_timeout{600};   // no frame started (setting idle_timeout_s)
  std::chrono::seconds frame_timeout{30};   // a frame begun must end within, from its start block, not per read (frame_timeout_s)
  std::chrono::seconds write_timeout{30};
  std::string identifier_system_base = "https://fhir.nhs.uk/Id/local";
  // MSH-11.1 values applied (setting processing_ids): P production by default; a message with
  // another (T training, D debugging) is refused AR, ERR 202, so a training or test system
  // pointed at this listener never changes the live record. An empty MSH-11 is taken as P.
  std::vector<std::string> processing_ids{"P"};
  // Setting unmapped: "reject" (the default) refuses a message of a type or event this adapter
  // does not map (AR, ERR 200/201); "filter" acknowledges it AA (CA), with a warning naming
  // what was not mapped, once it is stored raw with status filtered, and applies nothing. For a
  // feed that sends every event on one connection and would stop, or alert, on each AR.
  bool filter_unmapped = false;
};

// Reads ListenerOptions from `source` (endpoint and settings). invalid_value, its expression
// the key under the source ("endpoint", "settings.max_message_bytes"), for an unknown setting
// (the text lists the known ones), a setting out of range or an endpoint that is not
// "<IP address>:<port>" (a host name is refused here rather than at start). Checks everything start() checks except binding and the TLS context.
fhir::Result<ListenerOptions> listener_options(const adapters::SourceSystem& source);

class Hl7v2Adapter final : public adapters::Adapter {
 public:
  Hl7v2Adapter(adapters::SourceSystem source, ListenerOptions options);
  ~Hl7v2Adapter() override;

  std::string_view kind() const override { return "hl7v2"; }
  // Binds the listener (not_ready naming the address when it cannot) and starts accepting.
  fhir::Status start(adapters::AdapterContext& context) override;
  // Closes the listener and every idle connection; a message being processed still gets its
  // acknowledgement.
  void stop() override;
  // Push only: answers not_supported at once.
  void fetch(const adapters::PatientKey& patient, const adapters::FetchScope& scope,
             std::chrono::steady_clock::time_point deadline, adapters::FetchHandler done) override;

  // Open connections (after stop(): those still finishing a message).
  std::size_t in_flight() const override;
  // The port actually bound (useful with port 0 in tests).
  std::uint16_t port() const;

  struct Stats {
    std::uint64_t connections = 0, open_connections = 0, refused_connections = 0;
    std::uint64_t frames = 0, applied = 0, duplicates = 0, errors = 0, rejected = 0, retry_later = 0;
    std::uint64_t filtered = 0;  // not mapped, acknowledged AA (unmapped = "filter")
    std::uint64_t protocol_violations = 0;  // every FrameEvent, truncated frames, frame/write timeouts
    std::uint64_t idle_closes = 0;          // connections closed by idle_timeout (not a violation)
    std::uint64_t acks_sent = 0, ack_write_failures = 0;
  };
  Stats stats() const;

  struct State;

 private:
  std::shared_ptr<State> s_;
};

// Registers "hl7v2" in `registry`.
void register_hl7v2(adapters::AdapterRegistry& registry);

}  // namespace gw::hl7v2
