// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <algorithm>
#include <fstream>
#include <tuple>

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
  // The default [auth] jwks_file (certs/jwks.json beside the file) must exist; validation
  // only checks that it does, the Authenticator parses it.
  std::filesystem::create_directories(dir / "certs");
  std::ofstream(dir / "certs" / "jwks.json") << "{\"keys\":[]}";
  // Likewise the default [audit] signing_key (certs/audit-key.pem); App parses it.
  std::ofstream(dir / "certs" / "audit-key.pem") << "placeholder";
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

TEST_CASE("Config: a configuration file that is missing or a folder is named with the reason") {
  const auto dir = gw::test::temp_dir("config-open");
  const std::string missing = (dir / "gatway.toml").string();
  try {
    load_config(missing);
    FAIL("expected a ConfigError");
  } catch (const ConfigError& e) {
    CHECK(e.file() == missing);
    CHECK(e.reason() == "cannot open the configuration file: No such file or directory");
  }
  try {
    load_config(dir.string());
    FAIL("expected a ConfigError");
  } catch (const ConfigError& e) {
    CHECK(e.file() == dir.string());
    CHECK(e.key().empty());
    CHECK(e.reason() == "is not a regular file: --config names the TOML configuration file");
  }
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

TEST_CASE("Config: [server.cors] lists browser apps' origins; no CORS by default") {
  auto none = load_config(write_config(tls_lines()));
  CHECK(none.cors.allowed_origins.empty());
  CHECK(none.cors.max_age.count() == 600);
  auto c = load_config(write_config(tls_lines() + "[server.cors]\nallowed_origins = [\"https://app.example.nhs.uk\", "
                                    "\"https://app.example.nhs.uk:8443\", \"http://localhost:3000\", "
                                    "\"http://127.0.0.1:9000\", \"http://[::1]:8080\"]\nmax_age_s = 60\n"));
  CHECK(c.cors.allowed_origins.size() == 5);
  // Another scheme's default port is a port like any other.
  CHECK(load_config(write_config(tls_lines() + "[server.cors]\nallowed_origins = [\"https://a.example:80\", "
                                               "\"http://localhost:443\"]\n")).cors.allowed_origins.size() == 2);
  CHECK(c.cors.max_age.count() == 60);
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"*", "may not be \"*\""},
      {"null", "may not be \"null\""},
      {"app.example.nhs.uk", "must start with https://"},
      {"http://app.example.nhs.uk", "only allowed for localhost"},
      {"https://app.example.nhs.uk/", "no path"},
      {"https://app.example.nhs.uk/launch", "no path"},
      {"https://App.Example.nhs.uk", "lower case"},
      {"https://app.example.nhs.uk:0", "bad port"},
      {"https://app.example.nhs.uk:99999", "bad port"},
      {"https://app.example.nhs.uk:", "bad port"},
      {"https://", "no host"},
      {"https://*.example.nhs.uk", "lower case"},
      // Browsers leave the scheme's default port out of Origin: such an entry never matches.
      {"https://app.example.nhs.uk:443", "default port 443"},
      {"http://localhost:80", "default port 80"},
      {"https://ok.example", "repeats entry 1"},
  };
  for (const auto& entry : bad) {
    const std::string origin = entry.first;
    const std::string why = entry.second;
    CAPTURE(origin);
    auto e = expect_error(tls_lines() + "[server.cors]\nallowed_origins = [\"https://ok.example\", \"" + origin + "\"]\n");
    CHECK(e.key() == "server.cors.allowed_origins");
    CHECK_MESSAGE(e.reason().find("entry 2") != std::string::npos, e.reason());
    CHECK_MESSAGE(e.reason().find(why) != std::string::npos, e.reason());
  }
  CHECK(expect_error(tls_lines() + "[server.cors]\nmax_age_s = 100000\n").key() == "server.cors.max_age_s");
  // Strict-Transport-Security: a year unless set; 0 (none) to two years.
  CHECK(load_config(write_config(tls_lines())).https.hsts_max_age.count() == 31536000);
  CHECK(load_config(write_config(tls_lines() + "hsts_max_age_s = 0\n")).https.hsts_max_age.count() == 0);
  CHECK(expect_error(tls_lines() + "hsts_max_age_s = 63072001\n").key() == "server.https.hsts_max_age_s");
  CHECK(expect_error(tls_lines() + "hsts_max_age_s = -1\n").key() == "server.https.hsts_max_age_s");
  CHECK(expect_error(tls_lines() + "[server.cors]\nallow_credentials = true\n").key() ==
        "server.cors.allow_credentials");
}

TEST_CASE("Config: loopback detection") {
  CHECK(gw::config::is_loopback_address("127.0.0.1"));
  CHECK(gw::config::is_loopback_address("127.8.9.10"));
  CHECK(gw::config::is_loopback_address("::1"));
  CHECK(gw::config::is_loopback_address("localhost"));
  CHECK_FALSE(gw::config::is_loopback_address("10.0.0.1"));
  CHECK_FALSE(gw::config::is_loopback_address("0.0.0.0"));
}

TEST_CASE("Config: [auth] settings, role overrides and sensitive categories") {
  auto c = load_config(write_config(tls_lines() + R"(
[auth]
issuer = "https://idp.example.nhs.uk/realms/icb"
audiences = ["https://gw.example.nhs.uk/fhir", "fhir-gateway"]
leeway_s = 10
required_typ = "at+jwt"
role_claim = "nhs_role"
patient_claim = "launch_patient"
emergency_purposes = ["EMERGENCY"]
break_glass_ttl_s = 600
encounter_window_days = 30
[auth.rate_limit.per_user]
per_second = 5
burst = 20
[auth.roles.clinician]
claim_values = ["R8000"]
permissions = "rs"
[auth.roles.pharmacist]
claim_values = ["R8010"]
resource_types = ["Patient", "MedicationStatement"]
permissions = "rs"
clinical = true
[auth.sensitive_categories]
hiv = ["http://snomed.info/sct|86406008"]
)"));
  CHECK(c.auth.jwt.issuer == "https://idp.example.nhs.uk/realms/icb");
  CHECK(c.auth.jwt.audiences.size() == 2);
  CHECK(c.auth.jwt.leeway.count() == 10);
  CHECK(c.auth.jwt.required_typ == "at+jwt");
  CHECK(c.auth.jwt.role_claim == "nhs_role");
  CHECK(c.auth.jwt.patient_claim == "launch_patient");
  CHECK(c.auth.token_endpoint == "https://idp.example.nhs.uk/realms/icb/token");  // follows the issuer
  CHECK(c.auth.per_user.per_second == 5);
  CHECK(c.auth.policy.break_glass_ttl.count() == 600);
  CHECK(c.auth.policy.encounter_window.count() == 30 * 86400);
  const gw::auth::RolePolicy* clinician = nullptr;
  const gw::auth::RolePolicy* pharmacist = nullptr;
  for (const auto& r : c.auth.policy.roles) {
    if (r.name == "clinician") clinician = &r;
    if (r.name == "pharmacist") pharmacist = &r;
  }
  REQUIRE(clinician);
  REQUIRE(pharmacist);
  CHECK(clinician->claim_values == std::vector<std::string>{"R8000"});
  CHECK(clinician->clinical);  // fields not set keep the default role's values
  CHECK(pharmacist->permissions == (gw::auth::kRead | gw::auth::kSearch));
  bool hiv = false;
  for (const auto& cat : c.auth.policy.sensitive_categories) hiv = hiv || (cat.name == "hiv" && cat.codes.size() == 1);
  CHECK(hiv);
  CHECK(gw::auth::Policy::make(c.auth.policy).ok());
}

TEST_CASE("Config: bad [auth] settings are errors naming the key") {
  CHECK(expect_error(tls_lines() + "[auth]\nissuer = 5\n").key() == "auth.issuer");
  CHECK(expect_error(tls_lines() + "[auth]\naudiences = \"one\"\n").key() == "auth.audiences");
  CHECK(expect_error(tls_lines() + "[auth]\nleeway_s = 3600\n").key() == "auth.leeway_s");
  CHECK(expect_error(tls_lines() + "[auth]\njwks_file = \"missing.json\"\n").key() == "auth.jwks_file");
  CHECK(expect_error(tls_lines() + "[auth]\nunknown = 1\n").key() == "auth.unknown");
  // A token claim never broke glass: the old key is refused, saying how break-glass is asked for.
  auto glass = expect_error(tls_lines() + "[auth]\nbreak_glass_claim = \"break_glass_reason\"\n");
  CHECK(glass.key() == "auth.break_glass_claim");
  CHECK(std::string(glass.what()).find("X-Break-Glass-Reason") != std::string::npos);
  CHECK(expect_error(tls_lines() + "[auth.roles.clinician]\npermissions = \"sr\"\n").key() ==
        "auth.roles.clinician.permissions");
  CHECK(expect_error(tls_lines() + "[auth.sensitive_categories]\nx = [\"nocode\"]\n").key() ==
        "auth.sensitive_categories.x");
  CHECK(expect_error(tls_lines() + "[auth.rate_limit.per_client]\nper_second = 0\n").key() ==
        "auth.rate_limit.per_client.per_second");
  // Secure by default: token validation off is only for loopback listeners.
  auto open = expect_error(tls_lines() + "address = \"0.0.0.0\"\n[auth]\nenabled = false\n");
  CHECK(open.key() == "auth.enabled");
  CHECK_NOTHROW(load_config(write_config(tls_lines() + "[auth]\nenabled = false\n")));
}

TEST_CASE("Config: [[source_systems]] with client certificate subjects") {
  auto c = load_config(write_config(tls_lines() + R"(
[[source_systems]]
ods_code = "RX1"
name = "Example Hospital EPR"
adapter = "fhir"
client_certificate_subject = "CN=epr,O=Example Trust"
)"));
  REQUIRE(c.source_systems.size() == 1);
  CHECK(c.source_systems[0].client_certificate_subject == "CN=epr,O=Example Trust");
  auto dup = expect_error(tls_lines() + "[[source_systems]]\nods_code = \"RX1\"\nname = \"a\"\n"
                                        "[[source_systems]]\nods_code = \"RX1\"\nname = \"b\"\n");
  CHECK(dup.key() == "source_systems[1].ods_code");
  CHECK(expect_error(tls_lines() + "[[source_systems]]\nname = \"x\"\n").key() == "source_systems[0].ods_code");
}

TEST_CASE("Config: source systems are checked as start-up checks them, naming the key at fault") {
  // What --check-config runs (load_config): every failure here used to pass the check and
  // then stop the gateway at start (a bad endpoint even as a runtime failure, exit 1).
  const std::string hl7 = "[[source_systems]]\nods_code = \"RGT\"\nname = \"pas\"\nadapter = \"hl7v2\"\n";
  auto error = [](const std::string& body) {
    ConfigError e = expect_error(body);
    return std::pair<std::string, std::string>(e.key(), e.reason());
  };
  auto [key, why] = error(tls_lines() + hl7 + "endpoint = \"localhost:19211\"\n");
  CHECK(key == "source_systems[0].endpoint");
  CHECK(why.find("'localhost' is not an IP address") != std::string::npos);
  std::tie(key, why) = error(tls_lines() + hl7 + "endpoint = \"127.0.0.1:2575\"\n[source_systems.settings]\n"
                                                 "max_message_bytes = 10\n");
  CHECK(key == "source_systems[0].settings.max_message_bytes");
  CHECK(why.find("from 1024 to") != std::string::npos);
  std::tie(key, why) = error(tls_lines() + hl7 + "endpoint = \"127.0.0.1:2575\"\n[source_systems.settings]\n"
                                                 "frame_timeout_s = 0\n");
  CHECK(key == "source_systems[0].settings.frame_timeout_s");
  std::tie(key, why) = error(tls_lines() + hl7 + "endpoint = \"127.0.0.1:2575\"\n[source_systems.settings]\n"
                                                 "tls = \"yes\"\n");
  // A misspelt setting is an error naming it and the known ones, not a default silently kept.
  std::tie(key, why) = error(tls_lines() + hl7 + "endpoint = \"127.0.0.1:2575\"\n[source_systems.settings]\n"
                                                 "max_mesage_bytes = 5\n");
  CHECK(key == "source_systems[0].settings.max_mesage_bytes");
  CHECK(why.find("unknown hl7v2 setting 'max_mesage_bytes'") != std::string::npos);
  CHECK(why.find("known: frame_timeout_s, identifier_system_base, idle_timeout_s, max_connections, "
                 "max_message_bytes, processing_ids, tls, unmapped") != std::string::npos);
  // unmapped: "reject" or "filter" only (a typo must not turn refusals into acknowledgements).
  std::tie(key, why) = error(tls_lines() + hl7 + "endpoint = \"127.0.0.1:2575\"\n[source_systems.settings]\n"
                                                 "unmapped = \"accept\"\n");
  CHECK(key == "source_systems[0].settings.unmapped");
  CHECK(why.find("unmapped must be \"reject\" (refuse, AR) or \"filter\"") != std::string::npos);
  // processing_ids: a list of P, T and D (MSH-11); anything else, or an empty list, is refused.
  std::tie(key, why) = error(tls_lines() + hl7 + "endpoint = \"127.0.0.1:2575\"\n[source_systems.settings]\n"
                                                 "processing_ids = [\"P\", \"X\"]\n");
  CHECK(key == "source_systems[0].settings.processing_ids");
  CHECK(why.find("P (production), T (training) or D (debugging)") != std::string::npos);
  std::tie(key, why) = error(tls_lines() + hl7 + "endpoint = \"127.0.0.1:2575\"\n[source_systems.settings]\n"
                                                 "processing_ids = []\n");
  CHECK(key == "source_systems[0].settings.processing_ids");
  std::tie(key, why) = error(tls_lines() + hl7 + "endpoint = \"127.0.0.1:2575\"\n[source_systems.settings]\n"
                                                 "processing_ids = [\"P\", 1]\n");
  CHECK(key == "source_systems[0].settings.processing_ids");
  CHECK(why.find("strings without commas") != std::string::npos);
  auto listed = load_config(write_config(tls_lines() + hl7 + "endpoint = \"127.0.0.1:2575\"\n"
                                         "[source_systems.settings]\nprocessing_ids = [\"P\", \"T\"]\n"));
  REQUIRE(listed.source_systems.size() == 1);
  CHECK(listed.source_systems[0].settings ==
        std::vector<std::pair<std::string, std::string>>{{"processing_ids", "P,T"}});
  // MLLP over TLS checks a source's certificate subject against the HTTPS listener's client CA.
  const std::string subject = "client_certificate_subject = \"CN=epr,O=Trust\"\n";
  std::tie(key, why) = error(tls_lines() + hl7 + "endpoint = \"0.0.0.0:2575\"\n" + subject +
                             "[source_systems.settings]\ntls = true\n");
  CHECK(key == "source_systems[0].client_certificate_subject");
  CHECK(why.find("set client_ca") != std::string::npos);
  CHECK_NOTHROW(load_config(write_config(tls_lines() + "client_ca = \"" + gw::test::dev_certs().ca + "\"\n" + hl7 +
                                         "endpoint = \"0.0.0.0:2575\"\n" + subject + "[source_systems.settings]\ntls = true\n")));
  // A FHIR push source has no adapter to read settings.
  std::tie(key, why) = error(tls_lines() + "[[source_systems]]\nods_code = \"RX1\"\nname = \"epr\"\n"
                                           "[source_systems.settings]\ntls = true\n");
  CHECK(key == "source_systems[0].settings.tls");
  CHECK(why.find("has no settings") != std::string::npos);
  CHECK(key == "source_systems[0].settings.tls");
  // MLLP over TLS serves the HTTPS certificate: refused when HTTPS is off.
  std::tie(key, why) = error("[server.https]\nenabled = false\n[server.http]\nenabled = true\n" + hl7 +
                             "endpoint = \"127.0.0.1:2575\"\n[source_systems.settings]\ntls = true\n");
  CHECK(key == "source_systems[0].settings.tls");
  CHECK(why.find("[server.https]") != std::string::npos);
  std::tie(key, why) = error(tls_lines() + "[[source_systems]]\nods_code = \"V1\"\nname = \"v\"\nadapter = \"hl8\"\n");
  CHECK(key == "source_systems[0].adapter");

  const std::string plugin = "[[source_systems]]\nods_code = \"V1\"\nname = \"vendor\"\nadapter = \"plugin\"\n";
  std::tie(key, why) = error(tls_lines() + plugin + "plugin = \"/nonexistent/dir/libvendor.so\"\n");
  CHECK(key == "source_systems[0].plugin");
  CHECK(why.find("does not exist") != std::string::npos);
  std::tie(key, why) = error(tls_lines() + plugin + "plugin = \"libvendor.so\"\n");
  CHECK(key == "source_systems[0].plugin");
  CHECK(why.find("must be a path") != std::string::npos);
  const auto text = gw::test::temp_dir("config-plugin") / "not-elf.so";
  std::ofstream(text) << "this is text, not ELF\n";
  std::tie(key, why) = error(tls_lines() + plugin + "plugin = \"" + text.string() + "\"\n");
  CHECK(key == "source_systems[0].plugin");
  CHECK(why.find("could not be loaded as a shared library") != std::string::npos);
  std::tie(key, why) = error(tls_lines() + plugin + "plugin = \"" + GW_EXAMPLE_PLUGIN_BADABI + "\"\n");
  CHECK(key == "source_systems[0].plugin");
  CHECK(why.find("ABI version 999") != std::string::npos);
  // The plug-in's own refusal of its settings, from create().
  std::tie(key, why) = error(tls_lines() + plugin + "plugin = \"" + GW_EXAMPLE_PLUGIN +
                             "\"\n[source_systems.settings]\ndelay_ms = \"soon\"\n");
  CHECK(key == "source_systems[0].plugin");
  CHECK(why.find("refused the configuration") != std::string::npos);
  // A good plug-in and a good listener pass.
  CHECK_NOTHROW(load_config(write_config(tls_lines() + plugin + "plugin = \"" + GW_EXAMPLE_PLUGIN + "\"\n")));
  CHECK_NOTHROW(load_config(write_config(tls_lines() + hl7 + "endpoint = \"127.0.0.1:2575\"\n")));
}

TEST_CASE("Config: a relative plug-in path is resolved against the file's folder, not the current one") {
  // <tmp>/f/gateway.toml names ../plug/libvendor.so; the tests run from the build folder.
  const auto root = gw::test::temp_dir("config-plugin-relative");
  std::filesystem::create_directories(root / "f" / "certs");
  std::filesystem::create_directories(root / "plug");
  std::filesystem::copy_file(GW_EXAMPLE_PLUGIN, root / "plug" / "libvendor.so");
  std::ofstream(root / "f" / "certs" / "jwks.json") << "{\"keys\":[]}";
  std::ofstream(root / "f" / "certs" / "audit-key.pem") << "placeholder";
  const auto path = root / "f" / "gateway.toml";
  std::ofstream(path) << tls_lines()
                      << "[[source_systems]]\nods_code = \"V1\"\nname = \"vendor\"\nadapter = \"plugin\"\n"
                         "plugin = \"../plug/libvendor.so\"\n";
  REQUIRE(std::filesystem::current_path() != root / "f");
  const auto config = load_config(path.string());
  REQUIRE(config.source_systems.size() == 1);
  CHECK(config.source_systems[0].plugin == (root / "plug" / "libvendor.so").lexically_normal().string());
}

TEST_CASE("Config: a plug-in source's credentials_file is read when private, refused when group or others may read it") {
  const auto dir = gw::test::temp_dir("config-credentials");
  const auto secret = dir / "vendor.secret";
  const std::string content = "client_secret=s3cr3t-VALUE\n";
  std::ofstream(secret) << content;
  const std::string plugin = "[[source_systems]]\nods_code = \"V1\"\nname = \"vendor\"\nadapter = \"plugin\"\nplugin = \"" +
                             std::string(GW_EXAMPLE_PLUGIN) + "\"\n";
  const auto with_file = [&](const std::string& file) {
    return tls_lines() + plugin + "credentials_file = \"" + file + "\"\n";
  };
  const auto error_for = [&](const std::string& body) {
    ConfigError e = expect_error(body);
    CHECK(e.key() == "source_systems[0].credentials_file");
    CHECK(e.reason().find("s3cr3t") == std::string::npos);  // the secret is never quoted
    return e.reason();
  };

  std::filesystem::permissions(secret, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  auto config = load_config(write_config(with_file(secret.string())));
  REQUIRE(config.source_systems.size() == 1);
  CHECK(config.source_systems[0].credentials == content);
  CHECK(gw::config::adapter_source(config.source_systems[0]).credentials == content);

  // Readable by the group, or by others: refused like ssh refuses such a key.
  for (auto extra : {std::filesystem::perms::group_read, std::filesystem::perms::others_read}) {
    std::filesystem::permissions(secret, extra, std::filesystem::perm_options::add);
    CHECK(error_for(with_file(secret.string())).find("too open") != std::string::npos);
    std::filesystem::permissions(secret, extra, std::filesystem::perm_options::remove);
  }
  CHECK(error_for(with_file((dir / "missing.secret").string())).find("cannot open") != std::string::npos);
  const auto big = dir / "big.secret";
  std::ofstream(big) << std::string(gw::config::kMaxCredentialsBytes + 1, 'x');
  std::filesystem::permissions(big, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  CHECK(error_for(with_file(big.string())).find("larger than") != std::string::npos);
  // Only a plug-in is handed credentials.
  CHECK(error_for(tls_lines() + "[[source_systems]]\nods_code = \"RX1\"\nname = \"epr\"\ncredentials_file = \"" +
                  secret.string() + "\"\n")
            .find("plug-in sources") != std::string::npos);
}

TEST_CASE("Config: adapter sources (hl7v2 listeners, plug-ins, settings) and [store]") {
  auto c = load_config(write_config(tls_lines() + R"(
[store]
message_retention_days = 90
ingest_threads = 8

[[source_systems]]
ods_code = "RGT"
name = "cuh-pas"
adapter = "hl7v2"
endpoint = "127.0.0.1:2575"
fetch_timeout_ms = 2500
[source_systems.settings]
max_connections = 16
tls = false
identifier_system_base = "https://trust.example/id"
)"));
  CHECK(c.store.message_retention_days == 90);
  CHECK(c.store.ingest_threads == 8);
  REQUIRE(c.source_systems.size() == 1);
  const auto& s = c.source_systems[0];
  CHECK(s.fetch_timeout == std::chrono::milliseconds(2500));
  const std::vector<std::pair<std::string, std::string>> settings{
      {"max_connections", "16"}, {"tls", "false"}, {"identifier_system_base", "https://trust.example/id"}};
  auto got = s.settings;
  auto want = settings;
  std::sort(got.begin(), got.end());
  std::sort(want.begin(), want.end());
  CHECK(got == want);  // numbers and booleans become strings

  const std::string hl7 = "[[source_systems]]\nods_code = \"RGT\"\nname = \"pas\"\nadapter = \"hl7v2\"\n";
  CHECK(expect_error(tls_lines() + hl7).key() == "source_systems[0].endpoint");
  // Plain MLLP only on loopback; TLS anywhere.
  CHECK(expect_error(tls_lines() + hl7 + "endpoint = \"0.0.0.0:2575\"\n").key() == "source_systems[0].settings.tls");
  CHECK_NOTHROW(load_config(write_config(tls_lines() + hl7 + "endpoint = \"0.0.0.0:2575\"\n[source_systems.settings]\ntls = true\n")));
  CHECK(expect_error(tls_lines() + "[[source_systems]]\nods_code = \"V1\"\nname = \"v\"\nadapter = \"plugin\"\n").key() ==
        "source_systems[0].plugin");
  CHECK(expect_error(tls_lines() + hl7 + "endpoint = \"127.0.0.1:1\"\n[source_systems.settings]\nx = [1]\n").key() ==
        "source_systems[0].settings.x");
  CHECK(expect_error(tls_lines() + "[[source_systems]]\nods_code = \"A\"\nname = \"same\"\n"
                                   "[[source_systems]]\nods_code = \"B\"\nname = \"same\"\n").key() == "source_systems[1].name");
  CHECK(expect_error(tls_lines() + "[store]\ningest_threads = 0\n").key() == "store.ingest_threads");
  // The locator's read connections.
  CHECK(load_config(write_config(tls_lines())).read_connections == 0);  // one per CPU
  auto st = load_config(write_config(
      tls_lines() + "[storage]\nread_connections = 3\nlocator_read_cache_mib = 256\nlocator_mmap_mib = 1024\n"));
  CHECK(st.read_connections == 3);
  CHECK(st.locator_read_cache_mib == 256);
  CHECK(st.locator_mmap_mib == 1024);
  CHECK(expect_error(tls_lines() + "[storage]\nlocator_mmap_mib = -1\n").key() == "storage.locator_mmap_mib");
  CHECK(expect_error(tls_lines() + "[storage]\nread_connections = 65\n").key() ==
        "storage.read_connections");
  CHECK(expect_error(tls_lines() + "[storage]\nlocator_read_cache_mib = 0\n").key() ==
        "storage.locator_read_cache_mib");
}

TEST_CASE("Config: storage.demographic_rule chooses the fields, or switches the rule off") {
  const auto fields = [](const gw::config::Config& c) { return gw::locator::demographic_rule_fields(c.demographic_rule); };
  CHECK(fields(load_config(write_config(tls_lines()))) ==
        std::vector<std::string>{"family", "given", "birthdate", "gender", "postcode"});  // the default
  auto narrow = load_config(write_config(tls_lines() + "[storage]\ndemographic_rule = [\"birthdate\", \"family\", \"gender\"]\n"));
  CHECK(narrow.demographic_rule.enabled);
  CHECK(fields(narrow) == std::vector<std::string>{"family", "birthdate", "gender"});
  CHECK_FALSE(load_config(write_config(tls_lines() + "[storage]\ndemographic_rule = []\n")).demographic_rule.enabled);
  for (const char* bad : {"[\"family\", \"nhs\"]", "[\"family\", \"postcode\"]", "[\"family\", \"birthdate\", \"family\"]",
                          "\"family,birthdate\""}) {
    CAPTURE(bad);
    const ConfigError e = expect_error(tls_lines() + "[storage]\ndemographic_rule = " + bad + "\n");
    CHECK(e.key() == "storage.demographic_rule");
  }
  CHECK(std::string(expect_error(tls_lines() + "[storage]\ndemographic_rule = [\"family\"]\n").what())
            .find("at least family and birthdate") != std::string::npos);
}

TEST_CASE("Config: [audit] settings load, and bad ones are errors naming the key") {
  auto c = load_config(write_config(tls_lines() + R"(
[audit]
checkpoint_interval_s = 30
retention_days = 2555
key_name = "trust-audit"
checkpoint_file = "var/checkpoints.log"
commit_delay_us = 500
commit_siblings = 16
[audit.alerts]
max_patients_per_hour = 20
working_hours = "08:00-18:30"
flagged_patients = ["9000000009"]
weekends_out_of_hours = false
)"));
  CHECK(c.audit.enabled);
  CHECK(c.audit.checkpoint_interval == std::chrono::seconds(30));
  CHECK(c.audit.retention_days == 2555);
  CHECK(c.audit.key_name == "trust-audit");
  CHECK(c.audit.commit_delay_us == 500);
  CHECK(c.audit.commit_siblings == 16);
  CHECK(c.audit.checkpoint_file.find("var/checkpoints.log") != std::string::npos);
  CHECK(std::filesystem::path(c.audit.checkpoint_file).is_absolute());
  CHECK(c.audit.alerts.max_patients_per_hour == 20);
  CHECK(c.audit.alerts.working_start_minute == 8 * 60);
  CHECK(c.audit.alerts.working_end_minute == 18 * 60 + 30);
  CHECK(c.audit.alerts.flagged_patients == std::vector<std::string>{"9000000009"});
  CHECK_FALSE(c.audit.alerts.weekends_out_of_hours);

  CHECK(expect_error(tls_lines() + "[audit]\nsigning_key = \"missing.pem\"\n").key() == "audit.signing_key");
  CHECK(expect_error(tls_lines() + "[audit]\ncheckpoint_interval_s = 0\n").key() == "audit.checkpoint_interval_s");
  CHECK(expect_error(tls_lines() + "[audit]\nunknown = 1\n").key() == "audit.unknown");
  CHECK(expect_error(tls_lines() + "[audit]\ncommit_delay_us = -1\n").key() == "audit.commit_delay_us");
  CHECK(expect_error(tls_lines() + "[audit]\ncommit_siblings = 0\n").key() == "audit.commit_siblings");
  CHECK(expect_error(tls_lines() + "[audit.alerts]\nworking_hours = \"19:00-07:00\"\n").key() ==
        "audit.alerts.working_hours");
  CHECK(expect_error(tls_lines() + "[audit.alerts]\nworking_hours = \"7-19\"\n").key() == "audit.alerts.working_hours");
  CHECK(expect_error(tls_lines() + "[audit.alerts]\nflagged_patients = [\"123\"]\n").key() ==
        "audit.alerts.flagged_patients");
  // Ten digits that fail the Modulus 11 check: refused as PUT /audit/flagged-patients refuses them.
  const ConfigError mod11 =
      expect_error(tls_lines() + "[audit.alerts]\nflagged_patients = [\"9000000009\", \"1234567890\"]\n");
  CHECK(mod11.key() == "audit.alerts.flagged_patients");
  CHECK(mod11.reason().find("entry 2 (\"1234567890\") is not a valid NHS number") != std::string::npos);
  CHECK(mod11.reason().find("Modulus 11") != std::string::npos);
  // Forwarding to a SIEM.
  const auto& certs = gw::test::dev_certs();
  auto fwd = load_config(write_config(tls_lines() + "[audit.forward]\nenabled = true\nhost = \"siem.example.nhs.uk\"\n"
                                      "ca_file = \"" + certs.ca + "\"\nresend_window_s = 10\nfacility = 13\n"));
  CHECK(fwd.audit.forward_enabled);
  CHECK(fwd.audit.forward.host == "siem.example.nhs.uk");
  CHECK(fwd.audit.forward.port == 6514);
  CHECK(fwd.audit.forward.resend_window == std::chrono::seconds(10));
  CHECK(fwd.audit.forward.facility == 13);
  CHECK(expect_error(tls_lines() + "[audit.forward]\nenabled = true\nca_file = \"" + certs.ca + "\"\n").key() ==
        "audit.forward.host");
  CHECK(expect_error(tls_lines() + "[audit.forward]\nenabled = true\nhost = \"x\"\n").key() == "audit.forward.ca_file");
  CHECK(expect_error(tls_lines() + "[audit.forward]\nfacility = 30\n").key() == "audit.forward.facility");
  // Audit may be switched off only on loopback listeners.
  CHECK(expect_error(tls_lines() + "address = \"0.0.0.0\"\n[audit]\nenabled = false\n").key() == "audit.enabled");
  CHECK_NOTHROW(load_config(write_config(tls_lines() + "[audit]\nenabled = false\n")));
}

TEST_CASE("Config: audit may not be disabled while an MLLP listener is off loopback") {
  const std::string source = "[[source_systems]]\nods_code = \"RX1\"\nname = \"epr\"\nadapter = \"hl7v2\"\n";
  const ConfigError e = expect_error(tls_lines() + "[audit]\nenabled = false\n" + source +
                                     "endpoint = \"0.0.0.0:2575\"\n[source_systems.settings]\ntls = true\n");
  CHECK(e.key() == "audit.enabled");
  CHECK(e.reason().find("source_systems[0].endpoint is 0.0.0.0:2575") != std::string::npos);
  CHECK(std::string(e.what()).find("gateway.toml") != std::string::npos);
  // On loopback it is development, as for the HTTPS listener.
  CHECK_NOTHROW(load_config(write_config(tls_lines() + "[audit]\nenabled = false\n" + source +
                                         "endpoint = \"127.0.0.1:2575\"\n")));
}

TEST_CASE("Config: an empty storage.data_dir is refused by name, not left to fail at start-up") {
  const ConfigError e = expect_error(tls_lines() + "[storage]\ndata_dir = \"\"\n");
  CHECK(e.key() == "storage.data_dir");
  CHECK(e.reason() == "must not be empty: name the folder for locator.db, store.db and audit.db");
}

// docs/configuration.md's example file names every key: each one, with the value the page
// gives it, in its table, must be a key the loader knows (an error about its value, such as a
// file the example names that is not here, is fine; "unknown setting" is not).
TEST_CASE("Config: every key in docs/configuration.md's example is one the loader reads") {
  const std::string doc = gw::test::read_file(gw::test::source_dir() / "docs" / "configuration.md");
  const std::size_t begin = doc.find("```toml\n");
  REQUIRE(begin != std::string::npos);
  const std::size_t end = doc.find("```", begin + 8);
  REQUIRE(end != std::string::npos);
  const std::string block = doc.substr(begin + 8, end - begin - 8);
  // What a key's table needs around it: a source system for [[source_systems]] (an hl7v2 one
  // for its settings, which name the hl7v2 adapter's keys).
  const std::string source = "[[source_systems]]\nods_code = \"RX1\"\nname = \"epr\"\n";
  const std::string hl7v2 = source + "adapter = \"hl7v2\"\nendpoint = \"127.0.0.1:2575\"\n[source_systems.settings]\n";
  std::string table;
  std::size_t keys = 0;
  std::size_t at = 0;
  while (at < block.size()) {
    std::size_t eol = block.find('\n', at);
    if (eol == std::string::npos) eol = block.size();
    const std::string line = block.substr(at, eol - at);
    at = eol + 1;
    if (line.empty() || line[0] == ' ' || line[0] == '#') continue;
    if (line[0] == '[') {
      table = line.substr(0, line.find(']') + (line.rfind("[[", 0) == 0 ? 2 : 1));
      continue;
    }
    if (line.find(" = ") == std::string::npos) continue;
    ++keys;
    const std::string head = table == "[[source_systems]]"          ? source
                             : table == "[source_systems.settings]" ? hl7v2
                                                                    : table + "\n";
    // Each key in a file of its own, after the HTTPS certificate the defaults need.
    const std::string body = (table == "[server.https]" ? std::string("[server.https]\n") : tls_lines()) +
                             (table == "[server.https]" ? std::string() : head) + line + "\n" +
                             (table == "[server.https]" ? "certificate = \"" + gw::test::dev_certs().server_cert +
                                                              "\"\nprivate_key = \"" + gw::test::dev_certs().server_key + "\"\n"
                                                        : std::string());
    INFO(table);
    INFO(line);
    try {
      load_config(write_config(body));
    } catch (const ConfigError& e) {
      INFO(e.what());
      CHECK(e.reason().find("unknown setting") == std::string::npos);
      CHECK(e.reason().find("unknown hl7v2 setting") == std::string::npos);
    }
  }
  CHECK(keys > 120);  // the block was found and read (127 keys)
}

TEST_CASE("Config: two listeners on one address and port are refused, naming both keys") {
  const std::string hl7v2 = "adapter = \"hl7v2\"\n";
  const ConfigError sources = expect_error(
      tls_lines() + "[[source_systems]]\nods_code = \"RX1\"\nname = \"a\"\n" + hl7v2 + "endpoint = \"127.0.0.1:2575\"\n" +
      "[[source_systems]]\nods_code = \"RX2\"\nname = \"b\"\n" + hl7v2 + "endpoint = \"127.0.0.1:2575\"\n");
  CHECK(sources.key() == "source_systems[1].endpoint");
  CHECK(sources.reason() == "127.0.0.1 port 2575 is also where source_systems[0].endpoint listens (127.0.0.1); give "
                            "each listener a port of its own");
  // Every interface overlaps loopback; plain HTTP on the HTTPS port.
  CHECK(expect_error(tls_lines() + "port = 9443\n[[source_systems]]\nods_code = \"RX1\"\nname = \"a\"\n" + hl7v2 +
                     "endpoint = \"0.0.0.0:9443\"\n[source_systems.settings]\ntls = true\n")
            .key() == "source_systems[0].endpoint");
  CHECK(expect_error(tls_lines() + "port = 9443\n[server.http]\nenabled = true\nport = 9443\n").key() == "server.http.port");
  // Different ports, or different addresses, or port 0 (a free one each): fine.
  CHECK_NOTHROW(load_config(write_config(tls_lines() + "port = 9443\n[server.http]\nenabled = true\nport = 9080\n")));
  CHECK_NOTHROW(load_config(write_config(tls_lines() + "port = 0\n[server.http]\nenabled = true\nport = 0\n")));
  CHECK_NOTHROW(load_config(write_config(tls_lines() + "port = 2575\n[[source_systems]]\nods_code = \"RX1\"\nname = "
                                         "\"a\"\n" + hl7v2 + "endpoint = \"127.0.0.2:2575\"\n")));
  // 0.0.0.0 takes IPv4 only: an IPv6 listener on its port binds. :: takes both families.
  const std::string mllp_v6 = "[[source_systems]]\nods_code = \"RX1\"\nname = \"a\"\n" + hl7v2 +
                              "endpoint = \"[::1]:9443\"\n[source_systems.settings]\ntls = true\n";
  CHECK_NOTHROW(load_config(write_config(tls_lines() + "port = 9443\naddress = \"0.0.0.0\"\n" + mllp_v6)));
  CHECK(expect_error(tls_lines() + "port = 9443\naddress = \"::\"\n[[source_systems]]\nods_code = \"RX1\"\nname = "
                                   "\"a\"\n" + hl7v2 + "endpoint = \"127.0.0.1:9443\"\n")
            .key() == "source_systems[0].endpoint");
}
