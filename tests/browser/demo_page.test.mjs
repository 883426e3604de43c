// The demo page at /: its dashboard follows GET /stats live, and its channel
// console receives what redis-cli publishes and what the console publishes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startHerald, launchBrowser, artifacts } from './herald.mjs';
import { redisCli } from './examples.mjs';

const number = (text) => Number(String(text).replace(/[^0-9.]/g, ''));

test('demo page: live dashboard and channel console', async () => {
  // One namespace with history, to see offsets in the console's log.
  const dir = mkdtempSync(path.join(os.tmpdir(), 'herald-demo-'));
  const config = path.join(dir, 'herald.toml');
  writeFileSync(config, '[namespaces.news]\nhistory_size = 10\n');
  const herald = await startHerald(['--config', config]);
  const browser = await launchBrowser();
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`http://${herald.http}/`);
    const wait = { timeout: 10000 };

    // The WebSocket client connected (anonymously) and says so.
    await page.waitForSelector('#conn-state[data-state="connected"]', wait);
    assert.match(await page.textContent('#conn-text'), /connected/);

    // The dashboard follows /stats: the page's own WebSocket is counted, and
    // counters published from RESP show up within a few polls.
    await page.waitForFunction(() => Number(document.getElementById('stat-ws').textContent) >= 1, null, wait);
    const before = number(await page.textContent('#stat-published'));
    for (let i = 0; i < 5; i++) redisCli(herald.resp, 'PUBLISH', 'nobody-listens', `ping ${i}`);
    await page.waitForFunction((n) => Number(document.getElementById('stat-published').textContent.replace(/,/g, '')) >= n,
      before + 5, wait);
    await page.waitForFunction(() => Number(document.getElementById('chart').dataset.points) >= 2, null, wait);
    assert.ok(await page.$('#chart polyline[data-series="pub"]'), 'the chart draws the publish rate');
    const uptime = await page.textContent('#stat-uptime');
    await page.waitForFunction((u) => document.getElementById('stat-uptime').textContent !== u, uptime, wait);

    // Console: subscribe to the prefilled pattern demo.* and to channel news:1.
    await page.click('#sub-form button');
    await page.waitForSelector('#subs li[data-name="demo.*"][data-state="subscribed"]', wait);
    await page.fill('#sub-target', 'news:1');
    await page.click('#sub-form button');
    await page.waitForSelector('#subs li[data-name="news:1"][data-state="subscribed"]', wait);
    await page.waitForFunction(() => /^1 pattern$/.test(document.getElementById('stat-patterns').textContent), null, wait);

    // A message from redis-cli arrives through the pattern.
    assert.equal(redisCli(herald.resp, 'PUBLISH', 'demo.cli', '{"from":"redis-cli","n":1}'), '1');
    const cliRow = await page.waitForSelector('#log tr[data-channel="demo.cli"]', wait);
    assert.match(await cliRow.textContent(), /\{"from":"redis-cli","n":1\}/);
    assert.match(await cliRow.textContent(), /via demo\.\*/);

    // One published from the console itself, as text, on a channel with
    // history: it comes back with its offset.
    await page.fill('#pub-channel', 'news:1');
    await page.selectOption('#pub-format', 'text');
    await page.fill('#pub-data', 'hello from the console');
    await page.click('#pub-form button[type="submit"]');
    const newsRow = await page.waitForSelector('#log tr[data-channel="news:1"]', wait);
    const cells = await newsRow.$$eval('td', (tds) => tds.map((td) => td.textContent));
    assert.equal(cells[2], '1', 'offset of the first message on news:1');
    assert.equal(cells[3], '"hello from the console"');
    await page.waitForFunction(() => /^published/.test(document.getElementById('pub-note').textContent), null, wait);

    // And JSON from the console through the pattern.
    await page.fill('#pub-channel', 'demo.console');
    await page.selectOption('#pub-format', 'json');
    await page.fill('#pub-data', '{"from": "console", "ok": true}');
    await page.click('#pub-form button[type="submit"]');
    const jsonRow = await page.waitForSelector('#log tr[data-channel="demo.console"]', wait);
    assert.match(await jsonRow.textContent(), /\{"from":"console","ok":true\}/);

    // Invalid JSON is refused in the page, with a note.
    await page.fill('#pub-data', '{not json');
    await page.click('#pub-form button[type="submit"]');
    await page.waitForFunction(() => /not JSON/.test(document.getElementById('pub-note').textContent), null, wait);

    await page.screenshot({ path: path.join(artifacts, 'demo-page.png'), fullPage: true });

    // Unsubscribe from the pattern: Herald forgets it, and its messages stop.
    await page.click('#subs li[data-name="demo.*"] button');
    await page.waitForSelector('#subs li[data-name="demo.*"]', { state: 'detached', ...wait });
    const numpat = Date.now() + 5000;
    while (redisCli(herald.resp, 'PUBSUB', 'NUMPAT') !== '0' && Date.now() < numpat) await page.waitForTimeout(50);
    assert.equal(redisCli(herald.resp, 'PUBSUB', 'NUMPAT'), '0');
    redisCli(herald.resp, 'PUBLISH', 'demo.cli', 'after unsubscribe');
    redisCli(herald.resp, 'PUBLISH', 'news:1', '"still subscribed"');
    await page.waitForFunction(() => /still subscribed/.test(document.getElementById('log').textContent), null, wait);
    assert.doesNotMatch(await page.textContent('#log'), /after unsubscribe/);

    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    await herald.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
