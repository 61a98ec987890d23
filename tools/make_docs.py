#!/usr/bin/env python
"""Render the notebooks into a static docs site under _docs/ (`make docs`).

The notebooks are processed the way `nbdev-proc-nbs` does (nbdev's processors: frontmatter, `show_doc` for every
exported symbol, hidden cells, directives) into `--proc`. Then, with `quarto` on the PATH, Quarto renders them as
`nbdev-docs` does. Quarto cannot be installed on our build machines, so otherwise pandoc turns each into
`<page>.html` and `<page>.html.md` (the Markdown the module docstrings' `Docs:` links name) with the sidebar of
nbs/sidebar.yml, the module index (modules.html), highlighting and the cells' outputs (images, tables).
Serve it with: python -m http.server -d _docs 8080
"""
import argparse, ast, base64, concurrent.futures as cf, html, json, os, re, shutil, subprocess, sys, threading, time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(__file__).resolve()
_directive = re.compile(r'^\s*#\|\s*([\w-]+)\s*:?\s*(.*)$')
_prefix = re.compile(r'^\d+[a-z]?_')


# ---------------------------------------------------------------- processing (what `nbdev-proc-nbs` does)
def _filter():
    "nbdev's processors, with an `exec_show_docs` that runs only what the API reference needs."
    from nbdev.processors import FilterDefaults, exec_show_docs, _show_docs, cell_lang
    from fastcore.basics import str2bool
    from nbdev.config import get_config

    _full = {'export', 'exports', 'exporti', 'exec_doc'}
    _imp = (ast.Import, ast.ImportFrom)

    class exec_api_docs(exec_show_docs):
        """Run exported cells, `show_doc` cells and imports. nbdev also runs *whole* cells that contain an import,
        test code included (its FAQ: keep imports in their own cell); here only their import statements run,
        so a test cell needing an earlier unexported cell, or a database, does not break the build and
        the outputs committed with the notebook stay as they are."""
        def begin(self):
            super().begin()
            if hasattr(self, 'k'): self.k.run_cell(OWN_DOCS.replace('PKG', repr(get_config().lib_name)))

        def __call__(self, cell):
            if not self.nb.has_docs_ or not hasattr(self, 'k'): return
            if str2bool(getattr(self.nb, 'frontmatter_', {}).get('skip_showdoc', False)): return
            if cell.cell_type != 'code' or cell_lang(cell) != 'python' or not cell.source: return
            if cell.directives_.get('eval', '').lower() == 'false': return
            trees = cell.parsed_()
            if not trees: return
            if cell.directives_.keys() & _full or _show_docs(trees) or all(isinstance(t, _imp) for t in trees):
                self.k.cell(cell)
            elif imps := [t for t in trees if isinstance(t, _imp)]: self.k.run('\n'.join(ast.unparse(t) for t in imps))
            else: return
            if e := self.k.exc:
                raise RuntimeError(f'{self.nb.path_ if hasattr(self.nb, "path_") else ""} cell {cell.idx_}:\n'
                                   f'{cell.source}\n{type(e).__name__}: {e}') from e

    class Filter(FilterDefaults):
        def base_procs(self): return [exec_api_docs if p is exec_show_docs else p for p in super().base_procs()]
    return Filter


# show_doc takes a class's docstring from its bases when it has none: a pydantic model without one would show
# BaseModel's (with links into pydantic's docs). The API reference shows only the docstrings written here.
OWN_DOCS = """
import fastcore.docments as _fd, inspect as _in
def _own_getdoc(o, _getdoc=_in.getdoc, _pkg=PKG):
    if isinstance(o, type):
        b = next((b for b in o.__mro__ if b.__dict__.get('__doc__')), None)
        return _in.cleandoc(b.__doc__) if b and b.__module__.split('.')[0] == _pkg else None
    if getattr(o, '__name__', '') == '__init__' and getattr(o, '__module__', _pkg).split('.')[0] != _pkg: return None
    return _getdoc(o)
_fd.getdoc = _own_getdoc
"""


def proc_batch(nbs: str, pairs: list[str]) -> None:
    "Process notebooks SRC=DST one after another (a worker process; cwd = nbs/ as for `nbdev-test`)."
    from fastcore.nbio import read_nb, write_nb
    os.chdir(nbs); os.environ['IN_TEST'] = '1'
    filt = _filter()
    for pair in pairs:
        src, dst = pair.split('=', 1)
        try: nb = read_nb(src); filt()(nb); write_nb(nb, dst)
        except Exception as e: sys.exit(f'!! docs: processing {src} failed: {e}\n!! fix that cell (nbdev-test the notebook), then run make docs again')


def process(nbs: Path, proc: Path, workers: int) -> None:
    "Processed copies of the changed notebooks (and the other files of nbs/) in `proc`."
    proc.mkdir(parents=True, exist_ok=True)
    newest = max(SCRIPT.stat().st_mtime, (ROOT / 'pyproject.toml').stat().st_mtime)
    jobs = []
    for s in sorted(nbs.rglob('*')):
        rel = s.relative_to(nbs)
        if not s.is_file() or any(p[0] in '._' for p in rel.parts): continue
        d = proc / rel
        if d.exists() and d.stat().st_mtime >= max(s.stat().st_mtime, newest): continue
        d.parent.mkdir(parents=True, exist_ok=True)
        if s.suffix == '.ipynb': jobs.append((str(s), str(d)))
        else: shutil.copy2(s, d)
    for d in proc.rglob('*.ipynb'):   # notebooks that were removed
        if not (nbs / d.relative_to(proc)).exists(): d.unlink()
    if not jobs: return
    batches = [[f'{s}={d}' for s, d in jobs[i::workers]] for i in range(min(workers, len(jobs)))]
    procs = [subprocess.Popen([sys.executable, str(SCRIPT), '--proc-batch', str(nbs), *b]) for b in batches]
    if any([p.wait() for p in procs]): sys.exit('!! docs: notebook processing failed (above)')


# ---------------------------------------------------------------- notebook -> markdown
def page_name(nb_path: Path, fm: dict) -> str:
    return fm.get('output-file') or _prefix.sub('', nb_path.stem) + '.html'


def frontmatter(nb: dict) -> dict:
    for c in nb['cells'][:2]:
        src = ''.join(c['source']).strip()
        if c['cell_type'] == 'raw' and src.startswith('---'): return yaml.safe_load(src.strip('-\n')) or {}
    return {}


PLOTLY = 'application/vnd.plotly.v1+json'
_doc_heading = r'^#{2,4} ([\w.]+)\s*$'


def _auto_id(text: str) -> str:
    "Pandoc's identifier for a heading (auto_identifiers), for plain headings."
    t = re.sub(r'[^\w\s.-]', '', re.sub(r'[`*]', '', text)).strip().lower()
    return re.sub(r'^[^a-z]+', '', re.sub(r'\s+', '-', t))


def _text(x) -> str: return ''.join(x) if isinstance(x, list) else (x or '')


def _fence(text: str, cls: str = '') -> str:
    text = re.sub(r'\x1b\[[0-9;]*[A-Za-z]', '', text).rstrip('\n')
    ticks = '`' * max(3, max((len(m) for m in re.findall(r'`+', text)), default=0) + 1)
    return f'{ticks}{cls}\n{text}\n{ticks}'


class Page:
    "One processed notebook rendered to pandoc Markdown; images go to `files`."
    def __init__(self, path: Path, out: Path):
        self.nb = json.loads(path.read_text())
        self.fm = frontmatter(self.nb)
        self.name = page_name(path, self.fm)
        self.title = self.fm.get('title') or path.stem
        self.source = path.name
        self.out, self.n_img = out, 0
        self.doc_ids = {m.lower() for c in self.nb['cells'] for o in c.get('outputs', [])
                        for m in re.findall(_doc_heading, _text(o.get('data', {}).get('text/markdown', '')), re.M)}

    def image(self, mime: str, data) -> str:
        ext = {'image/png': 'png', 'image/jpeg': 'jpg', 'image/svg+xml': 'svg', 'image/gif': 'gif'}[mime]
        self.n_img += 1
        rel = f'{self.name.removesuffix(".html")}_files/figure-{self.n_img}.{ext}'
        (self.out / rel).parent.mkdir(parents=True, exist_ok=True)
        if ext == 'svg': (self.out / rel).write_text(_text(data))
        else: (self.out / rel).write_bytes(base64.b64decode(_text(data)))
        return f'![Figure {self.n_img} of {self.title}]({rel})'

    def plotly(self, fig: dict) -> str:
        "A plotly figure: a PNG when kaleido is installed, else drawn by the plotly.js of the plotly package (no CDN)."
        import plotly.io as pio
        try: return self.image('image/png', base64.b64encode(pio.from_json(json.dumps(fig)).to_image('png')).decode())
        except Exception: pass
        js = self.out / 'plotly.min.js'
        if not js.exists():   # pages render in threads: write aside, then rename
            from plotly.offline import get_plotlyjs
            tmp = js.with_name(f'.plotly-{threading.get_ident()}.js'); tmp.write_text(get_plotlyjs()); tmp.replace(js)
        self.n_img += 1
        spec = json.dumps(fig).replace('</', '<\\/')
        return (f'```{{=html}}\n<div class="plotly-figure" id="plotly-{self.n_img}"></div><script src="plotly.min.js"></script>'
                f'<script>(f => Plotly.newPlot("plotly-{self.n_img}", f.data, f.layout, {{responsive: true}}))({spec})</script>\n```')

    def output(self, o: dict, asis: bool) -> str:
        t = o['output_type']
        if t == 'stream': return f'::: {{.cell-output .cell-output-{o.get("name", "stdout")}}}\n{_fence(_text(o["text"]))}\n:::'
        if t == 'error': return f'::: {{.cell-output .cell-output-error}}\n{_fence(chr(10).join(o.get("traceback", [])))}\n:::'
        d = o.get('data', {})
        if asis and ('text/markdown' in d or 'text/plain' in d):   # show_doc: its headings get nbdev's anchors (lower case)
            return re.sub(r'^(#{2,4}) ([\w.]+)\s*$', lambda m: f'{m[1]} {m[2]} {{#{m[2].lower()}}}',
                          _text(d.get('text/markdown') or d['text/plain']), flags=re.M)
        for mime in ('image/png', 'image/jpeg', 'image/svg+xml', 'image/gif'):
            if mime in d: return f'::: {{.cell-output .cell-output-display}}\n{self.image(mime, d[mime])}\n:::'
        if PLOTLY in d: return f'::: {{.cell-output .cell-output-display}}\n{self.plotly(d[PLOTLY])}\n:::'
        if 'text/html' in d and '<script' not in _text(d['text/html']):  # tables; scripts (CDN plots) need the network
            return f'::: {{.cell-output .cell-output-display}}\n```{{=html}}\n{_text(d["text/html"])}\n```\n:::'
        if 'text/markdown' in d: return f'::: {{.cell-output .cell-output-display}}\n{_text(d["text/markdown"])}\n:::'
        if 'text/plain' in d: return f'::: {{.cell-output .cell-output-display}}\n{_fence(_text(d["text/plain"]))}\n:::'
        return ''

    def cell(self, c: dict) -> str:
        src = _text(c['source'])
        if c['cell_type'] == 'markdown':
            for name, bundle in (c.get('attachments') or {}).items():   # pasted images
                mime = next((m for m in bundle if m.startswith('image/')), None)
                if mime: src = src.replace(f'attachment:{name}', re.search(r'\((.*)\)', self.image(mime, bundle[mime]))[1])
            return self.headings(src)
        if c['cell_type'] != 'code': return ''
        lines, dirs = src.splitlines(), {}
        while lines and (m := _directive.match(lines[0])): dirs[m.group(1)] = m.group(2).strip().lower(); lines.pop(0)
        if dirs.get('include') == 'false': return ''
        code = '\n'.join(l for l in lines if not _directive.match(l)).strip('\n')
        parts = [] if dirs.get('echo') == 'false' or not code else [_fence(code, ' python')]
        if dirs.get('output') != 'false':
            parts += [s for o in c.get('outputs', []) if (s := self.output(o, dirs.get('output') == 'asis'))]
        if not parts: return ''
        return '\n\n'.join(parts) if dirs.get('output') == 'asis' else '::: {.cell}\n' + '\n\n'.join(parts) + '\n:::'

    def headings(self, src: str) -> str:
        "A section named like an API entry (`## Settings`) gets its own anchor: the entry keeps the one nbdev links to."
        out, fence = [], None
        for line in src.split('\n'):
            if m := re.match(r'^\s*(`{3,}|~{3,})', line): fence = None if fence and m[1].startswith(fence) else fence or m[1]
            elif not fence and (m := re.match(r'^(#{1,6} )([^{]+?)\s*$', line)) and _auto_id(m[2]) in self.doc_ids:
                line = f'{m[1]}{m[2]} {{#section-{_auto_id(m[2])}}}'
            out.append(line)
        return '\n'.join(out)

    def markdown(self) -> str:
        body = [s for c in self.nb['cells'] if not (c['cell_type'] == 'raw' and _text(c['source']).startswith('---'))
                if (s := self.cell(c).strip())]
        return '\n\n'.join(body) + '\n'


# ---------------------------------------------------------------- site
CSS = """
:root { --fg:#1f2328; --muted:#57606a; --line:#d0d7de; --accent:#0b5cad; --bg2:#f6f8fa; }
* { box-sizing: border-box; }
body { margin:0; font:16px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--fg); }
a { color:var(--accent); }
header.site { position:sticky; top:0; z-index:2; background:#0b5cad; color:#fff; padding:.6rem 1.2rem; display:flex; gap:1.5rem; align-items:center; }
header.site a { color:#fff; text-decoration:none; font-weight:600; }
.layout { display:grid; grid-template-columns: 16rem minmax(0,1fr) 14rem; gap:2rem; max-width:92rem; margin:0 auto; padding:0 1.2rem; }
nav.sidebar, nav#TOC { position:sticky; top:3.2rem; align-self:start; max-height:calc(100vh - 3.5rem); overflow:auto; font-size:.9rem; padding:1rem 0; }
nav.sidebar ul, nav#TOC ul { list-style:none; padding-left:.8rem; margin:.2rem 0; }
nav.sidebar > ul { padding-left:0; }
nav.sidebar li { margin:.15rem 0; }
nav.sidebar a, nav#TOC a { color:var(--fg); text-decoration:none; }
nav.sidebar a.active { color:var(--accent); font-weight:600; }
nav.sidebar .section { font-weight:600; margin-top:.6rem; }
nav#TOC::before { content:"On this page"; font-weight:600; }
main { padding:1rem 0 4rem; min-width:0; }
main h1.title { margin-bottom:.2rem; }
p.description { color:var(--muted); font-size:1.1rem; margin-top:0; }
p.formats { font-size:.85rem; }
pre { background:var(--bg2); padding:.7rem .9rem; overflow:auto; border-radius:6px; font-size:.85rem; line-height:1.4; }
code { font-size:.9em; }
.cell { margin-bottom:1rem; }
.cell > div.sourceCode > pre { border-left:3px solid var(--line); }
.cell-output pre { background:#fff; border:1px solid var(--line); }
.cell-output-stderr pre { background:#fff8e6; }
.cell-output-error pre { background:#fdecec; }
.cell-output img { max-width:100%; height:auto; }
table { border-collapse:collapse; margin:.8rem 0; font-size:.9rem; display:block; overflow:auto; }
th, td { border:1px solid var(--line); padding:.3rem .6rem; text-align:left; vertical-align:top; }
hr { border:0; border-top:1px solid var(--line); margin:2rem 0 1rem; }
blockquote { color:var(--muted); border-left:3px solid var(--line); margin-left:0; padding-left:1rem; }
@media (max-width: 70rem) { .layout { grid-template-columns: 14rem minmax(0,1fr); } nav#TOC { display:none; } }
@media (max-width: 45rem) { .layout { display:block; } nav.sidebar { position:static; max-height:none; } }
"""

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$pagetitle$ – $site$</title>
$if(meta-description)$<meta name="description" content="$meta-description$">$endif$
<link rel="stylesheet" href="docs.css">
<style>
$highlighting-css$
</style>
</head>
<body>
<header class="site"><a href="index.html">$site$</a><a href="modules.html">Modules</a></header>
<div class="layout">
<nav class="sidebar" aria-label="Pages">@@SIDEBAR@@</nav>
<main>
<h1 class="title">$title$</h1>
$if(description)$<p class="description">$description$</p>$endif$
<p class="formats"><a href="$mdfile$">Markdown</a>$if(source)$ · source: $if(repo)$<a href="$repo$/blob/$branch$/nbs/$source$">$endif$<code>nbs/$source$</code>$if(repo)$</a>$endif$$endif$</p>
$body$
</main>
$if(toc)$<nav id="TOC" aria-label="On this page">$table-of-contents$</nav>$endif$
</div>
</body>
</html>
"""


def sidebar_entries(nbs: Path, names: list[str]) -> list:
    "nbs/sidebar.yml's contents (written from the notebook list when missing), plus any notebook it leaves out."
    yml = nbs / 'sidebar.yml'
    if not yml.exists():
        from nbdev.quarto import nbdev_sidebar
        nbdev_sidebar.__wrapped__(path=nbs, force=True)
    contents = (yaml.safe_load(yml.read_text()) or {}).get('website', {}).get('sidebar', {}).get('contents', [])
    seen = set(re.findall(r'[\w./-]+\.ipynb', yml.read_text()))
    missing = [n for n in names if n not in seen]
    return contents + ([{'section': 'Other', 'contents': missing}] if missing else [])


def sidebar_html(entries, pages: dict, current: str) -> str:
    items = []
    for e in entries:
        if isinstance(e, dict) and 'contents' in e:
            items.append(f'<li><div class="section">{html.escape(str(e.get("section", "")))}</div>'
                         f'{sidebar_html(e["contents"], pages, current)}</li>')
            continue
        f = e.get('href') if isinstance(e, dict) else e
        p = pages.get(Path(str(f)).name)
        if p is None: continue
        cls = ' class="active" aria-current="page"' if p.name == current else ''
        items.append(f'<li><a href="{p.name}"{cls}>{html.escape(p.title)}</a></li>')
    return '<ul>' + ''.join(items) + '</ul>'


def fix_links(text: str, site_url: str, pages: dict) -> str:
    "Site links become relative (so the local copy works); links to notebooks go to their pages."
    if site_url: text = text.replace(f'href="{site_url.rstrip("/")}/', 'href="')
    def nb(m):
        p = pages.get(Path(m.group(1)).name)
        return f'href="{p.name}{m.group(2) or ""}"' if p else m.group(0)
    return re.sub(r'href="(?!https?:)([^"#]+\.ipynb)(#[^"]*)?"', nb, text)


def _segment(lines: list[bytes], node: ast.AST) -> str:
    "ast.get_source_segment(src, node) from the source's lines split once (bytes: col offsets count UTF-8 bytes)."
    seg = lines[node.lineno - 1:node.end_lineno]
    seg[-1] = seg[-1][:node.end_col_offset]
    seg[0] = seg[0][node.col_offset:]
    return b''.join(seg).decode()


def module_info(lib: Path, nbs: Path) -> dict:
    "page name -> (module, docstring line, __all__, {name: assignment source}) from leadchat/*.py and the notebooks."
    info = {}
    for py in sorted(lib.glob('*.py')):
        src = py.read_text()
        tree = ast.parse(src)
        m = re.search(r'^# AUTOGENERATED! .*?File to edit: (\S+?\.ipynb)', src, re.M)
        if not m: continue
        names, assigns = [], {}
        lines = src.encode().splitlines(keepends=True)   # once: ast.get_source_segment splits the whole file per call
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, 'id', '') == '__all__' for t in node.targets):
                names = list(ast.literal_eval(node.value))
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                    if isinstance(t, ast.Name): assigns[t.id] = _segment(lines, node)
        info[Path(m.group(1)).name] = (f'{lib.name}.{py.stem}', (ast.get_docstring(tree) or '').splitlines()[0:1], names, assigns)
    return info


MD = 'markdown-smart-implicit_figures'


def pandoc(md: str, meta: dict, out_html: Path, template: Path, toc: bool) -> None:
    "`out_html` and `out_html`.md from pandoc Markdown; title and description are Markdown too."
    front = {k: meta.pop(k) for k in ('title', 'description') if k in meta}
    if front.get('description'): meta['meta-description'] = html.escape(' '.join(front['description'].replace('`', '').split()))
    md = '---\n' + yaml.safe_dump(front, allow_unicode=True) + '---\n\n' + md
    args = ['pandoc', '-f', MD, '-t', 'html5', '--standalone', f'--template={template}',
            '--highlight-style=pygments', '-o', str(out_html)]
    if toc: args += ['--toc', '--toc-depth=3', '-V', 'toc']
    for k, v in meta.items(): args += ['-V', f'{k}={v}']
    subprocess.run(args, input=md, text=True, check=True)
    gfm = subprocess.run(['pandoc', '-f', MD, '-t', 'gfm', '--wrap=none'], input=md, text=True, check=True, capture_output=True).stdout
    desc = f'> {front["description"]}\n\n' if front.get('description') else ''
    out_html.with_name(out_html.name + '.md').write_text(f'# {front["title"]}\n\n{desc}' + gfm)


def build(out: Path, proc: Path, workers: int, pandoc_only: bool = False) -> list[str]:
    from nbdev.config import get_config
    cfg = get_config(ROOT)
    nbs, lib = Path(cfg.nbs_path), Path(cfg.lib_path)
    site = yaml.safe_load((nbs / 'nbdev.yml').read_text()).get('website', {})
    t0 = time.time()
    names = [f.name for f in sorted(nbs.glob('*.ipynb'))]
    entries = sidebar_entries(nbs, names)
    process(nbs, proc, workers)
    print(f'==> [docs] notebooks processed into {proc} ({time.time() - t0:.0f}s)')
    if shutil.which('quarto') and not pandoc_only: return quarto(nbs, proc, out, workers)
    if out.exists(): shutil.rmtree(out)
    out.mkdir(parents=True)
    for f in proc.rglob('*'):   # images and other files the notebooks refer to
        rel = f.relative_to(proc)
        if f.is_file() and f.suffix not in ('.ipynb', '.yml', '.yaml') and not any(p[0] in '._' for p in rel.parts):
            (out / rel).parent.mkdir(parents=True, exist_ok=True); shutil.copy2(f, out / rel)
    (out / 'docs.css').write_text(CSS + '\n/* nbs/styles.css */\n' + ((nbs / 'styles.css').read_text() if (nbs / 'styles.css').exists() else ''))
    pages = {p.source: p for p in (Page(f, out) for f in sorted(proc.glob('*.ipynb')))}
    mods = module_info(lib, nbs)
    template = proc / '_page.html'
    template.write_text(TEMPLATE)
    title = site.get('title', cfg.lib_name)

    def render(p: Page | None) -> str:
        if p is None:
            name, md, src = 'modules.html', modules_md(mods, pages, out), ''
            meta = {'title': 'Module index', 'pagetitle': 'Module index',
                    'description': f'Every module of `{lib.name}`, its page and its exported names.'}
        else:
            md = p.markdown()
            if p.source in mods: md += exported_md(*mods[p.source], md)
            name, src = p.name, p.source
            meta = {'title': p.title, 'pagetitle': p.title, **({'description': p.fm['description']} if p.fm.get('description') else {})}
        active = ' class="active" aria-current="page"' if name == 'modules.html' else ''
        side = sidebar_html(entries, pages, name) + f'<ul><li><a href="modules.html"{active}>Module index</a></li></ul>'
        meta.update(site=title, mdfile=name + '.md', source=src, repo=site.get('repo-url', ''), branch=site.get('repo-branch', 'main'))
        pandoc(md, meta, out / name, template, toc=p is not None)
        doc = (out / name).read_text().replace('@@SIDEBAR@@', side)
        (out / name).write_text(fix_links(doc, site.get('site-url', ''), pages))
        return name

    with cf.ThreadPoolExecutor(max(2, workers)) as ex: names = list(ex.map(render, pages.values()))
    names.append(render(None))
    copy_repo_files(out, [nbs, ROOT])
    fix_anchors(out)
    return names


def fix_anchors(out: Path) -> None:
    "A link to an entry the page does not have (a method without its own `show_doc`) goes to its class, or the page."
    pages = {f.name: f.read_text() for f in out.glob('*.html')}
    ids = {n: set(re.findall(r'\sid="([^"]+)"', t)) for n, t in pages.items()}
    for name, text in pages.items():
        def fix(m):
            target, frag = m[1] or name, m[2]
            if target not in ids or frag in ids[target]: return m[0]
            while '.' in frag and frag not in ids[target]: frag = frag.rsplit('.', 1)[0]
            return f'href="{m[1] or ""}' + (f'#{frag}"' if frag in ids[target] else '"' if m[1] else '#"')
        new = re.sub(r'href="([\w.-]*\.html)?#([^"]+)"', fix, text)
        if new != text: (out / name).write_text(new)


def copy_repo_files(out: Path, bases: list[Path]) -> None:
    "Files the pages refer to by a path from nbs/ or the repo root (the README notebook: nbs/images/..., bench/...)."
    for page in out.glob('*.html'):
        for ref in set(re.findall(r'(?:src|href)="(?![a-z]+:|#|/)([^"#?]+)', page.read_text())):
            if (out / ref).exists() or '..' in Path(ref).parts: continue
            for base in bases:
                if (f := base / ref).is_file():
                    (out / ref).parent.mkdir(parents=True, exist_ok=True); shutil.copy2(f, out / ref); break


def quarto(nbs: Path, proc: Path, out: Path, workers: int) -> list[str]:
    "What `nbdev-docs` does after processing: Quarto renders the processed notebooks into `out`."
    from nbdev.quarto import render_quarto, _fix_quarto_nav
    print('==> [docs] rendering with Quarto (as nbdev-docs)')
    shutil.copy2(nbs / '_quarto.yml', proc / '_quarto.yml')
    render_quarto(proc, proc / '_docs', n_workers=workers)
    shutil.rmtree(out, ignore_errors=True)
    shutil.move(proc / '_docs', out)
    _fix_quarto_nav(out)
    return [str(f.relative_to(out)) for f in out.rglob('*.html')]


def exported_md(module: str, doc: list, names: list, assigns: dict, md: str) -> str:
    "Exported names with no `show_doc` heading on the page (constants, aliases): name and definition."
    shown = set(re.findall(r'^#{2,4} ([\w.]+)(?: \{#[^}]*\})?\s*$', md, re.M))
    rest = [n for n in names if n not in shown]
    if not rest: return ''
    out = ['\n## Other exported names {#exported-names}\n', f'Also in `{module}.__all__`:\n']
    for n in rest:
        code = assigns.get(n) or n
        code = code if len(code) <= 400 else code[:400] + ' …'
        out.append(f'### {n}\n\n{_fence(code, " python")}\n')
    return '\n'.join(out)


def modules_md(mods: dict, pages: dict, out: Path) -> str:
    "The module index: each module, its page, its docstring and its exported names linked to their entries."
    rows = []
    for nbname, (module, doc, names, _) in sorted(mods.items(), key=lambda kv: kv[1][0]):
        p = pages.get(nbname)
        if p is None: continue
        ids = {}
        for i, text in re.findall(r'<h[2-4]\s+id="([^"]+)"[^>]*>(.*?)</h[2-4]>', (out / p.name).read_text(), re.S):
            ids.setdefault(html.unescape(re.sub(r'<[^>]+>', '', text)).strip(), i)
        links = ', '.join(f'[`{n}`]({p.name}#{ids[n]})' if n in ids else f'`{n}`' for n in names)
        rows.append(f'## [`{module}`]({p.name})\n\n{doc[0] if doc else ""}\n\n{links or "*(no exported names)*"}\n')
    return '\n'.join(rows)


# The README's pictures of the site (issue 20): page, and the element to scroll to (the first that has it), 1280x800.
SCREENSHOTS = {'docs-index.png': ('index.html', None), 'docs-state.png': ('state.html', None),
               'docs-calibrate.png': ('calibrate.html', 'main img[src*="calibrate_files"]')}
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
                 '--disable-sync', '--no-first-run', '--disable-quic']


def screenshots(site: Path, dest: Path) -> list[Path]:
    "SCREENSHOTS of the built site, served on a loopback port, taken with Debian's Chromium."
    import functools, http.server
    from playwright.sync_api import sync_playwright

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a): pass
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base, out = f'http://127.0.0.1:{srv.server_address[1]}/', []
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path='/usr/bin/chromium', args=CHROMIUM_ARGS)
            page = b.new_page(viewport={'width': 1280, 'height': 800})
            for name, (url, target) in SCREENSHOTS.items():
                page.goto(base + url, wait_until='load')
                if target:
                    el = page.locator(target).first
                    if not el.count(): sys.exit(f'!! docs: {url} has no {target} to show')
                    el.scroll_into_view_if_needed()
                    page.evaluate('y => window.scrollTo(0, y)', max(0, el.evaluate('e => e.getBoundingClientRect().top + window.scrollY') - 220))
                page.wait_for_timeout(200)
                page.screenshot(path=str(dest / name))
                out.append(dest / name)
            b.close()
    finally: srv.shutdown(); srv.server_close()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default=str(ROOT / '_docs'), help='where the site goes (default: _docs)')
    ap.add_argument('--proc', default=str(ROOT / '_proc'), help='processed notebooks (default: _proc)')
    ap.add_argument('--workers', type=int, default=2)
    ap.add_argument('--pandoc', action='store_true', help='render with pandoc even when quarto is installed')
    ap.add_argument('--screenshots', metavar='DIR', help="then take the README's screenshots of the site into DIR (nbs/images)")
    ap.add_argument('--proc-batch', nargs='+', help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.proc_batch: return proc_batch(a.proc_batch[0], a.proc_batch[1:])
    if not shutil.which('pandoc') and (a.pandoc or not shutil.which('quarto')): sys.exit('!! pandoc is needed for the docs (apt-get install pandoc, or run tools/bootstrap-system.sh)')
    os.chdir(ROOT)
    t0 = time.time()
    names = build(Path(a.out).resolve(), Path(a.proc).resolve(), a.workers, a.pandoc)
    print(f'==> [docs] {len(names)} pages in {a.out} ({time.time() - t0:.0f}s)')
    if a.screenshots:
        for f in screenshots(Path(a.out).resolve(), Path(a.screenshots)): print(f'==> [docs] screenshot {f}')


if __name__ == '__main__': main()
