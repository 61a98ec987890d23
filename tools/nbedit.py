#!/usr/bin/env python
"""Edit notebooks as plain text, keeping cell ids stable.

    python tools/nbedit.py to-py  nbs/01_state.ipynb  > /tmp/01_state.py
    python tools/nbedit.py to-nb  /tmp/01_state.py nbs/01_state.ipynb

The text form is "percent" style: every cell starts with a marker line

    # %% [code] id=1a2b3c4d
    # %% [markdown] id=5e6f7a8b

followed by the cell source. A marker without `id=` gets a fresh, deterministic id
(derived from the notebook name and the cell's position), so regenerating a notebook
never churns ids of cells that already had one.

`to-nb` keeps what the text form does not show: a cell whose id, kind and source are all
unchanged keeps its outputs, execution count, metadata and attachments (notebooks are committed
with the outputs that teach, and nbdev-clean keeps them); a cell whose source changed loses its
outputs (they would be stale) but keeps its metadata; the notebook keeps its metadata.

Notebooks committed with outputs (any code cell has one) are executed the way `nbdev-test --flags pg` runs them:

    python tools/nbedit.py run [NB ...]          # re-execute, save the outputs (nbdev-clean'ed): `make notebooks`
    python tools/nbedit.py run --check [NB ...]  # re-execute, fail if any output differs from the committed one
    python tools/nbedit.py with-outputs          # the notebooks committed with outputs, one a line
    python tools/nbedit.py with-outputs --skip-re  # nbdev-test's --skip-file-re that leaves them out

Without NB: every notebook of nbs/ that carries outputs (a notebook gets outputs the first time it is named).
Outputs are compared exactly, except binary images (PNG/JPEG), whose bytes depend on the fonts and renderer
of the machine: those must be there, in the same cells, with the same pixel size (the figure's data is checked
through the text the cell shows beside it: a plotly figure's JSON, a printed table); and decimal numbers, which
may differ by one unit of their last printed digit (float noise of another CPU). `run` keeps the committed outputs
of a cell that compares equal, so re-running on another machine does not churn the notebook.
"""
import argparse, base64, hashlib, json, os, re, struct, subprocess, sys, tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat

_marker = re.compile(r'^# %% \[(code|markdown|raw)\](?: id=([0-9A-Za-z_-]+))?\s*$')


def nb_to_text(nb_path) -> str:
    nb = nbformat.read(nb_path, as_version=4)
    parts = []
    for c in nb.cells:
        parts.append(f"# %% [{c.cell_type}]" + (f" id={c['id']}" if c.get('id') else ''))
        parts.append(c.source)
    return '\n'.join(parts) + '\n'


def _fresh_id(nb_name: str, i: int, src: str) -> str:
    return hashlib.sha1(f'{nb_name}:{i}:{src[:80]}'.encode()).hexdigest()[:8]


def text_to_nb(text: str, nb_path) -> None:
    nb_path = Path(nb_path)
    cells, cur, lines = [], None, []

    def flush():
        if cur is None: return
        kind, cid = cur
        src = '\n'.join(lines).strip('\n')
        cells.append((kind, cid, src))

    for line in text.splitlines():
        m = _marker.match(line)
        if m:
            flush()
            cur, lines = (m.group(1), m.group(2)), []
        else:
            lines.append(line)
    flush()
    old = nbformat.read(nb_path, as_version=4) if nb_path.exists() else None
    before = {c['id']: c for c in old.cells if c.get('id')} if old else {}
    nb = nbformat.v4.new_notebook()
    nb.metadata = old.metadata if old and old.metadata else \
        {'kernelspec': {'display_name': 'python3', 'language': 'python', 'name': 'python3'}}
    seen = set()
    for i, (kind, cid, src) in enumerate(cells):
        cid = cid or _fresh_id(nb_path.stem, i, src)
        if cid in seen: raise SystemExit(f'{nb_path}: duplicate cell id {cid} (cell {i})')
        seen.add(cid)
        make = {'code': nbformat.v4.new_code_cell, 'markdown': nbformat.v4.new_markdown_cell,
                'raw': nbformat.v4.new_raw_cell}[kind]
        cell = make(src)
        cell['id'] = cid
        prev = before.get(cid)
        if prev is not None and prev.cell_type == kind:
            if prev.get('metadata'): cell['metadata'] = prev['metadata']
            if 'attachments' in prev and kind != 'code': cell['attachments'] = prev['attachments']
            if kind == 'code' and prev.source == src:       # unchanged: its outputs are still true
                cell['outputs'] = prev.get('outputs', [])
                cell['execution_count'] = prev.get('execution_count')
        nb.cells.append(cell)
    nbformat.validate(nb)
    nbformat.write(nb, nb_path)
    if old is not None and any(c.get('outputs') for c in old.cells) and (
            stale := [c['id'] for c in nb.cells if c.cell_type == 'code' and not c.get('outputs')
                      and before.get(c['id'], {}).get('outputs')] + [c['id'] for c in nb.cells if c.cell_type == 'code' and c['id'] not in before]):
        print(f'{nb_path}: this notebook is committed with outputs; edited or new cells ({", ".join(stale[:6])}'
              f'{", …" if len(stale) > 6 else ""}) have none yet: `make notebooks NB={nb_path}` re-executes it', file=sys.stderr)


ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT / 'nbs'
_BINARY = ('image/png', 'image/jpeg')


def has_outputs(nb_path) -> bool:
    return any(c.get('outputs') for c in nbformat.read(nb_path, as_version=4).cells if c.cell_type == 'code')


def with_outputs() -> list[Path]:
    return [p for p in sorted(NBS.glob('*.ipynb')) if not p.name.startswith(('_', '.')) and has_outputs(p)]


def _execute(nb_path: Path, out: Path, flags: str) -> None:
    "Run the notebook as `nbdev-test --flags FLAGS` does (cwd nbs/, IN_TEST=1, tst_flags); write it, cleaned, to `out`."
    from nbdev.clean import clean_nb
    from nbdev.config import get_config
    from nbdev.process import NBProcessor
    from nbdev.test import _skip_cell
    from execnb.shell import CaptureShell
    from fastcore.nbio import write_nb
    from fastcore.xtras import working_directory
    cfg = get_config(nb_path.resolve().parent)
    skip = cfg.tst_flags.split() if isinstance(cfg.tst_flags, str) else list(cfg.tst_flags)
    os.environ['IN_TEST'] = '1'
    sys.path.insert(0, str(cfg.config_path))
    nb = NBProcessor(nb_path, rm_directives=False, process=True).nb
    k = CaptureShell(nb_path, mpl_format='png')   # 1x PNGs: half the bytes in git of retina ones
    with working_directory(nb_path.resolve().parent):
        try: k.run_all(nb, exc_stop=True, preproc=_skip_cell(nb, skip, flags.split()), cell_timeout=cfg.cell_timeout or None)
        except BaseException:
            sys.stderr.write((k.prettytb(fname=nb_path) or '') + '\n'); raise SystemExit(1)
    write_nb(nb, out)
    d = json.loads(out.read_text())
    clean_nb(d, clean_ids=cfg.clean_ids)
    write_nb(d, out)


def _png_size(data) -> tuple:
    raw = base64.b64decode(''.join(data) if isinstance(data, list) else data)
    return struct.unpack('>II', raw[16:24]) if raw[:8] == b'\x89PNG\r\n\x1a\n' else (len(raw),)


def _norm(outputs) -> list:
    "Outputs as compared: binary images by mime type and pixel size, everything else as is."
    res = []
    for o in outputs:
        o = json.loads(json.dumps(o))
        for m in _BINARY:
            if m in o.get('data', {}): o['data'][m] = f'<{m} {_png_size(o["data"][m])}>'
        res.append(o)
    return res


_DECIMAL = re.compile(r'-?\d+\.(\d+)')


def _close(a, b) -> bool:
    """Equal, except that a decimal number may differ by one unit of its last printed digit (0.870 vs 0.871; in JSON
    data, 1e-4): the float noise of another CPU's vector instructions, not a change of result. Integers, counts and
    every other character must be equal."""
    if isinstance(a, dict) and isinstance(b, dict): return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list): return len(a) == len(b) and all(map(_close, a, b))
    if isinstance(a, float) and isinstance(b, float): return abs(a - b) <= 1.01e-4
    if isinstance(a, str) and isinstance(b, str):
        if a == b: return True
        if _DECIMAL.sub('#', a) != _DECIMAL.sub('#', b): return False
        return all(len(x[1]) == len(y[1]) and abs(float(x[0]) - float(y[0])) <= 1.01 * 10 ** -len(x[1])
                   for x, y in zip(((m[0], m[1]) for m in _DECIMAL.finditer(a)), ((m[0], m[1]) for m in _DECIMAL.finditer(b))))
    return a == b and type(a) is type(b)


def same_outputs(a, b) -> bool:
    "Outputs as compared: binary images by mime type and pixel size, numbers to their last printed digit, the rest exactly."
    return _close(_norm(a), _norm(b))


def _show(outputs) -> str:
    return '\n'.join(json.dumps(o, ensure_ascii=False)[:600] for o in _norm(outputs)) or '(no output)'


def compare(committed, fresh) -> list[str]:
    "Cells whose fresh outputs differ from the committed ones (`same_outputs`)."
    if [(c.cell_type, c.source) for c in committed.cells] != [(c.cell_type, c.source) for c in fresh.cells]:
        return ['the cells changed while the notebook ran: run it again']
    diffs = []
    for i, (a, b) in enumerate(zip(committed.cells, fresh.cells)):
        if a.cell_type == 'code' and not same_outputs(a.get('outputs', []), b.get('outputs', [])):
            diffs.append(f'cell {i} (id {a.get("id")}):\n  {a.source[:200]!r}\n'
                         f'--- committed\n{_show(a.get("outputs", []))}\n+++ now\n{_show(b.get("outputs", []))}')
    return diffs


def run(paths: list[Path], check: bool, flags: str, workers: int) -> int:
    "Execute each notebook (in its own process, `workers` at a time); save its outputs, or check them."
    def one(p: Path):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / p.name
            r = subprocess.run([sys.executable, __file__, '_execute', str(p), str(out), flags],
                               capture_output=True, text=True)
            if r.returncode: return p, f'execution failed:\n{r.stderr[-6000:]}'
            fresh, committed = nbformat.read(out, as_version=4), nbformat.read(p, as_version=4)
            diffs = compare(committed, fresh)
            if check or not diffs: return p, '\n'.join(diffs)
            if diffs[0].startswith('the cells changed'): return p, diffs[0]
            for a, b in zip(committed.cells, fresh.cells):   # an image equal but for its bytes keeps the committed ones
                if a.cell_type == 'code' and same_outputs(a.get('outputs', []), b.get('outputs', [])): b.outputs = a.outputs
            fresh.metadata = committed.metadata
            nbformat.write(fresh, p)
            return p, None
    bad = 0
    with ThreadPoolExecutor(max(1, workers)) as ex:
        for p, problem in ex.map(one, paths):
            name = p.relative_to(ROOT) if p.is_relative_to(ROOT) else p
            if problem is None: print(f'==> {name}: outputs saved')
            elif not problem: print(f'==> {name}: outputs as committed')
            else:
                bad += 1
                print(f'!! {name}: {problem}', file=sys.stderr)
    if bad and check:
        print(f'!! {bad} notebook(s) show outputs other than the committed ones. If the change is meant (new data, new code),\n'
              f'!! refresh them with `make notebooks` (or `make notebooks NB=nbs/X.ipynb`), look at the diff and commit it;\n'
              f'!! if an output changes from run to run, make it deterministic (seed, fixed clock, no ids/paths/timings).',
              file=sys.stderr)
    return 1 if bad else 0


def main(argv):
    if len(argv) >= 2 and argv[0] == 'to-py':
        sys.stdout.write(nb_to_text(argv[1]))
    elif len(argv) == 3 and argv[0] == 'to-nb':
        text_to_nb(Path(argv[1]).read_text(), argv[2])
    elif len(argv) == 4 and argv[0] == '_execute':
        _execute(Path(argv[1]).resolve(), Path(argv[2]), argv[3])
    elif argv == ['with-outputs']:
        print('\n'.join(str(p.relative_to(ROOT)) for p in with_outputs()))
    elif argv == ['with-outputs', '--skip-re']:      # for nbdev-test --skip-file-re: its default, and these notebooks
        print('^([_.]' + ''.join('|' + re.escape(p.name) + '$' for p in with_outputs()) + ')')
    elif argv[:1] == ['run']:
        ap = argparse.ArgumentParser(prog='nbedit.py run')
        ap.add_argument('notebooks', nargs='*', type=Path)
        ap.add_argument('--check', action='store_true', help='compare with the committed outputs, write nothing')
        ap.add_argument('--flags', default='pg', help='nbdev-test flags of the cells to run too (default: pg)')
        ap.add_argument('--workers', type=int, default=2)
        a = ap.parse_args(argv[1:])
        paths = [p.resolve() for p in a.notebooks] or with_outputs()
        if missing := [str(p) for p in paths if not p.is_file()]: raise SystemExit(f'no such notebook: {missing}')
        raise SystemExit(run(paths, a.check, a.flags, a.workers))
    else:
        raise SystemExit(__doc__)


if __name__ == '__main__': main(sys.argv[1:])
