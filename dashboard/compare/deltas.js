// The comparison's figures: for each of duration, steps, tokens, cost, tool calls, failed tool
// calls and alerts by type, a's value, b's and the difference (b − a), as the collector computed
// them. Every one of these is a cost (time, money, trouble), so the higher side is the worse one:
// it is marked, and the difference reads red when b is worse, green when b is better.
// While a run goes on its figures are so far: they only grow, so a running side already above the
// other is the worse for good, but one below it may still pass it (no side is marked then).
// Each card also carries its raw values (`data-a`, `data-b`, `data-delta`, `data-worse`).

import { h, replace, fmtDuration, fmtInt, fmtCost, fmtTokens } from '../dom.js';

const signed = (d, fmt) => `${d > 0 ? '+' : '−'}${fmt(Math.abs(d))}`;

/** The figures shown, in order: key in `deltas`, label, how a value reads. */
const METRICS = [
  ['duration_ms', 'Duration', fmtDuration],
  ['steps', 'Steps', fmtInt],
  ['tokens', 'Tokens', fmtTokens],
  ['cost_usd', 'Cost', fmtCost],
  ['tool_calls', 'Tool calls', fmtInt],
  ['failed_tool_calls', 'Failed calls', fmtInt],
];

const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null);

export class Deltas {
  constructor() {
    this.el = h('div', { class: 'cmp-deltas', role: 'group', 'aria-label': 'What each run cost, and the difference', 'data-testid': 'compare-deltas' });
  }

  /**
   * `deltas` as the collector sends it (null: not known yet); `running` says which runs go on.
   */
  render(deltas, running = { a: false, b: false }) {
    const d = deltas && typeof deltas === 'object' ? deltas : {};
    const sig = JSON.stringify([d, running]);
    if (sig === this.sig) return;
    this.sig = sig;
    const card = (key, label, v, fmt, extra, title) => cardEl(key, label, v, fmt, running, extra, title);
    const cards = METRICS.map(([key, label, fmt]) => card(key, label, d[key], fmt));
    const alerts = d.alerts && typeof d.alerts === 'object' ? Object.keys(d.alerts).sort() : [];
    if (alerts.length) {
      for (const type of alerts) cards.push(card(`alerts.${type}`, `⚠\uFE0E ${type.replace(/_/g, ' ')}`, d.alerts[type], fmtInt, 'alert', `Alerts of type ${type}`));
    } else {
      cards.push(card('alerts', 'Alerts', { a: 0, b: 0, delta: 0 }, fmtInt, '', 'Neither run raised an alert'));
    }
    replace(this.el, cards);
  }
}

function cardEl(key, label, v, fmt, running, extra = '', title = label) {
  v = v && typeof v === 'object' ? v : {};
  const a = num(v.a);
  const b = num(v.b);
  let delta = num(v.delta);
  // Costs are floats: a difference of float noise is no difference.
  if (delta !== null && Math.abs(delta) < 1e-9) delta = 0;
  let worse = delta === null || delta === 0 ? '' : delta > 0 ? 'b' : 'a';
  // Decided only if no run still going could pass the other (see the top of this file).
  const open = running.a || running.b;
  if (worse && (running.a && running.b || running[worse === 'a' ? 'b' : 'a'])) worse = '';
  const side = (name, value) => h('span', {
    class: `cd-side cd-${name}${worse === name ? ' is-worse' : ''}`,
    title: worse === name ? `${name.toUpperCase()} is worse here` : null,
  }, h('span', { class: `side-tag side-${name}` }, name.toUpperCase()), h('span', { class: 'cd-value' }, value === null ? '—' : fmt(value)),
  worse === name ? h('span', { class: 'cd-worse', 'aria-label': 'worse' }, '▲') : null);
  let deltaText = '—';
  if (delta === 0) deltaText = 'same';
  else if (delta !== null) {
    deltaText = signed(delta, fmt);
    // How much, relative to a: "+45%" says more than "+1.9s" on its own.
    if (a !== null && a > 0) deltaText += ` (${relative(delta / a)})`;
  }
  if (open && delta !== null) deltaText += ' so far';
  return h('div', {
    class: `cmp-delta ${extra ? `cmp-delta-${extra}` : ''}`, 'data-testid': 'delta', 'data-metric': key,
    'data-a': a === null ? '' : String(a), 'data-b': b === null ? '' : String(b),
    'data-delta': delta === null ? '' : String(delta), 'data-worse': worse,
  },
  h('span', { class: 'm-label', title }, label),
  h('span', { class: 'cd-sides' }, side('a', a), side('b', b)),
  h('span', {
    class: `cd-delta ${worse === 'b' ? 'is-worse' : worse === 'a' ? 'is-better' : ''}`, 'data-testid': 'delta-value',
    title: open ? 'B − A so far: a run still going may yet change it' : 'B − A: red when B is worse, green when B is better',
  }, deltaText));
}

/** A change relative to a: `+45%`, `−12%`, or for a big growth how many times a: `16×`. */
function relative(r) {
  if (r >= 9) return `${Math.round(1 + r)}×`;
  const p = Math.abs(r) * 100;
  return `${r > 0 ? '+' : '−'}${p < 10 ? p.toFixed(1).replace(/\.0$/, '') : Math.round(p)}%`;
}
