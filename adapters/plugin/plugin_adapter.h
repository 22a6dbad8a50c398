// SPDX-License-Identifier: Apache-2.0
// The plug-in loader: opens a vendor's shared library (the C ABI in gw_adapter_abi.h),
// checks its ABI version and wraps it as an Adapter, so a plug-in is configured and driven
// exactly like a built-in adapter ([[source_systems]] with adapter = "plugin").
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "adapters/adapter.h"
#include "adapters/plugin/plugin_json.h"
#include "fhir/result.h"

namespace gw::adapters {

// Loads `source.plugin` (dlopen, RTLD_NOW | RTLD_LOCAL), calls its entry point with this
// gateway's GW_ADAPTER_ABI_VERSION and creates one instance for `source` (create() gets the
// source's configuration as JSON). Fails with an invalid_value Issue naming the library, and
// the versions where they matter, when: no path or a bare name is configured (a bare name
// would be looked up in the system library path); the file is missing or not a shared
// library; it does not export gw_adapter_entry; the entry returns no table; the table's
// abi_version differs or its struct_size is smaller than version 1's; its name is empty or
// not printable; a required function is missing; or create() fails (with its reason).
// Call on the start-up thread. The returned adapter owns the instance and the library
// handle: its destructor stops accepting work, destroys the instance (which joins the
// plug-in's threads), completes fetches the plug-in never answered with not_ready and
// unloads the library.
//
// The adapter: start() hands the context's executor and sink to the plug-in's host table
// and calls the plug-in's start; the plug-in's ingest() calls are parsed (with `limits`)
// into IngestBatches and submitted to the sink on the executor, and the sink's completion is
// reported back to the plug-in; a batch refused for its content or size is handed to the
// sink's record_failure (rejected) instead. fetch() passes the request to the plug-in, enforces the
// deadline with a timer on the executor and completes exactly once on the executor; an
// answer after the deadline is logged and dropped.
[[nodiscard]] fhir::Result<std::unique_ptr<Adapter>> load_plugin(const SourceSystem& source,
                                                                  const PluginLimits& limits = {});

// Operational log lines from plug-ins (their gw_host_v1.log calls) and from the loader itself.
// After start() they go to AdapterContext::log when the gateway gave one, with the fields
// source and origin; before start, or without one, to the process-wide plug-in log sink.
struct PluginLogLine {
  LogLevel level;
  std::string_view source;   // SourceSystem::name (empty when no source can be told)
  std::string_view origin;   // "plugin": the plug-in wrote it; "host": the loader did
  std::string_view message;  // printable ASCII only, at most 1024 bytes (longer lines are cut),
                             // each NHS number in it replaced by "(NHS number removed)"
};
using PluginLogSink = std::function<void(const PluginLogLine&)>;

// Sets the process-wide plug-in log sink; an empty function restores the default, one JSON
// object per line on stderr in the gateway's log format ({"ts":"2026-11-23T10:15:00.123Z",
// "level","msg":<the line>,"source","origin"}, as AdapterContext::log writes them). The
// sink is called from any thread, possibly concurrently, and must not call back into a
// plug-in. Thread-safe. The loader never puts patient data in a line; a plug-in is told not
// to (gw_adapter_abi.h).
void set_plugin_log_sink(PluginLogSink sink);

}  // namespace gw::adapters
