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
    _nbedit('to-nb', tmp_path / 'x.py', nb_path)
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
