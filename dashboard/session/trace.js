// The shape of a trace: which span is inside which, read from the identity that events derived
// from OpenTelemetry spans carry (`payload.otel.span_id` / `parent_span_id`). It gives each record a
// depth for the timeline's indentation and each span its chain of enclosing spans. No DOM.
//
// Spans arrive in any order (a span's event is usually written at its end, after its children's),
// so a span whose parent has not arrived yet sits at the top, and moves under its parent when the
// parent arrives. The trace's root (no parent) is the session itself: it is not a level, and its
// children sit at the top too. The work is proportional to the records whose depth changes, which
// happens only when an ancestor arrives; a subtree whose depth is unchanged is not walked.

/** Deeper spans are drawn at this depth (the indentation must leave room for the row). */
const MAX_DEPTH = 24;

export class SpanIndex {
  constructor() {
    /**
     * span id → {known, parent, depth, recs, kids}: `known` once a record of the span itself has
     * arrived (before that, the node only collects the children that name it as their parent);
     * `depth` is -1 for the root, 0 at the top.
     */
    this.nodes = new Map();
  }

  get size() { return this.nodes.size; }

  node(sid) {
    let n = this.nodes.get(sid);
    if (!n) {
      n = { known: false, parent: null, depth: 0, recs: [], kids: [] };
      this.nodes.set(sid, n);
    }
    return n;
  }

  /** Adds a record that carries `rec.otel.sid`; records whose depth changes get `ver` bumped. */
  add(rec) {
    const { sid, psid } = rec.otel;
    const n = this.node(sid);
    n.recs.push(rec);
    if (n.known) {
      rec.depth = Math.max(0, n.depth);
      return;
    }
    n.known = true;
    n.parent = psid !== sid ? psid : null;
    if (n.parent !== null) this.node(n.parent).kids.push(sid);
    const p = n.parent !== null ? this.nodes.get(n.parent) : null;
    const depth = n.parent === null ? -1 : p.known ? Math.min(MAX_DEPTH, p.depth + 1) : 0;
    this.place(sid, depth);
  }

  /** Gives span `sid` its depth and carries the change down to its descendants. */
  place(sid, depth) {
    const stack = [[sid, depth]];
    // Untrusted ids may form a cycle: each span is placed at most once per call.
    const seen = new Set();
    while (stack.length) {
      const [id, d] = stack.pop();
      if (seen.has(id)) continue;
      seen.add(id);
      const n = this.nodes.get(id);
      if (!n || !n.known) continue;
      // An unchanged depth means an unchanged subtree (the arriving span's own children excepted:
      // they were waiting at the top).
      if (id !== sid && n.depth === d) continue;
      n.depth = d;
      const shown = Math.max(0, d);
      for (const r of n.recs) {
        if (r.depth !== shown) { r.depth = shown; r.ver++; }
      }
      for (const k of n.kids) stack.push([k, Math.min(MAX_DEPTH, d + 1)]);
    }
  }

  /** Forgets a record that left the view (memory bound); a span with no record left is forgotten. */
  drop(rec) {
    const sid = rec.otel.sid;
    const n = this.nodes.get(sid);
    if (!n) return;
    const at = n.recs.indexOf(rec);
    if (at >= 0) n.recs.splice(at, 1);
    if (!n.recs.length) this.nodes.delete(sid);
  }

  /** The first record of a span (its earliest event), or null when none has arrived. */
  recordOf(sid) {
    const n = typeof sid === 'string' ? this.nodes.get(sid) : null;
    if (!n || !n.recs.length) return null;
    let best = n.recs[0];
    for (const r of n.recs) if (r.seq < best.seq) best = r;
    return best;
  }

  /**
   * The spans enclosing `sid` that have arrived, outermost first, each as its first record; stops
   * at the first parent not received (at most `max` of them).
   */
  ancestors(sid, max = 12) {
    const out = [];
    const seen = new Set([sid]);
    let n = this.nodes.get(sid);
    while (n && n.parent !== null && out.length < max && !seen.has(n.parent)) {
      seen.add(n.parent);
      const rec = this.recordOf(n.parent);
      if (!rec) break;
      out.unshift(rec);
      n = this.nodes.get(n.parent);
    }
    return out;
  }
}
