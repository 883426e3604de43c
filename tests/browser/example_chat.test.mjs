// examples/chat: two users in two browser pages, started with its one run
// command (Herald with chat.toml and a JWT secret, and the web server with
// the token endpoint). History on join, live messages, typing indicator,
// presence list and join/leave notices. The presence checks are skipped
// while Herald answers 108 (not enabled) to the `presence` op.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { heraldBin, launchBrowser, artifacts } from './herald.mjs';
import { examples, examplePorts, startProcess } from './examples.mjs';

const wait = { timeout: 10000 };

async function joinAs(browser, url, name, room) {
  const page = await browser.newPage({ viewport: { width: 1100, height: 700 } });
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(e.message));
  await page.goto(url);
  await page.fill('#nick', name);
  await page.fill('#room', room);
  await page.click('#join-form button');
  await page.waitForSelector('#state[data-state="connected"]', wait);
  await page.waitForSelector(`.notice:text("you joined #${room}")`, wait);
  // Presence was asked once the history was shown: either a list or a reason.
  await page.waitForFunction(() => document.querySelector('#presence li') || document.getElementById('presence-status').textContent, null, wait);
  return page;
}

const texts = (page, selector) => page.$$eval(selector, (els) => els.map((e) => e.querySelector('.text').textContent));

test('chat example: history on join, typing, presence and join/leave', async (t) => {
  const ports = await examplePorts(heraldBin());
  const run = startProcess(path.join(examples, 'chat', 'run.sh'), [], {
    env: { ...ports.env, CHAT_JWT_SECRET: 'chat-example-test-secret' },
  });
  let browser;
  try {
    const url = (await run.waitFor(/^Open http:\/\/\S+/, 30000)).match(/http:\/\/\S+/)[0];
    browser = await launchBrowser();

    // The token endpoint refuses a bad nickname, and the page says so.
    const bad = await browser.newPage();
    await bad.goto(url);
    await bad.fill('#nick', 'no spaces please');
    await bad.click('#join-form button');
    await bad.waitForFunction(() => /nickname/.test(document.getElementById('join-error').textContent), null, wait);
    await bad.close();

    // Alice opens the room and says three things.
    const alice = await joinAs(browser, url, 'alice', 'test');
    for (const line of ['hello 1', 'hello 2', 'hello 3']) {
      await alice.fill('#text', line);
      await alice.press('#text', 'Enter');
      await alice.waitForSelector(`.msg[data-user="alice"] .text:text-is("${line}")`, wait);
    }
    const presence = !(await alice.$('#presence-status[data-code="108"]'));
    if (!presence) t.diagnostic('Herald answers 108 to presence: presence checks skipped');

    // Bob joins: he sees the room's history, oldest first, marked as such.
    const bob = await joinAs(browser, url, 'bob', 'test');
    assert.deepEqual(await texts(bob, '.msg.history[data-user="alice"]'), ['hello 1', 'hello 2', 'hello 3']);
    const offsets = await bob.$$eval('.msg.history', (els) => els.map((e) => Number(e.dataset.offset)));
    assert.deepEqual(offsets, [...offsets].sort((a, b) => a - b), 'history in offset order');
    assert.ok(await bob.$('.divider:text("last 3 messages")'));

    await t.test('presence list and join notice', async (st) => {
      if (!presence) return st.skip('presence not enabled on this Herald (108)');
      await alice.waitForSelector('#presence li[data-user="bob"]', wait);
      await alice.waitForSelector('.notice:text("bob joined")', wait);
      await bob.waitForSelector('#presence li[data-user="alice"]', wait);
      assert.deepEqual(await bob.$$eval('#presence li', (els) => els.map((e) => e.dataset.user)), ['bob', 'alice']);
    });

    // Typing: Bob types, Alice sees it; his message then replaces it.
    await bob.type('#text', 'hi al', { delay: 20 });
    await alice.waitForFunction(() => document.getElementById('typing').textContent === 'bob is typing…', null, wait);
    assert.equal(await bob.textContent('#typing'), '', 'nobody sees their own typing');
    await bob.type('#text', 'ice');
    await bob.press('#text', 'Enter');
    await alice.waitForSelector('.msg:not(.history)[data-user="bob"] .text:text-is("hi alice")', wait);
    assert.equal(await alice.textContent('#typing'), '', 'the message ends the typing notice');
    // Typing notices are never shown as messages, live or from history.
    assert.equal((await texts(alice, '.msg')).length, 4);

    await alice.screenshot({ path: path.join(artifacts, 'example-chat-alice.png') });
    await bob.screenshot({ path: path.join(artifacts, 'example-chat-bob.png') });

    // A third user arriving later gets all four messages, and no typing.
    const carol = await joinAs(browser, url, 'carol', 'test');
    assert.deepEqual(await texts(carol, '.msg.history'), ['hello 1', 'hello 2', 'hello 3', 'hi alice']);
    await carol.close();

    // Bob closes his page: Alice is told, and her list shrinks.
    assert.deepEqual([...alice.errors, ...bob.errors], []);
    await bob.close();
    await t.test('leave notice when a page closes', async (st) => {
      if (!presence) return st.skip('presence not enabled on this Herald (108)');
      await alice.waitForSelector('.notice:text("bob left")', wait);
      await alice.waitForSelector('#presence li[data-user="bob"]', { state: 'detached', ...wait });
      await alice.screenshot({ path: path.join(artifacts, 'example-chat-after-leave.png') });
    });
  } finally {
    await browser?.close();
    await run.stop();
  }
});
