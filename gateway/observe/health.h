// SPDX-License-Identifier: Apache-2.0
// Liveness/readiness state behind /healthz and /readyz. Set by start-up (databases opened,
// migrations applied, listeners bound), by the audit writer (its last commit failed: every
// audited request is refused with 503) and by shutdown (draining); read by any thread.
#pragma once

#include <atomic>

namespace gw::observe {

struct Health {
  std::atomic<bool> databases_ready{false};
  std::atomic<bool> listening{false};
  std::atomic<bool> draining{false};
  std::atomic<bool> audit_failing{false};  // until the next successful audit commit

  bool ready() const {
    return databases_ready.load() && listening.load() && !draining.load() && !audit_failing.load();
  }
};

}  // namespace gw::observe
