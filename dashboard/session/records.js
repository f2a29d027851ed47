// One session's events as the session view holds them: compact records in sequence order, tool
// calls paired into spans, and the alerts, attached to their events. No DOM: the panels draw from
// this, and only the session view (session.js) adds to it.
//
// Events arrive from pages and from the live feed in any order and possibly twice; duplicates are
// dropped by sequence. Memory: every event keeps a compact record; full payloads are kept for the
// newest KEEP_FULL only and fetched again on demand for older ones, and beyond MAX_RECS the oldest
// records go.
//
// Events derived from OpenTelemetry spans carry the span's identity (`payload.otel`): a SpanIndex
// (trace.js) places them in their trace, and the session's `session.started` says where it comes
// from (`meta`).

import { api } from '../api.js';
import { str, clip, parseTs } from '../dom.js';
import { tierOf, summarize, isError, view, startMeta, toolArg } from '../model.js';
import { skewOf } from '../store.js';
import { SpanIndex } from './trace.js';
import { signature } from './deliveries.js';

const KEEP_FULL = 20000;
const MAX_RECS = 300000;
/** How many tool calls the timeline's gutter can show open at once. */
export const LANES = 4;

export class Records {
  constructor(id) {
    this.id = id;
    // Read by the panels, written only here.
    /** records, by sequence; each is also the timeline's item for its event */
    this.recs = [];
    this.bySeq = new Map();
    /** tool calls: {name, start, end, state, t0, t1, dur, …}; start or end may be missing */
    this.spans = [];
    /** records of LLM calls made as external calls (those made as tool calls are in `spans`) */
    this.llmCalls = [];
    /** spawns of agents nested in this session's trace (agent spans inside the root's) */
    this.agentSpans = [];
    /** alert id → alert */
    this.alerts = new Map();
    /** alerts of no event (stalls), by time, placed in the timeline by when they were raised */
    this.looseAlerts = [];
    this.errorCount = 0;
    /** how many of the oldest records were dropped to bound memory */
    this.trimmed = 0;

    /** spans of an OpenTelemetry trace, by span id */
    this.trace = new SpanIndex();
    /** what the session's `session.started` says of its source (model.js, startMeta), once seen */
    this.meta = null;

    this.alertItems = new Map();
    /** alert id → its notifications (deliveries.js), as the collector last said */
    this.deliveries = new Map();
    // Alerts that reached us before their event did.
    this.pendingAlerts = new Map();
    this.compactFrom = 0;
    this.resetPairing();
  }

  /** Every event the view has seen, including the dropped oldest ones. */
  get seen() { return this.recs.length + this.trimmed; }

  /** The timeline item of an alert. */
  alertItem(id) { return this.alertItems.get(id); }

  /** The session's start as its first record tells it (NaN when there is none). */
  firstTime() { return this.recs.length ? this.recs[0].t : NaN; }

  hasOpenCalls() { return this.spans.some((sp) => !sp.end); }

  /** The latest stated confidences, newest first (looking back a bounded distance). */
  recentConfidences(max = 24) {
    const confs = [];
    for (let i = this.recs.length - 1, seen = 0; i >= 0 && seen < 5000 && confs.length < max; i--, seen++) {
      const c = this.recs[i].conf;
      if (c !== undefined && c !== null) confs.push(c);
    }
    return confs;
  }

  /**
   * Adds events (new ones only). `keep` is a record whose payload must stay (the one shown).
   * Returns null when nothing was new, else whether earlier records were renumbered in the merge
   * (`reordered`: drawn rows are stale) and whether old records were dropped (`trimmed`).
   */
  add(evs, live, keep) {
    const fresh = [];
    for (const ev of evs) {
      if (!ev || typeof ev !== 'object' || !Number.isInteger(ev.sequence) || this.bySeq.has(ev.sequence)) continue;
      const rec = this.makeRec(ev, live);
      this.bySeq.set(rec.seq, rec);
      if (rec.otel && rec.otel.sid) this.trace.add(rec);
      if (rec.llm && rec.type === 'operation.external_call') this.llmCalls.push(rec);
      if (rec.child !== undefined) this.agentSpans.push(rec);
      fresh.push(rec);
    }
    if (!fresh.length) return null;
    fresh.sort((a, b) => a.seq - b.seq);
    for (const r of fresh) if (r.err) this.errorCount++;
    const recs = this.recs;
    let reordered = false;
    if (!recs.length || fresh[0].seq > recs[recs.length - 1].seq) {
      const from = recs.length;
      for (const r of fresh) recs.push(r);
      this.pairFrom(from);
    } else {
      // A late event, or a page landing after live events: merge, then pair everything again.
      const merged = new Array(recs.length + fresh.length);
      let i = 0; let j = 0; let k = 0;
      while (i < recs.length && j < fresh.length) merged[k++] = recs[i].seq < fresh[j].seq ? recs[i++] : fresh[j++];
      while (i < recs.length) merged[k++] = recs[i++];
      while (j < fresh.length) merged[k++] = fresh[j++];
      this.recs = merged;
      this.resetPairing();
      this.pairFrom(0);
      reordered = true;
    }
    const trimmed = this.bound(keep);
    return { reordered, trimmed };
  }

  makeRec(ev, live) {
    const type = typeof ev.type === 'string' ? ev.type : String(ev.type);
    const p = ev.payload && typeof ev.payload === 'object' ? ev.payload : {};
    const rec = {
      seq: ev.sequence, type, tier: tierOf(type), ts: ev.timestamp, t: parseTs(ev.timestamp),
      label: clip(summarize(ev), 300).replace(/\s+/g, ' '), err: isError(ev), ev, key: `e${ev.sequence}`, ver: 0,
      alerts: null, span: null, lanes: 0, laneStart: -1, laneEnd: -1, lc: null,
      agent: str(ev.agent_id), depth: 0, otel: null, llm: null,
    };
    // A running call's duration counts from when the browser saw it start, immune to clock skew.
    if (live) rec.arrived = Date.now();
    if (type === 'cognition.thought') {
      rec.conf = view.confidence(p);
      // A prompt as its user wrote it, not a thought of the agent's.
      rec.role = view.role(p);
    }
    const o = view.otel(p);
    if (o) {
      // Only what the rows need is kept: the payload itself may be dropped later.
      rec.otel = {
        sid: typeof o.span_id === 'string' && o.span_id ? o.span_id : null,
        psid: typeof o.parent_span_id === 'string' && o.parent_span_id ? o.parent_span_id : null,
        name: str(o.name), status: str(o.status),
      };
    }
    if (type === 'session.started') this.meta = startMeta(p);
    if (type === 'operation.agent_spawn' && rec.otel && rec.otel.sid) {
      rec.child = str(p.child_agent_id) || 'agent';
      rec.goal = clip(str(p.goal), 120);
    }
    if (type === 'operation.tool_start' || type === 'operation.tool_end') {
      rec.tool = str(view.tool(p)) || '(tool)';
      rec.callId = p.tool_call_id !== undefined && p.tool_call_id !== null ? str(p.tool_call_id) : null;
      // A span's start and end share its span id: an exact pair when there is no call id.
      if (rec.callId === null && rec.otel && rec.otel.sid) rec.callId = `otel:${rec.otel.sid}`;
      if (type === 'operation.tool_end') rec.lat = view.latency(p);
      else {
        rec.input = p.input !== undefined ? clip(str(p.input), 200) : '';
        // The command, file path, … it works on, when the input names one.
        const arg = toolArg(p.input);
        rec.arg = arg ? { kind: arg.kind, text: clip(arg.text, 1000), note: arg.note ? clip(arg.note, 200) : null } : null;
      }
    }
    if (type === 'operation.external_call' || type === 'operation.tool_end') {
      rec.llm = view.llm(p);
      if (rec.llm) rec.lat = view.latency(p);
    }
    if (type === 'otel.span') {
      rec.lat = view.latency(p);
      rec.attrs = attrsLine(p.attributes);
    }
    if (type === 'operation.external_call' && rec.err) rec.errText = clip(str(p.error), 300);
    if (type === 'custom.tool_decision') {
      rec.decision = { decision: clip(str(p.decision), 40), tool: clip(str(p.tool_name), 60), source: clip(str(p.source), 60) };
    }
    if (type === 'otel.log') {
      rec.logName = str(p.name) || 'log';
      const a = p.attributes && typeof p.attributes === 'object' && !Array.isArray(p.attributes) ? p.attributes : {};
      // What the agent answered (Claude Code's `assistant_response`), else what the record is about.
      rec.said = typeof a.response === 'string' && a.response ? clip(a.response, 300).replace(/\s+/g, ' ') : null;
      rec.attrs = rec.said ? '' : attrsLine(a, (k) => !LOG_CONTEXT.test(k));
    }
    const pending = this.pendingAlerts.get(rec.seq);
    if (pending) { rec.alerts = pending; this.pendingAlerts.delete(rec.seq); }
    return rec;
  }

  /** Keeps memory bounded: old payloads are dropped (refetched on demand), very old records too. */
  bound(keep) {
    const recs = this.recs;
    let trimmed = false;
    if (recs.length > MAX_RECS) {
      const cut = recs.length - Math.floor(MAX_RECS * 0.9);
      const gone = recs.splice(0, cut);
      for (const r of gone) {
        this.bySeq.delete(r.seq);
        if (r.otel && r.otel.sid) this.trace.drop(r);
      }
      const firstSeq = recs[0].seq;
      this.spans = this.spans.filter((sp) => (sp.end || sp.start).seq >= firstSeq);
      for (const sp of this.spans) if (sp.start && sp.start.seq < firstSeq) sp.start = null;
      this.llmCalls = this.llmCalls.filter((r) => r.seq >= firstSeq);
      this.agentSpans = this.agentSpans.filter((r) => r.seq >= firstSeq);
      this.trimmed += cut;
      this.compactFrom = 0;
      trimmed = true;
    }
    const limit = recs.length - KEEP_FULL;
    if (limit > KEEP_FULL / 2 + this.compactFrom) {
      for (let i = this.compactFrom; i < limit; i++) {
        if (recs[i] !== keep) recs[i].ev = null;
      }
      this.compactFrom = limit;
    }
    return trimmed;
  }

  resetPairing() {
    this.spans = [];
    this.pair = { byId: new Map(), byName: new Map(), lanes: new Array(LANES).fill(null) };
  }

  /**
   * Pairs tool starts and ends (AOP.md): by tool_call_id when both carry it, else the oldest open
   * call of the same tool. Also assigns the timeline's span lanes (the lines in the left gutter).
   */
  pairFrom(from) {
    const { byId, byName, lanes } = this.pair;
    const recs = this.recs;
    for (let i = from; i < recs.length; i++) {
      const r = recs[i];
      let mask = 0;
      for (let k = 0; k < LANES; k++) if (lanes[k]) mask |= 1 << k;
      r.lanes = mask;
      r.laneStart = -1;
      r.laneEnd = -1;
      r.span = null;
      if (r.type === 'operation.tool_start') {
        const sp = { name: r.tool, callId: r.callId, start: r, end: null, state: 'running', lane: -1, seq: r.seq, t0: r.t, t1: NaN, dur: null };
        r.span = sp;
        this.spans.push(sp);
        if (sp.callId !== null) byId.set(sp.callId, sp);
        let list = byName.get(sp.name);
        if (!list) { list = []; byName.set(sp.name, list); }
        list.push(sp);
        const lane = lanes.indexOf(null);
        if (lane >= 0) { lanes[lane] = sp; sp.lane = lane; r.laneStart = lane; r.lanes |= 1 << lane; }
      } else if (r.type === 'operation.tool_end') {
        let sp = null;
        if (r.callId !== null && byId.has(r.callId)) sp = byId.get(r.callId);
        if (!sp) {
          const list = byName.get(r.tool);
          if (list) sp = list.find((c) => c.callId === null || r.callId === null) || null;
        }
        if (sp) {
          const list = byName.get(sp.name);
          const at = list ? list.indexOf(sp) : -1;
          if (at >= 0) list.splice(at, 1);
          if (sp.callId !== null && byId.get(sp.callId) === sp) byId.delete(sp.callId);
          if (sp.lane >= 0) { lanes[sp.lane] = null; r.laneEnd = sp.lane; }
          // The start's row shows the call's state: redraw it.
          sp.start.ver++;
        } else {
          sp = { name: r.tool, callId: r.callId, start: null, end: null, lane: -1, seq: r.seq };
          this.spans.push(sp);
        }
        sp.end = r;
        r.span = sp;
        sp.state = r.err ? 'error' : 'ok';
        sp.t1 = r.t;
        sp.t0 = sp.start ? sp.start.t : r.t - (r.lat || 0);
        sp.dur = r.lat !== null && r.lat !== undefined ? r.lat : (sp.start ? r.t - sp.start.t : null);
      }
    }
  }

  /** Adds an alert; false when it was known already. */
  addAlert(a) {
    if (!a || this.alerts.has(a.id)) return false;
    this.alerts.set(a.id, a);
    this.alertItems.set(a.id, { kind: 'alert', key: `a${a.id}`, alert: a, ver: 0 });
    if (a.sequence !== null && a.sequence !== undefined) {
      const rec = this.bySeq.get(a.sequence);
      if (rec) { (rec.alerts || (rec.alerts = [])).push(a); rec.ver++; } else {
        const list = this.pendingAlerts.get(a.sequence) || [];
        list.push(a);
        this.pendingAlerts.set(a.sequence, list);
      }
    } else {
      // Raised on the collector's clock; placed among the events, which carry the agent's.
      a._t = parseTs(a.created_at) - skewOf(this.id);
      this.looseAlerts.push(a);
      this.looseAlerts.sort((x, y) => x._t - y._t);
    }
    return true;
  }

  /** An alert's notifications (an empty list when it has none, or they are not known yet). */
  deliveriesOf(id) { return this.deliveries.get(id) || []; }

  /** Whether any notification is still waiting for its next try. */
  hasPendingDeliveries() {
    for (const list of this.deliveries.values()) if (list.some((d) => d.state === 'pending')) return true;
    return false;
  }

  /**
   * Takes the session's deliveries as the collector lists them; the alert items whose drawing
   * changes are bumped. Returns whether any did.
   */
  setDeliveries(list) {
    const next = new Map();
    for (const d of list) {
      if (!d || !Number.isInteger(d.alert_id)) continue;
      const l = next.get(d.alert_id);
      if (l) l.push(d); else next.set(d.alert_id, [d]);
    }
    let changed = false;
    for (const id of new Set([...next.keys(), ...this.deliveries.keys()])) {
      if (signature(next.get(id)) === signature(this.deliveries.get(id))) continue;
      const item = this.alertItems.get(id);
      if (item) item.ver++;
      changed = true;
    }
    this.deliveries = next;
    return changed;
  }

  /** The full event of a record, fetched again when its payload was dropped. */
  async full(rec) {
    if (rec.ev) return rec.ev;
    const params = rec.seq > 0 ? { after: rec.seq - 1, limit: 1 } : { limit: 1 };
    const r = await api(`/sessions/${encodeURIComponent(this.id)}`, { params });
    const ev = (r.events || []).find((e) => e.sequence === rec.seq);
    if (!ev) throw new Error('event not found');
    return ev;
  }
}

/**
 * Attributes a coding agent puts on every record (who, where, which record): the same on each,
 * they would crowd out what a record is about in its timeline row (the details pane has them all).
 */
const LOG_CONTEXT = /^(user\.|session\.id$|organization\.id$|terminal\.type$|app\.version$|event\.|prompt\.id$|message\.uuid$|request_id$|anthropic\.|conversation\.id$|service\.|os\.|host\.|model$|auth_mode$|originator$|slug$)/;

/** A span's (or record's) first attributes as one line (`key=value …`), for its timeline row. */
function attrsLine(attrs, keep = () => true) {
  if (!attrs || typeof attrs !== 'object' || Array.isArray(attrs)) return '';
  const out = [];
  let len = 0;
  for (const [k, v] of Object.entries(attrs)) {
    if (!keep(k)) continue;
    const bit = `${k}=${clip(str(v), 60)}`;
    out.push(bit);
    len += bit.length;
    if (len > 160 || out.length >= 6) break;
  }
  return out.join('  ');
}
