"""A Faust agent (aiokafka underneath) consumes from and produces to the same real broker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from pcvhub.infra.kafka import LocalKafka
from pcvhub.topics import Principal

pytestmark = pytest.mark.kafka

APP = Path(__file__).with_name("faust_echo.py")


def test_faust_agent_echoes_records(kafka: LocalKafka, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    topic_in, topic_out = f"test.echo-in.{run}", f"test.echo-out.{run}"
    admin_settings = kafka.client_settings(Principal.ADMIN)
    admin = AdminClient(admin_settings.librdkafka())
    topics = [NewTopic(topic_in, 3, 1), NewTopic(topic_out, 3, 1)]
    for future in admin.create_topics(topics).values():
        future.result()

    env = dict(os.environ, ECHO_APP_ID=f"echo-{run}", ECHO_IN=topic_in, ECHO_OUT=topic_out,
               PCVHUB_BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
               PCVHUB_KAFKA_CREDENTIALS_DIR=str(admin_settings.kafka_credentials))
    log = (tmp_path / "faust.log").open("w")
    worker = subprocess.Popen(
        [sys.executable, str(APP), "worker", "-l", "warn", "--without-web"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        producer = Producer(admin_settings.librdkafka())
        sent = {f"k{i}".encode(): f"v{i}".encode() for i in range(20)}
        for key, value in sent.items():
            producer.produce(topic_in, key=key, value=value)
        assert producer.flush(15) == 0

        consumer = Consumer(admin_settings.librdkafka(**{
            "group.id": f"reader-{run}", "auto.offset.reset": "earliest"}))
        consumer.subscribe([topic_out])
        echoed: dict[bytes, bytes] = {}
        deadline = time.monotonic() + 90
        while len(echoed) < len(sent) and time.monotonic() < deadline:
            assert worker.poll() is None, (tmp_path / "faust.log").read_text()[-3000:]
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                echoed[msg.key()] = msg.value()
        consumer.close()
    finally:
        worker.terminate()
        worker.wait(30)
        log.close()
    assert echoed == {k: b"echo:" + v for k, v in sent.items()}
