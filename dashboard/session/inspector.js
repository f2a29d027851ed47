// The details pane: everything about the selected event (fetched again when its payload was
// dropped to bound memory) or alert, with copy buttons and links to the related event or session.
// An event derived from an OpenTelemetry span also shows the span (otel.js).

import { h, replace, str, pretty, parseTs, fmtDuration, fmtInt, fmtCost, fmtCallCost, fmtDateTime, copyButton } from '../dom.js';
import { view, llmTokens, toolArg } from '../model.js';
import { sessionHref } from '../routes.js';
import { confCls, spanEl, llmEl } from './parts.js';
import { spanDetail } from './otel.js';
import { deliveryList, signature } from './deliveries.js';

export class Inspector {
  /**
   * @param {object} o
   * @param {import('./records.js').Records} o.records
   * @param {(span) => string} o.spanState
   * @param {() => number} o.skew  the agent's clock offset
   * @param {(seq) => void} o.onSeq  a link to another event of the session was followed
   */
  constructor(o) {
    this.o = o;
    this.destroyed = false;
    this.bodyEl = h('div', { class: 'insp', 'data-testid': 'inspector' },
      h('p', { class: 'muted' }, 'Select an event to see its details. ', h('kbd', null, 'j'), h('kbd', null, 'k'), ' move, ', h('kbd', null, 'n'), ' next problem.'));
    this.el = h('section', { class: 'panel insp-panel', 'aria-label': 'Event details' },
      h('div', { class: 'panel-head' }, h('h2', null, 'Details')), this.bodyEl);
  }

  destroy() {
    this.destroyed = true;
  }

  /**
   * What the pane shows depends on: the span's state, the alerts at the event and, in a trace,
   * which enclosing spans have arrived.
   */
  sig(it) {
    if (it.kind === 'alert') return signature(this.o.records.deliveriesOf(it.alert.id));
    const o = it.otel;
    const up = o && o.psid ? `${it.depth}:${this.o.records.trace.recordOf(o.psid) ? 1 : 0}` : '';
    return `${it.span ? this.o.spanState(it.span) : ''}:${it.alerts ? it.alerts.length : 0}:${up}`;
  }

  /** Redraws the pane if what it shows has changed (a tool call ended, an alert arrived). */
  refresh() {
    const it = this.shown;
    if (it && this.sig(it) !== this.shownSig) this.show(it);
  }

  /** Shows a timeline item: a record or an alert item. */
  async show(it) {
    this.shown = it;
    this.shownSig = this.sig(it);
    // Only the latest of overlapping fetches may draw.
    const token = (this.token = {});
    if (it.kind === 'alert') {
      replace(this.bodyEl, this.alertDetail(it.alert));
      return;
    }
    let ev;
    let other = null;
    let related = [];
    try {
      ev = await this.o.records.full(it);
      if (it.span) {
        const o = it.span.start === it ? it.span.end : it.span.start;
        if (o) other = await this.o.records.full(o);
      }
      // GenAI records logged inside an LLM call's span carry its messages: shown with the call.
      if (it.type === 'operation.external_call' && it.otel && it.otel.sid) {
        const sid = it.otel.sid;
        const recs = this.o.records.recs.filter((r) => r.type === 'otel.log' && r.otel && r.otel.sid === sid && r.logName.startsWith('gen_ai.'));
        related = await Promise.all(recs.slice(0, MAX_RELATED).map((r) => this.o.records.full(r)));
      }
    } catch (e) {
      if (token === this.token) replace(this.bodyEl, h('p', { class: 'error-text' }, `Could not load event #${it.seq}: ${e.message}`));
      return;
    }
    if (token !== this.token || this.destroyed) return;
    replace(this.bodyEl, this.eventDetail(it, ev, other, related));
  }

  seqLink(seq) {
    return h('button', { type: 'button', class: 'link', onclick: () => this.o.onSeq(seq) }, `#${seq}`);
  }

  alertDetail(a) {
    return h('div', { class: 'detail' },
      h('div', { class: 'd-head' }, h('span', { class: `badge sev-${str(a.severity)}` }, str(a.severity)), h('strong', null, str(a.type))),
      h('p', null, str(a.message)),
      kv([
        ['raised', `${fmtDateTime(parseTs(a.created_at))} (${str(a.created_at)})`],
        ['event', a.sequence === null || a.sequence === undefined ? 'none (stall)' : this.seqLink(a.sequence)],
        ['alert id', str(a.id)],
      ]),
      deliveryList(this.o.records.deliveriesOf(a.id)),
      a.details && Object.keys(a.details).length ? jsonBlock('Details', a.details) : null);
  }

  /**
   * `other` is the event at the other end of a tool call, when there is one; `related`, the
   * GenAI records logged in an LLM call's span.
   */
  eventDetail(rec, ev, other, related = []) {
    const p = ev.payload && typeof ev.payload === 'object' ? ev.payload : {};
    const parts = [];
    parts.push(h('div', { class: 'd-head' },
      h('span', { class: `chip tier-${rec.tier} static` }, rec.type),
      h('span', { class: 'mono' }, `#${rec.seq}`),
      h('span', { class: 'muted mono small', title: 'agent timestamp' }, str(ev.timestamp))));
    const rows = [];
    switch (rec.type) {
      case 'cognition.thought':
        if (view.role(p) === 'user') {
          // A prompt, as its user wrote it (absent where the agent was told not to send it).
          parts.push(h('div', { class: 'd-sub' }, 'The user wrote'),
            view.thought(p) !== undefined
              ? h('p', { class: 'prose prompt-prose', 'data-testid': 'prompt-detail' }, str(view.thought(p)))
              : h('p', { class: 'muted' }, 'The agent did not send the prompt\'s text (Claude Code: OTEL_LOG_USER_PROMPTS=1).'));
          if (p.prompt_length !== undefined) rows.push(['length', `${fmtInt(p.prompt_length)} characters`]);
          break;
        }
        parts.push(h('p', { class: 'prose' }, str(view.thought(p))));
        if (view.confidence(p) !== null) rows.push(['confidence', h('span', { class: `conf conf-${confCls(view.confidence(p))}` }, str(view.confidence(p)))]);
        if (p.next_intent !== undefined) rows.push(['next intent', str(p.next_intent)]);
        break;
      case 'cognition.decision': {
        parts.push(h('p', { class: 'prose' }, h('strong', null, 'Chose: '), str(view.decision(p))));
        const alts = view.alternatives(p);
        if (alts.length) {
          parts.push(h('div', { class: 'd-sub' }, 'Alternatives', h('ul', { class: 'alts' }, alts.map((a) => h('li', null, str(a))))));
        }
        if (p.reasoning !== undefined) parts.push(h('div', { class: 'd-sub' }, 'Reasoning', h('p', { class: 'prose' }, str(p.reasoning))));
        break;
      }
      case 'cognition.goal':
        parts.push(h('p', { class: 'prose' }, str(p.goal)));
        rows.push(['status', str(p.status)]);
        if (p.parent_goal !== undefined) rows.push(['parent goal', str(p.parent_goal)]);
        break;
      case 'cognition.uncertainty':
        parts.push(h('p', { class: 'prose' }, str(view.uncertainty(p))));
        break;
      case 'operation.tool_start':
      case 'operation.tool_end': {
        const sp = rec.span;
        const start = rec.type === 'operation.tool_start' ? ev : other;
        const end = rec.type === 'operation.tool_end' ? ev : other;
        const sp0 = start ? start.payload || {} : {};
        const sp1 = end ? end.payload || {} : {};
        if (sp) parts.push(h('div', { class: 'd-span' }, spanEl(sp, this.o.spanState(sp), this.o.skew(), 'inspector-span')));
        rows.push(['tool', str(view.tool(p))]);
        const arg = toolArg(sp0.input);
        if (arg) rows.push([arg.kind === 'path' ? 'file' : arg.kind, h('span', null, h('span', { class: 'mono', 'data-testid': 'inspector-tool-arg' }, arg.text), ' ', copyButton(() => arg.text, `Copy ${arg.kind}`))]);
        if (p.tool_call_id !== undefined) rows.push(['call id', h('span', { class: 'mono' }, str(p.tool_call_id), ' ', copyButton(() => str(p.tool_call_id), 'Copy call id'))]);
        if (sp && sp.start && sp.end) {
          const otherRec = rec === sp.start ? sp.end : sp.start;
          rows.push([rec === sp.start ? 'ended at' : 'started at', this.seqLink(otherRec.seq)]);
        }
        if (end) {
          rows.push(['success', str(sp1.success)]);
          if (view.latency(sp1) !== null) rows.push(['latency', fmtDuration(view.latency(sp1))]);
          const f = view.llm(sp1);
          if (f) llmRows(rows, f);
          else {
            if (sp1.token_spend_delta !== undefined) rows.push(['tokens', fmtInt(sp1.token_spend_delta)]);
            if (sp1.cost_usd !== undefined) rows.push(['cost', fmtCost(sp1.cost_usd)]);
          }
        }
        // The call's facts come before its input and output, which can be long.
        parts.push(kv(rows));
        rows.length = 0;
        // A failure's error first: it is what the reader came for.
        if (end && sp1.error !== undefined && sp1.error !== null) parts.push(textBlock('Error', str(sp1.error), 'error-text'));
        if (start && sp0.input !== undefined) parts.push(jsonBlock('Input', sp0.input, 'copy-input'));
        if (end && view.output(sp1) !== undefined) parts.push(textBlock('Output', str(view.output(sp1))));
        break;
      }
      case 'operation.agent_spawn':
        if (typeof p.child_session_id === 'string') {
          rows.push(['child', h('a', { href: sessionHref(p.child_session_id), class: 'mono' }, p.child_session_id)]);
        }
        rows.push(['agent', str(p.child_agent_id)]);
        if (p.goal !== undefined) rows.push(['goal', str(p.goal)]);
        if (p.reason !== undefined) rows.push(['reason', str(p.reason)]);
        break;
      case 'operation.external_call': {
        const f = view.llm(p);
        if (f) parts.push(h('div', { class: 'd-span' }, llmEl(f, view.latency(p), rec.err)));
        if (p.service !== undefined) rows.push([f ? 'provider' : 'service', str(p.service)]);
        if (p.method !== undefined) rows.push([f ? 'operation' : 'method', str(p.method)]);
        if (p.endpoint !== undefined) rows.push(['endpoint', str(p.endpoint)]);
        if (p.status_code !== undefined) rows.push(['status code', h('span', { class: rec.err ? 'error-text' : null }, str(p.status_code))]);
        if (p.success !== undefined) rows.push(['success', str(p.success)]);
        // The chip above says the model, cost and latency already.
        if (f) llmRows(rows, f, true);
        else if (view.latency(p) !== null) rows.push(['latency', fmtDuration(view.latency(p))]);
        if (typeof p.error === 'string' && p.error) {
          parts.push(kv(rows));
          rows.length = 0;
          parts.push(textBlock('Error', p.error, 'error-text'));
        }
        const messages = messagesOf(p, related);
        if (messages.length) {
          parts.push(kv(rows));
          rows.length = 0;
          parts.push(h('div', { class: 'd-block', 'data-testid': 'llm-messages' },
            messages.map(([title, value]) => textBlock(title, messageText(value)))));
        }
        break;
      }
      case 'custom.tool_decision':
        rows.push(['decision', h('strong', null, str(p.decision))]);
        if (p.tool_name !== undefined) rows.push(['tool', h('span', { class: 'mono' }, str(p.tool_name))]);
        if (p.source !== undefined) rows.push(['by', str(p.source)]);
        if (p.tool_call_id !== undefined) rows.push(['call id', h('span', { class: 'mono' }, str(p.tool_call_id))]);
        break;
      case 'otel.log':
        rows.push(['name', h('strong', { class: 'mono' }, str(p.name) || '(none)')]);
        if (p.body !== undefined && p.body !== null) rows.push(['body', str(p.body)]);
        if (p.severity !== undefined) rows.push(['severity', str(p.severity)]);
        break;
      case 'otel.span':
        rows.push(['span', h('strong', { class: 'mono' }, str(p.name))]);
        if (view.latency(p) !== null) rows.push(['duration', fmtDuration(view.latency(p))]);
        break;
      case 'session.ended':
        rows.push(['outcome', str(view.outcome(p)) || 'completed']);
        if (p.outcome_summary !== undefined) rows.push(['summary', str(p.outcome_summary)]);
        if (p.error_message !== undefined) rows.push(['error', h('span', { class: 'error-text' }, str(p.error_message))]);
        break;
      default:
        parts.push(h('p', { class: 'prose' }, rec.label));
    }
    if (rows.length) parts.push(kv(rows));
    // A tool call's start carries the span's identity only; its end has the attributes too.
    let own = view.otel(p);
    // A record kept whole has its name and attributes beside its identity, not inside it.
    if (own && rec.type === 'otel.log' && own.attributes === undefined) own = { ...own, name: p.name, attributes: p.attributes };
    const theirs = other ? view.otel(other.payload) : null;
    const otel = own && own.attributes === undefined && theirs && theirs.attributes !== undefined ? theirs : own;
    if (otel) {
      const withSpan = otel === own ? ev : other;
      const t = parseTs(withSpan.timestamp);
      const lat = view.latency(withSpan.payload);
      // Events written at a span's end carry its length: the span started that long before.
      const atEnd = withSpan.type !== 'operation.tool_start' && withSpan.type !== 'operation.agent_spawn';
      parts.push(spanDetail(otel, { trace: this.o.records.trace, onSeq: this.o.onSeq, start: atEnd && lat !== null ? t - lat : t }));
    }
    if (rec.alerts) parts.push(h('div', { class: 'd-sub' }, 'Alerts', rec.alerts.map((a) => h('div', { class: `al-inline sev-${str(a.severity)}`, 'data-testid': 'alert-detail' }, h('strong', null, str(a.type)), ' ', str(a.message)))));
    parts.push(jsonBlock('Event', ev, 'copy-payload', true));
    return h('div', { class: 'detail' }, parts);
  }
}

/** GenAI records shown with one call at most. */
const MAX_RELATED = 20;
/** Where messages are, in a call's payload and in a GenAI record (attributes or body). */
const OWN_MESSAGES = [['system_instructions', 'System'], ['input_messages', 'Input'], ['output_messages', 'Output']];
const RECORD_MESSAGES = [['gen_ai.system_instructions', 'System'], ['gen_ai.input.messages', 'Input'], ['gen_ai.output.messages', 'Output']];

/** A call's messages as `[title, value]`: its own, then those of the records in its span. */
function messagesOf(p, related) {
  const out = [];
  for (const [key, title] of OWN_MESSAGES) if (p[key] !== undefined && p[key] !== null) out.push([title, p[key]]);
  for (const ev of related) {
    const r = ev.payload && typeof ev.payload === 'object' ? ev.payload : {};
    const attrs = r.attributes && typeof r.attributes === 'object' ? r.attributes : {};
    const body = r.body && typeof r.body === 'object' && !Array.isArray(r.body) ? r.body : {};
    let found = false;
    for (const [key, title] of RECORD_MESSAGES) {
      const v = attrs[key] !== undefined ? attrs[key] : body[key];
      if (v !== undefined && v !== null) { out.push([title, v]); found = true; }
    }
    // The older per-message events (`gen_ai.user.message`, `gen_ai.choice`, …): the body is one.
    if (!found && r.body !== undefined && r.body !== null) out.push([str(r.name).replace(/^gen_ai\./, ''), r.body]);
  }
  return out;
}

/** Messages as `role: text` lines where they have the GenAI shape, else as JSON. */
function messageText(value) {
  if (typeof value === 'string') return value;
  const list = Array.isArray(value) ? value : [value];
  const lines = [];
  for (const m of list) {
    if (!m || typeof m !== 'object') return pretty(value);
    const parts = Array.isArray(m.parts) ? m.parts : m.content !== undefined ? [{ content: m.content }] : null;
    if (!parts) return pretty(value);
    const text = parts.map((x) => (x && typeof x === 'object' && x.content !== undefined ? str(x.content) : pretty(x))).join('\n');
    lines.push(m.role !== undefined ? `${str(m.role)}: ${text}` : text);
  }
  return lines.join('\n\n');
}

/** An LLM call's figures as detail rows; `brief` leaves out what its chip shows. */
function llmRows(rows, f, brief = false) {
  if (f.model !== null && !brief) rows.push(['model', h('span', { class: 'mono', 'data-testid': 'llm-model' }, f.model)]);
  const tokens = llmTokens(f);
  if (tokens) rows.push(['tokens', `${tokens}${f.input !== null || f.output !== null ? ` in → out${f.total !== null ? ` (${fmtInt(f.total)})` : ''}` : ''}`]);
  if (f.cacheRead !== null || f.cacheWrite !== null) rows.push(['cache', `${fmtInt(f.cacheRead ?? 0)} read · ${fmtInt(f.cacheWrite ?? 0)} written`]);
  if (f.cost !== null && !brief) rows.push(['cost', fmtCallCost(f.cost)]);
  else if (f.cost === null && f.note !== null) rows.push(['cost', h('span', { class: 'muted' }, f.note)]);
}

function kv(rows) {
  return h('dl', { class: 'kv' }, rows.map(([k, v]) => [h('dt', null, k), h('dd', null, v)]));
}

function jsonBlock(title, value, testid = 'copy-json', open = false) {
  const text = pretty(value);
  // Long blocks start closed, and huge ones are cut: the page stays responsive; copy has it all.
  return h('details', { class: 'd-block', open: open || text.length < 2000 ? '' : null },
    h('summary', null, title, copyButton(() => text, `Copy ${title.toLowerCase()}`, testid)),
    h('pre', { class: 'json' }, text.length > 200000 ? `${text.slice(0, 200000)}\n… (truncated; use copy or export)` : text));
}

function textBlock(title, text, cls = '') {
  return h('div', { class: 'd-block' },
    h('div', { class: 'd-sub' }, title, copyButton(() => text, `Copy ${title.toLowerCase()}`, `copy-${title.toLowerCase()}`)),
    h('pre', { class: `text ${cls}` }, text));
}
