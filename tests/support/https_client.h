// SPDX-License-Identifier: Apache-2.0
// A small test client that sends raw bytes (well-formed or not) to a loopback port, over TLS
// or plain TCP, and parses the HTTP responses that come back. Every call is bounded by a
// timeout, so a misbehaving server fails the test instead of hanging it.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace gw::test {

struct ClientOptions {
  bool tls = true;
  std::string ca_file;      // verify the server against this CA (required with tls)
  std::string cert_file;    // client certificate for mutual TLS
  std::string key_file;
  int max_tls_version = 0;  // e.g. TLS1_1_VERSION to check that old versions are refused
  std::string tls12_ciphers;
  std::chrono::milliseconds timeout{5000};
  std::chrono::milliseconds pause_after_send{0};  // hold the connection open before reading
  bool first_is_head = false;  // the first request is HEAD: its response has no body
  std::chrono::milliseconds close_wait{300};  // how long to wait for the server to close
};

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  }
};

struct Exchange {
  std::string error;                    // connect/handshake/read failure, empty when none
  std::vector<HttpResponse> responses;  // in order received
  bool peer_closed = false;             // server closed the connection after the responses
};

// Sends `bytes` and reads up to `expect` responses, then checks whether the server closed.
Exchange exchange(std::uint16_t port, const std::string& bytes, std::size_t expect, const ClientOptions& opts);

// Convenience: one GET with optional extra header lines ("Name: value\r\n" each).
HttpResponse get(std::uint16_t port, const std::string& target, const ClientOptions& opts,
                 const std::string& extra_headers = {});

}  // namespace gw::test
