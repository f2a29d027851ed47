// One session, live. This module composes the view's panels (session/*.js) and owns its
// lifecycle: loading the events page by page, following the live feed and the shared rows,
// catching up after a reconnection, and tearing everything down when the view is left.
//
// Loading: the first page (500 events) is drawn at once; the rest follows in the background in
// pages of 5,000, merged by sequence with whatever the live feed delivers meanwhile.
//
// Panels talk to each other only through this module: each gets what it reads as constructor
// arguments and is told of changes by a method call.

import { api, ApiError } from './api.js';
import { h, parseTs, fmtInt, debounce } from './dom.js';
import { isRunningStatus } from './model.js';
import { subscribe, getRow, mergeRow, liveness, skewOf } from './store.js';
import { Records } from './session/records.js';
import { spanState } from './session/parts.js';
import { Header } from './session/header.js';
import { Metrics } from './session/metrics.js';
import { CallsPanel } from './session/calls.js';
import { Timeline } from './session/timeline.js';
import { AgentTree } from './session/tree.js';
import { Inspector } from './session/inspector.js';
import { fetchDeliveries } from './session/deliveries.js';

const FIRST_PAGE = 500;
const PAGE = 5000;
/** How often alerts' notifications are asked for again while one is pending. */
const DELIVERIES_EVERY = 5000;

export class SessionView {
  constructor(id, { live, onBack, seq }) {
    this.id = id;
    this.live = live;
    // An event named by the route, selected once it has loaded.
    this.pendingSeq = seq ?? null;
    this.loading = false;
    this.destroyed = false;
    this.deleted = false;
    this.notFound = false;

    this.records = new Records(id);
    const skew = () => skewOf(id);
    const state = (sp) => spanState(sp, this.running && !this.deleted);
    const showSeq = (seq) => this.timeline.selectSeq(seq, true);
    this.header = new Header({ id, onBack, onError: (text) => this.showNotice(text), meta: () => this.records.meta });
    this.metrics = new Metrics();
    this.calls = new CallsPanel({ records: this.records, spanState: state, range: () => this.timeRange(), onPick: showSeq });
    this.timeline = new Timeline({
      id, records: this.records, row: () => this.row, isLoading: () => this.loading, isRunning: () => this.running,
      spanState: state, skew, t0: () => this.t0(),
      onInspect: (it) => this.inspector.show(it),
      onWindow: (from, to) => this.calls.setWindow(from, to),
    });
    this.tree = new AgentTree(id, { records: this.records, onSeq: showSeq });
    this.inspector = new Inspector({ records: this.records, spanState: state, skew, onSeq: showSeq });
    this.notice = h('div', { class: 'notice', hidden: true, role: 'status' });
    this.el = h('section', { class: 'view sv', 'data-testid': 'session-view', 'data-session-id': id, 'aria-labelledby': 'sv-title' },
      this.header.el,
      this.metrics.el,
      this.notice,
      h('div', { class: 'sv-body' },
        h('div', { class: 'sv-main' }, this.calls.el, this.timeline.el),
        h('aside', { class: 'sv-side' }, this.tree.el, this.inspector.el)),
      this.header.dialogs);

    // Live catch-up for the row and alerts, which the event stream does not carry in full.
    this.sync = debounce(() => this.syncNow(), 1500, 8000);
    // An alert's notifications leave right after it: ask a moment later.
    this.deliveriesSoon = debounce(() => this.refreshDeliveries(), 1000, 4000);
    this.unsubs = [
      live.on('event', (ev) => this.onLiveEvent(ev)),
      live.on('alert', (a) => { if (a.session_id === this.id) this.addAlert(a, true); }),
      live.on('deleted', (sid) => this.onDeleted(sid)),
      live.on('resync', () => this.syncNow()),
      subscribe((ids) => this.onStoreChange(ids)),
    ];
    this.load();
  }

  destroy() {
    this.destroyed = true;
    for (const u of this.unsubs) u();
    this.sync.cancel();
    this.deliveriesSoon.cancel();
    this.timeline.destroy();
    this.calls.destroy();
    this.tree.destroy();
    this.inspector.destroy();
    this.el.remove();
  }

  // ------------------------------------------------------------------ for the app

  /** Selects the route's event, unless it is the one selected already. */
  showSeq(seq) {
    const sel = this.timeline.selected();
    if (!sel || sel.seq !== seq) this.timeline.selectSeq(seq, true);
  }

  focus() { this.timeline.focus(); }

  move(delta) { this.timeline.move(delta); }

  /** Keys while this view is shown; returns true when handled. */
  onKey(e) { return this.timeline.onKey(e); }

  /** Once a second, from the app. */
  tick() {
    if (this.destroyed) return;
    if (this.running && this.records.hasOpenCalls()) this.calls.redraw();
    if (this.records.hasPendingDeliveries() && Date.now() - (this.deliveriesAt || 0) > DELIVERIES_EVERY) this.refreshDeliveries();
    const r = this.row;
    if (r && isRunningStatus(r.status)) {
      // Liveness moves with time alone (active → idle → stalled): redraw what shows it.
      const l = liveness(r);
      if (l !== this.lastLive) { this.lastLive = l; this.header.render(r, true); this.updateMetrics(); }
    }
  }

  // ------------------------------------------------------------------ state

  get row() { return getRow(this.id); }

  get running() {
    const r = this.row;
    return !!r && isRunningStatus(r.status);
  }

  /** The session's start on the agent's clock: the row's, else the first event's. */
  t0() {
    const r = this.row;
    const s = r ? parseTs(r.started_at) : NaN;
    if (Number.isFinite(s)) return s;
    return this.records.firstTime();
  }

  /** The session's span of time for the waterfall; a running one extends to now (agent's clock). */
  timeRange() {
    const r = this.row;
    const now = Date.now() - skewOf(this.id);
    let to = r ? parseTs(r.ended_at || r.last_seen_at) : NaN;
    if (this.running) to = Math.max(Number.isFinite(to) ? to : 0, now);
    return { from: this.t0(), to, now };
  }

  showNotice(text) {
    this.notice.hidden = !text;
    this.notice.textContent = text || '';
  }

  updateMetricsSoon() {
    if (this.metricsQueued) return;
    this.metricsQueued = true;
    setTimeout(() => { this.metricsQueued = false; if (!this.destroyed) this.updateMetrics(); }, 200);
  }

  updateMetrics() {
    const rs = this.records;
    this.metrics.update(this.row, { events: rs.seen, alerts: rs.alerts.size, confs: rs.recentConfidences(), skew: skewOf(this.id) });
    this.timeline.updateProgress();
  }

  // ------------------------------------------------------------------ loading

  async load() {
    this.loading = true;
    this.timeline.updateProgress();
    let first;
    try {
      first = await api(`/sessions/${encodeURIComponent(this.id)}`, { params: { limit: FIRST_PAGE } });
    } catch (e) {
      if (this.destroyed) return;
      this.loading = false;
      if (e instanceof ApiError && e.status === 404) {
        this.notFound = true;
        this.header.notFound();
        this.showNotice(`No session "${this.id}" in the collector (yet). This view will fill in if its events arrive.`);
      } else {
        this.showNotice(`Could not load the session: ${e.message}. Retrying…`);
        setTimeout(() => { if (!this.destroyed && !this.records.recs.length) this.load(); }, 3000);
      }
      this.timeline.updateProgress();
      return;
    }
    if (this.destroyed) return;
    this.notFound = false;
    this.showNotice(this.deleted ? 'This session was deleted.' : '');
    mergeRow(first.session);
    for (const a of first.alerts || []) this.addAlert(a, false);
    this.addEvents(first.events || [], false);
    this.timeline.setFollow(this.running && this.pendingSeq === null);
    this.header.render(this.row);
    this.updateMetrics();
    this.timeline.rebuildNow();
    this.calls.draw();
    this.tree.load();
    if (this.records.alerts.size) this.refreshDeliveries();
    let after = first.next_after;
    while (after !== null && after !== undefined && !this.destroyed) {
      this.timeline.updateProgress();
      // Let the browser paint and handle input between pages.
      await new Promise((r) => setTimeout(r, 0));
      let page;
      try {
        page = await api(`/sessions/${encodeURIComponent(this.id)}`, { params: { after, limit: PAGE } });
      } catch (e) {
        if (this.destroyed) return;
        if (e instanceof ApiError && e.status === 404) break;
        await new Promise((r) => setTimeout(r, 2000));
        continue;
      }
      if (this.destroyed) return;
      this.addEvents(page.events || [], false);
      if (page.session) mergeRow(page.session);
      after = page.next_after;
    }
    this.loading = false;
    this.timeline.rebuild.flush();
    this.timeline.updateProgress();
    this.calls.draw();
  }

  /** After live events (debounced) and after a reconnection: the row, alerts and anything missed. */
  async syncNow() {
    if (this.destroyed || this.loading || this.deleted) return;
    if (this.notFound) { this.load(); return; }
    const { recs } = this.records;
    const last = recs.length ? recs[recs.length - 1].seq : null;
    try {
      let after = last;
      for (let i = 0; i < 50 && !this.destroyed; i++) {
        // The stream delivers events; this call is for the row and alerts, and fills gaps only
        // when the stream is down.
        const params = after === null ? { limit: 200 } : { after, limit: 200 };
        const r = await api(`/sessions/${encodeURIComponent(this.id)}`, { params });
        if (this.destroyed) return;
        mergeRow(r.session);
        for (const a of r.alerts || []) this.addAlert(a, false);
        this.addEvents(r.events || [], false);
        if (r.next_after === null || r.next_after === undefined || this.live.state === 'live') break;
        after = r.next_after;
      }
    } catch (e) {
      if (e instanceof ApiError && e.status === 404 && !this.deleted) this.onDeleted(this.id);
    }
  }

  // ------------------------------------------------------------------ changes

  onLiveEvent(ev) {
    if (ev.session_id !== this.id) { this.tree.onEvent(ev); return; }
    if (this.notFound) { this.notFound = false; this.load(); return; }
    if (this.deleted) return;
    // Batched: a burst of live events costs one merge and one redraw.
    (this.liveQueue || (this.liveQueue = [])).push(ev);
    if (!this.liveTimer) {
      this.liveTimer = setTimeout(() => {
        this.liveTimer = null;
        const batch = this.liveQueue;
        this.liveQueue = [];
        if (!this.destroyed) this.addEvents(batch, true);
      }, 40);
    }
    this.sync();
    this.tree.onEvent(ev);
  }

  onDeleted(sid) {
    if (sid !== this.id) { this.tree.onDeleted(sid); return; }
    this.deleted = true;
    this.timeline.setFollow(false);
    this.showNotice('This session was deleted.');
    this.el.classList.add('is-deleted');
  }

  onStoreChange(ids) {
    if (this.destroyed) return;
    if (ids.has(this.id) || ids.has('*')) {
      this.header.render(this.row);
      this.updateMetrics();
      const running = this.running;
      if (this.wasRunning !== undefined && running !== this.wasRunning) {
        // Open tool calls of an ended session are no longer "running": redraw them.
        this.timeline.invalidate();
        this.calls.redraw();
        this.inspector.refresh();
      }
      this.wasRunning = running;
    }
    this.tree.onRowsChanged(ids);
  }

  addEvents(evs, live) {
    const meta = this.records.meta;
    const added = this.records.add(evs, live, this.timeline.selected());
    if (!added) return;
    if (this.records.meta !== meta) {
      // What the session's start says of it (an interactive agent is not stalled when quiet) is
      // the row's too, for every view that shows it.
      const row = this.row;
      if (row) row._meta = this.records.meta;
      this.header.render(this.row, true);
      this.updateMetrics();
    }
    if (added.reordered) this.timeline.invalidate();
    if (added.trimmed) {
      this.showNotice(`The ${fmtInt(this.records.trimmed)} oldest events are not kept in this view, to bound memory. Export the session for the complete record.`);
    }
    if (this.pendingSeq !== null && this.records.bySeq.has(this.pendingSeq)) {
      const seq = this.pendingSeq;
      this.pendingSeq = null;
      this.timeline.rebuildNow();
      this.timeline.selectSeq(seq, true);
    }
    this.timeline.rebuild();
    this.calls.redraw();
    this.tree.onRecords();
    this.updateMetricsSoon();
    this.inspector.refresh();
  }

  /** Asks for the alerts' notifications, and redraws the alerts whose state changed. */
  async refreshDeliveries() {
    if (this.destroyed || this.deleted || this.deliveriesBusy) return;
    this.deliveriesBusy = true;
    this.deliveriesAt = Date.now();
    try {
      const list = await fetchDeliveries(this.id);
      if (this.destroyed) return;
      // null: the session is not (or no longer) in the collector.
      if (list !== null && this.records.setDeliveries(list)) {
        this.timeline.rebuild();
        this.inspector.refresh();
      }
    } catch { /* asked again at the next alert, or the next tick while one is pending */ } finally {
      this.deliveriesBusy = false;
    }
  }

  addAlert(a, live) {
    if (!this.records.addAlert(a)) return;
    this.deliveriesSoon();
    if (live) this.sync();
    this.timeline.rebuild();
    this.updateMetricsSoon();
    this.inspector.refresh();
  }
}
