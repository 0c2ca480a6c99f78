"""The stages of a therapy's lifecycle (ground floor).

The policy table (``pcvhub.schemas.policy``) says which event types may occur in which
stage and where each takes the therapy; the gatekeeper judges by it and the projections
report which stage each therapy reached. The two workers may not import each other, so
the names live here, once.
"""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    """Lifecycle stages of a therapy, in the order a therapy first reaches them."""

    NEW = "NEW"
    ENROLLED = "ENROLLED"
    CONSENTED = "CONSENTED"
    ORDERED = "ORDERED"
    COLLECTED = "COLLECTED"
    RECEIVED_AT_LAB = "RECEIVED_AT_LAB"
    SEQUENCED = "SEQUENCED"
    DESIGNED = "DESIGNED"
    APPROVED = "APPROVED"
    MANUFACTURING = "MANUFACTURING"
    QC = "QC"
    RELEASED = "RELEASED"
    SHIPPED = "SHIPPED"
    RECEIVED_AT_SITE = "RECEIVED_AT_SITE"
    PLACED = "PLACED"
    DISPENSED = "DISPENSED"
    ADMINISTERED = "ADMINISTERED"
    FOLLOW_UP = "FOLLOW_UP"
