// Unit tests of historyPages() against a fake history with the server's
// semantics (entries after `since`, which must be intact and of the same
// epoch, else 111; `limit`; `reverse`), including trimmed and holed
// histories and a reset in the middle of a walk; and of the typed results
// of presenceStats() and the leaderboard's first call.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Herald, HeraldError } from '../src/herald.js';
import { FakeServer, refuse, until } from '../testkit/fake-server.js';

/** A channel history as Herald keeps it: `kept` offsets (ascending) of `top`. */
function fakeHistory(server, kept, top = kept.at(-1) ?? 0) {
  const h = { epoch: '7', top, entries: kept.map((offset) => ({ offset, data: `m${offset}` })) };
  server.handlers.history = ({ since, limit = Infinity, reverse }) => {
    let list = h.entries;
    if (since) {
      const after = h.entries.filter((e) => e.offset > since.offset).length;
      if (since.epoch !== h.epoch || since.offset > h.top || after !== h.top - since.offset) {
        return refuse(111, 'unrecoverable position');
      }
      list = list.filter((e) => e.offset > since.offset);
    }
    list = reverse ? [...list].reverse() : list;
    return { publications: list.slice(0, limit), offset: h.top, epoch: h.epoch };
  };
  return h;
}

async function connected(server) {
  const herald = new Herald('ws://herald.test/ws', { websocket: server.WebSocket, timeout: 500 });
  await herald.connect();
  return herald;
}

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
const down = (from, to) => range(to, from).reverse();

async function walk(herald, channel, opts) {
  const pages = [];
  for await (const page of herald.historyPages(channel, opts)) pages.push(page.publications.map((p) => p.offset));
  return pages;
}

test('pages backwards from the newest, newest first, with no empty page at the end', async () => {
  const server = new FakeServer();
  fakeHistory(server, range(1, 25));
  const herald = await connected(server);
  assert.deepEqual(await walk(herald, 'c', { limit: 10 }), [down(25, 16), down(15, 6), down(5, 1)]);
  const [first, ...rest] = server.received('history');
  assert.deepEqual([first.reverse, first.limit, first.since], [true, 10, undefined]);
  assert.deepEqual(
    rest.map((c) => [c.since, c.limit]),
    [
      [{ offset: 5, epoch: '7' }, 10],
      [{ offset: 0, epoch: '7' }, 5],
    ],
  );

  fakeHistory(server, range(1, 20));
  assert.deepEqual(await walk(herald, 'c', { limit: 10 }), [down(20, 11), down(10, 1)]);
  fakeHistory(server, []);
  assert.deepEqual(await walk(herald, 'c', { limit: 10 }), []);
  fakeHistory(server, range(1, 3));
  assert.deepEqual(await walk(herald, 'c'), [down(3, 1)]); // default limit 100
  herald.disconnect();
});

test('each page is {publications, offset, epoch}, with the data', async () => {
  const server = new FakeServer();
  fakeHistory(server, range(1, 3));
  const herald = await connected(server);
  const pages = herald.historyPages('c', { limit: 2 });
  const { value } = await pages.next();
  assert.deepEqual(value, { publications: [{ offset: 3, data: 'm3' }, { offset: 2, data: 'm2' }], offset: 3, epoch: '7' });
  assert.deepEqual((await pages.next()).value, { publications: [{ offset: 1, data: 'm1' }], offset: 3, epoch: '7' });
  assert.equal((await pages.next()).done, true);
  herald.disconnect();
});

test('`until` starts at a position (that offset and older)', async () => {
  const server = new FakeServer();
  fakeHistory(server, range(1, 30));
  const herald = await connected(server);
  assert.deepEqual(await walk(herald, 'c', { limit: 5, until: { offset: 12, epoch: '7' } }), [
    down(12, 8),
    down(7, 3),
    down(2, 1),
  ]);
  assert.equal(server.received('history').filter((c) => c.reverse).length, 0);
  // A position of another epoch: the history was reset since.
  await assert.rejects(walk(herald, 'c', { until: { offset: 12, epoch: '6' } }), { code: 111, message: /reset/ });
  herald.disconnect();
});

test('a trimmed history ends with what is left of it', async () => {
  const server = new FakeServer();
  fakeHistory(server, range(9, 25));
  const herald = await connected(server);
  assert.deepEqual(await walk(herald, 'c', { limit: 10 }), [down(25, 16), down(15, 9)]);
  herald.disconnect();
});

test('a history with entries deleted from its middle is still walked whole', async () => {
  const server = new FakeServer();
  fakeHistory(server, [...range(1, 5), ...range(20, 30)]);
  const herald = await connected(server);
  assert.deepEqual(await walk(herald, 'c', { limit: 4 }), [
    down(30, 27),
    down(26, 23),
    [22, 21, 20, 5],
    down(4, 1),
  ]);
  herald.disconnect();
});

test('a history reset during the walk (new epoch) throws 111', async () => {
  const server = new FakeServer();
  const h = fakeHistory(server, range(1, 25));
  const herald = await connected(server);
  const pages = herald.historyPages('c', { limit: 10 });
  await pages.next();
  h.epoch = '8';
  await assert.rejects(pages.next(), (err) => err instanceof HeraldError && err.code === 111);
  herald.disconnect();
});

test('errors surface: a bad limit, a channel without history (108)', async () => {
  const server = new FakeServer();
  const herald = await connected(server);
  await assert.rejects(walk(herald, 'c', { limit: 0 }), TypeError);
  await assert.rejects(walk(herald, 'c', { limit: 1.5 }), TypeError);
  await assert.rejects(walk(herald, 'c'), { code: 108 });
  herald.disconnect();
});

test('presenceStats sends presence_stats and resolves with {clients, users}', async () => {
  const server = new FakeServer();
  const herald = await connected(server);
  await assert.rejects(herald.presenceStats('room'), { code: 108 });
  server.handlers.presence_stats = () => ({ clients: 3, users: 2 });
  assert.deepEqual(await herald.presenceStats('room'), { clients: 3, users: 2 });
  assert.deepEqual(server.received('presence_stats').map((c) => c.channel), ['room', 'room']);
  herald.disconnect();
});

test("the leaderboard's first call gets the same shape as later pushes", async () => {
  const server = new FakeServer();
  const entries = [{ member: 'ann', score: 3 }];
  server.handlers.leaderboard_subscribe = () => ({ key: 'k', entries, rank: 0, score: 3 });
  const herald = await connected(server);
  const calls = [];
  herald.leaderboard('k', 1, (list, update) => calls.push([list, update]));
  await until(() => calls.length === 1);
  server.socket.push({ push: 'leaderboard', key: 'k', entries, rank: 0, score: 3 });
  await until(() => calls.length === 2);
  assert.deepEqual(calls[0], calls[1]);
  assert.deepEqual(calls[0][1], { push: 'leaderboard', key: 'k', entries, rank: 0, score: 3 });
  herald.disconnect();
});
