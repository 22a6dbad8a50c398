// SPDX-License-Identifier: Apache-2.0
// Gateway configuration: one TOML file (docs/configuration.md documents every key and
// default). Loaded once at start-up; a bad file throws ConfigError naming file, key and
// reason, and main exits with code 2.
#pragma once

#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "adapters/adapter.h"
#include "gateway/audit/forwarder.h"
#include "gateway/audit/log.h"
#include "gateway/auth/jwt.h"
#include "gateway/auth/policy.h"
#include "gateway/http/cors.h"
#include "gateway/locator/locator.h"

namespace gw::config {

class ConfigError : public std::runtime_error {
 public:
  ConfigError(std::string file, std::string key, std::string reason);
  const std::string& file() const { return file_; }
  const std::string& key() const { return key_; }
  const std::string& reason() const { return reason_; }

 private:
  std::string file_, key_, reason_;
};

enum class ClientCertificates { none, optional, required };

struct HttpsConfig {
  bool enabled = true;
  std::string address = "127.0.0.1";
  std::uint16_t port = 8443;
  std::string certificate = "certs/server.pem";
  std::string private_key = "certs/server-key.pem";
  std::string client_ca;  // PEM bundle trusted for client certificates (mutual TLS)
  ClientCertificates client_certificates = ClientCertificates::none;
  // Strict-Transport-Security on every HTTPS response (RFC 6797), so a browser app that once
  // reached the gateway over TLS never falls back to plain HTTP; 0 sends none.
  std::chrono::seconds hsts_max_age{31536000};
};

struct PlainHttpConfig {
  bool enabled = false;  // never on a non-loopback address
  std::string address = "127.0.0.1";
  std::uint16_t port = 8080;
};

struct Limits {
  std::size_t max_header_bytes = 16 * 1024;
  std::size_t max_body_bytes = 10 * 1024 * 1024;
  std::size_t max_connections = 1024;
  std::size_t max_requests_per_connection = 10000;
  std::chrono::milliseconds read_timeout{30000};   // TLS handshake, or a request once begun
  std::chrono::milliseconds idle_timeout{60000};   // keep-alive wait for the next request
  std::chrono::milliseconds write_timeout{30000};
  std::chrono::milliseconds shutdown_grace{10000}; // in-flight requests finish within this
};

inline constexpr std::size_t kMaxCredentialsBytes = 64 * 1024;

// A source system the gateway knows (issue #3 "source systems"; adapters arrive with #4). A
// client certificate whose subject equals `client_certificate_subject` authenticates as this
// source (issue #5 item 7): a system principal acting for `ods_code`.
struct SourceSystemConfig {
  std::string ods_code;
  std::string name;
  std::string adapter = "fhir";  // "fhir" (pushes over the FHIR API), "hl7v2", "plugin"
  std::string endpoint;          // hl7v2: MLLP listen address "host:port"
  std::string client_certificate_subject;  // RFC 2253, as OpenSSL prints it, e.g. "CN=epr,O=Trust"
  std::string plugin;            // adapter = "plugin": path of the vendor's shared library
  // adapter = "plugin": a file only the gateway's user may read (mode 0600 or 0400), at most
  // kMaxCredentialsBytes of UTF-8, read by load_config into `credentials` and handed to the
  // plug-in's create() as "credentials". The content is a secret: never logged or reported.
  std::string credentials_file;
  std::string credentials;
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds fetch_timeout{10000};
  // [source_systems.settings]: adapter-specific settings and credential file paths, as
  // strings (numbers and booleans are converted), e.g. tls = true, max_connections = 64.
  std::vector<std::pair<std::string, std::string>> settings;
};

// [store] (issue #4): the inbound message store in <data_dir>/store.db.
struct StoreConfig {
  std::int64_t message_retention_days = 0;  // 0 = keep raw messages for ever; else pruned hourly
  std::int64_t ingest_threads = 32;         // messages in flight at once across all sources
};

struct RateLimitConfig {
  double per_second = 50;  // sustained requests per second per key
  double burst = 200;      // bucket size
};

struct AuthConfig {
  // false = development only: every request acts as `development_principal`; refused unless
  // every listener is on a loopback address.
  bool enabled = true;
  std::string jwks_file = "certs/jwks.json";
  std::chrono::seconds jwks_refresh{300};  // re-read the file this often when it changed (0 = never)
  auth::JwtConfig jwt;
  auth::PolicyConfig policy;
  RateLimitConfig per_client;
  RateLimitConfig per_user;
  // Published in /.well-known/smart-configuration: the identity provider's endpoints.
  std::string authorization_endpoint;  // default: issuer + "/authorize"
  std::string token_endpoint;          // default: issuer + "/token"
  std::string jwks_uri;                // optional
  std::string development_role = "clinician";
  std::string development_organisation;
};

// [audit] (issue #6). The log lives in <data_dir>/audit.db; checkpoints are signed with
// `signing_key` and appended to `checkpoint_file` (outside the database) as well.
struct AuditConfig {
  // false = development only (e.g. an audit on/off benchmark): nothing is audited; refused
  // unless every listener is on a loopback address.
  bool enabled = true;
  std::string signing_key = "certs/audit-key.pem";  // Ed25519 or EC P-256 private key (PEM)
  std::string key_name = "fhir-gateway-audit";
  std::string checkpoint_file;                      // default <data_dir>/audit-checkpoints.log
  std::chrono::seconds checkpoint_interval{60};
  bool syslog_checkpoints = false;
  std::int64_t retention_days = 0;                  // 0 = keep for ever; else pruned hourly
  std::int64_t max_batch = 1024;                    // records per group commit
  std::int64_t commit_delay_us = 0;                 // under load, wait this long before a commit
  std::int64_t commit_siblings = 8;                 // "under load": the last commit carried this many
  std::int64_t max_queue = 65536;                   // queued records before 503
  std::int64_t max_page = 200;                      // _count cap for GET /AuditEvent
  std::int64_t export_max = 10000;                  // records per NDJSON export call
  audit::AlertRules alerts;
  // [audit.forward]: RFC 5424 over TLS (RFC 5425) to a SIEM, at least once.
  bool forward_enabled = false;
  audit::ForwarderOptions forward;  // `database` is filled in by the App
};

struct Config {
  std::string source_file;  // empty when built from defaults
  std::string public_base_url = "https://localhost:8443";
  unsigned threads = 2;
  HttpsConfig https;
  PlainHttpConfig http;
  Limits limits;
  http::CorsOptions cors;  // [server.cors]: browser apps' origins (none: no CORS headers)
  std::string data_dir = "data";
  std::int64_t read_connections = 0;  // read connections (and threads) of locator.db and of store.db, 1-64 (0: one per CPU, 2-16)
  std::int64_t locator_read_cache_mib = 64;  // page cache of each locator read connection
  std::int64_t locator_mmap_mib = 0;         // memory-mapped locator reads per connection (0: off)
  // Identity resolution's last resort (after NHS number and local identifier): the fields a
  // new claim must equal on exactly one record (storage.demographic_rule).
  locator::DemographicRule demographic_rule;
  std::string log_level = "info";
  bool access_log = true;
  bool metrics_allow_remote = false;
  AuthConfig auth;
  AuditConfig audit;
  StoreConfig store;
  std::vector<SourceSystemConfig> source_systems;
  Config();
};

// Reads and validates `path`. Relative paths inside the file are resolved against the
// directory holding it. Throws ConfigError.
Config load_config(const std::string& path);

// Checks cross-field rules (TLS files present when HTTPS is on, plain HTTP only on loopback,
// base URL shape). Throws ConfigError. load_config calls it; tests call it on built configs.
void validate(const Config& config);

// The private keys the configuration names that the gateway will use, as (key, path): the
// HTTPS key (which TLS MLLP listeners serve too) when HTTPS is on, the audit signing key when
// audit is on, and the SIEM forwarder's client key when forwarding is on and it has one.
std::vector<std::pair<std::string, std::string>> private_key_files(const Config& config);

// Refuses each of private_key_files() that its group or others may use, as credentials_file
// is (an ssh key's rule): throws ConfigError naming the key, the file and its mode, and saying
// to chmod 600 it. A file that cannot be examined is left to its loader to report. check_startup
// runs it, so --check-config and start-up refuse alike.
void check_private_keys(const Config& config);

// True for 127.0.0.0/8, ::1 and "localhost".
bool is_loopback_address(const std::string& address);

// The adapter contract's view of a configured source (what start-up and --check-config hand to
// an adapter or a plug-in).
adapters::SourceSystem adapter_source(const SourceSystemConfig& s);

}  // namespace gw::config
