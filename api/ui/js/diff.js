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

/** Fields that name a list item: two items with the same value in one are the same item. */
const IDENTITY_FIELDS = ['GroupId', 'Key', 'RuleId', 'Id', 'Name', 'Arn', 'CidrIp', 'CidrIpv6', 'PrefixListId', 'AttachmentId', 'DeviceName', 'VolumeId', 'NetworkInterfaceId', 'InstanceId', 'AllocationId'];
const ALIKE = 0.5;

function identity(value) {
  if (!isObject(value)) return null;
  const field = IDENTITY_FIELDS.find((f) => value[f] !== undefined && !isContainer(value[f]));
  return field ? `${field}=${JSON.stringify(value[field])}` : null;
}

/** How alike two values are, 0..1: the share of their leaves (path and value) they share. */
function likeness(a, b) {
  if (!isContainer(a) || !isContainer(b)) return canon(a) === canon(b) ? 1 : 0;
  const left = new Set(flatten(a, '').map(([p, v]) => `${p}=${canon(v)}`));
  const right = flatten(b, '').map(([p, v]) => `${p}=${canon(v)}`);
  if (!left.size && !right.length) return 1;
  const shared = right.filter((x) => left.has(x)).length;
  return (2 * shared) / (left.size + right.length);
}

/** For each of `removed`, the index in `added` of the item it became, or null. Items with
 *  the same identity pair first; the rest pair greedily by likeness, at least ALIKE. */
function pairItems(removed, added) {
  const partner = removed.map(() => null);
  const free = new Set(added.map((_, j) => j));
  removed.forEach((item, x) => {
    const id = identity(item);
    if (id === null) return;
    const y = added.findIndex((other, j) => free.has(j) && identity(other) === id);
    if (y >= 0) { partner[x] = y; free.delete(y); }
  });
  const candidates = [];
  removed.forEach((item, x) => {
    if (partner[x] !== null) return;
    const id = identity(item);
    for (const y of free) {
      const other = identity(added[y]);
      // Two items that name themselves differently are different items, however alike.
      if (id !== null && other !== null) continue;
      const score = likeness(item, added[y]);
      if (score >= ALIKE) candidates.push([score, x, y]);
    }
  });
  candidates.sort((p, q) => q[0] - p[0] || p[1] - q[1] || p[2] - q[2]);
  for (const [, x, y] of candidates) {
    if (partner[x] === null && free.has(y)) { partner[x] = y; free.delete(y); }
  }
  return partner;
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
    // Which removed item became which added one. Objects and lists are paired across the
    // whole list, by identity (GroupId, Key, ...) or else likeness, so a rule that moved or
    // whose own lists came back in another order is one item, not a removal and an addition;
    // an item like none of the others was removed or added whole. Scalars pair by position
    // within a run of removals and additions (a changed entry of an ordered list).
    const became = new Map();
    const dels = ops.filter((o) => o[0] === 'del' && isContainer(a[o[1]])).map((o) => o[1]);
    const ins = ops.filter((o) => o[0] === 'ins' && isContainer(b[o[2]])).map((o) => o[2]);
    pairItems(dels.map((i) => a[i]), ins.map((j) => b[j])).forEach((y, x) => {
      if (y !== null) became.set(dels[x], ins[y]);
    });
    for (let k = 0; k < ops.length;) {
      if (ops[k][0] === 'same') { k += 1; continue; }
      const runDels = [];
      const runIns = [];
      for (; k < ops.length && ops[k][0] !== 'same'; k += 1) {
        if (ops[k][0] === 'del' && !isContainer(a[ops[k][1]])) runDels.push(ops[k][1]);
        if (ops[k][0] === 'ins' && !isContainer(b[ops[k][2]])) runIns.push(ops[k][2]);
      }
      for (let x = 0; x < Math.min(runDels.length, runIns.length); x += 1) became.set(runDels[x], runIns[x]);
    }
    const paired = new Set(became.values());
    for (const [op, i, j] of ops) {
      if (op === 'same') align(a[i], b[j], `${pathA}/${i}`, `${pathB}/${j}`, out);
      else if (op === 'del' && became.has(i)) align(a[i], b[became.get(i)], `${pathA}/${i}`, `${pathB}/${became.get(i)}`, out);
      else if (op === 'del') leaves(a[i], `${pathA}/${i}`, 'left', 'removed', out);
      else if (!paired.has(j)) leaves(b[j], `${pathB}/${j}`, 'right', 'added', out);
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
