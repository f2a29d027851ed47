// One conversation: the sessions that share its id (`GET /sessions?conversation=ID`), one a turn
// (an OpenTelemetry agent that starts a trace per prompt makes a session per turn; a coding agent's
// session is a conversation of one), in the order they started, each with its tokens, cost, tool
// calls and alerts and leading to its session, and the conversation's totals.
//
// Tokens, cost and alerts are the collector's session rows (shared with the other views through
// store.js, so they move with the live feed). Tool and LLM calls are not in a row: they are counted
// from each turn's events, fetched page by page. Both are bounded so that a long conversation
// cannot make the page ask for everything: at most MAX_TURNS turns (the most recent; the view says
// when there are more) and, per turn, at most MAX_TURN_EVENTS events (a count cut there reads
// "≥"). The live feed adds to the counts, and a new session of the conversation reloads the list.

import { api, ApiError } from './api.js';
import { h, replace, clip, str, parseTs, fmtDateTime, fmtDuration, fmtOffset, fmtInt, fmtTokens, fmtCost, copyButton, debounce, shake } from './dom.js';
import { view, isError, startMeta, agentKind } from './model.js';
import { subscribe, mergeRow, getRow, statusOf } from './store.js';
import { sessionHref } from './routes.js';
import { agentBadge } from './session/parts.js';

/** The most turns the view lists (the most recent ones) and totals. */
export const MAX_TURNS = 200;
/** The most events of one turn read to count its tool and LLM calls. */
export const MAX_TURN_EVENTS = 5000;
const LIST_PAGE = 200;
const EVENTS_PAGE = 1000;
/** Turns whose events are being read at once. */
const PARALLEL = 4;

/** What a turn's events say beyond its row: its tool and LLM calls, and its user's first prompt. */
class Tally {
  constructor() {
    /** sequences counted: events from the pages and the live feed are counted once */
    this.seen = new Set();
    this.starts = 0;
    this.ends = 0;
    this.failed = 0;
    this.llm = 0;
    this.llmFailed = 0;
    this.prompt = null;
    this.promptSeq = Infinity;
    /** whether events were left uncounted (past MAX_TURN_EVENTS) */
    this.cut = false;
    /** whether every page has been read (or the count was cut) */
    this.done = false;
    this.failedToLoad = false;
  }

  /** Tool calls: a call is a start and an end, either of which may be missing. */
  get tools() { return Math.max(this.starts, this.ends); }

  /** Counts an event; false when it was counted already or the count is full. */
  add(ev) {
    if (!ev || !Number.isInteger(ev.sequence) || this.seen.has(ev.sequence)) return false;
    if (this.seen.size >= MAX_TURN_EVENTS) { this.cut = true; return false; }
    this.seen.add(ev.sequence);
    const p = ev.payload && typeof ev.payload === 'object' ? ev.payload : {};
    switch (ev.type) {
      case 'operation.tool_start': this.starts++; break;
      case 'operation.tool_end': this.ends++; if (isError(ev)) this.failed++; break;
      case 'operation.external_call':
        if (view.llm(p)) { this.llm++; if (isError(ev)) this.llmFailed++; }
        break;
      case 'cognition.thought':
        if (view.role(p) === 'user' && view.thought(p) !== undefined && ev.sequence < this.promptSeq) {
          this.prompt = clip(str(view.thought(p)), 400);
          this.promptSeq = ev.sequence;
        }
        break;
      default:
    }
    return true;
  }
}

const startOf = (r) => parseTs(r.started_at);
const endOf = (r) => parseTs(r.ended_at || r.last_seen_at);
const byStart = (a, b) => (startOf(a) || 0) - (startOf(b) || 0) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

export class ConversationView {
  constructor(id, { live, onBack }) {
    this.id = id;
    this.live = live;
    this.destroyed = false;
    /** the turns' rows (store.js's objects, updated in place), in the order they started */
    this.turns = [];
    /** the turns drawn, in order (the index of a row, and of `sel`) */
    this.shown = [];
    this.ids = new Set();
    /** session id → Tally */
    this.tallies = new Map();
    /** whether the collector holds more sessions of the conversation than are shown */
    this.more = false;
    this.loaded = false;
    this.gen = 0;
    this.queue = [];
    this.workers = 0;
    this.sel = -1;

    const back = h('button', { type: 'button', class: 'btn btn-back', 'aria-label': 'Back', title: 'Back (Esc)', onclick: () => onBack() }, '← Sessions');
    this.subEl = h('div', { class: 'sv-sub' });
    this.totals = new Totals();
    this.notice = h('div', { class: 'notice', hidden: true, role: 'status', 'data-testid': 'conversation-notice' });
    this.infoEl = h('span', { class: 'muted small', 'data-testid': 'conversation-info' });
    this.listEl = h('div', { class: 'conv-turns', role: 'list', 'aria-label': 'Turns', 'data-testid': 'conversation-list' });
    const head = h('div', { class: 'crow shead', 'aria-hidden': 'true' },
      h('span', { class: 'num' }, '#'), h('span'), h('span', null, 'Prompt or goal'), h('span', null, 'Status'), h('span', null, 'Started'),
      h('span', { class: 'num' }, 'Duration'), h('span', { class: 'num' }, 'Tokens'), h('span', { class: 'num' }, 'Cost'),
      h('span', { class: 'num' }, 'Tool calls'), h('span', { class: 'num' }, 'LLM calls'), h('span', { class: 'num' }, 'Alerts'));
    this.el = h('section', {
      class: 'view sv conv', 'data-testid': 'conversation-view', 'data-conversation-id': id, 'data-state': 'loading', 'aria-labelledby': 'conv-title',
      tabindex: '-1',
    },
    h('header', { class: 'sv-head' }, back,
      h('div', { class: 'sv-titles' }, h('h1', { class: 'sv-goal', id: 'conv-title' }, 'Conversation'), this.subEl)),
    this.totals.el,
    this.notice,
    h('section', { class: 'panel conv-panel', 'aria-label': 'Turns of the conversation' },
      h('div', { class: 'panel-head' }, h('h2', null, 'Turns'), this.infoEl),
      h('div', { class: 'conv-table' }, head, this.listEl)));
    document.title = 'conversation · aop';

    this.render = debounce(() => this.renderNow(), 120, 500);
    this.reload = debounce(() => this.load(), 1000, 5000);
    this.unsubs = [
      live.on('event', (ev) => this.onLiveEvent(ev)),
      live.on('deleted', (sid) => { if (this.ids.has(sid)) this.reload(); }),
      live.on('resync', () => this.reload()),
      subscribe((ids) => this.onStoreChange(ids)),
    ];
    this.renderNow();
    this.load();
  }

  destroy() {
    this.destroyed = true;
    for (const u of this.unsubs) u();
    this.render.cancel();
    this.reload.cancel();
    this.el.remove();
  }

  // ------------------------------------------------------------------ for the app

  focus() {
    const rows = this.rowEls();
    if (this.sel >= 0 && rows[this.sel]) rows[this.sel].focus({ preventScroll: true });
    else this.el.focus({ preventScroll: true });
  }

  rowEls() { return [...this.listEl.querySelectorAll('[data-testid=conversation-turn]')]; }

  /** Moves the selection among the turns (`±Infinity`: to the first or the last). */
  move(delta) {
    const rows = this.rowEls();
    if (!rows.length) return;
    let i = this.sel;
    if (delta === -Infinity) i = 0;
    else if (delta === Infinity) i = rows.length - 1;
    else i = i < 0 ? (delta > 0 ? 0 : rows.length - 1) : i + delta;
    if (i < 0 || i >= rows.length) { shake(this.listEl); return; }
    this.select(i);
  }

  select(i) {
    const rows = this.rowEls();
    if (this.sel >= 0 && rows[this.sel]) rows[this.sel].classList.remove('is-selected');
    this.sel = i;
    const el = rows[i];
    if (!el) return;
    el.classList.add('is-selected');
    el.focus({ preventScroll: true });
    el.scrollIntoView({ block: 'nearest' });
  }

  /** Keys while this view is shown; returns true when handled. */
  onKey(e) {
    switch (e.key) {
      case 'j': case 'ArrowDown': this.move(1); return true;
      case 'k': case 'ArrowUp': this.move(-1); return true;
      case 'g': case 'Home': this.move(-Infinity); return true;
      case 'G': case 'End': this.move(Infinity); return true;
      case 'Enter': {
        const t = this.shown[this.sel];
        if (t) location.hash = sessionHref(t.id);
        return true;
      }
      default: return false;
    }
  }

  // ------------------------------------------------------------------ loading

  /** The conversation's sessions (the most recent MAX_TURNS), then each new one's events, counted. */
  async load() {
    const gen = ++this.gen;
    const rows = [];
    let cursor = null;
    this.loading = true;
    try {
      do {
        const r = await api('/sessions', { params: { conversation: this.id, limit: Math.min(LIST_PAGE, MAX_TURNS - rows.length), cursor } });
        if (this.destroyed || gen !== this.gen) return;
        for (const raw of r.sessions || []) {
          const row = mergeRow(raw);
          if (row) rows.push(row);
        }
        cursor = r.next_cursor || null;
      } while (cursor && rows.length < MAX_TURNS);
    } catch (e) {
      if (this.destroyed || gen !== this.gen) return;
      this.loading = false;
      this.showNotice(`Could not load the conversation: ${e.message}. Retrying…`, true);
      setTimeout(() => { if (!this.destroyed && gen === this.gen) this.load(); }, 3000);
      return;
    }
    this.more = !!cursor;
    this.loaded = true;
    this.loading = false;
    this.turns = rows.sort(byStart);
    this.ids = new Set(rows.map((r) => r.id));
    for (const id of [...this.tallies.keys()]) if (!this.ids.has(id)) this.tallies.delete(id);
    for (const r of rows) {
      if (this.tallies.has(r.id)) continue;
      this.tallies.set(r.id, new Tally());
      this.queue.push(r.id);
    }
    this.showNotice(this.more
      ? `This conversation has more than ${MAX_TURNS} sessions: the ${MAX_TURNS} most recent are shown, and the totals are theirs.`
      : '');
    this.renderNow();
    this.pump();
  }

  /** Reads queued turns' events, PARALLEL at a time. */
  pump() {
    while (this.workers < PARALLEL && this.queue.length) {
      const id = this.queue.shift();
      this.workers++;
      this.countTurn(id).finally(() => {
        this.workers--;
        if (!this.destroyed) { this.render(); this.pump(); }
      });
    }
  }

  async countTurn(id) {
    let after = null;
    for (let tries = 0; !this.destroyed;) {
      const t = this.tallies.get(id);
      if (!t) return;
      if (t.seen.size >= MAX_TURN_EVENTS) { t.cut = true; t.done = true; return; }
      const limit = Math.min(EVENTS_PAGE, MAX_TURN_EVENTS - t.seen.size);
      let page;
      try {
        page = await api(`/sessions/${encodeURIComponent(id)}`, { params: after === null ? { limit } : { after, limit } });
      } catch (e) {
        if (e instanceof ApiError && e.status === 404) { this.reload(); return; }
        if (++tries >= 3) { t.failedToLoad = true; t.done = true; return; }
        await new Promise((r) => setTimeout(r, 1500));
        continue;
      }
      if (this.tallies.get(id) !== t) return;
      if (page.session) mergeRow(page.session);
      for (const ev of page.events || []) t.add(ev);
      after = page.next_after ?? null;
      if (after === null) { t.done = true; return; }
      this.render();
    }
  }

  // ------------------------------------------------------------------ changes

  onLiveEvent(ev) {
    if (this.destroyed) return;
    const t = this.tallies.get(ev.session_id);
    if (t) {
      if (t.add(ev)) this.render();
      else if (t.cut) this.render();
    } else if (ev.type === 'session.started' && startMeta(ev.payload).conversation === this.id) {
      this.reload();
    }
  }

  onStoreChange(ids) {
    if (this.destroyed) return;
    let mine = ids.has('*');
    for (const id of ids) {
      if (this.ids.has(id)) { mine = true; continue; }
      // A session the collector now says is of this conversation (its spans may say so late).
      const row = id !== '*' ? getRow(id) : null;
      // (Past MAX_TURNS, an unlisted one is an older turn: only a new session's start reloads then.)
      if (row && row.conversation_id === this.id && this.loaded && !this.loading && !this.more && !row._deleted) this.reload();
    }
    if (mine) this.render();
  }

  showNotice(text, error = false) {
    this.notice.hidden = !text;
    this.notice.textContent = text || '';
    this.notice.classList.toggle('is-error', !!error);
  }

  // ------------------------------------------------------------------ drawing

  renderNow() {
    if (this.destroyed) return;
    this.render.cancel();
    const turns = this.turns.filter((r) => !r._deleted);
    const selected = this.shown[this.sel] ? this.shown[this.sel].id : null;
    this.shown = turns;
    const tallies = turns.map((r) => this.tallies.get(r.id) || null);
    const counting = tallies.some((t) => !t || !t.done);
    this.el.dataset.state = !this.loaded ? 'loading' : counting ? 'counting' : 'ready';

    // The header: the conversation's id and its agents' kinds.
    const kinds = new Map();
    for (const r of turns) {
      const k = agentKind(r.id, r.agent_id, r._meta);
      if (k && !kinds.has(k)) kinds.set(k, r);
    }
    const agents = [...new Set(turns.map((r) => r.agent_id).filter(Boolean))];
    const sig = JSON.stringify([[...kinds.keys()], agents]);
    if (sig !== this.subSig) {
      this.subSig = sig;
      replace(this.subEl,
        h('span', { class: 'muted small' }, 'id '),
        h('span', { class: 'mono small sid', 'data-testid': 'conversation-id' }, clip(this.id, 120)),
        copyButton(() => this.id, 'Copy conversation id', 'copy-conversation-id'),
        agents.length ? h('strong', null, clip(agents.join(', '), 80)) : null,
        [...kinds.values()].map((r) => agentBadge(r.id, r.agent_id, r._meta)));
    }

    this.totals.update(turns, tallies, { loaded: this.loaded, more: this.more });
    const n = turns.length;
    this.infoEl.textContent = !this.loaded ? 'Loading…'
      : `${fmtInt(n)} turn${n === 1 ? '' : 's'}${this.more ? ` (the ${MAX_TURNS} most recent)` : ''}${counting ? ' · counting calls…' : ''}`;

    if (!this.loaded) {
      replace(this.listEl, h('div', { class: 'conv-empty muted' }, h('span', { class: 'spinner', 'aria-hidden': 'true' }), ' Loading the conversation…'));
      return;
    }
    if (!n) {
      replace(this.listEl, h('div', { class: 'conv-empty muted', 'data-testid': 'conversation-empty' },
        `No session of conversation "${clip(this.id, 80)}" in the collector (yet). This view fills in when one arrives.`));
      return;
    }
    const t0 = startOf(turns[0]);
    const focused = document.activeElement && this.listEl.contains(document.activeElement) ? document.activeElement.dataset.sessionId : null;
    replace(this.listEl, turns.map((r, i) => this.turnEl(r, i, tallies[i], t0)));
    this.sel = selected ? turns.findIndex((r) => r.id === selected) : -1;
    const rows = this.rowEls();
    if (this.sel >= 0) rows[this.sel].classList.add('is-selected');
    if (focused) {
      const el = rows.find((e) => e.dataset.sessionId === focused);
      if (el) el.focus({ preventScroll: true });
    }
  }

  turnEl(r, i, t, t0) {
    const st = statusOf(r);
    const started = startOf(r);
    const prompt = (t && t.prompt) || r.goal;
    const tools = t ? t.tools : null;
    const cut = t && t.cut ? '≥ ' : '';
    const pending = !t || !t.done;
    const count = (value, text, testid, title) => h('span', {
      class: `num${pending ? ' pending' : ''}`, 'data-testid': testid, 'data-value': pending ? '' : String(value), title,
    }, text);
    return h('a', {
      class: `crow st-${st.cls}`, href: sessionHref(r.id), role: 'listitem', 'data-testid': 'conversation-turn',
      'data-session-id': r.id, 'data-turn': String(i + 1), 'data-status': st.text,
      onclick: () => { this.sel = i; },
    },
    h('span', { class: 'num turn-n mono' }, String(i + 1)),
    h('span', { class: `dot live-${st.dot}`, 'aria-hidden': 'true' }),
    h('span', { class: 'cell-goal' },
      h('span', { class: 'goal', 'data-testid': 'turn-prompt' }, prompt ? clip(prompt, 300) : h('span', { class: 'muted' }, 'no prompt or goal')),
      h('span', { class: 'sub' }, h('strong', null, clip(r.agent_id || '—', 40)), agentBadge(r.id, r.agent_id, r._meta), ' ', h('span', { class: 'mono' }, clip(r.id, 60)),
        r.error_message ? h('span', { class: 'error-text' }, ` · ${clip(r.error_message, 160)}`) : null)),
    h('span', null, h('span', { class: `pill st-${st.cls}` }, st.text)),
    h('span', { class: 'muted', title: r.started_at || '' },
      fmtDateTime(started), i > 0 && Number.isFinite(started) && Number.isFinite(t0) ? h('span', { class: 'small' }, ` ${fmtOffset(started - t0)}`) : null),
    h('span', { class: 'num' }, fmtDuration(r.duration_ms)),
    h('span', { class: 'num', 'data-testid': 'turn-tokens', 'data-value': String(r.total_tokens ?? ''), title: `${fmtInt(r.total_tokens)} tokens` }, fmtTokens(r.total_tokens)),
    h('span', { class: 'num', 'data-testid': 'turn-cost', 'data-value': r.total_cost_usd === null || r.total_cost_usd === undefined ? '' : String(r.total_cost_usd) }, fmtCost(r.total_cost_usd)),
    count(tools, pending ? '…' : `${cut}${fmtInt(tools)}${t.failed ? ` (${fmtInt(t.failed)} failed)` : ''}`, 'turn-tools',
      t && t.failedToLoad ? 'Its events could not be read' : t && t.cut ? `Counted in its first ${fmtInt(MAX_TURN_EVENTS)} events` : 'tool calls'),
    count(t ? t.llm : null, pending ? '…' : `${cut}${fmtInt(t.llm)}`, 'turn-llm', 'LLM calls'),
    h('span', { class: 'num', 'data-testid': 'turn-alerts', 'data-value': String(r.alert_count || 0) },
      r.alert_count > 0 ? h('span', { class: `badge sev-${r._alertSev || 'warning'}` }, `⚠\uFE0E ${fmtInt(r.alert_count)}`) : h('span', { class: 'muted' }, '·')));
  }
}

/** The conversation's totals: a strip like a session's metrics, each raw value in `data-value`. */
class Totals {
  constructor() {
    this.els = {};
    const metric = (key, label) => {
      const v = h('span', { class: 'm-value', 'data-testid': `conversation-${key}` }, '—');
      this.els[key] = v;
      return h('div', { class: `metric m-${key}` }, h('span', { class: 'm-label' }, label), v);
    };
    this.el = h('div', { class: 'metrics conv-totals', role: 'group', 'aria-label': 'Conversation totals', 'data-testid': 'conversation-totals' },
      metric('turns', 'Turns'), metric('tokens', 'Tokens'), metric('cost', 'Cost'), metric('tools', 'Tool calls'),
      metric('llm', 'LLM calls'), metric('alerts', 'Alerts'), metric('duration', 'Duration'));
  }

  update(turns, tallies, { loaded, more }) {
    const m = this.els;
    const set = (el, text, value, title) => {
      if (el.textContent !== text) el.textContent = text;
      el.dataset.value = value === null || value === undefined ? '' : String(value);
      el.title = title || '';
    };
    if (!loaded) return;
    let tokens = 0; let cost = null; let alerts = 0; let tools = 0; let failed = 0; let llm = 0;
    let from = Infinity; let to = -Infinity;
    for (const r of turns) {
      tokens += Number(r.total_tokens) || 0;
      if (Number.isFinite(Number(r.total_cost_usd)) && r.total_cost_usd !== null) cost = (cost || 0) + Number(r.total_cost_usd);
      alerts += Number(r.alert_count) || 0;
      const s = startOf(r); const e = endOf(r);
      if (Number.isFinite(s)) from = Math.min(from, s);
      if (Number.isFinite(e)) to = Math.max(to, e);
    }
    const pending = tallies.some((t) => !t || !t.done);
    const cut = tallies.some((t) => t && t.cut);
    for (const t of tallies) if (t) { tools += t.tools; failed += t.failed; llm += t.llm; }
    const of = more ? ` of the ${MAX_TURNS} most recent turns` : '';
    set(m.turns, `${fmtInt(turns.length)}${more ? '+' : ''}`, turns.length, more ? `more than ${MAX_TURNS}: the most recent ${MAX_TURNS} are shown` : '');
    set(m.tokens, fmtInt(tokens), tokens, `${fmtTokens(tokens)} tokens${of}`);
    set(m.cost, fmtCost(cost), cost, `cost${of}`);
    set(m.tools, pending ? '…' : `${cut ? '≥ ' : ''}${fmtInt(tools)}${failed ? ` (${fmtInt(failed)} failed)` : ''}`, pending ? null : tools,
      cut ? `Some turns' calls were counted in their first ${fmtInt(MAX_TURN_EVENTS)} events only` : `tool calls${of}`);
    set(m.llm, pending ? '…' : `${cut ? '≥ ' : ''}${fmtInt(llm)}`, pending ? null : llm, `LLM calls${of}`);
    set(m.alerts, fmtInt(alerts), alerts, `alerts${of}`);
    m.alerts.classList.toggle('has-alerts', alerts > 0);
    const span = Number.isFinite(from) && Number.isFinite(to) ? Math.max(0, to - from) : null;
    set(m.duration, fmtDuration(span), span, 'from the first turn\'s start to the last one\'s end');
  }
}
