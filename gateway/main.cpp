// SPDX-License-Identifier: Apache-2.0
// fhir-gateway: wiring only. Reads the configuration, opens the databases, builds the route
// table and runs the server until SIGINT/SIGTERM (SIGHUP re-reads the JWKS file). Exit codes:
// 0 clean stop, 1 runtime failure, 2 bad configuration or usage, or a data directory another
// gateway holds.
#include <pthread.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "gateway/app.h"
#include "gateway/config/config.h"
#include "gateway/net/server.h"
#include "gateway/observe/log.h"
#include "gateway/version.h"

namespace {

void print_help() {
  std::printf(
      "Usage: fhir-gateway [--config FILE] [--check-config] [--create-missing-databases]\n"
      "                    [--help] [--version]\n"
      "\n"
      "Single patient record interoperability gateway: serves a FHIR R4 API over HTTPS.\n"
      "\n"
      "  --config FILE    TOML configuration (see docs/configuration.md). Without it the\n"
      "                   built-in defaults are used: HTTPS on 127.0.0.1:8443 with\n"
      "                   certs/server.pem and certs/server-key.pem, data in ./data\n"
      "  --check-config   validate the configuration as start-up would (loading the TLS\n"
      "                   certificates and keys, the JWKS, the audit signing key, plug-ins\n"
      "                   and their credentials files; only the ports are not bound) and\n"
      "                   exit (0 valid, 2 invalid)\n"
      "  --create-missing-databases\n"
      "                   start although the data directory lacks some of locator.db,\n"
      "                   store.db and audit.db while holding others, creating those\n"
      "                   empty (without it such a start is refused: restore them from\n"
      "                   the backup instead, see docs/operations.md)\n"
      "  --version        print the version and exit\n"
      "  --help           print this help and exit\n"
      "\n"
      "Exit codes: 0 clean shutdown, 1 runtime failure (including an audit.db that no longer\n"
      "matches its checkpoints: run audit-verify), 2 bad configuration or usage, or the data\n"
      "directory is in use by another fhir-gateway (data_dir/gateway.lock). A plug-in whose\n"
      "start fails does not stop the gateway: that source stays down (logged, and\n"
      "gateway_source_up 0 on /metrics).\n"
      "\n"
      "Signals: SIGINT or SIGTERM drain and stop (a second one stops at once); SIGHUP re-reads\n"
      "the JWKS file and the gateway keeps running (other settings need a restart).\n");
}

}  // namespace

int main(int argc, char** argv) {
  using namespace gw;
  // A closed stderr (e.g. the log pipe's reader gone) must not kill the process mid-drain;
  // sockets already use MSG_NOSIGNAL, this covers plain writes.
  std::signal(SIGPIPE, SIG_IGN);
  // SIGHUP's default action would end the process before the server's handler is installed
  // (Server::start): until then a hang-up is ignored.
  std::signal(SIGHUP, SIG_IGN);
  std::string config_path;
  bool check_only = false;
  bool create_missing_databases = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      print_help();
      return 0;
    } else if (a == "--version") {
      std::printf("fhir-gateway %s\n", kVersion);
      return 0;
    } else if (a == "--config") {
      if (i + 1 == argc) {
        std::fprintf(stderr, "fhir-gateway: --config needs a FILE (see --help)\n");
        return 2;
      }
      config_path = argv[++i];
    } else if (a.rfind("--config=", 0) == 0) {
      config_path = a.substr(9);
    } else if (a == "--check-config") {
      check_only = true;
    } else if (a == "--create-missing-databases") {
      create_missing_databases = true;
    } else {
      std::fprintf(stderr, "fhir-gateway: unknown argument '%s' (see --help)\n", a.c_str());
      return 2;
    }
  }

  config::Config cfg;
  try {
    if (config_path.empty()) config::validate(cfg);
    else cfg = config::load_config(config_path);
    // Everything start-up loads (TLS contexts, JWKS, keys, checkpoint file, forwarder), so
    // that "OK" means the start will not stop on the configuration.
    if (check_only) {
      const StartupChecked checked = check_startup(cfg);
      if (checked.signer)
        std::printf("audit checkpoints: key '%s', signed-note verifier key %s\n", checked.signer->key_name().c_str(),
                    checked.signer->verifier_key().c_str());
    }
  } catch (const config::ConfigError& e) {
    std::fprintf(stderr, "fhir-gateway: configuration error: %s\n", e.what());
    return 2;
  }
  if (check_only) {
    std::printf("configuration OK\n");
    return 0;
  }
  observe::Level level = observe::Level::info;
  observe::parse_level(cfg.log_level, level);
  observe::set_level(level);

  // SIGINT/SIGTERM/SIGHUP belong to the event loop (Server::start installs the drain and
  // hang-up handlers). The helper threads App starts (locator pool and writer, JWKS refresh)
  // inherit a blocked mask, so a signal can never land on one of them after the handlers are
  // gone at shutdown (their removal restores the default action, which ends the process).
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGHUP);
  try {
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    App app(cfg, AppInfo{kVersion, kReleaseDate, {}, create_missing_databases});
    pthread_sigmask(SIG_UNBLOCK, &stop_signals, nullptr);  // main and the event-loop threads
    net::Server& server = app.server();
    server.start();
    observe::log(observe::Level::info, "fhir-gateway ready",
                 {{"version", kVersion}, {"base_url", cfg.public_base_url}, {"threads", cfg.threads},
                  {"auth", cfg.auth.enabled ? "jwt" : "disabled"}});
    server.run();
    // Shutting down: the event loop threads are gone. Block further SIGINT/SIGTERM/SIGHUP so one
    // arriving while the server (and its signal handlers) is torn down cannot kill the
    // process by default action; we are exiting cleanly anyway.
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  } catch (const config::ConfigError& e) {
    std::fprintf(stderr, "fhir-gateway: configuration error: %s\n", e.what());
    return 2;
  } catch (const DataDirInUse& e) {
    // Among the log's JSON lines (and those of the gateway holding the folder, when they share
    // a journal): one JSON object like them.
    observe::log(observe::Level::error, "data directory in use", {{"error", e.what()}});
    return 2;
  } catch (const std::exception& e) {
    observe::log(observe::Level::error, "fatal", {{"error", e.what()}});
    return 1;
  }
  observe::log(observe::Level::info, "stopped");
  return 0;
}
