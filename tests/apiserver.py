"Start the real FastAPI app under uvicorn on a free loopback port, in a background thread, for tests and benchmarks."
from leadchat.evaluate import BackgroundServer as LiveServer

__all__ = ['LiveServer']
