// #/principal/<label>?range=&from=&to= : one principal's activity (without a time frame:
// the shortest preset, up to a day, that holds its events, as on the activity page).
//
// Who it is (from /v1/principals), what it did over time (its activity, stacked by API call),
// which calls, its recent events and failures, and the changes CloudTrail attributed to it.

import { get, getAll, seg } from '../api.js';
import { badge, empty, failure, h, replace, section, table } from '../dom.js';
import { GRANULARITY_NAME, bucketStart, fillBuckets, hBars, timeBars } from '../charts.js';
import { iso, num, principalShort, time, typeLabel } from '../format.js';
import { resourceHref } from '../nav.js';
import { fitTimeFrame, tile, timeFrame, timeFrameControls } from './activity.js';

const TOP_CALLS = 6;

export async function render(view, ctx) {
  const label = ctx.arg;
  const { signal } = ctx;
  const knownLoad = getAll('/v1/principals', {}, { max: 10000, signal });
  // Opened without a time frame: the shortest that holds this principal's events.
  const knownNow = await knownLoad.catch((err) => { if (err.name === 'AbortError') throw err; return null; });
  fitTimeFrame(ctx, knownNow && knownNow.items.filter((p) => p.label === label));
  const frame = timeFrame(ctx.params);
  const range = { from: iso(frame.from), to: iso(frame.to) };
  ctx.title(`${principalShort(label)} · activity`);

  const summary = h('div', { id: 'principal-summary' });
  const tiles = h('div', { class: 'tiles', id: 'principal-tiles' });
  const chart = h('div', { class: 'card', id: 'principal-chart' });
  const calls = h('div', { class: 'card', id: 'principal-calls' });
  const events = h('div', { class: 'card', id: 'principal-events' });
  const changes = h('div', { class: 'card', id: 'principal-changes' });
  replace(
    view,
    h('div', { class: 'page-head' }, h('p', { class: 'crumbs' }, h('a', { href: '#/activity' }, 'Activity'), ' / principal'), h('h1', { tabindex: '-1', id: 'principal-title' }, principalShort(label)), summary),
    timeFrameControls(ctx, frame),
    tiles,
    h('div', { class: 'grid-2 wide-first' }, chart, calls),
    events,
    changes,
  );

  const summaryLoad = knownLoad.then((known) => {
    const me = known.items.find((p) => p.label === label);
    if (!me) {
      replace(summary, h('p', { class: 'banner warn' }, 'CloudTrail has no event of this principal (yet). ', h('span', { class: 'mono' }, label)));
      return;
    }
    replace(summary, h('dl', { class: 'meta' },
      h('div', { class: 'wide' }, h('dt', {}, 'Principal'), h('dd', { class: 'mono' }, label)),
      h('div', {}, h('dt', {}, 'Type'), h('dd', {}, me.type || '—')),
      h('div', {}, h('dt', {}, 'Account'), h('dd', { class: 'mono' }, me.account_id)),
      h('div', {}, h('dt', {}, 'First seen'), h('dd', {}, time(me.first_seen))),
      h('div', {}, h('dt', {}, 'Last seen'), h('dd', {}, time(me.last_seen))),
      h('div', {}, h('dt', {}, 'All-time events'), h('dd', {}, `${num(me.events)} (${num(me.writes)} writes, ${num(me.errors)} errors)`)),
    ));
  }).catch((err) => { if (err.name !== 'AbortError') replace(summary, failure('the principal', err)); });

  // Up to two hours, the principal's events are counted here in 5-minute buckets; beyond,
  // the API's hourly or daily activity is read.
  const fine = frame.to - frame.from <= 2 * 3600e3
    ? getAll('/v1/events', { principal: label, ...range }, { max: 5000, signal }).then((r) => (r.truncated ? null : r.items))
    : Promise.resolve(null);

  const activityLoad = section(chart, 'Activity', async () => {
    const recent = await fine;
    let buckets; let granularity;
    if (recent) {
      granularity = '5min';
      const perBucket = new Map();
      for (const e of recent) {
        const start = bucketStart(new Date(e.event_time).getTime(), granularity);
        const b = perBucket.get(start) || { start, events: 0, writes: 0, reads: 0, errors: 0, by_event_name: {} };
        b.events += 1;
        if (e.read_only === false) b.writes += 1;
        if (e.read_only === true) b.reads += 1;
        if (e.error_code) b.errors += 1;
        b.by_event_name[e.event_name] = (b.by_event_name[e.event_name] || 0) + 1;
        perBucket.set(start, b);
      }
      buckets = [...perBucket.values()];
    } else {
      granularity = frame.granularity;
      try {
        buckets = (await get(`/v1/principals/${seg(label)}/activity`, { ...range, granularity, limit: 1000 }, { signal })).items;
      } catch (err) {
        if (!err.notFound) throw err;
        buckets = [];
      }
    }
    const byName = new Map();
    let events = 0; let writes = 0; let reads = 0; let errors = 0;
    for (const b of buckets) {
      events += b.events; writes += b.writes; reads += b.reads; errors += b.errors;
      for (const [name, n] of Object.entries(b.by_event_name || {})) byName.set(name, (byName.get(name) || 0) + n);
    }
    const ranked = [...byName.entries()].sort((a, b) => b[1] - a[1]);
    const top = ranked.slice(0, TOP_CALLS).map(([name]) => name);
    const points = [];
    for (const b of buckets) {
      let named = 0;
      for (const [name, n] of Object.entries(b.by_event_name || {})) {
        points.push({ start: b.start, series: top.includes(name) ? name : 'other', value: n });
        named += n;
      }
      if (b.events > named) points.push({ start: b.start, series: 'other', value: b.events - named });
    }
    const series = [...top, ...(points.some((p) => p.series === 'other') ? ['other'] : [])];
    replace(tiles,
      tile('Events', num(events), { id: 'tile-events' }),
      tile('Writes', num(writes), { id: 'tile-writes' }),
      tile('Reads', num(reads), { id: 'tile-reads' }),
      tile('Errors and denied', num(errors), { id: 'tile-errors', tone: errors ? 'bad' : null }));
    replace(calls, h('h2', {}, 'Calls'), ranked.length ? hBars({ items: ranked.slice(0, 15).map(([name, n]) => ({ label: name, value: n })), colorClass: 'c2', id: 'calls-bars' }) : empty('No calls in this time frame.'));
    const filled = fillBuckets(points, frame.from, frame.to, granularity);
    return [h('h2', {}, `Activity in ${frame.label}`), timeBars({ title: `Events per ${GRANULARITY_NAME[granularity]}, by call`, buckets: filled, series, granularity, id: 'activity-chart' })];
  });

  const eventsLoad = section(events, 'Recent events', async () => {
    const recent = await fine;
    const page = recent ? { items: recent.slice(0, 50), next_cursor: recent.length > 50 ? 'more' : null } : await get('/v1/events', { principal: label, ...range, limit: 50 }, { signal });
    const heading = h('h2', {}, 'Recent events');
    if (!page.items.length) return [heading, empty('No events in this time frame.')];
    return [heading, table(
      [
        { label: 'Time', className: 'nowrap', cell: (e) => time(e.event_time) },
        { label: 'Call', cell: (e) => [h('strong', {}, e.event_name), h('span', { class: 'muted' }, ` ${e.service}`), e.error_code ? [' ', badge(e.error_code, /denied|unauthorized/i.test(e.error_code) ? 'denied' : 'error')] : null] },
        { label: 'Account', className: 'mono', cell: (e) => e.account_id },
        { label: 'Region', cell: (e) => e.region },
        { label: 'Source IP', className: 'mono', cell: (e) => e.source_ip || '—' },
        { label: 'Parameters', cell: (e) => (e.request_parameters ? h('details', {}, h('summary', {}, 'Show'), h('pre', { class: 'json small' }, JSON.stringify(e.request_parameters, null, 2))) : '—') },
      ],
      page.items,
      { caption: 'Recent events' },
    ), page.next_cursor ? h('p', { class: 'muted' }, 'The latest 50 are shown.') : null];
  });

  const changesLoad = section(changes, 'Changes made', async () => {
    const { items } = await getAll('/v1/changes', { principal: label, since: range.from, until: range.to }, { max: 2000, signal });
    const heading = h('h2', {}, 'Changes attributed to this principal');
    if (!items.length) return [heading, empty('No stored change is attributed to this principal in this time frame.', 'Attribution comes from the CloudTrail event that caused a change.')];
    return [heading, table(
      [
        { label: 'Captured', className: 'nowrap', cell: (c) => time(c.captured_at) },
        { label: 'Change', cell: (c) => badge(c.change_type) },
        { label: 'Resource', cell: (c) => h('a', { href: resourceHref(c.key, { tab: 'diff', change: c.change_id }) }, c.name || c.resource_id) },
        { label: 'Type', cell: (c) => typeLabel(c.resource_type) },
        { label: 'Via', cell: (c) => (c.attribution ? c.attribution.event_name : '—') },
      ],
      items.slice(-100).reverse(),
      { caption: 'Changes attributed to this principal' },
    )];
  });

  await Promise.allSettled([summaryLoad, activityLoad, eventsLoad, changesLoad]);
  return null;
}
