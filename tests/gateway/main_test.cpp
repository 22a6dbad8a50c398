// SPDX-License-Identifier: Apache-2.0
// The fhir-gateway binary's --check-config: "configuration OK" only for what start-up accepts,
// and the same "configuration error: FILE: KEY: REASON" line, exit 2, from both; and the
// running process's signals and log lines.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <thread>

#include "gateway/audit/checkpoint.h"
#include "support/certs.h"
#include "support/https_client.h"
#include "support/mllp_client.h"
#include "support/paths.h"
#include "support/process.h"
#include "support/stderr_capture.h"
#include "support/tokens.h"

namespace {

// A gateway.toml on an ephemeral port with the test certificates and keys (the server's
// private key unless `private_key` is given), and `audit_extra` lines in [audit].
std::string write_config(const std::string& private_key, const std::string& audit_extra) {
  const auto& certs = gw::test::dev_certs();
  const auto dir = gw::test::temp_dir("main-check");
  const auto path = (dir / "gateway.toml").string();
  std::ofstream(path) << "[server.https]\nport = 0\ncertificate = \"" << certs.server_cert << "\"\n"
                      << "private_key = \"" << (private_key.empty() ? certs.server_key : private_key) << "\"\n"
                      << "[storage]\ndata_dir = \"" << (dir / "data").string() << "\"\n"
                      << "[auth]\njwks_file = \"" << gw::test::test_tokens().jwks_path << "\"\n"
                      << "[audit]\nsigning_key = \"" << certs.audit_key << "\"\n" << audit_extra;
  return path;
}

// The "configuration error" line of a run's standard error ("" when there is none).
std::string error_line(const std::string& err) {
  const auto at = err.find("configuration error: ");
  if (at == std::string::npos) return {};
  const auto begin = err.rfind('\n', at);
  const auto end = err.find('\n', at);
  return err.substr(begin == std::string::npos ? 0 : begin + 1,
                    end == std::string::npos ? std::string::npos : end - (begin == std::string::npos ? 0 : begin + 1));
}

}  // namespace

TEST_CASE("fhir-gateway --check-config: loads what start-up loads") {
  const auto& certs = gw::test::dev_certs();
  const std::string good = write_config("", "");
  auto ok = gw::test::run_tool(GATEWAY_BIN, "--config " + good + " --check-config");
  CHECK(ok.status == 0);
  // The checkpoint key's signed-note verifier key is printed, for the IG officer to record.
  auto signer = gw::audit::CheckpointSigner::from_pem_file(certs.audit_key, "fhir-gateway-audit");
  REQUIRE(signer.ok());
  CHECK(ok.out == "audit checkpoints: key 'fhir-gateway-audit', signed-note verifier key " + signer->verifier_key() +
                      "\nconfiguration OK\n");

  // A private key that is not the certificate's: start-up's TLS context refuses it.
  const std::string mismatch = write_config(certs.client_key, "");
  auto r = gw::test::run_tool(GATEWAY_BIN, "--config " + mismatch + " --check-config");
  CHECK(r.status == 2);
  CHECK(r.out.empty());
  INFO(r.err);
  CHECK(r.err.find("fhir-gateway: configuration error: " + mismatch + ": server.https.private_key: ") !=
        std::string::npos);
  // The start loads the TLS context the same way, once (check_startup hands it on): the same
  // line, and nothing written to the audit log.
  const std::string check_line = error_line(r.err);
  REQUIRE_FALSE(check_line.empty());
  auto started = gw::test::run_tool("timeout", "20 " + std::string(GATEWAY_BIN) + " --config " + mismatch);
  CHECK(started.status == 2);
  CHECK(error_line(started.err) == check_line);
  CHECK_FALSE(std::filesystem::exists(std::filesystem::path(mismatch).parent_path() / "data" / "audit.db"));

  // An unwritable checkpoint file: at --check-config and at start, with the same line.
  const std::string checkpoint = write_config("", "checkpoint_file = \"/nonexistent/dir/cp.log\"\n");
  for (const char* mode : {" --check-config", ""}) {
    CAPTURE(mode);
    r = gw::test::run_tool("timeout", "20 " + std::string(GATEWAY_BIN) + " --config " + checkpoint + std::string(mode));
    CHECK(r.status == 2);
    CHECK(r.err.find("configuration error: " + checkpoint + ": audit.checkpoint_file: the audit checkpoint file "
                     "/nonexistent/dir/cp.log cannot be written: its folder does not exist") != std::string::npos);
  }
  const auto data = std::filesystem::path(checkpoint).parent_path() / "data";
  CHECK_FALSE(std::filesystem::exists(data / "audit.db"));  // the refused start wrote no audit record
}

TEST_CASE("fhir-gateway: --config without a FILE, or naming none, exits 2 saying so") {
  const gw::test::ToolRun bare = gw::test::run_tool(GATEWAY_BIN, "--check-config --config");
  CHECK(bare.status == 2);
  CHECK(bare.err == "fhir-gateway: --config needs a FILE (see --help)\n");
  const std::string missing = (gw::test::temp_dir("main-missing") / "gateway.toml").string();
  const gw::test::ToolRun absent = gw::test::run_tool(GATEWAY_BIN, "--config " + missing + " --check-config");
  CHECK(absent.status == 2);
  CHECK(absent.err == "fhir-gateway: configuration error: " + missing +
                          ": cannot open the configuration file: No such file or directory\n");
}

TEST_CASE("fhir-gateway --check-config: a world-readable private key and an empty data_dir are refused, exit 2") {
  const auto& certs = gw::test::dev_certs();
  const auto keys = gw::test::temp_dir("main-check-keys");
  const std::string open_key = (keys / "server-key.pem").string();
  std::filesystem::copy_file(certs.server_key, open_key);
  std::filesystem::permissions(open_key, std::filesystem::perms::group_read | std::filesystem::perms::others_read,
                               std::filesystem::perm_options::add);
  const std::string config = write_config(open_key, "");
  for (const char* mode : {" --check-config", ""}) {
    CAPTURE(mode);
    auto r = gw::test::run_tool("timeout", "20 " + std::string(GATEWAY_BIN) + " --config " + config + mode);
    CHECK(r.status == 2);
    CHECK(error_line(r.err) == "fhir-gateway: configuration error: " + config + ": server.https.private_key: "
                               "permissions 0644 for " + open_key + " are too open: a private key must not be "
                               "accessible by group or others; chmod 600 it (owned by the gateway's user)");
  }
  CHECK_FALSE(std::filesystem::exists(std::filesystem::path(config).parent_path() / "data" / "audit.db"));

  // A good configuration with its data_dir emptied: "configuration OK" would be a start that fails.
  const std::string no_dir = write_config("", "");
  const std::string text = gw::test::read_file(no_dir);
  std::ofstream(no_dir, std::ios::trunc) << std::regex_replace(text, std::regex("data_dir = \"[^\"]*\""),
                                                               "data_dir = \"\"");
  auto r = gw::test::run_tool(GATEWAY_BIN, "--config " + no_dir + " --check-config");
  CHECK(r.status == 2);
  CHECK(error_line(r.err) == "fhir-gateway: configuration error: " + no_dir +
                                 ": storage.data_dir: must not be empty: name the folder for locator.db, store.db "
                                 "and audit.db");
}

TEST_CASE("fhir-gateway: SIGHUP re-reads the JWKS file and the gateway keeps serving; SIGTERM drains MLLP too") {
  const auto& certs = gw::test::dev_certs();
  const auto dir = gw::test::temp_dir("main-signals");
  const std::string jwks = (dir / "jwks.json").string();
  std::filesystem::copy_file(gw::test::test_tokens().jwks_path, jwks);
  const std::string config = (dir / "gateway.toml").string();
  std::ofstream(config) << "[server.https]\naddress = \"127.0.0.1\"\nport = 0\ncertificate = \"" << certs.server_cert
                        << "\"\nprivate_key = \"" << certs.server_key << "\"\n"
                        << "[storage]\ndata_dir = \"" << (dir / "data").string() << "\"\n"
                        << "[auth]\njwks_file = \"" << jwks << "\"\njwks_refresh_s = 0\n"  // only SIGHUP re-reads it
                        << "[audit]\nsigning_key = \"" << certs.audit_key << "\"\n"
                        << "[[source_systems]]\nods_code = \"RGT01\"\nname = \"cuh-pas\"\nadapter = \"hl7v2\"\n"
                        << "endpoint = \"127.0.0.1:0\"\n";
  const std::string log_file = (dir / "gateway.log").string();
  const auto child = gw::test::start_child_gateway(GATEWAY_BIN, config, log_file,
                                                   "\"msg\":\"listening\",\"scheme\":\"https\"[^}]*\"port\":\"?([0-9]+)");
  std::smatch m;
  const std::string started = gw::test::read_file(log_file);
  REQUIRE(std::regex_search(started, m, std::regex("\"msg\":\"mllp listener started\"[^}]*\"port\":\"?([0-9]+)")));
  const auto mllp_port = static_cast<std::uint16_t>(std::stoi(m[1]));
  gw::test::ClientOptions opts;
  opts.ca_file = certs.ca;
  // Waits (bounded) for `needle` in the log.
  const auto logged = [&log_file](const std::string& needle) {
    for (int i = 0; i < 200; ++i) {
      if (gw::test::read_file(log_file).find(needle) != std::string::npos) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  };

  // The identity provider's rotated key set: same keys, new file.
  std::filesystem::last_write_time(jwks, std::filesystem::last_write_time(jwks) + std::chrono::seconds(10));
  REQUIRE(::kill(child.pid, SIGHUP) == 0);
  CHECK(logged("\"msg\":\"SIGHUP received; the gateway keeps running\""));
  CHECK(logged("\"msg\":\"JWKS reloaded\""));
  int status = 0;
  CHECK(::waitpid(child.pid, &status, WNOHANG) == 0);  // still running
  CHECK(gw::test::get(child.port, "/readyz", opts).status == 200);
  // A second SIGHUP is handled the same way (the handler is armed again).
  REQUIRE(::kill(child.pid, SIGHUP) == 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  CHECK(::waitpid(child.pid, &status, WNOHANG) == 0);

  // A second gateway on the same data directory is refused with one JSON log line.
  auto second = gw::test::run_tool("timeout", "20 " + std::string(GATEWAY_BIN) + " --config " + config);
  CHECK(second.status == 2);
  INFO(second.err);
  CHECK(second.err.rfind("{\"ts\":", 0) == 0);
  CHECK(second.err.find("\"level\":\"error\",\"msg\":\"data directory in use\"") != std::string::npos);
  CHECK(second.err.find("is in use by another fhir-gateway (pid " + std::to_string(child.pid) + ")") !=
        std::string::npos);

  // An MLLP connection open at SIGTERM is counted in the drain's log line.
  gw::test::MllpConnection mllp(mllp_port);
  REQUIRE(mllp.ok());
  bool accepted = false;
  for (int i = 0; i < 200 && !accepted; ++i) {
    accepted = gw::test::get(child.port, "/metrics", opts).body.find(
                   "gateway_mllp_open_connections{source=\"cuh-pas\"} 1") != std::string::npos;
    if (!accepted) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  REQUIRE(accepted);
  REQUIRE(::kill(child.pid, SIGTERM) == 0);
  status = gw::test::wait_child_exit(child.pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  const std::string log = gw::test::read_file(log_file);
  const std::string drain = gw::test::log_line(log, "shutting down: draining connections");
  INFO(drain);
  CHECK(drain.find("\"adapter_connections\":1") != std::string::npos);
  CHECK(drain.find("\"open_connections\":0") == std::string::npos);
  CHECK(log.find("\"msg\":\"stopped\"") != std::string::npos);
}
