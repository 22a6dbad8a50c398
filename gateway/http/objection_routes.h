// SPDX-License-Identifier: Apache-2.0
// A patient's objection to sharing (dissent), recorded and withdrawn by information governance
// on a running gateway (docs/access-policy.md "Objection"). For roles with audit access, as
// the other /audit routes; each call is audited and names the patient's NHS number.
//   GET    /audit/objections/{nhs}   whether an objection is recorded
//   PUT    /audit/objections/{nhs}   record one; body {"note": "request ref 42"} (the note is required)
//   DELETE /audit/objections/{nhs}   withdraw it
// The patient is the one the NHS number names in the index (merges followed); 404 when none.
#pragma once

#include "gateway/http/locator_routes.h"
#include "gateway/http/router.h"

namespace gw::http {

void add_objection_routes(Router& router, LocatorRouteDeps deps);

}  // namespace gw::http
