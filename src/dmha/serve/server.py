"""Running the app with uvicorn: in the foreground (`dmha serve`) or in a thread (tests, benchmarks)."""
from __future__ import annotations

import dataclasses
import functools
import logging
import socket
import threading
import time

import uvicorn

from .app import create_app
from .protocol import GuardedH11Protocol
from .settings import ServeSettings, default_allowed_hosts

log = logging.getLogger(__name__)


def _config(app, host: str, port: int, settings: ServeSettings, log_level: str) -> uvicorn.Config:
    # h11 always (httptools, if installed, would bypass the guards); limit_concurrency: requests on
    # connections beyond it get a 503 before any upload is read; an idle keep-alive connection is
    # closed after 5 s, one that never completes a request head after head_timeout_s; a request
    # head still incomplete at 16 KB (h11's default, stated here) is a 400.
    http = functools.partial(GuardedH11Protocol, head_timeout_s=settings.head_timeout_s)
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on", http=http,
                          limit_concurrency=settings.max_connections, timeout_keep_alive=5,
                          h11_max_incomplete_event_size=16 * 1024, timeout_graceful_shutdown=5)


def serve(recognizer, settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000,
          log_level: str = "info") -> None:
    """Serve until interrupted (Ctrl-C); the worker and the temp folder end with it. Requests whose
    Host header is not one of settings.allowed_hosts (default: the bound address's names) get a 400."""
    if settings.allowed_hosts is None:
        settings = dataclasses.replace(settings, allowed_hosts=default_allowed_hosts(host))
    log.warning("accepting Host names: %s", ", ".join(settings.allowed_hosts))
    uvicorn.Server(_config(create_app(recognizer, settings), host, port, settings, log_level)).run()


class BackgroundServer:
    """The real uvicorn server in a daemon thread on a free loopback port.

    Example:
        >>> with BackgroundServer(create_app(rec)) as server:   # doctest: +SKIP
        ...     httpx.get(server.url + "/healthz")
    """

    def __init__(self, app, host: str = "127.0.0.1", settings: ServeSettings | None = None,
                 log_level: str = "warning"):
        self.app, self.host = app, host
        self._settings = settings or app.state.service.settings
        self._log_level = log_level
        self.port: int | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> "BackgroundServer":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((self.host, 0))  # the OS picks a free port; uvicorn serves on this very socket
        self.port = sock.getsockname()[1]
        self._server = uvicorn.Server(_config(self.app, self.host, self.port, self._settings, self._log_level))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True,
                                        name="dmha-uvicorn")
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(15)
