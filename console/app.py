"""leadchat ops console: `streamlit run console/app.py` (`make run` starts it beside the API).

Settings come from the same env file as the service (`LEADCHAT_ENV_FILE`, e.g. demo.env). A visitor
without a staff session is given only the sign-in page; every page also checks on its own first line.

This file is read twice. `streamlit run` imports it once to build the server: an `st.App` with the two
routes that set and clear the staff session cookie (see `leadchat.console.console_routes`). Then each
browser session runs it as its script (`__name__ == '__main__'`), which draws the pages.
`streamlit run console/app.py -- -v` (or LEADCHAT_CONSOLE_VERBOSE=1) keeps the info lines on the terminal.
"""
import streamlit as st

from leadchat.console import authenticated, console_routes, quiet_terminal, sign_in_page

PAGES = {   # section: [(script, title, url path)]
    'Leads': [('pages/sessions.py', 'Sessions', 'sessions'), ('pages/session.py', 'Session detail', 'session'),
              ('pages/handoffs.py', 'Hand-offs', 'handoffs')],
    'Tuning': [('pages/rag.py', 'RAG tuning', 'rag'), ('pages/shadow.py', 'Shadow routing', 'shadow')],
    'Analytics': [('pages/funnel.py', 'Funnel', 'funnel'), ('pages/experiments.py', 'Experiments', 'experiments')],
}
ADMIN_PAGES = {'Admin': [('pages/privacy.py', 'Privacy requests', 'privacy'), ('pages/flags.py', 'Feature flags', 'flags')]}     # admins see them; others are refused


def main() -> None:
    st.set_page_config(layout='wide')     # no icons: Material ones are fetched from Google as favicons
    staff = authenticated()
    if staff is None:
        # every page's address answers with the sign-in form, so a deep link survives it (the sign-in returns there)
        page = st.navigation([st.Page(sign_in_page, title='Sign in', url_path='sign-in', default=True)] +
                             [st.Page(sign_in_page, title='Sign in', url_path=url)
                              for pages in (*PAGES.values(), *ADMIN_PAGES.values()) for _, _, url in pages], position='hidden')
    else:
        nav = {section: [st.Page(script, title=title, url_path=url, default=url == 'sessions')
                         for script, title, url in pages] for section, pages in PAGES.items()}
        for section, pages in ADMIN_PAGES.items():
            admin = [st.Page(script, title=title, url_path=url, visibility='visible' if staff.is_admin else 'hidden')
                     for script, title, url in pages]
            # not in an agent's menu; its address still opens the page, which says it is for admins (require_admin)
            if staff.is_admin: nav[section] = admin
            else: nav['Leads'] += admin
        page = st.navigation(nav)
    st.set_page_config(page_title=f'{page.title} · leadchat console')
    page.run()


if __name__ == '__main__':
    main()
else:
    from streamlit.runtime.pages_manager import PagesManager
    # pages/ holds the pages st.navigation lists, not Streamlit's older automatic pages: without this, a deep link
    # as the first request after start-up runs pages/<page>.py on its own, never this script
    PagesManager.uses_pages_directory = False
    quiet_terminal()
    app = st.App(__file__, routes=console_routes())
