// Talking to the cloudinv API: the same /v1 endpoints and bearer token scripts use.
//
// The token is asked for once and kept in sessionStorage (gone when the tab closes). Every
// request sends it as `Authorization: Bearer`; a 401 signs the page out. Server-Sent Events
// are read with fetch() and a stream reader, because EventSource cannot send that header;
// the reader reconnects by itself and resumes with Last-Event-ID.

const TOKEN_KEY = 'cloudinv.token';

export function getToken() {
  try { return sessionStorage.getItem(TOKEN_KEY); } catch { return null; }
}

export function setToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function clearToken() {
  try { sessionStorage.removeItem(TOKEN_KEY); } catch { /* storage disabled */ }
}

export class ApiError extends Error {
  constructor(status, problem, path) {
    const detail = (problem && (problem.detail || problem.title)) || `HTTP ${status}`;
    super(detail);
    this.name = 'ApiError';
    this.status = status;
    this.problem = problem || {};
    this.detail = detail;
    this.path = path;
  }

  /** This server does not offer the endpoint (not built or not configured here). */
  get unavailable() {
    if (this.status === 501 || this.status === 503) return true;
    // A 404 for a route that does not exist says "no endpoint"; one for an unknown
    // resource names what was not found.
    return this.status === 404 && /^no endpoint/i.test(this.detail || '');
  }

  get notFound() {
    return this.status === 404 && !this.unavailable;
  }
}

function unauthorized() {
  window.dispatchEvent(new CustomEvent('cloudinv:unauthorized'));
}

/** '?a=1&b=x' from an object; null, undefined and '' are left out, arrays repeat. */
export function qs(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (value === null || value === undefined || value === '') continue;
    if (Array.isArray(value)) value.forEach((v) => search.append(key, v));
    else search.append(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}

/** A path segment: resource keys (ARNs) and principal labels hold '/' and ':'. */
export function seg(value) {
  return encodeURIComponent(value);
}

async function problemOf(res) {
  try {
    const body = await res.json();
    return body && typeof body === 'object' ? body : { detail: String(body) };
  } catch {
    return { detail: res.statusText };
  }
}

async function request(path, params, { signal, accept = 'application/json', token = getToken() } = {}) {
  const url = path + qs(params);
  const headers = { Accept: accept };
  if (token) headers.Authorization = `Bearer ${token}`;
  let res;
  try {
    res = await fetch(url, { headers, signal, cache: 'no-store' });
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError(0, { detail: 'the API did not answer (is cloudinv running?)' }, url);
  }
  if (res.status === 401) {
    if (token === getToken()) unauthorized();
    throw new ApiError(401, await problemOf(res), url);
  }
  if (!res.ok) throw new ApiError(res.status, await problemOf(res), url);
  return res;
}

/** GET a JSON document. */
export async function get(path, params, opts = {}) {
  const res = await request(path, params, opts);
  return res.json();
}

/** Every item of a paged list, following next_cursor, up to `max` items. */
export async function getAll(path, params, { max = 5000, limit = 1000, signal } = {}) {
  const items = [];
  let cursor = null;
  let truncated = false;
  for (;;) {
    const page = await get(path, { ...params, limit: Math.min(limit, max - items.length) || 1, cursor }, { signal });
    items.push(...page.items);
    cursor = page.next_cursor;
    if (!cursor) break;
    if (items.length >= max) { truncated = true; break; }
  }
  return { items, truncated };
}

/**
 * A paged list read as the page asks for more: `next(n)` resolves to up to `n` more items,
 * following next_cursor (pages of at most `pageLimit`, the API's most); `done` once the list
 * has no more.
 */
export function pager(path, params, { signal, pageLimit = 1000 } = {}) {
  let cursor = null;
  const p = {
    done: false,
    async next(n) {
      const items = [];
      while (items.length < n && !p.done) {
        const page = await get(path, { ...params, limit: Math.min(pageLimit, n - items.length), cursor }, { signal });
        items.push(...page.items);
        cursor = page.next_cursor;
        if (!cursor) p.done = true;
      }
      return items;
    },
  };
  return p;
}

/** Pagers read one after the other, as one list (same interface as `pager`). */
export function pagerChain(pagers) {
  let i = 0;
  const p = {
    done: pagers.length === 0,
    async next(n) {
      const items = [];
      while (items.length < n && i < pagers.length) {
        items.push(...await pagers[i].next(n - items.length));
        if (pagers[i].done) i += 1;
      }
      p.done = i >= pagers.length;
      return items;
    },
  };
  return p;
}

/** GET a list endpoint as CSV (format=csv) and hand it to the browser as a download. */
export async function getCsv(path, params, opts = {}) {
  const res = await request(path, { ...params, format: 'csv' }, { ...opts, accept: 'text/csv' });
  return res.blob();
}

/** Check a token before keeping it: /v1/status needs one. */
export async function checkToken(token) {
  return get('/v1/status', null, { token });
}

// -- Server-Sent Events over fetch --------------------------------------------------------

/**
 * Follow an SSE endpoint. Calls onEvent({type, data, id}) for each event and onStatus(state,
 * detail) with 'connecting', 'live', 'reconnecting', 'unavailable', 'unauthorized' or
 * 'closed'. Reconnects after the server's retry delay with Last-Event-ID, so nothing is
 * missed or repeated. Returns {close()}.
 */
export function stream(path, params, { onEvent, onStatus = () => {}, lastEventId = null } = {}) {
  let closed = false;
  let controller = null;
  let last = lastEventId;
  let retryMs = 2000;
  let wake = null;

  function dispatch(block) {
    let type = 'message';
    const data = [];
    let sawData = false;
    for (const line of block.split('\n')) {
      if (!line || line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const name = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (name === 'event') type = value;
      else if (name === 'data') { data.push(value); sawData = true; }
      else if (name === 'id' && !value.includes('\0')) last = value;
      else if (name === 'retry' && /^\d+$/.test(value)) retryMs = Number(value);
    }
    if (!sawData) return null;
    return { type, data: data.join('\n'), id: last };
  }

  async function connectOnce() {
    controller = new AbortController();
    const headers = { Accept: 'text/event-stream', Authorization: `Bearer ${getToken()}` };
    if (last !== null && last !== undefined) headers['Last-Event-ID'] = String(last);
    const res = await fetch(path + qs(params), { headers, signal: controller.signal, cache: 'no-store' });
    if (res.status === 401) {
      unauthorized();
      return 'unauthorized';
    }
    if (!res.ok) {
      const err = new ApiError(res.status, await problemOf(res), path);
      if (err.unavailable || res.status === 404) {
        onStatus('unavailable', err);
        return 'unavailable';
      }
      throw err;
    }
    onStatus('live');
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return 'ended';
      buffer = (buffer + value).replace(/\r\n|\r(?=.)/g, '\n');
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const event = dispatch(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (!event) continue;
        if (event.type === 'resume') {
          // The server dropped this client for falling behind: reconnect and catch up.
          controller.abort();
          return 'resume';
        }
        onEvent(event);
      }
    }
  }

  (async () => {
    while (!closed) {
      onStatus('connecting');
      let outcome;
      try {
        outcome = await connectOnce();
      } catch (err) {
        if (closed) break;
        outcome = 'error';
        onStatus('reconnecting', err);
      }
      if (closed || outcome === 'unauthorized' || outcome === 'unavailable') break;
      if (outcome !== 'resume') {
        onStatus('reconnecting');
        await new Promise((resolve) => { wake = resolve; setTimeout(resolve, retryMs); });
      }
    }
    onStatus('closed');
  })();

  return {
    close() {
      closed = true;
      if (controller) controller.abort();
      if (wake) wake();
    },
    get lastEventId() { return last; },
  };
}
