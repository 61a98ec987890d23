#!/usr/bin/env python
"""Docs site benchmark (issue 20 targets: `make docs` ≤ 3 min on 2 cores from a clean clone; each page ≤ 1 s to load
locally). Not a test: it records numbers, it never fails on them.

    .venv/bin/python bench/docs.py [--builds 3] [--loads 5] [--smoke] [--keep]

Measures, on one machine, in one run:
  * the build: `make docs` in a fresh `git clone` of HEAD (committed work only) that shares this checkout's .venv (a
    symlink; nothing is reinstalled: `make -o .venv/.leadchat-deps`, because the clone's pyproject.toml is newer than
    the stamp), with PYTHONPATH on the clone so its own `leadchat` is what the notebooks import. Wall time per phase,
    read from the lines `make docs` prints as they arrive: set-up (make, tools/bootstrap-system.sh), nbdev processing
    (`_proc/`: frontmatter, `show_doc`, the API reference's cells executed), rendering (pandoc, sidebar, module index,
    anchors); and the CPU time of the whole build (user + system, every process it started).
    Baseline, in the same run, alternating with the real builds: the same command in a clone whose nbs/ holds one
    trivial notebook (one exported function, one output) — the pipeline's fixed cost (interpreters, nbdev and IPython
    imports, worker processes, a kernel, pandoc runs, the module index), so the rest is what our notebooks cost.
  * the pages: every page of the built site served by http.server on a loopback port and opened in Debian's
    Chromium (headless, a fresh browser context per load, so nothing is cached), several loads each, round-robin;
    the time to the load event from Navigation Timing (`loadEventStart`). Baseline, in the same run and from the same
    server, interleaved: for each page a plain static HTML page of the same size (paragraphs of text, no stylesheet,
    script or image). Pages whose slowest load is over 1 s are flagged.
Writes bench/results/docs.json and .md (`--smoke`: a clone with two notebooks, one build of each kind, one load per
page; results to a temporary folder).
"""
import argparse, json, os, platform, re, resource, shutil, statistics, subprocess, sys, tempfile, threading, time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / 'bench' / 'results'
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic']
MAKE = ['make', '--no-print-directory', '-o', '.venv/.leadchat-deps', 'docs']
# The lines of `make docs` (Makefile, tools/make_docs.py) that end each phase; a build that prints none of one fails
# here, so a changed message breaks the smoke run instead of the numbers.
MARKERS = {'setup': re.compile(r'^==> \[docs\] rendering the notebooks'),
           'processing': re.compile(r'^==> \[docs\] notebooks processed into'),
           'rendering': re.compile(r'^==> \[docs\] (\d+) pages in')}
SMOKE_NOTEBOOKS = ['00_config.ipynb', '02_hours.ipynb']
LIMIT_MS = 1000


# ---------------------------------------------------------------- the build
def clone(dest: Path, keep: list[str] | None = None) -> str:
    "A clone of HEAD sharing this checkout's .venv; with `keep`, nbs/ holds only those notebooks. Returns the commit."
    subprocess.run(['git', 'clone', '--quiet', str(ROOT), str(dest)], check=True)
    (dest / '.venv').symlink_to(ROOT / '.venv')
    if keep is not None:
        if missing := [k for k in keep if not (dest / 'nbs' / k).is_file()]:
            sys.exit(f'!! bench/docs.py: the clone has no nbs/{missing} (SMOKE_NOTEBOOKS names notebooks that must exist)')
        for nb in (dest / 'nbs').glob('*.ipynb'):
            if nb.name not in keep: nb.unlink()
    return subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=dest, capture_output=True, text=True, check=True).stdout.strip()


def trivial_notebook(path: Path) -> None:
    "The baseline's only notebook: a module with one exported function and one committed output."
    import nbformat
    v4 = nbformat.v4
    nb = v4.new_notebook(cells=[
        v4.new_code_cell('#| default_exp trivial'),
        v4.new_markdown_cell('# Trivial\n\n> One exported function and one example: the pipeline with nothing in it.'),
        v4.new_code_cell('#| export\ndef add(a: int, b: int) -> int:\n    "Add two numbers."\n    return a + b'),
        v4.new_code_cell('add(1, 2)', execution_count=1,
                         outputs=[v4.new_output('execute_result', {'text/plain': '3'}, execution_count=1)])])
    nb.metadata = {'kernelspec': {'display_name': 'python3', 'language': 'python', 'name': 'python3'}}
    nbformat.write(nb, str(path))


class Progress:
    "One progress line: rewritten every second on a terminal, else printed every 15 s (and at each phase)."
    def __init__(self, label: str):
        self.label, self.phase, self.t0 = label, 'starting', time.monotonic()
        self.tty, self.stop = sys.stderr.isatty(), threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def line(self) -> str: return f'[docs bench] {self.label}: {self.phase} — {time.monotonic() - self.t0:5.1f} s'

    def show(self, final: bool = False) -> None:
        if self.tty: print('\r\033[K' + self.line(), end='\n' if final else '', file=sys.stderr, flush=True)
        else: print(self.line(), file=sys.stderr, flush=True)

    def run(self) -> None:
        while not self.stop.wait(1 if self.tty else 15): self.show()

    def __enter__(self): self.thread.start(); return self
    def __exit__(self, *exc): self.stop.set(); self.thread.join(); self.show(final=True)


def build(repo: Path, label: str) -> dict:
    "`make docs` in `repo`: wall time per phase (from the lines it prints), CPU time, pages and site size."
    env = os.environ | {'PYTHONUNBUFFERED': '1', 'PYTHONPATH': str(repo)}
    before, load = resource.getrusage(resource.RUSAGE_CHILDREN), os.getloadavg()
    t0, marks, log = time.monotonic(), {}, []
    with Progress(label) as prog:
        prog.phase = 'set-up (make, bootstrap-system.sh)'
        proc = subprocess.Popen(MAKE, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            log.append(line.rstrip('\n'))
            for phase, rx in MARKERS.items():
                if phase not in marks and (m := rx.match(line)):
                    marks[phase] = (time.monotonic() - t0, m)
                    prog.phase = {'setup': 'nbdev processing', 'processing': 'rendering (pandoc)',
                                  'rendering': 'finishing'}[phase]
                    if not prog.tty: prog.show()
        rc = proc.wait()
        prog.phase = 'done' if not rc else f'failed (exit {rc})'
    total = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if rc: sys.exit(f'!! make docs failed in {repo} (exit {rc}):\n' + '\n'.join(log[-40:]))
    if missing := [p for p in MARKERS if p not in marks]:
        sys.exit(f'!! make docs printed no line for {missing} (bench/docs.py MARKERS: {[MARKERS[p].pattern for p in missing]}); '
                 'update MARKERS to what it prints now:\n' + '\n'.join(log))
    ends = [marks[p][0] for p in MARKERS]
    site = repo / '_docs'
    return dict(total_s=round(total, 2),
                phases=dict(setup_s=round(ends[0], 2), processing_s=round(ends[1] - ends[0], 2),
                            rendering_s=round(ends[2] - ends[1], 2), rest_s=round(total - ends[2], 2)),
                cpu_s=round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2),
                notebooks=len(list((repo / 'nbs').glob('*.ipynb'))), pages=int(marks['rendering'][1][1]),
                site_bytes=sum(f.stat().st_size for f in site.rglob('*') if f.is_file()),
                loadavg_before=[round(x, 2) for x in load], loadavg_after=[round(x, 2) for x in os.getloadavg()])


# ---------------------------------------------------------------- the pages
NAV_JS = '''() => { const n = performance.getEntriesByType("navigation")[0];
  const r = performance.getEntriesByType("resource");
  return {load_ms: n.loadEventStart, response_end_ms: n.responseEnd, dom_content_loaded_ms: n.domContentLoadedEventStart,
          html_bytes: n.transferSize, resources: r.length, resource_bytes: r.reduce((s, e) => s + e.transferSize, 0),
          elements: document.getElementsByTagName("*").length}; }'''
WORDS = ('the docs site renders every notebook into a page with its prose its code its outputs and the reference '
         'of each exported name ').split()


def plain_page(size: int) -> str:
    "A static HTML page of `size` bytes: text paragraphs only (no stylesheet, script or image)."
    head = '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>plain</title></head><body>\n'
    tail, paras, n, i = '</body></html>\n', [], len(head) + len('</body></html>\n'), 0
    while n < size:
        p = '<p>' + ' '.join(WORDS[(i + k) % len(WORDS)] for k in range(60)) + '</p>\n'
        paras.append(p); n += len(p); i += 7
    return (head + ''.join(paras))[:max(size - len(tail), len(head))] + tail


def load(browser, url: str) -> dict:
    ctx = browser.new_context(viewport={'width': 1280, 'height': 800})
    page = ctx.new_page()
    failed = []
    page.on('response', lambda r: r.status >= 400 and failed.append(f'{r.status} {r.url}'))
    page.goto(url, wait_until='load')
    page.wait_for_function('performance.getEntriesByType("navigation")[0].loadEventEnd > 0')
    out = page.evaluate(NAV_JS)
    ctx.close()
    if failed: sys.exit(f'!! {url}: requests failed while loading: {failed}')
    return out


def measure_pages(site: Path, loads: int) -> dict:
    "Every page and a plain page of its size, `loads` times each, round-robin, from one loopback server."
    import functools, http.server
    from playwright.sync_api import sync_playwright

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a): pass
    names = sorted(f.relative_to(site).as_posix() for f in site.rglob('*.html'))
    plain = site / '_bench'
    plain.mkdir()
    for n in names: (plain / n.replace('/', '__')).write_text(plain_page((site / n).stat().st_size))
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f'http://127.0.0.1:{srv.server_address[1]}/'
    res = {n: dict(html_bytes=(site / n).stat().st_size, page=[], plain=[]) for n in names}
    try:
        with sync_playwright() as p, Progress(f'page loads ({len(names)} pages and their plain twins, {loads}×)') as prog:
            b = p.chromium.launch(executable_path='/usr/bin/chromium', args=CHROMIUM_ARGS)
            res_meta = dict(chromium=b.version)
            prog.phase = 'warm-up load (not counted)'
            load(b, base + names[0]); load(b, base + '_bench/' + names[0].replace('/', '__'))   # warm-up, not counted
            for i in range(loads):
                for n in names:
                    prog.phase = f'round {i + 1}/{loads}: {n}'
                    res[n]['page'].append(load(b, base + n))
                    res[n]['plain'].append(load(b, base + '_bench/' + n.replace('/', '__')))
            b.close()
            prog.phase = 'done'
    finally:
        srv.shutdown(); srv.server_close()
    out = {}
    for n, r in res.items():
        ms = [x['load_ms'] for x in r['page']]
        pl = [x['load_ms'] for x in r['plain']]
        first = r['page'][0]
        out[n] = dict(html_bytes=r['html_bytes'], resources=first['resources'], resource_bytes=first['resource_bytes'],
                      elements=first['elements'], plain_elements=r['plain'][0]['elements'],
                      load_ms=[round(x, 1) for x in ms], p50_ms=round(statistics.median(ms), 1), max_ms=round(max(ms), 1),
                      response_end_p50_ms=round(statistics.median(x['response_end_ms'] for x in r['page']), 1),
                      dom_content_loaded_p50_ms=round(statistics.median(x['dom_content_loaded_ms'] for x in r['page']), 1),
                      plain_load_ms=[round(x, 1) for x in pl], plain_p50_ms=round(statistics.median(pl), 1),
                      plain_max_ms=round(max(pl), 1), over_1s=max(ms) > LIMIT_MS)
    return dict(meta=res_meta, pages=out)


# ---------------------------------------------------------------- run and report
def stats(runs: list[dict], key) -> dict:
    xs = [key(r) for r in runs]
    return dict(n=len(xs), median=round(statistics.median(xs), 2), min=round(min(xs), 2), max=round(max(xs), 2))


def main():
    global RESULTS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--builds', type=int, default=3, help='builds of each kind (full, trivial baseline), alternating')
    ap.add_argument('--loads', type=int, default=5, help='loads of each page and of its plain twin')
    ap.add_argument('--smoke', action='store_true', help=f'a clone with {" and ".join(SMOKE_NOTEBOOKS)}; one build of each kind, '
                                                         'one load each; results to a temporary folder')
    ap.add_argument('--keep', action='store_true', help='keep the temporary clones (their paths are printed)')
    a = ap.parse_args()
    if a.smoke:
        a.builds, a.loads = 1, 1
        RESULTS = Path(tempfile.mkdtemp(prefix='lc-bench-smoke-'))
    for tool in ('git', 'make', 'pandoc'):
        if not shutil.which(tool): sys.exit(f'!! {tool} is needed (tools/bootstrap-system.sh installs it)')
    if not (ROOT / '.venv' / '.leadchat-deps').exists(): sys.exit('!! no set-up .venv in this checkout: run `make deps` first')
    dirty = subprocess.run(['git', 'status', '--porcelain', '--', 'nbs', 'leadchat', 'tools/make_docs.py', 'Makefile', 'pyproject.toml'],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.splitlines()
    if dirty: print(f'[docs bench] not measured: uncommitted changes in {len(dirty)} file(s) the docs depend on '
                    f'(the clone has HEAD only): {", ".join(l[3:] for l in dirty[:8])}{" …" if len(dirty) > 8 else ""}', file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix='lc-bench-docs-'))
    pandoc = subprocess.run(['pandoc', '--version'], capture_output=True, text=True).stdout.splitlines()[0]
    res = dict(machine=dict(python=platform.python_version(), cpus=os.cpu_count(), cpus_usable=len(os.sched_getaffinity(0)),
                            platform=platform.platform(), pandoc=pandoc, quarto=shutil.which('quarto')),
               at=datetime.now(timezone.utc).isoformat(timespec='seconds'), smoke=a.smoke, uncommitted_not_measured=[l[3:] for l in dirty],
               command='.venv/bin/python bench/docs.py' + (' --smoke' if a.smoke else f' --builds {a.builds} --loads {a.loads}'),
               build_command='PYTHONPATH=<clone> ' + ' '.join(MAKE), loadavg_start=[round(x, 2) for x in os.getloadavg()],
               builds=dict(full=[], trivial=[]))
    keep = SMOKE_NOTEBOOKS if a.smoke else None
    try:
        site = None
        for i in range(a.builds):
            for kind in ('full', 'trivial'):
                repo = tmp / f'{kind}-{i + 1}'
                t0 = time.monotonic()
                res['commit'] = clone(repo, keep if kind == 'full' else [])
                clone_s = time.monotonic() - t0
                if kind == 'trivial': trivial_notebook(repo / 'nbs' / '00_trivial.ipynb')
                r = build(repo, f'build {i + 1}/{a.builds} ({"smoke subset" if a.smoke and kind == "full" else kind})')
                res['builds'][kind].append(dict(clone_s=round(clone_s, 2), **r))
                if kind == 'full':
                    if site and not a.keep: shutil.rmtree(site.parent)
                    site = repo / '_docs'
                elif not a.keep: shutil.rmtree(repo)
        res['loadavg_after_builds'] = [round(x, 2) for x in os.getloadavg()]
        m = measure_pages(site, a.loads)
        res['machine'].update(m['meta'])
        res['loads'], res['pages'] = a.loads, m['pages']
        res['loadavg_end'] = [round(x, 2) for x in os.getloadavg()]
    finally:
        if a.keep: print(f'[docs bench] clones kept in {tmp}', file=sys.stderr)
        else: shutil.rmtree(tmp, ignore_errors=True)
    res['summary'] = {kind: dict(total_s=stats(runs, lambda r: r['total_s']), cpu_s=stats(runs, lambda r: r['cpu_s']),
                                 **{p: stats(runs, lambda r, p=p: r['phases'][p]) for p in runs[0]['phases']})
                      for kind, runs in res['builds'].items()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / 'docs.json').write_text(json.dumps(res, indent=2) + '\n')
    md = report(res)
    (RESULTS / 'docs.md').write_text(md)
    print(md)


def report(res: dict) -> str:
    S, B, P, M = res['summary'], res['builds'], res['pages'], res['machine']
    full, triv = B['full'], B['trivial']
    sec = lambda s: f"{s['median']:.1f} s" + (f" ({s['min']:.1f}–{s['max']:.1f})" if s['n'] > 1 else '')
    la = lambda x: ' / '.join(f'{v:.2f}' for v in x)
    nb_kind = f"smoke subset: {', '.join(SMOKE_NOTEBOOKS)}" if res['smoke'] else 'all of nbs/'
    md = [f"# Docs site benchmark ({res['at']}, {M['cpus']} CPUs ({M['cpus_usable']} usable), Python {M['python']}, "
          f"{M['pandoc']}, Chromium {M.get('chromium', '?')}, commit {res['commit'][:10]})", '',
          f"Issue 20's targets: `make docs` ≤ 3 min on 2 cores from a clean clone; each page ≤ 1 s to load locally.", '',
          f"Machine load (1/5/15-min load average): {la(res['loadavg_start'])} at the start, {la(res['loadavg_after_builds'])} "
          f"after the builds, {la(res['loadavg_end'])} at the end. The machine is shared (other engineers' test runs): "
          'with more runnable processes than its CPUs, wall times here are longer than on an idle machine; the CPU time '
          'of a build is the load-independent figure (its wall time on 2 idle cores is at least CPU time ÷ 2).', '',
          f"## `make docs` from a clean clone (n={len(full)} of each kind, alternating; median, range in brackets)", '',
          f"Each build: a fresh `git clone` of HEAD, this checkout's .venv symlinked in, then `{res['build_command']}` "
          '(`-o`: the shared .venv is not reinstalled; PYTHONPATH: the notebooks import the clone\'s `leadchat`). '
          f"Quarto is {'on the PATH, but' if M['quarto'] else 'not installed:'} `make docs` renders with pandoc. "
          f"Measured: commit {res['commit'][:10]}" + (f" (uncommitted changes in {len(res['uncommitted_not_measured'])} file(s) "
          'of the checkout were not part of it)' if res['uncommitted_not_measured'] else '') + '.', '',
          '| build | notebooks → pages | set-up | nbdev processing | rendering | wall time | CPU time (user + sys) | site |',
          '|---|---|---|---|---|---|---|---|']
    for kind, label in (('full', f'this repo ({nb_kind})'), ('trivial', 'baseline: one trivial notebook')):
        s, r = S[kind], B[kind][0]
        md.append(f"| {label} | {r['notebooks']} → {r['pages']} | {sec(s['setup_s'])} | {sec(s['processing_s'])} | "
                  f"{sec(s['rendering_s'])} | **{sec(s['total_s'])}** | {sec(s['cpu_s'])} | {r['site_bytes'] / 2**20:.1f} MiB |")
    ft, tt = S['full']['total_s']['median'], S['trivial']['total_s']['median']
    worst = S['full']['total_s']['max']
    md += ['', f"Slowest full build {worst:.1f} s: {'within' if worst <= 180 else 'OVER'} the 3-min target "
           f"({worst / 180:.0%} of it). The fixed cost of the pipeline (baseline) is {tt:.1f} s, so "
           f"{ft - tt:.1f} s (median) is what {full[0]['notebooks']} notebooks add: about "
           f"{(ft - tt) / full[0]['notebooks']:.1f} s of wall time per notebook. "
           f"Clone time (not part of `make docs`, not in the table): {statistics.median(r['clone_s'] for r in full):.1f} s.", '',
           'Why this baseline: the same command on a clone whose nbs/ holds one trivial notebook (an exported function '
           'and one output) pays everything that does not grow with the notebooks — make and the system check, Python '
           'and nbdev/IPython start-up in the worker processes, a kernel, two pandoc runs per page and the module index '
           '— so the difference is the cost of our content, which is what grows toward the target as notebooks are '
           'added. Pandoc alone on the same files would time only part of one phase, and a plain `nbdev-proc-nbs` does '
           'more than `make docs` runs (it executes whole test cells), so neither says what a contributor waits for.', '',
           'Phases are cut at the lines `make docs` prints: set-up ends at "rendering the notebooks", nbdev processing at '
           '"notebooks processed", rendering at "N pages in". Caches that a clean clone does not reset stay warm: the '
           'operating system\'s file cache and the .venv\'s compiled .pyc files (written once by the install).', '',
           f"## Every page in Chromium (headless, loopback, fresh context per load, n={res['loads']}; round-robin)", '',
           'Time to the load event (Navigation Timing `loadEventStart`, from navigation start): HTML, stylesheet, images '
           'and scripts fetched and run. Beside each page, its baseline: a plain HTML page of the same size (text '
           'paragraphs only) from the same server, loaded right after it.', '']
    over = [n for n, p in P.items() if p['over_1s']]
    worst_p = max(P.items(), key=lambda kv: kv[1]['max_ms'])
    md += [f"Pages over 1 s (slowest load): {', '.join(f'**{n}**' for n in over) if over else 'none'}. "
           f"Slowest page: {worst_p[0]} ({worst_p[1]['p50_ms']:.0f} ms p50, {worst_p[1]['max_ms']:.0f} ms max); "
           f"median over pages of the p50s: {statistics.median(p['p50_ms'] for p in P.values()):.0f} ms, of their plain twins "
           f"{statistics.median(p['plain_p50_ms'] for p in P.values()):.0f} ms.", '',
           '| page | HTML | elements | resources (bytes) | HTML received p50 | DOMContentLoaded p50 | load p50 | load max | plain page, same size: p50 / max | |',
           '|---|---|---|---|---|---|---|---|---|---|']
    for n, p in sorted(P.items(), key=lambda kv: -kv[1]['p50_ms']):
        flag = '⚠ over 1 s' if p['over_1s'] else ''
        md.append(f"| {n} | {p['html_bytes'] / 1024:.0f} KiB | {p['elements']} | {p['resources']} ({p['resource_bytes'] / 1024:.0f} KiB) | "
                  f"{p['response_end_p50_ms']:.0f} ms | {p['dom_content_loaded_p50_ms']:.0f} ms | {p['p50_ms']:.0f} ms | "
                  f"{p['max_ms']:.0f} ms | {p['plain_p50_ms']:.0f} / {p['plain_max_ms']:.0f} ms | {flag} |")
    md += ['', 'Resources are what the page fetched besides its HTML (docs.css, images), bytes as transferred (no '
           'compression: http.server). Elements: the page\'s DOM size, a plain page of the same size has far fewer.', '',
           f"Command: `{res['command']}`", '']
    return '\n'.join(md)


if __name__ == '__main__': main()
