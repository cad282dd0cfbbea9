// The page's shell: sign-in, hash routing (#/inventory, #/resource/<key>, #/feed, #/activity,
// #/principal/<label>, #/alerts, #/reports), the navigation and the server's status.
//
// A `#token=...` fragment (what the demo prints, and what tests and screenshots open) signs
// in and is removed from the address bar at once; fragments never reach a server or its logs.

import { checkToken, clearToken, get, getToken, setToken } from './api.js';
import { announce, failure, field, h, replace } from './dom.js';
import { href, parseHash } from './nav.js';
import * as inventory from './pages/inventory.js';
import * as resource from './pages/resource.js';
import * as feed from './pages/feed.js';
import * as activity from './pages/activity.js';
import * as principal from './pages/principal.js';
import * as alerts from './pages/alerts.js';
import * as reports from './pages/reports.js';

const PAGES = { inventory, resource, feed, activity, principal, alerts, reports };
const NAV_OF = { resource: 'inventory', principal: 'activity' };

const main = document.getElementById('main');
let current = null; // {controller, cleanup}

function takeTokenFromFragment() {
  const match = /^#token=([^&]+)(?:&(.*))?$/.exec(location.hash);
  if (!match) return;
  setToken(decodeURIComponent(match[1]));
  const rest = match[2] || '#/inventory';
  history.replaceState(null, '', `${location.pathname}${location.search}${rest.startsWith('#') ? rest : `#${rest}`}`);
}

function markNav(page) {
  const active = NAV_OF[page] || page;
  document.querySelectorAll('[data-nav]').forEach((a) => {
    if (a.dataset.nav === active) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  });
}

function stopCurrent() {
  if (!current) return;
  current.controller.abort();
  if (typeof current.cleanup === 'function') {
    try { current.cleanup(); } catch (err) { console.error(err); }
  }
  current = null;
}

function signInForm(message) {
  const input = h('input', { type: 'password', name: 'token', autocomplete: 'current-password', required: true, spellcheck: 'false', class: 'wide' });
  const error = h('p', { class: 'form-error', role: 'alert' }, message || '');
  const form = h(
    'form',
    { class: 'signin card', id: 'signin' },
    h('h1', { tabindex: '-1' }, 'Sign in to cloudinv'),
    h('p', {}, 'Paste an API token: the same bearer token scripts use. ', h('code', {}, 'cloudinv demo'), ' prints one and writes it to ', h('code', {}, '<data dir>/demo.json'), '. It is kept for this browser tab only.'),
    field('API token', input),
    error,
    h('button', { type: 'submit', class: 'primary' }, 'Sign in'),
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const token = input.value.trim();
    if (!token) return;
    error.textContent = 'Checking…';
    try {
      await checkToken(token);
    } catch (err) {
      error.textContent = err.status === 401 ? 'That token was not accepted.' : `Could not check the token: ${err.detail || err.message}`;
      input.focus();
      return;
    }
    setToken(token);
    error.textContent = '';
    route();
  });
  return form;
}

function showSignIn(message) {
  stopCurrent();
  document.getElementById('session').hidden = true;
  markNav(null);
  document.title = 'Sign in · cloudinv';
  const form = signInForm(message);
  replace(main, form);
  form.querySelector('input').focus();
}

async function refreshStatus() {
  const el = document.getElementById('server-status');
  try {
    const status = await get('/v1/status');
    el.textContent = `${status.mode} · v${status.version}`;
    el.title = (status.components || []).map((c) => `${c.name}: ${c.status || 'running'}`).join('\n');
  } catch (err) {
    el.textContent = err.status ? '' : 'API unreachable';
  }
}

let renders = 0;

async function route() {
  main.setAttribute('aria-busy', 'true');
  try {
    await renderRoute();
  } finally {
    // Tests and screenshots wait for this: the page has drawn what it loaded.
    renders += 1;
    main.dataset.rendered = String(renders);
    main.removeAttribute('aria-busy');
  }
}

async function renderRoute() {
  const focusedId = document.activeElement && main.contains(document.activeElement) ? document.activeElement.id : null;
  takeTokenFromFragment();
  if (!getToken()) { showSignIn(); return; }
  const session = document.getElementById('session');
  if (session.hidden) {
    session.hidden = false;
    refreshStatus();
  }
  const { page, arg, params } = parseHash();
  const module = PAGES[page];
  stopCurrent();
  const controller = new AbortController();
  current = { controller, cleanup: null };
  markNav(page);
  if (!module) {
    replace(main, h('div', { class: 'state empty' }, h('h1', { tabindex: '-1' }, 'No such page'), h('p', {}, 'Try ', h('a', { href: '#/inventory' }, 'the inventory'), '.')));
    return;
  }
  const view = h('div', { class: `page page-${page}` });
  replace(main, view);
  const ctx = {
    arg,
    params,
    signal: controller.signal,
    href,
    // Change this page's parameters: a new history entry (or a replaced one). `quiet`: the
    // page already shows them (a default it chose), so the address is only made to say so.
    setParams(changes, { replace: replaceEntry = false, quiet = false } = {}) {
      const next = Object.fromEntries(params.entries());
      Object.assign(next, changes);
      const target = href(page, arg, next);
      if (quiet) {
        for (const [k, v] of Object.entries(changes)) {
          if (v === null || v === undefined || v === '' || v === false) params.delete(k); else params.set(k, String(v));
        }
        history.replaceState(null, '', target);
      } else if (replaceEntry) { history.replaceState(null, '', target); route(); } else location.hash = target;
    },
    title(text) { document.title = `${text} · cloudinv`; },
  };
  try {
    const cleanup = await module.render(view, ctx);
    if (current && current.controller === controller) current.cleanup = cleanup;
    else if (typeof cleanup === 'function') cleanup();
  } catch (err) {
    if (err && err.name === 'AbortError') return;
    console.error(err);
    replace(view, failure('this page', err, () => route()));
  }
  // A re-render for new parameters keeps focus on the control that changed them.
  const again = focusedId && document.getElementById(focusedId);
  if (again && view.contains(again) && document.activeElement !== again) again.focus({ preventScroll: true });
}

let lastRoute = null;
function onHashChange() {
  const { page, arg } = parseHash();
  const key = `${page}/${arg}`;
  route().then(() => {
    // A new page: move focus to its heading so screen readers announce it.
    if (key !== lastRoute) {
      const heading = main.querySelector('h1');
      if (heading) heading.focus({ preventScroll: true });
      announce(document.title.replace(/ · cloudinv$/, ''));
    }
    lastRoute = key;
  });
}

window.addEventListener('hashchange', onHashChange);
window.addEventListener('cloudinv:unauthorized', () => {
  clearToken();
  showSignIn('The API did not accept the token (it may have been revoked, or the server restarted with a new one). Sign in again.');
});
document.getElementById('sign-out').addEventListener('click', () => {
  clearToken();
  showSignIn('Signed out.');
});
document.getElementById('skip-link').addEventListener('click', (ev) => {
  ev.preventDefault();
  main.focus();
});

takeTokenFromFragment();
if (!location.hash || location.hash === '#' || location.hash === '#/') history.replaceState(null, '', '#/inventory');
lastRoute = `${parseHash().page}/${parseHash().arg}`;
route();
