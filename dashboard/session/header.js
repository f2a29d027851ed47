// The session view's header: back, what the session is (goal, agent and the badge of its kind,
// ids, parent, outcome, and the conversation it is a turn of, leading to that conversation's
// view) and its actions
// (compare with another run, export, stop the run or resume it, delete; stop and delete behind a
// confirmation dialog). A stopped run is one the guard denies (`GUARD.md`): the agent, asking
// before each step, is told to stop.

import { api, apiUrl, getToken } from '../api.js';
import { h, replace, clip, fmtInt, copyButton } from '../dom.js';
import { getRow, removeRow, statusOf, fetchRow } from '../store.js';
import { sessionHref, conversationHref } from '../routes.js';
import { agentBadge } from './parts.js';
import { ComparePicker } from '../compare/picker.js';

export class Header {
  /**
   * @param {object} o
   * @param {string} o.id  the session
   * @param {(deleted?: boolean) => void} o.onBack  leave the view (`true`: the session is gone)
   * @param {(text: string) => void} o.onError  something the user asked for failed
   * @param {() => object|null} o.meta  what the session's `session.started` says of its source
   */
  constructor(o) {
    this.o = o;
    const { id } = o;
    this.titleEl = h('h1', { class: 'sv-goal', id: 'sv-title' }, 'Loading session…');
    this.subEl = h('div', { class: 'sv-sub' });
    const exportLink = h('a', {
      class: 'btn', href: apiUrl(`/sessions/${encodeURIComponent(id)}/export`), download: `session-${id}.jsonl`,
      'data-testid': 'export-button', title: 'Download every event of this session as JSON Lines',
    }, 'Export');
    exportLink.addEventListener('click', (e) => this.exportWithToken(e));
    this.picker = new ComparePicker({ id });
    const compareBtn = h('button', {
      type: 'button', class: 'btn', 'data-testid': 'compare-button', onclick: () => this.picker.open(),
      title: 'Compare this run step by step with another (the most similar one is suggested)',
    }, 'Compare with…');
    const delBtn = h('button', { type: 'button', class: 'btn btn-danger', 'data-testid': 'delete-button', onclick: () => this.confirmDelete() }, 'Delete');
    this.stopBtn = h('button', {
      type: 'button', class: 'btn btn-danger', 'data-testid': 'stop-button', hidden: true, onclick: () => this.confirmStop(),
      title: 'Tell this run to stop: the guard denies every call its agent asks about from now on',
    }, 'Stop this run');
    this.resumeBtn = h('button', {
      type: 'button', class: 'btn', 'data-testid': 'resume-button', hidden: true, onclick: () => this.resume(),
      title: 'Lift the stop: the guard answers this run as before',
    }, 'Resume');
    const back = h('button', { type: 'button', class: 'btn btn-back', 'aria-label': 'Back to sessions', title: 'Back to sessions (Esc)', onclick: () => o.onBack() }, '← Sessions');
    this.el = h('header', { class: 'sv-head' },
      back,
      h('div', { class: 'sv-titles' }, this.titleEl, this.subEl),
      h('div', { class: 'sv-actions' }, this.stopBtn, this.resumeBtn, compareBtn, exportLink, delBtn));
    /** the dialogs (stop's and delete's confirmations, compare's picker), placed by the view (a modal is best at the end of the view) */
    this.dialogs = [this.buildStopDialog(), this.buildDeleteDialog(), this.picker.el];
  }

  /** Draws the row; `force` redraws even when the row's shown fields are unchanged (liveness moved). */
  render(row, force = false) {
    if (!row) return;
    const goal = row.goal || '(no goal)';
    if (this.titleEl.textContent !== goal) this.titleEl.textContent = goal;
    document.title = `${row.agent_id || 'session'} · aop`;
    const st = statusOf(row);
    const meta = this.o.meta() || row._meta || null;
    // The collector's row names the conversation (its spans may, after the session's start).
    const conversation = row.conversation_id || (meta && meta.conversation) || null;
    const stopped = row.stopped || null;
    const sig = JSON.stringify([row.agent_id, row.id, row.llm, row.agent_version, row.parent_session_id, st.text, row.error_message, row.outcome_summary, meta, conversation, stopped]);
    if (sig === this.sig && !force) return;
    this.sig = sig;
    this.stopBtn.hidden = !!stopped || row.status !== 'running';
    this.resumeBtn.hidden = !stopped;
    replace(this.subEl,
      h('span', { class: `dot live-${st.dot}`, 'aria-hidden': 'true' }),
      h('strong', null, row.agent_id || '—'),
      stopped ? h('span', {
        class: 'badge badge-stopped', 'data-testid': 'stopped-badge',
        title: `Stopped by an operator at ${stopped.at}${stopped.reason ? `: ${stopped.reason}` : ''}; the guard denies its calls`,
      }, 'stopped') : null,
      agentBadge(row.id, row.agent_id, meta),
      h('span', { class: 'mono small sid' }, row.id), copyButton(() => row.id, 'Copy session id', 'copy-session-id'),
      meta && meta.service && meta.service !== row.agent_id ? h('span', { class: 'muted small', title: 'OpenTelemetry service.name' }, `service ${clip(meta.service, 60)}`) : null,
      conversation ? h('span', { class: 'small conv' },
        h('a', {
          href: conversationHref(conversation), 'data-testid': 'conversation-link',
          title: 'The conversation this session is a turn of: its turns in order, with their totals',
        }, 'conversation ', h('span', { class: 'mono', 'data-testid': 'conversation-id' }, clip(conversation, 80))),
        ' ', copyButton(() => conversation, 'Copy conversation id', 'copy-conversation-id')) : null,
      row.llm ? h('span', { class: 'muted small' }, row.llm) : null,
      row.agent_version ? h('span', { class: 'muted small' }, `v${row.agent_version}`) : null,
      row.parent_session_id ? h('a', { class: 'small', href: sessionHref(row.parent_session_id), 'data-testid': 'parent-link' }, '↑ parent') : null,
      row.error_message ? h('span', { class: 'error-text small' }, clip(row.error_message, 160)) : (row.outcome_summary ? h('span', { class: 'muted small' }, clip(row.outcome_summary, 160)) : null));
  }

  notFound() {
    this.titleEl.textContent = 'Session not found';
  }

  buildStopDialog() {
    const { id } = this.o;
    const reason = h('input', {
      type: 'text', class: 'input', maxlength: '1024', 'data-testid': 'stop-reason',
      placeholder: 'Why (optional): the agent is told this', 'aria-label': 'Reason for stopping',
    });
    const cancel = h('button', { type: 'button', class: 'btn', 'data-testid': 'cancel-stop' }, 'Cancel');
    const ok = h('button', { type: 'button', class: 'btn btn-danger', 'data-testid': 'confirm-stop' }, 'Stop the run');
    const err = h('p', { class: 'error-text', role: 'alert' });
    const dlg = h('dialog', { class: 'dialog', 'aria-labelledby': `stop-title-${id}` },
      h('h2', { id: `stop-title-${id}` }, 'Stop this run?'),
      h('p', null, 'From now on the guard answers deny to every call this run\'s agent asks about (an agent that asks before it acts, such as Claude Code with aop\'s hooks, then stops). Nothing is deleted; Resume lifts it.'),
      reason, err,
      h('div', { class: 'dialog-actions' }, cancel, ok));
    cancel.addEventListener('click', () => dlg.close());
    ok.addEventListener('click', async () => {
      ok.disabled = true;
      err.textContent = '';
      try {
        const why = reason.value.trim();
        await api(`/sessions/${encodeURIComponent(id)}/stop`, { method: 'POST', body: why ? { reason: why } : {} });
        dlg.close();
        const row = await fetchRow(id);
        if (row) this.render(row, true);
      } catch (e) {
        err.textContent = `Could not stop: ${e.message}`;
      } finally {
        ok.disabled = false;
      }
    });
    this.stopDialog = dlg;
    this.stopReason = reason;
    this.stopCancel = cancel;
    return dlg;
  }

  confirmStop() {
    this.stopReason.value = '';
    this.stopDialog.showModal();
    this.stopCancel.focus();
  }

  async resume() {
    const { id } = this.o;
    try {
      await api(`/sessions/${encodeURIComponent(id)}/resume`, { method: 'POST' });
      const row = await fetchRow(id);
      if (row) this.render(row, true);
    } catch (e) {
      this.o.onError(`Could not resume: ${e.message}`);
    }
  }

  buildDeleteDialog() {
    const { id } = this.o;
    const msg = h('p');
    const cancel = h('button', { type: 'button', class: 'btn', 'data-testid': 'cancel-delete' }, 'Cancel');
    const ok = h('button', { type: 'button', class: 'btn btn-danger', 'data-testid': 'confirm-delete' }, 'Delete session');
    const err = h('p', { class: 'error-text', role: 'alert' });
    const dlg = h('dialog', { class: 'dialog', 'aria-labelledby': `del-title-${id}` },
      h('h2', { id: `del-title-${id}` }, 'Delete this session?'), msg, err,
      h('div', { class: 'dialog-actions' }, cancel, ok));
    cancel.addEventListener('click', () => dlg.close());
    ok.addEventListener('click', async () => {
      ok.disabled = true;
      err.textContent = '';
      try {
        await api(`/sessions/${encodeURIComponent(id)}`, { method: 'DELETE' });
        dlg.close();
        removeRow(id);
        this.o.onBack(true);
      } catch (e) {
        err.textContent = `Could not delete: ${e.message}`;
      } finally {
        ok.disabled = false;
      }
    });
    this.dialog = dlg;
    this.dialogMsg = msg;
    this.dialogCancel = cancel;
    return dlg;
  }

  confirmDelete() {
    const { id } = this.o;
    const r = getRow(id);
    replace(this.dialogMsg,
      'The session ', h('code', null, clip(id, 80)),
      r ? ` (${r.agent_id || 'agent'}, ${fmtInt(r.event_count)} events) ` : ' ',
      'and its events and alerts will be removed from the collector. This cannot be undone.');
    this.dialog.showModal();
    // The safe choice has the focus.
    this.dialogCancel.focus();
  }

  async exportWithToken(e) {
    // A plain link cannot carry the Authorization header; with a token, download through fetch.
    if (!getToken()) return;
    e.preventDefault();
    const { id } = this.o;
    try {
      const res = await api(`/sessions/${encodeURIComponent(id)}/export`, { raw: true });
      const url = URL.createObjectURL(await res.blob());
      const a = h('a', { href: url, download: `session-${id}.jsonl` });
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (err) {
      this.o.onError(`Export failed: ${err.message}`);
    }
  }
}
