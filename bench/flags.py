#!/usr/bin/env python
"""Flag evaluation per turn (issue 19 item 1): what a turn pays to consult its flags, against no evaluation in the same
run. Records; never pass/fail.

    .venv/bin/python bench/flags.py [--turns 100000] [--smoke]

One process, the flags as migration 0019 seeds them (the five kill switches, on) plus one multivariate flag with three
arms ramped to 50 %, evaluated from leadchat.flags' in-process cache by the GrowthBook SDK (no database in the loop:
the cache is what a turn reads). Each "turn" is a fresh session id (a new hash for every flag) and:
  * none: the same six answers as constants (the call and the tuple a turn would build anyway);
  * session: `current().for_session(sid)` once, then the five `is_on` and the multivariate `value` (how a turn should read them);
  * enabled: six separate module-level calls (`flags.enabled(name, sid)` ×5, `current().value(...)`), one evaluation
    context each — how code that consults one flag at one place reads it;
  * killed: `session` with two kill switches killed and the multivariate flag at 100 % (other rule paths).
Modes alternate in blocks of 500 turns so drift in the machine's load falls on all alike; each turn is timed with
perf_counter_ns. Writes bench/results/flags.json and bench/results/flags.md (`--smoke`: 3,000 turns, a temporary folder).
"""
import argparse, json, os, platform, statistics, sys, tempfile, time, uuid
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from leadchat import flags  # noqa: E402
from leadchat.flags import BUILTIN, KILL_SWITCHES, Flag, FlagStore, multivariate  # noqa: E402

RESULTS = ROOT / 'bench' / 'results'
TARGET_MS = 0.2
COPY = multivariate('proposal_copy', {'long': 0.5, 'short': 0.25, 'bullets': 0.25}, ramp=50)


def pct(xs, p): return statistics.quantiles(xs, n=100, method='inclusive')[p - 1]


def turn_none(sid):
    return (True, True, True, True, True, 'long')


def turn_session(sid):
    f = flags.current().for_session(sid)
    return (f.is_on('booking_in_chat'), f.is_on('proactive_prompt'), f.is_on('hosted_model'), f.is_on('rag_answers'),
            f.is_on('slack_delivery'), f.value('proposal_copy'))


def turn_enabled(sid):
    e = flags.enabled
    return (e('booking_in_chat', sid), e('proactive_prompt', sid), e('hosted_model', sid), e('rag_answers', sid),
            e('slack_delivery', sid), flags.current().value('proposal_copy', sid))


SEEDED = FlagStore([*BUILTIN, COPY])
KILLED = FlagStore([Flag('rag_answers', killed=True), Flag('slack_delivery', killed=True), replace(COPY, ramp=100)])
MODES = {'none': (turn_none, SEEDED), 'session': (turn_session, SEEDED), 'enabled': (turn_enabled, SEEDED),
         'killed': (turn_session, KILLED)}


def run(turns: int, block: int = 500) -> dict:
    sids = [str(uuid.uuid4()) for _ in range(turns)]
    times = {m: [] for m in MODES}
    answers = {m: {} for m in MODES}
    clock = time.perf_counter_ns
    for start in range(0, turns, block):
        for m, (fn, store) in MODES.items():
            flags.install(store)
            out = times[m]
            for sid in sids[start:start + block]:
                t0 = clock(); r = fn(sid); out.append(clock() - t0)
                answers[m][r] = answers[m].get(r, 0) + 1
    flags.install(None)
    ms = lambda ns: round(ns / 1e6, 5)
    rows = {}
    for m, ns in times.items():
        rows[m] = {'turns': len(ns), 'p50_ms': ms(pct(ns, 50)), 'p95_ms': ms(pct(ns, 95)), 'p99_ms': ms(pct(ns, 99)),
                   'mean_ms': ms(statistics.fmean(ns)),
                   'answers': {json.dumps(k): v for k, v in sorted(answers[m].items(), key=lambda kv: -kv[1])}}
    for m in rows:
        rows[m]['added_p50_ms'] = round(rows[m]['p50_ms'] - rows['none']['p50_ms'], 5)
        rows[m]['added_p95_ms'] = round(rows[m]['p95_ms'] - rows['none']['p95_ms'], 5)
    return rows


def check(rows):
    "The answers are what the flags say (a benchmark of a broken evaluation would measure nothing)."
    s = rows['session']['answers']
    arms = {json.loads(k)[5]: v for k, v in s.items()}
    assert all(json.loads(k)[:5] == [True] * 5 for k in s), s
    n = rows['session']['turns']
    assert abs(arms.get('long', 0) / n - 0.75) < 0.05, arms       # 50 % outside the ramp get the default ('long') + 25 % inside
    assert all(json.loads(k)[3] is False and json.loads(k)[4] is False for k in rows['killed']['answers']), rows['killed']['answers']


def write(rows, turns, out: Path, smoke: bool):
    load = os.getloadavg()
    meta = {'when': datetime.now(timezone.utc).isoformat(timespec='seconds'), 'cpus': os.cpu_count(),
            'python': platform.python_version(), 'turns': turns, 'load_1m': round(load[0], 2), 'smoke': smoke,
            'target_p95_ms': TARGET_MS}
    (out / 'flags.json').write_text(json.dumps({'meta': meta, 'modes': rows}, indent=2) + '\n')
    best = rows['session']
    lines = [
        '# Flag evaluation per turn (issue 19 item 1)', '',
        f"`.venv/bin/python bench/flags.py --turns {turns}` — {meta['when']}, {meta['cpus']} CPUs (shared; load "
        f"{meta['load_1m']} at the end), Python {meta['python']}.", '',
        'One process; the five kill switches as migration 0019 seeds them plus one multivariate flag (three arms, ramped '
        'to 50 %), evaluated by the GrowthBook SDK from leadchat.flags\' in-process cache (no database in the loop). A '
        'turn is a fresh session id. **none**: the six answers as constants; **session**: one `for_session` context, '
        'five `is_on` + one `value`; **enabled**: six separate `flags.enabled(...)`-style calls (a context each); '
        '**killed**: `session` with two kill switches killed and the multivariate flag at 100 %. Blocks of 500 turns '
        'alternate between the modes. Milliseconds per turn; "added" is minus none.', '',
        '| mode | turns | p50 | p95 | p99 | mean | added p50 | added p95 |', '|---|---:|---:|---:|---:|---:|---:|---:|']
    for m, r in rows.items():
        add = ('–', '–') if m == 'none' else (f"+{r['added_p50_ms']:.4f}", f"**+{r['added_p95_ms']:.4f}**")
        lines.append(f"| {m} | {r['turns']} | {r['p50_ms']:.4f} | {r['p95_ms']:.4f} | {r['p99_ms']:.4f} | {r['mean_ms']:.4f} "
                     f"| {add[0]} | {add[1]} |")
    worst = max(rows[m]['p95_ms'] for m in ('session', 'enabled', 'killed'))
    lines += ['', f"Target (issue 19): flag evaluation ≤ {TARGET_MS} ms p95 per turn — session p95 {best['p95_ms']:.4f} ms, "
              f"worst mode {worst:.4f} ms: **{'met' if worst <= TARGET_MS else 'not met'}**.", '',
              'The answers are checked: every session sees the five kill switches on (killed: the two killed ones off) and '
              '75 % of sessions get the multivariate default (50 % outside the ramp + the default arm\'s 50 % of the rest).', '']
    (out / 'flags.md').write_text('\n'.join(lines))
    print('\n'.join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--turns', type=int, default=100_000)
    ap.add_argument('--smoke', action='store_true', help='3,000 turns; results to a temporary folder')
    a = ap.parse_args()
    turns, out = (3000, Path(tempfile.mkdtemp(prefix='lc-bench-smoke-'))) if a.smoke else (a.turns, RESULTS)
    rows = run(turns)
    check(rows)
    write(rows, turns, out, a.smoke)


if __name__ == '__main__':
    main()
