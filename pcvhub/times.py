"""Times as pcvhub writes them for people and partners (ground floor): ISO 8601, in UTC.

Event times travel as microseconds since the Unix epoch (``pcvhub.schemas.codec.to_us``
makes them from a datetime). When a time is written out as text (a refusal's reason on
the log, a result file, a FHIR resource, a partner's message) it is rendered by
:func:`utc_iso`, always in UTC: text that lands on the log must read the same whichever
host's time zone wrote it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = ["utc_iso"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc_iso(us: int, timespec: str = "seconds") -> str:
    """``us`` microseconds since the epoch as ISO 8601 in UTC, e.g.
    ``2026-01-20T00:30:00+00:00``; ``timespec`` as for ``datetime.isoformat``."""
    # timedelta arithmetic is exact; a float of seconds would round some microseconds off
    return (_EPOCH + timedelta(microseconds=us)).isoformat(timespec=timespec)
