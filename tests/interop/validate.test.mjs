// SPDX-License-Identifier: Apache-2.0
// POST /$validate and POST /{Type}/$validate with exact bodies and headers (node:https).
// $validate reads no patient data but needs a valid bearer token of any role; without one
// the body is not even parsed.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { startGateway } from './gateway.mjs';
import { assertAllSchemaValid, assertOperationOutcome } from './fhir-schema.mjs';

let gw;
let token;

before(async () => {
  gw = await startGateway();
  // No patient data is involved: a role with no clinical access at all is enough.
  token = await gw.token({ role: 'ig-officer', org: 'A81001', scope: 'openid' });
});

after(async () => {
  await gw?.stop();
});

const FHIR_JSON = { 'content-type': 'application/fhir+json' };
const isError = (issue) => issue.severity === 'error' || issue.severity === 'fatal';

const validPatient = {
  resourceType: 'Patient',
  id: 'example',
  meta: { lastUpdated: '2024-05-01T10:00:00Z' },
  identifier: [{ system: 'https://fhir.nhs.uk/Id/nhs-number', value: '9000000009' }],
  active: true,
  name: [{ use: 'official', family: 'Chalmers', given: ['Peter', 'James'] }],
  gender: 'male',
  birthDate: '1974-12-25',
  address: [{ line: ['534 Erewhon St'], city: 'PleasantVille', postalCode: '3999' }],
};

/** POSTs body to path and checks the answer is a schema-valid OperationOutcome. */
/** auth: the bearer token (default: the suite's), or null for none. */
async function validate(path, body, { headers = FHIR_JSON, status = 200, auth = token } = {}) {
  const res = await gw.request('POST', path, { headers, body, token: auth ?? undefined });
  assert.equal(res.status, status, `POST ${path}: ${res.text}`);
  assert.match(res.headers['content-type'] ?? '', /^application\/fhir\+json(\s*;|$)/);
  assertOperationOutcome(res.json, `POST ${path} -> ${res.status}`);
  return res.json;
}

describe('authentication', () => {
  test('no token -> 401 with WWW-Authenticate, even for a malformed body', async () => {
    for (const body of [validPatient, '{"resourceType": "Patient", "active": tru']) {
      const oo = await validate('/$validate', body, { auth: null, status: 401 });
      assert.equal(oo.issue[0].code, 'login', JSON.stringify(oo));
    }
    const res = await gw.request('POST', '/Patient/$validate', { headers: FHIR_JSON, body: validPatient });
    assert.equal(res.status, 401);
    assert.equal(res.headers['www-authenticate'], 'Bearer realm="fhir-gateway"');
  });

  test('a token that does not verify -> 401 invalid_token', async () => {
    const [header, payload] = token.split('.');
    for (const bad of ['garbage', `${header}.${payload}.AAAA`, `${header}.${payload}`]) {
      const res = await gw.request('POST', '/$validate', { headers: FHIR_JSON, body: validPatient, token: bad });
      assert.equal(res.status, 401, `${bad}: ${res.text}`);
      assert.match(res.headers['www-authenticate'] ?? '', /^Bearer realm="fhir-gateway", error="invalid_token"$/);
      assertOperationOutcome(res.json, `POST /$validate with token ${bad.slice(0, 20)}`);
    }
  });

  test('any role will do: a clinician token validates too', async () => {
    const clinician = await gw.token({ role: 'clinician', org: 'A81001' });
    const oo = await validate('/Patient/$validate', validPatient, { auth: clinician });
    assert.ok(!oo.issue.some(isError), JSON.stringify(oo));
  });
});

describe('valid resources', () => {
  for (const path of ['/$validate', '/Patient/$validate']) {
    test(`${path} with a valid Patient: 200, no error issues`, async () => {
      const oo = await validate(path, validPatient);
      assert.ok(!oo.issue.some(isError), JSON.stringify(oo));
      assert.ok(oo.issue.some((i) => i.severity === 'information'), 'expected an information issue');
    });
  }

  test('Content-Type application/json and a charset parameter are accepted too', async () => {
    for (const ct of ['application/json', 'application/fhir+json; charset=utf-8', 'application/fhir+json;fhirVersion=4.0']) {
      const oo = await validate('/Patient/$validate', validPatient, { headers: { 'content-type': ct } });
      assert.ok(!oo.issue.some(isError), `${ct}: ${JSON.stringify(oo)}`);
    }
  });
});

describe('structural problems: 200 with error issues', () => {
  const cases = [
    ['an empty string element', { resourceType: 'Patient', name: [{ family: '' }] }, /empty/i, 'Patient.name[0].family'],
    ['an empty string in an array', { resourceType: 'Patient', name: [{ given: ['Ann', ''] }] }, /empty/i, 'Patient.name[0].given[1]'],
    ['a null value', { resourceType: 'Patient', active: null }, /null/i, 'Patient.active'],
    ['an invalid id', { resourceType: 'Patient', id: 'not a valid id!' }, /id/i, 'Patient.id'],
    ['no resourceType', { active: true }, /resourceType/, null],
    ['an unknown resourceType', { resourceType: 'NotAResource' }, /resource type/i, null],
    // element checks (fhir/element_check): the R4 elements, generated from fhir.schema.json
    ['an unknown element', { resourceType: 'Patient', bogusElement: true }, /unknown element/i, 'Patient.bogusElement'],
    ['a number for a code', { resourceType: 'Observation', status: 12345, code: { text: 'x' } }, /JSON string/, 'Observation.status'],
    ['a string for a decimal', { resourceType: 'Observation', status: 'final', code: { text: 'x' }, valueQuantity: { value: 'seventy' } },
      /JSON number/, 'Observation.valueQuantity.value'],
    ['a code outside its value set', { resourceType: 'Patient', gender: 'M' }, /value set/i, 'Patient.gender'],
    ['a missing required element', { resourceType: 'Observation', status: 'final' }, /required/i, 'Observation.code'],
  ];
  for (const [what, body, diagnostics, expression] of cases) {
    test(`$validate reports ${what}`, async () => {
      const oo = await validate('/$validate', body);
      const errors = oo.issue.filter(isError);
      assert.ok(errors.length > 0, `no error issue: ${JSON.stringify(oo)}`);
      assert.ok(errors.some((i) => diagnostics.test(i.diagnostics ?? '')), JSON.stringify(oo));
      if (expression) {
        assert.ok(errors.some((i) => (i.expression ?? []).includes(expression)), `expression ${expression}: ${JSON.stringify(oo)}`);
      }
    });
  }

  test('type-level $validate reports a resourceType that differs from the URL', async () => {
    const oo = await validate('/Patient/$validate', { resourceType: 'Observation', status: 'final', code: { text: 'x' } });
    assert.ok(oo.issue.some(isError), JSON.stringify(oo));
  });
});

describe('bodies that are not JSON', () => {
  test('malformed JSON -> 400 OperationOutcome', async () => {
    const oo = await validate('/$validate', '{"resourceType": "Patient", "active": tru', { status: 400 });
    assert.ok(oo.issue.some(isError), JSON.stringify(oo));
  });

  test('empty body -> 400 OperationOutcome', async () => {
    await validate('/Patient/$validate', '', { status: 400 });
  });

  test('duplicate keys -> 400 OperationOutcome', async () => {
    await validate('/$validate', '{"resourceType":"Patient","active":true,"active":false}', { status: 400 });
  });

  test('arrays nested 10,000 deep -> 400, diagnostics mention nesting', async () => {
    const deep = `{"resourceType":"Patient","extension":${'['.repeat(10_000)}${']'.repeat(10_000)}}`;
    const oo = await validate('/$validate', deep, { status: 400 });
    assert.ok(oo.issue.some((i) => /nest/i.test(i.diagnostics ?? '')), JSON.stringify(oo));
  });

  test('objects nested 10,000 deep -> 400, diagnostics mention nesting', async () => {
    const deep = `${'{"a":'.repeat(10_000)}1${'}'.repeat(10_000)}`;
    const oo = await validate('/Patient/$validate', deep, { status: 400 });
    assert.ok(oo.issue.some((i) => /nest/i.test(i.diagnostics ?? '')), JSON.stringify(oo));
  });

  test('the gateway still answers after the deep bodies', async () => {
    const res = await gw.request('GET', '/healthz');
    assert.equal(res.status, 200);
  });
});

describe('wrong Content-Type -> 415 OperationOutcome', () => {
  for (const ct of ['text/plain', 'application/xml', 'application/fhir+xml', 'application/x-www-form-urlencoded']) {
    test(`Content-Type: ${ct}`, async () => {
      await validate('/$validate', validPatient, { headers: { 'content-type': ct }, status: 415 });
    });
  }

  test('no Content-Type at all', async () => {
    const res = await gw.request('POST', '/Patient/$validate', { token, body: JSON.stringify(validPatient) });
    assert.ok([400, 415].includes(res.status), `status ${res.status}: ${res.text}`);
    assertOperationOutcome(res.json, 'POST without Content-Type');
  });
});

test('every FHIR resource returned in this suite validates against fhir.schema.json', () => {
  assertAllSchemaValid(gw.resources);
});
