"""The README's first command, run against the session's broker."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from pcvhub.demo import run_demo

pytestmark = pytest.mark.kafka


def test_demo_round_trips_and_verifies_every_event(kafka):
    out = io.StringIO()
    code = run_demo(Console(file=out, width=200), keep_running=True)
    text = out.getvalue()
    assert code == 0, text
    assert "all 4 events round-tripped through Kafka and verified" in text
    assert text.count("both signatures verify") == 4
    assert "ML-DSA-65 signature does not verify" in text  # the flipped bit is caught
