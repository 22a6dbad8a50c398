// SPDX-License-Identifier: Apache-2.0
#include "gateway/config/config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>

#include <boost/asio/ip/address.hpp>
#include <toml++/toml.h>

#include "adapters/hl7v2/hl7v2_adapter.h"
#include "adapters/plugin/plugin_adapter.h"
#include "fhir/nhs_number.h"
#include "fhir/query_string.h"

namespace gw::config {

ConfigError::ConfigError(std::string file, std::string key, std::string reason)
    : std::runtime_error(file + ": " + (key.empty() ? std::string() : key + ": ") + reason),
      file_(std::move(file)), key_(std::move(key)), reason_(std::move(reason)) {}

Config::Config() {
  auth.jwt.issuer = "https://localhost:8443/dev-idp";
  auth.jwt.audiences = {"https://localhost:8443"};
  auth.authorization_endpoint = auth.jwt.issuer + "/authorize";
  auth.token_endpoint = auth.jwt.issuer + "/token";
  auth.policy = auth::default_policy();
}

adapters::SourceSystem adapter_source(const SourceSystemConfig& s) {
  adapters::SourceSystem src;
  src.name = s.name;
  src.ods_code = s.ods_code;
  src.adapter = s.adapter;
  src.plugin = s.plugin;
  src.endpoint = s.endpoint;
  src.client_certificate_subject = s.client_certificate_subject;
  src.connect_timeout = s.connect_timeout;
  src.fetch_timeout = s.fetch_timeout;
  src.settings = s.settings;
  src.credentials = s.credentials;
  return src;
}

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

  void get(const toml::table& t, const std::string& prefix, const char* name, std::vector<std::string>& out) const {
    if (const toml::node* n = t.get(name)) {
      const toml::array* a = n->as_array();
      if (!a) fail(prefix + name, "must be an array of strings, e.g. [\"a\", \"b\"]");
      out.clear();
      for (const toml::node& e : *a) {
        if (!e.is_string()) fail(prefix + name, "must be an array of strings");
        out.push_back(e.as_string()->get());
      }
    }
  }

  void get_number(const toml::table& t, const std::string& prefix, const char* name, double& out, double min,
                  double max) const {
    if (const toml::node* n = t.get(name)) {
      double v = 0;
      if (n->is_integer()) v = static_cast<double>(n->as_integer()->get());
      else if (n->is_floating_point()) v = n->as_floating_point()->get();
      else fail(prefix + name, "must be a number");
      if (!(v >= min && v <= max))
        fail(prefix + name, "must be between " + std::to_string(min) + " and " + std::to_string(max));
      out = v;
    }
  }

  void get_seconds(const toml::table& t, const std::string& prefix, const char* name, std::chrono::seconds& out,
                   std::int64_t min, std::int64_t max) const {
    std::int64_t v = out.count();
    get_int(t, prefix, name, v, min, max);
    out = std::chrono::seconds(v);
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

// Why a secret file's mode is too open ("" when only its owner may use it): ssh's rule for a
// private key. A secret its group or others can read is no longer one.
std::string too_open(mode_t mode, const std::string& path, const char* what) {
  if ((mode & (S_IRWXG | S_IRWXO)) == 0) return {};
  char text[8];
  std::snprintf(text, sizeof text, "%04o", static_cast<unsigned>(mode & 07777));
  return "permissions " + std::string(text) + " for " + path + " are too open: " + what +
         " must not be accessible by group or others; chmod 600 it (owned by the gateway's user)";
}

// The content of a source's credentials_file. Like ssh with a private key, a file that its
// group or others may use is refused: a secret shared that widely is no longer one. The
// checks run on the opened file (fstat), so the file read is the file checked. Texts name
// the file and never its content.
std::string read_credentials(const Reader& r, const std::string& key, const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) r.fail(key, "cannot open " + path + ": " + std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat info {};
  if (::fstat(fd, &info) != 0) r.fail(key, "cannot read " + path + ": " + std::strerror(errno));
  if (!S_ISREG(info.st_mode)) r.fail(key, path + " is not a regular file");
  if (const std::string why = too_open(info.st_mode, path, "a credentials file"); !why.empty()) r.fail(key, why);
  if (static_cast<std::uint64_t>(info.st_size) > kMaxCredentialsBytes)
    r.fail(key, path + " is larger than " + std::to_string(kMaxCredentialsBytes) + " bytes");
  std::string content(static_cast<std::size_t>(info.st_size), '\0');
  std::size_t got = 0;
  while (got < content.size()) {
    const ssize_t n = ::read(fd, content.data() + got, content.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) r.fail(key, "cannot read " + path + ": " + std::strerror(errno));
    if (n == 0) break;  // shrank while read: take what is there
    got += static_cast<std::size_t>(n);
  }
  content.resize(got);
  if (content.empty()) r.fail(key, path + " is empty");
  // It travels to the plug-in as a JSON string.
  if (!fhir::is_valid_utf8(content) || content.find('\0') != std::string::npos)
    r.fail(key, path + " is not UTF-8 text");
  return content;
}

std::uint8_t parse_permissions(const Reader& r, const std::string& key, const std::string& text) {
  static constexpr std::string_view kOrder = "cruds";
  std::uint8_t mask = 0;
  std::size_t pos = 0;
  for (char ch : text) {
    std::size_t at = kOrder.find(ch, pos);
    if (at == std::string_view::npos)
      r.fail(key, "must be SMART permission letters in the order c, r, u, d, s (got \"" + text + "\")");
    mask |= static_cast<std::uint8_t>(1u << at);
    pos = at + 1;
  }
  return mask;
}

void read_role(const Reader& r, const toml::table& t, const std::string& p, auth::RolePolicy& role) {
  r.only_keys(t, p, {"claim_values", "resource_types", "permissions", "clinical", "audit_access",
                     "requires_relationship", "emergency_purpose", "break_glass", "sensitive_categories"});
  r.get(t, p, "claim_values", role.claim_values);
  r.get(t, p, "resource_types", role.resource_types);
  if (const toml::node* n = t.get("permissions")) {
    if (!n->is_string()) r.fail(p + "permissions", "must be a string such as \"rs\"");
    role.permissions = parse_permissions(r, p + "permissions", n->as_string()->get());
  }
  r.get(t, p, "clinical", role.clinical);
  r.get(t, p, "audit_access", role.audit_access);
  r.get(t, p, "requires_relationship", role.requires_relationship);
  r.get(t, p, "emergency_purpose", role.emergency_purpose);
  r.get(t, p, "break_glass", role.break_glass);
  r.get(t, p, "sensitive_categories", role.sensitive_categories);
}

void read_rate(const Reader& r, const toml::table& parent, const std::string& prefix, const char* name,
               RateLimitConfig& out) {
  if (const toml::table* t = r.table(parent, prefix, name)) {
    const std::string p = prefix + name + ".";
    r.only_keys(*t, p, {"per_second", "burst"});
    r.get_number(*t, p, "per_second", out.per_second, 0.01, 1e6);
    r.get_number(*t, p, "burst", out.burst, 1, 1e7);
  }
}

void read_auth(const Reader& r, const toml::table& a, AuthConfig& auth) {
  const std::string p = "auth.";
  // An older key that never took effect: say so rather than "unknown setting", so whoever set
  // it learns that tokens cannot break glass.
  if (a.contains("break_glass_claim"))
    r.fail(p + "break_glass_claim", "removed: no token claim breaks glass; break-glass is asked for per request with "
                                    "the X-Break-Glass-Reason and X-Break-Glass-Justification headers "
                                    "(docs/access-policy.md); delete this line");
  r.only_keys(a, p, {"enabled", "jwks_file", "jwks_refresh_s", "issuer", "audiences", "leeway_s", "max_lifetime_s",
                     "required_typ", "max_token_bytes", "role_claim", "organisation_claim", "purpose_claim",
                     "patient_claim", "token_cache_entries", "authorization_endpoint", "token_endpoint", "jwks_uri", "development_role", "development_organisation",
                     "rate_limit", "roles", "sensitive_categories", "emergency_purposes", "break_glass_reasons",
                     "break_glass_ttl_s", "break_glass_min_text", "encounter_window_days"});
  r.get(a, p, "enabled", auth.enabled);
  r.get(a, p, "jwks_file", auth.jwks_file);
  r.get_seconds(a, p, "jwks_refresh_s", auth.jwks_refresh, 0, 86400);
  r.get(a, p, "issuer", auth.jwt.issuer);
  r.get(a, p, "audiences", auth.jwt.audiences);
  r.get_seconds(a, p, "leeway_s", auth.jwt.leeway, 0, 300);
  r.get_seconds(a, p, "max_lifetime_s", auth.jwt.max_lifetime, 60, 7 * 86400);
  r.get(a, p, "required_typ", auth.jwt.required_typ);
  r.get_int(a, p, "max_token_bytes", auth.jwt.max_token_bytes, 512, 65536);
  r.get(a, p, "role_claim", auth.jwt.role_claim);
  r.get(a, p, "organisation_claim", auth.jwt.organisation_claim);
  r.get(a, p, "purpose_claim", auth.jwt.purpose_claim);
  r.get(a, p, "patient_claim", auth.jwt.patient_claim);
  r.get_int(a, p, "token_cache_entries", auth.jwt.cache_entries, 0, 10000000);
  auth.authorization_endpoint = auth.jwt.issuer + "/authorize";  // defaults follow the issuer
  auth.token_endpoint = auth.jwt.issuer + "/token";
  r.get(a, p, "authorization_endpoint", auth.authorization_endpoint);
  r.get(a, p, "token_endpoint", auth.token_endpoint);
  r.get(a, p, "jwks_uri", auth.jwks_uri);
  r.get(a, p, "development_role", auth.development_role);
  r.get(a, p, "development_organisation", auth.development_organisation);
  if (const toml::table* rl = r.table(a, p, "rate_limit")) {
    r.only_keys(*rl, p + "rate_limit.", {"per_client", "per_user"});
    read_rate(r, *rl, p + "rate_limit.", "per_client", auth.per_client);
    read_rate(r, *rl, p + "rate_limit.", "per_user", auth.per_user);
  }
  // [auth.roles.NAME]: replaces the default role of that name field by field, or adds a role.
  if (const toml::table* roles = r.table(a, p, "roles")) {
    for (const auto& [k, v] : *roles) {
      std::string name(k.str());
      const std::string rp = p + "roles." + name + ".";
      if (!v.is_table()) r.fail(p + "roles." + name, "must be a table, e.g. [auth.roles." + name + "]");
      auth::RolePolicy* role = nullptr;
      for (auto& existing : auth.policy.roles)
        if (existing.name == name) role = &existing;
      if (!role) {
        auth.policy.roles.push_back(auth::RolePolicy{});
        role = &auth.policy.roles.back();
        role->name = name;
      }
      read_role(r, *v.as_table(), rp, *role);
    }
  }
  // [auth.sensitive_categories] NAME = ["system|code", ...]: replaces or adds a category.
  if (const toml::table* cats = r.table(a, p, "sensitive_categories")) {
    for (const auto& [k, v] : *cats) {
      std::string name(k.str());
      std::vector<std::string> codes;
      r.get(*cats, p + "sensitive_categories.", name.c_str(), codes);
      auth::SensitiveCategory cat{name, {}};
      for (const auto& c : codes) {
        auto bar = c.find('|');
        if (bar == std::string::npos || bar == 0 || bar + 1 == c.size())
          r.fail(p + "sensitive_categories." + name, "each code must be \"system|code\" (got \"" + c + "\")");
        cat.codes.emplace_back(c.substr(0, bar), c.substr(bar + 1));
      }
      bool replaced = false;
      for (auto& existing : auth.policy.sensitive_categories)
        if (existing.name == name) existing = cat, replaced = true;
      if (!replaced) auth.policy.sensitive_categories.push_back(std::move(cat));
    }
  }
  r.get(a, p, "emergency_purposes", auth.policy.emergency_purposes);
  r.get(a, p, "break_glass_reasons", auth.policy.break_glass_reasons);
  r.get_seconds(a, p, "break_glass_ttl_s", auth.policy.break_glass_ttl, 60, 7 * 86400);
  r.get_int(a, p, "break_glass_min_text", auth.policy.break_glass_min_text, 0, 1000);
  std::int64_t days = auth.policy.encounter_window.count() / 86400;
  r.get_int(a, p, "encounter_window_days", days, 0, 3650);
  auth.policy.encounter_window = std::chrono::seconds(days * 86400);
}

// "HH:MM" -> minute of day, or -1.
int parse_hhmm(const std::string& t) {
  if (t.size() != 5 || t[2] != ':' || !std::isdigit(static_cast<unsigned char>(t[0])) ||
      !std::isdigit(static_cast<unsigned char>(t[1])) || !std::isdigit(static_cast<unsigned char>(t[3])) ||
      !std::isdigit(static_cast<unsigned char>(t[4])))
    return -1;
  int h = (t[0] - '0') * 10 + (t[1] - '0');
  int m = (t[3] - '0') * 10 + (t[4] - '0');
  if (h > 24 || m > 59 || (h == 24 && m != 0)) return -1;
  return h * 60 + m;
}

void read_audit(const Reader& r, const toml::table& a, AuditConfig& audit) {
  const std::string p = "audit.";
  r.only_keys(a, p, {"enabled", "signing_key", "key_name", "checkpoint_file", "checkpoint_interval_s",
                     "syslog_checkpoints", "retention_days", "max_batch", "commit_delay_us", "commit_siblings", "max_queue", "max_page", "export_max",
                     "alerts", "forward"});
  r.get(a, p, "enabled", audit.enabled);
  r.get(a, p, "signing_key", audit.signing_key);
  r.get(a, p, "key_name", audit.key_name);
  r.get(a, p, "checkpoint_file", audit.checkpoint_file);
  r.get_seconds(a, p, "checkpoint_interval_s", audit.checkpoint_interval, 1, 86400);
  r.get(a, p, "syslog_checkpoints", audit.syslog_checkpoints);
  r.get_int(a, p, "retention_days", audit.retention_days, 0, 36500);
  r.get_int(a, p, "max_batch", audit.max_batch, 1, 100000);
  r.get_int(a, p, "commit_delay_us", audit.commit_delay_us, 0, 100000);
  r.get_int(a, p, "commit_siblings", audit.commit_siblings, 1, 100000);
  r.get_int(a, p, "max_queue", audit.max_queue, 1, 10000000);
  r.get_int(a, p, "max_page", audit.max_page, 1, 10000);
  r.get_int(a, p, "export_max", audit.export_max, 1, 1000000);
  if (const toml::table* t = r.table(a, p, "forward")) {
    const std::string q = p + "forward.";
    auto& f = audit.forward;
    r.only_keys(*t, q, {"enabled", "host", "port", "ca_file", "client_certificate", "client_key", "name", "app_name",
                        "hostname", "facility", "sd_id", "batch_size", "max_message_bytes", "poll_interval_ms",
                        "resend_window_s", "backoff_min_ms", "backoff_max_s", "io_timeout_s", "drain_timeout_s",
                        "from_start"});
    r.get(*t, q, "enabled", audit.forward_enabled);
    r.get(*t, q, "host", f.host);
    std::int64_t port = f.port;
    r.get_int(*t, q, "port", port, 1, 65535);
    f.port = static_cast<std::uint16_t>(port);
    r.get(*t, q, "ca_file", f.ca_file);
    r.get(*t, q, "client_certificate", f.client_certificate);
    r.get(*t, q, "client_key", f.client_key);
    r.get(*t, q, "name", f.name);
    r.get(*t, q, "app_name", f.app_name);
    r.get(*t, q, "hostname", f.hostname);
    r.get_int(*t, q, "facility", f.facility, 0, 23);
    r.get(*t, q, "sd_id", f.sd_id);
    r.get_int(*t, q, "batch_size", f.batch_size, 1, 100000);
    r.get_int(*t, q, "max_message_bytes", f.max_message_bytes, 2048, 1 << 20);
    r.get_ms(*t, q, "poll_interval_ms", f.poll_interval, 10, 60000);
    std::chrono::seconds secs{};
    auto get_s = [&](const char* key, std::chrono::milliseconds& out, std::int64_t min, std::int64_t max) {
      secs = std::chrono::duration_cast<std::chrono::seconds>(out);
      r.get_seconds(*t, q, key, secs, min, max);
      out = secs;
    };
    get_s("resend_window_s", f.resend_window, 0, 3600);
    r.get_ms(*t, q, "backoff_min_ms", f.backoff_min, 10, 60000);
    get_s("backoff_max_s", f.backoff_max, 1, 3600);
    get_s("io_timeout_s", f.io_timeout, 1, 600);
    get_s("drain_timeout_s", f.drain_timeout, 0, 600);
    r.get(*t, q, "from_start", f.from_start);
  }
  if (const toml::table* t = r.table(a, p, "alerts")) {
    const std::string q = p + "alerts.";
    auto& rules = audit.alerts;
    r.only_keys(*t, q, {"break_glass", "without_relationship", "max_patients_per_hour", "flagged_patients",
                        "out_of_hours", "working_hours", "weekends_out_of_hours"});
    r.get(*t, q, "break_glass", rules.break_glass);
    r.get(*t, q, "without_relationship", rules.without_relationship);
    std::int64_t per_hour = static_cast<std::int64_t>(rules.max_patients_per_hour);
    r.get_int(*t, q, "max_patients_per_hour", per_hour, 0, 1000000);
    rules.max_patients_per_hour = static_cast<std::size_t>(per_hour);
    r.get(*t, q, "flagged_patients", rules.flagged_patients);
    r.get(*t, q, "out_of_hours", rules.out_of_hours);
    r.get(*t, q, "weekends_out_of_hours", rules.weekends_out_of_hours);
    std::string hours;
    r.get(*t, q, "working_hours", hours);
    if (!hours.empty()) {
      const auto dash = hours.find('-');
      const int from = dash == std::string::npos ? -1 : parse_hhmm(hours.substr(0, dash));
      const int to = dash == std::string::npos ? -1 : parse_hhmm(hours.substr(dash + 1));
      if (from < 0 || to < 0 || from >= to)
        r.fail(q + "working_hours", "must be \"HH:MM-HH:MM\" (UK local time, start before end), e.g. \"07:00-19:00\"");
      rules.working_start_minute = from;
      rules.working_end_minute = to;
    }
    // The same check as PUT /audit/flagged-patients/{nhs}: a number failing Modulus 11 can
    // never match a record, so the flag would silently watch nothing.
    for (std::size_t i = 0; i < rules.flagged_patients.size(); ++i) {
      const std::string& n = rules.flagged_patients[i];
      if (auto valid = fhir::validate_nhs_number(n); !valid)
        r.fail(q + "flagged_patients", "entry " + std::to_string(i + 1) + " (\"" + n.substr(0, 16) +
                                           "\") is not a valid NHS number: " + valid.issue().diagnostics);
    }
  }
}

}  // namespace

Config load_config(const std::string& path) {
  // What toml++ says of these ("line 0, column 0: File could not be opened for reading"), or
  // does (a folder reads as an empty file, so the defaults' errors follow) hides the mistake.
  {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) throw ConfigError(path, "", std::string("cannot open the configuration file: ") + std::strerror(errno));
    struct stat info {};
    const bool regular = ::fstat(fd, &info) == 0 && S_ISREG(info.st_mode);
    ::close(fd);
    if (!regular) throw ConfigError(path, "", "is not a regular file: --config names the TOML configuration file");
  }
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
  r.only_keys(root, "", {"server", "storage", "store", "log", "metrics", "auth", "audit", "source_systems"});

  if (const toml::table* s = r.table(root, "", "server")) {
    r.only_keys(*s, "server.", {"public_base_url", "threads", "https", "http", "limits", "cors"});
    r.get(*s, "server.", "public_base_url", c.public_base_url);
    r.get_int(*s, "server.", "threads", c.threads, 1, 256);
    if (const toml::table* h = r.table(*s, "server.", "https")) {
      const std::string p = "server.https.";
      r.only_keys(*h, p, {"enabled", "address", "port", "certificate", "private_key", "client_ca", "client_certificates",
                          "hsts_max_age_s"});
      r.get(*h, p, "enabled", c.https.enabled);
      r.get(*h, p, "address", c.https.address);
      r.get_int(*h, p, "port", c.https.port, 0, 65535);
      r.get(*h, p, "certificate", c.https.certificate);
      r.get(*h, p, "private_key", c.https.private_key);
      r.get(*h, p, "client_ca", c.https.client_ca);
      r.get_seconds(*h, p, "hsts_max_age_s", c.https.hsts_max_age, 0, 63072000);
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
    if (const toml::table* t = r.table(*s, "server.", "cors")) {
      const std::string p = "server.cors.";
      r.only_keys(*t, p, {"allowed_origins", "max_age_s"});
      r.get(*t, p, "allowed_origins", c.cors.allowed_origins);
      r.get_seconds(*t, p, "max_age_s", c.cors.max_age, 0, 86400);
    }
  }
  if (const toml::table* s = r.table(root, "", "storage")) {
    r.only_keys(*s, "storage.",
                {"data_dir", "read_connections", "locator_read_cache_mib", "locator_mmap_mib", "demographic_rule"});
    r.get(*s, "storage.", "data_dir", c.data_dir);
    r.get_int(*s, "storage.", "read_connections", c.read_connections, 0, 64);
    r.get_int(*s, "storage.", "locator_read_cache_mib", c.locator_read_cache_mib, 1, 65536);
    r.get_int(*s, "storage.", "locator_mmap_mib", c.locator_mmap_mib, 0, 65536);
    if (s->contains("demographic_rule")) {
      std::vector<std::string> fields;
      r.get(*s, "storage.", "demographic_rule", fields);
      auto rule = locator::demographic_rule_from(fields);
      if (rule) c.demographic_rule = *rule;
      else r.fail("storage.demographic_rule", rule.issue().diagnostics);
    }
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

  if (const toml::table* st = r.table(root, "", "store")) {
    r.only_keys(*st, "store.", {"message_retention_days", "ingest_threads"});
    r.get_int(*st, "store.", "message_retention_days", c.store.message_retention_days, 0, 36500);
    r.get_int(*st, "store.", "ingest_threads", c.store.ingest_threads, 1, 1024);
  }
  if (const toml::table* a = r.table(root, "", "auth")) read_auth(r, *a, c.auth);
  if (const toml::table* a = r.table(root, "", "audit")) read_audit(r, *a, c.audit);
  if (const toml::node* n = root.get("source_systems")) {
    const toml::array* arr = n->as_array();
    if (!arr) r.fail("source_systems", "must be an array of tables: [[source_systems]]");
    for (std::size_t i = 0; i < arr->size(); ++i) {
      const std::string p = "source_systems[" + std::to_string(i) + "].";
      const toml::table* t = (*arr)[i].as_table();
      if (!t) r.fail("source_systems", "must be an array of tables: [[source_systems]]");
      r.only_keys(*t, p, {"ods_code", "name", "adapter", "endpoint", "client_certificate_subject", "plugin",
                          "credentials_file", "connect_timeout_ms", "fetch_timeout_ms", "settings"});
      SourceSystemConfig s;
      r.get(*t, p, "ods_code", s.ods_code);
      r.get(*t, p, "name", s.name);
      r.get(*t, p, "adapter", s.adapter);
      r.get(*t, p, "endpoint", s.endpoint);
      r.get(*t, p, "client_certificate_subject", s.client_certificate_subject);
      r.get(*t, p, "plugin", s.plugin);
      r.get(*t, p, "credentials_file", s.credentials_file);
      std::int64_t connect_ms = s.connect_timeout.count(), fetch_ms = s.fetch_timeout.count();
      r.get_int(*t, p, "connect_timeout_ms", connect_ms, 1, 600000);
      r.get_int(*t, p, "fetch_timeout_ms", fetch_ms, 1, 600000);
      s.connect_timeout = std::chrono::milliseconds(connect_ms);
      s.fetch_timeout = std::chrono::milliseconds(fetch_ms);
      if (const toml::table* st = r.table(*t, p, "settings")) {
        for (const auto& [k, v] : *st) {
          std::string value;
          if (v.is_string()) value = v.as_string()->get();
          else if (v.is_integer()) value = std::to_string(v.as_integer()->get());
          else if (v.is_boolean()) value = v.as_boolean()->get() ? "true" : "false";
          else if (const toml::array* a = v.as_array()) {
            // A list of strings (e.g. processing_ids = ["P", "T"]) reaches the adapter
            // comma-separated; a string holding a comma would be ambiguous.
            for (std::size_t i = 0; i < a->size(); ++i) {
              const auto* text = (*a)[i].as_string();
              if (!text || text->get().find(',') != std::string::npos) {
                r.fail(p + "settings." + std::string(k.str()), "a list must hold strings without commas");
                break;
              }
              value.append(i == 0 ? "" : ",").append(text->get());
            }
          } else r.fail(p + "settings." + std::string(k.str()), "must be a string, integer, boolean or list of strings");
          s.settings.emplace_back(std::string(k.str()), std::move(value));
        }
      }
      c.source_systems.push_back(std::move(s));
    }
  }

  const auto dir = std::filesystem::path(path).parent_path();
  c.auth.jwks_file = resolve(dir, c.auth.jwks_file);
  c.https.certificate = resolve(dir, c.https.certificate);
  c.https.private_key = resolve(dir, c.https.private_key);
  c.https.client_ca = resolve(dir, c.https.client_ca);
  c.data_dir = resolve(dir, c.data_dir);
  c.audit.signing_key = resolve(dir, c.audit.signing_key);
  c.audit.checkpoint_file = resolve(dir, c.audit.checkpoint_file);
  c.audit.forward.ca_file = resolve(dir, c.audit.forward.ca_file);
  c.audit.forward.client_certificate = resolve(dir, c.audit.forward.client_certificate);
  c.audit.forward.client_key = resolve(dir, c.audit.forward.client_key);
  for (std::size_t i = 0; i < c.source_systems.size(); ++i) {
    SourceSystemConfig& s = c.source_systems[i];
    // A bare file name stays as written, so that the loader refuses it by name rather than
    // letting it mean "beside the file" here and "the system library path" to dlopen.
    if (s.plugin.find('/') != std::string::npos) s.plugin = resolve(dir, s.plugin);
    if (s.credentials_file.empty()) continue;
    const std::string key = "source_systems[" + std::to_string(i) + "].credentials_file";
    // Only a plug-in is handed the content; any other adapter would silently ignore it.
    if (s.adapter != "plugin") r.fail(key, "is read only by plug-in sources (adapter = \"plugin\")");
    s.credentials_file = resolve(dir, s.credentials_file);
    s.credentials = read_credentials(r, key, s.credentials_file);
  }
  validate(c);
  return c;
}

namespace {

// What start-up (App::start_adapters) checks of a source beyond the file's shape, so that
// --check-config finds it too: the adapter's own reading of its endpoint and settings, and
// for a plug-in, loading it: the file, its ABI version and whether create() takes the
// configuration (create() must not start work, so the instance is destroyed again at once).
// Binding the listen address is left to start. Settings no adapter reads are refused (the
// hl7v2 adapter names its known keys; a "fhir" source has none; a plug-in judges its own).
// The Issue's expression is the key under the source ("endpoint", "settings.max_message_bytes",
// "plugin").
fhir::Status check_adapter(const Config& c, const SourceSystemConfig& s) {
  const adapters::SourceSystem src = adapter_source(s);
  if (s.adapter == "hl7v2") {
    auto options = hl7v2::listener_options(src);
    if (!options) return std::move(options).issue();
    if (options->tls && !c.https.enabled)
      return fhir::Issue::make(fhir::ErrorCode::invalid_value,
                               "source '" + s.name + "': tls = true serves the gateway's HTTPS certificate; enable "
                               "[server.https] or set tls = false on a loopback address",
                               "settings.tls");
    // The listener requires a client certificate with this subject, verified against the
    // HTTPS listener's client CA (App::start_adapters).
    if (options->tls && !s.client_certificate_subject.empty() &&
        (c.https.client_ca.empty() || !std::filesystem::exists(c.https.client_ca)))
      return fhir::Issue::make(fhir::ErrorCode::invalid_value,
                               "source '" + s.name + "': over TLS the MLLP listener accepts only a client certificate "
                               "with this subject, verified against [server.https] client_ca; set client_ca to the "
                               "CA bundle that issues the sources' certificates" +
                                   (c.https.client_ca.empty() ? std::string() : " (file not found: " + c.https.client_ca + ")"),
                               "client_certificate_subject");
  } else if (s.adapter == "plugin") {
    auto loaded = adapters::load_plugin(src);
    if (!loaded) return std::move(loaded).issue();
  } else if (s.adapter == "fhir" && !s.settings.empty()) {
    // A FHIR push source runs no adapter: nothing would ever read these.
    return fhir::Issue::make(fhir::ErrorCode::invalid_value,
                             "source '" + s.name + "' pushes over the FHIR API (adapter = \"fhir\"), which has no "
                             "settings; remove [source_systems.settings] or set the adapter",
                             "settings." + s.settings.front().first);
  }
  return fhir::Ok{};
}

}  // namespace

std::vector<std::pair<std::string, std::string>> private_key_files(const Config& c) {
  std::vector<std::pair<std::string, std::string>> keys;
  if (c.https.enabled) keys.emplace_back("server.https.private_key", c.https.private_key);
  if (c.audit.enabled) {
    keys.emplace_back("audit.signing_key", c.audit.signing_key);
    if (c.audit.forward_enabled && !c.audit.forward.client_key.empty())
      keys.emplace_back("audit.forward.client_key", c.audit.forward.client_key);
  }
  return keys;
}

void check_private_keys(const Config& c) {
  const std::string& f = c.source_file.empty() ? std::string("(defaults)") : c.source_file;
  for (const auto& [key, path] : private_key_files(c)) {
    struct stat info {};
    if (path.empty() || ::stat(path.c_str(), &info) != 0) continue;
    if (const std::string why = too_open(info.st_mode, path, "a private key"); !why.empty())
      throw ConfigError(f, key, why);
  }
}

namespace {

// Why `origin` is not an origin [server.cors] may list, or empty. An origin is compared
// exactly with the Origin header a browser sends, which is serialised as scheme://host[:port]
// in lower case with no path (RFC 6454 section 6.2), so anything else would never match. A
// wildcard or "null" (sandboxed pages, files) would let any page read the answers; plain
// http:// is for a developer's own machine only.
std::string origin_problem(const std::string& origin) {
  if (origin == "*" || origin == "null") return "may not be \"" + origin + "\": list each web app's origin";
  std::string_view rest = origin;
  const bool https = rest.rfind("https://", 0) == 0;
  if (!https && rest.rfind("http://", 0) != 0) return "must start with https:// (or http:// for localhost)";
  rest.remove_prefix(https ? 8 : 7);
  std::string_view host = rest, port;
  if (!rest.empty() && rest.front() == '[') {  // an IPv6 literal
    const std::size_t close = rest.find(']');
    if (close == std::string_view::npos) return "has an unclosed '[' in its host";
    host = rest.substr(0, close + 1);
    rest.remove_prefix(close + 1);
    if (!rest.empty() && rest.front() != ':') return "must be scheme://host[:port], with no path (no '/')";
    if (!rest.empty()) port = rest.substr(1);
  } else if (const std::size_t colon = rest.find(':'); colon != std::string_view::npos) {
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
  }
  if (host.empty()) return "has no host";
  for (char ch : host)
    if (!(std::islower(static_cast<unsigned char>(ch)) || std::isdigit(static_cast<unsigned char>(ch)) ||
          ch == '.' || ch == '-' || (host.front() == '[' && (ch == '[' || ch == ']' || ch == ':'))))
      return ch == '/' ? "must be scheme://host[:port], with no path (no '/')"
                       : "host must be lower case letters, digits, '.' and '-' (as browsers send it)";
  if (!port.empty() || origin.back() == ':') {
    std::int64_t n = 0;
    for (char ch : port) {
      if (!std::isdigit(static_cast<unsigned char>(ch)) || n > 65535) return "has a bad port (1-65535, no path)";
      n = n * 10 + (ch - '0');
    }
    if (port.empty() || n < 1 || n > 65535) return "has a bad port (1-65535, no path)";
    // A browser serialises an origin without its scheme's default port (RFC 6454 section
    // 6.2), so such an entry could never match.
    if ((https && n == 443) || (!https && n == 80))
      return std::string("names its scheme's default port ") + (https ? "443" : "80") +
             ", which browsers leave out of Origin, so it would never match: write it without \":" +
             (https ? "443" : "80") + "\"";
  }
  if (!https && host != "localhost" && host != "127.0.0.1" && host != "[::1]")
    return "plain http:// is only allowed for localhost, 127.0.0.1 or [::1] (a developer's machine); use https://";
  return {};
}

}  // namespace

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
  if (c.cors.allowed_origins.size() > 64) fail("server.cors.allowed_origins", "at most 64 origins");
  for (std::size_t i = 0; i < c.cors.allowed_origins.size(); ++i) {
    const std::string& o = c.cors.allowed_origins[i];
    if (std::string why = origin_problem(o); !why.empty())
      fail("server.cors.allowed_origins", "entry " + std::to_string(i + 1) + " (\"" + o.substr(0, 100) + "\") " + why);
    for (std::size_t j = 0; j < i; ++j)
      if (c.cors.allowed_origins[j] == o)
        fail("server.cors.allowed_origins", "entry " + std::to_string(i + 1) + " (\"" + o.substr(0, 100) +
                                                "\") repeats entry " + std::to_string(j + 1) + "; list each origin once");
  }
  if (c.auth.enabled) {
    if (c.auth.jwt.issuer.empty()) fail("auth.issuer", "is required when auth is enabled");
    if (c.auth.jwt.audiences.empty()) fail("auth.audiences", "needs at least one audience (usually the public base URL)");
    if (c.auth.jwks_file.empty()) fail("auth.jwks_file", "is required when auth is enabled");
    if (!std::filesystem::exists(c.auth.jwks_file))
      fail("auth.jwks_file", "file not found: " + c.auth.jwks_file +
                                 " (point it at your identity provider's JWKS; for development run tools/demo, "
                                 "which writes certs/jwks.json)");
  } else {
    // Secure by default (issue #5 item 9): without token validation only loopback listeners.
    if (c.https.enabled && !is_loopback_address(c.https.address))
      fail("auth.enabled", "token validation may only be disabled when every listener is on a loopback address; "
                           "server.https.address is " + c.https.address);
  }
  if (c.audit.enabled) {
    if (c.audit.signing_key.empty()) fail("audit.signing_key", "is required when audit is enabled");
    if (!std::filesystem::exists(c.audit.signing_key))
      fail("audit.signing_key", "file not found: " + c.audit.signing_key +
                                    " (an Ed25519 or P-256 private key in PEM; certs/make-dev-certs writes "
                                    "certs/audit-key.pem for development)");
    if (c.audit.forward_enabled) {
      if (c.audit.forward.host.empty()) fail("audit.forward.host", "is required when forwarding is enabled");
      if (c.audit.forward.ca_file.empty() || !std::filesystem::exists(c.audit.forward.ca_file))
        fail("audit.forward.ca_file", "must name the CA bundle the SIEM's certificate chains to (file not found: " +
                                          c.audit.forward.ca_file + ")");
    }
  } else if (c.https.enabled && !is_loopback_address(c.https.address)) {
    fail("audit.enabled", "audit may only be disabled when every listener is on a loopback address; "
                          "server.https.address is " + c.https.address);
  }
  {
    std::set<std::string> ods, names;
    for (std::size_t i = 0; i < c.source_systems.size(); ++i) {
      const auto& s = c.source_systems[i];
      const std::string key = "source_systems[" + std::to_string(i) + "]";
      if (s.ods_code.empty()) fail(key + ".ods_code", "is required");
      if (!ods.insert(s.ods_code).second) fail(key + ".ods_code", "duplicate ODS code " + s.ods_code);
      if (s.name.empty()) fail(key + ".name", "is required");
      if (!names.insert(s.name).second) fail(key + ".name", "duplicate source name " + s.name);
      if (s.adapter == "plugin" && s.plugin.empty()) fail(key + ".plugin", "is required when adapter = \"plugin\"");
      if (s.adapter == "hl7v2") {
        const auto colon = s.endpoint.rfind(':');
        if (colon == std::string::npos) fail(key + ".endpoint", "must be host:port for the MLLP listener");
        const std::string host = s.endpoint.substr(0, colon);
        const bool tls = std::find(s.settings.begin(), s.settings.end(),
                                   std::pair<std::string, std::string>("tls", "true")) != s.settings.end();
        if (!tls && !is_loopback_address(host))
          fail(key + ".settings.tls", "plain MLLP is only allowed on a loopback address; set tls = true for " + host);
        // An MLLP listener is a listener too: without audit, only on loopback (what it
        // applies would otherwise change patient records with no audit record).
        if (!c.audit.enabled && !is_loopback_address(host))
          fail("audit.enabled", "audit may only be disabled when every listener is on a loopback address; " + key +
                                    ".endpoint is " + s.endpoint);
      }
      if (s.adapter != "fhir" && s.adapter != "hl7v2" && s.adapter != "plugin")
        fail(key + ".adapter", "must be fhir, hl7v2 or plugin (got \"" + s.adapter + "\")");
      if (auto st = check_adapter(c, s); !st) {
        const fhir::Issue& i = st.issue();
        fail(key + "." + (i.expression.empty() ? std::string("adapter") : i.expression), i.diagnostics);
      }
    }
  }
  // Two listeners on one address and port: the start would fail to bind the second (after
  // creating the data directory), so it is a configuration error, found by --check-config.
  {
    struct Bound {
      std::string key, address;
      std::uint16_t port;
    };
    std::vector<Bound> bound;
    if (c.https.enabled) bound.push_back({"server.https.port", c.https.address, c.https.port});
    if (c.http.enabled) bound.push_back({"server.http.port", c.http.address, c.http.port});
    for (std::size_t i = 0; i < c.source_systems.size(); ++i) {
      if (c.source_systems[i].adapter != "hl7v2") continue;
      if (auto o = hl7v2::listener_options(adapter_source(c.source_systems[i])))
        bound.push_back({"source_systems[" + std::to_string(i) + "].endpoint", o->address, o->port});
    }
    // The same address, or one of them every address of the other's family: 0.0.0.0 takes
    // every IPv4 address, :: every IPv6 one and (dual stack, Linux's default) IPv4 too. A host
    // name is compared as written; what it resolves to is left to the bind at start-up.
    auto overlap = [](const std::string& a, const std::string& b) {
      if (a == b) return true;
      boost::system::error_code ea, eb;
      const auto x = boost::asio::ip::make_address(a, ea);
      const auto y = boost::asio::ip::make_address(b, eb);
      if (ea || eb) return false;
      auto covers = [](const boost::asio::ip::address& any, const boost::asio::ip::address& other) {
        return any.is_unspecified() && (any.is_v6() || other.is_v4());
      };
      return x == y || covers(x, y) || covers(y, x);
    };
    for (std::size_t i = 0; i < bound.size(); ++i)
      for (std::size_t j = 0; j < i; ++j)
        if (bound[i].port != 0 && bound[i].port == bound[j].port && overlap(bound[i].address, bound[j].address))
          fail(bound[i].key, bound[i].address + " port " + std::to_string(bound[i].port) + " is also where " +
                                 bound[j].key + " listens (" + bound[j].address + "); give each listener a port of its own");
  }
  // An empty path would be accepted here and fail only when start-up creates the folder.
  if (c.data_dir.empty())
    fail("storage.data_dir", "must not be empty: name the folder for locator.db, store.db and audit.db");
  if (c.log_level != "debug" && c.log_level != "info" && c.log_level != "warn" && c.log_level != "error")
    fail("log.level", "must be debug, info, warn or error (got \"" + c.log_level + "\")");
}

}  // namespace gw::config
