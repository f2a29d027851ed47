// The page's routes (location hash), in one place so that no view needs another to link to it:
//   #/?q=&status=&agent=          the sessions overview, with its filters
//   #/sessions/<id>[/<sequence>]  one session, optionally at one of its events

export function sessionHref(id, seq) {
  return `#/sessions/${encodeURIComponent(id)}${seq !== undefined && seq !== null ? `/${encodeURIComponent(seq)}` : ''}`;
}

/** The overview's route; empty filters are left out so the plain overview stays `#/`. */
export function overviewHref(filters) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(filters)) if (v) p.set(k, v);
  const qs = p.toString();
  return `#/${qs ? `?${qs}` : ''}`;
}

/** `{view: 'session', id, seq}` or `{view: 'overview', params}`; anything unknown is the overview. */
export function parseHash(hash = location.hash) {
  const raw = hash.replace(/^#/, '') || '/';
  const [path, query] = raw.split('?');
  const m = /^\/sessions\/([^/]+)(?:\/(-?\d+))?\/?$/.exec(path);
  if (m) {
    let id;
    // A hand-typed, badly escaped id is still worth a try as written.
    try { id = decodeURIComponent(m[1]); } catch { id = m[1]; }
    return { view: 'session', id, seq: m[2] !== undefined ? Number(m[2]) : null };
  }
  return { view: 'overview', params: new URLSearchParams(query || '') };
}
