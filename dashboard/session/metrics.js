// The session's metrics strip: status, steps, tokens, cost, duration (ticking while running),
// current confidence with its recent trend, events and alerts. Each value also sits in
// `data-value`, raw, for tests and scripts.

import { h, replace, parseTs, fmtDuration, fmtInt, fmtCost, fmtTokens } from '../dom.js';
import { statusOf } from '../store.js';
import { confCls } from './parts.js';

const CONF_LEVEL = { high: 3, medium: 2, low: 1 };

export class Metrics {
  constructor() {
    this.els = {};
    const metric = (key, label, testid) => {
      const v = h('span', { class: 'm-value', 'data-testid': testid || null }, '—');
      this.els[key] = v;
      return h('div', { class: `metric m-${key}` }, h('span', { class: 'm-label' }, label), v);
    };
    this.confBars = h('span', { class: 'conf-trend', 'aria-hidden': 'true' });
    this.el = h('div', { class: 'metrics', role: 'group', 'aria-label': 'Session metrics' },
      metric('status', 'Status', 'metric-status'),
      metric('steps', 'Steps', 'metric-steps'),
      metric('tokens', 'Tokens', 'metric-tokens'),
      metric('cost', 'Cost', 'metric-cost'),
      metric('duration', 'Duration', 'metric-duration'),
      h('div', { class: 'metric m-conf' }, h('span', { class: 'm-label' }, 'Confidence'),
        h('span', { class: 'm-conf-row' }, this.els.conf = h('span', { class: 'm-value', 'data-testid': 'metric-confidence' }, '—'), this.confBars)),
      metric('events', 'Events', 'metric-events'),
      metric('alerts', 'Alerts', 'metric-alerts'));
  }

  /**
   * @param {object|null} row  the session's row
   * @param {object} seen  what the view holds beyond the row, which may be ahead of it:
   *   `events` and `alerts` (counts), `confs` (latest stated confidences, newest first),
   *   `skew` (the agent's clock offset, for the running duration)
   */
  update(row, { events, alerts, confs, skew }) {
    const m = this.els;
    const set = (el, text, value) => {
      if (el.textContent !== text) el.textContent = text;
      el.dataset.value = value === null || value === undefined ? '' : String(value);
    };
    if (row) {
      const st = statusOf(row);
      set(m.status, st.text, st.text);
      m.status.className = `m-value pill st-${st.cls}`;
      set(m.steps, fmtInt(row.total_steps), row.total_steps);
      set(m.tokens, fmtInt(row.total_tokens), row.total_tokens);
      m.tokens.title = `${fmtTokens(row.total_tokens)} tokens`;
      set(m.cost, fmtCost(row.total_cost_usd), row.total_cost_usd);
      const started = parseTs(row.started_at);
      if (st.running && Number.isFinite(started)) {
        // The app's clock ticks `data-since`, in browser time.
        const since = started + skew;
        m.duration.dataset.since = String(since);
        m.duration.classList.add('tick');
        set(m.duration, fmtDuration(Date.now() - since), '');
      } else {
        delete m.duration.dataset.since;
        m.duration.classList.remove('tick');
        set(m.duration, fmtDuration(row.duration_ms), row.duration_ms);
      }
      set(m.events, fmtInt(Math.max(row.event_count || 0, events)), row.event_count);
    }
    set(m.alerts, fmtInt(Math.max(alerts, row ? row.alert_count || 0 : 0)), alerts);
    m.alerts.classList.toggle('has-alerts', alerts > 0);
    const cur = confs.length ? String(confs[0]) : null;
    set(m.conf, cur || '—', cur || '');
    m.conf.className = `m-value conf-text conf-${cur ? confCls(cur) : 'none'}`;
    const sig = confs.join(',');
    if (sig !== this.confSig) {
      this.confSig = sig;
      replace(this.confBars, confs.slice().reverse().map((c) => h('i', { class: `cb conf-${confCls(c)}`, style: { height: `${(CONF_LEVEL[c] || 2) * 4}px` } })));
      this.confBars.title = 'Confidence of the latest thoughts, oldest to newest';
    }
  }
}
