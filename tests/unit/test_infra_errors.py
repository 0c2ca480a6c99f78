"""Local-infrastructure failures are sentences that name the fix."""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path

import pytest

from pcvhub.config import load_settings
from pcvhub.infra.kafka import InfraError, LocalKafka, install_kafka, java_executable


def test_missing_java_names_the_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(InfraError, match="Java is not installed.*apt-get install"):
        java_executable()


def test_missing_maven_names_the_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    settings = replace(load_settings({}), cache_dir=tmp_path / "cache")
    with pytest.raises(InfraError, match=r"Maven \(`mvn`\) is not installed"):
        install_kafka(settings)


def test_taken_port_names_the_setting(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        settings = replace(load_settings({}), data_dir=tmp_path, kafka_base_port=port)
        cluster = LocalKafka(settings)
        with pytest.raises(InfraError, match=f"127.0.0.1:{port} is taken.*PCVHUB_KAFKA_BASE_PORT"):
            cluster.start_node(1)


def test_only_one_or_three_brokers() -> None:
    with pytest.raises(InfraError, match="1 node or a 3-node cluster"):
        LocalKafka(load_settings({}), brokers=2)
