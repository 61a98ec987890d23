#!/usr/bin/env python
"""Experiment evaluation per turn (issue 19 item 2): what a turn pays for its flags plus its experiments — `assign`,
`arm_value` for three targets and `shadow_policy` — against no evaluation in the same run. Records; never pass/fail.

    .venv/bin/python bench/experiments_eval.py [--turns 100000] [--smoke]

One process; the five kill switches plus three multivariate flags, each carrying a running A/B experiment (proposal_copy
50/50, stall_threshold three arms ramped to 50 %, booking_flow 50/50), and a running shadow routing policy, all read from
the in-process caches (leadchat.flags' and leadchat.experiments'; no database in the loop). Each "turn" is a fresh session:
  * none: the answers as constants (the call and the tuple a turn would build anyway);
  * flags: `flags.current().for_session(sid)` and the five `is_on` (item 1's per-turn read, for reference);
  * first_turn: flags + `assign(state, visitor)` (three GrowthBook evaluations, the exposures) + `arm_value` ×3 +
    `shadow_policy` — a session's first turn, the most a turn pays;
  * later_turn: the same for a session that already holds its arms (assign skips them) — every other turn;
  * halted: first_turn with the proposal_copy experiment halted and the stall flag killed (other paths).
Modes alternate in blocks of 500 turns so drift in the machine's load falls on all alike; each turn is timed with
perf_counter_ns; the sessions are built before the clock starts. Writes bench/results/experiments_eval.json and .md
(`--smoke`: 3,000 turns, a temporary folder).
"""
import argparse, json, os, platform, statistics, sys, tempfile, time, uuid
from collections import Counter
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from leadchat import experiments as ex, flags  # noqa: E402
from leadchat.experiments import Experiment, ExperimentStore, arm_value, assign, check_experiment, shadow_policy  # noqa: E402
from leadchat.flags import BUILTIN, FlagStore, multivariate  # noqa: E402
from leadchat.state import SessionState  # noqa: E402

RESULTS = ROOT / 'bench' / 'results'
TARGET_MS = 0.2
FLAGS = [multivariate('copy_ab', {'standard': 0.5, 'short': 0.5}),
         multivariate('stall_ab', {6: 0.4, 4: 0.3, 9: 0.3}, ramp=50),
         multivariate('booking_ab', {'slots_in_chat': 0.5, 'handoff_only': 0.5})]
EXPS = [check_experiment(Experiment('short_copy', 'proposal_copy', 'copy_ab', status='running')),
        check_experiment(Experiment('stall_four', 'stall_threshold', 'stall_ab', status='running')),
        check_experiment(Experiment('no_slots', 'booking_flow', 'booking_ab', status='running')),
        Experiment('two_of_three', 'routing', kind='shadow', status='running', policy={'hot_lead_rule': 'two_of_three'})]
KILLS = ('booking_in_chat', 'proactive_prompt', 'hosted_model', 'rag_answers', 'slack_delivery')


def pct(xs, p): return statistics.quantiles(xs, n=100, method='inclusive')[p - 1]


def turn_none(state, visitor):
    return (True, True, True, True, True), {}, 'standard', 6, 'slots_in_chat', None


def turn_flags(state, visitor):
    f = flags.current().for_session(state.session_id)
    return tuple(f.is_on(n) for n in KILLS), {}, 'standard', 6, 'slots_in_chat', None


def turn_experiments(state, visitor):
    f = flags.current().for_session(state.session_id)
    on = tuple(f.is_on(n) for n in KILLS)
    arms, events = assign(state, visitor)
    if arms: state = state.model_copy(update={'experiments': {**state.experiments, **arms}})
    return (on, arms, arm_value(state, 'proposal_copy', 'standard'), arm_value(state, 'stall_threshold', 6),
            arm_value(state, 'booking_flow', 'slots_in_chat'), shadow_policy())


FLAG_STORE = FlagStore([*BUILTIN, *FLAGS])
HALTED_FLAGS = FlagStore([*BUILTIN, FLAGS[0], replace(FLAGS[1], killed=True), FLAGS[2]])
RUNNING = ExperimentStore(EXPS)
HALTED = ExperimentStore([replace(EXPS[0], status='halted', halted_arm='short', halt_reason='bench'), *EXPS[1:]])
MODES = {'none': (turn_none, FLAG_STORE, RUNNING, False), 'flags': (turn_flags, FLAG_STORE, RUNNING, False),
         'first_turn': (turn_experiments, FLAG_STORE, RUNNING, False),
         'later_turn': (turn_experiments, FLAG_STORE, RUNNING, True),
         'halted': (turn_experiments, HALTED_FLAGS, HALTED, False)}


def run(turns: int, block: int = 500) -> dict:
    visitors = [str(uuid.uuid4()) for _ in range(turns)]
    fresh = [SessionState(session_id=str(uuid.uuid4())) for _ in range(turns)]
    flags.install(FLAG_STORE); ex.install(RUNNING)
    held = [s.model_copy(update={'experiments': assign(s, v)[0]}) for s, v in zip(fresh, visitors)]
    times = {m: [] for m in MODES}
    answers = {m: Counter() for m in MODES}
    clock = time.perf_counter_ns
    try:
        for start in range(0, turns, block):
            for m, (fn, fstore, estore, later) in MODES.items():
                flags.install(fstore); ex.install(estore)
                states, out, seen = held if later else fresh, times[m], answers[m]
                for i in range(start, min(start + block, turns)):
                    s, v = states[i], visitors[i]
                    t0 = clock(); r = fn(s, v); out.append(clock() - t0)
                    seen[json.dumps([sorted(r[1].items()), r[2], r[3], r[4], r[5] is not None])] += 1
    finally: flags.install(None); ex.install(None)
    ms = lambda ns: round(ns / 1e6, 5)
    rows = {}
    for m, ns in times.items():
        rows[m] = {'turns': len(ns), 'p50_ms': ms(pct(ns, 50)), 'p95_ms': ms(pct(ns, 95)), 'p99_ms': ms(pct(ns, 99)),
                   'mean_ms': ms(statistics.fmean(ns)), 'answers': dict(answers[m].most_common(8))}
    for m in rows:
        rows[m]['added_p50_ms'] = round(rows[m]['p50_ms'] - rows['none']['p50_ms'], 5)
        rows[m]['added_p95_ms'] = round(rows[m]['p95_ms'] - rows['none']['p95_ms'], 5)
    rows['_served'] = {m: served(answers[m]) for m in ('first_turn', 'later_turn', 'halted')}
    return rows


def served(c: Counter) -> dict:
    "The share of turns served each value per target, and of turns that entered each experiment."
    n = sum(c.values())
    out = {}
    for k, v in c.items():
        arms, copy, stall, booking, shadow = json.loads(k)
        for key in [f'copy={copy}', f'stall={stall}', f'booking={booking}', f'shadow={shadow}', *(f'in:{a}' for a, _ in arms)]:
            out[key] = out.get(key, 0) + v / n
    return {k: round(v, 4) for k, v in sorted(out.items())}


def check(rows):
    "The answers are what the experiments say (a benchmark of a broken evaluation would measure nothing)."
    first, later, halted = (rows['_served'][m] for m in ('first_turn', 'later_turn', 'halted'))
    assert first['in:short_copy'] == 1 and first['in:no_slots'] == 1, first
    assert abs(first['in:stall_four'] - 0.5) < 0.05, first                        # the stall flag is ramped to 50 %
    assert abs(first['copy=short'] - 0.5) < 0.05 and abs(first['booking=handoff_only'] - 0.5) < 0.05, first
    # outside the ramp: the setting's 6; inside: 6 (control, 40 %), 4 (30 %), 9 (30 %) of the half that is in
    assert abs(first['stall=4'] - 0.15) < 0.03 and abs(first['stall=9'] - 0.15) < 0.03, first
    same = lambda d: {k: v for k, v in d.items() if not k.startswith('in:')}
    assert same(later).keys() == same(first).keys() and all(abs(later[k] - first[k]) < 2e-4 for k in same(first)), (later, first)
    assert not any(k.startswith('in:') for k in later), later                      # a later turn enters nothing new
    assert halted['copy=standard'] == 1 and halted['stall=6'] == 1 and 'in:stall_four' not in halted, halted
    assert first['shadow=True'] == 1, first


def write(rows, turns, out: Path, smoke: bool):
    load = os.getloadavg()
    meta = {'when': datetime.now(timezone.utc).isoformat(timespec='seconds'), 'cpus': os.cpu_count(),
            'python': platform.python_version(), 'turns': turns, 'load_1m': round(load[0], 2), 'smoke': smoke,
            'target_p95_ms': TARGET_MS}
    (out / 'experiments_eval.json').write_text(json.dumps({'meta': meta, 'modes': rows}, indent=2) + '\n')
    modes = {m: r for m, r in rows.items() if not m.startswith('_')}
    lines = [
        '# Experiment evaluation per turn (issue 19 item 2)', '',
        f"`.venv/bin/python bench/experiments_eval.py --turns {turns}` — {meta['when']}, {meta['cpus']} CPUs (shared; load "
        f"{meta['load_1m']} at the end), Python {meta['python']}{' — SMOKE run' if smoke else ''}.", '',
        'One process; the five kill switches plus three multivariate flags, each carrying a running A/B experiment '
        '(proposal_copy 50/50, stall_threshold three arms ramped to 50 %, booking_flow 50/50), and a running shadow '
        'policy, read from the in-process caches (no database in the loop). A turn is a fresh session. **none**: the '
        'answers as constants; **flags**: the five kill switches (`for_session` + `is_on` ×5); **first_turn**: flags + '
        '`assign` (three GrowthBook evaluations and the exposures) + `arm_value` ×3 + `shadow_policy`; **later_turn**: the '
        'same for a session that already holds its arms; **halted**: first_turn with one experiment halted and one flag '
        'killed. Blocks of 500 turns alternate between the modes. Milliseconds per turn; "added" is minus none.', '',
        '| mode | turns | p50 | p95 | p99 | mean | added p50 | added p95 |', '|---|---:|---:|---:|---:|---:|---:|---:|']
    for m, r in modes.items():
        add = ('–', '–') if m == 'none' else (f"+{r['added_p50_ms']:.4f}", f"**+{r['added_p95_ms']:.4f}**")
        lines.append(f"| {m} | {r['turns']} | {r['p50_ms']:.4f} | {r['p95_ms']:.4f} | {r['p99_ms']:.4f} | {r['mean_ms']:.4f} "
                     f"| {add[0]} | {add[1]} |")
    worst = max(modes[m]['added_p95_ms'] for m in ('first_turn', 'later_turn', 'halted'))
    lines += ['', f"Target (issue 19): flags and experiments together ≤ {TARGET_MS} ms p95 per turn — first turn "
              f"+{modes['first_turn']['added_p95_ms']:.4f} ms, later turn +{modes['later_turn']['added_p95_ms']:.4f} ms, worst "
              f"mode +{worst:.4f} ms: **{'met' if worst <= TARGET_MS else 'not met'}**.", '',
              'The answers are checked: every first turn enters the two unramped experiments and half of them the ramped '
              'one; each target is served its arms in the flags\' proportions; a later turn enters nothing new and is served '
              'the same; halted and killed serve control to everyone.', '']
    (out / 'experiments_eval.md').write_text('\n'.join(lines))
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
