// How values read on the page. Times are shown in UTC, as the API speaks them.

const NUM = new Intl.NumberFormat('en-US');

export function num(n) {
  return n === null || n === undefined ? '—' : NUM.format(n);
}

export function bytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = Number(n);
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${v >= 100 || i === 0 ? Math.round(v) : v.toFixed(1)} ${units[i]}`;
}

function pad(n) {
  return String(n).padStart(2, '0');
}

/** 2026-11-02 14:03:07 UTC */
export function time(value, { seconds = true, zone = true } = {}) {
  if (!value) return '—';
  const d = value instanceof Date ? value : new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  const t = `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}${seconds ? `:${pad(d.getUTCSeconds())}` : ''}`;
  return zone ? `${t} UTC` : t;
}

export function shortTime(value) {
  const d = new Date(value);
  return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
}

export function ago(value, now = Date.now()) {
  const secs = Math.round((now - new Date(value).getTime()) / 1000);
  if (Number.isNaN(secs)) return '';
  if (secs < 5) return 'just now';
  if (secs < 60) return `${secs} s ago`;
  if (secs < 3600) return `${Math.floor(secs / 60)} min ago`;
  if (secs < 86400) return `${Math.floor(secs / 3600)} h ago`;
  return `${Math.floor(secs / 86400)} d ago`;
}

/** ISO 8601 with Z, to the second: what the API's time parameters take. */
export function iso(d) {
  return new Date(d).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** ISO 8601 with Z, to the millisecond when the time has one (the API takes up to µs). */
export function isoExact(d) {
  return new Date(d).toISOString().replace(/\.000Z$/, 'Z');
}

/**
 * An API time (ISO 8601, up to µs) in ms since the epoch, rounded up: `Date` reads only ms and
 * drops the rest, which would name an instant just before the one the API gave.
 */
export function ceilMs(text) {
  const ms = new Date(text).getTime();
  const fraction = /\.(\d+)/.exec(text);
  return fraction && /[1-9]/.test(fraction[1].slice(3)) ? ms + 1 : ms;
}

/** The value of a datetime-local input for a time, read as UTC. */
export function toInput(d) {
  return iso(d).slice(0, 19);
}

/** A datetime-local input's value (entered in UTC) as a Date, or null. */
export function fromInput(value) {
  if (!value) return null;
  const d = new Date(`${value.length === 16 ? `${value}:00` : value}Z`);
  return Number.isNaN(d.getTime()) ? null : d;
}

/** AWS::EC2::Instance -> EC2 Instance */
export function typeLabel(type) {
  const parts = String(type).split('::');
  return parts.length === 3 ? `${parts[1]} ${parts[2]}` : String(type);
}

/** The botocore-ish service of a CloudFormation type, as CloudTrail names it. */
export function typeService(type) {
  const parts = String(type).split('::');
  const svc = (parts[1] || '').toLowerCase();
  const map = { elasticloadbalancingv2: 'elasticloadbalancing', cloudwatch: 'monitoring', logs: 'logs' };
  return map[svc] || svc;
}

/** A principal's short name: the user or role session at the end of an ARN. */
export function principalShort(label) {
  if (!label) return '—';
  const text = String(label);
  if (!text.startsWith('arn:')) return text;
  const resource = text.split(':').slice(5).join(':');
  const parts = resource.split('/');
  return parts.length > 1 ? parts.slice(1).join('/') : resource;
}

export function plural(n, one, many = `${one}s`) {
  return `${num(n)} ${n === 1 ? one : many}`;
}
