"""Configuration comes from defaults, a TOML file and PCVHUB_* variables, in that order."""

from __future__ import annotations

from pathlib import Path

import pytest

from pcvhub.config import ConfigError, load_settings
from pcvhub.topics import FOREVER, TOPICS, TopicRole, topic_name


def test_defaults_point_at_the_local_brokers_secured_listener(tmp_path: Path) -> None:
    credentials = tmp_path / "security"
    (credentials / "principals").mkdir(parents=True)
    (credentials / "principals" / "gatekeeper.json").write_text(
        '{"username": "gatekeeper", "password": "pw-of-the-gatekeeper"}')
    settings = load_settings({"PCVHUB_KAFKA_CREDENTIALS_DIR": str(credentials)})
    assert settings.bootstrap_servers == "127.0.0.1:19092"
    assert settings.as_principal("gatekeeper").librdkafka() == {
        "bootstrap.servers": "127.0.0.1:19092",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "gatekeeper",
        "sasl.password": "pw-of-the-gatekeeper",
        "ssl.ca.location": str(credentials / "ca.pem"),
    }
    assert settings.faust_broker() == "kafka://127.0.0.1:19092"


def test_a_process_must_say_who_it_is_and_have_credentials(tmp_path: Path) -> None:
    settings = load_settings({"PCVHUB_DATA_DIR": str(tmp_path)})
    assert settings.kafka_credentials == (tmp_path / "kafka" / "security").resolve()
    with pytest.raises(ConfigError, match="no Kafka principal chosen"):
        settings.librdkafka()
    with pytest.raises(ConfigError, match="no credentials for Kafka principal 'reader'.*"
                                          "pcvhub infra up"):
        settings.as_principal("reader").librdkafka()


def test_toml_then_environment_override(tmp_path: Path) -> None:
    config = tmp_path / "hub.toml"
    config.write_text(
        '[kafka]\nbootstrap_servers = "k1:9093,k2:9093"\nsecurity_protocol = "SASL_SSL"\n'
        'sasl_mechanism = "SCRAM-SHA-512"\nsasl_username = "hub"\n'
        'ssl_cafile = "/etc/ca.pem"\n[paths]\ndata_dir = "/var/lib/pcvhub"\n'
    )
    settings = load_settings({"PCVHUB_CONFIG": str(config), "PCVHUB_KAFKA_SASL_PASSWORD": "s3cret"})
    conf = settings.librdkafka(**{"group.id": "g"})
    assert conf == {
        "bootstrap.servers": "k1:9093,k2:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "hub",
        "sasl.password": "s3cret",
        "ssl.ca.location": "/etc/ca.pem",
        "group.id": "g",
    }
    assert settings.data_dir == Path("/var/lib/pcvhub")
    assert settings.faust_broker() == "kafka://k1:9093;kafka://k2:9093"


def test_bad_values_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PCVHUB_KAFKA_SECURITY_PROTOCOL"):
        load_settings({"PCVHUB_KAFKA_SECURITY_PROTOCOL": "TLS"})
    with pytest.raises(ConfigError, match="not a file"):
        load_settings({"PCVHUB_CONFIG": str(tmp_path / "missing.toml")})
    broken = tmp_path / "broken.toml"
    broken.write_text("[kafka\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings({"PCVHUB_CONFIG": str(broken)})
    with pytest.raises(ConfigError, match="not an integer"):
        load_settings({"PCVHUB_KAFKA_BASE_PORT": "nineteen"})
    with pytest.raises(ConfigError, match="PCVHUB_VERIFY_WORKERS.*'two'"):
        load_settings({"PCVHUB_VERIFY_WORKERS": "two"})
    with pytest.raises(ConfigError, match="PCVHUB_VERIFY_WORKERS.*-1"):
        load_settings({"PCVHUB_VERIFY_WORKERS": "-1"})
    for bad in ("0", "-3", "soon", "inf", "nan"):
        with pytest.raises(ConfigError, match="PCVHUB_JUST_IN_TIME_WINDOW_HOURS"):
            load_settings({"PCVHUB_JUST_IN_TIME_WINDOW_HOURS": bad})


def test_signature_checks_run_inline_unless_a_pool_is_set() -> None:
    assert load_settings({}).verify_workers == 0
    assert load_settings({"PCVHUB_VERIFY_WORKERS": "0"}).verify_workers == 0
    assert load_settings({"PCVHUB_VERIFY_WORKERS": "3"}).verify_workers == 3


def test_topic_table_keeps_the_log_forever_and_stamps_ingress_with_append_time() -> None:
    by_role = {spec.role: spec for spec in TOPICS}
    for role in (TopicRole.CANONICAL, TopicRole.REJECTED, TopicRole.ALERTS):
        assert by_role[role].retention_ms == FOREVER
        assert by_role[role].configs(brokers=1)["retention.bytes"] == "-1"
        assert "message.timestamp.type" not in by_role[role].configs(brokers=1)
    assert all(s.configs(brokers=1)["message.timestamp.type"] == "LogAppendTime"
               for s in TOPICS if s.role is TopicRole.INGRESS)
    assert by_role[TopicRole.CANONICAL].configs(brokers=3)["min.insync.replicas"] == "2"
    assert topic_name("events") == "pcvhub.events"
    with pytest.raises(KeyError, match="no topic"):
        topic_name("evnets")


def test_the_timer_clock_is_wall_unless_a_deployment_says_simulation() -> None:
    assert (load_settings({}).timer_clock, load_settings({}).timer_sweep_seconds) == (
        "wall", 10.0)
    simulated = load_settings({"PCVHUB_TIMER_CLOCK": "Simulation",
                               "PCVHUB_TIMER_SWEEP_SECONDS": "0.5"})
    assert (simulated.timer_clock, simulated.timer_sweep_seconds) == ("simulation", 0.5)
    with pytest.raises(ConfigError, match="PCVHUB_TIMER_CLOCK"):
        load_settings({"PCVHUB_TIMER_CLOCK": "sundial"})
