#!/usr/bin/env python
"""Widget benchmarks (issues: the <growth-chat> widget; 21, a panel a quarter of the weight). Not a test: it records
numbers, it never fails on them.

    .venv/bin/python bench/widget.py [--runs 15] [--baseline-dist DIR] [--smoke]

Needs the built widget (`make widget`). With `--baseline-dist` (another build's widget/dist, e.g. the previous release
built in a git worktree) every measurement runs against both, side by side, in one run. Measures, on one machine:
  * bundle sizes from each dist (raw, gzip -9, brotli 11) against the build's budgets;
  * in Debian's Chromium (headless, fresh browser context per run, so nothing is cached):
      - a page view where the chat is never touched: which widget files it downloads and their bytes on the wire, once
        the page has loaded and the browser has been idle (requestIdleCallback, then 1 s);
      - script load → launcher visible: from the script's fetch start (Resource Timing) to the moment the
        launcher has a layout box (checked at once, then every animation frame); beside a baseline page whose deferred
        script only adds a plain fixed button (no custom element, no Shadow DOM);
      - click → panel interactive: from the click to the moment the panel's first control (the privacy notice's
        button) has a layout box; cold (preload="open": the panel is fetched, parsed and mounted after the click),
        on intent (the default: the pointer rests on the launcher 300 ms before the click, which fetches the panel;
        the 1.1.0 widget does not fetch on hover), warm (preload="idle": mounted before the click) and the baseline;
      - the cold and intent paths with the CPU slowed down 4× (Chromium's CPU throttling, a mid-range phone).
The files are served by leadchat's own asset routes (`register_widget`: precompressed Brotli, cache headers) under
uvicorn on loopback ports (one per dist); no database is needed. Writes bench/results/widget.json and .md
(`--smoke`: one run per case, results to a temporary folder).
"""
import argparse, json, os, platform, statistics, sys, tempfile
from datetime import datetime, timezone
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / 'tests'))
from apiserver import LiveServer  # noqa: E402
from leadchat.api import register_widget  # noqa: E402
from leadchat.config import Settings  # noqa: E402

RESULTS = ROOT / 'bench' / 'results'
DIST = ROOT / 'widget' / 'dist'
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic']
HOVER_MS = 300

BASELINE_JS = '''(() => {
  const b = document.createElement('button'); b.id = 'baseline-launcher'; b.textContent = 'Chat';
  b.style.cssText = 'position:fixed;right:20px;bottom:20px;width:58px;height:58px;border-radius:50%;border:0;background:#2a6f97;color:#fff';
  const p = document.createElement('div'); p.hidden = true;
  p.style.cssText = 'position:fixed;right:20px;bottom:90px;width:370px;height:500px;background:#fff;box-shadow:0 8px 30px #0004';
  p.innerHTML = '<p>This chat is powered by AI.</p><button class="baseline-ack">Got it</button>';
  b.addEventListener('click', () => { p.hidden = !p.hidden; });
  document.body.append(p, b);
})();'''

PAGE = '''<!doctype html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>bench</title></head>
<body><h1>A host page</h1><p>Some content.</p>{embed}</body></html>'''
EMBED = '<script src="/chat.js" defer></script>\n<growth-chat api-url="/chat" fallback-url="/contact"{extra}></growth-chat>'

# Installed before any page script: when an element matching the probe first has a layout box (now, or on a later frame).
PROBE = '''
window.__firstFrame = (find) => new Promise((resolve) => {
  const tick = () => { const el = find(); const r = el && el.getBoundingClientRect();
    if (r && r.width > 0 && r.height > 0) resolve(performance.now()); else requestAnimationFrame(tick); };
  tick();
});
window.__launcher = () => document.getElementById('baseline-launcher')
  || document.querySelector('growth-chat')?.shadowRoot?.querySelector('.gc-launcher');
window.__control = () => document.querySelector('.baseline-ack:not([hidden])')
  || document.querySelector('growth-chat')?.shadowRoot?.querySelector('.gc-panel:not([hidden]) .gc-gdpr-ack');
window.__visible = window.__firstFrame(window.__launcher);
'''


def app(settings: Settings) -> FastAPI:
    a = FastAPI()
    register_widget(a, settings)
    pages = {'baseline': '<script src="/bench/baseline.js" defer></script>',
             'widget': EMBED.format(extra=''),
             'widget-idle': EMBED.format(extra=' preload="idle"'),
             'widget-cold': EMBED.format(extra=' preload="open"')}

    @a.get('/bench/{name}.html')
    async def page(name: str): return HTMLResponse(PAGE.format(embed=pages[name]))

    @a.get('/bench/baseline.js')
    async def baseline(): return Response(BASELINE_JS, media_type='text/javascript')
    return a


def pct(xs, p): return statistics.quantiles(xs, n=100, method='inclusive')[p - 1] if len(xs) > 1 else xs[0]
def summary(xs): return dict(n=len(xs), p50_ms=round(statistics.median(xs), 2), p95_ms=round(pct(xs, 95), 2),
                             min_ms=round(min(xs), 2))


def one_run(browser, url: str, script: str, *, click: bool, warm: bool = False, hover: bool = False, cpu: float = 1) -> dict:
    ctx = browser.new_context(viewport={'width': 1280, 'height': 800})
    ctx.add_init_script(PROBE)
    page = ctx.new_page()
    if cpu != 1: ctx.new_cdp_session(page).send('Emulation.setCPUThrottlingRate', {'rate': cpu})
    page.goto(url)
    visible = page.evaluate('window.__visible')
    start = page.evaluate('(s) => performance.getEntriesByType("resource").find(e => e.name.endsWith(s)).startTime', script)
    out = {'load_to_launcher_ms': visible - start}
    if click:
        if warm:   # the idle preload has mounted the panel (hidden) before the visitor clicks
            page.wait_for_function('!!document.querySelector("growth-chat").shadowRoot.querySelector(".gc-mount .gc-gdpr-ack")')
        if hover:  # the pointer rests on the launcher before the click (intent: the panel is fetched now)
            box = page.locator('growth-chat .gc-launcher').bounding_box()
            page.mouse.move(box['x'] + box['width'] / 2, box['y'] + box['height'] / 2)
            page.wait_for_timeout(HOVER_MS)
        out['click_to_interactive_ms'] = page.evaluate('''async () => {
            const t0 = performance.now(); window.__launcher().click();
            return (await window.__firstFrame(window.__control)) - t0; }''')
    ctx.close()
    return out


def untouched(browser, url: str) -> dict:
    "A page view where the chat is never touched: the widget files it downloads, and their bytes on the wire."
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(url)
    page.wait_for_load_state('load')
    page.evaluate('new Promise((r) => requestIdleCallback(() => setTimeout(r, 1000)))')
    files = page.evaluate('''() => performance.getEntriesByType("resource").filter((e) => /\\/(chat|panel-[0-9a-f]+)\\.js$/.test(e.name))
        .map((e) => ({file: new URL(e.name).pathname, bytes: e.transferSize}))''')
    ctx.close()
    return dict(files=[f['file'] for f in files], bytes=sum(f['bytes'] for f in files))


def sizes(dist: Path) -> dict:
    m = json.loads((dist / 'manifest.json').read_text())
    return dict(version=m['version'], panel_file=m['panel'], sizes=m['sizes'], budgets=m['budgets'])


def measure(browser, url: str, runs: int, new: bool) -> dict:
    "Every case against one server; round-robin over the cases, so drift hits every case alike; run 0 warms up."
    cases = {   # name: (page, script, click, warm, hover, cpu)
        'baseline: plain button': ('baseline', 'baseline.js', True, False, False, 1),
        'cold (preload="open")': ('widget-cold', 'chat.js', True, False, False, 1),
        f'intent: hover {HOVER_MS} ms before the click': ('widget', 'chat.js', True, False, True, 1),
        'warm (preload="idle")': ('widget-idle' if new else 'widget', 'chat.js', True, True, False, 1),
        'baseline: plain button, CPU 4× slower': ('baseline', 'baseline.js', True, False, False, 4),
        'cold, CPU 4× slower': ('widget-cold', 'chat.js', True, False, False, 4),
        f'intent: hover {HOVER_MS} ms before the click, CPU 4× slower': ('widget', 'chat.js', True, False, True, 4),
    }
    if not new:   # 1.1.0 fetches nothing on hover (its default page preloads on idle: that is the warm case)
        cases = {k: v for k, v in cases.items() if not k.startswith('intent')}
    out = {k: [] for k in cases}
    for i in range(runs + 1):
        for name, (page, script, click, warm, hover, cpu) in cases.items():
            r = one_run(browser, f'{url}/bench/{page}.html', script, click=click, warm=warm, hover=hover, cpu=cpu)
            if i: out[name].append(r)
    return {k: {m: summary([r[m] for r in v]) for m in v[0]} for k, v in out.items()}


def main():
    global RESULTS
    ap = argparse.ArgumentParser()
    ap.add_argument('--runs', type=int, default=15)
    ap.add_argument('--baseline-dist', type=Path, help="another build's widget/dist (e.g. the previous release), measured side by side")
    ap.add_argument('--smoke', action='store_true', help='one run per case; results to a temporary folder')
    a = ap.parse_args()
    if a.smoke:
        a.runs = 1
        RESULTS = Path(tempfile.mkdtemp(prefix='lc-bench-smoke-'))
    dists = {'new': DIST} | ({'old': a.baseline_dist} if a.baseline_dist else {})
    for d in dists.values():
        if not (d / 'manifest.json').is_file(): sys.exit(f'{d} is not a built widget/dist: run `make widget` (or npm ci && npm run build) first')
    res = dict(machine=dict(python=platform.python_version(), cpus=os.cpu_count(), platform=platform.platform()),
               at=datetime.now(timezone.utc).isoformat(timespec='seconds'), runs=a.runs,
               bundles={k: sizes(d) for k, d in dists.items()}, untouched={}, timings={})
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path='/usr/bin/chromium', args=CHROMIUM_ARGS)
        for key, dist in dists.items():
            settings = Settings(rag_relevance_threshold=0.4, business_hours_timezone='Europe/Madrid', handoff_channels='crm',
                                leadchat_widget_dir=dist)
            with LiveServer(app(settings)) as srv:
                res['untouched'][key] = untouched(browser, f'{srv.url}/bench/widget.html')
                res['timings'][key] = measure(browser, srv.url, a.runs, new=key == 'new')
        browser.close()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / 'widget.json').write_text(json.dumps(res, indent=2) + '\n')
    md = report(res)
    (RESULTS / 'widget.md').write_text(md)
    print(md)


def report(res: dict) -> str:
    B, T, U = res['bundles'], res['timings'], res['untouched']
    keys = [k for k in ('old', 'new') if k in B]
    label = {k: f"{B[k]['version']} ({'baseline' if k == 'old' else 'this build'})" for k in keys}
    kib = lambda n: f'{n / 1024:.1f} KiB'
    ms = lambda s: f"{s['p50_ms']:.1f} ms ({s['p95_ms']:.1f})"
    md = [f"# Widget benchmarks ({res['at']}, {res['machine']['cpus']} CPUs, Python {res['machine']['python']}, "
          f"widget {' vs '.join(label[k] for k in keys)})", '',
          '## Bundles (widget/dist)', '',
          '| widget | file | raw | gzip -9 | brotli 11 | budget (gzip) | of budget |', '|---|---|---|---|---|---|---|']
    for k in keys:
        b = B[k]
        for name, file in (('launcher', '`chat.js` (launcher)'), ('panel', f"`{b['panel_file']}` (panel)")):
            s, bud = b['sizes'][name], b['budgets'][name]
            md.append(f"| {label[k]} | {file} | {kib(s['raw'])} | {kib(s['gzip'])} | {kib(s['brotli'])} | {kib(bud)} | {s['gzip'] / bud:.0%} |")
    md += ['', '## A page view where the chat is never touched (default attributes; after load, idle and 1 s)', '',
           '| widget | files downloaded | bytes on the wire |', '|---|---|---|']
    for k in keys:
        md.append(f"| {label[k]} | {', '.join('`' + f.rsplit('/', 1)[-1] + '`' for f in U[k]['files'])} | {kib(U[k]['bytes'])} |")
    md += ['', f"## In Chromium (headless, loopback, fresh context per run, n={res['runs']}; medians, p95 in brackets)", '',
           '| case | ' + ' | '.join(f'{label[k]}: launcher visible | {label[k]}: click → interactive' for k in keys) + ' |',
           '|---|' + '---|---|' * len(keys)]
    cases = list(dict.fromkeys(c for k in keys for c in T[k]))
    for c in cases:
        cells = []
        for k in keys:
            v = T[k].get(c)
            cells += [ms(v['load_to_launcher_ms']), ms(v['click_to_interactive_ms'])] if v else ['n/a', 'n/a']
        md.append(f'| {c} | ' + ' | '.join(cells) + ' |')
    md += ['', f'"n/a": the 1.1.0 widget does not fetch its panel on hover (its default, preload="idle", fetched it on every '
           'page view once the browser was idle: the warm row). "intent" is this build\'s default: the pointer rests on the '
           f'launcher {HOVER_MS} ms before the click, with a cold cache, so the panel is fetched, parsed and mounted during '
           'the hover (or finished after the click when that takes longer).',
           '', 'An element counts as shown once it has a layout box (checked right away, then on every animation frame, '
           '~16.7 ms apart); "interactive" is when the privacy notice\'s "Got it" button, the panel\'s first control, '
           'has one. The page, chat.js and the panel come from leadchat\'s asset routes on loopback, so no network '
           'time is in these figures: on a real connection the cold path adds the download of the panel '
           f"({', '.join(f'{label[k]}: ' + kib(B[k]['sizes']['panel']['brotli']) for k in keys)} with Brotli).",
           '', f"Command: `.venv/bin/python bench/widget.py --runs {res['runs']}"
           + (' --baseline-dist <1.1.0 widget/dist>`' if 'old' in keys else '`'), '']
    return '\n'.join(md)


if __name__ == '__main__': main()
