"""Feature flags and kill switches (admins only): what each flag serves, a change (kill, unkill, ramp, value) with its
audit trail, and a clear conflict when someone else changed the flag first."""
import streamlit as st

from leadchat.console import local, printable, require_admin
from leadchat.flags import FlagError, flag_history, kill, list_flags, parse_value, set_ramp, set_value, unkill

staff, backend = require_admin('Feature flags')
by = f'console:{staff.username}'
st.title('Feature flags')
st.markdown('Every API process re-reads the flags within a second or two of a change. A **kill** serves the flag\'s '
            'default (off) to every session; a **ramp** serves it to that share of sessions (the same sessions as it '
            f'grows). Each change is recorded under your name ({staff.username}).')

flags = backend.conn(list_flags)
st.dataframe([{'flag': f.name, 'kind': f.kind, 'serves': 'KILLED' if f.killed else f'{f.ramp:g}%',
               'value': str(f.value if f.kind == 'boolean' else f.default_value), 'version': f.version,
               'changed by': printable(f.updated_by), 'changed at': local(f.updated_at, backend.settings.team_tz),
               'what it is': printable(f.description)} for f in flags], hide_index=True)

by_name = {f.name: f for f in flags}
# the versions this page showed last time it was drawn: a change someone else made since is a conflict, not overwritten
seen = st.session_state.get('f_seen', {})
st.session_state['f_seen'] = {f.name: f.version for f in flags}
st.subheader('Change a flag')
name = st.selectbox('Flag', list(by_name), key='f_name')
with st.form('f_change'):
    action = st.radio('Change', ['kill', 'unkill', 'ramp', 'set value'], horizontal=True, key='f_action')
    amount = st.text_input('Ramp (0–100 %) or value (true/false, or a variation)', key='f_amount', max_chars=200)
    go = st.form_submit_button('Apply', type='primary')
if go and name in by_name:
    try:
        version = seen.get(name, by_name[name].version)
        if action == 'kill': f = backend.conn(kill, name, by=by, version=version)
        elif action == 'unkill': f = backend.conn(unkill, name, by=by, version=version)
        elif action == 'ramp':
            try: pct = float(amount)
            except ValueError: raise FlagError(f'a ramp is a number from 0 to 100, not {printable(amount)[:40]!r}') from None
            f = backend.conn(set_ramp, name, pct, by=by, version=version)
        else: f = backend.conn(set_value, name, parse_value(amount), by=by, version=version)
    except FlagError as e: st.error(f'Not changed: {e}')
    else:
        st.session_state['f_seen'] = {**st.session_state['f_seen'], f.name: f.version}
        st.success(f'{f.name}: {action} applied (now version {f.version}).')

st.subheader('History')
rows = backend.conn(flag_history, limit=50)
st.dataframe([{'at': local(r['at'], backend.settings.team_tz), 'by': printable(r['by']), 'flag': r['flag'], 'change': r['action'],
               'before': 'KILLED' if r['old'] and r['old'].get('killed') else (f"{r['old']['ramp']:g}%" if r['old'] else '—'),
               'after': 'KILLED' if r['new'].get('killed') else f"{r['new']['ramp']:g}%"} for r in rows] or
             [{'at': '', 'by': '', 'flag': 'no changes yet', 'change': '', 'before': '', 'after': ''}], hide_index=True)
