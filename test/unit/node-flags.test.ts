// The node flags meshgate runs with live in src/v8-tuning.ts (NODE_FLAGS); the three places that
// start node without importing it must say the same.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { NODE_FLAGS } from '../../src/v8-tuning';

const ROOT = path.resolve(__dirname, '../../..');
const read = (f: string) => fs.readFileSync(path.join(ROOT, f), 'utf8');

describe('node flags (bin/meshgate, npm start, the image)', () => {
  const flags = NODE_FLAGS.join(' ');

  it('bin/meshgate runs node with them', () => {
    assert.equal(read('bin/meshgate').split('\n')[0], `#!/usr/bin/env -S node ${flags}`);
  });

  it('npm start runs node with them', () => {
    const start = (JSON.parse(read('package.json')) as { scripts: Record<string, string> }).scripts['start'] ?? '';
    assert.ok(start.startsWith(`node ${flags} `), start);
  });

  it("the image's NODE_OPTIONS carries them", () => {
    const m = /^ENV .*NODE_OPTIONS=(?:"([^"]*)"|(\S+))/m.exec(read('Dockerfile'));
    assert.ok(m, 'no NODE_OPTIONS in the Dockerfile');
    assert.equal(m[1] ?? m[2], flags);
  });
});
