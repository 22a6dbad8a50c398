// SPDX-License-Identifier: Apache-2.0
// The connection options hl7send and `gw-messages replay` share (--host, --port, --tls, --ca,
// --cert, --key, --server-name, --timeout-ms, --retries), added to a CLI11 command.
#pragma once

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdint>
#include <string>

#include "tools/hl7send/mllp_client.h"

namespace gw::hl7send {

struct ClientFlags {
  ClientOptions options;
  std::int64_t timeout_ms = 10000;
  int retries = 0;

  // The options with the ACK timeout applied (call after parsing).
  ClientOptions client_options() const {
    ClientOptions o = options;
    o.ack_timeout = std::chrono::milliseconds(timeout_ms);
    o.connect_timeout = std::chrono::milliseconds(timeout_ms);
    return o;
  }
};

inline void add_client_options(CLI::App& app, ClientFlags& f) {
  app.add_option("--host", f.options.host, "gateway host name or IP address")->capture_default_str();
  app.add_option("--port", f.options.port, "MLLP port of the source's listener")
      ->check(CLI::Range(1, 65535))
      ->capture_default_str();
  CLI::Option* tls = app.add_flag("--tls", f.options.tls, "connect with TLS (the listener's setting tls = true)");
  app.add_option("--ca", f.options.ca_file, "CA certificate(s) to verify the gateway with (PEM; default: system store)")
      ->needs(tls)
      ->check(CLI::ExistingFile);
  CLI::Option* cert = app.add_option("--cert", f.options.cert_file, "client certificate for mutual TLS (PEM)")
                          ->needs(tls)
                          ->check(CLI::ExistingFile);
  CLI::Option* key = app.add_option("--key", f.options.key_file, "client private key for mutual TLS (PEM)")
                         ->needs(tls)
                         ->check(CLI::ExistingFile);
  cert->needs(key);
  key->needs(cert);
  app.add_option("--server-name", f.options.server_name,
                 "name the gateway's certificate must carry, sent as SNI (default: --host)")
      ->needs(tls);
  app.add_option("--timeout-ms", f.timeout_ms, "wait this long for each ACK (and to connect)")
      ->check(CLI::Range(1, 3600000))
      ->capture_default_str();
  app.add_option("--retries", f.retries,
                 "on a timeout or lost connection, reconnect and resend the same bytes up to N times")
      ->check(CLI::Range(0, 100))
      ->capture_default_str();
}

}  // namespace gw::hl7send
