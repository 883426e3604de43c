// `node --import ./testkit/use-build.mjs --test test/...` runs the tests
// against a build instead of the source: every test file's import of
// '../src/herald.js' gets dist/herald.cjs (HERALD_BUILD=cjs) or the browser
// script dist/herald.min.js (HERALD_BUILD=iife, run as a classic script).
import { register } from 'node:module';

register('./build-hooks.mjs', import.meta.url);
