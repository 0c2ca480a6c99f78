"""The baseline of the gatekeeper benchmark: an unsigned pass-through Faust agent.

Same broker, same topics, same partition-preserving writes as the gatekeeper, but no
decoding, verification or rules: it copies every ingress record to the canonical topic.
Run by the benchmark as ``python -m bench.passthrough worker --app-id ID``.
"""

from __future__ import annotations

import sys

import faust

from pcvhub.config import load_settings
from pcvhub.topics import TOPICS, Principal, TopicRole, topic_name


def build(app_id: str) -> faust.App:
    # the gatekeeper's principal on the same secured listener: only the work differs
    settings = load_settings().as_principal(Principal.GATEKEEPER)
    prefix = settings.topic_prefix
    app = faust.App(app_id, broker=settings.faust_broker(),
                    broker_credentials=settings.faust_security(), store="memory://",
                    web_enabled=False, topic_replication_factor=1, topic_allow_declare=False,
                    consumer_auto_offset_reset="earliest", producer_acks=-1,
                    producer_linger=0.005)  # the same producer settings as the gatekeeper
    ingress = app.topic(*[s.name(prefix) for s in TOPICS if s.role is TopicRole.INGRESS],
                        key_serializer="raw", value_serializer="raw")
    sink = app.topic(topic_name("events", prefix), key_serializer="raw", value_serializer="raw")

    @app.agent(ingress)
    async def copy(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await sink.send(key=event.key, value=event.value,
                            partition=event.message.partition)

    return app


if __name__ == "__main__":
    app_id = sys.argv[sys.argv.index("--app-id") + 1]
    faust.Worker(build(app_id), loglevel="WARNING", quiet=True).execute_from_commandline()
