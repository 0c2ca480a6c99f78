"""A minimal Faust app for the broker test: copies records from one topic to another.

Run as `python faust_echo.py worker`; topics and broker come from the environment.
"""

from __future__ import annotations

import os

import faust

from pcvhub.config import load_settings

# the broker and the credentials (the admin: the test's topics have no ACLs of their own)
settings = load_settings().as_principal("admin")
app = faust.App(
    os.environ["ECHO_APP_ID"],
    broker=settings.faust_broker(),
    broker_credentials=settings.faust_security(),
    store="memory://",
    web_enabled=False,
    topic_replication_factor=1,
    topic_allow_declare=False,
)
source = app.topic(os.environ["ECHO_IN"], value_serializer="raw", key_serializer="raw")
sink = app.topic(os.environ["ECHO_OUT"], value_serializer="raw", key_serializer="raw")


@app.agent(source)
async def echo(stream: faust.StreamT) -> None:
    async for key, value in stream.items():
        await sink.send(key=key, value=b"echo:" + value)


if __name__ == "__main__":
    app.main()
