// SPDX-License-Identifier: Apache-2.0
// Server TLS configuration: TLS 1.2/1.3 only, ECDHE key exchange with AEAD ciphers only,
// no renegotiation or compression, optional client certificates (mutual TLS).
#pragma once

#include <memory>
#include <string>

#include <boost/asio/ssl/context.hpp>

#include "gateway/config/config.h"

namespace gw::net {

// Builds the server context from the [server.https] settings. Throws config::ConfigError
// naming the setting when a certificate, key or CA file cannot be loaded.
std::shared_ptr<boost::asio::ssl::context> make_server_tls_context(const config::Config& cfg);

// The TLS 1.2 cipher list used (exposed for tests and docs).
extern const char* const kTls12Ciphers;

}  // namespace gw::net
