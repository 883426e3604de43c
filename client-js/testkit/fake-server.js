// An in-process stand-in for a Herald server and the WebSocket constructor
// that reaches it, for deterministic unit tests with no network: inject
// `server.WebSocket` through the client's `websocket` option, script the
// replies per op, and drop, refuse or push at will.
//
// Kept outside test/ because `node --test test/` runs every .js file there.

/** A handler's answer meaning "do not reply at all" (to test timeouts). */
export const NO_REPLY = Symbol('no reply');

/** A handler's answer meaning "reply with this error". */
export function refuse(code, message = `error ${code}`) {
  return { [REFUSAL]: { code, message } };
}
const REFUSAL = Symbol('refusal');

export class FakeServer {
  constructor() {
    /** Every socket ever opened, oldest first. */
    this.sockets = [];
    /** Every command received: {op, ...args, socket}. */
    this.commands = [];
    /** When true, new sockets fail to open (as with ECONNREFUSED). */
    this.refusing = false;
    /** Scripted replies, by op: (command, socket) => result | refuse(...) | NO_REPLY. */
    this.handlers = {
      connect: () => ({ client: String(this.sockets.length), user: null, expires: null, ping_interval: 0, version: 'fake' }),
      refresh: () => ({ expires: null }),
      ping: () => ({}),
      subscribe: () => ({}),
      psubscribe: () => ({}),
      unsubscribe: () => ({}),
      punsubscribe: () => ({}),
      publish: () => ({}),
      presence: () => refuse(108, 'presence is not enabled on this server yet'),
      presence_stats: () => refuse(108, 'presence is not enabled on this server yet'),
      history: () => refuse(108, 'history is not enabled on this server yet'),
      leaderboard_subscribe: () => refuse(108, 'leaderboards are not enabled on this server yet'),
      leaderboard_unsubscribe: () => refuse(108, 'leaderboards are not enabled on this server yet'),
    };

    const server = this;
    this.WebSocket = class FakeWebSocket {
      constructor(url) {
        this.url = url;
        this.readyState = 0;
        this.onopen = this.onmessage = this.onerror = this.onclose = null;
        server.sockets.push(this);
        queueMicrotask(() => {
          if (this.readyState !== 0) return;
          if (server.refusing) {
            this.readyState = 3;
            this.onerror?.({ message: 'connection refused' });
            this.onclose?.({ code: 1006, reason: '' });
          } else {
            this.readyState = 1;
            this.onopen?.({});
          }
        });
      }

      send(text) {
        // As browsers do: an error while connecting, silence once closing.
        if (this.readyState === 0) throw new Error('InvalidStateError: still connecting');
        if (this.readyState !== 1) return;
        server._receive(this, JSON.parse(text));
      }

      close(code = 1000, reason = '') {
        if (this.readyState >= 2) return;
        this.readyState = 3;
        queueMicrotask(() => this.onclose?.({ code, reason }));
      }

      // ---- the server's side of this socket ----

      /** Sends a frame to the client. */
      push(obj) {
        if (this.readyState !== 1) return;
        queueMicrotask(() => this.onmessage?.({ data: JSON.stringify(obj) }));
      }

      /** Closes from the server side, as a dropped network or a close frame. */
      drop(code = 1006, reason = '') {
        if (this.readyState >= 2) return;
        this.readyState = 3;
        queueMicrotask(() => this.onclose?.({ code, reason }));
      }

      /** A `disconnect` push followed by the close frame, as Herald does. */
      disconnect(code, reason = `code ${code}`) {
        this.push({ push: 'disconnect', code, reason, reconnect: code < 3500 });
        queueMicrotask(() => this.drop(code, reason));
      }

      get open() {
        return this.readyState === 1;
      }
    };
  }

  /** The newest socket. */
  get socket() {
    return this.sockets[this.sockets.length - 1];
  }

  /** The commands received so far with this op (and on this socket, if given). */
  received(op, socket) {
    return this.commands.filter((c) => c.op === op && (!socket || c.socket === socket));
  }

  _receive(socket, cmd) {
    const { id, op, ...args } = cmd;
    this.commands.push({ op, ...args, id, socket });
    const handler = this.handlers[op];
    const answer = handler ? handler(cmd, socket) : refuse(101, `unknown op '${op}'`);
    if (answer === NO_REPLY) return;
    if (answer && answer[REFUSAL]) socket.push({ id, error: answer[REFUSAL] });
    else socket.push({ id, result: answer ?? {} });
  }
}

/**
 * Resolves once `predicate()` is truthy; rejects after `ms`. Polls on
 * setImmediate and measures with performance.now(), so it also works while
 * node:test's mock timers replace setTimeout and Date.
 */
export function until(predicate, ms = 2000, what = String(predicate)) {
  const deadline = performance.now() + ms;
  return new Promise((resolve, reject) => {
    const poll = () => {
      let value;
      try {
        value = predicate();
      } catch (err) {
        reject(err);
        return;
      }
      if (value) resolve(value);
      else if (performance.now() > deadline) reject(new Error(`timed out waiting for ${what}`));
      else setImmediate(poll);
    };
    poll();
  });
}

/** Lets queued microtasks and immediates run. */
export async function settle(rounds = 5) {
  for (let i = 0; i < rounds; i++) await new Promise((r) => setImmediate(r));
}

/** Collects what an emitter emits for one event. */
export function record(emitter, event) {
  const seen = [];
  emitter.on(event, (arg) => seen.push(arg));
  return seen;
}

/** Real-time sleep (not affected by mock timers that do not mock setImmediate). */
export function sleep(ms) {
  return until(((start) => () => performance.now() - start >= ms)(performance.now()), ms + 1000, `${ms} ms`);
}
