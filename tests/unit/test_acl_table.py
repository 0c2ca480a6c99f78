"""The broker's ACL table is derived from the topic table: who may write and read what."""

from __future__ import annotations

from pcvhub.topics import (
    READER_GROUP,
    TOPICS,
    Grant,
    Principal,
    TopicRole,
    acl_table,
    connector_principal,
    principals,
)


def _ops(prefix: str, principal: str, topic: str) -> set[str]:
    return {g.operation for g in acl_table(prefix)
            if g.principal == principal and g.resource == "topic" and g.pattern == "literal"
            and g.name == topic}


def test_only_the_gatekeeper_writes_its_outputs() -> None:
    for spec in TOPICS:
        if spec.role in (TopicRole.INGRESS, TopicRole.LEDGER):
            continue
        writers = {g.principal for g in acl_table("hub")
                   if g.name == spec.name("hub") and g.operation == "WRITE"}
        assert writers == {Principal.GATEKEEPER}, spec.suffix


def test_each_connector_writes_only_its_own_ingress_topic() -> None:
    sources = [s.suffix.removeprefix("ingress.") for s in TOPICS if s.role is TopicRole.INGRESS]
    assert sources == ["hl7", "fhir", "files", "payer", "loggers", "direct"]
    for source in sources:
        written = {g.name for g in acl_table("hub")
                   if g.principal == connector_principal(source) and g.operation == "WRITE"}
        assert written == {f"hub.ingress.{source}"}


def test_read_only_principals_write_nothing_and_admin_needs_no_grant() -> None:
    for principal in (Principal.READER, Principal.PROJECTIONS, Principal.ADMIN):
        assert not [g for g in acl_table("hub")
                    if g.principal == principal and g.operation in ("WRITE", "CREATE")]
    assert _ops("hub", Principal.PROJECTIONS, "hub.events") == {"READ", "DESCRIBE"}
    assert _ops("hub", Principal.PROJECTIONS, "hub.ingress.hl7") == set()


def test_the_gatekeeper_owns_its_group_and_faust_topics_by_prefix() -> None:
    prefixed = [g for g in acl_table("hub") if g.pattern == "prefixed"]
    assert {g.principal for g in prefixed} == {Principal.GATEKEEPER}  # groups, topics
    assert {(g.resource, g.name) for g in prefixed} == {("group", "hub-gatekeeper"),
                                                         ("topic", "hub-gatekeeper")}


def test_every_principal_named_by_a_topic_is_known_and_acls_follow_the_prefix() -> None:
    named = {p for spec in TOPICS for p in (*spec.writers, *spec.readers)}
    assert set(principals()) == {*named, Principal.ADMIN}
    assert all(g.name.startswith("other") for g in acl_table("other") if g.resource == "topic")
    # the log reader's assign-only consumers share one group, never committed to
    readers = {g.principal for g in acl_table("other") if g.resource == "group"
               and g.name == READER_GROUP}
    assert readers == {p for spec in TOPICS for p in spec.readers}
    assert str(Grant("reader", "topic", "literal", "hub.events", "READ")) == (
        "User:reader READ topic:hub.events")
