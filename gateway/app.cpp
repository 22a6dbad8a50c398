// SPDX-License-Identifier: Apache-2.0
#include "gateway/app.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <thread>

#include "adapters/hl7v2/hl7v2_adapter.h"
#include "adapters/plugin/plugin_adapter.h"
#include "gateway/http/clinical_routes.h"
#include "gateway/http/locator_routes.h"
#include "gateway/http/objection_routes.h"
#include "gateway/http/relationship_routes.h"
#include "gateway/http/smart_routes.h"
#include "gateway/http/system_routes.h"
#include "gateway/locator/sqlite_locator.h"
#include "gateway/observe/log.h"
#include "gateway/observe/thread_name.h"
#if GW_WITH_TLS
#include "gateway/net/tls_context.h"
#endif

namespace gw {
namespace {

// What a message-retention run deleted, by status, naming the messages errored (never applied,
// never replayed) or pending (applied, their ingest record not confirmed) by id, no content:
// "applied 9, replayed 1, error 2, rejected 0, pending 0; errored or pending: 2 (ids 14, 15)".
std::string message_prune_summary(const store::Store::MessagePrune& p) {
  std::string out = "applied " + std::to_string(p.applied) + ", replayed " + std::to_string(p.replayed) +
                    ", error " + std::to_string(p.errored) + ", rejected " + std::to_string(p.rejected) +
                    ", pending " + std::to_string(p.pending);
  // Only sources set to unmapped = "filter" have these: named when there are some.
  if (p.filtered > 0) out += ", filtered " + std::to_string(p.filtered);
  const std::int64_t unfinished = p.errored + p.pending;
  if (unfinished == 0) return out;
  out += "; errored or pending: " + std::to_string(unfinished) + " (ids ";
  for (std::size_t i = 0; i < p.unfinished.size(); ++i) out += (i ? ", " : "") + std::to_string(p.unfinished[i]);
  if (unfinished > static_cast<std::int64_t>(p.unfinished.size())) out += ", ...";
  return out + ")";
}

// The gateway's own start and stop, in the audit log like any access.
audit::Record lifecycle_record(const char* action, const char* note) {
  audit::Record r;
  r.time_ms = audit::now_ms();
  r.kind = "system";
  r.action = action;
  r.agent_kind = "system";
  r.user = "fhir-gateway";
  r.status = 200;
  r.detail.note = note;
  return r;
}

std::string config_name(const config::Config& cfg) {
  return cfg.source_file.empty() ? std::string("(defaults)") : cfg.source_file;
}

// audit.checkpoint_file, or its default beside audit.db.
std::string checkpoint_path(const config::Config& cfg) {
  return cfg.audit.checkpoint_file.empty()
             ? (std::filesystem::path(cfg.data_dir) / "audit-checkpoints.log").string()
             : cfg.audit.checkpoint_file;
}

audit::CheckpointSigner load_signer(const config::Config& cfg) {
  auto signer = audit::CheckpointSigner::from_pem_file(cfg.audit.signing_key, cfg.audit.key_name);
  if (!signer) throw config::ConfigError(config_name(cfg), "audit.signing_key", signer.issue().diagnostics);
  return std::move(*signer);
}

audit::ForwarderOptions forwarder_options(const config::Config& cfg) {
  audit::ForwarderOptions f = cfg.audit.forward;
  f.database = (std::filesystem::path(cfg.data_dir) / "audit.db").string();
  return f;
}

// The checkpoint file is the tamper evidence's witness outside audit.db (docs/audit.md): a
// gateway that cannot append to it would serve with nothing outside the database to check the
// database against. Checked without creating it (--check-config writes nothing); the default
// beside audit.db is left to start-up when data_dir does not exist yet (start creates it).
void check_checkpoint_file(const config::Config& cfg) {
  namespace fs = std::filesystem;
  const fs::path path = checkpoint_path(cfg);
  const bool configured = !cfg.audit.checkpoint_file.empty();
  const auto fail = [&](const std::string& why) {
    throw config::ConfigError(config_name(cfg), configured ? "audit.checkpoint_file" : "storage.data_dir",
                              "the audit checkpoint file " + path.string() + " " + why);
  };
  const fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    if (!configured) return;
    fail("cannot be written: its folder does not exist (create it, or point checkpoint_file elsewhere)");
  }
  if (fs::exists(path, ec)) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0) fail(std::string("cannot be opened for appending: ") + std::strerror(errno));
    ::close(fd);
  } else if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    fail(std::string("cannot be created in its folder: ") + std::strerror(errno));
  }
}

#if GW_WITH_TLS
// An hl7v2 source that names its client_certificate_subject over TLS needs a listener that
// asks for a client certificate and verifies it against server.https.client_ca, whatever the
// HTTPS listener's own client_certificates mode; the listener then matches the subject.
bool mllp_needs_client_certificate(const config::SourceSystemConfig& s) {
  return s.adapter == "hl7v2" && !s.client_certificate_subject.empty() &&
         std::find(s.settings.begin(), s.settings.end(), std::pair<std::string, std::string>("tls", "true")) !=
             s.settings.end();
}

std::shared_ptr<boost::asio::ssl::context> client_certificate_tls_context(const config::Config& cfg) {
  config::Config required = cfg;
  required.https.client_certificates = config::ClientCertificates::required;
  return net::make_server_tls_context(required);
}
#endif

}  // namespace

StartupChecked check_startup(const config::Config& cfg) {
  const std::string file = config_name(cfg);
  StartupChecked checked;
  {
    // Start-up creates a data directory that does not exist; one that exists must be a folder.
    std::error_code ec;
    const auto st = std::filesystem::status(cfg.data_dir, ec);
    if (std::filesystem::exists(st) && !std::filesystem::is_directory(st))
      throw config::ConfigError(file, "storage.data_dir",
                                "the data directory " + cfg.data_dir + " exists and is not a folder");
  }
  config::check_private_keys(cfg);  // before any of them is loaded
#if GW_WITH_TLS
  // Loaded here once and handed on (Server, start_adapters): the files are not read again,
  // so a file changed after this check cannot make the start differ from it.
  if (cfg.https.enabled) checked.https_tls = net::make_server_tls_context(cfg);
  for (const auto& s : cfg.source_systems)
    if (cfg.https.enabled && mllp_needs_client_certificate(s)) {
      checked.client_certificate_tls = client_certificate_tls_context(cfg);
      break;
    }
#endif
  try {
    checked.authenticator = std::make_unique<auth::Authenticator>(cfg.auth, cfg.source_systems);  // parses the JWKS
  } catch (const config::ConfigError& e) {
    // Its error names the JWKS file (the reason repeats it); report it against this file
    // like every other key.
    throw config::ConfigError(file, e.key(), e.reason());
  }
  auto policy = auth::Policy::make(cfg.auth.policy);
  if (!policy) throw config::ConfigError(file, "auth", policy.issue().diagnostics);
  checked.policy = std::make_unique<auth::Policy>(std::move(*policy));
  if (cfg.audit.enabled) {
    checked.signer.emplace(load_signer(cfg));
    check_checkpoint_file(cfg);
    if (cfg.audit.forward_enabled)
      if (auto st = audit::Forwarder::check(forwarder_options(cfg)); !st)
        throw config::ConfigError(file, "audit.forward." + st.issue().expression, st.issue().diagnostics);
  }
  return checked;
}

fhir::Status check_databases_present(const std::string& data_dir) {
  namespace fs = std::filesystem;
  static constexpr const char* kFiles[] = {"locator.db", "store.db", "audit.db"};
  std::string present, missing;
  for (const char* name : kFiles) {
    std::error_code ec;
    std::string& list = fs::exists(fs::path(data_dir) / name, ec) ? present : missing;
    list.append(list.empty() ? "" : ", ").append(name);
  }
  // locator.db alone is an index loaded before the first start (gw-locator import).
  if (missing.empty() || present.empty() || present == "locator.db") return fhir::Ok{};
  return fhir::Issue::make(fhir::ErrorCode::not_ready,
                           "data directory " + data_dir + " holds " + present + " but not " + missing +
                               ": lost, or not restored with the others. Restore the missing files from the same "
                               "backup (docs/operations.md); to start with them empty instead, knowing that what "
                               "they held is gone, start once with --create-missing-databases");
}

std::optional<store::ExposedPath> checkpoint_file_writable_by_others(const config::Config& cfg) {
  const std::string path = checkpoint_path(cfg);
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0 || (info.st_mode & (S_IWGRP | S_IWOTH)) == 0) return std::nullopt;
  char mode[8];
  std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(info.st_mode & 07777));
  return store::ExposedPath{path, mode};
}

std::string missing_databases(const std::string& data_dir) {
  namespace fs = std::filesystem;
  std::string missing;
  for (const char* name : {"locator.db", "store.db", "audit.db"}) {
    std::error_code ec;
    if (!fs::exists(fs::path(data_dir) / name, ec)) missing.append(missing.empty() ? "" : ", ").append(name);
  }
  return missing;
}

fhir::Status check_new_audit_log(const config::Config& cfg) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::exists(fs::path(cfg.data_dir) / "audit.db", ec)) return fhir::Ok{};
  const std::string file = checkpoint_path(cfg);
  std::ifstream in(file, std::ios::binary);
  if (!in) return fhir::Ok{};  // none yet (or unreadable: Log::open says so)
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto parsed = audit::parse_checkpoint_file(text);
  if (!parsed) return fhir::Ok{};  // Log::open refuses it with its reason
  const std::uint64_t newest = parsed->newest_size();
  if (newest == 0) return fhir::Ok{};
  return fhir::Issue::make(
      fhir::ErrorCode::not_ready,
      "audit.db is missing from " + cfg.data_dir + " but the checkpoint file " + file + " holds " +
          std::to_string(parsed->notes.size()) + " checkpoint(s), the newest of " + std::to_string(newest) +
          " records: a new, empty audit.db would be refused as rolled back. Restore audit.db from a backup "
          "(docs/operations.md); or, to start a new audit log knowing the old one is lost, move " + file +
          " aside (keep it for the IG officer: it is the evidence of what the lost log held) and start again. "
          "Nothing was created");
}

audit::LogOptions audit_log_options(const config::Config& cfg) {
  audit::LogOptions o;
  o.path = (std::filesystem::path(cfg.data_dir) / "audit.db").string();
  o.checkpoint_file = checkpoint_path(cfg);
  o.syslog_checkpoints = cfg.audit.syslog_checkpoints;
  // The origin of a new log. An existing one keeps the origin it was created with (Log::open
  // warns when this differs): it names the log in every checkpoint it ever signed.
  o.origin = "fhir-gateway/audit " + cfg.public_base_url;
  o.checkpoint_interval = cfg.audit.checkpoint_interval;
  o.max_batch = static_cast<std::size_t>(cfg.audit.max_batch);
  o.commit_delay = std::chrono::microseconds(cfg.audit.commit_delay_us);
  o.commit_siblings = static_cast<std::size_t>(cfg.audit.commit_siblings);
  o.max_queue = static_cast<std::size_t>(cfg.audit.max_queue);
  o.rules = cfg.audit.alerts;
  return o;
}

DataDirLock::DataDirLock(const std::string& data_dir) {
  if (auto made = store::create_data_dir(data_dir); !made) throw std::runtime_error(made.issue().diagnostics);
  const std::string path = (std::filesystem::path(data_dir) / "gateway.lock").string();
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640);
  if (fd_ < 0) throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
  // flock, not fcntl: its locks belong to the open file, so a second App in the same process
  // (the integration tests) is refused too.
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char buf[32] = {};
    const ssize_t n = ::pread(fd_, buf, sizeof buf - 1, 0);
    ::close(fd_);
    fd_ = -1;
    if (err != EWOULDBLOCK) throw std::runtime_error("cannot lock " + path + ": " + std::strerror(err));
    std::string pid = n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
    pid.erase(std::find_if(pid.begin(), pid.end(), [](char c) { return c < '0' || c > '9'; }), pid.end());
    throw DataDirInUse("data directory " + data_dir + " is in use by another fhir-gateway" +
                           (pid.empty() ? std::string() : " (pid " + pid + ")") +
                           " or a gw-locator writing to it; stop it first, or give this gateway its own data_dir",
                       pid);
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size()))
    observe::log(observe::Level::warn, "could not write the pid into the data directory lock file",
                 {{"error", std::strerror(errno)}});
}

DataDirLock::~DataDirLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the lock; the file stays (removing it would race a starter)
}

App::App(config::Config cfg, AppInfo info) : cfg_(std::move(cfg)) {
  // The configuration first: a start it refuses leaves no data directory or lock file behind.
  StartupChecked checked = check_startup(cfg_);
  data_dir_lock_ = std::make_unique<DataDirLock>(cfg_.data_dir);
  const fhir::Status complete = check_databases_present(cfg_.data_dir);
  if (!complete && !info.create_missing_databases) throw std::runtime_error(complete.issue().diagnostics);
  // Before anything is created: a new audit.db beside a checkpoint file that vouches for
  // records would be refused at once as rolled back, and would leave the folder looking whole.
  if (checked.signer)
    if (auto fresh = check_new_audit_log(cfg_); !fresh) throw std::runtime_error(fresh.issue().diagnostics);
  if (!complete)
    observe::log(observe::Level::warn, "creating missing databases empty (--create-missing-databases)",
                 {{"data_dir", cfg_.data_dir}, {"created", missing_databases(cfg_.data_dir)}});
  // Files this gateway creates are owner-only (store::create_data_dir, sqlite::Database::open);
  // older ones, or a folder made by hand, may not be. A warning, not a refusal: the care record
  // stays up, and the operator chmods (refusing would turn a mode into an outage).
  for (const auto& exposed : store::exposed_to_others(cfg_.data_dir))
    observe::log(observe::Level::warn, "patient data open to other local users: chmod o-rwx it",
                 {{"path", exposed.path}, {"mode", exposed.mode}});
  if (checked.signer)
    if (auto exposed = checkpoint_file_writable_by_others(cfg_))
      observe::log(observe::Level::warn,
                   "audit checkpoint file writable by other local users, who could stop the gateway starting or "
                   "hide a rollback of audit.db: chmod go-w it",
                   {{"path", exposed->path}, {"mode", exposed->mode}});
  auto dbs = store::Databases::open(cfg_.data_dir);
  if (!dbs) throw std::runtime_error("cannot open databases: " + dbs.issue().diagnostics);
  databases_ = std::make_unique<store::Databases>(std::move(*dbs));

  // Reads keep a CPU busy from start to end: one connection, and one pool thread, per CPU
  // (see sqlite/blocking_pool.h for what more threads cost), in locator.db and in store.db.
  // Locator writes from the API wait on the group commit, on threads of their own.
  const std::size_t readers = cfg_.read_connections > 0
                                  ? static_cast<std::size_t>(cfg_.read_connections)
                                  : std::clamp<std::size_t>(std::thread::hardware_concurrency(), 2, 16);
  locator::SqliteLocatorOptions lo;
  lo.read_connections = readers;
  lo.read_cache_mib = cfg_.locator_read_cache_mib;
  lo.mmap_mib = cfg_.locator_mmap_mib;
  lo.rule = cfg_.demographic_rule;
  auto loc = locator::open_sqlite_locator((std::filesystem::path(cfg_.data_dir) / "locator.db").string(), lo);
  if (!loc) throw std::runtime_error("cannot open the record locator: " + loc.issue().diagnostics);
  locator_ = std::move(*loc);
  async_locator_ = std::make_unique<locator::AsyncLocator>(*locator_, lo.read_connections, 4);
  for (const auto& s : cfg_.source_systems) {
    auto ok = locator_->upsert_source_system(locator::SourceSystem{s.ods_code, s.name, s.adapter, s.endpoint});
    if (!ok) throw std::runtime_error("cannot register source system " + s.ods_code + ": " + ok.issue().diagnostics);
  }
  if (checked.signer) open_audit(std::move(*checked.signer));
  else observe::log(observe::Level::warn, "audit is DISABLED (development mode, loopback only)", {});
  if (audit_log_)
    objection_audit_ = std::make_unique<ObjectionAudit>(*locator_, *audit_log_, "fhir-gateway", [this] {
      {
        std::lock_guard lock(refresh_mu_);  // held only around flags: never blocks a network thread for long
        maintenance_requested_ = true;
      }
      refresh_cv_.notify_all();
    });
  store::StoreOptions so;
  so.readers = readers;
  auto st = store::Store::open((std::filesystem::path(cfg_.data_dir) / "store.db").string(), so);
  if (!st) throw std::runtime_error("cannot open the message store: " + st.issue().diagnostics);
  store_ = std::move(*st);
  async_store_ = std::make_unique<store::AsyncStore>(*store_, readers);  // reads only: ingest writes the store
  {
    std::map<std::string, std::string> sources;
    for (const auto& s : cfg_.source_systems) sources[s.name] = s.ods_code;
    ingest::IngestOptions io;
    io.public_base_url = cfg_.public_base_url;
    io.threads = static_cast<std::size_t>(cfg_.store.ingest_threads);
    ingest_ = std::make_unique<ingest::IngestService>(*locator_, *store_, audit_log_.get(), std::move(sources), io);
  }
  settle_pending_messages();  // before any listener accepts a message
  health_.databases_ready = true;

  policy_ = std::move(checked.policy);
  authenticator_ = std::move(checked.authenticator);
  if (!cfg_.auth.enabled)
    observe::log(observe::Level::warn, "token validation is DISABLED (development mode, loopback only)",
                 {{"role", cfg_.auth.development_role}});

  fhir::ServerDescription server{"fhir-gateway", info.version, cfg_.public_base_url,
                                 "Single patient record interoperability gateway", info.release_date,
                                 cfg_.auth.enabled, cfg_.auth.authorization_endpoint, cfg_.auth.token_endpoint};
  http::SystemRouteDeps deps{health_, metrics_, search_params_, server, cfg_.metrics_allow_remote};
  http::add_system_routes(router_, deps);
  http::add_smart_configuration_route(router_, cfg_);
  http::register_locator_search_params(search_params_);
  http::add_locator_routes(router_, search_params_,
                           http::LocatorRouteDeps{*async_locator_, *policy_, break_glass_, cfg_.public_base_url});
  http::add_relationship_routes(router_,
                                http::LocatorRouteDeps{*async_locator_, *policy_, break_glass_, cfg_.public_base_url});
  http::register_clinical_search_params(search_params_);
  http::add_clinical_routes(
      router_, search_params_,
      http::ClinicalRouteDeps{http::LocatorRouteDeps{*async_locator_, *policy_, break_glass_, cfg_.public_base_url},
                              *async_store_});
  if (audit_log_) {
    async_audit_ = std::make_unique<http::AsyncAudit>(*audit_log_, 2);
    http::register_audit_search_params(search_params_);
    http::add_audit_routes(router_, http::AuditRouteDeps{*async_audit_, cfg_.public_base_url, cfg_.public_base_url,
                                                         static_cast<std::size_t>(cfg_.audit.max_page),
                                                         static_cast<std::size_t>(cfg_.audit.export_max)});
    http::add_objection_routes(router_,
                               http::LocatorRouteDeps{*async_locator_, *policy_, break_glass_, cfg_.public_base_url},
                               *objection_audit_);
  }
  if (info.extra_routes) info.extra_routes(router_, search_params_);
  http::add_metadata_route(router_, deps);  // last: generated from the final route table

  http::PipelineLimits limits;
  limits.json.max_bytes = cfg_.limits.max_body_bytes;
  pipeline_ = std::make_unique<http::Pipeline>(router_, limits, authenticator_.get(), policy_.get(), audit_log_.get(),
                                               cfg_.cors);
  https_tls_ = std::move(checked.https_tls);
  client_certificate_tls_ = std::move(checked.client_certificate_tls);
  server_ = std::make_unique<net::Server>(cfg_, *pipeline_, metrics_, health_, https_tls_);
  start_adapters();
  add_ingest_metrics();
  add_database_metrics();
  add_audit_forward_metrics();
  // Last, once nothing else can fail: a start that stops early leaves no "started" record
  // without its "stopped" (nothing is served before the event loop runs).
  if (audit_log_)
    if (auto seq = audit_log_->append_sync(lifecycle_record("start", "gateway started")); !seq)
      throw std::runtime_error("cannot write to the audit log: " + seq.issue().diagnostics);
  // Objection changes a stop (or a failed audit commit) left without their record: audited
  // now, after "gateway started", before any request is served. A failure does not stop the
  // start: the maintenance thread tries again.
  if (objection_audit_) recover_objection_changes("recovered at start-up");

  // SIGHUP re-reads the JWKS file at once (as its periodic re-read does, when it changed); the
  // rest of the configuration is read only at start-up.
  server_->on_hangup([this] {
    {
      std::lock_guard lock(refresh_mu_);
      reload_requested_ = true;
    }
    refresh_cv_.notify_all();
  });
  if (cfg_.auth.enabled) refresher_ = std::thread([this] {
      observe::name_this_thread("gw-jwks");
      refresh_loop();
    });
  if (audit_log_ || cfg_.store.message_retention_days > 0)
    maintenance_ = std::thread([this] {
      observe::name_this_thread("gw-maintenance");
      maintenance_loop();
    });
}

// An applied message is acknowledged before its pending mark is cleared, so a stop in between
// leaves a row pending whose ingest-applied record is committed: the sender may have had its
// AA and will not resend it. Such rows are cleared here (docs/hl7v2.md "When a database cannot
// commit"); the others (no record: audit.db failed) stay pending for the resend.
void App::settle_pending_messages() {
  if (!audit_log_) return;
  auto settled = ingest_->settle_pending(kSettlePendingMax);
  if (!settled) {
    observe::log(observe::Level::error, "pending messages could not be checked against audit.db; they stay pending",
                 {{"error", settled.issue().diagnostics}});
    return;
  }
  if (settled->cleared > 0)
    observe::log(observe::Level::info,
                 "pending messages completed: their ingest-applied records are in audit.db (their acknowledgement "
                 "may not have been sent; a resend is answered as a duplicate)",
                 {{"messages", static_cast<std::uint64_t>(settled->cleared)}});
  if (settled->left > 0)
    observe::log(observe::Level::warn,
                 "messages stay pending: committed in store.db, without their ingest-applied record in audit.db; "
                 "the sender's resend, or gw-messages replay --status pending, completes them",
                 {{"messages", static_cast<std::uint64_t>(settled->left)}});
  if (settled->not_looked_at > 0)
    observe::log(observe::Level::warn,
                 "more pending messages than are checked at start-up: the rest are checked at the next start",
                 {{"checked", static_cast<std::uint64_t>(kSettlePendingMax)},
                  {"remaining", static_cast<std::uint64_t>(settled->not_looked_at)}});
}

void App::open_audit(audit::CheckpointSigner signer) {
  audit::LogOptions o = audit_log_options(cfg_);
  o.on_commit = [this] {
    health_.audit_failing = false;
    if (audit::Forwarder* f = forwarder_to_wake_.load()) f->notify();
  };
  // Every audited request is refused (503) while commits fail: not ready for patient traffic.
  o.on_commit_failed = [this] { health_.audit_failing = true; };
  // The key as other signed-note tools take it, so whoever keeps checkpoint copies can record it.
  observe::log(observe::Level::info, "audit checkpoints are signed",
               {{"key_name", signer.key_name()}, {"verifier_key", signer.verifier_key()}});
  auto log = audit::Log::open(o, std::make_shared<const audit::CheckpointSigner>(std::move(signer)));
  if (!log) throw std::runtime_error("cannot open the audit log: " + log.issue().diagnostics);
  audit_log_ = std::move(*log);
  if (cfg_.audit.forward_enabled) {
    auto fw = audit::Forwarder::start(forwarder_options(cfg_));
    if (!fw)
      throw config::ConfigError(config_name(cfg_), "audit.forward." + fw.issue().expression, fw.issue().diagnostics);
    audit_forwarder_ = std::move(*fw);
    forwarder_to_wake_ = audit_forwarder_.get();
  }
}

void App::recover_objection_changes(const std::string& when) {
  auto done = objection_audit_->recover(when);
  if (!done) {
    observe::log(observe::Level::error,
                 "objection changes without their audit record could not be audited yet; tried again in a minute",
                 {{"error", done.issue().diagnostics}});
    return;
  }
  if (done->audited > 0)
    observe::log(observe::Level::warn,
                 "objection changes whose own audit record was not committed are audited now (recovery records)",
                 {{"changes", static_cast<std::uint64_t>(done->audited)}});
  if (done->found > 0)
    observe::log(observe::Level::info, "objection changes found audited already; their pending rows are removed",
                 {{"changes", static_cast<std::uint64_t>(done->found)}});
}

// Every minute, and at once when a committed objection change's row waits for removal:
// objection changes awaiting recovery (when any is due, which costs no I/O to ask); every
// hour: retention.
void App::maintenance_loop() {
  auto next_retention = std::chrono::steady_clock::now();
  std::unique_lock lock(refresh_mu_);
  while (!stopping_) {
    maintenance_requested_ = false;
    lock.unlock();
    if (objection_audit_ && objection_audit_->due()) recover_objection_changes("recovered by the running gateway");
    if (std::chrono::steady_clock::now() >= next_retention) {
      run_retention();
      next_retention = std::chrono::steady_clock::now() + std::chrono::hours(1);
    }
    lock.lock();
    refresh_cv_.wait_for(lock, kObjectionRecoveryInterval, [this] { return stopping_ || maintenance_requested_; });
  }
}

void App::run_retention() {
  if (audit_log_ && cfg_.audit.retention_days > 0) {
    const std::int64_t cutoff = audit::now_ms() - cfg_.audit.retention_days * 86400 * 1000;
    // Never prune a record before the SIEM holds it (docs/audit.md "Retention"), counted from
    // the cursor as saved: after a crash the forwarder resumes from there and sends again
    // what follows it, which must still be in the log.
    const std::uint64_t keep_from = audit_forwarder_ ? audit_forwarder_->stats().saved_cursor : UINT64_MAX;
    auto pruned = audit_log_->prune_before(cutoff, "retention", keep_from);
    if (!pruned)
      observe::log(observe::Level::error, "audit retention failed", {{"error", pruned.issue().diagnostics}});
    else if (*pruned > 0)
      observe::log(observe::Level::info, "audit retention pruned records", {{"records", std::to_string(*pruned)}});
  }
  if (cfg_.store.message_retention_days > 0) {
    const std::int64_t cutoff = audit::now_ms() - cfg_.store.message_retention_days * 86400 * 1000;
    auto pruned = store_->prune_messages_before(cutoff);
    if (!pruned) {
      observe::log(observe::Level::error, "message retention failed", {{"error", pruned.issue().diagnostics}});
    } else if (pruned->messages > 0) {
      const std::string what = message_prune_summary(*pruned);
      observe::log(pruned->unfinished.empty() ? observe::Level::info : observe::Level::warn,
                   pruned->unfinished.empty() ? "message retention deleted messages"
                                              : "message retention deleted errored or pending messages",
                   {{"messages", std::to_string(pruned->messages)}, {"cutoff_ms", cutoff}, {"by_status", what}});
      // Deleting raw messages (patient data) is on the audit record, as audit retention's
      // own prunes are: what went (how many, by status, and which were never applied) and by
      // which rule (received before the cutoff).
      if (audit_log_) {
        const std::string note = "message retention deleted " + std::to_string(pruned->messages) +
                                 " raw messages from store.db received before " + audit::format_time_ms(cutoff) +
                                 " (message_retention_days = " + std::to_string(cfg_.store.message_retention_days) +
                                 "): " + what;
        audit::Record r = lifecycle_record("message-retention-prune", note.c_str());
        if (auto seq = audit_log_->append_sync(std::move(r)); !seq)
          observe::log(observe::Level::error, "message retention not audited", {{"error", seq.issue().diagnostics}});
      }
    }
    if (pruned && !pruned->wal_checkpointed)
      observe::log(observe::Level::warn,
                   "message retention: store.db WAL busy, deleted text may stay on disk until the next run");
  }
}

App::~App() {
  {
    std::lock_guard lock(refresh_mu_);
    stopping_ = true;
  }
  refresh_cv_.notify_all();
  if (refresher_.joinable()) refresher_.join();
  if (maintenance_.joinable()) maintenance_.join();
  stop_adapters();          // no new messages; those in flight finish (their ACKs may still go out)
  if (ingest_) ingest_->stop();  // every accepted message committed and completed
  adapters_.clear();
  // Requests cut short by the shutdown may still have store, locator or audit work queued,
  // whose completions resume on the server's io_context: let all of it complete (into the
  // stopped io_context, which destroys those handlers) before the io_context is destroyed.
  async_store_.reset();     // finish queued store calls
  async_locator_.reset();   // finish queued locator calls
  if (audit_log_) audit_log_->flush();
  async_audit_.reset();
  server_.reset();          // no more requests
  if (store_) store_->stop();
  locator_.reset();
  if (audit_log_) {
    (void)audit_log_->append_sync(lifecycle_record("stop", "gateway stopped"));
    forwarder_to_wake_ = nullptr;
    if (audit_forwarder_) audit_forwarder_->stop();  // ships what is committed, bounded
    audit_log_->stop();  // final checkpoint
  }
}

adapters::Adapter* App::adapter(const std::string& name) {
  for (auto& [n, a] : adapters_)
    if (n == name) return a.get();
  return nullptr;
}

void log_adapter_line(adapters::LogLevel level, std::string_view message,
                      const std::vector<std::pair<std::string, std::string>>& fields) {
  const observe::Level l = level == adapters::LogLevel::debug  ? observe::Level::debug
                           : level == adapters::LogLevel::info ? observe::Level::info
                           : level == adapters::LogLevel::warn ? observe::Level::warn
                                                               : observe::Level::error;
  const std::size_t kept = std::min(fields.size(), adapters::kMaxLogFields);
  std::vector<observe::Field> out;
  out.reserve(kept + 1);
  for (std::size_t i = 0; i < kept; ++i) out.emplace_back(fields[i].first, fields[i].second);
  // A line that lost fields says so, rather than reading as complete.
  if (fields.size() > kept) out.emplace_back("fields_dropped", static_cast<std::uint64_t>(fields.size() - kept));
  observe::log(l, message, out);
}

// Builds and starts an adapter for every source whose adapter is not "fhir" (those push over
// the FHIR API). Listeners run on the server's event loop and join its graceful drain.
void App::start_adapters() {
  hl7v2::register_hl7v2(adapter_registry_);
  const std::string file = cfg_.source_file.empty() ? std::string("(defaults)") : cfg_.source_file;
  for (std::size_t i = 0; i < cfg_.source_systems.size(); ++i) {
    const auto& sc = cfg_.source_systems[i];
    if (sc.adapter == "fhir") continue;
    const std::string key = "source_systems[" + std::to_string(i) + "]";
    const adapters::SourceSystem src = config::adapter_source(sc);
    auto made = sc.adapter == "plugin" ? adapters::load_plugin(src) : adapter_registry_.create(src);
    if (!made) throw config::ConfigError(file, key + "." + (made.issue().expression.empty() ? "adapter" : made.issue().expression),
                                         made.issue().diagnostics);
    adapters::AdapterContext ctx;
    ctx.executor = server_->io_context().get_executor();
    ctx.sink = ingest_.get();
    ctx.log = &log_adapter_line;
#if GW_WITH_TLS
    // The contexts check_startup loaded; the HTTPS listener shares the first.
    if (cfg_.https.enabled && mllp_needs_client_certificate(sc)) ctx.tls_server_context = client_certificate_tls_.get();
    else if (cfg_.https.enabled) ctx.tls_server_context = https_tls_.get();
#endif
    if (auto st = (*made)->start(ctx); !st) {
      if (sc.adapter != "plugin")
        throw std::runtime_error("cannot start source '" + sc.name + "': " + st.issue().diagnostics);
      // A vendor system's outage must not take the FHIR API down with it (gw_adapter_abi.h:
      // the gateway refuses to start this source): the source stays down, is shown on
      // /metrics (gateway_source_up 0) and the gateway serves the others.
      observe::log(observe::Level::error, "source not started; the gateway runs without it",
                   {{"source", sc.name}, {"reason", st.issue().diagnostics}});
      sources_not_started_.push_back(sc.name);
      continue;
    }
    adapters::Adapter* a = made->get();
    server_->add_drain_participant([a] { a->stop(); }, [a] { return a->in_flight(); });
    adapters_.emplace_back(sc.name, std::move(*made));
  }
}

// The three databases' writers on /metrics: how many commits, how many writes they carried
// (writes / commits is the group-commit batch size) and what waits now. An operator whose
// acknowledgements or reads slow down sees here whether the disk's syncs are the cause.
void App::add_database_metrics() {
  const std::uint64_t audit_at_start = audit_log_ ? audit_log_->stats().size : 0;
  metrics_.add_collector([this, audit_at_start](std::string& out) {
    struct Row {
      const char* db;
      std::uint64_t commits, writes, failed, queued;
    };
    std::vector<Row> rows;
    if (auto* l = dynamic_cast<locator::SqliteLocator*>(locator_.get())) {
      const auto c = l->writer_counters();
      rows.push_back({"locator", c.commits, c.writes, c.failed_commits, c.queued});
    }
    if (store_) {
      const auto c = store_->writer_counters();
      rows.push_back({"store", c.commits, c.jobs, c.failed_commits, c.queued});
    }
    if (audit_log_) {
      const auto st = audit_log_->stats();
      rows.push_back({"audit", st.batches, st.size - std::min(st.size, audit_at_start), st.failed_batches, 0});
    }
    if (rows.empty()) return;
    const auto family = [&out, &rows](const char* name, const char* type, const char* help,
                                      std::uint64_t Row::*field) {
      out.append("# HELP ").append(name).append(" ").append(help).append("\n");
      out.append("# TYPE ").append(name).append(" ").append(type).append("\n");
      for (const Row& r : rows)
        out.append(name).append("{db=\"").append(r.db).append("\"} ").append(std::to_string(r.*field)).append("\n");
    };
    family("gateway_db_commits_total", "counter", "Write transactions committed, by database.", &Row::commits);
    family("gateway_db_writes_total", "counter",
           "Writes committed since start-up (audit: records appended), by database; divided by commits, the group "
           "size.",
           &Row::writes);
    family("gateway_db_failed_commits_total", "counter", "Write transactions that could not commit, by database.",
           &Row::failed);
    family("gateway_db_write_queue", "gauge", "Writes waiting for the writer now (audit: not counted).",
           &Row::queued);
    if (audit_log_)
      out.append("# HELP gateway_audit_start_warnings What the audit log found wrong at start-up (records no checkpoint "
                 "signed, a checkpoint file behind audit.db, search indexes rebuilt); each is also logged and in the audit log.\n"
                 "# TYPE gateway_audit_start_warnings gauge\ngateway_audit_start_warnings ")
          .append(std::to_string(audit_log_->start_warnings().size()))
          .append("\n");
  });
}

// The SIEM copy of the audit log on /metrics (docs/audit.md "Forwarding"): how far it is
// behind, whether a session is up and how connecting and sending go ([audit.forward] is one
// receiver, so no label). Without these a receiver that is down shows only as a warn line a
// minute.
void App::add_audit_forward_metrics() {
  if (!audit_forwarder_) return;
  metrics_.add_collector([this](std::string& out) {
    const audit::ForwarderStats st = audit_forwarder_->stats();
    const std::uint64_t head = audit_log_->stats().size;  // the next sequence number
    const auto sample = [&out](const char* name, const char* type, const char* help, std::uint64_t v) {
      out.append("# HELP ").append(name).append(" ").append(help).append("\n");
      out.append("# TYPE ").append(name).append(" ").append(type).append("\n");
      out.append(name).append(" ").append(std::to_string(v)).append("\n");
    };
    sample("gateway_audit_forward_lag_records", "gauge",
           "Audit records committed but not yet known to be delivered to the SIEM (log head minus the cursor).",
           head - std::min(head, st.cursor));
    sample("gateway_audit_forward_connected", "gauge", "1 while a TLS session to the SIEM is up, else 0.",
           st.connected ? 1 : 0);
    sample("gateway_audit_forward_connect_failures_total", "counter",
           "Failed attempts to reach the SIEM (resolve, TCP or TLS handshake).", st.connect_failures);
    sample("gateway_audit_forward_sent_total", "counter", "Syslog messages written to the SIEM, resends included.",
           st.sent);
    sample("gateway_audit_forward_resent_total", "counter",
           "Syslog messages written again after a lost session (at-least-once delivery).", st.resent);
  });
}

// MLLP listener and ingest counters on /metrics (labels name sources, never patients).
void App::add_ingest_metrics() {
  metrics_.add_collector([this](std::string& out) {
    auto family = [&out](const char* name, const char* type, const char* help) {
      out.append("# HELP ").append(name).append(" ").append(help).append("\n");
      out.append("# TYPE ").append(name).append(" ").append(type).append("\n");
    };
    auto sample = [&out](const char* name, const std::string& labels, std::uint64_t v) {
      out.append(name).append(labels).append(" ").append(std::to_string(v)).append("\n");
    };
    struct Counter {
      const char* name;
      const char* type;
      const char* help;
      std::uint64_t hl7v2::Hl7v2Adapter::Stats::*field;
    };
    static const Counter kCounters[] = {
        {"gateway_mllp_connections_total", "counter", "MLLP connections accepted.", &hl7v2::Hl7v2Adapter::Stats::connections},
        {"gateway_mllp_open_connections", "gauge", "MLLP connections open.", &hl7v2::Hl7v2Adapter::Stats::open_connections},
        {"gateway_mllp_refused_connections_total", "counter", "MLLP connections refused at the connection cap.",
         &hl7v2::Hl7v2Adapter::Stats::refused_connections},
        {"gateway_mllp_frames_total", "counter", "MLLP frames received.", &hl7v2::Hl7v2Adapter::Stats::frames},
        {"gateway_mllp_applied_total", "counter", "HL7 messages applied (AA/CA).", &hl7v2::Hl7v2Adapter::Stats::applied},
        {"gateway_mllp_duplicates_total", "counter", "Resends answered with the original ACK.",
         &hl7v2::Hl7v2Adapter::Stats::duplicates},
        {"gateway_mllp_errors_total", "counter", "HL7 messages not applicable (AE), stored as errors.",
         &hl7v2::Hl7v2Adapter::Stats::errors},
        {"gateway_mllp_rejected_total", "counter", "HL7 messages refused (AR), stored as rejected.",
         &hl7v2::Hl7v2Adapter::Stats::rejected},
        {"gateway_mllp_filtered_total", "counter",
         "HL7 messages of a type or event not mapped, acknowledged AA as the source's unmapped = \"filter\" asks, "
         "stored as filtered and not applied.",
         &hl7v2::Hl7v2Adapter::Stats::filtered},
        {"gateway_mllp_retry_later_total", "counter", "Messages answered AR because the gateway could not commit.",
         &hl7v2::Hl7v2Adapter::Stats::retry_later},
        {"gateway_mllp_protocol_violations_total", "counter", "MLLP framing and timeout violations.",
         &hl7v2::Hl7v2Adapter::Stats::protocol_violations},
        {"gateway_mllp_idle_closes_total", "counter", "MLLP connections closed after idle_timeout_s (normal, not a violation).",
         &hl7v2::Hl7v2Adapter::Stats::idle_closes},
        {"gateway_mllp_acks_sent_total", "counter", "Acknowledgements written.", &hl7v2::Hl7v2Adapter::Stats::acks_sent},
        {"gateway_mllp_ack_write_failures_total", "counter", "Acknowledgements lost to a closed connection.",
         &hl7v2::Hl7v2Adapter::Stats::ack_write_failures},
    };
    std::vector<std::pair<std::string, hl7v2::Hl7v2Adapter::Stats>> stats;
    for (const auto& [name, a] : adapters_)
      if (auto* h = dynamic_cast<hl7v2::Hl7v2Adapter*>(a.get())) stats.emplace_back(name, h->stats());
    if (!stats.empty())
      for (const Counter& c : kCounters) {
        family(c.name, c.type, c.help);
        for (const auto& [name, st] : stats) sample(c.name, "{source=\"" + name + "\"}", st.*(c.field));
      }
    if (!adapters_.empty() || !sources_not_started_.empty()) {
      family("gateway_source_up", "gauge",
             "1 for a source whose adapter or plug-in is running, 0 for a plug-in that failed to start.");
      for (const auto& [name, a] : adapters_) sample("gateway_source_up", "{source=\"" + name + "\"}", 1);
      for (const auto& name : sources_not_started_) sample("gateway_source_up", "{source=\"" + name + "\"}", 0);
    }
    if (ingest_) {
      const auto ic = ingest_->counters();
      family("gateway_ingest_units_total", "counter", "Units from push sources, by outcome.");
      sample("gateway_ingest_units_total", "{outcome=\"applied\"}", ic.applied);
      sample("gateway_ingest_units_total", "{outcome=\"duplicate\"}", ic.duplicates);
      sample("gateway_ingest_units_total", "{outcome=\"error\"}", ic.errors);
      sample("gateway_ingest_units_total", "{outcome=\"rejected\"}", ic.rejected);
      sample("gateway_ingest_units_total", "{outcome=\"filtered\"}", ic.filtered);
      sample("gateway_ingest_units_total", "{outcome=\"failed\"}", ic.failures);
      family("gateway_ingest_warnings_total", "counter",
             "Warnings on applied units: content left out or kept as text (see gw-messages).");
      sample("gateway_ingest_warnings_total", "", ic.warnings);
      family("gateway_ingest_units_with_warnings_total", "counter", "Applied units that carried warnings.");
      sample("gateway_ingest_units_with_warnings_total", "", ic.units_with_warnings);
      family("gateway_ingest_reused_keys_total", "counter", "Units whose sender reused a control id for new content.");
      for (const auto& [source, n] : ic.reused_keys_by_source)
        sample("gateway_ingest_reused_keys_total", "{source=\"" + source + "\"}", n);
    }
  });
}

void App::stop_adapters() {
  for (auto& [n, a] : adapters_) a->stop();
}

void App::refresh_loop() {
  std::unique_lock lock(refresh_mu_);
  const auto woken = [this] { return stopping_ || reload_requested_; };
  while (!stopping_) {
    if (cfg_.auth.jwks_refresh.count() > 0) refresh_cv_.wait_for(lock, cfg_.auth.jwks_refresh, woken);
    else refresh_cv_.wait(lock, woken);  // jwks_refresh_s = 0: only on SIGHUP
    if (stopping_) break;
    reload_requested_ = false;
    lock.unlock();
    authenticator_->refresh_keys();
    lock.lock();
  }
}

}  // namespace gw
