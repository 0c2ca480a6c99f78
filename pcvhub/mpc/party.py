"""One computation party's run, start to finish (``pcvhub mpc party --site S``).

The steps, in the order a party takes them:

1. check the run against the approved study (:func:`~pcvhub.mpc.study.authorise`) before
   touching a row or the network: a run asking for an unapproved statistic is refused by
   every party, each on its own copy of the approval;
2. read and count its own site's rows in the clear (:mod:`.aggregates`);
3. connect to the other parties over mutually authenticated TLS, within a deadline;
4. open every party's digest of (spec, statistics): a party given another spec or
   another list stops the run before any row-derived number is shared;
5. share its counts and compute (:mod:`.secure`), while a watchdog thread ends the
   process the moment a peer's connection drops: MPyC itself would wait forever;
6. pass MPyC's closing barrier (every party holds the result), and only then write the
   result file, atomically. A run that fails at any step writes nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pcvhub.mpc.aggregates import Layout, SiteAggregate, aggregate
from pcvhub.mpc.records import TherapyRecord
from pcvhub.mpc.results import StudyResult
from pcvhub.mpc.runtime import party_runtime
from pcvhub.mpc.secure import combine
from pcvhub.mpc.study import Statistic, StudySpec, authorise
from pcvhub.mpc.tls import check_party_directory

PEER_POLL_SECONDS = 0.2
PARTY_LOST_EXIT = 3  # what `pcvhub mpc party` exits with when the run fails
TCP_ESTABLISHED = 1  # tcp_info.tcpi_state (linux/tcp_states.h)

log = logging.getLogger(__name__)


class PartyLost(RuntimeError):
    """The run cannot finish: a party did not connect, dropped out, or disagreed."""


@dataclass(frozen=True)
class PartyRun:
    """Everything one party needs besides its rows.

    :param addresses: (host, port) of every party, in the spec's site order.
    :param tls_dir: this party's directory holding ``.config/`` (:mod:`.tls`).
    """

    spec: StudySpec
    site: str
    statistics: tuple[Statistic, ...]
    addresses: tuple[tuple[str, int], ...]
    tls_dir: Path
    result_path: Path | None = None
    connect_timeout: float = 30.0
    run_timeout: float = 600.0

    @property
    def index(self) -> int:
        return self.spec.party_of(self.site)

    def run_digest(self) -> bytes:
        """What all parties must agree on: the approved spec and the statistics of this run."""
        names = ",".join(s.value for s in self.statistics).encode()
        return hashlib.sha256(self.spec.digest() + b"\x00" + names).digest()


def prepare(spec: StudySpec, site: str, requested: Iterable[Statistic],
            addresses: Sequence[tuple[str, int]], tls_dir: Path, **options: Any) -> PartyRun:
    """Step 1: the run as this party will compute it, or :class:`StudyRefused`."""
    statistics = authorise(spec, site, requested)
    if len(addresses) != len(spec.sites):
        raise ValueError(f"study {spec.study_id!r} has {len(spec.sites)} parties "
                         f"({', '.join(spec.sites)}) but {len(addresses)} addresses were given")
    run = PartyRun(spec, site, statistics, tuple(addresses), Path(tls_dir).resolve(), **options)
    check_party_directory(run.tls_dir, run.index)
    return run


def run_party(run: PartyRun, rows: Iterable[TherapyRecord]) -> StudyResult:
    """Steps 2 to 6 for one party; returns the published result (also written, if asked)."""
    layout = Layout(run.spec, run.statistics)
    own = aggregate(rows, layout, run.site)
    result_path = run.result_path.resolve() if run.result_path else None
    os.chdir(run.tls_dir)  # MPyC reads the TLS files from ./.config when it starts
    rt = party_runtime(run.index, run.addresses, tls=True)
    result = rt.run(_session(rt, run, layout, own))
    if result_path is not None:
        partial = result_path.with_name(f".{result_path.name}.partial")
        partial.write_text(json.dumps(result.to_json(), indent=2) + "\n")
        os.replace(partial, result_path)
    return result


async def _session(rt: Any, run: PartyRun, layout: Layout, own: SiteAggregate) -> StudyResult:
    started = time.monotonic()
    try:
        await asyncio.wait_for(rt.start(), run.connect_timeout)
    except TimeoutError:
        missing = [run.spec.sites[p.pid] for p in rt.parties
                   if p.pid != rt.pid and p.protocol is None]
        raise PartyLost(f"site {run.site}: no connection from {', '.join(missing) or 'a peer'} "
                        f"within {run.connect_timeout:.0f} s; is every party started with "
                        "the same approved study?") from None
    connected = time.monotonic()
    log.info("site %s: all %d parties connected over TLS in %.2f s", run.site,
             len(rt.parties), connected - started)
    stop = threading.Event()
    threading.Thread(target=_watch_peers, args=(rt, run, stop), name="peer-watchdog",
                     daemon=True).start()
    try:
        disagreeing = await _disagreeing_sites(rt, run)
        result = None if disagreeing else await combine(rt, layout, own)
    finally:
        stop.set()
    try:  # MPyC's closing barrier: every party has opened the result before anyone keeps it
        await asyncio.wait_for(rt.shutdown(), run.connect_timeout)
    except TimeoutError:
        raise PartyLost(f"site {run.site}: a party did not reach the end of the run") from None
    if result is None:
        raise PartyLost(f"site {run.site}: {', '.join(disagreeing)} run a different study spec "
                        f"or statistics ({run.spec.study_id!r}: "
                        f"{', '.join(s.value for s in run.statistics)}); nothing was shared")
    log.info("site %s: computed %s in %.2f s", run.site,
             ", ".join(s.value for s in run.statistics), time.monotonic() - connected)
    return result


async def _disagreeing_sites(rt: Any, run: PartyRun) -> list[str]:
    """Step 4: the sites whose (spec, statistics) digest differs from this party's."""
    digest_field = rt.SecFld(min_order=1 << 256)
    digests = await rt.output(rt.input(digest_field(int.from_bytes(run.run_digest(), "big"))))
    return [run.spec.sites[i] for i, d in enumerate(digests) if d != digests[rt.pid]]


def _watch_peers(rt: Any, run: PartyRun, stop: threading.Event) -> None:
    """End this process the moment a peer's TCP connection is no longer established, or
    the run outlives its deadline.

    A thread, and the kernel's view of the socket (``TCP_INFO``), because the event loop
    can be busy for minutes with the shared arithmetic already scheduled before it would
    notice a closed connection, and MPyC waits for a lost peer forever. Nothing has been
    written yet (the result is written after the closing barrier), so ending the process
    here leaves no result behind.
    """
    deadline = time.monotonic() + run.run_timeout
    while not stop.wait(PEER_POLL_SECONDS):
        lost = [f"party {p.pid} ({run.spec.sites[p.pid]})" for p in rt.parties
                if p.pid != rt.pid and not _established(p)]
        if lost:
            message = (f"site {run.site}: lost the connection to {', '.join(lost)} mid-run; "
                       "no result is kept")
        elif time.monotonic() > deadline:
            message = f"site {run.site}: the run took more than {run.run_timeout:.0f} s"
        else:
            continue
        if stop.is_set():  # the computation finished meanwhile: the barrier decides
            return
        sys.stderr.write(f"error: {message}\n")
        sys.stderr.flush()
        os._exit(PARTY_LOST_EXIT)


def _established(peer: Any) -> bool:
    protocol = peer.protocol
    transport = None if protocol is None else protocol.transport
    sock = None if transport is None else transport.get_extra_info("socket")
    if sock is None or sock.fileno() < 0:
        return False
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] == TCP_ESTABLISHED
