#!/usr/bin/env python
"""Write README.md from nbs/index.ipynb without Quarto.

nbdev-readme renders through Quarto, which cannot be installed on these machines; this does
the same job for a README: markdown cells verbatim, code cells as fenced Python (directive
lines removed), cells marked `#| hide` left out. `make test` checks the result is committed.
"""
import re
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
HEADER = '<!-- Generated from nbs/index.ipynb by tools/make_readme.py; edit the notebook, not this file. -->\n\n'
_directive = re.compile(r'^\s*#\|\s*(.*)$')


def cell_md(cell) -> str | None:
    lines = cell.source.splitlines()
    directives = [m.group(1).strip() for l in lines if (m := _directive.match(l))]
    if any(d.split()[0] in ('hide', 'exporti') for d in directives if d): return None
    body = '\n'.join(l for l in lines if not _directive.match(l)).strip('\n')
    if not body: return None
    if cell.cell_type == 'markdown': return body
    out = [f'```python\n{body}\n```']
    for o in cell.get('outputs', []):
        text = o.get('text') or o.get('data', {}).get('text/plain')
        if text: out.append('```\n' + (''.join(text) if isinstance(text, list) else text).rstrip('\n') + '\n```')
    return '\n\n'.join(out)


def main():
    nb = nbformat.read(ROOT / 'nbs' / 'index.ipynb', as_version=4)
    parts = [p for c in nb.cells if (p := cell_md(c))]
    (ROOT / 'README.md').write_text(HEADER + '\n\n'.join(parts) + '\n')


if __name__ == '__main__': main()
