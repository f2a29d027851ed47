// Pieces the session view's panels share, so a tool call, an LLM call or a confidence looks the
// same in the timeline, the inspector and the metrics (and a session's agent badge in the
// overview and the conversation view).

import { h, clip, fmtDuration, fmtTokens, fmtInt } from '../dom.js';
import { llmTokens, llmCost, agentKind } from '../model.js';

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

/**
 * An LLM call's figures (model.js, `view.llm`): model, input → output tokens, cost (or why there
 * is none) and, when given, latency.
 */
export function llmEl(f, latency, failed = false) {
  const tokens = llmTokens(f);
  const cost = llmCost(f);
  return h('span', { class: 'llm', 'data-testid': 'llm-call', 'data-model': f.model || '' },
    h('span', { class: `llm-model${failed ? ' st-error' : ''}`, title: f.model ? `model ${f.model}` : 'model not reported' },
      h('span', { class: 'llm-icon', 'aria-hidden': 'true' }, '✦'), clip(f.model || 'LLM', 40)),
    tokens ? h('span', { class: 'llm-tokens', 'data-testid': 'llm-tokens', title: 'input → output tokens' }, tokens) : null,
    cacheEl(f),
    cost ? h('span', {
      class: f.cost !== null ? 'llm-cost' : 'llm-cost no-price', 'data-testid': 'llm-cost', title: f.note || 'cost of this call',
    }, cost) : null,
    latency !== null && latency !== undefined ? h('span', { class: 'span-dur', 'data-testid': 'llm-latency' }, fmtDuration(latency)) : null);
}

/** The prompt cache's share of an LLM call (reads, writes), when the agent reports it and it is not nil. */
function cacheEl(f) {
  const read = f.cacheRead || 0;
  const write = f.cacheWrite || 0;
  if (!read && !write) return null;
  const bits = [read ? `${fmtTokens(read)} read` : null, write ? `${fmtTokens(write)} written` : null].filter(Boolean);
  return h('span', {
    class: 'llm-cache', 'data-testid': 'llm-cache',
    title: `prompt cache: ${fmtInt(read)} tokens read, ${fmtInt(write)} written (counted in the call's tokens)`,
  }, `cache ${bits.join(' · ')}`);
}

/**
 * What a tool call works on (model.js, `toolArg`): a command, a file path, a pattern, a URL or a
 * query, in full on hover.
 */
export function toolArgEl(arg, max = 200) {
  if (!arg) return null;
  return h('span', {
    class: `tool-arg arg-${arg.kind}`, 'data-testid': 'tool-arg', 'data-kind': arg.kind,
    title: `${arg.kind}: ${arg.text}${arg.note ? `\n${arg.note}` : ''}`,
  }, clip(arg.text.replace(/\s+/g, ' '), max));
}

/** An OpenTelemetry span's state from its status: `error`, `ok`, or `unset` (neither said). */
export const otelState = (status) => (status === 'error' ? 'error' : status === 'ok' ? 'ok' : 'unset');

/** A span that is neither a tool nor an LLM call (an `otel.span` event), as a chip like a tool call's. */
export function otelSpanEl(name, status, dur) {
  const state = otelState(status);
  return h('span', {
    class: `span st-${state}`, 'data-testid': 'otel-span', 'data-state': state, title: `${name}: status ${status || 'unset'}`,
  },
  h('span', { class: 'span-icon', 'aria-hidden': 'true' }, state === 'ok' ? '✓' : state === 'error' ? '✕' : '•'),
  h('span', { class: 'span-name' }, clip(name, 48)),
  h('span', { class: 'span-dur' }, fmtDuration(dur)));
}

const AGENT_BADGES = {
  'claude-code': ['Claude Code', 'Claude Code, from its OpenTelemetry logs'],
  codex: ['Codex', 'Codex CLI, from its OpenTelemetry logs'],
  otel: ['OTel', 'Received as OpenTelemetry (OTLP)'],
};

/**
 * The kind of agent a session comes from (model.js, `agentKind`): "Claude Code", "Codex", or
 * "OTel" for any other session received as OpenTelemetry; nothing for an AOP agent's.
 */
export function agentBadge(id, agentId, meta) {
  const kind = agentKind(id, agentId, meta);
  if (!kind) return null;
  const [label, title] = AGENT_BADGES[kind];
  return h('span', { class: `badge agent-badge agent-${kind}`, 'data-testid': 'agent-badge', 'data-kind': kind, title }, label);
}
