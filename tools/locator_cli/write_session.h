// SPDX-License-Identifier: Apache-2.0
// What gw-locator's writing subcommands (import, objection) hold while they run: the data
// directory's lock, taken as the gateway takes it (gateway.lock), so that they never write
// under a running gateway nor a gateway starts under them; and the gateway's audit log, so that
// what they change is recorded there like any other change and signed into its checkpoints.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "fhir/result.h"
#include "gateway/app.h"
#include "gateway/audit/log.h"
#include "gateway/audit/record.h"
#include "gateway/config/config.h"

namespace gw::tools {

// Where a writing subcommand writes: --data DIR, or the data directory of --config FILE (the
// gateway's configuration, which also gives the audit log's key and checkpoint file).
struct WriteTarget {
  std::string data_dir;
  std::optional<config::Config> config;
};

// Why a session could not be opened: what to print after "gw-locator: ", and the exit code
// (2 when the command line must change, 1 otherwise).
struct WriteRefusal {
  int exit_code = 1;
  std::string message;
};

class WriteSession {
 public:
  // Takes the data directory's lock (refused while a gateway, or another gw-locator, holds
  // it), refuses a directory missing some of its databases (gw::check_databases_present), and
  // opens the audit log: with --config whose audit is on, as the gateway opens it (creating
  // store.db and audit.db beside locator.db when this is the directory's first use, so that
  // the gateway's first start finds them all); without --config only where there is no audit
  // log yet (the initial load before the gateway's first start), else refused (exit 2), since
  // its records could not be signed. Returns null and fills `refusal` on failure.
  static std::unique_ptr<WriteSession> open(const WriteTarget& target, WriteRefusal& refusal);
  ~WriteSession();

  // Why nothing is audited ("" when the audit log is open): for a line on stderr.
  const std::string& unaudited_reason() const { return unaudited_reason_; }

  // Appends `r` (agent: gw-locator, on behalf of the OS user running it, which the note names),
  // commits it and signs a checkpoint covering it. Does nothing when unaudited. Fails when the
  // log could not be written: the change stands, but the caller must say it was not recorded.
  fhir::Status record(audit::Record r);

  // The audit log, null when unaudited: for the objection changes' recovery
  // (gateway/objection_audit.h).
  audit::Log* log() { return log_.get(); }

  // "login (uid N)", and the user sudo ran for when SUDO_USER is set: who ran the tool.
  static std::string os_user();

 private:
  WriteSession() = default;
  std::unique_ptr<DataDirLock> lock_;
  std::unique_ptr<audit::Log> log_;
  std::string unaudited_reason_;
};

}  // namespace gw::tools
