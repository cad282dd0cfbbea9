// #/feed?type=&account=&region=&change_type=&principal= : changes as they happen.
//
// The recent past comes from /v1/changes, then new changes stream in from
// /v1/changes/stream (Server-Sent Events, filtered by the server with the same parameters).
// The stream is opened before the recent past is read and rows are keyed by change id, so a
// change committed in between is shown once, never lost. Each row links to its diff and, when
// CloudTrail attributed it, to the principal who made it.

import { get, getAll, stream } from '../api.js';
import { announce, badge, empty, failure, field, h, loading, options, pathList, replace, unavailable } from '../dom.js';
import { ago, iso, num, principalShort, shortTime, time, typeLabel } from '../format.js';
import { principalHref, resourceHref } from '../nav.js';

const MAX_ROWS = 300;
const BACKLOG_ROWS = 50;
const BACKLOG_WINDOW_MS = 60 * 60 * 1000;
const CHANGE_TYPES = ['created', 'modified', 'deleted'];

export async function render(view, ctx) {
  const { params, signal } = ctx;
  ctx.title('Live change feed');
  const filters = {
    type: params.get('type') || '',
    account: params.get('account') || '',
    region: params.get('region') || '',
    change_type: params.get('change_type') || '',
    principal: params.get('principal') || '',
  };
  const chosenTypes = filters.change_type ? filters.change_type.split(',') : CHANGE_TYPES;

  const pill = h('span', { class: 'pill connecting', id: 'feed-status', role: 'status' }, 'Connecting…');
  const pause = h('button', { type: 'button', id: 'feed-pause', 'aria-pressed': 'false' }, 'Pause');
  const pending = h('button', { type: 'button', id: 'feed-pending', class: 'pending', hidden: true });
  const list = h('ol', { class: 'feed', id: 'feed-list', 'aria-label': 'Changes, newest first' });
  const listWrap = h('div', { class: 'feed-wrap' }, loading('Loading recent changes'));
  const counter = h('p', { class: 'muted', id: 'feed-count' });

  const typeSelect = h('select', { id: 'feed-type' }, options([['', 'All types']], filters.type));
  const accountSelect = h('select', { id: 'feed-account' }, options([['', 'All accounts']], filters.account));
  const principalInput = h('input', { type: 'text', id: 'feed-principal', value: filters.principal, placeholder: 'ARN or name', autocomplete: 'off', spellcheck: 'false' });
  typeSelect.addEventListener('change', () => ctx.setParams({ type: typeSelect.value }));
  accountSelect.addEventListener('change', () => ctx.setParams({ account: accountSelect.value }));
  const checks = CHANGE_TYPES.map((t) => {
    const box = h('input', { type: 'checkbox', id: `feed-ct-${t}`, value: t, checked: chosenTypes.includes(t) });
    box.addEventListener('change', () => {
      const chosen = CHANGE_TYPES.filter((x) => document.getElementById(`feed-ct-${x}`).checked);
      ctx.setParams({ change_type: chosen.length === CHANGE_TYPES.length || !chosen.length ? '' : chosen.join(',') });
    });
    return h('span', { class: 'check' }, box, h('label', { for: `feed-ct-${t}` }, t));
  });
  const filterForm = h(
    'form',
    { class: 'filters', id: 'feed-filters', onsubmit: (ev) => { ev.preventDefault(); ctx.setParams({ principal: principalInput.value.trim() }); } },
    field('Type', typeSelect),
    field('Account', accountSelect),
    h('fieldset', { class: 'field checks' }, h('legend', {}, 'Change'), checks),
    field('Changed by', principalInput),
    h('div', { class: 'field actions' }, h('button', { type: 'submit' }, 'Apply')),
  );

  replace(
    view,
    h('div', { class: 'page-head row' }, h('h1', { tabindex: '-1' }, 'Live change feed'), h('div', { class: 'head-actions' }, pill, pause)),
    filterForm,
    counter,
    pending,
    listWrap,
  );

  Promise.all([get('/v1/types', { limit: 1000 }, { signal }), get('/v1/accounts', { limit: 1000 }, { signal })]).then(([types, accounts]) => {
    const present = types.items.filter((t) => t.resources > 0 || t.type === filters.type).map((t) => [t.type, typeLabel(t.type)]);
    replace(typeSelect, options([['', 'All types'], ...present], filters.type));
    replace(accountSelect, options([['', 'All accounts'], ...accounts.items.map((a) => [a.account_id, a.account_id])], filters.account));
  }).catch(() => { /* the filters still work by URL */ });

  // -- rows ---------------------------------------------------------------------------------
  const seen = new Set();
  let paused = false;
  let live = 0;
  const queued = [];
  const showCount = () => {
    counter.textContent = `${num(list.children.length)} changes shown${live ? `, ${num(live)} arrived while you watched` : ''}.`;
  };
  const addRow = (change, { fresh }) => {
    if (seen.has(change.change_id)) return false;
    seen.add(change.change_id);
    const row = changeRow(change, fresh);
    if (fresh) list.insertBefore(row, list.firstChild);
    else list.appendChild(row);
    while (list.children.length > MAX_ROWS) list.removeChild(list.lastChild);
    return true;
  };
  const flush = () => {
    const batch = queued.splice(0);
    let added = 0;
    for (const change of batch) if (addRow(change, { fresh: true })) added += 1;
    pending.hidden = true;
    if (added) {
      live += added;
      if (listWrap.firstChild !== list) replace(listWrap, list);
      announce(`${added} new ${added === 1 ? 'change' : 'changes'}`);
      showCount();
    }
  };
  pending.addEventListener('click', () => { flush(); });
  pause.addEventListener('click', () => {
    paused = !paused;
    pause.textContent = paused ? 'Resume' : 'Pause';
    pause.setAttribute('aria-pressed', String(paused));
    if (!paused) flush();
  });

  // -- the stream first, then the recent past -----------------------------------------------
  let streamState = 'connecting';
  const query = { type: filters.type, account: filters.account, region: filters.region, change_type: filters.change_type, principal: filters.principal };
  const feed = stream('/v1/changes/stream', query, {
    onEvent: (event) => {
      if (event.type !== 'change') return;
      let change;
      try { change = JSON.parse(event.data); } catch { return; }
      queued.push(change);
      if (paused) {
        pending.hidden = false;
        pending.textContent = `${num(queued.length)} new — show`;
      } else {
        flush();
      }
    },
    onStatus: (st, err) => {
      if (st === 'closed' && (streamState === 'unavailable' || streamState === 'unauthorized')) return;
      streamState = st;
      const text = { connecting: 'Connecting…', live: '● Live', reconnecting: 'Reconnecting…', unavailable: 'Not available', unauthorized: 'Signed out', closed: 'Stopped' }[st] || st;
      pill.textContent = text;
      pill.className = `pill ${st}`;
      if (st === 'unavailable') listWrap.before(unavailable('The live feed', err));
      if (st === 'reconnecting' && err) pill.title = err.detail || err.message || '';
    },
  });

  try {
    const since = new Date(Date.now() - BACKLOG_WINDOW_MS);
    const { items } = await getAll('/v1/changes', { ...query, since: iso(since) }, { max: 5000, signal });
    const recent = items.slice(-BACKLOG_ROWS).reverse();
    for (const change of recent) addRow(change, { fresh: false });
    if (list.children.length) replace(listWrap, list);
    else replace(listWrap, h('div', { id: 'feed-empty' }, empty('No change in the last hour matches.', 'New changes appear here as they happen.')), list);
    showCount();
  } catch (err) {
    if (err.name !== 'AbortError') replace(listWrap, failure('recent changes', err), list);
  }

  const tick = setInterval(() => list.querySelectorAll('[data-ago]').forEach((el) => { el.textContent = ago(el.dataset.ago); }), 10000);
  return () => { feed.close(); clearInterval(tick); };
}

function changeRow(c, fresh) {
  const who = c.attribution;
  const label = who && (who.principal_arn || who.principal_name);
  // A creation or deletion "changes" every top-level key: only modifications list paths.
  const paths = c.change_type === 'modified' ? c.changed_paths || [] : [];
  return h(
    'li',
    { class: ['feed-item', c.change_type, fresh ? 'fresh' : null], dataset: { changeId: c.change_id, key: c.key, live: fresh ? '1' : '0' } },
    h('div', { class: 'when' }, h('time', { datetime: c.captured_at, title: time(c.captured_at) }, shortTime(c.captured_at)), h('span', { class: 'muted small', dataset: { ago: c.captured_at } }, ago(c.captured_at))),
    h(
      'div',
      { class: 'what' },
      h('div', {}, badge(c.change_type), ' ', h('a', { href: resourceHref(c.key), class: 'resource-link' }, c.name || c.resource_id), ' ', h('span', { class: 'muted' }, `${typeLabel(c.resource_type)} · ${c.account_id} · ${c.region}`)),
      pathList(paths, { max: 4, tag: 'div' }),
      h(
        'div',
        { class: 'links' },
        h('a', { href: resourceHref(c.key, { tab: 'diff', change: c.change_id }), class: 'diff-link' }, c.change_type === 'modified' ? 'Diff' : c.change_type === 'created' ? 'Configuration' : 'Last configuration'),
        label
          ? h('span', { class: 'who' }, 'by ', h('a', { href: principalHref(label), class: 'principal-link' }, principalShort(label)), ` via ${who.event_name}`)
          : c.change_type !== 'created'
            ? h('a', { href: resourceHref(c.key, { tab: 'diff', change: c.change_id }), class: 'who-link', title: 'No attribution recorded: match CloudTrail events' }, 'Who did it?')
            : null,
      ),
    ),
  );
}
