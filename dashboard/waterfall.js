// The waterfall: tool calls over time, one lane per tool (overlapping calls of one tool stack in up
// to three sub-lanes), and LLM calls in lanes of their own, one per model; drawn in SVG without a
// library. Bars narrower than a pixel are merged, so the
// number of SVG nodes is bounded by the chart's width, not by the number of calls.

import { h, s, fmtDuration, clip } from './dom.js';

const LANE_H = 14;
const LANE_GAP = 4;
const AXIS_H = 20;
const LABEL_W = 132;
const MAX_SUB = 3;

export class Waterfall {
  constructor({ onPick }) {
    this.onPick = onPick;
    this.spans = [];
    this.window = null;
    this.svg = s('svg', { class: 'wf-svg', role: 'img', 'aria-label': 'Tool calls over time' });
    this.empty = h('div', { class: 'wf-empty muted' }, 'No tool calls yet.');
    this.el = h('div', { class: 'wf', 'data-testid': 'waterfall' }, this.svg, this.empty);
    this.svg.addEventListener('click', (e) => {
      const r = e.target.closest('[data-span]');
      if (r && this.onPick) this.onPick(this.index[Number(r.dataset.span)]);
    });
    this.lastWidth = 0;
    if ('ResizeObserver' in window) {
      new ResizeObserver(() => {
        if (this.el.clientWidth !== this.lastWidth) this.draw();
      }).observe(this.el);
    }
  }

  /**
   * @param spans  [{name, t0, t1 (NaN while running), state, seq, llm?}]: `llm` for an LLM call,
   *   named after its model
   * @param range  {from, to} in ms (the session's span of time)
   */
  update(spans, range) {
    this.spans = spans;
    this.range = range;
    this.draw();
  }

  /** Marks the part of the run the timeline is showing. */
  setWindow(from, to) {
    this.window = Number.isFinite(from) && Number.isFinite(to) ? { from, to } : null;
    this.drawWindow();
  }

  draw() {
    const width = Math.max(320, this.el.clientWidth || 800);
    this.lastWidth = this.el.clientWidth;
    const spans = this.spans;
    this.empty.hidden = spans.length > 0;
    this.svg.style.display = spans.length ? '' : 'none';
    this.index = [];
    if (!spans.length) { this.svg.replaceChildren(); return; }

    const now = Date.now();
    let from = this.range.from;
    let to = this.range.to;
    for (const sp of spans) {
      if (Number.isFinite(sp.t0) && !(sp.t0 >= from)) from = sp.t0;
      const end = Number.isFinite(sp.t1) ? sp.t1 : (sp.state === 'running' ? now : sp.t0);
      if (end > to || !Number.isFinite(to)) to = end;
    }
    if (!Number.isFinite(from) || !Number.isFinite(to)) return;
    if (to - from < 1000) to = from + 1000;
    const plotW = width - LABEL_W - 12;
    const x = (t) => LABEL_W + ((t - from) / (to - from)) * plotW;
    this.scale = { from, to, x };

    // Lanes per tool name (or model), in order of first use; sub-lanes for overlapping calls.
    const lanes = new Map();
    for (const sp of spans) {
      if (!Number.isFinite(sp.t0)) continue;
      const key = sp.llm ? `llm:${sp.name}` : `tool:${sp.name}`;
      let lane = lanes.get(key);
      if (!lane) { lane = { name: sp.name, llm: !!sp.llm, subs: [], bars: [[], [], []], count: 0, errors: 0 }; lanes.set(key, lane); }
      lane.count++;
      if (sp.state === 'error') lane.errors++;
      const end = Number.isFinite(sp.t1) ? sp.t1 : (sp.state === 'running' ? now : sp.t0);
      let k = lane.subs.findIndex((e) => e <= sp.t0);
      if (k < 0) k = lane.subs.length < MAX_SUB ? lane.subs.length : MAX_SUB - 1;
      lane.subs[k] = Math.max(lane.subs[k] || 0, end);
      lane.bars[k].push([x(sp.t0), x(Math.max(end, sp.t0)), sp]);
    }

    const kids = [];
    // Axis with ~6 ticks.
    const ticks = 6;
    for (let i = 0; i <= ticks; i++) {
      const t = from + ((to - from) * i) / ticks;
      const xx = x(t);
      kids.push(s('line', { x1: xx, x2: xx, y1: AXIS_H - 4, y2: '100%', class: 'wf-grid' }));
      kids.push(s('text', { x: xx, y: 12, class: 'wf-tick', 'text-anchor': i === 0 ? 'start' : i === ticks ? 'end' : 'middle' }, `+${fmtDuration(t - from)}`));
    }

    let y = AXIS_H;
    for (const lane of lanes.values()) {
      const subs = Math.max(1, lane.subs.length);
      const laneH = subs * LANE_H + (subs - 1) * 2;
      kids.push(s('text', { x: 4, y: y + LANE_H - 3, class: lane.llm ? 'wf-label wf-llm' : 'wf-label' },
        lane.llm ? `✦ ${clip(lane.name, 16)}` : clip(lane.name, 18),
        s('title', null, `${lane.llm ? 'LLM ' : ''}${lane.name}: ${lane.count} call(s), ${lane.errors} failed`)));
      for (let k = 0; k < subs; k++) {
        const yy = y + k * (LANE_H + 2);
        let merged = null;
        const flush = () => {
          if (!merged) return;
          const w = Math.max(2, merged.x1 - merged.x0);
          const idx = this.index.length;
          this.index.push(merged.sp);
          const title = merged.n > 1
            ? `${lane.name}: ${merged.n} calls${merged.err ? `, ${merged.err} failed` : ''}`
            : `${lane.name} · ${merged.sp.state}${Number.isFinite(merged.sp.dur) ? ` · ${fmtDuration(merged.sp.dur)}` : ''} · #${merged.sp.seq}`;
          kids.push(s('rect', {
            x: merged.x0.toFixed(1), y: yy, width: w.toFixed(1), height: LANE_H, rx: 2,
            class: `wf-bar st-${merged.state}${lane.llm ? ' wf-llm' : ''}`, 'data-span': idx, 'data-state': merged.state,
          }, s('title', null, title)));
          merged = null;
        };
        // Successful and running calls first, failures drawn over them so they stay visible
        // however dense the lane is.
        const bars = lane.bars[k];
        for (const wantErr of [false, true]) {
          for (const [x0, x1, sp] of bars) {
            const st = sp.state;
            if ((st === 'error') !== wantErr) continue;
            // Merge into the previous bar when they touch at pixel resolution (same state).
            if (merged && st === merged.state && x0 - merged.x1 < 1 && (merged.x1 - merged.x0 < 3 || x1 - x0 < 3)) {
              merged.x1 = Math.max(merged.x1, x1);
              merged.n++;
              if (st === 'error') merged.err++;
              continue;
            }
            flush();
            merged = { x0, x1, sp, state: st, n: 1, err: st === 'error' ? 1 : 0 };
          }
          flush();
        }
      }
      y += laneH + LANE_GAP;
    }
    this.winRect = s('rect', { class: 'wf-window', y: AXIS_H - 4, height: Math.max(0, y - AXIS_H + 4), x: 0, width: 0 });
    kids.push(this.winRect);
    const height = y + 2;
    this.svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
    this.svg.setAttribute('width', String(width));
    this.svg.setAttribute('height', String(height));
    this.svg.replaceChildren(...kids);
    this.drawWindow();
  }

  drawWindow() {
    if (!this.winRect || !this.scale) return;
    const w = this.window;
    if (!w) { this.winRect.setAttribute('width', '0'); return; }
    const x0 = Math.max(LABEL_W, this.scale.x(w.from));
    const x1 = Math.min(this.scale.x(this.scale.to), this.scale.x(w.to));
    this.winRect.setAttribute('x', x0.toFixed(1));
    this.winRect.setAttribute('width', Math.max(2, x1 - x0).toFixed(1));
  }
}
