"""Every benchmark this suite owns runs for a few seconds with `--smoke`, so a change to the code it drives cannot rot it
unnoticed (bench/orchestrator.py once broke silently when the model port changed). Numbers are not checked here:
benchmarks record, they never pass or fail."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize('script', ['understanding.py', 'orchestrator.py', 'booking.py', 'rag.py', 'chaos.py', 'bodies.py', 'scaleout.py',
                                    'widget.py', 'privacy.py', 'docs.py', 'flags.py', 'experiments_eval.py',
                                    'experiments.py'])
def test_benchmark_smoke_run(script):
    r = subprocess.run([sys.executable, str(ROOT / 'bench' / script), '--smoke'], capture_output=True, text=True, cwd=ROOT,
                       timeout=900)
    assert r.returncode == 0, f'stderr:\n{r.stderr[-4000:]}\nstdout:\n{r.stdout[-1500:]}'     # stderr first: it says why


def test_tracing_benchmark_smoke_run():
    "bench/tracing.py (issue 17 item 5): tracing off, on with a no-op exporter, on with OTLP to a local sink, a few turns each."
    r = subprocess.run([sys.executable, str(ROOT / 'bench' / 'tracing.py'), '--smoke'], capture_output=True, text=True, cwd=ROOT,
                       timeout=900)
    assert r.returncode == 0, f'stderr:\n{r.stderr[-4000:]}\nstdout:\n{r.stdout[-1500:]}'     # stderr first: it says why
