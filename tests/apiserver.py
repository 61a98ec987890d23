"Start the real FastAPI app under uvicorn on a free loopback port, in a background thread, for tests and benchmarks."
import threading
import time

import httpx
import uvicorn


class LiveServer:
    def __init__(self, app, *, host: str = '127.0.0.1'):
        self.config = uvicorn.Config(app, host=host, port=0, log_level='warning', lifespan='on',
                                     timeout_graceful_shutdown=3)
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            if not self.thread.is_alive(): raise RuntimeError('the app failed to start (see the log above)')
            if time.monotonic() > deadline: raise TimeoutError('the app did not start within 120 s')
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f'http://{self.config.host}:{port}'
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=20)

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kw)
