"""One ASGI app served by uvicorn in a background thread on loopback: how both simulators start.

`bind()` takes a free port (or the one asked for) so the caller knows its origin before the first
request; `serve()` starts uvicorn on that socket in a daemon thread with its own event loop and waits
until it accepts connections. With `tls=True` a throwaway CA and server certificate (simulators/tls.py)
make it HTTPS. The app's own start-up and shutdown work (background tasks, HTTP clients) belongs in
its ASGI lifespan handler, which runs on the server's loop.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

import uvicorn

from simulators.tls import ThrowawayTLS


class LoopbackServer:
    """start() = bind() + serve(); stop() ends the server, joins the thread and removes the TLS files."""

    def __init__(
        self, app: Any, *, name: str, host: str = "127.0.0.1", port: int = 0, tls: bool = False
    ) -> None:
        self.app = app
        self.name = name
        self.host = host
        self.port = port
        self.tls = tls
        self.origin = ""
        self._sock: socket.socket | None = None
        self._tls: ThrowawayTLS | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def ca_cert_path(self) -> Path:
        if self._tls is None:
            raise RuntimeError(f"{self.name} is not serving TLS")
        return self._tls.ca_cert_path

    def bind(self) -> str:
        """Take the port and return the origin (`https://127.0.0.1:PORT`); nothing is served yet."""
        if self._sock is not None or self._thread is not None:
            raise RuntimeError(f"{self.name} already started")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # asyncio sets TCP_NODELAY only on sockets created with proto=IPPROTO_TCP; without it every
        # response written in two parts waits ~40 ms for a delayed ACK (Nagle). Accepted sockets inherit it.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((self.host, self.port))
        sock.listen(128)
        self._sock = sock
        self.port = sock.getsockname()[1]
        host = f"[{self.host}]" if family == socket.AF_INET6 else self.host
        self.origin = f"{'https' if self.tls else 'http'}://{host}:{self.port}"
        if self.tls:
            self._tls = ThrowawayTLS()
        return self.origin

    def serve(self, timeout: float = 15.0) -> None:
        """Serve on the bound socket; raise RuntimeError if uvicorn is not accepting within `timeout`."""
        if self._sock is None:
            self.bind()
        sock = self._sock
        assert sock is not None
        ssl: dict[str, Any] = {}
        if self._tls is not None:
            ssl = {"ssl_certfile": str(self._tls.cert_path), "ssl_keyfile": str(self._tls.key_path)}
        config = uvicorn.Config(
            self.app,
            lifespan="on",
            # No dictConfig and no level changes: the process owns logging (uvicorn would
            # otherwise reconfigure the global uvicorn loggers for everyone).
            log_config=None,
            log_level=None,
            access_log=False,
            proxy_headers=False,
            timeout_graceful_shutdown=1,
            **ssl,
        )
        self._server = uvicorn.Server(config)
        server = self._server
        self._thread = threading.Thread(
            target=lambda: server.run(sockets=[sock]), name=f"{self.name}:{self.port}", daemon=True
        )
        self._thread.start()
        waited = 0.0
        while not server.started:
            if not self._thread.is_alive() or waited > timeout:
                self.stop()
                raise RuntimeError(f"{self.name} did not start")
            threading.Event().wait(0.01)
            waited += 0.01

    def start(self, timeout: float = 15.0) -> str:
        origin = self.bind()
        self.serve(timeout)
        return origin

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self._server = None
        self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._tls is not None:
            self._tls.close()
            self._tls = None
