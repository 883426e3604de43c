// End-to-end tests against the real Herald binary (target/debug/herald, or
// $HERALD_BIN), with the `ws` package injected as the WebSocket: Node 20 has
// no global WebSocket. Skipped, with a note, when the binary is not built.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { Herald, HeraldError } from '../src/herald.js';
import { startHerald, respPublish, respCommand, jwt, nowSeconds, haveHerald, heraldBin } from '../testkit/herald-process.js';
import { until, record, sleep } from '../testkit/fake-server.js';

const skip = haveHerald() ? false : `no Herald binary at ${heraldBin()} (cargo build first)`;

const clients = [];
function client(url, opts = {}) {
  const herald = new Herald(url, { websocket: WebSocket, minReconnectDelay: 20, maxReconnectDelay: 200, timeout: 3000, ...opts });
  clients.push(herald);
  return herald;
}

/** Resolves with the next `count` messages of a subscription callback. */
function inbox() {
  const got = [];
  const fn = (data, meta) => got.push({ data, ...meta });
  return { got, fn, wait: (n, ms = 3000) => until(() => got.length >= n, ms, `${n} messages`) };
}

let server;
before(async () => {
  if (!skip) server = await startHerald();
});
after(async () => {
  for (const c of clients) c.disconnect();
  await server?.stop();
});

test('connects anonymously and receives messages published over RESP', { skip }, async () => {
  const herald = client(server.url);
  const result = await herald.connect();
  assert.equal(typeof result.client, 'string');
  assert.equal(result.user, null);
  assert.equal(typeof result.version, 'string');

  const box = inbox();
  const sub = herald.subscribe('news', box.fn);
  await sub.ready();
  assert.equal(await respPublish(server.resp, 'news', '{"title":"hi"}'), 1);
  await respPublish(server.resp, 'news', 'plain text');
  await respPublish(server.resp, 'news', Buffer.from([0xff, 0x00, 0x01]));
  await box.wait(3);
  assert.deepEqual(box.got[0], { data: { title: 'hi' }, channel: 'news', offset: undefined, encoding: undefined });
  assert.equal(box.got[1].data, 'plain text');
  assert.deepEqual([box.got[2].data, box.got[2].encoding], ['/wAB', 'base64']);
  herald.disconnect();
});

test('a publish from one client reaches another, by channel and by pattern', { skip }, async () => {
  const alice = client(server.url);
  const bob = client(server.url);
  await Promise.all([alice.connect(), bob.connect()]);
  const exact = inbox();
  const glob = inbox();
  const subs = [bob.subscribe('room.1', exact.fn), bob.psubscribe('room.*', glob.fn)];
  await Promise.all(subs.map((s) => s.ready()));

  assert.deepEqual(await alice.publish('room.1', { text: 'hello', n: 1 }), {});
  await exact.wait(1);
  await glob.wait(1);
  assert.deepEqual(exact.got[0].data, { text: 'hello', n: 1 });
  assert.deepEqual(glob.got[0], { data: { text: 'hello', n: 1 }, channel: 'room.1', pattern: 'room.*', offset: undefined, encoding: undefined });

  await alice.publish('room.2', 'only the pattern');
  await glob.wait(2);
  assert.equal(glob.got[1].channel, 'room.2');
  assert.equal(exact.got.length, 1);
  alice.disconnect();
  bob.disconnect();
});

test('reconnects and resubscribes after the socket is closed under it', { skip }, async () => {
  const herald = client(server.url);
  const disconnects = record(herald, 'disconnect');
  await herald.connect();
  const box = inbox();
  const pbox = inbox();
  const sub = herald.subscribe('drop:1', box.fn);
  const psub = herald.psubscribe('drop:p*', pbox.fn);
  await Promise.all([sub.ready(), psub.ready()]);
  const first = herald.connection.client;

  herald._ws.close(); // the transport goes away without disconnect()
  await until(() => sub.state === 'subscribing');
  await until(() => herald.state === 'connected' && sub.state === 'subscribed' && psub.state === 'subscribed', 5000);
  assert.notEqual(herald.connection.client, first);
  assert.equal(disconnects[0].reconnect, true);

  assert.equal(await respPublish(server.resp, 'drop:1', '"back"'), 1);
  assert.equal(await respPublish(server.resp, 'drop:pz', '"back-p"'), 1);
  await box.wait(1);
  await pbox.wait(1);
  assert.equal(box.got[0].data, 'back');
  assert.equal(pbox.got[0].data, 'back-p');
  herald.disconnect();
});

test('presence and history surface not_enabled (108) outside their namespaces', { skip }, async () => {
  const herald = client(server.url);
  await herald.connect();
  await assert.rejects(herald.presence('room'), (e) => e instanceof HeraldError && e.code === 108);
  await assert.rejects(herald.history('room', { limit: 10 }), { code: 108 });
  assert.equal(herald.state, 'connected');
  herald.disconnect();
});

test('a leaderboard paints its current top at once, then follows changes', { skip }, async () => {
  await respCommand(server.resp, ['ZADD', 'e2e:scores', '5', 'ann', '9', 'bob']);
  const herald = client(server.url);
  await herald.connect();
  const updates = [];
  const lb = herald.leaderboard('e2e:scores', 2, (entries) => updates.push(entries.map((e) => e.member)));
  await lb.ready();
  await until(() => updates.length >= 1, 3000, 'the initial top');
  assert.deepEqual(updates[0], ['bob', 'ann']);
  await respCommand(server.resp, ['ZADD', 'e2e:scores', '15', 'ann']);
  await until(() => updates.length >= 2, 3000, 'a pushed change');
  assert.deepEqual(updates.at(-1), ['ann', 'bob']);
  lb.unsubscribe();
  herald.disconnect();
});

test('the client ping op and the server pings keep a quiet connection alive', { skip }, async () => {
  const quick = await startHerald(['--ws-ping-interval', '100ms', '--ws-pong-timeout', '300ms']);
  try {
    const herald = client(quick.url, { pingInterval: 100, pongTimeout: 1000 });
    const disconnects = record(herald, 'disconnect');
    await herald.connect();
    await sleep(900);
    assert.equal(herald.state, 'connected');
    assert.deepEqual(disconnects, []);
    herald.disconnect();
  } finally {
    await quick.stop();
  }
});

test('a terminal disconnect (3502 message too big) does not reconnect', { skip }, async () => {
  const small = await startHerald(['--ws-max-message-size', '1kb']);
  try {
    const herald = client(small.url);
    const disconnects = record(herald, 'disconnect');
    await herald.connect();
    // The publish was in flight: the terminal disconnect ends it with its reason.
    await assert.rejects(herald.publish('big', 'x'.repeat(4096)), { code: HeraldError.DISCONNECTED, message: /too big/ });
    await until(() => herald.state === 'disconnected');
    assert.equal(disconnects[0].code, 3502);
    assert.equal(disconnects[0].reconnect, false);
    await sleep(300); // past several backoff periods
    assert.equal(herald.state, 'disconnected');
  } finally {
    await small.stop();
  }
});

test('survives a server restart (3000) and resubscribes on the new process', { skip }, async () => {
  let first = await startHerald();
  const herald = client(first.url, { minReconnectDelay: 50, maxReconnectDelay: 200 });
  const disconnects = record(herald, 'disconnect');
  await herald.connect();
  const box = inbox();
  const sub = herald.subscribe('restart', box.fn);
  await sub.ready();

  await first.stop();
  await until(() => herald.state === 'connecting');
  assert.deepEqual(disconnects[0], { code: 3000, reason: 'server shutting down', reconnect: true });

  const second = await startHerald(['--resp-addr', first.resp, '--http-addr', first.http]);
  try {
    await until(() => herald.state === 'connected' && sub.state === 'subscribed', 5000);
    assert.equal(await respPublish(second.resp, 'restart', '1'), 1);
    await box.wait(1);
    assert.equal(box.got[0].data, 1);
    herald.disconnect();
  } finally {
    await second.stop();
  }
});

test('JWT: authenticated connect, permissions, a refused token and a refresh', { skip }, async (t) => {
  const secret = 'test-secret';
  const auth = await startHerald(['--jwt-hmac-secret', secret, '--requirepass', 'backend-pw']);
  t.after(() => auth.stop());

  // A token whose claims limit subscribe and publish.
  const exp = nowSeconds() + 60;
  const token = jwt({ sub: 'alice', exp, subscribe: ['news.*'], publish: ['news.*'] }, secret);
  const alice = client(auth.url, { token });
  const result = await alice.connect();
  assert.equal(result.user, 'alice');
  assert.equal(result.expires, exp);
  const box = inbox();
  const ok = alice.subscribe('news.tech', box.fn);
  await ok.ready();
  const denied = alice.subscribe('admin', () => {});
  await assert.rejects(denied.ready(), { code: 103 });
  await assert.rejects(alice.publish('admin', 1), { code: 103 });
  await alice.publish('news.tech', 'mine');
  await box.wait(1);
  alice.disconnect();

  // A token signed with another secret: refused for good. The server ends
  // the connection: the connect error (102), then the terminal disconnect
  // (3500). When both frames arrive in one read, the disconnect push is
  // handled before the rejected reply's promise settles, so either code
  // may surface; both stop the client for good.
  const mallory = client(auth.url, { token: jwt({ sub: 'mallory', exp: nowSeconds() + 60 }, 'wrong') });
  const disconnects = record(mallory, 'disconnect');
  await assert.rejects(mallory.connect(), (err) => err.name === 'HeraldError' && [102, 3500].includes(err.code));
  assert.equal(mallory.state, 'disconnected');
  assert.ok([102, 3500].includes(disconnects[0].code), `disconnect code ${disconnects[0].code}`);

  // A token about to expire is refreshed through getToken before it does,
  // and the connection outlives the first token.
  const firstExp = nowSeconds() + 3;
  let fetched = 0;
  const bob = client(auth.url, {
    token: jwt({ sub: 'bob', exp: firstExp }, secret),
    getToken: async () => {
      fetched++;
      return jwt({ sub: 'bob', exp: nowSeconds() + 60 }, secret);
    },
  });
  const bobDisconnects = record(bob, 'disconnect');
  await bob.connect();
  const bobBox = inbox();
  await bob.subscribe('news.bob', bobBox.fn).ready();
  await until(() => fetched === 1, 4000, 'getToken called for the refresh');
  await until(() => Date.now() > firstExp * 1000 + 700, 5000, 'past the first expiry');
  assert.equal(bob.state, 'connected');
  assert.deepEqual(bobDisconnects, []);
  await respPublish(auth.resp, 'news.bob', '"still here"', 'backend-pw');
  await bobBox.wait(1);
  bob.disconnect();
});
