// End-to-end tests, against the real Herald binary, of the publish queue
// (across a server restart, and a connection lost with a publish in
// flight), the typed results of presence(), presenceStats() and history(),
// historyPages() on a trimmed history, and the leaderboard's first call.
// Skipped, with a note, when the binary is not built.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import WebSocket from 'ws';
import { Herald, HeraldError } from '../src/herald.js';
import { startHerald, respCommand, jwt, nowSeconds, haveHerald, heraldBin } from '../testkit/herald-process.js';
import { until } from '../testkit/fake-server.js';

const skip = haveHerald() ? false : `no Herald binary at ${heraldBin()} (cargo build first)`;
const SECRET = 'e2e-features';
const PASSWORD = 'backend-pw';
const CONFIG = `
[namespaces.q]
history_size = 100

[namespaces.hist]
history_size = 12

[namespaces.room]
presence = true
`;

let dir;
let config;
let server;
const clients = [];

const token = (sub, info) => jwt({ sub, exp: nowSeconds() + 600, ...(info && { info }) }, SECRET);
const args = () => ['--config', config, '--jwt-hmac-secret', SECRET, '--requirepass', PASSWORD];

function client(url, opts = {}) {
  const herald = new Herald(url, {
    websocket: WebSocket,
    token: token('tester'),
    minReconnectDelay: 20,
    maxReconnectDelay: 100,
    timeout: 3000,
    ...opts,
  });
  clients.push(herald);
  return herald;
}

before(async () => {
  if (skip) return;
  dir = mkdtempSync(path.join(os.tmpdir(), 'herald-client-e2e-'));
  config = path.join(dir, 'herald.toml');
  writeFileSync(config, CONFIG);
  server = await startHerald(args());
});
after(async () => {
  for (const c of clients) c.disconnect();
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('publishes made while the server is down are queued and published in order once it is back', { skip, timeout: 30000 }, async () => {
  let first = await startHerald(args());
  const herald = client(first.url);
  // Made before connect(): queued too.
  const early = herald.publish('q:restart', 'early');
  await herald.connect();
  await early;

  await first.stop();
  await until(() => herald.state === 'connecting', 3000, 'connecting');
  const acks = [1, 2, 3, 4, 5].map((n) => herald.publish('q:restart', { n }));
  await assert.rejects(herald.publish('q:restart', 'dropped', { volatile: true }), { code: HeraldError.DISCONNECTED });

  const second = await startHerald([...args(), '--resp-addr', first.resp, '--http-addr', first.http]);
  try {
    assert.deepEqual(await Promise.all(acks), [{}, {}, {}, {}, {}]);
    // The new process's history holds them, in the order they were made.
    const { publications } = await herald.history('q:restart');
    assert.deepEqual(
      publications.map((p) => p.data),
      [1, 2, 3, 4, 5].map((n) => ({ n })),
    );
    assert.deepEqual(
      publications.map((p) => p.offset),
      [1, 2, 3, 4, 5],
    );
    herald.disconnect();
  } finally {
    await second.stop();
  }
});

test('a publish in flight when the connection is lost is sent again (at least once), and order is kept', { skip, timeout: 30000 }, async () => {
  const herald = client(server.url);
  await herald.connect();
  const acks = [herald.publish('q:flight', { id: 'a' })];
  herald._ws.close(); // the transport goes away with the publish unanswered
  acks.push(herald.publish('q:flight', { id: 'b' }));
  assert.deepEqual(await Promise.all(acks), [{}, {}]);
  assert.equal(herald.state, 'connected');
  const ids = (await herald.history('q:flight')).publications.map((p) => p.data.id);
  // 'a' may have reached the server before the connection went: then twice.
  assert.ok(['a,b', 'a,a,b'].includes(ids.join()), ids.join());
});

test('presence() and presenceStats() resolve with their documented shapes', { skip, timeout: 30000 }, async () => {
  const info = { name: 'Alice' };
  const tabs = [client(server.url, { token: token('alice', info) }), client(server.url, { token: token('alice', info) })];
  const bob = client(server.url, { token: token('bob') });
  for (const h of [...tabs, bob]) {
    await h.connect();
    await h.subscribe('room:1').ready();
  }
  const presence = await bob.presence('room:1');
  assert.deepEqual([...presence.users].sort(), ['alice', 'bob']);
  assert.equal(presence.clients.length, 3);
  const mine = presence.clients.find((c) => c.client === bob.connection.client);
  assert.equal(mine.user, 'bob');
  assert.equal(mine.info, null);
  assert.ok(Number.isInteger(mine.joined) && Math.abs(mine.joined - nowSeconds()) < 60, `joined ${mine.joined}`);
  assert.deepEqual(presence.clients.find((c) => c.user === 'alice').info, info);
  assert.deepEqual(await bob.presenceStats('room:1'), { clients: 3, users: 2 });
  await assert.rejects(bob.presenceStats('q:1'), { code: 108 });
});

test('history() and historyPages() on a trimmed history, from the newest and from a position', { skip, timeout: 30000 }, async () => {
  const herald = client(server.url);
  await herald.connect();
  for (let n = 1; n <= 25; n++) await herald.publish('hist:pages', { n });

  const page = await herald.history('hist:pages', { limit: 2, reverse: true });
  assert.deepEqual(page, {
    publications: [
      { offset: 25, data: { n: 25 } },
      { offset: 24, data: { n: 24 } },
    ],
    offset: 25,
    epoch: page.epoch,
  });
  assert.equal(typeof page.epoch, 'string');

  const walk = async (opts) => {
    const pages = [];
    for await (const p of herald.historyPages('hist:pages', opts)) pages.push(p.publications.map((x) => x.offset));
    return pages;
  };
  // history_size = 12 keeps offsets 14 to 25.
  assert.deepEqual(await walk({ limit: 5 }), [
    [25, 24, 23, 22, 21],
    [20, 19, 18, 17, 16],
    [15, 14],
  ]);
  assert.deepEqual(await walk({ limit: 100 }), [[25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14]]);

  // From a subscription's position: what came before it, then live messages.
  const live = [];
  const sub = herald.subscribe('hist:pages', (data) => live.push(data.n));
  await sub.ready();
  assert.deepEqual(sub.position, { offset: 25, epoch: page.epoch });
  await herald.publish('hist:pages', { n: 26 });
  await until(() => live.length === 1);
  // Offset 26 pushed 14 out of the history.
  assert.deepEqual(await walk({ limit: 4, until: { offset: 20, epoch: page.epoch } }), [
    [20, 19, 18, 17],
    [16, 15],
  ]);
  await assert.rejects(walk({ until: { offset: 20, epoch: 'another' } }), { code: 111 });
  await assert.rejects(walk({ limit: 5 }).then(() => herald.historyPages('room:1').next()), { code: 108 });
});

test("a leaderboard's first call has the shape of its later pushes", { skip, timeout: 30000 }, async () => {
  await respCommand(server.resp, ['ZADD', 'lb:shape', '5', 'ann', '9', 'tester'], PASSWORD);
  const herald = client(server.url);
  await herald.connect();
  const updates = [];
  herald.leaderboard('lb:shape', 2, (entries, update) => updates.push({ entries, update }));
  await until(() => updates.length === 1, 3000, 'the first call');
  await respCommand(server.resp, ['ZADD', 'lb:shape', '15', 'ann'], PASSWORD);
  await until(() => updates.length === 2, 3000, 'a push');
  const [first, pushed] = updates;
  assert.deepEqual(first.update, {
    push: 'leaderboard',
    key: 'lb:shape',
    entries: [
      { member: 'tester', score: 9 },
      { member: 'ann', score: 5 },
    ],
    rank: 0,
    score: 9,
  });
  assert.deepEqual(first.entries, first.update.entries);
  assert.deepEqual(Object.keys(pushed.update).sort(), Object.keys(first.update).sort());
  assert.deepEqual(pushed.update, { ...first.update, entries: [{ member: 'ann', score: 15 }, { member: 'tester', score: 9 }], rank: 1 });
});
