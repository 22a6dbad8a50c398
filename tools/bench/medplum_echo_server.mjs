// SPDX-License-Identifier: Apache-2.0
// The comparison side of tools/bench/mllp-ingest: an MLLP server built on the npm package
// @medplum/hl7 (its Hl7Connection, as Hl7Server uses it) that answers every message with an AA
// acknowledgement (Hl7Message.buildAck) and persists nothing. It shows what MLLP framing, HL7
// parsing and an ACK cost on node without any durability, so the gateway's figures have a
// floor to compare with. Prints "listening PORT" once bound; SIGTERM or SIGINT stops it.
//
//   node medplum_echo_server.mjs --modules DIR [--port N] [--host ADDR]
//     DIR: the folder `npm install --prefix DIR @medplum/hl7` installed into
//     N: 0 (the default) picks a free port
import { createRequire } from 'node:module';
import net from 'node:net';
import path from 'node:path';

function usage(message) {
  if (message) console.error(`medplum_echo_server: ${message}`);
  console.error('usage: node medplum_echo_server.mjs --modules DIR [--port N] [--host ADDR]');
  process.exit(message ? 2 : 0);
}

const args = { port: 0, host: '127.0.0.1' };
for (let i = 2; i < process.argv.length; i++) {
  const a = process.argv[i];
  if (a === '--help' || a === '-h') usage();
  const value = process.argv[++i];
  if (value === undefined) usage(`${a} needs a value`);
  if (a === '--modules') args.modules = value;
  else if (a === '--port') args.port = Number(value);
  else if (a === '--host') args.host = value;
  else usage(`unknown option ${a}`);
}
if (!args.modules) usage('--modules is required');
if (!Number.isInteger(args.port) || args.port < 0 || args.port > 65535) usage('--port must be 0..65535');

// Resolve packages from the scratch install, not from this repository.
const require = createRequire(path.join(path.resolve(args.modules), 'bench.cjs'));
const { Hl7Connection } = require('@medplum/hl7');

// What Hl7Server.start does (a net.Server handing each socket to an Hl7Connection), but bound
// to the loopback address only: Hl7Server.start listens on every interface.
let messages = 0;
let errors = 0;
const connections = new Set();
const server = net.createServer((socket) => {
  const connection = new Hl7Connection(socket, 'utf-8');
  connections.add(connection);
  connection.addEventListener('message', ({ message }) => {
    messages++;
    connection.send(message.buildAck());
  });
  connection.addEventListener('error', () => {
    errors++;
  });
  connection.addEventListener('close', () => connections.delete(connection));
});
server.listen(args.port, args.host, () => console.log(`listening ${server.address().port}`));

function stop() {
  console.log(`stopping: ${messages} messages acknowledged, ${errors} connection errors`);
  server.close(() => process.exit(0));
  for (const c of connections) c.close().catch(() => {});
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
