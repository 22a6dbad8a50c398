// SPDX-License-Identifier: Apache-2.0
// Self-check of the schema validator the other suites rely on: it must accept good
// resources and reject bad ones, or "every resource is schema-valid" would mean nothing.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { patchedFhirVersionEnums, resourceTypes, validateResource } from './fhir-schema.mjs';

test('fhir.schema.json is the R4 schema and knows the resource types', () => {
  const types = resourceTypes();
  for (const t of ['CapabilityStatement', 'OperationOutcome', 'Patient', 'Bundle']) assert.ok(types.has(t), t);
  assert.ok(types.size > 140, `only ${types.size} resource types`);
});

test('accepts valid resources', () => {
  for (const r of [
    { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'not-found', diagnostics: 'x' }] },
    { resourceType: 'Patient', id: 'p1', active: true, name: [{ family: 'Doe', given: ['Jane'] }], birthDate: '1970-01-01' },
  ]) {
    const { valid, errors } = validateResource(r);
    assert.ok(valid, errors.join('\n'));
  }
});

test('rejects invalid resources with readable errors', () => {
  const cases = [
    [{ resourceType: 'OperationOutcome' }, /issue/],
    [{ resourceType: 'OperationOutcome', issue: [{ severity: 'bad', code: 'not-found' }] }, /severity/],
    [{ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'x-not-a-code' }] }, /code/],
    [{ resourceType: 'Patient', unknownElement: 1 }, /additional/],
    [{ resourceType: 'Patient', birthDate: '1 Jan 1970' }, /birthDate/],
    [{ resourceType: 'Patient', name: [{ family: '' }] }, /family/],
    [{ resourceType: 'NotAType' }, /not an R4 resource type/],
    [[], /not a JSON object/],
  ];
  for (const [resource, pattern] of cases) {
    const { valid, errors } = validateResource(resource);
    assert.equal(valid, false, `accepted ${JSON.stringify(resource)}`);
    assert.match(errors.join('\n'), pattern, JSON.stringify(resource));
  }
});

test('FHIR version enums accept 4.0.1 (patched into the 4.0.0 schema file) and still reject others', () => {
  // If a newer package ships the 4.0.1 schema, the count drops to 0 and this still passes.
  assert.ok(patchedFhirVersionEnums() <= 4, `patched ${patchedFhirVersionEnums()} enums`);
  const cs = (fhirVersion) => ({
    resourceType: 'CapabilityStatement', status: 'active', date: '2024-01-01', kind: 'instance',
    implementation: { description: 'x' }, fhirVersion, format: ['json'],
  });
  for (const ok of ['4.0.1', '4.0.0']) assert.ok(validateResource(cs(ok)).valid, ok);
  for (const bad of ['4.0.2', '4.0', 'R4', '5.0.0']) assert.equal(validateResource(cs(bad)).valid, false, bad);
});
