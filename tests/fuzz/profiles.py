"""How hard the fuzz tests try: a bounded CI profile by default, a long one on request.

* ``ci`` (default): few enough examples that all of ``tests/fuzz`` runs in about a minute
  on a 2-core machine, derandomized and without an example database, so that a CI run
  tries the same inputs every time and a failure there is a failure on every machine.
* ``long`` (``PCVHUB_FUZZ=long``, what ``make fuzz`` runs): many more random examples, no
  deadline, and failures kept in ``.cache/hypothesis`` so the next run replays them
  first. Add what it finds as an ``@example`` (or a unit test) once the parser is fixed.

Each test asks for a share of the profile's budget with :func:`fuzz_settings`: a test
whose single example costs a pyx12 validation runs fewer examples than one that decodes
a few bytes. The profile is applied per test (never loaded globally), so the hypothesis
tests under ``tests/unit`` keep their own settings in a combined run.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hypothesis import HealthCheck, event, settings
from hypothesis.control import currently_in_test_context
from hypothesis.database import DirectoryBasedExampleDatabase

PROFILE = os.environ.get("PCVHUB_FUZZ", "ci")
_REPO = Path(__file__).resolve().parents[2]

# Mutating a 3 KB signed envelope or a whole 835 is slow to generate and large by design.
_SLOW_INPUTS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]

settings.register_profile(
    "ci", max_examples=200, derandomize=True, database=None, deadline=None,
    suppress_health_check=_SLOW_INPUTS, print_blob=True)
settings.register_profile(
    "long", max_examples=20_000, derandomize=False, deadline=None,
    database=DirectoryBasedExampleDatabase(_REPO / ".cache" / "hypothesis"),
    suppress_health_check=_SLOW_INPUTS, print_blob=True)

if PROFILE not in ("ci", "long"):
    raise RuntimeError(f"PCVHUB_FUZZ is {PROFILE!r}; use ci (the default) or long")


def fuzz_settings(share: float = 1.0) -> settings:
    """The selected profile with ``share`` of its examples (at least 10)."""
    base = settings.get_profile(PROFILE)
    return settings(base, max_examples=max(10, int(base.max_examples * share)))


class Hang(AssertionError):
    """A parser ran longer than any input of that size can justify."""


@contextmanager
def bounded(seconds: float, what: str) -> Iterator[None]:
    """Fail (instead of hanging the run) if the block takes longer than ``seconds``.

    A SIGALRM interrupts Python code only: a loop that never returns from a C extension
    (fastavro's reader, pydantic-core) cannot be stopped this way; the run then hangs
    inside ``what``, where a stack dump (``py-spy dump``) finds it.
    """
    def expired(signum: int, frame: object) -> None:
        raise Hang(f"{what} did not finish within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def label(outcome: str) -> None:
    """Count ``outcome`` in ``--hypothesis-show-statistics`` (which paths the inputs took);
    outside a hypothesis test (a helper called by hand) it does nothing."""
    if currently_in_test_context():
        event(outcome)
