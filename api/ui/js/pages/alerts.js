// #/alerts?severity=&status=open|resolved|all : what is alerting, and drift from the baseline.
//
// Open alerts by severity (live: the alert stream refreshes the list when one opens or
// resolves), drift against the pinned baseline, and the rules in force. Each part says
// clearly when this server does not offer it (an endpoint answering 404).
//
// The alert list and the drift table read the API a page at a time ("Show more" follows its
// cursor), so every row can be reached however many there are. The list goes one severity
// after another, most severe first, each most recently opened first (the API's order); a
// live refresh reads again as many rows as were shown.

import { get, getAll, pager, pagerChain, stream } from '../api.js';
import { announce, badge, debounce, empty, h, pathList, replace, section, table, unavailable } from '../dom.js';
import { hBars } from '../charts.js';
import { num, time, typeLabel } from '../format.js';
import { resourceHref } from '../nav.js';

export const SEVERITIES = ['critical', 'high', 'medium', 'low', 'info'];
const PAGE_ROWS = 100;
const DRIFT_ROWS = 500;
const SEVERITY_COLOR = { critical: 'sev-critical', high: 'sev-high', medium: 'sev-medium', low: 'sev-low', info: 'sev-info' };

export async function render(view, ctx) {
  const { params, signal } = ctx;
  const severity = params.get('severity') || '';
  const status = ['open', 'resolved', 'all'].includes(params.get('status')) ? params.get('status') : 'open';
  ctx.title('Alerts and drift');

  const pill = h('span', { class: 'pill connecting', id: 'alerts-status', role: 'status' }, 'Connecting…');
  const overview = h('div', { class: 'card', id: 'alerts-overview' });
  const list = h('div', { class: 'card', id: 'alerts-list' });
  const drift = h('div', { class: 'card', id: 'drift' });
  const rules = h('div', { class: 'card', id: 'rules' });
  replace(
    view,
    h('div', { class: 'page-head row' }, h('h1', { tabindex: '-1' }, 'Alerts and drift'), h('div', { class: 'head-actions' }, pill)),
    overview,
    list,
    drift,
    rules,
  );

  let available = true;
  let listGeneration = 0; // a live refresh outdates a "Show more" still loading
  const loadAlerts = async () => {
    const generation = ++listGeneration;
    let open;
    try {
      open = await getAll('/v1/alerts', { status: 'open' }, { max: 5000, signal });
    } catch (err) {
      if (err.unavailable) {
        available = false;
        replace(overview, h('h2', {}, 'Open alerts'), unavailable('Alerts', err));
        replace(list, '');
        list.hidden = true;
        return;
      }
      throw err;
    }
    const counts = Object.fromEntries(SEVERITIES.map((s) => [s, 0]));
    const byRule = new Map();
    for (const a of open.items) {
      counts[a.severity] = (counts[a.severity] || 0) + 1;
      const r = byRule.get(a.rule_id) || { label: a.title, value: 0, severity: a.severity };
      r.value += 1;
      byRule.set(a.rule_id, r);
    }
    replace(
      overview,
      h('h2', {}, 'Open alerts by severity'),
      h(
        'div',
        { class: 'tiles severity-tiles', id: 'severity-tiles' },
        SEVERITIES.map((s) => h(
          'a',
          { class: ['tile', 'sev', `sev-${s}`, severity === s ? 'active' : null], href: ctx.href('alerts', '', { severity: severity === s ? '' : s, status }), 'aria-current': severity === s ? 'true' : null, dataset: { severity: s, count: String(counts[s]) } },
          h('span', { class: 'tile-value' }, num(counts[s])),
          h('span', { class: 'tile-label' }, s),
        )),
      ),
      open.truncated ? h('p', { class: 'muted', id: 'alerts-counted' }, `Counted over the ${num(open.items.length)} most recently opened; the list below reaches every one.`) : null,
      byRule.size
        ? hBars({ title: 'Open alerts by rule', items: [...byRule.values()].sort((a, b) => b.value - a.value).slice(0, 10).map((r) => ({ ...r, colorClass: SEVERITY_COLOR[r.severity] })), id: 'rules-bars' })
        : empty('Nothing is alerting.', 'Alerts open when a rule matches a resource, a change or an event.'),
    );

    const source = pagerChain((severity ? [severity] : SEVERITIES).map((s) => pager('/v1/alerts', { status: status === 'all' ? '' : status, severity: s }, { signal })));
    const rows = await source.next(Math.max(Number(list.dataset.shown || 0), PAGE_ROWS));
    const statusLinks = h('div', { class: 'segmented', role: 'group', 'aria-label': 'Status' },
      ['open', 'resolved', 'all'].map((s) => h('a', { href: ctx.href('alerts', '', { severity, status: s }), 'aria-current': s === status ? 'true' : null, class: s === status ? 'active' : null }, s)));
    const heading = h('div', { class: 'row' }, h('h2', {}, `${status === 'all' ? 'All' : status[0].toUpperCase() + status.slice(1)} alerts${severity ? ` (${severity})` : ''}`), statusLinks);
    const columns = [
      { label: 'Severity', cell: (a) => badge(a.severity) },
      { label: 'Alert', className: 'wrap', cell: (a) => [h('strong', {}, a.title), h('div', { class: 'muted small mono' }, a.rule_id)] },
      { label: 'Resource', cell: (a) => [h('a', { href: resourceHref(a.key, { tab: 'alerts' }) }, a.name || a.key.split(/[:/]/).pop()), a.resource_type ? h('div', { class: 'muted small' }, typeLabel(a.resource_type)) : null] },
      { label: 'Account', className: 'mono', cell: (a) => a.account_id },
      { label: 'Region', cell: (a) => a.region },
      { label: 'Opened', className: 'nowrap', cell: (a) => time(a.opened_at, { seconds: false }) },
      { label: 'Status', cell: (a) => (a.status === 'resolved' ? [badge('resolved'), h('div', { class: 'muted small' }, time(a.resolved_at, { seconds: false }))] : badge('open')) },
      { label: 'Seen', className: 'num', cell: (a) => `${num(a.occurrences)}×` },
    ];
    const draw = () => {
      if (generation !== listGeneration) return;
      list.dataset.shown = String(rows.length);
      if (!rows.length) {
        replace(list, heading, empty(severity ? `No ${status === 'all' ? '' : status} ${severity} alerts.` : `No ${status === 'all' ? '' : status} alerts.`));
        return;
      }
      const more = source.done
        ? h('p', { class: 'muted', id: 'alerts-count' }, `${num(rows.length)} shown.`)
        : h('button', { type: 'button', class: 'more', id: 'alerts-more', onclick: (ev) => showMore(ev.target) }, `Show more (${num(rows.length)} shown)`);
      replace(list, heading, table(columns, rows, { caption: 'Alerts', rowAttrs: (a) => ({ dataset: { alertId: a.alert_id, severity: a.severity } }) }), more);
    };
    const showMore = async (button) => {
      button.disabled = true;
      try {
        rows.push(...await source.next(PAGE_ROWS));
      } catch (err) {
        if (err.name === 'AbortError') return;
        button.disabled = false;
        button.textContent = `Could not load more (${err.message}): try again`;
        return;
      }
      draw();
      document.getElementById('alerts-more')?.focus();
    };
    draw();
  };

  const alertsLoad = section(overview, 'Alerts', loadAlerts);

  const driftLoad = section(drift, 'Drift', async () => {
    const heading = h('h2', {}, 'Drift against the baseline');
    const source = pager('/v1/drift', {}, { signal });
    let rows;
    try {
      rows = await source.next(DRIFT_ROWS);
    } catch (err) {
      if (err.unavailable) return [heading, unavailable('Drift', err)];
      throw err;
    }
    if (!rows.length) return [heading, empty('Nothing has drifted from the baseline.', 'Pin a baseline with `cloudinv baseline pin`; resources that differ from it are listed here.')];
    const columns = [
      { label: 'Resource', cell: (d) => h('a', { href: resourceHref(d.key) }, d.name || d.key.split(/[:/]/).pop()) },
      { label: 'Type', cell: (d) => typeLabel(d.resource_type) },
      { label: 'Account', className: 'mono', cell: (d) => d.account_id },
      { label: 'Region', cell: (d) => d.region },
      { label: 'Drift', cell: (d) => badge(d.drift) },
      { label: 'Baseline pinned', className: 'nowrap', cell: (d) => (d.pinned_at ? time(d.pinned_at, { seconds: false }) : '—') },
      { label: 'Changed paths', className: 'wrap paths-cell', cell: (d) => pathList(d.changed_paths, { max: 4 }) || '—' },
    ];
    const content = () => {
      const kinds = {};
      for (const d of rows) kinds[d.drift] = (kinds[d.drift] || 0) + 1;
      return [
        heading,
        h('p', { class: 'lede' }, Object.entries(kinds).map(([k, n]) => [badge(k), ` ${num(n)} `]), source.done ? null : h('span', { class: 'muted' }, `(of the ${num(rows.length)} shown)`)),
        table(columns, rows, { caption: 'Drift', rowAttrs: (d) => ({ dataset: { key: d.key } }) }),
        source.done
          ? h('p', { class: 'muted', id: 'drift-count' }, `${num(rows.length)} shown.`)
          : h('button', { type: 'button', class: 'more', id: 'drift-more', onclick: (ev) => showMore(ev.target) }, `Show more (${num(rows.length)} shown)`),
      ];
    };
    const showMore = async (button) => {
      button.disabled = true;
      try {
        rows.push(...await source.next(DRIFT_ROWS));
      } catch (err) {
        if (err.name === 'AbortError') return;
        button.disabled = false;
        button.textContent = `Could not load more (${err.message}): try again`;
        return;
      }
      replace(drift, content());
      document.getElementById('drift-more')?.focus();
    };
    return content();
  });

  const rulesLoad = section(rules, 'Rules', async () => {
    const heading = h('h2', {}, 'Rules in force');
    let catalog;
    try {
      catalog = await get('/v1/rules', null, { signal });
    } catch (err) {
      if (err.unavailable) return [heading, unavailable('Rules', err)];
      throw err;
    }
    const active = catalog.items.filter((r) => !r.disabled);
    return [
      heading,
      h('p', {}, `${num(active.length)} rules in force`, catalog.items.length > active.length ? `, ${num(catalog.items.length - active.length)} disabled` : '', '.'),
      catalog.problems && catalog.problems.length
        ? h('div', { class: 'banner warn', role: 'alert' }, h('strong', {}, `${catalog.problems.length} rules were rejected:`), h('ul', {}, catalog.problems.map((p) => h('li', {}, h('code', {}, `${p.file}${p.line ? `:${p.line}` : ''}`), ` ${p.rule_id || ''} — ${p.problem}`))))
        : null,
      h('details', {}, h('summary', {}, 'Show the rules'), table(
        [
          { label: 'Severity', cell: (r) => badge(r.severity) },
          { label: 'Rule', className: 'wrap', cell: (r) => [h('strong', {}, r.title), h('div', { class: 'muted small mono' }, r.id)] },
          { label: 'Looks at', cell: (r) => `${r.kind}${r.resource_type ? ` · ${typeLabel(r.resource_type)}` : ''}` },
        ],
        catalog.items,
        { caption: 'Rules' },
      )),
    ];
  });

  // Live: an alert opening or resolving refreshes the list.
  const refresh = debounce(() => { if (available) loadAlerts().catch(() => {}); }, 800);
  let streamState = 'connecting';
  const live = stream('/v1/alerts/stream', {}, {
    onEvent: (event) => {
      if (event.type !== 'alert') return;
      try {
        const n = JSON.parse(event.data);
        announce(`Alert ${n.kind}: ${n.alert.title}`);
      } catch { /* still refresh */ }
      refresh();
    },
    onStatus: (st) => {
      if (st === 'closed' && streamState === 'unavailable') return;
      streamState = st;
      pill.textContent = { connecting: 'Connecting…', live: '● Live', reconnecting: 'Reconnecting…', unavailable: 'No live alerts', closed: 'Stopped', unauthorized: 'Signed out' }[st] || st;
      pill.className = `pill ${st}`;
    },
  });

  await Promise.allSettled([alertsLoad, driftLoad, rulesLoad]);
  return () => live.close();
}
