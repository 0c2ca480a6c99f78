"""The MPyC runtime of this process: one party of a networked run, or a lone local party.

MPyC builds a runtime from ``sys.argv`` when it is first imported, so importing it under
``pytest`` or ``pcvhub`` would read their options as its own. :func:`mpyc_runtime` hides
the caller's command line during that import and then asks MPyC's own ``setup()`` for the
runtime it needs, with the party list, index and TLS switch given here.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any


def _mpyc_module(argv: Sequence[str]) -> Any:
    saved = sys.argv
    sys.argv = [saved[0] if saved else "pcvhub", *argv]
    try:
        import mpyc.runtime

        return mpyc.runtime
    finally:
        sys.argv = saved


def lone_runtime() -> Any:
    """A one-party runtime in this process (all arithmetic, no network): the tests' and the
    benchmark's in-process mode; every protocol step runs, on shares of one party. A process
    is either this lone party or one party of a network, never both: MPyC keeps one
    runtime per process."""
    return _mpyc_module(["--no-log"]).mpc


def party_runtime(index: int, addresses: Sequence[tuple[str, int]], tls: bool) -> Any:
    """Party ``index`` of ``len(addresses)``, listening on its own address.

    With ``tls`` MPyC opens every connection with Python's ``ssl`` (TLS with client
    certificates), reading ``.config/party_<i>.crt``, ``.config/party_<i>.key`` and
    ``.config/mpyc_ca.crt`` from the working directory when the runtime starts.
    """
    argv = [arg for host, port in addresses for arg in ("-P", f"{host}:{port}")]
    argv += ["-I", str(index), "--no-log", *(["--ssl"] if tls else [])]
    module = _mpyc_module(["--no-log"])
    saved = sys.argv
    sys.argv = [saved[0] if saved else "pcvhub", *argv]
    try:
        return module.setup()
    finally:
        sys.argv = saved
