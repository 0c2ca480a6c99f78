"""Fixtures of the unit tests: a hub (registrar, live key registry, rules) and one therapy
of it, built from real signed events (see ``therapy_builder``)."""

from __future__ import annotations

import pytest

from .therapy_builder import Hub, TherapyScenario


@pytest.fixture
def hub() -> Hub:
    return Hub()


@pytest.fixture
def scenario(hub: Hub) -> TherapyScenario:
    return TherapyScenario(hub)
