// "Compare with…": a dialog that picks the session to compare one with. It asks the collector for
// the runs most like it (`GET /sessions/:id/similar`, best counterpart first) and prefills the best,
// so the usual case is one click or Enter; any other of them is a click away, and any session id
// can be typed or pasted instead (a run of another agent, one the collector did not rank).

import { api } from '../api.js';
import { h, replace, clip, parseTs, fmtDateTime, fmtDuration, fmtInt, fmtCost } from '../dom.js';
import { statusClass } from '../model.js';
import { compareHref } from '../routes.js';

const SHOWN = 8;

export class ComparePicker {
  /**
   * @param {object} o
   * @param {string} o.id  the session to compare (it is `a`; the pick is `b`)
   * @param {string} [o.current]  the session it is compared with now, if any (preselected)
   */
  constructor(o) {
    this.o = o;
    this.prefilled = '';
    this.input = h('input', {
      class: 'input mono', type: 'text', autocomplete: 'off', spellcheck: 'false',
      placeholder: 'a session id', 'aria-label': 'Session id to compare with', 'data-testid': 'compare-with-input',
    });
    this.input.addEventListener('input', () => { this.err.textContent = ''; this.mark(); });
    this.listEl = h('div', { class: 'cmp-similar', role: 'list', 'data-testid': 'similar-sessions' });
    this.err = h('p', { class: 'error-text small', role: 'alert' });
    const cancel = h('button', { type: 'button', class: 'btn', 'data-testid': 'compare-cancel' }, 'Cancel');
    this.submit = h('button', { type: 'submit', class: 'btn btn-primary', 'data-testid': 'compare-submit' }, 'Compare');
    this.form = h('form', { method: 'dialog' },
      h('h2', null, 'Compare with…'),
      h('p', { class: 'muted small' }, 'Step by step against another run: where they part ways, and what each cost.'),
      h('label', { class: 'field' }, h('span', null, 'Session'), this.input),
      this.err,
      h('div', { class: 'd-sub' }, 'Similar runs of this agent'),
      this.listEl,
      h('div', { class: 'dialog-actions' }, cancel, this.submit));
    this.el = h('dialog', { class: 'dialog cmp-pick', 'data-testid': 'compare-dialog', 'aria-label': 'Compare with another session' }, this.form);
    cancel.addEventListener('click', () => this.el.close());
    this.form.addEventListener('submit', (e) => { e.preventDefault(); this.go(this.input.value.trim()); });
  }

  open() {
    const current = this.o.current || '';
    if (!this.el.open) this.el.showModal();
    // What was typed in an earlier opening stays; otherwise start from the current comparison.
    if (!this.input.value || this.input.value === this.prefilled) { this.input.value = current; this.prefilled = current; }
    this.err.textContent = '';
    this.input.focus();
    this.input.select();
    this.load();
  }

  async load() {
    const token = (this.token = {});
    if (!this.rows) replace(this.listEl, h('p', { class: 'muted small' }, 'Looking for similar runs…'));
    let rows;
    try {
      const r = await api(`/sessions/${encodeURIComponent(this.o.id)}/similar`, { params: { limit: SHOWN } });
      rows = (r && Array.isArray(r.sessions) ? r.sessions : []).filter((s) => s && typeof s.id === 'string' && s.id !== this.o.id);
    } catch (e) {
      if (token !== this.token) return;
      replace(this.listEl, h('p', { class: 'error-text small' }, `Could not look for similar runs: ${e.message}. A session id still works.`));
      return;
    }
    if (token !== this.token) return;
    this.rows = rows;
    // The best counterpart, unless the user typed something meanwhile.
    if (rows.length && (!this.input.value || this.input.value === this.prefilled)) {
      this.input.value = rows[0].id;
      this.prefilled = rows[0].id;
      if (document.activeElement === this.input) this.input.select();
    }
    this.input.dataset.prefilled = this.prefilled;
    if (!rows.length) {
      replace(this.listEl, h('p', { class: 'muted small', 'data-testid': 'no-similar' },
        'No other run of this agent yet. Paste any session id above.'));
      return;
    }
    replace(this.listEl, rows.map((r, i) => this.rowEl(r, i === 0)));
    this.mark();
  }

  rowEl(r, best) {
    const st = statusClass(r.status);
    const b = h('button', {
      type: 'button', class: 'cmp-sim', role: 'listitem', 'data-testid': 'similar-session', 'data-session-id': r.id,
      title: `${r.id}\n${r.goal || ''}`,
    },
    h('span', { class: `pill st-${st}` }, String(r.status || 'running')),
    h('span', { class: 'cmp-sim-goal' }, clip(r.goal || '(no goal)', 90),
      best ? h('span', { class: 'badge sev-info', title: 'the collector\'s best counterpart' }, 'best match') : null),
    h('span', { class: 'muted small' }, fmtDateTime(parseTs(r.started_at))),
    h('span', { class: 'muted small num' }, fmtDuration(r.duration_ms)),
    h('span', { class: 'muted small num' }, `${fmtInt(r.total_steps)} steps`),
    h('span', { class: 'muted small num' }, fmtCost(r.total_cost_usd)),
    h('span', { class: 'mono small muted cmp-sim-id' }, clip(r.id, 40)));
    b.addEventListener('click', () => { this.input.value = r.id; this.err.textContent = ''; this.mark(); });
    b.addEventListener('dblclick', () => this.go(r.id));
    return b;
  }

  /** Marks the listed session the input names. */
  mark() {
    const v = this.input.value.trim();
    for (const el of this.listEl.querySelectorAll('[data-testid=similar-session]')) {
      el.setAttribute('aria-current', String(el.dataset.sessionId === v));
    }
  }

  go(other) {
    if (!other) { this.err.textContent = 'Pick a run, or paste a session id.'; this.input.focus(); return; }
    if (other === this.o.id) { this.err.textContent = 'That is this session: pick another run.'; this.input.focus(); return; }
    this.el.close();
    location.hash = compareHref(this.o.id, other);
  }
}
