// #/activity?range=1h|6h|24h|7d|30d&from=&to=&account= : who is doing what, from CloudTrail.
//
// Time-frame presets and a custom range (opened without one, the page picks the shortest
// preset, up to a day, that holds every event since the first, and the address says which:
// a new estate's first minutes fill the chart instead of one spike at its edge); counters (events, writes, errors and denied calls,
// and the creations CloudTrail-Tracker counted); events over time per service and per
// principal as stacked bar charts; top principals and services; the failed calls.

import { get, getAll, seg } from '../api.js';
import { badge, empty, field, h, replace, section, table } from '../dom.js';
import { GRANULARITY_NAME, bucketStart, fillBuckets, hBars, seriesColor, timeBars } from '../charts.js';
import { fromInput, iso, num, principalShort, time, toInput } from '../format.js';
import { principalHref } from '../nav.js';
import { principalLabel } from './resource.js';

export const PRESETS = [
  ['1h', 'Last hour', 3600e3],
  ['6h', '6 hours', 6 * 3600e3],
  ['24h', 'Day', 24 * 3600e3],
  ['7d', 'Week', 7 * 24 * 3600e3],
  ['30d', '30 days', 30 * 24 * 3600e3],
];
const TOP_SERIES = 6;
const MAX_SERIES_FETCH = 12;
const COUNTED = ['RunInstances', 'CreateDBInstance', 'CreateFunction', 'CreateLoadBalancer'];

const FITTED = ['1h', '6h', '24h'];

/**
 * The preset a page opens on when its address names no time frame: the shortest of the last
 * hour, 6 hours and day that holds everything since `earliest` (a time in ms; null when there
 * is no data yet, which opens on the day).
 */
export function fittedRange(earliest, now = Date.now()) {
  if (earliest === null || !Number.isFinite(earliest)) return '24h';
  const fits = FITTED.find((id) => now - earliest <= PRESETS.find(([p]) => p === id)[2]);
  return fits || '24h';
}

/**
 * Opened without a time frame: choose one fitted to the data (the earliest `first_seen` of
 * `principals`, or null) and make the address say it, without a new history entry, so
 * that reloading or sharing the page shows the same and Back skips the bare address.
 */
export function fitTimeFrame(ctx, principals) {
  const { params } = ctx;
  if (params.get('range') || params.get('from') || params.get('to')) return;
  const starts = (principals || []).map((p) => new Date(p.first_seen).getTime()).filter(Number.isFinite);
  ctx.setParams({ range: fittedRange(starts.length ? Math.min(...starts) : null) }, { quiet: true });
}

/** {from, to, granularity, label, range} from the page parameters (default: the last day). */
export function timeFrame(params) {
  const now = Date.now();
  const custom = params.get('range') === 'custom' || (!params.get('range') && params.get('from'));
  if (custom) {
    const from = params.get('from') ? new Date(params.get('from')).getTime() : now - 24 * 3600e3;
    const to = params.get('to') ? new Date(params.get('to')).getTime() : now;
    return { from, to, range: 'custom', label: `${time(from, { seconds: false })} – ${time(to, { seconds: false })}`, granularity: to - from > 7 * 24 * 3600e3 ? 'day' : 'hour' };
  }
  const preset = PRESETS.find(([id]) => id === params.get('range')) || PRESETS[2];
  return { from: now - preset[2], to: now, range: preset[0], label: preset[1].toLowerCase() === 'day' ? 'the last day' : `the last ${preset[1].toLowerCase().replace('last ', '')}`, granularity: preset[2] > 7 * 24 * 3600e3 ? 'day' : 'hour' };
}

/** The preset buttons and the custom range form, shared with the principal page. */
export function timeFrameControls(ctx, frame) {
  const presets = h(
    'div',
    { class: 'segmented', role: 'group', 'aria-label': 'Time frame', id: 'range-presets' },
    PRESETS.map(([id, label]) => h('button', { type: 'button', 'aria-pressed': String(frame.range === id), dataset: { range: id }, id: `range-${id}`, onclick: () => ctx.setParams({ range: id, from: '', to: '' }) }, label)),
  );
  const fromInputEl = h('input', { type: 'datetime-local', id: 'range-from', step: '60', value: toInput(frame.from).slice(0, 16) });
  const toInputEl = h('input', { type: 'datetime-local', id: 'range-to', step: '60', value: toInput(frame.to).slice(0, 16) });
  const custom = h(
    'form',
    { class: 'custom-range', onsubmit: (ev) => {
      ev.preventDefault();
      const f = fromInput(fromInputEl.value);
      const t = fromInput(toInputEl.value);
      if (f && t && f < t) {
        ctx.setParams({ range: 'custom', from: iso(f), to: iso(t) });
        return;
      }
      toInputEl.setCustomValidity('The end must be after the start.');
      toInputEl.reportValidity();
    } },
    field('From (UTC)', fromInputEl),
    field('To (UTC)', toInputEl),
    h('div', { class: 'field actions' }, h('button', { type: 'submit', id: 'range-apply', 'aria-pressed': String(frame.range === 'custom') }, 'Apply range')),
  );
  toInputEl.addEventListener('input', () => toInputEl.setCustomValidity(''));
  return h('div', { class: 'timeframe card' }, presets, custom);
}

export function tile(label, value, { id, tone, href } = {}) {
  const v = h('span', { class: 'tile-value' }, value);
  return h('div', { class: ['tile', tone], id }, href ? h('a', { href, class: 'tile-link' }, v, h('span', { class: 'tile-label' }, label)) : [v, h('span', { class: 'tile-label' }, label)]);
}

export async function render(view, ctx) {
  const { params, signal } = ctx;
  const account = params.get('account') || '';
  const principalsList = get('/v1/principals', { account, limit: 1000 }, { signal }).then((p) => p.items);
  fitTimeFrame(ctx, await principalsList.catch((err) => { if (err.name === 'AbortError') throw err; return null; }));
  const frame = timeFrame(params);
  ctx.title('Activity');
  const range = { from: iso(frame.from), to: iso(frame.to), account };

  const tiles = h('div', { class: 'tiles', id: 'activity-tiles' });
  const byService = h('div', { class: 'card', id: 'chart-services' });
  const byPrincipal = h('div', { class: 'card', id: 'chart-principals' });
  const topPrincipals = h('div', { class: 'card', id: 'top-principals' });
  const topServices = h('div', { class: 'card', id: 'top-services' });
  const errors = h('div', { class: 'card', id: 'errors' });
  replace(
    view,
    h('div', { class: 'page-head' }, h('h1', { tabindex: '-1' }, 'Activity'), h('p', { class: 'lede' }, `CloudTrail activity in ${frame.label}${account ? ` in account ${account}` : ''}.`)),
    timeFrameControls(ctx, frame),
    tiles,
    h('div', { class: 'grid-2' }, byService, byPrincipal),
    h('div', { class: 'grid-2' }, topPrincipals, topServices),
    errors,
  );

  const count = (extra) => get('/v1/events', { ...range, ...extra, count: 'true' }, { signal }).then((r) => r.count);
  const tilesLoad = section(tiles, 'Counters', async () => {
    const [total, writes, failed, ...created] = await Promise.all([count({}), count({ read_only: 'false' }), count({ errors_only: 'true' }), ...COUNTED.map((name) => count({ event_name: name }))]);
    return [
      tile('Events', num(total), { id: 'tile-events' }),
      tile('Writes', num(writes), { id: 'tile-writes' }),
      tile('Errors and denied', num(failed), { id: 'tile-errors', tone: failed ? 'bad' : null }),
      ...COUNTED.map((name, i) => tile(name, num(created[i]), { id: `tile-${name}` })),
    ];
  });

  const data = loadActivity(frame, range, account, signal, principalsList);

  const servicesLoad = section(byService, 'Events per service', async () => {
    const { services, granularity, truncated } = await data;
    const heading = h('h2', {}, 'Events per service');
    if (!services.some((t) => t.events > 0)) {
      replace(topServices, h('h2', {}, 'Services'), empty('No CloudTrail events in this time frame.'));
      return [heading, empty('No CloudTrail events in this time frame.')];
    }
    const top = services.filter((t) => t.events > 0).slice(0, TOP_SERIES);
    const rest = services.filter((t) => !top.includes(t));
    const points = [];
    for (const t of top) for (const b of t.buckets) points.push({ start: b.start, series: t.name, value: b.events });
    for (const t of rest) for (const b of t.buckets) points.push({ start: b.start, series: 'other', value: b.events });
    const series = [...top.map((t) => t.name), ...(rest.some((t) => t.events) ? ['other'] : [])];
    replace(
      topServices,
      h('h2', {}, 'Services'),
      // A service has the same colour here as in the chart below (its series index there).
      hBars({ items: services.filter((t) => t.events > 0).map((t) => ({ label: t.name, value: t.events, note: t.errors ? `(${num(t.errors)} failed)` : '', colorClass: `c${seriesColor(series, t.name)}` })), id: 'services-bars' }),
      truncated ? h('p', { class: 'muted' }, 'Quieter services are left out.') : null,
    );
    const buckets = fillBuckets(points, frame.from, frame.to, granularity);
    return [heading, timeBars({ title: `Events per ${GRANULARITY_NAME[granularity]}, by service`, buckets, series, granularity, colorOf: (name) => seriesColor(series, name), id: 'services-chart' })];
  });

  const principalsLoad = section(byPrincipal, 'Events per principal', async () => {
    const { principals, granularity } = await data;
    const rows = principals.filter((r) => r.events > 0).sort((a, b) => b.events - a.events);
    const names = new Map(rows.map((r) => [r.label, shortName(r, rows)]));
    const top = rows.slice(0, TOP_SERIES);
    const rest = rows.slice(TOP_SERIES);
    const points = [];
    for (const r of top) for (const b of r.buckets) points.push({ start: b.start, series: names.get(r.label), value: b.events });
    // Every event is in the chart: the quieter principals together, as 'other'.
    for (const r of rest) for (const b of r.buckets) points.push({ start: b.start, series: 'other', value: b.events });
    const series = [...top.map((r) => names.get(r.label)), ...(rest.length ? ['other'] : [])];
    const buckets = fillBuckets(points, frame.from, frame.to, granularity);
    const keep = frame.range === 'custom' ? { range: 'custom', from: range.from, to: range.to } : { range: frame.range };
    replace(
      topPrincipals,
      h('h2', {}, 'Top principals'),
      rows.length
        ? table(
          [
            { label: 'Principal', cell: (r) => [h('a', { href: principalHref(r.label, keep), class: 'principal-link', title: r.label }, principalShort(r.label)), h('div', { class: 'muted small' }, `${r.type || 'principal'} · ${r.account_id}`)] },
            { label: 'Events', className: 'num', cell: (r) => num(r.events) },
            { label: 'Writes', className: 'num', cell: (r) => num(r.writes) },
            { label: 'Errors', className: 'num', cell: (r) => (r.errors ? badge(num(r.errors), 'error') : '0') },
          ],
          rows.slice(0, 15),
          { caption: 'Top principals', className: 'data compact', rowAttrs: (r) => ({ dataset: { principal: r.label } }) },
        )
        : empty('No principal was active in this time frame.'),
    );
    const note = rest.length ? h('p', { class: 'muted' }, `${rest.length} quieter principal${rest.length === 1 ? '' : 's'} (${num(rest.reduce((n, r) => n + r.events, 0))} events) shown together as 'other'.`) : null;
    return [h('h2', {}, 'Events per principal'), timeBars({ title: `Events per ${GRANULARITY_NAME[granularity]}, by principal`, buckets, series, granularity, id: 'principals-chart' }), note];
  });

  const errorsLoad = section(errors, 'Errors and denied calls', async () => {
    const page = await get('/v1/events', { ...range, errors_only: 'true', limit: 50 }, { signal });
    const heading = h('h2', { id: 'errors-heading' }, 'Errors and denied calls');
    if (!page.items.length) return [heading, empty('No failed or denied call in this time frame.')];
    return [
      heading,
      table(
        [
          { label: 'Time', className: 'nowrap', cell: (e) => time(e.event_time) },
          { label: 'Error', cell: (e) => badge(e.error_code || 'error', /denied|unauthorized|forbidden/i.test(e.error_code || '') ? 'denied' : 'error') },
          { label: 'Call', cell: (e) => `${e.service}:${e.event_name}` },
          { label: 'Principal', cell: (e) => h('a', { href: principalHref(principalLabel(e)), class: 'principal-link' }, principalShort(principalLabel(e))) },
          { label: 'Account', className: 'mono', cell: (e) => e.account_id },
          { label: 'Region', cell: (e) => e.region },
          { label: 'Message', className: 'wrap', cell: (e) => e.error_message || '—' },
        ],
        page.items,
        { caption: 'Errors and denied calls' },
      ),
      page.next_cursor ? h('p', { class: 'muted' }, 'Showing the latest 50.') : null,
    ];
  });

  await Promise.allSettled([tilesLoad, servicesLoad, principalsLoad, errorsLoad]);
  return null;
}

/** A principal's short name, with its account where two accounts share the name. */
function shortName(p, rows) {
  const short = principalShort(p.label);
  const clash = rows.some((r) => r.label !== p.label && principalShort(r.label) === short);
  return clash ? `${short} (${p.account_id})` : short;
}

const FINE_SPAN = 2 * 3600e3;
const FINE_MAX_EVENTS = 5000;

function sum(buckets, field) {
  return buckets.reduce((a, b) => a + (b[field] || 0), 0);
}

/**
 * Activity per service and per principal in the time frame: {granularity, services:
 * [{name, events, errors, buckets}], principals: [{label, type, account_id, events, writes,
 * errors, buckets}], truncated}. Buckets are [{start, events, errors, writes}].
 *
 * Up to two hours, the events themselves are counted in 5-minute buckets (an hour has only
 * one or two of the API's hourly buckets); beyond, or when there are too many events, the
 * API's hourly or daily activity of the busiest services and principals is read.
 */
export async function loadActivity(frame, range, account, signal, principalsList = null) {
  principalsList = principalsList || get('/v1/principals', { account, limit: 1000 }, { signal }).then((p) => p.items);
  if (frame.to - frame.from <= FINE_SPAN) {
    const { items, truncated } = await getAll('/v1/events', { from: range.from, to: range.to, account }, { max: FINE_MAX_EVENTS, signal });
    if (!truncated) return fromEvents(items, await principalsList);
  }
  const services = (await get('/v1/services', { from: range.from, to: range.to, account, limit: 1000 }, { signal })).items;
  const fetched = services.slice(0, MAX_SERIES_FETCH);
  const known = await principalsList;
  const candidates = known.filter((p) => new Date(p.last_seen).getTime() >= frame.from && new Date(p.first_seen).getTime() <= frame.to).slice(0, MAX_SERIES_FETCH);
  const [servicePages, principalPages] = await Promise.all([
    Promise.all(fetched.map((t) => get(`/v1/services/${seg(t.service)}/activity`, { ...range, granularity: frame.granularity, limit: 1000 }, { signal }))),
    Promise.all(candidates.map((p) => get(`/v1/principals/${seg(p.label)}/activity`, { ...range, granularity: frame.granularity, limit: 1000 }, { signal }))),
  ]);
  return {
    granularity: frame.granularity,
    truncated: services.length > MAX_SERIES_FETCH,
    services: fetched.map((t, i) => ({ name: t.service, buckets: servicePages[i].items, events: sum(servicePages[i].items, 'events'), errors: sum(servicePages[i].items, 'errors') })).sort((a, b) => b.events - a.events),
    principals: candidates.map((p, i) => ({ label: p.label, type: p.type, account_id: p.account_id, buckets: principalPages[i].items, events: sum(principalPages[i].items, 'events'), writes: sum(principalPages[i].items, 'writes'), errors: sum(principalPages[i].items, 'errors') })),
  };
}

/** The same shape, counted from events in 5-minute buckets. */
export function fromEvents(events, known = []) {
  const byLabel = new Map(known.map((p) => [p.label, p]));
  const services = new Map();
  const principals = new Map();
  const add = (map, key, init, e) => {
    let entry = map.get(key);
    if (!entry) { entry = { ...init, events: 0, writes: 0, errors: 0, perBucket: new Map() }; map.set(key, entry); }
    const start = bucketStart(new Date(e.event_time).getTime(), '5min');
    const b = entry.perBucket.get(start) || { start, events: 0, writes: 0, errors: 0 };
    b.events += 1; entry.events += 1;
    if (e.read_only === false) { b.writes += 1; entry.writes += 1; }
    if (e.error_code) { b.errors += 1; entry.errors += 1; }
    entry.perBucket.set(start, b);
  };
  for (const e of events) {
    add(services, e.service, { name: e.service }, e);
    const label = principalLabel(e);
    const p = byLabel.get(label);
    add(principals, label, { label, type: (p && p.type) || (e.principal && e.principal.type), account_id: (p && p.account_id) || e.account_id }, e);
  }
  const done = (entry) => { const { perBucket, ...rest } = entry; return { ...rest, buckets: [...perBucket.values()] }; };
  return {
    granularity: '5min',
    truncated: false,
    services: [...services.values()].map(done).sort((a, b) => b.events - a.events),
    principals: [...principals.values()].map(done),
  };
}
