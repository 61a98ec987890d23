"RAG tuning: calibration run, score histogram, threshold slider with false positives/negatives, changelog, try a query."
import streamlit as st

from leadchat.calibrate import CalibrationError
from leadchat.console import (ConsoleInputError, calibration_paths, changelog_text, require_staff, run_calibration,
                              threshold_figure, threshold_view, try_query, write_changelog)

staff, backend = require_staff()
settings = backend.settings
queries, changelog = calibration_paths()
st.title('RAG threshold tuning')
st.markdown(f'Configured RAG_RELEVANCE_THRESHOLD = {settings.rag_relevance_threshold:.3f} · query set `{queries}` · '
           f'changelog `{changelog}`')

if st.button('Run the calibration query set', type='primary', key='r_run'):
    st.session_state.pop('r_run_result', None)
    with st.spinner('Scoring the labelled queries against the knowledge index…'):
        try: st.session_state['r_run_result'] = backend.run(run_calibration(backend.retriever, queries))
        except CalibrationError as e: st.error(f'Calibration failed: {e}')
run = st.session_state.get('r_run_result')
if run is not None:
    rec = run.recommended
    st.success(f'Recommended threshold: **{rec.threshold:.3f}** '
               f'({"clean gap" if rec.clean_gap else "distributions overlap"}: min relevant {rec.min_relevant:.3f}, '
               f'max out-of-scope {rec.max_irrelevant:.3f}; {rec.n_relevant} relevant, {rec.n_irrelevant} out-of-scope, '
               f'{rec.n_adjacent} adjacent queries; {run.documents} documents, {run.chunks} chunks)')
    thr = st.slider('Candidate threshold', 0.0, 1.0, value=float(settings.rag_relevance_threshold), step=0.001,
                    format='%.3f', key='r_threshold')
    v = threshold_view(run, thr)
    c = st.columns(4)
    c[0].metric('False positives', f'{len(v.false_positives)} ({v.calibration.false_positive_rate:.1%})')
    c[1].metric('False negatives', f'{len(v.false_negatives)} ({v.calibration.false_negative_rate:.1%})')
    c[2].metric('Adjacent answered from context', f'{len(v.calibration.adjacent_above)}/{v.calibration.n_adjacent}')
    c[3].metric('vs recommended', f'{v.threshold - rec.threshold:+.3f}')
    st.plotly_chart(threshold_figure(run, thr), key='r_hist')
    left, right = st.columns(2)
    left.markdown('**False positives**: out-of-scope questions that would be answered from unrelated text')
    left.dataframe(v.false_positives, hide_index=True, width='stretch')
    right.markdown('**False negatives**: in-scope questions that would get "I don\'t know"')
    right.dataframe(v.false_negatives, hide_index=True, width='stretch')
    entry = changelog_text(run, thr, staff=staff.username)
    with st.expander(f'Write {v.threshold:.3f} to {changelog}'):
        st.code(entry, language='markdown', wrap_lines=True)
        if st.button('Append to the changelog', key='r_write'):
            backend.run(write_changelog(backend.pool, changelog, entry, staff=staff.username, threshold=thr))
            st.success(f'Appended to {changelog}. Set RAG_RELEVANCE_THRESHOLD={v.threshold:.3f} in the env file and '
                       'restart the service to use it.')
else:
    st.info('Run the calibration query set to see the score distributions and move the threshold.')

st.subheader('Try a query')
query = st.text_input('A visitor question', max_chars=2000, key='r_query')
thr_now = st.session_state.get('r_threshold', float(settings.rag_relevance_threshold))
if query.strip():
    try: chunks = backend.run(try_query(backend.retriever, query, thr_now))
    except ConsoleInputError as e:
        st.error(str(e)); st.stop()
    passing = sum(ch.passes for ch in chunks)
    st.markdown(f'{passing} of {len(chunks)} chunks pass {thr_now:.3f}' +
               ('' if passing else ' — the assistant would say it has no answer'))
    st.dataframe([{'rank': ch.rank, 'score': ch.score, 'passes': ch.passes, 'source': ch.source,
                   'chunk': ch.chunk_index, 'text': ch.content} for ch in chunks], hide_index=True, width='stretch')
