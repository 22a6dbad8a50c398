// SPDX-License-Identifier: Apache-2.0
// Content negotiation on GET /metadata, with exact headers (node:https adds no Accept)
// and with fhir-kit-client: JSON in all its spellings is served, XML is refused with 406.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { startGateway } from './gateway.mjs';
import { assertAllSchemaValid, assertOperationOutcome, assertSchemaValid } from './fhir-schema.mjs';

let gw;
let client;

before(async () => {
  gw = await startGateway();
  client = gw.fhirClient();
});

after(async () => {
  await gw?.stop();
});

const FHIR_JSON = /^application\/fhir\+json(\s*;|$)/;

function assertCapabilityStatement(res, label) {
  assert.equal(res.status, 200, `${label}: ${res.text}`);
  assert.match(res.headers['content-type'] ?? '', FHIR_JSON, label);
  assert.equal(res.json?.resourceType, 'CapabilityStatement', label);
  assert.equal(res.json.fhirVersion, '4.0.1', label);
  assertSchemaValid(res.json, label);
}

function assertNotAcceptable(res, label) {
  assert.equal(res.status, 406, `${label}: ${res.text}`);
  // The refusal itself is FHIR JSON, the only format the server has.
  assert.match(res.headers['content-type'] ?? '', FHIR_JSON, label);
  assertOperationOutcome(res.json, label);
  assert.ok(res.json.issue.some((i) => i.severity === 'error'), label);
}

describe('Accept header', () => {
  const accepted = [
    ['application/fhir+json'],
    ['application/json'],
    ['application/fhir+json, */*; q=0.1'], // what medplum's client sends
    ['*/*'],
    ['application/fhir+json; fhirVersion=4.0'],
    ['application/fhir+xml;q=0.5, application/fhir+json'],
    [undefined], // no Accept header at all
  ];
  for (const [accept] of accepted) {
    test(`Accept: ${accept ?? '(none)'} -> 200 FHIR JSON`, async () => {
      const headers = accept === undefined ? {} : { accept };
      const res = await gw.request('GET', '/metadata', { headers });
      assertCapabilityStatement(res, `Accept ${accept ?? '(none)'}`);
    });
  }

  for (const accept of ['application/fhir+xml', 'application/xml', 'application/fhir+json;q=0']) {
    test(`Accept: ${accept} -> 406 OperationOutcome`, async () => {
      const res = await gw.request('GET', '/metadata', { headers: { accept } });
      assertNotAcceptable(res, `Accept ${accept}`);
    });
  }
});

describe('_format parameter', () => {
  for (const format of ['json', 'application/json', 'application%2Ffhir%2Bjson']) {
    test(`_format=${format} -> 200 FHIR JSON`, async () => {
      const res = await gw.request('GET', `/metadata?_format=${format}`);
      assertCapabilityStatement(res, `_format=${format}`);
    });
  }

  for (const format of ['xml', 'application/fhir%2Bxml', 'text/xml', 'ttl']) {
    test(`_format=${format} -> 406 OperationOutcome`, async () => {
      const res = await gw.request('GET', `/metadata?_format=${format}`);
      assertNotAcceptable(res, `_format=${format}`);
    });
  }

  test('_format=json wins over an XML Accept header', async () => {
    const res = await gw.request('GET', '/metadata?_format=json', { headers: { accept: 'application/fhir+xml' } });
    assertCapabilityStatement(res, '_format=json with Accept xml');
  });

  // Many clients put the MIME type into the query unencoded; the '+' then decodes to a
  // space ("application/fhir json"), which must still be understood (HAPI FHIR does).
  test('_format=application/fhir+json with an unencoded "+" is understood', async () => {
    const res = await gw.request('GET', '/metadata?_format=application/fhir+json');
    assertCapabilityStatement(res, '_format=application/fhir+json (raw +)');
  });
});

describe('_pretty', () => {
  test('_pretty=true indents, _pretty=false does not, same resource', async () => {
    const pretty = await gw.request('GET', '/metadata?_pretty=true');
    const compact = await gw.request('GET', '/metadata?_pretty=false');
    assertCapabilityStatement(pretty, '_pretty=true');
    assertCapabilityStatement(compact, '_pretty=false');
    assert.match(pretty.text, /\n\s+"resourceType"/);
    assert.ok(!compact.text.trimEnd().includes('\n'), 'compact output has line breaks');
    assert.deepEqual(pretty.json, compact.json);
  });
});

describe('through fhir-kit-client', () => {
  test('its default Accept (application/fhir+json) gets the CapabilityStatement', async () => {
    const cs = await client.capabilityStatement();
    assertSchemaValid(cs, 'fhir-kit-client metadata');
  });

  test('Accept: application/fhir+xml rejects with 406 and an OperationOutcome', async () => {
    await assert.rejects(client.capabilityStatement({ headers: { accept: 'application/fhir+xml' } }), (err) => {
      assert.equal(err.response?.status, 406, String(err));
      assertOperationOutcome(err.response.data, 'fhir-kit-client Accept xml');
      return true;
    });
  });

  test('_format=xml rejects with 406 and an OperationOutcome', async () => {
    await assert.rejects(client.request('metadata?_format=xml'), (err) => {
      assert.equal(err.response?.status, 406, String(err));
      assertOperationOutcome(err.response.data, 'fhir-kit-client _format=xml');
      return true;
    });
  });
});

test('every FHIR resource returned in this suite validates against fhir.schema.json', () => {
  assertAllSchemaValid(gw.resources);
});
