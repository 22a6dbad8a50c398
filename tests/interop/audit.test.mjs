// SPDX-License-Identifier: Apache-2.0
// The audit trail as an IG officer's FHIR client sees it (issue #6): after clinical reads by
// fhir-kit-client, an ig-officer searches and reads AuditEvents through the same library;
// every AuditEvent and Bundle validates against the official FHIR R4 JSON schema, and so does
// each line of the NDJSON export. Clinicians may not see the audit.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { NHS_NUMBER_SYSTEM, ODS_SYSTEM, startGateway } from './gateway.mjs';
import { assertSchemaValid } from './fhir-schema.mjs';

const SEED = { seedPatients: 20, seed: 11, seedPractices: 2 };

let gw;
let target; // { nhs, practice }

const nhsOf = (p) => p.identifier?.find((i) => i.system === NHS_NUMBER_SYSTEM)?.value;
const practiceOf = (p) => p.generalPractitioner?.find((g) => g.identifier?.system === ODS_SYSTEM)?.identifier.value;

before(async () => {
  gw = await startGateway(SEED);
  const first = gw.seed.patients.find((p) => nhsOf(p) && practiceOf(p));
  assert.ok(first, 'no seeded patient with an NHS number and a practice');
  target = { nhs: nhsOf(first), practice: practiceOf(first) };
});

after(async () => {
  await gw?.stop();
});

async function igClient() {
  return gw.fhirClient({ token: await gw.token({ sub: 'ig-officer-7', role: 'ig-officer', org: 'X26', scope: 'user/AuditEvent.rs' }) });
}

test('an IG officer finds the clinician\'s reads as schema-valid AuditEvents', async () => {
  const gp = gw.fhirClient({
    token: await gw.token({ sub: 'dr-interop', role: 'clinician', org: target.practice, scope: 'user/*.rs' }),
  });
  const found = await gp.search({ resourceType: 'Patient', searchParams: { identifier: `${NHS_NUMBER_SYSTEM}|${target.nhs}` } });
  assert.equal(found.total, 1);
  await gp.read({ resourceType: 'Patient', id: found.entry[0].resource.id });

  const ig = await igClient();
  const bundle = await ig.search({ resourceType: 'AuditEvent', searchParams: { patient: target.nhs, agent: 'dr-interop' } });
  assert.equal(bundle.resourceType, 'Bundle');
  assert.equal(bundle.type, 'searchset');
  assertSchemaValid(bundle, 'AuditEvent searchset');
  assert.equal(bundle.total, 2, JSON.stringify(bundle.entry?.map((e) => e.resource.subtype)));
  const events = bundle.entry.map((e) => e.resource);
  for (const ev of events) {
    assertSchemaValid(ev, `AuditEvent/${ev.id}`);
    assert.equal(ev.outcome, '0');
    const patient = ev.entity.find((e) => e.role?.code === '1');
    assert.equal(patient.what.identifier.value, target.nhs);
  }
  const subtypes = events.map((ev) => ev.subtype[0].code).sort();
  assert.deepEqual(subtypes, ['read', 'search-type']);

  const one = await ig.read({ resourceType: 'AuditEvent', id: events[0].id });
  assertSchemaValid(one, 'AuditEvent read');
  assert.equal(one.id, events[0].id);
});

test('the NDJSON export is one schema-valid AuditEvent per line', async () => {
  const token = await gw.token({ sub: 'ig-officer-7', role: 'ig-officer', org: 'X26', scope: 'user/AuditEvent.rs' });
  const res = await gw.request('GET', '/AuditEvent/$export?start=2020-01-01&end=2999-12-31', { token });
  assert.equal(res.status, 200);
  assert.equal(res.headers['content-type'], 'application/fhir+ndjson');
  const lines = res.text.split('\n').filter((l) => l.length > 0);
  assert.ok(lines.length >= 3, `only ${lines.length} lines`);
  for (const line of lines) {
    const ev = JSON.parse(line);
    assertSchemaValid(ev, `export line for AuditEvent/${ev.id}`);
  }
});

test('a clinician may not read the audit trail (403 OperationOutcome)', async () => {
  const gp = gw.fhirClient({
    token: await gw.token({ sub: 'dr-interop', role: 'clinician', org: target.practice, scope: 'user/*.rs' }),
  });
  let caught;
  try {
    await gp.search({ resourceType: 'AuditEvent', searchParams: { patient: target.nhs } });
  } catch (err) {
    caught = err;
  }
  assert.equal(caught?.response?.status, 403);
  assert.equal(caught.response.data.resourceType, 'OperationOutcome');
});
