// The sessions overview: running sessions first (all of them, from one query kept live), then the
// recent ones page by page (cursor, loaded on scroll), filtered by status, agent and text. Live
// events update rows in place through the shared store; nothing is refetched wholesale.

import { api } from './api.js';
import { h, icon, clip, parseTs, fmtDateTime, fmtDuration, fmtInt, fmtTokens, fmtCost, debounce } from './dom.js';
import { store, subscribe, mergeRow, getRow, liveness, skewOf, statusOf } from './store.js';
import { isRunningStatus } from './model.js';
import { agentBadge } from './session/parts.js';
import { sessionHref, overviewHref } from './routes.js';
import { VList } from './vlist.js';

const PAGE = 200;
const STATUSES = ['', 'running', 'completed', 'failed', 'cancelled', 'timeout'];
const LIVE_TEXT = { active: 'active', idle: 'quiet', stalled: 'stalled', ended: '' };

const byLast = (a, b) => (b._t || 0) - (a._t || 0) || (a.id < b.id ? -1 : 1);
// Running sessions keep their place (newest start first) however often they report: a calm list.
const startOf = (r) => (r._s === undefined || r._sv !== r.started_at ? (r._sv = r.started_at, r._s = parseTs(r.started_at) || 0) : r._s);
const byStart = (a, b) => startOf(b) - startOf(a) || (a.id < b.id ? -1 : 1);

export class Overview {
  constructor() {
    this.filters = { q: '', status: '', agent: '' };
    this.recentIds = [];
    this.recentSet = new Set();
    /** rows the collector returned for the current filters: they match, whatever `matches` sees */
    this.found = new Set();
    this.cursor = null;
    this.loading = false;
    this.error = null;
    this.loaded = false;
    this.gen = 0;
    this.footVer = 0;
    this.agents = new Set();

    this.q = h('input', {
      type: 'search', id: 'filter-q', class: 'input', placeholder: 'Search id, agent or goal', autocomplete: 'off',
      spellcheck: 'false', 'aria-label': 'Search sessions by id, agent or goal', 'data-testid': 'search-input',
      'aria-keyshortcuts': '/',
    });
    this.status = h('select', { class: 'input', 'aria-label': 'Filter by status', 'data-testid': 'status-filter' },
      STATUSES.map((s) => h('option', { value: s }, s || 'any status')));
    this.agent = h('input', {
      type: 'search', class: 'input input-agent', placeholder: 'Agent', list: 'agent-list', autocomplete: 'off',
      spellcheck: 'false', 'aria-label': 'Filter by agent id', 'data-testid': 'agent-filter',
    });
    this.agentList = h('datalist', { id: 'agent-list' });
    const onFilter = debounce(() => this.setFilters({ q: this.q.value.trim(), status: this.status.value, agent: this.agent.value.trim() }, true), 250);
    this.q.addEventListener('input', onFilter);
    this.agent.addEventListener('input', onFilter);
    this.status.addEventListener('change', () => { onFilter(); onFilter.flush(); });
    const form = h('form', { class: 'ov-filters', role: 'search', onsubmit: (e) => { e.preventDefault(); onFilter.flush(); } },
      this.q, this.status, this.agent, this.agentList,
      h('span', { class: 'hint' }, h('kbd', null, 'j'), h('kbd', null, 'k'), ' move ', h('kbd', null, 'Enter'), ' open ', h('kbd', null, '/'), ' search'));

    this.list = new VList({
      rowHeight: 52,
      mode: 'links',
      label: 'Sessions',
      className: 'ov-list',
      keyOf: (it) => (it.kind ? it.key : `s:${it.id}`),
      verOf: (it) => (it.kind ? (it.ver || 0) : it._ver || 0),
      render: (it) => this.renderItem(it),
      onRender: (start, end) => {
        if (end >= this.list.length - 4 && this.cursor && !this.loading && !this.error) this.loadMore();
      },
    });

    const head = h('div', { class: 'srow shead', 'aria-hidden': 'true' },
      h('span'), h('span', null, 'Agent'), h('span', null, 'Goal'), h('span', null, 'Status'), h('span', null, 'Started'),
      h('span', { class: 'num' }, 'Duration'), h('span', { class: 'num' }, 'Steps'), h('span', { class: 'num' }, 'Tokens'),
      h('span', { class: 'num' }, 'Cost'), h('span', { class: 'num' }, 'Alerts'), h('span', { class: 'num' }, 'Children'));

    this.el = h('section', { class: 'view ov', 'data-testid': 'sessions-view', 'aria-label': 'Sessions' },
      form, h('div', { class: 'ov-table' }, head, this.list.el));

    this.rebuild = debounce(() => this.build(), 120, 500);
    subscribe((ids) => this.onChange(ids));
  }

  /** Applies filters from the route (`#/?q=&status=&agent=`). */
  show(params) {
    const f = { q: params.get('q') || '', status: params.get('status') || '', agent: params.get('agent') || '' };
    if (!STATUSES.includes(f.status)) f.status = '';
    this.q.value = f.q;
    this.status.value = f.status;
    this.agent.value = f.agent;
    if (!this.loaded || f.q !== this.filters.q || f.status !== this.filters.status || f.agent !== this.filters.agent) {
      this.setFilters(f, false);
    } else {
      this.build();
    }
  }

  setFilters(f, updateHash) {
    const same = this.loaded && f.q === this.filters.q && f.status === this.filters.status && f.agent === this.filters.agent;
    this.filters = f;
    if (updateHash) history.replaceState(null, '', `${location.pathname}${location.search}${this.hash()}`);
    if (same) return;
    this.recentIds = [];
    this.recentSet = new Set();
    this.found = new Set();
    this.cursor = null;
    this.error = null;
    this.loaded = true;
    this.list.clearSelection();
    this.list.el.scrollTop = 0;
    this.loadMore(true);
  }

  /** The route of the overview with its current filters. */
  hash() {
    return overviewHref(this.filters);
  }

  matches(row) {
    const f = this.filters;
    if (f.agent && row.agent_id !== f.agent) return false;
    if (f.q) {
      // The collector's search also looks where a row does not show (a trace's conversation id).
      if (this.found.has(row.id)) return true;
      const q = f.q.toLowerCase();
      const conv = conversationOf(row) || '';
      if (!`${row.id}\n${row.agent_id || ''}\n${row.goal || ''}\n${conv}`.toLowerCase().includes(q)) return false;
    }
    return true;
  }

  async loadMore(reset = false) {
    if (this.filters.status === 'running') { this.cursor = null; this.build(); return; }
    if (this.loading && !reset) return;
    const gen = ++this.gen;
    this.loading = true;
    this.footVer++;
    this.build();
    const f = this.filters;
    try {
      const r = await api('/sessions', {
        params: { limit: PAGE, cursor: reset ? null : this.cursor, status: f.status, agent_id: f.agent, q: f.q },
      });
      if (gen !== this.gen) return;
      for (const raw of r.sessions || []) {
        const row = mergeRow(raw);
        this.found.add(row.id);
        if (!this.recentSet.has(row.id)) { this.recentSet.add(row.id); this.recentIds.push(row.id); }
        this.noteAgent(row.agent_id);
      }
      this.cursor = r.next_cursor || null;
      this.error = null;
    } catch (e) {
      if (gen !== this.gen) return;
      this.error = e.message || String(e);
    } finally {
      if (gen === this.gen) {
        this.loading = false;
        this.footVer++;
        this.build();
      }
    }
  }

  noteAgent(a) {
    if (!a || this.agents.has(a) || this.agents.size > 500) return;
    this.agents.add(a);
    this.agentList.appendChild(h('option', { value: a }));
  }

  onChange(ids) {
    const st = this.filters.status;
    for (const id of ids) {
      if (id === '*') continue;
      const row = getRow(id);
      if (!row || row._deleted) continue;
      this.noteAgent(row.agent_id);
      if (!this.recentSet.has(id) && st !== 'running' && !isRunningStatus(row.status) && this.matches(row) && (!st || row.status === st)) {
        this.recentSet.add(id);
        this.recentIds.unshift(id);
      }
    }
    // Bounded while live: forget the oldest live additions beyond a generous limit.
    if (this.recentIds.length > 20000) {
      for (const id of this.recentIds.splice(20000)) this.recentSet.delete(id);
    }
    this.rebuild();
  }

  build() {
    const st = this.filters.status;
    const filtered = !!(this.filters.q || this.filters.agent);
    const items = [];
    if (st === '' || st === 'running') {
      const running = [];
      for (const id of store.running) {
        const row = getRow(id);
        if (row && !row._deleted && this.matches(row)) running.push(row);
      }
      running.sort(byStart);
      items.push({ kind: 'head', key: 'h:run', ver: `${running.length}${store.runningMore}`, label: 'Running', count: `${running.length}${store.runningMore ? '+' : ''}` });
      if (!running.length) items.push({ kind: 'empty', key: 'e:run', ver: filtered ? 1 : 0, text: filtered ? 'No running session matches.' : 'Nothing running right now.' });
      items.push(...running);
    }
    if (st !== 'running') {
      const recent = [];
      for (const id of this.recentIds) {
        const row = getRow(id);
        if (!row || row._deleted) continue;
        if (st ? row.status !== st : isRunningStatus(row.status)) continue;
        if (this.matches(row)) recent.push(row);
      }
      recent.sort(byLast);
      const label = st ? `Status: ${st}` : 'Recent';
      items.push({ kind: 'head', key: 'h:recent', ver: `${label}${recent.length}${!!this.cursor}`, label, count: `${recent.length}${this.cursor ? '+' : ''}` });
      items.push(...recent);
      // The footer's empty state depends on whether any session is known at all.
      items.push({ kind: 'foot', key: 'foot', ver: `${this.footVer}:${recent.length}:${store.rows.size > 0}` });
    }
    this.list.setItems(items);
  }

  /** Once a second: ticking durations are updated by the app; here, liveness changes redraw rows. */
  tick(now) {
    let changed = false;
    for (const id of store.running) {
      const row = getRow(id);
      if (!row) continue;
      const l = liveness(row, now);
      if (row._live !== l) { row._live = l; row._ver = (row._ver || 0) + 1; changed = true; }
    }
    if (changed) this.list.schedule();
  }

  renderItem(it) {
    if (it.kind === 'head') {
      return h('div', { class: 'ov-section', role: 'heading', 'aria-level': '2' },
        h('span', null, it.label), h('span', { class: 'count' }, it.count));
    }
    if (it.kind === 'empty') return h('div', { class: 'ov-empty' }, it.text);
    if (it.kind === 'foot') return this.renderFoot();
    return this.renderRow(it);
  }

  renderFoot() {
    if (this.loading) return h('div', { class: 'ov-foot' }, h('span', { class: 'spinner', 'aria-hidden': 'true' }), 'Loading sessions…');
    if (this.error) {
      return h('div', { class: 'ov-foot error' }, `Could not load sessions: ${this.error}`,
        h('button', { type: 'button', class: 'btn', onclick: () => { this.error = null; this.loadMore(!this.recentIds.length); } }, 'Retry'));
    }
    if (this.cursor) {
      return h('div', { class: 'ov-foot' },
        h('button', { type: 'button', class: 'btn', 'data-testid': 'load-more', onclick: () => this.loadMore() }, 'Load more'));
    }
    if (!store.rows.size) {
      return h('div', { class: 'ov-foot empty-state' },
        h('strong', null, 'No sessions yet. '),
        `Point an agent's AOP endpoint at ${location.origin} and its events will appear here as they arrive.`);
    }
    return h('div', { class: 'ov-foot muted' }, 'End of list');
  }

  renderRow(row) {
    const { running, live, text: statusText, cls: sc, dot } = statusOf(row);
    row._live = live;
    const started = parseTs(row.started_at);
    const convId = conversationOf(row);
    // A coding agent's session is its own conversation: its id says it already.
    const conv = convId && convId !== row.id ? `conversation ${convId}` : '';
    const sub = row.error_message || row.outcome_summary || conv || (row.llm ? `model ${row.llm}` : '');
    const dur = running && Number.isFinite(started)
      ? h('span', { class: 'num tick', 'data-since': String(started + skewOf(row.id)) }, fmtDuration(Date.now() - started - skewOf(row.id)))
      : h('span', { class: 'num' }, fmtDuration(row.duration_ms));
    const alerts = row.alert_count > 0
      ? h('span', { class: `badge sev-${row._alertSev || 'warning'}`, title: `${row.alert_count} alert(s)`, 'data-testid': 'alert-badge' }, `⚠\uFE0E ${fmtInt(row.alert_count)}`)
      : h('span', { class: 'muted' }, '·');
    const kids = row.child_count > 0
      ? h('span', { class: 'badge', title: `${row.child_count} child session(s)`, 'data-testid': 'child-count' }, icon('tree'), ` ${fmtInt(row.child_count)}`)
      : h('span', { class: 'muted' }, '·');
    return h('a', {
      class: `srow st-${sc}`, href: sessionHref(row.id), 'data-testid': 'session-row', 'data-session-id': row.id,
      'data-status': statusText,
    },
    h('span', { class: `dot live-${dot}`, title: running ? `${LIVE_TEXT[live]}` : statusText, 'aria-hidden': 'true' }),
    h('span', { class: 'cell-agent' },
      h('span', { class: 'agent' }, row.agent_id || '—'),
      // The badge first: a long id is cut, never the badge.
      h('span', { class: 'sid mono' }, agentBadge(row.id, row.agent_id, row._meta), row.parent_session_id ? `↳ ${clip(row.id, 40)}` : clip(row.id, 40))),
    h('span', { class: 'cell-goal' },
      h('span', { class: 'goal' }, row.goal ? clip(row.goal, 200) : h('span', { class: 'muted' }, 'no goal')),
      sub ? h('span', { class: `sub ${row.error_message ? 'error-text' : ''}` }, clip(sub, 200)) : null),
    h('span', null, h('span', { class: `pill st-${sc}` }, statusText)),
    h('span', { class: 'muted', title: row.started_at || '' }, fmtDateTime(started)),
    dur,
    h('span', { class: 'num' }, fmtInt(row.total_steps)),
    h('span', { class: 'num' }, fmtTokens(row.total_tokens)),
    h('span', { class: 'num' }, fmtCost(row.total_cost_usd)),
    h('span', { class: 'num' }, alerts),
    h('span', { class: 'num' }, kids));
  }

  focusSearch() {
    this.q.focus();
    this.q.select();
  }
}

/** The conversation a session belongs to: on the collector's row, or in a live `session.started`. */
function conversationOf(row) {
  return row.conversation_id || (row._meta && row._meta.conversation) || null;
}
