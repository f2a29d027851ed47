// The agent tree: the session's chain of parents up to the root, and the root's descendants (a
// bounded number of requests), each linking to its session. Reloaded when a relative appears or is
// deleted; redrawn when a shown row changes. The agents nested inside this session's own trace
// (an OpenTelemetry trace is one session, whatever agents ran in it) hang under it, each leading
// to the event of its start.

import { api } from '../api.js';
import { h, replace, clip, debounce } from '../dom.js';
import { getRow, mergeRow, fetchRow, statusOf } from '../store.js';
import { sessionHref } from '../routes.js';

/** At most this many agents of the session's own trace are drawn. */
const MAX_TRACE_AGENTS = 100;

export class AgentTree {
  /**
   * @param {string} id  the session
   * @param {object} o
   * @param {import('./records.js').Records} o.records  the session's events (for its trace's agents)
   * @param {(seq) => void} o.onSeq  an agent of the trace was picked: the event of its start
   */
  constructor(id, o) {
    this.id = id;
    this.o = o;
    this.traceAgentCount = 0;
    this.destroyed = false;
    /** ids of the sessions shown: changes to them redraw, events of their children reload */
    this.ids = new Set();
    // A newer load supersedes one in flight.
    this.gen = 0;
    this.reload = debounce(() => this.load(), 1200, 5000);
    this.bodyEl = h('nav', { class: 'tree', 'aria-label': 'Agent tree', 'data-testid': 'agent-tree' }, h('span', { class: 'muted small' }, 'Loading…'));
    this.el = h('section', { class: 'panel tree-panel' }, h('div', { class: 'panel-head' }, h('h2', null, 'Agents')), this.bodyEl);
  }

  destroy() {
    this.destroyed = true;
    this.reload.cancel();
  }

  /** A live event: a spawn by this session, or an event of a new child of a shown one. */
  onEvent(ev) {
    if (ev.session_id === this.id) {
      if (ev.type === 'operation.agent_spawn') this.reload();
    } else if (ev.parent_session_id && this.ids.has(ev.parent_session_id) && !this.ids.has(ev.session_id)) {
      this.reload();
    }
  }

  /** Another session was deleted. */
  onDeleted(sid) {
    if (this.ids.has(sid)) this.reload();
  }

  /** Events were added: redraws when the trace's agents changed. */
  onRecords() {
    const n = this.o.records.agentSpans.length;
    if (n === this.traceAgentCount) return;
    this.traceAgentCount = n;
    this.render();
  }

  /** The trace's agents, each under the nearest agent span enclosing it; null when there are none. */
  traceAgents() {
    const { agentSpans, trace } = this.o.records;
    if (!agentSpans.length) return null;
    const spawns = agentSpans.slice(0, MAX_TRACE_AGENTS);
    const isSpawn = new Set(spawns);
    const kids = new Map([[null, []]]);
    for (const s of spawns) {
      const up = trace.ancestors(s.otel.sid);
      let parent = null;
      for (let i = up.length - 1; i >= 0; i--) if (isSpawn.has(up[i])) { parent = up[i]; break; }
      if (!kids.has(parent)) kids.set(parent, []);
      kids.get(parent).push(s);
    }
    const seen = new Set();
    const list = (parent) => {
      const items = (kids.get(parent) || []).filter((s) => !seen.has(s));
      for (const s of items) seen.add(s);
      if (!items.length) return null;
      return h('ul', null, items.map((s) => h('li', null,
        h('button', {
          type: 'button', class: 'tnode trace-agent', 'data-testid': 'trace-agent', 'data-agent': s.child,
          title: `${s.child}: an agent inside this trace (show its start, #${s.seq})`, onclick: () => this.o.onSeq(s.seq),
        },
        h('span', { class: 'tn-mark', 'aria-hidden': 'true' }, '◇'),
        h('span', { class: 'tn-agent' }, clip(s.child, 60)),
        s.goal ? h('span', { class: 'tn-goal muted' }, s.goal) : null),
        list(s))));
    };
    const el = list(null);
    const more = agentSpans.length - spawns.length;
    return more > 0 ? [el, h('p', { class: 'muted small' }, `+ ${more} more agents in this trace`)] : el;
  }

  /** Rows changed in the store. */
  onRowsChanged(ids) {
    for (const id of ids) {
      if (this.ids.has(id)) { this.render(); break; }
    }
  }

  async load() {
    const gen = ++this.gen;
    const row = getRow(this.id);
    if (!row) return;
    const stale = () => gen !== this.gen || this.destroyed;
    const chain = [];
    const seen = new Set([this.id]);
    let cur = row;
    while (cur && cur.parent_session_id && chain.length < 8 && !seen.has(cur.parent_session_id)) {
      const pid = cur.parent_session_id;
      seen.add(pid);
      let p = getRow(pid);
      if (!p || p._provisional) p = await fetchRow(pid);
      if (stale()) return;
      if (!p) { chain.unshift({ id: pid, missing: true }); break; }
      chain.unshift(p);
      cur = p;
    }
    const root = chain.length && !chain[0].missing ? chain[0] : row;
    const kids = new Map();
    const depthOf = new Map([[root.id, 0]]);
    const queue = [root];
    // A bounded walk: a huge or deep family costs at most this many requests.
    let budget = 40;
    while (queue.length && budget-- > 0) {
      const n = queue.shift();
      const d = depthOf.get(n.id);
      if (d > 4 || (n !== root && n.id !== this.id && !(n.child_count > 0))) continue;
      try {
        const r = await api(`/sessions/${encodeURIComponent(n.id)}/children`);
        if (stale()) return;
        const list = (r.sessions || []).map(mergeRow).filter(Boolean);
        kids.set(n.id, list);
        for (const c of list) if (!depthOf.has(c.id)) { depthOf.set(c.id, d + 1); queue.push(c); }
      } catch {
        if (stale()) return;
      }
    }
    this.tree = { chain, root, kids };
    this.render();
  }

  render() {
    const t = this.tree;
    if (!t) return;
    const ids = new Set();
    const ancestors = new Set(t.chain.map((n) => n.id));
    const inTrace = this.traceAgents();
    const node = (row) => {
      ids.add(row.id);
      const st = statusOf(row);
      const inner = [
        h('span', { class: `dot live-${st.dot}`, 'aria-hidden': 'true' }),
        h('span', { class: 'tn-agent' }, row.agent_id || '—'),
        h('span', { class: `tn-status st-${st.cls}` }, st.text),
        row.goal ? h('span', { class: 'tn-goal muted' }, clip(row.goal, 80)) : null,
      ];
      const el = row.id === this.id
        ? h('span', { class: 'tnode current', 'data-testid': 'tree-current', 'data-session-id': row.id, 'aria-current': 'page' }, inner)
        : h('a', {
          class: 'tnode', href: sessionHref(row.id), 'data-session-id': row.id,
          'data-testid': ancestors.has(row.id) ? 'parent-session' : 'child-session',
          'data-status': st.text,
        }, inner);
      const children = t.kids.get(row.id) || [];
      const shown = children.slice(0, 30);
      return h('li', null, el,
        row.id === this.id ? inTrace : null,
        shown.length ? h('ul', null, shown.map((c) => node(c)),
          children.length > shown.length ? h('li', { class: 'muted small' }, `+ ${children.length - shown.length} more`) : null) : null);
    };
    let tree;
    if (t.chain.length && t.chain[0].missing) {
      ids.add(t.chain[0].id);
      tree = h('ul', null, h('li', null,
        h('span', { class: 'tnode missing muted', title: 'This parent session has not been recorded' }, `parent ${clip(t.chain[0].id, 40)} (not recorded)`),
        h('ul', null, node(t.root))));
    } else {
      tree = h('ul', null, node(t.root));
    }
    const alone = ids.size === 1 && !inTrace;
    this.ids = ids.size === 1 ? new Set([this.id]) : ids;
    replace(this.bodyEl, alone ? h('p', { class: 'muted small' }, 'No parent or child agents.') : tree);
  }
}
