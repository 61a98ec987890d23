"""The docs site (issue 20): tools/make_docs.py (what `make docs` runs, pandoc path) builds it into a temporary
directory, http.server serves it, and Debian's Chromium opens every page: every internal link and anchor resolves,
every image loads, every notebook's page is reachable from the index, and each module's page (the one its `Docs:`
link names) shows every name of its `__all__`.
"""
import ast
import base64
import functools
import importlib.util
import json
import http.server
import re
import shutil
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path
from urllib.parse import urldefrag, urlparse

import pytest
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic']
SITE_URL = 'https://leadchat.github.io/leadchat/'
PAGE_JS = """() => ({
  links: [...document.querySelectorAll('a[href]')].map(a => a.href),
  ids: [...document.querySelectorAll('[id]')].map(e => e.id),
  images: [...document.images].map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0]),
  headings: [...document.querySelectorAll('main h2, main h3, main h4')].map(h => h.textContent.trim()),
})"""


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a): pass


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "The site built by the same script `make docs` runs, served on a loopback port."
    assert shutil.which('pandoc'), 'pandoc is needed for the docs site: run tools/bootstrap-system.sh (apt-get install pandoc)'
    tmp = tmp_path_factory.mktemp('docs')
    out = tmp / 'site'
    subprocess.run([sys.executable, 'tools/make_docs.py', '--pandoc', '--out', str(out), '--proc', str(tmp / 'proc')],
                   cwd=ROOT, check=True)
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(QuietHandler, directory=str(out)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield out, f'http://127.0.0.1:{srv.server_address[1]}/'
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope='module')
def pages(site):
    "Every HTML page of the site opened in Chromium: its links, element ids, images and headings; failed requests."
    out, base = site
    seen, failed = {}, []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path='/usr/bin/chromium', args=CHROMIUM_ARGS)
        page = b.new_page()
        page.on('requestfailed', lambda r: failed.append(r.url))
        page.on('response', lambda r: r.status >= 400 and failed.append(f'{r.status} {r.url}'))
        for f in sorted(out.rglob('*.html')):
            name = f.relative_to(out).as_posix()
            page.goto(base + name, wait_until='load')
            seen[name] = page.evaluate(PAGE_JS)
        b.close()
    return base, seen, failed


def notebook_pages() -> dict[str, str]:
    "nbs/*.ipynb -> the page Quarto would give it (numeric prefix dropped)."
    return {nb.name: re.sub(r'^\d+[a-z]?_', '', nb.stem) + '.html' for nb in sorted((ROOT / 'nbs').glob('*.ipynb'))}


def test_every_link_and_image_resolves(site, pages):
    out, _ = site
    base, seen, failed = pages
    assert 'index.html' in seen and 'modules.html' in seen, sorted(seen)
    assert not failed, f'requests that failed while loading the pages: {failed}'
    broken = []
    for name, info in seen.items():
        broken += [f'{name}: <img src={src}> did not load' for src, ok in info['images'] if not ok]
        for href in info['links']:
            if not href.startswith(base): continue            # external: GitHub source links
            path, frag = urldefrag(href)
            target = urlparse(path).path.removeprefix(urlparse(base).path) or 'index.html'
            if not (out / target).is_file(): broken.append(f'{name}: link to missing {target}')
            elif frag and target.endswith('.html') and frag not in seen[target]['ids']:
                broken.append(f'{name}: link to missing anchor {target}#{frag}')
    assert not broken, '\n'.join(broken)


def test_every_notebook_is_reachable_from_the_index(pages):
    base, seen, _ = pages
    reach, todo = {'index.html'}, deque(['index.html'])
    while todo:
        for href in seen[todo.popleft()]['links']:
            t = urldefrag(href)[0].removeprefix(base)
            if t in seen and t not in reach: reach.add(t); todo.append(t)
    missing = {nb: p for nb, p in notebook_pages().items() if p not in reach}
    assert not missing, f'notebooks whose page the site does not link to: {missing}'


def exported(py: Path) -> list[str]:
    for node in ast.parse(py.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, 'id', '') == '__all__' for t in node.targets):
            return list(ast.literal_eval(node.value))
    return []


def test_each_module_page_shows_its_exported_names(site, pages):
    "The `Docs:` link of each module names a page of the site, and that page has an entry for every exported name."
    out, _ = site
    _, seen, _ = pages
    modules = {py: m.group(1) for py in sorted((ROOT / 'leadchat').glob('*.py'))
               if (m := re.search(r'^Docs: (https?://[^\s"]+)', py.read_text(), re.M))}
    assert len(modules) >= 20, modules
    problems = []
    for py, url in modules.items():
        assert url.startswith(SITE_URL), f'{py.name}: Docs link {url} is not on {SITE_URL}'
        rel = url.removeprefix(SITE_URL)
        if not (out / rel).is_file(): problems.append(f'{py.name}: Docs link {url} names {rel}, which the site does not have')
        html = rel.removesuffix('.md')
        if html not in seen: problems.append(f'{py.name}: no page {html}'); continue
        heads = set(seen[html]['headings'])
        if missing := [n for n in exported(py) if n not in heads]:
            problems.append(f'{py.name}: {html} has no entry for {missing}')
    assert not problems, '\n'.join(problems)


def load_make_docs():
    spec = importlib.util.spec_from_file_location('make_docs', ROOT / 'tools' / 'make_docs.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# a 2x2 PNG
PNG = ('iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP8z8DAwMDAxMDAwMDAAAANHQEDasKb6QAAAABJRU5ErkJggg==')


def test_outputs_become_images_tables_and_text(tmp_path):
    "Cell outputs as a notebook commits them: plots as image files, HTML tables, plotly figures without a CDN, streams."
    md = load_make_docs()
    code = lambda src, *outs: {'cell_type': 'code', 'source': src, 'metadata': {}, 'outputs': list(outs)}
    nb = {'cells': [
        {'cell_type': 'raw', 'source': '---\ntitle: Outputs\noutput-file: outputs.html\n---\n', 'metadata': {}},
        code('plt.show()', {'output_type': 'display_data', 'data': {'image/png': PNG, 'text/plain': '<Figure>'}}),
        code('df', {'output_type': 'execute_result', 'data': {'text/html': '<table><tr><th>level</th></tr><tr><td>hot</td></tr></table>',
                                                              'text/plain': 'level\nhot'}}),
        code('fig', {'output_type': 'display_data', 'data': {md.PLOTLY: {'data': [{'type': 'bar', 'x': [1], 'y': [2]}], 'layout': {}},
                                                             'text/html': '<script src="https://cdn.plot.ly/x.js"></script>'}}),
        code('#| echo: false\nprint("hello")', {'output_type': 'stream', 'name': 'stdout', 'text': 'hello\n'}),
        code('#| hide_me: true\nx = 1'),
    ], 'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5}
    (tmp_path / '01_outputs.ipynb').write_text(json.dumps(nb))
    page = md.Page(tmp_path / '01_outputs.ipynb', tmp_path / 'site')
    text = page.markdown()
    assert (page.name, page.title) == ('outputs.html', 'Outputs')
    img = re.search(r'!\[[^\]]*\]\((outputs_files/figure-1\.png)\)', text)
    assert img and (tmp_path / 'site' / img[1]).read_bytes() == base64.b64decode(PNG), text
    assert '<td>hot</td>' in text                                  # the table, as HTML
    # the figure as a PNG (kaleido with Debian's Chromium), or drawn by a local plotly.js; never from a CDN
    assert 'cdn.plot.ly' not in text and ('Plotly.newPlot' in text) != ('figure-2.png' in text), text
    assert (tmp_path / 'site' / 'plotly.min.js').exists() or (tmp_path / 'site' / 'outputs_files' / 'figure-2.png').read_bytes()[:4] == b'\x89PNG'
    assert 'hello' in text and 'print("hello")' not in text        # echo: false hides the code, not its output
    assert '#|' not in text and 'x = 1' in text                    # directives are not shown


def test_a_committed_figure_shows_as_committed(tmp_path):
    "A notebook committed with a plotly figure and its PNG (tools/nbedit.py run): the page shows that PNG, nothing re-drawn."
    md = load_make_docs()
    nb = {'cells': [{'cell_type': 'code', 'source': 'fig.show()', 'metadata': {}, 'outputs': [
        {'output_type': 'display_data', 'metadata': {},
         'data': {md.PLOTLY: {'data': [{'type': 'bar', 'x': [1], 'y': [2]}], 'layout': {}}, 'image/png': PNG, 'text/plain': 'fig'}}]}],
        'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5}
    (tmp_path / '02_fig.ipynb').write_text(json.dumps(nb))
    page = md.Page(tmp_path / '02_fig.ipynb', tmp_path / 'site')
    text = page.markdown()
    assert 'fig_files/figure-1.png' in text and 'Plotly' not in text, text
    assert (tmp_path / 'site' / 'fig_files' / 'figure-1.png').read_bytes() == base64.b64decode(PNG)


def test_committed_notebooks_show_their_results(site):
    "The outputs the notebooks are committed with reach the pages: tables, the histogram, the graph drawn, the eval summary."
    out, _ = site
    page = lambda n: (out / n).read_text()
    assert re.search(r'<td>Mon 12 Jan 10:00 CET</td>', page('hours.html'))                      # business-hours tables
    assert '<th>best chunks (cosine)</th>' in page('retrieval.html')                             # the RAG score table
    assert re.search(r'<img src="calibrate_files/figure-\d+\.png"', page('calibrate.html'))     # the histogram
    assert re.search(r'<img src="graph_files/figure-\d+\.png"', page('graph.html')) and 'graph TD;' in page('graph.html')
    assert '<td>cases passed</td>' in page('eval.html') and 'LAYER 7' in page('prompts.html')
    for f in out.glob('*_files/figure-*.png'): assert f.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n', f


def test_screenshots_of_the_site(site, tmp_path):
    "make_docs.py --screenshots: the README's three pictures, 1280x800, the calibrate one showing its histogram."
    import struct
    out, _ = site
    shots = load_make_docs().screenshots(out, tmp_path)
    assert sorted(f.name for f in shots) == ['docs-calibrate.png', 'docs-index.png', 'docs-state.png']
    for f in shots:
        raw = f.read_bytes()
        assert raw[:8] == b'\x89PNG\r\n\x1a\n' and struct.unpack('>II', raw[16:24]) == (1280, 800), f
    assert len({f.read_bytes() for f in shots}) == 3                      # three different pages
