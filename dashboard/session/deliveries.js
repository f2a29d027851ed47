// The notifications of a session's alerts (`GET /sessions/:id/deliveries`): one per alert and
// target, pending (with its attempts and next try), delivered, summarised (held back by the
// target's rate and reported in a summary) or failed (with its last error). The session view asks
// for them when alerts arrive and, while any is pending, every few seconds; the timeline's alert
// rows and the details pane draw them with `deliveryChip` and `deliveryList`.

import { api, ApiError } from '../api.js';
import { h, str, clip, parseTs, fmtDateTime } from '../dom.js';

/** The session's deliveries, or null when the collector has none to give (an older collector). */
export async function fetchDeliveries(id) {
  try {
    const r = await api(`/sessions/${encodeURIComponent(id)}/deliveries`);
    return Array.isArray(r && r.deliveries) ? r.deliveries : [];
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) return null;
    throw e;
  }
}

const WORDS = { pending: 'pending', delivered: 'sent', summarised: 'in a summary', failed: 'failed' };

/** One alert's deliveries as one state: the worst of them (failed, then pending, then sent). */
export function overall(list) {
  if (!list || !list.length) return null;
  for (const s of ['failed', 'pending', 'summarised', 'delivered']) if (list.some((d) => d.state === s)) return s;
  return 'pending';
}

/** A delivery in one line of words, for titles and the details pane. */
export function describe(d) {
  const target = clip(str(d.target), 80);
  const tries = d.attempts === 1 ? '1 attempt' : `${d.attempts} attempts`;
  switch (d.state) {
    case 'delivered':
      return `${target}: sent ${fmtDateTime(parseTs(d.delivered_at))}${d.attempts > 1 ? ` (after ${tries})` : ''}`;
    case 'summarised':
      return `${target}: held back by the target's rate, reported in a summary ${fmtDateTime(parseTs(d.delivered_at))}`;
    case 'failed':
      return `${target}: failed after ${tries} (${clip(str(d.last_error), 200)})`;
    default:
      return `${target}: pending, ${tries}${d.next_attempt_at ? `, next try ${fmtDateTime(parseTs(d.next_attempt_at))}` : ''}${d.last_error ? ` (last: ${clip(str(d.last_error), 200)})` : ''}`;
  }
}

/** A small chip for an alert's row: its notifications' state, each one in the title. */
export function deliveryChip(list) {
  const state = overall(list);
  if (!state) return null;
  const pending = list.filter((d) => d.state === 'pending');
  const tries = pending.reduce((n, d) => Math.max(n, d.attempts || 0), 0);
  const text = state === 'pending' && tries > 0 ? `✉ pending · ${tries} ${tries === 1 ? 'try' : 'tries'}` : `✉ ${WORDS[state]}`;
  return h('span', {
    class: `dlv dlv-${state}`, 'data-testid': 'delivery-state', 'data-state': state,
    title: list.map(describe).join('\n'),
  }, text);
}

/** Every delivery of an alert, for the details pane. */
export function deliveryList(list) {
  if (!list || !list.length) return null;
  return h('div', { class: 'd-sub', 'data-testid': 'alert-deliveries' }, 'Notifications',
    list.map((d) => h('div', { class: `dlv-line dlv-${str(d.state)}`, 'data-testid': 'delivery', 'data-state': str(d.state) }, describe(d))));
}

/** A signature of an alert's deliveries: changes when what is drawn of them changes. */
export function signature(list) {
  return (list || []).map((d) => `${d.target_key}:${d.state}:${d.attempts}`).join('|');
}
