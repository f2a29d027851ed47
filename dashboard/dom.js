// DOM building and formatting helpers.
//
// Every piece of event data reaches the page through `h()` / `text()`, which only ever create text
// nodes and set attributes: payloads are untrusted, so nothing here (or anywhere in the dashboard)
// assigns `innerHTML`.

const SVG_NS = 'http://www.w3.org/2000/svg';

function setAttrs(el, attrs) {
  if (!attrs) return;
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.setAttribute('class', v);
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'style' && typeof v === 'object') Object.assign(el.style, v);
    else if (k === 'innerHTML' || k === 'outerHTML') throw new Error('refusing to set ' + k);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

/** Creates an HTML element: h('div', {class: 'x', 'data-testid': 'y', onclick}, 'text', child…). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

/** Creates an SVG element the same way. */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

/** Replaces all children of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** Any JSON value as display text (strings as is, the rest as compact JSON). */
export function str(v) {
  if (v === null || v === undefined) return '';
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  try { return JSON.stringify(v); } catch { return String(v); }
}

export function clip(text, n = 240) {
  text = str(text);
  return text.length > n ? text.slice(0, n - 1) + '…' : text;
}

export function pretty(v) {
  try { return JSON.stringify(v, null, 2); } catch { return String(v); }
}

// ---------- time ----------

/** Milliseconds since the epoch for an RFC 3339 string, or NaN. */
export function parseTs(ts) {
  if (typeof ts !== 'string') return NaN;
  let t = Date.parse(ts);
  if (Number.isNaN(t)) {
    // More than millisecond precision, or a lowercase separator: normalise and retry.
    const m = /^(\d{4}-\d\d-\d\d)[Tt ](\d\d:\d\d:\d\d)(\.\d+)?([Zz]|[+-]\d\d:?\d\d)?$/.exec(ts.trim());
    if (m) t = Date.parse(`${m[1]}T${m[2]}${m[3] ? m[3].slice(0, 4) : ''}${(m[4] || 'Z').toUpperCase()}`);
  }
  return t;
}

const pad = (n, w = 2) => String(n).padStart(w, '0');

function fmtClock(ms, withMs = false) {
  if (!Number.isFinite(ms)) return '—';
  const d = new Date(ms);
  const base = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return withMs ? `${base}.${pad(d.getMilliseconds(), 3)}` : base;
}

export function fmtDateTime(ms) {
  if (!Number.isFinite(ms)) return '—';
  const d = new Date(ms);
  const now = new Date();
  const sameDay = d.toDateString() === now.toDateString();
  if (sameDay) return fmtClock(ms);
  const y = d.getFullYear() === now.getFullYear() ? '' : ` ${d.getFullYear()}`;
  return `${d.toLocaleString(undefined, { month: 'short' })} ${d.getDate()}${y} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** A duration: 840ms, 4.2s, 3m 05s, 2h 04m, 3d 2h. */
export function fmtDuration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '—';
  if (ms < 0) ms = 0;
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const s = ms / 1000;
  if (s < 10) return `${s.toFixed(1)}s`;
  if (s < 60) return `${Math.floor(s)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${pad(Math.floor(s % 60))}s`;
  const hh = Math.floor(m / 60);
  if (hh < 48) return `${hh}h ${pad(m % 60)}m`;
  return `${Math.floor(hh / 24)}d ${hh % 24}h`;
}

/** An offset from the session start: +0.000s, +12.3s, +4m 02s. */
export function fmtOffset(ms) {
  if (!Number.isFinite(ms)) return '';
  const sign = ms < 0 ? '−' : '+';
  ms = Math.abs(ms);
  if (ms < 60000) return `${sign}${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)}s`;
  return sign + fmtDuration(ms);
}

// ---------- numbers ----------

export function fmtInt(n) {
  if (n === null || n === undefined || !Number.isFinite(Number(n))) return '—';
  return Math.round(Number(n)).toLocaleString('en-US');
}

export function fmtTokens(n) {
  if (n === null || n === undefined || !Number.isFinite(Number(n))) return '—';
  n = Number(n);
  if (n < 10000) return fmtInt(n);
  if (n < 1e6) return `${(n / 1e3).toFixed(n < 1e5 ? 1 : 0)}k`;
  return `${(n / 1e6).toFixed(n < 1e7 ? 2 : 1)}M`;
}

export function fmtCost(c) {
  if (c === null || c === undefined || !Number.isFinite(Number(c))) return '—';
  c = Number(c);
  if (c === 0) return '$0';
  // One LLM call can cost a few millionths of a dollar: two significant digits, not "$0.0000".
  if (c > 0 && c < 0.0001) return `$${c.toFixed(Math.min(10, 1 - Math.floor(Math.log10(c))))}`;
  if (c < 0.01) return `$${c.toFixed(4)}`;
  if (c < 100) return `$${c.toFixed(2)}`;
  return `$${Math.round(c).toLocaleString('en-US')}`;
}

/** One call's cost, which is usually cents or less: `$0.0123`, `$0.35`, `$0.000045`. */
export function fmtCallCost(c) {
  if (c === null || c === undefined || !Number.isFinite(Number(c))) return '—';
  c = Number(c);
  if (c <= 0 || c < 0.0001 || c >= 1) return fmtCost(c);
  return `$${c.toFixed(4).replace(/(\.\d\d\d*?)0+$/, '$1')}`;
}

// ---------- clipboard ----------

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const ta = h('textarea', { class: 'offscreen', 'aria-hidden': 'true' });
    ta.value = text;
    document.body.appendChild(ta);
    ta.select();
    let ok = false;
    try { ok = document.execCommand('copy'); } catch { ok = false; }
    ta.remove();
    return ok;
  }
}

/** A small "copy" button; `get` returns the text at click time. */
export function copyButton(get, label = 'Copy', testid = 'copy-button') {
  const b = h('button', { type: 'button', class: 'btn-copy', title: label, 'aria-label': label, 'data-testid': testid }, 'copy');
  b.addEventListener('click', async (e) => {
    e.stopPropagation();
    const ok = await copyText(typeof get === 'function' ? get() : String(get));
    b.textContent = ok ? 'copied' : 'failed';
    b.classList.toggle('done', ok);
    setTimeout(() => { b.textContent = 'copy'; b.classList.remove('done'); }, 1200);
  });
  return b;
}

/** Debounce with a maximum wait, so a steady stream of calls still fires now and then. */
/** A brief shake of `el`: "there is nothing further that way". */
export function shake(el) {
  el.classList.add('shake');
  setTimeout(() => el.classList.remove('shake'), 400);
}

export function debounce(fn, wait, maxWait = wait * 4) {
  let timer = null;
  let first = 0;
  let lastArgs = null;
  const fire = () => {
    timer = null;
    first = 0;
    const a = lastArgs;
    lastArgs = null;
    fn(...a);
  };
  const d = (...args) => {
    lastArgs = args;
    const now = Date.now();
    if (!first) first = now;
    clearTimeout(timer);
    timer = setTimeout(fire, Math.max(0, Math.min(wait, first + maxWait - now)));
  };
  d.cancel = () => { clearTimeout(timer); timer = null; first = 0; lastArgs = null; };
  d.flush = () => { if (timer) { clearTimeout(timer); fire(); } };
  return d;
}

/** A small inline icon (drawn, so it needs no font). */
export function icon(name) {
  const paths = {
    // a parent with two children
    tree: 'M4 2.5v11M4 8h5.5M4 13.5h5.5M11.5 8a1.5 1.5 0 1 0 0 .01M11.5 13.5a1.5 1.5 0 1 0 0 .01M4 2.5a1.5 1.5 0 1 0 0 .01',
  };
  return s('svg', { class: `icon icon-${name}`, viewBox: '0 0 16 16', width: 12, height: 12, 'aria-hidden': 'true' },
    s('path', { d: paths[name] || '', fill: 'none', stroke: 'currentColor', 'stroke-width': 1.6, 'stroke-linecap': 'round' }));
}
