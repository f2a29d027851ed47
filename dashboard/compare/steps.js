// The two timelines side by side, aligned: one row per step of the comparison, a's event on the
// left and b's on the right (an empty cell where a run has no counterpart). Kinds read apart at a
// glance: `same` muted, `changed` highlighted, `only_a` and `only_b` in their sides' colours. The
// first divergence is announced by a row of its own just above it.
//
// A virtualised list (vlist.js): a comparison of two 100k-event runs costs what a short one does.
// Rows are keyed by the pair of sequences they show, so a refetch while the runs go on keeps the
// selection and the scroll position, and redraws only rows whose content changed.

import { h, clip, fmtInt, shake } from '../dom.js';
import { typeLabel, tierOf } from '../model.js';
import { VList } from '../vlist.js';

const ROW_H = 30;
export const KINDS = ['same', 'changed', 'only_a', 'only_b'];
const KIND_TEXT = { same: 'same', changed: 'changed', only_a: 'only A', only_b: 'only B' };
const KIND_TITLE = {
  same: 'The same step in both runs',
  changed: 'The same kind of step, done differently',
  only_a: 'A step only run A took',
  only_b: 'A step only run B took',
};

const isStep = (it) => it && it.kind !== 'marker';
const seqOf = (v) => (Number.isInteger(v) ? v : null);

export class StepList {
  /**
   * @param {object} o
   * @param {(step|null) => void} o.onSelect  a step was selected (null: the selection went away)
   * @param {() => void} o.onTouch  the user scrolled or moved: the view stops placing the list itself
   */
  constructor(o) {
    this.o = o;
    this.steps = [];
    this.items = [];
    this.first = null;
    this.counts = { same: 0, changed: 0, only_a: 0, only_b: 0 };
    this.shown = new Set(KINDS);

    this.kindBtns = KINDS.map((k) => {
      const b = h('button', { type: 'button', class: `chip ck-${k}`, 'aria-pressed': 'true', 'data-testid': `kind-filter-${k}`, title: `Show the steps: ${KIND_TITLE[k].toLowerCase()}` }, KIND_TEXT[k]);
      b.addEventListener('click', () => {
        if (this.shown.has(k)) this.shown.delete(k); else this.shown.add(k);
        b.setAttribute('aria-pressed', String(this.shown.has(k)));
        this.rebuild();
      });
      return b;
    });
    this.firstBtn = h('button', { type: 'button', class: 'chip', 'data-testid': 'goto-divergence', title: 'Back to where the runs part ways (d)', onclick: () => this.gotoFirst() }, 'First divergence');
    this.nextBtn = h('button', { type: 'button', class: 'chip', 'data-testid': 'next-difference', title: 'Next step that differs (n; N for previous)', onclick: () => this.jumpDiff(1) }, 'Next difference');
    this.statusEl = h('span', { class: 'tl-status muted small', 'data-testid': 'compare-status', role: 'status' });
    const toolbar = h('div', { class: 'tl-toolbar', role: 'toolbar', 'aria-label': 'Steps shown' },
      h('span', { class: 'chips' }, this.kindBtns), h('span', { class: 'sep' }), this.firstBtn, this.nextBtn, this.statusEl);

    this.colA = h('span', { class: 'cs-col cs-col-a' });
    this.colB = h('span', { class: 'cs-col cs-col-b' });
    const head = h('div', { class: 'cs cs-head', 'aria-hidden': 'true' },
      h('span', { class: 'cs-i' }, 'step'), h('span', { class: 'cs-kind' }, ''), this.colA, this.colB);

    this.list = new VList({
      rowHeight: ROW_H,
      mode: 'listbox',
      label: 'Steps of both runs',
      className: 'cmp-list',
      keyOf: (it) => it.key,
      // A step's number and whether it is the first divergence change as the runs go on.
      verOf: (it) => (it.kind === 'marker' ? it.ver : `${it.i}|${it.i === this.first}|${it.kind}|${it.type}|${it.a_summary}|${it.b_summary}`),
      render: (it) => (it.kind === 'marker' ? this.renderMarker(it) : this.renderStep(it)),
      onSelect: (i, it) => {
        // The announcement is not a step: selecting it selects the step it announces.
        if (!isStep(it)) { if (i + 1 < this.items.length) this.list.select(i + 1, { scroll: false }); return; }
        o.onSelect(it);
      },
    });
    const touch = () => o.onTouch();
    this.list.el.addEventListener('wheel', touch, { passive: true });
    this.list.el.addEventListener('pointerdown', touch, { passive: true });
    this.list.el.addEventListener('keydown', touch, { passive: true });

    this.el = h('section', { class: 'panel tl-panel cmp-steps', 'aria-label': 'Steps of both runs, aligned' }, toolbar, head, this.list.el);
  }

  /** The column heads: what each side is. */
  setSides(a, b) {
    this.colA.replaceChildren(h('span', { class: 'side-tag side-a' }, 'A'), ` ${a}`);
    this.colB.replaceChildren(h('span', { class: 'side-tag side-b' }, 'B'), ` ${b}`);
  }

  /**
   * New steps from the collector. Keeps the selection (by the pair of sequences it shows, else by
   * either of them) and the scroll position. Returns whether the selected step's content changed.
   */
  setSteps(steps, first, running = { a: false, b: false }) {
    const counts = { same: 0, changed: 0, only_a: 0, only_b: 0 };
    for (let i = 0; i < steps.length; i++) {
      const st = steps[i];
      st.i = i;
      st.a_sequence = seqOf(st.a_sequence);
      st.b_sequence = seqOf(st.b_sequence);
      st.key = `${st.a_sequence ?? '-'}|${st.b_sequence ?? '-'}`;
      if (counts[st.kind] !== undefined) counts[st.kind]++;
    }
    const fi = first && Number.isInteger(first.index) && first.index >= 0 && first.index < steps.length ? first.index : null;
    // A run still going that so far did what the other did has not parted ways, it is behind:
    // from the "divergence" on, every step is one the other run alone took.
    this.behind = null;
    if (fi !== null && ((steps[fi].kind === 'only_b' && running.a) || (steps[fi].kind === 'only_a' && running.b))) {
      const k = steps[fi].kind;
      let i = fi;
      while (i < steps.length && steps[i].kind === k) i++;
      if (i === steps.length) this.behind = k === 'only_b' ? 'a' : 'b';
    }
    const before = this.list.selected();
    const beforeSig = before ? this.list.o.verOf(before) + before.key : null;
    this.steps = steps;
    this.first = fi;
    this.counts = counts;
    for (const [i, k] of KINDS.entries()) this.kindBtns[i].textContent = `${KIND_TEXT[k]} ${fmtInt(counts[k])}`;
    this.rebuild(before);
    const after = this.list.selected();
    return (after ? this.list.o.verOf(after) + after.key : null) !== beforeSig;
  }

  /** The items for the current filters: the steps shown, and the first divergence's announcement. */
  rebuild(before = this.list.selected()) {
    const out = [];
    const all = this.shown.size === KINDS.length;
    const firstStep = this.first === null ? null : this.steps[this.first];
    let shown = 0;
    for (const st of this.steps) {
      if (!all && !this.shown.has(st.kind)) continue;
      if (st === firstStep) out.push({ kind: 'marker', key: 'first-divergence', ver: `${st.key}|${st.kind}|${this.behind}`, step: st, behind: this.behind });
      out.push(st);
      shown++;
    }
    this.items = out;
    this.list.setItems(out);
    if (before && isStep(before) && this.list.sel < 0) {
      // The selected step's pair changed (a step one run alone had gained its counterpart): stay
      // on it. One the filters hide stays in the details pane.
      const same = (it) => isStep(it) && ((before.a_sequence !== null && it.a_sequence === before.a_sequence) || (before.b_sequence !== null && it.b_sequence === before.b_sequence));
      const again = out.findIndex(same);
      if (again >= 0) this.list.select(again, { scroll: false, focus: false, notify: false });
      else if (!this.steps.some(same)) this.o.onSelect(null);
    }
    if (!out.length) this.list.spacer.dataset.empty = this.steps.length ? 'No steps of the kinds shown.' : 'No steps yet.';
    else delete this.list.spacer.dataset.empty;
    const n = this.steps.length;
    const text = `${shown !== n ? `${fmtInt(shown)} of ` : ''}${fmtInt(n)} step${n === 1 ? '' : 's'}`;
    if (this.statusEl.textContent !== text) this.statusEl.textContent = text;
  }

  // ------------------------------------------------------------------ rows

  renderStep(st) {
    const cls = `cs cs-${st.kind}${st.i === this.first ? ' is-first' : ''}`;
    return h('div', {
      class: cls, 'data-testid': 'compare-step', 'data-kind': st.kind, 'data-index': String(st.i),
      'data-a-sequence': st.a_sequence === null ? '' : String(st.a_sequence),
      'data-b-sequence': st.b_sequence === null ? '' : String(st.b_sequence),
      'data-type': String(st.type || ''), 'data-first-divergence': st.i === this.first ? 'true' : null,
    },
    h('span', { class: 'cs-i mono' }, fmtInt(st.i + 1)),
    h('span', { class: `cs-kind ck-${st.kind}`, title: KIND_TITLE[st.kind] || st.kind }, KIND_TEXT[st.kind] || String(st.kind)),
    side('a', st, st.a_sequence, st.a_summary),
    side('b', st, st.b_sequence, st.b_summary));
  }

  renderMarker(it) {
    const st = it.step;
    const behind = it.behind ? it.behind.toUpperCase() : null;
    return h('div', { class: `cs-marker${behind ? ' is-behind' : ''}`, 'data-testid': 'first-divergence', 'data-index': String(st.i), role: 'presentation' },
      h('span', { class: 'cs-marker-label' }, behind ? `${behind} has not got here yet` : 'first divergence'),
      h('span', { class: 'muted small' }, behind
        ? `step ${fmtInt(st.i + 1)}: ${behind} is still running, and so far did what ${behind === 'A' ? 'B' : 'A'} did`
        : `step ${fmtInt(st.i + 1)}: ${KIND_TITLE[st.kind] ? KIND_TITLE[st.kind].toLowerCase() : st.kind}`));
  }

  // ------------------------------------------------------------------ selection & keys

  selected() {
    const it = this.list.selected();
    return isStep(it) ? it : null;
  }

  focus() { this.list.el.focus({ preventScroll: true }); }

  indexOfStep(i) {
    return this.items.findIndex((it) => isStep(it) && it.i === i);
  }

  /** Shows the first divergence (its announcement and the step) and selects it. */
  gotoFirst({ focus = true } = {}) {
    if (this.first === null) return false;
    let idx = this.indexOfStep(this.first);
    if (idx < 0) {
      // Hidden by the kind filters: show every kind again.
      this.shown = new Set(KINDS);
      for (const b of this.kindBtns) b.setAttribute('aria-pressed', 'true');
      this.rebuild();
      idx = this.indexOfStep(this.first);
    }
    if (idx < 0) return false;
    // The announcement above it stays in view too.
    this.list.scrollToIndex(Math.max(0, idx - 1), 'center');
    this.list.select(idx, { scroll: false, focus });
    return true;
  }

  move(delta) {
    if (!this.items.length) return;
    let i = this.list.sel < 0 ? (delta > 0 ? -1 : this.items.length) : this.list.sel;
    i = Math.max(0, Math.min(this.items.length - 1, i + delta));
    // Never rest on the announcement: step past it the way we were going.
    if (!isStep(this.items[i])) i = i + (delta > 0 || i === 0 ? 1 : -1);
    if (i >= 0 && i < this.items.length) this.list.select(i);
  }

  jumpDiff(dir) {
    const i = this.list.find(dir, (it) => isStep(it) && it.kind !== 'same');
    if (i < 0) return shake(this.nextBtn);
    this.o.onTouch();
    this.list.reveal(i);
  }

  onKey(e) {
    switch (e.key) {
      case 'j': case 'ArrowDown': this.move(1); return true;
      case 'k': case 'ArrowUp': this.move(-1); return true;
      case 'PageDown': this.move(Math.floor(this.list.el.clientHeight / ROW_H)); return true;
      case 'PageUp': this.move(-Math.floor(this.list.el.clientHeight / ROW_H)); return true;
      case 'g': case 'Home': this.move(-Infinity); return true;
      case 'G': case 'End': this.move(Infinity); return true;
      case 'n': this.jumpDiff(1); return true;
      case 'N': case 'p': this.jumpDiff(-1); return true;
      case 'd': this.o.onTouch(); this.gotoFirst(); return true;
      default: return false;
    }
  }

  atEnd() { return this.list.atEnd(); }

  scrollToEnd() { this.list.scrollToEnd(); }
}

/**
 * Whether a summary reports a failure, in the collector's words for a step (src/compare/step.rs):
 * `tool → failed: why`, `ended: failed — why`. Only a colour depends on it.
 */
const FAILED = /→ failed\b|^ended: (failed|error|timeout|crashed)\b/;

/** One run's half of a row: its event's sequence, type and summary; empty when it has none. */
function side(name, st, seq, summary) {
  if (seq === null) return h('span', { class: `cs-side cs-${name} is-empty`, 'aria-label': `no step in ${name.toUpperCase()}` });
  const type = String(st.type || '');
  return h('span', { class: `cs-side cs-${name}`, title: `${name.toUpperCase()} #${seq} ${type}\n${summary ?? ''}` },
    h('span', { class: 'ev-seq mono' }, `#${seq}`),
    h('span', { class: `ev-type tier-${tierOf(type)}` }, typeLabel(type)),
    h('span', { class: `cs-sum${FAILED.test(summary ?? '') ? ' is-err' : ''}`, 'data-testid': `summary-${name}` }, clip(summary ?? '', 200)));
}
