// SPDX-License-Identifier: Apache-2.0
// Objection changes and their audit records (docs/access-policy.md "Objection"). An objection
// changes in locator.db and is audited in audit.db: two files, so two commits, and no order of
// them alone keeps a change from outliving a failed or never-written record. So the change
// commits first together with a row awaiting its record (locator::ObjectionChange); the
// record names the change (objection_change_note: "... (change <id>)"), and once it is
// committed the row is removed. A row left behind (the record could not be written and the
// officer got 503, or the process stopped between the two commits) is audited by recover():
// unless a record naming the change is in the log already (the request's own, or an earlier
// recovery's, committed just before a stop), it appends a record under the change's subtype
// (objection-recorded / objection-withdrawn) saying that the change's own record was not
// committed, and only then removes the row. A stop between those two leaves a row whose record
// the next recover() finds, so every change ends with exactly one record.
//
// Used by the gateway (objection_routes.cpp makes changes; App recovers at start-up and from
// its maintenance thread) and by gw-locator objection (one change, after recovering what an
// earlier run or the gateway left).
#pragma once

#include <cstddef>
#include <functional>
#include <mutex>
#include <set>
#include <string>

#include "fhir/result.h"
#include "gateway/audit/log.h"
#include "gateway/locator/locator.h"

namespace gw {

// How every record of change `c` begins: "objection to sharing recorded (change <id>)" or
// "objection to sharing withdrawn (change <id>)". recover() looks for it.
std::string objection_change_note(const locator::ObjectionChange& c);

struct ObjectionRecovery {
  std::size_t audited = 0;    // rows given a record now
  std::size_t found = 0;      // rows whose record was in the log already: only the row went
  std::size_t in_flight = 0;  // rows whose request is still being audited: left for later
};

class ObjectionAudit {
 public:
  // `agent`: the user recovery records name ("fhir-gateway", "gw-locator"). `wake`, when
  // given, is called (from audited(), on the caller's thread; it must not block) when a
  // committed change's row waits for removal, so that the owner runs recover() soon.
  ObjectionAudit(locator::Locator& locator, audit::Log& log, std::string agent, std::function<void()> wake = {});

  // A new change id (a UUID), in flight until audited() or dropped(): recover() leaves its row
  // alone meanwhile, since its request's own record is on its way (a request that never gets
  // that far leaves its row to the next start). Never blocks on I/O.
  std::string begin_change();
  // The request's record of change `id` was committed (its row is removed by the next
  // recover(), which `wake` asks for), or not (recover() audits it once the audit log takes
  // writes: no wake, the owner's periodic run retries). Never blocks on I/O: network threads
  // call it.
  void audited(const std::string& id, bool committed);
  // Change `id` left no row (nothing changed, or the change failed).
  void dropped(const std::string& id);
  // True when recover() has work: rows may be left from before this process (until the first
  // run succeeds), a record failed, or committed changes' rows wait for removal.
  bool due() const;

  // Audits the rows left without a record and removes the rows of audited changes (up to 1000
  // a run; due() stays true while more remain). Blocking (locator and audit writes, audit
  // searches): at start-up, on the maintenance thread, in gw-locator. `when` completes the
  // recovery records' note: "recovered at start-up", "recovered by gw-locator", ...
  fhir::Result<ObjectionRecovery> recover(const std::string& when);

 private:
  fhir::Result<bool> record_written(const locator::ObjectionChange& c) const;
  audit::Record recovery_record(const locator::ObjectionChange& c, const std::string& when) const;

  locator::Locator& locator_;
  audit::Log& log_;
  std::string agent_;
  std::function<void()> wake_;
  std::mutex run_m_;  // one recover() at a time: two could each find a row's record missing
  mutable std::mutex m_;
  std::set<std::string> in_flight_, committed_;
  bool unsettled_ = true;  // rows may wait without a record (from before, or a failed record)
};

}  // namespace gw
