// SPDX-License-Identifier: Apache-2.0
// A patient's objection to sharing (dissent), recorded and withdrawn by information governance
// on a running gateway (docs/access-policy.md "Objection"). For roles with audit access, as
// the other /audit routes; each call is audited and names the patient's NHS number.
//   GET    /audit/objections/{nhs}   whether an objection is recorded
//   PUT    /audit/objections/{nhs}   record one; body {"note": "request ref 42"} (the note is required)
//   DELETE /audit/objections/{nhs}   withdraw it
// The patient is the one the NHS number names in the index (merges followed); 404 when none.
// A change commits in locator.db with a row awaiting the request's audit record, which
// `changes` removes once the record is committed, or audits later when it is not
// (gateway/objection_audit.h): no change goes unaudited.
#pragma once

#include "gateway/http/locator_routes.h"
#include "gateway/http/router.h"
#include "gateway/objection_audit.h"

namespace gw::http {

void add_objection_routes(Router& router, LocatorRouteDeps deps, ObjectionAudit& changes);

}  // namespace gw::http
