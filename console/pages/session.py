"Session detail: transcript, qualification timeline, flags, events, the context packet as the rep sees it."
import json

import streamlit as st

from leadchat.console import (follow_through_tables, history_table, load_session, local, printable, qualification_timeline,
                              rep_views, require_staff, routing_table, session_flags, timeline_figure, timeline_table,
                              valid_session_id)

staff, backend = require_staff()
tz = backend.settings.team_tz
st.title('Session detail')

if 'd_sid' not in st.session_state:        # first run of the page: the deep link, or the session opened on Sessions
    wanted = st.query_params.get('session') or st.session_state.get('detail_session') or ''
    st.session_state['d_sid'] = wanted if valid_session_id(wanted) else ''
sid = st.text_input('Session id', max_chars=128, key='d_sid').strip()
if not sid:
    st.info('Open a session from the Sessions page, or paste its id.')
    st.stop()
d = backend.run(load_session(backend.pool, backend.graph, sid, keyring=backend.keyring))
if d is None:
    st.warning('There is no session with this id.')
    st.stop()
st.query_params['session'] = sid

r = d.row
m = st.columns(5)
m[0].metric('Lead level', r.lead_level)
m[1].metric('Stage', r.current_stage)
m[2].metric('Visitor turns', r.turn_count)
m[3].metric('Hand-off', r.handoff_reason or '—')
m[4].metric('Delivered', 'yes' if r.handoff_triggered else 'no')
st.dataframe([{'email': printable(r.visitor_email), 'name': printable(r.visitor_name),
               'company': printable(r.visitor_company), 'role': printable(r.visitor_role),
               'started': local(r.created_at, tz), 'last active': local(r.last_updated_at, tz), 'session': r.session_id}],
             hide_index=True, width='stretch')

if d.history:             # a returning visitor: their other sessions, linked by an email or the widget's consented id
    earlier = sum(h.earlier for h in d.history)
    later = len(d.history) - earlier
    st.subheader(('Returning visitor: ' if earlier else 'This visitor came back: ') + ', '.join(
        f'{n} {when} session{"s" * (n != 1)}' for n, when in ((earlier, 'earlier'), (later, 'later')) if n))
    st.dataframe(history_table(d.history, tz), hide_index=True, width='stretch',
                 column_config={'delivered': st.column_config.CheckboxColumn('delivered')})
    labels = {h.session_id: f'{local(h.started, tz)} · {h.lead_level} · {h.session_id[:8]}…' for h in d.history}

    def open_other():
        st.session_state['d_sid'] = st.session_state['d_history_pick']

    c1, c2 = st.columns([4, 1], vertical_alignment='bottom')
    c1.selectbox('Open another session of this visitor', list(labels), format_func=labels.get, key='d_history_pick')
    c2.button('Open that session', key='d_history_open', on_click=open_other)

t_chat, t_timeline, t_flags, t_follow, t_packet = st.tabs(['Transcript', 'Qualification timeline', 'Flags & events',
                                                          'Follow-through', 'Context packet'])

with t_chat:
    if not d.transcript: st.info('No transcript for this session.')
    for msg in d.transcript:             # visitor text is shown as plain text, never Markdown/HTML
        with st.chat_message(msg.role):
            st.markdown(f'turn {msg.turn_index} · {local(msg.at, tz, "%Y-%m-%d %H:%M:%S")}')
            st.text(msg.content)

with t_timeline:
    rows = qualification_timeline(d.transcript, d.events, d.signals)
    if d.state is None:
        st.info('The checkpoint of this session is gone (expired or purged); levels are replayed from the '
                   'signal log of its latest hand-off, if any.')
    if rows:
        st.plotly_chart(timeline_figure(rows), key='d_timeline_chart')
        st.dataframe(timeline_table(rows), hide_index=True, width='stretch')
        st.subheader('Routing decisions')
        routes = routing_table(rows)
        if routes: st.dataframe(routes, hide_index=True, width='stretch')
        else: st.info('No routing decisions recorded for this session (recorded from this release on).')
    else: st.info('No turns yet.')

with t_flags:
    st.dataframe([{'flag': k, 'value': str(v)} for k, v in session_flags(d).items()], hide_index=True)
    st.subheader('Analytics events')
    st.dataframe([{'at': local(e.created_at, tz, '%Y-%m-%d %H:%M:%S'), 'turn': e.turn_index, 'event': e.event_type,
                   'payload': json.dumps(e.payload, ensure_ascii=False)} for e in d.events], hide_index=True, width='stretch')
    if d.leads:
        st.subheader('CRM leads')
        st.dataframe([{'lead id': l.id, 'reasons': ', '.join(l.reasons) or l.handoff_reason, 'level': l.lead_level,
                       'email': printable(l.email), 'phone': printable(l.phone),
                       'task due': local(l.task_due_at, tz), 'created': local(l.created_at, tz)} for l in d.leads],
                     hide_index=True)

with t_follow:
    ft = follow_through_tables(d, tz)
    st.subheader('Consent')
    if ft['consent']: st.dataframe(ft['consent'], hide_index=True, width='stretch')
    else: st.info('No consent recorded for this session (the widget sends the notice acknowledgement with the first message).')
    st.subheader('Contact details given')
    if ft['contacts']: st.dataframe(ft['contacts'], hide_index=True, width='stretch')
    else: st.info('The visitor gave no contact details.')
    st.subheader('Deliveries (every promise and what went out)')
    if ft['deliveries']: st.dataframe(ft['deliveries'], hide_index=True, width='stretch')
    else: st.info('Nothing was sent for this session.')

with t_packet:
    views = rep_views(d)
    if not views: st.info('No hand-off for this session yet: no context packet was sent.')
    for v in views:
        st.subheader(f"{'Update' if v.kind == 'update' else 'Hand-off'} #{v.outbox_id} · {v.handoff_reason} · {v.status}")
        left, right = st.columns(2)
        with left:
            st.markdown('**Slack #new-leads**, as the rep sees it')
            with st.container(border=True):
                st.text(v.card.header)
                st.dataframe([{'': k, 'value': val} for k, val in v.card.fields], hide_index=True)
                st.text(v.card.summary)
                st.text(v.card.qualification)
            st.markdown('**Fallback email body**')
            st.code(v.email_text, language=None, wrap_lines=True)
        with right:
            st.markdown('**Context packet** (JSON)')
            st.json(v.packet_json, expanded=1)
            st.markdown('**CRM payload**')
            st.json(v.crm, expanded=False)
