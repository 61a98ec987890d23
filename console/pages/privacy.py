"Privacy requests (admins only): what is held about an email, its export (JSON), its erasure behind a typed confirmation."
from datetime import datetime

import streamlit as st

from leadchat.console import (MAX_EMAIL_CHARS, ConsoleInputError, counts_table, privacy_erase, privacy_export,
                              privacy_lookup, require_admin)
from leadchat.privacy import DataKeyError

staff, backend = require_admin('Privacy requests')
st.title('Privacy requests')
st.markdown('Answer a person who asks what we hold about them, for a copy of it, or for its erasure. Look the email up '
            'first: the page shows what is held, table by table, and changes nothing. Every lookup, export and erasure '
            f'is recorded under your name ({staff.username}) with a keyed hash of the email, never the email itself.')

if st.session_state.pop('p_clear', False):          # after an erasure the address leaves the form too
    st.session_state['p_email'] = ''
with st.form('p_lookup_form'):
    typed = st.text_input('Email address of the person who asked', max_chars=MAX_EMAIL_CHARS, key='p_email',
                          autocomplete='off', placeholder='name@example.com')
    looked_up = st.form_submit_button('Look up what is held', type='primary')


def failed(e: Exception, what: str) -> None:
    if isinstance(e, DataKeyError): st.error(f'{what}: the data key does not open the stored data. {e}')
    else: st.error(f'{what}: {e}')
    st.stop()


if looked_up:
    for k in ('p_lookup', 'p_export', 'p_erase_once', 'p_done'): st.session_state.pop(k, None)
    try: st.session_state['p_lookup'] = backend.conn(privacy_lookup, backend.keyring, backend.settings, typed,
                                                     staff=staff.username)
    except (ConsoleInputError, DataKeyError) as e: failed(e, 'Not looked up')
    st.session_state['p_erase_once'] = st.session_state['p_lookup'].identity_hash

if (done := st.session_state.pop('p_done', None)) is not None:
    if done:
        erased = ', '.join(f"{r['table']} {r['rows']}" for r in counts_table(done))
        st.success(f'Erased: {erased}. Nothing about this person is held any more; the request log keeps only the keyed '
                   'hash, the time and your name.')
    else: st.info('Nothing was left to erase: this email was already erased (by an earlier request). Nothing was changed.')

lk = st.session_state.get('p_lookup')
if lk is None: st.stop()
if not lk.found:
    st.info('Nothing is held about this email: no sessions, transcript, leads, bookings, consents or visitor records. '
            'The lookup is recorded (hashed).')
    st.stop()

held = counts_table(lk.counts)
st.subheader('What is held')
st.markdown(f'Dry run, nothing changed: **{sum(lk.held.values())} rows in {len(held)} tables**, '
            f'{lk.held.get("sessions", 0)} session{"s" * (lk.held.get("sessions", 0) != 1)}.')
st.dataframe(held, hide_index=True)

st.subheader('Export')
if st.button('Prepare the export (JSON)', key='p_export_btn'):
    try: st.session_state['p_export'] = (lk.identity_hash, *backend.conn(privacy_export, backend.keyring, backend.settings,
                                                                         lk.email, staff=staff.username))
    except (ConsoleInputError, DataKeyError) as e: failed(e, 'Not exported')
if (exp := st.session_state.get('p_export')) is not None and exp[0] == lk.identity_hash:
    _, data, n = exp
    st.markdown(f'The export holds {n.sessions} session(s), {n.transcript} transcript line(s) and {n.bookings} booking(s) '
                '— the same document as `leadchat privacy export`. Send it to the person over a secure channel.')
    st.download_button('Download the export', data, file_name=f'leadchat-export-{datetime.now():%Y%m%d}-{lk.identity_hash[:8]}.json',
                       mime='application/json', key='p_download', on_click='ignore', type='primary')

st.subheader('Erase')
st.warning('Erasure deletes this person\'s sessions, transcript, qualification, consents, leads and hand-off records, '
           'anonymises their bookings (the slots stay taken) and removes them from the conversation checkpoints. '
           'It cannot be undone. Export first if they asked for a copy.')
with st.form('p_erase_form', clear_on_submit=True):
    confirm = st.text_input('Type the email address again to confirm', max_chars=MAX_EMAIL_CHARS, key='p_confirm',
                            autocomplete='off')
    erase = st.form_submit_button('Erase everything held about this person')
if erase:
    if st.session_state.pop('p_erase_once', None) != lk.identity_hash:     # a second submit of the same form
        st.info('This erasure was already submitted. Look the email up again to see what is held now.')
        st.stop()
    try: counts = backend.conn(privacy_erase, backend.keyring, backend.settings, lk, confirm, staff=staff.username)
    except (ConsoleInputError, DataKeyError) as e:
        st.session_state['p_erase_once'] = lk.identity_hash                # nothing happened: it may be tried again
        failed(e, 'Not erased')
    for k in ('p_lookup', 'p_export'): st.session_state.pop(k, None)
    st.session_state['p_done'] = {k: v for k, v in counts.items() if v}
    st.session_state['p_clear'] = True
    st.rerun()
