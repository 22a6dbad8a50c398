// SPDX-License-Identifier: Apache-2.0
#include "tools/locator_cli/write_session.h"

#include <pwd.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "gateway/store/databases.h"

namespace gw::tools {

namespace fs = std::filesystem;

std::string WriteSession::os_user() {
  const uid_t uid = ::geteuid();
  std::string name;
  struct passwd pw {};
  struct passwd* found = nullptr;
  char buf[1024];
  if (::getpwuid_r(uid, &pw, buf, sizeof buf, &found) == 0 && found) name = found->pw_name;
  std::string who = (name.empty() ? std::string("uid ") : name + " (uid ") + std::to_string(uid) +
                    (name.empty() ? "" : ")");
  // Under sudo the effective user is root; who asked for it is what the IG officer needs.
  if (const char* sudo = std::getenv("SUDO_USER"); sudo && *sudo)
    who += ", via sudo by " + std::string(sudo).substr(0, 64);
  return who;
}

std::unique_ptr<WriteSession> WriteSession::open(const WriteTarget& target, WriteRefusal& refusal) {
  std::unique_ptr<WriteSession> s(new WriteSession());
  try {
    s->lock_ = std::make_unique<DataDirLock>(target.data_dir);
  } catch (const DataDirInUse& e) {
    refusal = {1, "data directory " + target.data_dir + " is in use" +
                      (e.pid.empty() ? std::string() : " (pid " + e.pid + ")") +
                      ": a fhir-gateway (or another gw-locator) runs on it. gw-locator writes only while no "
                      "gateway runs on the directory, so that what it changes is recorded in the audit log and "
                      "nothing is written behind the gateway's back: stop the gateway first"};
    return nullptr;
  } catch (const std::exception& e) {
    refusal = {1, e.what()};
    return nullptr;
  }
  if (auto complete = check_databases_present(target.data_dir); !complete) {
    refusal = {1, complete.issue().diagnostics};
    return nullptr;
  }
  std::error_code ec;
  const bool has_audit_log = fs::exists(fs::path(target.data_dir) / "audit.db", ec);
  if (!target.config) {
    if (has_audit_log) {
      refusal = {2, target.data_dir +
                        " holds the gateway's audit log (audit.db): give --config with the gateway's configuration "
                        "file instead of --data, so that this change is recorded in it, signed with its key"};
      return nullptr;
    }
    s->unaudited_reason_ =
        "no audit log in " + target.data_dir + " yet (before the gateway's first start), so this is not audited";
    return s;
  }
  const config::Config& cfg = *target.config;
  if (!cfg.audit.enabled) {
    s->unaudited_reason_ = "audit is off in " + cfg.source_file + " ([audit] enabled = false), so this is not audited";
    return s;
  }
  auto signer = audit::CheckpointSigner::from_pem_file(cfg.audit.signing_key, cfg.audit.key_name);
  if (!signer) {
    refusal = {2, cfg.source_file + ": audit.signing_key: " + signer.issue().diagnostics};
    return nullptr;
  }
  // Created and migrated as the gateway's start does: the directory then holds all three
  // databases, which its first start requires once audit.db exists.
  if (auto dbs = store::Databases::open(target.data_dir); !dbs) {
    refusal = {1, "cannot open the databases: " + dbs.issue().diagnostics};
    return nullptr;
  }
  auto log = audit::Log::open(audit_log_options(cfg), std::make_shared<const audit::CheckpointSigner>(std::move(*signer)));
  if (!log) {
    refusal = {1, "cannot open the audit log: " + log.issue().diagnostics};
    return nullptr;
  }
  s->log_ = std::move(*log);
  return s;
}

WriteSession::~WriteSession() {
  if (log_) log_->stop();  // before the lock goes: a gateway may start once it is released
}

fhir::Status WriteSession::record(audit::Record r) {
  if (!log_) return fhir::Ok{};
  r.time_ms = audit::now_ms();
  r.agent_kind = "system";
  r.user = "gw-locator";
  if (auto seq = log_->append_sync(std::move(r)); !seq) return std::move(seq).issue();
  if (auto cp = log_->checkpoint_now(); !cp) return std::move(cp).issue();
  return fhir::Ok{};
}

}  // namespace gw::tools
