"Funnel and analytics: the funnel by day, lead-level distribution, failure events over time."
from datetime import datetime

import streamlit as st

from leadchat.console import (STAGE_LABELS, ConsoleInputError, DateRange, failure_events, failures_figure,
                              funnel_by_day, funnel_days_figure, funnel_figure, funnel_totals, lead_level_distribution,
                              lead_level_figure, require_staff)

staff, backend = require_staff()
tz = backend.settings.team_tz
st.title('Funnel')
today = datetime.now(tz).date()
default = DateRange.default(today)         # the same window as Sessions
days = st.date_input('Sessions started between', value=(default.start, default.end), key='f_days')
days = tuple(days) if isinstance(days, (tuple, list)) else (days,)
try: rng = DateRange(days[0], days[-1]) if days else default
except ConsoleInputError as e:
    st.error(str(e)); st.stop()


async def load(conn):
    return (await funnel_by_day(conn, rng, tz), await lead_level_distribution(conn, rng, tz),
            await failure_events(conn, rng, tz))


per_day, levels, failures = backend.conn(load)
totals = funnel_totals(per_day)
st.markdown(f'{rng.start} – {rng.end} ({tz.key}). A session counts on the day it started, in the furthest stage it '
            'reached and in every stage before it.')
cols = st.columns(6)
for col, stage in zip(cols, ['sessions', 'engaged', 'qualified', 'handoff_proposed', 'contact_captured', 'delivered']):
    col.metric(STAGE_LABELS[stage], totals[stage])
if totals['sessions']:
    left, right = st.columns(2)
    left.plotly_chart(funnel_figure(totals), key='f_funnel')
    right.plotly_chart(lead_level_figure(levels), key='f_levels')
    st.plotly_chart(funnel_days_figure(per_day), key='f_days_chart')
else: st.info('No sessions started in this range: nothing to chart. Pick a wider range.')
st.subheader('Failure events')
if failures: st.plotly_chart(failures_figure(failures, rng), key='f_failures')
else: st.info('No failure events in this range.')
