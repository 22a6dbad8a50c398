// SPDX-License-Identifier: Apache-2.0
// gw::check_startup (what --check-config runs after load_config) and App's start: everything
// start-up loads is loaded by the check too, and a start refused on its configuration writes
// nothing to the audit log. Adapters' log lines reach the gateway's log with their fields.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "gateway/app.h"
#include "gateway/config/config.h"
#include "adapters/plugin/plugin_adapter.h"
#include "gateway/observe/log.h"
#include "support/certs.h"
#include "support/https_client.h"
#include "support/paths.h"
#include "support/stderr_capture.h"
#include "support/tokens.h"

using namespace gw;

namespace {

// A configuration start-up accepts, with its data directory in a fresh folder (not created).
config::Config good_config() {
  const auto& certs = test::dev_certs();
  config::Config c;
  c.https.port = 0;
  c.https.certificate = certs.server_cert;
  c.https.private_key = certs.server_key;
  c.data_dir = (test::temp_dir("app-check") / "data").string();
  c.auth.jwks_file = test::test_tokens().jwks_path;
  c.audit.signing_key = certs.audit_key;
  config::validate(c);
  return c;
}

config::ConfigError refusal(const config::Config& c) {
  try {
    check_startup(c);
  } catch (const config::ConfigError& e) {
    return e;
  }
  FAIL("check_startup accepted the configuration");
  return config::ConfigError("", "", "");
}

std::string write_file(const std::string& name, const std::string& text) {
  const auto path = test::temp_dir("app-check-files") / name;
  std::ofstream(path) << text;
  return path.string();
}

}  // namespace

TEST_CASE("check_startup: a good configuration passes and nothing is written") {
  const config::Config c = good_config();
  CHECK_NOTHROW(check_startup(c));
  CHECK_FALSE(std::filesystem::exists(c.data_dir));  // no data directory, no checkpoint file
}

TEST_CASE("check_startup: TLS files start-up cannot use are refused, naming the key") {
  const auto& certs = test::dev_certs();
  config::Config c = good_config();
  c.https.private_key = certs.client_key;  // a real key, but not the certificate's
  auto e = refusal(c);
  CHECK(e.key() == "server.https.private_key");
  CHECK(e.reason().find("key values mismatch") != std::string::npos);

  c = good_config();
  c.https.certificate = certs.server_key;  // a key where the certificate belongs
  e = refusal(c);
  CHECK(e.key() == "server.https.certificate");
  CHECK(e.reason().find("cannot load PEM certificate chain") != std::string::npos);
}

TEST_CASE("check_startup: the client CA an MLLP source's certificate subject needs is loaded") {
  const auto& certs = test::dev_certs();
  config::Config c = good_config();
  config::SourceSystemConfig s;
  s.ods_code = "RGT";
  s.name = "pas";
  s.adapter = "hl7v2";
  s.endpoint = "127.0.0.1:0";
  s.client_certificate_subject = "CN=epr,O=Trust";
  s.settings = {{"tls", "true"}};
  c.source_systems.push_back(s);
  c.https.client_ca = certs.ca;
  CHECK_NOTHROW(check_startup(c));
  c.https.client_ca = certs.server_key;  // no certificate in it; the HTTPS listener alone never loads it
  const auto e = refusal(c);
  CHECK(e.key() == "server.https.client_ca");
}

TEST_CASE("check_startup: a JWKS file that is not JSON is refused") {
  config::Config c = good_config();
  c.auth.jwks_file = write_file("jwks.json", "<html>not a key set</html>");
  c.source_file = "/etc/fhir-gateway/gateway.toml";
  const auto e = refusal(c);
  CHECK(e.key() == "auth.jwks_file");
  CHECK(e.file() == c.source_file);  // the usual "configuration error: FILE: KEY: REASON"
  CHECK(e.reason().find("not valid JSON") != std::string::npos);
}

TEST_CASE("check_startup: an audit signing key that is not a private key is refused") {
  const auto& certs = test::dev_certs();
  config::Config c = good_config();
  for (const std::string& not_private : {certs.server_cert, certs.audit_pub_key}) {
    CAPTURE(not_private);
    c.audit.signing_key = not_private;
    const auto e = refusal(c);
    CHECK(e.key() == "audit.signing_key");
    CHECK(e.reason().find("private key") != std::string::npos);
  }
}

TEST_CASE("check_startup: a private key its group or others may read is refused, naming the key and the fix") {
  const auto& certs = test::dev_certs();
  const auto dir = test::temp_dir("app-check-key-modes");
  // Copies of the development keys (private, 0600), then opened up as `cp` under umask 022 leaves them.
  const auto open_copy = [&dir](const std::string& from, const char* name) {
    const std::string to = (dir / name).string();
    std::filesystem::copy_file(from, to, std::filesystem::copy_options::overwrite_existing);
    std::filesystem::permissions(to, std::filesystem::perms::group_read | std::filesystem::perms::others_read,
                                 std::filesystem::perm_options::add);
    return to;
  };
  config::Config good = good_config();
  good.audit.forward_enabled = true;
  good.audit.forward.host = "127.0.0.1";
  good.audit.forward.ca_file = certs.ca;
  good.audit.forward.client_certificate = certs.client_cert;
  good.audit.forward.client_key = certs.client_key;
  CHECK_NOTHROW(check_startup(good));

  const std::string server_key = open_copy(certs.server_key, "server-key.pem");
  const std::string audit_key = open_copy(certs.audit_key, "audit-key.pem");
  const std::string client_key = open_copy(certs.client_key, "client-key.pem");
  for (const auto& entry : {std::pair<std::string, std::string>{"server.https.private_key", server_key},
                            {"audit.signing_key", audit_key},
                            {"audit.forward.client_key", client_key}}) {
    const std::string& key = entry.first;
    const std::string& path = entry.second;
    CAPTURE(key);
    config::Config c = good;
    if (key == "server.https.private_key") c.https.private_key = path;
    else if (key == "audit.signing_key") c.audit.signing_key = path;
    else c.audit.forward.client_key = path;
    const auto e = refusal(c);
    CHECK(e.key() == key);
    CHECK(e.reason() == "permissions 0644 for " + path +
                            " are too open: a private key must not be accessible by group or others; chmod 600 it "
                            "(owned by the gateway's user)");
    // Group access alone is refused too (ssh's rule, as for credentials_file).
    std::filesystem::permissions(path, std::filesystem::perms::others_read, std::filesystem::perm_options::remove);
    CHECK(refusal(c).key() == key);
    std::filesystem::permissions(path, std::filesystem::perms::group_read, std::filesystem::perm_options::remove);
    CHECK_NOTHROW(check_startup(c));
  }
}

TEST_CASE("check_startup: [audit.forward] settings the forwarder refuses are refused") {
  const auto& certs = test::dev_certs();
  config::Config c = good_config();
  c.audit.forward_enabled = true;
  c.audit.forward.host = "127.0.0.1";
  c.audit.forward.ca_file = certs.ca;
  CHECK_NOTHROW(check_startup(c));

  config::Config bad = c;
  bad.audit.forward.sd_id = "bad id]x";
  auto e = refusal(bad);
  CHECK(e.key() == "audit.forward.sd_id");
  CHECK(e.reason().find("printable ASCII") != std::string::npos);

  bad = c;
  bad.audit.forward.client_certificate = certs.client_cert;
  e = refusal(bad);
  CHECK(e.key() == "audit.forward.client_certificate");
  CHECK(e.reason().find("both client_certificate and client_key") != std::string::npos);

  bad = c;
  bad.audit.forward.client_certificate = certs.client_cert;
  bad.audit.forward.client_key = certs.server_key;
  e = refusal(bad);
  CHECK(e.key() == "audit.forward.client_key");
}

TEST_CASE("check_startup: the audit checkpoint file must be appendable") {
  config::Config c = good_config();
  c.audit.checkpoint_file = "/nonexistent/dir/cp.log";
  auto e = refusal(c);
  CHECK(e.key() == "audit.checkpoint_file");
  CHECK(e.reason().find("its folder does not exist") != std::string::npos);

  c.audit.checkpoint_file = test::temp_dir("app-check-cp").string();  // a folder, not a file
  e = refusal(c);
  CHECK(e.key() == "audit.checkpoint_file");
  CHECK(e.reason().find("cannot be opened for appending") != std::string::npos);

  // A file not there yet, in a folder that exists, is created at start (not by the check).
  c.audit.checkpoint_file = (test::temp_dir("app-check-cp2") / "cp.log").string();
  CHECK_NOTHROW(check_startup(c));
  CHECK_FALSE(std::filesystem::exists(c.audit.checkpoint_file));
}

TEST_CASE("check_startup: a data_dir that exists and is not a folder is refused") {
  config::Config c = good_config();
  c.data_dir = write_file("not-a-folder", "x");
  auto e = refusal(c);
  CHECK(e.key() == "storage.data_dir");
  CHECK(e.reason().find("exists and is not a folder") != std::string::npos);
  // A checkpoint_file configured elsewhere does not let it through either.
  c.audit.checkpoint_file = (test::temp_dir("app-check-cp3") / "cp.log").string();
  CHECK(refusal(c).key() == "storage.data_dir");
}

TEST_CASE("App: a start refused on its configuration writes no audit record") {
  observe::set_level(observe::Level::error);
  config::Config c = good_config();
  c.audit.forward_enabled = true;
  c.audit.forward.host = "127.0.0.1";
  c.audit.forward.ca_file = test::dev_certs().ca;
  c.audit.forward.sd_id = "bad id]x";
  CHECK_THROWS_AS(App(c, AppInfo{"test", "2026-11-23", {}}), config::ConfigError);
  // Refused before the audit log was opened: no "gateway started" without its "stopped", and
  // no checkpoint signed over it.
  CHECK_FALSE(std::filesystem::exists(std::filesystem::path(c.data_dir) / "audit.db"));
  CHECK_FALSE(std::filesystem::exists(std::filesystem::path(c.data_dir) / "audit-checkpoints.log"));
  // Nor is the data directory, or its lock file, created: a mistyped data_dir leaves nothing.
  CHECK_FALSE(std::filesystem::exists(c.data_dir));
}

TEST_CASE("App: the HTTPS listener serves the TLS context check_startup loaded; the files are not read again") {
  observe::set_level(observe::Level::error);
  const auto& certs = test::dev_certs();
  const auto dir = test::temp_dir("app-tls-once");
  config::Config c = good_config();
  c.auth.jwks_refresh = std::chrono::seconds(0);
  c.https.certificate = (dir / "server.crt").string();
  c.https.private_key = (dir / "server.key").string();
  std::filesystem::copy_file(certs.server_cert, c.https.certificate);
  std::filesystem::copy_file(certs.server_key, c.https.private_key);
  App app(c, AppInfo{"test", "2026-11-23", {}});
  // Both files change after the check and before the listener starts (a rotation half done,
  // or a file replaced in between): what was checked is what is served.
  std::ofstream(c.https.certificate, std::ios::trunc) << "not a certificate\n";
  std::ofstream(c.https.private_key, std::ios::trunc) << "not a key\n";
  REQUIRE_NOTHROW(app.server().start(false));
  std::thread runner([&app] { app.server().run(); });
  test::ClientOptions opts;
  opts.ca_file = certs.ca;
  const test::HttpResponse r = test::get(app.server().https_port(), "/metadata", opts);
  app.server().shutdown();
  runner.join();
  CHECK(r.status == 200);
  // And a start from the changed files is refused, as the check would refuse it.
  CHECK_THROWS_AS(check_startup(c), config::ConfigError);
}

TEST_CASE("log_adapter_line: an adapter's line keeps its fields up to kMaxLogFields and counts the rest") {
  std::vector<std::pair<std::string, std::string>> fields;
  for (std::size_t i = 0; i < adapters::kMaxLogFields + 3; ++i)
    fields.emplace_back("f" + std::to_string(i), "v" + std::to_string(i));
  const std::vector<std::pair<std::string, std::string>> all(fields.begin(), fields.begin() + adapters::kMaxLogFields);

  observe::set_level(observe::Level::info);  // earlier tests quiet the log
  test::StderrCapture capture;
  log_adapter_line(adapters::LogLevel::warn, "adapter line with every field", all);
  log_adapter_line(adapters::LogLevel::warn, "adapter line with too many fields", fields);
  const std::string text = capture.text();

  auto full = fhir::parse_json(test::log_line(text, "adapter line with every field"));
  REQUIRE_MESSAGE(full.ok(), text);
  CHECK(full->string_at("level") == "warn");
  for (const auto& field : all) CHECK_MESSAGE(full->string_at(field.first) == field.second, field.first);
  CHECK(full->find("fields_dropped") == nullptr);

  // More than the maximum: the first kMaxLogFields are written, and how many were left out.
  auto cut = fhir::parse_json(test::log_line(text, "adapter line with too many fields"));
  REQUIRE_MESSAGE(cut.ok(), text);
  for (const auto& field : all) CHECK_MESSAGE(cut->string_at(field.first) == field.second, field.first);
  for (std::size_t i = adapters::kMaxLogFields; i < fields.size(); ++i) CHECK(cut->find(fields[i].first) == nullptr);
  const fhir::Json* dropped = cut->find("fields_dropped");
  REQUIRE(dropped != nullptr);
  CHECK(fhir::to_json(*dropped) == "3");
}

TEST_CASE("log_adapter_line: a plug-in's log call reaches the gateway's log with the loader's fields") {
  adapters::SourceSystem source;
  source.name = "example-source";
  source.ods_code = "RXX01";
  source.adapter = "plugin";
  source.plugin = GW_EXAMPLE_PLUGIN;
  source.settings = {{"ingest_on_start", "true"}};
  auto loaded = adapters::load_plugin(source);
  REQUIRE(loaded.ok());

  boost::asio::io_context io;
  std::atomic<bool> seen{false};
  adapters::AdapterContext context;
  context.executor = io.get_executor();  // no sink: the plug-in's batch is refused and it logs so
  context.log = [&seen](adapters::LogLevel level, std::string_view message,
                        const std::vector<std::pair<std::string, std::string>>& fields) {
    log_adapter_line(level, message, fields);
    if (message.find("example: batch refused at once") != std::string_view::npos) seen = true;
  };
  observe::set_level(observe::Level::info);  // earlier tests quiet the log
  test::StderrCapture capture;
  REQUIRE((*loaded)->start(context).ok());
  for (int i = 0; i < 1000 && !seen; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  (*loaded)->stop();
  const std::string text = capture.text();
  REQUIRE(seen);

  auto line = fhir::parse_json(test::log_line(text, "example: batch refused at once (status 4)"));
  REQUIRE_MESSAGE(line.ok(), text);
  CHECK(line->string_at("level") == "warn");
  CHECK(line->string_at("source") == "example-source");
  CHECK(line->string_at("origin") == "plugin");
}

TEST_CASE("App: a data directory missing some of its databases is refused, naming them; a first start makes all three") {
  namespace fs = std::filesystem;
  observe::set_level(observe::Level::error);
  const config::Config c = good_config();
  const fs::path dir(c.data_dir);
  { App first(c, AppInfo{"test", "2026-11-23", {}}); }  // a first start (nothing there) creates all three
  for (const char* name : {"locator.db", "store.db", "audit.db"}) CHECK(fs::exists(dir / name));

  // locator.db lost (or not restored): opening it would make every patient vanish silently.
  for (const char* name : {"locator.db", "locator.db-wal", "locator.db-shm"}) fs::remove(dir / name);
  std::string what;
  try {
    App second(c, AppInfo{"test", "2026-11-23", {}});
    FAIL("a start with locator.db missing was not refused");
  } catch (const std::runtime_error& e) {
    what = e.what();
  }
  CHECK_MESSAGE(what.find("holds store.db, audit.db but not locator.db") != std::string::npos, what);
  CHECK(what.find("--create-missing-databases") != std::string::npos);
  CHECK_FALSE(fs::exists(dir / "locator.db"));  // nothing created

  // The operator's explicit word: created empty.
  { App third(c, AppInfo{"test", "2026-11-23", {}, true}); }
  CHECK(fs::exists(dir / "locator.db"));

  // store.db gone beside the others: refused the same way.
  for (const char* name : {"store.db", "store.db-wal", "store.db-shm"}) fs::remove(dir / name);
  CHECK_FALSE(check_databases_present(c.data_dir).ok());
  CHECK(check_databases_present(c.data_dir).issue().diagnostics.find("but not store.db") != std::string::npos);
}

TEST_CASE("App: a locator.db loaded before the first start (gw-locator import) is a first start") {
  namespace fs = std::filesystem;
  observe::set_level(observe::Level::error);
  const config::Config c = good_config();
  fs::create_directories(c.data_dir);
  std::ofstream(fs::path(c.data_dir) / "locator.db");  // an empty file is an empty SQLite database
  CHECK(check_databases_present(c.data_dir).ok());
  { App app(c, AppInfo{"test", "2026-11-23", {}}); }
  CHECK(fs::exists(fs::path(c.data_dir) / "store.db"));
  CHECK(fs::exists(fs::path(c.data_dir) / "audit.db"));
}

TEST_CASE("App: audit.db lost beside a checkpoint file holding checkpoints is refused before anything is created, "
          "even with --create-missing-databases") {
  namespace fs = std::filesystem;
  observe::set_level(observe::Level::error);
  const config::Config c = good_config();
  const fs::path dir(c.data_dir);
  { App first(c, AppInfo{"test", "2026-11-23", {}}); }  // its stop signs a checkpoint into the file
  REQUIRE(fs::file_size(dir / "audit-checkpoints.log") > 0);
  for (const char* name : {"audit.db", "audit.db-wal", "audit.db-shm"}) fs::remove(dir / name);

  std::string what;
  try {
    App second(c, AppInfo{"test", "2026-11-23", {}, true});
    FAIL("audit.db was created beside a checkpoint file that vouches for records");
  } catch (const std::runtime_error& e) {
    what = e.what();
  }
  CHECK_MESSAGE(what.find("audit.db is missing") != std::string::npos, what);
  CHECK(what.find("move " + (dir / "audit-checkpoints.log").string() + " aside") != std::string::npos);
  CHECK(what.find("keep it for the IG officer") != std::string::npos);
  CHECK_FALSE(fs::exists(dir / "audit.db"));  // nothing created: the next start says the same
  CHECK(check_new_audit_log(c).issue().diagnostics == what);

  // The checkpoint file moved aside: a new log is started, and the warning names what it made.
  fs::rename(dir / "audit-checkpoints.log", dir / "audit-checkpoints.log.lost");
  CHECK(missing_databases(c.data_dir) == "audit.db");
  test::StderrCapture err;
  observe::set_level(observe::Level::warn);
  { App third(c, AppInfo{"test", "2026-11-23", {}, true}); }
  observe::set_level(observe::Level::error);
  CHECK(fs::exists(dir / "audit.db"));
  const std::string logged = err.text();
  CHECK(logged.find("creating missing databases empty") != std::string::npos);
  CHECK(logged.find("\"created\":\"audit.db\"") != std::string::npos);
}

TEST_CASE("checkpoint_file_writable_by_others: a checkpoint file its group or others may write is reported") {
  namespace fs = std::filesystem;
  config::Config c = good_config();
  c.audit.checkpoint_file = write_file("cp-modes.log", "");
  fs::permissions(c.audit.checkpoint_file, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                                               fs::perms::others_read,
                  fs::perm_options::replace);
  CHECK_FALSE(checkpoint_file_writable_by_others(c).has_value());  // readable: its notes are public
  fs::permissions(c.audit.checkpoint_file, fs::perms::others_write, fs::perm_options::add);
  auto exposed = checkpoint_file_writable_by_others(c);
  REQUIRE(exposed.has_value());
  CHECK(exposed->path == c.audit.checkpoint_file);
  CHECK(exposed->mode == "0646");
  fs::permissions(c.audit.checkpoint_file, fs::perms::others_write, fs::perm_options::remove);
  fs::permissions(c.audit.checkpoint_file, fs::perms::group_write, fs::perm_options::add);
  REQUIRE(checkpoint_file_writable_by_others(c).has_value());
  CHECK(checkpoint_file_writable_by_others(c)->mode == "0664");
  c.audit.checkpoint_file = (test::temp_dir("app-check-cp4") / "none.log").string();
  CHECK_FALSE(checkpoint_file_writable_by_others(c).has_value());
}
