// Every page at a phone's width (390x844, an iPhone 12-15): the demo page at
// / and each example page. None may be wider than the viewport (no
// sideways scrolling), and its key elements must be on screen, inside the
// viewport's width and not squeezed to nothing. Screenshots go to a fresh
// temporary directory, printed at the end, to look at.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { heraldBin, startHerald, launchBrowser } from './herald.mjs';
import { examples, examplePorts, startProcess } from './examples.mjs';

const WIDTH = 390;
const HEIGHT = 844;
const wait = { timeout: 10000 };
const shots = mkdtempSync(path.join(os.tmpdir(), 'herald-narrow-'));
after(() => process.stderr.write(`narrow-viewport screenshots: ${shots}\n`));

/**
 * Checks the page is no wider than the viewport and that each selector
 * matches elements that are visible, inside [0, WIDTH] and at least
 * `minWidth` px wide (default 1); saves a full-page screenshot.
 */
async function checkNarrow(page, name, selectors) {
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
  const scrollWidth = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(scrollWidth <= WIDTH, `${name}: the page is ${scrollWidth} px wide at a ${WIDTH} px viewport`);
  for (const [selector, minWidth = 1] of selectors) {
    const boxes = await page.$$eval(selector, (els) => els.map((el) => {
      const r = el.getBoundingClientRect();
      const style = getComputedStyle(el);
      return { left: r.left, right: r.right, width: r.width, height: r.height, hidden: style.visibility === 'hidden' || style.display === 'none' };
    }));
    assert.ok(boxes.length > 0, `${name}: no ${selector}`);
    for (const b of boxes) {
      assert.ok(!b.hidden && b.height > 0, `${name}: ${selector} is not shown`);
      assert.ok(b.width >= minWidth, `${name}: ${selector} is ${b.width.toFixed(1)} px wide (want ${minWidth})`);
      assert.ok(b.left >= -0.5 && b.right <= WIDTH + 0.5,
        `${name}: ${selector} spans ${b.left.toFixed(1)}..${b.right.toFixed(1)}, outside the ${WIDTH} px viewport`);
    }
  }
}

async function narrowPage(browser) {
  const page = await browser.newPage({ viewport: { width: WIDTH, height: HEIGHT }, deviceScaleFactor: 1 });
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(e.message));
  return page;
}

/** Runs an example's run.sh; resolves with {url, run}. */
async function runExample(name, env = {}) {
  const ports = await examplePorts(heraldBin());
  const run = startProcess(path.join(examples, name, 'run.sh'), [], { env: { ...ports.env, ...env } });
  const url = (await run.waitFor(/^Open http:\/\/\S+/, 30000)).match(/http:\/\/\S+/)[0];
  return { url, run };
}

test('narrow viewport: the demo page at /', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'herald-demo-'));
  const config = path.join(dir, 'herald.toml');
  writeFileSync(config, '[namespaces.news]\nhistory_size = 10\n');
  const herald = await startHerald(['--config', config]);
  const browser = await launchBrowser();
  try {
    const page = await narrowPage(browser);
    await page.goto(`http://${herald.http}/`);
    await page.waitForSelector('#conn-state[data-state="connected"]', wait);
    await page.waitForFunction(() => Number(document.getElementById('chart').dataset.points) >= 2, null, wait);
    // A subscription and a logged message, so the console's rows are drawn.
    await page.click('#sub-form button');
    await page.waitForSelector('#subs li[data-state="subscribed"]', wait);
    await page.fill('#pub-channel', 'demo.narrow');
    await page.click('#pub-form button');
    await page.waitForSelector('#log tr[data-channel="demo.narrow"]', wait);
    await checkNarrow(page, 'demo', [
      ['#conn-state'], ['#stat-published'], ['#stat-ws'], ['#chart', 200],
      ['#sub-target', 120], ['#sub-form button'], ['#pub-channel', 120], ['#pub-data', 120], ['#pub-form button'],
      ['#subs li'], ['#log tr[data-channel="demo.narrow"]', 200], ['#log tr[data-channel="demo.narrow"] td.data', 200],
    ]);
    assert.deepEqual(page.errors, []);
  } finally {
    await browser.close();
    await herald.stop();
  }
});

test('narrow viewport: examples/dashboard', async () => {
  const { url, run } = await runExample('dashboard', { INTERVAL: '0.25' });
  let browser;
  try {
    browser = await launchBrowser();
    const page = await narrowPage(browser);
    await page.goto(url);
    await page.waitForSelector('#state[data-state="connected"]', wait);
    await page.waitForFunction(() => Number(document.getElementById('cpu-chart').dataset.points) >= 3, null, wait);
    await checkNarrow(page, 'dashboard', [
      ['#state'], ['#cpu-value'], ['#mem-value'], ['#rps-value'],
      ['#cpu-chart', 200], ['#mem-chart', 200], ['#rps-chart', 200], ['#count'],
    ]);
    assert.deepEqual(page.errors, []);
  } finally {
    await browser?.close();
    await run.stop();
  }
});

test('narrow viewport: examples/chat', async () => {
  const { url, run } = await runExample('chat', { CHAT_JWT_SECRET: 'chat-narrow-test-secret' });
  let browser;
  try {
    browser = await launchBrowser();
    const page = await narrowPage(browser);
    await page.goto(url);
    await checkNarrow(page, 'chat-join', [['#nick', 120], ['#room', 120], ['#join-form button']]);
    await page.fill('#nick', 'narrow');
    await page.fill('#room', 'phones');
    await page.click('#join-form button');
    await page.waitForSelector('#state[data-state="connected"]', wait);
    await page.fill('#text', 'hello from a phone-sized window');
    await page.press('#text', 'Enter');
    await page.waitForSelector('.msg[data-user="narrow"]', wait);
    await checkNarrow(page, 'chat', [
      ['#state'], ['#messages', 200], ['#text', 150], ['#send-form button'], ['.msg[data-user="narrow"] .text'], ['#leave'],
    ]);
    assert.deepEqual(page.errors, []);
  } finally {
    await browser?.close();
    await run.stop();
  }
});

test('narrow viewport: examples/leaderboard', async (t) => {
  const { url, run } = await runExample('leaderboard');
  let browser;
  try {
    browser = await launchBrowser();
    const page = await narrowPage(browser);
    await page.goto(url);
    await page.waitForSelector('#state[data-state="connected"]', wait);
    await page.waitForFunction(() => document.querySelector('#board li') || document.getElementById('status').dataset.code, null, wait);
    if (await page.$eval('#status', (el) => el.dataset.code === '108')) {
      t.skip('leaderboards not enabled on this Herald (108)');
      return;
    }
    await page.waitForFunction(() => document.querySelectorAll('#board li').length === 10, null, wait);
    // Every row shows its rank, name, score bar (not squeezed away) and score.
    await checkNarrow(page, 'leaderboard', [
      ['#state'], ['#board .rank'], ['#board .name', 40], ['#board .track', 40], ['#board .score'],
    ]);
    assert.deepEqual(page.errors, []);
  } finally {
    await browser?.close();
    await run.stop();
  }
});
