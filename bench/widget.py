#!/usr/bin/env python
"""Widget benchmarks (issue: the <growth-chat> widget). Not a test: it records numbers, it never fails on them.

    .venv/bin/python bench/widget.py [--runs 15]

Needs the built widget (`make widget`). Measures, in one run and on one machine:
  * bundle sizes from widget/dist (raw, gzip -9, brotli 11) against the build's budgets (12 KiB / 180 KiB gzip);
  * in Debian's Chromium (headless, fresh browser context per run, so nothing is cached):
      - script load → launcher visible: from the script's fetch start (Resource Timing) to the moment the
        launcher has a layout box (checked at once, then every animation frame); chat.js beside a baseline page whose deferred script only adds a
        plain fixed button (no custom element, no Shadow DOM);
      - click → panel interactive: from the click to the moment the panel's first control (the privacy
        notice's button) has a layout box; cold (preload="open": the panel bundle is fetched, parsed and React
        mounted after the click), warm (the default preload="idle": the panel is already mounted) and the
        baseline (the plain button shows a static panel);
      - the same cold paths with the CPU slowed down 4× (Chromium's CPU throttling, a mid-range phone).
The files are served by leadchat's own asset routes (`register_widget`: precompressed Brotli, cache headers)
under uvicorn on a loopback port; no database is needed for them. Writes bench/results/widget.json and .md.
"""
import argparse, json, os, platform, statistics, sys
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
             'widget': '<script src="/chat.js" defer></script>\n<growth-chat api-url="/chat" fallback-url="/contact"></growth-chat>',
             'widget-cold': '<script src="/chat.js" defer></script>\n<growth-chat api-url="/chat" fallback-url="/contact" preload="open"></growth-chat>'}

    @a.get('/bench/{name}.html')
    async def page(name: str): return HTMLResponse(PAGE.format(embed=pages[name]))

    @a.get('/bench/baseline.js')
    async def baseline(): return Response(BASELINE_JS, media_type='text/javascript')
    return a


def pct(xs, p): return statistics.quantiles(xs, n=100, method='inclusive')[p - 1] if len(xs) > 1 else xs[0]
def summary(xs): return dict(n=len(xs), p50_ms=round(statistics.median(xs), 2), p95_ms=round(pct(xs, 95), 2),
                             min_ms=round(min(xs), 2))


def one_run(browser, url: str, script: str, *, click: bool, warm: bool = False, cpu: float = 1) -> dict:
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
        out['click_to_interactive_ms'] = page.evaluate('''async () => {
            const t0 = performance.now(); window.__launcher().click();
            return (await window.__firstFrame(window.__control)) - t0; }''')
    ctx.close()
    return out


def sizes() -> dict:
    m = json.loads((DIST / 'manifest.json').read_text())
    return dict(version=m['version'], panel_file=m['panel'], sizes=m['sizes'], budgets=m['budgets'])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--runs', type=int, default=15)
    a = ap.parse_args()
    if not (DIST / 'manifest.json').is_file(): sys.exit('widget/dist is not built: run `make widget` first')
    res = dict(machine=dict(python=platform.python_version(), cpus=os.cpu_count(), platform=platform.platform()),
               at=datetime.now(timezone.utc).isoformat(timespec='seconds'), bundles=sizes())
    settings = Settings(rag_relevance_threshold=0.4, business_hours_timezone='Europe/Madrid', handoff_channels='crm',
                        leadchat_widget_dir=DIST)
    cases = {   # name: (page, script, click, warm, cpu)
        'baseline: plain button': ('baseline', 'baseline.js', True, False, 1),
        'widget, cold (preload="open")': ('widget-cold', 'chat.js', True, False, 1),
        'widget, warm (preload="idle", default)': ('widget', 'chat.js', True, True, 1),
        'baseline: plain button, CPU 4× slower': ('baseline', 'baseline.js', True, False, 4),
        'widget, cold, CPU 4× slower': ('widget-cold', 'chat.js', True, False, 4),
    }
    with LiveServer(app(settings)) as srv, sync_playwright() as p:
        browser = p.chromium.launch(executable_path='/usr/bin/chromium', args=CHROMIUM_ARGS)
        runs = {k: [] for k in cases}
        for i in range(a.runs + 1):                    # round-robin, so drift hits every case alike; run 0 warms up
            for name, (page, script, click, warm, cpu) in cases.items():
                r = one_run(browser, f'{srv.url}/bench/{page}.html', script, click=click, warm=warm, cpu=cpu)
                if i: runs[name].append(r)
        browser.close()
    res['timings'] = {k: {m: summary([r[m] for r in v]) for m in v[0]} for k, v in runs.items()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / 'widget.json').write_text(json.dumps(res, indent=2) + '\n')

    b, T = res['bundles'], res['timings']
    kib = lambda n: f'{n / 1024:.1f} KiB'
    md = [f"# Widget benchmarks ({res['at']}, {res['machine']['cpus']} CPUs, Python {res['machine']['python']}, "
          f"widget {b['version']})", '',
          '## Bundles (widget/dist)', '',
          '| file | raw | gzip -9 | brotli 11 | budget (gzip) | of budget |', '|---|---|---|---|---|---|']
    for name, label in (('launcher', '`chat.js` (launcher)'), ('panel', f"`{b['panel_file']}` (panel)")):
        s, bud = b['sizes'][name], b['budgets'][name]
        md.append(f"| {label} | {kib(s['raw'])} | {kib(s['gzip'])} | {kib(s['brotli'])} | {kib(bud)} | {s['gzip'] / bud:.0%} |")
    md += ['', f"## In Chromium (headless, loopback, fresh context per run, n={a.runs}; medians, p95 in brackets)", '',
           '| page | script load → launcher visible | click → panel interactive |', '|---|---|---|']
    for k, v in T.items():
        l, c = v['load_to_launcher_ms'], v['click_to_interactive_ms']
        md.append(f"| {k} | {l['p50_ms']:.1f} ms ({l['p95_ms']:.1f}) | {c['p50_ms']:.1f} ms ({c['p95_ms']:.1f}) |")
    base, cold, warm = T['baseline: plain button'], T['widget, cold (preload="open")'], T['widget, warm (preload="idle", default)']
    base4, cold4 = T['baseline: plain button, CPU 4× slower'], T['widget, cold, CPU 4× slower']
    r = lambda x, y: f"{x['p50_ms'] / y['p50_ms']:.1f}×" if y['p50_ms'] else 'n/a'
    md += ['', 'Ratios to the baseline of the same run (medians): launcher visible '
           f"{r(cold['load_to_launcher_ms'], base['load_to_launcher_ms'])}; "
           f"click → interactive cold {r(cold['click_to_interactive_ms'], base['click_to_interactive_ms'])}, "
           f"warm {r(warm['click_to_interactive_ms'], base['click_to_interactive_ms'])}; "
           f"with the CPU 4× slower, cold {r(cold4['click_to_interactive_ms'], base4['click_to_interactive_ms'])}.",
           '', 'An element counts as shown once it has a layout box (checked right away, then on every animation frame, '
           '~16.7 ms apart); "interactive" is when the privacy notice\'s "Got it" button, the panel\'s first control, '
           'has one. The page, chat.js and the panel come from leadchat\'s asset routes on loopback, so no network '
           'time is in these figures: on a real connection the cold path adds the download of the panel '
           f"({kib(b['sizes']['panel']['brotli'])} with Brotli).",
           '', f"Command: `.venv/bin/python bench/widget.py --runs {a.runs}`", '']
    (RESULTS / 'widget.md').write_text('\n'.join(md))
    print('\n'.join(md))


if __name__ == '__main__': main()
