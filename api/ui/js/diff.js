// A side-by-side diff of two configurations, one row per JSON Pointer, changed rows marked.
// Unchanged rows away from any change fold into "n unchanged" rows, as code review tools do.

import { h } from './dom.js';
import { escapeToken, flatten, isContainer, scalarText } from './tree.js';

const CONTEXT = 2;
const SIGN = { changed: '~', added: '+', removed: '−', same: '' };
const SAY = { changed: 'changed', added: 'added', removed: 'removed', same: 'unchanged' };

/** JSON with sorted keys: equal documents give equal text whatever their key order. */
function canon(value) {
  if (Array.isArray(value)) return `[${value.map(canon).join(',')}]`;
  if (value && typeof value === 'object') return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canon(value[k])}`).join(',')}}`;
  return JSON.stringify(value);
}

function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

const LCS_LIMIT = 400;

/** Which items of two lists are the same (longest common subsequence by value): the
 *  operations ['same'|'del'|'ins', i, j] in order. Long lists are compared by position. */
function alignLists(a, b) {
  const ka = a.map(canon);
  const kb = b.map(canon);
  const n = a.length;
  const m = b.length;
  if (n > LCS_LIMIT || m > LCS_LIMIT) {
    const ops = [];
    for (let i = 0; i < Math.max(n, m); i += 1) {
      if (i < n && i < m && ka[i] === kb[i]) {
        ops.push(['same', i, i]);
      } else {
        if (i < n) ops.push(['del', i, null]);
        if (i < m) ops.push(['ins', null, i]);
      }
    }
    return ops;
  }
  const table = Array.from({ length: n + 1 }, () => new Int32Array(m + 1));
  for (let i = n - 1; i >= 0; i -= 1) {
    for (let j = m - 1; j >= 0; j -= 1) {
      table[i][j] = ka[i] === kb[j] ? table[i + 1][j + 1] + 1 : Math.max(table[i + 1][j], table[i][j + 1]);
    }
  }
  const ops = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (ka[i] === kb[j]) { ops.push(['same', i, j]); i += 1; j += 1; } else if (table[i + 1][j] >= table[i][j + 1]) { ops.push(['del', i, null]); i += 1; } else { ops.push(['ins', null, j]); j += 1; }
  }
  while (i < n) { ops.push(['del', i, null]); i += 1; }
  while (j < m) { ops.push(['ins', null, j]); j += 1; }
  return ops;
}

function leaves(value, path, side, status, out) {
  for (const [p, v] of flatten(value, path)) {
    out.push(side === 'left'
      ? { path: p, left: v, hasLeft: true, hasRight: false, status }
      : { path: p, right: v, hasLeft: false, hasRight: true, status });
  }
}

function align(a, b, pathA, pathB, out) {
  if (isObject(a) && isObject(b) && (Object.keys(a).length || Object.keys(b).length)) {
    const keys = Object.keys(a);
    let previous = -1;
    for (const k of Object.keys(b)) {
      const at = keys.indexOf(k);
      if (at >= 0) previous = at;
      else { keys.splice(previous + 1, 0, k); previous += 1; }
    }
    for (const k of keys) {
      const token = escapeToken(k);
      if (!(k in b)) leaves(a[k], `${pathA}/${token}`, 'left', 'removed', out);
      else if (!(k in a)) leaves(b[k], `${pathB}/${token}`, 'right', 'added', out);
      else align(a[k], b[k], `${pathA}/${token}`, `${pathB}/${token}`, out);
    }
    return;
  }
  if (Array.isArray(a) && Array.isArray(b) && (a.length || b.length)) {
    const ops = alignLists(a, b);
    // Within a run of removed and added items, the n-th removed and n-th added are the same
    // item changed (its fields are compared); the rest were removed or added whole.
    for (let k = 0; k < ops.length;) {
      if (ops[k][0] === 'same') {
        const [, i, j] = ops[k];
        align(a[i], b[j], `${pathA}/${i}`, `${pathB}/${j}`, out);
        k += 1;
        continue;
      }
      const dels = [];
      const ins = [];
      while (k < ops.length && ops[k][0] !== 'same') {
        if (ops[k][0] === 'del') dels.push(ops[k][1]); else ins.push(ops[k][2]);
        k += 1;
      }
      const pairs = Math.min(dels.length, ins.length);
      for (let x = 0; x < Math.max(dels.length, ins.length); x += 1) {
        if (x < pairs) align(a[dels[x]], b[ins[x]], `${pathA}/${dels[x]}`, `${pathB}/${ins[x]}`, out);
        else if (x < dels.length) leaves(a[dels[x]], `${pathA}/${dels[x]}`, 'left', 'removed', out);
        else leaves(b[ins[x]], `${pathB}/${ins[x]}`, 'right', 'added', out);
      }
    }
    return;
  }
  const branch = (v) => isContainer(v) && Object.keys(v).length > 0;
  if (!branch(a) && !branch(b)) {
    out.push({ path: pathB, left: a, right: b, hasLeft: true, hasRight: true, status: canon(a) === canon(b) ? 'same' : 'changed' });
    return;
  }
  // A value became a container or the other way round: the old leaves go, the new come.
  leaves(a, pathA, 'left', 'removed', out);
  leaves(b, pathB, 'right', 'added', out);
}

/**
 * Rows [{path, left, right, status, hasLeft, hasRight}] in document order. Objects are matched
 * by key and lists by value (an item added at the front of a list is one added item, not a
 * change of every item after it); each row's path is a JSON Pointer into the version it
 * comes from (the later one for rows on both sides).
 */
export function diffRows(before, after) {
  const out = [];
  const hasBefore = before !== null && before !== undefined;
  const hasAfter = after !== null && after !== undefined;
  if (hasBefore && hasAfter) align(before, after, '', '', out);
  else if (hasBefore) leaves(before, '', 'left', 'removed', out);
  else if (hasAfter) leaves(after, '', 'right', 'added', out);
  return out;
}

function cell(row, side) {
  const has = side === 'left' ? row.hasLeft : row.hasRight;
  if (!has) return h('td', { class: 'absent' }, h('span', { class: 'visually-hidden' }, 'absent'));
  const text = scalarText(side === 'left' ? row.left : row.right);
  const marked = row.status !== 'same';
  return h('td', { class: 'val' }, marked ? h('mark', {}, text) : text);
}

/**
 * The diff table. `labels`: [left heading, right heading]. With `all` false, unchanged rows
 * more than CONTEXT rows from a change are folded.
 */
export function diffTable(before, after, { labels = ['Before', 'After'], all = false } = {}) {
  const rows = diffRows(before, after);
  const changed = rows.filter((r) => r.status !== 'same');
  const keep = new Set();
  rows.forEach((r, i) => {
    if (r.status === 'same') return;
    for (let j = Math.max(0, i - CONTEXT); j <= Math.min(rows.length - 1, i + CONTEXT); j += 1) keep.add(j);
  });
  const body = [];
  let folded = 0;
  const flushFold = () => {
    if (!folded) return;
    body.push(h('tr', { class: 'fold' }, h('td', { colspan: '3' }, `… ${folded} unchanged ${folded === 1 ? 'path' : 'paths'}`)));
    folded = 0;
  };
  rows.forEach((row, i) => {
    if (!all && row.status === 'same' && !keep.has(i)) { folded += 1; return; }
    flushFold();
    body.push(
      h(
        'tr',
        { class: `diff-row ${row.status}`, dataset: { path: row.path, change: row.status } },
        h('th', { scope: 'row', class: 'path' }, h('span', { class: 'sign', 'aria-hidden': 'true' }, SIGN[row.status]), row.status !== 'same' ? h('span', { class: 'visually-hidden' }, `${SAY[row.status]}: `) : null, row.path || '/'),
        cell(row, 'left'),
        cell(row, 'right'),
      ),
    );
  });
  flushFold();
  const tableEl = h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { class: 'diff' },
      h('caption', { class: 'visually-hidden' }, `Differences between ${labels[0]} and ${labels[1]}`),
      h('colgroup', {}, h('col', { class: 'col-path' }), h('col', { class: 'col-val' }), h('col', { class: 'col-val' })),
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Path'), h('th', { scope: 'col' }, labels[0]), h('th', { scope: 'col' }, labels[1]))),
      h('tbody', {}, body),
    ),
  );
  return { element: tableEl, changed, rows };
}
