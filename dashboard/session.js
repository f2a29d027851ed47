// One session, live: metrics, the virtualised event timeline (tiers, tool-call spans, inline
// alerts), the waterfall, the multi-agent tree and an inspector for the selected event.
//
// Loading: the first page (500 events) is drawn at once; the rest follows in the background in
// pages of 5,000, merged by sequence with whatever the live feed delivers meanwhile (duplicates
// dropped by sequence). Memory: every event keeps a compact record; full payloads are kept for the
// newest 20,000 only and fetched again on demand for older ones.

import { api, apiUrl, getToken, ApiError } from './api.js';
import {
  h, replace, str, clip, pretty, parseTs, fmtDuration, fmtOffset, fmtInt, fmtCost, fmtTokens, fmtDateTime,
  copyButton, debounce,
} from './dom.js';
import { tierOf, summarize, typeLabel, isError, view, statusClass, isRunningStatus } from './model.js';
import { store, subscribe, getRow, mergeRow, fetchRow, liveness, skewOf, removeRow } from './store.js';
import { VList } from './vlist.js';
import { Waterfall } from './waterfall.js';
import { sessionHref } from './routes.js';

const FIRST_PAGE = 500;
const PAGE = 5000;
const ROW_H = 30;
const KEEP_FULL = 20000;
const MAX_RECS = 300000;
const LANES = 4;
const TIERS = ['session', 'cognition', 'operation', 'custom'];
const CONF_LEVEL = { high: 3, medium: 2, low: 1 };

const keyOfSeq = (seq) => `e${seq}`;
/** A confidence as a CSS class suffix (the text itself is shown as sent). */
const confCls = (c) => (c === 'high' || c === 'medium' || c === 'low' ? c : 'other');

export class SessionView {
  constructor(id, { live, onBack, seq }) {
    this.id = id;
    this.live = live;
    this.onBack = onBack;
    this.pendingSeq = seq ?? null;
    this.recs = [];
    this.bySeq = new Map();
    this.alerts = new Map();
    this.alertItems = new Map();
    this.pendingAlerts = new Map();
    this.looseAlerts = [];
    this.spans = [];
    this.resetPairing();
    this.filters = { tiers: new Set(TIERS), errors: false, alerts: false, text: '' };
    this.follow = false;
    this.loadedAll = false;
    this.loading = false;
    this.errorCount = 0;
    this.trimmed = 0;
    this.compactFrom = 0;
    this.destroyed = false;
    this.deleted = false;
    this.notFound = false;
    this.treeIds = new Set();
    this.treeGen = 0;

    this.buildDom();
    this.rebuild = debounce(() => this.rebuildItems(), 60, 250);
    this.redrawWaterfall = debounce(() => this.drawWaterfall(), 250, 1000);
    this.sync = debounce(() => this.syncNow(), 1500, 8000);
    this.reloadTree = debounce(() => this.loadTree(), 1200, 5000);
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
    this.rebuild.cancel();
    this.redrawWaterfall.cancel();
    this.sync.cancel();
    this.reloadTree.cancel();
    this.el.remove();
  }

  get row() { return getRow(this.id); }

  get running() {
    const r = this.row;
    return !!r && isRunningStatus(r.status);
  }

  // ------------------------------------------------------------------ DOM

  buildDom() {
    this.titleEl = h('h1', { class: 'sv-goal' }, 'Loading session…');
    this.subEl = h('div', { class: 'sv-sub' });
    const exportLink = h('a', {
      class: 'btn', href: apiUrl(`/sessions/${encodeURIComponent(this.id)}/export`), download: `session-${this.id}.jsonl`,
      'data-testid': 'export-button', title: 'Download every event of this session as JSON Lines',
    }, 'Export');
    exportLink.addEventListener('click', (e) => this.exportWithToken(e));
    const delBtn = h('button', { type: 'button', class: 'btn btn-danger', 'data-testid': 'delete-button', onclick: () => this.confirmDelete() }, 'Delete');
    const back = h('button', { type: 'button', class: 'btn btn-back', 'aria-label': 'Back to sessions', title: 'Back to sessions (Esc)', onclick: () => this.onBack() }, '← Sessions');

    this.metricEls = {};
    const metric = (key, label, testid) => {
      const v = h('span', { class: 'm-value', 'data-testid': testid || null }, '—');
      this.metricEls[key] = v;
      return h('div', { class: `metric m-${key}` }, h('span', { class: 'm-label' }, label), v);
    };
    this.confBars = h('span', { class: 'conf-trend', 'aria-hidden': 'true' });
    const metrics = h('div', { class: 'metrics', role: 'group', 'aria-label': 'Session metrics' },
      metric('status', 'Status', 'metric-status'),
      metric('steps', 'Steps', 'metric-steps'),
      metric('tokens', 'Tokens', 'metric-tokens'),
      metric('cost', 'Cost', 'metric-cost'),
      metric('duration', 'Duration', 'metric-duration'),
      h('div', { class: 'metric m-conf' }, h('span', { class: 'm-label' }, 'Confidence'),
        h('span', { class: 'm-conf-row' }, this.metricEls.conf = h('span', { class: 'm-value', 'data-testid': 'metric-confidence' }, '—'), this.confBars)),
      metric('events', 'Events', 'metric-events'),
      metric('alerts', 'Alerts', 'metric-alerts'));

    this.waterfall = new Waterfall({ onPick: (sp) => this.selectSeq((sp.start || sp.end).seq, true) });
    this.wfWrap = h('section', { class: 'panel wf-panel', 'aria-label': 'Tool calls over time' },
      h('div', { class: 'panel-head' }, h('h2', null, 'Tool calls'), this.wfInfo = h('span', { class: 'muted small' })),
      this.waterfall.el);

    // Toolbar: tier toggles, errors / alerts only, text filter, follow.
    this.tierBtns = {};
    const tiers = TIERS.map((t) => {
      const b = h('button', { type: 'button', class: `chip tier-${t}`, 'aria-pressed': 'true', 'data-testid': `tier-filter-${t}` }, t);
      b.addEventListener('click', () => {
        if (this.filters.tiers.has(t)) this.filters.tiers.delete(t); else this.filters.tiers.add(t);
        b.setAttribute('aria-pressed', String(this.filters.tiers.has(t)));
        this.rebuildItems();
      });
      this.tierBtns[t] = b;
      return b;
    });
    this.errBtn = h('button', { type: 'button', class: 'chip chip-err', 'aria-pressed': 'false', 'data-testid': 'filter-errors', title: 'Show only failed steps' }, 'Errors');
    this.errBtn.addEventListener('click', () => this.toggleFilter('errors', this.errBtn));
    this.alertBtn = h('button', { type: 'button', class: 'chip chip-alert', 'aria-pressed': 'false', 'data-testid': 'filter-alerts', title: 'Show only events that raised an alert' }, 'Alerts');
    this.alertBtn.addEventListener('click', () => this.toggleFilter('alerts', this.alertBtn));
    this.textFilter = h('input', {
      type: 'search', class: 'input input-small', placeholder: 'Filter events', 'aria-label': 'Filter events by text',
      'data-testid': 'timeline-filter', spellcheck: 'false', autocomplete: 'off',
    });
    this.textFilter.addEventListener('input', debounce(() => { this.filters.text = this.textFilter.value.trim().toLowerCase(); this.rebuildItems(); }, 200));
    this.nextBtn = h('button', { type: 'button', class: 'chip', title: 'Next error or alert (n; N for previous)', 'data-testid': 'next-problem' }, 'Next problem');
    this.nextBtn.addEventListener('click', () => this.jumpProblem(1));
    this.followBtn = h('button', { type: 'button', class: 'chip', 'aria-pressed': 'false', 'data-testid': 'follow-toggle', title: 'Keep the newest event in view (f)' }, 'Follow');
    this.followBtn.addEventListener('click', () => this.setFollow(!this.follow));
    this.progressEl = h('span', { class: 'tl-status muted small', 'data-testid': 'timeline-status', role: 'status' });
    const toolbar = h('div', { class: 'tl-toolbar', role: 'toolbar', 'aria-label': 'Timeline filters' },
      h('span', { class: 'chips' }, tiers), h('span', { class: 'sep' }),
      this.errBtn, this.alertBtn, this.textFilter, this.nextBtn, this.followBtn, this.progressEl);

    this.list = new VList({
      rowHeight: ROW_H,
      mode: 'listbox',
      label: 'Events',
      className: 'timeline',
      keyOf: (it) => it.key,
      verOf: (it) => it.ver,
      render: (it) => (it.kind === 'alert' ? this.renderAlert(it.alert) : this.renderRec(it)),
      onSelect: (i, it) => this.onSelect(it),
      onActivate: (i, it) => this.activate(it),
      onRender: (start, end) => this.onTimelineScroll(start, end),
    });
    // Scrolling away from the end stops following; scrolling back to it (while running) resumes.
    const userScroll = () => { this.userScrolled = true; };
    this.list.el.addEventListener('wheel', userScroll, { passive: true });
    this.list.el.addEventListener('pointerdown', userScroll, { passive: true });
    this.list.el.addEventListener('keydown', userScroll, { passive: true });
    this.list.el.addEventListener('scroll', () => {
      const atEnd = this.list.atEnd();
      if (this.follow && !atEnd) this.setFollow(false);
      else if (!this.follow && atEnd && this.userScrolled && this.running && !this.loading) this.setFollow(true);
      this.userScrolled = false;
    }, { passive: true });

    this.notice = h('div', { class: 'notice', hidden: true, role: 'status' });
    this.treeEl = h('nav', { class: 'tree', 'aria-label': 'Agent tree', 'data-testid': 'agent-tree' }, h('span', { class: 'muted small' }, 'Loading…'));
    this.inspEl = h('div', { class: 'insp', 'data-testid': 'inspector' },
      h('p', { class: 'muted' }, 'Select an event to see its details. ', h('kbd', null, 'j'), h('kbd', null, 'k'), ' move, ', h('kbd', null, 'n'), ' next problem.'));

    this.dialog = this.buildDeleteDialog();

    this.el = h('section', { class: 'view sv', 'data-testid': 'session-view', 'data-session-id': this.id, 'aria-labelledby': 'sv-title' },
      h('header', { class: 'sv-head' },
        back,
        h('div', { class: 'sv-titles' }, Object.assign(this.titleEl, { id: 'sv-title' }), this.subEl),
        h('div', { class: 'sv-actions' }, exportLink, delBtn)),
      metrics,
      this.notice,
      h('div', { class: 'sv-body' },
        h('div', { class: 'sv-main' },
          this.wfWrap,
          h('section', { class: 'panel tl-panel', 'aria-label': 'Event timeline' }, toolbar, this.list.el)),
        h('aside', { class: 'sv-side' },
          h('section', { class: 'panel tree-panel' }, h('div', { class: 'panel-head' }, h('h2', null, 'Agents')), this.treeEl),
          h('section', { class: 'panel insp-panel', 'aria-label': 'Event details' }, h('div', { class: 'panel-head' }, h('h2', null, 'Details')), this.inspEl))),
      this.dialog);
  }

  buildDeleteDialog() {
    const msg = h('p');
    const cancel = h('button', { type: 'button', class: 'btn', 'data-testid': 'cancel-delete' }, 'Cancel');
    const ok = h('button', { type: 'button', class: 'btn btn-danger', 'data-testid': 'confirm-delete' }, 'Delete session');
    const err = h('p', { class: 'error-text', role: 'alert' });
    const dlg = h('dialog', { class: 'dialog', 'aria-labelledby': `del-title-${this.id}` },
      h('h2', { id: `del-title-${this.id}` }, 'Delete this session?'), msg, err,
      h('div', { class: 'dialog-actions' }, cancel, ok));
    cancel.addEventListener('click', () => dlg.close());
    ok.addEventListener('click', async () => {
      ok.disabled = true;
      err.textContent = '';
      try {
        await api(`/sessions/${encodeURIComponent(this.id)}`, { method: 'DELETE' });
        dlg.close();
        removeRow(this.id);
        this.onBack(true);
      } catch (e) {
        err.textContent = `Could not delete: ${e.message}`;
      } finally {
        ok.disabled = false;
      }
    });
    dlg._msg = msg;
    dlg._cancel = cancel;
    return dlg;
  }

  confirmDelete() {
    const r = this.row;
    replace(this.dialog._msg,
      'The session ', h('code', null, clip(this.id, 80)),
      r ? ` (${r.agent_id || 'agent'}, ${fmtInt(r.event_count)} events) ` : ' ',
      'and its events and alerts will be removed from the collector. This cannot be undone.');
    this.dialog.showModal();
    this.dialog._cancel.focus();
  }

  async exportWithToken(e) {
    // A plain link cannot carry the Authorization header; with a token, download through fetch.
    if (!getToken()) return;
    e.preventDefault();
    try {
      const res = await api(`/sessions/${encodeURIComponent(this.id)}/export`, { raw: true });
      const url = URL.createObjectURL(await res.blob());
      const a = h('a', { href: url, download: `session-${this.id}.jsonl` });
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (err) {
      this.showNotice(`Export failed: ${err.message}`);
    }
  }

  showNotice(text) {
    this.notice.hidden = !text;
    this.notice.textContent = text || '';
  }

  // ------------------------------------------------------------------ loading

  async load() {
    this.loading = true;
    this.updateProgress();
    let first;
    try {
      first = await api(`/sessions/${encodeURIComponent(this.id)}`, { params: { limit: FIRST_PAGE } });
    } catch (e) {
      if (this.destroyed) return;
      this.loading = false;
      if (e instanceof ApiError && e.status === 404) {
        this.notFound = true;
        this.titleEl.textContent = 'Session not found';
        this.showNotice(`No session "${this.id}" in the collector (yet). This view will fill in if its events arrive.`);
      } else {
        this.showNotice(`Could not load the session: ${e.message}. Retrying…`);
        setTimeout(() => { if (!this.destroyed && !this.recs.length) this.load(); }, 3000);
      }
      this.updateProgress();
      return;
    }
    if (this.destroyed) return;
    this.notFound = false;
    this.showNotice(this.deleted ? 'This session was deleted.' : '');
    mergeRow(first.session);
    for (const a of first.alerts || []) this.addAlert(a, false);
    this.addEvents(first.events || [], false);
    this.follow = this.running && this.pendingSeq === null;
    this.setFollow(this.follow);
    this.renderHeader();
    this.updateMetrics();
    this.rebuildItems();
    this.drawWaterfall();
    this.loadTree();
    let after = first.next_after;
    while (after !== null && after !== undefined && !this.destroyed) {
      this.updateProgress();
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
    this.loadedAll = true;
    this.rebuild.flush();
    this.updateProgress();
    this.drawWaterfall();
  }

  /** After live events (debounced) and after a reconnection: the row, alerts and anything missed. */
  async syncNow() {
    if (this.destroyed || this.loading || this.deleted) return;
    if (this.notFound) { this.load(); return; }
    const last = this.recs.length ? this.recs[this.recs.length - 1].seq : null;
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

  onLiveEvent(ev) {
    if (ev.session_id === this.id) {
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
      if (ev.type === 'operation.agent_spawn') this.reloadTree();
      return;
    }
    if (ev.parent_session_id && this.treeIds.has(ev.parent_session_id) && !this.treeIds.has(ev.session_id)) {
      this.reloadTree();
    }
  }

  onDeleted(sid) {
    if (sid === this.id) {
      this.deleted = true;
      this.setFollow(false);
      this.showNotice('This session was deleted.');
      this.el.classList.add('is-deleted');
    } else if (this.treeIds.has(sid)) {
      this.reloadTree();
    }
  }

  onStoreChange(ids) {
    if (this.destroyed) return;
    if (ids.has(this.id) || ids.has('*')) {
      this.renderHeader();
      this.updateMetrics();
      const running = this.running;
      if (this.wasRunning !== undefined && running !== this.wasRunning) {
        // Open tool calls of an ended session are no longer "running": redraw them.
        this.list.invalidate();
        this.redrawWaterfall();
        this.refreshInspector();
      }
      this.wasRunning = running;
    }
    for (const id of ids) {
      if (this.treeIds.has(id)) { this.renderTree(); break; }
    }
  }

  // ------------------------------------------------------------------ events

  makeRec(ev, live) {
    const type = typeof ev.type === 'string' ? ev.type : String(ev.type);
    const p = ev.payload && typeof ev.payload === 'object' ? ev.payload : {};
    const rec = {
      seq: ev.sequence, type, tier: tierOf(type), ts: ev.timestamp, t: parseTs(ev.timestamp),
      label: clip(summarize(ev), 300).replace(/\s+/g, ' '), err: isError(ev), ev, key: keyOfSeq(ev.sequence), ver: 0,
      alerts: null, span: null, lanes: 0, laneStart: -1, laneEnd: -1, lc: null,
    };
    if (live) rec.arrived = Date.now();
    if (type === 'cognition.thought') rec.conf = view.confidence(p);
    if (type === 'operation.tool_start' || type === 'operation.tool_end') {
      rec.tool = str(view.tool(p)) || '(tool)';
      rec.callId = p.tool_call_id !== undefined && p.tool_call_id !== null ? str(p.tool_call_id) : null;
      if (type === 'operation.tool_end') rec.lat = view.latency(p);
      else rec.input = p.input !== undefined ? clip(str(p.input), 200) : '';
    }
    const pending = this.pendingAlerts.get(rec.seq);
    if (pending) { rec.alerts = pending; this.pendingAlerts.delete(rec.seq); }
    return rec;
  }

  addEvents(evs, live) {
    const fresh = [];
    for (const ev of evs) {
      if (!ev || typeof ev !== 'object' || !Number.isInteger(ev.sequence) || this.bySeq.has(ev.sequence)) continue;
      const rec = this.makeRec(ev, live);
      this.bySeq.set(rec.seq, rec);
      fresh.push(rec);
    }
    if (!fresh.length) return;
    fresh.sort((a, b) => a.seq - b.seq);
    for (const r of fresh) if (r.err) this.errorCount++;
    const recs = this.recs;
    if (!recs.length || fresh[0].seq > recs[recs.length - 1].seq) {
      const from = recs.length;
      for (const r of fresh) recs.push(r);
      this.pairFrom(from);
    } else {
      // Out of order (a late event, or a page landing after live events): merge, then pair again.
      const merged = new Array(recs.length + fresh.length);
      let i = 0; let j = 0; let k = 0;
      while (i < recs.length && j < fresh.length) merged[k++] = recs[i].seq < fresh[j].seq ? recs[i++] : fresh[j++];
      while (i < recs.length) merged[k++] = recs[i++];
      while (j < fresh.length) merged[k++] = fresh[j++];
      this.recs = merged;
      this.resetPairing();
      this.pairFrom(0);
      this.list.invalidate();
    }
    this.bound();
    if (this.pendingSeq !== null && this.bySeq.has(this.pendingSeq)) {
      const seq = this.pendingSeq;
      this.pendingSeq = null;
      this.rebuildItems();
      this.selectSeq(seq, true);
    }
    this.rebuild();
    this.redrawWaterfall();
    this.updateMetricsSoon();
    this.refreshInspector();
  }

  /** Keeps memory bounded: old payloads are dropped (refetched on demand), very old records too. */
  bound() {
    const recs = this.recs;
    if (recs.length > MAX_RECS) {
      const cut = recs.length - Math.floor(MAX_RECS * 0.9);
      const gone = recs.splice(0, cut);
      for (const r of gone) this.bySeq.delete(r.seq);
      const firstSeq = recs[0].seq;
      this.spans = this.spans.filter((sp) => (sp.end || sp.start).seq >= firstSeq);
      for (const sp of this.spans) if (sp.start && sp.start.seq < firstSeq) sp.start = null;
      this.trimmed += cut;
      this.compactFrom = 0;
      this.showNotice(`The ${fmtInt(this.trimmed)} oldest events are not kept in this view, to bound memory. Export the session for the complete record.`);
    }
    const limit = recs.length - KEEP_FULL;
    if (limit > KEEP_FULL / 2 + this.compactFrom) {
      const sel = this.list.selected();
      for (let i = this.compactFrom; i < limit; i++) {
        if (recs[i] !== sel) recs[i].ev = null;
      }
      this.compactFrom = limit;
    }
  }

  resetPairing() {
    this.spans = [];
    this.pair = { byId: new Map(), byName: new Map(), lanes: new Array(LANES).fill(null) };
  }

  /**
   * Pairs tool starts and ends (AOP.md): by tool_call_id when both carry it, else the oldest open
   * call of the same tool. Also assigns the timeline's span lanes (the lines in the left gutter).
   */
  pairFrom(from) {
    const { byId, byName, lanes } = this.pair;
    const recs = this.recs;
    for (let i = from; i < recs.length; i++) {
      const r = recs[i];
      let mask = 0;
      for (let k = 0; k < LANES; k++) if (lanes[k]) mask |= 1 << k;
      r.lanes = mask;
      r.laneStart = -1;
      r.laneEnd = -1;
      r.span = null;
      if (r.type === 'operation.tool_start') {
        const sp = { name: r.tool, callId: r.callId, start: r, end: null, state: 'running', lane: -1, seq: r.seq, t0: r.t, t1: NaN, dur: null };
        r.span = sp;
        this.spans.push(sp);
        if (sp.callId !== null) byId.set(sp.callId, sp);
        let list = byName.get(sp.name);
        if (!list) { list = []; byName.set(sp.name, list); }
        list.push(sp);
        const lane = lanes.indexOf(null);
        if (lane >= 0) { lanes[lane] = sp; sp.lane = lane; r.laneStart = lane; r.lanes |= 1 << lane; }
      } else if (r.type === 'operation.tool_end') {
        let sp = null;
        if (r.callId !== null && byId.has(r.callId)) sp = byId.get(r.callId);
        if (!sp) {
          const list = byName.get(r.tool);
          if (list) sp = list.find((c) => c.callId === null || r.callId === null) || null;
        }
        if (sp) {
          const list = byName.get(sp.name);
          const at = list ? list.indexOf(sp) : -1;
          if (at >= 0) list.splice(at, 1);
          if (sp.callId !== null && byId.get(sp.callId) === sp) byId.delete(sp.callId);
          if (sp.lane >= 0) { lanes[sp.lane] = null; r.laneEnd = sp.lane; }
          sp.start.ver++;
        } else {
          sp = { name: r.tool, callId: r.callId, start: null, end: null, lane: -1, seq: r.seq };
          this.spans.push(sp);
        }
        sp.end = r;
        r.span = sp;
        sp.state = r.err ? 'error' : 'ok';
        sp.t1 = r.t;
        sp.t0 = sp.start ? sp.start.t : r.t - (r.lat || 0);
        sp.dur = r.lat !== null && r.lat !== undefined ? r.lat : (sp.start ? r.t - sp.start.t : null);
      }
    }
  }

  addAlert(a, live) {
    if (!a || this.alerts.has(a.id)) return;
    this.alerts.set(a.id, a);
    const item = { kind: 'alert', key: `a${a.id}`, alert: a, ver: 0 };
    this.alertItems.set(a.id, item);
    if (a.sequence !== null && a.sequence !== undefined) {
      const rec = this.bySeq.get(a.sequence);
      if (rec) { (rec.alerts || (rec.alerts = [])).push(a); rec.ver++; } else {
        const list = this.pendingAlerts.get(a.sequence) || [];
        list.push(a);
        this.pendingAlerts.set(a.sequence, list);
      }
    } else {
      a._t = parseTs(a.created_at) - skewOf(this.id);
      this.looseAlerts.push(a);
      this.looseAlerts.sort((x, y) => x._t - y._t);
    }
    if (live) this.sync();
    this.rebuild();
    this.updateMetricsSoon();
    this.refreshInspector();
  }

  // ------------------------------------------------------------------ timeline items

  toggleFilter(name, btn) {
    this.filters[name] = !this.filters[name];
    btn.setAttribute('aria-pressed', String(this.filters[name]));
    this.rebuildItems();
  }

  passes(rec) {
    const f = this.filters;
    if (!f.tiers.has(rec.tier)) return false;
    if (f.errors && !(rec.err || (rec.span && rec.span.start === rec && rec.span.state === 'error'))) return false;
    if (f.alerts && !rec.alerts) return false;
    if (f.text) {
      if (rec.lc === null) rec.lc = `${rec.type} ${rec.label} #${rec.seq}`.toLowerCase();
      if (!rec.lc.includes(f.text)) return false;
    }
    return true;
  }

  rebuildItems() {
    this.rebuild.cancel();
    const out = [];
    const f = this.filters;
    const loose = this.looseAlerts;
    let li = 0;
    const looseOk = (a) => !f.text || `${a.type} ${a.message}`.toLowerCase().includes(f.text);
    for (const rec of this.recs) {
      while (li < loose.length && !(loose[li]._t >= rec.t)) { if (looseOk(loose[li])) out.push(this.alertItems.get(loose[li].id)); li++; }
      if (!this.passes(rec)) continue;
      out.push(rec);
      if (rec.alerts) for (const a of rec.alerts) out.push(this.alertItems.get(a.id));
    }
    for (; li < loose.length; li++) if (looseOk(loose[li])) out.push(this.alertItems.get(loose[li].id));
    this.items = out;
    this.list.setItems(out);
    if (this.follow) this.list.scrollToEnd();
    this.errBtn.textContent = `Errors ${fmtInt(this.errorCount)}`;
    this.alertBtn.textContent = `Alerts ${fmtInt(this.alerts.size)}`;
    this.updateProgress();
    if (!out.length) this.list.spacer.dataset.empty = this.recs.length ? 'No events match these filters.' : (this.loading ? 'Loading events…' : 'No events yet.');
    else delete this.list.spacer.dataset.empty;
  }

  setFollow(on) {
    this.follow = !!on;
    this.followBtn.setAttribute('aria-pressed', String(this.follow));
    if (this.follow && this.items) this.list.scrollToEnd();
  }

  updateProgress() {
    const r = this.row;
    const total = r ? r.event_count : null;
    let text = '';
    if (this.loading && this.recs.length) text = `Loading ${fmtInt(this.recs.length)}${total ? ` of ${fmtInt(total)}` : ''} events…`;
    else if (this.loading) text = 'Loading…';
    else {
      const shown = this.items ? this.items.length : 0;
      const n = this.recs.length + this.trimmed;
      const filtered = shown !== this.recs.length + this.alerts.size;
      text = `${filtered ? `${fmtInt(shown)} of ` : ''}${fmtInt(n)} event${n === 1 ? '' : 's'}`;
    }
    if (this.progressEl.textContent !== text) this.progressEl.textContent = text;
  }

  t0() {
    const r = this.row;
    const s = r ? parseTs(r.started_at) : NaN;
    if (Number.isFinite(s)) return s;
    return this.recs.length ? this.recs[0].t : NaN;
  }

  spanState(sp) {
    if (sp.end) return sp.state;
    return this.running && !this.deleted ? 'running' : 'error';
  }

  spanEl(sp, testid = 'tool-span') {
    const state = this.spanState(sp);
    // A running call's duration ticks (app clock) from when it started, in browser time.
    const since = state === 'running' ? sp.start.arrived ?? sp.start.t + skewOf(this.id) : null;
    const dur = h('span', { class: since === null ? 'span-dur' : 'span-dur tick', 'data-testid': 'tool-duration', 'data-since': since },
      since !== null ? fmtDuration(Date.now() - since) : sp.end ? fmtDuration(sp.dur) : 'no end');
    const icon = state === 'running' ? h('span', { class: 'spinner', 'aria-hidden': 'true' }) : h('span', { class: 'span-icon', 'aria-hidden': 'true' }, state === 'ok' ? '✓' : '✕');
    return h('span', {
      class: `span st-${state}`, 'data-testid': testid, 'data-state': state, 'data-tool': sp.name,
      title: `${sp.name}: ${state === 'running' ? 'running' : state === 'ok' ? 'succeeded' : sp.end ? 'failed' : 'never ended'}`,
    }, icon, h('span', { class: 'span-name' }, clip(sp.name, 40)), dur);
  }

  gutter(rec) {
    const g = h('span', { class: 'gut', 'aria-hidden': 'true' });
    if (!rec.lanes) return g;
    for (let k = 0; k < LANES; k++) {
      if (!(rec.lanes & (1 << k))) continue;
      const kind = rec.laneStart === k ? 'start' : rec.laneEnd === k ? 'end' : 'mid';
      g.appendChild(h('i', { class: `ln ln-${kind}`, style: { left: `${2 + k * 4}px` } }));
    }
    return g;
  }

  renderRec(rec) {
    const body = h('span', { class: 'ev-body' });
    const flags = h('span', { class: 'ev-flags' });
    switch (rec.type) {
      case 'operation.tool_start':
        body.append(this.spanEl(rec.span), h('span', { class: 'ev-text muted' }, rec.input ? `(${rec.input})` : ''));
        break;
      case 'operation.tool_end': {
        const sp = rec.span;
        if (sp && !sp.start) body.append(this.spanEl(sp));
        else body.append(h('span', { class: `end-mark st-${sp ? sp.state : 'ok'}` }, '↳ ', clip(rec.tool, 40)));
        const p = rec.ev ? rec.ev.payload || {} : null;
        let text = rec.label.replace(/^[^ ]+ (→ |failed: )/, '');
        if (p) text = rec.err ? str(p.error) || 'failed' : str(view.output(p)) || 'ok';
        body.append(h('span', { class: `ev-text ${rec.err ? 'error-text' : ''}` }, clip(text, 300)));
        if (sp && sp.start) flags.append(h('span', { class: 'muted small' }, `#${sp.start.seq} · ${fmtDuration(sp.dur)}`));
        break;
      }
      case 'cognition.thought':
        if (rec.conf) body.append(h('span', { class: `conf conf-${confCls(rec.conf)}`, title: `confidence: ${rec.conf}` }, clip(String(rec.conf), 12)));
        body.append(h('span', { class: 'ev-text' }, rec.label));
        break;
      case 'cognition.decision':
        body.append(h('span', { class: 'ev-text' }, h('span', { class: 'mark' }, '◆ '), rec.label));
        break;
      case 'cognition.uncertainty':
        body.append(h('span', { class: 'ev-text' }, h('span', { class: 'mark' }, '? '), rec.label));
        break;
      default:
        body.append(h('span', { class: `ev-text ${rec.err ? 'error-text' : ''}` }, rec.label));
    }
    if (rec.alerts) {
      const worst = rec.alerts.some((a) => a.severity === 'critical') ? 'critical' : 'warning';
      flags.append(h('span', { class: `badge sev-${worst}`, title: rec.alerts.map((a) => a.message).join('\n') }, `⚠\uFE0E ${rec.alerts.length}`));
    }
    return h('div', {
      class: `ev tier-${rec.tier}${rec.err ? ' is-err' : ''}${rec.alerts ? ' has-alert' : ''}`,
      'data-testid': 'timeline-event', 'data-sequence': String(rec.seq), 'data-type': rec.type, 'data-tier': rec.tier,
    },
    this.gutter(rec),
    h('span', { class: 'ev-seq mono' }, `#${rec.seq}`),
    h('span', { class: 'ev-time mono', title: str(rec.ts) }, fmtOffset(rec.t - this.t0())),
    h('span', { class: 'ev-type', title: rec.type }, typeLabel(rec.type)),
    body, flags);
  }

  renderAlert(a) {
    return h('div', {
      class: `al sev-${a.severity}`, 'data-testid': 'alert', 'data-alert-type': str(a.type), 'data-severity': str(a.severity),
      'data-sequence': a.sequence === null || a.sequence === undefined ? '' : String(a.sequence),
    },
    h('span', { class: 'gut' }),
    h('span', { class: 'al-icon', 'aria-hidden': 'true' }),
    h('span', { class: 'al-type' }, str(a.type).replace('_', ' ')),
    h('span', { class: 'al-msg' }, clip(str(a.message), 300)),
    h('span', { class: 'muted small' }, fmtDateTime(parseTs(a.created_at))));
  }

  // ------------------------------------------------------------------ selection & keyboard

  selectSeq(seq, center) {
    let i = this.items ? this.items.findIndex((it) => it.kind !== 'alert' && it.seq === seq) : -1;
    if (i < 0 && this.bySeq.has(seq)) {
      // Hidden by the filters: clear them so the event can be shown.
      this.filters = { tiers: new Set(TIERS), errors: false, alerts: false, text: '' };
      for (const b of Object.values(this.tierBtns)) b.setAttribute('aria-pressed', 'true');
      this.errBtn.setAttribute('aria-pressed', 'false');
      this.alertBtn.setAttribute('aria-pressed', 'false');
      this.textFilter.value = '';
      this.rebuildItems();
      i = this.items.findIndex((it) => it.kind !== 'alert' && it.seq === seq);
    }
    if (i < 0) return;
    this.setFollow(false);
    if (center) this.list.scrollToIndex(i, 'center');
    this.list.select(i, { scroll: !center });
  }

  onSelect(it) {
    if (!it) return;
    if (it.kind !== 'alert') {
      const url = `${location.pathname}${location.search}${sessionHref(this.id, it.seq)}`;
      history.replaceState(null, '', url);
    }
    if (this.follow && this.list.sel !== this.items.length - 1) this.setFollow(false);
    this.inspect(it);
  }

  /** Enter: follow the item's link (tool start ↔ end, spawned child, alert → its event). */
  activate(it) {
    if (!it) return;
    if (it.kind === 'alert') { if (it.alert.sequence !== null) this.selectSeq(it.alert.sequence, true); return; }
    if (it.span) {
      const other = it.span.start === it ? it.span.end : it.span.start;
      if (other) { this.selectSeq(other.seq, true); return; }
    }
    if (it.type === 'operation.agent_spawn' && it.ev && it.ev.payload && typeof it.ev.payload.child_session_id === 'string') {
      location.hash = sessionHref(it.ev.payload.child_session_id);
    }
  }

  jumpProblem(dir) {
    const items = this.items || [];
    if (!items.length) return;
    const isProblem = (it) => it.kind === 'alert' || it.err || (it.span && it.span.start === it && it.span.state === 'error');
    let i = this.list.sel;
    for (let n = 0; n < items.length; n++) {
      i += dir;
      if (i < 0 || i >= items.length) break;
      if (isProblem(items[i])) {
        this.setFollow(false);
        this.list.scrollToIndex(i, 'center');
        this.list.select(i, { scroll: false });
        return;
      }
    }
    this.nextBtn.classList.add('shake');
    setTimeout(() => this.nextBtn.classList.remove('shake'), 400);
  }

  /** Keys while this view is shown; returns true when handled. */
  onKey(e) {
    switch (e.key) {
      case 'j': case 'ArrowDown': this.list.move(1); return true;
      case 'k': case 'ArrowUp': this.list.move(-1); return true;
      case 'PageDown': this.list.move(Math.floor(this.list.el.clientHeight / ROW_H)); return true;
      case 'PageUp': this.list.move(-Math.floor(this.list.el.clientHeight / ROW_H)); return true;
      case 'g': case 'Home': this.list.select(0); return true;
      case 'G': case 'End': this.list.select(this.list.length - 1); return true;
      case 'Enter': this.activate(this.list.selected()); return true;
      case 'n': this.jumpProblem(1); return true;
      case 'N': case 'p': this.jumpProblem(-1); return true;
      case 'f': this.setFollow(!this.follow); return true;
      case '/': this.textFilter.focus(); this.textFilter.select(); return true;
      default: return false;
    }
  }

  onTimelineScroll(start, end) {
    // Show the visible slice of time on the waterfall.
    const items = this.items || [];
    let a = null; let b = null;
    for (let i = start; i < end && i < items.length; i++) if (items[i].kind !== 'alert' && Number.isFinite(items[i].t)) { a = items[i]; break; }
    for (let i = Math.min(end, items.length) - 1; i >= start; i--) if (items[i].kind !== 'alert' && Number.isFinite(items[i].t)) { b = items[i]; break; }
    this.waterfall.setWindow(a ? a.t : NaN, b ? b.t : NaN);
  }

  // ------------------------------------------------------------------ inspector

  async fullEvent(rec) {
    if (rec.ev) return rec.ev;
    const params = rec.seq > 0 ? { after: rec.seq - 1, limit: 1 } : { limit: 1 };
    const r = await api(`/sessions/${encodeURIComponent(this.id)}`, { params });
    const ev = (r.events || []).find((e) => e.sequence === rec.seq);
    if (!ev) throw new Error('event not found');
    return ev;
  }

  /** What the inspector shows depends on: the span's state and the alerts at the event. */
  inspectSig(it) {
    return it.kind === 'alert' ? '' : `${it.span ? this.spanState(it.span) : ''}:${it.alerts ? it.alerts.length : 0}`;
  }

  /** Redraws the inspector if what it shows has changed (a tool call ended, an alert arrived). */
  refreshInspector() {
    const it = this.inspected;
    if (it && this.inspectSig(it) !== this.inspectedSig) this.inspect(it);
  }

  async inspect(it) {
    this.inspected = it;
    this.inspectedSig = this.inspectSig(it);
    const token = (this.inspectToken = {});
    if (it.kind === 'alert') {
      replace(this.inspEl, this.alertDetail(it.alert));
      return;
    }
    let ev;
    let other = null;
    try {
      ev = await this.fullEvent(it);
      if (it.span) {
        const o = it.span.start === it ? it.span.end : it.span.start;
        if (o) other = await this.fullEvent(o);
      }
    } catch (e) {
      if (token === this.inspectToken) replace(this.inspEl, h('p', { class: 'error-text' }, `Could not load event #${it.seq}: ${e.message}`));
      return;
    }
    if (token !== this.inspectToken || this.destroyed) return;
    replace(this.inspEl, this.eventDetail(it, ev, other));
  }

  alertDetail(a) {
    return h('div', { class: 'detail' },
      h('div', { class: 'd-head' }, h('span', { class: `badge sev-${str(a.severity)}` }, str(a.severity)), h('strong', null, str(a.type))),
      h('p', null, str(a.message)),
      kv([
        ['raised', `${fmtDateTime(parseTs(a.created_at))} (${str(a.created_at)})`],
        ['event', a.sequence === null || a.sequence === undefined ? 'none (stall)' : h('button', { type: 'button', class: 'link', onclick: () => this.selectSeq(a.sequence, true) }, `#${a.sequence}`)],
        ['alert id', str(a.id)],
      ]),
      a.details && Object.keys(a.details).length ? jsonBlock('Details', a.details) : null);
  }

  eventDetail(rec, ev, other) {
    const p = ev.payload && typeof ev.payload === 'object' ? ev.payload : {};
    const parts = [];
    parts.push(h('div', { class: 'd-head' },
      h('span', { class: `chip tier-${rec.tier} static` }, rec.type),
      h('span', { class: 'mono' }, `#${rec.seq}`),
      h('span', { class: 'muted mono small', title: 'agent timestamp' }, str(ev.timestamp))));
    const rows = [];
    switch (rec.type) {
      case 'cognition.thought':
        parts.push(h('p', { class: 'prose' }, str(view.thought(p))));
        if (view.confidence(p) !== null) rows.push(['confidence', h('span', { class: `conf conf-${confCls(view.confidence(p))}` }, str(view.confidence(p)))]);
        if (p.next_intent !== undefined) rows.push(['next intent', str(p.next_intent)]);
        break;
      case 'cognition.decision': {
        parts.push(h('p', { class: 'prose' }, h('strong', null, 'Chose: '), str(view.decision(p))));
        const alts = view.alternatives(p);
        if (alts.length) {
          parts.push(h('div', { class: 'd-sub' }, 'Alternatives', h('ul', { class: 'alts' }, alts.map((a) => h('li', null, str(a))))));
        }
        if (p.reasoning !== undefined) parts.push(h('div', { class: 'd-sub' }, 'Reasoning', h('p', { class: 'prose' }, str(p.reasoning))));
        break;
      }
      case 'cognition.goal':
        parts.push(h('p', { class: 'prose' }, str(p.goal)));
        rows.push(['status', str(p.status)]);
        if (p.parent_goal !== undefined) rows.push(['parent goal', str(p.parent_goal)]);
        break;
      case 'cognition.uncertainty':
        parts.push(h('p', { class: 'prose' }, str(view.uncertainty(p))));
        break;
      case 'operation.tool_start':
      case 'operation.tool_end': {
        const sp = rec.span;
        const start = rec.type === 'operation.tool_start' ? ev : other;
        const end = rec.type === 'operation.tool_end' ? ev : other;
        const sp0 = start ? start.payload || {} : {};
        const sp1 = end ? end.payload || {} : {};
        if (sp) parts.push(h('div', { class: 'd-span' }, this.spanEl(sp, 'inspector-span')));
        rows.push(['tool', str(view.tool(p))]);
        if (p.tool_call_id !== undefined) rows.push(['call id', h('span', { class: 'mono' }, str(p.tool_call_id), ' ', copyButton(() => str(p.tool_call_id), 'Copy call id'))]);
        if (sp && sp.start && sp.end) {
          const otherRec = rec === sp.start ? sp.end : sp.start;
          rows.push([rec === sp.start ? 'ended at' : 'started at', h('button', { type: 'button', class: 'link', onclick: () => this.selectSeq(otherRec.seq, true) }, `#${otherRec.seq}`)]);
        }
        if (end) {
          rows.push(['success', str(sp1.success)]);
          if (view.latency(sp1) !== null) rows.push(['latency', fmtDuration(view.latency(sp1))]);
          if (sp1.token_spend_delta !== undefined) rows.push(['tokens', fmtInt(sp1.token_spend_delta)]);
          if (sp1.cost_usd !== undefined) rows.push(['cost', fmtCost(sp1.cost_usd)]);
        }
        parts.push(kv(rows));
        rows.length = 0;
        if (start && sp0.input !== undefined) parts.push(jsonBlock('Input', sp0.input, 'copy-input'));
        if (end && sp1.error !== undefined && sp1.error !== null) parts.push(textBlock('Error', str(sp1.error), 'error-text'));
        if (end && view.output(sp1) !== undefined) parts.push(textBlock('Output', str(view.output(sp1))));
        break;
      }
      case 'operation.agent_spawn':
        if (typeof p.child_session_id === 'string') {
          rows.push(['child', h('a', { href: sessionHref(p.child_session_id), class: 'mono' }, p.child_session_id)]);
        }
        rows.push(['agent', str(p.child_agent_id)]);
        if (p.goal !== undefined) rows.push(['goal', str(p.goal)]);
        if (p.reason !== undefined) rows.push(['reason', str(p.reason)]);
        break;
      case 'session.ended':
        rows.push(['outcome', str(view.outcome(p)) || 'completed']);
        if (p.outcome_summary !== undefined) rows.push(['summary', str(p.outcome_summary)]);
        if (p.error_message !== undefined) rows.push(['error', h('span', { class: 'error-text' }, str(p.error_message))]);
        break;
      default:
        parts.push(h('p', { class: 'prose' }, rec.label));
    }
    if (rows.length) parts.push(kv(rows));
    if (rec.alerts) parts.push(h('div', { class: 'd-sub' }, 'Alerts', rec.alerts.map((a) => h('div', { class: `al-inline sev-${str(a.severity)}`, 'data-testid': 'alert-detail' }, h('strong', null, str(a.type)), ' ', str(a.message)))));
    parts.push(jsonBlock('Event', ev, 'copy-payload', true));
    return h('div', { class: 'detail' }, parts);
  }

  // ------------------------------------------------------------------ header, metrics

  renderHeader() {
    const r = this.row;
    if (!r) return;
    const goal = r.goal || '(no goal)';
    if (this.titleEl.textContent !== goal) this.titleEl.textContent = goal;
    document.title = `${r.agent_id || 'session'} · aop`;
    const live = liveness(r);
    const running = isRunningStatus(r.status);
    const status = running ? (live === 'stalled' ? 'stalled' : 'running') : String(r.status);
    const sig = JSON.stringify([r.agent_id, r.id, r.llm, r.agent_version, r.parent_session_id, status, r.error_message, r.outcome_summary, this.deleted]);
    if (sig === this.headerSig) return;
    this.headerSig = sig;
    replace(this.subEl,
      h('span', { class: `dot live-${running ? live : statusClass(r.status)}`, 'aria-hidden': 'true' }),
      h('strong', null, r.agent_id || '—'),
      h('span', { class: 'mono small sid' }, r.id), copyButton(() => r.id, 'Copy session id', 'copy-session-id'),
      r.llm ? h('span', { class: 'muted small' }, r.llm) : null,
      r.agent_version ? h('span', { class: 'muted small' }, `v${r.agent_version}`) : null,
      r.parent_session_id ? h('a', { class: 'small', href: sessionHref(r.parent_session_id), 'data-testid': 'parent-link' }, '↑ parent') : null,
      r.error_message ? h('span', { class: 'error-text small' }, clip(r.error_message, 160)) : (r.outcome_summary ? h('span', { class: 'muted small' }, clip(r.outcome_summary, 160)) : null));
  }

  updateMetricsSoon() {
    if (this.metricsQueued) return;
    this.metricsQueued = true;
    setTimeout(() => { this.metricsQueued = false; if (!this.destroyed) this.updateMetrics(); }, 200);
  }

  updateMetrics() {
    const r = this.row;
    const m = this.metricEls;
    const set = (el, text, value, extra) => {
      if (el.textContent !== text) el.textContent = text;
      el.dataset.value = value === null || value === undefined ? '' : String(value);
      if (extra) for (const [k, v] of Object.entries(extra)) el.setAttribute(k, v);
    };
    if (r) {
      const live = liveness(r);
      const running = isRunningStatus(r.status);
      const status = running ? (live === 'stalled' ? 'stalled' : 'running') : String(r.status);
      set(m.status, status, status);
      m.status.className = `m-value pill st-${running ? (live === 'stalled' ? 'warn' : 'running') : statusClass(r.status)}`;
      set(m.steps, fmtInt(r.total_steps), r.total_steps);
      set(m.tokens, fmtInt(r.total_tokens), r.total_tokens);
      m.tokens.title = `${fmtTokens(r.total_tokens)} tokens`;
      set(m.cost, fmtCost(r.total_cost_usd), r.total_cost_usd);
      const started = parseTs(r.started_at);
      if (running && Number.isFinite(started)) {
        const since = started + skewOf(this.id);
        m.duration.dataset.since = String(since);
        m.duration.classList.add('tick');
        set(m.duration, fmtDuration(Date.now() - since), '');
      } else {
        delete m.duration.dataset.since;
        m.duration.classList.remove('tick');
        set(m.duration, fmtDuration(r.duration_ms), r.duration_ms);
      }
      set(m.events, fmtInt(Math.max(r.event_count || 0, this.recs.length + this.trimmed)), r.event_count);
    }
    set(m.alerts, fmtInt(Math.max(this.alerts.size, r ? r.alert_count || 0 : 0)), this.alerts.size);
    m.alerts.classList.toggle('has-alerts', this.alerts.size > 0);
    // Current confidence: the latest thought that states one; the trend of the last ones beside it.
    const confs = [];
    for (let i = this.recs.length - 1, seen = 0; i >= 0 && seen < 5000 && confs.length < 24; i--, seen++) {
      const c = this.recs[i].conf;
      if (c !== undefined && c !== null) confs.push(c);
    }
    const cur = confs.length ? String(confs[0]) : null;
    set(m.conf, cur || '—', cur || '');
    m.conf.className = `m-value conf-text conf-${cur ? confCls(cur) : 'none'}`;
    const sig = confs.join(',');
    if (sig !== this.confSig) {
      this.confSig = sig;
      replace(this.confBars, confs.slice().reverse().map((c) => h('i', { class: `cb conf-${confCls(c)}`, style: { height: `${(CONF_LEVEL[c] || 2) * 4}px` } })));
      this.confBars.title = 'Confidence of the latest thoughts, oldest to newest';
    }
    this.updateProgress();
  }

  drawWaterfall() {
    if (this.destroyed) return;
    const r = this.row;
    const spans = this.spans.map((sp) => ({
      name: sp.name, t0: sp.t0, t1: sp.end ? sp.t1 : NaN, state: this.spanState(sp), seq: (sp.start || sp.end).seq, dur: sp.dur,
      start: sp.start, end: sp.end,
    }));
    const from = this.t0();
    let to = r ? parseTs(r.ended_at || r.last_seen_at) : NaN;
    if (this.running) to = Math.max(Number.isFinite(to) ? to : 0, Date.now() - skewOf(this.id));
    // Running bars are drawn up to "now" in the agent's clock.
    const now = Date.now() - skewOf(this.id);
    for (const sp of spans) if (sp.state === 'running') sp.t1 = now;
    this.waterfall.update(spans, { from, to });
    const running = spans.filter((sp) => sp.state === 'running').length;
    const failed = spans.filter((sp) => sp.state === 'error').length;
    this.wfInfo.textContent = `${fmtInt(spans.length)} calls${failed ? ` · ${fmtInt(failed)} failed` : ''}${running ? ` · ${running} running` : ''}`;
  }

  /** Once a second, from the app. */
  tick() {
    if (this.destroyed) return;
    if (this.running && this.spans.some((sp) => !sp.end)) this.redrawWaterfall();
    const r = this.row;
    if (r && isRunningStatus(r.status)) {
      const l = liveness(r);
      if (l !== this.lastLive) { this.lastLive = l; this.headerSig = null; this.renderHeader(); this.updateMetrics(); }
    }
  }

  // ------------------------------------------------------------------ agent tree

  async loadTree() {
    const gen = ++this.treeGen;
    const row = this.row;
    if (!row) return;
    const chain = [];
    const seen = new Set([this.id]);
    let cur = row;
    while (cur && cur.parent_session_id && chain.length < 8 && !seen.has(cur.parent_session_id)) {
      const pid = cur.parent_session_id;
      seen.add(pid);
      let p = getRow(pid);
      if (!p || p._provisional) p = await fetchRow(pid);
      if (gen !== this.treeGen || this.destroyed) return;
      if (!p) { chain.unshift({ id: pid, missing: true }); break; }
      chain.unshift(p);
      cur = p;
    }
    const root = chain.length && !chain[0].missing ? chain[0] : row;
    const kids = new Map();
    const depthOf = new Map([[root.id, 0]]);
    const queue = [root];
    let budget = 40;
    while (queue.length && budget-- > 0) {
      const n = queue.shift();
      const d = depthOf.get(n.id);
      if (d > 4 || (n !== root && n.id !== this.id && !(n.child_count > 0))) continue;
      try {
        const r = await api(`/sessions/${encodeURIComponent(n.id)}/children`);
        if (gen !== this.treeGen || this.destroyed) return;
        const list = (r.sessions || []).map(mergeRow).filter(Boolean);
        kids.set(n.id, list);
        for (const c of list) if (!depthOf.has(c.id)) { depthOf.set(c.id, d + 1); queue.push(c); }
      } catch {
        if (gen !== this.treeGen || this.destroyed) return;
      }
    }
    this.tree = { chain, root, kids };
    this.renderTree();
  }

  renderTree() {
    const t = this.tree;
    if (!t) return;
    const ids = new Set();
    const ancestors = new Set(t.chain.map((n) => n.id));
    const node = (row, level) => {
      ids.add(row.id);
      const live = liveness(row);
      const running = isRunningStatus(row.status);
      const status = running ? (live === 'stalled' ? 'stalled' : 'running') : String(row.status);
      const inner = [
        h('span', { class: `dot live-${running ? live : statusClass(row.status)}`, 'aria-hidden': 'true' }),
        h('span', { class: 'tn-agent' }, row.agent_id || '—'),
        h('span', { class: `tn-status st-${running ? (live === 'stalled' ? 'warn' : 'running') : statusClass(row.status)}` }, status),
        row.goal ? h('span', { class: 'tn-goal muted' }, clip(row.goal, 80)) : null,
      ];
      const el = row.id === this.id
        ? h('span', { class: 'tnode current', 'data-testid': 'tree-current', 'data-session-id': row.id, 'aria-current': 'page' }, inner)
        : h('a', {
          class: 'tnode', href: sessionHref(row.id), 'data-session-id': row.id,
          'data-testid': ancestors.has(row.id) ? 'parent-session' : 'child-session',
          'data-status': status,
        }, inner);
      const children = t.kids.get(row.id) || [];
      const shown = children.slice(0, 30);
      return h('li', null, el,
        shown.length ? h('ul', null, shown.map((c) => node(c, level + 1)),
          children.length > shown.length ? h('li', { class: 'muted small' }, `+ ${children.length - shown.length} more`) : null) : null);
    };
    let tree;
    if (t.chain.length && t.chain[0].missing) {
      ids.add(t.chain[0].id);
      tree = h('ul', null, h('li', null,
        h('span', { class: 'tnode missing muted', title: 'This parent session has not been recorded' }, `parent ${clip(t.chain[0].id, 40)} (not recorded)`),
        h('ul', null, node(t.root, 1))));
    } else {
      tree = h('ul', null, node(t.root, 0));
    }
    const alone = ids.size === 1;
    this.treeIds = ids;
    replace(this.treeEl, alone ? h('p', { class: 'muted small' }, 'No parent or child agents.') : tree);
    if (alone) this.treeIds = new Set([this.id]);
  }
}

function kv(rows) {
  return h('dl', { class: 'kv' }, rows.map(([k, v]) => [h('dt', null, k), h('dd', null, v)]));
}

function jsonBlock(title, value, testid = 'copy-json', open = false) {
  const text = pretty(value);
  return h('details', { class: 'd-block', open: open || text.length < 2000 ? '' : null },
    h('summary', null, title, copyButton(() => text, `Copy ${title.toLowerCase()}`, testid)),
    h('pre', { class: 'json' }, text.length > 200000 ? `${text.slice(0, 200000)}\n… (truncated; use copy or export)` : text));
}

function textBlock(title, text, cls = '') {
  return h('div', { class: 'd-block' },
    h('div', { class: 'd-sub' }, title, copyButton(() => text, `Copy ${title.toLowerCase()}`, `copy-${title.toLowerCase()}`)),
    h('pre', { class: `text ${cls}` }, text));
}
