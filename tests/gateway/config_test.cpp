// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <fstream>

#include "gateway/config/config.h"
#include "support/certs.h"
#include "support/paths.h"

using gw::config::ConfigError;
using gw::config::load_config;

namespace {

std::string write_config(const std::string& body) {
  auto dir = gw::test::temp_dir("config");
  auto path = (dir / "gateway.toml").string();
  std::ofstream(path) << body;
  return path;
}

std::string tls_lines() {
  const auto& c = gw::test::dev_certs();
  return "[server.https]\ncertificate = \"" + c.server_cert + "\"\nprivate_key = \"" + c.server_key + "\"\n";
}

ConfigError expect_error(const std::string& body) {
  try {
    load_config(write_config(body));
  } catch (const ConfigError& e) {
    return e;
  }
  FAIL("expected a ConfigError");
  return ConfigError("", "", "");
}

}  // namespace

TEST_CASE("Config: a full file loads, relative paths resolve against the file's folder") {
  auto path = write_config("[server]\npublic_base_url = \"https://gw.example.nhs.uk/fhir\"\nthreads = 4\n" + tls_lines() +
                           "port = 9443\n[server.limits]\nmax_body_bytes = 1024\nread_timeout_ms = 500\n"
                           "[storage]\ndata_dir = \"var\"\n[log]\nlevel = \"warn\"\naccess_log = false\n");
  auto c = load_config(path);
  CHECK(c.threads == 4);
  CHECK(c.https.port == 9443);
  CHECK(c.limits.max_body_bytes == 1024);
  CHECK(c.limits.read_timeout.count() == 500);
  CHECK(c.data_dir == (std::filesystem::path(path).parent_path() / "var").string());
  CHECK(c.log_level == "warn");
  CHECK_FALSE(c.access_log);
}

TEST_CASE("Config: errors name the file, the key and the reason") {
  auto typo = expect_error(tls_lines() + "[server.limits]\nmax_body_byte = 5\n");
  CHECK(typo.key() == "server.limits.max_body_byte");
  CHECK(typo.reason().find("unknown setting") != std::string::npos);
  CHECK(std::string(typo.what()).find("gateway.toml") != std::string::npos);

  auto type = expect_error("[server]\nthreads = \"two\"\n");
  CHECK(type.key() == "server.threads");
  CHECK(type.reason() == "must be an integer");

  auto range = expect_error("[server]\nthreads = 0\n");
  CHECK(range.reason().find("between 1 and 256") != std::string::npos);

  auto syntax = expect_error("[server\nthreads = 2\n");
  CHECK(syntax.reason().find("line 1") != std::string::npos);

  auto mode = expect_error(tls_lines() + "client_certificates = \"sometimes\"\n");
  CHECK(mode.key() == "server.https.client_certificates");
}

TEST_CASE("Config: plain HTTP is refused on a non-loopback address") {
  auto e = expect_error(tls_lines() + "[server.http]\nenabled = true\naddress = \"0.0.0.0\"\n");
  CHECK(e.key() == "server.http.address");
  CHECK(e.reason().find("loopback") != std::string::npos);
  auto ok = load_config(write_config(tls_lines() + "[server.http]\nenabled = true\naddress = \"::1\"\n"));
  CHECK(ok.http.enabled);
}

TEST_CASE("Config: missing certificate files and mTLS without a CA are reported") {
  auto e = expect_error("[server.https]\ncertificate = \"/nonexistent/server.pem\"\n");
  CHECK(e.key() == "server.https.certificate");
  CHECK(e.reason().find("file not found") != std::string::npos);
  auto m = expect_error(tls_lines() + "client_certificates = \"required\"\n");
  CHECK(m.key() == "server.https.client_ca");
}

TEST_CASE("Config: base URL must be absolute without a trailing slash") {
  CHECK(expect_error("[server]\npublic_base_url = \"https://x/fhir/\"\n" + tls_lines()).key() == "server.public_base_url");
  CHECK(expect_error("[server]\npublic_base_url = \"gw.example\"\n" + tls_lines()).key() == "server.public_base_url");
}

TEST_CASE("Config: loopback detection") {
  CHECK(gw::config::is_loopback_address("127.0.0.1"));
  CHECK(gw::config::is_loopback_address("127.8.9.10"));
  CHECK(gw::config::is_loopback_address("::1"));
  CHECK(gw::config::is_loopback_address("localhost"));
  CHECK_FALSE(gw::config::is_loopback_address("10.0.0.1"));
  CHECK_FALSE(gw::config::is_loopback_address("0.0.0.0"));
}
