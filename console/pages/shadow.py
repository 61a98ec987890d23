"""Shadow routing (all staff; it changes nothing): the candidate routing policy running beside the live one, how often
it would have routed a turn differently, by (live → shadow) route, and the turns where it did, each linked to its
session."""
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

import streamlit as st

from leadchat.console import local, printable, require_staff
from leadchat.results import wilson_interval
from leadchat.shadow import disagreement, disagreement_examples, pairs_figure, shadow_experiments

staff, backend = require_staff()
tz = backend.settings.team_tz
st.title('Shadow routing')
st.markdown('A candidate routing policy is evaluated on every turn beside the live one and only recorded: visitors see '
            'the live route. A shadow policy is an experiment of kind *shadow* (`leadchat experiments`, or '
            '`leadchat.experiments` from a notebook). The candidate decides from the live session\'s state, so after the '
            'live policy proposed, its once-per-session rules follow the live history: a candidate that would propose '
            'earlier disagrees on every turn until the live policy proposes too — the sessions count says how many '
            'conversations it would have changed.')

experiments = backend.conn(shadow_experiments)
if not experiments:
    st.info('No shadow policy has been set up yet: nothing to compare.')
    st.stop()
names = [e['name'] for e in experiments]
by_name = {e['name']: e for e in experiments}
name = st.selectbox('Shadow policy', names, key='sh_name',
                    format_func=lambda n: f"{n} · {by_name[n]['status']}")
e = by_name[name]
if e['status'] not in ('running', 'halted'):
    st.warning(f"{name} is {e['status']}: it is not evaluated on new turns; what it recorded while it ran is below.")

live = backend.settings.stall_turn_threshold
policy = e['policy'] if isinstance(e['policy'], dict) else {}
st.dataframe([{'rule': 'hot-lead rule', 'candidate': printable(str(policy.get('hot_lead_rule', 'all_three (as live)'))),
               'live': 'all_three'},
              {'rule': 'stall threshold (turns)', 'candidate': printable(str(policy.get('stall_threshold', f'{live} (as live)'))),
               'live': f'{live} (STALL_TURN_THRESHOLD; an A/B arm may serve another)'}], hide_index=True)
st.caption(f"Status {e['status']} · started {local(e['started_at'], tz) or '—'}"
           + (f" · stopped {local(e['stopped_at'], tz)}" if e['stopped_at'] else '')
           + f" · last changed by {printable(e['updated_by'])} at {local(e['updated_at'], tz)}"
           + (f" · {printable(e['description'])}" if e['description'] else ''))

windows = ['since it started', 'last 24 hours', 'last 7 days', 'every recorded turn']
window = st.radio('Turns', windows, horizontal=True, key='sh_window', index=0 if e['started_at'] else 3)
now = datetime.now(timezone.utc)
since = {'since it started': e['started_at'], 'last 24 hours': now - timedelta(days=1),
         'last 7 days': now - timedelta(days=7)}.get(window)
d = backend.conn(disagreement, name, since=since)
if not d['turns']:
    st.info('No turns evaluated yet' + (' in this window.' if since else '.') +
            (' Turns are recorded while the policy is running.' if e['status'] != 'running' else ''))
    st.stop()

m = st.columns(4)
m[0].metric('Turns evaluated', d['turns'])
m[1].metric('Disagreements', d['disagreements'])
lo, hi = wilson_interval(d['disagreements'], d['turns'])
m[2].metric('Disagreement rate', f"{d['rate']:.1%}", help=f'95 % interval {lo:.1%} – {hi:.1%} (Wilson)')
m[3].metric('Sessions with a disagreement', f"{d['sessions_disagreeing']} of {d['sessions']}")
st.caption(f"95 % interval of the rate: {lo:.1%} – {hi:.1%} · turns from {local(d['first'], tz)} to {local(d['last'], tz)} ({tz.key})")

if d['disagreements']:
    st.plotly_chart(pairs_figure(d), key='sh_pairs')
else:
    st.success('The candidate agreed with the live policy on every turn in this window.')
st.dataframe([{'live': printable(p['live']), 'shadow': printable(p['shadow']), 'turns': p['turns'], 'sessions': p['sessions'],
               'agree': p['agree']} for p in d['pairs']], hide_index=True,
             column_config={'agree': st.column_config.CheckboxColumn('agree')})

st.subheader('Where they differ')
st.markdown('The first turn of each session on which the candidate would have routed differently, newest first. '
            'Open a session to read the conversation.')
examples = backend.conn(disagreement_examples, name, 20, since=since)
st.dataframe([{'at': local(x['at'], tz, '%Y-%m-%d %H:%M:%S'), 'turn': x['turn_index'], 'live': printable(x['live']),
               'shadow': printable(x['shadow']), 'why (live routing)': printable(x['why']),
               'session': printable(x['session_id']), 'open': 'session?session=' + quote(x['session_id'] or '', safe='')}
              for x in examples], hide_index=True, width='stretch',
             column_config={'open': st.column_config.LinkColumn('open', display_text='session detail')})
