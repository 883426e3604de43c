// Shared helpers for browser tests: start the real Herald binary on free
// ports, mint HS256 JWTs, and launch Debian's Chromium through
// playwright-core (no browser download).
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { createInterface } from 'node:readline';
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { chromium } from 'playwright-core';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const artifacts = path.join(root, 'tests', 'artifacts');
mkdirSync(artifacts, { recursive: true });

export function heraldBin() {
  if (process.env.HERALD_BIN) return process.env.HERALD_BIN;
  const target = process.env.CARGO_TARGET_DIR || path.join(root, 'target');
  return path.join(target, 'debug', 'herald');
}

/** Starts Herald; resolves with {resp, http, proc, stop}. */
export function startHerald(args = []) {
  return new Promise((resolve, reject) => {
    const proc = spawn(heraldBin(), ['--resp-addr', '127.0.0.1:0', '--http-addr', '127.0.0.1:0', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const timer = setTimeout(() => reject(new Error('herald did not start')), 10000);
    timer.unref();
    proc.on('error', reject);
    const lines = createInterface({ input: proc.stdout });
    lines.on('line', (line) => {
      const m = line.match(/herald listening resp=(\S+) http=(\S+)/);
      if (m) {
        clearTimeout(timer);
        resolve({
          resp: m[1],
          http: m[2],
          proc,
          stop: () => new Promise((r) => { proc.once('exit', r); proc.kill('SIGTERM'); }),
        });
      }
    });
    proc.stderr.on('data', (d) => process.stderr.write(d));
  });
}

const b64url = (s) => Buffer.from(s).toString('base64url');

/** An HS256 JWT. */
export function jwt(claims, secret) {
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify(claims));
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

/** Headless Debian Chromium with the flags this closed network needs. */
export function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
}

/** Runs a command; resolves with its stdout lines as they come. */
export function spawnLines(cmd, args) {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const waiters = [];
  const seen = [];
  createInterface({ input: proc.stdout }).on('line', (l) => {
    seen.push(l);
    for (const w of [...waiters]) if (w.test(l)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(l); }
  });
  let err = '';
  proc.stderr.on('data', (d) => { err += d; });
  return {
    proc,
    stderr: () => err,
    waitFor(re, ms = 10000) {
      const hit = seen.find((l) => re.test(l));
      if (hit) return Promise.resolve(hit);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out waiting for ${re}; stderr: ${err}`)), ms);
        const w = { test: (l) => re.test(l), resolve: (l) => { clearTimeout(timer); resolve(l); } };
        waiters.push(w);
      });
    },
  };
}
