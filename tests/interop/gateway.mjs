// SPDX-License-Identifier: Apache-2.0
// Shared helpers for the interop suites: start the real fhir-gateway binary on a free
// loopback port over HTTPS (development certificates) with bearer-token authentication
// (a JWKS made from certs/token-key.pem by mint-token), optionally with a record locator
// index seeded from synthpop patients; mint tokens; talk to it with node:https or with
// fhir-kit-client; remember every FHIR resource it answers with; and stop it.
//
//   const gw = await startGateway({ seedPatients: 50 }); // binary from $GATEWAY_BIN or the build tree
//   const token = await gw.token({ role: 'clinician', org: 'A81001' });
//   const res = await gw.request('GET', '/Patient/x', { token });  // or headers: { authorization }
//   const client = gw.fhirClient({ token });   // fhir-kit-client trusting the dev CA
//   ...
//   await gw.stop();                          // SIGTERM, waits for the exit code
//
// Every wait here is bounded; nothing talks to anything but 127.0.0.1.

import { execFile, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { Client } from 'fhir-kit-client';
import { Agent } from 'undici';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(HERE, '..', '..');
export const CERTS_DIR = path.join(REPO_ROOT, 'certs');
export const CA_FILE = path.join(CERTS_DIR, 'ca.pem');
/** EC P-256 key that signs the test tokens (made by certs/make-dev-certs). */
export const TOKEN_KEY_FILE = path.join(CERTS_DIR, 'token-key.pem');
export const NHS_NUMBER_SYSTEM = 'https://fhir.nhs.uk/Id/nhs-number';
export const ODS_SYSTEM = 'https://fhir.nhs.uk/Id/ods-organization-code';

const LISTEN_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 10_000;
const REQUEST_TIMEOUT_MS = 10_000;
const TOOL_TIMEOUT_MS = 15_000;      // one mint-token run
const SEED_TIMEOUT_MS = 120_000;     // synthpop, and gw-locator import
const MAX_PORT_ATTEMPTS = 5;         // the pre-picked port can be taken before the gateway binds it
// The binary may be missing for a moment while it is being rebuilt.
const BINARY_WAIT_MS = Number(process.env.GATEWAY_BIN_WAIT_MS ?? 120_000);

/** Path of the gateway binary: $GATEWAY_BIN, else build/gateway/fhir-gateway in the repo. */
export function gatewayBinary() {
  const fromEnv = process.env.GATEWAY_BIN;
  if (fromEnv) return path.resolve(fromEnv);
  return path.join(REPO_ROOT, 'build', 'gateway', 'fhir-gateway');
}

/**
 * A tool built next to the gateway: $<envName>, else <build>/tools/<subdir>/<name> where
 * <build> is the directory above the gateway binary's (build/gateway/fhir-gateway).
 */
function toolBinary(envName, subdir, name) {
  const fromEnv = process.env[envName];
  if (fromEnv) return path.resolve(fromEnv);
  return path.resolve(path.dirname(gatewayBinary()), '..', 'tools', subdir, name);
}
export const mintTokenBinary = () => toolBinary('MINT_TOKEN_BIN', 'mint_token', 'mint-token');
export const locatorCliBinary = () => toolBinary('GW_LOCATOR_BIN', 'locator_cli', 'gw-locator');
export const synthpopBinary = () => toolBinary('SYNTHPOP_BIN', 'synthpop', 'synthpop');

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

async function waitForBinary(bin, what = 'gateway binary', hint = 'build it, or set GATEWAY_BIN') {
  const deadline = Date.now() + BINARY_WAIT_MS;
  while (!isExecutable(bin)) {
    if (Date.now() >= deadline) {
      throw new Error(`${what} ${bin} not found or not executable after ${BINARY_WAIT_MS} ms (${hint})`);
    }
    await sleep(500);
  }
}

/**
 * Runs a tool (bounded by timeoutMs) and resolves to its stdout; rejects with its stderr on
 * a non-zero exit, a signal or the timeout. Retries a few times while the binary is being
 * relinked (ETXTBSY).
 */
async function runTool(bin, args, { timeoutMs = TOOL_TIMEOUT_MS, what = path.basename(bin), hint } = {}) {
  await waitForBinary(bin, what, hint ?? `build it, or set the ${what} override variable`);
  for (let attempt = 0; ; attempt++) {
    try {
      return await new Promise((resolve, reject) => {
        execFile(bin, args, { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 16 * 1024 * 1024, encoding: 'utf8' },
          (err, stdout, stderr) => {
            if (err) {
              const how = err.killed ? `killed after ${timeoutMs} ms` : `exit ${err.code ?? err.signal}`;
              const e = new Error(`${what} ${args.join(' ')}: ${how}\n${stderr}`);
              e.code = err.code;
              reject(e);
            } else {
              resolve(stdout);
            }
          });
      });
    } catch (err) {
      if (err.code !== 'ETXTBSY' || attempt >= 10) throw err;
      await sleep(500);
    }
  }
}

let certsReady = false;
/** Runs certs/make-dev-certs (idempotent) once per process. */
export function ensureDevCerts() {
  if (certsReady) return;
  execFileSync(path.join(CERTS_DIR, 'make-dev-certs'), [], { stdio: ['ignore', 'ignore', 'inherit'], timeout: 60_000 });
  for (const f of ['ca.pem', 'server.pem', 'server-key.pem', 'token-key.pem', 'audit-key.pem']) {
    if (!fs.existsSync(path.join(CERTS_DIR, f))) throw new Error(`make-dev-certs did not produce certs/${f}`);
  }
  certsReady = true;
}

const tomlString = (s) => JSON.stringify(String(s));

/**
 * The gateway's identity on a given port: its public base URL (what Bundle links and the
 * CapabilityStatement name; the dev certificate covers 127.0.0.1), the token audience
 * (the base URL, as SMART expects) and the issuer of the test tokens.
 */
function identityFor(port) {
  const baseUrl = `https://127.0.0.1:${port}`;
  return { baseUrl, audience: baseUrl, issuer: `${baseUrl}/dev-idp` };
}

function configToml({ port, dataDir, jwksFile, authConfig, extraConfig }) {
  const { baseUrl, audience, issuer } = identityFor(port);
  return [
    '[server]',
    `public_base_url = ${tomlString(baseUrl)}`,
    'threads = 2',
    '[server.https]',
    'address = "127.0.0.1"',
    `port = ${port}`,
    `certificate = ${tomlString(path.join(CERTS_DIR, 'server.pem'))}`,
    `private_key = ${tomlString(path.join(CERTS_DIR, 'server-key.pem'))}`,
    '[storage]',
    `data_dir = ${tomlString(dataDir)}`,
    '[log]',
    'access_log = true',
    '[auth]',
    'enabled = true',
    `jwks_file = ${tomlString(jwksFile)}`,
    `issuer = ${tomlString(issuer)}`,
    `audiences = [${tomlString(audience)}]`,
    authConfig ?? '',
    '[audit]',
    `signing_key = ${tomlString(path.join(CERTS_DIR, 'audit-key.pem'))}`,
    extraConfig ?? '',
    '',
  ].join('\n');
}

/** A port that is free on 127.0.0.1 right now (the kernel picks it; we release it at once). */
export function freeLoopbackPort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
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
  constructor({ child, exited, port, dataDir, tmpDir, bin, jwksFile, seed }) {
    this.child = child;
    this.pid = child.pid;
    this.port = port;
    this.bin = bin;
    this.dataDir = dataDir;
    this.tmpDir = tmpDir;
    const { baseUrl, audience, issuer } = identityFor(port);
    this.baseUrl = baseUrl;
    /** What the gateway accepts in `aud` and `iss`; gw.token() uses them by default. */
    this.audience = audience;
    this.issuer = issuer;
    this.jwksFile = jwksFile;
    /** With startGateway({ seedPatients }): what was imported (see seedLocator). */
    this.seed = seed;
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
   * except Host, and Content-Length when there is a body; `token` adds
   * Authorization: Bearer). Resolves to { status, headers, text, json } where json is the
   * parsed body or undefined.
   */
  request(method, urlPath, { headers = {}, body, token } = {}) {
    if (token !== undefined) headers = { authorization: `Bearer ${token}`, ...headers };
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
    const { requestOptions, token, ...rest } = config;
    // fhir-kit-client's own option: it sends Authorization: Bearer <token> on every request.
    if (token !== undefined) rest.bearerToken = token;
    return new Client({ baseUrl: this.baseUrl, ...rest, requestOptions: { dispatcher: this.dispatcher, ...requestOptions } });
  }

  /**
   * A bearer token from mint-token (bounded run), signed with certs/token-key.pem unless
   * `key` names another PEM key, for this gateway's issuer and audience unless `iss`/`aud`
   * are given. Claims left undefined are not sent (mint-token omits them).
   */
  async token({ sub = 'interop-user', role = 'clinician', org, scope = 'user/*.rs', purpose, ttl = 600,
    iss = this.issuer, aud = this.audience, key = TOKEN_KEY_FILE, clientId = 'interop-tests', extraArgs = [] } = {}) {
    const args = ['--key', key, '--sub', sub, '--ttl', String(ttl), '--iss', iss, '--aud', aud];
    const optional = { '--role': role, '--org': org, '--scope': scope, '--purpose': purpose, '--client-id': clientId };
    for (const [flag, value] of Object.entries(optional)) {
      if (value !== undefined && value !== null) args.push(flag, String(value));
    }
    args.push(...extraArgs);
    const out = (await runTool(mintTokenBinary(), args, { what: 'mint-token', hint: 'build target mint-token, or set MINT_TOKEN_BIN' })).trim();
    if (!/^[\w-]+\.[\w-]+\.[\w-]+$/.test(out)) throw new Error(`mint-token printed something that is not a compact JWS: ${out.slice(0, 200)}`);
    return out;
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
        // The port picked before the start was taken in the meantime: try another one.
        err.portInUse = stderrLines.some((l) => /cannot listen on/.test(l) && /in use/i.test(l));
        finish(reject, err);
      });
    });
  });
}

/**
 * Writes synthetic patients into dataDir/locator.db before the gateway starts: synthpop
 * --format bundle into <tmpDir>/seed, then gw-locator import --source <source>. Resolves to
 * { dir, files, bundles, patients, pointers, importReport } where patients and pointers
 * are the generated Patient and DocumentReference resources (as synthpop wrote them; the
 * gateway assigns its own Patient ids, so find patients by NHS number).
 */
async function seedLocator({ tmpDir, dataDir, count, seed, practices, pointers, source }) {
  const dir = path.join(tmpDir, 'seed');
  const spArgs = ['--count', String(count), '--seed', String(seed), '--format', 'bundle', '--out', dir, '--quiet'];
  if (practices !== undefined) spArgs.push('--practices', String(practices));
  if (pointers !== undefined) spArgs.push('--pointers', String(pointers));
  await runTool(synthpopBinary(), spArgs, { timeoutMs: SEED_TIMEOUT_MS, what: 'synthpop', hint: 'build target synthpop, or set SYNTHPOP_BIN' });
  const files = (await fsp.readdir(dir)).filter((f) => f.endsWith('.json')).sort().map((f) => path.join(dir, f));
  if (files.length === 0) throw new Error(`synthpop wrote no bundle into ${dir}`);
  const importReport = await runTool(locatorCliBinary(), ['import', '--data', dataDir, '--source', source, '--quiet', ...files],
    { timeoutMs: SEED_TIMEOUT_MS, what: 'gw-locator', hint: 'build target gw-locator, or set GW_LOCATOR_BIN' });
  const bundles = await Promise.all(files.map(async (f) => JSON.parse(await fsp.readFile(f, 'utf8'))));
  const resources = bundles.flatMap((b) => (b.entry ?? []).map((e) => e.resource));
  return {
    dir,
    files,
    bundles,
    patients: resources.filter((r) => r?.resourceType === 'Patient'),
    pointers: resources.filter((r) => r?.resourceType === 'DocumentReference'),
    importReport,
  };
}

/**
 * Starts the gateway on 127.0.0.1 with a fresh data dir, on a port picked just before
 * (public_base_url, token audience and issuer name that port, so Bundle links work and
 * tokens from gw.token() are accepted). Authentication is on, trusting the JWKS of
 * certs/token-key.pem (written by mint-token --jwks into the temp dir).
 * options.seedPatients: N > 0 imports N synthpop patients (and their DocumentReference
 *   pointers) into the locator index first; seed (default 1), seedPractices, seedPointers
 *   and seedSource (default "SYNTHPOP") pass through. The result is gw.seed.
 * options.authConfig: TOML lines added inside [auth] (e.g. more keys, [auth.roles.x] tables).
 * options.extraConfig: TOML appended to the config (other sections).
 * options.onListening(child): called synchronously as soon as the line is read.
 * Resolves once the "listening" log line names the port (10 s at most).
 */
export async function startGateway({ extraConfig = '', authConfig = '', onListening, seedPatients = 0, seed = 1,
  seedPractices, seedPointers, seedSource = 'SYNTHPOP' } = {}) {
  ensureDevCerts();
  const bin = gatewayBinary();
  const tmpDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'fhir-gw-interop-'));
  const dataDir = path.join(tmpDir, 'data');
  const configFile = path.join(tmpDir, 'gateway.toml');
  const jwksFile = path.join(tmpDir, 'jwks.json');

  let launched;
  let port;
  let seeded;
  try {
    const jwks = await runTool(mintTokenBinary(), ['--key', TOKEN_KEY_FILE, '--jwks'],
      { what: 'mint-token', hint: 'build target mint-token, or set MINT_TOKEN_BIN' });
    if (!Array.isArray(JSON.parse(jwks).keys)) throw new Error(`mint-token --jwks printed no key set: ${jwks}`);
    await fsp.writeFile(jwksFile, jwks);

    if (seedPatients > 0) {
      seeded = await seedLocator({ tmpDir, dataDir, count: seedPatients, seed, practices: seedPractices,
        pointers: seedPointers, source: seedSource });
    }

    // The binary can be missing or busy (ETXTBSY) for a moment during a relink; the port
    // picked can be taken by someone else before the gateway binds it.
    const deadline = Date.now() + BINARY_WAIT_MS;
    for (let portAttempt = 1; ; ) {
      port = await freeLoopbackPort();
      await fsp.writeFile(configFile, configToml({ port, dataDir, jwksFile, authConfig, extraConfig }));
      await waitForBinary(bin);
      try {
        launched = await launch(bin, configFile, onListening);
        break;
      } catch (err) {
        if (err.portInUse && portAttempt < MAX_PORT_ATTEMPTS) {
          portAttempt += 1;
          continue;
        }
        if (!err.retryable || Date.now() >= deadline) throw err;
        await sleep(500);
      }
    }
  } catch (err) {
    if (!process.env.INTEROP_KEEP_TMP) await fsp.rm(tmpDir, { recursive: true, force: true });
    throw err;
  }
  const { child, exited, stderrLines, logs } = launched;
  if (launched.port !== port) {
    child.kill('SIGKILL');
    throw new Error(`gateway listens on port ${launched.port}, but was configured for ${port}`);
  }

  const gw = new Gateway({ child, exited, port, dataDir, tmpDir, bin, jwksFile, seed: seeded });
  gw.stderrLines = stderrLines; // same arrays: keep filling after start
  gw.logs = logs;
  return gw;
}
