// The builds of scripts/build.mjs: dist/ is up to date with the source, the
// browser script is small, the whole unit and end-to-end suite passes
// against the CommonJS build and the browser script too, Node resolves
// `require` and `import` to the right one, the source maps point back to
// the source, and the npm package ships what it should (LICENSE included).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { build, sizes, tokenize, minify, distDir } from '../scripts/build.mjs';
import { startHerald, haveHerald, heraldBin } from '../testkit/herald-process.js';

const pkgDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const noHerald = haveHerald() ? false : `no Herald binary at ${heraldBin()} (cargo build first)`;

function run(args, env = {}) {
  return new Promise((resolve) => {
    // Without NODE_TEST_CONTEXT, a child `node --test` reports as a run of its own.
    const { NODE_TEST_CONTEXT, ...parent } = process.env;
    const child = spawn(process.execPath, args, { cwd: pkgDir, env: { ...parent, ...env } });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    // A child that hangs is killed; the test then fails on its exit code.
    const timer = setTimeout(() => child.kill('SIGKILL'), 170000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

test('dist/ is what the source builds (run `npm run build` after changing src/)', () => {
  for (const [name, text] of Object.entries(build())) {
    assert.equal(readFileSync(path.join(distDir, name), 'utf8'), text, `dist/${name} is stale`);
  }
});

test('the browser script stays under 8 kB minified and gzipped', (t) => {
  const { min, gzip } = sizes();
  t.diagnostic(`dist/herald.min.js: ${min} bytes, ${gzip} gzipped`);
  assert.ok(gzip < 8192, `${gzip} bytes gzipped`);
});

for (const kind of ['cjs', 'iife']) {
  test(`the whole client suite passes against the ${kind === 'cjs' ? 'CommonJS build' : 'browser script'}`, { timeout: 180000 }, async () => {
    const files = readdirSync(path.join(pkgDir, 'test'))
      .filter((f) => f.endsWith('.test.js') && !['builds.test.js', 'types.test.js'].includes(f))
      .map((f) => `test/${f}`);
    assert.ok(files.length >= 6);
    const args = ['--import', './testkit/use-build.mjs', '--test', '--test-reporter=tap', ...files];
    const { code, out } = await run(args, { HERALD_BUILD: kind });
    assert.equal(code, 0, out.slice(-4000));
    assert.match(out, /# fail 0/);
  });
}

// Run in a child with the package directory as its cwd, so that the
// package's own name resolves through its `exports`.
const roundTrip = (load) => `
${load}
const WebSocket = require('ws');
(async () => {
  const herald = new Herald(process.env.URL, { websocket: WebSocket, timeout: 3000 });
  const got = new Promise((resolve) => herald.subscribe('builds', (data) => resolve(data)));
  await herald.connect();
  await herald.publish('builds', { via: process.env.VIA });
  console.log(JSON.stringify({ data: await got, where }));
  herald.disconnect();
})().catch((err) => { console.error(err); process.exit(1); });
`;

test('Node: `require` gets the CommonJS build and `import` the ES module, both working against Herald', { skip: noHerald, timeout: 30000 }, async (t) => {
  const server = await startHerald();
  t.after(() => server.stop());
  const env = { URL: server.url };
  const cjs = await run(
    ['-e', roundTrip("const { Herald } = require('@heraldhub/client'); const where = require.resolve('@heraldhub/client');")],
    { ...env, VIA: 'require' },
  );
  assert.equal(cjs.code, 0, cjs.out);
  assert.deepEqual(JSON.parse(cjs.out), { data: { via: 'require' }, where: path.join(pkgDir, 'dist', 'herald.cjs') });
  assert.equal(require_default(), true);

  const esm = await run(
    [
      '--input-type=module',
      '-e',
      roundTrip(
        "import { createRequire } from 'node:module'; import { Herald } from '@heraldhub/client';" +
          "const require = createRequire(import.meta.url + '/'); const where = fileURLToPath(import.meta.resolve('@heraldhub/client'));" +
          "import { fileURLToPath } from 'node:url';",
      ),
    ],
    { ...env, VIA: 'import' },
  );
  assert.equal(esm.code, 0, esm.out);
  assert.deepEqual(JSON.parse(esm.out), { data: { via: 'import' }, where: path.join(pkgDir, 'src', 'herald.js') });
});

function require_default() {
  const out = execFileSync(
    process.execPath,
    ['-e', "const m = require('@heraldhub/client'); console.log(m.default === m.Herald && m.__esModule === true && typeof m.HeraldError)"],
    { cwd: pkgDir, encoding: 'utf8' },
  );
  return out.trim() === 'function';
}

/** Decodes a version 3 source map into [genLine, genCol, srcLine, srcCol]. */
function decode(map) {
  const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  const out = [];
  const state = [0, 0, 0, 0];
  map.mappings.split(';').forEach((line, gl) => {
    state[0] = 0;
    for (const seg of line ? line.split(',') : []) {
      const values = [];
      let value = 0;
      let shift = 0;
      for (const ch of seg) {
        const digit = B64.indexOf(ch);
        value += (digit & 31) << shift;
        if (digit & 32) shift += 5;
        else {
          values.push(value & 1 ? -(value >>> 1) : value >>> 1);
          value = shift = 0;
        }
      }
      for (let i = 0; i < 4; i++) state[i] += values[i];
      out.push([gl, state[0], state[2], state[3]]);
    }
  });
  return out;
}

test('the source maps point each token of the builds back to the source', () => {
  const files = build();
  const src = readFileSync(path.join(pkgDir, 'src', 'herald.js'), 'utf8');
  const srcLines = src.split('\n');
  const tokens = new Map(tokenize(src).map((tok) => [`${tok.line}:${tok.col}`, tok.text]));
  for (const name of ['herald.min.js', 'herald.cjs']) {
    const map = JSON.parse(files[`${name}.map`]);
    assert.deepEqual([map.version, map.file, map.sources], [3, name, ['../src/herald.js']]);
    assert.equal(path.resolve(distDir, map.sources[0]), path.join(pkgDir, 'src', 'herald.js')); // shipped beside dist/
    const genLines = files[name].split('\n');
    const mappings = decode(map);
    assert.ok(mappings.length > (name === 'herald.cjs' ? 700 : 5000), `${name}: ${mappings.length} mappings`);
    for (const [gl, gc, sl, sc] of mappings) {
      const text = name === 'herald.cjs' ? srcLines[sl].slice(sc) : tokens.get(`${sl}:${sc}`);
      assert.ok(text !== undefined, `${name}: no token at ${sl + 1}:${sc + 1}`);
      assert.equal(genLines[gl].slice(gc, gc + text.length), text, `${name} ${gl + 1}:${gc + 1}`);
    }
    assert.match(files[name], new RegExp(`//# sourceMappingURL=${name}.map\\n$`));
  }
});

test('the minifier keeps what the code means: semicolon insertion, literals, operators', () => {
  const code = `
    const re = /[/"'\`]+\\/x/g; // a comment with 'quotes'
    let a = 1
    let b = a
    ++b
    const t = \`x\${a + \`in\${b}\`}y
z\`;
    const n = 1 .toFixed(1) + 1e-3 + 0x1f + 2_000 + .5;
    const f = () => {
      return (
        a - -b + +a
      )
    }
    function g() {
      return
      1;
    }
    /* block
       comment */ const s = "a//b" + 'c/*d*/' + a / 2 / 1;
    [re.source, re.flags, a, b, t, n, f(), g(), s, typeof re === 'object' ? 'regex' : 'not']
  `;
  const body = `return eval(${JSON.stringify(code)});`;
  const { code: small } = minify(tokenize(code));
  assert.ok(small.length < code.length * 0.6, small);
  assert.deepEqual(new Function(`return eval(${JSON.stringify(small)});`)(), new Function(body)());
  assert.throws(() => tokenize('const s = "open'), /unterminated string/);
  assert.throws(() => tokenize('x = `open'), /unterminated template/);
});

test('npm pack ships LICENSE, README, the source, the builds and the types, and nothing else', () => {
  const [report] = JSON.parse(
    execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: pkgDir, encoding: 'utf8' }),
  );
  const files = report.files.map((f) => f.path).sort();
  assert.deepEqual(files, [
    'LICENSE',
    'README.md',
    'dist/herald.cjs',
    'dist/herald.cjs.map',
    'dist/herald.d.cts',
    'dist/herald.min.js',
    'dist/herald.min.js.map',
    'package.json',
    'src/herald.js',
    'src/index.d.ts',
  ]);
  assert.equal(readFileSync(path.join(pkgDir, 'LICENSE'), 'utf8'), readFileSync(path.join(pkgDir, '..', 'LICENSE'), 'utf8'));
  assert.match(readFileSync(path.join(pkgDir, 'LICENSE'), 'utf8'), /^MIT License\n\nCopyright \(c\) 2026 the Herald authors\n/);
  const pkg = JSON.parse(readFileSync(path.join(pkgDir, 'package.json'), 'utf8'));
  assert.equal(pkg.license, 'MIT');
  assert.equal(pkg.repository.url, 'git+https://github.com/heraldhub/herald.git');
  assert.equal(pkg.bugs.url, 'https://github.com/heraldhub/herald/issues');
  assert.match(pkg.homepage, /^https:\/\/github\.com\/heraldhub\/herald/);
  assert.deepEqual(pkg.exports['.'].require, { types: './dist/herald.d.cts', default: './dist/herald.cjs' });
});
