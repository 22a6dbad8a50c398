// SPDX-License-Identifier: Apache-2.0
#include "gateway/config/config.h"

#include <filesystem>
#include <set>

#include <boost/asio/ip/address.hpp>
#include <toml++/toml.h>

namespace gw::config {

ConfigError::ConfigError(std::string file, std::string key, std::string reason)
    : std::runtime_error(file + ": " + (key.empty() ? std::string() : key + ": ") + reason),
      file_(std::move(file)), key_(std::move(key)), reason_(std::move(reason)) {}

bool is_loopback_address(const std::string& address) {
  if (address == "localhost") return true;
  boost::system::error_code ec;
  auto a = boost::asio::ip::make_address(address, ec);
  if (ec) return false;
  // A v4-mapped IPv6 peer (::ffff:127.0.0.1) is loopback too.
  if (a.is_v6() && a.to_v6().is_v4_mapped())
    return boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, a.to_v6()).is_loopback();
  return a.is_loopback();
}

namespace {

class Reader {
 public:
  explicit Reader(std::string file) : file_(std::move(file)) {}

  [[noreturn]] void fail(const std::string& key, const std::string& why) const { throw ConfigError(file_, key, why); }

  // Rejects keys we do not know, so a typo is an error rather than a silently ignored setting.
  void only_keys(const toml::table& t, const std::string& prefix, std::set<std::string> allowed) const {
    for (const auto& [k, v] : t) {
      std::string key(k.str());
      if (!allowed.count(key))
        fail(prefix + key, "unknown setting (see docs/configuration.md for the valid keys)");
    }
  }

  const toml::table* table(const toml::table& parent, const std::string& prefix, const char* name) const {
    const toml::node* n = parent.get(name);
    if (!n) return nullptr;
    if (!n->is_table()) fail(prefix + name, "must be a table, e.g. [" + prefix + name + "]");
    return n->as_table();
  }

  void get(const toml::table& t, const std::string& prefix, const char* name, std::string& out) const {
    if (const toml::node* n = t.get(name)) {
      if (!n->is_string()) fail(prefix + name, "must be a string");
      out = n->as_string()->get();
    }
  }

  void get(const toml::table& t, const std::string& prefix, const char* name, bool& out) const {
    if (const toml::node* n = t.get(name)) {
      if (!n->is_boolean()) fail(prefix + name, "must be true or false");
      out = n->as_boolean()->get();
    }
  }

  template <class Int>
  void get_int(const toml::table& t, const std::string& prefix, const char* name, Int& out, std::int64_t min,
               std::int64_t max) const {
    if (const toml::node* n = t.get(name)) {
      if (!n->is_integer()) fail(prefix + name, "must be an integer");
      std::int64_t v = n->as_integer()->get();
      if (v < min || v > max)
        fail(prefix + name, "must be between " + std::to_string(min) + " and " + std::to_string(max) +
                                " (got " + std::to_string(v) + ")");
      out = static_cast<Int>(v);
    }
  }

  void get_ms(const toml::table& t, const std::string& prefix, const char* name, std::chrono::milliseconds& out,
              std::int64_t min, std::int64_t max) const {
    std::int64_t v = out.count();
    get_int(t, prefix, name, v, min, max);
    out = std::chrono::milliseconds(v);
  }

  const std::string& file() const { return file_; }

 private:
  std::string file_;
};

std::string resolve(const std::filesystem::path& dir, const std::string& p) {
  if (p.empty()) return p;
  std::filesystem::path path(p);
  return path.is_absolute() ? p : (dir / path).lexically_normal().string();
}

}  // namespace

Config load_config(const std::string& path) {
  toml::table root;
  try {
    root = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    const auto& where = e.source().begin;
    throw ConfigError(path, "", "line " + std::to_string(where.line) + ", column " + std::to_string(where.column) +
                                    ": " + std::string(e.description()));
  }
  Reader r(path);
  Config c;
  c.source_file = path;
  r.only_keys(root, "", {"server", "storage", "log", "metrics"});

  if (const toml::table* s = r.table(root, "", "server")) {
    r.only_keys(*s, "server.", {"public_base_url", "threads", "https", "http", "limits"});
    r.get(*s, "server.", "public_base_url", c.public_base_url);
    r.get_int(*s, "server.", "threads", c.threads, 1, 256);
    if (const toml::table* h = r.table(*s, "server.", "https")) {
      const std::string p = "server.https.";
      r.only_keys(*h, p, {"enabled", "address", "port", "certificate", "private_key", "client_ca", "client_certificates"});
      r.get(*h, p, "enabled", c.https.enabled);
      r.get(*h, p, "address", c.https.address);
      r.get_int(*h, p, "port", c.https.port, 0, 65535);
      r.get(*h, p, "certificate", c.https.certificate);
      r.get(*h, p, "private_key", c.https.private_key);
      r.get(*h, p, "client_ca", c.https.client_ca);
      std::string mode = "none";
      r.get(*h, p, "client_certificates", mode);
      if (mode == "none") c.https.client_certificates = ClientCertificates::none;
      else if (mode == "optional") c.https.client_certificates = ClientCertificates::optional;
      else if (mode == "required") c.https.client_certificates = ClientCertificates::required;
      else r.fail(p + "client_certificates", "must be \"none\", \"optional\" or \"required\" (got \"" + mode + "\")");
    }
    if (const toml::table* h = r.table(*s, "server.", "http")) {
      const std::string p = "server.http.";
      r.only_keys(*h, p, {"enabled", "address", "port"});
      r.get(*h, p, "enabled", c.http.enabled);
      r.get(*h, p, "address", c.http.address);
      r.get_int(*h, p, "port", c.http.port, 0, 65535);
    }
    if (const toml::table* l = r.table(*s, "server.", "limits")) {
      const std::string p = "server.limits.";
      r.only_keys(*l, p, {"max_header_bytes", "max_body_bytes", "max_connections", "max_requests_per_connection",
                          "read_timeout_ms", "idle_timeout_ms", "write_timeout_ms", "shutdown_grace_ms"});
      r.get_int(*l, p, "max_header_bytes", c.limits.max_header_bytes, 1024, 1 << 20);
      r.get_int(*l, p, "max_body_bytes", c.limits.max_body_bytes, 0, std::int64_t{1} << 30);
      r.get_int(*l, p, "max_connections", c.limits.max_connections, 1, 1000000);
      r.get_int(*l, p, "max_requests_per_connection", c.limits.max_requests_per_connection, 1, 100000000);
      r.get_ms(*l, p, "read_timeout_ms", c.limits.read_timeout, 100, 3600000);
      r.get_ms(*l, p, "idle_timeout_ms", c.limits.idle_timeout, 100, 3600000);
      r.get_ms(*l, p, "write_timeout_ms", c.limits.write_timeout, 100, 3600000);
      r.get_ms(*l, p, "shutdown_grace_ms", c.limits.shutdown_grace, 0, 600000);
    }
  }
  if (const toml::table* s = r.table(root, "", "storage")) {
    r.only_keys(*s, "storage.", {"data_dir"});
    r.get(*s, "storage.", "data_dir", c.data_dir);
  }
  if (const toml::table* s = r.table(root, "", "log")) {
    r.only_keys(*s, "log.", {"level", "access_log"});
    r.get(*s, "log.", "level", c.log_level);
    r.get(*s, "log.", "access_log", c.access_log);
  }
  if (const toml::table* s = r.table(root, "", "metrics")) {
    r.only_keys(*s, "metrics.", {"allow_remote"});
    r.get(*s, "metrics.", "allow_remote", c.metrics_allow_remote);
  }

  const auto dir = std::filesystem::path(path).parent_path();
  c.https.certificate = resolve(dir, c.https.certificate);
  c.https.private_key = resolve(dir, c.https.private_key);
  c.https.client_ca = resolve(dir, c.https.client_ca);
  c.data_dir = resolve(dir, c.data_dir);
  validate(c);
  return c;
}

void validate(const Config& c) {
  const std::string& f = c.source_file.empty() ? std::string("(defaults)") : c.source_file;
  auto fail = [&](const std::string& key, const std::string& why) { throw ConfigError(f, key, why); };
  if (c.public_base_url.rfind("https://", 0) != 0 && c.public_base_url.rfind("http://", 0) != 0)
    fail("server.public_base_url", "must start with https:// (or http:// for loopback development)");
  if (c.public_base_url.back() == '/')
    fail("server.public_base_url", "must not end with '/' (FHIR base URLs have no trailing slash)");
  if (!c.https.enabled && !c.http.enabled)
    fail("server.https.enabled", "no listener is enabled; enable [server.https] (or [server.http] on loopback)");
  if (c.http.enabled && !is_loopback_address(c.http.address))
    fail("server.http.address", "plain HTTP is only allowed on a loopback address (127.0.0.1 or ::1); use "
                                "[server.https] for anything else");
  if (c.https.enabled && !GW_WITH_TLS)
    fail("server.https.enabled", "this gateway was built without TLS (tls=OFF); set enabled = false and use "
                                 "[server.http] on loopback, or rebuild with tls=ON");
  if (c.https.enabled) {
    boost::system::error_code ec;
    if (c.https.address != "localhost") {
      boost::asio::ip::make_address(c.https.address, ec);
      if (ec) fail("server.https.address", "is not an IP address (got \"" + c.https.address + "\")");
    }
    for (const auto& [key, file] : {std::pair{"server.https.certificate", c.https.certificate},
                                   std::pair{"server.https.private_key", c.https.private_key}}) {
      if (file.empty()) fail(key, "is required when HTTPS is enabled");
      if (!std::filesystem::exists(file)) fail(key, "file not found: " + file + " (run certs/make-dev-certs for development certificates)");
    }
    if (c.https.client_certificates != ClientCertificates::none) {
      if (c.https.client_ca.empty()) fail("server.https.client_ca", "is required when client_certificates is optional or required");
      if (!std::filesystem::exists(c.https.client_ca)) fail("server.https.client_ca", "file not found: " + c.https.client_ca);
    }
  }
  if (c.limits.read_timeout.count() <= 0 || c.limits.idle_timeout.count() <= 0)
    fail("server.limits", "timeouts must be positive");
  if (c.log_level != "debug" && c.log_level != "info" && c.log_level != "warn" && c.log_level != "error")
    fail("log.level", "must be debug, info, warn or error (got \"" + c.log_level + "\")");
}

}  // namespace gw::config
