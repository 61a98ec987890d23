"The notebooks read right: titles without a stray '#', and the text round trip of tools/nbedit.py changes nothing."
import re, shutil, subprocess, sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / 'nbs').glob('*.ipynb'))


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.name)
def test_titles_have_no_stray_hash(path):
    nb = nbformat.read(path, as_version=4)
    md = [c for c in nb.cells if c.cell_type == 'markdown']
    assert md and re.match(r'# \S', md[0].source), (path.name, md[0].source[:40] if md else None)   # "# Title", the page title
    bad = [c.source[:40] for c in md if re.match(r'#\s+#', c.source)]
    assert not bad, (path.name, bad)     # "# # Title": a markdown heading commented out by a percent-format round trip


@pytest.mark.parametrize('path', [ROOT / 'nbs' / n for n in ('31_extract.ipynb', '00_config.ipynb', '31a_classify.ipynb', '22_calibrate.ipynb')],
                         ids=lambda p: p.name)
def test_text_round_trip_keeps_every_cell(path, tmp_path):
    nb_copy = tmp_path / path.name
    shutil.copy(path, nb_copy)
    tool = [sys.executable, str(ROOT / 'tools' / 'nbedit.py')]
    text = subprocess.run([*tool, 'to-py', str(nb_copy)], capture_output=True, text=True, check=True).stdout
    (tmp_path / 'x.py').write_text(text)
    subprocess.run([*tool, 'to-nb', str(tmp_path / 'x.py'), str(nb_copy)], check=True)
    before, after = nbformat.read(path, as_version=4), nbformat.read(nb_copy, as_version=4)
    assert [(c.cell_type, c['id'], c.source) for c in before.cells] == [(c.cell_type, c['id'], c.source) for c in after.cells]
    assert after == before          # outputs, execution counts and metadata too: nothing the text form hides is lost


def _nbedit(*args):
    return subprocess.run([sys.executable, str(ROOT / 'tools' / 'nbedit.py'), *map(str, args)],
                          capture_output=True, text=True, check=True).stdout


def _sample_nb(path):
    "A notebook with what the text form does not show: outputs, execution counts, cell and notebook metadata."
    nb = nbformat.v4.new_notebook()
    nb.metadata = {'kernelspec': {'display_name': 'python3', 'language': 'python', 'name': 'python3'},
                   'nbdev': {'default_exp': 'sample'}}
    title = nbformat.v4.new_markdown_cell('# Sample')
    kept = nbformat.v4.new_code_cell('1 + 1', execution_count=3,
                                     outputs=[nbformat.v4.new_output('execute_result', {'text/plain': '2'}, execution_count=3)])
    kept.metadata = {'hide_input': True}
    edited = nbformat.v4.new_code_cell('print("old")', outputs=[nbformat.v4.new_output('stream', text='old\n')])
    edited.metadata = {'nbdev': {'hide': True}}
    png = nbformat.v4.new_code_cell('show()', outputs=[nbformat.v4.new_output('display_data', {'image/png': 'iVBORw0KGgo=', 'text/plain': '<Figure>'})])
    for c, i in zip((title, kept, edited, png), ('aaaa0001', 'aaaa0002', 'aaaa0003', 'aaaa0004')): c['id'] = i
    nb.cells = [title, kept, edited, png]
    nbformat.write(nb, path)
    return nb


def test_to_nb_keeps_outputs_of_unchanged_cells(tmp_path):
    "An edit through nbedit must not wipe the committed outputs: an unchanged cell keeps them, an edited one loses them."
    nb_path = tmp_path / 'sample.ipynb'
    original = _sample_nb(nb_path)
    text = _nbedit('to-py', nb_path)
    assert '\n2\n' not in text and 'iVBORw0KGgo' not in text     # the text form shows sources only
    # 1. A round trip with no edit changes nothing at all: outputs, counts, metadata.
    (tmp_path / 'x.py').write_text(text)
    _nbedit('to-nb', tmp_path / 'x.py', nb_path)
    assert nbformat.read(nb_path, as_version=4) == original
    # 2. Edit one cell, move another, add a new one.
    edited = text.replace('print("old")', 'print("new")')
    assert edited != text
    (tmp_path / 'x.py').write_text(edited + '# %% [code]\nx = 1\n')
    r = subprocess.run([sys.executable, str(ROOT / 'tools' / 'nbedit.py'), 'to-nb', str(tmp_path / 'x.py'), str(nb_path)],
                       capture_output=True, text=True, check=True)
    assert 'aaaa0003' in r.stderr and 'make notebooks NB=' in r.stderr and 'aaaa0002' not in r.stderr   # says what to re-run
    after = nbformat.read(nb_path, as_version=4)
    cells = {c['id']: c for c in after.cells}
    assert after.metadata == original.metadata
    assert cells['aaaa0002'].outputs == original.cells[1].outputs and cells['aaaa0002'].execution_count == 3
    assert cells['aaaa0002'].metadata == {'hide_input': True}
    assert cells['aaaa0004'].outputs == original.cells[3].outputs              # the figure stays
    assert cells['aaaa0003'].source == 'print("new")' and cells['aaaa0003'].outputs == []   # stale output dropped
    assert cells['aaaa0003'].execution_count is None and cells['aaaa0003'].metadata == {'nbdev': {'hide': True}}
    new = after.cells[-1]
    assert new.source == 'x = 1' and new.outputs == [] and new['id'] not in {'aaaa0001', 'aaaa0002', 'aaaa0003', 'aaaa0004'}
    # 3. A cell whose id now names a different source (ids swapped by hand) does not inherit the other's output.
    swapped = text.replace('id=aaaa0002', 'id=TMP').replace('id=aaaa0004', 'id=aaaa0002').replace('id=TMP', 'id=aaaa0004')
    _sample_nb(nb_path)
    (tmp_path / 'x.py').write_text(swapped)
    _nbedit('to-nb', tmp_path / 'x.py', nb_path)
    cells = {c['id']: c for c in nbformat.read(nb_path, as_version=4).cells}
    assert cells['aaaa0002'].source == 'show()' and cells['aaaa0002'].outputs == []
    assert cells['aaaa0004'].source == '1 + 1' and cells['aaaa0004'].outputs == []


def test_to_nb_on_a_new_file(tmp_path):
    "to-nb still creates a notebook that did not exist, with the default kernelspec."
    (tmp_path / 'x.py').write_text('# %% [markdown]\n# New\n# %% [code]\n1\n')
    _nbedit('to-nb', tmp_path / 'x.py', tmp_path / 'new.ipynb')
    nb = nbformat.read(tmp_path / 'new.ipynb', as_version=4)
    assert [c.source for c in nb.cells] == ['# New', '1'] and nb.metadata['kernelspec']['name'] == 'python3'


# ---------------------------------------------------------------- notebooks committed with outputs (`make notebooks`)
def _png(w: int, h: int, salt: bytes = b'') -> str:
    "A PNG header of w x h pixels (enough for the comparison, which reads the size), plus some varying bytes."
    import base64, struct, zlib
    ihdr = struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 0)
    chunk = lambda t, d: struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d))
    return base64.b64encode(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'tEXt', b'x\x00' + salt)).decode()


def _run_nb(tmp_path, cells, outputs=None):
    "A notebook of code cells with the given committed outputs (None: as nbedit's `run` saves them)."
    nb = nbformat.v4.new_notebook()
    nb.metadata = {'kernelspec': {'display_name': 'python3', 'language': 'python', 'name': 'python3'}}
    for i, src in enumerate(cells):
        c = nbformat.v4.new_code_cell(src); c['id'] = f'c{i:07d}'
        nb.cells.append(c)
    path = tmp_path / 'demo.ipynb'
    nbformat.write(nb, path)
    if outputs is None: subprocess.run([sys.executable, str(ROOT / 'tools' / 'nbedit.py'), 'run', str(path)], check=True, cwd=tmp_path)
    else:
        nb = nbformat.read(path, as_version=4)
        for c, outs in zip(nb.cells, outputs): c.outputs = outs
        nbformat.write(nb, path)
    return path


def _check(path):
    return subprocess.run([sys.executable, str(ROOT / 'tools' / 'nbedit.py'), 'run', '--check', str(path)],
                          capture_output=True, text=True, cwd=path.parent)


IMG = "from IPython.display import display; display({'image/png': %r, 'text/plain': '<fig>'}, raw=True)"


def test_run_saves_outputs_and_check_accepts_them(tmp_path):
    "`make notebooks` then `make test`: the saved outputs (cleaned: no execution counts) pass the check."
    path = _run_nb(tmp_path, ['x = 6 * 7\nprint("answer", x)', 'x', '#| notest\nraise SystemExit("not run")', IMG % _png(4, 3)])
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[0].outputs[0].text == 'answer 42\n' and nb.cells[1].outputs[0].data['text/plain'] == '42'
    assert nb.cells[2].outputs == [] and nb.cells[3].outputs[0].data['image/png'] == _png(4, 3)
    assert all(c.execution_count is None and not c.metadata for c in nb.cells)        # what nbdev-clean keeps
    r = _check(path)
    assert r.returncode == 0 and 'outputs as committed' in r.stdout, r.stdout + r.stderr


def test_check_fails_on_a_stale_output_and_says_how_to_refresh(tmp_path):
    stale = [nbformat.v4.new_output('stream', text='answer 41\n')]
    path = _run_nb(tmp_path, ['print("answer", 6 * 7)'], [stale])
    r = _check(path)
    assert r.returncode == 1 and 'answer 41' in r.stderr and 'answer 42' in r.stderr, r.stderr
    assert 'make notebooks' in r.stderr
    assert nbformat.read(path, as_version=4).cells[0].outputs[0].text == 'answer 41\n'   # --check writes nothing
    # a missing output is stale too
    r = _check(_run_nb(tmp_path, ['print("answer", 6 * 7)'], [[]]))
    assert r.returncode == 1 and 'answer 42' in r.stderr


def test_check_fails_on_a_non_deterministic_output(tmp_path):
    path = _run_nb(tmp_path, ['import uuid; print(uuid.uuid4())'])
    r = _check(path)
    assert r.returncode == 1 and 'make notebooks' in r.stderr and 'deterministic' in r.stderr


def test_images_compare_by_size_and_keep_their_committed_bytes(tmp_path):
    "PNG bytes depend on the machine's fonts and renderer: the same size passes (and `run` keeps the committed bytes)."
    committed = [nbformat.v4.new_output('display_data', {'image/png': _png(4, 3, b'other machine'), 'text/plain': '<fig>'})]
    path = _run_nb(tmp_path, [IMG % _png(4, 3)], [committed])
    assert _check(path).returncode == 0
    subprocess.run([sys.executable, str(ROOT / 'tools' / 'nbedit.py'), 'run', str(path)], check=True, cwd=tmp_path)
    assert nbformat.read(path, as_version=4).cells[0].outputs[0].data['image/png'] == _png(4, 3, b'other machine')
    path = _run_nb(tmp_path, [IMG % _png(8, 3)], [committed])                  # another size: another figure
    r = _check(path)
    assert r.returncode == 1 and '(8, 3)' in r.stderr and '(4, 3)' in r.stderr, r.stderr


def test_a_failing_cell_fails_the_check_and_run_keeps_the_notebook(tmp_path):
    saved = [nbformat.v4.new_output('stream', text='ok\n')]
    path = _run_nb(tmp_path, ['print("ok")', 'raise ValueError("broken cell")'], [saved, []])
    before = path.read_text()
    r = _check(path)
    assert r.returncode == 1 and 'execution failed' in r.stderr and 'broken cell' in r.stderr, r.stderr
    r = subprocess.run([sys.executable, str(ROOT / 'tools' / 'nbedit.py'), 'run', str(path)], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 1 and path.read_text() == before


def test_with_outputs_lists_the_committed_notebooks_and_nbdev_test_skips_them():
    listed = subprocess.run([sys.executable, str(ROOT / 'tools' / 'nbedit.py'), 'with-outputs'], capture_output=True, text=True,
                            check=True).stdout.split()
    expected = [f'nbs/{p.name}' for p in NOTEBOOKS if any(c.get('outputs') for c in nbformat.read(p, as_version=4).cells)]
    assert listed == expected and 'nbs/31a_classify.ipynb' in listed
    skip = subprocess.run([sys.executable, str(ROOT / 'tools' / 'nbedit.py'), 'with-outputs', '--skip-re'], capture_output=True,
                          text=True, check=True).stdout.strip()
    names = [p.name for p in NOTEBOOKS] + ['_private.ipynb', '.hidden.ipynb']
    assert sorted(n for n in names if re.match(skip, n)) == sorted([Path(p).name for p in listed] + ['_private.ipynb', '.hidden.ipynb'])


def _nbedit_module():
    import importlib.util
    spec = importlib.util.spec_from_file_location('nbedit', ROOT / 'tools' / 'nbedit.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


def test_numbers_may_differ_in_their_last_digit_only(tmp_path):
    "Float noise of another CPU (0.870 / 0.871) passes; a changed result, a changed count or a longer number does not."
    same = _nbedit_module().same_outputs
    out = lambda text: [nbformat.v4.new_output('stream', text=text)]
    assert same(out('macro-F1 0.870, 46 cases\n'), out('macro-F1 0.871, 46 cases\n'))
    for stale in ('macro-F1 0.873, 46 cases\n', 'macro-F1 0.871, 45 cases\n', 'macro-F1 0.8710, 46 cases\n', 'macro F1 0.871, 46 cases\n'):
        assert not same(out(stale), out('macro-F1 0.871, 46 cases\n')), stale
    fig = lambda xs: [nbformat.v4.new_output('display_data', {'application/vnd.plotly.v1+json': {'data': [{'x': xs}]}, 'text/plain': 'fig'})]
    assert same(fig([0.2631, 0.5]), fig([0.2632, 0.5])) and not same(fig([0.2631, 0.5]), fig([0.2641, 0.5]))
    assert not same(fig([0.2631, 0.5]), fig([0.2631])) and not same(out('1'), out('1.0'))
    # end to end: the check passes on the noise and keeps the committed text when saving
    path = _run_nb(tmp_path, ['print("macro-F1 0.871, 46 cases")'], [out('macro-F1 0.870, 46 cases\n')])
    assert _check(path).returncode == 0
    subprocess.run([sys.executable, str(ROOT / 'tools' / 'nbedit.py'), 'run', str(path)], check=True, cwd=tmp_path)
    assert nbformat.read(path, as_version=4).cells[0].outputs[0].text == 'macro-F1 0.870, 46 cases\n'
