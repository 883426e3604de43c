// A browser app and a redis-py backend exchange messages through Herald,
// both ways, with the browser authenticated by a JWT on the WebSocket URL.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { startHerald, jwt, launchBrowser, spawnLines, artifacts } from './herald.mjs';

test('browser <-> redis-py through Herald with a JWT', async () => {
  const secret = 'browser-test-secret';
  const herald = await startHerald(['--jwt-hmac-secret', secret, '--requirepass', 'backend-pw']);
  const browser = await launchBrowser();
  try {
    const backend = spawnLines('python3', [
      path.join(import.meta.dirname, 'backend.py'),
      herald.resp.split(':')[1], 'backend-pw', 'chat:room1',
    ]);
    await backend.waitFor(/^ready$/);
    const page = await browser.newPage();
    await page.goto(`http://${herald.http}/`);
    const token = jwt({ sub: 'alice', exp: Math.floor(Date.now() / 1000) + 600,
      subscribe: ['chat:*'], publish: ['chat:*'] }, secret);
    const result = await page.evaluate(async (token) => {
      const ws = new WebSocket(`ws://${location.host}/ws?token=${token}`);
      const frames = [];
      await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
      const reply = (id) => new Promise((resolve) => {
        const check = () => { const f = frames.find((x) => x.id === id); if (f) resolve(f); else setTimeout(check, 10); };
        check();
      });
      ws.onmessage = (e) => frames.push(JSON.parse(e.data));
      ws.send(JSON.stringify({ id: 1, op: 'connect' }));
      const connected = await reply(1);
      ws.send(JSON.stringify({ id: 2, op: 'subscribe', channel: 'chat:room1' }));
      await reply(2);
      ws.send(JSON.stringify({ id: 3, op: 'publish', channel: 'chat:room1', data: { from: 'browser', text: 'hi backend' } }));
      await reply(3);
      const deadline = Date.now() + 10000;
      let answer;
      while (!answer && Date.now() < deadline) {
        answer = frames.find((f) => f.push === 'message' && f.data.from === 'backend');
        await new Promise((r) => setTimeout(r, 20));
      }
      document.body.innerHTML = `<h1>Herald browser test</h1><pre>${JSON.stringify(frames, null, 2)}</pre>`;
      return { user: connected.result.user, answer };
    }, token);
    assert.equal(result.user, 'alice');
    assert.deepEqual(result.answer?.data, { from: 'backend', text: 'hello browser' });
    assert.match(await backend.waitFor(/^got /), /"from": "browser"/);
    await page.screenshot({ path: path.join(artifacts, 'ws-redis-py.png') });
  } finally {
    await browser.close();
    await herald.stop();
  }
});
