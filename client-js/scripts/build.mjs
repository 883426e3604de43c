// Builds dist/ from src/herald.js, with no dependencies:
//
//   dist/herald.cjs (+ .map)     CommonJS, for `require` (Node 20.0 to 20.18
//                                cannot require an ES module): the source
//                                with its `export`s turned into `exports.X`,
//                                line for line
//   dist/herald.min.js (+ .map)  a minified classic script (IIFE) defining
//                                the global `Herald`, for a plain <script>
//                                tag; Herald serves it at /client/herald.min.js
//   dist/herald.d.cts            the types, for the `require` condition
//
// The ES module is src/herald.js itself. The minifier is conservative: it
// drops comments and whitespace, and keeps a line break wherever removing it
// could change automatic semicolon insertion; it renames nothing.
//
//   node scripts/build.mjs          writes dist/ and prints the sizes
//   node scripts/build.mjs --check  exits 1 if dist/ is not what the source builds

import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const distDir = path.join(root, 'dist');
const SOURCE = '../src/herald.js'; // as the maps name it, relative to dist/

// ---- a tokenizer, enough for this client's source ------------------------

const PUNCTUATORS = [
  '>>>=', '...', '===', '!==', '**=', '<<=', '>>=', '>>>', '&&=', '||=', '??=',
  '=>', '==', '!=', '<=', '>=', '&&', '||', '??', '?.', '++', '--', '+=', '-=', '*=', '/=', '%=',
  '&=', '|=', '^=', '**', '<<', '>>',
];
// After these words a `/` starts a regular expression, not a division.
const BEFORE_REGEX = new Set(['return', 'typeof', 'instanceof', 'in', 'of', 'new', 'delete', 'void', 'throw', 'case', 'do', 'else', 'yield', 'await']);
const isWord = (c) => c !== undefined && /[\w$#\u0080-\uffff]/.test(c);

/**
 * Splits JavaScript into tokens {type, text, line, col, nl}: `nl` says a
 * line break (or a comment holding one) came before it. Types: word
 * (identifiers, keywords, numbers), string, template (a piece of a template
 * literal, up to `${` or its end), regex, punct. Throws on what it cannot read.
 */
export function tokenize(src) {
  const tokens = [];
  const braces = []; // 'brace' or 'template' for each open `{` / `${`
  let i = 0;
  let line = 0;
  let lineStart = 0;
  let nl = false;
  const fail = (what) => {
    throw new SyntaxError(`build: ${what} at ${line + 1}:${i - lineStart + 1}`);
  };
  const advance = (to) => {
    for (; i < to; i++) {
      if (src[i] === '\n') {
        line++;
        lineStart = i + 1;
      }
    }
  };
  const push = (type, end) => {
    tokens.push({ type, text: src.slice(i, end), line, col: i - lineStart, nl });
    nl = false;
    advance(end);
  };
  // From a '`' or the '}' closing a '${' to the end of that template piece.
  const templatePiece = () => {
    let j = i + 1;
    for (;;) {
      if (j >= src.length) fail('unterminated template');
      if (src[j] === '\\') j += 2;
      else if (src[j] === '`') {
        push('template', j + 1);
        return;
      } else if (src[j] === '$' && src[j + 1] === '{') {
        braces.push('template');
        push('template', j + 2);
        return;
      } else j++;
    }
  };
  while (i < src.length) {
    const c = src[i];
    const next = src[i + 1];
    if (c === '\n') {
      nl = true;
      advance(i + 1);
    } else if (/\s/.test(c)) {
      i++;
    } else if (c === '/' && next === '/') {
      const end = src.indexOf('\n', i);
      advance(end < 0 ? src.length : end);
    } else if (c === '/' && next === '*') {
      const end = src.indexOf('*/', i + 2);
      if (end < 0) fail('unterminated comment');
      if (src.slice(i, end).includes('\n')) nl = true;
      advance(end + 2);
    } else if (c === '"' || c === "'") {
      let j = i + 1;
      while (src[j] !== c) {
        if (j >= src.length || src[j] === '\n') fail('unterminated string');
        j += src[j] === '\\' ? 2 : 1;
      }
      push('string', j + 1);
    } else if (c === '`') {
      templatePiece();
    } else if (c === '}' && braces.at(-1) === 'template') {
      braces.pop();
      templatePiece();
    } else if (/[0-9]/.test(c) || (c === '.' && /[0-9]/.test(next))) {
      let j = i + 1;
      const exponent = () => /[eE]/.test(src[j - 1]) && /[+-]/.test(src[j]) && !/^0[xX]/.test(src.slice(i, j));
      while (j < src.length && (/[\w.]/.test(src[j]) || exponent())) j++;
      push('word', j);
    } else if (isWord(c)) {
      let j = i + 1;
      while (isWord(src[j])) j++;
      push('word', j);
    } else if (c === '/' && startsRegex(tokens.at(-1))) {
      let j = i + 1;
      let inClass = false;
      while (inClass || src[j] !== '/') {
        if (j >= src.length || src[j] === '\n') fail('unterminated regular expression');
        if (src[j] === '\\') j++;
        else if (src[j] === '[') inClass = true;
        else if (src[j] === ']') inClass = false;
        j++;
      }
      j++;
      while (isWord(src[j])) j++; // flags
      push('regex', j);
    } else {
      const p = PUNCTUATORS.find((x) => src.startsWith(x, i)) ?? c;
      if (!/^[-+*/%=<>!&|^~?:;,.(){}[\]@]+$/.test(p)) fail(`unexpected character ${JSON.stringify(c)}`);
      if (p === '{') braces.push('brace');
      else if (p === '}') braces.pop();
      push('punct', i + p.length);
    }
  }
  return tokens;
}

function startsRegex(prev) {
  if (!prev) return true;
  if (prev.type === 'punct') return ![')', ']', '}'].includes(prev.text);
  return prev.type === 'word' && BEFORE_REGEX.has(prev.text);
}

// ---- minifying -----------------------------------------------------------

// A line break between two tokens can be dropped when the one before it
// cannot end a statement, or the one after it cannot start one: then no
// semicolon is inserted there either way.
const OPENS = new Set(['{', '(', '[', ',', ';', ':', '?', '=', '=>', '&&', '||', '??', '.', '?.', '+', '-', '*', '/', '%', '**',
  '==', '===', '!=', '!==', '<', '>', '<=', '>=', '+=', '-=', '*=', '/=', '%=', '&&=', '||=', '??=', '!', '&', '|', '^', '~', '...']);
const CLOSES = new Set(['}', ')', ']', ',', ';', ':', '.', '?.', '?', '=', '=>', '&&', '||', '??', '==', '===', '!=', '!==',
  '*', '/', '%', '**', '<=', '>=', '+=', '-=', '*=', '/=', '%=', '&&=', '||=', '??=']);

function separator(prev, tok) {
  const a = prev.text;
  const b = tok.text;
  const space =
    (isWord(a.at(-1)) && isWord(b[0])) ||
    (prev.type === 'regex' && isWord(b[0])) ||
    (prev.type === 'word' && /^[0-9]/.test(a) && b[0] === '.') ||
    (a.at(-1) === '+' && b[0] === '+') ||
    (a.at(-1) === '-' && b[0] === '-') ||
    (a.at(-1) === '/' && (b[0] === '/' || b[0] === '*'));
  const punct = (t, set) => t.type === 'punct' && set.has(t.text);
  if (tok.nl && !punct(prev, OPENS) && !punct(tok, CLOSES)) return '\n';
  return space ? ' ' : '';
}

/** Joins tokens minimally; returns {code, mappings: [[genLine, genCol, srcLine, srcCol], ...]}. */
export function minify(tokens, { line = 0, col = 0 } = {}) {
  let code = '';
  const mappings = [];
  let prev = null;
  for (const tok of tokens) {
    const sep = prev ? separator(prev, tok) : '';
    code += sep;
    if (sep === '\n') {
      line++;
      col = 0;
    } else col += sep.length;
    mappings.push([line, col, tok.line, tok.col]);
    code += tok.text;
    const parts = tok.text.split('\n'); // template literals may span lines
    if (parts.length > 1) {
      line += parts.length - 1;
      col = parts.at(-1).length;
    } else col += tok.text.length;
    prev = tok;
  }
  return { code, mappings, end: { line, col } };
}

/**
 * Removes the module syntax: `export` before const/let/class/function, and
 * `export default NAME;`. Returns the names exported (default: 'default').
 */
export function stripExports(tokens) {
  const names = {};
  const out = [];
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    if (t.type !== 'word' || t.text !== 'export' || (out.length && !['}', ';'].includes(out.at(-1).text))) {
      if (t.type === 'word' && t.text === 'import' && tokens[i + 1]?.text !== '(') throw new SyntaxError('build: the source must have no imports');
      out.push(t);
      continue;
    }
    const kw = tokens[i + 1];
    if (kw.text === 'default') {
      if (tokens[i + 2].type !== 'word' || tokens[i + 3].text !== ';') throw new SyntaxError('build: only `export default NAME;` is supported');
      names.default = tokens[i + 2].text;
      i += 3;
      continue;
    }
    let n = i + 2;
    if (kw.text === 'async') n++;
    if (tokens[n].text === '*') n++;
    if (!['const', 'let', 'class', 'function', 'async'].includes(kw.text) || tokens[n].type !== 'word') {
      throw new SyntaxError(`build: unsupported export at line ${t.line + 1}`);
    }
    names[tokens[n].text] = tokens[n].text;
    tokens[i + 1] = { ...kw, nl: kw.nl || t.nl };
  }
  return { tokens: out, names };
}

// ---- source maps (version 3) ---------------------------------------------

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
function vlq(n) {
  let v = n < 0 ? (-n << 1) | 1 : n << 1;
  let out = '';
  do {
    let digit = v & 31;
    v >>>= 5;
    if (v > 0) digit |= 32;
    out += B64[digit];
  } while (v > 0);
  return out;
}

/**
 * A source map of src/herald.js from [genLine, genCol, srcLine, srcCol]
 * (sorted). Without the source's text: the package ships the file it names.
 */
export function sourceMap(file, mappings) {
  const lines = [];
  let prevSrcLine = 0;
  let prevSrcCol = 0;
  for (const [gl, gc, sl, sc] of mappings) {
    while (lines.length <= gl) lines.push({ segs: [], prevCol: 0 });
    const l = lines[gl];
    l.segs.push(vlq(gc - l.prevCol) + vlq(0) + vlq(sl - prevSrcLine) + vlq(sc - prevSrcCol));
    l.prevCol = gc;
    prevSrcLine = sl;
    prevSrcCol = sc;
  }
  return `${JSON.stringify({
    version: 3,
    file,
    sources: [SOURCE],
    names: [],
    mappings: lines.map((l) => l.segs.join(',')).join(';'),
  })}\n`;
}

// ---- the builds ----------------------------------------------------------

/** Every file of dist/, by name: the same input always gives the same bytes. */
export function build() {
  const src = readFileSync(path.join(root, 'src', 'herald.js'), 'utf8');
  const types = readFileSync(path.join(root, 'src', 'index.d.ts'), 'utf8');
  const { version } = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'));
  if (!src.includes(`export const VERSION = '${version}';`)) throw new Error(`build: VERSION in src/herald.js is not ${version} (package.json)`);
  const banner = `/*! @heraldhub/client ${version} | (c) 2026 the Herald authors | MIT license */`;

  // CommonJS: line for line, so that the map is one segment a line.
  const lines = src.split('\n');
  const exported = [];
  const cjsMappings = [];
  const body = lines.map((text, n) => {
    const m = text.match(/^export (?:(default) (\w+);$|(?:const|let|class|function|async function\*?|function\*) (\w+))/);
    if (!m && /^export\b/.test(text)) throw new SyntaxError(`build: unsupported export at line ${n + 1}`);
    if (m?.[1]) {
      exported.push(['default', m[2]]);
      return '';
    }
    if (m) {
      exported.push([m[3], m[3]]);
      cjsMappings.push([n + 1, 0, n, 'export '.length]);
      return text.slice('export '.length);
    }
    if (text !== '') cjsMappings.push([n + 1, 0, n, 0]);
    return text;
  });
  const exportLines = exported.map(([as, name]) => `exports.${as} = ${name};`);
  const cjs = [
    "'use strict';",
    ...body,
    "Object.defineProperty(exports, '__esModule', { value: true });",
    ...exportLines,
    '//# sourceMappingURL=herald.cjs.map',
    '',
  ].join('\n');

  // The browser script: the global `Herald` is the client class, carrying
  // every other export as a property (Herald.HeraldError, ...).
  const { tokens, names } = stripExports(tokenize(src));
  const head = `${banner}\nvar Herald=function(){"use strict";`;
  const min = minify(tokens, { line: 1, col: head.length - banner.length - 1 });
  const others = Object.keys(names).filter((k) => k !== 'default');
  if (names.default !== 'Herald' || !others.includes('Herald')) throw new Error('build: Herald must be the default export');
  const iife = `${head}${min.code}\nreturn Object.assign(Herald,{${others.join(',')}})}();\n//# sourceMappingURL=herald.min.js.map\n`;

  return {
    'herald.cjs': cjs,
    'herald.cjs.map': sourceMap('herald.cjs', cjsMappings),
    'herald.min.js': iife,
    'herald.min.js.map': sourceMap('herald.min.js', min.mappings),
    'herald.d.cts': types,
  };
}

/** Sizes of the browser script: bytes, and gzipped at level 9. */
export function sizes(files = build()) {
  const min = Buffer.from(files['herald.min.js']);
  return { min: min.length, gzip: gzipSync(min, { level: 9 }).length };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const files = build();
  if (process.argv.includes('--check')) {
    const stale = Object.entries(files).filter(([name, text]) => {
      try {
        return readFileSync(path.join(distDir, name), 'utf8') !== text;
      } catch {
        return true;
      }
    });
    if (stale.length) {
      console.error(`dist/ is out of date (${stale.map(([n]) => n).join(', ')}): run npm run build`);
      process.exit(1);
    }
  } else {
    mkdirSync(distDir, { recursive: true });
    for (const [name, text] of Object.entries(files)) writeFileSync(path.join(distDir, name), text);
  }
  const { min, gzip } = sizes(files);
  console.log(`dist/herald.min.js: ${min} bytes, ${gzip} gzipped`);
}
