// SPDX-License-Identifier: Apache-2.0
// Shared helpers for the interop suites: start the real fhir-gateway binary on a free
// loopback port over HTTPS (development certificates), talk to it with node:https or
// with fhir-kit-client, remember every FHIR resource it answers with, and stop it.
//
//   const gw = await startGateway();        // binary from $GATEWAY_BIN or the build tree
//   const res = await gw.request('GET', '/metadata', { headers: { accept: '...' } });
//   const client = gw.fhirClient();         // fhir-kit-client trusting the dev CA
//   ...
//   await gw.stop();                        // SIGTERM, waits for the exit code
//
// Every wait here is bounded; nothing talks to anything but 127.0.0.1.

import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { Client } from 'fhir-kit-client';
import { Agent } from 'undici';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(HERE, '..', '..');
export const CERTS_DIR = path.join(REPO_ROOT, 'certs');
export const CA_FILE = path.join(CERTS_DIR, 'ca.pem');

const LISTEN_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 10_000;
const REQUEST_TIMEOUT_MS = 10_000;
// The binary may be missing for a moment while it is being rebuilt.
const BINARY_WAIT_MS = Number(process.env.GATEWAY_BIN_WAIT_MS ?? 120_000);

/** Path of the gateway binary: $GATEWAY_BIN, else build/gateway/fhir-gateway in the repo. */
export function gatewayBinary() {
  const fromEnv = process.env.GATEWAY_BIN;
  if (fromEnv) return path.resolve(fromEnv);
  return path.join(REPO_ROOT, 'build', 'gateway', 'fhir-gateway');
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const TIMED_OUT = Symbol('timed out');
/** Resolves to the promise's value, or TIMED_OUT after ms; the timer never outlives it. */
async function waitFor(promise, ms) {
  let timer;
  try {
    return await Promise.race([promise, new Promise((resolve) => { timer = setTimeout(resolve, ms, TIMED_OUT); })]);
  } finally {
    clearTimeout(timer);
  }
}

function isExecutable(file) {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

async function waitForBinary(bin) {
  const deadline = Date.now() + BINARY_WAIT_MS;
  while (!isExecutable(bin)) {
    if (Date.now() >= deadline) {
      throw new Error(`gateway binary ${bin} not found or not executable after ${BINARY_WAIT_MS} ms ` +
        '(build it, or set GATEWAY_BIN)');
    }
    await sleep(500);
  }
}

let certsReady = false;
/** Runs certs/make-dev-certs (idempotent) once per process. */
export function ensureDevCerts() {
  if (certsReady) return;
  execFileSync(path.join(CERTS_DIR, 'make-dev-certs'), [], { stdio: ['ignore', 'ignore', 'inherit'], timeout: 60_000 });
  for (const f of ['ca.pem', 'server.pem', 'server-key.pem']) {
    if (!fs.existsSync(path.join(CERTS_DIR, f))) throw new Error(`make-dev-certs did not produce certs/${f}`);
  }
  certsReady = true;
}

const tomlString = (s) => JSON.stringify(String(s));

function configToml(dataDir, extraConfig) {
  return [
    '[server]',
    'public_base_url = "https://localhost:8443"',
    'threads = 2',
    '[server.https]',
    'address = "127.0.0.1"',
    'port = 0',
    `certificate = ${tomlString(path.join(CERTS_DIR, 'server.pem'))}`,
    `private_key = ${tomlString(path.join(CERTS_DIR, 'server-key.pem'))}`,
    '[storage]',
    `data_dir = ${tomlString(dataDir)}`,
    '[log]',
    'access_log = true',
    extraConfig ?? '',
    '',
  ].join('\n');
}

// Every gateway started by this process, so that an abrupt exit still kills them.
const running = new Set();
process.on('exit', () => {
  for (const child of running) {
    try { child.kill('SIGKILL'); } catch { /* already gone */ }
  }
});

// ---------------------------------------------------------------------------------------
// Recording of every FHIR resource the gateway returns (raw requests and fetch-based
// clients alike), so that a suite can check all of them against fhir.schema.json.

const fetchRecorders = new Map(); // origin -> Gateway
let fetchWrapped = false;

function wrapGlobalFetch() {
  if (fetchWrapped) return;
  fetchWrapped = true;
  const realFetch = globalThis.fetch;
  globalThis.fetch = async function recordingFetch(input, init) {
    const response = await realFetch(input, init);
    const url = typeof input === 'string' ? input : (input instanceof URL ? input.href : input.url);
    const method = (init?.method ?? (typeof input === 'object' && 'method' in input ? input.method : 'GET')).toUpperCase();
    let parsed;
    try { parsed = new URL(url); } catch { return response; }
    const gw = fetchRecorders.get(parsed.origin);
    if (gw) {
      const text = await response.clone().text();
      gw.record(`${method} ${parsed.pathname} (fetch)`, response.status,
        response.headers.get('content-type'), text);
    }
    return response;
  };
}

class Gateway {
  constructor({ child, exited, port, dataDir, tmpDir, bin }) {
    this.child = child;
    this.pid = child.pid;
    this.port = port;
    this.bin = bin;
    this.dataDir = dataDir;
    this.tmpDir = tmpDir;
    this.baseUrl = `https://127.0.0.1:${port}`;
    this.ca = fs.readFileSync(CA_FILE);
    /** Raw stderr lines and the ones that parsed as JSON log records. */
    this.stderrLines = [];
    this.logs = [];
    /** Every FHIR resource (JSON object with resourceType) the gateway answered with. */
    this.resources = [];
    this.exit = null; // { code, signal } once exited
    this.exited = exited.then((result) => { this.exit = result; return result; });
    this.agent = new https.Agent({ ca: this.ca, keepAlive: false });
    this.dispatcher = null;
  }

  record(label, status, contentType, text) {
    if (!text) return;
    let body;
    try { body = JSON.parse(text); } catch { return; }
    if (body && typeof body === 'object' && !Array.isArray(body) && 'resourceType' in body) {
      this.resources.push({ label, status, contentType, resource: body });
    }
  }

  /**
   * One HTTPS request with node:https (exact control over headers: nothing is added
   * except Host, and Content-Length when there is a body). Resolves to
   * { status, headers, text, json } where json is the parsed body or undefined.
   */
  request(method, urlPath, { headers = {}, body } = {}) {
    return new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined
        : (Buffer.isBuffer(body) || typeof body === 'string') ? body : JSON.stringify(body);
      const req = https.request({
        host: '127.0.0.1',
        port: this.port,
        method,
        path: urlPath,
        headers: payload === undefined ? headers : { 'content-length': Buffer.byteLength(payload), ...headers },
        agent: this.agent,
      }, (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json;
          try { json = text ? JSON.parse(text) : undefined; } catch { json = undefined; }
          this.record(`${method} ${urlPath}`, res.statusCode, res.headers['content-type'], text);
          resolve({ status: res.statusCode, headers: res.headers, text, json });
        });
        res.on('error', reject);
      });
      req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(new Error(`${method} ${urlPath}: no answer in ${REQUEST_TIMEOUT_MS} ms`)));
      req.on('error', reject);
      if (payload !== undefined) req.write(payload);
      req.end();
    });
  }

  /**
   * A fhir-kit-client Client for this gateway. fhir-kit-client 2.x uses the global
   * fetch (undici), which ignores `agent`; the dev CA goes in through an undici Agent
   * passed as `dispatcher` in requestOptions. TLS verification stays on.
   */
  fhirClient(config = {}) {
    if (!this.dispatcher) this.dispatcher = new Agent({ connect: { ca: this.ca } });
    wrapGlobalFetch();
    fetchRecorders.set(new URL(this.baseUrl).origin, this);
    const { requestOptions, ...rest } = config;
    return new Client({ baseUrl: this.baseUrl, ...rest, requestOptions: { dispatcher: this.dispatcher, ...requestOptions } });
  }

  /** SIGTERM, then waits (bounded) for the exit; SIGKILL if it hangs. Idempotent. */
  async stop() {
    if (!this.exit) {
      try { this.child.kill('SIGTERM'); } catch { /* already gone */ }
      if (await waitFor(this.exited, STOP_TIMEOUT_MS) === TIMED_OUT) {
        try { this.child.kill('SIGKILL'); } catch { /* already gone */ }
        await waitFor(this.exited, 2_000);
        this.exit = { ...(this.exit ?? {}), timedOut: true };
      }
    }
    if (this.dispatcher) {
      await this.dispatcher.close().catch(() => {});
      this.dispatcher = null;
    }
    this.agent.destroy();
    if (fetchRecorders.get(new URL(this.baseUrl).origin) === this) fetchRecorders.delete(new URL(this.baseUrl).origin);
    if (!process.env.INTEROP_KEEP_TMP) await fsp.rm(this.tmpDir, { recursive: true, force: true });
    return this.exit;
  }
}

// With setpriv (util-linux) the kernel sends the gateway SIGTERM if this test process
// dies without running its hooks (killed, or its output pipe closed under it), so no
// gateway outlives its suite. setpriv execs the gateway: the pid stays the same.
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find(isExecutable) ?? null;

/**
 * Spawns the gateway once and waits for its "listening" line. Rejects with
 * err.retryable set when the binary could not be executed (missing or busy mid-relink).
 */
function launch(bin, configFile, onListening) {
  const args = ['--config', configFile];
  const child = SETPRIV
    ? spawn(SETPRIV, ['--pdeathsig', 'TERM', '--', bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const stderrLines = [];
  const logs = [];
  const exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      running.delete(child);
      resolve({ code, signal });
    });
  });

  return new Promise((resolve, reject) => {
    let buffered = '';
    let settled = false;
    const finish = (fn, value) => { if (!settled) { settled = true; clearTimeout(timer); fn(value); } };
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      finish(reject, new Error(`gateway did not log "listening" within ${LISTEN_TIMEOUT_MS} ms; stderr:\n${stderrLines.join('\n')}`));
    }, LISTEN_TIMEOUT_MS);
    child.once('spawn', () => running.add(child));
    child.once('error', (err) => {
      err.retryable = ['ENOENT', 'ETXTBSY', 'EACCES'].includes(err.code);
      finish(reject, err);
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      buffered += chunk;
      let nl;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        stderrLines.push(line);
        let rec;
        try { rec = JSON.parse(line); } catch { continue; }
        logs.push(rec);
        if (rec.msg === 'listening' && rec.scheme === 'https' && Number.isInteger(rec.port) && rec.port > 0) {
          if (onListening && !settled) onListening(child);
          finish(resolve, { child, exited, port: rec.port, stderrLines, logs });
        }
      }
    });
    child.stdout.on('data', (chunk) => { stderrLines.push(`[stdout] ${String(chunk).trimEnd()}`); });
    child.once('exit', (code, signal) => {
      // Let the last stderr bytes arrive before reporting.
      setImmediate(() => {
        const err = new Error(`gateway exited early (code ${code}, signal ${signal}); stderr:\n${stderrLines.join('\n')}`);
        // 126/127: setpriv could not execute the binary (e.g. "Text file busy").
        err.retryable = (code === 126 || code === 127) && logs.length === 0;
        finish(reject, err);
      });
    });
  });
}

/**
 * Starts the gateway on 127.0.0.1 with an ephemeral port and a fresh data dir.
 * options.extraConfig: TOML appended to the minimal config (later suites).
 * options.onListening(child): called synchronously as soon as the line is read.
 * Resolves once the "listening" log line names the port (10 s at most).
 */
export async function startGateway({ extraConfig = '', onListening } = {}) {
  ensureDevCerts();
  const bin = gatewayBinary();
  const tmpDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'fhir-gw-interop-'));
  const dataDir = path.join(tmpDir, 'data');
  const configFile = path.join(tmpDir, 'gateway.toml');
  await fsp.writeFile(configFile, configToml(dataDir, extraConfig));

  // The binary can be missing or busy (ETXTBSY) for a moment during a relink.
  const deadline = Date.now() + BINARY_WAIT_MS;
  let launched;
  try {
    for (;;) {
      await waitForBinary(bin);
      try {
        launched = await launch(bin, configFile, onListening);
        break;
      } catch (err) {
        if (!err.retryable || Date.now() >= deadline) throw err;
        await sleep(500);
      }
    }
  } catch (err) {
    if (!process.env.INTEROP_KEEP_TMP) await fsp.rm(tmpDir, { recursive: true, force: true });
    throw err;
  }
  const { child, exited, port, stderrLines, logs } = launched;

  const gw = new Gateway({ child, exited, port, dataDir, tmpDir, bin });
  gw.stderrLines = stderrLines; // same arrays: keep filling after start
  gw.logs = logs;
  return gw;
}
