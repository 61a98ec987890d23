#!/usr/bin/env python
"""A local CalDAV server for `make run CALENDAR=local`: Radicale on 127.0.0.1 with the calendars that
calendar.example.yaml books into (ana/work, ben/work), kept under .leadchat/radicale. Runs until stopped
(SIGINT/SIGTERM), and stops Radicale with it.

    .venv/bin/python tools/local_caldav.py [--port 5232] [--dir .leadchat/radicale]
"""
import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

import caldav
import httpx

CALENDARS = [('ana', 'work'), ('ben', 'work')]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--port', type=int, default=5232)
    ap.add_argument('--dir', type=Path, default=Path('.leadchat/radicale'))
    a = ap.parse_args()
    a.dir.mkdir(parents=True, exist_ok=True)
    url = f'http://127.0.0.1:{a.port}/'
    proc = subprocess.Popen([sys.executable, '-m', 'radicale', '--config', '', '--server-hosts', f'127.0.0.1:{a.port}',
                             '--storage-filesystem-folder', str(a.dir / 'collections'), '--auth-type', 'none',
                             '--rights-type', 'owner_write', '--logging-level', 'warning'])
    stop = lambda *_: proc.terminate()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            print(f'!! radicale exited (is port {a.port} in use?)', file=sys.stderr)
            return 1
        try:
            httpx.get(url, timeout=1)
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                proc.terminate()
                print('!! radicale did not start within 30 s', file=sys.stderr)
                return 1
            time.sleep(0.2)
    for user, cal in CALENDARS:
        with caldav.DAVClient(url, username=user, password='local') as client:
            try: client.calendar(url=f'{url}{user}/{cal}/').events()
            except Exception: client.principal().make_calendar(name=cal, cal_id=cal)
    print(f'==> [calendar] local CalDAV (Radicale) on {url} — calendars: '
          + ', '.join(f'{u}/{c}' for u, c in CALENDARS), flush=True)
    return proc.wait()


if __name__ == '__main__':
    sys.exit(main())
