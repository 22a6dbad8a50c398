// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: HL7 v2 -> FHIR mapping and acknowledgements, the steps the adapter takes
// for one message (Hl7v2Adapter's process_message, without the store): parse under the
// listener's default limits, map_message, and the ACKs for the outcome (applied with its
// warnings, AE for content that cannot be mapped, AR for an unsupported type or a message the
// parser refused). Properties, for any input:
// - never crashes; mapping is deterministic (a second run gives the same resources);
// - every resource and the identity pass the ingest contract (check_batch_resources,
//   check_batch_identity: structurally valid FHIR R4 of a stored type, with a FHIR id), and
//   serialise to JSON that parses back to the same tree;
// - an NHS-number identifier outside the identity and the retired identifiers is a valid NHS
//   number; within them at most one is not, and only when no valid one was read (issue #3:
//   kept as received, never trusted); nhs_number_of() is empty or that valid number;
// - a mapped message's key_locations name resources it produced;
// - a refusal carries a diagnostic and an HL7 location form the ERR segment can use;
// - each ACK parses as HL7 v2, is an ACK, and its MSA-2 is the inbound MSH-10 as sent.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "adapters/adapter.h"
#include "adapters/hl7v2/ack.h"
#include "adapters/hl7v2/hl7v2_adapter.h"
#include "adapters/hl7v2/mapping.h"
#include "adapters/hl7v2/message.h"
#include "fhir/json.h"
#include "fhir/nhs_number.h"

namespace {

using gw::hl7v2::Message;
using gw::hl7v2::MshSummary;
using gw::hl7v2::Outcome;

void require(bool ok) {
  if (!ok) __builtin_trap();
}

// Field `n` of the first segment named `id` of an ACK, split on the ACK's own field separator
// (MSH-1 at offset 3), bytes as written.
std::string ack_field(std::string_view ack, std::string_view id, std::size_t n) {
  require(ack.size() > 8 && ack.substr(0, 3) == "MSH");
  const char sep = ack[3];
  std::size_t at = 0;
  while (at < ack.size()) {
    std::size_t end = ack.find('\r', at);
    if (end == std::string_view::npos) end = ack.size();
    std::string_view seg = ack.substr(at, end - at);
    if (seg.size() >= id.size() + 1 && seg.substr(0, id.size()) == id && seg[id.size()] == sep) {
      std::size_t start = id.size() + 1;
      for (std::size_t f = 1; f < n; ++f) {
        const std::size_t next = seg.find(sep, start);
        if (next == std::string_view::npos) return {};
        start = next + 1;
      }
      return std::string(seg.substr(start, seg.find(sep, start) - start));
    }
    at = end + 1;
  }
  __builtin_trap();  // no such segment
}

// Every acknowledgement must be a readable ACK that answers the inbound MSH-10: byte for byte
// when it is written with the inbound delimiters, else escaped in the standard ones (build_ack).
void check_acks(const MshSummary& msh, const std::vector<std::string>& acks) {
  const bool inbound_delimiters = msh.found && gw::hl7v2::read_delimiters(msh.field_separator, msh.encoding_characters).ok();
  for (const std::string& ack : acks) {
    auto parsed = Message::parse(ack);
    require(parsed.ok());
    require(parsed->message_type().rfind("ACK", 0) == 0);
    const std::string msa2 = ack_field(ack, "MSA", 2);
    require((inbound_delimiters ? msa2 : gw::hl7v2::unescape(msa2, gw::hl7v2::Delimiters{})) == msh.field(10));
  }
}

void refused(const MshSummary& msh, const fhir::Issue& issue, Outcome outcome, std::string_view raw) {
  require(!issue.diagnostics.empty());
  const gw::hl7v2::AckError err = gw::hl7v2::ack_error_for(issue, raw);
  require(err.code >= 100 && err.code <= 207);
  check_acks(msh, gw::hl7v2::acknowledgements(msh, outcome, err));
}

// NHS-number identifiers anywhere under `v`: how many are not valid NHS numbers.
std::size_t invalid_nhs_numbers(const fhir::Json& v, std::size_t& valid) {
  std::size_t invalid = 0;
  if (v.is_object()) {
    if (v.string_at("system") == fhir::kNhsNumberSystem && v.find("value") != nullptr) {
      if (fhir::is_valid_nhs_number(v.string_at("value")))
        ++valid;
      else
        ++invalid;
    }
    for (const auto& m : v.members()) invalid += invalid_nhs_numbers(m.second, valid);
  } else if (v.is_array()) {
    for (const fhir::Json& item : v.items()) invalid += invalid_nhs_numbers(item, valid);
  }
  return invalid;
}

void round_trips(const fhir::Json& r) {
  auto again = fhir::parse_json(fhir::to_json(r));
  require(again.ok() && *again == r);
}

void check_mapped(const Message& message, const gw::hl7v2::MappingContext& ctx, const gw::hl7v2::MappedMessage& m) {
  require(gw::adapters::check_batch_resources(m.resources).ok());
  require(gw::adapters::check_batch_identity(m.patient).ok());
  round_trips(m.patient);
  for (const fhir::Json& r : m.resources) {
    round_trips(r);
    std::size_t valid = 0;
    require(invalid_nhs_numbers(r, valid) == 0);
  }
  std::size_t valid = 0;
  const std::size_t invalid = invalid_nhs_numbers(m.patient, valid);
  require(valid <= 1 && invalid <= 1 && (invalid == 0 || valid == 0));
  const std::string nhs = gw::hl7v2::nhs_number_of(message, ctx);
  require(nhs.empty() || fhir::is_valid_nhs_number(nhs));
  require(nhs.empty() == (valid == 0));
  if (m.merge) {
    fhir::Json retired = fhir::Json::array();
    for (const fhir::Json& id : m.merge->retired_identifiers) retired.push_back(id);
    std::size_t retired_valid = 0;
    const std::size_t retired_invalid = invalid_nhs_numbers(retired, retired_valid);
    require(retired_invalid <= 1 && (retired_invalid == 0 || retired_valid == 0));
  }
  for (const auto& entry : m.key_locations) {
    const std::string& key = entry.first;
    require(!entry.second.empty());
    const bool produced = std::any_of(m.resources.begin(), m.resources.end(), [&key](const fhir::Json& r) {
      return std::string(r.string_at("resourceType")) + "/" + std::string(r.string_at("id")) == key;
    });
    require(produced);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string frame(reinterpret_cast<const char*>(data), size);
  const gw::hl7v2::ListenerOptions options;
  gw::hl7v2::ParseOptions popts;
  popts.max_message_bytes = options.max_message_bytes;
  auto parsed = Message::parse(frame, popts);
  if (!parsed) {
    refused(gw::hl7v2::read_msh(frame), parsed.issue(), Outcome::rejected, frame);
    return 0;
  }
  const Message& message = *parsed;
  const MshSummary msh = gw::hl7v2::read_msh(frame, message);
  gw::hl7v2::MappingContext ctx;
  ctx.source_name = "fuzz-pas";
  ctx.source_ods = "RFZ";
  ctx.identifier_system_base = options.identifier_system_base;
  auto mapped = gw::hl7v2::map_message(message, ctx);
  auto again = gw::hl7v2::map_message(message, ctx);
  require(mapped.ok() == again.ok());
  if (!mapped) {
    const fhir::Issue& issue = mapped.issue();
    require(issue.code == again.issue().code && issue.expression == again.issue().expression);
    const bool unsupported = issue.code == fhir::ErrorCode::not_supported;
    refused(msh, issue, unsupported ? Outcome::rejected : Outcome::error, frame);
    return 0;
  }
  require(gw::hl7v2::is_supported(mapped->message_type));
  require(mapped->resources.size() == again->resources.size() && mapped->patient == again->patient);
  for (std::size_t i = 0; i < mapped->resources.size(); ++i) require(mapped->resources[i] == again->resources[i]);
  check_mapped(message, ctx, *mapped);
  std::vector<std::string> acks = gw::hl7v2::acknowledgements(msh, Outcome::applied, std::nullopt);
  for (std::string& ack : acks) ack = gw::hl7v2::with_warnings(msh, std::move(ack), mapped->warnings);
  check_acks(msh, acks);
  return 0;
}
