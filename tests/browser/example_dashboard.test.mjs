// examples/dashboard: its one run command starts Herald, the redis-py
// publisher and the page's web server; the page's charts fill with metrics.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { heraldBin, launchBrowser, artifacts } from './herald.mjs';
import { examples, examplePorts, startProcess } from './examples.mjs';

test('dashboard example: live chart of metrics published with redis-py', async () => {
  const ports = await examplePorts(heraldBin());
  // Four messages a second instead of one: the charts fill in seconds.
  const run = startProcess(path.join(examples, 'dashboard', 'run.sh'), [], { env: { ...ports.env, INTERVAL: '0.25' } });
  let browser;
  try {
    const url = (await run.waitFor(/^Open http:\/\/\S+/, 30000)).match(/http:\/\/\S+/)[0];
    assert.equal(url, `http://127.0.0.1:${ports.WEB_PORT}/`);
    browser = await launchBrowser();
    const page = await browser.newPage({ viewport: { width: 1280, height: 640 } });
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(url);
    await page.waitForSelector('#state[data-state="connected"]', { timeout: 10000 });
    assert.equal(await page.textContent('#herald-url'), `http://127.0.0.1:${ports.HTTP_PORT}`);

    await page.waitForFunction(() => Number(document.getElementById('cpu-chart').dataset.points) >= 12, null, { timeout: 10000 });
    for (const key of ['cpu', 'mem', 'rps']) {
      assert.match(await page.textContent(`#${key}-value`), /^[0-9][0-9,.]*$/, `${key} shows a number`);
      assert.ok(await page.$(`#${key}-chart polyline`), `${key} chart has a line`);
    }
    const cpu = Number(await page.textContent('#cpu-value'));
    assert.ok(cpu >= 0 && cpu <= 100, `cpu ${cpu} is a percentage`);
    assert.match(await page.textContent('#count'), /^\d{2,} messages/);
    await page.screenshot({ path: path.join(artifacts, 'example-dashboard.png') });
    assert.deepEqual(errors, []);
  } finally {
    await browser?.close();
    const status = await run.stop();
    assert.equal(status.signal ?? null, null, 'run.sh exits by itself on SIGTERM, after stopping its children');
  }
});
