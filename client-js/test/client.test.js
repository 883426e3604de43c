// Unit tests of the client state machine against an in-process fake server:
// connect, reconnect, disconnect codes, tokens, liveness, call timeouts.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import Herald, { Herald as NamedHerald, HeraldError } from '../src/herald.js';
import { FakeServer, NO_REPLY, refuse, until, settle, record, sleep } from '../testkit/fake-server.js';

function client(server, opts = {}) {
  return new Herald('ws://herald.test/ws', {
    websocket: server.WebSocket,
    minReconnectDelay: 1,
    maxReconnectDelay: 4,
    timeout: 500,
    ...opts,
  });
}

const transitions = (states) => states.map((s) => `${s.previous}>${s.state}`);

test('Herald is both the default and a named export', () => {
  assert.equal(Herald, NamedHerald);
});

test('connect resolves with the connect result and sends connect first', async () => {
  const server = new FakeServer();
  const herald = client(server, { token: 'T', name: 'dash' });
  const connects = record(herald, 'connect');
  const result = await herald.connect();
  assert.equal(result.version, 'fake');
  assert.equal(herald.state, 'connected');
  assert.deepEqual(herald.connection, result);
  assert.deepEqual(connects, [result]);
  const [cmd] = server.commands;
  assert.equal(cmd.op, 'connect');
  assert.equal(cmd.token, 'T');
  assert.equal(cmd.name, 'dash');
  assert.equal(server.socket.url, 'ws://herald.test/ws');
  herald.disconnect();
});

test('the client state machine emits only on change', async () => {
  const server = new FakeServer();
  const herald = client(server);
  const states = record(herald, 'state');
  await Promise.all([herald.connect(), herald.connect()]);
  await herald.connect(); // already connected: no event

  // Failed attempts while reconnecting stay in `connecting`, silently.
  server.refusing = true;
  server.socket.drop();
  await until(() => server.sockets.length >= 4, 2000, 'several refused attempts');
  server.refusing = false;
  await until(() => herald.state === 'connected');

  herald.disconnect();
  herald.disconnect();
  assert.deepEqual(transitions(states), [
    'disconnected>connecting',
    'connecting>connected',
    'connected>connecting',
    'connecting>connected',
    'connected>disconnected',
  ]);
});

test('on() returns a function that removes the listener', async () => {
  const server = new FakeServer();
  const herald = client(server);
  let n = 0;
  const off = herald.on('state', () => n++);
  await herald.connect();
  off();
  herald.disconnect();
  assert.equal(n, 2);
});

test('a dropped connection reconnects and emits disconnect with reconnect: true', async () => {
  const server = new FakeServer();
  const herald = client(server);
  const disconnects = record(herald, 'disconnect');
  await herald.connect();
  server.socket.drop(1006, 'gone');
  await until(() => server.sockets.length === 2 && herald.state === 'connected');
  assert.deepEqual(disconnects, [{ code: 1006, reason: 'gone', reconnect: true }]);
  herald.disconnect();
  assert.deepEqual(disconnects[1], { code: 1000, reason: 'disconnect called', reconnect: false });
});

test('disconnect() from a disconnect listener stops the pending reconnect', async () => {
  const server = new FakeServer();
  const herald = client(server);
  await herald.connect();
  herald.on('disconnect', ({ reconnect }) => {
    if (reconnect) herald.disconnect();
  });
  server.socket.drop();
  await until(() => herald.state === 'disconnected');
  await sleep(30);
  assert.equal(server.sockets.length, 1);
  assert.equal(herald.state, 'disconnected');
});

test('a reconnect-advised disconnect push (3001) reconnects', async () => {
  const server = new FakeServer();
  const herald = client(server);
  const disconnects = record(herald, 'disconnect');
  await herald.connect();
  server.socket.disconnect(3001, 'slow consumer');
  await until(() => server.sockets.length === 2 && herald.state === 'connected');
  assert.deepEqual(disconnects, [{ code: 3001, reason: 'slow consumer', reconnect: true }]);
  herald.disconnect();
});

test('a terminal disconnect push (3500) stops without reconnecting', async () => {
  const server = new FakeServer();
  const herald = client(server);
  const disconnects = record(herald, 'disconnect');
  await herald.connect();
  server.socket.disconnect(3500, 'unauthorized');
  await until(() => herald.state === 'disconnected');
  await sleep(50); // many backoff periods: no new attempt
  assert.equal(server.sockets.length, 1);
  assert.deepEqual(disconnects, [{ code: 3500, reason: 'unauthorized', reconnect: false }]);
});

test('a terminal close code without a push (3502) also stops', async () => {
  const server = new FakeServer();
  const herald = client(server);
  await herald.connect();
  server.socket.drop(3502, 'message too big');
  await until(() => herald.state === 'disconnected');
  await sleep(30);
  assert.equal(server.sockets.length, 1);
});

test('a terminal disconnect while connecting rejects connect() with its code', async () => {
  const server = new FakeServer();
  server.handlers.connect = (cmd, socket) => {
    socket.disconnect(3500, 'unauthorized');
    return NO_REPLY;
  };
  const herald = client(server);
  await assert.rejects(herald.connect(), (err) => err instanceof HeraldError && err.code === 3500);
  assert.equal(herald.state, 'disconnected');
});

test('token expired (3002) asks getToken for a fresh token before reconnecting', async () => {
  const server = new FakeServer();
  let n = 0;
  const herald = client(server, { getToken: async () => `token-${++n}` });
  await herald.connect();
  assert.equal(server.received('connect')[0].token, 'token-1');
  server.socket.disconnect(3002, 'token expired');
  await until(() => server.sockets.length === 2 && herald.state === 'connected');
  assert.equal(n, 2);
  assert.equal(server.received('connect')[1].token, 'token-2');
  herald.disconnect();
});

test('token expired (3002) without getToken cannot reconnect: terminal', async () => {
  const server = new FakeServer();
  const herald = client(server, { token: 'static' });
  const disconnects = record(herald, 'disconnect');
  await herald.connect();
  server.socket.disconnect(3002, 'token expired');
  await until(() => herald.state === 'disconnected');
  assert.deepEqual(disconnects, [{ code: 3002, reason: 'token expired', reconnect: false }]);
  await sleep(20);
  assert.equal(server.sockets.length, 1);
});

test('connect error 104 (token_expired) gets a fresh token and retries', async () => {
  const server = new FakeServer();
  const connect = server.handlers.connect;
  server.handlers.connect = (cmd, socket) => (cmd.token === 'old' ? refuse(104, 'token expired') : connect(cmd, socket));
  let calls = 0;
  const herald = client(server, {
    token: 'old',
    getToken: async () => {
      calls++;
      return 'new';
    },
  });
  await herald.connect();
  assert.equal(calls, 1);
  assert.deepEqual(server.received('connect').map((c) => c.token), ['old', 'new']);
  herald.disconnect();
});

test('connect error 102 (unauthorized) is terminal and rejects connect()', async () => {
  const server = new FakeServer();
  server.handlers.connect = () => refuse(102, 'invalid token');
  const herald = client(server, { token: 'bad' });
  const disconnects = record(herald, 'disconnect');
  await assert.rejects(herald.connect(), { name: 'HeraldError', code: 102, message: 'invalid token' });
  assert.equal(herald.state, 'disconnected');
  assert.deepEqual(disconnects, [{ code: 102, reason: 'invalid token', reconnect: false }]);
  await sleep(20);
  assert.equal(server.sockets.length, 1);
});

test('getToken is called for the first connect when no token was given', async () => {
  const server = new FakeServer();
  const herald = client(server, { getToken: () => 'fetched' });
  await herald.connect();
  assert.equal(server.received('connect')[0].token, 'fetched');
  herald.disconnect();
});

test('getToken returning no token stops the client with 102', async () => {
  const server = new FakeServer();
  const herald = client(server, { getToken: async () => null });
  await assert.rejects(herald.connect(), { code: 102 });
  assert.equal(server.sockets.length, 0);
});

test('a throwing getToken is retried with backoff', async () => {
  const server = new FakeServer();
  let calls = 0;
  const herald = client(server, {
    getToken: async () => {
      if (++calls < 3) throw new Error('auth service down');
      return 'finally';
    },
  });
  const errors = record(herald, 'error');
  await herald.connect();
  assert.equal(calls, 3);
  assert.equal(errors.length, 2);
  assert.equal(server.received('connect')[0].token, 'finally');
  herald.disconnect();
});

test('refreshes the token through getToken before it expires', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 1_700_000_000_000 });
  const server = new FakeServer();
  const nowSec = () => Math.floor(Date.now() / 1000);
  server.handlers.connect = () => ({ client: '1', user: 'u', expires: nowSec() + 100, ping_interval: 0 });
  server.handlers.refresh = () => ({ expires: nowSec() + 100 });
  let n = 0;
  const herald = client(server, { getToken: async () => `token-${++n}` });
  herald.connect();
  await until(() => herald.state === 'connected');

  // 100 s left: refresh at 10% before expiry, i.e. after 90 s.
  t.mock.timers.tick(89_999);
  await settle();
  assert.equal(server.received('refresh').length, 0);
  t.mock.timers.tick(1);
  await until(() => server.received('refresh').length === 1);
  assert.equal(server.received('refresh')[0].token, 'token-2');

  // The new expiry schedules the next refresh.
  await settle();
  t.mock.timers.tick(90_000);
  await until(() => server.received('refresh').length === 2);
  assert.equal(server.received('refresh')[1].token, 'token-3');
  assert.equal(server.sockets.length, 1); // refreshed in place, no reconnect
  assert.equal(herald.state, 'connected');
  herald.disconnect();
});

test('a token valid for months is not refreshed at once (timer overflow)', async () => {
  // Real timers: setTimeout itself turns a delay past 2^31-1 ms into ~1 ms.
  const server = new FakeServer();
  server.handlers.connect = () => ({ client: '1', user: 'u', expires: Math.floor(Date.now() / 1000) + 100 * 86400, ping_interval: 0 });
  const herald = client(server, { getToken: async () => 'fresh' });
  await herald.connect();
  await sleep(50);
  assert.equal(server.received('refresh').length, 0);
  herald.disconnect();
});

test('no refresh without getToken or without expires', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 1_700_000_000_000 });
  const server = new FakeServer();
  server.handlers.connect = () => ({ client: '1', user: 'u', expires: Math.floor(Date.now() / 1000) + 10, ping_interval: 0 });
  const herald = client(server, { token: 'static' });
  herald.connect();
  await until(() => herald.state === 'connected');
  t.mock.timers.tick(20_000);
  await settle();
  assert.equal(server.received('refresh').length, 0);
  herald.disconnect();
});

test('calls that get no reply reject with a HeraldError timeout', async () => {
  const server = new FakeServer();
  server.handlers.publish = () => NO_REPLY;
  const herald = client(server, { publishTimeout: 50 });
  await herald.connect();
  const started = performance.now();
  await assert.rejects(herald.publish('news', 1), (err) => {
    assert.ok(err instanceof HeraldError);
    assert.equal(err.code, HeraldError.TIMEOUT);
    assert.match(err.message, /publish timed out after 50 ms/);
    return true;
  });
  assert.ok(performance.now() - started >= 45);
  assert.equal(herald.state, 'connected'); // a slow publish does not drop the connection
  herald.disconnect();
});

test('error replies reject with the protocol code and message', async () => {
  const server = new FakeServer();
  server.handlers.publish = () => refuse(103, 'permission denied');
  const herald = client(server);
  await herald.connect();
  await assert.rejects(herald.publish('admin', { a: 1 }), { name: 'HeraldError', code: 103, message: 'permission denied' });
  assert.deepEqual(
    server.received('publish').map(({ channel, data }) => ({ channel, data })),
    [{ channel: 'admin', data: { a: 1 } }],
  );
  herald.disconnect();
});

test('calls while disconnected reject at once; calls while connecting wait', async () => {
  const server = new FakeServer();
  server.handlers.presence = () => ({ clients: [], users: [] });
  const herald = client(server);
  await assert.rejects(herald.presence('a'), { code: HeraldError.DISCONNECTED });

  server.refusing = true;
  herald.connect();
  const pending = herald.presence('a');
  await until(() => server.sockets.length >= 2);
  server.refusing = false;
  assert.deepEqual(await pending, { clients: [], users: [] });
  assert.equal(server.received('presence')[0].channel, 'a');

  // Held calls are rejected when the client stops.
  server.refusing = true;
  server.socket.drop();
  await until(() => herald.state === 'connecting');
  const held = herald.presence('b');
  herald.disconnect();
  await assert.rejects(held, { code: HeraldError.DISCONNECTED });
});

test('a call in flight when the connection drops rejects with CONNECTION_CLOSED', async () => {
  const server = new FakeServer();
  server.handlers.presence = () => NO_REPLY;
  server.handlers.publish = () => NO_REPLY;
  const herald = client(server);
  await herald.connect();
  const call = herald.presence('a');
  const volatile = herald.publish('a', 1, { volatile: true });
  server.socket.drop();
  await assert.rejects(call, { code: HeraldError.CONNECTION_CLOSED });
  await assert.rejects(volatile, { code: HeraldError.CONNECTION_CLOSED });
  herald.disconnect();
});

test('a connect that gets no reply times out and is retried', async () => {
  const server = new FakeServer();
  const connect = server.handlers.connect;
  server.handlers.connect = (cmd, socket) => (server.sockets.length === 1 ? NO_REPLY : connect(cmd, socket));
  const herald = client(server, { timeout: 40 });
  const errors = record(herald, 'error');
  await herald.connect();
  assert.equal(server.sockets.length, 2);
  assert.equal(errors[0].code, HeraldError.TIMEOUT);
  assert.equal(server.sockets[0].readyState, 3); // the silent one was closed
  herald.disconnect();
});

test('ping: sends the ping op each interval and reconnects when no pong comes', async () => {
  const server = new FakeServer();
  const herald = client(server, { pingInterval: 10, pongTimeout: 30 });
  const disconnects = record(herald, 'disconnect');
  await herald.connect();
  await until(() => server.received('ping').length >= 3);
  assert.equal(server.sockets.length, 1);

  server.handlers.ping = () => NO_REPLY;
  await until(() => server.sockets.length === 2 && herald.state === 'connected');
  assert.equal(disconnects[0].code, HeraldError.TIMEOUT);
  assert.match(disconnects[0].reason, /no pong within 30 ms/);
  herald.disconnect();
});

test('ping interval defaults to the ping_interval of the connect reply', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const server = new FakeServer();
  server.handlers.connect = () => ({ client: '1', user: null, expires: null, ping_interval: 25 });
  const herald = client(server);
  herald.connect();
  await until(() => herald.state === 'connected');
  t.mock.timers.tick(24_999);
  await settle();
  assert.equal(server.received('ping').length, 0);
  t.mock.timers.tick(1);
  await until(() => server.received('ping').length === 1);
  herald.disconnect();
});

test('the online event skips the backoff wait', async (t) => {
  const target = new EventTarget();
  const removed = [];
  globalThis.addEventListener = target.addEventListener.bind(target);
  globalThis.removeEventListener = (type, fn) => {
    removed.push(type);
    target.removeEventListener(type, fn);
  };
  t.after(() => {
    delete globalThis.addEventListener;
    delete globalThis.removeEventListener;
  });
  t.mock.method(Math, 'random', () => 0.99); // a backoff of ~59 s
  const server = new FakeServer();
  const herald = client(server, { minReconnectDelay: 60_000, maxReconnectDelay: 60_000 });
  await herald.connect();
  server.socket.drop();
  await until(() => herald.state === 'connecting');
  await sleep(20);
  assert.equal(server.sockets.length, 1); // waiting out the backoff
  target.dispatchEvent(new Event('online'));
  await until(() => herald.state === 'connected');
  assert.equal(server.sockets.length, 2);
  herald.disconnect();
  assert.deepEqual(removed, ['online']);
});

test('message, join and leave pushes reach on() listeners', async () => {
  const server = new FakeServer();
  const herald = client(server);
  const messages = record(herald, 'message');
  const joins = record(herald, 'join');
  const leaves = record(herald, 'leave');
  await herald.connect();
  server.socket.push({ push: 'join', channel: 'room', user: 'ann', info: { n: 1 } });
  server.socket.push({ push: 'leave', channel: 'room', user: 'ann' });
  server.socket.push({ push: 'future', x: 1 });
  await until(() => messages.length === 3);
  assert.deepEqual(joins, [{ push: 'join', channel: 'room', user: 'ann', info: { n: 1 } }]);
  assert.deepEqual(leaves, [{ push: 'leave', channel: 'room', user: 'ann' }]);
  assert.equal(messages[2].push, 'future');
  herald.disconnect();
});

test('connect() without any WebSocket implementation rejects with a clear TypeError (never throws)', async () => {
  const saved = globalThis.WebSocket;
  delete globalThis.WebSocket;
  try {
    let promise;
    assert.doesNotThrow(() => {
      promise = new Herald('ws://x/ws').connect();
    });
    await assert.rejects(promise, (err) => err instanceof TypeError && /websocket/.test(err.message));
  } finally {
    if (saved) globalThis.WebSocket = saved;
  }
});
