// A virtualised list with fixed row heights: only the rows in view (plus a margin) exist in the DOM,
// so a 100,000-event timeline costs as much to show as a 30-event one. Rows are keyed: a row whose
// item keeps its key and version is moved, not rebuilt, so live updates do not churn the DOM.

import { h } from './dom.js';

let nextListId = 1;

export class VList {
  /**
   * @param {object} o
   * @param {number} o.rowHeight   pixel height of every row
   * @param {(item, index) => HTMLElement} o.render  builds a row's element
   * @param {(item) => string} o.keyOf  stable identity of an item
   * @param {(item) => number} [o.verOf]  changes when the item must be redrawn
   * @param {'listbox'|'links'} [o.mode]  listbox: rows are options; links: rows are links (roving focus)
   * @param {(index, item) => void} [o.onSelect]
   * @param {(index, item) => void} [o.onActivate]  double-click (Enter is the page's keyboard handler's)
   */
  constructor(o) {
    this.o = Object.assign({ overscan: 8, mode: 'listbox', verOf: (it) => it.ver || 0 }, o);
    this.id = `vl${nextListId++}`;
    this.items = [];
    this.sel = -1;
    this.selKey = null;
    this.rendered = new Map();
    this.spacer = h('div', { class: 'vlist-spacer' });
    const listbox = this.o.mode === 'listbox';
    this.el = h('div', {
      class: `vlist ${this.o.className || ''}`,
      role: listbox ? 'listbox' : null,
      tabindex: listbox ? '0' : null,
      'aria-label': this.o.label || null,
    }, this.spacer);
    this.queued = false;
    this.el.addEventListener('scroll', () => this.schedule(), { passive: true });
    this.el.addEventListener('click', (e) => {
      const row = e.target.closest('[data-vi]');
      if (!row || !this.el.contains(row)) return;
      if (e.target.closest('button:not([data-vi]), a:not([data-vi]), input, summary')) return;
      this.select(Number(row.dataset.vi), { scroll: false, focus: false });
    });
    this.el.addEventListener('dblclick', (e) => {
      const row = e.target.closest('[data-vi]');
      if (row && this.o.onActivate) this.o.onActivate(Number(row.dataset.vi), this.items[Number(row.dataset.vi)]);
    });
    if ('ResizeObserver' in window) new ResizeObserver(() => this.schedule()).observe(this.el);
  }

  get length() { return this.items.length; }

  schedule() {
    if (this.queued) return;
    this.queued = true;
    requestAnimationFrame(() => { this.queued = false; this.render(); });
  }

  /** Whether the view is scrolled to (within a row of) the end. */
  atEnd() {
    const el = this.el;
    return el.scrollTop + el.clientHeight >= el.scrollHeight - this.o.rowHeight - 2;
  }

  /** New items; the selection follows its key. */
  setItems(items) {
    this.items = items;
    if (this.selKey !== null) {
      const k = this.selKey;
      let idx = -1;
      // Most updates keep the selection near where it was: look there first.
      const guess = this.sel;
      if (guess >= 0 && guess < items.length && this.o.keyOf(items[guess]) === k) idx = guess;
      else idx = items.findIndex((it) => this.o.keyOf(it) === k);
      this.sel = idx;
      if (idx < 0) this.selKey = null;
    }
    this.spacer.style.height = `${items.length * this.o.rowHeight}px`;
    this.render();
  }

  /** Redraws every visible row (e.g. after a theme or clock change). */
  invalidate() {
    for (const r of this.rendered.values()) r.ver = NaN;
    this.schedule();
  }

  render() {
    const { rowHeight: rh, overscan } = this.o;
    const n = this.items.length;
    this.spacer.style.height = `${n * rh}px`;
    const top = this.el.scrollTop;
    const height = this.el.clientHeight || 600;
    const start = Math.max(0, Math.floor(top / rh) - overscan);
    const end = Math.min(n, Math.ceil((top + height) / rh) + overscan);
    const seen = new Set();
    for (let i = start; i < end; i++) {
      const item = this.items[i];
      const k = this.o.keyOf(item);
      const v = this.o.verOf(item);
      let r = this.rendered.get(k);
      if (!r || r.ver !== v) {
        const el = this.o.render(item, i);
        el.classList.add('vrow');
        el.style.height = `${rh}px`;
        if (this.o.mode === 'listbox' && !el.hasAttribute('role')) el.setAttribute('role', 'option');
        if (r) r.el.replaceWith(el); else this.spacer.appendChild(el);
        r = { el, ver: v, i: -1, sel: null };
        this.rendered.set(k, r);
      }
      if (r.i !== i) {
        r.i = i;
        r.el.style.transform = `translateY(${i * rh}px)`;
        r.el.dataset.vi = String(i);
        r.el.id = `${this.id}-${i}`;
      }
      const selected = i === this.sel;
      if (r.sel !== selected) {
        r.sel = selected;
        r.el.classList.toggle('is-selected', selected);
        if (this.o.mode === 'listbox') r.el.setAttribute('aria-selected', String(selected));
        else {
          r.el.tabIndex = selected || (this.sel < 0 && i === start) ? 0 : -1;
          if (selected) r.el.setAttribute('aria-current', 'true'); else r.el.removeAttribute('aria-current');
        }
      }
      seen.add(k);
    }
    for (const [k, r] of this.rendered) {
      if (!seen.has(k)) { r.el.remove(); this.rendered.delete(k); }
    }
    if (this.o.mode === 'listbox') {
      if (this.sel >= start && this.sel < end) this.el.setAttribute('aria-activedescendant', `${this.id}-${this.sel}`);
      else this.el.removeAttribute('aria-activedescendant');
    }
    if (this.o.onRender) this.o.onRender(start, end);
  }

  elementAt(i) {
    for (const r of this.rendered.values()) if (r.i === i) return r.el;
    return null;
  }

  select(i, { scroll = true, focus = true, notify = true } = {}) {
    if (!this.items.length) return;
    i = Math.max(0, Math.min(this.items.length - 1, i));
    this.sel = i;
    this.selKey = this.o.keyOf(this.items[i]);
    if (scroll) this.scrollToIndex(i);
    this.render();
    if (focus) {
      if (this.o.mode === 'listbox') this.el.focus({ preventScroll: true });
      else { const el = this.elementAt(i); if (el) el.focus({ preventScroll: true }); }
    }
    if (notify && this.o.onSelect) this.o.onSelect(i, this.items[i]);
  }

  clearSelection() {
    this.sel = -1;
    this.selKey = null;
    this.render();
  }

  move(delta) {
    if (!this.items.length) return;
    const from = this.sel < 0 ? (delta > 0 ? -1 : this.items.length) : this.sel;
    this.select(from + delta);
  }

  selected() { return this.sel >= 0 ? this.items[this.sel] : null; }

  /** The first item after the selection (`dir` 1) or before it (-1) that `pred` accepts, or -1. */
  find(dir, pred) {
    for (let i = this.sel + dir; i >= 0 && i < this.items.length; i += dir) {
      if (pred(this.items[i])) return i;
    }
    return -1;
  }

  /** Selects item `i` and brings it to the middle of the view (a jump, not a step). */
  reveal(i) {
    this.scrollToIndex(i, 'center');
    this.select(i, { scroll: false });
  }

  scrollToIndex(i, align = 'nearest') {
    const rh = this.o.rowHeight;
    const el = this.el;
    const h = el.clientHeight;
    const y = i * rh;
    if (align === 'center') el.scrollTop = Math.max(0, y - h / 2 + rh / 2);
    else if (y < el.scrollTop) el.scrollTop = y;
    else if (y + rh > el.scrollTop + h) el.scrollTop = y + rh - h;
  }

  scrollToEnd() {
    this.el.scrollTop = this.items.length * this.o.rowHeight;
  }
}
