// The details pane's part for an event derived from an OpenTelemetry span or log record
// (`payload.otel`): the span's identity and where it sits in the trace (a record's id and the span
// it was logged in), its attributes as a key/value table, and its span events. Keys and values come from whatever instrumentation sent the trace: they are shown as
// text (dom.js builds text nodes only), long ones folded, JSON ones pretty-printed.

import { h, str, clip, pretty, parseTs, fmtDateTime, fmtOffset, copyButton } from '../dom.js';
import { otelState } from './parts.js';

/** Values longer than this (or on several lines) start folded, showing their beginning. */
const FOLD = 160;
/** With more attributes than this, the table gets a filter box. */
const FILTER_FROM = 12;
/** A value is cut (copy still has it all) beyond this many characters, to keep the page responsive. */
const CUT = 100000;

/**
 * @param {object} otel  the event's `payload.otel`
 * @param {object} o
 * @param {import('./trace.js').SpanIndex} o.trace  the session's spans
 * @param {(seq) => void} o.onSeq  a link to another event of the session was followed
 * @param {number} o.start  when the span started (agent's clock), for its events' offsets
 */
export function spanDetail(otel, { trace, onSeq, start }) {
  const link = (seq, text) => h('button', { type: 'button', class: 'link', title: `event #${seq}`, onclick: () => onSeq(seq) }, text);
  // A log record (a coding agent's event) has an id of its own, and at most the span it was logged in.
  const record = otel.record_id !== undefined;
  const sid = typeof otel.span_id === 'string' && !record ? otel.span_id : null;
  const psid = typeof otel.parent_span_id === 'string' && otel.parent_span_id ? otel.parent_span_id : null;
  // What the span is and where it sits first; its raw ids last, after what it says.
  const rows = [];
  rows.push([record ? 'record' : 'span', h('strong', { class: 'mono', 'data-testid': 'otel-span-name' }, str(otel.name) || '(unnamed)')]);
  if (otel.status !== undefined || otel.kind !== undefined) {
    const state = otelState(otel.status);
    rows.push(['status', h('span', { 'data-testid': 'otel-status' },
      otel.status !== undefined ? h('span', { class: `pill st-${state === 'error' ? 'bad' : state === 'ok' ? 'ok' : 'muted'}` }, str(otel.status)) : null,
      otel.kind !== undefined ? h('span', { class: 'muted' }, ` kind ${str(otel.kind)}`) : null,
      otel.status_message ? h('p', { class: 'prose error-text' }, str(otel.status_message)) : null)]);
  }
  if (sid !== null) {
    // The chain of enclosing spans received so far: the trace's shape, from this span up (a
    // chain of one is the parent, shown below).
    const up = trace.ancestors(sid);
    if (up.length > 1) {
      rows.push(['inside', h('span', { class: 'otel-path', 'data-testid': 'otel-path' },
        up.map((r, i) => [i ? h('span', { class: 'muted' }, ' › ') : null, link(r.seq, clip(r.otel.name || `#${r.seq}`, 48))]))]);
    }
  }
  if (psid === null) {
    if (sid !== null) rows.push(['parent', h('span', { class: 'muted' }, 'none: the trace\'s root span')]);
  } else {
    const parent = trace.recordOf(psid);
    rows.push(['parent', h('span', { 'data-testid': 'otel-parent' },
      parent ? [link(parent.seq, `#${parent.seq}`), ' ', clip(parent.otel.name, 60)] : h('span', { class: 'muted' }, 'not received yet'))]);
  }
  const parts = [h('div', { class: 'd-sub' }, record ? 'OpenTelemetry log record' : 'OpenTelemetry span'), kvList(rows, 'otel-span')];
  const attrs = otel.attributes;
  if (attrs && typeof attrs === 'object' && !Array.isArray(attrs)) parts.push(attrTable(attrs));
  if (Array.isArray(otel.events) && otel.events.length) parts.push(spanEvents(otel.events, start));
  const ids = record ? [['record id', idCell(otel.record_id, 'record id')]] : [];
  if (!record || otel.trace_id !== undefined) ids.push(['trace id', idCell(otel.trace_id, 'trace id')]);
  if (sid !== null) ids.push(['span id', idCell(sid, 'span id')]);
  if (record && typeof otel.span_id === 'string') ids.push(['in span', idCell(otel.span_id, 'span id')]);
  if (psid !== null) ids.push(['parent id', idCell(psid, 'parent span id')]);
  if (otel.scope !== undefined) ids.push(['scope', h('span', { class: 'mono small' }, str(otel.scope))]);
  parts.push(kvList(ids, 'otel-identity'));
  return h('div', { class: 'otel', 'data-testid': 'otel-detail' }, parts);
}

function idCell(id, label) {
  if (id === undefined || id === null) return h('span', { class: 'muted' }, '—');
  const text = str(id);
  return h('span', { class: 'mono otel-id' }, text, copyButton(() => text, `Copy ${label}`, `copy-${label.replaceAll(' ', '-')}`));
}

function kvList(rows, testid) {
  return h('dl', { class: 'kv', 'data-testid': testid }, rows.map(([k, v]) => [h('dt', null, k), h('dd', null, v)]));
}

/** A key with a line-break opportunity after each dot, so `gen_ai.usage.input_tokens` wraps well. */
function keyEl(key) {
  const bits = key.split('.');
  return bits.map((b, i) => (i < bits.length - 1 ? [b, '.', h('wbr')] : b));
}

/** Attributes, sorted by key (so namespaces group), with a filter box when there are many. */
export function attrTable(attrs, { title = 'Attributes', testid = 'otel-attributes' } = {}) {
  const keys = Object.keys(attrs).sort();
  const rows = keys.map((k) => attrRow(k, attrs[k], { 'data-testid': 'otel-attr', 'data-key': k }));
  const body = h('tbody', null, rows);
  let filter = null;
  if (keys.length > FILTER_FROM) {
    filter = h('input', {
      type: 'search', class: 'input input-small attr-filter', placeholder: 'Filter attributes', 'aria-label': `Filter ${title.toLowerCase()}`,
      spellcheck: 'false', autocomplete: 'off',
    });
    filter.addEventListener('input', () => {
      const q = filter.value.trim().toLowerCase();
      for (const tr of rows) tr.hidden = !!q && !tr.textContent.toLowerCase().includes(q);
    });
  }
  return h('div', { class: 'd-block', 'data-testid': testid },
    h('div', { class: 'd-sub attr-head' }, `${title} (${keys.length})`, filter,
      copyButton(() => pretty(attrs), `Copy ${title.toLowerCase()}`, `copy-${testid}`)),
    keys.length ? h('table', { class: 'attrs' }, body) : h('p', { class: 'muted small' }, 'None.'));
}

/**
 * One key and its value; a value drawn as a block (JSON, long text) gets the table's whole width,
 * under its key, where it has room to be read.
 */
function attrRow(key, value, attrs = null) {
  const v = valueEl(value);
  if (v.tagName === 'PRE' || v.tagName === 'DETAILS') {
    return h('tr', Object.assign({ class: 'attr-block' }, attrs),
      h('td', { colspan: '2' }, h('div', { class: 'attr-key mono' }, keyEl(key)), v));
  }
  return h('tr', attrs, h('th', { scope: 'row', class: 'mono' }, keyEl(key)), h('td', null, v));
}

/** A string that holds a JSON object or array, parsed; else undefined. */
function jsonIn(text) {
  const t = text.trim();
  if (!(t.startsWith('{') && t.endsWith('}')) && !(t.startsWith('[') && t.endsWith(']'))) return undefined;
  try { return JSON.parse(t); } catch { return undefined; }
}

/** One attribute value: short ones inline; JSON (or a string of JSON) pretty; long ones folded. */
function valueEl(v) {
  if (v === null || v === undefined) return h('span', { class: 'muted mono' }, 'null');
  if (typeof v === 'number' || typeof v === 'boolean') return h('span', { class: 'mono' }, String(v));
  let text;
  let kind = 'text';
  if (typeof v === 'string') {
    const parsed = jsonIn(v);
    if (parsed === undefined) text = v;
    else { text = pretty(parsed); kind = 'json'; }
  } else {
    // An array of short scalars reads best on one line (`["stop"]`); anything else, pretty.
    const compact = str(v);
    if (Array.isArray(v) && compact.length <= 80 && v.every((x) => x === null || typeof x !== 'object')) return h('span', { class: 'mono' }, compact);
    text = pretty(v);
    kind = 'json';
  }
  if (kind === 'text' && text.length <= FOLD && !text.includes('\n')) return h('span', { class: 'attr-text' }, text);
  const shown = text.length > CUT ? `${text.slice(0, CUT)}\n… (cut; copy has it all)` : text;
  const pre = h('pre', { class: kind === 'json' ? 'json' : 'text' }, shown);
  if (text.length <= FOLD * 3 && text.split('\n').length <= 12) return pre;
  return h('details', { class: 'attr-fold' },
    h('summary', null, h('span', { class: 'attr-preview' }, clip(text.replace(/\s+/g, ' '), 90)),
      h('span', { class: 'muted small' }, ` ${text.length.toLocaleString('en-US')} chars`),
      copyButton(() => text, 'Copy value', 'copy-attr')),
    pre);
}

/** The span's events (`exception`, `gen_ai.choice`, …), each with its time and attributes. */
function spanEvents(events, start) {
  return h('div', { class: 'd-block', 'data-testid': 'otel-events' },
    h('div', { class: 'd-sub' }, `Span events (${events.length})`),
    h('ol', { class: 'otel-events' }, events.slice(0, 200).map((e) => {
      const ev = e && typeof e === 'object' ? e : {};
      const t = parseTs(ev.time);
      const attrs = ev.attributes && typeof ev.attributes === 'object' && !Array.isArray(ev.attributes) ? ev.attributes : null;
      return h('li', { 'data-testid': 'otel-event' },
        h('div', { class: 'otel-ev-head' },
          h('strong', { class: ev.name === 'exception' ? 'error-text' : null }, str(ev.name) || '(unnamed)'),
          h('span', { class: 'muted small mono', title: Number.isFinite(t) ? `${fmtDateTime(t)} (${str(ev.time)})` : '' },
            Number.isFinite(t) && Number.isFinite(start) ? `${fmtOffset(t - start)} into the span` : str(ev.time))),
        attrs && Object.keys(attrs).length ? h('table', { class: 'attrs' }, h('tbody', null, Object.keys(attrs).sort().map((k) => attrRow(k, attrs[k])))) : null);
    }),
    events.length > 200 ? h('li', { class: 'muted small' }, `+ ${events.length - 200} more (see the event below)`) : null));
}
