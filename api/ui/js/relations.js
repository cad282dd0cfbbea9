// The resource page's relationships panel: what a resource names and what names it, as of
// the time shown (GET /v1/resources/{key}/related), as a list grouped by relationship and
// direction, and its neighbourhood of one or two hops (GET /v1/resources/{key}/graph) as a
// small SVG graph. Every related resource links to its own page at the same time.

import { get, seg } from './api.js';
import { badge, empty, h, replace, s, unavailable } from './dom.js';
import { time, typeLabel } from './format.js';
import { resourceHref } from './nav.js';

const GRAPH_NODES = 40;
const LABEL_CHARS = 22;

/** The last part of a key (an id or a name) when the API gives no name. */
function shortKey(key) {
  return String(key).split(/[:/]/).filter(Boolean).pop() || key;
}

function linkParams(at) {
  return at ? { at: at.toISOString(), tab: 'related' } : { tab: 'related' };
}

/** The related resources, grouped by direction and relationship ("is contained in", ...). */
export function relatedList(items, { at }) {
  const groups = new Map();
  for (const r of items) {
    const id = `${r.direction}|${r.relationship}`;
    if (!groups.has(id)) groups.set(id, { direction: r.direction, relationship: r.relationship, items: [] });
    groups.get(id).items.push(r);
  }
  const ordered = [...groups.values()].sort((a, b) => (a.direction === b.direction ? a.relationship.localeCompare(b.relationship) : a.direction === 'out' ? -1 : 1));
  return h(
    'div',
    { class: 'related-groups', id: 'related-list' },
    ordered.map((g) => h(
      'section',
      { class: 'related-group', dataset: { direction: g.direction, relationship: g.relationship } },
      h('h3', {}, `This resource ${g.relationship}`, h('span', { class: 'muted small' }, ` · ${g.direction === 'out' ? 'named in its configuration' : 'names it in theirs'} · ${g.items.length}`)),
      h('ul', { class: 'related-items' }, g.items.map((r) => h(
        'li',
        { dataset: { key: r.key, type: r.type } },
        r.exists
          ? h('a', { href: resourceHref(r.key, linkParams(at)), class: 'related-link', dataset: { key: r.key } }, r.name || shortKey(r.key))
          : h('span', { class: 'related-missing', title: r.key }, r.name || shortKey(r.key)),
        ' ',
        h('span', { class: 'muted small' }, typeLabel(r.type)),
        r.exists ? null : [' ', badge(at ? 'did not exist then' : 'not in the inventory', 'deleted')],
        r.account_id ? h('span', { class: 'muted small mono' }, ` ${r.account_id}${r.region ? ` · ${r.region}` : ''}`) : null,
      ))),
    )),
  );
}

/**
 * A radial layout: the resource in the middle, each hop on its own ring, a node near the
 * angle of the node that reached it. Returns {nodes: [{...node, x, y}], size}.
 */
export function layout(graph, size = 520) {
  const centre = size / 2;
  const byHop = new Map();
  for (const n of graph.nodes) {
    if (!byHop.has(n.hops)) byHop.set(n.hops, []);
    byHop.get(n.hops).push(n);
  }
  const maxHop = Math.max(1, ...graph.nodes.map((n) => n.hops));
  const ring = (centre - 60) / maxHop;
  const angle = new Map([[graph.key, 0]]);
  const placed = new Map();
  const neighbours = (key) => graph.edges.flatMap((e) => (e.source === key ? [e.target] : e.target === key ? [e.source] : []));
  for (let hop = 0; hop <= maxHop; hop += 1) {
    const ring_nodes = byHop.get(hop) || [];
    if (hop > 1) {
      // Near the parent: sort by the angle of the nearest placed neighbour.
      for (const n of ring_nodes) {
        const parent = neighbours(n.key).find((k) => placed.has(k) && placed.get(k).hops === hop - 1);
        angle.set(n.key, parent ? angle.get(parent) : 0);
      }
      ring_nodes.sort((a, b) => angle.get(a.key) - angle.get(b.key) || a.key.localeCompare(b.key));
    }
    ring_nodes.forEach((n, i) => {
      const a = hop === 0 ? 0 : (2 * Math.PI * i) / ring_nodes.length - Math.PI / 2;
      angle.set(n.key, a);
      const r = ring * hop;
      placed.set(n.key, { ...n, x: centre + r * Math.cos(a), y: centre + r * Math.sin(a) });
    });
  }
  return { nodes: [...placed.values()], size };
}

function clip(text, n = LABEL_CHARS) {
  return text.length > n ? `${text.slice(0, n - 1)}…` : text;
}

/** The neighbourhood as SVG: edges as lines labelled by relationship (on hover), nodes as links. */
export function graphSvg(graph, { at }) {
  const { nodes, size } = layout(graph);
  const where = new Map(nodes.map((n) => [n.key, n]));
  const lines = graph.edges.filter((e) => where.has(e.source) && where.has(e.target)).map((e) => {
    const a = where.get(e.source);
    const b = where.get(e.target);
    return s('line', { x1: a.x.toFixed(1), y1: a.y.toFixed(1), x2: b.x.toFixed(1), y2: b.y.toFixed(1), class: 'graph-edge' }, s('title', { text: `${a.name || shortKey(a.key)} ${e.relationship} ${b.name || shortKey(b.key)}` }));
  });
  const circles = nodes.map((n) => {
    const label = clip(n.name || shortKey(n.key));
    const root = n.key === graph.key;
    const body = [
      s('circle', { cx: n.x.toFixed(1), cy: n.y.toFixed(1), r: root ? 11 : 8, class: ['graph-node', root ? 'root' : null, n.exists ? null : 'missing'].filter(Boolean).join(' ') }),
      s('text', { x: n.x.toFixed(1), y: (n.y + (root ? 26 : 21)).toFixed(1), class: 'graph-label', 'text-anchor': 'middle', text: label }),
      s('text', { x: n.x.toFixed(1), y: (n.y + (root ? 38 : 33)).toFixed(1), class: 'graph-type', 'text-anchor': 'middle', text: clip(typeLabel(n.type), 26) }),
      s('title', { text: `${n.name || shortKey(n.key)} · ${n.type}${n.exists ? '' : ' (did not exist then)'}\n${n.key}` }),
    ];
    return root || !n.exists
      ? s('g', { class: 'graph-item', 'data-key': n.key }, ...body)
      : s('a', { href: resourceHref(n.key, linkParams(at)), class: 'graph-item', 'data-key': n.key }, ...body);
  });
  return s(
    'svg',
    { viewBox: `-40 -10 ${size + 80} ${size + 40}`, class: 'graph', role: 'img', 'aria-label': `The resources within ${graph.hops} relationship${graph.hops === 1 ? '' : 's'} of this one` },
    s('g', { class: 'edges' }, ...lines),
    s('g', { class: 'nodes' }, ...circles),
  );
}

/** The panel: list and graph, as of `at` (null: now); `hops` 1 or 2. */
export async function relationsPanel({ key, at, hops, signal, setHops }) {
  const when = at ? { at: at.toISOString() } : {};
  let related;
  let graph;
  try {
    [related, graph] = await Promise.all([
      get(`/v1/resources/${seg(key)}/related`, when, { signal }),
      get(`/v1/resources/${seg(key)}/graph`, { ...when, hops, limit: GRAPH_NODES }, { signal }),
    ]);
  } catch (err) {
    if (err.unavailable) return [h('h2', {}, 'Relationships'), unavailable('Relationships', err)];
    throw err;
  }
  const heading = h('h2', { id: 'related-heading' }, 'Relationships', h('span', { class: 'muted small' }, at ? ` as of ${time(at)}` : ' now'));
  if (!related.related.length) {
    return [heading, empty(at ? 'This resource had no relationship at that time.' : 'This resource has no relationship to another.', 'Relationships come from the fields of a configuration that name other resources (its subnet, security groups, role).')];
  }
  const hopButtons = h('div', { class: 'segmented', role: 'group', 'aria-label': 'How far', id: 'graph-hops' }, [1, 2].map((n) => h('button', { type: 'button', id: `hops-${n}`, 'aria-pressed': String(hops === n), onclick: () => setHops(n) }, n === 1 ? 'Direct' : 'Two hops')));
  const note = graph.truncated ? h('p', { class: 'muted small' }, `The ${graph.nodes.length} nearest are shown.`) : null;
  return [
    heading,
    h('div', { class: 'related-layout' },
      h('div', { class: 'related-col' }, relatedList(related.related, { at })),
      h('figure', { class: 'related-graph card', id: 'related-graph', dataset: { hops: String(graph.hops), nodes: String(graph.nodes.length) } }, hopButtons, graphSvg(graph, { at }), note, h('figcaption', { class: 'muted small' }, 'Hover a line for its relationship; select a resource to open it.'))),
  ];
}
