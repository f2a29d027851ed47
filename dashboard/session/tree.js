// The agent tree: the session's chain of parents up to the root, and the root's descendants (a
// bounded number of requests), each linking to its session. Reloaded when a relative appears or is
// deleted; redrawn when a shown row changes.

import { api } from '../api.js';
import { h, replace, clip, debounce } from '../dom.js';
import { getRow, mergeRow, fetchRow, statusOf } from '../store.js';
import { sessionHref } from '../routes.js';

export class AgentTree {
  constructor(id) {
    this.id = id;
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
    const alone = ids.size === 1;
    this.ids = alone ? new Set([this.id]) : ids;
    replace(this.bodyEl, alone ? h('p', { class: 'muted small' }, 'No parent or child agents.') : tree);
  }
}
