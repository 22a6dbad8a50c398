// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the plug-in boundary (adapters/plugin/plugin_json.cpp), the JSON a vendor
// plug-in hands the host. The first byte picks the mode, the rest is the plug-in's text:
// even: an ingest batch (parse_plugin_batch, read_plugin_batch); odd: a fetch answer
// (parse_plugin_answer) with status 0 (bit 1 clear) or a failure status, asking for a patient
// with an NHS number (bit 2) or without. Properties, for any input:
// - never crashes (ASan+UBSan); the same text twice gives the same result;
// - an accepted batch is the source's, marked resources_checked, and passes the ingest checks
//   (check_batch_identity, check_batch_resources); a refused one has a diagnostic, and
//   read_plugin_batch refuses it too, with the same issue, the source's name, and an NHS
//   number only when it is a valid one;
// - an answer gives the source's resources, each passing check_resource, or a not_ready issue
//   whose text names the source; a failure status is always refused.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

#include "adapters/adapter.h"
#include "adapters/plugin/plugin_json.h"
#include "fhir/json.h"
#include "fhir/nhs_number.h"

namespace {

const std::string kSource = "vendor-pas";

void require(bool ok) {
  if (!ok) __builtin_trap();
}

std::string resources_text(const std::vector<fhir::Json>& resources) {
  std::string text;
  for (const auto& r : resources) text += fhir::to_json(r) + "\n";
  return text;
}

// The batch or refusal as text, after checking it.
std::string batch_outcome(std::string_view text) {
  auto batch = gw::adapters::parse_plugin_batch(text, kSource);
  auto read = gw::adapters::read_plugin_batch(text, kSource);
  if (!batch) {
    require(!batch.issue().diagnostics.empty());
    const auto* failure = std::get_if<gw::adapters::IngestFailure>(&read);
    require(failure != nullptr);
    require(failure->issue.diagnostics == batch.issue().diagnostics && failure->issue.code == batch.issue().code);
    require(failure->source == kSource);
    require(failure->nhs_number.empty() || fhir::is_valid_nhs_number(failure->nhs_number));
    return "refused: " + batch.issue().diagnostics + " [" + batch.issue().expression + "] raw " +
           std::to_string(failure->raw.size());
  }
  require(batch->source == kSource && batch->resources_checked);
  require(gw::adapters::check_batch_identity(batch->identity).ok());
  require(gw::adapters::check_batch_resources(batch->resources).ok());
  const auto* read_batch = std::get_if<gw::adapters::IngestBatch>(&read);
  require(read_batch != nullptr);
  require(fhir::to_json(read_batch->identity) == fhir::to_json(batch->identity));
  require(resources_text(read_batch->resources) == resources_text(batch->resources));
  return "batch: " + fhir::to_json(batch->identity) + "\n" + resources_text(batch->resources) + batch->kind + "|" +
         batch->dedupe_key + "|" + std::to_string(batch->raw.size());
}

std::string answer_outcome(int status, std::string_view text, std::string_view nhs_number) {
  auto answer = gw::adapters::parse_plugin_answer(status, text, kSource, {}, nhs_number);
  if (!answer) {
    require(answer.issue().code == fhir::ErrorCode::not_ready);
    require(answer.issue().diagnostics.find("'" + kSource + "'") != std::string::npos);
    return "refused: " + answer.issue().diagnostics;
  }
  require(status == 0 && answer->source == kSource);
  for (std::size_t i = 0; i < answer->resources.size(); ++i)
    require(gw::adapters::check_resource(answer->resources[i], "answer").ok());
  return "answer: " + resources_text(answer->resources);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0 || size > 64 * 1024) return 0;
  const std::uint8_t mode = data[0];
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  if ((mode & 1) == 0) {
    require(batch_outcome(text) == batch_outcome(text));
  } else {
    const int status = (mode & 2) ? -3 : 0;
    const std::string_view nhs = (mode & 4) ? "9434765919" : "";
    require(answer_outcome(status, text, nhs) == answer_outcome(status, text, nhs));
  }
  return 0;
}
