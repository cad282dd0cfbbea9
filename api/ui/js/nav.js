// Hash routes: '#/<page>[/<argument>][?<parameters>]', e.g. '#/resource/<key>?tab=diff'.

/** The route of a hash: {page, arg, params}. */
export function parseHash(hash = location.hash) {
  const text = hash.replace(/^#\/?/, '');
  const [path, query = ''] = text.split(/\?(.*)/s);
  const slash = path.indexOf('/');
  const page = (slash < 0 ? path : path.slice(0, slash)) || 'inventory';
  const rawArg = slash < 0 ? '' : path.slice(slash + 1);
  let arg = rawArg;
  try { arg = decodeURIComponent(rawArg); } catch { /* keep it raw */ }
  return { page, arg, params: new URLSearchParams(query) };
}

/** The hash for a page, an argument and parameters (empty ones left out). */
export function href(page, arg, params) {
  const search = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== null && v !== undefined && v !== '' && v !== false) search.set(k, String(v));
  }
  const q = search.toString();
  return `#/${page}${arg ? `/${encodeURIComponent(arg)}` : ''}${q ? `?${q}` : ''}`;
}

export const resourceHref = (key, params) => href('resource', key, params);
export const principalHref = (label, params) => href('principal', label, params);
