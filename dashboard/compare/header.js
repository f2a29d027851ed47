// The compare view's header: back, which two runs these are (A and B: status, agent, goal, id with
// a link to its session, when it started, how it ended) and the actions: swap the sides, and
// compare A with another run (the picker of the session view).

import { h, replace, clip, parseTs, fmtDateTime, fmtDuration, copyButton } from '../dom.js';
import { statusOf, skewOf } from '../store.js';
import { compareHref, sessionHref } from '../routes.js';
import { ComparePicker } from './picker.js';

export class CompareHeader {
  /**
   * @param {object} o
   * @param {string} o.a
   * @param {string} o.b
   * @param {() => void} o.onBack
   */
  constructor(o) {
    this.o = o;
    this.picker = new ComparePicker({ id: o.a, current: o.b });
    this.lineA = h('div', { class: 'cmp-run', 'data-testid': 'compare-run-a', 'data-session-id': o.a });
    this.lineB = h('div', { class: 'cmp-run', 'data-testid': 'compare-run-b', 'data-session-id': o.b });
    const back = h('button', { type: 'button', class: 'btn btn-back', title: 'Back (Esc)', onclick: () => o.onBack() }, '←');
    const swap = h('a', { class: 'btn', href: compareHref(o.b, o.a), 'data-testid': 'compare-swap', title: 'Read A against B instead' }, 'Swap A ↔ B');
    const other = h('button', { type: 'button', class: 'btn', 'data-testid': 'compare-change', onclick: () => this.picker.open(), title: 'Compare A with another run' }, 'Compare A with…');
    this.el = h('header', { class: 'sv-head cmp-head' },
      back,
      h('div', { class: 'sv-titles' }, h('h1', { class: 'sv-goal', id: 'cv-title' }, 'Compare runs'), this.lineA, this.lineB),
      h('div', { class: 'sv-actions' }, swap, other));
    this.sigs = {};
  }

  /** Draws one run's line from its row (null: not known yet, or `missing`). */
  render(name, row, missing = false) {
    const el = name === 'a' ? this.lineA : this.lineB;
    const id = this.o[name];
    const tag = h('span', { class: `side-tag side-${name}` }, name.toUpperCase());
    if (!row) {
      const sig = `none:${missing}`;
      if (this.sigs[name] === sig) return;
      this.sigs[name] = sig;
      replace(el, tag, h('span', { class: 'mono small sid' }, id),
        missing ? h('span', { class: 'error-text small', 'data-testid': `missing-${name}` }, 'no such session in this collector') : h('span', { class: 'muted small' }, 'loading…'));
      return;
    }
    const st = statusOf(row);
    const sig = JSON.stringify([st.text, st.dot, row.goal, row.agent_id, row.started_at, row.ended_at, row.duration_ms, row.error_message, row.outcome_summary]);
    if (this.sigs[name] === sig) return;
    this.sigs[name] = sig;
    const started = parseTs(row.started_at);
    // The app's clock ticks `data-since` (browser time) while the run goes on.
    const since = st.running && Number.isFinite(started) ? started + skewOf(row.id) : null;
    replace(el, tag,
      h('span', { class: `dot live-${st.dot}`, 'aria-hidden': 'true' }),
      h('span', { class: `pill st-${st.cls}`, 'data-testid': `status-${name}` }, st.text),
      h('strong', null, row.agent_id || '—'),
      h('span', { class: 'cmp-run-goal', title: row.goal || '' }, clip(row.goal || '(no goal)', 100)),
      h('a', { class: 'mono small sid', href: sessionHref(id), 'data-testid': `session-link-${name}`, title: `Open ${name.toUpperCase()}'s session view` }, clip(id, 48)),
      copyButton(() => id, 'Copy session id', `copy-id-${name}`),
      h('span', { class: 'muted small' }, `started ${fmtDateTime(started)} · `,
        h('span', { class: since !== null ? 'tick' : null, 'data-since': since }, since !== null ? fmtDuration(Date.now() - since) : fmtDuration(row.duration_ms))),
      row.error_message ? h('span', { class: 'error-text small' }, clip(row.error_message, 120))
        : (row.outcome_summary ? h('span', { class: 'muted small' }, clip(row.outcome_summary, 120)) : null));
  }
}
