// SPDX-License-Identifier: Apache-2.0
// The forwarder's TLS client (forwarder.h): one RFC 5425 session to the syslog receiver, plain
// OpenSSL over a non-blocking socket driven by poll(2), so that every wait has a deadline.
#pragma once

#include <openssl/ssl.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string_view>

#include "fhir/result.h"
#include "gateway/audit/forwarder.h"

namespace gw::audit {

// A connected, handshaken TLS session; owns the socket and the SSL object.
struct SyslogTlsSession {
  int fd = -1;
  SSL* ssl = nullptr;
  SyslogTlsSession() = default;
  SyslogTlsSession(const SyslogTlsSession&) = delete;
  SyslogTlsSession& operator=(const SyslogTlsSession&) = delete;
  ~SyslogTlsSession();
};

// Resolves and connects to o.host:o.port, then handshakes with `ctx`, verifying that the
// receiver's certificate names o.host (RFC 5425 5.2; RFC 6125). not_ready naming what failed.
fhir::Result<std::unique_ptr<SyslogTlsSession>> open_session(SSL_CTX* ctx, const ForwarderOptions& o,
                                                             std::chrono::steady_clock::time_point deadline);
// Writes all of `data`; timeout or not_ready (the session is then unusable).
fhir::Status write_all(SyslogTlsSession& s, std::string_view data, std::chrono::steady_clock::time_point deadline);

// A syslog receiver sends no application data (RFC 5425 4.3), so a readable socket means a
// close, a reset or TLS housekeeping (TLS 1.3 session tickets), which is read and dropped.
fhir::Status check_alive(SyslogTlsSession& s);
// Our close_notify, then the receiver's: its close_notify comes after every byte we sent, so
// receiving it proves its TLS layer read them all. Anything else (reset, bare FIN, timeout) is
// not a clean close.
bool close_cleanly(SyslogTlsSession& s, std::chrono::steady_clock::time_point deadline);
// Bytes in the socket's send queue, unsent or not yet acknowledged by the receiver's TCP
// (Linux SIOCOUTQ), or 0 when the platform cannot tell (then a write counts from when it
// was handed over).
std::uint64_t unacknowledged_bytes(int fd);

}  // namespace gw::audit
