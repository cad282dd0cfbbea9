// #/resource/<key>?tab=config|related|history|diff|events|alerts&at=&change=&a=&b=&all=&hops=
//
// One resource: its configuration as a tree (now, or at `at`), its versions on a timeline, a
// side-by-side diff of any two versions (or of one change against the version before it),
// the CloudTrail events that touched it, its alerts, and its relationships to other resources
// (a list and a small graph, as of `at` too). One request (its history) gives
// every version; events and alerts load when their tab opens.

import { get, getAll, seg } from '../api.js';
import { badge, empty, h, loading, pathList, replace, section, table, tabs, unavailable } from '../dom.js';
import { changeTimeline } from '../charts.js';
import { diffTable } from '../diff.js';
import { ago, fromInput, iso, num, principalShort, time, toInput, typeLabel, typeService } from '../format.js';
import { principalHref, resourceHref } from '../nav.js';
import { relationsPanel } from '../relations.js';
import { configTree, treeControls } from '../tree.js';

const TABS = [['config', 'Configuration'], ['history', 'History'], ['related', 'Relationships'], ['diff', 'Diff'], ['events', 'CloudTrail events'], ['alerts', 'Alerts']];

export async function render(view, ctx) {
  const key = ctx.arg;
  const { params, signal } = ctx;
  const tab = TABS.some(([id]) => id === params.get('tab')) ? params.get('tab') : 'config';
  ctx.title(key.split(/[:/]/).pop() || 'Resource');
  replace(view, h('h1', { tabindex: '-1', class: 'visually-hidden' }, 'Resource'), loading('Loading the resource'));

  let history;
  try {
    history = (await getAll(`/v1/resources/${seg(key)}/history`, {}, { max: 5000, signal })).items;
  } catch (err) {
    if (err.name === 'AbortError') return null;
    if (err.notFound) {
      replace(view, h('h1', { tabindex: '-1' }, 'Resource not found'), empty(`No resource has the key ${key}.`, h('a', { href: '#/inventory' }, 'Back to the inventory')));
      return null;
    }
    throw err;
  }
  history.sort((a, b) => new Date(a.captured_at) - new Date(b.captured_at));
  const versions = history.filter((e) => e.version).map((e) => ({ ...e.version, entry: e }));
  const last = history[history.length - 1];
  const deleted = last && last.change_type === 'deleted' ? last : null;
  const latest = versions[versions.length - 1];
  const at = params.get('at') ? new Date(params.get('at')) : null;
  const shown = at
    ? versions.find((v) => new Date(v.valid_from) <= at && (!v.valid_to || at < new Date(v.valid_to))) || null
    : latest;
  const ident = latest || {};
  const resource = { key, name: ident.name, resource_id: ident.resource_id, resource_type: ident.resource_type, account_id: ident.account_id, region: ident.region };
  ctx.title(`${resource.name || resource.resource_id} (${typeLabel(resource.resource_type)})`);

  const status = deleted ? badge(`deleted ${ago(deleted.captured_at)}`, 'deleted') : badge('current', 'current');
  const copy = h('button', { type: 'button', class: 'linklike small', onclick: async (ev) => { try { await navigator.clipboard.writeText(key); ev.target.textContent = 'Copied'; } catch { ev.target.textContent = 'Select and copy'; } } }, 'Copy');
  const head = h(
    'div',
    { class: 'page-head' },
    h('p', { class: 'crumbs' }, h('a', { href: ctx.href('inventory', '', { type: resource.resource_type }) }, typeLabel(resource.resource_type)), ' / '),
    h('h1', { tabindex: '-1', id: 'resource-title' }, resource.name || resource.resource_id, ' ', status),
    h(
      'dl',
      { class: 'meta' },
      h('div', {}, h('dt', {}, 'Type'), h('dd', {}, resource.resource_type)),
      h('div', {}, h('dt', {}, 'Id'), h('dd', { class: 'mono', id: 'resource-id' }, resource.resource_id)),
      h('div', {}, h('dt', {}, 'Account'), h('dd', { class: 'mono' }, resource.account_id)),
      h('div', {}, h('dt', {}, 'Region'), h('dd', {}, resource.region)),
      h('div', { class: 'wide' }, h('dt', {}, 'Key'), h('dd', { class: 'mono' }, key, ' ', copy)),
      h('div', {}, h('dt', {}, 'Versions'), h('dd', {}, num(versions.length))),
      h('div', {}, h('dt', {}, deleted ? 'Deleted' : 'Current since'), h('dd', {}, time(deleted ? deleted.captured_at : latest && latest.valid_from))),
    ),
  );
  const panel = h('div', { class: 'tab-panel', role: 'tabpanel', id: `panel-${tab}`, 'aria-labelledby': `tab-${tab}`, tabindex: '0' });
  const select = (id, { focusTab } = {}) => {
    if (id === tab) return;
    const keep = id === 'config' || id === 'related' ? { at: params.get('at') } : id === 'diff' ? { change: params.get('change'), a: params.get('a'), b: params.get('b') } : {};
    ctx.setParams({ tab: id, at: '', change: '', a: '', b: '', all: '', ...keep }, { replace: false });
    if (focusTab) setTimeout(() => document.getElementById(`tab-${id}`)?.focus(), 0);
  };
  replace(view, head, tabs(TABS.map(([id, label]) => [id, id === 'history' ? `${label} (${history.length})` : label]), tab, select), panel);

  const state = { key, resource, history, versions, deleted, latest, shown, at, ctx, signal };
  if (tab === 'config') renderConfig(panel, state);
  else if (tab === 'history') renderHistory(panel, state);
  else if (tab === 'diff') await renderDiff(panel, state);
  else if (tab === 'related') await section(panel, 'Relationships', () => relatedPanel(state));
  else if (tab === 'events') await section(panel, 'CloudTrail events', () => eventsPanel(state));
  else if (tab === 'alerts') await section(panel, 'Alerts', () => alertsPanel(state));
  return null;
}

// -- relationships ----------------------------------------------------------------------------

async function relatedPanel({ key, at, ctx, signal }) {
  const hops = ctx.params.get('hops') === '2' ? 2 : 1;
  const input = h('input', { type: 'datetime-local', id: 'related-at', step: '1', value: at ? toInput(at) : '' });
  const when = h(
    'form',
    { class: 'field inline related-when', onsubmit: (ev) => { ev.preventDefault(); const d = fromInput(input.value); if (d) ctx.setParams({ at: iso(d) }); } },
    h('label', { for: 'related-at' }, 'As of (UTC)'),
    input,
    h('button', { type: 'submit', id: 'related-at-apply' }, 'Show'),
    h('button', { type: 'button', id: 'related-now', disabled: !at, onclick: () => ctx.setParams({ at: '' }) }, 'Now'),
  );
  const content = await relationsPanel({ key, at, hops, signal, setHops: (n) => ctx.setParams({ hops: n === 2 ? '2' : '' }, { replace: true }) });
  return [when, ...content];
}

// -- configuration ----------------------------------------------------------------------------

function renderConfig(panel, { shown, at, deleted, key, versions }) {
  if (!shown) {
    replace(panel, empty(at ? `This resource did not exist at ${time(at)}.` : 'No configuration was recorded.', versions.length ? h('a', { href: resourceHref(key, {}) }, 'See its latest configuration') : null));
    return;
  }
  const tree = configTree(shown.configuration, { openDepth: 2 });
  const note = at
    ? h('p', { class: 'banner' }, 'The configuration valid at ', h('strong', {}, time(at)), ` (version from ${time(shown.valid_from)}). `, h('a', { href: resourceHref(key, {}) }, 'Latest'))
    : deleted
      ? h('p', { class: 'banner warn' }, `Deleted at ${time(deleted.captured_at)}; this is its last known configuration.`)
      : null;
  const raw = h('details', { class: 'raw' }, h('summary', {}, 'Raw JSON'), h('pre', { class: 'json' }, JSON.stringify(shown.configuration, null, 2)));
  replace(panel, note, h('div', { class: 'toolbar-row' }, h('p', { class: 'muted' }, `Version since ${time(shown.valid_from)}${shown.valid_to ? `, until ${time(shown.valid_to)}` : ''}.`), treeControls(tree)), tree, raw);
}

// -- history ----------------------------------------------------------------------------------

function attributionLine(entry) {
  const who = entry.attribution;
  if (!who) return null;
  const label = who.principal_arn || who.principal_name;
  return h(
    'span',
    { class: 'who' },
    'by ',
    label ? h('a', { href: principalHref(label), class: 'principal-link' }, principalShort(label)) : 'unknown',
    ` via ${who.event_name}`,
    who.source_ip ? h('span', { class: 'muted' }, ` from ${who.source_ip}`) : null,
  );
}

function renderHistory(panel, { key, history }) {
  if (!history.length) {
    replace(panel, empty('No history recorded.'));
    return;
  }
  const diffHref = (e) => resourceHref(key, { tab: 'diff', change: e.change_id });
  const entries = history.map((e) => ({ ...e, href: diffHref(e), label: `${e.change_type} at ${time(e.captured_at)}` }));
  const list = h(
    'ol',
    { class: 'history', reversed: true, id: 'history-list' },
    [...history].reverse().map((e) => h(
      'li',
      { class: `history-item ${e.change_type}`, dataset: { changeId: e.change_id } },
      h('div', { class: 'history-head' }, badge(e.change_type), ' ', h('time', { datetime: e.captured_at }, time(e.captured_at)), ' ', attributionLine(e)),
      e.change_type === 'modified' ? pathList(e.changed_paths, { max: 6 }) : null,
      h(
        'div',
        { class: 'history-links' },
        h('a', { href: diffHref(e), class: 'diff-link' }, e.change_type === 'modified' ? 'View diff' : e.change_type === 'created' ? 'View initial configuration' : 'View what was deleted'),
        e.version ? h('a', { href: resourceHref(key, { tab: 'config', at: e.version.valid_from }) }, 'Configuration at this version') : null,
      ),
    )),
  );
  replace(panel, h('h2', { class: 'visually-hidden' }, 'Version history'), changeTimeline({ entries }), list);
}

// -- diff -------------------------------------------------------------------------------------

function versionLabel(v, i) {
  return `v${i + 1} · ${time(v.valid_from)} · ${v.entry.change_type}`;
}

/** Which two versions to compare: from ?change=, else ?a=&b=, else the last change. */
function pickPair(state) {
  const { versions, history, ctx } = state;
  const params = ctx.params;
  const index = (changeId) => versions.findIndex((v) => v.change_id === changeId);
  const changeId = params.get('change');
  if (changeId) {
    const entry = history.find((e) => e.change_id === changeId);
    if (entry) {
      if (entry.change_type === 'deleted') {
        const before = versions.filter((v) => new Date(v.valid_from) < new Date(entry.captured_at)).pop();
        return { a: before || null, b: null, entry };
      }
      const i = index(changeId);
      return { a: i > 0 ? versions[i - 1] : null, b: versions[i] || null, entry };
    }
  }
  if (params.get('a') || params.get('b')) {
    const a = versions[index(params.get('a'))] || null;
    const b = versions[index(params.get('b'))] || null;
    const entry = b && a && index(b.change_id) === index(a.change_id) + 1 ? b.entry : null;
    return { a, b, entry };
  }
  if (state.deleted) return { a: versions[versions.length - 1] || null, b: null, entry: state.deleted };
  const n = versions.length;
  return { a: n > 1 ? versions[n - 2] : null, b: versions[n - 1] || null, entry: versions[n - 1] ? versions[n - 1].entry : null };
}

async function renderDiff(panel, state) {
  const { versions, ctx } = state;
  if (!versions.length) {
    replace(panel, empty('No versions to compare.'));
    return;
  }
  const { a, b, entry } = pickPair(state);
  const pick = (id, label, chosen, allowNone) => h(
    'div',
    { class: 'field' },
    h('label', { for: id }, label),
    h(
      'select',
      { id, onchange: () => {
        const left = document.getElementById('diff-a').value;
        const right = document.getElementById('diff-b').value;
        ctx.setParams({ change: '', a: left, b: right });
      } },
      allowNone ? h('option', { value: '', selected: !chosen }, allowNone) : null,
      versions.map((v, i) => h('option', { value: v.change_id, selected: chosen && chosen.change_id === v.change_id }, versionLabel(v, i))),
    ),
  );
  const all = ctx.params.get('all') === '1';
  const showAll = h('input', { type: 'checkbox', id: 'diff-all', checked: all, onchange: (ev) => ctx.setParams({ all: ev.target.checked ? '1' : '' }, { replace: true }) });
  const controls = h(
    'form',
    { class: 'filters diff-pick', onsubmit: (ev) => ev.preventDefault() },
    pick('diff-a', 'Compare', a, '(nothing: before it existed)'),
    pick('diff-b', 'with', b, state.deleted ? '(deleted)' : '(nothing)'),
    h('div', { class: 'field check' }, showAll, h('label', { for: 'diff-all' }, 'Show unchanged paths')),
  );
  const labelOf = (v, none) => (v ? `v${versions.indexOf(v) + 1} · ${time(v.valid_from)}` : none);
  const labels = [labelOf(a, 'Before it existed'), labelOf(b, state.deleted && !b ? 'Deleted' : 'Nothing')];
  const result = diffTable(a ? a.configuration : null, b ? b.configuration : null, { labels, all });
  const cause = h('div', { class: 'cause', id: 'diff-cause' });
  const changedList = result.changed.length
    ? h('p', { class: 'changed-summary', id: 'diff-summary' }, h('strong', {}, `${num(result.changed.length)} ${result.changed.length === 1 ? 'path differs' : 'paths differ'}`), ': ', pathList(result.changed.map((r) => r.path), { max: 8 }))
    : h('p', { class: 'changed-summary', id: 'diff-summary' }, a && b ? 'These two versions are identical.' : '');
  replace(panel, h('h2', { class: 'visually-hidden' }, 'Diff'), controls, cause, changedList, result.element);
  if (entry) describeCause(cause, entry, state);
}

/** Who made the change: its recorded attribution, else CloudTrail events naming the resource
 *  in the time before it was captured (labelled as a match, not a record). */
async function describeCause(container, entry, state) {
  const head = h('p', {}, badge(entry.change_type), ' captured ', h('time', { datetime: entry.captured_at }, time(entry.captured_at)));
  if (entry.attribution) {
    replace(container, head, h('p', { class: 'attribution', id: 'diff-attribution' }, 'Made ', attributionLine(entry), ` at ${time(entry.attribution.event_time)}`, h('span', { class: 'muted' }, ` (CloudTrail event ${entry.attribution.event_id})`)));
    return;
  }
  replace(container, head, h('p', { class: 'muted' }, 'Looking for the CloudTrail event that caused it…'));
  // The window: after the previous change was captured (CloudTrail times are whole seconds)
  // up to this one; at most six hours back.
  const i = state.history.indexOf(entry);
  const captured = new Date(entry.captured_at).getTime();
  const previous = i > 0 ? Math.floor(new Date(state.history[i - 1].captured_at).getTime() / 1000) * 1000 + 1000 : captured - 6 * 3600e3;
  try {
    const events = await relatedEvents(state, { from: new Date(Math.max(previous, captured - 6 * 3600e3)), to: new Date(captured + 1000), max: 500 });
    const writes = events.filter((e) => e.read_only !== true);
    if (!writes.length) {
      replace(container, head, h('p', { class: 'muted' }, 'No attribution was recorded, and no CloudTrail event naming this resource was found just before it.'));
      return;
    }
    replace(
      container,
      head,
      h('p', { class: 'attribution inferred', id: 'diff-attribution' }, 'No attribution was recorded; CloudTrail events naming this resource just before it:'),
      h('ul', { class: 'inferred-events' }, writes.slice(0, 3).map((e) => h('li', {}, h('strong', {}, e.event_name), ' by ', h('a', { href: principalHref(principalLabel(e)), class: 'principal-link' }, principalShort(principalLabel(e))), ` at ${time(e.event_time)}`, e.error_code ? [' ', badge(e.error_code, 'error')] : null))),
    );
  } catch (err) {
    if (err.name === 'AbortError') return;
    replace(container, head, h('p', { class: 'muted' }, `No attribution was recorded (events could not be searched: ${err.detail || err.message}).`));
  }
}

// -- CloudTrail events ------------------------------------------------------------------------

/** The principal label /v1/principals uses for an event's principal. */
export function principalLabel(e) {
  const p = e.principal || {};
  if (p.type === 'Root') return `root:${p.account_id || e.account_id}`;
  if (p.type === 'AWSService') return p.invoked_by || p.name || 'AWS service';
  return p.arn || p.name || p.invoked_by || 'unknown';
}

function mentions(e, needles) {
  if ((e.resources || []).some((r) => needles.includes(r.arn))) return true;
  const text = JSON.stringify([e.request_parameters, e.response_elements]);
  return needles.some((n) => n && text.includes(n));
}

/** Events of the resource's account and service that name it (by id or ARN). The API has no
 *  filter by resource, so they are read by account, service and time and matched here. */
async function relatedEvents(state, { from, to, max = 1000 }) {
  const { resource, key, signal } = state;
  const query = {
    account: resource.account_id,
    service: typeService(resource.resource_type),
    region: resource.region && resource.region !== 'global' ? resource.region : '',
    from: from ? iso(from) : '',
    to: to ? iso(to) : '',
  };
  const { items } = await getAll('/v1/events', query, { max, limit: 500, signal });
  return items.filter((e) => mentions(e, [resource.resource_id, key]));
}

async function eventsPanel(state) {
  const { history, resource } = state;
  const first = history.length ? new Date(history[0].captured_at).getTime() - 3600 * 1000 : null;
  const events = await relatedEvents(state, { from: first ? new Date(first) : null, to: null, max: 2000 });
  const byId = new Map(events.map((e) => [e.event_id, e]));
  // Attributions recorded on changes count even where the event itself is not stored.
  const recorded = history.filter((e) => e.attribution && !byId.has(e.attribution.event_id)).map((e) => ({
    event_id: e.attribution.event_id, event_time: e.attribution.event_time, event_name: e.attribution.event_name,
    principal: { arn: e.attribution.principal_arn, name: e.attribution.principal_name }, source_ip: e.attribution.source_ip, region: resource.region, recorded: true,
  }));
  const rows = [...events, ...recorded].sort((x, y) => new Date(y.event_time) - new Date(x.event_time));
  const intro = h('p', { class: 'muted' }, `Events in account ${resource.account_id} (${typeService(resource.resource_type)}) whose parameters name ${resource.resource_id}, and the events recorded as causing its changes.`);
  if (!rows.length) return h('div', {}, intro, empty('No CloudTrail event names this resource.', 'Events arrive a few minutes after the call, as CloudTrail delivers them.'));
  return h(
    'div',
    {},
    intro,
    table(
      [
        { label: 'Time', className: 'nowrap', cell: (e) => h('time', { datetime: e.event_time }, time(e.event_time)) },
        { label: 'Event', cell: (e) => [h('strong', {}, e.event_name), e.error_code ? [' ', badge(e.error_code, 'error')] : null, e.recorded ? [' ', badge('attributed', 'info')] : null] },
        { label: 'Principal', cell: (e) => h('a', { href: principalHref(principalLabel(e)), class: 'principal-link' }, principalShort(principalLabel(e))) },
        { label: 'Source IP', className: 'mono', cell: (e) => e.source_ip || '—' },
        { label: 'Region', cell: (e) => e.region },
        { label: 'Parameters', cell: (e) => (e.request_parameters ? h('details', {}, h('summary', {}, 'Show'), h('pre', { class: 'json small' }, JSON.stringify(e.request_parameters, null, 2))) : '—') },
      ],
      rows,
      { caption: 'CloudTrail events', rowAttrs: (e) => ({ dataset: { eventId: e.event_id } }) },
    ),
  );
}

// -- alerts -----------------------------------------------------------------------------------

async function alertsPanel(state) {
  let page;
  try {
    page = await get('/v1/alerts', { key: state.key, limit: 200 }, { signal: state.signal });
  } catch (err) {
    if (err.unavailable) return unavailable('Alerts', err);
    throw err;
  }
  if (!page.items.length) return empty('No alert was ever raised on this resource.');
  return table(
    [
      { label: 'Severity', cell: (a) => badge(a.severity) },
      { label: 'Alert', cell: (a) => [h('strong', {}, a.title), h('div', { class: 'muted mono small' }, a.rule_id)] },
      { label: 'Status', cell: (a) => badge(a.status) },
      { label: 'Opened', className: 'nowrap', cell: (a) => time(a.opened_at) },
      { label: 'Resolved', className: 'nowrap', cell: (a) => (a.resolved_at ? time(a.resolved_at) : '—') },
      { label: 'Seen', cell: (a) => `${num(a.occurrences)}×` },
    ],
    page.items,
    { caption: 'Alerts on this resource' },
  );
}
