// The selected step in full: a's event on the left, b's on the right, each fetched on demand
// (`GET /sessions/:id?after=<seq − 1>&limit=1`) and kept in a small cache (a stored event never
// changes). The payloads are laid out field by field, and a field whose value differs from the
// other run's (or that the other run lacks) is highlighted: what made a step "changed" is seen
// without reading two JSON blobs. Each side links to its session's view at that event.

import { api } from '../api.js';
import { h, replace, str, pretty, fmtInt, copyButton } from '../dom.js';
import { typeLabel, tierOf } from '../model.js';
import { sessionHref } from '../routes.js';

const CACHE = 256;
/** Fields that differ between any two runs (ids, timings): their differences are shown quietly. */
const INCIDENTAL = new Set(['tool_call_id', 'latency_ms', 'duration_ms', 'timestamp', 'span_id', 'otel']);
const KIND_TEXT = { same: 'same in both runs', changed: 'changed', only_a: 'only in A', only_b: 'only in B' };

export class StepDetail {
  /**
   * @param {object} o
   * @param {string} o.a  session a
   * @param {string} o.b  session b
   */
  constructor(o) {
    this.o = o;
    this.cache = new Map();
    this.destroyed = false;
    this.titleEl = h('h2', null, 'Step details');
    this.bodyEl = h('div', { class: 'cmp-detail-body', 'data-testid': 'compare-detail' },
      h('p', { class: 'muted cmp-detail-empty' }, 'Select a step to see both runs\' events in full. ',
        h('kbd', null, 'j'), h('kbd', null, 'k'), ' move, ', h('kbd', null, 'n'), ' next difference, ', h('kbd', null, 'd'), ' first divergence.'));
    this.el = h('section', { class: 'panel cmp-detail', 'aria-label': 'The selected step in both runs' },
      h('div', { class: 'panel-head' }, this.titleEl), this.bodyEl);
  }

  destroy() { this.destroyed = true; }

  /** The event `seq` of session `id`, from the cache or the collector. */
  event(id, seq) {
    const key = `${id}\n${seq}`;
    let p = this.cache.get(key);
    if (!p) {
      const params = seq > 0 ? { after: seq - 1, limit: 1 } : { limit: 1 };
      p = api(`/sessions/${encodeURIComponent(id)}`, { params }).then((r) => {
        const ev = (r.events || []).find((e) => e.sequence === seq);
        if (!ev) throw new Error('not in the session (any more)');
        return ev;
      });
      // A failure is not kept: the next look asks again.
      p.catch(() => this.cache.delete(key));
      this.cache.set(key, p);
      if (this.cache.size > CACHE) this.cache.delete(this.cache.keys().next().value);
    }
    return p;
  }

  /** Shows a step (null: none). */
  async show(st) {
    this.shown = st;
    const token = (this.token = {});
    if (!st) {
      this.titleEl.textContent = 'Step details';
      replace(this.bodyEl, h('p', { class: 'muted cmp-detail-empty' }, 'Select a step to see both runs\' events in full.'));
      return;
    }
    this.titleEl.textContent = `Step ${fmtInt(st.i + 1)} · ${KIND_TEXT[st.kind] || st.kind}`;
    this.bodyEl.dataset.index = String(st.i);
    this.bodyEl.dataset.kind = String(st.kind);
    const { a, b } = this.o;
    const get = (id, seq) => (seq === null ? Promise.resolve(null) : this.event(id, seq).then((ev) => ({ ev }), (err) => ({ err })));
    // Both at once; what is already cached draws without a flash of "loading".
    const pa = get(a, st.a_sequence);
    const pb = get(b, st.b_sequence);
    const early = setTimeout(() => {
      if (token === this.token) replace(this.bodyEl, this.sideEl('a', st, undefined, null), this.sideEl('b', st, undefined, null));
    }, 80);
    const [ra, rb] = await Promise.all([pa, pb]);
    clearTimeout(early);
    if (token !== this.token || this.destroyed) return;
    const evA = ra && ra.ev ? ra.ev : null;
    const evB = rb && rb.ev ? rb.ev : null;
    replace(this.bodyEl, this.sideEl('a', st, ra, evB), this.sideEl('b', st, rb, evA));
  }

  /**
   * One run's half: `got` is `{ev}` or `{err}`, null when the run has no event at this step,
   * undefined while loading; `other` is the other run's event, to tell which fields differ.
   */
  sideEl(name, st, got, other) {
    const id = this.o[name];
    const seq = name === 'a' ? st.a_sequence : st.b_sequence;
    const wrap = (...children) => h('div', { class: `cmp-side cmp-side-${name}`, 'data-testid': `detail-${name}`, 'data-sequence': seq === null ? '' : String(seq) }, children);
    const tag = h('span', { class: `side-tag side-${name}` }, name.toUpperCase());
    if (seq === null) {
      const them = name === 'a' ? 'B' : 'A';
      return wrap(h('div', { class: 'd-head' }, tag), h('p', { class: 'muted' }, `No step here: run ${them} took this one alone.`));
    }
    const link = h('a', { href: sessionHref(id, seq), class: 'small', 'data-testid': `open-${name}`, title: `This event in ${name.toUpperCase()}'s session view` }, 'open in session →');
    if (got === undefined) return wrap(h('div', { class: 'd-head' }, tag, h('span', { class: 'mono' }, `#${seq}`), link), h('p', { class: 'muted' }, 'Loading…'));
    if (got.err) {
      return wrap(h('div', { class: 'd-head' }, tag, h('span', { class: 'mono' }, `#${seq}`), link),
        h('p', { class: 'error-text' }, `Could not load event #${seq}: ${got.err.message}`));
    }
    const ev = got.ev;
    const type = str(ev.type);
    const p = ev.payload && typeof ev.payload === 'object' && !Array.isArray(ev.payload) ? ev.payload : null;
    const op = other && other.payload && typeof other.payload === 'object' && !Array.isArray(other.payload) ? other.payload : null;
    return wrap(
      h('div', { class: 'd-head' }, tag,
        h('span', { class: `chip tier-${tierOf(type)} static`, title: type }, typeLabel(type)),
        h('span', { class: 'mono' }, `#${seq}`),
        h('span', { class: 'muted mono small', title: 'agent timestamp' }, str(ev.timestamp)),
        link),
      p ? fields(name, p, other ? op || {} : null) : h('pre', { class: 'json', 'data-testid': `payload-${name}` }, pretty(ev.payload)),
      h('details', { class: 'd-block' },
        h('summary', null, 'Event', copyButton(() => pretty(ev), 'Copy event', `copy-event-${name}`)),
        h('pre', { class: 'json' }, pretty(ev))));
  }
}

/**
 * A payload field by field; with `other` (the other run's payload) the fields that differ from it
 * are marked. Strings read as text, everything else as JSON.
 */
function fields(name, p, other) {
  const keys = Object.keys(p);
  if (!keys.length) return h('p', { class: 'muted', 'data-testid': `payload-${name}` }, '(empty payload)');
  const rows = [];
  for (const k of keys) {
    const v = p[k];
    const differs = other !== null && (!(k in other) || JSON.stringify(other[k]) !== JSON.stringify(v));
    const cls = differs ? `is-diff${INCIDENTAL.has(k) ? ' is-minor' : ''}` : null;
    const text = typeof v === 'string' ? v : pretty(v);
    const long = text.length > 20000 ? `${text.slice(0, 20000)}\n… (cut; the event below has it all)` : text;
    rows.push(h('dt', { class: cls, title: differs ? 'differs from the other run' : null }, k),
      h('dd', { class: cls, 'data-key': k, 'data-differs': differs ? 'true' : null }, typeof v === 'string' ? long : h('code', { class: 'cmp-json' }, long)));
  }
  // Fields only the other run has are worth knowing too.
  if (other) {
    for (const k of Object.keys(other)) {
      if (k in p) continue;
      const minor = INCIDENTAL.has(k) ? ' is-minor' : '';
      rows.push(h('dt', { class: `is-diff is-absent${minor}`, title: 'only the other run has it' }, k),
        h('dd', { class: `is-diff is-absent muted${minor}`, 'data-key': k, 'data-differs': 'true' }, '(absent)'));
    }
  }
  return h('dl', { class: 'kv cmp-fields', 'data-testid': `payload-${name}` }, rows);
}
