// WebSocket blocked for the page (every /ws socket is closed by the route
// before it connects): client-js falls back to SSE (GET /sse, POST
// /sse/{session}) with the same API, receives live messages, and after the
// server cuts its stream (a slow-consumer cut-off, 3001) reconnects over
// SSE and recovers what it missed from the channel's history.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startHerald, launchBrowser } from './herald.mjs';
import { redisCli } from './examples.mjs';

const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>sse fallback</title>
<script type="module">
  import { Herald } from '/client/herald.js';
  window.got = [];
  window.disconnects = [];
  const herald = new Herald('ws://' + location.host + '/ws', { minReconnectDelay: 50, maxReconnectDelay: 200 });
  herald.on('disconnect', (d) => window.disconnects.push(d.code));
  const a = herald.subscribe('hist:a', (data) => window.got.push(data.n));
  herald.subscribe('bulk', () => {});
  window.ready = herald.connect().then(() => a.ready()).then(() => herald.publish('hist:a', { n: 1 }));
  window.herald = herald;
</script>
<body>sse fallback</body>`;

const until = async (page, fn, arg, what) => {
  try {
    await page.waitForFunction(fn, arg, { timeout: 15000 });
  } catch (e) {
    const state = await page.evaluate(() => ({ got: window.got, disconnects: window.disconnects, state: window.herald?.state }));
    throw new Error(`${what}: ${e.message}; page: ${JSON.stringify(state)}`);
  }
};

test('with WebSocket blocked the client runs over SSE, and recovers after the stream is cut', { timeout: 60000 }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'herald-sse-'));
  const config = path.join(dir, 'herald.toml');
  writeFileSync(config, '[namespaces.hist]\nhistory_size = 100\nhistory_ttl = "10m"\n');
  const herald = await startHerald(['--config', config, '--output-buffer-hard-limit', '64kb', '--output-buffer-soft-limit', '0']);
  const browser = await launchBrowser();
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    let wsTries = 0;
    await page.routeWebSocket(/\/ws$/, (ws) => {
      wsTries++;
      ws.close({ code: 1011, reason: 'blocked by the test' });
    });
    const sse = [];
    page.on('request', (r) => {
      const u = new URL(r.url());
      if (u.pathname.startsWith('/sse')) sse.push(`${r.method()} ${u.pathname === '/sse' ? '/sse' : '/sse/{session}'}`);
    });
    const base = `http://${herald.http}`;
    await page.goto(`${base}/healthz`);
    await page.setContent(PAGE, { waitUntil: 'load' });
    await until(page, () => window.got.length >= 1, null, 'own publish over SSE');

    // Live messages from another client.
    redisCli(herald.resp, 'PUBLISH', 'hist:a', '{"n":2}');
    redisCli(herald.resp, 'PUBLISH', 'hist:a', '{"n":3}');
    await until(page, () => window.got.length >= 3, null, 'live messages');

    // Cut: a message past the output hard limit ends the stream (3001);
    // what is published meanwhile comes back through recovery.
    redisCli(herald.resp, 'PUBLISH', 'bulk', JSON.stringify('x'.repeat(100 * 1024)));
    for (let n = 4; n <= 8; n++) redisCli(herald.resp, 'PUBLISH', 'hist:a', `{"n":${n}}`);
    await until(page, () => window.got.length >= 8 && window.disconnects.length >= 1, null, 'recovery after the cut');
    const out = await page.evaluate(() => ({ got: window.got, disconnects: window.disconnects, state: window.herald.state }));
    assert.deepEqual(out.got, [1, 2, 3, 4, 5, 6, 7, 8]);
    assert.equal(out.disconnects[0], 3001);
    assert.equal(out.state, 'connected');
    assert.ok(wsTries >= 1, 'the page tried WebSocket first');
    assert.ok(sse.filter((s) => s === 'GET /sse').length >= 2, `a second stream after the cut: ${sse}`);
    assert.ok(sse.includes('POST /sse/{session}'), `${sse}`);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    await herald.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
