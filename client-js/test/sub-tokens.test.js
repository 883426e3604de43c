// Subscription tokens for private channels, against the real Herald:
// getToken({channel}) on subscribe, on the server's sub_refresh, and again
// after a refusal for expiry; wrong tokens refuse the subscription.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { Herald } from '../src/herald.js';
import { startHerald, respPublish, jwt, nowSeconds, haveHerald, heraldBin } from '../testkit/herald-process.js';
import { until, sleep } from '../testkit/fake-server.js';

const skip = haveHerald() ? false : `no Herald binary at ${heraldBin()} (cargo build first)`;
const SECRET = 'sub-token-secret';
const PASSWORD = 'backend-pw';

let server;
const clients = [];
before(async () => {
  if (!skip) server = await startHerald(['--jwt-hmac-secret', SECRET, '--requirepass', PASSWORD]);
});
after(async () => {
  for (const c of clients) c.disconnect();
  await server?.stop();
});

/** A client whose connection token allows `public:*` only. */
function alice() {
  const token = jwt({ sub: 'alice', exp: nowSeconds() + 600, subscribe: ['public:*'] }, SECRET);
  const herald = new Herald(server.url, { websocket: WebSocket, token, minReconnectDelay: 20, timeout: 3000 });
  clients.push(herald);
  return herald;
}

const subToken = (sub, channel, exp) => jwt({ sub, channel, exp }, SECRET);

test('getToken grants a private channel, and a wrong token refuses it', { skip }, async () => {
  const herald = alice();
  await herald.connect();
  const denied = herald.subscribe('private:a', () => {});
  await assert.rejects(denied.ready(), { code: 103 });

  const calls = [];
  const got = [];
  const sub = herald.subscribe('private:a', (data) => got.push(data), {
    getToken: async (ctx) => {
      calls.push(ctx);
      return subToken('alice', 'private:a', nowSeconds() + 600);
    },
  });
  await sub.ready();
  assert.deepEqual(calls, [{ channel: 'private:a' }]);
  await respPublish(server.resp, 'private:a', 'secret', PASSWORD);
  await until(() => got.length === 1, 3000, 'the message');
  assert.equal(got[0], 'secret');

  const other = herald.subscribe('private:b', () => {}, { getToken: () => subToken('alice', 'private:a', nowSeconds() + 600) });
  await assert.rejects(other.ready(), { code: 102 });
  const bob = herald.subscribe('private:c', () => {}, { getToken: () => subToken('bob', 'private:c', nowSeconds() + 600) });
  await assert.rejects(bob.ready(), { code: 102 });
  const failing = herald.subscribe('private:d', () => {}, {
    getToken: async () => {
      throw new Error('no session');
    },
  });
  await assert.rejects(failing.ready(), { code: 102 });
});

test('an expired token is fetched again once; a token that stays expired is refused', { skip }, async () => {
  const herald = alice();
  await herald.connect();
  let n = 0;
  const sub = herald.subscribe('private:e', () => {}, {
    getToken: () => subToken('alice', 'private:e', n++ === 0 ? nowSeconds() - 60 : nowSeconds() + 600),
  });
  await sub.ready();
  assert.equal(n, 2);
  let m = 0;
  const stale = herald.subscribe('private:f', () => {}, {
    getToken: () => {
      m++;
      return subToken('alice', 'private:f', nowSeconds() - 60);
    },
  });
  await assert.rejects(stale.ready(), { code: 104 });
  assert.equal(m, 2);
});

test('sub_refresh: getToken is called before expiry and the subscription stays', { skip }, async () => {
  const herald = alice();
  await herald.connect();
  const calls = [];
  const got = [];
  const sub = herald.subscribe('private:r', (data) => got.push(data), {
    getToken: ({ channel }) => {
      calls.push(channel);
      // The first token is short-lived; the refreshed one is not.
      return subToken('alice', channel, nowSeconds() + (calls.length === 1 ? 2 : 600));
    },
  });
  await sub.ready();
  await until(() => calls.length === 2, 5000, 'the refresh');
  await sleep(2500); // past the first token's end
  assert.equal(sub.state, 'subscribed');
  await respPublish(server.resp, 'private:r', 'after refresh', PASSWORD);
  await until(() => got.length === 1, 3000, 'the message');
  assert.equal(got[0], 'after refresh');
  assert.equal(calls.length, 2);
});

test('a grant that runs out (no refresh accepted) is subscribed again with a new token', { skip }, async () => {
  const herald = alice();
  await herald.connect();
  let n = 0;
  const got = [];
  const sub = herald.subscribe('private:x', (data) => got.push(data), {
    getToken: ({ channel }) => {
      n++;
      // Call 2 answers sub_refresh for another channel (refused); after
      // the 3006 unsubscribe push, call 3 (and 4) subscribe again.
      if (n === 2) return subToken('alice', 'private:other', nowSeconds() + 600);
      return subToken('alice', channel, nowSeconds() + (n === 1 ? 2 : 600));
    },
  });
  const errors = [];
  sub.on('error', (e) => errors.push(e.code));
  await sub.ready();
  await until(() => n >= 3 && sub.state === 'subscribed', 6000, 'the resubscribe');
  assert.deepEqual(errors, [102]);
  await respPublish(server.resp, 'private:x', 'back', PASSWORD);
  await until(() => got.length === 1, 3000, 'the message');
});
