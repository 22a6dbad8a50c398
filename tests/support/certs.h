// SPDX-License-Identifier: Apache-2.0
// Development certificates for tests, made once per test process by certs/make-dev-certs in
// a temporary folder (real ECDSA keys, real CA).
#pragma once

#include <string>

namespace gw::test {

struct DevCerts {
  std::string dir, ca, server_cert, server_key, client_cert, client_key;
  std::string audit_key, audit_pub_key;  // Ed25519 audit checkpoint key and its public half
};

const DevCerts& dev_certs();

}  // namespace gw::test
