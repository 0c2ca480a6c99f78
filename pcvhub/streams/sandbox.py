"""An isolated gatekeeper deployment on an existing broker, for tests and benchmarks.

A sandbox has topics no one else writes to (its own prefix), a key store and trust
anchor of its own, and real ``pcvhub worker`` processes it can start and SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from pcvhub.config import Settings
from pcvhub.infra.topics_admin import deploy
from pcvhub.log.reader import read_raw
from pcvhub.log.verify import RawRecord
from pcvhub.streams.worker import GATEKEEPER_ACTOR
from pcvhub.topics import Principal, connector_principal, topic_name
from pcvhub.trust.issuer import now_us
from pcvhub.trust.keys import KeyStore
from pcvhub.trust.registry import ANCHOR_FILE, Actor, KeyRecord, write_anchor
from pcvhub.trust.signing import EventSigner

PASSPHRASE = "sandbox-passphrase"  # a throw-away key store: not a secret


@dataclass
class Sandbox:
    settings: Settings
    root: Path
    workers: list[subprocess.Popen] = field(default_factory=list)
    _counter: Consumer | None = field(default=None, repr=False)

    @classmethod
    def create(cls, settings: Settings, bootstrap: str, root: Path) -> Sandbox:
        root.mkdir(parents=True, exist_ok=True)
        prefix = f"t{uuid.uuid4().hex[:10]}"
        # the tests' builders back-date on a simulated clock (pcvhub.streams.timebounds)
        mine = replace(settings, bootstrap_servers=bootstrap, topic_prefix=prefix,
                       data_dir=root / "data", time_bounds="simulation")
        deploy(mine, brokers=1)
        sandbox = cls(mine, root)
        sandbox.wait_for_leaders()
        return sandbox

    def wait_for_leaders(self, timeout: float = 30.0) -> None:
        """New topics answer NOT_LEADER for a moment: wait until every partition has one."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(self.admin.librdkafka())
        prefix = f"{self.settings.topic_prefix}."
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            topics = admin.list_topics(timeout=10).topics
            mine = [t for name, t in topics.items() if name.startswith(prefix)]
            if mine and all(t.error is None and p.leader >= 0 and p.error is None
                            for t in mine for p in t.partitions.values()):
                return
            time.sleep(0.2)
        raise RuntimeError(f"topics {prefix}* have no leader after {timeout:.0f}s")

    @property
    def admin(self) -> Settings:
        """The operator of this sandbox (a super user): it sets up, counts, and plays the
        attacker who has broker access."""
        return self.settings.as_principal(Principal.ADMIN)

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ, PCVHUB_BOOTSTRAP_SERVERS=self.settings.bootstrap_servers,
                    PCVHUB_TOPIC_PREFIX=self.settings.topic_prefix,
                    PCVHUB_DATA_DIR=str(self.settings.data_dir),
                    PCVHUB_KAFKA_CREDENTIALS_DIR=str(self.settings.kafka_credentials),
                    PCVHUB_KEY_PASSPHRASE=PASSPHRASE,
                    # tests replay back-dated therapies: the timer sweep reads the
                    # sandbox's simulation clock (event time only until a test moves it)
                    PCVHUB_TIMER_CLOCK="simulation", PCVHUB_TIMER_SWEEP_SECONDS="1",
                    PCVHUB_TIME_BOUNDS="simulation")

    # -- identities -----------------------------------------------------------------
    def install_identities(self, registrar: EventSigner, valid_from_us: int) -> EventSigner:
        """Write the trust anchor for ``registrar``; create the gatekeeper's key."""
        write_anchor(self.settings.data_dir / ANCHOR_FILE,
                     Actor(registrar.producer, "test registrar", frozenset({"REGISTRAR"}), "hub"),
                     KeyRecord(registrar.producer, registrar.key_id, registrar.keys.public,
                               valid_from_us))
        store = KeyStore(self.settings.data_dir / "keys", PASSPHRASE.encode())
        return store.create(GATEKEEPER_ACTOR, str(now_us()))

    # -- workers --------------------------------------------------------------------
    def start_worker(self, name: str = "w1", module: str = "pcvhub.cli",
                     env: dict[str, str] | None = None) -> subprocess.Popen:
        """``python -m <module> worker`` with this sandbox's settings in its environment
        (and ``env`` over them)."""
        log = (self.root / f"worker-{name}.log").open("a")
        workdir = self.root / f"worker-{name}"
        workdir.mkdir(exist_ok=True)
        proc = subprocess.Popen(
            [sys.executable, "-m", module, "worker", "--app-id",
             f"{self.settings.topic_prefix}-gatekeeper"],
            cwd=workdir, env={**self.env, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        self.workers.append(proc)
        return proc

    def wait_group(self, members: int, timeout: float = 120.0) -> None:
        """Wait until the workers' consumer group is stable with ``members`` members, each
        owning partitions: a rebalance that is still coming would stall a measurement."""
        from confluent_kafka import ConsumerGroupState
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(self.admin.librdkafka())
        group = f"{self.settings.topic_prefix}-gatekeeper"
        deadline = time.monotonic() + timeout
        seen = "no answer"
        while time.monotonic() < deadline:
            try:
                found = admin.describe_consumer_groups([group])[group].result(timeout=10)
            except Exception as exc:  # noqa: BLE001 - the group may not exist yet
                seen = str(exc)
            else:
                owning = [m for m in found.members
                          if m.assignment and m.assignment.topic_partitions]
                seen = f"{found.state}, {len(owning)} of {len(found.members)} owning partitions"
                if found.state == ConsumerGroupState.STABLE and len(owning) == members:
                    return
            time.sleep(0.5)
        raise RuntimeError(f"consumer group {group} not stable with {members} members after "
                           f"{timeout:.0f}s: {seen}")

    def kill(self, proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        os.killpg(proc.pid, sig)
        proc.wait(30)

    def stop_all(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                self.kill(proc, signal.SIGTERM)
        if self._counter is not None:
            self._counter.close()
            self._counter = None

    def worker_log(self, name: str = "w1") -> str:
        path = self.root / f"worker-{name}.log"
        return path.read_text()[-4000:] if path.exists() else ""

    # -- topics ---------------------------------------------------------------------
    def send(self, records: Iterable[tuple[bytes, bytes]], source: str = "direct") -> int:
        # as the connector of that source: the only principal the broker lets write there
        producer = Producer(self.settings.as_principal(connector_principal(source))
                            .producer(**{"linger.ms": 5}))
        topic = topic_name(f"ingress.{source}", self.settings.topic_prefix)
        count = 0
        for key, value in records:
            producer.produce(topic, key=key, value=value)
            count += 1
            if count % 1000 == 0:
                producer.poll(0)
        if producer.flush(60):
            raise RuntimeError(f"records to {topic} not acknowledged within 60 s")
        return count

    def read_all(self, suffix: str) -> list[RawRecord]:
        """Every record currently on one of this hub's topics, as read (not verified: tests
        inspect exactly what is on the log)."""
        return list(read_raw(self.settings.as_principal(Principal.READER), suffix))

    def count(self, suffix: str) -> int:
        topic = topic_name(suffix, self.settings.topic_prefix)
        # One consumer for every count: a new one per call pays a SASL sign-in each time,
        # which made a waiting loop's polls slow (and noisy in the broker's log).
        if self._counter is None:
            self._counter = Consumer(self.admin.librdkafka(**{"group.id": "counter"}))
        consumer = self._counter
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(h - lo for lo, h in (consumer.get_watermark_offsets(
            TopicPartition(topic, p), timeout=10) for p in parts))

    def wait_answered(self, n: int, timeout: float, watch: subprocess.Popen | None = None
                      ) -> int:
        """Wait until canonical + rejected hold at least ``n`` records."""
        deadline = time.monotonic() + timeout
        answered = 0
        while time.monotonic() < deadline:
            answered = self.count("events") + self.count("rejected")
            if answered >= n:
                return answered
            if watch is not None and watch.poll() is not None:
                raise AssertionError(f"worker exited with {watch.returncode}:\n{self.worker_log()}")
            time.sleep(0.1)
        return answered
