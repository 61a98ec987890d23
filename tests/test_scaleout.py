"""Many processes, one database (issue 17): leader election, rate limits exact across processes, and
`leadchat serve --workers 2` behind a real nginx (Debian's package) with trusted and untrusted peers.

On loopback every address of 127.0.0.0/8 is this machine, so the test gives each party its own: nginx connects to
the service from 127.0.0.3 (`proxy_bind`, the only trusted proxy), visitors come from 127.0.0.2 and 127.0.0.4."""
import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest

from conftest import fresh_db
from leadchat.db import create_pool, migrate
from leadchat.repos import Leadership
from leadchat.web import SharedRateLimiter

ROOT = Path(__file__).resolve().parent.parent
LEADCHAT = Path(os.sys.executable).with_name('leadchat')
NGINX = shutil.which('nginx') or '/usr/sbin/nginx'
PROXY, VISITOR_A, VISITOR_B = '127.0.0.3', '127.0.0.2', '127.0.0.4'
TOKEN = 'scaleout-test-staff-token-0123456789abcdef'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def test_one_leader_among_processes(pg):
    "Two processes' `Leadership`: one leads; when it goes (its connection closes), the other takes over."
    url = fresh_db(pg[1])

    async def go():
        a, b = Leadership(url), Leadership(url)
        try:
            assert await a.lead() is True and await b.lead() is False
            assert await a.lead() is True and await b.lead() is False       # stable
            await a.close()                          # the server releases the lock as the backend exits: soon, not at once
            for _ in range(50):
                if await b.lead(): break
                await asyncio.sleep(0.1)
            assert await b.lead() is True and await a.lead() is False
        finally:
            await a.close(); await b.close()
    asyncio.run(go())


def test_shared_limits_are_exact_across_pools(pg):
    "Two pools (as two processes have) take tokens from one bucket at once: exactly `per_minute` pass."
    url = fresh_db(pg[1])
    asyncio.run(migrate(url, pg[0]))

    async def go():
        p1, p2 = await create_pool(url, max_size=8), await create_pool(url, max_size=8)
        try:
            l1, l2 = SharedRateLimiter('chat_ip', 10, lambda: p1), SharedRateLimiter('chat_ip', 10, lambda: p2)
            waits = await asyncio.gather(*[(l1 if i % 2 else l2).hit('198.51.100.7') for i in range(30)])
            other = await l1.hit('198.51.100.8')
            async with p1.connection() as c:
                keys = [r['key'] for r in await (await c.execute('SELECT key FROM rate_limit_buckets')).fetchall()]
        finally:
            await p1.close(); await p2.close()
        return waits, other, keys
    waits, other, keys = asyncio.run(go())
    assert sum(w == 0 for w in waits) == 10 and all(w > 0 for w in waits if w) and other == 0
    assert not any('198.51' in k for k in keys)                     # stored as a hash, never the address


def nginx_conf(tmp: Path, listen: int, upstream: int) -> Path:
    for d in ('client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'): (tmp / d).mkdir(exist_ok=True)
    conf = tmp / 'nginx.conf'
    conf.write_text(f'''daemon off;
master_process off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body; proxy_temp_path {tmp}/proxy; fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{listen};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_bind {PROXY};
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_buffering off;
        }}
    }}
}}
''')
    return conf


def wait_ready(url: str, proc: subprocess.Popen, tries: int = 600) -> None:
    for _ in range(tries):
        try:
            if httpx.get(url, timeout=1).status_code == 200: return
        except httpx.HTTPError: pass
        if proc.poll() is not None:
            raise AssertionError(f'exited {proc.returncode}: ' + (proc.stderr.read()[-3000:] if proc.stderr else '(output in its log file)'))
        time.sleep(0.2)
    raise AssertionError(f'{url} never became ready')


def client(source: str, base: str) -> httpx.Client:
    return httpx.Client(base_url=base, transport=httpx.HTTPTransport(local_address=source), timeout=30)


def turn(c: httpx.Client, headers: dict | None = None) -> int:
    return c.post('/chat', json={'message': 'hello'}, headers={'ZGC-Session-ID': str(uuid.uuid4()), **(headers or {})}).status_code


@pytest.mark.skipif(not Path(NGINX).exists(), reason='nginx is not installed (tools/bootstrap-system.sh installs it)')
def test_two_workers_behind_nginx(tmp_path):
    "Per-IP limits hold per visitor behind the proxy and exactly across both workers; spoofed headers change nothing."
    app_port, proxy_port = free_port(), free_port()
    env = {**os.environ, 'LEADCHAT_HOME': str(tmp_path / 'home'), 'LEADCHAT_TRUSTED_PROXIES': PROXY,
           'LEADCHAT_RATE_LIMIT_IP_PER_MINUTE': '8', 'LEADCHAT_ADMIN_TOKEN': TOKEN}
    serve = subprocess.Popen([str(LEADCHAT), 'serve', '-e', 'demo.env', '--port', str(app_port), '--workers', '2', '--drain', '5'],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    nginx = None
    try:
        wait_ready(f'http://127.0.0.1:{app_port}/readyz', serve)
        nginx = subprocess.Popen([NGINX, '-c', str(nginx_conf(tmp_path, proxy_port, app_port)), '-p', str(tmp_path)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_ready(f'http://127.0.0.1:{proxy_port}/healthz', nginx)
        proxied, direct = f'http://127.0.0.1:{proxy_port}', f'http://127.0.0.1:{app_port}'
        rnd = random.Random(17)
        with client(VISITOR_A, proxied) as a, client(VISITOR_B, proxied) as b, client(VISITOR_A, direct) as a_direct:
            # 2× the limit from one visitor through the proxy, each with a different forged X-Forwarded-For or Forwarded
            forged = [{'X-Forwarded-For': f'203.0.113.{rnd.randint(1, 254)}'} if i % 2 else
                      {'Forwarded': f'for=203.0.113.{rnd.randint(1, 254)};proto=https'} for i in range(16)]
            codes = [turn(a, h) for h in forged]
            assert codes.count(200) == 8 and codes.count(429) == 8, codes
            assert turn(b) == 200                                        # another visitor has their own bucket
            # the same visitor straight to the service, forging the header: not a trusted peer, so still themselves
            assert turn(a_direct, {'X-Forwarded-For': '198.51.100.99'}) == 429
            # staff sign-in failures lock out the guesser, not everyone behind the proxy
            for _ in range(10): assert a.get('/api/sessions', headers={'Authorization': 'Bearer wrong'}).status_code == 401
            assert a.get('/api/sessions', headers={'Authorization': f'Bearer {TOKEN}'}).status_code == 429
            assert b.get('/api/sessions', headers={'Authorization': f'Bearer {TOKEN}'}).status_code == 200
    finally:
        if nginx is not None: nginx.terminate(); nginx.wait(timeout=10)
        serve.send_signal(signal.SIGTERM)
        out, err = serve.communicate(timeout=60)
    assert serve.returncode == 0, err[-2000:]
    relays = {line.split('worker=')[1].split()[0] for line in (out + err).splitlines() if 'handoff_relay_started' in line}
    assert len(relays) == 2, (out + err)[-3000:]                         # two processes served (one relay each)
    assert '2 workers, each with up to' in out
