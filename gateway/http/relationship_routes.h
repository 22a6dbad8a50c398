// SPDX-License-Identifier: Apache-2.0
// How source systems tell the gateway about care relationships, the facts behind a
// legitimate relationship (issue #5 item 4). Source systems only (a system token or a client
// certificate mapped to an ODS code); each call is audited and names the patient.
//   POST /Patient/$record-encounter   Parameters: patient (valueIdentifier NHS number, or
//                                      valueReference Patient/{id}), organization (valueIdentifier
//                                      ODS code; default the caller's), start (valueDateTime)
//   POST /Patient/$care-team          Parameters: patient, member (valueString: a user id as in
//                                      the token's sub, or an organisation's ODS code), end
//                                      (valueDateTime, optional), remove (valueBoolean, optional)
// The HL7 v2 adapter (ADT) will record the same facts through the same locator calls.
#pragma once

#include "gateway/http/locator_routes.h"
#include "gateway/http/router.h"

namespace gw::http {

void add_relationship_routes(Router& router, LocatorRouteDeps deps);

}  // namespace gw::http
