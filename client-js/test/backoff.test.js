import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backoff, refreshDelay } from '../src/herald.js';

test('backoff stays within [0, min(max, min * 2^attempt)]', () => {
  const opts = { min: 100, max: 5000 };
  for (let attempt = 0; attempt < 40; attempt++) {
    const cap = Math.min(5000, 100 * 2 ** attempt);
    for (const r of [0, 0.25, 0.5, 0.999999]) {
      const d = backoff(attempt, opts, () => r);
      assert.ok(d >= 0 && d <= cap, `attempt ${attempt}, random ${r}: ${d} not in [0, ${cap}]`);
      assert.ok(Number.isInteger(d));
    }
    for (let i = 0; i < 50; i++) {
      const d = backoff(attempt, opts);
      assert.ok(d >= 0 && d <= cap, `attempt ${attempt}: ${d} not in [0, ${cap}]`);
    }
  }
});

test('backoff grows exponentially up to the cap, with full jitter', () => {
  const top = (attempt) => backoff(attempt, { min: 100, max: 5000 }, () => 0.999999);
  assert.equal(top(0), 99);
  assert.equal(top(1), 199);
  assert.equal(top(3), 799);
  assert.equal(top(6), 4999); // 6400 capped at 5000
  assert.equal(top(10_000), 4999); // 2^10000 is Infinity: still the cap
  assert.equal(backoff(5, { min: 100, max: 5000 }, () => 0), 0);
});

test('backoff has defaults and tolerates a negative attempt', () => {
  assert.ok(backoff(0) <= 500);
  assert.ok(backoff(100) <= 20000);
  assert.equal(backoff(-3, { min: 100, max: 1000 }, () => 0.999999), 99);
});

test('refreshDelay refreshes 10% ahead, at most 30 s and at least 1 s before expiry', () => {
  assert.equal(refreshDelay(100_000), 90_000); // 10%
  assert.equal(refreshDelay(3_600_000), 3_570_000); // 30 s cap
  assert.equal(refreshDelay(5_000), 4_000); // 1 s floor
  assert.equal(refreshDelay(500), 0); // already too late: now
  assert.equal(refreshDelay(-1000), 0);
});
