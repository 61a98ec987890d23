"""Experiments: every experiment and its status; for one A/B experiment, the sessions exposed per arm, the metrics per arm
with 95 % intervals and p-values against the control, conversion per arm over time with interval bands, the SRM warning,
its guardrails and any halt (who, why, when). Every staff member reads; starting, stopping and halting an arm is for
admins, audited as console:<username>, and a change someone else made first is a conflict, not an overwrite."""
import streamlit as st

from leadchat.console import local, printable, require_staff
from leadchat.experiments import (GUARDRAILS, METRICS, TARGETS, Experiment, ExperimentError, create_experiment,
                                  experiment_history, halt_arm, list_experiments, start, stop)
from leadchat.flags import list_flags
from leadchat.results import (METRIC_LABELS, conversion_figure, experiment_results, exposure_figure, guardrail_breaches,
                              metric_rows, summary_rows)

staff, backend = require_staff()
tz = backend.settings.team_tz
by = f'console:{staff.username}'
st.title('Experiments')
st.markdown('An A/B experiment splits sessions among the arms of a multivariate flag (the flag\'s default is the '
            '**control**). Each session is counted once, in the arm it was first given, with what happened from then on. '
            'Intervals are 95 % (Wilson); p-values compare each arm with the control (two-proportion z-test).')


@st.cache_data(ttl=30, max_entries=32, show_spinner='Reading the experiment…')
def load_results(_backend, name: str, version: int, tz_name: str):
    "The results, cached for 30 s per experiment version (every widget click reruns the page)."
    return _backend.conn(experiment_results, name, tz=tz_name)


def create_form() -> bool:
    "An admin's form for a new A/B experiment (a draft: started below, once checked); True when one was created."
    with st.expander('New A/B experiment', expanded=not exps):
        flags = [f.name for f in backend.conn(list_flags) if f.kind == 'multivariate']
        with st.form('x_create'):
            new = st.text_input('Name (lower-case letters, digits and _)', key='x_new_name', max_chars=63)
            target = st.selectbox('What it varies', list(TARGETS), key='x_new_target',
                                  format_func=lambda t: f'{t}: {TARGETS[t].description} ({TARGETS[t].allowed})')
            flag = st.selectbox('Flag (its variations are the arms, its default the control)', flags or ['—'], key='x_new_flag')
            about = st.text_input('What it tests', key='x_new_about', max_chars=500)
            make = st.form_submit_button('Create as a draft')
        if make:
            try: e = backend.conn(create_experiment, Experiment(new.strip(), target, flag, description=about), by=by)
            except ExperimentError as err: st.error(f'Not created: {err}')
            else:
                st.success(f'{e.name} created as a draft (guardrails: the defaults). Select it below to start it.')
                return True
    return False


exps = backend.conn(list_experiments)
if staff.is_admin and create_form(): exps = backend.conn(list_experiments)
if not exps:
    st.info('No experiments yet. ' + ('Create one above, or' if staff.is_admin else 'An admin creates one here or') +
            ' from the command line: `leadchat experiments create NAME --target TARGET --flag FLAG`, then '
            '`leadchat experiments start NAME`.')
    st.stop()
st.dataframe([{'experiment': e.name, 'kind': e.kind, 'target': e.target, 'flag': e.flag or '—', 'status': e.status.upper()
               if e.status == 'halted' else e.status, 'halted arm': e.halted_arm or '', 'started': local(e.started_at, tz),
               'stopped': local(e.stopped_at, tz), 'changed by': printable(e.updated_by),
               'what it is': printable(e.description)} for e in exps], hide_index=True, key='x_list')

by_name = {e.name: e for e in exps}
live = [e.name for e in exps if e.status in ('running', 'halted')]
names = list(by_name)
name = st.selectbox('Experiment', names, index=names.index(live[0]) if live else 0, key='x_name')
exp = by_name[name]
# the versions this page showed last time it was drawn: a change someone else made since is a conflict, not overwritten
seen = st.session_state.get('x_seen', {})
st.session_state['x_seen'] = {e.name: e.version for e in exps}

st.header(name)
st.caption(f'{exp.kind} · target {exp.target} · flag {exp.flag or "—"} · {exp.status} · version {exp.version}'
           + (f' · started {local(exp.started_at, tz)}' if exp.started_at else '')
           + (f' · stopped {local(exp.stopped_at, tz)}' if exp.stopped_at else ''))

if exp.status == 'halted':
    halt = next((r for r in backend.conn(experiment_history, name, limit=50) if r['action'] == 'halt'), None)
    who = f' by {printable(halt["by"])} at {local(halt["at"], tz)}' if halt else ''
    st.error(f'Arm **{printable(exp.halted_arm or "")}** was halted{who}: {printable(exp.halt_reason or "")}. '
             'Every session is served the control.')

if exp.kind == 'shadow':
    st.info('A shadow experiment serves nothing: it records which route a candidate policy would have taken. '
            'Its result is the disagreement rate, on the Shadow routing page.')
else:
    if st.button('Reload the numbers', key='x_reload'): load_results.clear()
    res = load_results(backend, name, exp.version, tz.key)
    if res.srm.mismatch: st.warning(res.srm.warning, icon=None)
    if not res.exposed:
        st.info('No sessions exposed yet: no results. Sessions enter when the experiment is running and its flag is '
                'ramped up (`leadchat flags ramp FLAG 100`).')
    else:
        cols = st.columns(len(res.arms))
        for col, a in zip(cols, res.arms):
            col.metric(f'{a.arm}{" (control)" if a.control else ""}', f'{a.n:,}',
                       help=f'sessions exposed; the flag\'s weight {a.weight:g}' if a.weight is not None else 'not one of the flag\'s arms')
        st.subheader('Metrics per arm')
        st.dataframe(summary_rows(res), hide_index=True, key='x_summary')
        with st.expander('Each metric: rate, interval, difference from the control (percentage points), p-value'):
            st.dataframe(metric_rows(res), hide_index=True, key='x_metrics')
        if not res.srm.mismatch: st.caption(f'Sample ratio: {res.srm.note}')
        default = (exp.guardrails or {}).get('metric', 'booked')
        metric = st.selectbox('Conversion over time', list(METRICS), index=list(METRICS).index(default),
                              format_func=METRIC_LABELS.get, key='x_metric')
        left, right = st.columns([2, 1])
        left.plotly_chart(conversion_figure(res, metric), key='x_over_time')
        right.plotly_chart(exposure_figure(res), key='x_exposure')

    st.subheader('Guardrails')
    g = {**GUARDRAILS, **(exp.guardrails or {})}
    st.dataframe([{'guardrail': 'metric', 'value': METRIC_LABELS.get(g['metric'], g['metric'])},
                  {'guardrail': 'max fallback rate', 'value': f'{100 * g["max_fallback_rate"]:g}% of turns'},
                  {'guardrail': 'max delivery failures', 'value': f'{100 * g["max_delivery_failure_rate"]:g}% of hand-offs'},
                  {'guardrail': 'max conversion drop', 'value': f'{100 * g["max_conversion_drop"]:g}% relative, one-sided p < {g["alpha"]:g}'},
                  {'guardrail': 'judged from', 'value': f'{g["min_sessions"]:,} sessions per arm'}], hide_index=True, key='x_guardrails')
    if exp.status == 'running' and res.exposed:
        breaches = guardrail_breaches(res)
        if breaches:
            st.warning('Over a guardrail now (the relay halts the worst arm within a minute): ' +
                       '; '.join(f'{printable(b.arm)}: {b.reason}' for b in breaches))
        else: st.caption('No arm is over its guardrails.')

st.subheader('Change')
if not staff.is_admin:
    st.info(f'Starting, stopping and halting experiments is for admins. You are signed in as {printable(staff.username)} '
            f'({staff.role}).')
else:
    arms = [a.arm for a in res.arms] if exp.kind == 'ab' else []
    with st.form('x_change'):
        action = st.radio('Change', ['start', 'stop', 'halt an arm'], horizontal=True, key='x_action')
        arm = st.selectbox('Arm to halt', arms or ['—'], key='x_arm')
        reason = st.text_input('Why (for a halt)', key='x_reason', max_chars=500)
        go = st.form_submit_button('Apply', type='primary')
    if go:
        version = seen.get(name, exp.version)
        try:
            if action == 'start': e = backend.conn(start, name, by=by, version=version)
            elif action == 'stop': e = backend.conn(stop, name, by=by, version=version)
            else:
                if not arms: raise ExperimentError(f'experiment {name} is a shadow experiment: it has no arm to halt')
                e = backend.conn(halt_arm, name, arm, reason=reason, by=by, version=version)
        except ExperimentError as err: st.error(f'Not changed: {err}')
        else:
            st.session_state['x_seen'] = {**st.session_state['x_seen'], e.name: e.version}
            st.success(f'{e.name}: {action} applied (now {e.status}, version {e.version}).')

st.subheader('History')
rows = backend.conn(experiment_history, name, limit=50)
st.dataframe([{'at': local(r['at'], tz), 'by': printable(r['by']), 'change': r['action'],
               'status': f"{(r['old'] or {}).get('status', '—')} → {r['new'].get('status')}",
               'halted arm': r['new'].get('halted_arm') or '', 'reason': printable(r['new'].get('halt_reason') or '')}
              for r in rows], hide_index=True, key='x_history')
