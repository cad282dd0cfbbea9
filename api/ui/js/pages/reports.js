// #/reports?report=snapshots|s3&month=YYYY-MM : the snapshot and S3 storage reports.
//
// Tables with charts and a CSV download. The reports come from /v1/reports/snapshots and
// /v1/reports/s3-metrics; either may answer a whole report ({rows, ...}) or a page of rows
// ({items, next_cursor}). The CSV is the server's (format=csv) when it offers one, else it is
// written here from the rows, with the replaced tools' columns first.

import { get, getCsv } from '../api.js';
import { badge, downloadBlob, empty, field, h, replace, section, table, unavailable } from '../dom.js';
import { hBars } from '../charts.js';
import { bytes, num, time } from '../format.js';

const REPORTS = [['snapshots', 'Snapshots'], ['s3', 'S3 storage']];
const AGE_ORDER = ['0-7 days', '8-30 days', '31-90 days', '91-180 days', '181-365 days', '366-730 days', 'over 730 days', 'no creation time'];
const SNAPSHOT_COLUMNS = ['service', 'region', 'snapshot_type', 'snapshot_id', 'source', 'source_name', 'engine', 'size_gb', 'status', 'created_at', 'encrypted', 'description', 'volume_type', 'volume_iops', 'volume_throughput', 'account_id', 'age_days', 'age_bucket'];
const SHOW_ROWS = 500;

export async function render(view, ctx) {
  const report = REPORTS.some(([id]) => id === ctx.params.get('report')) ? ctx.params.get('report') : 'snapshots';
  ctx.title(report === 's3' ? 'S3 storage report' : 'Snapshot report');
  const body = h('div', { id: `report-${report}` });
  replace(
    view,
    h('div', { class: 'page-head' }, h('h1', { tabindex: '-1' }, 'Reports')),
    h('nav', { class: 'segmented', 'aria-label': 'Reports', id: 'report-switch' },
      REPORTS.map(([id, label]) => h('a', { href: ctx.href('reports', '', { report: id }), 'aria-current': id === report ? 'page' : null, class: id === report ? 'active' : null }, label))),
    body,
  );
  if (report === 's3') await section(body, 'The S3 storage report', () => s3Report(ctx));
  else await section(body, 'The snapshot report', () => snapshotReport(ctx));
  return null;
}

function rowsOf(doc) {
  if (Array.isArray(doc)) return doc;
  return doc.rows || doc.items || [];
}

function csvCell(value) {
  if (value === null || value === undefined) return '';
  const text = typeof value === 'object' ? JSON.stringify(value) : String(value);
  return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

/** CSV of `rows` with `preferred` columns first, nested objects spread (sizes.x -> x). */
export function toCsv(rows, preferred = []) {
  const flat = rows.map((r) => {
    const out = {};
    for (const [k, v] of Object.entries(r)) {
      if (v && typeof v === 'object' && !Array.isArray(v)) Object.assign(out, v);
      else out[k] = v;
    }
    return out;
  });
  const columns = [...preferred.filter((c) => flat.some((r) => c in r))];
  for (const r of flat) for (const k of Object.keys(r)) if (!columns.includes(k)) columns.push(k);
  return [columns.join(','), ...flat.map((r) => columns.map((c) => csvCell(r[c])).join(','))].join('\r\n') + '\r\n';
}

function csvButton(id, path, params, rows, preferred, filename) {
  const button = h('button', { type: 'button', id, class: 'primary' }, 'Download CSV');
  const note = h('span', { class: 'muted small', role: 'status' });
  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      let blob;
      try {
        blob = await getCsv(path, params);
      } catch (err) {
        // The endpoint may not speak CSV (a 400 naming `format`, or 406): write it here.
        if (!(err.status === 400 || err.status === 406 || err.status === 415)) throw err;
        blob = new Blob([toCsv(rows, preferred)], { type: 'text/csv' });
      }
      downloadBlob(blob, filename);
      note.textContent = 'Downloaded.';
    } catch (err) {
      note.textContent = `Could not download: ${err.detail || err.message}`;
    } finally {
      button.disabled = false;
    }
  });
  return h('span', { class: 'csv' }, button, ' ', note);
}

function gapsBanner(doc) {
  const gaps = doc.gaps || [];
  if (!gaps.length) return null;
  return h(
    'div',
    { class: 'banner warn', role: 'status' },
    h('strong', {}, `Incomplete: ${gaps.length} ${gaps.length === 1 ? 'scope was' : 'scopes were'} not collected.`),
    h('ul', { class: 'small' }, gaps.slice(0, 10).map((g) => h('li', {}, `${g.account_id} ${g.region} ${g.resource_type}: ${g.code} ${g.message || ''}`))),
  );
}

async function fetchReport(path, params, ctx) {
  try {
    return await get(path, params, { signal: ctx.signal });
  } catch (err) {
    if (err.unavailable) return { unavailable: err };
    throw err;
  }
}

// -- snapshots --------------------------------------------------------------------------------

async function snapshotReport(ctx) {
  const path = '/v1/reports/snapshots';
  const doc = await fetchReport(path, {}, ctx);
  if (doc.unavailable) return unavailable('The snapshot report', doc.unavailable);
  const rows = rowsOf(doc);
  const byService = new Map();
  const byAge = new Map();
  for (const r of rows) {
    const s = byService.get(r.service) || { count: 0, gb: 0 };
    s.count += 1; s.gb += r.size_gb || 0;
    byService.set(r.service, s);
    const a = byAge.get(r.age_bucket) || { count: 0, gb: 0 };
    a.count += 1; a.gb += r.size_gb || 0;
    byAge.set(r.age_bucket, a);
  }
  const totalGb = doc.total ? doc.total.total_gb : [...byService.values()].reduce((x, y) => x + y.gb, 0);
  const totalCount = doc.total ? doc.total.count : rows.length;
  const ages = [...byAge.keys()].sort((a, b) => (AGE_ORDER.indexOf(a) + 1 || 99) - (AGE_ORDER.indexOf(b) + 1 || 99));
  const head = h(
    'div',
    { class: 'row' },
    h('h2', {}, 'Snapshots'),
    csvButton('snapshots-csv', path, {}, rows, SNAPSHOT_COLUMNS, `snapshots-${new Date().toISOString().slice(0, 10)}.csv`),
  );
  if (!rows.length) return [head, gapsBanner(doc), empty('No snapshots in the estate.', 'EBS snapshots, RDS DB and cluster snapshots and EFS recovery points are listed here.')];
  return [
    head,
    doc.generated_at ? h('p', { class: 'muted' }, `Ages counted from ${time(doc.generated_at)}.`) : null,
    gapsBanner(doc),
    h('div', { class: 'tiles' },
      h('div', { class: 'tile', id: 'tile-snapshots' }, h('span', { class: 'tile-value' }, num(totalCount)), h('span', { class: 'tile-label' }, 'snapshots')),
      h('div', { class: 'tile' }, h('span', { class: 'tile-value' }, `${num(Math.round(totalGb))} GiB`), h('span', { class: 'tile-label' }, 'total size')),
      [...byService.entries()].map(([service, s]) => h('div', { class: 'tile' }, h('span', { class: 'tile-value' }, num(s.count)), h('span', { class: 'tile-label' }, `${service} · ${num(Math.round(s.gb))} GiB`)))),
    h('div', { class: 'grid-2' },
      h('div', { class: 'card' }, h('h3', {}, 'By age'), hBars({ items: ages.map((a) => ({ label: a, value: byAge.get(a).count, note: `${num(Math.round(byAge.get(a).gb))} GiB` })), id: 'age-bars', colorClass: 'c3' })),
      h('div', { class: 'card' }, h('h3', {}, 'Size by service (GiB)'), hBars({ items: [...byService.entries()].sort((a, b) => b[1].gb - a[1].gb).map(([service, s]) => ({ label: service, value: Math.round(s.gb), note: `${num(s.count)} snapshots` })), id: 'service-bars', colorClass: 'c4' }))),
    doc.groups && doc.groups.length ? h('details', { class: 'card' }, h('summary', {}, `Summary by source and age (${num(doc.groups.length)} groups)`), table(
      [
        { label: 'Service', cell: (g) => g.service },
        { label: 'Source', cell: (g) => [g.source, g.source_name && g.source_name !== g.source ? h('div', { class: 'muted small' }, g.source_name) : null] },
        { label: 'Account', className: 'mono', cell: (g) => g.account_id },
        { label: 'Region', cell: (g) => g.region },
        { label: 'Age', cell: (g) => g.age_bucket },
        { label: 'Count', className: 'num', cell: (g) => num(g.count) },
        { label: 'GiB', className: 'num', cell: (g) => num(g.total_gb) },
      ],
      doc.groups,
      { caption: 'Snapshot summary', className: 'data compact' },
    )) : null,
    table(
      [
        { label: 'Service', cell: (r) => r.service },
        { label: 'Snapshot', className: 'mono', cell: (r) => r.snapshot_id },
        { label: 'Type', cell: (r) => r.snapshot_type },
        { label: 'Source', cell: (r) => [r.source, r.source_name && r.source_name !== r.source ? h('div', { class: 'muted small' }, r.source_name) : null] },
        { label: 'Account', className: 'mono', cell: (r) => r.account_id },
        { label: 'Region', cell: (r) => r.region },
        { label: 'GiB', className: 'num', cell: (r) => (r.size_gb === null || r.size_gb === undefined ? '—' : num(r.size_gb)) },
        { label: 'Created', className: 'nowrap', cell: (r) => (r.created_at ? time(r.created_at, { seconds: false }) : '—') },
        { label: 'Age', cell: (r) => r.age_bucket },
        { label: 'Encrypted', cell: (r) => (r.encrypted === true ? 'yes' : r.encrypted === false ? badge('no', 'warn') : '—') },
        { label: 'Status', cell: (r) => r.status },
      ],
      rows.slice(0, SHOW_ROWS),
      { caption: 'Snapshots', className: 'data compact' },
    ),
    rows.length > SHOW_ROWS ? h('p', { class: 'muted' }, `The first ${SHOW_ROWS} of ${num(rows.length)} are shown; the CSV has them all.`) : null,
  ];
}

// -- S3 storage -------------------------------------------------------------------------------

async function s3Report(ctx) {
  const path = '/v1/reports/s3-metrics';
  // This month so far by default: a new estate has nothing in the last complete month.
  const thisMonth = new Date().toISOString().slice(0, 7);
  const month = ctx.params.get('month') || thisMonth;
  const monthInput = h('input', { type: 'month', id: 's3-month', value: month, max: thisMonth });
  const picker = h('form', { class: 'filters', onsubmit: (ev) => { ev.preventDefault(); ctx.setParams({ month: monthInput.value }); } },
    field('Month (default: this month so far)', monthInput),
    h('div', { class: 'field actions' }, h('button', { type: 'submit' }, 'Show')));
  const params = { month };
  const doc = await fetchReport(path, params, ctx);
  if (doc.unavailable) return [picker, unavailable('The S3 storage report', doc.unavailable)];
  const rows = rowsOf(doc);
  const sizeColumns = doc.size_columns || [...new Set(rows.flatMap((r) => Object.keys(r.sizes || {})))];
  const used = sizeColumns.filter((c) => rows.some((r) => (r.sizes || {})[c]));
  // Unknown (no datapoints for the bucket) stays unknown, never 0.
  const totalOf = (r) => {
    if (r.total_size !== undefined && r.total_size !== null) return r.total_size;
    const known = Object.values(r.sizes || {}).filter((v) => v !== null && v !== undefined);
    return known.length ? known.reduce((a, b) => a + b, 0) : null;
  };
  const head = h('div', { class: 'row' }, h('h2', {}, `S3 storage${doc.month ? ` in ${doc.month}` : ''}`),
    csvButton('s3-csv', path, params, rows, ['bucket_name', 'account_id', 'region', 'creation_date', 'total_objects', 'total_size', ...sizeColumns], `s3-metrics-${doc.month || month || 'latest'}.csv`));
  if (!rows.length) return [picker, head, gapsBanner(doc), empty('No buckets in this report.')];
  const sorted = [...rows].sort((a, b) => (totalOf(b) ?? -1) - (totalOf(a) ?? -1));
  const totalBytes = rows.reduce((a, r) => a + (totalOf(r) || 0), 0);
  const totalObjects = rows.reduce((a, r) => a + (r.total_objects || 0), 0);
  const byClass = used.map((c) => ({ label: c.replace(/^size_/, '').replaceAll('_', ' '), value: rows.reduce((a, r) => a + ((r.sizes || {})[c] || 0), 0) })).sort((a, b) => b.value - a.value);
  return [
    picker,
    head,
    doc.value_rule ? h('p', { class: 'muted' }, `Values: ${doc.value_rule}.`) : null,
    gapsBanner(doc),
    h('div', { class: 'tiles' },
      h('div', { class: 'tile', id: 'tile-buckets' }, h('span', { class: 'tile-value' }, num(rows.length)), h('span', { class: 'tile-label' }, 'buckets')),
      h('div', { class: 'tile' }, h('span', { class: 'tile-value' }, bytes(totalBytes)), h('span', { class: 'tile-label' }, 'stored')),
      h('div', { class: 'tile' }, h('span', { class: 'tile-value' }, num(totalObjects)), h('span', { class: 'tile-label' }, 'objects'))),
    h('div', { class: 'grid-2' },
      h('div', { class: 'card' }, h('h3', {}, 'Largest buckets'), hBars({ items: sorted.slice(0, 12).map((r) => ({ label: r.bucket_name, value: totalOf(r) || 0, note: totalOf(r) === null ? `${r.account_id} · no data` : r.account_id })), format: bytes, id: 'bucket-bars', colorClass: 'c0' })),
      h('div', { class: 'card' }, h('h3', {}, 'By storage class'), byClass.length ? hBars({ items: byClass, format: bytes, id: 'class-bars', colorClass: 'c5' }) : empty('No bytes stored.'))),
    table(
      [
        { label: 'Bucket', cell: (r) => r.bucket_name },
        { label: 'Account', className: 'mono', cell: (r) => r.account_id },
        { label: 'Region', cell: (r) => r.region },
        { label: 'Created', className: 'nowrap', cell: (r) => (r.creation_date ? time(r.creation_date, { seconds: false }) : '—') },
        { label: 'Objects', className: 'num', cell: (r) => num(r.total_objects) },
        { label: 'Total', className: 'num', cell: (r) => bytes(totalOf(r)) },
        ...used.map((c) => ({ label: c.replace(/^size_/, '').replaceAll('_', ' '), className: 'num', cell: (r) => bytes((r.sizes || {})[c]) })),
      ],
      sorted.slice(0, SHOW_ROWS),
      { caption: 'S3 buckets', className: 'data compact' },
    ),
  ];
}
