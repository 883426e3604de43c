// The client's exports, taken from the build that HERALD_BUILD names.
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import vm from 'node:vm';

let api;
if (process.env.HERALD_BUILD === 'cjs') {
  api = createRequire(import.meta.url)('../dist/herald.cjs');
} else if (process.env.HERALD_BUILD === 'iife') {
  const file = new URL('../dist/herald.min.js', import.meta.url);
  vm.runInThisContext(readFileSync(file, 'utf8'), { filename: file.pathname });
  api = globalThis.Herald;
} else {
  throw new Error(`HERALD_BUILD must be cjs or iife, not ${process.env.HERALD_BUILD}`);
}

export const { Herald, HeraldError, Subscription, VERSION, backoff, refreshDelay } = api;
export default Herald;
