// The collector's public HTTP API, and the access token.
//
// Same origin by default. For development only, `?api=http://127.0.0.1:PORT` points the dashboard at
// another collector (accepted for loopback origins only). A token is kept for the collector it was
// entered for and sent to that origin only: a crafted `?api=` link gets no token it was not given.

function apiBase() {
  const raw = new URLSearchParams(location.search).get('api');
  if (!raw) return '';
  try {
    const u = new URL(raw);
    if ((u.protocol === 'http:' || u.protocol === 'https:') &&
        ['127.0.0.1', 'localhost', '[::1]'].includes(u.hostname)) {
      return u.origin;
    }
  } catch { /* ignored: fall back to same origin */ }
  console.warn('aop dashboard: ignoring ?api= (only loopback collectors are allowed)');
  return '';
}

const API_BASE = apiBase();

// The origin every request goes to; the token's storage key names it.
const API_ORIGIN = new URL(API_BASE || location.origin).origin;
const TOKEN_KEY = `aop.token@${API_ORIGIN}`;

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function getToken() {
  try { return sessionStorage.getItem(TOKEN_KEY) || null; } catch { return null; }
}

/** The token for `url`, or null unless `url` is on the origin the token was entered for. */
function tokenFor(url) {
  return new URL(url, location.href).origin === API_ORIGIN ? getToken() : null;
}

function setToken(t) {
  try {
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch { /* storage disabled: the token lives only in memory for this call */ }
}

/** An absolute URL for an API path. `withToken` adds `access_token` (for EventSource and links). */
export function apiUrl(path, params, withToken = false) {
  const u = new URL(API_BASE + path, location.href);
  if (params) {
    for (const [k, v] of Object.entries(params)) {
      if (v !== null && v !== undefined && v !== '') u.searchParams.set(k, String(v));
    }
  }
  const t = tokenFor(u);
  if (withToken && t) u.searchParams.set('access_token', t);
  return u.toString();
}

// ---------- asking for the token, once for all concurrent callers ----------

let asking = null;

function askToken(rejected) {
  if (asking) return asking;
  const dlg = document.getElementById('token-dialog');
  const form = document.getElementById('token-form');
  const input = document.getElementById('token-input');
  const msg = document.getElementById('token-message');
  msg.textContent = rejected
    ? 'That token was refused by the collector. Check it and try again.'
    : 'This collector requires an access token. It is kept for this browser tab only.';
  input.value = '';
  asking = new Promise((resolve) => {
    const done = (e) => {
      e.preventDefault();
      const t = input.value.trim();
      if (!t) { input.focus(); return; }
      form.removeEventListener('submit', done);
      setToken(t);
      dlg.close();
      asking = null;
      resolve(t);
    };
    form.addEventListener('submit', done);
    if (!dlg.open) dlg.showModal();
    input.focus();
  });
  return asking;
}

// Escape closes <dialog> by default; the token is needed, so keep it open.
document.addEventListener('DOMContentLoaded', () => {
  const dlg = document.getElementById('token-dialog');
  if (dlg) dlg.addEventListener('cancel', (e) => e.preventDefault());
});

/**
 * Calls the API and returns the parsed JSON (or the Response when `raw`).
 * A 401 asks the user for the token (once, whoever asks) and retries.
 */
export async function api(path, { method = 'GET', params, raw = false, signal, body: payload } = {}) {
  let rejected = false;
  for (let attempt = 0; attempt < 10; attempt++) {
    const headers = { Accept: 'application/json' };
    const url = apiUrl(path, params);
    const t = tokenFor(url);
    if (t) headers.Authorization = `Bearer ${t}`;
    // The collector takes a write only with a JSON type (what a foreign page cannot send).
    const sent = method === 'POST' ? JSON.stringify(payload || {}) : undefined;
    if (sent) headers['Content-Type'] = 'application/json';
    const res = await fetch(url, { method, headers, body: sent, signal, cache: 'no-store' });
    if (res.status === 401) {
      if (t) { setToken(null); rejected = true; }
      await askToken(rejected);
      continue;
    }
    if (raw) {
      if (!res.ok) throw new ApiError(res.status, `HTTP ${res.status}`);
      return res;
    }
    let body = null;
    try { body = await res.json(); } catch { body = null; }
    if (!res.ok) {
      throw new ApiError(res.status, (body && typeof body.error === 'string' && body.error) || `HTTP ${res.status}`);
    }
    return body;
  }
  throw new ApiError(401, 'not authorised');
}

/** Makes sure we hold a working token (if one is needed) before opening the stream. */
export async function checkAuth() {
  await api('/sessions', { params: { limit: 1 } });
}
