// Helpers for the tests of the demo page and of examples/: free ports,
// processes started in their own process group (so that a run script and
// everything it started stop together), bounded waits, and redis-cli.
import { spawn, execFileSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import net from 'node:net';
import path from 'node:path';
import { root } from './herald.mjs';

export const examples = path.join(root, 'examples');

/** A TCP port that was free a moment ago (the OS does not hand it out again at once). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Starts a command in a new process group; its stdout and stderr lines are
 * kept. Returns {proc, lines, waitFor(re, ms), stop()}; stop() ends the
 * whole group (SIGTERM, then SIGKILL after 5 s) and is safe to call twice.
 */
export function startProcess(cmd, args, { env = {}, cwd = root, echo = false } = {}) {
  const proc = spawn(cmd, args, {
    cwd,
    env: { ...process.env, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
    detached: true,
  });
  const lines = [];
  const waiters = new Set();
  const exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  let exitStatus;
  exited.then((s) => {
    exitStatus = s;
    for (const w of waiters) w.fail(new Error(`${cmd} exited (${s.code ?? s.signal}) before printing ${w.re}\n${lines.join('\n')}`));
  });
  const onLine = (line) => {
    lines.push(line);
    if (echo) process.stderr.write(`[${path.basename(cmd)}] ${line}\n`);
    for (const w of [...waiters]) if (w.re.test(line)) w.done(line);
  };
  createInterface({ input: proc.stdout }).on('line', onLine);
  createInterface({ input: proc.stderr }).on('line', onLine);
  proc.stdin.on('error', () => {}); // writes after the process ended

  return {
    proc,
    lines,
    exited,
    /** Resolves with the first line (seen before or after the call) matching `re`. */
    waitFor(re, ms = 10000, from = 0) {
      const hit = lines.slice(from).find((l) => re.test(l));
      if (hit) return Promise.resolve(hit);
      if (exitStatus) return Promise.reject(new Error(`${cmd} exited before printing ${re}\n${lines.join('\n')}`));
      return new Promise((resolve, reject) => {
        const w = {
          re,
          done: (l) => { clearTimeout(timer); waiters.delete(w); resolve(l); },
          fail: (e) => { clearTimeout(timer); waiters.delete(w); reject(e); },
        };
        const timer = setTimeout(() => w.fail(new Error(`timed out after ${ms} ms waiting for ${re} from ${cmd}; output:\n${lines.join('\n')}`)), ms);
        waiters.add(w);
      });
    },
    /** Writes one line to its stdin. */
    send(line) {
      proc.stdin.write(`${line}\n`);
    },
    async stop() {
      if (exitStatus) return exitStatus;
      try { process.kill(-proc.pid, 'SIGTERM'); } catch { /* already gone */ }
      const timer = setTimeout(() => { try { process.kill(-proc.pid, 'SIGKILL'); } catch { /* gone */ } }, 5000);
      const status = await exited;
      clearTimeout(timer);
      return status;
    },
  };
}

/** Polls `fn` until it returns a truthy value; throws after `ms`. */
export async function waitUntil(fn, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Runs redis-cli against Herald's RESP address (host:port); returns its output. */
export function redisCli(resp, ...args) {
  const [host, port] = [resp.slice(0, resp.lastIndexOf(':')), resp.slice(resp.lastIndexOf(':') + 1)];
  return execFileSync('redis-cli', ['-h', host, '-p', port, ...args], { timeout: 5000, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
}

/** Ports for an example's run.sh, and its environment. */
export async function examplePorts(binary) {
  const ports = { RESP_PORT: await freePort(), HTTP_PORT: await freePort(), WEB_PORT: await freePort() };
  const env = { ...Object.fromEntries(Object.entries(ports).map(([k, v]) => [k, String(v)])), HERALD_BIN: binary };
  return { ...ports, env };
}

/** Ports for examples/cluster/run.sh (Redis and three nodes), and its environment. */
export async function clusterPorts(binary) {
  const ports = { REDIS_PORT: await freePort() };
  for (const n of [1, 2, 3]) {
    for (const kind of ['RESP', 'HTTP', 'WEB']) ports[`${kind}_PORT_${n}`] = await freePort();
  }
  const env = { ...Object.fromEntries(Object.entries(ports).map(([k, v]) => [k, String(v)])), HERALD_BIN: binary };
  return { ...ports, env };
}
