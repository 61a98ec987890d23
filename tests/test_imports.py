"""One-way imports (issue 17): the layers contract of pyproject.toml ([tool.importlinter]) holds, and no module
imports another that imports it back, however indirectly (lazy imports inside functions included)."""
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent


def test_layers_contract_is_kept():
    r = subprocess.run([str(Path(sys.executable).with_name('lint-imports')), '--no-cache'], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert 'Contracts: 1 kept, 0 broken.' in r.stdout


def test_no_import_cycles():
    g = grimp.build_graph('leadchat')
    mods = sorted(m for m in g.modules if m not in ('leadchat', 'leadchat._modidx'))
    assert len(mods) > 25
    cycles = [(a, g.find_shortest_chain(importer=b, imported=a)) for a in mods for b in g.find_modules_directly_imported_by(a)
              if b != 'leadchat' and g.chain_exists(importer=b, imported=a)]
    assert cycles == []

