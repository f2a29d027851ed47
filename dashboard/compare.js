// Two runs side by side: the collector's comparison (`GET /sessions/:a/compare/:b`) drawn as the
// figures of both (compare/deltas.js), where they part ways, and their steps aligned
// (compare/steps.js), with the selected step's events in full (compare/detail.js). This module
// composes those and owns the lifecycle: the first load (which brings the first divergence into
// view), following the live feed while either run goes on, and the errors.
//
// Live: an event, an alert or a deletion of either session, and every reconnection, asks for the
// comparison again. It is one request for the whole comparison, so it is throttled: at most one
// at a time, and at most once a second, or less often when the comparison is big (four times as
// long as the last one took to fetch), so that two 100k-event runs do not keep the page busy.

import { api, ApiError } from './api.js';
import { h, fmtInt } from './dom.js';
import { isRunningStatus } from './model.js';
import { subscribe, getRow, mergeRow } from './store.js';
import { sessionHref } from './routes.js';
import { CompareHeader } from './compare/header.js';
import { Deltas } from './compare/deltas.js';
import { StepList } from './compare/steps.js';
import { StepDetail } from './compare/detail.js';

const isRunningRow = (r) => !!r && isRunningStatus(r.status);

const MIN_INTERVAL = 1000;
const MAX_INTERVAL = 15000;

export class CompareView {
  constructor(a, b, { live, onBack }) {
    this.a = a;
    this.b = b;
    this.live = live;
    this.destroyed = false;
    /** whether a comparison has been drawn */
    this.loaded = false;
    /** whether the user has moved in the list: from then on, the view never scrolls it by itself */
    this.touched = false;
    this.missing = { a: false, b: false };
    this.inFlight = false;
    this.again = false;
    this.timer = null;
    /** whether the collector refused this comparison for good (then it is not asked again) */
    this.refused = false;
    this.lastStart = 0;
    this.interval = MIN_INTERVAL;

    this.header = new CompareHeader({ a, b, onBack });
    this.deltas = new Deltas();
    this.detail = new StepDetail({ a, b });
    this.steps = new StepList({
      onSelect: (st) => this.detail.show(st),
      onTouch: () => { this.touched = true; },
    });
    this.steps.setSides(a, b);
    this.notice = h('div', { class: 'notice', hidden: true, role: 'status', 'data-testid': 'compare-notice' });
    this.banner = h('div', { class: 'cmp-banner', 'data-testid': 'compare-summary', hidden: true });
    this.el = h('section', { class: 'view sv cv', 'data-testid': 'compare-view', 'data-a': a, 'data-b': b, 'aria-labelledby': 'cv-title' },
      this.header.el,
      this.notice,
      this.deltas.el,
      this.banner,
      this.body = h('div', { class: 'cv-body' }, this.steps.el, this.detail.el),
      this.header.picker.el);
    document.title = 'compare · aop';
    this.header.render('a', getRow(a));
    this.header.render('b', getRow(b));

    const ours = (sid) => sid === this.a || sid === this.b;
    this.unsubs = [
      live.on('event', (ev) => { if (ours(ev.session_id)) this.refetch(); }),
      live.on('alert', (al) => { if (ours(al.session_id)) this.refetch(); }),
      live.on('deleted', (sid) => { if (ours(sid)) this.refetch(); }),
      live.on('resync', () => this.refetch()),
      subscribe((ids) => {
        if (this.destroyed) return;
        for (const n of ['a', 'b']) if (ids.has(this[n]) || ids.has('*')) this.header.render(n, getRow(this[n]), this.missing[n]);
      }),
    ];
    this.fetchNow();
  }

  destroy() {
    this.destroyed = true;
    for (const u of this.unsubs) u();
    clearTimeout(this.timer);
    this.detail.destroy();
    this.el.remove();
  }

  // ------------------------------------------------------------------ for the app

  focus() { this.steps.focus(); }

  move(delta) { this.steps.move(delta); }

  /** Keys while this view is shown; returns true when handled. */
  onKey(e) {
    this.touched = true;
    if (e.key === 'a' || e.key === 'b') {
      // The selected step's event in that run's session view.
      const st = this.steps.selected();
      const seq = st && (e.key === 'a' ? st.a_sequence : st.b_sequence);
      if (seq !== null && seq !== undefined) location.hash = sessionHref(this[e.key], seq);
      return true;
    }
    return this.steps.onKey(e);
  }

  get running() {
    return isRunningRow(getRow(this.a)) || isRunningRow(getRow(this.b));
  }

  // ------------------------------------------------------------------ loading

  /** Asks for the comparison again, soon (see the top of this file for how soon). */
  refetch() {
    if (this.destroyed || this.refused) return;
    if (this.inFlight) { this.again = true; return; }
    if (this.timer) return;
    const wait = Math.max(0, this.lastStart + this.interval - Date.now());
    this.timer = setTimeout(() => { this.timer = null; this.fetchNow(); }, wait);
  }

  async fetchNow() {
    if (this.destroyed) return;
    this.inFlight = true;
    this.again = false;
    this.lastStart = Date.now();
    let r;
    try {
      r = await api(`/sessions/${encodeURIComponent(this.a)}/compare/${encodeURIComponent(this.b)}`);
    } catch (e) {
      this.inFlight = false;
      if (this.destroyed) return;
      await this.failed(e);
      return;
    }
    this.inFlight = false;
    if (this.destroyed) return;
    this.interval = Math.min(MAX_INTERVAL, Math.max(MIN_INTERVAL, 4 * (Date.now() - this.lastStart)));
    this.apply(r);
    if (this.again) this.refetch();
  }

  async failed(e) {
    if (e instanceof ApiError && e.status === 404) {
      // Which of the two is missing: the comparison's answer may not say, the sessions' do.
      const exists = async (id) => {
        try {
          const d = await api(`/sessions/${encodeURIComponent(id)}`, { params: { limit: 1 } });
          if (d && d.session) mergeRow(d.session);
          return true;
        } catch (err) {
          return !(err instanceof ApiError && err.status === 404);
        }
      };
      const [ea, eb] = await Promise.all([exists(this.a), exists(this.b)]);
      if (this.destroyed) return;
      this.missing = { a: !ea, b: !eb };
      this.header.render('a', ea ? getRow(this.a) : null, !ea);
      this.header.render('b', eb ? getRow(this.b) : null, !eb);
      if (!ea || !eb) {
        const names = [!ea ? `A ("${this.a}")` : null, !eb ? `B ("${this.b}")` : null].filter(Boolean);
        this.showNotice(`${names.length === 2 ? 'Neither session exists' : `Session ${names[0]} does not exist`} in this collector${this.loaded ? ' any more' : ' (yet)'}: nothing to compare. ${this.loaded ? '' : 'This view fills in if its events arrive.'}`, true);
        if (!this.loaded) this.showEmpty();
        return;
      }
      // Both exist, yet no comparison: a collector without the compare endpoint.
      this.showNotice(`This collector cannot compare sessions (${e.message}).`, true);
      if (!this.loaded) this.showEmpty();
      return;
    }
    if (e instanceof ApiError && e.status >= 400 && e.status < 500 && e.status !== 408 && e.status !== 429) {
      // Refused for good (422: a run too long to compare): asking again would not help.
      this.showNotice(`The collector will not compare these sessions: ${e.message}`, true);
      if (!this.loaded) this.showEmpty();
      this.refused = true;
      return;
    }
    // Unreachable, or busy (503: as many comparisons as it makes at once): try again shortly.
    this.showNotice(`Could not ${this.loaded ? 'update' : 'load'} the comparison: ${e.message}. Retrying…`, true);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => { this.timer = null; this.fetchNow(); }, 3000);
  }

  showNotice(text, error = false) {
    this.notice.hidden = !text;
    this.notice.textContent = text || '';
    this.notice.classList.toggle('is-error', !!error);
  }

  /** Nothing to compare (yet): the notice says why, and no empty panels say it again. */
  showEmpty() {
    this.banner.hidden = true;
    this.deltas.el.hidden = true;
    this.body.hidden = true;
    this.steps.setSteps([], null);
  }

  apply(r) {
    this.missing = { a: false, b: false };
    this.showNotice(this.a === this.b ? 'A and B are the same session: every step is the same.' : '');
    if (r.a) mergeRow(r.a);
    if (r.b) mergeRow(r.b);
    this.header.render('a', getRow(this.a) || r.a || null);
    this.header.render('b', getRow(this.b) || r.b || null);
    const agent = (getRow(this.a) || {}).agent_id;
    document.title = `compare${agent ? ` · ${agent}` : ''} · aop`;
    const running = { a: isRunningRow(getRow(this.a)), b: isRunningRow(getRow(this.b)) };
    this.deltas.el.hidden = false;
    this.body.hidden = false;
    this.deltas.render(r.deltas, running);

    const steps = Array.isArray(r.steps) ? r.steps : [];
    const first = r.first_divergence && typeof r.first_divergence === 'object' ? r.first_divergence : null;
    // A run that is only behind the other has not parted ways with it (steps.js, `behind`).
    const parted = () => this.steps.first !== null && !this.steps.behind;
    const knewFirst = parted();
    const follow = this.loaded && this.running && this.steps.atEnd() && this.steps.items.length > 0;
    const changed = this.steps.setSteps(steps, first, running);
    this.renderBanner(steps);
    if (!this.loaded || (!this.touched && !knewFirst && parted())) {
      // Opened (or, untouched, the runs just parted ways): show where.
      if (this.steps.first !== null) this.steps.gotoFirst({ focus: !this.loaded });
    } else if (follow) {
      this.steps.scrollToEnd();
    }
    if (changed && this.steps.selected()) this.detail.show(this.steps.selected());
    this.loaded = true;
    this.el.dataset.loaded = 'true';
  }

  /** One line on the whole: where the runs part ways, or that they do the same. */
  renderBanner(steps) {
    const c = this.steps.counts;
    const n = steps.length;
    const running = this.running;
    this.banner.hidden = false;
    const counts = h('span', { class: 'muted small cmp-counts' },
      `${fmtInt(n)} step${n === 1 ? '' : 's'}: ${fmtInt(c.same)} same, ${fmtInt(c.changed)} changed, ${fmtInt(c.only_a)} only in A, ${fmtInt(c.only_b)} only in B`);
    if (this.steps.first === null) {
      this.banner.className = 'cmp-banner is-same';
      this.banner.dataset.divergence = 'none';
      this.banner.replaceChildren(
        h('strong', { 'data-testid': 'no-divergence' }, n ? `The runs do the same${running ? ' so far' : ''}: no step differs.` : 'Neither run has steps yet.'),
        counts);
      return;
    }
    const st = steps[this.steps.first];
    const side = (name, seq, summary) => (seq === null || seq === undefined
      ? h('span', { class: 'muted' }, `${name.toUpperCase()}: nothing`)
      : h('span', { class: 'cmp-banner-side' }, h('span', { class: `side-tag side-${name}` }, name.toUpperCase()), ` #${seq} `, h('span', { class: 'mono' }, String(summary ?? ''))));
    const go = () => { this.touched = true; this.steps.gotoFirst(); };
    this.banner.dataset.divergence = String(this.steps.first);
    const behind = this.steps.behind;
    if (behind) {
      const ahead = behind === 'a' ? 'B' : 'A';
      this.banner.className = 'cmp-banner is-same';
      this.banner.replaceChildren(
        h('strong', { 'data-testid': 'no-divergence' }, `The same so far: ${behind.toUpperCase()} is still running, ${ahead} went on for ${fmtInt(n - this.steps.first)} more step${n - this.steps.first === 1 ? '' : 's'}.`),
        h('button', { type: 'button', class: 'link', 'data-testid': 'divergence-link', onclick: go }, `From step ${fmtInt(this.steps.first + 1)}`),
        counts);
      return;
    }
    this.banner.className = 'cmp-banner is-diverged';
    this.banner.replaceChildren(
      h('button', { type: 'button', class: 'link cmp-banner-go', 'data-testid': 'divergence-link', onclick: go },
        `They part ways at step ${fmtInt(this.steps.first + 1)}`),
      side('a', st.a_sequence, st.a_summary), h('span', { class: 'muted' }, '↔'), side('b', st.b_sequence, st.b_summary),
      counts);
  }
}
