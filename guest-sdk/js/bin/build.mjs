#!/usr/bin/env node
// keyhole-build-js: builds a Keyhole function written in JavaScript or
// TypeScript into a WebAssembly component.
//
//   keyhole-build-js [ENTRY] [-o OUT] [--world function|node]
//
// ENTRY defaults to src/index.ts or src/index.js; OUT to the `component`
// path of ./keyhole.toml. The world is `function` (wasi:http and
// keyhole:secrets); `node` adds wasmcloud:secrets and wasi:config/store. The entry is bundled with esbuild (imports of
// `keyhole:` and `wasi:` interfaces stay imports), then ComponentizeJS
// makes it a component of that world. The component is
// written whole or not at all (a watcher never sees half a file).

import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const sdk = join(dirname(fileURLToPath(import.meta.url)), '..');

/** A refusal to build: its message is all the user needs to see. */
class BuildError extends Error {}

function fail(message) {
  throw new BuildError(message);
}

function parseArgs(argv) {
  let entry = null;
  let out = null;
  let world = 'function';
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '-o' || arg === '--out') {
      out = argv[++i] ?? fail(`${arg} needs a path`);
    } else if (arg === '--world') {
      world = argv[++i];
      if (world !== 'function' && world !== 'node') fail(`--world is function or node, not ${JSON.stringify(world ?? '')}`);
    } else if (arg === '-h' || arg === '--help') {
      console.log('usage: keyhole-build-js [ENTRY] [-o OUT] [--world function|node]\n  ENTRY: src/index.ts or src/index.js by default\n  OUT: the `component` path of ./keyhole.toml by default\n  --world: function (default: wasi:http and keyhole:secrets) or node (adds wasmcloud:secrets and wasi:config/store)');
      process.exit(0);
    } else if (arg.startsWith('-')) {
      fail(`unknown option ${arg} (see --help)`);
    } else if (entry === null) {
      entry = arg;
    } else {
      fail(`one entry file only (got ${entry} and ${arg})`);
    }
  }
  entry ??= ['src/index.ts', 'src/index.js'].find((p) => existsSync(p)) ?? fail('no entry: give one, or write src/index.js (or src/index.ts)');
  if (!existsSync(entry)) fail(`${entry}: no such file`);
  out ??= componentFromManifest();
  return { entry: resolve(entry), out: resolve(out), world };
}

/** The `component = "…"` path of ./keyhole.toml. */
function componentFromManifest() {
  if (!existsSync('keyhole.toml')) fail('no keyhole.toml here to say where the component goes: give -o OUT');
  const line = /^\s*component\s*=\s*"([^"]+)"\s*(#.*)?$/m.exec(readFileSync('keyhole.toml', 'utf8'));
  if (!line) fail('keyhole.toml names no `component = "…"` path: give -o OUT');
  return line[1];
}

async function main() {
  const { entry, out, world } = parseArgs(process.argv.slice(2));
  const work = mkdtempSync(join(tmpdir(), 'keyhole-build-js-'));
  try {
    const bundled = join(work, 'function.js');
    const esbuild = await import('esbuild');
    try {
      await esbuild.build({
        entryPoints: [entry],
        bundle: true,
        format: 'esm',
        platform: 'neutral',
        mainFields: ['module', 'main'],
        target: 'es2022',
        external: ['keyhole:*', 'wasi:*', 'wasmcloud:*'],
        outfile: bundled,
        logLevel: 'silent',
      });
    } catch (error) {
      const messages = await esbuild.formatMessages(error.errors ?? [], { kind: 'error', color: false });
      fail(`bundling ${entry} failed:\n${messages.join('') || error.message}`);
    }
    const { componentize } = await import('@bytecodealliance/componentize-js');
    let component;
    try {
      ({ component } = await componentize({
        sourcePath: bundled,
        witPath: join(sdk, 'wit'),
        worldName: world,
      }));
    } catch (error) {
      fail(`making a component of ${entry} failed: ${error.message ?? error}`);
    }
    mkdirSync(dirname(out), { recursive: true });
    const partial = `${out}.partial`;
    writeFileSync(partial, component);
    renameSync(partial, out);
    console.log(`built ${out} (${Math.round(component.length / 1024)} KiB)`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

try {
  await main();
} catch (error) {
  if (!(error instanceof BuildError)) throw error;
  console.error(`keyhole-build-js: ${error.message}`);
  process.exitCode = 1;
}
