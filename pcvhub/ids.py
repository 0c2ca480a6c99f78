"""Identifiers (ground floor): UUIDv7 event ids and chain-of-identity ids.

Event ids are UUIDv7 (RFC 9562): a 48-bit Unix-millisecond prefix makes them sort by
creation time, which keeps audit queries and Kafka keys readable. Python 3.11 has no
``uuid.uuid7``, so it is built here from the RFC's bit layout.

A chain-of-identity (CoI) id follows the spirit of ISBT 128 ST-028: one globally unique,
human-readable id per therapy, allocated at enrolment and carried by every event of it:
``PCV-<site>-<year>-<12 hex digits>`` with an ISO/IEC 7064 MOD 37,36 check character so that a
mistyped CoI at a bedside or on a label is caught before it reaches the log.
"""

from __future__ import annotations

import os
import re
import time
import uuid

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# [0-9], not \d: \d also matches other scripts' digits, which the check character
# alphabet does not have
_COI = re.compile(r"^PCV-([A-Z0-9]{2,12})-([0-9]{4})-([0-9A-F]{12})([0-9A-Z])$")


def uuid7(unix_ms: int | None = None) -> uuid.UUID:
    """A UUIDv7: 48-bit Unix milliseconds, version 7, 74 random bits, RFC 4122 variant."""
    ms = int(time.time() * 1000) if unix_ms is None else unix_ms
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a: 12 bits
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)  # rand_b: 62 bits
    return uuid.UUID(int=value)


def _check_char(body: str) -> str:
    """ISO/IEC 7064 MOD 37,36 check character: catches every single-character substitution."""
    product = 36
    for char in body.replace("-", ""):
        total = (product + _ALPHABET.index(char)) % 36 or 36
        product = (total * 2) % 37
    return _ALPHABET[(37 - product) % 36]


def new_coi(site: str, year: int | None = None) -> str:
    """Allocate a chain-of-identity id for a therapy enrolled at ``site``."""
    site_code = re.sub(r"[^A-Z0-9]", "", site.upper())[:12]
    if len(site_code) < 2:
        raise ValueError(f"site {site!r} needs at least two letters or digits for a CoI")
    yr = time.gmtime().tm_year if year is None else year
    body = f"PCV-{site_code}-{yr:04d}-{os.urandom(6).hex().upper()}"
    return body + _check_char(body)


#: the chains of cross-hospital studies: ``pcvhub:study:<study id>``, one per study
STUDY_CHAIN_PREFIX = "pcvhub:study:"
_STUDY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def study_coi(study_id: str) -> str:
    """The chain a study's events stand on; a study id is 1-64 letters, digits, ``._-``."""
    if not _STUDY_ID.match(study_id):
        raise ValueError(f"study id {study_id!r}: use 1 to 64 letters, digits, '.', '_' or "
                         "'-', starting with a letter or digit")
    return STUDY_CHAIN_PREFIX + study_id


def is_study_chain(coi: str) -> bool:
    return coi.startswith(STUDY_CHAIN_PREFIX)


def is_valid_coi(coi: str) -> bool:
    """True if ``coi`` has the CoI shape and its check character matches."""
    match = _COI.match(coi)
    return bool(match) and _check_char(coi[:-1]) == coi[-1]
