"""Shared fixtures: one real local Kafka broker per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pcvhub.config import Settings, load_settings
from pcvhub.infra.kafka import LocalKafka


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def kafka(settings: Settings) -> Iterator[LocalKafka]:
    """The single-node broker; started once, stopped at the end only if this session started it."""
    cluster = LocalKafka(settings, brokers=1)
    was_up = cluster.is_up()
    cluster.up()
    yield cluster
    if not was_up:
        cluster.down()
