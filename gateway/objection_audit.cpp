// SPDX-License-Identifier: Apache-2.0
#include "gateway/objection_audit.h"

#include <optional>
#include <utility>
#include <vector>

namespace gw {

namespace {

constexpr std::size_t kMaxRowsPerRun = 1000;
// The request's record is made after its change, and a recovery record later still; a minute
// before the change covers a clock stepped back since.
constexpr std::int64_t kSearchSlackMs = 60'000;

std::string subtype_of(const locator::ObjectionChange& c) {
  return c.objection ? "objection-recorded" : "objection-withdrawn";
}

}  // namespace

std::string objection_change_note(const locator::ObjectionChange& c) {
  return std::string(c.objection ? "objection to sharing recorded" : "objection to sharing withdrawn") + " (change " +
         c.id + ")";
}

ObjectionAudit::ObjectionAudit(locator::Locator& locator, audit::Log& log, std::string agent,
                               std::function<void()> wake)
    : locator_(locator), log_(log), agent_(std::move(agent)), wake_(std::move(wake)) {}

std::string ObjectionAudit::begin_change() {
  std::string id = locator::new_objection_change_id();
  std::lock_guard lock(m_);
  in_flight_.insert(id);
  return id;
}

void ObjectionAudit::audited(const std::string& id, bool committed) {
  {
    std::lock_guard lock(m_);
    in_flight_.erase(id);
    if (committed) committed_.insert(id);
    else unsettled_ = true;
  }
  if (committed && wake_) wake_();
}

void ObjectionAudit::dropped(const std::string& id) {
  std::lock_guard lock(m_);
  in_flight_.erase(id);
}

bool ObjectionAudit::due() const {
  std::lock_guard lock(m_);
  return unsettled_ || !committed_.empty();
}

fhir::Result<ObjectionRecovery> ObjectionAudit::recover(const std::string& when) {
  std::lock_guard run(run_m_);
  {
    std::lock_guard lock(m_);
    unsettled_ = false;  // set again below (or by a request) when something stays to do
  }
  auto rows = locator_.unaudited_objection_changes(kMaxRowsPerRun);
  if (!rows) {
    std::lock_guard lock(m_);
    unsettled_ = true;
    return std::move(rows).issue();
  }
  // Taken after the rows were read: a change is in flight from before its row is written, so
  // each row read is either still in flight here (its request's record is on its way: left
  // alone), or settled (committed: only the row goes; failed: audited here).
  std::set<std::string> in_flight, committed;
  {
    std::lock_guard lock(m_);
    in_flight = in_flight_;
    committed = committed_;
  }
  ObjectionRecovery out;
  std::vector<std::string> forget;
  std::optional<fhir::Issue> failed;
  for (const locator::ObjectionChange& c : *rows) {
    if (in_flight.count(c.id)) {
      ++out.in_flight;
      continue;
    }
    if (!committed.count(c.id)) {
      // Audit first, the row second: a stop in between leaves the row, whose record the next
      // run finds here.
      auto found = record_written(c);
      if (!found) {
        failed = std::move(found).issue();
        break;
      }
      if (!*found) {
        if (auto seq = log_.append_sync(recovery_record(c, when)); !seq) {
          failed = std::move(seq).issue();
          break;
        }
        ++out.audited;
      } else {
        ++out.found;
      }
    }
    forget.push_back(c.id);
  }
  // The rows audited so far go even when a later one failed.
  if (auto st = locator_.forget_objection_changes(forget); !st && !failed) failed = std::move(st).issue();
  std::lock_guard lock(m_);
  if (!failed) {
    // Every committed change seen is gone now; one whose row was not among the rows read stays
    // known only while rows are left unread.
    if (rows->size() < kMaxRowsPerRun)
      for (const std::string& id : committed) committed_.erase(id);
    else
      for (const std::string& id : forget) committed_.erase(id);
  }
  if (failed || rows->size() >= kMaxRowsPerRun) unsettled_ = true;
  if (failed) return std::move(*failed);
  return out;
}

fhir::Result<bool> ObjectionAudit::record_written(const locator::ObjectionChange& c) const {
  const std::string prefix = objection_change_note(c);
  audit::Query q;
  q.patient = c.nhs_number;  // indexed: a patient has few records of this subtype
  q.subtype = subtype_of(c);
  q.from_ms = c.time_ms - kSearchSlackMs;
  q.newest_first = false;
  q.count = 1000;
  // Bounded: past 10,000 such records of the patient since then, taken as missing (at worst
  // a second record of the change, never none).
  for (int page = 0; page < 10; ++page) {
    auto found = log_.search(q);
    if (!found) return std::move(found).issue();
    for (const audit::Record& r : found->records)
      if (r.detail.note.rfind(prefix, 0) == 0) return true;
    if (!found->next_after) return false;
    q.after_seq = found->next_after;
  }
  return false;
}

audit::Record ObjectionAudit::recovery_record(const locator::ObjectionChange& c, const std::string& when) const {
  audit::Record r;
  r.time_ms = audit::now_ms();
  r.kind = "system";
  r.action = subtype_of(c);
  r.agent_kind = "system";
  r.user = agent_;
  r.target = "objection change " + c.id + " Patient/" + c.patient_id;
  r.status = 200;
  r.request_id = c.request_id;  // the request that made it, whose own record is missing
  r.detail.patients = {c.nhs_number};
  r.detail.returned = {"Patient/" + c.patient_id};
  r.detail.note = objection_change_note(c) + " by " + c.by + " at " + audit::format_time_ms(c.time_ms) +
                  (c.request_id.empty() ? std::string() : " (request " + c.request_id + ")") +
                  ": its own audit record was not committed; " + when +
                  (c.note.empty() ? std::string() : "; note: " + c.note);
  return r;
}

}  // namespace gw
