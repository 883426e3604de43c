// examples/cache-invalidation: a Python app (redis-py) and a Rust app (the
// redis crate), each with a local cache and subscribed to invalidate:* on
// Herald's RESP port. A write on one evicts the key from the other's cache,
// both ways. No browser here: the apps are driven on stdin/stdout.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { heraldBin, startHerald } from './herald.mjs';
import { examples, examplePorts, redisCli, startProcess, waitUntil } from './examples.mjs';

const dir = path.join(examples, 'cache-invalidation');
const rustApp = path.join(dir, 'rust-app', 'target', 'debug', 'cache-app');

// The Rust app is its own Cargo project with its own target directory: the
// first build compiles tokio and redis (a minute or two on 2 cores); later
// ones are no-ops.
test('cache-invalidation: the Rust app builds', { timeout: 15 * 60 * 1000 }, async () => {
  const build = startProcess('cargo', ['build', '--manifest-path', path.join(dir, 'rust-app', 'Cargo.toml'),
    '--target-dir', path.join(dir, 'rust-app', 'target')]);
  const { code } = await build.exited;
  assert.equal(code, 0, build.lines.join('\n'));
});

/** Sends a command and resolves with the app's first matching line after it. */
async function ask(app, command, expected, ms = 5000) {
  const mark = app.lines.length;
  app.send(command);
  return app.waitFor(expected, ms, mark);
}

test('cache-invalidation: a write on one app evicts the key on the other, across languages', async () => {
  const herald = await startHerald();
  const db = mkdtempSync(path.join(os.tmpdir(), 'cache-db-'));
  const url = `redis://${herald.resp}`;
  const py = startProcess('python3', [path.join(dir, 'python_app.py'), '--redis', url, '--db', db, '--name', 'python-app']);
  const rs = startProcess(rustApp, ['--redis', url, '--db', db, '--name', 'rust-app']);
  try {
    await py.waitFor(/^ready python-app$/);
    await rs.waitFor(/^ready rust-app$/);
    // Both are subscribed to invalidate:* on Herald: one pattern, two clients.
    assert.equal(redisCli(herald.resp, 'PUBSUB', 'NUMPAT'), '1');
    assert.equal(redisCli(herald.resp, 'CLIENT', 'LIST').split('\n').filter((l) => / psub=1 /.test(l)).length, 2);

    // Python writes; Rust reads from the database, then from its cache.
    await ask(py, 'set user:1 Ada', /^stored user:1$/);
    await ask(rs, 'get user:1', /^value user:1 Ada \(db\)$/);
    await ask(rs, 'get user:1', /^value user:1 Ada \(cache\)$/);

    // Python writes again: Rust hears invalidate:user:1 and evicts its copy.
    const mark = rs.lines.length;
    await ask(py, 'set user:1 Grace', /^stored user:1$/);
    await rs.waitFor(/^evicted user:1 by python-app$/, 5000, mark);
    await ask(rs, 'get user:1', /^value user:1 Grace \(db\)$/);

    // The other way round: Rust writes, Python (which cached its own write) evicts.
    await ask(py, 'get user:1', /^value user:1 Grace \(cache\)$/);
    const pyMark = py.lines.length;
    await ask(rs, 'set user:1 Barbara', /^stored user:1$/);
    assert.equal(await py.waitFor(/^evicted /, 5000, pyMark), 'evicted user:1 by rust-app');
    await ask(py, 'get user:1', /^value user:1 Barbara \(db\)$/);

    // Each app ignores its own invalidations: Rust still serves its write from cache.
    await ask(rs, 'get user:1', /^value user:1 Barbara \(cache\)$/);

    // An invalidation from any Redis client works too.
    await ask(rs, 'get user:1', /cache/);
    const m = rs.lines.length;
    redisCli(herald.resp, 'PUBLISH', 'invalidate:user:1', 'redis-cli');
    await rs.waitFor(/^evicted user:1 by redis-cli$/, 5000, m);
  } finally {
    await py.stop();
    await rs.stop();
    await herald.stop();
    rmSync(db, { recursive: true, force: true });
  }
});

test('cache-invalidation: the run script plays the scenario and says OK', async () => {
  const ports = await examplePorts(heraldBin());
  const run = startProcess(path.join(dir, 'run.sh'), [], { env: ports.env });
  try {
    const { code } = await Promise.race([
      run.exited,
      new Promise((_, reject) => setTimeout(() => reject(new Error(`run.sh did not finish:\n${run.lines.join('\n')}`)), 60000).unref()),
    ]);
    assert.equal(code, 0, run.lines.join('\n'));
    assert.ok(run.lines.some((l) => l.startsWith('OK: each write evicted')), run.lines.join('\n'));
    assert.ok(run.lines.some((l) => /rust < evicted product:42 by python-app/.test(l)));
    assert.ok(run.lines.some((l) => /python < evicted product:42 by rust-app/.test(l)));
  } finally {
    await run.stop();
  }
  // run.sh stopped its Herald: the port is free again.
  await waitUntil(async () => {
    try { redisCli(`127.0.0.1:${ports.RESP_PORT}`, 'PING'); return false; } catch { return true; }
  }, 5000, 'run.sh to stop Herald');
});
