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


@pytest.mark.parametrize('path', [ROOT / 'nbs' / '31_extract.ipynb', ROOT / 'nbs' / '00_config.ipynb'], ids=lambda p: p.name)
def test_text_round_trip_keeps_every_cell(path, tmp_path):
    nb_copy = tmp_path / path.name
    shutil.copy(path, nb_copy)
    tool = [sys.executable, str(ROOT / 'tools' / 'nbedit.py')]
    text = subprocess.run([*tool, 'to-py', str(nb_copy)], capture_output=True, text=True, check=True).stdout
    (tmp_path / 'x.py').write_text(text)
    subprocess.run([*tool, 'to-nb', str(tmp_path / 'x.py'), str(nb_copy)], check=True)
    before, after = nbformat.read(path, as_version=4), nbformat.read(nb_copy, as_version=4)
    assert [(c.cell_type, c['id'], c.source) for c in before.cells] == [(c.cell_type, c['id'], c.source) for c in after.cells]
