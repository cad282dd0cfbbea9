// #/inventory?type=&account=&region=&q=&at= : what is in the estate, now or at any past time.
//
// Types with counts on the side, the resources of the chosen type (or all) in a table, filters
// by account, region and text, and a time slider (with a precise date-time field) that shows
// the estate as it was. Counts by type and account come from /v1/types and /v1/accounts, now
// or as of the time shown; counts in one region or for a text search come from listing the
// resources themselves (/v1/types counts over every region).

import { get, getAll, getCsv, pager } from '../api.js';
import { debounce, downloadBlob, empty, failure, field, h, loading, options, replace, table } from '../dom.js';
import { ceilMs, fromInput, iso, isoExact, num, time, toInput, typeLabel } from '../format.js';
import { resourceHref } from '../nav.js';

const PAGE_SIZE = 50;
const SLIDER_STEPS = 1000;
const COUNT_MAX = 5000;

export async function render(view, ctx) {
  const { params, signal } = ctx;
  const filters = {
    type: params.get('type') || '',
    account: params.get('account') || '',
    region: params.get('region') || '',
    q: params.get('q') || '',
    at: params.get('at') || '',
  };
  const at = filters.at ? new Date(filters.at) : null;
  ctx.title(at ? `Inventory at ${time(at)}` : 'Inventory');

  const summary = h('p', { class: 'lede', id: 'inventory-summary', 'aria-live': 'polite' }, loading('Counting'));
  const filterBar = h('form', { class: 'filters', id: 'inventory-filters', role: 'search', onsubmit: (ev) => ev.preventDefault() });
  const timeBar = h('div', { class: 'timebar card' });
  const typesPanel = h('nav', { class: 'types-panel', 'aria-label': 'Resource types' }, loading('Loading types'));
  const listPanel = h('section', { class: 'list-panel', 'aria-labelledby': 'list-heading' });
  replace(
    view,
    h('div', { class: 'page-head' }, h('h1', { tabindex: '-1' }, 'Inventory'), summary),
    filterBar,
    timeBar,
    at ? h('p', { class: 'banner', role: 'status', id: 'time-travel-banner' }, 'Showing the estate as it was at ', h('strong', {}, time(at)), '. ', h('a', { href: ctx.href('inventory', '', { ...filters, at: '' }) }, 'Back to now')) : null,
    h('div', { class: 'split' }, typesPanel, listPanel),
  );

  // -- filters ------------------------------------------------------------------------------
  const accountSelect = h('select', { id: 'filter-account', name: 'account' }, options([['', 'All accounts']], filters.account));
  const regionSelect = h('select', { id: 'filter-region', name: 'region' }, options([['', 'All regions']], filters.region));
  const search = h('input', { type: 'search', id: 'filter-q', name: 'q', value: filters.q, placeholder: 'id, name, ARN or tag', autocomplete: 'off' });
  accountSelect.addEventListener('change', () => ctx.setParams({ account: accountSelect.value }));
  regionSelect.addEventListener('change', () => ctx.setParams({ region: regionSelect.value }));
  const applySearch = debounce(() => { if (search.value.trim() !== filters.q) ctx.setParams({ q: search.value.trim() }, { replace: true }); }, 350);
  search.addEventListener('input', applySearch);
  search.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') { ev.preventDefault(); ctx.setParams({ q: search.value.trim() }); } });
  const csvButton = h('button', { type: 'button', id: 'inventory-csv' }, 'Download CSV');
  csvButton.addEventListener('click', async () => {
    csvButton.disabled = true;
    try {
      const blob = await getCsv('/v1/resources', { type: filters.type, account: filters.account, region: filters.region, q: filters.q, at: filters.at, limit: 1000 });
      downloadBlob(blob, `inventory${filters.type ? `-${filters.type.replaceAll('::', '-')}` : ''}${at ? `-${iso(at)}` : ''}.csv`);
    } catch (err) {
      csvButton.after(failure('the CSV', err));
    } finally {
      csvButton.disabled = false;
    }
  });
  replace(filterBar, field('Account', accountSelect), field('Region', regionSelect), field('Search', search), h('div', { class: 'field actions' }, csvButton));

  // The counts in the menu are the estate's at the time shown (the API counts as of `at`).
  const accountsLoad = get('/v1/accounts', { limit: 1000, at: filters.at }, { signal }).then((page) => {
    const accounts = page.items;
    const regions = [...new Set(accounts.flatMap((a) => a.regions))].sort();
    const accountPairs = accounts.map((a) => [a.account_id, `${a.account_id} (${num(a.resources)})`]);
    // A filter on an account or region with nothing at this time stays chosen (and says so).
    if (filters.account && !accounts.some((a) => a.account_id === filters.account)) accountPairs.push([filters.account, `${filters.account} (0)`]);
    if (filters.region && !regions.includes(filters.region)) regions.push(filters.region);
    replace(accountSelect, options([['', 'All accounts'], ...accountPairs], filters.account));
    replace(regionSelect, options([['', 'All regions'], ...regions.map((r) => [r, r])], filters.region));
    return accounts;
  }).catch((err) => { if (err.name !== 'AbortError') filterBar.appendChild(failure('accounts', err)); });

  // -- time ---------------------------------------------------------------------------------
  renderTimeBar(timeBar, ctx, filters, at);

  // -- types and counts ---------------------------------------------------------------------
  const exactFromTypes = !filters.region && !filters.q;
  const countsLoad = (async () => {
    const types = await get('/v1/types', { account: filters.account, at: filters.at, limit: 1000 }, { signal });
    if (exactFromTypes) {
      const counts = new Map(types.items.filter((t) => t.resources > 0).map((t) => [t.type, t.resources]));
      return { counts, truncated: false };
    }
    const listed = await getAll('/v1/resources', { account: filters.account, region: filters.region, q: filters.q, at: filters.at }, { max: COUNT_MAX, signal });
    const counts = new Map();
    for (const r of listed.items) counts.set(r.resource_type, (counts.get(r.resource_type) || 0) + 1);
    return { counts, truncated: listed.truncated };
  })();

  countsLoad.then(({ counts, truncated }) => {
    const total = [...counts.values()].reduce((a, b) => a + b, 0);
    const plus = truncated ? '+' : '';
    replace(
      summary,
      h('span', { id: 'resource-total', dataset: { count: String(total) } }, `${num(total)}${plus}`),
      ` resources of ${num(counts.size)} types`,
      filters.account ? ` in account ${filters.account}` : '',
      filters.region ? ` in ${filters.region}` : '',
      filters.q ? ` matching “${filters.q}”` : '',
      at ? ` at ${time(at)}` : ' now',
      '.',
    );
    const sorted = [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    if (filters.type && !counts.has(filters.type)) sorted.push([filters.type, 0]);
    const item = (type, count, label) => {
      const active = (filters.type || '') === type;
      return h('li', {}, h('a', {
        href: ctx.href('inventory', '', { ...filters, type }),
        'aria-current': active ? 'true' : null,
        class: active ? 'active' : null,
        dataset: { type: type || 'all', count: String(count) },
      }, h('span', { class: 'type-name', title: type || 'All types' }, label), h('span', { class: 'count' }, `${num(count)}${plus}`)));
    };
    replace(
      typesPanel,
      h('h2', { class: 'panel-title' }, 'Types'),
      sorted.length
        ? h('ul', { class: 'type-list', id: 'type-list' }, item('', total, 'All types'), sorted.map(([t, n]) => item(t, n, typeLabel(t))))
        : empty(at ? 'Nothing existed at that time.' : 'No resources match.', at ? 'Move the slider later.' : 'Clear a filter, or wait for the first scan to finish.'),
    );
  }).catch((err) => { if (err.name !== 'AbortError') replace(typesPanel, failure('resource types', err, () => ctx.setParams({}, { replace: true }))); });

  // -- the list -----------------------------------------------------------------------------
  const heading = h('h2', { id: 'list-heading' }, filters.type ? typeLabel(filters.type) : 'All resources');
  const listBody = h('div', { id: 'resource-list' }, loading('Loading resources'));
  replace(listPanel, heading, listBody);
  await loadList(listBody, ctx, filters, at, signal);
  await Promise.allSettled([accountsLoad, countsLoad]);
  return null;
}

function renderTimeBar(timeBar, ctx, filters, at) {
  const now = Date.now();
  const slider = h('input', { type: 'range', id: 'time-slider', min: '0', max: String(SLIDER_STEPS), step: '1', value: String(SLIDER_STEPS), disabled: true });
  const readout = h('output', { for: 'time-slider', id: 'time-readout', class: 'readout' }, at ? time(at) : 'now');
  const input = h('input', { type: 'datetime-local', id: 'time-input', step: '1', value: at ? toInput(at) : '' });
  const apply = h('button', { type: 'submit', id: 'time-apply' }, 'Show');
  const nowButton = h('button', { type: 'button', id: 'time-now', disabled: !at, onclick: () => ctx.setParams({ at: '' }) }, 'Now');
  const form = h(
    'form',
    { class: 'time-form', onsubmit: (ev) => { ev.preventDefault(); const d = fromInput(input.value); if (d) ctx.setParams({ at: iso(d) }); } },
    h('div', { class: 'slider-field' }, h('label', { for: 'time-slider' }, 'As of'), slider, readout),
    h('div', { class: 'field inline' }, h('label', { for: 'time-input' }, 'Date and time (UTC)'), input, apply, nowButton),
  );
  replace(timeBar, form);

  // The slider spans from the first change ever recorded (the first version the store opened:
  // changes are listed by capture time, and a change that opens nothing is not recorded) to now.
  let earliest = null;
  const position = (t) => Math.round(((t - earliest) / Math.max(1, now - earliest)) * SLIDER_STEPS);
  const timeAt = (v) => (v >= SLIDER_STEPS ? null : new Date(earliest + (Number(v) / SLIDER_STEPS) * (now - earliest)));
  const go = debounce(() => {
    const t = timeAt(slider.value);
    // The start to the millisecond: a first resource that lived less than a second still shows.
    ctx.setParams({ at: t ? (Number(slider.value) === 0 ? isoExact(t) : iso(t)) : '' });
  }, 250);
  slider.addEventListener('input', () => {
    const t = timeAt(slider.value);
    readout.textContent = t ? time(t) : 'now';
    slider.setAttribute('aria-valuetext', t ? time(t) : 'now');
  });
  slider.addEventListener('change', go);
  get('/v1/changes', { limit: 1 }, { signal: ctx.signal }).then((page) => {
    if (!page.items.length) {
      readout.textContent = 'no history yet';
      return;
    }
    // Rounded up to the ms: the slider's start must show the first resources, not the instant
    // before them. Not to the second: the first resource may be gone within that second (one
    // recorded from its creation event, deleted by the re-describe that followed).
    earliest = ceilMs(page.items[0].captured_at);
    slider.disabled = false;
    slider.value = String(at ? Math.max(0, Math.min(SLIDER_STEPS, position(at.getTime()))) : SLIDER_STEPS);
    slider.setAttribute('aria-valuetext', at ? time(at) : 'now');
    slider.title = `From ${time(earliest)} to now`;
    input.min = toInput(earliest);
    input.max = toInput(now);
    if (!input.value) input.value = toInput(now);
  }).catch(() => { readout.textContent = 'history unavailable'; });
}

async function loadList(listBody, ctx, filters, at, signal) {
  const query = { type: filters.type, account: filters.account, region: filters.region, q: filters.q, at: filters.at };
  const source = pager('/v1/resources', query, { signal });
  const rows = [];
  const columns = [
    {
      label: 'Name',
      className: 'name',
      cell: (r) => [
        h('a', { href: resourceHref(r.key, at ? { at: filters.at } : {}), class: 'resource-link', dataset: { key: r.key } }, r.name || r.resource_id),
        r.name && r.name !== r.resource_id ? h('div', { class: 'muted small mono' }, r.resource_id) : null,
      ],
    },
    { label: 'Type', cell: (r) => typeLabel(r.resource_type) },
    { label: 'Account', className: 'mono', cell: (r) => r.account_id },
    { label: 'Region', cell: (r) => r.region },
    { label: 'Version since', className: 'nowrap', cell: (r) => h('time', { datetime: r.valid_from, title: time(r.valid_from) }, time(r.valid_from, { seconds: false, zone: false })) },
  ];
  const draw = () => {
    if (!rows.length) {
      replace(listBody, empty(at ? 'No resource of this kind existed at that time.' : 'No resources match these filters.', filters.q ? 'Search looks in ids, names, ARNs and tags.' : null));
      return;
    }
    const more = !source.done
      ? h('button', { type: 'button', id: 'load-more', class: 'more', onclick: async (ev) => { ev.target.disabled = true; await fetchPage(); draw(); document.getElementById('load-more')?.focus(); } }, `Show more (${num(rows.length)} shown)`)
      : h('p', { class: 'muted' }, `${num(rows.length)} shown.`);
    replace(listBody, table(columns, rows, { caption: 'Resources', rowAttrs: (r) => ({ dataset: { key: r.key } }) }), more);
  };
  const fetchPage = async () => {
    rows.push(...await source.next(PAGE_SIZE));
  };
  try {
    await fetchPage();
    draw();
  } catch (err) {
    if (err.name === 'AbortError') return;
    replace(listBody, failure('resources', err, () => loadList(listBody, ctx, filters, at, signal)));
  }
}
