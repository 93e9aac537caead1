import assert from 'node:assert/strict';
import { restartDelayMs } from '../../src/workers';

describe('worker restarts', () => {
  it('wait 1 s, then twice as long after each quick death, at most 30 s', () => {
    assert.deepEqual([0, 1, 2, 3, 4, 5, 6, 20].map(restartDelayMs), [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
  });
});
