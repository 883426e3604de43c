// The hand-written types compile under `tsc --strict`: typecheck/usage.ts
// (every method and event, through the package's `import` condition) and
// typecheck/usage.cts (the `require` condition). Their @ts-expect-error
// lines are the negative cases: values JSON cannot carry, results that are
// not `any`.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const pkgDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const tsc = path.join(pkgDir, 'node_modules', 'typescript', 'bin', 'tsc');
const skip = existsSync(tsc) ? false : 'typescript is not installed (npm install)';

test('the types compile under tsc --strict, and reject what they should', { skip }, async () => {
  const { code, out } = await new Promise((resolve) => {
    execFile(process.execPath, [tsc, '-p', 'typecheck', '--strict'], { cwd: pkgDir }, (err, stdout, stderr) =>
      resolve({ code: err ? err.code : 0, out: stdout + stderr }),
    );
  });
  assert.equal(code, 0, out);
});
