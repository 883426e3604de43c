// The client's browser script (client-js/dist/herald.min.js, which Herald
// serves at /client/herald.min.js) loaded by a plain <script> tag in
// Chromium: the global `Herald`, the publish queue, messages both ways,
// history pages, typed errors; and the ES module at /client/herald.js beside it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startHerald, launchBrowser } from './herald.mjs';
import { redisCli } from './examples.mjs';

const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>client script</title>
<script src="/client/herald.min.js"></script>
<script>
  window.run = async () => {
    const out = { global: typeof Herald, version: Herald.VERSION, same: Herald.Herald === Herald };
    out.codes = [Herald.HeraldError.TIMEOUT, Herald.HeraldError.QUEUE_FULL];
    const herald = new Herald('ws://' + location.host + '/ws', { maxQueuedPublishes: 3 });

    // While disconnected: queued (bounded), volatile dropped.
    const queued = [1, 2, 3].map((n) => herald.publish('hist:b', { n }));
    out.full = await herald.publish('hist:b', 4).catch((e) => [e.name, e.code]);
    out.volatile = await herald.publish('hist:b', 5, { volatile: true }).catch((e) => e.code);

    const news = [];
    const sub = herald.subscribe('news', (data, meta) => news.push([data, meta.channel]));
    out.connect = (await herald.connect()).version !== undefined;
    out.acks = await Promise.all(queued);
    await sub.ready();
    window.news = news;
    await herald.publish('news', { from: 'page' });

    for (let n = 4; n <= 25; n++) await herald.publish('hist:b', { n });
    out.pages = [];
    for await (const page of herald.historyPages('hist:b', { limit: 10 })) {
      out.pages.push(page.publications.map((p) => p.data.n));
    }
    out.notEnabled = await herald.presenceStats('news').catch((e) => e instanceof Herald.HeraldError && e.code);
    window.herald = herald;
    return out;
  };
</script>
<body>client script test</body>`;

test('the browser script in a plain <script> tag: global Herald, queue, messages, history pages', { timeout: 60000 }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'herald-script-'));
  const config = path.join(dir, 'herald.toml');
  writeFileSync(config, '[namespaces.hist]\nhistory_size = 100\n');
  const herald = await startHerald(['--config', config]);
  const browser = await launchBrowser();
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('console', (m) => {
      // Herald serves no /favicon.ico, which Chromium asks for by itself.
      if (m.type() === 'error' && !m.location().url.endsWith('/favicon.ico')) errors.push(m.text());
    });
    const base = `http://${herald.http}`;
    const script = await page.request.get(`${base}/client/herald.min.js`);
    assert.equal(script.status(), 200);
    assert.match(script.headers()['content-type'], /^text\/javascript/);
    assert.match(await script.text(), /^\/\*! @heraldhub\/client /);

    // The test page is written into a document of Herald's own origin (so
    // its WebSocket is same-origin, and Chromium sees a local page reach a
    // local server); its <script src> tag loads as in any page.
    await page.goto(`${base}/healthz`);
    await page.setContent(PAGE, { waitUntil: 'load' });
    const out = await Promise.race([
      page.evaluate(() => window.run()),
      new Promise((_, reject) => setTimeout(() => reject(new Error(`the page did not finish; errors: ${errors}`)), 20000).unref()),
    ]);
    assert.deepEqual(out, {
      global: 'function',
      version: '0.1.0',
      same: true,
      codes: [1, 5],
      full: ['HeraldError', 5],
      volatile: 2,
      connect: true,
      acks: [{}, {}, {}],
      pages: [
        [25, 24, 23, 22, 21, 20, 19, 18, 17, 16],
        [15, 14, 13, 12, 11, 10, 9, 8, 7, 6],
        [5, 4, 3, 2, 1],
      ],
      notEnabled: 108,
    });

    // A message from RESP arrives beside the page's own.
    assert.equal(redisCli(herald.resp, 'PUBLISH', 'news', '{"from":"redis-cli"}'), '1');
    await page.waitForFunction(() => window.news.length === 2, null, { timeout: 5000 });
    assert.deepEqual(await page.evaluate(() => window.news), [
      [{ from: 'page' }, 'news'],
      [{ from: 'redis-cli' }, 'news'],
    ]);

    // The ES module beside it is the same client.
    const moduleVersion = await page.evaluate(async () => (await import('/client/herald.js')).VERSION);
    assert.equal(moduleVersion, '0.1.0');
    await page.evaluate(() => window.herald.disconnect());
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    await herald.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
