"""Running the API under uvicorn: in the foreground (the CLI) or on a background thread (tests, benchmarks).

The listening socket is bound here, before uvicorn starts, so that ``port=0`` (any free port)
gives a known address at once.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

from ._errors import missing_extra

__all__ = ["BackgroundServer", "bind", "run_server"]


def _uvicorn():
    try:
        import uvicorn
    except ImportError:
        raise missing_extra("uvicorn") from None
    return uvicorn


def bind(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror} (pick another --port, or 0 for any free one)") from None
    sock.listen(2048)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def run_server(app, sock: socket.socket, *, log_level: str = "warning", on_start: Callable[[], None] | None = None) -> None:
    """Serve ``app`` on an already bound socket until interrupted (Ctrl-C)."""
    uvicorn = _uvicorn()
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5))
    if on_start is not None:
        _when_started(server, on_start)
    server.run(sockets=[sock])


def _when_started(server, callback: Callable[[], None]) -> None:
    def watch() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.05)
        if server.started:
            callback()

    threading.Thread(target=watch, daemon=True).start()


class BackgroundServer:
    """``with BackgroundServer(app) as url:`` serves ``app`` on 127.0.0.1 at a free port until the block ends."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, *, log_level: str = "warning"):
        uvicorn = _uvicorn()
        self.sock = bind(host, port)
        self.url = url_of(self.sock)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level=log_level))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server at {self.url} did not start")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()
