// Unit tests of the durable publish queue against the fake server: publishes
// made while disconnected wait (bounded by count and bytes), go out in order
// once connected, are sent again when lost in flight, time out per call,
// and `volatile` ones are dropped instead.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Herald, HeraldError } from '../src/herald.js';
import { FakeServer, NO_REPLY, refuse, until, record } from '../testkit/fake-server.js';

function client(server, opts = {}) {
  return new Herald('ws://herald.test/ws', {
    websocket: server.WebSocket,
    minReconnectDelay: 1,
    maxReconnectDelay: 4,
    timeout: 500,
    ...opts,
  });
}

const published = (server, socket) => server.received('publish', socket).map((c) => c.data);

test('publishes made before connect() are queued and sent in order, after the subscriptions', async () => {
  const server = new FakeServer();
  const herald = client(server);
  const acks = [1, 2, 3].map((n) => herald.publish('news', { n }));
  herald.subscribe('news', () => {});
  assert.equal(server.commands.length, 0);
  await herald.connect();
  assert.deepEqual(await Promise.all(acks), [{}, {}, {}]);
  assert.deepEqual(published(server), [{ n: 1 }, { n: 2 }, { n: 3 }]);
  assert.deepEqual(
    server.commands.map((c) => c.op),
    ['connect', 'subscribe', 'publish', 'publish', 'publish'],
  );
  herald.disconnect();
});

test('a publish from a connect listener follows the queued ones', async () => {
  const server = new FakeServer();
  const herald = client(server);
  herald.on('connect', () => herald.publish('c', 'from the listener'));
  const queued = herald.publish('c', 'queued');
  await herald.connect();
  await queued;
  await until(() => server.received('publish').length === 2);
  assert.deepEqual(published(server), ['queued', 'from the listener']);
  herald.disconnect();
});

test('the queue is bounded by count and by bytes: past either, publish rejects with QUEUE_FULL', async () => {
  const server = new FakeServer();
  const byCount = client(server, { maxQueuedPublishes: 2 });
  const ok = [byCount.publish('a', 1), byCount.publish('a', 2)];
  await assert.rejects(byCount.publish('a', 3), (err) => {
    assert.ok(err instanceof HeraldError);
    assert.equal(err.code, HeraldError.QUEUE_FULL);
    assert.match(err.message, /queue full \(at most 2 publishes/);
    return true;
  });
  await byCount.connect();
  await Promise.all(ok);
  assert.deepEqual(published(server), [1, 2]);
  byCount.disconnect();

  // Bytes are the UTF-8 JSON text of `data`: "12345678" is 10, "é" is 4.
  const server2 = new FakeServer();
  const byBytes = client(server2, { maxQueuedBytes: 14 });
  const first = byBytes.publish('a', '12345678');
  const second = byBytes.publish('a', 'é');
  await assert.rejects(byBytes.publish('a', 1), { code: HeraldError.QUEUE_FULL });
  await byBytes.connect();
  await Promise.all([first, second]);
  // Once connected nothing is queued: the bound does not apply.
  await byBytes.publish('a', 'x'.repeat(100));
  assert.deepEqual(published(server2), ['12345678', 'é', 'x'.repeat(100)]);
  byBytes.disconnect();
});

test('a queued publish times out on its own timeout and is then never sent', async () => {
  const server = new FakeServer();
  const herald = client(server, { publishTimeout: 5000 });
  const started = performance.now();
  await assert.rejects(herald.publish('a', 'late', { timeout: 30 }), (err) => {
    assert.equal(err.code, HeraldError.TIMEOUT);
    assert.match(err.message, /publish timed out after 30 ms, waiting for a connection/);
    return true;
  });
  assert.ok(performance.now() - started >= 25);
  const kept = herald.publish('a', 'kept');
  await herald.connect();
  await kept;
  assert.deepEqual(published(server), ['kept']);
  herald.disconnect();
});

test('volatile publishes are dropped, not queued, while not connected', async () => {
  const server = new FakeServer();
  const herald = client(server);
  await assert.rejects(herald.publish('a', 1, { volatile: true }), (err) => {
    assert.equal(err.code, HeraldError.DISCONNECTED);
    assert.match(err.message, /volatile publish dropped/);
    return true;
  });
  await herald.connect();
  assert.deepEqual(await herald.publish('a', 2, { volatile: true }), {});
  assert.deepEqual(published(server), [2]);
  herald.disconnect();
});

test('durable publishes lost in flight are sent again after the reconnect, before later ones (at least once)', async () => {
  const server = new FakeServer();
  // The first connection takes the publishes but never answers them.
  server.handlers.publish = (cmd, socket) => (socket === server.sockets[0] ? NO_REPLY : {});
  const herald = client(server);
  await herald.connect();
  const inFlight = [herald.publish('a', 1), herald.publish('a', 2)];
  await until(() => server.received('publish').length === 2);
  server.refusing = true;
  server.socket.drop();
  await until(() => herald.state === 'connecting');
  const later = herald.publish('a', 3);
  server.refusing = false;
  assert.deepEqual(await Promise.all([...inFlight, later]), [{}, {}, {}]);
  assert.deepEqual(published(server, server.sockets[0]), [1, 2]);
  assert.deepEqual(published(server, server.socket), [1, 2, 3]);
  herald.disconnect();
});

test('a refused publish rejects with the server error and is not retried', async () => {
  const server = new FakeServer();
  server.handlers.publish = () => refuse(107, 'rate limit: 100 publishes per second');
  const herald = client(server);
  const queued = herald.publish('a', 1);
  await herald.connect();
  await assert.rejects(queued, { code: 107, message: /rate limit/ });
  assert.equal(server.received('publish').length, 1);
  herald.disconnect();
});

test('disconnect() and a terminal disconnect reject what is queued; later publishes wait for connect()', async () => {
  const server = new FakeServer();
  const herald = client(server);
  const queued = herald.publish('a', 1);
  herald.connect();
  herald.disconnect();
  await assert.rejects(queued, { code: HeraldError.DISCONNECTED, message: /disconnect called/ });

  await herald.connect();
  server.handlers.publish = () => NO_REPLY;
  const inFlight = herald.publish('a', 2);
  await until(() => server.received('publish').length === 1);
  server.socket.disconnect(3500, 'unauthorized');
  await assert.rejects(inFlight, { code: HeraldError.DISCONNECTED, message: /unauthorized/ });
  assert.equal(herald.state, 'disconnected');

  // Disconnected, but a publish still queues: the next connect() sends it.
  server.handlers.publish = () => ({});
  const waiting = herald.publish('a', 3);
  await herald.connect();
  assert.deepEqual(await waiting, {});
  assert.deepEqual(published(server, server.socket), [3]);
  herald.disconnect();
});

test('data that is not JSON is refused at once, without queueing', async () => {
  const server = new FakeServer();
  const herald = client(server);
  const cyclic = {};
  cyclic.self = cyclic;
  await assert.rejects(herald.publish('a', undefined), TypeError);
  await assert.rejects(herald.publish('a', () => {}), TypeError);
  await assert.rejects(herald.publish('a', 1n), TypeError);
  await assert.rejects(herald.publish('a', cyclic), TypeError);
  const errors = record(herald, 'error');
  await herald.connect();
  await herald.publish('a', null);
  assert.deepEqual(published(server), [null]);
  assert.deepEqual(errors, []);
  herald.disconnect();
});
