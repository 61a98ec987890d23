"Sessions: filter the sessions index, open one."
from datetime import datetime

import streamlit as st

from leadchat.console import (HANDOFF_REASONS, LEAD_LEVELS, STAGES, ConsoleInputError, DateRange, SessionQuery, fit_widths,
                              require_staff, session_page, session_table)

staff, backend = require_staff()
tz = backend.settings.team_tz
today = datetime.now(tz).date()
st.title('Sessions')

c = st.columns([2, 1, 1, 1, 2])
window = DateRange.default(today)          # the Funnel page opens on the same window
days = c[0].date_input('Active between', value=(window.start, window.end), key='s_days')
level = c[1].selectbox('Lead level', ['any', *LEAD_LEVELS], key='s_level')
reason = c[2].selectbox('Hand-off reason', ['any', *HANDOFF_REASONS], key='s_reason')
stage = c[3].selectbox('Stage', ['any', *STAGES], key='s_stage')
search = c[4].text_input('Search a whole email, or a company', max_chars=200, key='s_search')

days = tuple(days) if isinstance(days, (tuple, list)) else (days,)
inputs = dict(active_from=days[0] if days else None, active_to=days[-1] if days else None,
              lead_level=None if level == 'any' else level, handoff_reason=None if reason == 'any' else reason,
              stage=None if stage == 'any' else stage, search=search)
if st.session_state.get('s_filters') != inputs:       # a new filter starts at page 1
    st.session_state['s_filters'] = inputs
    st.session_state.pop('s_page', None)
try:
    q = SessionQuery.make(**inputs, page=st.session_state.get('s_page', 1))
except ConsoleInputError as e:
    st.error(f'Filter not applied: {e}')
    st.stop()

p = backend.conn(session_page, q, tz, keyring=backend.keyring)
if p.page != q.page: st.session_state.pop('s_page', None)     # past the end: the last page
st.markdown(f'{p.total} session{"s" * (p.total != 1)} · page {p.page} of {p.pages} · times in {tz.key}')
if not p.rows:
    st.info('No sessions match these filters.')
    st.stop()
rows = session_table(p.rows, tz)
widths = fit_widths(rows, ['email', 'lead', 'hand-off', 'company', 'role', 'session'])
st.dataframe(rows, hide_index=True, width='stretch',
             column_config={**{c: st.column_config.Column(width=w) for c, w in widths.items()},
                            'delivered': st.column_config.CheckboxColumn('delivered')})
st.pagination(p.pages, default=p.page, key='s_page')

labels = {r.session_id: f'{r.visitor_email or r.visitor_company or "anonymous"} · {r.lead_level} · {r.session_id[:8]}…'
          for r in p.rows}
c1, c2 = st.columns([4, 1], vertical_alignment='bottom')
sid = c1.selectbox('Open a session', list(labels), format_func=labels.get, key='s_open')
if c2.button('Open', type='primary', key='s_open_btn'):
    st.session_state['detail_session'] = sid
    st.switch_page('pages/session.py', query_params={'session': sid})
