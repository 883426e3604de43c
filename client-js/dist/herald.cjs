'use strict';
// @heraldhub/client: the JavaScript client of Herald's WebSocket protocol
// (docs/protocol.md in the Herald repository is the reference), with its
// SSE transport as the fallback where WebSocket is blocked.
//
// This one file is the whole client, on purpose: an ES module with no
// imports, so that a browser loads it as is and Herald can embed it in its
// binary and serve it at /client/herald.js. scripts/build.mjs makes dist/
// from it (the CommonJS build and the minified browser script): rebuild
// after a change here (a test says when dist/ is stale). It runs in
// browsers and in Node 20+ (pass the `ws` package as the `websocket` option
// where there is no global WebSocket).
//
// Shape (after centrifuge-js):
// - two small state machines, each changed only through its own setState,
//   which emits `state` only on a change: the client (disconnected /
//   connecting / connected) and each Subscription (unsubscribed /
//   subscribing / subscribed);
// - a pure full-jitter `backoff` for reconnects;
// - every subscribe() is a handle on one shared server subscription per
//   channel, pattern or leaderboard key, re-sent after every reconnect with
//   the last seen stream position so that the server can fill the gap.

const VERSION = '0.1.0';

/**
 * The SSE transport (docs/protocol.md, "SSE") behind the WebSocket
 * interface the client uses (onopen, onmessage, onerror, onclose, send,
 * close): events in from `GET /sse`, ops out as `POST /sse/{session}`, one
 * POST at a time so that they keep their order. The stream's first event
 * is the connect reply: it opens the transport, and answers the client's
 * own `connect` op (the token travels on the URL).
 */
class SseSocket {
  constructor(url, EventSourceImpl, fetchImpl) {
    this.onopen = this.onmessage = this.onerror = this.onclose = noop;
    this._url = url;
    this._fetch = fetchImpl;
    this._hello = null;
    this._postUrl = null;
    this._pending = [];
    this._posting = false;
    this._closed = false;
    this._es = new EventSourceImpl(url);
    this._es.onmessage = (ev) => this._event(ev.data);
    // EventSource would reconnect by itself, as a new session: the client
    // reconnects instead, with its backoff, token and recovery.
    this._es.onerror = () => this._fail('event stream closed');
  }

  _event(data) {
    if (this._closed) return;
    if (!this._hello) {
      let msg;
      try {
        msg = JSON.parse(data);
      } catch {
        msg = null;
      }
      const session = msg?.id === 0 ? msg.result?.session : undefined;
      if (typeof session === 'string') {
        this._hello = msg.result;
        const u = new URL(this._url);
        u.pathname = `${u.pathname.replace(/\/$/, '')}/${encodeURIComponent(session)}`;
        u.search = '';
        this._postUrl = u.toString();
        this.onopen({});
        return;
      }
    }
    this.onmessage({ data });
  }

  send(text) {
    if (this._closed) throw new Error('sse transport closed');
    const msg = JSON.parse(text);
    if (msg.op === 'connect') {
      const reply = JSON.stringify({ id: msg.id, result: this._hello });
      Promise.resolve().then(() => this._closed || this.onmessage({ data: reply }));
      return;
    }
    this._pending.push(text);
    this._flush();
  }

  async _flush() {
    if (this._posting || this._closed || this._pending.length === 0) return;
    this._posting = true;
    const batch = this._pending.splice(0, 100);
    try {
      const res = await this._fetch(this._postUrl, {
        method: 'POST',
        headers: { 'Content-Type': 'text/plain' },
        body: `[${batch.join(',')}]`,
      });
      if (res.status !== 202) throw new Error(`POST answered ${res.status}`);
    } catch (err) {
      this._fail(`sse post failed: ${err?.message ?? err}`);
      return;
    } finally {
      this._posting = false;
    }
    this._flush();
  }

  _fail(reason) {
    if (this._closed) return;
    this.close();
    this.onclose({ code: 1006, reason });
  }

  close() {
    this._closed = true;
    this._pending = [];
    this._es.close();
  }
}

/** The SSE URL of a WebSocket URL: ws→http, wss→https, a last `/ws` → `/sse`. */
function sseUrlOf(wsUrl) {
  const u = new URL(wsUrl);
  u.protocol = u.protocol === 'wss:' ? 'https:' : u.protocol === 'ws:' ? 'http:' : u.protocol;
  u.pathname = u.pathname.replace(/\/ws\/?$/, '') + '/sse';
  u.search = '';
  return u.toString();
}

/**
 * An error from Herald (the protocol's codes, 100 and up, and disconnect
 * codes 3000–3999) or from this client (codes below 100, the statics below).
 */
class HeraldError extends Error {
  /** A call got no reply within `timeout` (or a ping none within `pongTimeout`). */
  static TIMEOUT = 1;
  /** The client is disconnected: never connected, disconnect() was called, or the server ended the session for good. */
  static DISCONNECTED = 2;
  /** The connection was lost before the reply came: the call may or may not have taken effect. */
  static CONNECTION_CLOSED = 3;
  /** The subscription was unsubscribed before the server confirmed it. */
  static UNSUBSCRIBED = 4;
  /** A publish made while disconnected found the queue full (`maxQueuedPublishes` or `maxQueuedBytes`). */
  static QUEUE_FULL = 5;

  constructor(code, message) {
    super(message);
    this.name = 'HeraldError';
    this.code = code;
  }
}

/**
 * Full-jitter exponential backoff: a random delay in
 * [0, min(max, min * 2^attempt)] milliseconds for the given 0-based attempt.
 * Jitter spreads the reconnects of many clients that lost the same server at
 * the same moment, so that they do not come back as one wave.
 */
function backoff(attempt, { min = 500, max = 20000 } = {}, random = Math.random) {
  const cap = Math.min(max, min * 2 ** Math.max(0, attempt));
  return Math.floor(random() * cap);
}

/**
 * How long to wait before refreshing a token that expires in `remainingMs`:
 * 10% of its remaining lifetime or 30 s ahead, whichever is sooner to the
 * expiry, but at least 1 s ahead (the refresh itself takes a round trip).
 */
function refreshDelay(remainingMs) {
  const lead = Math.max(1000, Math.min(remainingMs * 0.1, 30000));
  return Math.max(0, remainingMs - lead);
}

const DEFAULTS = {
  timeout: 10000,
  publishTimeout: 60000, // ms a durable publish may wait, queued and in flight
  maxQueuedPublishes: 100, // the server's default --ws-publish-rate: a flush is not rate-limited
  maxQueuedBytes: 1048576, // bytes of queued `data`, as JSON text in UTF-8
  minReconnectDelay: 500,
  maxReconnectDelay: 20000,
  pingInterval: undefined, // ms; undefined: the server's ping_interval
  pongTimeout: 10000,
  name: undefined,
  transports: ['websocket', 'sse'], // tried in turn while one cannot open
  sseUrl: undefined, // default: the WebSocket URL with http(s) and /sse for /ws
};

// Disconnect codes at and above this one are terminal (docs/protocol.md).
const TERMINAL = 3500;
const TOKEN_EXPIRED_DISCONNECT = 3002;
const TOKEN_EXPIRED_ERROR = 104;
const INTERNAL_ERROR = 500;
const UNRECOVERABLE = 111;

// setTimeout fires at once for delays past 2^31-1 ms (24.8 days).
const MAX_TIMER_DELAY = 2 ** 31 - 1;

const noop = () => {};

/** Settles a call ({reject, timer}) with an error. */
function fail(call, err) {
  clearTimeout(call.timer);
  call.reject(err);
}

// A throwing listener must not leave the client half-way through a state
// change, so its exception is rethrown on a fresh stack, where the host
// reports it as uncaught, instead of unwinding through the client.
function invoke(fn, ...args) {
  try {
    fn(...args);
  } catch (err) {
    setTimeout(() => {
      throw err;
    });
  }
}

class Emitter {
  constructor() {
    this._listeners = new Map();
  }

  /** Adds a listener; returns the function that removes it. */
  on(event, fn) {
    let set = this._listeners.get(event);
    if (!set) this._listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => set.delete(fn);
  }

  off(event, fn) {
    this._listeners.get(event)?.delete(fn);
  }

  _emit(event, arg) {
    const set = this._listeners.get(event);
    if (set) for (const fn of [...set]) invoke(fn, arg);
  }
}

// The three kinds of server subscription, with their ops and argument names.
const KINDS = {
  channel: { subscribe: 'subscribe', unsubscribe: 'unsubscribe', field: 'channel' },
  pattern: { subscribe: 'psubscribe', unsubscribe: 'punsubscribe', field: 'pattern' },
  leaderboard: { subscribe: 'leaderboard_subscribe', unsubscribe: 'leaderboard_unsubscribe', field: 'key' },
};

/**
 * One subscription on the server, shared by every Subscription handle on the
 * same channel, pattern or leaderboard key. Not exported: it has no state
 * machine of its own to watch, only whether the current connection has it.
 */
class ServerSubscription {
  constructor(kind, name) {
    this.kind = kind;
    this.name = name;
    this.handles = new Set();
    /** On the current connection: 'none', 'pending' (request in flight) or 'live'. */
    this.server = 'none';
    /** Stream position: the last offset seen and the stream's epoch (channels with history only). */
    this.offset = undefined;
    this.epoch = undefined;
    /** Leaderboards: the largest `top` any handle asked for. */
    this.top = 0;
    /** Channels: `getToken({channel})` for a subscription token, from the first handle that gave one. */
    this.getToken = undefined;
  }

  subscribeArgs() {
    const args = { [KINDS[this.kind].field]: this.name };
    if (this.kind === 'leaderboard') args.top = this.top;
    if (this.kind === 'channel' && this.offset !== undefined && this.epoch !== undefined) {
      args.since = { offset: this.offset, epoch: this.epoch };
    }
    return args;
  }
}

/**
 * What subscribe(), psubscribe() and leaderboard() return: one caller's hold
 * on a server subscription. Its state machine: `unsubscribed` (new, after
 * unsubscribe(), or refused by the server), `subscribing` (waiting for the
 * server, including while the client reconnects) and `subscribed`.
 *
 * Events: `state` ({state, previous}), `subscribed` ({recovered}), `error`
 * (a HeraldError from the server's refusal), and for channels `join` and
 * `leave` (the raw push).
 */
class Subscription extends Emitter {
  constructor(herald, shared, callback, top) {
    super();
    this._herald = herald;
    this._shared = shared;
    this._callback = callback;
    this.kind = shared.kind;
    this[KINDS[shared.kind].field] = shared.name;
    if (shared.kind === 'leaderboard') this.top = top;
    this.state = 'unsubscribed';
    /** The error that ended this subscription, if the server refused it. */
    this.error = undefined;
  }

  /** The one place the state changes; emits only on a change. */
  _setState(next, detail) {
    if (next === this.state) return false;
    const previous = this.state;
    this.state = next;
    this._emit('state', { state: next, previous });
    if (next === 'subscribed') this._emit('subscribed', detail);
    return true;
  }

  /** The last seen stream position of the channel, if it keeps history. */
  get position() {
    const { offset, epoch } = this._shared;
    return offset === undefined || epoch === undefined ? undefined : { offset, epoch };
  }

  /**
   * Resolves once the server confirmed the subscription; rejects with the
   * server's error if it refused, or with a timeout.
   */
  ready(timeout = this._herald.options.timeout) {
    if (this.state === 'subscribed') return Promise.resolve();
    if (this.state === 'unsubscribed') return Promise.reject(this.error ?? unsubscribedError());
    return new Promise((resolve, reject) => {
      const done = (fn, arg) => {
        clearTimeout(timer);
        offState();
        fn(arg);
      };
      const timer = setTimeout(
        () => done(reject, new HeraldError(HeraldError.TIMEOUT, `not subscribed within ${timeout} ms`)),
        timeout,
      );
      const offState = this.on('state', ({ state }) => {
        if (state === 'subscribed') done(resolve);
        else if (state === 'unsubscribed') done(reject, this.error ?? unsubscribedError());
      });
    });
  }

  /** Stops this handle's callbacks; the last handle on a server subscription ends it. */
  unsubscribe() {
    this._herald._release(this);
    this._setState('unsubscribed');
  }
}

const unsubscribedError = () => new HeraldError(HeraldError.UNSUBSCRIBED, 'unsubscribed');

/**
 * A Herald client. Its state machine: `disconnected` (initially, after
 * disconnect(), or after a terminal disconnect), `connecting` (opening, or
 * waiting to retry after a lost connection) and `connected`.
 *
 * Events, via on(event, fn), which returns the function removing `fn`:
 * `state` ({state, previous}), `connect` (the connect result), `disconnect`
 * ({code, reason, reconnect}: an established connection ended, or the client
 * stopped for good; `reconnect` says whether it will try again), `error`
 * (transport errors, refused subscriptions, failed refreshes), `message`
 * (every push, raw), `join` and `leave` (those pushes).
 */
class Herald extends Emitter {
  constructor(url, options = {}) {
    super();
    const { token, getToken, websocket, eventsource, ...rest } = options;
    this.url = url;
    this.options = { ...DEFAULTS };
    for (const [k, v] of Object.entries(rest)) if (v !== undefined) this.options[k] = v;
    this.state = 'disconnected';
    /** The result of the last successful `connect`: {client, user, expires, ping_interval, version}. */
    this.connection = undefined;

    this._token = token;
    this._getToken = getToken;
    this._WebSocket = websocket ?? globalThis.WebSocket;
    this._EventSource = eventsource ?? globalThis.EventSource;
    this._transport = 0; // index in options.transports of the one to try next
    this._opened = false; // the current transport got its connect reply
    this._needFreshToken = false;

    this._ws = null; // the current transport; events from older ones are ignored
    this._seq = 0; // bumped by every open and terminate, to drop stale async steps
    this._attempt = 0; // reconnect attempts since the last successful connect
    this._nextId = 1;
    this._calls = new Map(); // id -> call ({op, args, resolve, reject, timer}): sent, awaiting a reply
    this._queue = []; // calls waiting for a connection (durable publishes also while disconnected)
    this._waiters = []; // connect() promises
    this._subs = { channel: new Map(), pattern: new Map(), leaderboard: new Map() };
    this._timers = { reconnect: null, handshake: null, ping: null, refresh: null };
    this._onOnline = null;
  }

  // ---- the client state machine ------------------------------------------

  /** The one place the client state changes; emits only on a change. */
  _setState(next) {
    if (next === this.state) return false;
    const previous = this.state;
    this.state = next;
    this._emit('state', { state: next, previous });
    return true;
  }

  /**
   * Starts connecting (and keeps reconnecting after failures). Resolves with
   * the connect result once connected; rejects if the client stops for good
   * first (a terminal error or disconnect(), with its code). Never throws:
   * without a WebSocket constructor it rejects with a TypeError.
   */
  connect() {
    if (this.state === 'connected') return Promise.resolve(this.connection);
    if (!this._transports().length) {
      return Promise.reject(
        new TypeError('@heraldhub/client: no WebSocket here; pass one as the `websocket` option (e.g. the ws package)'),
      );
    }
    const promise = new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
    // Marked handled: a fire-and-forget connect() must not crash Node with an
    // unhandled rejection; the same failure also reaches `disconnect`.
    promise.catch(noop);
    if (this.state === 'disconnected') {
      this._attempt = 0;
      this._setState('connecting');
      this._listenOnline(true);
      this._open();
    }
    return promise;
  }

  /** Closes the connection and stops reconnecting. Subscriptions are kept and re-sent by the next connect(). */
  disconnect() {
    if (this.state === 'disconnected') return;
    this._terminate(
      { code: 1000, reason: 'disconnect called' },
      new HeraldError(HeraldError.DISCONNECTED, 'disconnect called'),
    );
  }

  async _open() {
    this._timers.reconnect = null;
    const seq = ++this._seq;
    if (this._getToken && (this._needFreshToken || !this._token)) {
      let token;
      try {
        token = await this._getToken();
      } catch (err) {
        if (seq !== this._seq) return;
        this._emit('error', err);
        this._scheduleReconnect();
        return;
      }
      if (seq !== this._seq) return;
      if (!token) {
        this._terminate({ code: 102, reason: 'getToken returned no token' });
        return;
      }
      this._token = token;
      this._needFreshToken = false;
    }

    let ws;
    const kinds = this._transports();
    const kind = kinds[this._transport % kinds.length];
    this._opened = false;
    try {
      ws = kind === 'sse' ? this._openSse() : new this._WebSocket(this.url);
    } catch (err) {
      // A malformed URL or a blocked port: retrying cannot help.
      this._emit('error', err);
      this._terminate({ code: HeraldError.DISCONNECTED, reason: String(err?.message ?? err) });
      return;
    }
    this._ws = ws;
    ws.onopen = () => {
      if (this._ws === ws) this._handshake(ws);
    };
    ws.onmessage = (ev) => this._onFrame(ws, ev.data);
    ws.onerror = (ev) => {
      if (this._ws !== ws) return;
      const detail = ev?.message ?? ev?.error?.message;
      this._emit('error', new HeraldError(HeraldError.CONNECTION_CLOSED, `websocket error${detail ? `: ${detail}` : ''}`));
    };
    ws.onclose = (ev) => {
      if (this._ws !== ws) return;
      // A transport that never got to a connect reply: the next attempt
      // tries the next one.
      if (!this._opened) this._transport++;
      const code = ev?.code ?? 1006;
      this._onDisconnect({ code, reason: ev?.reason || 'connection closed', reconnect: !isTerminal(code) });
    };
    // Bound the whole handshake (TCP, upgrade and the connect reply): a
    // half-open network could otherwise leave the client connecting forever.
    this._timers.handshake = setTimeout(() => {
      if (this._ws !== ws) return;
      if (!this._opened) this._transport++;
      const err = new HeraldError(HeraldError.TIMEOUT, `connect timed out after ${this.options.timeout} ms`);
      this._emit('error', err);
      this._reconnect({ code: err.code, reason: err.message });
    }, this.options.timeout);
  }

  /** The transports of `options.transports` this environment has. */
  _transports() {
    return (this.options.transports ?? []).filter((t) =>
      t === 'websocket' ? !!this._WebSocket : t === 'sse' ? !!this._EventSource && typeof fetch === 'function' : false,
    );
  }

  /** An SSE transport; the token goes on the URL (the stream's connect reply answers `connect`). */
  _openSse() {
    const u = new URL(this.options.sseUrl ?? sseUrlOf(this.url));
    if (this._token) u.searchParams.set('token', this._token);
    return new SseSocket(u.toString(), this._EventSource, (...a) => fetch(...a));
  }

  _handshake(ws) {
    const args = {};
    if (this._token) args.token = this._token;
    if (this.options.name) args.name = this.options.name;
    // No timeout of its own: the handshake timer bounds it.
    this._request('connect', args, null).then(
      (result) => {
        if (this._ws === ws) this._onConnected(result);
      },
      (err) => {
        if (this._ws === ws) this._onConnectError(err);
      },
    );
  }

  _onConnected(result) {
    const ws = this._ws;
    this._opened = true;
    clearTimeout(this._timers.handshake);
    this._attempt = 0;
    this.connection = result;
    this._startPing(result.ping_interval);
    this._scheduleRefresh(result.expires);
    // Subscriptions go out first, then what was queued while disconnected
    // (in order), then anything the app sends from its listeners: its
    // publishes find the subscriptions in place and follow the queued ones.
    for (const shared of this._allShared()) this._serverSubscribe(shared);
    for (const call of this._queue.splice(0)) this._send(call);
    this._setState('connected');
    if (this._ws !== ws) return; // a listener disconnected
    this._emit('connect', result);
    for (const w of this._waiters.splice(0)) w.resolve(result);
  }

  _onConnectError(err) {
    if (err.code === TOKEN_EXPIRED_ERROR && this._getToken) {
      this._needFreshToken = true;
      this._reconnect({ code: err.code, reason: err.message });
    } else if (err.code === INTERNAL_ERROR) {
      this._emit('error', err);
      this._reconnect({ code: err.code, reason: err.message });
    } else {
      // Refused (bad token, no permission, ...): the same connect would be refused again.
      this._terminate({ code: err.code, reason: err.message }, err);
    }
  }

  /** A `disconnect` push, or the transport closing: reconnect or stop as the code says. */
  _onDisconnect({ code, reason, reconnect }) {
    if (reconnect && code === TOKEN_EXPIRED_DISCONNECT) {
      // Only a fresh token helps; without getToken there is none to get.
      if (this._getToken) this._needFreshToken = true;
      else reconnect = false;
    }
    if (reconnect) this._reconnect({ code, reason });
    else this._terminate({ code, reason });
  }

  /** Drops the transport and retries after a backoff delay. */
  _reconnect({ code, reason }) {
    const wasConnected = this.state === 'connected';
    this._closeTransport();
    // Scheduled before any listener runs, so that a listener's disconnect()
    // cancels it rather than being undone by it.
    this._scheduleReconnect();
    this._setState('connecting');
    this._suspendSubscriptions();
    if (wasConnected) this._emit('disconnect', { code, reason, reconnect: true });
  }

  _scheduleReconnect() {
    clearTimeout(this._timers.reconnect);
    const delay = backoff(this._attempt++, { min: this.options.minReconnectDelay, max: this.options.maxReconnectDelay });
    this._timers.reconnect = setTimeout(() => this._open(), delay);
  }

  /** Stops for good: state `disconnected`, pending work rejected. */
  _terminate({ code, reason }, error = new HeraldError(code, reason)) {
    this._seq++;
    clearTimeout(this._timers.reconnect);
    this._timers.reconnect = null;
    this._closeTransport();
    this._listenOnline(false);
    // Taken before listeners run: a listener may call connect() again.
    const queued = this._queue.splice(0);
    const waiters = this._waiters.splice(0);
    const changed = this._setState('disconnected');
    this._suspendSubscriptions();
    for (const call of queued) fail(call, new HeraldError(HeraldError.DISCONNECTED, `client disconnected: ${reason}`));
    for (const w of waiters) w.reject(error);
    if (changed) this._emit('disconnect', { code, reason, reconnect: false });
  }

  _closeTransport() {
    const { handshake, ping, refresh } = this._timers;
    clearTimeout(handshake);
    clearTimeout(ping);
    clearTimeout(refresh);
    const ws = this._ws;
    if (!ws) return;
    this._ws = null;
    // No-op handlers rather than none: the `ws` package throws an `error`
    // event that has no listener (it emits one when closing while connecting).
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = noop;
    try {
      ws.close(1000);
    } catch {
      // Already closed or never opened: nothing left to release.
    }
    // Calls in flight, in the order they were sent: a durable publish goes
    // back to the head of the queue, to be sent again (at least once: the
    // server may have taken it); the others fail (at most once).
    const calls = [...this._calls.values()];
    this._calls.clear();
    const again = calls.filter((c) => c.durable);
    for (const c of calls) {
      if (!c.durable) fail(c, new HeraldError(HeraldError.CONNECTION_CLOSED, 'connection closed before the reply'));
    }
    this._queue.unshift(...again);
    // The server forgot every subscription with the connection.
    for (const shared of this._allShared()) shared.server = 'none';
  }

  /** Subscriptions wait for the next connection (called after the client state changed). */
  _suspendSubscriptions() {
    for (const shared of this._allShared()) {
      for (const sub of [...shared.handles]) sub._setState('subscribing');
    }
  }

  _listenOnline(on) {
    const target = globalThis;
    if (typeof target.addEventListener !== 'function') return;
    if (on && !this._onOnline) {
      // The network is back: skip the rest of the backoff wait.
      this._onOnline = () => {
        if (this.state !== 'connecting' || !this._timers.reconnect) return;
        clearTimeout(this._timers.reconnect);
        this._attempt = 0;
        this._open();
      };
      target.addEventListener('online', this._onOnline);
    } else if (!on && this._onOnline) {
      target.removeEventListener('online', this._onOnline);
      this._onOnline = null;
    }
  }

  // ---- liveness and token refresh ----------------------------------------

  _startPing(serverInterval) {
    const interval = this.options.pingInterval ?? (serverInterval > 0 ? serverInterval * 1000 : 0);
    if (!(interval > 0)) return;
    const ws = this._ws;
    const tick = () => {
      this._request('ping', {}, this.options.pongTimeout).then(
        () => {
          if (this._ws === ws) this._timers.ping = setTimeout(tick, interval);
        },
        (err) => {
          // A silent server or a half-open network: start over elsewhere.
          if (this._ws === ws && err.code === HeraldError.TIMEOUT) {
            this._reconnect({ code: err.code, reason: `no pong within ${this.options.pongTimeout} ms` });
          }
        },
      );
    };
    this._timers.ping = setTimeout(tick, interval);
  }

  _scheduleRefresh(expires) {
    clearTimeout(this._timers.refresh);
    if (!expires || !this._getToken) return;
    // A token valid for months is refreshed after 24.8 days, early but harmless.
    const delay = Math.min(refreshDelay(expires * 1000 - Date.now()), MAX_TIMER_DELAY);
    this._timers.refresh = setTimeout(() => this._refresh(0), delay);
  }

  async _refresh(attempt) {
    const ws = this._ws;
    try {
      const token = await this._getToken();
      if (this._ws !== ws) return;
      if (!token) throw new HeraldError(102, 'getToken returned no token');
      this._token = token;
      const result = await this._request('refresh', { token }, this.options.timeout);
      if (this._ws !== ws) return;
      this._scheduleRefresh(result.expires);
    } catch (err) {
      if (this._ws !== ws) return;
      this._emit('error', err);
      // Try again until the token runs out; then the server disconnects with
      // 3002 and the reconnect asks getToken again.
      const delay = backoff(attempt, { min: this.options.minReconnectDelay, max: this.options.maxReconnectDelay });
      this._timers.refresh = setTimeout(() => this._refresh(attempt + 1), delay);
    }
  }

  // ---- requests and replies ----------------------------------------------

  /** Sends a command on the current transport; `timeout` null means none. */
  _request(op, args, timeout) {
    return new Promise((resolve, reject) => {
      const call = { op, args, resolve, reject, timer: undefined };
      if (timeout != null) call.timer = setTimeout(() => this._expire(call, timeout), timeout);
      this._send(call);
    });
  }

  /**
   * Sends a call ({op, args, resolve, reject, timer, durable?}) on the
   * current transport, under a new id; its reply settles it.
   */
  _send(call) {
    const ws = this._ws;
    if (!ws) return fail(call, new HeraldError(HeraldError.CONNECTION_CLOSED, `${call.op}: not connected`));
    const id = (call.id = this._nextId++);
    let text;
    try {
      text = JSON.stringify({ id, op: call.op, ...call.args });
    } catch (err) {
      return fail(call, err); // data that JSON cannot carry (BigInt, cycles)
    }
    this._calls.set(id, call);
    try {
      ws.send(text);
    } catch (err) {
      this._calls.delete(id);
      fail(call, new HeraldError(HeraldError.CONNECTION_CLOSED, `${call.op}: ${err?.message ?? err}`));
    }
  }

  /** A call ran out of time, queued or in flight: it is forgotten (a late reply is ignored). */
  _expire(call, timeout) {
    const i = this._queue.indexOf(call);
    if (i >= 0) this._queue.splice(i, 1);
    if (this._calls.get(call.id) === call) this._calls.delete(call.id);
    const where = i >= 0 ? ', waiting for a connection' : '';
    call.reject(new HeraldError(HeraldError.TIMEOUT, `${call.op} timed out after ${timeout} ms${where}`));
  }

  /** Sends a call now if connected, else queues it until connected; either way within `timeout`. */
  _enqueue(call, timeout) {
    return new Promise((resolve, reject) => {
      Object.assign(call, { resolve, reject });
      call.timer = setTimeout(() => this._expire(call, timeout), timeout);
      if (this.state === 'connected') this._send(call);
      else this._queue.push(call);
    });
  }

  /** A call from the app: sent now if connected, held while connecting, refused while disconnected. */
  _call(op, args) {
    if (this.state === 'disconnected') {
      return Promise.reject(new HeraldError(HeraldError.DISCONNECTED, `${op}: the client is disconnected; call connect() first`));
    }
    return this._enqueue({ op, args }, this.options.timeout);
  }

  _onFrame(ws, data) {
    if (this._ws !== ws) return;
    let msg;
    try {
      msg = JSON.parse(typeof data === 'string' ? data : new TextDecoder().decode(data));
    } catch (err) {
      this._emit('error', err);
      return;
    }
    if (msg === null || typeof msg !== 'object') return;
    if (typeof msg.push === 'string') {
      this._onPush(msg);
      return;
    }
    const call = this._calls.get(msg.id);
    if (call) {
      this._calls.delete(msg.id);
      clearTimeout(call.timer);
      if (msg.error) call.reject(new HeraldError(msg.error.code, msg.error.message));
      else call.resolve(msg.result ?? {});
    } else if (msg.error) {
      // A reply to no call of ours (id null: the server could not read it).
      this._emit('error', new HeraldError(msg.error.code, msg.error.message));
    }
    // Otherwise a late reply to a call that timed out: nobody waits for it.
  }

  _onPush(msg) {
    this._emit('message', msg);
    switch (msg.push) {
      case 'message': {
        const shared = this._subs.channel.get(msg.channel);
        if (!shared) return;
        if (typeof msg.offset === 'number') {
          // Offsets only grow within an epoch: one already seen (a replay
          // overlapping what arrived live, a duplicate from a server) is
          // not delivered twice.
          if (typeof shared.offset === 'number' && msg.offset <= shared.offset) return;
          shared.offset = msg.offset;
        }
        for (const sub of [...shared.handles]) {
          if (sub._callback) invoke(sub._callback, msg.data, { channel: msg.channel, offset: msg.offset, encoding: msg.encoding });
        }
        return;
      }
      case 'pmessage': {
        const shared = this._subs.pattern.get(msg.pattern);
        if (!shared) return;
        for (const sub of [...shared.handles]) {
          if (sub._callback) {
            invoke(sub._callback, msg.data, { channel: msg.channel, pattern: msg.pattern, offset: msg.offset, encoding: msg.encoding });
          }
        }
        return;
      }
      case 'join':
      case 'leave': {
        const shared = this._subs.channel.get(msg.channel);
        if (shared) for (const sub of [...shared.handles]) sub._emit(msg.push, msg);
        this._emit(msg.push, msg);
        return;
      }
      case 'leaderboard': {
        const shared = this._subs.leaderboard.get(msg.key);
        if (!shared) return;
        const entries = Array.isArray(msg.entries) ? msg.entries : [];
        for (const sub of [...shared.handles]) {
          if (sub._callback) invoke(sub._callback, entries.slice(0, sub.top), msg);
        }
        return;
      }
      case 'sub_refresh': {
        const shared = this._subs.channel.get(msg.channel);
        if (shared?.getToken && shared.server === 'live') this._subRefresh(shared);
        return;
      }
      case 'unsubscribe': {
        // The server ended a subscription (3006: its token expired without
        // a refresh): with getToken, subscribe again with a new token.
        const shared = this._subs.channel.get(msg.channel);
        if (!shared || shared.server !== 'live') return;
        shared.server = 'none';
        for (const sub of [...shared.handles]) sub._setState('subscribing');
        if (shared.getToken) {
          this._serverSubscribe(shared);
          return;
        }
        const err = new HeraldError(msg.code, msg.reason ?? 'unsubscribed by the server');
        this._subs.channel.delete(msg.channel);
        for (const sub of [...shared.handles]) {
          sub.error = err;
          sub._emit('error', err);
          sub._setState('unsubscribed');
        }
        shared.handles.clear();
        return;
      }
      case 'disconnect':
        this._onDisconnect({ code: msg.code, reason: msg.reason, reconnect: msg.reconnect !== false && !isTerminal(msg.code) });
        return;
      default:
      // A push this client does not know yet: `message` listeners saw it.
    }
  }

  // ---- subscriptions -----------------------------------------------------

  /**
   * Subscribes to a channel. `onMessage(data, {channel, offset, encoding})`
   * is called for each message. `opts.since` ({offset, epoch}) asks the
   * server to replay from a position saved earlier (sub.position).
   * `opts.getToken({channel})` resolves with a subscription token for a
   * private channel: called on each subscribe (reconnects included), on
   * the server's `sub_refresh`, and again after a refusal for expiry.
   */
  subscribe(channel, onMessage, opts = {}) {
    return this._hold('channel', channel, onMessage, opts);
  }

  /** Subscribes to a Redis glob pattern; `onMessage(data, {channel, pattern, encoding})`. */
  psubscribe(pattern, onMessage) {
    return this._hold('pattern', pattern, onMessage, {});
  }

  /**
   * Follows the top `top` entries of a leaderboard: `onUpdate(entries, push)`
   * with `entries` = [{member, score}], best first. `ready()` on the result
   * rejects with code 108 where the server does not offer leaderboards.
   */
  leaderboard(key, top, onUpdate) {
    if (!Number.isInteger(top) || top < 1) throw new TypeError('@heraldhub/client: leaderboard top must be a positive integer');
    return this._hold('leaderboard', key, onUpdate, { top });
  }

  _hold(kind, name, callback, opts) {
    if (typeof name !== 'string' || name === '') {
      throw new TypeError(`@heraldhub/client: ${KINDS[kind].field} must be a non-empty string`);
    }
    if (callback !== undefined && typeof callback !== 'function') {
      throw new TypeError('@heraldhub/client: the callback must be a function');
    }
    const map = this._subs[kind];
    let shared = map.get(name);
    if (!shared) {
      shared = new ServerSubscription(kind, name);
      map.set(name, shared);
      if (opts.since) ({ offset: shared.offset, epoch: shared.epoch } = opts.since);
    }
    if (kind === 'channel' && opts.getToken !== undefined) {
      if (typeof opts.getToken !== 'function') throw new TypeError('@heraldhub/client: getToken must be a function');
      shared.getToken ??= opts.getToken;
    }
    const sub = new Subscription(this, shared, callback, opts.top);
    shared.handles.add(sub);
    sub._setState('subscribing');

    // A bigger leaderboard asks the server again, for the larger top.
    const widen = kind === 'leaderboard' && opts.top > shared.top;
    if (widen) shared.top = opts.top;
    if (this.state !== 'connected') return sub; // sent on connect
    if (shared.server === 'none' || widen) {
      this._serverSubscribe(shared);
    } else if (shared.server === 'live') {
      // Already live: confirm on a microtask, so that listeners attached
      // right after this call still see `subscribed`.
      queueMicrotask(() => {
        if (shared.server === 'live' && shared.handles.has(sub)) sub._setState('subscribed', { recovered: undefined });
      });
    }
    return sub;
  }

  async _serverSubscribe(shared) {
    const { kind, name } = shared;
    const ws = this._ws;
    const args = shared.subscribeArgs();
    const current = () => this._ws === ws && this._subs[kind].get(name) === shared;
    shared.server = 'pending';
    let result;
    try {
      // A private channel: a subscription token with each subscribe, and
      // once more (a fresh one) when the server says it expired.
      for (let attempt = 0; ; attempt++) {
        if (shared.getToken) args.token = await this._subToken(shared);
        if (!current()) return;
        try {
          result = await this._request(KINDS[kind].subscribe, args, this.options.timeout);
          break;
        } catch (err) {
          if (!(shared.getToken && err.code === TOKEN_EXPIRED_ERROR && attempt === 0)) throw err;
        }
      }
    } catch (err) {
      // Lost the connection (re-sent on the next one) or dropped by the app.
      if (!current()) return;
      if (err.code === HeraldError.TIMEOUT) {
        // The server did not answer in time: likely a broken connection.
        this._reconnect({ code: err.code, reason: err.message });
        return;
      }
      // Refused (no permission, invalid name, limit, not enabled): the same
      // request would be refused again, so the subscription ends here.
      this._subs[kind].delete(name);
      shared.server = 'none';
      for (const sub of [...shared.handles]) {
        sub.error = err;
        sub._emit('error', err);
        sub._setState('unsubscribed');
      }
      shared.handles.clear();
      this._emit('error', err);
      return;
    }
    if (!current()) return;
    let recovered;
    if (kind === 'channel' && result && result.epoch !== undefined) {
      recovered = args.since ? result.recovered : undefined;
      // After a recovery the replayed messages advance the offset; otherwise
      // the stream starts for us at its current top.
      if (recovered !== true) shared.offset = result.offset;
      shared.epoch = result.epoch;
    }
    shared.server = 'live';
    for (const sub of [...shared.handles]) sub._setState('subscribed', { recovered });
    // A leaderboard's current top comes with the reply: paint it at once,
    // before the first change is pushed.
    if (kind === 'leaderboard' && result && Array.isArray(result.entries)) {
      for (const sub of [...shared.handles]) {
        if (sub._callback) invoke(sub._callback, result.entries.slice(0, sub.top), { push: 'leaderboard', ...result });
      }
    }
  }

  /** A subscription token from the channel's `getToken`; a failure is a refusal (code 102). */
  async _subToken(shared) {
    let token;
    try {
      token = await shared.getToken({ channel: shared.name });
    } catch (err) {
      throw new HeraldError(102, `getToken failed: ${err?.message ?? err}`);
    }
    if (typeof token !== 'string' || token === '') throw new HeraldError(102, 'getToken returned no token');
    return token;
  }

  /** The server's `sub_refresh` push: a new token before the current one ends (retried once if it had expired). */
  async _subRefresh(shared) {
    const ws = this._ws;
    for (let attempt = 0; ; attempt++) {
      try {
        const token = await this._subToken(shared);
        if (this._ws !== ws || this._subs.channel.get(shared.name) !== shared) return;
        await this._request('sub_refresh', { channel: shared.name, token }, this.options.timeout);
        return;
      } catch (err) {
        if (err.code === TOKEN_EXPIRED_ERROR && attempt === 0) continue;
        // The server unsubscribes the channel when the grant ends (push
        // `unsubscribe` 3006), and the client subscribes it again then.
        for (const sub of [...shared.handles]) sub._emit('error', err);
        this._emit('error', err);
        return;
      }
    }
  }

  _release(sub) {
    const shared = sub._shared;
    if (!shared.handles.delete(sub) || shared.handles.size > 0) return;
    const { kind, name } = shared;
    if (this._subs[kind].get(name) === shared) this._subs[kind].delete(name);
    if (this.state === 'connected' && shared.server !== 'none') {
      this._request(KINDS[kind].unsubscribe, { [KINDS[kind].field]: name }, this.options.timeout).catch((err) => {
        // A lost connection took the subscription with it: nothing to report.
        if (err.code !== HeraldError.CONNECTION_CLOSED) this._emit('error', err);
      });
    }
    shared.server = 'none';
  }

  *_allShared() {
    for (const map of Object.values(this._subs)) yield* map.values();
  }

  // ---- calls -------------------------------------------------------------

  /**
   * Publishes any JSON value; resolves with the server's acknowledgement.
   * Durable by default: made while disconnected, or lost in flight with the
   * connection, it waits in a bounded queue and goes out, in order, once
   * connected (at least once). `opts.volatile` drops it instead (rejects);
   * `opts.timeout` bounds the whole wait (default `publishTimeout`).
   */
  publish(channel, data, { timeout = this.options.publishTimeout, volatile = false } = {}) {
    let text;
    try {
      text = JSON.stringify(data);
    } catch (err) {
      return Promise.reject(err); // data that JSON cannot carry (BigInt, cycles)
    }
    if (text === undefined) return Promise.reject(new TypeError('@heraldhub/client: publish data must be a JSON value'));
    const call = { op: 'publish', args: { channel, data }, durable: !volatile, bytes: new TextEncoder().encode(text).length };
    if (this.state !== 'connected') {
      if (volatile) return Promise.reject(new HeraldError(HeraldError.DISCONNECTED, 'publish: not connected, volatile publish dropped'));
      const { maxQueuedPublishes: most, maxQueuedBytes: room } = this.options;
      let count = 0;
      let bytes = call.bytes;
      for (const q of this._queue) {
        if (!q.durable) continue;
        count++;
        bytes += q.bytes;
      }
      if (count >= most || bytes > room) {
        return Promise.reject(new HeraldError(HeraldError.QUEUE_FULL, `publish: queue full (at most ${most} publishes, ${room} bytes)`));
      }
    }
    return this._enqueue(call, timeout);
  }

  /** Who is in a channel: {clients: [{client, user, info, joined}], users} (108 where presence is not enabled). */
  presence(channel) {
    return this._call('presence', { channel });
  }

  /** How many are in a channel: {clients, users} (connections and unique users). */
  presenceStats(channel) {
    return this._call('presence_stats', { channel });
  }

  /** A channel's kept messages: opts {since: {offset, epoch}, limit, reverse}; {publications, offset, epoch}. */
  history(channel, { since, limit, reverse } = {}) {
    return this._call('history', { channel, since, limit, reverse });
  }

  /**
   * Pages backwards through a channel's history: an async iterator of pages
   * {publications, offset, epoch}, each at most `limit` publications, newest
   * first, from the newest kept (or from `until`, a position: that offset and
   * older) down to the oldest kept. Throws 111 if the history is reset
   * (its epoch changes) on the way.
   */
  async *historyPages(channel, { limit = 100, until } = {}) {
    if (!Number.isInteger(limit) || limit < 1) throw new TypeError('@heraldhub/client: limit must be a positive integer');
    let epoch = until?.epoch;
    let below = until && until.offset + 1; // offsets below this are still to come
    if (!until) {
      const page = await this.history(channel, { limit, reverse: true });
      if (!page.publications.length) return;
      yield page;
      if (page.publications.length < limit) return;
      ({ epoch } = page);
      below = page.publications.at(-1).offset;
    }
    while (below > 1) {
      // Offsets count up from 1 without a gap, so the page before `below`
      // is the one after `below - 1 - limit`.
      const after = Math.max(0, below - 1 - limit);
      let page;
      try {
        page = await this.history(channel, { since: { offset: after, epoch }, limit: below - 1 - after });
      } catch (err) {
        if (err.code !== UNRECOVERABLE) throw err;
        // Some after `after` are no longer kept (trimmed, or deleted over
        // RESP): the rest is read from the oldest kept on; whole if the
        // deletions left more than `limit` of them.
        page = await this.history(channel, { limit });
        const last = page.publications.at(-1);
        if (page.publications.length === limit && last.offset < below - 1) page = await this.history(channel);
        if (page.epoch !== epoch) throw new HeraldError(UNRECOVERABLE, `the history of ${channel} was reset (new epoch)`);
        const rest = page.publications.filter((p) => p.offset < below).reverse();
        for (let i = 0; i < rest.length; i += limit) yield { ...page, publications: rest.slice(i, i + limit) };
        return;
      }
      const publications = page.publications.filter((p) => p.offset < below).reverse();
      if (!publications.length) return;
      yield { ...page, publications };
      below = publications.at(-1).offset;
    }
  }
}

function isTerminal(code) {
  return code >= TERMINAL && code < 4000;
}



Object.defineProperty(exports, '__esModule', { value: true });
exports.VERSION = VERSION;
exports.HeraldError = HeraldError;
exports.backoff = backoff;
exports.refreshDelay = refreshDelay;
exports.Subscription = Subscription;
exports.Herald = Herald;
exports.default = Herald;
//# sourceMappingURL=herald.cjs.map
