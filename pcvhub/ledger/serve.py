"""``pcvhub ledger serve``: the tile folder over HTTP, read-only, on loopback.

Only the paths of c2sp.org/tlog-tiles are answered (``tiles.TILE_PATH``), and the daily
archive seals (``archive.ARCHIVE_PATH``), matched before the disk is touched, so nothing
else in the ledger folder (keys, level files) can be named by a request. The checkpoint
(and the latest archive seal) change and are cached for seconds; a tile's path names its
width, so every tile is immutable and cached for a year.
"""

from __future__ import annotations

import ipaddress
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from pcvhub.ledger.archive import ARCHIVE_PATH, LATEST_SEAL_PATH
from pcvhub.ledger.errors import LedgerError
from pcvhub.ledger.tiles import TILE_PATH


def require_loopback(host: str, who: str) -> None:
    """Ledger and witness listen on loopback only; publishing is a reverse proxy's job."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise LedgerError(f"{who} on loopback only, not {host}: put a reverse proxy in front "
                          "to publish it")


class TileServer(ThreadingHTTPServer):
    """Serves one tile folder; ``port`` 0 picks a free one (see ``server_address``)."""

    daemon_threads = True

    def __init__(self, tiles: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        require_loopback(host, "the ledger serves its tiles")
        self.tiles = Path(tiles)
        super().__init__((host, port), _TileHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/"

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="ledger-tiles", daemon=True)
        thread.start()
        return thread


class _TileHandler(BaseHTTPRequestHandler):
    server: TileServer

    def do_GET(self) -> None:  # noqa: N802 - the http.server protocol
        self._answer(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(body=False)

    def _refuse(self) -> None:
        self.send_error(HTTPStatus.METHOD_NOT_ALLOWED, "the ledger's tiles are read-only")

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse  # noqa: N815

    def _answer(self, body: bool) -> None:
        rel = self.path.split("?", 1)[0].lstrip("/")
        if not (TILE_PATH.fullmatch(rel) or ARCHIVE_PATH.fullmatch(rel)):
            self.send_error(HTTPStatus.NOT_FOUND, "not a tlog-tiles or archive seal path")
            return
        path = self.server.tiles / rel
        try:
            data = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            self.send_error(HTTPStatus.NOT_FOUND, f"no {rel} in this log (yet)")
            return
        self.send_response(HTTPStatus.OK)
        if rel in ("checkpoint", LATEST_SEAL_PATH):
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Cache-Control", "max-age=5")
        else:
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Cache-Control", "public, max-age=31536000, immutable")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        return  # request lines would drown the ledger's own log
