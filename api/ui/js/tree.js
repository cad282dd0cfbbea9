// A resource configuration as a readable, collapsible tree (native <details>, so it works
// with the keyboard and screen readers), and as flat JSON Pointer rows for diffs.

import { h } from './dom.js';

export function escapeToken(token) {
  return String(token).replace(/~/g, '~0').replace(/\//g, '~1');
}

export function isContainer(value) {
  return value !== null && typeof value === 'object';
}

function entries(value) {
  return Array.isArray(value) ? value.map((v, i) => [String(i), v]) : Object.entries(value);
}

export function scalarText(value) {
  if (value === undefined) return '';
  if (typeof value === 'string') return JSON.stringify(value);
  if (isContainer(value)) return Array.isArray(value) ? '[]' : '{}';
  return String(value);
}

function scalarClass(value) {
  if (value === null) return 'v-null';
  return `v-${typeof value}`;
}

/** Every leaf as [pointer, value], depth first; empty objects and lists are leaves too. */
export function flatten(value, prefix = '', out = []) {
  if (isContainer(value) && entries(value).length) {
    for (const [k, v] of entries(value)) flatten(v, `${prefix}/${escapeToken(k)}`, out);
  } else {
    out.push([prefix, value]);
  }
  return out;
}

function touched(pointer, highlight) {
  for (const p of highlight) {
    if (pointer === p || pointer.startsWith(`${p}/`) || p.startsWith(`${pointer}/`)) return true;
  }
  return false;
}

const TAG_FIELDS = [['Key', 'Value'], ['key', 'value'], ['TagKey', 'TagValue']];
const NAME_FIELDS = ['Name', 'GroupName', 'GroupId', 'Id', 'RuleId', 'CidrIp', 'Arn', 'Key', 'name', 'id'];

/** What a folded object in a list is, beside its index: a tag as `key = value`, else the
 *  first name-like field, so `Tags [2]` unfolds to `env = prod`, not `0 {2}`. */
function itemLabel(value) {
  if (Array.isArray(value) || !isContainer(value)) return null;
  const scalar = (v) => v !== null && typeof v !== 'object';
  for (const [k, v] of TAG_FIELDS) {
    if (scalar(value[k]) && (scalar(value[v]) || value[v] === undefined)) return value[v] === undefined ? `${value[k]}` : `${value[k]} = ${value[v]}`;
  }
  const field = NAME_FIELDS.find((f) => scalar(value[f]));
  return field ? `${field} ${value[field]}` : null;
}

function node(key, value, pointer, depth, opts) {
  const hl = opts.highlight.size && opts.highlight.has(pointer);
  const keyEl = key === null ? null : h('span', { class: 'k' }, key);
  if (isContainer(value) && entries(value).length) {
    const items = entries(value);
    const open = depth < opts.openDepth || (opts.highlight.size > 0 && touched(pointer, opts.highlight));
    const meta = Array.isArray(value) ? `[${items.length}]` : `{${items.length}}`;
    const label = opts.inList ? itemLabel(value) : null;
    return h(
      'details',
      { open, class: hl ? 'hl' : null, dataset: { path: pointer } },
      h('summary', {}, keyEl, label ? h('span', { class: 'item-label' }, ` ${label}`) : h('span', { class: 'meta' }, ` ${meta}`)),
      h('ul', {}, items.map(([k, v]) => h('li', {}, node(k, v, `${pointer}/${escapeToken(k)}`, depth + 1, { ...opts, inList: Array.isArray(value) })))),
    );
  }
  return h(
    'div',
    { class: ['leaf', hl ? 'hl' : null], dataset: { path: pointer } },
    keyEl,
    keyEl ? h('span', { class: 'sep' }, ': ') : null,
    h('span', { class: `v ${scalarClass(value)}` }, scalarText(value)),
  );
}

/** The tree of `value`, levels below `openDepth` folded, except around highlighted paths. */
export function configTree(value, { openDepth = 2, highlight = new Set() } = {}) {
  const root = h('div', { class: 'tree', role: 'group', 'aria-label': 'Configuration' });
  if (!isContainer(value) || !entries(value).length) {
    root.appendChild(h('p', { class: 'muted' }, 'Empty configuration.'));
    return root;
  }
  const list = h('ul', {});
  for (const [k, v] of entries(value)) list.appendChild(h('li', {}, node(k, v, `/${escapeToken(k)}`, 1, { openDepth, highlight })));
  root.appendChild(list);
  return root;
}

/** Buttons that open or fold every level of a tree. */
export function treeControls(tree) {
  const set = (open) => tree.querySelectorAll('details').forEach((d) => { d.open = open; });
  return h(
    'div',
    { class: 'toolbar' },
    h('button', { type: 'button', onclick: () => set(true) }, 'Expand all'),
    h('button', { type: 'button', onclick: () => set(false) }, 'Collapse all'),
  );
}
