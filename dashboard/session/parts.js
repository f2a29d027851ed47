// Pieces the session view's panels share, so a tool call or a confidence looks the same in the
// timeline, the inspector and the metrics.

import { h, clip, fmtDuration } from '../dom.js';

/** A confidence as a CSS class suffix (the text itself is shown as sent). */
export const confCls = (c) => (c === 'high' || c === 'medium' || c === 'low' ? c : 'other');

/**
 * A tool call's state. A call without an end is running only while its session can still end it
 * (`open`: running and not deleted); otherwise it never ended, which counts as a failure.
 */
export function spanState(sp, open) {
  if (sp.end) return sp.state;
  return open ? 'running' : 'error';
}

/** A tool call as a chip; `skew` is the agent's clock offset, for a running call's ticking duration. */
export function spanEl(sp, state, skew, testid = 'tool-span') {
  // The app's clock ticks `data-since`, in browser time.
  const since = state === 'running' ? sp.start.arrived ?? sp.start.t + skew : null;
  const dur = h('span', { class: since === null ? 'span-dur' : 'span-dur tick', 'data-testid': 'tool-duration', 'data-since': since },
    since !== null ? fmtDuration(Date.now() - since) : sp.end ? fmtDuration(sp.dur) : 'no end');
  const icon = state === 'running' ? h('span', { class: 'spinner', 'aria-hidden': 'true' }) : h('span', { class: 'span-icon', 'aria-hidden': 'true' }, state === 'ok' ? '✓' : '✕');
  return h('span', {
    class: `span st-${state}`, 'data-testid': testid, 'data-state': state, 'data-tool': sp.name,
    title: `${sp.name}: ${state === 'running' ? 'running' : state === 'ok' ? 'succeeded' : sp.end ? 'failed' : 'never ended'}`,
  }, icon, h('span', { class: 'span-name' }, clip(sp.name, 40)), dur);
}
