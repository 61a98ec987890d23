#!/usr/bin/env python
"""The experiment machinery end to end (issue 19): thousands of synthetic sessions through the real service — the
LangGraph graph, the offline engine, the PostgreSQL recorder and checkpointer — with a known true effect in one arm.
Records; tests/test_experiment_simulation.py asserts on the same run.

    .venv/bin/python bench/experiments.py [--sessions 2000] [--seeds 1000] [--smoke]

Design (all from the visitor's side: nothing here reads the graph's internals):
  * Visitors ask vague questions (no qualifying detail, never a request for a person) and leave after k messages,
    k drawn from LENGTHS. With nothing to qualify, the only hand-off the engine can propose is the stall proposal,
    which comes on the turn the session's stall threshold is reached. So the true hand-off rate of an arm with
    threshold T is P(k ≥ T): 30.0 % for the control (6, `STALL_TURN_THRESHOLD`), 37.5 % for the treatment (4) — a
    true effect of +7.5 points.
  * A/B: a `stall_threshold` experiment (arms 6 and 4, 50/50) runs through `leadchat.experiments` (GrowthBook hashing
    of the session id, exposure recorded once, arm persisted in the session state). `leadchat.results` reads the
    result from `analytics_events` as the console does: the effect, its interval, the two-proportion test.
  * A/A: at the same time a `prompt_layer` experiment (standard / concise) runs on an orthogonal hash; the offline
    engine does not use the hosted prompt, so its arms are identical: its test must find nothing. The false-positive
    rate over repeated seeds re-hashes the same sessions into two halves with seeds aa-0 … aa-N (the re-randomisation
    distribution of the test on these real outcomes) and counts p < 0.05.
  * Power: the treatment and control sessions' real outcomes are resampled (bootstrap, `--seeds` times) at the run's
    arm sizes; the share of resamples the test detects is the empirical power, beside the power computed for the
    design (normal approximation).
  * Guardrail: a harmful arm (threshold 10: it never proposes to these visitors) runs against control with a
    `min_sessions` of 100; `results.check_guardrails` must halt it — audited, logged, alerted — and sessions already in
    the harmful arm get control's behaviour on their next turn.
Writes bench/results/experiments.json and .md (`--smoke`: 200 + 160 sessions, 200 seeds, a temporary folder).
"""
import argparse, asyncio, json, math, os, platform, sys, tempfile, time, uuid
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import structlog
from scipy import stats

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from leadchat import experiments, flags, results  # noqa: E402
from leadchat.config import Settings  # noqa: E402
from leadchat.experiments import Experiment, create_experiment, start, stop  # noqa: E402
from leadchat.flags import create_flag, multivariate  # noqa: E402
from leadchat.service import ChatService, prepare  # noqa: E402
from growthbook.core import gbhash  # noqa: E402

RESULTS = ROOT / 'bench' / 'results'
LENGTHS = {1: 0.25, 2: 0.20, 3: 0.175, 4: 0.05, 5: 0.025, 6: 0.30}       # messages a visitor sends before leaving
CONTROL, TREATMENT, HARMFUL = 6, 4, 10
QUESTIONS = ['Hi, what do you do?', 'Do you have any case studies?', 'How do you usually work with clients?',
             'Interesting, tell me more.', 'What tech stack do you use?', 'Who are your typical customers?']
BY = 'bench:experiments'


def true_rate(threshold: int) -> float: return sum(p for k, p in LENGTHS.items() if k >= threshold)


def design_power(p0: float, p1: float, n0: int, n1: int, alpha: float = 0.05) -> float:
    "The two-sided pooled z-test's power for rates p0 → p1 at these arm sizes (normal approximation)."
    p = (p0 * n0 + p1 * n1) / (n0 + n1)
    se0, se1 = math.sqrt(p * (1 - p) * (1 / n0 + 1 / n1)), math.sqrt(p0 * (1 - p0) / n0 + p1 * (1 - p1) / n1)
    z = stats.norm.ppf(1 - alpha / 2)
    return float(stats.norm.sf((z * se0 - abs(p1 - p0)) / se1))


class Alerts:
    "Collects what the guardrail check would post to Slack."
    def __init__(self): self.texts = []
    async def __call__(self, text: str) -> bool: self.texts.append(text); return True


async def define(pool, flag, experiment) -> None:
    async with pool.connection() as conn:
        await create_flag(conn, flag, by=BY)
        await create_experiment(conn, experiment, by=BY)
        await start(conn, experiment.name, by=BY)


async def reload(pool, fstore, estore) -> None:
    "What every API process does each second (15_flags, 16_experiments): the caches re-read after a change."
    async with pool.connection() as conn:
        await flags.refresh(fstore, conn)
        await experiments.refresh(estore, conn)


async def visit(svc, sid: str, k: int, first: int = 0) -> None:
    for i in range(first, first + k):
        async for _ in svc.turn(sid, QUESTIONS[i % len(QUESTIONS)]): pass


async def visitors(svc, lengths: list[int], rng, *, concurrency: int = 4, progress: str | None = None) -> list[str]:
    "One session per length, `concurrency` at a time; their ids (uuid4s drawn from `rng`: the same run, the same arms)."
    sids = [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in lengths]
    sem = asyncio.Semaphore(concurrency)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(lengths), desc=progress, unit='session', file=sys.stderr, leave=False)

    async def one(sid, k):
        async with sem: await visit(svc, sid, k)
        if bar is not None: bar.update(1)
    await asyncio.gather(*(one(s, k) for s, k in zip(sids, lengths)))
    if bar is not None: bar.close()
    return sids


async def outcomes(pool, experiment: str) -> dict[str, dict]:
    "Per exposed session: its arm, the turns it took, and whether (and why) a hand-off was proposed — from analytics_events."
    async with pool.connection() as conn:
        rows = await (await conn.execute("""
            SELECT x.session_id, x.payload->>'arm' AS arm, max(e.turn_index) AS turns,
                   bool_or(e.event_type = 'handoff_proposed') AS handoff,
                   array_remove(array_agg(DISTINCT e.payload->>'handoff_reason'), NULL) AS reasons
            FROM analytics_events x JOIN analytics_events e ON e.session_id = x.session_id
            WHERE x.event_type = 'experiment_exposure' AND x.payload->>'experiment' = %s
            GROUP BY x.session_id, x.payload->>'arm'""", [experiment])).fetchall()
    return {r['session_id']: dict(arm=r['arm'], turns=r['turns'], handoff=r['handoff'], reasons=r['reasons']) for r in rows}


def aa_rates(sids: list[str], handoff: dict[str, bool], seeds: int, alpha: float = 0.05) -> dict:
    "Re-randomisation: the same sessions split 50/50 by seeds aa-0 … aa-N; how often the test says they differ."
    hits, ps = 0, []
    for s in range(seeds):
        a = [gbhash(f'aa-{s}', sid, 2) < 0.5 for sid in sids]
        k1 = sum(handoff[sid] for sid, x in zip(sids, a) if x); n1 = sum(a)
        k0 = sum(handoff[sid] for sid, x in zip(sids, a) if not x); n0 = len(sids) - n1
        c = results.two_proportion_test(k1, n1, k0, n0)
        ps.append(c.p_value)
        hits += c.p_value < alpha
    lo, hi = results.wilson_interval(hits, seeds)
    strict = sum(p < 0.01 for p in ps)
    return dict(seeds=seeds, false_positives=hits, rate=hits / seeds, interval=[lo, hi], rate_at_1pct=strict / seeds)


def bootstrap_power(treat: list[bool], control: list[bool], seeds: int, alpha: float = 0.05) -> dict:
    rng = np.random.default_rng(19)
    t, c = np.array(treat, dtype=bool), np.array(control, dtype=bool)
    hits = 0
    for _ in range(seeds):
        kt, kc = int(rng.choice(t, t.size).sum()), int(rng.choice(c, c.size).sum())
        hits += results.two_proportion_test(kt, t.size, kc, c.size).p_value < alpha
    lo, hi = results.wilson_interval(hits, seeds)
    return dict(seeds=seeds, detected=hits, power=hits / seeds, interval=[lo, hi])


async def simulate(settings: Settings, *, sessions: int = 2000, harm_sessions: int = 400, seeds: int = 1000,
                   concurrency: int = 4, progress: bool = True, db=None) -> dict:
    "The whole simulation on `settings`' database; a report (see the module docstring)."
    logging = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))     # warnings and up: 10,000 turns
    try: return await _simulate(settings, sessions=sessions, harm_sessions=harm_sessions, seeds=seeds,
                                concurrency=concurrency, progress=progress, db=db)
    finally: structlog.configure(**logging)      # the process's logging as it was (tests capture it after this)


async def _simulate(settings, *, sessions, harm_sessions, seeds, concurrency, progress, db) -> dict:
    db = db or await prepare(settings, knowledge_path=str(ROOT / 'knowledge'))
    pool = db.pool
    fstore, estore = flags.FlagStore(), experiments.ExperimentStore()
    flags.install(fstore); experiments.install(estore)
    svc = ChatService(settings, db)
    svc.model.prepare()
    rng = np.random.default_rng(2026)
    draw = lambda n: [int(x) for x in rng.choice(list(LENGTHS), size=n, p=list(LENGTHS.values()))]
    rep: dict = dict(sessions=sessions, lengths=LENGTHS, control=CONTROL, treatment=TREATMENT)
    try:
        # --- A/B and A/A, at the same time on orthogonal hashes
        await define(pool, multivariate('sim_stall', {CONTROL: 0.5, TREATMENT: 0.5}),
                     Experiment('stall_sim', 'stall_threshold', 'sim_stall', description='stall at 4 turns instead of 6'))
        await define(pool, multivariate('sim_style', {'standard': 0.5, 'concise': 0.5}),
                     Experiment('style_aa', 'prompt_layer', 'sim_style', description='A/A for the offline engine'))
        await reload(pool, fstore, estore)
        lengths = draw(sessions)
        t0 = time.perf_counter()
        sids = await visitors(svc, lengths, rng, concurrency=concurrency, progress='A/B + A/A' if progress else None)
        took = time.perf_counter() - t0
        k_of = dict(zip(sids, lengths))
        ab = await outcomes(pool, 'stall_sim')
        turns = sum(lengths)
        rep['run'] = dict(turns=turns, seconds=round(took, 1), turns_per_second=round(turns / took, 1))
        # what each session did, against what its arm and length say it must have done
        rep['consistent'] = sum((o['handoff'] == (k_of[s] >= int(o['arm']))) and o['turns'] == k_of[s] for s, o in ab.items())
        rep['exposed'] = len(ab)
        rep['reasons'] = dict(Counter(r for o in ab.values() for r in o['reasons']))
        async with pool.connection() as conn:
            res = await results.experiment_results(conn, 'stall_sim')
            aa = await results.experiment_results(conn, 'style_aa')
        t, c = res.arm(str(TREATMENT)), res.arm(str(CONTROL))
        cmp = t.vs_control['handoff']
        rep['ab'] = dict(n_control=c.n, n_treatment=t.n, rate_control=c.rate('handoff'),
                         rate_treatment=t.rate('handoff'), diff=cmp.diff, interval=[cmp.lo, cmp.hi], p_value=cmp.p_value,
                         true_diff=true_rate(TREATMENT) - true_rate(CONTROL), srm=res.srm.mismatch,
                         srm_p=res.srm.p_value)
        rep['power'] = dict(design=design_power(true_rate(CONTROL), true_rate(TREATMENT), c.n, t.n),
                            **bootstrap_power([ab[s]['handoff'] for s in ab if ab[s]['arm'] == str(TREATMENT)],
                                              [ab[s]['handoff'] for s in ab if ab[s]['arm'] == str(CONTROL)], seeds))
        aa_cmp = aa.arm('concise').vs_control['handoff']
        rep['aa'] = dict(n=[aa.arm('standard').n, aa.arm('concise').n], diff=aa_cmp.diff,
                         interval=[aa_cmp.lo, aa_cmp.hi], p_value=aa_cmp.p_value, srm=aa.srm.mismatch,
                         rerandomised=aa_rates(sorted(ab), {s: o['handoff'] for s, o in ab.items()}, seeds))
        # --- guardrail: a harmful arm against control; the check halts it
        async with pool.connection() as conn:
            await stop(conn, 'stall_sim', by=BY)
            await stop(conn, 'style_aa', by=BY)
        await define(pool, multivariate('sim_harm', {CONTROL: 0.5, HARMFUL: 0.5}),
                     Experiment('stall_harm', 'stall_threshold', 'sim_harm', description='stall at 10 turns',
                                guardrails={'metric': 'handoff', 'min_sessions': min(100, harm_sessions // 4),
                                            'max_conversion_drop': 0.25}))
        await reload(pool, fstore, estore)
        hl = draw(harm_sessions)
        hsids = await visitors(svc, hl, rng, concurrency=concurrency, progress='guardrail' if progress else None)
        alerts = Alerts()
        halts = await results.check_guardrails(pool, alert=alerts)
        await reload(pool, fstore, estore)
        harm = await outcomes(pool, 'stall_harm')
        async with pool.connection() as conn: hres = await results.experiment_results(conn, 'stall_harm')     # as halted
        # sessions in the harmful arm that reached 6 turns without a proposal: on their next turn, control's rule applies
        waiting = [s for s, k in zip(hsids, hl) if harm.get(s, {}).get('arm') == str(HARMFUL) and k == CONTROL][:20]
        for s in waiting: await visit(svc, s, 1, first=CONTROL)
        after = await outcomes(pool, 'stall_harm')
        async with pool.connection() as conn:
            audit = await experiments.experiment_history(conn, 'stall_harm')
        rep['guardrail'] = dict(
            sessions=harm_sessions, halted=[(h.experiment, h.arm) for h in halts], reason=halts[0].reason if halts else None,
            alerts=alerts.texts, audited=[r['action'] for r in audit if r['by'] == 'guardrail'],
            rate_control=hres.arm(str(CONTROL)).rate('handoff'), rate_harmful=hres.arm(str(HARMFUL)).rate('handoff'),
            continued=len(waiting), proposed_after_halt=sum(after[s]['handoff'] for s in waiting))
    finally:
        flags.install(None); experiments.install(None)
        await db.close()
    return rep


def markdown(rep: dict, env: dict) -> str:
    ab, aa, pw, g = rep['ab'], rep['aa'], rep['power'], rep['guardrail']
    rr = aa['rerandomised']
    pct = lambda x: f'{100 * x:.1f} %'
    iv = lambda v: f'[{100 * v[0]:+.1f}, {100 * v[1]:+.1f}] pts'
    return '\n'.join([
        '# Experiments: the simulation (issue 19)', '',
        f'`{env["command"]}` · {env["when"]} · {env["machine"]}', '',
        f'{rep["sessions"]:,} synthetic sessions ({rep["run"]["turns"]:,} turns) through the real service — graph, offline '
        f'engine, PostgreSQL recorder and checkpointer — in {rep["run"]["seconds"]} s ({rep["run"]["turns_per_second"]} '
        'turns/s, 4 at a time). Visitors ask vague questions and leave after k messages; the only hand-off the engine can '
        'propose them is the stall proposal, so an arm with stall threshold T hands off P(k ≥ T) of its sessions.', '',
        f'Every exposed session did what its arm and length say it must: **{rep["consistent"]:,} of {rep["exposed"]:,}** '
        f'(hand-off reasons seen: {rep["reasons"]}).', '',
        '## A/B: stall after 4 turns instead of 6 (metric: hand-off proposed)', '',
        '| arm | sessions | hand-off rate | true rate |', '|---|---|---|---|',
        f'| control (6) | {ab["n_control"]:,} | {pct(ab["rate_control"])} | {pct(true_rate(CONTROL))} |',
        f'| treatment (4) | {ab["n_treatment"]:,} | {pct(ab["rate_treatment"])} | {pct(true_rate(TREATMENT))} |', '',
        f'Effect {100 * ab["diff"]:+.1f} pts, 95 % interval {iv(ab["interval"])} (true effect {100 * ab["true_diff"]:+.1f} pts), '
        f'p = {ab["p_value"]:.2g}; sample-ratio check p = {ab["srm_p"]:.3f} ({"MISMATCH" if ab["srm"] else "no mismatch"}).', '',
        f'**Power**: {pct(pw["design"])} for this design (normal approximation, α = 0.05, the run\'s arm sizes); '
        f'{pct(pw["power"])} of {pw["seeds"]:,} bootstrap resamples of the real outcomes detected the effect '
        f'(95 % interval {pct(pw["interval"][0])}–{pct(pw["interval"][1])}).', '',
        '## A/A: the hosted prompt style, which the offline engine does not use', '',
        f'The run\'s own A/A experiment ({aa["n"][0]:,} / {aa["n"][1]:,} sessions): difference {100 * aa["diff"]:+.1f} pts, '
        f'interval {iv(aa["interval"])}, p = {aa["p_value"]:.2f} — no effect found.', '',
        f'**False-positive rate** over {rr["seeds"]:,} re-randomisations of the same sessions: {rr["false_positives"]} '
        f'significant at 0.05 = **{pct(rr["rate"])}** (95 % interval {pct(rr["interval"][0])}–{pct(rr["interval"][1])}); '
        f'at 0.01: {pct(rr["rate_at_1pct"])}.', '',
        '## Guardrail: a harmful arm (stall after 10 turns: these visitors never get a proposal)', '',
        f'{g["sessions"]} sessions; hand-off rate when checked: control {pct(g["rate_control"])}, harmful {pct(g["rate_harmful"])}. '
        f'`results.check_guardrails` halted: {g["halted"]} — "{g["reason"]}"; audited as {g["audited"]}; '
        f'{len(g["alerts"])} alert(s) for Slack.', '',
        f'Of {g["continued"]} sessions in the harmful arm that had sent 6 messages without a proposal, '
        f'**{g["proposed_after_halt"]}** got the stall proposal on their next turn: the halt serves control at once.', ''])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--sessions', type=int, default=2000)
    ap.add_argument('--harm-sessions', type=int, default=400)
    ap.add_argument('--seeds', type=int, default=1000)
    ap.add_argument('--smoke', action='store_true', help='200 + 160 sessions, 200 seeds; results to a temporary folder')
    a = ap.parse_args()
    if a.smoke: a.sessions, a.harm_sessions, a.seeds = 200, 160, 200
    out = Path(tempfile.mkdtemp(prefix='lc-bench-exp-')) if a.smoke else RESULTS
    home = tempfile.mkdtemp(prefix='lc-bench-')
    cfg = Settings(rag_relevance_threshold=0.263, business_hours_timezone='Europe/Madrid', handoff_channels='crm',
                   leadchat_home=home)
    rep = asyncio.run(simulate(cfg, sessions=a.sessions, harm_sessions=a.harm_sessions, seeds=a.seeds))
    env = dict(command=' '.join(['bench/experiments.py', *sys.argv[1:]]), when=datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
               machine=f'{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}')
    (out / 'experiments.json').write_text(json.dumps({**rep, 'env': env}, indent=2, default=str) + '\n')
    (out / 'experiments.md').write_text(markdown(rep, env))
    print(markdown(rep, env))


if __name__ == '__main__':
    main()
