// SPDX-License-Identifier: Apache-2.0
// HTTP-level behaviour a client relies on: operational endpoints, errors as
// OperationOutcome, X-Request-ID, response framing, and a clean SIGTERM shutdown.
// Clinical routes need a bearer token; `token` is a clinician's.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import tls from 'node:tls';
import { after, before, describe, test } from 'node:test';

import { startGateway } from './gateway.mjs';
import { assertAllSchemaValid, assertOperationOutcome } from './fhir-schema.mjs';

let gw;
let token;

before(async () => {
  gw = await startGateway();
  token = await gw.token({ role: 'clinician', org: 'A81001' });
});

after(async () => {
  await gw?.stop();
});

/**
 * Sends one raw HTTP/1.1 request over TLS with Connection: close and returns every
 * byte the server sent, split into head and rest (5 s at most).
 */
function rawExchange(requestHead) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    const socket = tls.connect({ host: '127.0.0.1', port: gw.port, ca: gw.ca }, () => socket.write(requestHead));
    const timer = setTimeout(() => socket.destroy(new Error('no end of response within 5 s')), 5_000);
    socket.on('data', (c) => chunks.push(c));
    socket.on('end', () => {
      clearTimeout(timer);
      socket.end();
      const all = Buffer.concat(chunks).toString('latin1');
      const cut = all.indexOf('\r\n\r\n');
      resolve({ head: cut < 0 ? all : all.slice(0, cut), rest: cut < 0 ? '' : all.slice(cut + 4) });
    });
    socket.on('error', (err) => { clearTimeout(timer); reject(err); });
  });
}

describe('operational endpoints', () => {
  for (const path of ['/healthz', '/readyz']) {
    test(`GET ${path} -> 200 JSON`, async () => {
      const res = await gw.request('GET', path);
      assert.equal(res.status, 200, res.text);
      assert.match(res.headers['content-type'] ?? '', /json/);
      assert.ok(res.json && typeof res.json === 'object', res.text);
    });
  }

  test('GET /metrics -> Prometheus text that counts requests by route', async () => {
    await gw.request('GET', '/metadata');
    const res = await gw.request('GET', '/metrics');
    assert.equal(res.status, 200);
    assert.match(res.headers['content-type'] ?? '', /^text\/plain/);
    assert.match(res.text, /^# TYPE \w+ (counter|gauge|histogram|summary)$/m);
    const line = res.text.split('\n').find((l) => !l.startsWith('#') && l.includes('route="/metadata"') && l.includes('status="200"'));
    assert.ok(line, 'no sample for GET /metadata 200');
    assert.ok(Number(line.trim().split(/\s+/).pop()) >= 1, line);
  });
});

describe('errors are OperationOutcomes', () => {
  // Paths no route serves are 404 before authentication: nothing is disclosed.
  for (const path of ['/Foo/1', '/', '/metadata/extra', '/Patient/1/_history/1']) {
    test(`GET ${path} -> 404`, async () => {
      const res = await gw.request('GET', path, { headers: { accept: 'application/fhir+json' } });
      assert.equal(res.status, 404, res.text);
      assert.match(res.headers['content-type'] ?? '', /^application\/fhir\+json/);
      assertOperationOutcome(res.json, `GET ${path}`);
    });
  }

  test('GET /Patient/1 with a token -> 404 (unknown patient)', async () => {
    const res = await gw.request('GET', '/Patient/1', { token, headers: { accept: 'application/fhir+json' } });
    assert.equal(res.status, 404, res.text);
    assert.match(res.headers['content-type'] ?? '', /^application\/fhir\+json/);
    assertOperationOutcome(res.json, 'GET /Patient/1 with token');
  });

  test('GET /Patient/1 without a token -> 401, WWW-Authenticate: Bearer', async () => {
    const res = await gw.request('GET', '/Patient/1', { headers: { accept: 'application/fhir+json' } });
    assert.equal(res.status, 401, res.text);
    assert.match(res.headers['www-authenticate'] ?? '', /^Bearer realm="fhir-gateway"$/);
    assert.match(res.headers['content-type'] ?? '', /^application\/fhir\+json/);
    assertOperationOutcome(res.json, 'GET /Patient/1 without token');
  });

  test('a method the route does not allow -> 405 with Allow and an OperationOutcome', async () => {
    const res = await gw.request('POST', '/metadata', { headers: { 'content-type': 'application/fhir+json' }, body: '{}' });
    assert.equal(res.status, 405, res.text);
    assert.match(res.headers.allow ?? '', /GET/);
    assertOperationOutcome(res.json, 'POST /metadata');
  });
});

describe('X-Request-ID', () => {
  test('a client-sent id is mirrored on success and on errors', async () => {
    for (const [method, path, opts, status] of [
      ['GET', '/metadata', {}, 200],
      ['GET', '/healthz', {}, 200],
      ['GET', '/Patient/1', { token }, 404],
      ['GET', '/Patient/1', {}, 401],
      ['GET', '/Patient/1', { token: 'not-a-token' }, 401],
      ['POST', '/$validate', { token, headers: { 'content-type': 'application/fhir+json' }, body: '{' }, 400],
      ['POST', '/$validate', { token, headers: { 'content-type': 'text/plain' }, body: '{}' }, 415],
      ['GET', '/metadata?_format=xml', {}, 406],
    ]) {
      const id = randomUUID();
      const res = await gw.request(method, path, { ...opts, headers: { ...opts.headers, 'x-request-id': id } });
      assert.equal(res.status, status, `${method} ${path}: ${res.text}`);
      assert.equal(res.headers['x-request-id'], id, `${method} ${path}`);
    }
  });

  test('without one the gateway makes a fresh id per request', async () => {
    const a = await gw.request('GET', '/healthz');
    const b = await gw.request('GET', '/healthz');
    assert.ok(a.headers['x-request-id'], 'no X-Request-ID');
    assert.ok(b.headers['x-request-id'], 'no X-Request-ID');
    assert.notEqual(a.headers['x-request-id'], b.headers['x-request-id']);
  });

  test('an unusable id (too long, odd characters) is replaced, not echoed', async () => {
    for (const bad of ['x'.repeat(300), 'has space<script>']) {
      const res = await gw.request('GET', '/healthz', { headers: { 'x-request-id': bad } });
      assert.equal(res.status, 200);
      assert.ok(res.headers['x-request-id'], 'no X-Request-ID');
      assert.notEqual(res.headers['x-request-id'], bad);
    }
  });

  test('the access log line carries the same id', async () => {
    const id = randomUUID();
    await gw.request('GET', '/metadata', { headers: { 'x-request-id': id } });
    // The log line may trail the response by a moment; wait at most 2 s.
    const deadline = Date.now() + 2_000;
    while (!gw.logs.some((l) => l.request_id === id) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 25));
    }
    const line = gw.logs.find((l) => l.request_id === id);
    assert.ok(line, `no log line with request_id ${id}`);
    assert.equal(line.status, 200);
  });
});

describe('response framing and latency', () => {
  // RFC 9110 §9.3.2: a response to HEAD has no content. A body here is read by a
  // keep-alive client as the start of the next response.
  test('HEAD /metadata is answered without a body', async () => {
    const { head, rest } = await rawExchange('HEAD /metadata HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
    assert.match(head, /^HTTP\/1\.1 \d{3} /);
    assert.equal(rest, '', `bytes after the HEAD response head: ${rest.slice(0, 200)}`);
  });

  test('GET on an unknown path with Connection: close ends with exactly Content-Length bytes', async () => {
    const { head, rest } = await rawExchange('GET /Foo/1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
    const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1]);
    assert.equal(Buffer.byteLength(rest, 'latin1'), length, head);
  });
});

// Regression: the signal handlers must be installed before "listening" is logged, or a
// SIGTERM sent on readiness kills the process with no drain.
test('SIGTERM sent right after the "listening" line still drains and exits 0', async () => {
  const outcomes = [];
  for (let i = 0; i < 5; i++) {
    const early = await startGateway({ onListening: (child) => child.kill('SIGTERM') });
    outcomes.push(await early.stop());
  }
  assert.deepEqual(outcomes, outcomes.map(() => ({ code: 0, signal: null })));
});

test('every FHIR resource returned in this suite validates against fhir.schema.json', () => {
  assertAllSchemaValid(gw.resources);
});

test('SIGTERM drains and exits 0 without error log lines', async () => {
  const exit = await gw.stop();
  assert.deepEqual(exit, { code: 0, signal: null }, `exit ${JSON.stringify(exit)}; stderr:\n${gw.stderrLines.slice(-20).join('\n')}`);
  const bad = gw.logs.filter((l) => l.level === 'error' || l.level === 'fatal');
  assert.equal(bad.length, 0, bad.map((l) => JSON.stringify(l)).join('\n'));
  const unparsed = gw.stderrLines.filter((l) => l.trim() && !l.startsWith('{'));
  assert.equal(unparsed.length, 0, `stderr lines that are not JSON:\n${unparsed.join('\n')}`);
});
