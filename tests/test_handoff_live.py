"With the orchestrator in place: a hot-lead conversation posts the packet to the configured webhook and writes the lead."
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg

from apiserver import LiveServer
from conftest import fresh_db
from leadchat.api import create_app
from slack_receiver import SlackReceiver
from test_api import TOKEN, app_settings, turn
from test_scenarios import CLOCKS

ROOT = Path(__file__).resolve().parent.parent
LEADCHAT = Path(sys.executable).parent / 'leadchat'
HOT = "We're building a RAG assistant over our support tickets. I'm the CTO of a 300-person payments company."


def wait_for(cond, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond(): return True
        time.sleep(0.1)
    return False


def test_hot_lead_reaches_slack_and_the_crm_through_the_relay(pg):
    url = fresh_db(pg[1])
    with SlackReceiver() as slack:
        settings = app_settings(pg, url, handoff_channels='slack,crm', slack_webhook_url=slack.webhook_url,
                                handoff_retry_backoff_seconds='0.05,0.1',
                                leadchat_crm_record_url='https://console.calderwood.example/leads/{id}')
        app = create_app(settings, clock=lambda: CLOCKS['in_hours'], knowledge_path=str(ROOT / 'knowledge'),
                         relay_interval=0.1)
        with LiveServer(app) as srv, srv.client() as c:
            sid = str(uuid.uuid4())
            status, reply, done, err = turn(c, sid, HOT)
            assert status == 200 and done['handoff_reason'] == 'hot_lead'
            assert wait_for(lambda: slack.requests), 'the relay never posted to Slack'
            with psycopg.connect(url) as conn:
                assert wait_for(lambda: conn.execute("SELECT status FROM handoff_outbox WHERE session_id = %s",
                                                     [sid]).fetchone() == ('delivered',))
                lead = conn.execute('SELECT id, lead_level, payload FROM leads WHERE session_id = %s', [sid]).fetchall()
                assert len(lead) == 1 and lead[0][1] == 'hot' and lead[0][2]['lead']['handoff_reason'] == 'hot_lead'
                assert conn.execute('SELECT handoff_triggered FROM sessions WHERE session_id = %s', [sid]).fetchone()[0]
            blocks = slack.requests[0]['body']['blocks']
            assert blocks[0]['type'] == 'header' and blocks[0]['text']['text'].startswith('🔥')
            button = blocks[-1]['elements'][0]             # the CRM record exists, so the button is there
            assert button['url'] == f'https://console.calderwood.example/leads/{lead[0][0]}'
            # the next turn carries the relay's outcome into SessionState and does not undo it
            assert turn(c, sid, 'Which vector database did you use for the bank?')[0] == 200
            state = c.get(f'/api/sessions/{sid}', headers={'Authorization': f'Bearer {TOKEN}'}).json()['state']
            assert state['handoff_triggered'] is True and state['handoff_reason'] == 'hot_lead'
            with psycopg.connect(url) as conn:
                assert conn.execute('SELECT handoff_triggered FROM sessions WHERE session_id = %s', [sid]).fetchone()[0]
                outbox_id = conn.execute('SELECT id FROM handoff_outbox WHERE session_id = %s', [sid]).fetchone()[0]
        # the operator's replay: a dry run shows what would be sent; a real one never makes a second lead
        env = {**os.environ, 'RAG_RELEVANCE_THRESHOLD': '0.263', 'BUSINESS_HOURS_TIMEZONE': 'Europe/Madrid',
               'HANDOFF_CHANNELS': 'slack,crm', 'SLACK_WEBHOOK_URL': slack.webhook_url, 'DATABASE_URL': url,
               'HANDOFF_RETRY_BACKOFF_SECONDS': '0.05',
               'LEADCHAT_HOME': str(pg[0].leadchat_home)}      # the service's data key (PII is sealed at rest, 0017)
        dry = subprocess.run([str(LEADCHAT), 'handoff', 'replay', str(outbox_id), '--dry-run'], capture_output=True,
                             text=True, env=env, cwd=ROOT, timeout=120)
        assert dry.returncode == 0, dry.stderr[-2000:]
        shown = json.loads(dry.stdout)
        assert shown['slack_blocks'][0]['type'] == 'header' and shown['crm_payload']['lead']['session_id'] == sid
        posted = len(slack.requests)
        real = subprocess.run([str(LEADCHAT), 'handoff', 'replay', str(outbox_id)], capture_output=True, text=True,
                              env=env, cwd=ROOT, timeout=120)
        assert real.returncode == 0, real.stderr[-2000:]
        assert len(slack.requests) == posted + 1
        with psycopg.connect(url) as conn:
            assert conn.execute('SELECT count(*) FROM leads WHERE session_id = %s', [sid]).fetchone()[0] == 1
        missing = subprocess.run([str(LEADCHAT), 'handoff', 'replay', '999999', '--dry-run'], capture_output=True,
                                 text=True, env=env, cwd=ROOT, timeout=120)
        assert missing.returncode == 1 and 'no row 999999' in missing.stderr


def test_a_misconfigured_channel_stops_start_up(pg):
    import pytest
    from leadchat.config import ConfigurationError
    s = app_settings(pg, fresh_db(pg[1]))
    bad = s.model_copy(update={'handoff_channels': ['slack', 'crm'], 'slack_webhook_url': None})
    with pytest.raises(ConfigurationError, match='SLACK_WEBHOOK_URL'):
        create_app(bad)
