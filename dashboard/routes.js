// The page's routes (location hash), in one place so that no view needs another to link to it:
//   #/?q=&status=&agent=          the sessions overview, with its filters
//   #/sessions/<id>[/<sequence>]  one session, optionally at one of its events
//   #/compare/<a>/<b>             two sessions side by side, step by step
//   #/conversations/<id>          the sessions (turns) of one conversation, in order

export function sessionHref(id, seq) {
  return `#/sessions/${encodeURIComponent(id)}${seq !== undefined && seq !== null ? `/${encodeURIComponent(seq)}` : ''}`;
}

/** The comparison of session `a` with session `b` (b's figures are read against a's). */
export function compareHref(a, b) {
  return `#/compare/${encodeURIComponent(a)}/${encodeURIComponent(b)}`;
}

/** The conversation `id`: its sessions, one a turn, in order. */
export function conversationHref(id) {
  return `#/conversations/${encodeURIComponent(id)}`;
}

/** The overview's route; empty filters are left out so the plain overview stays `#/`. */
export function overviewHref(filters) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(filters)) if (v) p.set(k, v);
  const qs = p.toString();
  return `#/${qs ? `?${qs}` : ''}`;
}

// A hand-typed, badly escaped id is still worth a try as written.
function decode(part) {
  try { return decodeURIComponent(part); } catch { return part; }
}

/**
 * `{view: 'session', id, seq}`, `{view: 'compare', a, b}`, `{view: 'conversation', id}` or
 * `{view: 'overview', params}`; anything unknown is the overview.
 */
export function parseHash(hash = location.hash) {
  const raw = hash.replace(/^#/, '') || '/';
  const [path, query] = raw.split('?');
  const m = /^\/sessions\/([^/]+)(?:\/(-?\d+))?\/?$/.exec(path);
  if (m) return { view: 'session', id: decode(m[1]), seq: m[2] !== undefined ? Number(m[2]) : null };
  const c = /^\/compare\/([^/]+)\/([^/]+)\/?$/.exec(path);
  if (c) return { view: 'compare', a: decode(c[1]), b: decode(c[2]) };
  const v = /^\/conversations\/([^/]+)\/?$/.exec(path);
  if (v) return { view: 'conversation', id: decode(v[1]) };
  return { view: 'overview', params: new URLSearchParams(query || '') };
}
