// Unit tests of subscriptions against an in-process fake server: the
// subscription state machine, sharing, message dispatch, resubscription and
// recovery after a dropped connection, leaderboards, presence and history.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Herald, HeraldError } from '../src/herald.js';
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

/** Drops the current socket and waits for the client to be back with every subscription live. */
async function dropAndRecover(server, herald, ...subs) {
  const before = server.sockets.length;
  server.socket.drop();
  await until(() => server.sockets.length > before && herald.state === 'connected');
  await until(() => subs.every((s) => s.state === 'subscribed'));
}

test('the subscription state machine emits only on change', async () => {
  const server = new FakeServer();
  const herald = client(server);
  const sub = herald.subscribe('news', () => {});
  assert.equal(sub.state, 'subscribing'); // waits for the connection
  assert.equal(sub.channel, 'news');
  const states = record(sub, 'state');
  await herald.connect();
  await sub.ready();

  server.refusing = true; // several failed attempts: still just `subscribing`
  server.socket.drop();
  await until(() => server.sockets.length >= 4);
  server.refusing = false;
  await until(() => sub.state === 'subscribed');

  sub.unsubscribe();
  sub.unsubscribe();
  assert.deepEqual(transitions(states), [
    'subscribing>subscribed',
    'subscribed>subscribing',
    'subscribing>subscribed',
    'subscribed>unsubscribed',
  ]);
  herald.disconnect();
});

test('subscribe sends the op once connected and delivers messages with their meta', async () => {
  const server = new FakeServer();
  const herald = client(server);
  const got = [];
  const sub = herald.subscribe('news', (data, meta) => got.push([data, meta]));
  await herald.connect();
  await sub.ready();
  assert.deepEqual(server.commands.map((c) => c.op), ['connect', 'subscribe']);
  assert.equal(server.received('subscribe')[0].channel, 'news');
  assert.equal('since' in server.received('subscribe')[0], false);

  server.socket.push({ push: 'message', channel: 'news', data: { title: 'hi' } });
  server.socket.push({ push: 'message', channel: 'news', data: '/wAB', encoding: 'base64' });
  server.socket.push({ push: 'message', channel: 'other', data: 'not ours' });
  server.socket.push({ push: 'message', channel: 'news', data: 7, offset: 3 });
  await until(() => got.length === 3);
  assert.deepEqual(got, [
    [{ title: 'hi' }, { channel: 'news', offset: undefined, encoding: undefined }],
    ['/wAB', { channel: 'news', offset: undefined, encoding: 'base64' }],
    [7, { channel: 'news', offset: 3, encoding: undefined }],
  ]);
  herald.disconnect();
});

test('psubscribe delivers pmessage pushes with channel and pattern', async () => {
  const server = new FakeServer();
  const herald = client(server);
  const got = [];
  const sub = herald.psubscribe('news.*', (data, meta) => got.push([data, meta]));
  assert.equal(sub.pattern, 'news.*');
  await herald.connect();
  await sub.ready();
  assert.equal(server.received('psubscribe')[0].pattern, 'news.*');
  server.socket.push({ push: 'pmessage', pattern: 'news.*', channel: 'news.tech', data: 'text' });
  await until(() => got.length === 1);
  assert.deepEqual(got[0], ['text', { channel: 'news.tech', pattern: 'news.*', offset: undefined, encoding: undefined }]);
  sub.unsubscribe();
  await until(() => server.received('punsubscribe').length === 1);
  assert.equal(server.received('punsubscribe')[0].pattern, 'news.*');
  herald.disconnect();
});

test('several subscribe calls on one channel share one server subscription', async () => {
  const server = new FakeServer();
  const herald = client(server);
  await herald.connect();
  const a = [];
  const b = [];
  const subA = herald.subscribe('room', (d) => a.push(d));
  const subB = herald.subscribe('room', (d) => b.push(d));
  await Promise.all([subA.ready(), subB.ready()]);

  // A third handle on a live subscription still sees `subscribed`, once.
  const subC = herald.subscribe('room');
  const events = record(subC, 'subscribed');
  await subC.ready();
  await settle();
  assert.deepEqual(events, [{ recovered: undefined }]);
  assert.equal(server.received('subscribe').length, 1);

  server.socket.push({ push: 'message', channel: 'room', data: 1 });
  await until(() => a.length === 1 && b.length === 1);

  subA.unsubscribe();
  subC.unsubscribe();
  server.socket.push({ push: 'message', channel: 'room', data: 2 });
  await until(() => b.length === 2);
  assert.deepEqual(a, [1]);
  assert.equal(server.received('unsubscribe').length, 0); // B still holds it

  subB.unsubscribe();
  await until(() => server.received('unsubscribe').length === 1);
  assert.equal(server.received('unsubscribe')[0].channel, 'room');
  herald.disconnect();
});

test('every channel and pattern is resubscribed after a dropped connection', async () => {
  const server = new FakeServer();
  const herald = client(server);
  const got = [];
  const sub = herald.subscribe('a', (d) => got.push(d));
  const psub = herald.psubscribe('b.*', (d) => got.push(d));
  const gone = herald.subscribe('c', () => {});
  await herald.connect();
  await Promise.all([sub.ready(), psub.ready(), gone.ready()]);
  gone.unsubscribe();

  await dropAndRecover(server, herald, sub, psub);
  const second = server.socket;
  assert.deepEqual(
    server.commands.filter((c) => c.socket === second).map((c) => [c.op, c.channel ?? c.pattern]),
    [['connect', undefined], ['subscribe', 'a'], ['psubscribe', 'b.*']],
  );
  second.push({ push: 'message', channel: 'a', data: 'after' });
  second.push({ push: 'pmessage', pattern: 'b.*', channel: 'b.1', data: 'after-p' });
  await until(() => got.length === 2);
  assert.deepEqual(got, ['after', 'after-p']);
  herald.disconnect();
});

test('subscriptions survive disconnect() and are re-sent by the next connect()', async () => {
  const server = new FakeServer();
  const herald = client(server);
  const sub = herald.subscribe('a');
  await herald.connect();
  await sub.ready();
  herald.disconnect();
  assert.equal(sub.state, 'subscribing');
  await herald.connect();
  await sub.ready();
  assert.equal(server.received('subscribe', server.socket).length, 1);
  herald.disconnect();
});

test('recovery: since {offset, epoch} is sent on resubscribe, and recovered: false surfaces', async () => {
  const server = new FakeServer();
  let round = 0;
  server.handlers.subscribe = (cmd) => (++round === 1 ? { offset: 10, epoch: 'E1' } : { offset: 20, epoch: 'E2', recovered: false });
  const herald = client(server);
  const got = [];
  const sub = herald.subscribe('chat:1', (d, meta) => got.push(meta.offset));
  const subscribed = record(sub, 'subscribed');
  await herald.connect();
  await sub.ready();
  assert.deepEqual(subscribed, [{ recovered: undefined }]); // a first subscribe recovers nothing
  assert.deepEqual(sub.position, { offset: 10, epoch: 'E1' });

  server.socket.push({ push: 'message', channel: 'chat:1', data: 'x', offset: 11 });
  server.socket.push({ push: 'message', channel: 'chat:1', data: 'y', offset: 12 });
  await until(() => got.length === 2);
  assert.deepEqual(sub.position, { offset: 12, epoch: 'E1' });

  await dropAndRecover(server, herald, sub);
  assert.deepEqual(server.received('subscribe', server.socket)[0].since, { offset: 12, epoch: 'E1' });
  // The stream could not be resumed (new epoch): the app is told to refetch,
  // and the position restarts from the server's.
  assert.deepEqual(subscribed[1], { recovered: false });
  assert.deepEqual(sub.position, { offset: 20, epoch: 'E2' });
  herald.disconnect();
});

test('recovery: after recovered: true the replayed messages advance the position', async () => {
  const server = new FakeServer();
  server.handlers.subscribe = (cmd) => (cmd.since ? { offset: 15, epoch: 'E', recovered: true } : { offset: 5, epoch: 'E' });
  const herald = client(server);
  const offsets = [];
  const sub = herald.subscribe('chat:1', (d, meta) => offsets.push(meta.offset));
  const subscribed = record(sub, 'subscribed');
  await herald.connect();
  await sub.ready();
  server.socket.push({ push: 'message', channel: 'chat:1', data: 'a', offset: 6 });
  await until(() => offsets.length === 1);

  // The states are recorded, not polled: on a loaded machine the
  // resubscribe can finish before a poll sees 'subscribing'.
  const states = record(sub, 'state');
  server.socket.drop();
  await until(() => states.map((s) => s.state).join() === 'subscribing,subscribed');
  assert.deepEqual(server.received('subscribe', server.socket)[0].since, { offset: 6, epoch: 'E' });
  assert.deepEqual(subscribed[1], { recovered: true });
  assert.deepEqual(sub.position, { offset: 6, epoch: 'E' }); // not jumped to 15: the replay follows
  server.socket.push({ push: 'message', channel: 'chat:1', data: 'b', offset: 7 });
  await until(() => offsets.length === 2);
  assert.deepEqual(sub.position, { offset: 7, epoch: 'E' });
  herald.disconnect();
});

test('recovery: offsets already seen are not delivered again', async () => {
  const server = new FakeServer();
  server.handlers.subscribe = () => ({ offset: 5, epoch: 'E' });
  const herald = client(server);
  const offsets = [];
  const sub = herald.subscribe('chat:1', (d, meta) => offsets.push(meta.offset));
  await herald.connect();
  await sub.ready();
  for (const offset of [6, 7, 6, 5, 7, 8]) {
    server.socket.push({ push: 'message', channel: 'chat:1', data: 'x', offset });
  }
  await until(() => offsets.length === 3);
  await settle();
  assert.deepEqual(offsets, [6, 7, 8]);
  assert.deepEqual(sub.position, { offset: 8, epoch: 'E' });
  herald.disconnect();
});

test('recovery: no since without a known position (a server without history)', async () => {
  const server = new FakeServer();
  const herald = client(server);
  const sub = herald.subscribe('news', () => {});
  const subscribed = record(sub, 'subscribed');
  await herald.connect();
  await sub.ready();
  server.socket.push({ push: 'message', channel: 'news', data: 1 });
  await dropAndRecover(server, herald, sub);
  assert.equal('since' in server.received('subscribe', server.socket)[0], false);
  assert.deepEqual(subscribed, [{ recovered: undefined }, { recovered: undefined }]);
  assert.equal(sub.position, undefined);
  herald.disconnect();
});

test('recovery: subscribe opts.since starts from a saved position', async () => {
  const server = new FakeServer();
  server.handlers.subscribe = () => ({ offset: 50, epoch: 'E', recovered: true });
  const herald = client(server);
  const sub = herald.subscribe('chat:1', () => {}, { since: { offset: 42, epoch: 'E' } });
  const subscribed = record(sub, 'subscribed');
  await herald.connect();
  await sub.ready();
  assert.deepEqual(server.received('subscribe')[0].since, { offset: 42, epoch: 'E' });
  assert.deepEqual(subscribed, [{ recovered: true }]);
  herald.disconnect();
});

test('a refused subscription ends unsubscribed with the error', async () => {
  const server = new FakeServer();
  server.handlers.subscribe = () => refuse(103, 'permission denied');
  const herald = client(server);
  const clientErrors = record(herald, 'error');
  const sub = herald.subscribe('admin', () => {});
  const errors = record(sub, 'error');
  await herald.connect();
  await assert.rejects(sub.ready(), { name: 'HeraldError', code: 103 });
  assert.equal(sub.state, 'unsubscribed');
  assert.equal(sub.error.code, 103);
  assert.equal(errors.length, 1);
  assert.equal(clientErrors[0].code, 103);
  await assert.rejects(sub.ready(), { code: 103 }); // also when asked afterwards

  // Not retried after a reconnect either.
  server.socket.drop();
  await until(() => server.sockets.length === 2 && herald.state === 'connected');
  await settle();
  assert.equal(server.received('subscribe').length, 1);
  herald.disconnect();
});

test('a subscribe that gets no reply reconnects and tries again', async () => {
  const server = new FakeServer();
  server.handlers.subscribe = (cmd, socket) => (socket === server.sockets[0] ? NO_REPLY : {});
  const herald = client(server, { timeout: 40 });
  const sub = herald.subscribe('slow');
  await herald.connect();
  await sub.ready(1000);
  assert.equal(server.sockets.length, 2);
  herald.disconnect();
});

test('ready() rejects when the handle is unsubscribed first', async () => {
  const server = new FakeServer();
  const herald = client(server);
  const sub = herald.subscribe('x');
  const ready = sub.ready();
  sub.unsubscribe();
  await assert.rejects(ready, { code: HeraldError.UNSUBSCRIBED });
});

test('join and leave pushes reach the channel subscription too', async () => {
  const server = new FakeServer();
  const herald = client(server);
  const sub = herald.subscribe('room');
  const joins = record(sub, 'join');
  const leaves = record(sub, 'leave');
  await herald.connect();
  await sub.ready();
  server.socket.push({ push: 'join', channel: 'room', user: 'ann', info: {} });
  server.socket.push({ push: 'leave', channel: 'room', user: 'ann', info: {} });
  server.socket.push({ push: 'join', channel: 'elsewhere', user: 'bob', info: {} });
  await until(() => leaves.length === 1);
  assert.deepEqual(joins.map((j) => j.user), ['ann']);
  herald.disconnect();
});

test('leaderboard: not_enabled (108) surfaces as a rejected ready() with code 108', async () => {
  const server = new FakeServer();
  const herald = client(server);
  await herald.connect();
  const lb = herald.leaderboard('scores', 10, () => {});
  await assert.rejects(lb.ready(), (err) => err instanceof HeraldError && err.code === 108);
  assert.equal(lb.state, 'unsubscribed');
  assert.deepEqual(server.received('leaderboard_subscribe')[0].key, 'scores');
  assert.deepEqual(server.received('leaderboard_subscribe')[0].top, 10);
  herald.disconnect();
});

test('leaderboard: updates are delivered (cut to each top) and unsubscribe is sent', async () => {
  const server = new FakeServer();
  server.handlers.leaderboard_subscribe = () => ({});
  server.handlers.leaderboard_unsubscribe = () => ({});
  const herald = client(server);
  await herald.connect();
  const top3 = [];
  const top1 = [];
  const a = herald.leaderboard('scores', 3, (entries, push) => top3.push([entries, push.key]));
  const b = herald.leaderboard('scores', 1, (entries) => top1.push(entries));
  assert.equal(a.key, 'scores');
  await Promise.all([a.ready(), b.ready()]);
  const entries = [
    { member: 'ann', score: 30 },
    { member: 'bob', score: 20 },
    { member: 'cy', score: 10 },
  ];
  server.socket.push({ push: 'leaderboard', key: 'scores', entries });
  await until(() => top3.length === 1 && top1.length === 1);
  assert.deepEqual(top3[0], [entries, 'scores']);
  assert.deepEqual(top1[0], [entries[0]]);

  // A larger top asks the server again for more entries.
  const c = herald.leaderboard('scores', 5, () => {});
  await c.ready();
  assert.deepEqual(server.received('leaderboard_subscribe').map((x) => x.top), [3, 5]);

  await dropAndRecover(server, herald, a, b, c);
  assert.equal(server.received('leaderboard_subscribe', server.socket)[0].top, 5);

  a.unsubscribe();
  b.unsubscribe();
  c.unsubscribe();
  await until(() => server.received('leaderboard_unsubscribe').length === 1);
  assert.equal(server.received('leaderboard_unsubscribe')[0].key, 'scores');
  herald.disconnect();
});

test('presence and history send their ops and surface 108', async () => {
  const server = new FakeServer();
  const herald = client(server);
  await herald.connect();
  await assert.rejects(herald.presence('room'), { code: 108 });
  await assert.rejects(herald.history('room', { since: { offset: 1, epoch: 'E' }, limit: 10, reverse: true }), { code: 108 });
  const { channel, since, limit, reverse } = server.received('history')[0];
  assert.deepEqual({ channel, since, limit, reverse }, { channel: 'room', since: { offset: 1, epoch: 'E' }, limit: 10, reverse: true });
  assert.equal(server.received('presence')[0].channel, 'room');

  server.handlers.presence = () => ({ users: { ann: {} } });
  assert.deepEqual(await herald.presence('room'), { users: { ann: {} } });
  herald.disconnect();
});

test('subscribe rejects a bad channel name or callback at once', () => {
  const herald = client(new FakeServer());
  assert.throws(() => herald.subscribe('', () => {}), TypeError);
  assert.throws(() => herald.subscribe('a', 'not a function'), TypeError);
  assert.throws(() => herald.leaderboard('k', 0, () => {}), TypeError);
});

test('messages after unsubscribe are not delivered to that handle', async () => {
  const server = new FakeServer();
  const herald = client(server);
  await herald.connect();
  const got = [];
  const sub = herald.subscribe('a', (d) => got.push(d));
  await sub.ready();
  sub.unsubscribe();
  server.socket.push({ push: 'message', channel: 'a', data: 1 });
  await sleep(10);
  assert.deepEqual(got, []);
  herald.disconnect();
});
