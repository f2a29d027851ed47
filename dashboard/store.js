// The page's shared knowledge of sessions: rows (one object per session id, updated in place so
// every view holding it sees changes), which sessions are running, when we last heard from each,
// and today's cost. Live events are folded in locally (model.js says why and how far that copy of
// the collector's rules goes); the collector's own row replaces the local one sparingly: when a
// session appears, when an event reaches one that has ended, and for every running session every
// 30 s and after each reconnection.

import { api, ApiError } from './api.js';
import { parseTs, debounce } from './dom.js';
import { applyEventToRow, rowFromEvent, isRunningStatus, statusClass, startMeta } from './model.js';

const SEV_RANK = { info: 1, warning: 2, critical: 3 };

function midnight() {
  const d = new Date();
  d.setHours(0, 0, 0, 0);
  return d.getTime();
}

export const store = {
  /** @type {Map<string, object>} session id → row (the collector's shape, plus `_`-prefixed local fields) */
  rows: new Map(),
  /** session id → browser time (ms) of the latest live event */
  arrival: new Map(),
  /** session id → (browser time − agent time) of the latest live event: the agent's clock offset */
  skew: new Map(),
  /** ids of running sessions, across all filters (for the header) */
  running: new Set(),
  runningMore: false,
  /** session id → cost, for sessions active since local midnight */
  today: new Map(),
  todayFrom: midnight(),
  stallSecs: 90,
  listeners: new Set(),
  changed: new Set(),
  fetchQueue: new Set(),
};

/** Calls `fn(changedIds)` (batched, at most once per frame) when rows change. */
export function subscribe(fn) {
  store.listeners.add(fn);
  return () => store.listeners.delete(fn);
}

let notifyQueued = false;
function notify(id) {
  store.changed.add(id);
  if (notifyQueued) return;
  notifyQueued = true;
  const run = () => {
    notifyQueued = false;
    const ids = store.changed;
    store.changed = new Set();
    for (const fn of store.listeners) {
      try { fn(ids); } catch (e) { console.error('aop dashboard: listener failed', e); }
    }
  };
  // Hidden tabs get no animation frames; still deliver, a little later.
  if (document.hidden) setTimeout(run, 250); else requestAnimationFrame(run);
}

function touch(row) {
  row._ver = (row._ver || 0) + 1;
  row._t = parseTs(row.last_seen_at);
  if (isRunningStatus(row.status)) store.running.add(row.id); else store.running.delete(row.id);
  if (store.todayFrom !== midnight()) { store.todayFrom = midnight(); store.today.clear(); }
  if (row._t >= store.todayFrom) store.today.set(row.id, Number(row.total_cost_usd) || 0);
  notify(row.id);
}

/** Merges a row from the collector into the cache and returns the shared object. */
export function mergeRow(r) {
  if (!r || typeof r.id !== 'string') return null;
  let row = store.rows.get(r.id);
  if (row) {
    const keep = { _rep: row._rep, _alertSev: row._alertSev, _ver: row._ver };
    for (const k of Object.keys(row)) if (!k.startsWith('_')) delete row[k];
    Object.assign(row, r, keep);
    delete row._provisional;
    // The collector answered for what it had; local deltas start again from its figures.
    row._rep = {};
  } else {
    row = Object.assign({}, r);
    store.rows.set(r.id, row);
  }
  touch(row);
  return row;
}

export function getRow(id) {
  return store.rows.get(id) || null;
}

/** Folds one live event in. */
export function applyEvent(ev) {
  const id = ev.session_id;
  const now = Date.now();
  store.arrival.set(id, now);
  const t = parseTs(ev.timestamp);
  if (Number.isFinite(t)) store.skew.set(id, now - t);
  let row = store.rows.get(id);
  if (!row) {
    row = rowFromEvent(ev);
    store.rows.set(id, row);
    scheduleFetch(id);
    const parent = ev.parent_session_id && store.rows.get(ev.parent_session_id);
    if (parent) { parent.child_count = (parent.child_count || 0) + 1; touch(parent); }
  } else {
    applyEventToRow(row, ev);
    // An ended session is out of the periodic reconcile of running ones: the collector's row for
    // its end (or for a late event after it) is fetched now, or a local guess would stay.
    if (row._provisional || !isRunningStatus(row.status)) scheduleFetch(id);
  }
  if (row._stalled && ev.type !== 'session.ended') row._stalled = false;
  if (ev.type === 'session.started') row._meta = startMeta(ev.payload);
  touch(row);
  return row;
}

export function applyAlert(a) {
  const row = store.rows.get(a.session_id);
  if (!row) return;
  row.alert_count = (row.alert_count || 0) + 1;
  if ((SEV_RANK[a.severity] || 0) > (SEV_RANK[row._alertSev] || 0)) row._alertSev = a.severity;
  if (a.type === 'stall') row._stalled = true;
  touch(row);
}

export function removeRow(id) {
  const row = store.rows.get(id);
  store.rows.delete(id);
  store.running.delete(id);
  store.today.delete(id);
  store.arrival.delete(id);
  store.skew.delete(id);
  if (row) { row._deleted = true; notify(id); }
}

/** The agent's clock offset for a session (0 when unknown). */
export function skewOf(id) {
  const s = store.skew.get(id);
  return Number.isFinite(s) && Math.abs(s) < 6 * 3600e3 ? s : 0;
}

/**
 * How alive a session looks: `active` (heard from in the last 15 s), `idle`, `stalled` (running, quiet
 * for longer than the collector's stall threshold, or a stall alert since the last event), or `ended`.
 */
export function liveness(row, now = Date.now()) {
  if (!row || !isRunningStatus(row.status)) return 'ended';
  if (row._stalled) return 'stalled';
  const seen = parseTs(row.last_seen_at) + skewOf(row.id);
  const arrived = store.arrival.get(row.id);
  let last = Math.max(Number.isFinite(seen) ? Math.min(seen, now) : -Infinity, arrived || -Infinity);
  if (!Number.isFinite(last)) return 'idle';
  const quiet = now - last;
  // An agent waiting for its user is quiet, not stalled (the collector raises no stall for it).
  if (quiet > store.stallSecs * 1000) return waitsForUser(row) ? 'idle' : 'stalled';
  if (quiet < 15000) return 'active';
  return 'idle';
}

/**
 * Whether a session's agent waits for its user between turns (`metadata.interactive` of its
 * start). The collector's row does not say: until the start has been read, a coding agent's
 * session (Claude Code's, Codex's) is taken to be one, as the collector makes them.
 */
function waitsForUser(row) {
  if (row._meta) return !!row._meta.interactive;
  return row.agent_id === 'claude-code' || row.agent_id === 'codex';
}

/** How a row's status reads; a running session that has gone quiet reads `stalled`. */
export function statusOf(row, now = Date.now()) {
  const live = liveness(row, now);
  const running = isRunningStatus(row.status);
  const stalled = running && live === 'stalled';
  return {
    running,
    live,
    text: running ? (stalled ? 'stalled' : 'running') : String(row.status),
    /** suffix of the `st-` classes (pills, colours) */
    cls: running ? (stalled ? 'warn' : 'running') : statusClass(row.status),
    /** suffix of the `live-` class of the status dot */
    dot: running ? live : statusClass(row.status),
  };
}

// ---------- sparing refetches ----------

const flushFetches = debounce(async () => {
  const ids = [...store.fetchQueue];
  store.fetchQueue.clear();
  // A few at a time: a burst of new sessions must not flood the collector.
  for (let i = 0; i < ids.length; i += 4) {
    await Promise.all(ids.slice(i, i + 4).map(fetchRow));
  }
}, 700, 3000);

function scheduleFetch(id) {
  store.fetchQueue.add(id);
  flushFetches();
}

export async function fetchRow(id) {
  try {
    const r = await api(`/sessions/${encodeURIComponent(id)}`, { params: { limit: 1 } });
    if (r && r.session) {
      // The first event, when it is the session's start, says where the session comes from.
      const first = (r.events || [])[0];
      const row = store.rows.get(id);
      if (first && first.type === 'session.started') (row || r.session)._meta = startMeta(first.payload);
      else if (row && row._meta === undefined) row._meta = null;
      return mergeRow(r.session);
    }
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) removeRow(id);
  }
  return null;
}

/** Reloads the running sessions (one request) and reconciles the cache with them. */
export async function reconcileRunning() {
  const started = Date.now();
  const r = await api('/sessions', { params: { status: 'running', limit: 1000 } });
  const ids = new Set();
  for (const row of r.sessions || []) ids.add(mergeRow(row).id);
  store.runningMore = !!r.next_cursor;
  for (const id of [...store.running]) {
    if (ids.has(id) || store.runningMore) continue;
    // Not running any more for the collector, and nothing heard since we asked: refresh it.
    if ((store.arrival.get(id) || 0) < started) scheduleFetch(id);
  }
  notify('*');
}

/** Sums the cost of sessions active since local midnight (a few pages at most). */
export async function loadToday() {
  const from = midnight();
  const today = new Map();
  let cursor = null;
  for (let page = 0; page < 10; page++) {
    const r = await api('/sessions', { params: { limit: 1000, cursor } });
    let older = false;
    for (const raw of r.sessions || []) {
      const t = parseTs(raw.last_seen_at);
      if (t < from) { older = true; break; }
      today.set(raw.id, Number(raw.total_cost_usd) || 0);
    }
    cursor = r.next_cursor;
    if (older || !cursor) break;
  }
  store.todayFrom = from;
  for (const [id, row] of store.rows) {
    if (row._t >= from) today.set(id, Number(row.total_cost_usd) || 0);
  }
  store.today = today;
  notify('*');
}
