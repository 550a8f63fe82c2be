#!/usr/bin/env node
// Derives this package's `wit/` from the repository's `wit/`: every file,
// against WASI 0.2.10 instead of 0.2.12. Functions build against the
// `function` world; the `node` world (with `wasmcloud:secrets` and
// `wasi:config/store`) is there for components that import those too.
//
// Why a copy at another version: ComponentizeJS's engine (StarlingMonkey)
// exports `wasi:http/incoming-handler@0.2.10`, and a world must name the
// version the engine exports. WASI 0.2.x releases differ only by additions
// marked `@since(version = 0.2.N)`, so the 0.2.10 text is the 0.2.12 text
// without what 0.2.11 and 0.2.12 added. A node links either version.
//
// `npm run sync:js-sdk` at the repository root runs this, then regenerates
// `types/`. `node scripts/sync-wit.mjs` rewrites `wit/`; with `--check` it changes
// nothing and exits 1 when `wit/` is not what it would write (a test runs
// that, so the copy cannot drift from the repository's WIT).

import { readFileSync, writeFileSync, readdirSync, mkdirSync, existsSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const FROM = '0.2.12';
const TO = '0.2.10';
const here = dirname(fileURLToPath(import.meta.url));
const source = join(here, '..', '..', '..', 'wit');
const target = join(here, '..', 'wit');
const check = process.argv.includes('--check');

/** Removes every item (with its doc comment) added after `TO`. */
function withoutLaterAdditions(text) {
  const lines = text.split('\n');
  const out = [];
  for (let i = 0; i < lines.length; i++) {
    const since = /^\s*@since\(version = 0\.2\.(\d+)\)\s*$/.exec(lines[i]);
    if (since && Number(since[1]) > Number(TO.split('.')[2])) {
      // Drop the doc comment above it, the attribute and the item (one line).
      while (out.length && /^\s*\/\/\//.test(out[out.length - 1])) out.pop();
      i += 1;
      continue;
    }
    out.push(lines[i]);
  }
  return out.join('\n');
}

/** Every `.wit` file under `dir`, as paths relative to it, sorted. */
function witFiles(dir, prefix = '') {
  const found = [];
  for (const entry of readdirSync(join(dir, prefix), { withFileTypes: true })) {
    const path = prefix ? `${prefix}/${entry.name}` : entry.name;
    if (entry.isDirectory()) found.push(...witFiles(dir, path));
    else if (entry.name.endsWith('.wit')) found.push(path);
  }
  return found.sort();
}

function derive() {
  const files = new Map();
  for (const name of witFiles(source)) {
    const text = readFileSync(join(source, name), 'utf8').replaceAll(`@${FROM}`, `@${TO}`);
    files.set(name, withoutLaterAdditions(text));
  }
  return files;
}

const header = (name) =>
  `// Derived from the repository's wit/${name} by guest-sdk/js/scripts/sync-wit.mjs: do not edit.\n`;

let stale = [];
const derived = derive();
// A file the repository no longer has must not linger in the copy.
if (existsSync(target)) {
  for (const name of witFiles(target)) {
    if (derived.has(name)) continue;
    stale.push(name);
    if (!check) rmSync(join(target, name));
  }
}
for (const [name, text] of derived) {
  const path = join(target, name);
  const wanted = header(name) + text;
  const current = existsSync(path) ? readFileSync(path, 'utf8') : null;
  if (current === wanted) continue;
  stale.push(name);
  if (!check) {
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, wanted);
  }
}
if (check && stale.length) {
  console.error(`guest-sdk/js/wit is out of date (${stale.join(', ')}): run node guest-sdk/js/scripts/sync-wit.mjs`);
  process.exit(1);
}
