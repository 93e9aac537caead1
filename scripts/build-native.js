#!/usr/bin/env node
// `npm install` / `npm ci`: build the SO_ORIGINAL_DST addon (native/origdst) with npm's own node-gyp
// against the running Node's headers (never downloading any). A failed build never fails the
// install: the gateway works without it, and sidecar capture says clearly what is missing.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const dir = path.join(__dirname, '..', 'native', 'origdst');
const nodedir = path.resolve(path.dirname(process.execPath), '..');
const say = (msg) => process.stderr.write(`meshgate: ${msg}\n`);

if (process.platform !== 'linux') {
  say('SO_ORIGINAL_DST addon skipped (Linux only); sidecar capture needs it');
  process.exit(0);
}
if (!fs.existsSync(path.join(nodedir, 'include', 'node', 'node_api.h'))) {
  say(`SO_ORIGINAL_DST addon skipped: no Node headers under ${nodedir}/include/node`);
  process.exit(0);
}
// npm tells its scripts where its own node-gyp is; run by hand, look where npm keeps it.
const bundled = path.join(nodedir, 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
const gyp = process.env.npm_config_node_gyp || (fs.existsSync(bundled) ? bundled : undefined);
const [cmd, args] = gyp ? [process.execPath, [gyp]] : ['node-gyp', []];
const r = spawnSync(cmd, [...args, 'rebuild', `--nodedir=${nodedir}`, '--loglevel=warn'], { cwd: dir, stdio: 'inherit' });
if (r.status !== 0) say('SO_ORIGINAL_DST addon did not build; the gateway works, sidecar capture will report it missing');
process.exit(0);
