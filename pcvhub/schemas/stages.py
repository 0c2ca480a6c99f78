"""The stages of a therapy's lifecycle (ground floor).

The gatekeeper judges events against them (``pcvhub.streams.case``) and the projections
report which one each therapy reached (``pcvhub.projections.lifecycle``). The two
workers may not import each other, so the names live here, once.
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
