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
"""
import hashlib, re, sys
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


def main(argv):
    if len(argv) >= 2 and argv[0] == 'to-py':
        sys.stdout.write(nb_to_text(argv[1]))
    elif len(argv) == 3 and argv[0] == 'to-nb':
        text_to_nb(Path(argv[1]).read_text(), argv[2])
    else:
        raise SystemExit(__doc__)


if __name__ == '__main__': main(sys.argv[1:])
