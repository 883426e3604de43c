// Types of @heraldhub/client (src/herald.js), written by hand. Keep in step with
// the JavaScript and with docs/protocol.md of the Herald repository.

export declare const VERSION: string;

/** Any JSON value: what `data` carries on Herald's WebSocket protocol. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/**
 * `T` where JSON.stringify can carry it, else `never`: interfaces, classes
 * and readonly or optional fields are fine (methods, `undefined` fields and
 * objects with toJSON, such as Date, too: JSON drops or converts them);
 * bigint and symbol values, and a top-level function or undefined, are not.
 */
export type JsonSerializable<T> = unknown extends T
  ? T
  : T extends bigint | symbol | undefined | ((...args: never[]) => unknown)
    ? never
    : JsonField<T>;
type JsonField<T> = T extends bigint | symbol
  ? never
  : T extends string | number | boolean | null | undefined | ((...args: never[]) => unknown) | { toJSON(): unknown }
    ? T
    : { [K in keyof T]: JsonField<T[K]> };

/** A position in a channel's stream (channels whose namespace keeps history). */
export interface StreamPosition {
  offset: number;
  epoch: string;
}

export type ClientState = 'disconnected' | 'connecting' | 'connected';
/** What `getToken` of a private channel's subscribe() is called with. */
export interface SubscriptionTokenContext {
  channel: string;
}

/** The options of subscribe(). */
export interface SubscribeOptions {
  /** Replay from this position (a Subscription's `position` saved earlier). */
  since?: StreamPosition;
  /** A subscription token for a private channel. */
  getToken?: (ctx: SubscriptionTokenContext) => Promise<string> | string;
}

export type SubscriptionState = 'unsubscribed' | 'subscribing' | 'subscribed';

/**
 * An error from Herald (protocol error codes 100–599, disconnect codes
 * 3000–3999) or from this client (the static codes below 100).
 */
export declare class HeraldError extends Error {
  /** A call got no reply within `timeout` (or a ping none within `pongTimeout`). */
  static readonly TIMEOUT: 1;
  /** The client is disconnected (never connected, disconnect() called, or a terminal disconnect). */
  static readonly DISCONNECTED: 2;
  /** The connection was lost before the reply came: the call may or may not have taken effect. */
  static readonly CONNECTION_CLOSED: 3;
  /** The subscription was unsubscribed before the server confirmed it. */
  static readonly UNSUBSCRIBED: 4;
  /** A publish made while disconnected found the queue full (`maxQueuedPublishes` or `maxQueuedBytes`). */
  static readonly QUEUE_FULL: 5;

  constructor(code: number, message: string);
  readonly name: 'HeraldError';
  readonly code: number;
}

/** A full-jitter backoff delay in [0, min(max, min * 2^attempt)] ms. */
export declare function backoff(
  attempt: number,
  bounds?: { min?: number; max?: number },
  random?: () => number,
): number;

/** Milliseconds to wait before refreshing a token that expires in `remainingMs`. */
export declare function refreshDelay(remainingMs: number): number;

/** A WebSocket constructor: the browser's, Node 22's, or the `ws` package's. */
export interface WebSocketConstructor {
  new (url: string): WebSocketLike;
}

/** What the client uses of a WebSocket (event parameters loose, to fit every implementation). */
export interface WebSocketLike {
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: any) => void) | null;
  onerror: ((ev: any) => void) | null;
  onclose: ((ev: any) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/** An EventSource constructor: the browser's, or a package's in Node. */
export interface EventSourceConstructor {
  new (url: string): {
    onmessage: ((ev: any) => void) | null;
    onerror: ((ev: any) => void) | null;
    close(): void;
  };
}

export interface HeraldOptions {
  /** A JWT sent with `connect`. */
  token?: string;
  /**
   * Returns a fresh JWT: called for the first connect when `token` is not
   * given, before the token expires (then sent with `refresh`), and before
   * reconnecting after a token-expired disconnect (3002) or connect error
   * (104). Returning no token stops the client (code 102).
   */
  getToken?: () => string | null | undefined | Promise<string | null | undefined>;
  /** The WebSocket constructor; default `globalThis.WebSocket`. */
  websocket?: WebSocketConstructor;
  /**
   * The transports to try, in turn while one cannot open; default
   * `['websocket', 'sse']`. Once one opens, reconnects keep it.
   */
  transports?: Array<'websocket' | 'sse'>;
  /** The EventSource constructor for the SSE transport; default `globalThis.EventSource`. */
  eventsource?: EventSourceConstructor;
  /** The SSE URL; default the WebSocket URL with `http(s):` and `/sse` for a last `/ws`. */
  sseUrl?: string;
  /** Milliseconds a call (and the connect handshake) may take; default 10000. */
  timeout?: number;
  /** Milliseconds a durable publish may take in all, queued and in flight; default 60000. */
  publishTimeout?: number;
  /** Publishes the queue holds while disconnected; default 100 (the server's default publish rate per second). */
  maxQueuedPublishes?: number;
  /** Bytes (UTF-8 JSON of `data`) the queue holds while disconnected; default 1048576. */
  maxQueuedBytes?: number;
  /** Reconnect backoff bounds in milliseconds; defaults 500 and 20000. */
  minReconnectDelay?: number;
  maxReconnectDelay?: number;
  /** Milliseconds between `ping` ops; default the server's `ping_interval`; 0 disables. */
  pingInterval?: number;
  /** Milliseconds to wait for a ping's reply before reconnecting; default 10000. */
  pongTimeout?: number;
  /** A name for this connection, sent with `connect`. */
  name?: string;
}

/** The `connect` result. */
export interface ConnectResult {
  client: string;
  user: string | null;
  /** Token expiry, unix seconds; null for anonymous connections. */
  expires: number | null;
  /** The server's WebSocket ping interval, seconds. */
  ping_interval: number;
  version: string;
  [key: string]: unknown;
}

export interface DisconnectEvent {
  /** The server's disconnect code, the WebSocket close code, a connect error code, or a client code (1 timeout, 1000 disconnect()). */
  code: number;
  reason: string;
  /** Whether the client will reconnect by itself. */
  reconnect: boolean;
}

export interface StateEvent<S> {
  state: S;
  previous: S;
}

export interface MessageMeta {
  channel: string;
  /** The message's stream offset, on channels that keep history. */
  offset?: number;
  /** "base64" when `data` is a base64 string of bytes that were not UTF-8. */
  encoding?: 'base64';
}

export interface PatternMessageMeta extends MessageMeta {
  pattern: string;
}

/** A push as received: `message`, `pmessage`, `join`, `leave`, `leaderboard`, `disconnect`, ... */
export interface Push {
  push: string;
  [key: string]: any;
}

export interface PresencePush extends Push {
  push: 'join' | 'leave';
  channel: string;
  user: string;
  client: string;
  info?: { [key: string]: Json };
}

export interface LeaderboardEntry {
  member: string;
  /** null for an infinite score (`inf`/`-inf` in Redis). */
  score: number | null;
}

/**
 * A leaderboard's top, as pushed; the `leaderboard_subscribe` reply that
 * paints it first is given the same shape.
 */
export interface LeaderboardPush {
  push: 'leaderboard';
  key: string;
  /** Best first, at most the largest `top` asked for this key. */
  entries: LeaderboardEntry[];
  /** The token's user's own rank (0 = best) and score, when a member. */
  rank?: number;
  score?: number | null;
}

/** One client in a channel's presence. */
export interface PresenceClient {
  client: string;
  user: string;
  /** The `info` claim of the client's token, if any. */
  info: { [key: string]: Json } | null;
  /** When it joined, unix seconds. */
  joined: number;
}

/** The `presence` result. */
export interface PresenceResult {
  clients: PresenceClient[];
  /** Unique user ids. */
  users: string[];
}

/** The `presence_stats` result: connections and unique users. */
export interface PresenceStats {
  clients: number;
  users: number;
}

/** One kept message. */
export interface Publication<T = Json> {
  offset: number;
  data: T;
  /** "base64" when `data` is a base64 string of bytes that were not UTF-8. */
  encoding?: 'base64';
}

/** The `history` result, and each page of historyPages(). */
export interface HistoryResult<T = Json> {
  publications: Publication<T>[];
  /** The channel's newest offset when read. */
  offset: number;
  epoch: string;
}

/** The `publish` result: `{}` today (the WebSocket reply carries no offset). */
export interface PublishResult {
  [key: string]: unknown;
}

export interface PublishOptions {
  /** Milliseconds the publish may take in all, queued and in flight; default `publishTimeout`. */
  timeout?: number;
  /** Drop instead of queueing while disconnected (rejects), and do not resend when lost in flight. */
  volatile?: boolean;
}

export interface HistoryPagesOptions {
  /** Publications per page; default 100. */
  limit?: number;
  /** Start at this position (that offset and older) instead of the newest. */
  until?: StreamPosition;
}

export interface SubscribedEvent {
  /**
   * After a resubscribe with a known position: true when the server resumed
   * the stream with no gap, false when it could not (refetch your state).
   * Undefined when no recovery was attempted or the server does not offer it.
   */
  recovered: boolean | undefined;
}

export interface SubscriptionEvents {
  state: StateEvent<SubscriptionState>;
  subscribed: SubscribedEvent;
  error: HeraldError;
  join: PresencePush;
  leave: PresencePush;
}

export declare class Subscription {
  readonly kind: 'channel' | 'pattern' | 'leaderboard';
  /** For subscribe(). */
  readonly channel?: string;
  /** For psubscribe(). */
  readonly pattern?: string;
  /** For leaderboard(). */
  readonly key?: string;
  readonly top?: number;
  readonly state: SubscriptionState;
  /** The server's refusal that ended this subscription, if any. */
  readonly error: HeraldError | undefined;
  /** The channel's last seen stream position, if it keeps history. */
  readonly position: StreamPosition | undefined;

  on<E extends keyof SubscriptionEvents>(event: E, fn: (arg: SubscriptionEvents[E]) => void): () => void;
  off<E extends keyof SubscriptionEvents>(event: E, fn: (arg: SubscriptionEvents[E]) => void): void;
  /** Resolves once subscribed; rejects with the server's refusal or a timeout. */
  ready(timeout?: number): Promise<void>;
  /** Stops this handle; the last handle on a channel unsubscribes on the server. */
  unsubscribe(): void;
}

export interface HeraldEvents {
  state: StateEvent<ClientState>;
  connect: ConnectResult;
  disconnect: DisconnectEvent;
  error: Error;
  message: Push;
  join: PresencePush;
  leave: PresencePush;
}

export interface HistoryOptions {
  since?: StreamPosition;
  limit?: number;
  reverse?: boolean;
}

export declare class Herald {
  constructor(url: string, options?: HeraldOptions);
  readonly url: string;
  readonly options: Required<
    Omit<HeraldOptions, 'token' | 'getToken' | 'websocket' | 'eventsource' | 'pingInterval' | 'name' | 'sseUrl'>
  > &
    Pick<HeraldOptions, 'pingInterval' | 'name' | 'sseUrl'>;
  readonly state: ClientState;
  /** The last successful connect result. */
  readonly connection: ConnectResult | undefined;

  on<E extends keyof HeraldEvents>(event: E, fn: (arg: HeraldEvents[E]) => void): () => void;
  off<E extends keyof HeraldEvents>(event: E, fn: (arg: HeraldEvents[E]) => void): void;

  /**
   * Connects (and keeps reconnecting); rejects only when the client stops
   * for good. Never throws: without a WebSocket constructor it rejects with a TypeError.
   */
  connect(): Promise<ConnectResult>;
  /** Closes and stops reconnecting; subscriptions are kept for the next connect(). */
  disconnect(): void;

  /**
   * `opts.getToken` makes the channel private: called with `{channel}` on
   * each subscribe (reconnects included), on the server's `sub_refresh`,
   * and again after a refusal for expiry (104); it resolves with a
   * subscription token (a JWT with `sub`, `channel`, `exp`).
   */
  subscribe<T = any>(
    channel: string,
    onMessage?: (data: T, meta: MessageMeta) => void,
    opts?: SubscribeOptions,
  ): Subscription;
  psubscribe<T = any>(pattern: string, onMessage?: (data: T, meta: PatternMessageMeta) => void): Subscription;
  /** `onUpdate(entries, update)`: the first call (the subscribe reply) and every push alike. */
  leaderboard(key: string, top: number, onUpdate?: (entries: LeaderboardEntry[], update: LeaderboardPush) => void): Subscription;

  /**
   * Publishes any JSON-serialisable value. Durable unless `volatile`:
   * queued while disconnected and resent if lost in flight (at least once).
   */
  publish<T>(channel: string, data: T & JsonSerializable<T>, opts?: PublishOptions): Promise<PublishResult>;
  presence(channel: string): Promise<PresenceResult>;
  presenceStats(channel: string): Promise<PresenceStats>;
  history<T = Json>(channel: string, opts?: HistoryOptions): Promise<HistoryResult<T>>;
  /** Pages backwards through a channel's history, newest first. */
  historyPages<T = Json>(channel: string, opts?: HistoryPagesOptions): AsyncGenerator<HistoryResult<T>, void, undefined>;
}

export default Herald;
