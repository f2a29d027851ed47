// aop live dashboard: entry point. Routes (location hash), the header, the live feed's wiring,
// global keyboard shortcuts and the one-second clock.
//
// Layout of the front end (plain ES modules, no build step):
//   app.js        this file: routing, header, keys, clock
//   routes.js     the routes (location hash): links to a view, and parsing
//   api.js        HTTP calls to the collector, access token
//   live.js       the /stream EventSource, resumed by id after any disconnection
//   store.js      shared session rows, updated in place by live events
//   model.js      what events mean (both AOP payload vocabularies); no DOM
//   overview.js   the sessions list
//   session.js    one session: composes session/*.js, loads and follows the session
//     session/records.js    its events, tool-call pairing and alerts; no DOM
//     session/trace.js      which span of an OpenTelemetry trace is inside which; no DOM
//     session/header.js     goal, ids, export and delete
//     session/metrics.js    the metrics strip
//     session/calls.js      the tool calls panel (the waterfall)
//     session/timeline.js   the event timeline, its filters and keys
//     session/tree.js       the agent tree
//     session/inspector.js  the selected event's details
//     session/otel.js       the details of an event derived from a span (attributes, events)
//     session/parts.js      pieces several of those draw (tool-call and LLM-call chips, confidence)
//   conversation.js  one conversation: its sessions (turns) in order, their figures and totals
//   compare.js    two sessions side by side: composes compare/*.js, loads and follows the comparison
//     compare/picker.js     "compare with…": the similar runs, or any session id
//     compare/header.js     which two runs, swap, compare with another
//     compare/deltas.js     the figures of both runs and their differences
//     compare/steps.js      the aligned steps, the first divergence, filters and keys
//     compare/detail.js     the selected step's two events in full, fields that differ marked
//   waterfall.js  the SVG chart of tool calls
//   vlist.js      the virtualised list every view uses
//   dom.js        safe DOM building (text only, never innerHTML) and formatting

import { api } from './api.js';
import { Live } from './live.js';
import { store, applyEvent, applyAlert, removeRow, reconcileRunning, loadToday, subscribe } from './store.js';
import { fmtCost, fmtDuration } from './dom.js';
import { parseHash, sessionHref } from './routes.js';
import { Overview } from './overview.js';
import { SessionView } from './session.js';
import { CompareView } from './compare.js';
import { ConversationView } from './conversation.js';

const live = new Live();
const main = document.getElementById('main');
const connEl = document.getElementById('connection-state');
const runningEl = document.getElementById('running-count');
const runningWrap = document.getElementById('running');
const costEl = document.getElementById('today-cost');

const overview = new Overview();
let sessionView = null;
let compareView = null;
let conversationView = null;
let cameFromOverview = false;
let overviewShown = false;
/** Whether the compare view was opened from its session a's view (then Back is history's). */
let cameFromSession = false;

/**
 * Whether the session view was opened from the conversation view (then its Back is history's, and
 * the conversation's Back leads to the overview).
 */
let cameFromConversation = false;
/** The session whose "conversation" link opened the conversation view (then its Back is history's). */
let conversationFrom = null;

/** The view that takes the keys: a session's, a comparison's or a conversation's (null: the overview). */
const current = () => sessionView || compareView || conversationView;

// ---------- routing (routes.js) ----------

function route() {
  const r = parseHash();
  if (r.view === 'conversation') {
    if (conversationView && conversationView.id === r.id) return;
    conversationFrom = sessionView ? sessionView.id : null;
    if (sessionView) { sessionView.destroy(); sessionView = null; }
    if (compareView) { compareView.destroy(); compareView = null; }
    if (conversationView) conversationView.destroy();
    overviewShown = false;
    overview.el.hidden = true;
    conversationView = new ConversationView(r.id, { live, onBack: backFromConversation });
    main.appendChild(conversationView.el);
    conversationView.focus();
    return;
  }
  const fromConversation = !!conversationView;
  if (conversationView) { conversationView.destroy(); conversationView = null; }
  if (r.view === 'compare') {
    if (compareView && compareView.a === r.a && compareView.b === r.b) return;
    cameFromSession = !!sessionView && sessionView.id === r.a;
    if (sessionView) { sessionView.destroy(); sessionView = null; }
    if (compareView) compareView.destroy();
    overviewShown = false;
    overview.el.hidden = true;
    compareView = new CompareView(r.a, r.b, { live, onBack: () => backFromCompare(r.a) });
    main.appendChild(compareView.el);
    compareView.focus();
    return;
  }
  if (compareView) { compareView.destroy(); compareView = null; }
  if (r.view === 'session') {
    if (sessionView && sessionView.id === r.id) {
      if (r.seq !== null) sessionView.showSeq(r.seq);
      return;
    }
    if (sessionView) sessionView.destroy();
    // Back can be history.back() only when the previous entry is this app's overview (or the
    // conversation view the session was opened from).
    cameFromOverview = overviewShown;
    cameFromConversation = fromConversation;
    overviewShown = false;
    overview.el.hidden = true;
    sessionView = new SessionView(r.id, { live, seq: r.seq, onBack: goBack });
    main.appendChild(sessionView.el);
    sessionView.focus();
  } else {
    if (sessionView) { sessionView.destroy(); sessionView = null; }
    overview.el.hidden = false;
    overviewShown = true;
    document.title = 'aop · sessions';
    overview.show(r.params);
    // Back from a session: keep the list where it was, with the session selected.
    const sel = overview.list.selected();
    if (sel && sel.id) overview.list.select(overview.list.sel, { scroll: true, focus: true, notify: false });
  }
}

/** Back from a comparison: to session a's view, where "compare with…" was. */
function backFromCompare(a) {
  if (cameFromSession && history.length > 1) {
    cameFromSession = false;
    history.back();
  } else {
    location.hash = sessionHref(a);
  }
}

/** Back from a conversation: to the session it was opened from, else the overview. */
function backFromConversation() {
  if (conversationFrom !== null && history.length > 1) {
    conversationFrom = null;
    history.back();
  } else {
    location.hash = overview.hash();
  }
}

function goBack(deleted = false) {
  if ((cameFromOverview || cameFromConversation) && !deleted && history.length > 1) {
    cameFromOverview = false;
    cameFromConversation = false;
    history.back();
  } else {
    location.hash = overview.hash();
  }
}

// ---------- header ----------

const CONN_TEXT = { live: 'live', reconnecting: 'reconnecting', offline: 'offline' };

function renderConn(state) {
  connEl.textContent = CONN_TEXT[state] || state;
  connEl.dataset.state = state;
  connEl.title = state === 'live'
    ? 'Receiving events as they are stored'
    : state === 'reconnecting'
      ? 'Lost the connection to the collector; reconnecting (nothing will be missed)'
      : 'The collector is not reachable; still retrying';
}

function renderHeader() {
  const n = store.running.size;
  const text = `${n}${store.runningMore ? '+' : ''}`;
  if (runningEl.textContent !== text) runningEl.textContent = text;
  runningEl.dataset.value = String(n);
  runningWrap.classList.toggle('has-running', n > 0);
  let sum = 0;
  for (const c of store.today.values()) sum += c;
  const cost = fmtCost(sum);
  if (costEl.textContent !== cost) costEl.textContent = cost;
  costEl.dataset.value = String(sum);
}

// ---------- keyboard ----------

function typing(el) {
  return el && (el.tagName === 'INPUT' || el.tagName === 'TEXTAREA' || el.tagName === 'SELECT' || el.isContentEditable);
}

document.addEventListener('keydown', (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  if (document.querySelector('dialog[open]')) return;
  const t = e.target;
  if (typing(t)) {
    if (e.key === 'Escape') { t.blur(); e.preventDefault(); }
    else if (e.key === 'ArrowDown' && t.type === 'search') {
      // From the search box straight into the results.
      e.preventDefault();
      t.blur();
      if (current()) current().move(1); else moveOverview(1);
    }
    return;
  }
  if (e.key === 'Escape' || e.key === 'Backspace') {
    if (sessionView) { e.preventDefault(); goBack(); }
    else if (compareView) { e.preventDefault(); backFromCompare(compareView.a); }
    else if (conversationView) { e.preventDefault(); backFromConversation(); }
    return;
  }
  if (current()) {
    // Enter on a focused link or button keeps its native meaning.
    if (e.key === 'Enter' && t.closest && t.closest('a, button') ) return;
    if (current().onKey(e)) e.preventDefault();
    return;
  }
  const list = overview.list;
  switch (e.key) {
    case 'j': case 'ArrowDown': e.preventDefault(); moveOverview(1); break;
    case 'k': case 'ArrowUp': e.preventDefault(); moveOverview(-1); break;
    case 'g': case 'Home': e.preventDefault(); moveOverview(-Infinity); break;
    case 'G': case 'End': e.preventDefault(); moveOverview(Infinity); break;
    case '/': e.preventDefault(); overview.focusSearch(); break;
    case 'Enter': {
      const it = list.selected();
      if (it && it.id && !(t.tagName === 'A')) { e.preventDefault(); location.hash = sessionHref(it.id); }
      break;
    }
    default:
  }
});

/** Moves the overview selection over session rows only (skipping section headers). */
function moveOverview(delta) {
  const list = overview.list;
  const items = list.items;
  if (!items.length) return;
  const isRow = (it) => it && !it.kind;
  let i = list.sel;
  if (delta === -Infinity) i = items.findIndex(isRow);
  else if (delta === Infinity) { for (i = items.length - 1; i >= 0 && !isRow(items[i]); i--); }
  else {
    const step = delta > 0 ? 1 : -1;
    let j = i < 0 ? (step > 0 ? -1 : items.length) : i;
    for (j += step; j >= 0 && j < items.length; j += step) if (isRow(items[j])) break;
    if (j < 0 || j >= items.length) return;
    i = j;
  }
  if (i >= 0) list.select(i);
}

// ---------- clock: ticking durations, liveness, periodic reconcile ----------

function tick() {
  const now = Date.now();
  for (const el of document.querySelectorAll('[data-since]')) {
    const since = Number(el.dataset.since);
    if (!Number.isFinite(since)) continue;
    const text = fmtDuration(now - since);
    if (el.textContent !== text) el.textContent = text;
  }
  overview.tick(now);
  if (sessionView) sessionView.tick(now);
}

// ---------- start ----------

async function start() {
  main.appendChild(overview.el);
  live.on('state', renderConn);
  live.on('event', (ev) => applyEvent(ev));
  live.on('alert', (a) => applyAlert(a));
  live.on('deleted', (sid) => removeRow(sid));
  live.on('resync', () => { reconcileRunning().catch(() => {}); loadToday().catch(() => {}); });
  subscribe(renderHeader);
  renderConn('offline');
  window.addEventListener('hashchange', route);

  api('/health').then((health) => {
    if (health && Number.isFinite(health.stall_after_secs)) store.stallSecs = health.stall_after_secs;
    if (health && typeof health.version === 'string') document.getElementById('version').textContent = `v${health.version}`;
  }).catch(() => { /* the stream's retries report the state */ });

  // Open the feed first (and give it a moment) so nothing stored while the first pages load is missed.
  const opened = new Promise((resolve) => { const off = live.on('state', (s) => { if (s === 'live') { off(); resolve(); } }); });
  live.start();
  await Promise.race([opened, new Promise((r) => setTimeout(r, 1500))]);
  route();
  reconcileRunning().catch(() => {});
  loadToday().catch(() => {});
  setInterval(tick, 1000);
  setInterval(() => { if (live.state === 'live') reconcileRunning().catch(() => {}); }, 30000);
  setInterval(() => { if (live.state === 'live') loadToday().catch(() => {}); }, 300000);
}

start();
