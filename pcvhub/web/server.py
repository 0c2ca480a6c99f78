"""Serving the dashboard with uvicorn on a socket bound first, so the URL is known at once.

``serve_dashboard(db_path)`` is what ``pcvhub demo`` and ``pcvhub serve`` call: it binds
(port 0: a free port), starts uvicorn in a background thread and returns the URL once the
server accepts connections. ``DashboardServer`` is the same with a ``stop()``, for tests
and the ``pcvhub dashboard`` command.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import uvicorn

from pcvhub.clock import Clock
from pcvhub.web.app import create_app

START_TIMEOUT = 30.0


class DashboardServer:
    """The dashboard of ``db_path`` on ``host:port`` (bound in the constructor)."""

    def __init__(self, db_path: Path, host: str = "127.0.0.1", port: int = 0,
                 clock: Clock | None = None) -> None:
        """:param clock: the deployment's clock, which alert ages count to (wall if None)."""
        self.app = create_app(Path(db_path), clock)  # a bad file fails here, before binding
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind((host, port))
        except OSError as exc:
            self.socket.close()
            raise OSError(f"cannot listen on {host}:{port} for the dashboard: {exc.strerror}; "
                          "choose another --port (0 picks a free one)") from exc
        bound = self.socket.getsockname()[1]
        self.url = f"http://[{host}]:{bound}" if family == socket.AF_INET6 \
            else f"http://{host}:{bound}"
        self.server = uvicorn.Server(uvicorn.Config(
            self.app, log_level="warning", access_log=False, lifespan="off"))
        self.thread: threading.Thread | None = None

    def start(self) -> str:
        """Serve in a background thread; return the URL once connections are accepted."""
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]},
                                       name="pcvhub-dashboard", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the dashboard did not start on {self.url}")
            time.sleep(0.02)
        return self.url

    def stop(self) -> None:
        """Finish the requests in hand, then close the socket."""
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=10)
        self.socket.close()

    def __enter__(self) -> DashboardServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_dashboard(db_path: Path, host: str = "127.0.0.1", port: int = 0,
                    clock: Clock | None = None) -> str:
    """Start the dashboard of ``db_path`` in the background of this process; its URL.

    It serves until the process exits; use :class:`DashboardServer` to stop it earlier.
    """
    return DashboardServer(db_path, host, port, clock).start()
