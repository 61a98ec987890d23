"""leadchat ops console: `streamlit run console/app.py` (`make run` starts it beside the API).

Settings come from the same env file as the service (`LEADCHAT_ENV_FILE`, e.g. demo.env). A visitor
without a staff session is given only the sign-in page; every page also checks on its own first line.
"""
import streamlit as st

from leadchat.console import authenticated, sign_in_page

st.set_page_config(page_title='leadchat console', layout='wide')   # no icons: Material ones are fetched from Google as favicons

if authenticated() is None:
    page = st.navigation([st.Page(sign_in_page, title='Sign in', url_path='sign-in')], position='hidden')
else:
    page = st.navigation({
        'Leads': [st.Page('pages/sessions.py', title='Sessions', default=True),
                  st.Page('pages/session.py', title='Session detail'),
                  st.Page('pages/handoffs.py', title='Hand-offs')],
        'Tuning': [st.Page('pages/rag.py', title='RAG tuning')],
        'Analytics': [st.Page('pages/funnel.py', title='Funnel')],
    })
page.run()
