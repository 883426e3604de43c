// examples/cluster: one redis-server and three Herald nodes started by its
// run command, each node with its own chat page. Alice chats on node 1,
// Bob on node 3: messages go both ways, each sees the other in presence,
// and /api/nodes on any node lists all three. Also the page at a phone's
// width (390 px) on node 3.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { heraldBin, launchBrowser, artifacts } from './herald.mjs';
import { examples, clusterPorts, startProcess, waitUntil } from './examples.mjs';

const wait = { timeout: 10000 };
const KEY = 'cluster-example-test-key';

async function joinAs(browser, url, name, room, viewport = { width: 1100, height: 700 }) {
  const page = await browser.newPage({ viewport, deviceScaleFactor: 1 });
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(e.message));
  await page.goto(url);
  await page.fill('#nick', name);
  await page.fill('#room', room);
  await page.click('#join-form button');
  await page.waitForSelector('#state[data-state="connected"]', wait);
  await page.waitForSelector(`.notice:text("you joined #${room}")`, wait);
  return page;
}

async function say(page, text) {
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
}

test('cluster example: chat pages on node 1 and node 3 talk and see each other', async () => {
  const ports = await clusterPorts(heraldBin());
  const run = startProcess(path.join(examples, 'cluster', 'run.sh'), [], {
    env: { ...ports.env, CHAT_JWT_SECRET: 'cluster-example-test-secret', CLUSTER_API_KEY: KEY },
  });
  let browser;
  try {
    await run.waitFor(/^Open two of the pages/, 60000);
    const urls = {};
    for (const l of run.lines) {
      const m = l.match(/^node(\d): open (http:\/\/\S+)/);
      if (m) urls[m[1]] = m[2];
    }
    assert.deepEqual(Object.keys(urls), ['1', '2', '3']);
    assert.ok(urls[1].includes(String(ports.WEB_PORT_1)) && urls[3].includes(String(ports.WEB_PORT_3)));

    // Every node lists the three once their heartbeats went round.
    for (const n of [1, 2, 3]) {
      await waitUntil(async () => {
        const r = await fetch(`http://127.0.0.1:${ports[`HTTP_PORT_${n}`]}/api/nodes`, { headers: { 'X-API-Key': KEY } });
        const v = await r.json();
        return v.nodes?.length === 3 && v.nodes[0].name === `node${n}`;
      }, 10000, `node${n} lists three nodes`);
    }

    browser = await launchBrowser();
    const alice = await joinAs(browser, urls[1], 'alice', 'lobby');
    const bob = await joinAs(browser, urls[3], 'bob', 'lobby');

    // Each sees the other in presence, though on another node.
    await alice.waitForSelector('#presence li[data-user="bob"]', wait);
    await bob.waitForSelector('#presence li[data-user="alice"]', wait);
    await alice.waitForSelector('.notice:text("bob joined")', wait);
    assert.deepEqual((await bob.$$eval('#presence li', (els) => els.map((e) => e.dataset.user))).sort(), ['alice', 'bob']);
    assert.deepEqual((await alice.$$eval('#presence li', (els) => els.map((e) => e.dataset.user))).sort(), ['alice', 'bob']);

    // Messages both ways.
    await say(alice, 'hello from node 1');
    await bob.waitForSelector('.msg[data-user="alice"] .text:text-is("hello from node 1")', wait);
    await say(bob, 'hello from node 3');
    await alice.waitForSelector('.msg[data-user="bob"] .text:text-is("hello from node 3")', wait);
    await say(alice, 'and back');
    await bob.waitForSelector('.msg[data-user="alice"] .text:text-is("and back")', wait);
    await alice.screenshot({ path: path.join(artifacts, 'example-cluster-alice-node1.png') });
    await bob.screenshot({ path: path.join(artifacts, 'example-cluster-bob-node3.png') });

    // A third user on node 2, at a phone's width: history from the
    // others' nodes, both in presence, and nothing wider than the screen.
    const carol = await joinAs(browser, urls[2], 'carol', 'lobby', { width: 390, height: 844 });
    await carol.waitForSelector('.msg.history[data-user="bob"]', wait);
    await carol.waitForSelector('#presence li[data-user="alice"]', wait);
    await carol.waitForSelector('#presence li[data-user="bob"]', wait);
    await carol.screenshot({ path: path.join(artifacts, 'example-cluster-carol-node2-narrow.png'), fullPage: true });
    const width = await carol.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= 390, `the page is ${width} px wide at a 390 px viewport`);
    for (const sel of ['#text', '#send-form button', '#messages', '#leave']) {
      const b = await carol.$eval(sel, (el) => { const r = el.getBoundingClientRect(); return { l: r.left, r: r.right, w: r.width }; });
      assert.ok(b.w > 0 && b.l >= -0.5 && b.r <= 390.5, `${sel} spans ${b.l}..${b.r}`);
    }

    // Bob leaves: Alice, on another node, is told.
    await bob.close();
    await alice.waitForSelector('.notice:text("bob left")', wait);
    await alice.waitForSelector('#presence li[data-user="bob"]', { state: 'detached', ...wait });
    assert.deepEqual([...alice.errors, ...carol.errors], []);
  } finally {
    await browser?.close();
    const status = await run.stop();
    // Ctrl-C (here SIGTERM to the group) stops Redis and every node.
    assert.ok(status.code !== null || status.signal, 'run.sh ended');
  }
});
