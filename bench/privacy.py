#!/usr/bin/env python
"""Privacy benchmarks (issue 18: returning visitors and their rights). Records numbers; never pass/fail.

    .venv/bin/python bench/privacy.py [--turns 600] [--erase-sessions 100] [--erase-visitors 3]
                                      [--background-sessions 50000] [--rotate-visitors 100000] [--note TEXT] [--smoke]
                                      [--only stitching|erasure|rotation ...] [--aa]

In one run, on one machine, on a real embedded PostgreSQL (the issue's targets):
  * stitching's cost per turn: full `ChatService.turn`s (zero-cost model and retriever) of returning visitors — the
    widget's visitor id with chat_processing consent, an email and a phone given on the second turn of each session,
    a new session per visitor every five turns, so the visitor's history is carried into it — and of visitors without
    the widget's id (recognised by their email only), beside the same turns, messages and model outputs with
    stitching off (the turn's recorder stitches nothing — `PostgresRecorder.stitch` a no-op — and nothing is carried
    over before the turn: no visitor lookup, the lease taken alone), interleaved turn by turn (rotating which runs first). p50/p95 per
    variant; target ≤ 1 ms added at p95. The carry-over step and `stitch` are also timed alone;
  * erasure (`erase_subject`) of one visitor with N sessions (each two turns through the service: transcript,
    checkpoints, events, consent, contact history, lead), among background sessions, beside its dry run (the same
    lookups, counting the same rows) as the baseline; target ≤ 2 s;
  * key rotation (`rotate_keys`) re-encrypting N visitors stitched through `stitch` (an email, a phone and a name
    each) plus every encrypted checkpoint of the run: total time, rows/s per table, beside the same values
    decrypted and re-encrypted in-process (the cryptography alone) and a second pass with nothing left to move.
Only leadchat's public functions are called (`ChatService`, `stitch`, `erase_subject`, `rotate_keys`, `Keyring`,
`check_data_key`), so the benchmark follows them as they grow. `--smoke` runs in seconds and writes nothing.
`--aa` runs the stitching section as an A/A test (stitching off on both sides: the noise of its differences) and
prints it. Writes bench/results/privacy.json and bench/results/privacy.md. With `--only`, the sections not run are kept from the
results file as it was (each says which run it comes from).
"""
import argparse, asyncio, json, os, platform, random, re, statistics, sys, tempfile, time, uuid
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / 'bench'))
RESULTS = ROOT / 'bench' / 'results'
from orchestrator import NullRetriever  # noqa: E402  (the zero-cost retriever the benches share)

CONSENT = {'notice_version': 'bench', 'acknowledged_at': '2026-01-01T00:00:00Z'}
TURNS_PER_SESSION = 5
MESSAGES = ['We are building a RAG assistant over our support tickets.', 'How does your engagement model work?',
            "I'm the head of engineering at a 300-person insurer.", 'We would like to go live before Q3.',
            'What happens in the first two weeks?', 'Do you sign NDAs?']
_EMAIL = re.compile(r'[\w.+-]+@[\w-]+\.[\w.]+')
SECTIONS = ('stitching', 'erasure', 'rotation')


def pct(xs, p): return round(statistics.quantiles(xs, n=100, method='inclusive')[p - 1], 3) if len(xs) > 1 else round(xs[0], 3)


def p95_difference_interval(on, off, rounds=1000, seed=18):
    "90% bootstrap interval of p95(on) - p95(off): the turns resampled in their interleaved pairs (same seed, same draws)."
    rng, n, out = random.Random(seed), min(len(on), len(off)), []
    for _ in range(rounds):
        idx = [rng.randrange(n) for _ in range(n)]
        out.append(pct([on[i] for i in idx], 95) - pct([off[i] for i in idx], 95))
    out.sort()
    return [round(out[int(rounds * 0.05)], 3), round(out[int(rounds * 0.95) - 1], 3)]


def stats(xs): return dict(p50_ms=pct(xs, 50), p95_ms=pct(xs, 95), n=len(xs)) if xs else dict(p50_ms=None, p95_ms=None, n=0)


def settings(home, key):
    from pydantic import SecretStr
    from leadchat.config import Settings
    return Settings(rag_relevance_threshold=0.263, business_hours_timezone='Europe/Madrid', handoff_channels='crm',
                    leadchat_home=home, leadchat_data_key=SecretStr(key), stall_turn_threshold=10_000,
                    leadchat_rate_limit_ip_per_minute=100_000, leadchat_rate_limit_session_per_minute=10_000)


class ContactModel:
    "Zero-cost model port that reads the visitor's email and name off the message (what the extractor would find)."
    name = 'bench'
    async def extract(self, message, state, turn_index):
        from leadchat.state import QualificationDelta
        m = _EMAIL.search(message)
        name = message.split("I'm ", 1)[1].split(';', 1)[0] if m and "I'm " in message else None
        return QualificationDelta(visitor_email=m.group(0) if m else None, visitor_name=name)
    async def respond(self, message, state, retrieve, **kw): yield 'ok'
    async def propose(self, reason, business_hours, state, followup_sentence, case_study): yield 'proposal'
    def is_stage3_language(self, text): return False


def services(cfg, db, aa=False):
    "(with stitching: the service as it runs; without: the same service with stitching and carry-over switched off)."
    from leadchat import service
    from leadchat.privacy import TurnVisitor
    from leadchat.service import ChatService

    class Unstitched(service.PostgresRecorder):
        "The turn's recorder, everything but the visitor's stitching."
        async def stitch(self, conn, rec): return None

    class NoStitching(ChatService):
        """No visitor memory: nothing carried over before the turn, and the turn's recorder (which `stream` builds from
        leadchat.service.PostgresRecorder) stitches nothing after it. The swap lasts for this service's turn only:
        the benchmark runs one turn at a time, so the other variants never see it."""
        begin_ms: list = []
        async def begin(self, session_id, **kw):            # the lease alone: no visitor lookup in its round trip
            t = time.perf_counter()
            try: return await super().begin(session_id)
            finally: self.begin_ms.append((time.perf_counter() - t) * 1000)
        async def carry_over(self, conn, session_id, visitor_id, consent, **kw): return TurnVisitor()

        async def stream(self, *args, **kw):
            real, service.PostgresRecorder = service.PostgresRecorder, Unstitched
            try:
                async for tok in super().stream(*args, **kw): yield tok
            finally: service.PostgresRecorder = real

    class Timed(ChatService):
        "The service as it runs; the time of its carry-over step kept per turn, with whether it carried a history."
        carry_ms: list = []
        begin_ms: list = []
        async def begin(self, session_id, **kw):            # the lease, the visitor lookup in its round trip
            t = time.perf_counter()
            try: return await super().begin(session_id, **kw)
            finally: self.begin_ms.append((time.perf_counter() - t) * 1000)

        async def carry_over(self, conn, session_id, visitor_id, consent, **kw):
            t, v = time.perf_counter(), None
            try:
                v = await super().carry_over(conn, session_id, visitor_id, consent, **kw)
                return v
            finally: self.carry_ms.append(((time.perf_counter() - t) * 1000, bool(v and v.carry)))

    class Off(NoStitching):             # --aa: the 'with stitching' variants run the baseline too (its own lists)
        carry_ms, begin_ms = [], []
    on = (Off if aa else Timed)(cfg, db, model=ContactModel(), retriever=NullRetriever())
    off = NoStitching(cfg, db, model=ContactModel(), retriever=NullRetriever())
    return on, off


def contact(n):
    return f'visitor{n}@bench-privacy.example', f'+34 600 {n:06d}', f'Visitor{n} Bench'


def session_turns(n, k):
    "The k-th session of visitor n: its messages (the second gives an email, a phone and a name) and per-turn kwargs."
    email, phone, name = contact(n)
    msgs = [MESSAGES[(k + t) % len(MESSAGES)] for t in range(TURNS_PER_SESSION)]
    msgs[1] = f"I'm {name}; reach me at {email} or {phone}."
    return msgs


async def turn(svc, sid, msg, **kw):
    t = time.perf_counter()
    async for _ in svc.turn(sid, msg, **kw): pass
    return (time.perf_counter() - t) * 1000


async def bench_stitching(cfg, db, turns, visitors=30, aa=False):
    """Turn i goes to visitor i % visitors; each visitor's sessions are TURNS_PER_SESSION turns long, so every visitor
    comes back (a new session) after its first one. Three variants run each (visitor, turn): 'on' — the widget's visitor
    id with consent (recognised from the first turn, history carried before it); 'mail' — no widget id, recognised by the
    email given on the second turn; 'off' — stitching off (the baseline). `aa`: an A/A run — 'on' and 'mail' with stitching
    off as well, the same design otherwise: how far the differences move by the machine's noise alone."""
    on, off = services(cfg, db, aa)
    browser = [str(uuid.uuid4()) for _ in range(visitors)]
    runs = {'on': [], 'mail': [], 'off': []}
    kinds = {'on': {}, 'mail': {}, 'off': {}}
    warm = visitors * 2
    returning = None                                # a session the 'on' variant carried a history into
    for i in range(turns + warm):
        n = i % visitors
        step = i // visitors                        # the visitor's step: session k = step // 5, turn t = step % 5
        k, t = divmod(step, TURNS_PER_SESSION)
        kind = 'carry-over (first turn of a returning session)' if t == 0 and k > 0 else \
               'email + phone given (stitch)' if t == 1 else 'other turns'
        order = [('on', on), ('mail', on), ('off', off)]
        order = order[i % 3:] + order[:i % 3]       # no variant always runs first
        for name, svc in order:
            sid = f'{name}-v{n}-s{k}'
            msg = session_turns(n + (1000 if name == 'mail' else 0), k)[t]     # its own email: not the 'on' visitor's
            kw = dict(consent=CONSENT) if t == 0 else {}
            if name == 'on': kw['visitor_id'] = browser[n]
            ms = await turn(svc, sid, msg, **kw)
            if name == 'on' and k > 0: returning = sid
            if i >= warm:                           # each visitor's first two turns warm plans and caches
                runs[name].append(ms)
                kinds[name].setdefault(kind, []).append(ms)
    # sanity: the 'on' visitors were stitched and remembered; the 'off' ones never
    async with db.pool.connection() as conn:
        linked = {r['p']: r['n'] for r in await (await conn.execute(
            "SELECT split_part(session_id, '-', 1) AS p, count(*) AS n FROM visitor_sessions GROUP BY 1")).fetchall()}
    assert aa or (linked.get('on', 0) > 0 and linked.get('mail', 0) > 0), linked
    assert 'off' not in linked and not (aa and linked), linked
    assert returning, 'no visitor came back: run more turns (at least 6 per visitor)'
    state = (await on.graph.aget_state({'configurable': {'thread_id': returning}})).values
    assert aa or state.get('prior_sessions'), 'the returning visitor was not carried over'
    carry = on.carry_ms[-len(runs['on']) * 2:]      # measured turns of 'on' and 'mail' (the warm-up's left out)
    carry = dict(lookups_only=stats([ms for ms, c in carry if not c]), carried=stats([ms for ms, c in carry if c]),
                 lease_with_lookup=stats(on.begin_ms[-len(runs['on']) * 2:]), lease_alone=stats(off.begin_ms[-len(runs['off']):]))
    paired = {name: round(statistics.median(a - b for a, b in zip(runs[name], runs['off'])), 3) for name in ('on', 'mail')}
    direct = await direct_stitch(db, on.keyring, max(100, turns // 3))
    res = dict(with_stitching=stats(runs['on']), without_stitching=stats(runs['off']), email_only=stats(runs['mail']),
               by_turn={kind: dict(with_stitching=stats(xs), without_stitching=stats(kinds['off'][kind]))
                        for kind, xs in kinds['on'].items()},
               carry_over_step=carry, median_paired_difference_ms=paired, stitch_call=direct, visitors=visitors, turns_per_session=TURNS_PER_SESSION,
               sessions_linked=linked.get('on', 0), sessions_linked_email_only=linked.get('mail', 0), warm_up_turns=warm)
    res['added_p95_ms'] = round(res['with_stitching']['p95_ms'] - res['without_stitching']['p95_ms'], 3)
    res['added_p50_ms'] = round(res['with_stitching']['p50_ms'] - res['without_stitching']['p50_ms'], 3)
    res['email_only_added_p95_ms'] = round(res['email_only']['p95_ms'] - res['without_stitching']['p95_ms'], 3)
    res['email_only_added_p50_ms'] = round(res['email_only']['p50_ms'] - res['without_stitching']['p50_ms'], 3)
    res['added_p95_interval_ms'] = p95_difference_interval(runs['on'], runs['off'])
    res['email_only_added_p95_interval_ms'] = p95_difference_interval(runs['mail'], runs['off'])
    return res, on


async def direct_stitch(db, keyring, n):
    """`stitch` alone, each call in its own transaction as in a turn: n/2 new visitors (email, phone, name), then each
    one's second session by the same email (a known visitor)."""
    from leadchat.privacy import stitch
    async with db.pool.connection() as c:
        await c.execute('''INSERT INTO sessions (session_id, created_at, last_updated_at)
                           SELECT 'direct-' || g, now(), now() FROM generate_series(0, %s - 1) g''', [n])
    out = {'new visitor': [], 'known visitor (same email, next session)': []}
    async with db.pool.connection() as conn:
        for j in range(n):
            v, known = j % (n // 2), j >= n // 2
            t = time.perf_counter()
            async with conn.transaction():
                await stitch(conn, keyring, f'direct-{j}', email=f'direct{v}@bench-privacy.example', phone=f'+34 611 {v:06d}',
                             name=f'Direct{v} Bench')
            out['known visitor (same email, next session)' if known else 'new visitor'].append((time.perf_counter() - t) * 1000)
    return {k: stats(xs) for k, xs in out.items()}


async def background(db, keyring, n):
    """n other visitors' sessions (2 transcript rows, 2 events each): what erasure's lookups search through. Written
    in bulk as plaintext, then sealed by the start-up pass, as a deployment's older rows are."""
    from leadchat.privacy import seal_plaintext
    if n <= 0: return
    async with db.pool.connection() as c:
        await c.execute('''INSERT INTO sessions (session_id, created_at, last_updated_at)
                           SELECT 'bg-' || g, now(), now() FROM generate_series(1, %s) g''', [n])
        await c.execute('''INSERT INTO transcript (session_id, turn_index, role, content)
                           SELECT 'bg-' || g, 1, r, 'We are evaluating a retrieval assistant for our support team, visitor ' || g
                           FROM generate_series(1, %s) g, unnest(ARRAY['user', 'assistant']) r''', [n])
        await c.execute('''INSERT INTO analytics_events (session_id, event_type, payload)
                           SELECT 'bg-' || g, e, '{}' FROM generate_series(1, %s) g,
                           unnest(ARRAY['session_started', 'turn_completed']) e''', [n])
    await seal_plaintext(db.pool, keyring)
    async with db.pool.connection() as c: await c.execute('ANALYZE')


async def bench_erasure(db, svc, sessions, repeats, background_sessions):
    "`repeats` visitors with `sessions` sessions each, every session two turns through the service; each erased (dry run first)."
    from leadchat.privacy import erase_subject
    await background(db, svc.keyring, background_sessions)
    out = []
    for r in range(repeats):
        n = 10_000 + r
        email, phone, name = contact(n)
        browser = str(uuid.uuid4())
        t0 = time.perf_counter()
        for k in range(sessions):
            sid = f'erase-v{n}-s{k}'
            await turn(svc, sid, f"I'm {name}; reach me at {email} or {phone}.", consent=CONSENT, visitor_id=browser)
            await turn(svc, sid, MESSAGES[k % len(MESSAGES)], visitor_id=browser)
        seeded_s = time.perf_counter() - t0
        async with db.pool.connection() as conn:
            await erase_subject(conn, svc.keyring, email, operator='bench', dry_run=True)      # warms plans and caches
            t = time.perf_counter(); dry = await erase_subject(conn, svc.keyring, email, operator='bench', dry_run=True)
            dry_ms = (time.perf_counter() - t) * 1000
            t = time.perf_counter(); done = await erase_subject(conn, svc.keyring, email, operator='bench')
            erase_ms = (time.perf_counter() - t) * 1000
            again = await erase_subject(conn, svc.keyring, email, operator='bench', dry_run=True)
        assert done['sessions'] == dry['sessions'] == sessions, (dry, done)
        assert not any(again.values()), f'something was left after the erasure: {again}'
        out.append(dict(sessions=sessions, dry_run_ms=round(dry_ms, 1), erase_ms=round(erase_ms, 1),
                        seeded_s=round(seeded_s, 1), rows={k: v for k, v in done.items() if v}))
    async with db.pool.connection() as conn:
        total = (await (await conn.execute('SELECT count(*) AS n FROM sessions')).fetchone())['n']
        transcript = (await (await conn.execute('SELECT count(*) AS n FROM transcript')).fetchone())['n']
    ms = [o['erase_ms'] for o in out]
    return dict(runs=out, erase_ms_median=round(statistics.median(ms), 1), erase_ms_max=max(ms),
                dry_run_ms_median=round(statistics.median(o['dry_run_ms'] for o in out), 1),
                database=dict(sessions=total, transcript_rows=transcript, background_sessions=background_sessions))


async def seed_visitors(db, keyring, n, concurrency=4, per_tx=250):
    "n visitors through `stitch` (email, phone, name, one session each), `per_tx` per transaction on `concurrency` connections."
    from leadchat.privacy import stitch
    async with db.pool.connection() as c:        # the sessions they link (stitch links a session that exists)
        await c.execute('''INSERT INTO sessions (session_id, created_at, last_updated_at)
                           SELECT 'rot-' || g, now(), now() FROM generate_series(0, %s - 1) g''', [n])
    chunks = [range(a, min(a + per_tx, n)) for a in range(0, n, per_tx)]
    queue = asyncio.Queue()
    for ch in chunks: queue.put_nowait(ch)

    async def worker():
        async with db.pool.connection() as conn:
            while not queue.empty():
                ch = queue.get_nowait()
                async with conn.transaction():
                    for i in ch:
                        await stitch(conn, keyring, f'rot-{i}', email=f'rot{i}@bench-rotate.example',
                                     phone=f'+4479{i:08d}', name=f'Rotated Visitor {i}')
    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t


async def bench_rotation(cfg, db, old_key, visitors):
    from leadchat.privacy import DataKey, DataKeyError, Keyring, check_data_key, new_data_key, rotate_keys
    old = Keyring(DataKey.parse(old_key))
    seed_s = await seed_visitors(db, old, visitors)
    new = Keyring(DataKey.parse(new_data_key()), [old.current])
    t = time.perf_counter()
    moved = await rotate_keys(db.pool, new, batch=500)
    rotate_s = time.perf_counter() - t
    t = time.perf_counter()
    again = await rotate_keys(db.pool, new, batch=500)
    noop_s = time.perf_counter() - t
    only_new = Keyring(new.current)
    async with db.pool.connection() as conn:       # nothing is left under the old key: the start-up check agrees
        try: await check_data_key(conn, only_new, cfg)
        except DataKeyError as e: raise SystemExit(f'rotation left data under the old key: {e}')
    assert not any(again.values()), f'a second pass still moved rows: {again}'
    # the cryptography alone, in-process, for as many values as visitor rows moved (an identity: decrypt, blind
    # index, encrypt; a name: decrypt, encrypt) — what the database work is added to
    values = [(f'rot{i}@bench-rotate.example', 'email') for i in range(min(visitors, 20_000))]
    tokens = [old.encrypt(v, context=c) for v, c in values]
    n_values = sum(v for k, v in moved.items() if not k.startswith('checkpoint'))
    t = time.perf_counter()
    for (v, c), tok in zip(values, tokens):
        x = new.decrypt(tok, context=c); new.blind_index(c, x); new.encrypt(x, context=c)
    crypto_per_value = (time.perf_counter() - t) / len(values)
    total = sum(moved.values())
    return dict(visitors=visitors, seed_s=round(seed_s, 2), seed_visitors_per_s=round(visitors / seed_s, 1),
                rotate_s=round(rotate_s, 2), rows_moved=moved, rows_total=total, rows_per_s=round(total / rotate_s, 1),
                visitors_per_s=round(visitors / rotate_s, 1), batch=500,
                crypto_only_s=round(crypto_per_value * n_values, 2), crypto_values=n_values,
                second_pass_s=round(noop_s, 3), second_pass_rows=again)


async def run(a, home):
    from leadchat.db import migrate, open_database, stop_embedded
    from leadchat.privacy import new_data_key
    key = new_data_key()
    cfg = settings(home, key)
    db = await open_database(cfg, max_size=8)
    try:
        await migrate(db.url, cfg)
        res, only = {}, set(a.only or SECTIONS)
        if only & {'stitching', 'erasure'}:         # erasure's sessions go through the stitching run's service
            stitching, on = await bench_stitching(cfg, db, a.turns, a.visitors, a.aa)
            if 'stitching' in only: res['stitching'] = stitching
        if 'erasure' in only: res['erasure'] = await bench_erasure(db, on, a.erase_sessions, a.erase_visitors, a.background_sessions)
        if 'rotation' in only: res['rotation'] = await bench_rotation(cfg, db, key, a.rotate_visitors)
        return res
    finally:
        await db.close(); stop_embedded(cfg)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--turns', type=int, default=600, help='measured turns per variant (after two sessions of warm-up)')
    ap.add_argument('--visitors', type=int, default=30, help='visitors taking turns in the stitching benchmark')
    ap.add_argument('--erase-sessions', type=int, default=100)
    ap.add_argument('--erase-visitors', type=int, default=3, help='visitors erased, one after another (median and max)')
    ap.add_argument('--background-sessions', type=int, default=50_000, help="other visitors' sessions in the database")
    ap.add_argument('--rotate-visitors', type=int, default=100_000)
    ap.add_argument('--note', default='', help='what else the machine was doing (recorded in the results)')
    ap.add_argument('--only', action='append', choices=SECTIONS,
                    help='run only this section (repeatable); the others are kept from bench/results/privacy.json, labelled')
    ap.add_argument('--smoke', action='store_true', help='seconds-long run for `make test`: tiny sizes, nothing written')
    ap.add_argument('--aa', action='store_true', help="A/A: the stitching section with stitching off on both sides (the "
                    "noise of its differences); printed, nothing written")
    a = ap.parse_args()
    if a.aa: a.only = ['stitching']
    if a.smoke: a.turns, a.visitors, a.erase_sessions, a.erase_visitors, a.background_sessions, a.rotate_visitors = 24, 4, 5, 1, 100, 1000
    os.chdir(ROOT)
    home = tempfile.mkdtemp(prefix='lc-bench-')
    started = datetime.now(timezone.utc)
    load_before = os.getloadavg()
    t = time.perf_counter()
    res = dict(machine=dict(python=platform.python_version(), cpus=os.cpu_count(), platform=platform.platform()),
               at=started.isoformat(timespec='seconds'), note=a.note)
    res.update(asyncio.run(run(a, home)))
    res['wall_s'] = round(time.perf_counter() - t, 1)
    res['loadavg_1m'] = dict(start=round(load_before[0], 2), end=round(os.getloadavg()[0], 2))
    if a.smoke or a.aa:
        print(json.dumps(res, indent=1, default=str)); return
    res['command'] = (f'.venv/bin/python bench/privacy.py --turns {a.turns} --visitors {a.visitors} --erase-sessions {a.erase_sessions} '
                      f'--erase-visitors {a.erase_visitors} --background-sessions {a.background_sessions} '
                      f'--rotate-visitors {a.rotate_visitors}' + ''.join(f' --only {o}' for o in a.only or ()) +
                      (f' --note {json.dumps(a.note)}' if a.note else ''))
    res['sections_from'] = {k: dict(at=res['at'], command=res['command'], loadavg_1m=res['loadavg_1m']) for k in SECTIONS if k in res}
    if a.only and (RESULTS / 'privacy.json').exists():       # the sections not run: kept from the earlier results, labelled
        old = json.loads((RESULTS / 'privacy.json').read_text())
        for k in SECTIONS:
            if k not in res and k in old:
                res[k] = old[k]
                res['sections_from'][k] = old.get('sections_from', {}).get(k) or dict(at=old['at'], command=old.get('command'),
                                                                                      loadavg_1m=old.get('loadavg_1m'))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / 'privacy.json').write_text(json.dumps(res, indent=2) + '\n')
    md = report(res)
    (RESULTS / 'privacy.md').write_text(md)
    print(md)


def report(res):
    s, e, r = res['stitching'], res['erasure'], res['rotation']
    w, wo = s['with_stitching'], s['without_stitching']
    ok = lambda good: 'met' if good else '**not met**'
    ran = res.get('sections_from', {})

    def provenance(k):
        "A section kept from an earlier run (`--only`) says so under its heading."
        f = ran.get(k)
        if not f or f['at'] == res['at']: return []
        load = f.get('loadavg_1m') or {}
        return [f"*Not re-run: these numbers are from the run of {f['at']} (load average {load.get('start')}–{load.get('end')}), "
                f"`{f.get('command')}`.*", '']
    md = [f"# Privacy benchmarks ({res['at']}, {res['machine']['cpus']} CPUs, Python {res['machine']['python']})", '',
          f"Real embedded PostgreSQL, one process; load average (1 min) {res['loadavg_1m']['start']} at the start, "
          f"{res['loadavg_1m']['end']} at the end; {res['wall_s']:.0f} s in all." + (f" {res['note']}" if res['note'] else ''), '',
          '## Stitching per turn (target: ≤ 1 ms added at p95)', '', *provenance('stitching'),
          f"Full `ChatService.turn`s with a zero-cost model and retriever: {s['visitors']} visitors, each coming back every "
          f"{s['turns_per_session']} turns (a new session; the widget's visitor id with chat_processing consent, so their "
          'history is carried into it), the second turn of every session giving an email, a phone and a name; the same '
          f"again for {s['visitors']} visitors without the widget's id (recognised by that email); by the end each visitor has "
          f"{-(-(w['n'] // s['visitors'] + 2) // s['turns_per_session'])} sessions (the history carried into a session, and "
          "so its state, grows with them, up to the 20 the state keeps). The baseline runs the "
          'same turns, messages and model outputs with stitching off (the recorder\'s `stitch` a no-op, nothing carried '
          'over, no visitor lookup), interleaved turn by turn on the same database, rotating which variant goes first.', '',
          '| turns | with stitching p50 | p95 | without (baseline) p50 | p95 | n |', '|---|---|---|---|---|---|',
          f"| **all** (widget id + consent) | {w['p50_ms']} ms | **{w['p95_ms']} ms** | {wo['p50_ms']} ms | **{wo['p95_ms']} ms** | {w['n']} |",
          f"| **all**, visitors without the widget id (recognised by email) | {s['email_only']['p50_ms']} ms | **{s['email_only']['p95_ms']} ms** | "
          f"{wo['p50_ms']} ms | {wo['p95_ms']} ms | {s['email_only']['n']} |"]
    for kind, v in s['by_turn'].items():
        md.append(f"| {kind}, widget id | {v['with_stitching']['p50_ms']} ms | {v['with_stitching']['p95_ms']} ms | "
                  f"{v['without_stitching']['p50_ms']} ms | {v['without_stitching']['p95_ms']} ms | {v['with_stitching']['n']} |")
    md += ['', f"**Added by stitching: {s['added_p95_ms']:+} ms at p95** ({s['added_p50_ms']:+} ms at p50) with the widget's id, "
           f"{s['email_only_added_p95_ms']:+} ms at p95 ({s['email_only_added_p50_ms']:+} ms at p50) by email only — target "
           f"{ok(max(s['added_p95_ms'], s['email_only_added_p95_ms']) <= 1.0)}"
           + (f" (90% bootstrap interval of the p95 difference, the interleaved pairs resampled: {s['added_p95_interval_ms'][0]:+} to "
              f"{s['added_p95_interval_ms'][1]:+} ms with the widget's id, {s['email_only_added_p95_interval_ms'][0]:+} to "
              f"{s['email_only_added_p95_interval_ms'][1]:+} ms by email only)" if 'added_p95_interval_ms' in s else '')
           + ". The median of the per-turn differences (each turn "
           f"against its twin without stitching, run next to it): {s['median_paired_difference_ms']['on']:+} ms with the widget's id, "
           f"{s['median_paired_difference_ms']['mail']:+} ms by email only.", '',
           'The stitching steps alone, timed in the same run (less exposed to the machine\'s noise than a whole turn):', '',
           '| step | p50 | p95 | n |', '|---|---|---|---|',
           *([f"| the turn's lease (`ChatService.begin`) with the visitor lookup (`turn_visitor`) pipelined behind the lock | "
              f"{s['carry_over_step']['lease_with_lookup']['p50_ms']} ms | {s['carry_over_step']['lease_with_lookup']['p95_ms']} ms | {s['carry_over_step']['lease_with_lookup']['n']} |",
              f"| baseline: the lease alone (`begin` without the visitor) | "
              f"{s['carry_over_step']['lease_alone']['p50_ms']} ms | {s['carry_over_step']['lease_alone']['p95_ms']} ms | {s['carry_over_step']['lease_alone']['n']} |"]
             if 'lease_with_lookup' in s['carry_over_step'] else []),
           f"| the turn's carry-over step (`ChatService.carry_over`), nothing to carry: " +
           ("the lookup's answer taken from the lease" if 'lease_with_lookup' in s['carry_over_step'] else "the visitor lookup (`turn_visitor`)") + " | "
           f"{s['carry_over_step']['lookups_only']['p50_ms']} ms | {s['carry_over_step']['lookups_only']['p95_ms']} ms | {s['carry_over_step']['lookups_only']['n']} |",
           "| the same step when it carries a returning visitor's history into the session (once per session): " +
           ("the earlier sessions' rows, the state update handed to the turn (the lookup made with the lease)" if 'lease_with_lookup' in s['carry_over_step']
            else "the lookup, the earlier sessions' rows, the state update handed to the turn") + " | "
           f"{s['carry_over_step']['carried']['p50_ms']} ms | {s['carry_over_step']['carried']['p95_ms']} ms | {s['carry_over_step']['carried']['n']} |"]
    md += [f"| `stitch` in its own transaction, {k} | {v['p50_ms']} ms | {v['p95_ms']} ms | {v['n']} |" for k, v in s['stitch_call'].items()]
    md += ['', f"{s['sessions_linked']} + {s['sessions_linked_email_only']} sessions were linked to their visitors; "
           "none of the baseline's.", '',
           f"## Erasure of one visitor with {e['runs'][0]['sessions']} sessions (target: ≤ 2 s)", '', *provenance('erasure'),
           f"Each session two turns through the service (transcript, checkpoints, events, consent, contact history, lead); "
           f"{e['database']['background_sessions']:,} other sessions in the database ({e['database']['sessions']:,} sessions, "
           f"{e['database']['transcript_rows']:,} transcript rows before the erasures). `erase_subject` after an untimed and a timed dry run; "
           'a dry run afterwards finds nothing.', '',
           '| visitor | erase | baseline: dry run (same lookups, counts only) | ratio | rows erased |', '|---|---|---|---|---|']
    for i, o in enumerate(e['runs']):
        md.append(f"| {i + 1} | **{o['erase_ms'] / 1000:.2f} s** | {o['dry_run_ms'] / 1000:.2f} s | "
                  f"{o['erase_ms'] / o['dry_run_ms']:.1f}× | {sum(o['rows'].values()):,} |")
    md += ['', f"Median {e['erase_ms_median'] / 1000:.2f} s, slowest {e['erase_ms_max'] / 1000:.2f} s — target {ok(e['erase_ms_max'] <= 2000)}.", '',
           f"## Key rotation: {r['visitors']:,} visitors re-encrypted", '', *provenance('rotation'),
           f"{r['visitors']:,} visitors stitched under the old key (an email, a phone and a name each: "
           f"{r['seed_s']:.0f} s, {r['seed_visitors_per_s']:,.0f} visitors/s on 4 connections), then `rotate_keys` "
           f"(batch {r['batch']}) with the old key as previous — it re-encrypts everything sealed in the database, the earlier "
           "sections' sessions, transcripts and checkpoints too; afterwards the start-up key check passes with the new key alone.", '',
           '| table | rows re-encrypted |', '|---|---|']
    md += [f"| {k} | {v:,} |" for k, v in r['rows_moved'].items()]
    md += ['', '| measure | result |', '|---|---|',
           f"| rotation, total | **{r['rotate_s']:.1f} s** ({r['rows_total']:,} rows) |",
           f"| rows/s | **{r['rows_per_s']:,.0f}** |", f"| visitors/s | {r['visitors_per_s']:,.0f} |",
           f"| baseline: the cryptography alone, in-process (decrypt, blind index, encrypt a short value) × the {r['crypto_values']:,} rows outside the checkpoints | {r['crypto_only_s']:.2f} s |",
           f"| baseline: a second pass, nothing left to move | {r['second_pass_s']:.2f} s |", '',
           f"Command: `{res['command']}`", '']
    return '\n'.join(md)


if __name__ == '__main__': main()
