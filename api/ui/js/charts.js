// Charts drawn as inline SVG: stacked bars over time, horizontal bars, a change timeline.
// Colours come from CSS classes (c0..c9), so the charts follow the page's light or dark theme.
// Every chart has a text equivalent: a <title> per mark and a data table under a disclosure.

import { h, s, replace } from './dom.js';
import { num, time } from './format.js';

const MINUTE = 60 * 1000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
/** Bucket widths: the API's hours and days, and 5 minutes for buckets counted here. */
export const STEPS = { '5min': 5 * MINUTE, hour: HOUR, day: DAY };
export const GRANULARITY_NAME = { '5min': '5 minutes', hour: 'hour', day: 'day' };
export const PALETTE_SIZE = 10;

/** The palette index of a series: its position in the chart's list of series, so a name has
 *  one colour in every chart built from that list (the bars beside a chart match its legend);
 *  a name outside the list takes the colour of 'other'. */
export function seriesColor(series, name) {
  const at = series.indexOf(name);
  const index = at >= 0 ? at : series.indexOf('other');
  return (index >= 0 ? index : series.length) % PALETTE_SIZE;
}

function pad(n) {
  return String(n).padStart(2, '0');
}

function bucketLabel(ms, granularity, multiDay) {
  const d = new Date(ms);
  const day = `${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
  if (granularity === 'day') return day;
  const hour = `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
  return multiDay ? `${day} ${hour}` : hour;
}

function niceMax(value) {
  if (value <= 0) return 1;
  const exp = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * exp >= value) return m * exp;
  return 10 * exp;
}

/** Redraw `draw(width)` into `container` now and whenever its width changes. */
export function responsive(container, draw) {
  let lastWidth = 0;
  const render = () => {
    const width = Math.max(260, Math.floor(container.clientWidth || 600));
    if (Math.abs(width - lastWidth) < 8) return;
    lastWidth = width;
    replace(container, draw(width));
  };
  render();
  if ('ResizeObserver' in window) {
    const observer = new ResizeObserver(() => render());
    observer.observe(container);
  }
  return container;
}

/** Start of the hour or day (UTC) holding `ms`. */
export function bucketStart(ms, granularity) {
  const step = STEPS[granularity] || HOUR;
  return Math.floor(ms / step) * step;
}

/**
 * Buckets from..to at the granularity, each {start, values: {series: n}}, filled from
 * `points` ([{start, series, value}]); the API leaves empty buckets out, the chart does not.
 */
export function fillBuckets(points, from, to, granularity) {
  const step = STEPS[granularity] || HOUR;
  const first = bucketStart(from, granularity);
  const last = bucketStart(to, granularity);
  const buckets = new Map();
  for (let t = first; t <= last; t += step) buckets.set(t, { start: t, values: {} });
  for (const p of points) {
    const key = bucketStart(new Date(p.start).getTime(), granularity);
    const bucket = buckets.get(key);
    if (!bucket) continue;
    bucket.values[p.series] = (bucket.values[p.series] || 0) + p.value;
  }
  return [...buckets.values()];
}

function legend(series, colorOf) {
  return h(
    'ul',
    { class: 'legend' },
    series.map((name, i) => h('li', {}, h('span', { class: `swatch c${colorOf(name, i)}`, 'aria-hidden': 'true' }), name)),
  );
}

function dataTable(caption, headers, rows) {
  return h(
    'details',
    { class: 'chart-data' },
    h('summary', {}, 'Data table'),
    h(
      'div',
      { class: 'table-wrap' },
      h(
        'table',
        { class: 'data compact' },
        h('caption', { class: 'visually-hidden' }, caption),
        h('thead', {}, h('tr', {}, headers.map((x) => h('th', { scope: 'col' }, x)))),
        h('tbody', {}, rows.map((r) => h('tr', {}, r.map((x) => h('td', {}, x))))),
      ),
    ),
  );
}

/**
 * Stacked bars over time. `buckets`: [{start, values: {series: n}}] in time order;
 * `series`: names in stacking order. Returns a figure (chart, legend, data table).
 */
export function timeBars({ title, buckets, series, granularity = 'hour', height = 220, colorOf = (_, i) => i % PALETTE_SIZE, valueName = 'events', id }) {
  const totals = buckets.map((b) => series.reduce((sum, name) => sum + (b.values[name] || 0), 0));
  const grand = totals.reduce((a, b) => a + b, 0);
  const multiDay = buckets.length > 1 && buckets[buckets.length - 1].start - buckets[0].start >= DAY;
  const chart = h('div', { class: 'chart-canvas' });
  const figure = h(
    'figure',
    { class: 'chart', id, dataset: { chart: 'time-bars', total: String(grand) } },
    h('figcaption', {}, title, ' ', h('span', { class: 'muted' }, `(${num(grand)} ${valueName})`)),
    chart,
    series.length > 1 ? legend(series, colorOf) : null,
    dataTable(
      title,
      ['Time (UTC)', ...series, 'Total'],
      buckets.filter((b, i) => totals[i] > 0).map((b) => [time(b.start, { seconds: false }), ...series.map((n) => num(b.values[n] || 0)), num(totals[buckets.indexOf(b)])]),
    ),
  );
  responsive(chart, (width) => {
    const m = { top: 10, right: 8, bottom: 26, left: 44 };
    const w = width - m.left - m.right;
    const ih = height - m.top - m.bottom;
    const max = niceMax(Math.max(0, ...totals));
    const n = Math.max(1, buckets.length);
    const slot = w / n;
    const barW = Math.max(1, slot * (n > 60 ? 0.9 : 0.72));
    const y = (v) => m.top + ih - (v / max) * ih;
    const grid = [];
    for (let i = 0; i <= 4; i += 1) {
      const v = (max / 4) * i;
      grid.push(s('line', { class: 'grid', x1: m.left, x2: m.left + w, y1: y(v), y2: y(v) }));
      grid.push(s('text', { class: 'tick', x: m.left - 6, y: y(v) + 4, 'text-anchor': 'end', text: v >= 1000 ? `${num(v / 1000)}k` : num(Math.round(v * 10) / 10) }));
    }
    const labelEvery = Math.max(1, Math.ceil(n / Math.max(2, Math.floor(w / (multiDay && granularity !== 'day' ? 96 : 56)))));
    const xticks = [];
    const bars = [];
    buckets.forEach((b, i) => {
      const x = m.left + i * slot + (slot - barW) / 2;
      if (i % labelEvery === 0) {
        xticks.push(s('text', { class: 'tick', x: m.left + i * slot + slot / 2, y: height - 8, 'text-anchor': 'middle', text: bucketLabel(b.start, granularity, multiDay) }));
      }
      let base = 0;
      series.forEach((name, si) => {
        const v = b.values[name] || 0;
        if (!v) return;
        const top = y(base + v);
        const rect = s('rect', {
          class: `bar c${colorOf(name, si)}`, x: x.toFixed(2), y: top.toFixed(2), width: barW.toFixed(2),
          height: Math.max(0.5, y(base) - top).toFixed(2), 'data-series': name, 'data-value': v,
        }, s('title', { text: `${time(b.start, { seconds: false })}: ${name} ${num(v)}` }));
        bars.push(rect);
        base += v;
      });
    });
    return s(
      'svg',
      { width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': `${title}: ${num(grand)} ${valueName}` },
      ...grid,
      s('line', { class: 'axis', x1: m.left, x2: m.left + w, y1: y(0), y2: y(0) }),
      ...bars,
      ...xticks,
      grand === 0 ? s('text', { class: 'nodata', x: m.left + w / 2, y: m.top + ih / 2, 'text-anchor': 'middle', text: `No ${valueName} in this time frame` }) : null,
    );
  });
  return figure;
}

/**
 * Horizontal bars: [{label, value, href?, note?}] largest first. Labels are links when
 * `href` is given (keyboard reachable); each bar is an inline SVG scaled to the largest.
 */
export function hBars({ title, items, format = num, colorClass = 'c0', id }) {
  const max = Math.max(1, ...items.map((i) => i.value));
  return h(
    'figure',
    { class: 'chart hbars', id, dataset: { chart: 'h-bars' } },
    title ? h('figcaption', {}, title) : null,
    h(
      'ol',
      { class: 'hbar-list' },
      items.map((item) =>
        h(
          'li',
          {},
          h('span', { class: 'hbar-label' }, item.href ? h('a', { href: item.href, title: item.title || item.label }, item.label) : h('span', { title: item.title || item.label }, item.label), item.note ? h('span', { class: 'muted' }, ` ${item.note}`) : null),
          s(
            'svg',
            { class: 'hbar', viewBox: '0 0 100 10', preserveAspectRatio: 'none', 'aria-hidden': 'true' },
            s('rect', { class: `bar ${item.colorClass || colorClass}`, x: 0, y: 0, height: 10, width: Math.max(0.5, (item.value / max) * 100).toFixed(2) }),
          ),
          h('span', { class: 'hbar-value' }, format(item.value)),
        ),
      ),
    ),
  );
}

const CHANGE_CLASS = { created: 'created', modified: 'modified', deleted: 'deleted' };

/**
 * A resource's changes on a time axis. `entries`: [{change_type, captured_at, href, label}].
 * Each mark links to that change's diff.
 */
export function changeTimeline({ entries, until = Date.now(), selected = [] }) {
  // The list of changes under it is the text and keyboard equivalent: marks take no focus.
  const wrap = h('div', { class: 'timeline', dataset: { chart: 'timeline' } });
  if (!entries.length) return wrap;
  const times = entries.map((e) => new Date(e.captured_at).getTime());
  const start = Math.min(...times);
  const end = Math.max(until, ...times);
  responsive(wrap, (width) => {
    const height = 64;
    const m = { left: 14, right: 14 };
    const span = Math.max(1, end - start);
    const x = (t) => m.left + ((t - start) / span) * (width - m.left - m.right);
    const marks = entries.map((e, i) => {
      const t = times[i];
      const chosen = selected.includes(e.change_id);
      return s(
        'a',
        { href: e.href, tabindex: '-1' },
        s('circle', { class: `mark ${CHANGE_CLASS[e.change_type] || ''}${chosen ? ' chosen' : ''}`, cx: x(t).toFixed(1), cy: 28, r: chosen ? 8 : 6 }, s('title', { text: e.label })),
      );
    });
    return s(
      'svg',
      { width, height, viewBox: `0 0 ${width} ${height}`, 'aria-hidden': 'true' },
      s('line', { class: 'axis', x1: m.left, x2: width - m.right, y1: 28, y2: 28 }),
      s('text', { class: 'tick', x: m.left, y: 58, text: time(start, { seconds: false }) }),
      s('text', { class: 'tick', x: width - m.right, y: 58, 'text-anchor': 'end', text: until >= end ? 'now' : time(end, { seconds: false }) }),
      ...marks,
    );
  });
  return wrap;
}
