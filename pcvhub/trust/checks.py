"""Signature checks spread over the machine's cores, ahead of a judgement made in order.

The gatekeeper judges a partition's records one after another: the hash chain, the case
state and the key registry are folds, so record n+1 cannot be judged before record n.
Whether a hybrid signature verifies over given bytes with given public keys, though,
depends on nothing but those bytes, and it is most of the cost of a judgement (one
Ed25519 and one ML-DSA-65 verification per individually signed event). So before a send
step judges its batch, ``SignatureChecks.ahead`` computes the batch's checks in worker
processes and hands the results to ``pcvhub.trust.signing``'s memo (the one that spares
re-checking a batch signature for every event it covers). The judgement then asks the
same questions in the same order as ever and finds the answers computed.

Nothing is trusted that would not be checked inline: a result is keyed by every byte it
is a function of (message, both signatures, both public keys), and a check the pool did
not do (a key registered earlier in the same batch, a pool that broke) is done inline.
Small batches are checked inline: a round trip to another process costs more than it
saves there, and an idle gatekeeper answers one record at a time.

Off by default (``verify_workers = 0``): measured on a 2-core machine that also runs the
broker, the gatekeeper judged 898 events/s inline and 663 with a pool of two (its
processes, the broker and the event loop compete for the same cores; each check ships about
5.5 KB to a process). ``python -m bench gatekeeper`` prints both, in one run, for the
machine it runs on.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from pcvhub.schemas.envelope import Envelope
from pcvhub.trust.registry import KeyRegistry
from pcvhub.trust.signing import (
    Check,
    check_of,
    halves_failing,
    is_remembered,
    remember_checks,
    signed_message,
)

log = logging.getLogger(__name__)

#: fewer checks than this are done inline (the process round trip would cost more)
PARALLEL_FROM = 16
#: the pool starts once this many checks were asked for: a short run (a test, a small
#: rebuild, a quiet gatekeeper) never pays its processes' start-up, a second or more each;
#: at 4,096 most of a 5,600-event bench run was still checked inline
START_AFTER = 512


def check_all(checks: Sequence[Check]) -> list[tuple[str, ...]]:
    """Run in a worker process: which halves of each check fail."""
    return [halves_failing(check) for check in checks]


def batch_checks(envelopes: Sequence[Envelope | None], registry: KeyRegistry) -> list[Check]:
    """The distinct signature checks a batch of decoded records will need, as far as the
    registry can tell now: records that did not decode (None), name an unknown key or
    carry no signature are left to the judgement, which refuses them with its reasons."""
    checks: dict[Check, None] = {}
    for env in envelopes:
        if env is None:
            continue
        key = registry.keys.get((env.producer, env.key_id))
        if key is None or env.signature is None:
            continue
        message = signed_message(env)
        if message is not None:
            checks.setdefault(check_of(message, env.signature, key.public))
    return [c for c in checks if not is_remembered(c)]


class SignatureChecks:
    """A pool of ``workers`` processes that check signatures ahead (0: all inline).

    :param start_after: checks asked for (inline until then) before the pool starts.

    The processes are started with ``spawn``: forking a process that runs an event loop
    and Kafka clients' threads is unsafe.
    """

    def __init__(self, workers: int | None = None, *, start_after: int = START_AFTER) -> None:
        self.workers = (os.cpu_count() or 1) if workers is None else workers
        self.start_after = start_after
        self._asked = 0
        self._pool: Executor | None = None

    def _executor(self) -> Executor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers,
                                              mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def _needed(self, envelopes: Sequence[Envelope | None], registry: KeyRegistry
                ) -> list[list[Check]]:
        """The batch's checks, one share per process; none when inline is cheaper."""
        if self.workers < 1 or len(envelopes) < PARALLEL_FROM:
            return []
        checks = batch_checks(envelopes, registry)
        self._asked += len(checks)
        if len(checks) < PARALLEL_FROM or (self._pool is None and
                                           self._asked < self.start_after):
            return []
        share = -(-len(checks) // self.workers)
        return [checks[i:i + share] for i in range(0, len(checks), share)]

    def _broken(self, exc: BrokenProcessPool) -> int:
        # a process died (killed, out of memory): the judgement checks inline this time,
        # and the next batch starts a new pool
        log.warning("signature check pool broke (%s); checking this batch inline", exc)
        self.close()
        return 0

    @staticmethod
    def _remember(parts: list[list[Check]], results: Sequence[list[tuple[str, ...]]]) -> int:
        remember_checks((c, failed) for part, found in zip(parts, results, strict=True)
                        for c, failed in zip(part, found, strict=True))
        return sum(len(part) for part in parts)

    async def ahead(self, envelopes: Sequence[Envelope | None], registry: KeyRegistry) -> int:
        """Check a batch's signatures across the pool while the event loop serves Kafka;
        returns how many checks were done ahead (0: small batch, or the pool is off)."""
        pending = self.submit(envelopes, registry)
        await pending.ready()
        return pending.collect()

    def submit(self, envelopes: Sequence[Envelope | None], registry: KeyRegistry
               ) -> PendingChecks:
        """Start checking a batch's signatures across the pool and return at once; the
        caller does other work (judges or projects the chunk before) and then
        ``collect``s."""
        parts = self._needed(envelopes, registry)
        if not parts:
            return PendingChecks(self, [], [])
        try:
            futures = [self._executor().submit(check_all, part) for part in parts]
        except BrokenProcessPool as exc:
            self._broken(exc)
            return PendingChecks(self, [], [])
        return PendingChecks(self, parts, futures)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


class PendingChecks:
    """Checks of one batch under way in the pool (``SignatureChecks.submit``)."""

    def __init__(self, pool: SignatureChecks, parts: list[list[Check]],
                 futures: list[Future[list[tuple[str, ...]]]]) -> None:
        self._pool, self._parts, self._futures = pool, parts, futures

    async def ready(self) -> None:
        """Wait, without blocking the event loop, until ``collect`` would not block."""
        if self._futures:
            await asyncio.wait([asyncio.wrap_future(f) for f in self._futures])

    def collect(self) -> int:
        """Wait for the results and remember them; returns how many checks were done."""
        if not self._futures:
            return 0
        try:
            results = [future.result() for future in self._futures]
        except BrokenProcessPool as exc:
            return self._pool._broken(exc)
        finally:
            self._futures = []
        return self._pool._remember(self._parts, results)
