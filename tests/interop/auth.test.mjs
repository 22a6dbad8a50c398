// SPDX-License-Identifier: Apache-2.0
// Bearer-token access to the record locator API as a SMART client sees it: discovery
// (.well-known/smart-configuration through fhir-kit-client), 401s without a usable token,
// and, on an index seeded with synthpop patients, what a clinician of the patient's GP
// practice may see (search by NHS number, read, DocumentReference pointers, $ihe-pix,
// paging) versus a clinician elsewhere (exactly the answer for an unknown patient).
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { Client } from 'fhir-kit-client';

import { NHS_NUMBER_SYSTEM, ODS_SYSTEM, startGateway } from './gateway.mjs';
import { assertAllSchemaValid, assertOperationOutcome, assertSchemaValid } from './fhir-schema.mjs';

const SEED = { seedPatients: 60, seed: 7, seedPractices: 3 };
const MAX_PAGES = 50; // bound on nextPage() walks

let gw;
let anonymous;

// Facts read from the generated bundles.
let target;        // { nhs, practice, family, birthDate, mrns: [{system, value}] }
let otherPractice; // a GP practice in the seed that is not the target's
let pageFamily;    // { practice, family, expected >= 2, other: another practice, elsewhere: its count }

const nhsOf = (p) => p.identifier?.find((i) => i.system === NHS_NUMBER_SYSTEM)?.value;
const practiceOf = (p) => p.generalPractitioner?.find((g) => g.identifier?.system === ODS_SYSTEM)?.identifier.value;
const familyOf = (p) => p.name?.[0]?.family;
const nhsToken = (nhs) => `${NHS_NUMBER_SYSTEM}|${nhs}`;

/** Runs fn, which must reject with fhir-kit-client's HTTP error of that status; returns it. */
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

/** Checks a searchset Bundle and each entry resource against the schema; returns the resources. */
function searchsetResources(bundle, type, label) {
  assert.equal(bundle.resourceType, 'Bundle', label);
  assert.equal(bundle.type, 'searchset', label);
  assertSchemaValid(bundle, label);
  const matches = (bundle.entry ?? []).filter((e) => e.search?.mode === 'match').map((e) => e.resource);
  for (const r of matches) {
    assert.equal(r.resourceType, type, label);
    assertSchemaValid(r, `${label}: ${type}/${r.id}`);
  }
  return matches;
}

/** A clinician (or other role) client for one organisation. */
async function clientFor(claims) {
  return gw.fhirClient({ token: await gw.token({ role: 'clinician', scope: 'user/*.rs', ...claims }) });
}

before(async () => {
  gw = await startGateway(SEED);
  anonymous = gw.fhirClient();

  const patients = gw.seed.patients;
  assert.equal(patients.length, SEED.seedPatients, 'synthpop patient count');
  // Every generated patient is its own record in the index (the expected counts below rely on it).
  assert.match(gw.seed.importReport, new RegExp(`^\\s*created:\\s+${SEED.seedPatients}$`, 'm'), gw.seed.importReport);
  assert.match(gw.seed.importReport, /^rejected entries:\s+0$/m, gw.seed.importReport);
  const first = patients.find((p) => nhsOf(p) && practiceOf(p) && familyOf(p));
  assert.ok(first, 'no seeded patient with NHS number, practice and family name');
  target = {
    nhs: nhsOf(first),
    practice: practiceOf(first),
    family: familyOf(first),
    birthDate: first.birthDate,
    mrns: first.identifier.filter((i) => i.system !== NHS_NUMBER_SYSTEM).map(({ system, value }) => ({ system, value })),
  };
  otherPractice = [...new Set(patients.map(practiceOf))].find((ods) => ods && ods !== target.practice);
  assert.ok(otherPractice, 'the seed has a single GP practice; paging and refusal tests need two');

  // The (practice, family) pair with the most patients; "family" matches by prefix, ignoring
  // case, so the expected count is worked out the same way.
  const count = (practice, family) => patients.filter((p) => practiceOf(p) === practice &&
    (familyOf(p) ?? '').toLowerCase().startsWith(family.toLowerCase())).length;
  for (const p of patients) {
    const [practice, family] = [practiceOf(p), familyOf(p)];
    if (!practice || !family) continue;
    const expected = count(practice, family);
    if (expected >= 2 && expected > (pageFamily?.expected ?? 0)) {
      const other = practice === otherPractice ? target.practice : otherPractice; // another practice
      pageFamily = { practice, family, expected, other, elsewhere: count(other, family) };
    }
  }
  assert.ok(pageFamily, 'no practice has two patients with the same family name');
});

after(async () => {
  await gw?.stop();
});

describe('SMART discovery', () => {
  test('GET /.well-known/smart-configuration without a token: the advertised fields', async () => {
    const res = await gw.request('GET', '/.well-known/smart-configuration');
    assert.equal(res.status, 200, res.text);
    assert.match(res.headers['content-type'] ?? '', /^application\/json/);
    const sc = res.json;
    assert.equal(sc.issuer, gw.issuer);
    for (const key of ['authorization_endpoint', 'token_endpoint']) {
      assert.equal(typeof sc[key], 'string', key);
      assert.equal(new URL(sc[key]).protocol, 'https:', `${key} ${sc[key]}`);
    }
    assert.ok(sc.capabilities.includes('permission-v2'), `capabilities ${sc.capabilities}`);
    assert.ok(sc.capabilities.includes('launch-standalone'), `capabilities ${sc.capabilities}`);
    assert.ok(sc.code_challenge_methods_supported.includes('S256'), `${sc.code_challenge_methods_supported}`);
    assert.ok(!sc.code_challenge_methods_supported.includes('plain'), 'PKCE "plain" must not be offered');
    assert.ok(Array.isArray(sc.grant_types_supported) && sc.grant_types_supported.includes('authorization_code'));
    assert.ok(sc.scopes_supported.includes('user/*.rs'), `${sc.scopes_supported}`);
  });

  test('capability sso-openid-connect comes with the issuer and jwks_uri it requires', async () => {
    // SMART App Launch 2.0 (.well-known/smart-configuration): issuer and jwks_uri are
    // required when capabilities include sso-openid-connect.
    const sc = (await gw.request('GET', '/.well-known/smart-configuration')).json;
    if (!sc.capabilities.includes('sso-openid-connect')) return;
    assert.equal(typeof sc.issuer, 'string');
    assert.equal(typeof sc.jwks_uri, 'string', `sso-openid-connect advertised without jwks_uri: ${JSON.stringify(sc)}`);
  });

  // smartAuthMetadata() asks .well-known/smart-configuration, /metadata and
  // .well-known/openid-configuration at once and takes the FIRST successful answer, so
  // which source it reads depends on timing. Each case makes one source answer first by
  // holding back the other (fhir-kit-client awaits requestSigner before sending).
  for (const [first, heldBack] of [
    ['.well-known/smart-configuration', /\/metadata$/],
    ['the CapabilityStatement', /\/\.well-known\/smart-configuration$/],
  ]) {
    test(`fhir-kit-client smartAuthMetadata() finds the endpoints when ${first} answers first`, async () => {
      const sc = (await gw.request('GET', '/.well-known/smart-configuration')).json;
      const client = gw.fhirClient({
        requestSigner: async (url) => { if (heldBack.test(url)) await new Promise((r) => setTimeout(r, 300)); },
      });
      const meta = await client.smartAuthMetadata();
      assert.equal(meta.tokenUrl?.href, new URL(sc.token_endpoint).href, `smartAuthMetadata() gave ${JSON.stringify(meta)}`);
      assert.equal(meta.authorizeUrl?.href, new URL(sc.authorization_endpoint).href);
    });
  }

  test('the CapabilityStatement declares SMART-on-FHIR security with the same OAuth endpoints', async () => {
    const cs = await anonymous.capabilityStatement();
    assertSchemaValid(cs, 'CapabilityStatement');
    const security = cs.rest?.find((r) => r.mode === 'server')?.security;
    assert.ok(security?.service?.some((s) => s.coding?.some((c) => c.code === 'SMART-on-FHIR')),
      `rest.security.service lacks SMART-on-FHIR: ${JSON.stringify(security)}`);
    const oauth = security.extension?.find((e) => e.url === 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris');
    const uri = (name) => oauth?.extension?.find((e) => e.url === name)?.valueUri;
    const sc = (await gw.request('GET', '/.well-known/smart-configuration')).json;
    assert.equal(uri('token'), sc.token_endpoint, `oauth-uris extension: ${JSON.stringify(oauth)}`);
    assert.equal(uri('authorize'), sc.authorization_endpoint);
  });
});

describe('no usable token -> 401', () => {
  const routes = () => [
    ['GET', '/Patient/some-id'],
    ['GET', `/Patient?identifier=${encodeURIComponent(nhsToken(target.nhs))}`],
    ['POST', '/Patient/_search', { 'content-type': 'application/x-www-form-urlencoded' }, `identifier=${encodeURIComponent(nhsToken(target.nhs))}`],
    ['GET', `/Patient/$ihe-pix?sourceIdentifier=${encodeURIComponent(nhsToken(target.nhs))}`],
    ['GET', `/DocumentReference?subject:identifier=${encodeURIComponent(nhsToken(target.nhs))}`],
    ['POST', '/$validate', { 'content-type': 'application/fhir+json' }, '{"resourceType":"Patient"}'],
  ];

  test('no Authorization header: 401, WWW-Authenticate: Bearer realm, OperationOutcome', async () => {
    for (const [method, url, headers = {}, body] of routes()) {
      const res = await gw.request(method, url, { headers, body });
      assert.equal(res.status, 401, `${method} ${url}: ${res.text}`);
      assert.equal(res.headers['www-authenticate'], 'Bearer realm="fhir-gateway"', `${method} ${url}`);
      assert.match(res.headers['content-type'] ?? '', /^application\/fhir\+json/);
      assertOperationOutcome(res.json, `${method} ${url} without token`);
      assert.equal(res.json.issue[0].code, 'login');
    }
  });

  test('a garbage token: 401 with error="invalid_token"', async () => {
    for (const [method, url, headers = {}, body] of routes()) {
      const res = await gw.request(method, url, { headers, body, token: 'garbage.garbage.garbage' });
      assert.equal(res.status, 401, `${method} ${url}: ${res.text}`);
      assert.equal(res.headers['www-authenticate'], 'Bearer realm="fhir-gateway", error="invalid_token"');
      assertOperationOutcome(res.json, `${method} ${url} with a garbage token`);
    }
  });

  test('fhir-kit-client without a token: search and read reject with 401', async () => {
    const err = await httpError(() => anonymous.search({ resourceType: 'Patient', searchParams: { identifier: nhsToken(target.nhs) } }), 401);
    assertOperationOutcome(err.response.data, 'search without token');
    assert.match(err.config.headers.get('www-authenticate') ?? '', /^Bearer realm="fhir-gateway"$/);
    const bad = gw.fhirClient({ token: 'not-a-jwt' });
    const err2 = await httpError(() => bad.read({ resourceType: 'Patient', id: 'x' }), 401);
    assert.match(err2.config.headers.get('www-authenticate') ?? '', /error="invalid_token"/);
  });

  test('well-formed tokens the gateway must not trust: other key, audience, issuer', async () => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const otherKey = path.join(gw.tmpDir, 'other-key.pem');
    await fsp.writeFile(otherKey, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    const claims = { role: 'clinician', org: target.practice };
    const cases = {
      'signed by an unknown key': await gw.token({ ...claims, key: otherKey }),
      'signed by an unknown key with the trusted kid': await gw.token({ ...claims, key: otherKey, extraArgs: ['--kid', await trustedKid()] }),
      'for another audience': await gw.token({ ...claims, aud: 'https://localhost:8443' }),
      'from another issuer': await gw.token({ ...claims, iss: 'https://idp.example.org' }),
    };
    for (const [what, token] of Object.entries(cases)) {
      const res = await gw.request('GET', `/Patient?identifier=${encodeURIComponent(nhsToken(target.nhs))}`, { token });
      assert.equal(res.status, 401, `${what}: ${res.text}`);
      assert.match(res.headers['www-authenticate'] ?? '', /error="invalid_token"/, what);
      assertOperationOutcome(res.json, what);
    }
  });
});

async function trustedKid() {
  const jwks = JSON.parse(await fsp.readFile(gw.jwksFile, 'utf8'));
  return jwks.keys[0].kid;
}

describe('a clinician at the patient\'s GP practice', () => {
  let client;
  let patientId;

  before(async () => {
    client = await clientFor({ org: target.practice, sub: 'gp-clinician' });
  });

  test('search by NHS number finds exactly the seeded patient', async () => {
    const bundle = await client.search({ resourceType: 'Patient', searchParams: { identifier: nhsToken(target.nhs) } });
    const [patient, ...rest] = searchsetResources(bundle, 'Patient', 'Patient?identifier');
    assert.equal(bundle.total, 1, JSON.stringify(bundle));
    assert.equal(rest.length, 0);
    assert.equal(nhsOf(patient), target.nhs);
    assert.equal(practiceOf(patient), target.practice);
    assert.equal(familyOf(patient), target.family);
    assert.equal(patient.birthDate, target.birthDate);
    patientId = patient.id;
    assert.ok(patientId, 'no Patient.id');
  });

  test('read of that Patient by id', async () => {
    assert.ok(patientId, 'needs the search test');
    const patient = await client.read({ resourceType: 'Patient', id: patientId });
    assertSchemaValid(patient, `Patient/${patientId}`);
    assert.equal(patient.id, patientId);
    assert.equal(nhsOf(patient), target.nhs);
    for (const mrn of target.mrns) {
      assert.ok(patient.identifier.some((i) => i.system === mrn.system && i.value === mrn.value), `MRN ${mrn.value} missing`);
    }
    const { response } = Client.httpFor(patient);
    assert.match(response.headers.get('etag') ?? '', /^W\/"\d+"$/);
  });

  test('POST /Patient/_search (form body) finds the same patient', async () => {
    const bundle = await client.search({ resourceType: 'Patient', searchParams: { identifier: nhsToken(target.nhs) }, options: { postSearch: true } });
    const found = searchsetResources(bundle, 'Patient', 'POST Patient/_search');
    assert.equal(bundle.total, 1);
    assert.equal(found[0].id, patientId);
  });

  test('DocumentReference?subject:identifier returns the seeded pointers', async () => {
    const seeded = gw.seed.pointers.filter((d) => d.subject?.identifier?.value === target.nhs);
    assert.ok(seeded.length > 0, 'synthpop made no pointers for the target');
    const bundle = await client.search({ resourceType: 'DocumentReference', searchParams: { 'subject:identifier': nhsToken(target.nhs) } });
    const docs = searchsetResources(bundle, 'DocumentReference', 'DocumentReference?subject:identifier');
    assert.equal(bundle.total, seeded.length);
    assert.equal(docs.length, seeded.length);
    assert.deepEqual(docs.map((d) => d.content[0].attachment.url).sort(), seeded.map((d) => d.content[0].attachment.url).sort());
    for (const d of docs) {
      assert.equal(d.subject.reference, `Patient/${patientId}`);
      assert.equal(d.subject.identifier?.value, target.nhs);
    }
    const one = await client.read({ resourceType: 'DocumentReference', id: docs[0].id });
    assertSchemaValid(one, `DocumentReference/${docs[0].id}`);
    assert.equal(one.content[0].attachment.url, docs[0].content[0].attachment.url);
  });

  test('$ihe-pix (GET through operation()) cross-references the NHS number to the MRNs', async () => {
    const params = await client.operation({ name: '$ihe-pix', resourceType: 'Patient', method: 'GET', input: { sourceIdentifier: nhsToken(target.nhs) } });
    assert.equal(params.resourceType, 'Parameters');
    assertSchemaValid(params, '$ihe-pix');
    const ids = params.parameter.filter((p) => p.name === 'targetIdentifier').map((p) => p.valueIdentifier);
    assert.ok(ids.some((i) => i.system === NHS_NUMBER_SYSTEM && i.value === target.nhs), JSON.stringify(ids));
    for (const mrn of target.mrns) assert.ok(ids.some((i) => i.system === mrn.system && i.value === mrn.value), `MRN ${mrn.value}`);
    const targetId = params.parameter.find((p) => p.name === 'targetId');
    assert.equal(targetId?.valueReference?.reference, `Patient/${patientId}`);

    // targetSystem narrows the answer to one identifier system.
    const only = target.mrns[0];
    const narrowed = await client.operation({ name: '$ihe-pix', resourceType: 'Patient', method: 'GET', input: { sourceIdentifier: nhsToken(target.nhs), targetSystem: only.system } });
    assertSchemaValid(narrowed, '$ihe-pix targetSystem');
    assert.deepEqual(narrowed.parameter.filter((p) => p.name === 'targetIdentifier').map((p) => p.valueIdentifier), [only]);
  });

  test('an invalid NHS number (check digit) -> 400 OperationOutcome', async () => {
    const bad = `${target.nhs.slice(0, 9)}${(Number(target.nhs[9]) + 1) % 10}`;
    const err = await httpError(() => client.search({ resourceType: 'Patient', searchParams: { identifier: nhsToken(bad) } }), 400);
    assertOperationOutcome(err.response.data, 'Patient?identifier with a bad NHS number');
  });

  test('paging: _count=1 on a family search, followed with nextPage()', async () => {
    const pager = await clientFor({ org: pageFamily.practice, sub: 'paging-clinician' });
    let bundle = await pager.search({ resourceType: 'Patient', searchParams: { family: pageFamily.family, _count: 1 } });
    assert.equal(bundle.total, pageFamily.expected, `family=${pageFamily.family} at ${pageFamily.practice}`);
    assert.ok(bundle.link.some((l) => l.relation === 'next'), `no next link: ${JSON.stringify(bundle.link)}`);
    const ids = [];
    for (let page = 0; bundle && page < MAX_PAGES; page++) {
      const found = searchsetResources(bundle, 'Patient', `family page ${page}`);
      assert.equal(found.length, 1, `page ${page} has ${found.length} entries`);
      assert.equal(practiceOf(found[0]), pageFamily.practice);
      assert.ok(familyOf(found[0]).toLowerCase().startsWith(pageFamily.family.toLowerCase()));
      ids.push(found[0].id);
      bundle = await pager.nextPage({ bundle });
    }
    assert.equal(bundle, undefined, `more than ${MAX_PAGES} pages`);
    assert.equal(ids.length, pageFamily.expected);
    assert.equal(new Set(ids).size, ids.length, `a patient came twice: ${ids}`);
  });
});

describe('without a legitimate relationship: the answer for an unknown patient', () => {
  let stranger;
  let gp;
  let patientId;

  before(async () => {
    stranger = await clientFor({ org: otherPractice, sub: 'other-practice-clinician' });
    gp = await clientFor({ org: target.practice, sub: 'gp-clinician-2' });
    const bundle = await gp.search({ resourceType: 'Patient', searchParams: { identifier: nhsToken(target.nhs) } });
    patientId = bundle.entry?.[0]?.resource?.id;
  });

  test('search by NHS number: total 0, like an NHS number nobody holds', async () => {
    const hidden = await stranger.search({ resourceType: 'Patient', searchParams: { identifier: nhsToken(target.nhs) } });
    searchsetResources(hidden, 'Patient', 'hidden search');
    assert.equal(hidden.total, 0, JSON.stringify(hidden));
    assert.equal(hidden.entry, undefined);
    const unknown = await stranger.search({ resourceType: 'Patient', searchParams: { identifier: nhsToken('9000000009') } });
    assert.equal(unknown.total, 0);
  });

  test('read by id: 404 with the same OperationOutcome as an id that does not exist', async () => {
    assert.ok(patientId, 'the GP clinician could not find the patient');
    const hidden = await httpError(() => stranger.read({ resourceType: 'Patient', id: patientId }), 404);
    assertOperationOutcome(hidden.response.data, 'hidden read');
    const unknown = await httpError(() => stranger.read({ resourceType: 'Patient', id: 'no-such-patient' }), 404);
    assert.deepEqual(hidden.response.data.issue, unknown.response.data.issue);
  });

  test('DocumentReference?subject:identifier: total 0', async () => {
    const bundle = await stranger.search({ resourceType: 'DocumentReference', searchParams: { 'subject:identifier': nhsToken(target.nhs) } });
    searchsetResources(bundle, 'DocumentReference', 'hidden pointers');
    assert.equal(bundle.total, 0);
  });

  test('$ihe-pix: 404 like an unknown identifier', async () => {
    const raw = `Patient/$ihe-pix?sourceIdentifier=${encodeURIComponent(nhsToken(target.nhs))}`;
    const hidden = await httpError(() => stranger.request(raw), 404);
    assertOperationOutcome(hidden.response.data, 'hidden $ihe-pix');
    const unknown = await httpError(() => stranger.request(`Patient/$ihe-pix?sourceIdentifier=${encodeURIComponent(nhsToken('9000000009'))}`), 404);
    assert.deepEqual(hidden.response.data.issue, unknown.response.data.issue);
  });

  test('family search totals count only the caller\'s own patients', async () => {
    const elsewhere = await clientFor({ org: pageFamily.other, sub: 'family-elsewhere' });
    const bundle = await elsewhere.search({ resourceType: 'Patient', searchParams: { family: pageFamily.family, _count: 50 } });
    const found = searchsetResources(bundle, 'Patient', 'family search elsewhere');
    assert.equal(bundle.total, pageFamily.elsewhere);
    assert.ok(found.every((p) => practiceOf(p) === pageFamily.other), JSON.stringify(found.map(practiceOf)));
  });

  test('a paramedic with an emergency purpose of use may read; without it, 404', async () => {
    assert.ok(patientId);
    const emergency = gw.fhirClient({ token: await gw.token({ role: 'paramedic', org: otherPractice, sub: 'paramedic-1', purpose: 'EMERGENCY' }) });
    const patient = await emergency.read({ resourceType: 'Patient', id: patientId });
    assertSchemaValid(patient, 'paramedic read');
    assert.equal(nhsOf(patient), target.nhs);
    const routine = gw.fhirClient({ token: await gw.token({ role: 'paramedic', org: otherPractice, sub: 'paramedic-2' }) });
    await httpError(() => routine.read({ resourceType: 'Patient', id: patientId }), 404);
  });
});

describe('roles and scopes', () => {
  test('a role without patient access (ig-officer) -> 403 even at the practice', async () => {
    const ig = await clientFor({ role: 'ig-officer', org: target.practice, sub: 'ig-1' });
    const err = await httpError(() => ig.search({ resourceType: 'Patient', searchParams: { identifier: nhsToken(target.nhs) } }), 403);
    assertOperationOutcome(err.response.data, 'ig-officer search');
  });

  test('scopes narrow the role: user/DocumentReference.rs reads pointers but not the Patient', async () => {
    const narrow = await clientFor({ org: target.practice, sub: 'narrow-1', scope: 'user/DocumentReference.rs' });
    const docs = await narrow.search({ resourceType: 'DocumentReference', searchParams: { 'subject:identifier': nhsToken(target.nhs) } });
    assert.ok(docs.total > 0, JSON.stringify(docs));
    const err = await httpError(() => narrow.search({ resourceType: 'Patient', searchParams: { identifier: nhsToken(target.nhs) } }), 403);
    assertOperationOutcome(err.response.data, 'Patient search with DocumentReference scope');
  });
});

test('every FHIR resource returned in this suite validates against fhir.schema.json', () => {
  assertAllSchemaValid(gw.resources);
});
