// SPDX-License-Identifier: Apache-2.0
#include "support/certs.h"

#include <cstdlib>
#include <stdexcept>

#include "support/paths.h"

namespace gw::test {

const DevCerts& dev_certs() {
  static const DevCerts certs = [] {
    auto dir = temp_dir("certs");
    std::string cmd = (source_dir() / "certs" / "make-dev-certs").string() + " --dir " + dir.string() + " 2>/dev/null";
    if (std::system(cmd.c_str()) != 0) throw std::runtime_error("certs/make-dev-certs failed (is openssl installed?)");
    auto f = [&](const char* n) { return (dir / n).string(); };
    return DevCerts{dir.string(), f("ca.pem"), f("server.pem"), f("server-key.pem"), f("client.pem"), f("client-key.pem"),
                   f("audit-key.pem"), f("audit-key.pub.pem")};
  }();
  return certs;
}

}  // namespace gw::test
