// The SSE transport against the real Herald binary, in Node (which has no
// EventSource: a small one over fetch stands in): the fallback when no
// WebSocket can open, token on the stream's URL, ops in order, a new session
// after the stream ends (recovery from history is in
// tests/browser/sse_fallback.test.mjs). Skipped, with a note, when the
// binary is not built.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Herald, HeraldError } from '../src/herald.js';
import { startHerald, respPublish, jwt, nowSeconds, haveHerald, heraldBin } from '../testkit/herald-process.js';
import { until } from '../testkit/fake-server.js';

const skip = haveHerald() ? false : `no Herald binary at ${heraldBin()} (cargo build first)`;
const SECRET = 'sse-js-secret';

/** Enough of EventSource for the client: `data:` events, onerror at the end; the open ones in `streams`. */
const streams = [];
class FetchEventSource {
  constructor(url) {
    this.url = url;
    this.onmessage = this.onerror = null;
    this._abort = new AbortController();
    streams.push(this);
    this._run().catch(() => {}).finally(() => this.onerror?.({}));
  }
  async _run() {
    const res = await fetch(this.url, { signal: this._abort.signal });
    if (res.status !== 200) return;
    const decoder = new TextDecoder();
    let buf = '';
    for await (const chunk of res.body) {
      buf += decoder.decode(chunk, { stream: true });
      let end;
      while ((end = buf.indexOf('\n\n')) >= 0) {
        const event = buf.slice(0, end);
        buf = buf.slice(end + 2);
        const data = event.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6));
        if (data.length) this.onmessage?.({ data: data.join('\n') });
      }
    }
  }
  close() {
    this.onmessage = this.onerror = null;
    this._abort.abort();
  }
}

/** A WebSocket that never opens (a network that blocks it). */
class BlockedWebSocket {
  static tries = 0;
  constructor() {
    BlockedWebSocket.tries++;
    setTimeout(() => this.onclose?.({ code: 1006, reason: 'blocked' }), 5);
  }
  send() {
    throw new Error('not open');
  }
  close() {}
}

let server;
const clients = [];
before(async () => {
  if (!skip) server = await startHerald(['--jwt-hmac-secret', SECRET, '--allow-anonymous', '--requirepass', 'pw']);
});
after(async () => {
  for (const c of clients) c.disconnect();
  await server?.stop();
});

function client(opts = {}) {
  const herald = new Herald(server.url, {
    websocket: BlockedWebSocket,
    eventsource: FetchEventSource,
    minReconnectDelay: 10,
    maxReconnectDelay: 50,
    timeout: 3000,
    ...opts,
  });
  clients.push(herald);
  return herald;
}

test('falls back to SSE, with the token on the URL, and resumes on a new stream after the stream ends', { skip }, async () => {
  const token = jwt({ sub: 'alice', exp: nowSeconds() + 600 }, SECRET);
  const herald = client({ token });
  const got = [];
  const sub = herald.subscribe('news', (data) => got.push(data));
  const result = await herald.connect();
  assert.equal(result.user, 'alice');
  assert.equal(typeof result.session, 'string');
  assert.ok(BlockedWebSocket.tries >= 1);
  assert.match(streams.at(-1).url, /^http:\/\/[^/]+\/sse\?token=/);
  await sub.ready();
  // Ops keep their order: the publishes' messages come back in it.
  await Promise.all([1, 2, 3].map((n) => herald.publish('news', n)));
  await until(() => got.length >= 3, 3000, 'own messages');
  assert.deepEqual(got, [1, 2, 3]);
  respPublish(server.resp, 'news', '4', 'pw');
  await until(() => got.length >= 4, 3000, 'a message from RESP');

  // The stream ends (as a proxy would cut it): a new stream, a new session.
  const first = result.session;
  streams.at(-1)._abort.abort();
  // Generous waits: the reconnect backs off, and CI runs test files in
  // parallel on two cores. The publish waits until the subscription is
  // confirmed on the new session (connected comes first).
  await until(() => herald.state === 'connected' && herald.connection.session !== first, 10000, 'a new session');
  await until(() => sub.state === 'subscribed', 10000, 'news subscribed again');
  await sub.ready();
  respPublish(server.resp, 'news', '5', 'pw');
  await until(() => got.length >= 5, 10000, 'messages on the new stream');
  assert.deepEqual(got, [1, 2, 3, 4, 5]);
});

test('a refused token over SSE stops the client with its code', { skip }, async () => {
  const herald = client({ token: jwt({ sub: 'mallory', exp: nowSeconds() + 600 }, 'wrong') });
  await assert.rejects(herald.connect(), (e) => e instanceof HeraldError && e.code === 3500);
  assert.equal(herald.state, 'disconnected');
});

test('only the transports asked for are used', { skip }, async () => {
  const herald = client({ transports: ['sse'], websocket: undefined });
  const before = BlockedWebSocket.tries;
  await herald.connect();
  assert.equal(BlockedWebSocket.tries, before);
  const none = new Herald(server.url, { transports: ['sse'] }); // Node 20: no EventSource
  await assert.rejects(none.connect(), TypeError);
});
