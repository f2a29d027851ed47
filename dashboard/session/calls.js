// The "Tool calls" panel: the session's tool calls on the waterfall chart (waterfall.js), with a
// count of calls, failures and running ones, and the slice of time the timeline shows. A session
// that reports LLM calls (an OpenTelemetry trace's, or an agent's external calls with a model)
// has them drawn too, a lane per model.

import { h, fmtInt, debounce } from '../dom.js';
import { Waterfall } from '../waterfall.js';

export class CallsPanel {
  /**
   * @param {object} o
   * @param {import('./records.js').Records} o.records
   * @param {(span) => string} o.spanState
   * @param {() => {from: number, to: number, now: number}} o.range  the session's span of time and
   *   the present, on the agent's clock (running calls are drawn up to `now`)
   * @param {(seq) => void} o.onPick  a call was clicked: its first event
   */
  constructor(o) {
    this.o = o;
    this.destroyed = false;
    // Redrawing costs a full SVG rebuild: at most a few times a second, however fast events come.
    this.redraw = debounce(() => this.draw(), 250, 1000);
    this.waterfall = new Waterfall({ onPick: (sp) => o.onPick((sp.start || sp.end).seq) });
    this.infoEl = h('span', { class: 'muted small' });
    this.titleEl = h('h2', null, 'Tool calls');
    this.el = h('section', { class: 'panel wf-panel', 'aria-label': 'Tool calls over time' },
      h('div', { class: 'panel-head' }, this.titleEl, this.infoEl),
      this.waterfall.el);
  }

  destroy() {
    this.destroyed = true;
    this.redraw.cancel();
  }

  draw() {
    if (this.destroyed) return;
    const spans = this.o.records.spans.map((sp) => ({
      name: sp.name, t0: sp.t0, t1: sp.end ? sp.t1 : NaN, state: this.o.spanState(sp), seq: (sp.start || sp.end).seq, dur: sp.dur,
      start: sp.start, end: sp.end,
    }));
    const { from, to, now } = this.o.range();
    for (const sp of spans) if (sp.state === 'running') sp.t1 = now;
    const tools = spans.length;
    const llms = this.o.records.llmCalls;
    // An LLM call is written when it ends, with its latency: it started that long before.
    for (const r of llms) {
      const lat = Number.isFinite(r.lat) ? r.lat : 0;
      spans.push({ name: r.llm.model || r.llm.provider || 'LLM', llm: true, t0: r.t - lat, t1: r.t, state: r.err ? 'error' : 'ok', seq: r.seq, dur: r.lat, end: r });
    }
    this.waterfall.update(spans, { from, to });
    const running = spans.filter((sp) => sp.state === 'running').length;
    const failed = spans.filter((sp) => sp.state === 'error').length;
    const calls = llms.length ? `${fmtInt(tools)} tool · ${fmtInt(llms.length)} LLM calls` : `${fmtInt(tools)} calls`;
    this.infoEl.textContent = `${calls}${failed ? ` · ${fmtInt(failed)} failed` : ''}${running ? ` · ${running} running` : ''}`;
    const title = llms.length ? 'Tool and LLM calls' : 'Tool calls';
    if (this.titleEl.textContent !== title) this.titleEl.textContent = title;
  }

  /** Marks the slice of time the timeline shows (NaN: nothing). */
  setWindow(from, to) {
    this.waterfall.setWindow(from, to);
  }
}
