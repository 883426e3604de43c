// Compiled by test/types.test.js with `tsc --strict`: every method and event
// of @heraldhub/client, imported by its package name as an ES module. Lines
// marked @ts-expect-error must fail to compile (tsc reports them if not).

import Herald, {
  Herald as NamedHerald,
  HeraldError,
  Subscription,
  VERSION,
  backoff,
  refreshDelay,
  type ConnectResult,
  type HistoryResult,
  type Json,
  type LeaderboardEntry,
  type LeaderboardPush,
  type PresenceResult,
  type PresenceStats,
  type Publication,
  type PublishResult,
  type StreamPosition,
  type SubscribeOptions,
  type SubscriptionTokenContext,
} from '@heraldhub/client';

const version: string = VERSION;
const delay: number = backoff(3, { min: 100, max: 1000 }, Math.random) + refreshDelay(60_000);
const same: typeof Herald = NamedHerald;

const herald = new Herald('wss://herald.example/ws', {
  token: 'jwt',
  getToken: async () => 'jwt',
  timeout: 5000,
  publishTimeout: 30_000,
  maxQueuedPublishes: 50,
  maxQueuedBytes: 65536,
  minReconnectDelay: 100,
  maxReconnectDelay: 5000,
  pingInterval: 0,
  pongTimeout: 5000,
  name: 'usage',
});
const state: 'disconnected' | 'connecting' | 'connected' = herald.state;
const url: string = herald.url;
const timeout: number = herald.options.timeout + herald.options.publishTimeout;

// connect() returns a promise (it never throws); its result is typed.
const connecting: Promise<ConnectResult> = herald.connect();
connecting.then((c) => {
  const who: string | null = c.user;
  const expires: number | null = c.expires;
  const interval: number = c.ping_interval;
  return [who, expires, interval, c.client, c.version];
});
const conn: ConnectResult | undefined = herald.connection;

// Events.
const off = herald.on('state', ({ state, previous }) => [state, previous]);
off();
herald.on('connect', (c) => c.client);
herald.on('disconnect', ({ code, reason, reconnect }) => [code, reason, reconnect]);
herald.on('error', (err) => err.message);
herald.on('message', (push) => push.push);
herald.on('join', (p) => [p.channel, p.user, p.client, p.info]);
const onLeave = (p: { user: string }) => p.user;
herald.on('leave', onLeave);
herald.off('leave', onLeave);

// Subscriptions.
interface Msg {
  text: string;
  sent?: number;
}
const sub: Subscription = herald.subscribe<Msg>(
  'chat:room1',
  (msg, { channel, offset, encoding }) => [msg.text, channel, offset, encoding],
  { since: { offset: 4, epoch: '1' } },
);
sub.on('subscribed', ({ recovered }) => recovered === false);
sub.on('state', ({ state }) => state);
sub.on('error', (err: HeraldError) => err.code);
sub.on('join', (p) => p.user);
const pos: StreamPosition | undefined = sub.position;
const ready: Promise<void> = sub.ready(1000);
sub.unsubscribe();
// A private channel: a subscription token from the app.
const privateOpts: SubscribeOptions = {
  getToken: async ({ channel }: SubscriptionTokenContext) => `token-for-${channel}`,
};
herald.subscribe<Msg>('private:1', (msg) => msg.text, privateOpts);
herald.subscribe('private:2', undefined, { getToken: () => 'jwt', since: { offset: 1, epoch: '2' } });
// @ts-expect-error getToken resolves with a string
herald.subscribe('private:3', undefined, { getToken: async () => 42 });
herald.psubscribe<Json>('news.*', (data, { channel, pattern }) => [data, channel, pattern]);

// The leaderboard's callback: the same types on the first call and later.
herald.leaderboard('scores', 10, (entries: LeaderboardEntry[], update: LeaderboardPush) => {
  const first: string | undefined = entries[0]?.member;
  const score: number | null | undefined = entries[0]?.score;
  const rank: number | undefined = update.rank;
  return [first, score, rank, update.key, update.push === 'leaderboard'];
});

// publish accepts any JSON-serialisable value, interface-typed objects included.
async function publishing(): Promise<PublishResult[]> {
  const msg: Msg = { text: 'hi' };
  class Note {
    constructor(readonly text: string) {}
    shout(): string {
      return this.text.toUpperCase();
    }
  }
  const fromJson: unknown = JSON.parse('{"a":1}');
  const anyValue: any = 1;
  return Promise.all([
    herald.publish('chat:room1', msg),
    herald.publish('chat:room1', { text: 'x', sent: Date.now() }, { timeout: 1000 }),
    herald.publish('chat:room1', [msg, msg] as readonly Msg[], { volatile: true }),
    herald.publish('chat:room1', new Note('hi')),
    herald.publish('chat:room1', { when: new Date() }),
    herald.publish('chat:room1', 'text'),
    herald.publish('chat:room1', 42),
    herald.publish('chat:room1', null),
    herald.publish('chat:room1', true),
    herald.publish('chat:room1', fromJson),
    herald.publish('chat:room1', anyValue),
    herald.publish('chat:room1', { nested: { list: [1, 'two', null] } } as const),
  ]);
}

// Values JSON cannot carry are compile errors.
// @ts-expect-error a bigint throws in JSON.stringify
herald.publish('c', 1n);
// @ts-expect-error nested bigint
herald.publish('c', { n: 1n });
// @ts-expect-error a symbol
herald.publish('c', { s: Symbol('s') });
// @ts-expect-error a function is not a message
herald.publish('c', () => 1);
// @ts-expect-error undefined is not a message
herald.publish('c', undefined);
// @ts-expect-error the volatile option is a boolean
herald.publish('c', 1, { volatile: 'yes' });

// Typed results.
async function reading(): Promise<void> {
  const presence: PresenceResult = await herald.presence('room:1');
  for (const c of presence.clients) {
    const joined: number = c.joined;
    const info: { [key: string]: Json } | null = c.info;
    [c.client, c.user, joined, info];
  }
  const users: string[] = presence.users;
  const stats: PresenceStats = await herald.presenceStats('room:1');
  const counts: number = stats.clients + stats.users;

  const history: HistoryResult<Msg> = await herald.history<Msg>('chat:room1', {
    since: { offset: 1, epoch: '1' },
    limit: 10,
    reverse: true,
  });
  const texts: string[] = history.publications.map((p: Publication<Msg>) => p.data.text);
  const top: number = history.offset;
  const epoch: string = history.epoch;
  const untyped: HistoryResult = await herald.history('chat:room1');
  const data: Json = untyped.publications[0].data;

  for await (const page of herald.historyPages<Msg>('chat:room1', { limit: 50, until: pos })) {
    const newest: Publication<Msg> | undefined = page.publications[0];
    [newest?.data.text, newest?.offset, newest?.encoding, page.epoch, page.offset];
  }
  const pages = herald.historyPages('chat:room1');
  const next = await pages.next();
  if (!next.done) next.value.publications satisfies Publication[];

  // @ts-expect-error presence results are not `any`
  presence.clients[0].nosuchfield;
  // @ts-expect-error history results are not `any`
  history.nosuchfield;
  [users, counts, texts, top, epoch, data];
}

// Errors.
const codes: number[] = [
  HeraldError.TIMEOUT,
  HeraldError.DISCONNECTED,
  HeraldError.CONNECTION_CLOSED,
  HeraldError.UNSUBSCRIBED,
  HeraldError.QUEUE_FULL,
];
const e = new HeraldError(103, 'permission denied');
const name: 'HeraldError' = e.name;

herald.disconnect();
export { version, delay, same, state, url, timeout, conn, ready, publishing, reading, codes, name };
