// SPDX-License-Identifier: Apache-2.0
// HL7 v2 ingest as FHIR clients see it (issue #4): every golden message in tests/golden/hl7v2
// is sent to the real gateway's MLLP listener over a plain Node socket; each gets an
// acknowledgement echoing its control id; then a paramedic's fhir-kit-client reads the
// patients' Encounters, Observations and DiagnosticReports, and every Bundle and resource
// validates against the official FHIR R4 JSON schema.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { NHS_NUMBER_SYSTEM, REPO_ROOT, freeLoopbackPort, startGateway } from './gateway.mjs';
import { assertSchemaValid } from './fhir-schema.mjs';

const GOLDEN = path.join(REPO_ROOT, 'tests', 'golden', 'hl7v2');
const VT = 0x0b;
const FS = 0x1c;
const CR = 0x0d;

let gw;
let mllpPort;

before(async () => {
  mllpPort = await freeLoopbackPort();
  gw = await startGateway({
    extraConfig: [
      '[[source_systems]]',
      'ods_code = "RGT01"',
      'name = "golden-source"',
      'adapter = "hl7v2"',
      `endpoint = "127.0.0.1:${mllpPort}"`,
      // Several golden samples are training messages (MSH-11 T): this source applies them.
      '[source_systems.settings]',
      'processing_ids = ["P", "T"]',
    ].join('\n'),
  });
});

after(async () => {
  await gw?.stop();
});

/** Sends one framed message and resolves with the first acknowledgement (segments split). */
function sendMllp(message, timeoutMs = 10000) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(mllpPort, '127.0.0.1');
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('no acknowledgement within ' + timeoutMs + ' ms'));
    }, timeoutMs);
    socket.on('connect', () => socket.write(Buffer.concat([Buffer.from([VT]), message, Buffer.from([FS, CR])])));
    socket.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      const start = buf.indexOf(VT);
      const end = buf.indexOf(FS, start + 1);
      if (start >= 0 && end > start) {
        clearTimeout(timer);
        socket.end();
        resolve(buf.subarray(start + 1, end).toString('utf8').split('\r').filter((s) => s.length > 0));
      }
    });
    socket.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

const field = (segment, n) => segment.split('|')[n] ?? '';
const mshOf = (msg) => msg.toString('utf8').replace(/^\uFEFF/, '').split(/\r\n|\r|\n/)[0];
const controlId = (msg) => field(mshOf(msg), 9);
// MSH-15 and MSH-16 both NE: the sender asked for no acknowledgement at all.
const wantsNoAck = (msg) => field(mshOf(msg), 14).trim() === 'NE' && field(mshOf(msg), 15).trim() === 'NE';

test('every golden HL7 message is acknowledged, echoing its control id; only the refused case is not AA/CA', async () => {
  const files = fs.readdirSync(GOLDEN).filter((f) => f.endsWith('.hl7')).sort();
  assert.ok(files.length >= 10, 'golden cases missing');
  for (const f of files) {
    const msg = fs.readFileSync(path.join(GOLDEN, f));
    const expected = JSON.parse(fs.readFileSync(path.join(GOLDEN, f.replace(/\.hl7$/, '.json')), 'utf8'));
    if (wantsNoAck(msg)) {
      await assert.rejects(sendMllp(msg, 1500), /no acknowledgement/, `${f}: NE/NE must get no ACK`);
      continue;
    }
    const ack = await sendMllp(msg);
    const msa = ack.find((s) => s.startsWith('MSA|'));
    assert.ok(msa, `${f}: no MSA segment`);
    assert.equal(field(msa, 2), controlId(msg), `${f}: MSA-2 must echo MSH-10`);
    // The golden expectation says whether the mapping refuses the message.
    const refused = expected.issue !== undefined || expected.error !== undefined;
    // Enhanced mode (MSH-15/16 present) answers with the commit acknowledgement first. An A40
    // whose prior record was never sent cannot be applied: AE/CE with ERR code 204 at MRG-1.
    const err = ack.find((s) => s.startsWith('ERR|')) ?? '';
    const unknownMerge = expected.event === 'A40' && ['AE', 'CE'].includes(field(msa, 1)) && /MRG\^1\^1\^204/.test(err);
    const ok = refused ? ['AE', 'CE'] : ['AA', 'CA'];
    assert.ok(ok.includes(field(msa, 1)) || unknownMerge, `${f}: ${ack.join(' / ')}`);
    if (refused) assert.ok(ack.some((s) => s.startsWith('ERR|')), `${f}: AE without ERR`);
  }
});

// NHS number check digit (Modulus 11): weights 10..2 over the first nine digits.
function validNhsNumber(value) {
  if (!/^\d{10}$/.test(value)) return false;
  let sum = 0;
  for (let i = 0; i < 9; i += 1) sum += Number(value[i]) * (10 - i);
  const check = (11 - (sum % 11)) % 11;
  return check !== 10 && check === Number(value[9]);
}

test('a paramedic reads the ingested records as schema-valid FHIR R4', async () => {
  const client = gw.fhirClient({
    token: await gw.token({ sub: 'medic-9', role: 'paramedic', org: 'RX6', purpose: 'EMERGENCY', scope: 'user/*.rs' }),
  });
  const nhsNumbers = new Set();
  for (const f of fs.readdirSync(GOLDEN).filter((x) => x.endsWith('.json'))) {
    const expected = JSON.parse(fs.readFileSync(path.join(GOLDEN, f), 'utf8'));
    // Only numbers passing Modulus 11: a mistyped one is kept on its patient as untrusted, and
    // is rightly refused (400) as a search parameter.
    for (const id of expected.patient?.identifier ?? [])
      if (id.system === NHS_NUMBER_SYSTEM && validNhsNumber(id.value)) nhsNumbers.add(id.value);
  }
  assert.ok(nhsNumbers.size >= 3, 'golden cases with NHS numbers missing');
  const seen = { Encounter: 0, Observation: 0, DiagnosticReport: 0 };
  for (const nhs of nhsNumbers) {
    for (const resourceType of Object.keys(seen)) {
      const bundle = await client.search({
        resourceType,
        searchParams: { 'patient:identifier': `${NHS_NUMBER_SYSTEM}|${nhs}` },
      });
      assertSchemaValid(bundle, `${resourceType} search for a golden patient`);
      for (const e of bundle.entry ?? []) {
        assert.equal(e.resource.resourceType, resourceType);
        assertSchemaValid(e.resource, `${resourceType}/${e.resource.id}`);
        seen[resourceType] += 1;
        const read = await client.read({ resourceType, id: e.resource.id });
        assert.equal(read.id, e.resource.id);
      }
    }
  }
  assert.ok(seen.Encounter >= 1, 'no Encounter came back');
  assert.ok(seen.Observation >= 1, 'no Observation came back');
  assert.ok(seen.DiagnosticReport >= 1, 'no DiagnosticReport came back');
});
