// Building the page: a small element builder and the shared empty, loading and error states.
// Text always goes in as text nodes, never as markup, so data from the API cannot inject HTML.

const SVG_NS = 'http://www.w3.org/2000/svg';

function apply(el, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'class') el.setAttribute('class', Array.isArray(value) ? value.filter(Boolean).join(' ') : value);
    else if (name === 'text') el.textContent = String(value);
    else if (name === 'dataset') Object.assign(el.dataset, value);
    else if (name.startsWith('on') && typeof value === 'function') el.addEventListener(name.slice(2), value);
    else if (name === 'value' && 'value' in el) el.value = value;
    else if (name === 'checked' || name === 'selected' || name === 'open') el[name] = Boolean(value);
    else el.setAttribute(name, value === true ? '' : String(value));
  }
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** An HTML element: h('a', {href: '#/x', class: 'y'}, 'text', otherNode). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  apply(el, attrs);
  append(el, children);
  return el;
}

/** An SVG element, same calling convention as h(). */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'class') el.setAttribute('class', value);
    else if (name === 'text') el.textContent = String(value);
    else if (name.startsWith('on') && typeof value === 'function') el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function replace(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}

// -- states -------------------------------------------------------------------------------

export function loading(what = 'Loading') {
  return h('p', { class: 'state loading', role: 'status' }, h('span', { class: 'spinner', 'aria-hidden': 'true' }), `${what}…`);
}

export function empty(message, hint) {
  return h('div', { class: 'state empty' }, h('p', {}, message), hint ? h('p', { class: 'hint' }, hint) : null);
}

/** The "this server does not offer it" state: an endpoint answered 404 (or 501/503). */
export function unavailable(what, err) {
  const path = err && err.path ? err.path.split('?')[0] : null;
  return h(
    'div',
    { class: 'state unavailable', role: 'status' },
    h('p', {}, h('strong', {}, 'Not available on this server: '), `${what.charAt(0).toLowerCase()}${what.slice(1)}.`),
    h(
      'p',
      { class: 'hint' },
      path ? ['The API answered ', h('code', {}, `${err.status}`), ' for ', h('code', {}, `GET ${path}`), '. '] : null,
      err && err.detail ? err.detail : 'This part of cloudinv is not running here yet.',
    ),
  );
}

/** An error state with the API's problem detail and a retry button. */
export function failure(what, err, retry) {
  if (err && err.unavailable) return unavailable(what, err);
  const detail = err && err.detail ? err.detail : String((err && err.message) || err);
  return h(
    'div',
    { class: 'state error', role: 'alert' },
    h('p', {}, h('strong', {}, `Could not load ${what.toLowerCase()}.`), ' ', detail),
    err && err.status ? h('p', { class: 'hint' }, `HTTP ${err.status} from `, h('code', {}, `GET ${err.path}`)) : null,
    retry ? h('button', { type: 'button', onclick: retry }, 'Try again') : null,
  );
}

/** A section whose body loads on its own: shows loading, then what `fill` returns, or the error. */
export async function section(container, what, fill) {
  replace(container, loading(what));
  try {
    const content = await fill();
    if (content !== undefined) replace(container, content);
  } catch (err) {
    if (err && err.name === 'AbortError') return;
    replace(container, failure(what, err, () => section(container, what, fill)));
  }
}

// -- small pieces -------------------------------------------------------------------------

export function badge(text, kind) {
  return h('span', { class: `badge badge-${kind || String(text).toLowerCase()}` }, text);
}

export function announce(message) {
  const el = document.getElementById('announcer');
  if (!el) return;
  el.textContent = '';
  // A fresh text node in a second tick is what screen readers reliably announce.
  setTimeout(() => { el.textContent = message; }, 30);
}

export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

/** Select options from [value, label] pairs, with `selected` chosen. */
export function options(pairs, selected) {
  return pairs.map(([value, label]) => h('option', { value, selected: String(value) === String(selected ?? '') }, label));
}

/** A labelled form control: the label and the control are tied by id. */
export function field(label, control, hint) {
  const id = control.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  control.id = id;
  return h('div', { class: 'field' }, h('label', { for: id }, label), control, hint ? h('span', { class: 'hint' }, hint) : null);
}

export function table(columns, rows, { caption, className, rowAttrs } = {}) {
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { class: className || 'data' },
      caption ? h('caption', { class: 'visually-hidden' }, caption) : null,
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col', class: (c.className || '').includes('num') ? 'num' : null }, c.label)))),
      h(
        'tbody',
        {},
        // One element per cell, so that narrow screens can lay a cell out as label + value.
        rows.map((row) => h('tr', rowAttrs ? rowAttrs(row) : {}, columns.map((c) => h('td', { class: c.className, 'data-label': c.label }, h('div', { class: 'cell' }, c.cell(row)))))),
      ),
    ),
  );
}

/**
 * Changed paths (JSON Pointers) as code: each may break before a '/' (and anywhere, if one
 * segment is longer than the space), so a long path wraps instead of being clipped, and its
 * title is the whole path. Past `max`, the others are behind a "N more" disclosure.
 */
export function pathList(paths, { max = 4, tag = 'span' } = {}) {
  if (!paths || !paths.length) return null;
  const one = (path) => h('code', { class: 'path', title: path }, path.split(/(?=\/)/).flatMap((part, i) => (i ? [h('wbr'), part] : [part])));
  const rest = paths.slice(max);
  return h(
    tag,
    { class: 'paths' },
    paths.slice(0, max).map(one),
    rest.length ? h('details', { class: 'more-paths' }, h('summary', {}, `${rest.length} more`), rest.map(one)) : null,
  );
}

/** Keyboard-accessible tabs (WAI-ARIA tabs pattern, manual activation by click or arrows). */
export function tabs(items, active, onSelect) {
  const list = h('div', { role: 'tablist', class: 'tabs', 'aria-label': 'Sections' });
  const buttons = items.map(([id, label]) =>
    h('button', {
      type: 'button', role: 'tab', id: `tab-${id}`, 'aria-controls': `panel-${id}`,
      'aria-selected': String(id === active), tabindex: id === active ? '0' : '-1',
      dataset: { tab: id }, onclick: () => onSelect(id),
    }, label));
  list.addEventListener('keydown', (ev) => {
    const i = buttons.indexOf(document.activeElement);
    if (i < 0) return;
    let next = null;
    if (ev.key === 'ArrowRight') next = (i + 1) % buttons.length;
    else if (ev.key === 'ArrowLeft') next = (i - 1 + buttons.length) % buttons.length;
    else if (ev.key === 'Home') next = 0;
    else if (ev.key === 'End') next = buttons.length - 1;
    if (next === null) return;
    ev.preventDefault();
    buttons[next].focus();
    onSelect(items[next][0], { focusTab: true });
  });
  append(list, buttons);
  return list;
}

export function downloadBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = h('a', { href: url, download: filename, class: 'visually-hidden' });
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 5000);
}
