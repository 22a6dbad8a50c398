// SPDX-License-Identifier: Apache-2.0
// The gateway as seen by fhir-kit-client (a third-party FHIR client on fetch/undici):
// CapabilityStatement, reads of things the gateway does not serve, $validate, headers.
// `client` carries a clinician's bearer token (bearerToken); `anonymous` carries none.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import { after, before, test } from 'node:test';

import { Client } from 'fhir-kit-client';

import { CA_FILE, startGateway } from './gateway.mjs';
import { assertAllSchemaValid, assertOperationOutcome, assertSchemaValid } from './fhir-schema.mjs';

let gw;
let client;
let anonymous;

before(async () => {
  gw = await startGateway();
  client = gw.fhirClient({ token: await gw.token({ role: 'clinician', org: 'A81001' }) });
  anonymous = gw.fhirClient();
});

after(async () => {
  await gw?.stop();
});

/** Runs fn, which must reject with fhir-kit-client's HTTP error; returns that error. */
async function httpError(fn, status) {
  let caught;
  try {
    await fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught, `expected HTTP ${status}, but the call succeeded`);
  assert.ok(caught.response, `expected an HTTP error, got ${caught.stack ?? caught}`);
  assert.equal(caught.response.status, status, JSON.stringify(caught.response.data));
  return caught;
}

// Only meaningful while the dev CA is not trusted process-wide anyway.
function devCaTrustedByEnv() {
  const extra = process.env.NODE_EXTRA_CA_CERTS;
  if (!extra) return false;
  try {
    const body = (pem) => pem.replace(/-----[^-]+-----|\s/g, '');
    return body(fs.readFileSync(extra, 'utf8')).includes(body(fs.readFileSync(CA_FILE, 'utf8')));
  } catch {
    return false;
  }
}

test('TLS is verified: without the dev CA the client refuses the gateway', { skip: devCaTrustedByEnv() ? 'NODE_EXTRA_CA_CERTS already trusts the dev CA' : false }, async () => {
  const untrusting = new Client({ baseUrl: gw.baseUrl });
  await assert.rejects(untrusting.capabilityStatement(), (err) => {
    const code = err.cause?.code ?? err.code ?? '';
    assert.match(String(code), /CERT|VERIFY|SIGNATURE/, `unexpected error ${err.stack} cause ${err.cause?.stack}`);
    return true;
  });
});

test('capabilityStatement(): FHIR 4.0.1, kind instance, JSON, schema-valid (no token needed)', async () => {
  const cs = await anonymous.capabilityStatement();
  assert.equal(cs.resourceType, 'CapabilityStatement');
  assert.equal(cs.fhirVersion, '4.0.1');
  assert.equal(cs.kind, 'instance');
  assert.equal(cs.status, 'active');
  assert.ok(Array.isArray(cs.format) && cs.format.some((f) => f === 'json' || f === 'application/fhir+json'),
    `format ${JSON.stringify(cs.format)} lacks JSON`);
  assert.ok(!cs.format.some((f) => /xml/.test(f)), `format ${JSON.stringify(cs.format)} claims XML, which is refused with 406`);
  assert.ok(cs.implementation?.url, 'kind=instance needs implementation (cpb-2)');
  assert.ok(Array.isArray(cs.rest) && cs.rest.some((r) => r.mode === 'server'), 'no rest[mode=server]');
  const { response } = Client.httpFor(cs);
  assert.equal(response.status, 200);
  assert.match(response.headers.get('content-type'), /^application\/fhir\+json(;|$)/);
  assertSchemaValid(cs, 'CapabilityStatement');
});

test('CapabilityStatement advertises $validate, which the gateway serves', async () => {
  const cs = await client.capabilityStatement();
  const ops = cs.rest.flatMap((r) => [...(r.operation ?? []), ...(r.resource ?? []).flatMap((res) => res.operation ?? [])]);
  assert.ok(ops.some((o) => o.name === 'validate'), `operations: ${JSON.stringify(ops)}`);
});

test('bearerToken is sent as Authorization: Bearer on every request', async () => {
  const cs = await client.capabilityStatement();
  assert.match(Client.httpFor(cs).request.headers.get('authorization') ?? '', /^Bearer [\w-]+\.[\w-]+\.[\w-]+$/);
  const plain = await anonymous.capabilityStatement();
  assert.equal(Client.httpFor(plain).request.headers.get('authorization'), null);
});

test('read of an unknown Patient id with a token rejects with 404 and a schema-valid OperationOutcome', async () => {
  const err = await httpError(() => client.read({ resourceType: 'Patient', id: 'does-not-exist' }), 404);
  assertOperationOutcome(err.response.data, 'GET /Patient/does-not-exist');
  assert.ok(err.response.data.issue.some((i) => i.severity === 'error' || i.severity === 'fatal'));
});

test('read of a Patient without a token rejects with 401 and a schema-valid OperationOutcome', async () => {
  const err = await httpError(() => anonymous.read({ resourceType: 'Patient', id: 'does-not-exist' }), 401);
  assertOperationOutcome(err.response.data, 'GET /Patient/does-not-exist without token');
  assert.equal(err.response.data.issue[0].code, 'login', JSON.stringify(err.response.data));
  assert.match(err.config.headers.get('www-authenticate') ?? '', /^Bearer realm="fhir-gateway"/);
});

test('read of an unknown resource type rejects with 404 and a schema-valid OperationOutcome', async () => {
  const err = await httpError(() => client.read({ resourceType: 'Foo', id: '1' }), 404);
  assertOperationOutcome(err.response.data, 'GET /Foo/1');
  const raw = await httpError(() => client.request('Foo/1'), 404);
  assertOperationOutcome(raw.response.data, 'GET /Foo/1 via request()');
});

test('vread of an unknown id also answers 404 with an OperationOutcome', async () => {
  const err = await httpError(() => client.vread({ resourceType: 'Patient', id: 'nope', version: '1' }), 404);
  assertOperationOutcome(err.response.data, 'GET /Patient/nope/_history/1');
});

test('operation $validate (type level) with a valid Patient: 200 OperationOutcome without errors', async () => {
  const oo = await client.operation({
    name: 'validate',
    resourceType: 'Patient',
    input: { resourceType: 'Patient', id: 'example', active: true, name: [{ family: 'Chalmers', given: ['Peter'] }], birthDate: '1974-12-25' },
  });
  assertOperationOutcome(oo, 'POST /Patient/$validate');
  assert.ok(!oo.issue.some((i) => i.severity === 'error' || i.severity === 'fatal'), JSON.stringify(oo));
});

test('operation $validate (system level) reports an empty string as an error issue', async () => {
  const oo = await client.operation({ name: '$validate', input: { resourceType: 'Patient', name: [{ family: '' }] } });
  assertOperationOutcome(oo, 'POST /$validate');
  assert.ok(oo.issue.some((i) => i.severity === 'error'), JSON.stringify(oo));
});

test('operation $validate without a token rejects with 401 (the body is not looked at)', async () => {
  const err = await httpError(() => anonymous.operation({ name: 'validate', resourceType: 'Patient', input: { resourceType: 'Patient' } }), 401);
  assertOperationOutcome(err.response.data, 'POST /Patient/$validate without token');
  assert.ok(!err.response.data.issue.some((i) => i.severity === 'information'), 'the resource was validated anyway');
});

test('X-Request-ID sent by the client is mirrored back', async () => {
  const id = randomUUID();
  const cs = await client.capabilityStatement({ headers: { 'X-Request-ID': id } });
  assert.equal(Client.httpFor(cs).response.headers.get('x-request-id'), id);

  const err = await httpError(() => client.read({ resourceType: 'Patient', id: 'x', options: { headers: { 'x-request-id': id } } }), 404);
  assert.equal(err.config.headers.get('x-request-id'), id, 'mirrored on errors too');
});

test('every FHIR resource returned in this suite validates against fhir.schema.json', () => {
  assertAllSchemaValid(gw.resources);
});
