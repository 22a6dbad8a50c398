// SPDX-License-Identifier: Apache-2.0
// The comparison side of hl7v2_parse_bench: parses the same messages with the npm package
// @medplum/hl7 (its Hl7Message.parse, which lives in @medplum/core, a dependency of
// @medplum/hl7) for the same number of rounds on one thread and prints messages/s and MB/s.
// Input: the file `hl7v2_parse_bench --export FILE` writes ("<length>\n<bytes>\n" per
// message). Run through tools/bench/hl7v2-parse, which installs the package.
//
//   node hl7v2_medplum_parse.mjs --corpus FILE --modules DIR [--rounds N]
//     DIR: the folder `npm install --prefix DIR @medplum/hl7` installed into
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

function usage(message) {
  if (message) console.error(`hl7v2_medplum_parse: ${message}`);
  console.error('usage: node hl7v2_medplum_parse.mjs --corpus FILE --modules DIR [--rounds N]');
  process.exit(2);
}

const args = { rounds: 200 };
for (let i = 2; i < process.argv.length; i++) {
  const a = process.argv[i];
  if (a === '--help' || a === '-h') usage();
  const value = process.argv[++i];
  if (value === undefined) usage(`${a} needs a value`);
  if (a === '--corpus') args.corpus = value;
  else if (a === '--modules') args.modules = value;
  else if (a === '--rounds') args.rounds = Number(value);
  else usage(`unknown option ${a}`);
}
if (!args.corpus || !args.modules) usage('--corpus and --modules are required');
if (!Number.isInteger(args.rounds) || args.rounds < 1 || args.rounds > 100000) usage('--rounds must be 1..100000');

// Resolve packages from the scratch install, not from this repository.
const require = createRequire(path.join(path.resolve(args.modules), 'bench.cjs'));
const hl7Package = JSON.parse(
  readFileSync(path.join(path.resolve(args.modules), 'node_modules', '@medplum', 'hl7', 'package.json'), 'utf8'));
require('@medplum/hl7');
const { Hl7Message } = require('@medplum/core');

// Messages decoded to strings (and a leading BOM dropped, which Hl7Message.parse refuses)
// before timing: only parsing is timed.
const buf = readFileSync(args.corpus);
const messages = [];
let bytes = 0;
for (let pos = 0; pos < buf.length;) {
  const nl = buf.indexOf(0x0a, pos);
  if (nl < 0) break;
  const len = Number(buf.toString('latin1', pos, nl));
  let text = buf.toString('utf8', nl + 1, nl + 1 + len);
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  messages.push(text);
  bytes += len;
  pos = nl + 1 + len + 1;
}
if (messages.length === 0) usage(`no messages in ${args.corpus}`);

let sink = 0;
let failed = 0;
function round() {
  for (const m of messages) {
    try {
      sink += Hl7Message.parse(m).segments.length;
    } catch {
      failed++;
    }
  }
}
round();  // warm-up (JIT)
failed = 0;
const t0 = process.hrtime.bigint();
for (let r = 0; r < args.rounds; r++) round();
const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
const rate = (messages.length * args.rounds) / seconds;
const mb = (bytes * args.rounds) / seconds / 1e6;
console.log(`@medplum/hl7 ${hl7Package.version} on node ${process.version}: ${messages.length} messages, ${failed / args.rounds} refused per round`);
console.log(`parse:        ${rate.toFixed(0).padStart(10)} messages/s  ${mb.toFixed(1).padStart(8)} MB/s  (${args.rounds} rounds, ${seconds.toFixed(2)} s)`);
console.log(`RESULT messages_per_s=${rate.toFixed(0)} mb_per_s=${mb.toFixed(2)} messages=${messages.length} sink=${sink % 10}`);
