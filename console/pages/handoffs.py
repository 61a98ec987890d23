"Hand-offs: dead letters first (one-click replay), per-channel status, dry-run replay, confirmed re-delivery."
import streamlit as st

from leadchat.console import (HANDOFF_REASONS, OUTBOX_STATUSES, ConsoleInputError, HandoffQuery, dead_letter_list,
                              fit_widths, handoff_page, handoff_table, redeliver, replay_preview, require_staff)

staff, backend = require_staff()
tz = backend.settings.team_tz
st.title('Hand-offs')


def show_result(res: dict) -> None:
    channels = ', '.join(f"{k} {v['status']}" + (' (earlier)' if v.get('earlier') else '')
                         for k, v in res.get('channels', {}).items())
    (st.success if res.get('outcome') == 'complete' else st.warning)(
        f"Hand-off #{res['outbox_id']} re-delivered: {res.get('outcome')} ({channels})")


dead = backend.conn(dead_letter_list, backend.settings, keyring=backend.keyring)
if dead:
    hours = backend.settings.handoff_retry_horizon_seconds / 3600
    with st.container(border=True):
        st.error(f'**{len(dead)} hand-off{"s" * (len(dead) != 1)} could not be delivered** within the retry horizon '
                 f'({hours:g} h). The rep may not have {"these leads" if len(dead) != 1 else "this lead"} in the channels '
                 'listed. Fix the channel, then replay: only what did not arrive is sent.', icon='🚨')
        for d in dead:
            c1, c2 = st.columns([5, 1])
            c1.markdown(f'**#{d.outbox_id}** · {d.kind} · {d.handoff_reason} · missing: **{", ".join(d.missing) or "—"}** · '
                        f'since {d.dead_since}  \n`{d.error or "no error recorded"}`')
            if c2.button(f'Replay #{d.outbox_id}', key=f'h_dead_{d.outbox_id}', type='primary'):
                st.session_state['h_result'] = backend.run(redeliver(backend.pool, backend.settings, d.outbox_id,
                                                                     staff=staff.username))
                st.rerun()
if (res := st.session_state.pop('h_result', None)) is not None: show_result(res)

c = st.columns(2)
status = c[0].selectbox('Status', ['any', *OUTBOX_STATUSES], key='h_status')
reason = c[1].selectbox('Reason', ['any', *HANDOFF_REASONS], key='h_reason')
inputs = dict(status=None if status == 'any' else status, handoff_reason=None if reason == 'any' else reason)
if st.session_state.get('h_filters') != inputs:
    st.session_state['h_filters'] = inputs
    st.session_state.pop('h_page', None)
try: q = HandoffQuery.make(**inputs, page=st.session_state.get('h_page', 1))
except ConsoleInputError as e:
    st.error(str(e)); st.stop()
rows, total = backend.conn(handoff_page, q, keyring=backend.keyring)
pages = max(1, -(-total // q.page_size))
st.markdown(f'{total} hand-off{"s" * (total != 1)} · channels: {", ".join(backend.settings.handoff_channels)}')
if not rows:
    st.info('No hand-offs match.')
    st.stop()
table = handoff_table(rows, tz)
st.dataframe(table, hide_index=True, width='stretch',
             column_config={c: st.column_config.Column(width=w)
                            for c, w in fit_widths(table, ['visitor', 'lead', 'reason', 'status', 'session']).items()})
if q.page > pages: st.session_state.pop('h_page', None)
if pages > 1: st.pagination(pages, default=min(q.page, pages), key='h_page')

st.subheader('Replay')
labels = {r.outbox_id: f'#{r.outbox_id} · {r.handoff_reason} · {r.status} · {r.session_id[:8]}…' for r in rows}
oid = st.selectbox('Hand-off', list(labels), format_func=labels.get, key='h_pick')
if st.session_state.get('h_confirm') not in (None, oid): st.session_state.pop('h_confirm')

try: pv = backend.run(replay_preview(backend.pool, backend.settings, oid))
except LookupError as e:
    st.error(str(e)); st.stop()
st.markdown('Dry run: what a re-delivery would send. **Nothing has been sent.**')
t_slack, t_crm, t_mail = st.tabs(['Slack', 'CRM payload', 'Fallback email'])
with t_slack:
    with st.container(border=True):
        st.text(pv.card.header)
        st.dataframe([{'': k, 'value': v} for k, v in pv.card.fields], hide_index=True)
        st.text(pv.card.summary)
        st.text(pv.card.qualification)
    st.json(pv.slack_blocks, expanded=False)
with t_crm: st.json(pv.crm_payload, expanded=2)
with t_mail: st.code(pv.email_text, language=None, wrap_lines=True)     # decoded, as the recipient reads it

if st.session_state.get('h_confirm') != oid:
    if st.button(f'Re-deliver #{oid}…', key='h_redeliver'):
        st.session_state['h_confirm'] = oid
        st.rerun()
else:
    st.warning(f'Re-deliver hand-off #{oid} to {", ".join(backend.settings.handoff_channels)}? This sends it again '
               '(the CRM lead is updated, never duplicated).')
    b1, b2 = st.columns(2)
    if b1.button('Yes, re-deliver', type='primary', key='h_yes'):
        st.session_state.pop('h_confirm')
        res = backend.run(redeliver(backend.pool, backend.settings, oid, staff=staff.username))
        st.session_state['h_result'] = res
        st.rerun()
    if b2.button('Cancel', key='h_no'):
        st.session_state.pop('h_confirm')
        st.rerun()
