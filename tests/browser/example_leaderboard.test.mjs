// examples/leaderboard: a redis-py producer runs ZINCRBY on game:scores and
// the page follows the top 10 with the client's leaderboard(). Skipped while
// Herald answers 108 (not enabled) to leaderboard_subscribe.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { heraldBin, launchBrowser, artifacts } from './herald.mjs';
import { examples, examplePorts, redisCli, startProcess } from './examples.mjs';

test('leaderboard example: the top 10 follows ZINCRBY live', async (t) => {
  const ports = await examplePorts(heraldBin());
  const run = startProcess(path.join(examples, 'leaderboard', 'run.sh'), [], { env: ports.env });
  let browser;
  try {
    const url = (await run.waitFor(/^Open http:\/\/\S+/, 30000)).match(/http:\/\/\S+/)[0];
    browser = await launchBrowser();
    const page = await browser.newPage({ viewport: { width: 800, height: 720 } });
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(url);
    await page.waitForSelector('#state[data-state="connected"]', { timeout: 10000 });

    // Either rows arrive, or the page reports why not.
    await page.waitForFunction(() => document.querySelector('#board li') || document.getElementById('status').dataset.code,
      null, { timeout: 10000 });
    const code = await page.$eval('#status', (el) => el.dataset.code);
    if (code === '108') {
      await page.screenshot({ path: path.join(artifacts, 'example-leaderboard-108.png') });
      t.skip('leaderboards not enabled on this Herald (108)');
      return;
    }
    assert.equal(code, undefined, await page.textContent('#status'));

    // Ten rows, best first, and they keep moving (the producer scores every 100 ms).
    await page.waitForFunction(() => document.querySelectorAll('#board li').length === 10, null, { timeout: 10000 });
    const read = () => page.$$eval('#board li', (lis) => lis.map((li) => ({ member: li.dataset.member, score: Number(li.dataset.score) })));
    const first = await read();
    const scores = first.map((e) => e.score);
    assert.deepEqual(scores, [...scores].sort((a, b) => b - a), 'best first');
    const updates = Number((await page.textContent('#updates')).replace(/\D/g, ''));
    await page.waitForFunction((n) => Number(document.getElementById('updates').textContent.replace(/\D/g, '')) >= n + 3,
      updates, { timeout: 10000 });
    const later = await read();
    assert.notDeepEqual(later, first, 'the board changed');
    const total = (entries) => entries.reduce((a, e) => a + e.score, 0);
    assert.ok(total(later) > total(first), 'scores only grow');

    // The page agrees with the sorted set itself (read over RESP).
    const zset = redisCli(`127.0.0.1:${ports.RESP_PORT}`, 'ZREVRANGE', 'game:scores', '0', '19').split('\n');
    for (const { member } of later) assert.ok(zset.includes(member), `${member} is in game:scores`);

    await page.screenshot({ path: path.join(artifacts, 'example-leaderboard.png') });
    assert.deepEqual(errors, []);
  } finally {
    await browser?.close();
    await run.stop();
  }
});
