"Storage against a real embedded PostgreSQL: migrations, the checkpointer, faults, retention, TTL, outbox."
import asyncio
import subprocess
import sys
import textwrap
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.graph import END, START, StateGraph
from psycopg import sql
from structlog.testing import capture_logs
from typing_extensions import TypedDict

from leadchat.db import (DataKey, DatabaseError, Keyring, MigrationError, check_pgdata, create_checkpointer, create_pool,
                         ensure_knowledge_table, migrate, migration_files, migration_status, new_data_key, ping,
                         start_embedded)
from leadchat.repos import (HandoffRecord, SessionFilter, append_transcript, claim_handoffs, count_sessions,
                            emit_event, enqueue_handoff, expire_sessions, finish_handoff, get_session,
                            insert_handoff_record, list_events, list_handoff_records, list_sessions, purge_sessions,
                            leads_for_session, upsert_lead, upsert_session)
from leadchat.state import Message, SessionState

import conftest
from conftest import fresh_db

KR = Keyring(DataKey.parse(new_data_key()))      # the repositories seal the visitor's PII with it

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
async def pool(pg):
    p = await create_pool(pg[1], max_size=4)
    yield p
    await p.close()


def schema(url):
    with psycopg.connect(url) as c:
        return c.execute('''SELECT table_name, column_name, data_type FROM information_schema.columns
                            WHERE table_schema = 'public' ORDER BY 1, 2''').fetchall()


# --- migrations ------------------------------------------------------------------------------

async def test_migrate_twice_changes_nothing(pg):
    cfg, url = pg
    before = schema(url)
    assert await migrate(url, cfg) == []
    assert schema(url) == before
    assert [r['state'] for r in await migration_status(url)] == ['applied'] * len(migration_files())


async def test_concurrent_migrations_apply_each_file_once(pg):
    url = fresh_db(pg[1])
    results = await asyncio.gather(*(migrate(url, pg[0]) for _ in range(4)))
    assert sorted(len(r) for r in results) == [0, 0, 0, len(migration_files())]
    with psycopg.connect(url) as c:
        assert c.execute('SELECT count(*) FROM schema_migrations').fetchone()[0] == len(migration_files())


async def test_failing_migration_rolls_back_and_names_its_file(pg, tmp_path):
    url = fresh_db(pg[1])
    for m in migration_files(): (tmp_path / m.filename).write_text(m.sql)
    (tmp_path / '0999_broken.sql').write_text('CREATE TABLE half_done (id int);\nSELECT 1/0;\n')
    with pytest.raises(MigrationError, match='0999_broken.sql failed and was rolled back'):
        await migrate(url, folder=tmp_path)
    with psycopg.connect(url) as c:
        assert c.execute("SELECT to_regclass('half_done')").fetchone()[0] is None
        assert c.execute('SELECT max(version) FROM schema_migrations').fetchone()[0] == migration_files()[-1].version
    # an edited, already-applied migration is refused
    (tmp_path / '0999_broken.sql').unlink()
    first = migration_files()[0]
    (tmp_path / first.filename).write_text(first.sql + '\n-- edited\n')
    with pytest.raises(MigrationError, match='edited after it was applied'):
        await migrate(url, folder=tmp_path)
    assert 'edited' in [r['state'] for r in await migration_status(url, folder=tmp_path)]


async def test_0005_merges_the_leads_of_a_session_into_one(pg, tmp_path):
    "Upgrading a database that has one lead per session *and reason* keeps the oldest lead with every reason."
    url = fresh_db(pg[1])
    for m in migration_files():
        if m.version < 5: (tmp_path / m.filename).write_text(m.sql)
    await migrate(url, folder=tmp_path)
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("INSERT INTO sessions (session_id) VALUES ('old-1')")
        for reason in ('hot_lead', 'explicit_request'):
            c.execute("INSERT INTO leads (session_id, handoff_reason, lead_level, payload) VALUES ('old-1', %s, 'hot', '{}')", [reason])
        first = c.execute("SELECT min(id) FROM leads").fetchone()[0]
    await migrate(url)
    with psycopg.connect(url) as c:
        assert c.execute("SELECT id, reasons FROM leads WHERE session_id = 'old-1'").fetchall() == [(first, ['hot_lead', 'explicit_request'])]


def test_malformed_migration_names_are_refused(tmp_path):
    (tmp_path / '1_x.sql').write_text('SELECT 1')
    with pytest.raises(MigrationError, match='NNNN_lowercase_name'): migration_files(tmp_path)


async def test_knowledge_table_dimension_mismatch_is_a_clear_error(pg):
    async with await psycopg.AsyncConnection.connect(pg[1], autocommit=True, row_factory=psycopg.rows.dict_row) as c:
        await ensure_knowledge_table(c, 'knowledge_chunks_minilm_l6_v2', 384)      # exists: fine
        with pytest.raises(DatabaseError, match=r'stores vector\(384\).*1536-d'):
            await ensure_knowledge_table(c, 'knowledge_chunks_minilm_l6_v2', 1536)


# --- the embedded server ---------------------------------------------------------------------

def test_damaged_or_foreign_data_directories_are_refused(tmp_path):
    junk = tmp_path / 'junk'; junk.mkdir(); (junk / 'notes.txt').write_text('hello')
    with pytest.raises(DatabaseError, match='not a PostgreSQL data directory'): start_embedded(junk)
    old = tmp_path / 'old'; old.mkdir(); (old / 'PG_VERSION').write_text('9\n')
    with pytest.raises(DatabaseError, match='PostgreSQL 9 data but the embedded server is PostgreSQL 18'): check_pgdata(old)
    broken = tmp_path / 'broken'; broken.mkdir(); (broken / 'PG_VERSION').write_text('18\n')
    with pytest.raises(DatabaseError, match='damaged'): check_pgdata(broken)
    afile = tmp_path / 'afile'; afile.write_text('x')
    with pytest.raises(DatabaseError, match='not a directory'): check_pgdata(afile)


def test_two_processes_starting_the_embedded_server_at_once(tmp_path):
    code = textwrap.dedent(f'''
        import psycopg
        from leadchat.config import Settings
        from leadchat.db import database_url
        cfg = Settings(rag_relevance_threshold=0.4, business_hours_timezone='UTC', handoff_channels='crm',
                       leadchat_home={str(tmp_path)!r})
        with psycopg.connect(database_url(cfg)) as c: print('ok', c.execute('SELECT 40 + 2').fetchone()[0])
    ''')
    procs = [subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-800:] for o in outs]
    assert all(o[0].strip() == 'ok 42' for o in outs)


def test_a_dead_processes_handle_does_not_keep_the_embedded_server_running(tmp_path):
    "A process killed without clean-up leaves its pid in .handle_pids.json; the next user's exit still stops the server."
    import json, os, time
    code = textwrap.dedent(f'''
        from leadchat.config import Settings
        from leadchat.db import _embedded, database_url
        cfg = Settings(rag_relevance_threshold=0.4, business_hours_timezone='UTC', handoff_channels='crm',
                       leadchat_home={str(tmp_path)!r})
        database_url(cfg)
        print(next(iter(_embedded.values())).get_pid())
    ''')
    def use_once():
        r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-800:]
        return int(r.stdout.split()[-1])
    def stops(pid):
        for _ in range(150):                      # a generous wait for pg_ctl stop, not a timing assertion
            try: os.kill(pid, 0)
            except ProcessLookupError: return True
            time.sleep(0.2)
        return False
    assert stops(use_once())                      # the normal case: the last handle stops it
    dead = subprocess.Popen(['true'])
    dead.wait()
    (tmp_path / 'pgdata' / '.handle_pids.json').write_text(json.dumps([dead.pid]))   # left behind by a SIGKILLed process
    pid = use_once()
    stopped = stops(pid)
    if not stopped: os.kill(pid, 15)              # do not leave it behind
    assert stopped, 'the embedded server kept running after its last live user exited'


async def test_unreachable_database_is_a_clear_error_and_ping_is_false():
    with pytest.raises(DatabaseError, match=r'cannot connect to the database at postgresql://app:\*\*\*@127.0.0.1:9/'):
        await create_pool('postgresql://app:hunter2@127.0.0.1:9/leadchat', timeout=1)


async def test_ping_turns_false_when_the_server_goes_away(pg):
    p = await create_pool(pg[1], max_size=1)
    assert await ping(p)
    await p.close()
    assert not await ping(p)


# --- the checkpointer ------------------------------------------------------------------------

async def test_langgraph_conformance_suite_passes_for_leadchats_saver(pg):
    @checkpointer_test(name='LeadchatSaver')
    async def leadchat_saver():
        url = fresh_db(pg[1])
        await migrate(url)
        p = await create_pool(url, max_size=4)
        yield create_checkpointer(p)
        await p.close()

    report = await validate(leadchat_saver)
    report.print_report()
    assert report.passed_all(), report.results


class Turn(TypedDict):
    count: int


def counting_graph(saver):
    g = StateGraph(Turn)
    g.add_node('bump', lambda s: {'count': s.get('count', 0) + 1})
    g.add_edge(START, 'bump'); g.add_edge('bump', END)
    return g.compile(checkpointer=saver)


async def faulty_role_url(url: str, grants: str) -> str:
    "A login role with only `grants` on the checkpoint tables: real permission errors, not mocks."
    role = f'faulty_{uuid.uuid4().hex[:8]}'
    login = conftest.role_url(url, role)
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(sql.SQL('GRANT USAGE ON SCHEMA public TO {}').format(sql.Identifier(role)))
        c.execute(sql.SQL(grants).format(role=sql.Identifier(role)))
    return login


async def test_checkpointer_read_failure_starts_a_fresh_state(pg):
    url = pg[1]
    p = await create_pool(url)
    graph = counting_graph(create_checkpointer(p))
    cfg = {'configurable': {'thread_id': f'read-{uuid.uuid4()}'}}
    assert (await graph.ainvoke({}, cfg, durability='exit'))['count'] == 1
    assert (await graph.ainvoke({}, cfg, durability='exit'))['count'] == 2
    await p.close()
    # the same thread, read by a role that may not SELECT the checkpoints
    bad = await create_pool(await faulty_role_url(url, 'GRANT INSERT ON checkpoints, checkpoint_writes, checkpoint_blobs TO {role}'))
    with capture_logs() as logs:
        out = await counting_graph(create_checkpointer(bad)).ainvoke({}, cfg, durability='exit')
    await bad.close()
    assert out['count'] == 1                      # a fresh state, not an exception
    errors = [l for l in logs if l['event'] == 'checkpointer_read_failure']
    assert errors and errors[0]['log_level'] == 'error' and 'InsufficientPrivilege' in errors[0]['error']


async def test_checkpointer_write_failure_completes_the_turn_and_keeps_the_last_good_state(pg):
    url = pg[1]
    tid = f'write-{uuid.uuid4()}'
    cfg = {'configurable': {'thread_id': tid}}
    p = await create_pool(url)
    await counting_graph(create_checkpointer(p)).ainvoke({}, cfg, durability='exit')          # count = 1 persisted
    await p.close()
    bad = await create_pool(await faulty_role_url(url, 'GRANT SELECT ON checkpoints, checkpoint_writes, checkpoint_blobs TO {role}'))
    with capture_logs() as logs:
        out = await counting_graph(create_checkpointer(bad)).ainvoke({}, cfg, durability='exit')
    await bad.close()
    assert out['count'] == 2                      # the turn completed
    failure = next(l for l in logs if l['event'] == 'checkpointer_write_failure')
    assert failure['log_level'] == 'error' and failure['session_id'] == tid and failure['snapshot'] == {'count': 2}
    p = await create_pool(url)
    out = await counting_graph(create_checkpointer(p)).ainvoke({}, cfg, durability='exit')
    await p.close()
    assert out['count'] == 2                      # next turn loaded the last good state (1) and went on


# --- repositories ----------------------------------------------------------------------------

def session(sid, *, days_ago=0, hours_ago=0, **kw):
    t = NOW - timedelta(days=days_ago, hours=hours_ago)
    return SessionState(session_id=sid, created_at=t, last_updated_at=t,
                        messages=[Message(role='user', content='hello', turn_index=1, at=t)], **kw)


async def test_sessions_filters_search_and_pagination(pool):
    tag = uuid.uuid4().hex[:6]
    async with pool.connection() as c:
        for i in range(25):
            await upsert_session(c, session(f'{tag}-{i:02d}', hours_ago=i, lead_level='hot' if i % 5 == 0 else 'warm',
                                            visitor_company=f'Co_{tag}{i} 100%', current_stage=3 if i % 5 == 0 else 2), keyring=KR)
        f = SessionFilter(search=f'co_{tag}', since=NOW - timedelta(days=2), limit=10)
        assert await count_sessions(c, f, keyring=KR) == 25
        pages = [await list_sessions(c, f.model_copy(update={'offset': o}), keyring=KR) for o in (0, 10, 20)]
        ids = [s.session_id for pg_ in pages for s in pg_]
        assert len(ids) == 25 and len(set(ids)) == 25 and ids[0] == f'{tag}-00'     # most recent first
        assert await count_sessions(c, f.model_copy(update={'lead_level': 'hot', 'stage': 3}), keyring=KR) == 5
        # LIKE metacharacters in a search are literal
        assert await count_sessions(c, SessionFilter(search=f'{tag}1 100%'), keyring=KR) == 1
        assert await count_sessions(c, SessionFilter(search=f'{tag}_'), keyring=KR) == 0
        # upsert keeps created_at and updates the rest
        s = session(f'{tag}-00', lead_level='cold')
        await upsert_session(c, s, keyring=KR)
        row = await get_session(c, f'{tag}-00', keyring=KR)
        assert row.lead_level == 'cold' and row.created_at == NOW


def test_bad_filters_name_the_field():
    for kw, field in [({'limit': 0}, 'limit'), ({'limit': 10_000}, 'limit'), ({'lead_level': 'boiling'}, 'lead_level'),
                      ({'stage': 7}, 'stage'), ({'search': 'x' * 500}, 'search'), ({'sort': 'x'}, 'sort'),
                      ({'since': 'yesterday-ish'}, 'since')]:
        with pytest.raises(Exception, match=field): SessionFilter(**kw)


async def test_transcript_is_append_only_and_events_are_typed(pool):
    sid = f'tr-{uuid.uuid4()}'
    async with pool.connection() as c:
        await upsert_session(c, session(sid), keyring=KR)
        assert await append_transcript(c, sid, [Message(role='user', content="'; DROP TABLE leads; --", turn_index=1)], keyring=KR) == 1
        with pytest.raises(psycopg.errors.RaiseException, match='append-only'):
            await c.execute("UPDATE transcript SET content = 'rewritten' WHERE session_id = %s", [sid])
        with pytest.raises(ValueError, match='unknown analytics event type'):
            await emit_event(c, 'made_up', session_id=sid)
        await emit_event(c, 'turn_completed', session_id=sid, turn_index=1, payload={'lead_level': 'warm'})
        assert [e.event_type for e in await list_events(c, session_id=sid)] == ['turn_completed']


async def test_one_lead_per_session_reasons_accumulate(pool):
    sid = f'lead-{uuid.uuid4()}'
    async with pool.connection() as c:
        await upsert_session(c, session(sid), keyring=KR)
        payload = {'contact': {'email': 'ana@acme.io'}, 'lead': {'source': 'website-chat'}}
        ids = await asyncio.gather(*(upsert_lead(c, session_id=sid, handoff_reason='hot_lead', lead_level='hot',
                                                  payload=payload, keyring=KR) for _ in range(3)))
        assert len({i for i, _ in ids}) == 1 and sum(created for _, created in ids) == 1
        other, created = await upsert_lead(c, session_id=sid, handoff_reason='explicit_request', lead_level='hot', payload=payload, keyring=KR)
        assert not created and other == ids[0][0]                # a second reason is the same lead (issue 15)
        [lead] = await leads_for_session(c, sid, keyring=KR)
        assert lead.reasons == ['hot_lead', 'explicit_request'] and lead.handoff_reason == 'hot_lead'
        with pytest.raises(psycopg.errors.UniqueViolation):       # the schema itself refuses a second lead
            await c.execute("INSERT INTO leads (session_id, handoff_reason, lead_level, payload) VALUES (%s, 'stall', 'hot', '{}')", [sid])
        with pytest.raises(psycopg.errors.RestrictViolation):
            await c.execute('DELETE FROM sessions WHERE session_id = %s', [sid])


async def test_outbox_claims_never_overlap_and_leases_expire(pg):
    tag = uuid.uuid4().hex[:6]
    p = await create_pool(pg[1], max_size=6)
    async with p.connection() as c:
        for i in range(40):
            assert await enqueue_handoff(c, session_id=f'{tag}-{i}', handoff_reason='hot_lead', request={'i': i}, keyring=KR)
        assert await enqueue_handoff(c, session_id=f'{tag}-0', handoff_reason='hot_lead', request={}, keyring=KR) is None  # once

    async def relay(name):
        got = []
        while True:
            async with p.connection() as c:
                items = [i for i in await claim_handoffs(c, worker=name, limit=3, keyring=KR) if i.session_id.startswith(tag)]
                if not items: return got
                got += [i.id for i in items]
                for i in items: await finish_handoff(c, i.id, 'delivered')

    claimed = await asyncio.gather(*(relay(f'relay-{n}') for n in range(4)))
    flat = [i for r in claimed for i in r]
    assert len(flat) == 40 and len(set(flat)) == 40
    # a crashed relay's claim becomes claimable again after its lease
    async with p.connection() as c:
        await enqueue_handoff(c, session_id=f'{tag}-late', handoff_reason='stall', request={}, keyring=KR)
        first = [i for i in await claim_handoffs(c, worker='dies', lease_seconds=0, keyring=KR) if i.session_id == f'{tag}-late']
        again = [i for i in await claim_handoffs(c, worker='rescuer', keyring=KR) if i.session_id == f'{tag}-late']
        assert first and again and again[0].attempts == 2 and again[0].claimed_by == 'rescuer'
        await finish_handoff(c, again[0].id, 'pending', error='slack 500', retry_in_seconds=3600)
        assert not [i for i in await claim_handoffs(c, worker='x', keyring=KR) if i.session_id == f'{tag}-late']
        rid = await insert_handoff_record(c, HandoffRecord(session_id=f'{tag}-late', handoff_reason='stall', channel='slack',
                                                           status='failed', attempt_count=3, last_http_status=500,
                                                           outcome='partial_failure', triggered_at=NOW))
        assert (await list_handoff_records(c, session_id=f'{tag}-late'))[0].id == rid
    await p.close()


# --- retention and TTL (time-shifted data) ---------------------------------------------------

async def test_purge_keeps_recent_and_lead_linked_sessions(pg):
    url = fresh_db(pg[1])
    await migrate(url, pg[0])
    p = await create_pool(url)
    graph = counting_graph(create_checkpointer(p))
    async with p.connection() as c:
        for sid, days in [('old-a', 120), ('old-b', 91), ('old-with-lead', 200), ('recent', 10), ('edge', 89)]:
            await upsert_session(c, session(sid, days_ago=days), keyring=KR)
            await append_transcript(c, sid, [Message(role='user', content='hi', turn_index=1)], keyring=KR)
            await emit_event(c, 'session_started', session_id=sid)
            await graph.ainvoke({}, {'configurable': {'thread_id': sid}}, durability='exit')
        await upsert_lead(c, session_id='old-with-lead', handoff_reason='hot_lead', lead_level='hot', payload={}, keyring=KR)
        dry = await purge_sessions(c, now=NOW, dry_run=True)
        assert (dry.sessions, dry.transcript, dry.analytics_events) == (2, 2, 2) and dry.checkpoints >= 2
        assert await count_sessions(c, keyring=KR) == 5                               # dry run deleted nothing
        done = await purge_sessions(c, now=NOW)
        assert done == dry
        left = {s.session_id for s in await list_sessions(c, keyring=KR)}
        assert left == {'old-with-lead', 'recent', 'edge'}
        n = (await (await c.execute("SELECT count(*) AS n FROM checkpoints WHERE thread_id IN ('old-a', 'old-b')")).fetchone())['n']
        assert n == 0
        assert (await purge_sessions(c, now=NOW)).sessions == 0          # idempotent
        with pytest.raises(ValueError): await purge_sessions(c, retention_days=0)
    await p.close()


async def test_session_ttl_sweeper_expires_once_and_emits_events(pg):
    url = fresh_db(pg[1])
    await migrate(url, pg[0])
    p = await create_pool(url)
    async with p.connection() as c:
        await upsert_session(c, session('stale', hours_ago=30), keyring=KR)
        await upsert_session(c, session('fresh', hours_ago=2), keyring=KR)
        await upsert_session(c, session('closed', hours_ago=40, termination_type='explicit_close'), keyring=KR)
        sweeps = await asyncio.gather(expire_sessions(c, ttl_hours=24, now=NOW), expire_sessions(c, ttl_hours=24, now=NOW))
        assert sorted(sum(sweeps, [])) == ['stale']
        assert (await get_session(c, 'stale', keyring=KR)).termination_type == 'session_expiry'
        assert (await get_session(c, 'fresh', keyring=KR)).termination_type is None
        ev = await list_events(c, event_types=['session_expired'])
        assert [(e.session_id, e.payload) for e in ev] == [('stale', {'ttl_hours': 24})]
    await p.close()


async def test_ttl_sweeper_loop_runs_and_stops(pg):
    from leadchat.repos import run_ttl_sweeper
    url = fresh_db(pg[1]); await migrate(url, pg[0])
    p = await create_pool(url)
    async with p.connection() as c: await upsert_session(c, session('old-open', hours_ago=10_000), keyring=KR)
    stop = asyncio.Event()
    task = asyncio.create_task(run_ttl_sweeper(p, ttl_hours=24, interval_seconds=0.05, stop=stop))
    for _ in range(100):
        async with p.connection() as c:
            if (await get_session(c, 'old-open', keyring=KR)).termination_type: break
        await asyncio.sleep(0.05)
    stop.set(); await asyncio.wait_for(task, 5)
    async with p.connection() as c: assert (await get_session(c, 'old-open', keyring=KR)).termination_type == 'session_expiry'
    await p.close()


def state_graph(saver):
    g = StateGraph(SessionState)
    g.add_node('write_state', lambda s: {'turn_counter': s.turn_counter + 1})
    g.add_edge(START, 'write_state'); g.add_edge('write_state', END)
    return g.compile(checkpointer=saver)


async def test_session_state_round_trips_through_the_saver_and_pii_stays_out_of_failure_logs(pg):
    from leadchat.state import QualificationDelta, SignalEntry, apply_delta
    url = pg[1]
    st = apply_delta(session(f'rt-{uuid.uuid4()}'), QualificationDelta(
        visitor_email='secret.person@example.com', visitor_name='Secret Person',
        signals=[SignalEntry(dimension='problem_fit', level='confirmed', signal_type='explicit',
                             evidence='call me on +34 600 000 000', turn_index=1)]))
    cfg = {'configurable': {'thread_id': st.session_id}}
    p = await create_pool(url)
    g = state_graph(create_checkpointer(p))
    await g.ainvoke(st, cfg, durability='exit')
    back = SessionState.model_validate((await g.aget_state(cfg)).values)
    assert back == st.model_copy(update={'turn_counter': 1})
    await p.close()
    bad = await create_pool(await faulty_role_url(url, 'GRANT SELECT ON checkpoints, checkpoint_writes, checkpoint_blobs TO {role}'))
    with capture_logs() as logs:
        await state_graph(create_checkpointer(bad)).ainvoke({'turn_counter': 5}, cfg, durability='exit')
    await bad.close()
    text = repr(logs)
    assert 'checkpointer_write_failure' in text
    assert 'secret.person@example.com' not in text and 'Secret Person' not in text and '600 000 000' not in text
