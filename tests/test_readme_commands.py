"""Every shell block of README.md works as pasted (issue 20, item 4).

The blocks run in README order in a scratch copy of the repository — its tracked files, committed to a throw-away git
repository so that "leaves the working tree as it was" is `git status` — where demo.env's data home `.leadchat/` starts
empty: the embedded PostgreSQL, the knowledge index and the calibration report are made there as they are for a new
user. Each block runs in bash (`set -eo pipefail`) after the README's `source .venv/bin/activate`, the only way
`leadchat` gets on its PATH, and must exit 0.

What the README says about a block, in an HTML comment on the line before it:

    <!-- interactive: REASON -->                        not run here; the reason is required
    <!-- readme-test: prologue -->                      run before every block (`source .venv/bin/activate`)
    <!-- readme-test: with make run -->                 run while what `make run` starts runs: `leadchat serve -e demo.env`
    <!-- readme-test: with make run CALENDAR=local -->  ... with tools/local_caldav.py beside it and the service reading
                                                        calendar.example.yaml, as the Makefile does

An unlabelled block right after a shell block is what the block prints: each of its lines must appear in the output,
in order, `…` standing for any text. The README's loopback ports (8000 for the API, 5232 for CalDAV) become free ports
in the blocks and in the scratch copy's calendar.example.yaml, so a `make run` elsewhere on the machine is no clash.
A failing block is reported by its README line, with the reason: its exit status and output, the missing output line,
a timeout, or a file it wrote into the working tree without naming it.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
SHELL = {'sh', 'bash', 'shell', 'console'}
MODES = ('prologue', 'with make run', 'with make run CALENDAR=local')
MARKER = re.compile(r'^<!--\s*(interactive|readme-test)\s*:\s*(.*?)\s*-->$')
LONG_RUNNING = re.compile(r'^\s*(?:\S+=\S+\s+)*(?:make run\b|(?:\.venv/bin/)?leadchat (?:serve|relay)\b)')
BLOCK_TIMEOUT = 600


class ReadmeError(ValueError):
    "The README's blocks or markers are malformed; the message names the line."


@dataclass
class Block:
    line: int                       # 1-based line of the opening fence
    lang: str
    text: str
    marker: tuple[str, str] | None = None
    output: str | None = None       # the unlabelled block right after it: what it prints
    output_line: int | None = None

    @property
    def interactive(self) -> bool: return bool(self.marker) and self.marker[0] == 'interactive'

    @property
    def mode(self) -> str | None: return self.marker[1] if self.marker and self.marker[0] == 'readme-test' else None

    def __str__(self): return f'README.md line {self.line}'


def parse_blocks(md: str) -> list[Block]:
    "The fenced blocks of `md`, with their markers and printed output; `ReadmeError` names the line of anything malformed."
    lines, blocks, i = md.splitlines(), [], 0
    closed_at = {}                                          # line index of a closing fence -> its block
    while i < len(lines):
        m = re.match(r'^```([\w+-]*)\s*$', lines[i])
        if not m: i += 1; continue
        j = i + 1
        while j < len(lines) and lines[j].rstrip() != '```': j += 1
        if j == len(lines): raise ReadmeError(f'README.md line {i + 1}: a ``` block that is never closed')
        b = Block(i + 1, m.group(1), '\n'.join(lines[i + 1:j]))
        k = i - 1
        while k >= 0 and not lines[k].strip(): k -= 1
        prev = lines[k].strip() if k >= 0 else ''
        if (mm := MARKER.match(prev)):
            kind, arg = mm.groups()
            if b.lang not in SHELL: raise ReadmeError(f'README.md line {k + 1}: a {kind} marker before a {b.lang or "plain"} block, not a shell one')
            if kind == 'interactive' and len(arg.split()) < 3:
                raise ReadmeError(f'README.md line {k + 1}: an interactive block needs its reason (`<!-- interactive: why -->`)')
            if kind == 'readme-test' and arg not in MODES:
                raise ReadmeError(f'README.md line {k + 1}: unknown `readme-test: {arg}`; use one of {", ".join(MODES)}')
            b.marker = (kind, arg)
        elif prev.startswith('<!--') and b.lang in SHELL:         # a comment right before a shell block is a marker
            raise ReadmeError(f'README.md line {k + 1}: a marker this test cannot read: {prev!r}')
        if b.lang == '' and k in closed_at and closed_at[k].lang in SHELL:
            closed_at[k].output, closed_at[k].output_line = b.text, b.line
        closed_at[j] = b
        blocks.append(b)
        i = j + 1
    prologues = [b for b in blocks if b.mode == 'prologue']
    if len(prologues) > 1: raise ReadmeError(f'{prologues[1]}: a second prologue block')
    for b in blocks:
        if b.lang in SHELL and not b.interactive:
            for n, l in enumerate(b.text.splitlines(), b.line + 1):
                if LONG_RUNNING.match(l):
                    raise ReadmeError(f'README.md line {n}: `{l.strip()}` runs until stopped; mark its block '
                                      '`<!-- interactive: why -->` (the test starts servers itself for "with make run")')
    return blocks


def missing_output(expected: str, got: str) -> str | None:
    "The first line of `expected` not found in `got` (in order; `…` is any text), or None."
    pos = 0
    for line in expected.splitlines():
        if line.strip() in ('', '…'): continue
        m = re.compile('.*?'.join(map(re.escape, line.split('…')))).search(got, pos)
        if not m: return line
        pos = m.end()
    return None


def changed_paths(cwd: Path) -> set[str]:
    r = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=all'], cwd=cwd, capture_output=True, text=True, check=True)
    return {l[3:] for l in r.stdout.splitlines()}


def run_block(b: Block, cwd: Path, env: dict, *, prologue: str = '', ports: dict | None = None,
              timeout: float = BLOCK_TIMEOUT) -> str:
    "Run `b` in bash in `cwd`; its output, or AssertionError naming the README line and why."
    script = with_ports(b.text, ports or {})
    before = changed_paths(cwd) if (cwd / '.git').is_dir() else None
    p = subprocess.Popen(['bash', '-c', f'set -eo pipefail\n{prologue}\n{script}'], cwd=cwd, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try: out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)                     # the block's whole process group: nothing is left running
        out, _ = p.communicate()
        raise AssertionError(f'{b}: did not finish within {timeout:.0f} s — a server? mark the block '
                             f'`<!-- interactive: why -->`\n$ {b.text}\n--- output (end)\n{out[-1500:]}') from None
    if p.returncode != 0:
        raise AssertionError(f'{b}: exited {p.returncode}\n$ {script}\n--- output (end)\n{out[-3000:]}')
    if b.output is not None and (line := missing_output(b.output, out)) is not None:
        raise AssertionError(f'{b}: the output the README shows at line {b.output_line} has {line!r}, which the block did '
                             f'not print\n$ {script}\n--- output (end)\n{out[-3000:]}')
    if before is not None:
        unnamed = sorted(p for p in changed_paths(cwd) - before if p not in b.text and str(Path(p).with_suffix('')) not in b.text)
        assert not unnamed, f'{b}: wrote {unnamed} into the working tree without naming it (the data home is the place)'
    return out


def with_ports(text: str, ports: dict) -> str:
    """`text` with each loopback README port swapped for its free port, in one pass: one port at a time would rewrite
    the first swap's result when it begins with another README port (8000 → 52329, then 5232 → 35979 made 359799)."""
    return re.sub(r'127\.0\.0\.1:(\d+)\b', lambda m: f'127.0.0.1:{ports.get(int(m[1]), m[1])}', text)


def test_with_ports_swaps_each_port_once():
    "A free port that starts with another README port is left alone (the CI failure of stop 30)."
    text = 'curl http://127.0.0.1:8000/chat; caldav http://127.0.0.1:5232/ana; keep 127.0.0.1:80001 127.0.0.1:9'
    assert with_ports(text, {8000: 52329, 5232: 35979}) == ('curl http://127.0.0.1:52329/chat; caldav '
                                                            'http://127.0.0.1:35979/ana; keep 127.0.0.1:80001 127.0.0.1:9')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def block_env() -> dict:
    "The environment of a new shell: no virtualenv on the PATH (the README's prologue puts it there), no leadchat settings."
    env = {k: v for k, v in os.environ.items() if k not in ('VIRTUAL_ENV', 'PYTHONHOME', 'LEADCHAT_ENV_FILE')}
    venv = VENV_BIN.resolve()
    env['PATH'] = os.pathsep.join(p for p in env.get('PATH', '/usr/bin:/bin').split(os.pathsep)
                                  if p and Path(p).resolve() != venv)
    return env


class Services:
    "What `make run` (CALENDAR=local) starts, on free ports, in the scratch checkout: the stand-in the marked blocks run beside."

    def __init__(self, cwd: Path, env: dict, ports: dict):
        self.cwd, self.env, self.ports, self.mode, self.procs = cwd, env, ports, None, []

    def ensure(self, mode: str | None):
        if mode is None or mode == self.mode: return
        self.stop()
        env = dict(self.env)
        if mode == 'with make run CALENDAR=local':       # the Makefile: local_caldav.py in the background, then serve
            log = self.cwd / '.leadchat' / 'caldav.log'
            log.parent.mkdir(exist_ok=True)
            self.procs.append(subprocess.Popen([str(self.cwd / '.venv/bin/python'), 'tools/local_caldav.py', '--port',
                                                str(self.ports[5232]), '--dir', '.leadchat/radicale'], cwd=self.cwd, env=env,
                                               stdout=log.open('w'), stderr=subprocess.STDOUT))
            self._wait(lambda: '==> [calendar] local CalDAV' in log.read_text(), 'tools/local_caldav.py', log)
            env['LEADCHAT_CALENDAR_CONFIG'] = 'calendar.example.yaml'
        log = self.cwd / '.leadchat' / 'serve.log'
        log.parent.mkdir(exist_ok=True)
        self.procs.append(subprocess.Popen([str(self.cwd / '.venv/bin/leadchat'), 'serve', '--env-file', 'demo.env', '--host',
                                            '127.0.0.1', '--port', str(self.ports[8000])], cwd=self.cwd, env=env,
                                           stdout=log.open('w'), stderr=subprocess.STDOUT))
        def ready():
            try: return httpx.get(f'http://127.0.0.1:{self.ports[8000]}/readyz', timeout=2).status_code == 200
            except httpx.HTTPError: return False
        self._wait(ready, 'leadchat serve', log)
        self.mode = mode

    def _wait(self, ok, what: str, log: Path, limit: float = 300):
        deadline = time.monotonic() + limit
        while not ok():
            if self.procs[-1].poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f'{what} did not come up: {log.read_text()[-2000:]}')
            time.sleep(0.3)

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None: p.send_signal(signal.SIGTERM)
            try: p.wait(timeout=60)
            except subprocess.TimeoutExpired: p.kill(); p.wait()
        self.procs, self.mode = [], None


def make_checkout(dest: Path, ports: dict) -> Path:
    "The repository's tracked files in `dest`, its .venv linked, the README's ports replaced by `ports`, committed."
    files = subprocess.run(['git', 'ls-files', '-z'], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split('\0')
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)
    (dest / '.venv').symlink_to(VENV_BIN.parent)
    cal = dest / 'calendar.example.yaml'
    cal.write_text(with_ports(cal.read_text(), {5232: ports[5232]}))
    git = ['git', '-c', 'user.name=readme-test', '-c', 'user.email=readme-test@example.com', '-c', 'commit.gpgsign=false']
    subprocess.run(['git', 'init', '-q'], cwd=dest, check=True)
    subprocess.run(['git', 'add', '-A'], cwd=dest, check=True)
    subprocess.run([*git, 'commit', '-q', '-m', 'snapshot'], cwd=dest, check=True)
    for d in [dest, *dest.parents][:3]: os.chmod(d, 0o755)     # the embedded server's user enters the data home
    return dest


README = (ROOT / 'README.md').read_text()
BLOCKS = parse_blocks(README)
SHELL_BLOCKS = [b for b in BLOCKS if b.lang in SHELL]
PROLOGUE = next((b.text for b in SHELL_BLOCKS if b.mode == 'prologue'), '')
RUNNABLE = [b for b in SHELL_BLOCKS if not b.interactive and b.mode != 'prologue']


@pytest.fixture(scope='module')
def checkout(tmp_path_factory):
    "(scratch checkout, block environment, ports, services); the services and the embedded server stop at the end."
    ports = {8000: free_port(), 5232: free_port()}
    cwd = make_checkout(tmp_path_factory.mktemp('readme') / 'checkout', ports)
    env = block_env()
    services = Services(cwd, env, ports)
    yield cwd, env, ports, services
    services.stop()
    pid_file = cwd / '.leadchat' / 'pgdata' / 'postmaster.pid'
    for _ in range(150):                                     # the last client's exit stops the embedded server
        if not pid_file.exists(): break
        time.sleep(0.2)
    else: os.kill(int(pid_file.read_text().split()[0]), signal.SIGINT)   # the server these blocks started: fast shutdown


def test_every_shell_block_runs_or_says_why():
    assert PROLOGUE.strip() == 'source .venv/bin/activate        # puts leadchat (and python, pytest, nbdev-*) on this shell\'s PATH'
    assert len(RUNNABLE) >= 9, [str(b) for b in RUNNABLE]
    for b in SHELL_BLOCKS:
        assert b.marker is None or b.interactive or b.mode in MODES, b
    # the lines the issue names are among the blocks that run
    ran = '\n'.join(b.text for b in RUNNABLE)
    for cmd in ('leadchat calendar check -e demo.env', 'leadchat calendar slots -e demo.env', 'leadchat calibrate -e demo.env',
                'leadchat demo -e demo.env', 'leadchat db migrate', 'leadchat ingest knowledge -e demo.env',
                'curl -N http://127.0.0.1:8000/chat', 'leadchat handoff replay 1 --dry-run'):
        assert cmd in ran, cmd


def test_the_readme_says_what_a_new_user_meets_before_they_meet_it():
    "The 12-character minimum comes before the first `staff add`; `make run`'s stand-in here is the Makefile's recipe."
    assert README.index('at least 12 characters') < README.index('staff add')
    makefile = (ROOT / 'Makefile').read_text()
    for part in ('tools/local_caldav.py --port $(CALDAV_PORT) --dir .leadchat/radicale',
                 'export LEADCHAT_CALENDAR_CONFIG=calendar.example.yaml',
                 '$(BIN)/leadchat serve --env-file demo.env --host 127.0.0.1 --port 8000'):
        assert part in makefile, f'the Makefile no longer runs {part!r}: update Services in this test'
    # calendar.example.yaml and the README agree on how the calendar commands find it
    shown = re.findall(r'^#\s{2,}(leadchat calendar .*)$', (ROOT / 'calendar.example.yaml').read_text(), re.M)
    assert len(shown) >= 2 and all(cmd in README for cmd in shown), shown


@pytest.mark.parametrize('block', RUNNABLE, ids=lambda b: f'line{b.line}')
def test_readme_block(block, checkout):
    cwd, env, ports, services = checkout
    services.ensure(block.mode)
    run_block(block, cwd, env, prologue=PROLOGUE, ports=ports)


def test_calibrate_writes_under_the_data_home_unless_write_repo(checkout, tmp_path):
    "Twice `leadchat calibrate -e demo.env` leaves `git status` clean; --write-repo updates the committed results, PNG too."
    cwd, env, ports, services = checkout
    def sh(cmd, where=cwd):
        return subprocess.run(['bash', '-c', f'{PROLOGUE}\n{cmd}'], cwd=where, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT)
    git = ['git', '-c', 'user.name=t', '-c', 'user.email=t@example.com']
    subprocess.run([*git, 'add', '-A'], cwd=cwd, check=True)
    subprocess.run([*git, 'commit', '-q', '--allow-empty', '-m', 'after the README blocks'], cwd=cwd, check=True)
    assert sh('leadchat ingest knowledge -e demo.env').returncode == 0
    home = cwd / '.leadchat' / 'calibration'
    entries = lambda: (home / 'CONFIG_CHANGELOG.md').read_text().count('\n## ') if (home / 'CONFIG_CHANGELOG.md').exists() else 0
    n = entries()
    for _ in range(2):
        r = sh('leadchat calibrate -e demo.env --no-scope')
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        assert changed_paths(cwd) == set(), changed_paths(cwd)
    assert entries() == n + 2
    assert (home / 'calibration.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and (home / 'calibration.html').stat().st_size > 1000
    assert 'wrote .leadchat/calibration/calibration.html, .leadchat/calibration/calibration.png' in r.stdout
    committed = (cwd / 'bench/results/calibration.json').read_text()
    r = sh('leadchat calibrate -e demo.env --no-scope --write-repo')
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert {'bench/results/calibration.json', 'CONFIG_CHANGELOG.md'} <= changed_paths(cwd) <= {
        'bench/results/calibration.json', 'bench/results/calibration.html', 'bench/results/calibration.png', 'CONFIG_CHANGELOG.md'}
    assert (cwd / 'bench/results/calibration.json').read_text() != committed
    assert (cwd / 'bench/results/calibration.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    # --write-repo away from the repository root: the flag's promise cannot be kept, and it says where to run it
    r = sh(f'{cwd}/.venv/bin/leadchat calibrate -e {cwd / "demo.env"} --no-scope --write-repo', where=tmp_path)
    assert r.returncode == 2 and 'run it from the repository root' in r.stderr and 'Traceback' not in r.stderr, r.stderr


# The checker itself: a block that fails is named by its README line, with the reason.

def test_a_failing_block_is_named_by_its_line_and_why(tmp_path):
    md = 'intro\n\n```sh\ntrue\necho about to fail; false\n```\n\n```sh\necho hello\n```\n\n```\ngoodbye\n```\n'
    failing, printing = [b for b in parse_blocks(md) if b.lang == 'sh']
    with pytest.raises(AssertionError, match=r'README.md line 3: exited 1[\s\S]*about to fail'):
        run_block(failing, tmp_path, block_env())
    assert printing.output == 'goodbye' and printing.output_line == 12
    with pytest.raises(AssertionError, match=r"README.md line 8: the output the README shows at line 12 has 'goodbye'"):
        run_block(printing, tmp_path, block_env())
    slow = parse_blocks('```sh\nsleep 20\n```\n')[0]
    with pytest.raises(AssertionError, match=r'README.md line 1: did not finish within 1 s'):
        run_block(slow, tmp_path, block_env(), timeout=1)


def test_a_block_that_writes_into_the_tree_unnamed_is_caught(tmp_path):
    subprocess.run(['git', 'init', '-q'], cwd=tmp_path, check=True)
    quiet, named = parse_blocks('```sh\ntouch "rep""ort.txt"\n```\n\n```sh\necho x > bench.md  # writes bench.md\n```\n')
    with pytest.raises(AssertionError, match=r"README.md line 1: wrote \['report.txt'\] into the working tree"):
        run_block(quiet, tmp_path, block_env())
    run_block(named, tmp_path, block_env())


def test_malformed_markers_and_fences_are_named_by_line():
    for md, needle in [('a\n```sh\nls\n', 'line 2: a ``` block that is never closed'),
                       ('<!-- interactive: -->\n```sh\nls\n```\n', 'line 1: an interactive block needs its reason'),
                       ('x\n<!-- readme-test: with docker -->\n```sh\nls\n```\n', 'line 2: unknown `readme-test: with docker`'),
                       ('<!-- interactve: typo here now -->\n```sh\nls\n```\n', 'line 1: a marker this test cannot read'),
                       ('<!-- interactive: not a shell block -->\n```python\n1\n```\n', 'line 1: a interactive marker before a python block'),
                       ('```sh\nls\nmake run CALENDAR=local\n```\n', 'line 3: `make run CALENDAR=local` runs until stopped'),
                       ('```sh\nLEADCHAT_X=1 leadchat serve -e demo.env\n```\n', 'line 2: `LEADCHAT_X=1 leadchat serve -e demo.env` runs')]:
        with pytest.raises(ReadmeError, match=re.escape(needle)): parse_blocks(md)
    ok = parse_blocks('<!-- interactive: serves until Ctrl-C -->\n```sh\nmake run\n```\n')
    assert ok[0].interactive and ok[0].marker == ('interactive', 'serves until Ctrl-C')
    assert missing_output('a …\n…\nc', 'a b\nx\nc d') is None and missing_output('c\na', 'a\nc') == 'a'
