// What the dashboard reads out of AOP events, in both payload vocabularies (AOP.md): documented
// names first, then the de-facto ones (`content`/`reasoning`, `decision`/`chosen`, `tool`/`tool_name`,
// `output_summary`/`result_summary`, `latency_ms`/`duration_ms`, …). Pure functions, no DOM.
//
// Session rows (`applyEventToRow`, `rowFromEvent`, at the end) are a second copy of rules whose
// authority is the collector (`src/model/session.rs`, the rows of `GET /sessions`). The copy exists
// so that a row (the overview's counts, a session's metrics) changes the moment an event streams
// in, without a request per event. It is deliberately approximate: it folds in arrival order, while
// the collector picks winners by sequence and sums in integers. Drift never lasts: store.js replaces
// the local row with the collector's when a session first appears, when an event reaches an ended
// one, for every running session every 30 s and after every reconnection, and the open session
// view refetches its own row after each burst of live events. A change to the collector's rules
// that the copy misses is therefore wrong on screen for seconds, not for good; keep them close.

import { parseTs, str, clip, fmtInt, fmtCallCost } from './dom.js';

const obj = (p) => (p && typeof p === 'object' && !Array.isArray(p) ? p : {});
const first = (...vals) => vals.find((v) => v !== undefined && v !== null);
const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null);

export function tierOf(type) {
  if (typeof type !== 'string') return 'custom';
  if (type.startsWith('session.')) return 'session';
  if (type.startsWith('cognition.')) return 'cognition';
  if (type.startsWith('operation.')) return 'operation';
  return 'custom';
}

export const view = {
  thought: (p) => first(obj(p).content, obj(p).reasoning),
  /** Who a thought is from: `user` for a prompt as its user wrote it (a coding agent's), else null (the agent's own). */
  role: (p) => (typeof obj(p).role === 'string' && obj(p).role ? obj(p).role : null),
  confidence: (p) => {
    const c = obj(p).confidence;
    return typeof c === 'string' ? c.toLowerCase() : (typeof c === 'number' ? c : null);
  },
  decision: (p) => first(obj(p).decision, obj(p).chosen),
  alternatives: (p) => {
    const a = first(obj(p).alternatives, obj(p).rejected);
    return Array.isArray(a) ? a : (a === undefined || a === null ? [] : [a]);
  },
  uncertainty: (p) => first(obj(p).content, obj(p).description),
  tool: (p) => first(obj(p).tool, obj(p).tool_name),
  output: (p) => first(obj(p).output_summary, obj(p).result_summary),
  latency: (p) => num(first(obj(p).latency_ms, obj(p).duration_ms)),
  memoryOp: (p) => first(obj(p).operation, obj(p).action),
  outcome: (p) => first(obj(p).outcome, obj(p).status),
  /**
   * An LLM call's figures, from an external call or a tool end whose payload reports a model or
   * token counts (the OTLP mapping writes them, and so do AOP agents that know them); else null.
   */
  llm: (p) => {
    p = obj(p);
    const model = typeof p.model === 'string' && p.model ? p.model : null;
    const input = num(p.input_tokens);
    const output = num(p.output_tokens);
    if (model === null && input === null && output === null) return null;
    const total = num(p.token_spend_delta) ?? (input !== null || output !== null ? (input || 0) + (output || 0) : null);
    const note = typeof p.cost_note === 'string' && p.cost_note ? p.cost_note : null;
    const provider = typeof p.service === 'string' && p.service ? p.service : null;
    // Prompt caching, where the agent reports it (Claude Code, Codex): tokens read from and written to the cache.
    const cacheRead = num(p.cache_read_tokens);
    const cacheWrite = num(first(p.cache_creation_tokens, p.cache_write_tokens));
    return { model, input, output, total, cost: num(p.cost_usd), note, provider, cacheRead, cacheWrite };
  },
  /** The OpenTelemetry identity an event derived from a span carries (`payload.otel`), or null. */
  otel: (p) => {
    const o = obj(p).otel;
    return o && typeof o === 'object' && !Array.isArray(o) ? o : null;
  },
};

/** An LLM call's tokens as text, without the unit: `1,204 → 318` (input → output), or the total alone. */
export function llmTokens(f) {
  if (f.input !== null || f.output !== null) return `${fmtInt(f.input)} → ${fmtInt(f.output)}`;
  return f.total !== null ? fmtInt(f.total) : '';
}

/**
 * What a tool call works on, from its input (`{"command": …}`, `{"file_path": …}`, …), as coding
 * agents send it: `{kind, text, note}` with `kind` one of `command`, `path`, `pattern`, `url`,
 * `query`, and `note` the call's own description where it has one (Claude Code's Bash); null when
 * the input names none of these (it is then shown as JSON).
 */
export function toolArg(input) {
  if (!input || typeof input !== 'object' || Array.isArray(input)) return null;
  const text = (v) => {
    if (typeof v === 'string') return v || null;
    // Codex's shell tool takes an argv: `["bash", "-lc", "ls -la"]` reads as its script.
    if (Array.isArray(v) && v.length && v.every((x) => typeof x === 'string')) {
      return v.length === 3 && /(^|\/)(ba|z|da)?sh$/.test(v[0]) && /^-l?c$/.test(v[1]) ? v[2] : v.join(' ');
    }
    return null;
  };
  const kinds = [
    ['command', ['command', 'cmd']],
    ['path', ['file_path', 'filePath', 'notebook_path', 'path']],
    ['pattern', ['pattern']],
    ['url', ['url']],
    ['query', ['query']],
  ];
  for (const [kind, keys] of kinds) {
    for (const k of keys) {
      const t = text(input[k]);
      const note = typeof input.description === 'string' && input.description ? input.description : null;
      if (t !== null) return { kind, text: t, note };
    }
  }
  return null;
}

/**
 * The coding agent or kind of source a session comes from, for its badge: `claude-code` and
 * `codex` by their agent ids (what the collector names their sessions), `otel` for any other
 * session received as OpenTelemetry (`meta.source`, or before that is known an id of the form the
 * collector gives traces); null for an AOP agent's.
 */
export function agentKind(id, agentId, meta) {
  if (agentId === 'claude-code' || agentId === 'codex') return agentId;
  const otel = meta && meta.source ? meta.source === 'otlp' : isOtelId(id);
  return otel ? 'otel' : null;
}

/** An LLM call's cost as text: the price, else the collector's note on why there is none. */
export function llmCost(f) {
  if (f.cost !== null) return fmtCallCost(f.cost);
  if (f.note === null) return '';
  return /^no price/i.test(f.note) ? 'no price' : clip(f.note, 32);
}

/**
 * Where a session comes from, as its `session.started` says (`metadata`): `source` is "otlp" for a
 * session derived from an OpenTelemetry trace, which may also name its `conversation` (the
 * instrumentation's session or conversation id) and the `service` that sent it; `interactive`
 * for an agent that waits for its user between turns (a coding agent's), whose silence is no stall.
 */
export function startMeta(p) {
  const m = obj(obj(p).metadata);
  const s = (v) => (typeof v === 'string' && v ? v : null);
  return { source: s(m.source), conversation: s(m.conversation_id), service: s(m.service_name), interactive: m.interactive === true };
}

/** Whether a session id is one the collector gives a trace received over OTLP (`otel-` + trace id). */
export const isOtelId = (id) => typeof id === 'string' && /^otel-[0-9a-f]{32}$/.test(id);

/** Whether an event reports a failure. */
export function isError(ev) {
  const p = obj(ev.payload);
  switch (ev.type) {
    case 'operation.tool_end': return p.success === false || (p.error !== undefined && p.error !== null && p.error !== '');
    case 'session.ended': {
      const o = str(view.outcome(p)).toLowerCase();
      return ['failed', 'error', 'timeout', 'crashed'].includes(o) || !!p.error_message;
    }
    case 'operation.external_call':
      return p.success === false || (typeof p.error === 'string' && p.error !== '') ||
        (num(p.status_code) !== null && p.status_code >= 400) || view.otel(p)?.status === 'error';
    case 'otel.span': return p.status === 'error';
    default: return p.error !== undefined && p.error !== null && p.error !== '' && p.error !== false;
  }
}

/** One line describing the event, for the timeline. */
export function summarize(ev) {
  const p = obj(ev.payload);
  switch (ev.type) {
    case 'session.started': return [p.goal ? `Goal: ${str(p.goal)}` : 'Session started', p.llm ? ` · ${str(p.llm)}` : ''].join('');
    case 'session.heartbeat': {
      const bits = [str(p.status) || 'heartbeat'];
      if (p.step !== undefined) bits.push(`step ${str(p.step)}`);
      if (p.token_spend !== undefined) bits.push(`${str(p.token_spend)} tokens`);
      if (p.current_goal) bits.push(str(p.current_goal));
      return bits.join(' · ');
    }
    case 'session.ended': {
      const o = str(view.outcome(p)) || 'completed';
      const tail = p.error_message ? ` — ${str(p.error_message)}` : (p.outcome_summary ? ` — ${str(p.outcome_summary)}` : '');
      return `Ended: ${o}${tail}`;
    }
    case 'cognition.thought': return str(view.thought(p)) || '(empty thought)';
    case 'cognition.goal': return `${str(p.status) || 'goal'}: ${str(p.goal)}`;
    case 'cognition.decision': {
      const alts = view.alternatives(p);
      return `${str(view.decision(p))}${alts.length ? `  (over ${alts.map(str).join(', ')})` : ''}`;
    }
    case 'cognition.uncertainty': return str(view.uncertainty(p)) || '(uncertain)';
    case 'operation.tool_start': {
      const arg = toolArg(p.input);
      return `${str(view.tool(p)) || 'tool'}(${arg ? clip(arg.text, 160) : p.input !== undefined ? clip(str(p.input), 160) : ''})`;
    }
    case 'operation.tool_end': {
      const name = str(view.tool(p)) || 'tool';
      if (p.success === false || p.error) return `${name} failed: ${str(p.error) || 'error'}`;
      const out = view.output(p);
      return `${name} → ${out !== undefined && out !== null ? str(out) : 'ok'}`;
    }
    case 'operation.agent_spawn': return `Spawned ${str(p.child_agent_id) || 'agent'}${p.goal ? `: ${str(p.goal)}` : ''}`;
    case 'operation.memory': return `memory ${str(view.memoryOp(p)) || ''} ${str(p.key)}${p.summary ? ` — ${str(p.summary)}` : ''}`.replace(/\s+/g, ' ');
    case 'operation.external_call': {
      const f = view.llm(p);
      if (f) {
        const failed = p.success === false || p.error ? `failed: ${str(p.error) || 'error'}` : '';
        return [str(p.method), f.model || str(p.service), llmTokens(f) && `${llmTokens(f)} tokens`, llmCost(f), failed].filter(Boolean).join(' · ');
      }
      return [str(p.method), str(p.service), str(p.endpoint), p.status_code !== undefined ? `→ ${str(p.status_code)}` : ''].filter(Boolean).join(' ') || 'external call';
    }
    case 'otel.span': return [str(p.name) || 'span', str(p.kind), str(p.status)].filter(Boolean).join(' · ');
    case 'otel.log': {
      const name = str(p.name);
      const body = str(p.body);
      // Claude Code repeats the name as the body (`claude_code.<name>`): said once.
      return [name || 'log', body && !body.endsWith(name) ? clip(body, 200) : ''].filter(Boolean).join(' · ');
    }
    case 'custom.tool_decision':
      return [str(p.decision) || 'decision', str(p.tool_name), p.source ? `(${str(p.source)})` : ''].filter(Boolean).join(' ');
    case 'aop.guard': {
      const arg = toolArg(p.input);
      const why = (Array.isArray(p.reasons) ? p.reasons : []).map((r) => str(obj(r).message)).filter(Boolean).join('; ');
      return `Guard: ${str(p.decision) || '?'} ${str(p.tool) || 'tool'}(${arg ? clip(arg.text, 100) : ''})${why ? ` — ${why}` : ''}`;
    }
    case 'aop.stop': return `Stopped by an operator${p.reason ? `: ${str(p.reason)}` : ''}`;
    case 'aop.resume': return 'Resumed by an operator';
    default: {
      const keys = Object.keys(p);
      return keys.length ? clip(str(p), 200) : '';
    }
  }
}

/** A short label for the type column. */
export function typeLabel(type) {
  const map = {
    'session.started': 'started', 'session.heartbeat': 'heartbeat', 'session.ended': 'ended',
    'cognition.thought': 'thought', 'cognition.goal': 'goal', 'cognition.decision': 'decision',
    'cognition.uncertainty': 'uncertain', 'operation.tool_start': 'tool', 'operation.tool_end': 'tool end',
    'operation.agent_spawn': 'spawn', 'operation.memory': 'memory', 'operation.external_call': 'external',
    'otel.span': 'span', 'otel.log': 'log', 'custom.tool_decision': 'permission',
    'aop.guard': 'guard', 'aop.stop': 'stop', 'aop.resume': 'resume',
  };
  return map[type] || clip(String(type), 24);
}

export function isRunningStatus(status) {
  return status === 'running' || status === null || status === undefined;
}

export function statusClass(status) {
  const s = String(status || 'running').toLowerCase();
  if (s === 'running') return 'running';
  if (s === 'completed' || s === 'success' || s === 'succeeded' || s === 'ok') return 'ok';
  if (s === 'cancelled' || s === 'canceled') return 'muted';
  return 'bad';
}

// ---------- session rows, updated live between refetches (see the top of this file) ----------

/**
 * Folds a live event into a session row, approximately as the collector derives it.
 * `row._rep` remembers which totals the agent reported itself, so deltas do not double count;
 * store.js clears it when the collector's row replaces the local one.
 */
export function applyEventToRow(row, ev) {
  const p = obj(ev.payload);
  const t = parseTs(ev.timestamp);
  const rep = row._rep || (row._rep = {});
  row.event_count = (row.event_count || 0) + 1;
  if (!row.agent_id) row.agent_id = ev.agent_id;
  if (!row.parent_session_id && ev.parent_session_id) row.parent_session_id = ev.parent_session_id;
  if (Number.isFinite(t)) {
    if (!row.last_seen_at || !(parseTs(row.last_seen_at) >= t)) row.last_seen_at = ev.timestamp;
    if (ev.type === 'session.started') row.started_at = ev.timestamp;
    else if (!rep.started && (!row.started_at || parseTs(row.started_at) > t)) row.started_at = ev.timestamp;
  }
  const running = isRunningStatus(row.status);
  switch (ev.type) {
    case 'session.started':
      rep.started = true;
      row.agent_id = ev.agent_id;
      if (typeof p.goal === 'string') row.goal = p.goal;
      if (typeof p.llm === 'string') row.llm = p.llm;
      if (typeof p.agent_version === 'string') row.agent_version = p.agent_version;
      break;
    case 'session.ended':
      if (running) {
        row.status = str(view.outcome(p)) || 'completed';
        row.ended_at = ev.timestamp;
        row.outcome_summary = typeof p.outcome_summary === 'string' ? p.outcome_summary : null;
        row.error_message = typeof p.error_message === 'string' ? p.error_message : null;
      }
      break;
    case 'aop.stop':
      row.stopped = { at: ev.timestamp, reason: typeof p.reason === 'string' ? p.reason : null };
      break;
    case 'aop.resume':
      delete row.stopped;
      break;
    default:
      if (ev.type.startsWith('cognition.') || ev.type.startsWith('operation.')) {
        rep.activity = (rep.activity || 0) + 1;
        if (!rep.steps) row.total_steps = (row.total_steps || 0) + 1;
      }
  }
  if (ev.type === 'session.heartbeat' || ev.type === 'session.ended') {
    const steps = num(first(p.step, p.total_steps));
    const tokens = num(first(p.token_spend, p.total_tokens));
    const cost = num(p.total_cost_usd);
    if (steps !== null) { rep.steps = true; row.total_steps = Math.round(steps); }
    if (tokens !== null) { rep.tokens = true; row.total_tokens = Math.round(tokens); }
    if (cost !== null) { rep.cost = true; row.total_cost_usd = cost; }
  }
  if ((ev.type === 'operation.tool_end' || ev.type === 'operation.external_call') && !rep.tokens) {
    const d = num(p.token_spend_delta);
    if (d !== null) row.total_tokens = (row.total_tokens || 0) + Math.round(d);
  }
  const c = num(p.cost_usd);
  if (c !== null && !rep.cost) row.total_cost_usd = (row.total_cost_usd || 0) + c;
  const s = parseTs(row.started_at);
  const e = parseTs(row.ended_at || row.last_seen_at);
  if (Number.isFinite(s) && Number.isFinite(e)) row.duration_ms = Math.max(0, e - s);
  return row;
}

/** A provisional row for a session first seen on the live feed. */
export function rowFromEvent(ev) {
  const row = {
    id: ev.session_id, agent_id: ev.agent_id, agent_version: ev.agent_version || null,
    parent_session_id: ev.parent_session_id || null, goal: null, llm: null, status: 'running',
    started_at: ev.timestamp, ended_at: null, last_seen_at: ev.timestamp, duration_ms: 0,
    total_steps: 0, total_tokens: 0, total_cost_usd: null, outcome_summary: null, error_message: null,
    event_count: 0, alert_count: 0, child_count: 0, _provisional: true,
  };
  return applyEventToRow(row, ev);
}
