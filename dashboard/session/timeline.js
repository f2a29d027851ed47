// The event timeline: a virtualised list of the session's records and alerts, its toolbar (tier,
// error and alert filters, text filter, next problem, follow), selection and keyboard. It draws
// from a Records it never changes; what selecting an item shows is the caller's (`onInspect`).
// Events of an OpenTelemetry trace are indented under the span they happened in (trace.js), and
// an event of another agent than the session's names it.

import { h, str, clip, parseTs, fmtDuration, fmtOffset, fmtInt, fmtDateTime, debounce, shake } from '../dom.js';
import { typeLabel, view } from '../model.js';
import { sessionHref } from '../routes.js';
import { VList } from '../vlist.js';
import { LANES } from './records.js';
import { confCls, spanEl, llmEl, otelSpanEl, toolArgEl } from './parts.js';
import { deliveryChip } from './deliveries.js';

const ROW_H = 30;
/** Indentation per level of span nesting, in pixels (app.css draws the guides at this pitch). */
const NEST_W = 16;
const TIERS = ['session', 'cognition', 'operation', 'custom'];

const allShown = () => ({ tiers: new Set(TIERS), errors: false, alerts: false, text: '' });

export class Timeline {
  /**
   * @param {object} o
   * @param {string} o.id  the session
   * @param {import('./records.js').Records} o.records
   * @param {() => object|null} o.row  the session's row
   * @param {() => boolean} o.isLoading  whether pages are still loading
   * @param {() => boolean} o.isRunning
   * @param {(span) => string} o.spanState
   * @param {() => number} o.skew  the agent's clock offset
   * @param {() => number} o.t0  the session's start (agent time), for the offsets column
   * @param {(item) => void} o.onInspect  an item was selected
   * @param {(from, to) => void} o.onWindow  the slice of time in view changed (NaN: none)
   */
  constructor(o) {
    this.o = o;
    this.records = o.records;
    this.filters = allShown();
    this.follow = false;
    this.items = null;
    this.rebuild = debounce(() => this.rebuildNow(), 60, 250);

    this.tierBtns = TIERS.map((t) => {
      const b = h('button', { type: 'button', class: `chip tier-${t}`, 'aria-pressed': 'true', 'data-testid': `tier-filter-${t}` }, t);
      b.addEventListener('click', () => {
        if (this.filters.tiers.has(t)) this.filters.tiers.delete(t); else this.filters.tiers.add(t);
        b.setAttribute('aria-pressed', String(this.filters.tiers.has(t)));
        this.rebuildNow();
      });
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
    this.textFilter.addEventListener('input', debounce(() => { this.filters.text = this.textFilter.value.trim().toLowerCase(); this.rebuildNow(); }, 200));
    this.nextBtn = h('button', { type: 'button', class: 'chip', title: 'Next error or alert (n; N for previous)', 'data-testid': 'next-problem' }, 'Next problem');
    this.nextBtn.addEventListener('click', () => this.jumpProblem(1));
    this.followBtn = h('button', { type: 'button', class: 'chip', 'aria-pressed': 'false', 'data-testid': 'follow-toggle', title: 'Keep the newest event in view (f)' }, 'Follow');
    this.followBtn.addEventListener('click', () => this.setFollow(!this.follow));
    this.progressEl = h('span', { class: 'tl-status muted small', 'data-testid': 'timeline-status', role: 'status' });
    const toolbar = h('div', { class: 'tl-toolbar', role: 'toolbar', 'aria-label': 'Timeline filters' },
      h('span', { class: 'chips' }, this.tierBtns), h('span', { class: 'sep' }),
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
      onRender: (start, end) => this.onScroll(start, end),
    });
    // Scrolling away from the end stops following; scrolling back to it (while running) resumes.
    // Only a user's scroll resumes: the list's own scrolling (new rows) must not.
    const userScroll = () => { this.userScrolled = true; };
    this.list.el.addEventListener('wheel', userScroll, { passive: true });
    this.list.el.addEventListener('pointerdown', userScroll, { passive: true });
    this.list.el.addEventListener('keydown', userScroll, { passive: true });
    this.list.el.addEventListener('scroll', () => {
      const atEnd = this.list.atEnd();
      if (this.follow && !atEnd) this.setFollow(false);
      else if (!this.follow && atEnd && this.userScrolled && o.isRunning() && !o.isLoading()) this.setFollow(true);
      this.userScrolled = false;
    }, { passive: true });

    this.el = h('section', { class: 'panel tl-panel', 'aria-label': 'Event timeline' }, toolbar, this.list.el);
  }

  destroy() {
    this.rebuild.cancel();
  }

  // ------------------------------------------------------------------ items

  toggleFilter(name, btn) {
    this.filters[name] = !this.filters[name];
    btn.setAttribute('aria-pressed', String(this.filters[name]));
    this.rebuildNow();
  }

  passes(rec) {
    const f = this.filters;
    if (!f.tiers.has(rec.tier)) return false;
    if (f.errors && !(rec.err || (rec.span && rec.span.start === rec && rec.span.state === 'error'))) return false;
    if (f.alerts && !rec.alerts) return false;
    if (f.text) {
      // A span's name and agent are worth finding too.
      if (rec.lc === null) rec.lc = `${rec.type}${rec.role === 'user' ? ' prompt' : ''} ${rec.label} #${rec.seq}${rec.otel ? ` ${rec.otel.name} ${rec.agent}` : ''}`.toLowerCase();
      if (!rec.lc.includes(f.text)) return false;
    }
    return true;
  }

  /** Rebuilds the list's items now (`rebuild` does it soon, once for a burst of changes). */
  rebuildNow() {
    this.rebuild.cancel();
    const out = [];
    const f = this.filters;
    const { recs, looseAlerts: loose } = this.records;
    let li = 0;
    const looseOk = (a) => !f.text || `${a.type} ${a.message}`.toLowerCase().includes(f.text);
    for (const rec of recs) {
      while (li < loose.length && !(loose[li]._t >= rec.t)) { if (looseOk(loose[li])) out.push(this.records.alertItem(loose[li].id)); li++; }
      if (!this.passes(rec)) continue;
      out.push(rec);
      if (rec.alerts) for (const a of rec.alerts) out.push(this.records.alertItem(a.id));
    }
    for (; li < loose.length; li++) if (looseOk(loose[li])) out.push(this.records.alertItem(loose[li].id));
    this.items = out;
    this.list.setItems(out);
    if (this.follow) this.list.scrollToEnd();
    this.errBtn.textContent = `Errors ${fmtInt(this.records.errorCount)}`;
    this.alertBtn.textContent = `Alerts ${fmtInt(this.records.alerts.size)}`;
    this.updateProgress();
    if (!out.length) this.list.spacer.dataset.empty = recs.length ? 'No events match these filters.' : (this.o.isLoading() ? 'Loading events…' : 'No events yet.');
    else delete this.list.spacer.dataset.empty;
  }

  /** Redraws the rows in view (their records were renumbered, or the session's state changed). */
  invalidate() {
    this.list.invalidate();
  }

  setFollow(on) {
    this.follow = !!on;
    this.followBtn.setAttribute('aria-pressed', String(this.follow));
    if (this.follow && this.items) this.list.scrollToEnd();
  }

  updateProgress() {
    const r = this.o.row();
    const total = r ? r.event_count : null;
    const { recs } = this.records;
    let text = '';
    if (this.o.isLoading() && recs.length) text = `Loading ${fmtInt(recs.length)}${total ? ` of ${fmtInt(total)}` : ''} events…`;
    else if (this.o.isLoading()) text = 'Loading…';
    else {
      const shown = this.items ? this.items.length : 0;
      const n = this.records.seen;
      const filtered = shown !== recs.length + this.records.alerts.size;
      text = `${filtered ? `${fmtInt(shown)} of ` : ''}${fmtInt(n)} event${n === 1 ? '' : 's'}`;
    }
    if (this.progressEl.textContent !== text) this.progressEl.textContent = text;
  }

  // ------------------------------------------------------------------ rows

  spanEl(sp) {
    return spanEl(sp, this.o.spanState(sp), this.o.skew());
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
    if (rec.depth > 0) body.append(h('span', { class: 'nest', 'aria-hidden': 'true', style: { width: `${rec.depth * NEST_W}px` } }));
    const row = this.o.row();
    const other = row && row.agent_id && rec.agent && rec.agent !== row.agent_id ? rec.agent : null;
    if (other) body.append(h('span', { class: 'ev-agent', 'data-testid': 'event-agent', title: `agent ${other}` }, clip(other, 32)));
    switch (rec.type) {
      case 'operation.tool_start':
        body.append(this.spanEl(rec.span), rec.arg ? toolArgEl(rec.arg) : h('span', { class: 'ev-text muted' }, rec.input ? `(${rec.input})` : ''));
        if (rec.arg && rec.arg.note) body.append(h('span', { class: 'ev-text muted small' }, `— ${rec.arg.note}`));
        break;
      case 'operation.tool_end': {
        const sp = rec.span;
        if (sp && !sp.start) body.append(this.spanEl(sp));
        else {
          body.append(h('span', { class: `end-mark st-${sp ? sp.state : 'ok'}` }, '↳ ', clip(rec.tool, 40)));
          // What the call worked on, so a result reads without its start in view.
          if (sp && sp.start && sp.start.arg) body.append(toolArgEl(sp.start.arg, 60));
        }
        // The summary line, unless the payload (when still held) says it better.
        const p = rec.ev ? rec.ev.payload || {} : null;
        let text = rec.label.replace(/^[^ ]+ (→ |failed: )/, '');
        if (p) text = rec.err ? str(p.error) || 'failed' : str(view.output(p)) || 'ok';
        body.append(h('span', { class: `ev-text ${rec.err ? 'error-text' : ''}` }, clip(text, 300)));
        if (rec.llm) flags.append(llmEl(rec.llm, null, rec.err));
        if (sp && sp.start) flags.append(h('span', { class: 'muted small', title: `started at #${sp.start.seq}` }, `${seqText(sp.start.seq)} · ${fmtDuration(sp.dur)}`));
        break;
      }
      case 'operation.external_call':
        if (!rec.llm) {
          body.append(h('span', { class: `ev-text ${rec.err ? 'error-text' : ''}` }, rec.label));
          break;
        }
        body.append(llmEl(rec.llm, rec.lat, rec.err));
        if (rec.err) body.append(h('span', { class: 'ev-text error-text' }, rec.errText || 'failed'));
        else if (rec.llm.provider) body.append(h('span', { class: 'ev-text muted' }, clip(rec.llm.provider, 40)));
        break;
      case 'otel.span':
        body.append(otelSpanEl(rec.otel ? rec.otel.name : rec.label, rec.otel ? rec.otel.status : '', rec.lat));
        if (rec.attrs) body.append(h('span', { class: 'ev-text muted' }, rec.attrs));
        break;
      case 'otel.log':
        body.append(h('span', { class: 'log-name', title: 'an OpenTelemetry log record' }, clip(rec.logName, 48)));
        if (rec.said) body.append(h('span', { class: 'ev-text said', 'data-testid': 'agent-said' }, rec.said));
        else if (rec.attrs) body.append(h('span', { class: 'ev-text muted' }, rec.attrs));
        break;
      case 'custom.tool_decision': {
        // A tool permission decision (a coding agent's): accepted, rejected, by whom.
        const { decision, tool, source } = rec.decision;
        const d = decision.toLowerCase();
        const cls = ['accept', 'allow', 'approve', 'approved'].includes(d) ? 'ok' : ['reject', 'deny', 'denied', 'abort'].includes(d) ? 'bad' : 'muted';
        body.append(h('span', { class: `pill st-${cls}`, 'data-testid': 'tool-decision' }, decision || 'decision'),
          h('span', { class: 'ev-text' }, h('span', { class: 'mono' }, tool), source ? h('span', { class: 'muted' }, ` · ${source}`) : null));
        break;
      }
      case 'cognition.thought':
        if (rec.role === 'user') {
          body.append(h('span', { class: 'prompt-mark', title: 'what the user wrote' }, 'user'),
            h('span', { class: 'ev-text prompt-text', 'data-testid': 'prompt-text' }, rec.label));
          break;
        }
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
    const o = rec.otel;
    const prompt = rec.role === 'user';
    return h('div', {
      class: `ev tier-${rec.tier}${rec.err ? ' is-err' : ''}${rec.alerts ? ' has-alert' : ''}${prompt ? ' is-prompt' : ''}`,
      'data-testid': 'timeline-event', 'data-sequence': String(rec.seq), 'data-type': rec.type, 'data-tier': rec.tier,
      'data-depth': String(rec.depth), 'data-agent': rec.agent,
      'data-span-id': o && o.sid, 'data-parent-span-id': o && o.psid,
    },
    this.gutter(rec),
    seqLabel(rec.seq),
    h('span', { class: 'ev-time mono', title: str(rec.ts) }, fmtOffset(rec.t - this.o.t0())),
    h('span', { class: 'ev-type', title: rec.type }, prompt ? 'prompt' : rec.llm && rec.type === 'operation.external_call' ? 'llm' : typeLabel(rec.type)),
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
    h('span', { class: 'muted small' }, fmtDateTime(parseTs(a.created_at))),
    deliveryChip(this.records.deliveriesOf(a.id)) || h('span'));
  }

  // ------------------------------------------------------------------ selection & keyboard

  /** The selected item: a record or an alert item. */
  selected() { return this.list.selected(); }

  focus() { this.list.el.focus({ preventScroll: true }); }

  move(delta) { this.list.move(delta); }

  selectSeq(seq, center) {
    let i = this.items ? this.items.findIndex((it) => it.kind !== 'alert' && it.seq === seq) : -1;
    if (i < 0 && this.records.bySeq.has(seq)) {
      // Hidden by the filters: clear them so the event can be shown.
      this.filters = allShown();
      for (const b of this.tierBtns) b.setAttribute('aria-pressed', 'true');
      this.errBtn.setAttribute('aria-pressed', 'false');
      this.alertBtn.setAttribute('aria-pressed', 'false');
      this.textFilter.value = '';
      this.rebuildNow();
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
      // The address names the event, for a link or a reload, without a history entry per step.
      const url = `${location.pathname}${location.search}${sessionHref(this.o.id, it.seq)}`;
      history.replaceState(null, '', url);
    }
    if (this.follow && this.list.sel !== this.items.length - 1) this.setFollow(false);
    this.o.onInspect(it);
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
    if (!this.items || !this.items.length) return;
    const isProblem = (it) => it.kind === 'alert' || it.err || (it.span && it.span.start === it && it.span.state === 'error');
    const i = this.list.find(dir, isProblem);
    if (i < 0) return shake(this.nextBtn);
    this.setFollow(false);
    this.list.reveal(i);
  }

  /** Keys while the session view is shown; returns true when handled. */
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

  onScroll(start, end) {
    const items = this.items || [];
    let a = null; let b = null;
    for (let i = start; i < end && i < items.length; i++) if (items[i].kind !== 'alert' && Number.isFinite(items[i].t)) { a = items[i]; break; }
    for (let i = Math.min(end, items.length) - 1; i >= start; i--) if (items[i].kind !== 'alert' && Number.isFinite(items[i].t)) { b = items[i]; break; }
    this.o.onWindow(a ? a.t : NaN, b ? b.t : NaN);
  }
}

/**
 * An event's sequence as the timeline's first column shows it. Sequences of events derived from
 * OpenTelemetry spans are the span's clock in microseconds, too long for the column: their last
 * digits are shown, the whole number on hover (the details pane shows it too).
 */
function seqLabel(seq) {
  return h('span', { class: 'ev-seq mono', title: `sequence ${seq}` }, seqText(seq));
}

function seqText(seq) {
  const text = String(seq);
  return text.length > 7 ? `…${text.slice(-6)}` : `#${text}`;
}
