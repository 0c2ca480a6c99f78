"""R1's clock: what the gatekeeper holds an event's signed times against.

An event carries two times its producer chose (``occurred_at`` and ``signed_at``, both
under its signature) and one it did not: the broker's append time of the ingress record
(``LogAppendTime``, in the record's seal after judging). Without bounds, a holder of a
key can back-date ``occurred_at`` under a revocation or a compromise. So:

- ``occurred_at`` may not lie after ``signed_at`` by more than the skew (an event is not
  signed before it happens);
- ``signed_at`` must lie within a window of the broker's append time (a producer cannot
  claim to have signed long before or after it wrote);
- a key revoked with ``compromised_since`` refuses everything *signed* at or after that
  instant, whatever its ``occurred_at``; a revoked key refuses everything signed at or after
  its revocation.

- an event that occurred further back than the late-entry bound before it was signed
  must say so: the signed late-entry flag of envelope v2 (``Envelope.late_entry``) with a
  reason (21 CFR Part 11 late entries; ALCOA+ "contemporaneous"). Flagged, it is accepted
  and every view shows it as late; unflagged, it is refused. A flag with a blank reason is
  refused under every profile.

Consent withdrawals are held against signed time too (R7, ``Consent``): under the
production profile a withdrawal applies to everything signed after it, whatever
occurred-at the event claims.

The bounds are a deployment setting (``gatekeeper.time_bounds``, ``PCVHUB_TIME_BOUNDS``).
``production`` is the default. ``simulation`` serves the demo and the test builders, which
back-date by weeks on a simulated clock while signing on the wall clock: there signed and
append times say nothing about the simulated story, so the skew and window are off and
revocation and compromise are judged at ``occurred_at`` (the simulated time).
"""

from __future__ import annotations

from dataclasses import dataclass

from pcvhub.schemas.envelope import Envelope
from pcvhub.streams.case import CaseState
from pcvhub.streams.event import InboundEvent
from pcvhub.streams.verdict import Verdict
from pcvhub.times import utc_iso
from pcvhub.trust.registry import KeyRecord, KeyRegistry

MINUTE_US = 60_000_000


@dataclass(frozen=True)
class TimeBounds:
    """One profile of the bounds (see the module doc)."""

    name: str
    #: how far ``occurred_at`` may lie after ``signed_at``; None: not checked
    future_skew_us: int | None
    #: how far ``signed_at`` may lie from the broker's append time; None: not checked
    append_window_us: int | None
    #: which of the event's times revocation, compromise and a consent withdrawal are
    #: judged at
    revocation_clock: str  # "signed" or "occurred"
    #: how far before its signing an event may have occurred without the late-entry flag;
    #: None: not checked
    late_entry_after_us: int | None = None

    def judged_at(self, env: Envelope) -> tuple[int, str]:
        """The instant (and its name) revocations and withdrawals are held against."""
        if self.revocation_clock == "signed":
            return env.signed_at_us, "signed"
        return env.occurred_at_us, "occurred"


HOUR_US = 60 * MINUTE_US
PRODUCTION = TimeBounds("production", future_skew_us=5 * MINUTE_US,
                        append_window_us=60 * MINUTE_US, revocation_clock="signed",
                        late_entry_after_us=24 * HOUR_US)
SIMULATION = TimeBounds("simulation", future_skew_us=None, append_window_us=None,
                        revocation_clock="occurred", late_entry_after_us=None)
TIME_BOUNDS: dict[str, TimeBounds] = {b.name: b for b in (PRODUCTION, SIMULATION)}

_REMEDY = {
    "OCCURRED_AFTER_SIGNING": "an event is signed when it has happened: check the "
                              "producer's clock and re-sign with its true occurred-at",
    "SIGNED_OUTSIDE_WINDOW": "the producer's clock or queue is off: events are signed when "
                             "they are sent; re-sign and send it now, or record it as a late "
                             "entry",
    "KEY_COMPROMISED": "nothing signed with a compromised key after the compromise counts: "
                       "re-sign with the actor's new key after review",
    "KEY_REVOKED": "the key must not sign after its revocation: re-sign with the actor's "
                   "current key",
    "LATE_ENTRY_UNFLAGGED": "record it as a late entry: re-sign it with the late-entry flag "
                            "and the reason it is entered only now (envelope v2)",
    "LATE_ENTRY_UNJUSTIFIED": "a late entry says why it is late: re-sign it with the reason",
}


class SigningTime:
    """R1 (times): the event's signed times against the bounds and the key's revocation.
    Runs after ``Signatures``, so the key is registered and both signatures verify."""

    name = "R1"

    def __init__(self, registry: KeyRegistry, bounds: TimeBounds) -> None:
        self.registry, self.bounds = registry, bounds

    def _refuse(self, event: InboundEvent, code: str, what: str) -> Verdict:
        return Verdict.refuse(self.name, code, f"event {event.event_id} ({event.event_type}) "
                              f"signed by {event.producer} with key {event.envelope.key_id}: "
                              f"{what}; {_REMEDY[code]} (time bounds: {self.bounds.name})")

    def check(self, event: InboundEvent, case: CaseState) -> Verdict:
        env, bounds = event.envelope, self.bounds
        occurred, signed = env.occurred_at_us, env.signed_at_us
        if bounds.future_skew_us is not None and occurred > signed + bounds.future_skew_us:
            return self._refuse(event, "OCCURRED_AFTER_SIGNING",
                                f"it occurred at {utc_iso(occurred)}, after it was signed at "
                                f"{utc_iso(signed)} (more than the allowed "
                                f"{bounds.future_skew_us // MINUTE_US} min)")
        appended = None if event.source is None else event.source.appended_at_us
        if (bounds.append_window_us is not None and appended is not None
                and abs(signed - appended) > bounds.append_window_us):
            return self._refuse(event, "SIGNED_OUTSIDE_WINDOW",
                                f"it was signed at {utc_iso(signed)} but the broker appended "
                                f"it at {utc_iso(appended)}, more than "
                                f"{bounds.append_window_us // MINUTE_US} min apart")
        key = self.registry.keys.get((env.producer, env.key_id))
        if key is not None and (refused := self._revoked(event, key)) is not None:
            return refused
        # Late entries last: a back-dated event signed after a compromise is refused as
        # compromised whether it is flagged late or not.
        if env.late_entry is not None and not env.late_entry.reason.strip():
            return self._refuse(event, "LATE_ENTRY_UNJUSTIFIED",
                                "it is flagged as a late entry with a blank reason")
        late_after = bounds.late_entry_after_us
        if late_after is not None and env.late_entry is None and signed - occurred > late_after:
            return self._refuse(event, "LATE_ENTRY_UNFLAGGED",
                                f"it occurred at {utc_iso(occurred)}, "
                                f"{(signed - occurred) / HOUR_US:.1f} h before it was signed "
                                f"at {utc_iso(signed)} (the late-entry bound is "
                                f"{late_after / HOUR_US:g} h), and carries no late-entry flag")
        return Verdict.accept()

    def _revoked(self, event: InboundEvent, key: KeyRecord) -> Verdict | None:
        env, bounds = event.envelope, self.bounds
        occurred, signed = env.occurred_at_us, env.signed_at_us
        at, clock = bounds.judged_at(env)
        if key.compromised_since_us is not None and at >= key.compromised_since_us:
            return self._refuse(event, "KEY_COMPROMISED",
                                f"the key was compromised since "
                                f"{utc_iso(key.compromised_since_us)} (revoked at "
                                f"{utc_iso(key.revoked_at_us or key.compromised_since_us)}) "
                                f"and the event was {clock} at {utc_iso(at)}"
                                + (f" (it claims to have occurred at {utc_iso(occurred)})"
                                   if clock == "signed" else ""))
        if (bounds.revocation_clock == "signed" and key.revoked_at_us is not None
                and signed >= key.revoked_at_us):
            return self._refuse(event, "KEY_REVOKED",
                                f"the key was revoked at {utc_iso(key.revoked_at_us)} "
                                f"({key.revocation_reason}) and the event was signed at "
                                f"{utc_iso(signed)} (it claims to have occurred at "
                                f"{utc_iso(occurred)})")
        return None
