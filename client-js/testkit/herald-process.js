// Helpers for end-to-end tests against the real Herald binary: start it on
// free ports, publish over raw RESP, mint HS256 JWTs. Every wait has a
// timeout, so a failure fails instead of hanging.

import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { createConnection } from 'node:net';
import { createInterface } from 'node:readline';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** The Herald binary: $HERALD_BIN, else target/debug/herald of this repository. */
export function heraldBin() {
  if (process.env.HERALD_BIN) return process.env.HERALD_BIN;
  const target = process.env.CARGO_TARGET_DIR || path.join(repo, 'target');
  return path.join(target, 'debug', 'herald');
}

export const haveHerald = () => existsSync(heraldBin());

/**
 * Starts Herald (RESP and HTTP on port 0 unless `args` say otherwise) and
 * resolves with {resp, http, url, proc, stop} once it logs its addresses.
 */
export function startHerald(args = []) {
  const addrs = [];
  if (!args.includes('--resp-addr')) addrs.push('--resp-addr', '127.0.0.1:0');
  if (!args.includes('--http-addr')) addrs.push('--http-addr', '127.0.0.1:0');
  return new Promise((resolve, reject) => {
    const proc = spawn(heraldBin(), [...addrs, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`herald did not start within 10 s; stderr: ${stderr}`));
    }, 10000);
    proc.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`herald exited with ${code}; stderr: ${stderr}`));
    });
    proc.stderr.on('data', (d) => {
      stderr += d;
    });
    createInterface({ input: proc.stdout }).on('line', (line) => {
      const m = line.match(/herald listening resp=(\S+) http=(\S+)/);
      if (!m) return;
      clearTimeout(timer);
      resolve({
        resp: m[1],
        http: m[2],
        url: `ws://${m[2]}/ws`,
        proc,
        stop: () =>
          new Promise((done) => {
            if (proc.exitCode !== null || proc.signalCode !== null) return done();
            const kill = setTimeout(() => proc.kill('SIGKILL'), 5000);
            proc.once('exit', () => {
              clearTimeout(kill);
              done();
            });
            proc.kill('SIGTERM');
          }),
      });
    });
  });
}

/** PUBLISH over a raw RESP connection; resolves with the number of receivers. */
export function respPublish(addr, channel, payload, password) {
  return respCommand(addr, ['PUBLISH', channel, payload], password);
}

/**
 * Any command with an integer reply over a raw RESP connection, after
 * `AUTH password` where given (once authentication is configured, an
 * anonymous backend may not publish).
 */
export function respCommand(addr, args, password) {
  const [host, port] = splitAddr(addr);
  const bulk = (b) => Buffer.concat([Buffer.from(`$${b.length}\r\n`), b, Buffer.from('\r\n')]);
  const encode = (a) => Buffer.concat([Buffer.from(`*${a.length}\r\n`), ...a.map((x) => bulk(Buffer.from(x)))]);
  const frame = password === undefined ? encode(args) : Buffer.concat([encode(['AUTH', password]), encode(args)]);
  return new Promise((resolve, reject) => {
    const sock = createConnection({ host, port }, () => sock.write(frame));
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error('no RESP reply within 5 s'));
    }, 5000);
    let buf = '';
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      if (password !== undefined && buf.startsWith('+OK\r\n')) buf = buf.slice(5);
      const m = buf.match(/^([:-])(.*)\r\n/);
      if (!m) return;
      clearTimeout(timer);
      sock.end();
      if (m[1] === ':') resolve(Number(m[2]));
      else reject(new Error(m[2]));
    });
    sock.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

function splitAddr(addr) {
  const i = addr.lastIndexOf(':');
  return [addr.slice(0, i).replace(/^\[|\]$/g, ''), Number(addr.slice(i + 1))];
}

const b64url = (s) => Buffer.from(s).toString('base64url');

/** An HS256 JWT with these claims. */
export function jwt(claims, secret) {
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify(claims));
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

export const nowSeconds = () => Math.floor(Date.now() / 1000);
