// The live feed: one EventSource on /stream for the whole page, resumed from the last id it saw.
//
// EventSource reconnects by itself only in some failure modes (and not after an HTTP error), so we
// manage it: on any error we close it and open a new one with `?since=<last id>` after a backoff. The
// collector then replays everything stored after that id before the live feed: nothing is missed
// across a collector restart. Alerts and deletions carry no resumable id; consumers are told to
// resynchronise (`resync`) after every reconnection and refetch those cheaply.

import { apiUrl, checkAuth } from './api.js';

export class Live {
  constructor() {
    this.state = 'offline';
    this.lastId = null;
    this.es = null;
    this.failures = 0;
    this.timer = null;
    this.hadError = false;
    this.handlers = { event: new Set(), alert: new Set(), deleted: new Set(), state: new Set(), resync: new Set() };
    window.addEventListener('online', () => this.reconnectSoon(0));
  }

  on(kind, fn) {
    this.handlers[kind].add(fn);
    return () => this.handlers[kind].delete(fn);
  }

  emit(kind, arg) {
    for (const fn of this.handlers[kind]) {
      try { fn(arg); } catch (e) { console.error('aop dashboard: handler failed', e); }
    }
  }

  setState(s) {
    if (s === this.state) return;
    this.state = s;
    this.emit('state', s);
  }

  start() {
    this.connect();
  }

  connect() {
    clearTimeout(this.timer);
    this.timer = null;
    if (this.es) this.es.close();
    const params = this.lastId !== null ? { since: this.lastId } : null;
    const es = new EventSource(apiUrl('/stream', params, true));
    this.es = es;
    es.onopen = () => {
      if (es !== this.es) return;
      this.failures = 0;
      this.setState('live');
      if (this.hadError) {
        this.hadError = false;
        this.emit('resync');
      }
    };
    es.onmessage = (m) => {
      if (es !== this.es) return;
      if (m.lastEventId) this.lastId = m.lastEventId;
      let ev;
      try { ev = JSON.parse(m.data); } catch { return; }
      if (ev && typeof ev === 'object' && typeof ev.session_id === 'string') this.emit('event', ev);
    };
    es.addEventListener('alert', (m) => {
      if (es !== this.es) return;
      try { this.emit('alert', JSON.parse(m.data)); } catch { /* malformed: skip */ }
    });
    es.addEventListener('session.deleted', (m) => {
      if (es !== this.es) return;
      try { this.emit('deleted', JSON.parse(m.data).session_id); } catch { /* malformed: skip */ }
    });
    es.addEventListener('overflow', (m) => {
      // The collector cut us off because we fell behind; resume from the last id right away
      // (the overflow message carries it, even when no event reached us yet).
      if (es !== this.es) return;
      if (m.lastEventId) this.lastId = m.lastEventId;
      this.hadError = true;
      this.reconnectSoon(0);
    });
    es.addEventListener('reset', () => {
      // The collector's history is not the one this page was built from (it restarted on another
      // database): what the page shows is stale, so start over from what it holds now.
      if (es !== this.es) return;
      es.close();
      location.reload();
    });
    es.onerror = () => {
      if (es !== this.es) return;
      es.close();
      this.hadError = true;
      this.failures++;
      this.setState(this.failures <= 3 ? 'reconnecting' : 'offline');
      const delay = Math.min(15000, 500 * 2 ** Math.min(this.failures - 1, 5)) * (0.8 + Math.random() * 0.4);
      this.reconnectSoon(delay, true);
    };
  }

  reconnectSoon(delay, probe = false) {
    clearTimeout(this.timer);
    this.timer = setTimeout(async () => {
      if (probe) {
        // An EventSource error hides the status code: find out whether a token is what is missing.
        try {
          const r = await fetch(apiUrl('/health'), { cache: 'no-store' });
          if (r.ok) await checkAuth();
        } catch { /* collector down: just retry */ }
      }
      this.connect();
    }, delay);
  }
}
