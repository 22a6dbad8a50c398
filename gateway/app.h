// SPDX-License-Identifier: Apache-2.0
// The whole gateway assembled from a Config: databases, record locator, access control, the
// route table and the server. main() and the integration tests build exactly this, so tests
// exercise the production wiring.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>

#include "fhir/search_params.h"
#include "gateway/audit/checkpoint.h"
#include "gateway/audit/forwarder.h"
#include "gateway/audit/log.h"
#include "gateway/auth/authenticator.h"
#include "gateway/auth/policy.h"
#include "gateway/config/config.h"
#include "gateway/http/audit_routes.h"
#include "gateway/http/pipeline.h"
#include "gateway/http/router.h"
#include "gateway/locator/async_locator.h"
#include "gateway/net/server.h"
#include "gateway/objection_audit.h"
#include "gateway/observe/health.h"
#include "gateway/observe/metrics.h"
#include "adapters/adapter.h"
#include "gateway/ingest/ingest_service.h"
#include "gateway/store/databases.h"
#include "gateway/store/async_store.h"

namespace boost::asio::ssl {
class context;
}

namespace gw {

struct AppInfo {
  std::string version;
  std::string release_date;
  // Extra routes registered before /metadata (integration tests; embedding).
  std::function<void(http::Router&, fhir::SearchParamRegistry&)> extra_routes;
  // fhir-gateway --create-missing-databases: the operator says that databases missing from a
  // data directory that holds the others are to be created empty (see check_databases_present).
  bool create_missing_databases = false;
};

// A second gateway on the same data directory: start-up stops with exit code 2.
struct DataDirInUse : std::runtime_error {
  DataDirInUse(const std::string& what, std::string holder_pid)
      : std::runtime_error(what), pid(std::move(holder_pid)) {}
  std::string pid;  // the holder's, "" when the lock file does not say
};

// An exclusive flock(2) on <data_dir>/gateway.lock, holding the owner's pid, for as long as
// the object lives. Two gateways on one data directory would both append to audit.db with
// their own idea of the next sequence number: every later record of one of them fails. Taken
// before any database is opened; released by the kernel when the process dies, so a crash
// never leaves a stale lock. Throws DataDirInUse (naming the holder's pid when known), or
// std::runtime_error when the directory or lock file cannot be created or locked.
class DataDirLock {
 public:
  explicit DataDirLock(const std::string& data_dir);
  ~DataDirLock();
  DataDirLock(const DataDirLock&) = delete;
  DataDirLock& operator=(const DataDirLock&) = delete;

 private:
  int fd_ = -1;
};

// The data directory's databases must all be there (locator.db, store.db, audit.db), or none
// of store.db and audit.db: a first start, for which gw-locator import may have filled
// locator.db beforehand. Any other mix means files were lost or not restored, and opening
// would create the missing ones empty beside the others: every patient gone (locator.db), the
// stored messages gone (store.db), or an audit log starting afresh next to the data it should
// account for (audit.db). Fails (not_ready) naming the missing files and what to do. Reads only.
fhir::Status check_databases_present(const std::string& data_dir);

// The audit checkpoint file (audit.checkpoint_file, or its default in the data directory),
// when its group or others may write to it: whoever can write it can stop the gateway from
// starting (a note it cannot read) or remove the notes that would reveal a rolled-back
// audit.db. Its notes are signed, not secret: being read by others is no concern. Start-up
// warns of it (a warning, as for the data directory's modes). nullopt when not, or absent.
std::optional<store::ExposedPath> checkpoint_file_writable_by_others(const config::Config& cfg);

// Which of locator.db, store.db and audit.db are not in `data_dir` ("locator.db, audit.db"),
// "" when none: what a start creates.
std::string missing_databases(const std::string& data_dir);

// A start that would create audit.db (none in the data directory) beside a checkpoint file
// holding checkpoints of one or more records: the new, empty log would be refused at once as
// rolled back, after it had been created. Fails (not_ready) before anything is created, saying
// to restore audit.db or to move the checkpoint file aside (kept for the IG officer) to start
// a new log. Reads only.
fhir::Status check_new_audit_log(const config::Config& cfg);

// The audit log's options as the gateway opens it from `cfg`: audit.db in the data directory,
// the checkpoint file, the log's origin and the writer's limits (no callbacks). gw-locator
// appends its records with the same, so that they are checkpointed into the same log.
audit::LogOptions audit_log_options(const config::Config& cfg);

// What check_startup loaded that App keeps, so that nothing is read or parsed twice.
struct StartupChecked {
  // The [server.https] context (certificate, key, client CA): the HTTPS listener's, and the TLS
  // MLLP listeners' of sources that name no client certificate subject. Null when HTTPS is off.
  std::shared_ptr<boost::asio::ssl::context> https_tls;
  // The same requiring a client certificate, for TLS MLLP sources that name
  // client_certificate_subject. Null when no source needs it.
  std::shared_ptr<boost::asio::ssl::context> client_certificate_tls;
  std::unique_ptr<auth::Authenticator> authenticator;  // with its JWKS
  std::unique_ptr<auth::Policy> policy;
  std::optional<audit::CheckpointSigner> signer;  // when the audit log is on
};

// Loads everything start-up loads from `cfg`, the same way, without opening a database,
// binding a port or writing anything: the HTTPS and MLLP TLS contexts (certificate, key and
// their match, client CA), the JWKS, the access policy, the audit signing key, the audit
// checkpoint file (its folder must exist and the file must open for appending) and the
// [audit.forward] settings and credentials. `fhir-gateway --check-config` runs it after
// config::load_config, and App runs it before anything else, so a configuration it refuses is
// never half started (no audit record, no checkpoint). Throws config::ConfigError naming the key.
StartupChecked check_startup(const config::Config& cfg);

// The AdapterContext::log App gives every adapter: `message` to observe::log at `level`, with
// the first adapters::kMaxLogFields of `fields` and, when there were more, "fields_dropped"
// (how many were left out). Thread-safe, as observe::log.
void log_adapter_line(adapters::LogLevel level, std::string_view message,
                      const std::vector<std::pair<std::string, std::string>>& fields);

class App {
 public:
  // Runs check_startup, then opens and migrates the databases, opens the locator, registers
  // configured source systems, loads the JWKS and the access policy, builds the routes and
  // starts the adapters; the audit log's "gateway started" record is its last step. Throws
  // config::ConfigError for configuration problems and DataDirInUse when another gateway holds
  // the data directory (both exit 2), and std::runtime_error for anything else (exit 1), e.g.
  // an audit.db that no longer matches its checkpoints, or a data directory missing some of its
  // databases (check_databases_present) without info.create_missing_databases.
  App(config::Config cfg, AppInfo info);
  ~App();
  App(const App&) = delete;
  App& operator=(const App&) = delete;

  net::Server& server() { return *server_; }
  locator::Locator& locator() { return *locator_; }
  auth::Authenticator& authenticator() { return *authenticator_; }
  const auth::Policy& policy() const { return *policy_; }
  const config::Config& config() const { return cfg_; }
  observe::Health& health() { return health_; }
  observe::Metrics& metrics() { return metrics_; }
  // Null when [audit] enabled = false (loopback development only).
  audit::Log* audit_log() { return audit_log_.get(); }
  store::Store& store() { return *store_; }
  ingest::IngestService& ingest() { return *ingest_; }
  // The running adapter of source `name`, or null (also for a plug-in whose start failed).
  adapters::Adapter* adapter(const std::string& name);
  // Objection changes and their audit records (gateway/objection_audit.h): recovered at
  // start-up and, when due, every minute by the maintenance thread, which a committed change
  // wakes at once to remove its row. Null without an audit log.
  ObjectionAudit* objection_audit() { return objection_audit_.get(); }

 private:
  void refresh_loop();
  void open_audit(audit::CheckpointSigner signer);
  void settle_pending_messages();
  static constexpr std::size_t kSettlePendingMax = 10000;  // pending rows checked at start-up
  void maintenance_loop();
  void run_retention();
  // Audits objection changes left without their record (`when`: for the records' note).
  void recover_objection_changes(const std::string& when);
  static constexpr std::chrono::minutes kObjectionRecoveryInterval{1};
  void start_adapters();
  void stop_adapters();
  void add_ingest_metrics();
  void add_database_metrics();
  void add_audit_forward_metrics();

  config::Config cfg_;
  // Taken once the configuration checks passed (a start they refuse creates nothing), before
  // every database; released last.
  std::unique_ptr<DataDirLock> data_dir_lock_;
  observe::Health health_;
  observe::Metrics metrics_;
  std::unique_ptr<store::Databases> databases_;
  std::unique_ptr<locator::Locator> locator_;
  std::unique_ptr<locator::AsyncLocator> async_locator_;
  std::unique_ptr<audit::Log> audit_log_;
  std::unique_ptr<audit::Forwarder> audit_forwarder_;
  std::unique_ptr<ObjectionAudit> objection_audit_;
  std::atomic<audit::Forwarder*> forwarder_to_wake_{nullptr};
  std::unique_ptr<http::AsyncAudit> async_audit_;
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<store::AsyncStore> async_store_;
  std::unique_ptr<ingest::IngestService> ingest_;
  adapters::AdapterRegistry adapter_registry_;
  std::vector<std::pair<std::string, std::unique_ptr<adapters::Adapter>>> adapters_;
  // From check_startup (see StartupChecked), for the TLS listeners of adapters.
  std::shared_ptr<boost::asio::ssl::context> https_tls_;
  std::shared_ptr<boost::asio::ssl::context> client_certificate_tls_;
  std::vector<std::string> sources_not_started_;  // plug-in sources whose start() failed
  std::unique_ptr<auth::Policy> policy_;
  std::unique_ptr<auth::Authenticator> authenticator_;
  auth::BreakGlassRegistry break_glass_;
  fhir::SearchParamRegistry search_params_;
  http::Router router_;
  std::unique_ptr<http::Pipeline> pipeline_;
  std::unique_ptr<net::Server> server_;

  std::mutex refresh_mu_;
  std::condition_variable refresh_cv_;
  bool stopping_ = false;
  bool reload_requested_ = false;  // SIGHUP: refresher_ re-reads the JWKS file now
  bool maintenance_requested_ = false;  // an objection change's row waits for removal: run now
  std::thread refresher_;  // JWKS re-reads, when auth is on
  std::thread maintenance_;  // audit and message retention, objection change recovery
};

}  // namespace gw
