"""The views people query, over the ``log`` tables: one SQL definition each, documented.

Every view below is created in the projection file with ``COMMENT ON VIEW`` and a
``COMMENT ON COLUMN`` for each of its columns, so the schema documents itself::

    SELECT view_name, comment FROM duckdb_views() WHERE NOT internal;
    SELECT column_name, data_type, comment FROM duckdb_columns() WHERE table_name = 'inventory';

Views are SQL over the tables, computed when queried; the tables alone are what the log
determines (and what the digest covers). Views that depend on today's date (expiry,
receivables ageing) are also table macros taking the date as a parameter
(``inventory_as_of(TIMESTAMPTZ)``, ``billing_claims_as_of(...)``...); the plain view is
the macro at ``current_timestamp``.

=====================  =====================================================================
view / macro           answers
=====================  =====================================================================
audit_trail, audit()   every event of a therapy in chain order, who signed it, verification,
                       hash-chain link, with the therapy's refusals and alerts placed in time
signing_keys, actors   who may sign: registered actors, roles, sites, key windows, revocations
case_status            where each therapy stands, its next step, open alerts
alerts                 every alert with OPEN/RESOLVED and the event that resolved it
rejections             every refusal of the gatekeeper with its rule, code and reason
quarantines            every quarantine of a sample, batch or dose: cause, and how it ended
inventory              every released dose: site, location, placement method, status, expiry
inventory_by_site      doses and lots per site, location, placement method and status
inventory_lots         batches (lots) with their disposition and doses per status
billing_claims         claims per administration: status, amounts, payer, ageing bucket
dose_ownership         who owns each dose (manufacturer or site) and so who invoices whom
payer_claims(p)        billing_claims of one payer only (what a payer may see)
receivables_ageing     outstanding amounts per payer, currency and bucket (0-30 ... 90+ days)
outcome_milestones     outcome-based payment milestones per therapy and payer
qc_results             QC results per batch and test (latest result, attempts, history)
turnaround_stages      time spent in each lifecycle stage, per therapy
turnaround             per-stage and vein-to-vein times, per therapy
turnaround_by_site     median times per site
outcomes               clinical outcome assessments per therapy
=====================  =====================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb

from pcvhub.ids import STUDY_CHAIN_PREFIX
from pcvhub.projections.schema import sql_string
from pcvhub.schemas.policy import next_step
from pcvhub.schemas.specifications import PANELS
from pcvhub.schemas.stages import Stage
from pcvhub.trust.registry import REGISTRY_COI

REGISTRY = sql_string(REGISTRY_COI)
USABLE = "('RELEASED', 'AVAILABLE', 'RESERVED')"  # inventory statuses a patient may still get
FINAL = "('ADMINISTERED', 'DESTROYED')"  # inventory statuses a dose never leaves


class ViewDocumentationError(RuntimeError):
    """A view's columns and its documented columns differ: document every column."""


@dataclass(frozen=True)
class View:
    name: str
    doc: str
    sql: str
    columns: dict[str, str]


@dataclass(frozen=True)
class Macro:
    """A table macro: ``name(params)`` returning rows; the views reuse them."""

    name: str
    params: str
    sql: str


# -- who signs ---------------------------------------------------------------------------

TRUSTED_REGISTRY = f"""
    SELECT log_topic, log_partition, log_offset FROM log.envelopes
    WHERE log_topic = 'events' AND coi = {REGISTRY}
      AND signature_check = 'VERIFIED'"""

SIGNING_KEYS = View(
    "signing_keys",
    "Every signing key known to the hub: the trust anchor's and those registered or rotated "
    "on the registry chain (only registry events whose signature verified), with the key's "
    "validity window and any revocation; latest registry event wins, as in KeyRegistry.",
    f"""
    WITH trusted AS ({TRUSTED_REGISTRY}),
    registered AS (
        SELECT actor_id, key_id, valid_from, NULL::TIMESTAMPTZ AS valid_until,
               -1::BIGINT AS log_offset, 'TRUST_ANCHOR' AS registered_by
        FROM log.trust_anchor
        UNION ALL
        SELECT r.actor_id, r.key_id, r.valid_from, r.valid_until, r.log_offset, r.producer
        FROM log.actor_registered r JOIN trusted USING (log_topic, log_partition, log_offset)
        UNION ALL
        SELECT r.actor_id, r.new_key_id, r.valid_from, r.valid_until, r.log_offset, r.producer
        FROM log.key_rotated r JOIN trusted USING (log_topic, log_partition, log_offset)
    ),
    latest AS (
        SELECT * FROM registered
        QUALIFY row_number() OVER (PARTITION BY actor_id, key_id ORDER BY log_offset DESC) = 1
    ),
    rotated_out AS (
        SELECT r.actor_id, r.old_key_id AS key_id, r.old_key_valid_until
        FROM log.key_rotated r JOIN trusted USING (log_topic, log_partition, log_offset)
        QUALIFY row_number() OVER (PARTITION BY r.actor_id, r.old_key_id
                                   ORDER BY r.log_offset DESC) = 1
    ),
    revoked AS (
        SELECT r.actor_id, r.key_id, r.revoked_at, r.reason, r.compromised_since
        FROM log.key_revoked r JOIN trusted USING (log_topic, log_partition, log_offset)
        QUALIFY row_number() OVER (PARTITION BY r.actor_id, r.key_id
                                   ORDER BY r.log_offset DESC) = 1
    )
    SELECT k.actor_id, k.key_id, k.valid_from,
           coalesce(o.old_key_valid_until, k.valid_until) AS valid_until,
           v.revoked_at, v.reason AS revocation_reason, v.compromised_since, k.registered_by
    FROM latest k
    LEFT JOIN rotated_out o USING (actor_id, key_id)
    LEFT JOIN revoked v USING (actor_id, key_id)
    """,
    {
        "actor_id": "Actor the key belongs to.",
        "key_id": "Key id named by the envelopes it signs.",
        "valid_from": "Start of the key's validity window (event time).",
        "valid_until": "End of the window (exclusive): the registered end or, after a "
                       "rotation, the old key's overlap end; NULL if open-ended.",
        "revoked_at": "Event time from which the key is revoked; NULL if never revoked.",
        "revocation_reason": "COMPROMISED, SUPERSEDED, ACTOR_LEFT, CARD_LOST (a patient's "
                             "card) or OTHER.",
        "compromised_since": "Earliest event time the key may have been compromised.",
        "registered_by": "TRUST_ANCHOR, or the registrar actor that signed the registration.",
    },
)

ACTORS = View(
    "actors",
    "Every actor allowed to sign: roles and site from its latest verified ActorRegistered "
    "event on the registry chain, or from the trust anchor file.",
    f"""
    WITH trusted AS ({TRUSTED_REGISTRY}),
    registered AS (
        SELECT actor_id, display_name, roles, site_id, -1::BIGINT AS log_offset,
               'TRUST_ANCHOR' AS registered_by
        FROM log.trust_anchor
        UNION ALL
        SELECT r.actor_id, r.display_name, r.roles, r.site_id, r.log_offset, r.producer
        FROM log.actor_registered r JOIN trusted USING (log_topic, log_partition, log_offset)
    )
    SELECT actor_id, display_name, roles, site_id, registered_by FROM registered
    QUALIFY row_number() OVER (PARTITION BY actor_id ORDER BY log_offset DESC) = 1
    """,
    {
        "actor_id": "Registered actor id (the envelope's producer).",
        "display_name": "Name of the person, organisation or system.",
        "roles": "Roles the actor holds (what it may sign, see the gatekeeper's R2).",
        "site_id": "Hospital site or organisation of the actor.",
        "registered_by": "TRUST_ANCHOR, or the registrar that signed the registration.",
    },
)


# -- audit -----------------------------------------------------------------------------------

def _audit_sql(therapy: str) -> str:
    """The audit trail of the records selected by ``therapy`` (a condition on ``e.coi``)."""
    return f"""
    WITH records AS (
        SELECT e.*,
               CASE
                 WHEN k.key_id IS NULL THEN 'UNKNOWN_KEY'
                 WHEN k.revoked_at IS NOT NULL AND e.occurred_at >= k.revoked_at
                   THEN 'KEY_REVOKED'
                 WHEN k.compromised_since IS NOT NULL AND e.occurred_at >= k.compromised_since
                   THEN 'SIGNED_WHILE_COMPROMISED'
                 WHEN e.occurred_at < k.valid_from THEN 'KEY_NOT_YET_VALID'
                 WHEN k.valid_until IS NOT NULL AND e.occurred_at >= k.valid_until
                   THEN 'KEY_EXPIRED'
                 ELSE 'VALID'
               END AS key_standing
        FROM log.envelopes e
        LEFT JOIN signing_keys k ON k.actor_id = e.producer AND k.key_id = e.key_id
        WHERE {therapy}
    ),
    events AS (SELECT * FROM records WHERE log_topic = 'events'),
    refusals AS (
        SELECT r.*, x.rule, x.reason_code, x.reason, x.rejected_event_id,
               x.rejected_event_type, o.original_producer, o.original_key_id,
               o.original_occurred_at, o.original_event_type
        FROM records r
        JOIN log.event_rejected x USING (log_topic, log_partition, log_offset)
        LEFT JOIN log.rejected_envelopes o USING (log_topic, log_partition, log_offset)
        WHERE r.log_topic = 'rejected'
    ),
    refused_at AS (
        SELECT rejected_event_id, min(original_occurred_at) AS event_time
        FROM refusals GROUP BY ALL
    ),
    raised AS (
        SELECT r.*, a.severity, a.rule, a.code, a.message, a.subject_event_id, a.due_at
        FROM records r JOIN log.alert_raised a USING (log_topic, log_partition, log_offset)
        WHERE r.log_topic = 'alerts'
    ),
    others AS (
        SELECT 'REJECTION' AS entry, 1 AS entry_rank, coi,
               coalesce(original_occurred_at, occurred_at) AS event_time,
               rejected_event_id AS event_id,
               coalesce(rejected_event_type, original_event_type) AS event_type,
               original_producer AS actor, original_key_id AS key_id, NULL AS meaning,
               'REJECTED ' || rule || ' ' || reason_code AS outcome, reason AS detail,
               producer AS recorded_by, signature_check, key_standing, log_topic,
               log_partition, log_offset
        FROM refusals
        UNION ALL
        SELECT 'ALERT', 2, a.coi, coalesce(a.due_at, f.event_time, a.occurred_at),
               a.subject_event_id, NULL, a.producer, a.key_id, NULL,
               'ALERT ' || a.severity || ' ' || a.code, a.message, a.producer,
               a.signature_check, a.key_standing, a.log_topic, a.log_partition, a.log_offset
        FROM raised a LEFT JOIN refused_at f ON f.rejected_event_id = a.subject_event_id
    ),
    placed AS (
        SELECT o.*, coalesce(ev.chain_seq, 0) AS timeline_seq
        FROM others o ASOF LEFT JOIN (SELECT coi, occurred_at, chain_seq FROM events
                                      WHERE chain_seq IS NOT NULL) ev
          ON o.coi = ev.coi AND o.event_time >= ev.occurred_at
    ),
    entries AS (
        SELECT coi, chain_seq AS timeline_seq, 'EVENT' AS entry, 0 AS entry_rank,
               occurred_at AS event_time, event_id, event_type, producer AS actor, key_id,
               meaning,
               CASE WHEN signature_check = 'VERIFIED' AND late_entry IS NOT NULL
                    THEN 'ACCEPTED LATE ENTRY'
                    WHEN signature_check = 'VERIFIED' THEN 'ACCEPTED'
                    WHEN signature_check IN ('UNSEALED', 'SEAL_INVALID')
                    THEN 'QUARANTINED ' || signature_check || ' (not accepted by the gatekeeper)'
                    ELSE 'QUARANTINED ' || signature_check END AS outcome,
               -- a late entry says when it was recorded and why (its signed reason)
               CASE WHEN late_entry IS NOT NULL
                    THEN concat_ws('; ', signature_detail,
                                   'late entry signed at ' || strftime(signed_at AT TIME ZONE
                                   'UTC', '%Y-%m-%dT%H:%M:%SZ') || ': ' || late_entry)
                    ELSE signature_detail END AS detail,
               NULL AS recorded_by, signature_check,
               key_standing, chain_seq, chain_link, prev_hash, chain_hash, log_topic,
               log_partition, log_offset
        FROM events
        UNION ALL
        SELECT coi, timeline_seq, entry, entry_rank, event_time, event_id, event_type, actor,
               key_id, meaning, outcome, detail, recorded_by, signature_check, key_standing, NULL,
               NULL, NULL, NULL, log_topic, log_partition, log_offset
        FROM placed
    )
    SELECT x.coi, x.timeline_seq, x.entry, x.event_time, x.event_id, x.event_type, x.actor,
           a.roles AS actor_roles, a.site_id AS actor_site, x.key_id, x.meaning, x.outcome,
           x.detail, x.recorded_by, x.signature_check, x.key_standing,
           CASE WHEN x.signature_check <> 'VERIFIED' THEN x.signature_check
                WHEN x.key_standing <> 'VALID' THEN x.key_standing
                ELSE 'VERIFIED' END AS verification,
           x.chain_seq, x.chain_link, x.prev_hash, x.chain_hash, x.log_topic, x.log_partition,
           x.log_offset, x.entry_rank
    FROM entries x LEFT JOIN actors a ON a.actor_id = x.actor
    """


AUDIT_ORDER = "ORDER BY coi, timeline_seq, entry_rank, event_time, log_topic, log_offset"

AUDIT_TRAIL = View(
    "audit_trail",
    "The chain of identity and custody of each therapy: every accepted event in chain "
    "order with who signed it (actor, roles, site, key), the re-verification of its "
    "signatures, the key's standing at event time and the hash-chain link; the therapy's "
    "refusals and alerts are placed after the last event that happened before them. "
    f"Read one therapy with audit('COI') (already ordered) or {AUDIT_ORDER}.",
    _audit_sql("TRUE"),
    {
        "coi": "Chain-of-identity id of the therapy.",
        "timeline_seq": "Chain position of the event; for a refusal or alert, that of the "
                        "last event that happened before it (0 if none).",
        "entry": "EVENT (a record of the canonical log), REJECTION or ALERT.",
        "event_time": "Event time: of the event, of the refused event as it claims, or the "
              "alert's due time (else the time of the refused event it is about).",
        "event_id": "Event id; for a refusal the refused event's id, for an alert its "
                    "subject (an event id or a timer key coi/kind/anchor).",
        "event_type": "Short event type (the refused type for a refusal).",
        "actor": "Who signed the event (for a refusal: who the refused event claims as "
                 "signer, unverified; for an alert: the gatekeeper).",
        "actor_roles": "Registered roles of the actor (NULL if not registered).",
        "actor_site": "Registered site or organisation of the actor.",
        "key_id": "Key the actor signed with.",
        "meaning": "Part 11 meaning of an event's signature.",
        "outcome": "ACCEPTED, ACCEPTED LATE ENTRY (accepted; the producer signed it as "
                   "recorded after the fact, the detail gives when and why), QUARANTINED "
                   "<code> (on the canonical log, but the log reader "
                   "could not verify it: never folded into any other view; for UNSEALED and "
                   "SEAL_INVALID followed by '(not accepted by the gatekeeper)': the record "
                   "carries no valid gatekeeper seal), REJECTED <rule> "
                   "<code>, or ALERT <severity> <code>.",
        "detail": "The refusal's reason, the alert's message, why a record is "
                  "quarantined, or a late entry's signing time and signed reason.",
        "recorded_by": "The gatekeeper actor that signed a refusal or alert record.",
        "signature_check": "Re-verification of the record's signatures (see "
                           "log.envelopes.signature_check).",
        "key_standing": "The signing key at event time, as the registry stands now: VALID, "
                        "KEY_NOT_YET_VALID, KEY_EXPIRED, KEY_REVOKED, "
                        "SIGNED_WHILE_COMPROMISED or UNKNOWN_KEY.",
        "verification": "VERIFIED when the signature verifies and the key was valid, else "
                        "the first problem.",
        "chain_seq": "Position in the therapy's hash chain (events only).",
        "chain_link": "GENESIS, LINKED or BROKEN (events only).",
        "prev_hash": "Chain digest the event names as its predecessor (hex).",
        "chain_hash": "Chain digest of this event (hex).",
        "log_topic": "Topic of the record: events, rejected or alerts.",
        "log_partition": "Kafka partition of the record.",
        "log_offset": "Kafka offset of the record.",
        "entry_rank": "0 event, 1 refusal, 2 alert: orders entries at one timeline_seq.",
    },
)

AUDIT_MACRO = Macro("audit", "therapy",
                    f"SELECT * FROM ({_audit_sql('e.coi = therapy')}) {AUDIT_ORDER}")


# -- alerts and refusals -----------------------------------------------------------------------

ALERTS = View(
    "alerts",
    "Every alert raised by the gatekeeper, OPEN until the step it waits for is on the log: "
    "TAT_SAMPLE_TO_DESIGN by a design, TAT_APPROVAL_TO_RELEASE by a released batch, "
    "DOSE_WINDOW by an administration, ADMINISTRATION_OVERDUE by that administration, "
    "DOSE_EXPIRY_NOTICE / DOSE_EXPIRED by that dose administered, destroyed (or, for the "
    "notice, recorded expired), FOLLOW_UP_DUE by an outcome after that administration. "
    "Any alert can be owned (AlertAcknowledged) and closed (AlertResolved) by people; "
    "refusal alerts (custody rule breaches) close only that way.",
    """
    WITH raised AS (
        SELECT coi, alert_id, severity, rule, code, message, subject_event_id, due_at,
               occurred_at AS raised_at, producer AS raised_by,
               regexp_extract(subject_event_id, '^[^/]*/[^/]*/(.*)$', 1) AS anchor
        FROM log.alert_raised WHERE log_topic = 'alerts'
        QUALIFY row_number() OVER (PARTITION BY alert_id ORDER BY log_partition, log_offset) = 1
    ),
    first_of AS (
        SELECT 'design' AS kind, coi, NULL AS item, event_id, log_offset, occurred_at
        FROM log.neoantigen_design_produced WHERE log_topic = 'events'
        UNION ALL
        SELECT 'release', coi, NULL, event_id, log_offset, occurred_at
        FROM log.batch_dispositioned WHERE log_topic = 'events' AND disposition = 'RELEASED'
        UNION ALL
        SELECT 'administration', coi, administration_id, event_id, log_offset, occurred_at
        FROM log.dose_administered WHERE log_topic = 'events'
        UNION ALL
        SELECT 'dose_used', coi, dose_id, event_id, log_offset, occurred_at
        FROM log.dose_administered WHERE log_topic = 'events'
        UNION ALL
        SELECT 'dose_used', coi, dose_id, event_id, log_offset, occurred_at
        FROM log.dose_destroyed WHERE log_topic = 'events'
        UNION ALL
        SELECT 'dose_expired', coi, dose_id, event_id, log_offset, occurred_at
        FROM log.dose_expired WHERE log_topic = 'events'
        UNION ALL
        SELECT 'outcome', coi, NULL, event_id, log_offset, occurred_at
        FROM log.outcome_recorded WHERE log_topic = 'events'
    ),
    resolved AS (
        SELECT r.alert_id, arg_min(f.event_id, f.log_offset) AS resolved_by_event_id
        FROM raised r JOIN first_of f ON f.coi = r.coi AND (
             (r.code = 'TAT_SAMPLE_TO_DESIGN' AND f.kind = 'design')
          OR (r.code = 'TAT_APPROVAL_TO_RELEASE' AND f.kind = 'release')
          OR (r.code = 'DOSE_WINDOW' AND f.kind = 'administration')
          OR (r.code = 'ADMINISTRATION_OVERDUE' AND f.kind = 'administration'
              AND f.item = r.anchor)
          OR (r.code IN ('DOSE_EXPIRY_NOTICE', 'DOSE_EXPIRED') AND f.kind = 'dose_used'
              AND f.item = split_part(r.anchor, '@', 1))
          OR (r.code = 'DOSE_EXPIRY_NOTICE' AND f.kind = 'dose_expired'
              AND f.item = split_part(r.anchor, '@', 1))
          OR (r.code = 'FOLLOW_UP_DUE' AND f.kind = 'outcome' AND f.occurred_at >= (
                SELECT min(a.occurred_at) FROM log.dose_administered a
                WHERE a.event_id = r.anchor)))
        GROUP BY r.alert_id
    ),
    owned AS (
        SELECT alert_id, arg_min(producer, log_offset) AS acknowledged_by,
               min(occurred_at) AS acknowledged_at, arg_max(note, log_offset) AS owner_note
        FROM log.alert_acknowledged WHERE log_topic = 'events' GROUP BY alert_id
    ),
    closed AS (
        SELECT alert_id, arg_min(producer, log_offset) AS closed_by,
               min(occurred_at) AS closed_at, arg_min(resolution, log_offset) AS resolution,
               arg_min(reason, log_offset) AS resolution_reason,
               arg_min(event_id, log_offset) AS closing_event_id
        FROM log.alert_resolved WHERE log_topic = 'events' GROUP BY alert_id
    )
    SELECT r.coi, r.alert_id, r.severity, r.rule, r.code, r.message, r.subject_event_id,
           r.due_at, r.raised_at, r.raised_by,
           CASE WHEN c.alert_id IS NOT NULL OR s.resolved_by_event_id IS NOT NULL
                  THEN 'RESOLVED'
                WHEN o.alert_id IS NOT NULL THEN 'ACKNOWLEDGED'
                ELSE 'OPEN' END AS status,
           coalesce(c.closing_event_id, s.resolved_by_event_id) AS resolved_by_event_id,
           o.acknowledged_by, o.acknowledged_at, o.owner_note,
           c.closed_by AS resolved_by, c.closed_at AS resolved_at, c.resolution,
           c.resolution_reason
    FROM raised r LEFT JOIN resolved s USING (alert_id)
    LEFT JOIN owned o USING (alert_id) LEFT JOIN closed c USING (alert_id)
    """,
    {
        "coi": "Therapy the alert is about.",
        "alert_id": "Deterministic alert id (one per subject and kind).",
        "severity": "INFO, WARNING or CRITICAL.",
        "rule": "Rule that raised it: TIMER for turnaround timers, R1..R9 for breaches.",
        "code": "Machine-readable kind (e.g. DOSE_WINDOW, DOSE_QUARANTINED).",
        "message": "What happened and what to do, for people.",
        "subject_event_id": "Refused event id, or the timer key coi/kind/anchor.",
        "due_at": "When the awaited step was due (timers), event time.",
        "raised_at": "When the gatekeeper signed the alert.",
        "raised_by": "Gatekeeper actor that signed the alert.",
        "status": "OPEN (nobody owns it), ACKNOWLEDGED (an owner took it on), or RESOLVED "
                  "(the awaited step is on the log, or an owner resolved it).",
        "resolved_by_event_id": "First event that resolved the alert (the awaited step, "
                                "or the AlertResolved).",
        "acknowledged_by": "Actor who first acknowledged the alert (its owner).",
        "acknowledged_at": "When it was first acknowledged (event time).",
        "owner_note": "The owner's latest note on what is being done.",
        "resolved_by": "Actor who resolved it with an AlertResolved (signed RESPONSIBLE).",
        "resolved_at": "When that resolution happened (event time).",
        "resolution": "How it was closed: CORRECTED, NO_ACTION_NEEDED, RISK_ACCEPTED, "
                      "SUPERSEDED.",
        "resolution_reason": "Why, as the resolver wrote it.",
    },
)

REJECTIONS = View(
    "rejections",
    "Every refusal of the gatekeeper, from the rejected topic: the rule, the reason and "
    "where the refused record came from; the original bytes are in log.event_rejected.",
    """
    SELECT x.coi, o.original_occurred_at AS refused_event_at, x.occurred_at AS refused_at,
           x.rejected_event_id, x.rejected_event_type, o.original_producer AS claimed_signer,
           o.original_key_id AS claimed_key_id, x.rule, x.reason_code, x.reason,
           x.source_topic, x.source_partition, x.source_offset, x.producer AS refused_by,
           o.decode_error, x.log_partition, x.log_offset
    FROM log.event_rejected x
    LEFT JOIN log.rejected_envelopes o USING (log_topic, log_partition, log_offset)
    WHERE x.log_topic = 'rejected'
    """,
    {
        "coi": "Therapy the refused record names (its key if it was unreadable).",
        "refused_event_at": "Event time the refused record claims (NULL if unreadable).",
        "refused_at": "When the gatekeeper signed the refusal.",
        "rejected_event_id": "Event id of the refused record, if readable.",
        "rejected_event_type": "Event type of the refused record, if readable.",
        "claimed_signer": "Signer the refused record claims (unverified).",
        "claimed_key_id": "Key id the refused record claims (unverified).",
        "rule": "Rule that refused it (R0 for unreadable records, R1..R9).",
        "reason_code": "Machine-readable reason (e.g. DOSE_QUARANTINED, DUPLICATE_EVENT).",
        "reason": "Why, for people, with what to do.",
        "source_topic": "Ingress topic the refused record was read from.",
        "source_partition": "Ingress partition.",
        "source_offset": "Ingress offset.",
        "refused_by": "Gatekeeper actor that signed the refusal.",
        "decode_error": "Why the original bytes are not a readable envelope, if so.",
        "log_partition": "Partition of the refusal on the rejected topic.",
        "log_offset": "Offset of the refusal on the rejected topic.",
    },
)


# -- inventory ----------------------------------------------------------------------------------

_STORAGE_RANGES = ", ".join(
    f"({sql_string(panel.therapy_type)}, {panel.storage_min_celsius!r}::DOUBLE, "
    f"{panel.storage_max_celsius!r}::DOUBLE)" for panel in PANELS.values())

QUARANTINES = View(
    "quarantines",
    "Every time a sample, batch or dose was put in quarantine, as the hub derives it from "
    "the log (the gatekeeper's case fold does the same): a sample received REJECTED, a "
    "temperature excursion, logger readings outside the therapy type's storage range "
    "(pcvhub.schemas.specifications), a receipt with a broken or other seal or missing "
    "items; a batch's doses share its quarantine (doses released from a quarantined batch "
    "from their release on). decision says how it ended: RELEASED or DESTROYED by the "
    "qualified person, NULL while the item is still in quarantine.",
    f"""
    WITH released AS (
        SELECT * FROM (
            SELECT coi, batch_id, unnest(dose_ids) AS dose_id, log_offset
            FROM log.batch_dispositioned
            WHERE log_topic = 'events' AND disposition = 'RELEASED')
        QUALIFY row_number() OVER (PARTITION BY coi, dose_id ORDER BY log_offset) = 1
    ),
    kinds AS (
        SELECT DISTINCT coi, sample_id AS item_id, 'SAMPLE' AS item_kind
        FROM log.sample_collected WHERE log_topic = 'events'
        UNION SELECT DISTINCT coi, batch_id, 'BATCH'
        FROM log.manufacturing_started WHERE log_topic = 'events'
        UNION SELECT coi, dose_id, 'DOSE' FROM released
    ),
    storage(therapy_type, min_celsius, max_celsius) AS (VALUES {_STORAGE_RANGES}),
    therapy_types AS (
        SELECT coi, therapy_type FROM log.patient_enrolled WHERE log_topic = 'events'
        QUALIFY row_number() OVER (PARTITION BY coi ORDER BY log_offset) = 1
    ),
    named AS (  -- the items each event quarantines, as it names them
        SELECT coi, sample_id AS item_id, log_offset, occurred_at, event_id,
               'REJECTED_ON_RECEIPT' AS cause
        FROM log.sample_received WHERE log_topic = 'events' AND condition = 'REJECTED'
        UNION ALL
        SELECT coi, unnest(item_ids), log_offset, occurred_at, event_id,
               'TEMPERATURE_EXCURSION'
        FROM log.temperature_excursion WHERE log_topic = 'events'
        UNION ALL
        -- the hub judges the logger's readings itself: one reading outside the range
        SELECT t.coi, unnest(t.item_ids), t.log_offset, t.occurred_at, t.event_id,
               'LOGGER_READINGS'
        FROM log.temperature_log_recorded t
        JOIN therapy_types USING (coi) JOIN storage s USING (therapy_type)
        WHERE t.log_topic = 'events' AND len(list_filter(
            t.readings, lambda r: NOT r.celsius BETWEEN s.min_celsius AND s.max_celsius)) > 0
        UNION ALL
        -- a receipt with a broken seal, under another seal than the dispatched one, or
        -- without some of the items, quarantines every item of the shipment
        SELECT r.coi, unnest(d.item_ids), r.log_offset, r.occurred_at, r.event_id,
               'TAMPERED_RECEIPT'
        FROM log.shipment_received r JOIN log.shipment_dispatched d
          ON d.coi = r.coi AND d.shipment_id = r.shipment_id AND d.log_topic = 'events'
        WHERE r.log_topic = 'events' AND (r.seal_intact = false OR (
              r.seal_id IS NOT NULL AND d.seal_id IS NOT NULL AND r.seal_id <> d.seal_id)
              OR (r.item_ids IS NOT NULL
                  AND list_sort(list_distinct(r.item_ids))
                      <> list_sort(list_distinct(d.item_ids))))
    ),
    decisions AS (
        SELECT coi, item_id, decision, log_offset, occurred_at
        FROM log.quarantine_dispositioned WHERE log_topic = 'events'
    ),
    exposed AS (
        SELECT * FROM named
        UNION ALL
        -- the doses of a batch were in its box; a dose released later inherits the
        -- batch's quarantine unless the qualified person had ended it by then
        SELECT n.coi, d.dose_id, greatest(n.log_offset, d.log_offset), n.occurred_at,
               n.event_id, n.cause
        FROM named n JOIN released d ON d.coi = n.coi AND d.batch_id = n.item_id
        WHERE n.log_offset > d.log_offset OR NOT EXISTS (
            SELECT 1 FROM decisions q WHERE q.coi = n.coi AND q.item_id = n.item_id
              AND q.log_offset > n.log_offset AND q.log_offset < d.log_offset)
    )
    SELECT e.coi, e.item_id, coalesce(k.item_kind, 'UNKNOWN') AS item_kind, e.cause,
           e.event_id AS quarantined_by, e.occurred_at AS quarantined_at, e.log_offset,
           q.decision, q.occurred_at AS decided_at
    FROM exposed e
    LEFT JOIN kinds k USING (coi, item_id)
    -- the qualified person's first decision on the item after it was quarantined
    LEFT JOIN decisions q
      ON q.coi = e.coi AND q.item_id = e.item_id AND q.log_offset > e.log_offset
    QUALIFY row_number() OVER (PARTITION BY e.coi, e.item_id, e.log_offset, e.event_id
                               ORDER BY q.log_offset) = 1
    """,
    {
        "coi": "Therapy the item belongs to.",
        "item_id": "Sample, batch or dose id.",
        "item_kind": "SAMPLE, BATCH or DOSE.",
        "cause": "REJECTED_ON_RECEIPT, TEMPERATURE_EXCURSION, LOGGER_READINGS (readings "
                 "outside the storage range) or TAMPERED_RECEIPT.",
        "quarantined_by": "Event id of the event that quarantined it (for a batch's dose: "
                          "the batch's).",
        "quarantined_at": "Event time of that event.",
        "log_offset": "Position on the canonical log from which the quarantine holds.",
        "decision": "RELEASED or DESTROYED by the qualified person; NULL: still in "
                    "quarantine.",
        "decided_at": "When the qualified person decided.",
    },
)

INVENTORY_MACRO = Macro("inventory_as_of", "as_of", f"""
    WITH doses AS (
        SELECT * FROM (
            SELECT coi, batch_id, unnest(dose_ids) AS dose_id, expiry,
                   occurred_at AS released_at, log_offset
            FROM log.batch_dispositioned
            WHERE log_topic = 'events' AND disposition = 'RELEASED')
        QUALIFY row_number() OVER (PARTITION BY coi, dose_id ORDER BY log_offset) = 1
    ),
    dispositions AS (
        SELECT coi, item_id AS dose_id, decision, log_offset, occurred_at
        FROM log.quarantine_dispositioned WHERE log_topic = 'events'
    ),
    changes AS (
        SELECT coi, dose_id, log_offset, occurred_at, 'AVAILABLE' AS status
        FROM log.inventory_placed WHERE log_topic = 'events'
        UNION ALL SELECT coi, dose_id, log_offset, occurred_at, 'RESERVED'
        FROM log.dose_reserved WHERE log_topic = 'events'
        UNION ALL SELECT coi, dose_id, log_offset, occurred_at, 'DISPENSED'
        FROM log.dose_dispensed WHERE log_topic = 'events'
        UNION ALL SELECT coi, dose_id, log_offset, occurred_at, 'ADMINISTERED'
        FROM log.dose_administered WHERE log_topic = 'events'
        UNION ALL SELECT coi, dose_id, log_offset, occurred_at, 'EXPIRED'
        FROM log.dose_expired WHERE log_topic = 'events'
        UNION ALL SELECT coi, dose_id, log_offset, occurred_at, 'DESTROYED'
        FROM log.dose_destroyed WHERE log_topic = 'events'
        UNION ALL SELECT coi, dose_id, log_offset, occurred_at, 'DESTROYED'
        FROM dispositions WHERE decision = 'DESTROYED'
        UNION ALL
        -- every quarantine of the dose, its batch's included (see the quarantines view)
        SELECT coi, item_id, log_offset, quarantined_at, 'QUARANTINED'
        FROM quarantines WHERE item_kind = 'DOSE'
    ),
    lifted AS (  -- the qualified person's latest release from quarantine, per dose
        SELECT coi, dose_id, max(log_offset) AS lifted_at FROM dispositions
        WHERE decision = 'RELEASED' GROUP BY coi, dose_id
    ),
    current AS (
        SELECT c.coi, c.dose_id, c.status, c.occurred_at AS status_since
        FROM changes c LEFT JOIN lifted l USING (coi, dose_id)
        -- a released quarantine no longer counts: the dose is back where it was
        WHERE NOT (c.status = 'QUARANTINED' AND c.log_offset < coalesce(l.lifted_at, -1))
        QUALIFY row_number() OVER (
            PARTITION BY coi, dose_id
            ORDER BY status IN {FINAL} DESC,
                     CASE WHEN status IN {FINAL} THEN log_offset END ASC,
                     log_offset DESC) = 1
    ),
    placement AS (
        SELECT coi, dose_id, site_id, location, placement_method
        FROM log.inventory_placed WHERE log_topic = 'events'
        QUALIFY row_number() OVER (PARTITION BY coi, dose_id ORDER BY log_offset DESC) = 1
    ),
    reservation AS (
        SELECT coi, dose_id, administration_id, reserved_until
        FROM log.dose_reserved WHERE log_topic = 'events'
        QUALIFY row_number() OVER (PARTITION BY coi, dose_id ORDER BY log_offset DESC) = 1
    ),
    recorded AS (
        SELECT d.coi, d.dose_id, d.batch_id, p.site_id, p.location, p.placement_method,
               coalesce(c.status, 'RELEASED') AS recorded_status,
               coalesce(c.status_since, d.released_at) AS status_since, d.expiry,
               d.released_at, r.administration_id, r.reserved_until
        FROM doses d
        LEFT JOIN current c USING (coi, dose_id)
        LEFT JOIN placement p USING (coi, dose_id)
        LEFT JOIN reservation r USING (coi, dose_id)
    )
    SELECT coi, dose_id, batch_id, site_id, location, placement_method,
           CASE WHEN recorded_status IN {USABLE} AND expiry IS NOT NULL AND expiry <= as_of
                THEN 'EXPIRED' ELSE recorded_status END AS status,
           recorded_status, status_since, expiry, released_at,
           CASE WHEN recorded_status = 'RESERVED' THEN administration_id END AS reserved_for,
           CASE WHEN recorded_status = 'RESERVED' THEN reserved_until END AS reserved_until
    FROM recorded
    """)

INVENTORY = View(
    "inventory",
    "Every released dose (one vial for one administration): where it is (site, location, "
    "placement method), its status and expiry. Status: RELEASED (not yet placed at the "
    "site), AVAILABLE (placed, free), RESERVED, DISPENSED, ADMINISTERED, QUARANTINED "
    "(temperature excursion, logger readings outside the storage range or tampered "
    "receipt, until the qualified person decides; see quarantines), "
    "EXPIRED (recorded expired, or past expiry and unused), DESTROYED. "
    "inventory_as_of(TIMESTAMPTZ) gives the same at another date.",
    "SELECT * FROM inventory_as_of(current_timestamp)",
    {
        "coi": "Therapy (patient) the dose belongs to.",
        "dose_id": "Dose id from the batch release.",
        "batch_id": "Batch (lot) the dose comes from.",
        "site_id": "Site where the dose was placed (NULL before placement).",
        "location": "Storage location at the site.",
        "placement_method": "CONSIGNMENT, SITE_STOCK, JUST_IN_TIME or OTHER.",
        "status": "Status now (see the view comment); past expiry counts as EXPIRED.",
        "recorded_status": "Status from the events alone, without the date check.",
        "status_since": "Event time of the event that set the recorded status.",
        "expiry": "Expiry of the dose (from the batch release).",
        "released_at": "When the batch was released.",
        "reserved_for": "Administration the dose is reserved for, while RESERVED.",
        "reserved_until": "End of the reservation, while RESERVED.",
    },
)

INVENTORY_BY_SITE = View(
    "inventory_by_site",
    "Doses and lots per site, storage location, placement method and status (today).",
    """
    SELECT site_id, location, placement_method, status, count(*) AS doses,
           count(DISTINCT batch_id) AS lots, min(expiry) AS earliest_expiry
    FROM inventory GROUP BY ALL
    """,
    {
        "site_id": "Site (NULL: released, not yet placed).",
        "location": "Storage location at the site.",
        "placement_method": "CONSIGNMENT, SITE_STOCK, JUST_IN_TIME or OTHER.",
        "status": "Dose status (see inventory).",
        "doses": "Number of doses.",
        "lots": "Number of distinct batches among them.",
        "earliest_expiry": "Earliest expiry among them.",
    },
)

INVENTORY_LOTS = View(
    "inventory_lots",
    "Every batch (lot) started for a therapy: its latest disposition and its doses by "
    "status (today).",
    """
    WITH started AS (
        SELECT coi, batch_id, facility_id, planned_dose_count, occurred_at AS started_at
        FROM log.manufacturing_started WHERE log_topic = 'events'
        QUALIFY row_number() OVER (PARTITION BY coi, batch_id ORDER BY log_offset) = 1
    ),
    disposition AS (
        SELECT coi, batch_id, disposition, expiry, occurred_at AS dispositioned_at
        FROM log.batch_dispositioned WHERE log_topic = 'events'
        QUALIFY row_number() OVER (PARTITION BY coi, batch_id ORDER BY log_offset DESC) = 1
    ),
    counts AS (
        SELECT coi, batch_id, count(*) AS doses,
               count(*) FILTER (WHERE status IN ('RELEASED', 'AVAILABLE')) AS available,
               count(*) FILTER (WHERE status = 'RESERVED') AS reserved,
               count(*) FILTER (WHERE status = 'QUARANTINED') AS quarantined,
               count(*) FILTER (WHERE status = 'EXPIRED') AS expired,
               count(*) FILTER (WHERE status = 'ADMINISTERED') AS administered
        FROM inventory GROUP BY coi, batch_id
    )
    SELECT s.coi, s.batch_id, s.facility_id, s.planned_dose_count, s.started_at,
           d.disposition, d.dispositioned_at, d.expiry, coalesce(c.doses, 0) AS doses,
           coalesce(c.available, 0) AS available, coalesce(c.reserved, 0) AS reserved,
           coalesce(c.quarantined, 0) AS quarantined, coalesce(c.expired, 0) AS expired,
           coalesce(c.administered, 0) AS administered
    FROM started s
    LEFT JOIN disposition d USING (coi, batch_id)
    LEFT JOIN counts c USING (coi, batch_id)
    """,
    {
        "coi": "Therapy the batch is made for.",
        "batch_id": "Batch (lot) id.",
        "facility_id": "Manufacturing facility.",
        "planned_dose_count": "Doses planned when manufacturing started.",
        "started_at": "When manufacturing started.",
        "disposition": "RELEASED or REJECTED by the qualified person; NULL if pending.",
        "dispositioned_at": "When the latest disposition was recorded.",
        "expiry": "Expiry given at release.",
        "doses": "Doses released from the batch.",
        "available": "Doses released or placed and free (not past expiry).",
        "reserved": "Doses reserved for an administration.",
        "quarantined": "Doses quarantined after a temperature excursion.",
        "expired": "Doses expired (recorded, or past expiry unused).",
        "administered": "Doses given to the patient.",
    },
)


# -- billing ------------------------------------------------------------------------------------

BILLING_MACRO = Macro("billing_claims_as_of", "as_of", """
    WITH claims AS (
        SELECT coi, claim_id, administration_event_id, payer_id, amount, currency,
               procedure_code, occurred_at AS submitted_at, producer AS submitted_by
        FROM log.claim_submitted WHERE log_topic = 'events'
        QUALIFY row_number() OVER (PARTITION BY coi, claim_id ORDER BY log_offset) = 1
    ),
    adjudication AS (
        SELECT coi, claim_id, status, allowed_amount, denial_reason_code,
               occurred_at AS adjudicated_at
        FROM log.claim_adjudicated WHERE log_topic = 'events'
        QUALIFY row_number() OVER (PARTITION BY coi, claim_id ORDER BY log_offset DESC) = 1
    ),
    payments AS (
        SELECT coi, claim_id, sum(amount) AS paid_amount, max(paid_on) AS last_paid_on
        FROM log.payment_posted WHERE log_topic = 'events' GROUP BY coi, claim_id
    ),
    administrations AS (
        SELECT event_id AS administration_event_id, dose_id, dose_number,
               occurred_at AS administered_at
        FROM log.dose_administered WHERE log_topic = 'events'
    ),
    sites AS (
        SELECT coi, site_id FROM log.patient_enrolled WHERE log_topic = 'events'
        QUALIFY row_number() OVER (PARTITION BY coi ORDER BY log_offset) = 1
    ),
    figures AS (
        SELECT c.*, s.site_id, a.dose_id, a.dose_number, a.administered_at,
               j.status AS adjudication, j.allowed_amount, j.denial_reason_code,
               j.adjudicated_at, coalesce(p.paid_amount, 0) AS paid_amount, p.last_paid_on,
               CASE WHEN j.status = 'DENIED' THEN 0
                    WHEN j.status IN ('APPROVED', 'PARTIALLY_APPROVED') THEN j.allowed_amount
                    ELSE c.amount END AS expected_amount
        FROM claims c
        LEFT JOIN sites s USING (coi)
        LEFT JOIN administrations a USING (administration_event_id)
        LEFT JOIN adjudication j USING (coi, claim_id)
        LEFT JOIN payments p USING (coi, claim_id)
    ),
    owed AS (
        SELECT *, greatest(expected_amount - paid_amount, 0) AS outstanding_amount,
               greatest(date_diff('day', submitted_at, as_of), 0) AS days_outstanding
        FROM figures
    )
    SELECT coi, claim_id, payer_id, site_id, administration_event_id, dose_id, dose_number,
           administered_at, procedure_code, currency, amount, submitted_at, submitted_by,
           adjudication, allowed_amount, denial_reason_code, adjudicated_at, paid_amount,
           last_paid_on, expected_amount, outstanding_amount,
           CASE WHEN adjudication = 'DENIED' THEN 'DENIED'
                WHEN paid_amount > 0 AND paid_amount >= expected_amount THEN 'PAID'
                WHEN paid_amount > 0 THEN 'PARTIALLY_PAID'
                ELSE coalesce(adjudication, 'SUBMITTED') END AS status,
           days_outstanding,
           CASE WHEN outstanding_amount = 0 THEN NULL
                WHEN days_outstanding <= 30 THEN '0-30'
                WHEN days_outstanding <= 60 THEN '31-60'
                WHEN days_outstanding <= 90 THEN '61-90'
                ELSE '90+' END AS ageing_bucket
    FROM owed
    """)

BILLING_CLAIMS = View(
    "billing_claims",
    "Every claim, one per administration billed: payer, amounts, adjudication, payments, "
    "status and receivables ageing as of today (billing_claims_as_of(TIMESTAMPTZ) for "
    "another date). A payer may see only payer_claims('PAYER_ID').",
    "SELECT * FROM billing_claims_as_of(current_timestamp)",
    {
        "coi": "Therapy billed.",
        "claim_id": "Claim id (the hospital's patient control number).",
        "payer_id": "Payer billed.",
        "site_id": "Hospital site of the therapy.",
        "administration_event_id": "DoseAdministered event the claim bills.",
        "dose_id": "Dose given in that administration.",
        "dose_number": "Which dose of the therapy (1, 2...).",
        "administered_at": "When the dose was given.",
        "procedure_code": "CPT/HCPCS code billed.",
        "currency": "ISO 4217 currency of every amount of the claim.",
        "amount": "Amount billed.",
        "submitted_at": "When the claim was submitted (ageing starts here).",
        "submitted_by": "Actor that submitted the claim.",
        "adjudication": "Latest payer decision: APPROVED, PARTIALLY_APPROVED, DENIED, "
                        "PENDED; NULL while none.",
        "allowed_amount": "Amount the payer allowed in its latest decision.",
        "denial_reason_code": "Payer's denial reason (CARC), if denied.",
        "adjudicated_at": "When the latest decision was recorded.",
        "paid_amount": "Sum of payments posted against the claim.",
        "last_paid_on": "Date of the latest payment.",
        "expected_amount": "What the hub expects to be paid: allowed amount once approved, "
                           "0 once denied, else the amount billed.",
        "outstanding_amount": "expected_amount minus paid_amount, not below 0.",
        "status": "SUBMITTED, PENDED, APPROVED, PARTIALLY_APPROVED, DENIED, PARTIALLY_PAID "
                  "or PAID.",
        "days_outstanding": "Days from submission to the reference date.",
        "ageing_bucket": "0-30, 31-60, 61-90 or 90+ days; NULL when nothing is outstanding.",
    },
)

DOSE_OWNERSHIP = View(
    "dose_ownership",
    "Who owns each released dose, and so who bills whom for it (as the gatekeeper's case "
    "fold holds it): a dose is the manufacturer's (the batch's holder at release) until "
    "the site takes it over: site stock on its placement (SITE_STOCK), consigned and "
    "just-in-time stock only once administered to the site's patient. From then on the "
    "manufacturer invoices the site for the dose (invoice_from, invoice_to); the site bills "
    "the payer for the administration (billing_claims).",
    """
    WITH doses AS (
        SELECT * FROM (
            SELECT coi, batch_id, unnest(dose_ids) AS dose_id, occurred_at AS released_at,
                   log_offset
            FROM log.batch_dispositioned
            WHERE log_topic = 'events' AND disposition = 'RELEASED')
        QUALIFY row_number() OVER (PARTITION BY coi, dose_id ORDER BY log_offset) = 1
    ),
    batch_custody AS (  -- who held each batch, from its start on
        SELECT coi, batch_id, producer AS holder, log_offset
        FROM log.manufacturing_started WHERE log_topic = 'events'
        UNION ALL
        SELECT coi, item_id, to_actor, log_offset
        FROM log.custody_transferred WHERE log_topic = 'events'
    ),
    manufacturer AS (  -- the batch's holder when the dose was released: its first owner
        SELECT d.coi, d.dose_id, h.holder
        FROM doses d JOIN batch_custody h
          ON h.coi = d.coi AND h.batch_id = d.batch_id AND h.log_offset < d.log_offset
        QUALIFY row_number() OVER (PARTITION BY d.coi, d.dose_id ORDER BY h.log_offset DESC) = 1
    ),
    placements AS (
        SELECT coi, dose_id, site_id, placement_method, occurred_at, event_id, log_offset
        FROM log.inventory_placed WHERE log_topic = 'events'
    ),
    site_stock AS (  -- the latest placement as the site's own stock
        SELECT * FROM placements WHERE placement_method = 'SITE_STOCK'
        QUALIFY row_number() OVER (PARTITION BY coi, dose_id ORDER BY log_offset DESC) = 1
    ),
    latest AS (
        SELECT coi, dose_id, placement_method FROM placements
        QUALIFY row_number() OVER (PARTITION BY coi, dose_id ORDER BY log_offset DESC) = 1
    ),
    administered AS (
        SELECT a.coi, a.dose_id, a.occurred_at, a.event_id, p.placement_method
        FROM log.dose_administered a
        LEFT JOIN placements p
          ON p.coi = a.coi AND p.dose_id = a.dose_id AND p.log_offset < a.log_offset
        WHERE a.log_topic = 'events'
        QUALIFY row_number() OVER (PARTITION BY a.coi, a.dose_id
                                   ORDER BY a.log_offset, p.log_offset DESC) = 1
    ),
    sites AS (
        SELECT coi, site_id FROM log.patient_enrolled WHERE log_topic = 'events'
        QUALIFY row_number() OVER (PARTITION BY coi ORDER BY log_offset) = 1
    ),
    owned AS (
        SELECT d.coi, d.dose_id, d.batch_id, l.placement_method, m.holder AS manufacturer,
               s.site_id,
               CASE WHEN a.dose_id IS NOT NULL AND a.placement_method IS DISTINCT FROM
                         'SITE_STOCK' AND s.site_id IS NOT NULL THEN 'ADMINISTERED'
                    WHEN k.dose_id IS NOT NULL THEN 'SITE_STOCK' END AS taken_over,
               a.occurred_at AS administered_at, a.event_id AS administration_event_id,
               k.site_id AS stock_site_id, k.occurred_at AS placed_at,
               k.event_id AS placement_event_id, d.released_at
        FROM doses d
        LEFT JOIN manufacturer m USING (coi, dose_id)
        LEFT JOIN latest l USING (coi, dose_id)
        LEFT JOIN administered a USING (coi, dose_id)
        LEFT JOIN site_stock k USING (coi, dose_id)
        LEFT JOIN sites s USING (coi)
    )
    SELECT coi, dose_id, batch_id, placement_method, manufacturer,
           CASE taken_over WHEN 'ADMINISTERED' THEN site_id WHEN 'SITE_STOCK' THEN stock_site_id
                ELSE manufacturer END AS owner,
           CASE WHEN taken_over IS NULL THEN 'MANUFACTURER' ELSE 'SITE' END AS owner_kind,
           CASE taken_over WHEN 'ADMINISTERED' THEN administered_at
                WHEN 'SITE_STOCK' THEN placed_at ELSE released_at END AS owner_since,
           CASE taken_over WHEN 'ADMINISTERED' THEN administration_event_id
                WHEN 'SITE_STOCK' THEN placement_event_id END AS taken_over_by,
           CASE WHEN taken_over IS NOT NULL THEN manufacturer END AS invoice_from,
           CASE taken_over WHEN 'ADMINISTERED' THEN site_id
                WHEN 'SITE_STOCK' THEN stock_site_id END AS invoice_to
    FROM owned
    """,
    {
        "coi": "Therapy the dose belongs to.",
        "dose_id": "Dose id from the batch release.",
        "batch_id": "Batch (lot) the dose comes from.",
        "placement_method": "CONSIGNMENT, SITE_STOCK or JUST_IN_TIME of its latest "
                            "placement (NULL before placement).",
        "manufacturer": "Actor that held the batch when the dose was released: the dose's "
                        "first owner.",
        "owner": "Who owns the dose now: the manufacturer, or the site (its site id).",
        "owner_kind": "MANUFACTURER or SITE.",
        "owner_since": "Since when: release, the site-stock placement, or the "
                       "administration of consigned or just-in-time stock.",
        "taken_over_by": "Event id of the placement or administration that made the dose "
                         "the site's; NULL while the manufacturer owns it.",
        "invoice_from": "Who invoices the dose: the manufacturer, once the site owns it.",
        "invoice_to": "Who is invoiced: the site that took the dose over.",
    },
)

PAYER_CLAIMS_MACRO = Macro("payer_claims", "payer",
                           "SELECT * FROM billing_claims WHERE payer_id = payer")

RECEIVABLES_MACRO = Macro("receivables_ageing_as_of", "as_of", """
    SELECT payer_id, currency, ageing_bucket, count(*) AS claims,
           sum(outstanding_amount) AS outstanding_amount
    FROM billing_claims_as_of(as_of) WHERE outstanding_amount > 0
    GROUP BY ALL
    """)

RECEIVABLES_AGEING = View(
    "receivables_ageing",
    "Outstanding receivables per payer, currency and ageing bucket as of today "
    "(receivables_ageing_as_of(TIMESTAMPTZ) for another date).",
    "SELECT * FROM receivables_ageing_as_of(current_timestamp)",
    {
        "payer_id": "Payer.",
        "currency": "Currency of the amounts.",
        "ageing_bucket": "0-30, 31-60, 61-90 or 90+ days since submission.",
        "claims": "Claims with an amount outstanding.",
        "outstanding_amount": "Sum outstanding.",
    },
)

OUTCOME_MILESTONES = View(
    "outcome_milestones",
    "Outcome-based payment milestones reached per therapy (payments or rebates agreed "
    "with a payer).",
    """
    SELECT coi, agreement_id, milestone, payer_id, amount, currency, payment_direction,
           len(evidence_event_ids) AS evidence_events, occurred_at AS reached_at,
           producer AS recorded_by
    FROM log.outcome_milestone_reached WHERE log_topic = 'events'
    """,
    {
        "coi": "Therapy.",
        "agreement_id": "Outcome-based agreement.",
        "milestone": "Milestone reached.",
        "payer_id": "Payer of the agreement.",
        "amount": "Amount due on the milestone.",
        "currency": "ISO 4217 currency of the amount.",
        "payment_direction": "PAYER_TO_MANUFACTURER or MANUFACTURER_TO_PAYER (rebate).",
        "evidence_events": "Number of events cited as evidence.",
        "reached_at": "When the milestone was recorded as reached.",
        "recorded_by": "Actor that recorded it.",
    },
)


# -- QC ----------------------------------------------------------------------------------------

QC_RESULTS = View(
    "qc_results",
    "QC results per batch and test: the latest result (the one release is judged on), "
    "how many times the test was recorded and every result in order.",
    """
    WITH disposition AS (
        SELECT coi, batch_id, disposition FROM log.batch_dispositioned
        WHERE log_topic = 'events'
        QUALIFY row_number() OVER (PARTITION BY coi, batch_id ORDER BY log_offset DESC) = 1
    )
    SELECT q.coi, q.batch_id, q.test, count(*) AS attempts,
           arg_max_null(q.result, q.log_offset) AS result,
           arg_max_null(q.value, q.log_offset) AS value,
           arg_max_null(q.unit, q.log_offset) AS unit,
           arg_max_null(q.specification, q.log_offset) AS specification,
           arg_max_null(q.method_ref, q.log_offset) AS method_ref,
           arg_max_null(q.producer, q.log_offset) AS recorded_by,
           max(q.occurred_at) AS recorded_at,
           list(q.result ORDER BY q.log_offset) AS history,
           coalesce(list(q.investigation_ref ORDER BY q.log_offset)
                    FILTER (WHERE q.investigation_ref IS NOT NULL), []) AS investigations,
           d.disposition AS batch_disposition
    FROM log.qc_result_recorded q LEFT JOIN disposition d USING (coi, batch_id)
    WHERE q.log_topic = 'events'
    GROUP BY q.coi, q.batch_id, q.test, d.disposition
    """,
    {
        "coi": "Therapy the batch is made for.",
        "batch_id": "Batch tested.",
        "test": "QC test (sterility, endotoxin, identity...).",
        "attempts": "How many results were recorded for this test.",
        "result": "Latest result: PASS, FAIL or UNKNOWN.",
        "value": "Latest measured value.",
        "unit": "Unit of the value.",
        "specification": "Acceptance criterion.",
        "method_ref": "Method reference (e.g. pharmacopoeia chapter).",
        "recorded_by": "QC analyst who recorded the latest result.",
        "recorded_at": "When the latest result was recorded.",
        "history": "Every result of this test, in order.",
        "investigations": "Out-of-specification investigations the retests were done "
                          "under, in order.",
        "batch_disposition": "Latest disposition of the batch (RELEASED, REJECTED, NULL).",
    },
)


# -- turnaround ------------------------------------------------------------------------------

_STAGE_ORDER = ", ".join(f"('{s.value}', {i})" for i, s in enumerate(Stage))

TURNAROUND_STAGES = View(
    "turnaround_stages",
    "Time from the first entry into each lifecycle stage to the first entry into the "
    "next stage reached, per therapy (event time).",
    f"""
    WITH firsts AS (
        SELECT coi, stage, min(entered_at) AS entered_at FROM log.stage_entries GROUP BY ALL
    ),
    ordered AS (
        SELECT f.*, o.ord FROM firsts f JOIN (VALUES {_STAGE_ORDER}) o(stage, ord) USING (stage)
    ),
    sites AS (
        SELECT coi, site_id FROM log.patient_enrolled WHERE log_topic = 'events'
        QUALIFY row_number() OVER (PARTITION BY coi ORDER BY log_offset) = 1
    )
    SELECT o.coi, s.site_id, o.stage, o.entered_at, lead(o.stage) OVER w AS next_stage,
           lead(o.entered_at) OVER w AS next_entered_at,
           epoch(lead(o.entered_at) OVER w - o.entered_at) / 86400.0 AS days
    FROM ordered o LEFT JOIN sites s USING (coi)
    WINDOW w AS (PARTITION BY o.coi ORDER BY o.ord)
    """,
    {
        "coi": "Therapy.",
        "site_id": "Hospital site of the therapy.",
        "stage": "Lifecycle stage.",
        "entered_at": "First time the therapy entered the stage.",
        "next_stage": "Next stage the therapy entered (NULL: still in this one).",
        "next_entered_at": "When it entered the next stage.",
        "days": "Days from entering this stage to entering the next one.",
    },
)

_MILESTONES = {
    "enrolled_at": "ENROLLED", "collected_at": "COLLECTED", "sequenced_at": "SEQUENCED",
    "designed_at": "DESIGNED", "approved_at": "APPROVED", "released_at": "RELEASED",
    "received_at_site_at": "RECEIVED_AT_SITE", "first_dose_at": "ADMINISTERED",
}
_SPANS = {  # measure -> (from, to)
    "enrolment_to_collection_days": ("enrolled_at", "collected_at"),
    "collection_to_sequencing_days": ("collected_at", "sequenced_at"),
    "sequencing_to_design_days": ("sequenced_at", "designed_at"),
    "design_to_approval_days": ("designed_at", "approved_at"),
    "approval_to_release_days": ("approved_at", "released_at"),
    "release_to_site_days": ("released_at", "received_at_site_at"),
    "site_to_first_dose_days": ("received_at_site_at", "first_dose_at"),
    "vein_to_vein_days": ("collected_at", "first_dose_at"),
}

TURNAROUND = View(
    "turnaround",
    "Per therapy: when it first reached each milestone and the days between them; "
    "vein-to-vein is from the tumour sample's collection to the first dose given.",
    f"""
    WITH milestones AS (
        SELECT coi, {", ".join(f"min(entered_at) FILTER (WHERE stage = '{stage}') AS {name}"
                                for name, stage in _MILESTONES.items())}
        FROM log.stage_entries GROUP BY coi
    ),
    sites AS (
        SELECT coi, site_id FROM log.patient_enrolled WHERE log_topic = 'events'
        QUALIFY row_number() OVER (PARTITION BY coi ORDER BY log_offset) = 1
    )
    SELECT m.coi, s.site_id, {", ".join(f"m.{name}" for name in _MILESTONES)},
           {", ".join(f"epoch(m.{b} - m.{a}) / 86400.0 AS {name}"
                      for name, (a, b) in _SPANS.items())}
    FROM milestones m LEFT JOIN sites s USING (coi)
    """,
    {
        "coi": "Therapy.",
        "site_id": "Hospital site of the therapy.",
        **{name: f"First time the therapy reached {stage}." for name, stage in
           _MILESTONES.items()},
        **{name: f"Days from {a.removesuffix('_at')} to {b.removesuffix('_at')}."
           for name, (a, b) in _SPANS.items()},
    },
)

TURNAROUND_BY_SITE = View(
    "turnaround_by_site",
    "Median (and range) of each turnaround measure per site, over the therapies that "
    "have reached both ends of it.",
    """
    SELECT site_id, measure, count(*) AS therapies, median(days) AS median_days,
           min(days) AS min_days, max(days) AS max_days
    FROM (UNPIVOT turnaround ON COLUMNS('.*_days$') INTO NAME measure VALUE days)
    GROUP BY ALL
    """,
    {
        "site_id": "Hospital site.",
        "measure": "Turnaround measure (a *_days column of turnaround).",
        "therapies": "Therapies measured.",
        "median_days": "Median in days.",
        "min_days": "Shortest, in days.",
        "max_days": "Longest, in days.",
    },
)


# -- case status -------------------------------------------------------------------------------

# the step each stage waits for is a column of the policy table (``next_step_at``)
_NEXT_STEPS = ", ".join(f"('{s.value}', {sql_string(next_step(s))})" for s in Stage)
NO_DOSE_LEFT = "follow up: record outcomes (OutcomeRecorded); no usable dose is left"

CASE_STATUS_MACRO = Macro("case_status_as_of", "as_of", f"""
    WITH chains AS (
        SELECT coi, stage, chain_seq FROM log.therapy_progress
        WHERE coi <> {REGISTRY} AND NOT starts_with(coi, {sql_string(STUDY_CHAIN_PREFIX)})
    ),
    enrolment AS (
        SELECT coi, site_id, therapy_type, occurred_at AS enrolled_at
        FROM log.patient_enrolled WHERE log_topic = 'events'
        QUALIFY row_number() OVER (PARTITION BY coi ORDER BY log_offset) = 1
    ),
    since AS (
        SELECT coi, arg_max(entered_at, log_offset) AS stage_since
        FROM log.stage_entries GROUP BY coi
    ),
    latest AS (
        SELECT coi, arg_max(event_type, log_offset) AS last_event_type,
               arg_max(occurred_at, log_offset) AS last_event_at
        FROM log.envelopes
        WHERE log_topic = 'events' AND coi <> {REGISTRY} AND signature_check = 'VERIFIED'
        GROUP BY coi
    ),
    doses AS (
        SELECT coi, count(*) FILTER (WHERE status IN {USABLE}) AS doses_usable,
               count(*) FILTER (WHERE status = 'ADMINISTERED') AS doses_administered,
               count(*) FILTER (WHERE status = 'QUARANTINED') AS doses_quarantined
        FROM inventory_as_of(as_of) GROUP BY coi
    ),
    upcoming AS (
        SELECT s.coi, min(s.scheduled_for) AS next_administration_at
        FROM log.administration_scheduled s
        WHERE s.log_topic = 'events' AND NOT EXISTS (
            SELECT 1 FROM log.dose_administered d
            WHERE d.coi = s.coi AND d.administration_id = s.administration_id)
        GROUP BY s.coi
    ),
    open_alerts AS (
        SELECT coi, count(*) FILTER (WHERE status <> 'RESOLVED') AS open_alerts,
               count(*) FILTER (WHERE status <> 'RESOLVED' AND severity = 'CRITICAL')
                 AS critical_open_alerts
        FROM alerts GROUP BY coi
    ),
    refusals AS (
        SELECT coi, count(*) AS rejections FROM log.envelopes
        WHERE log_topic = 'rejected' AND signature_check = 'VERIFIED' GROUP BY coi
    )
    SELECT c.coi, e.site_id, e.therapy_type, e.enrolled_at, c.stage, s.stage_since,
           CASE WHEN c.stage = 'FOLLOW_UP' AND coalesce(d.doses_usable, 0) = 0
                THEN {sql_string(NO_DOSE_LEFT)} ELSE n.next_step END AS next_step,
           u.next_administration_at, coalesce(d.doses_usable, 0) AS doses_usable,
           coalesce(d.doses_administered, 0) AS doses_administered,
           coalesce(d.doses_quarantined, 0) AS doses_quarantined,
           coalesce(a.open_alerts, 0) AS open_alerts,
           coalesce(a.critical_open_alerts, 0) AS critical_open_alerts,
           coalesce(r.rejections, 0) AS rejections, l.last_event_type, l.last_event_at,
           c.chain_seq AS events
    FROM chains c
    LEFT JOIN (VALUES {_NEXT_STEPS}) n(stage, next_step) USING (stage)
    LEFT JOIN enrolment e USING (coi)
    LEFT JOIN since s USING (coi)
    LEFT JOIN latest l USING (coi)
    LEFT JOIN doses d USING (coi)
    LEFT JOIN upcoming u USING (coi)
    LEFT JOIN open_alerts a USING (coi)
    LEFT JOIN refusals r USING (coi)
    """)

CASE_STATUS = View(
    "case_status",
    "One row per therapy: its current lifecycle stage (from the accepted events, as the "
    "gatekeeper's lifecycle moves it), the next step due, the next scheduled "
    "administration, doses left, open alerts and refusals (case_status_as_of(TIMESTAMPTZ) "
    "for another date).",
    "SELECT * FROM case_status_as_of(current_timestamp)",
    {
        "coi": "Chain-of-identity id of the therapy.",
        "site_id": "Hospital site where the patient was enrolled.",
        "therapy_type": "Therapy product named at enrolment.",
        "enrolled_at": "When the patient was enrolled.",
        "stage": "Current lifecycle stage.",
        "stage_since": "When the therapy (last) entered the current stage.",
        "next_step": "What is due next, and the event that records it.",
        "next_administration_at": "Earliest scheduled administration not yet given.",
        "doses_usable": "Released doses that may still be given (not quarantined, expired, "
                        "destroyed or used).",
        "doses_administered": "Doses given.",
        "doses_quarantined": "Doses quarantined after a temperature excursion.",
        "open_alerts": "Alerts still OPEN (see alerts).",
        "critical_open_alerts": "Of which CRITICAL.",
        "rejections": "Events of this therapy the gatekeeper refused.",
        "last_event_type": "Type of the latest accepted event.",
        "last_event_at": "Event time of the latest accepted event.",
        "events": "Accepted events in the therapy's chain.",
    },
)


# -- outcomes --------------------------------------------------------------------------------------

OUTCOMES = View(
    "outcomes",
    "Clinical outcome assessments (RECIST response, ctDNA, survival) per therapy.",
    """
    WITH sites AS (
        SELECT coi, site_id FROM log.patient_enrolled WHERE log_topic = 'events'
        QUALIFY row_number() OVER (PARTITION BY coi ORDER BY log_offset) = 1
    )
    SELECT o.coi, s.site_id, o.time_point, o.recist_response, o.ctdna_status,
           o.ctdna_mtm_per_ml, o.survival_status, coalesce(o.assessed_at, o.occurred_at)
             AS assessed_at, o.response_criteria
    FROM log.outcome_recorded o LEFT JOIN sites s USING (coi) WHERE o.log_topic = 'events'
    """,
    {
        "coi": "Therapy.",
        "site_id": "Hospital site of the therapy.",
        "time_point": "Protocol time point (e.g. week-12).",
        "recist_response": "CR, PR, SD, PD or NE.",
        "ctdna_status": "DETECTED, NOT_DETECTED, NOT_TESTED or UNKNOWN.",
        "ctdna_mtm_per_ml": "ctDNA mean tumour molecules per mL, if measured.",
        "survival_status": "ALIVE, DECEASED, LOST_TO_FOLLOW_UP or UNKNOWN.",
        "assessed_at": "When the assessment was made.",
        "response_criteria": "Criteria used (e.g. RECIST 1.1).",
    },
)

# -- consents ----------------------------------------------------------------------------

CONSENTS = View(
    "consents",
    "Every consent grant of every therapy, with whose signature it carries: PATIENT (the "
    "patient's own card key, bound to the therapy by a clinician's PatientCredentialIssued), "
    "WITNESSED (ConsentWitnessed: a clinician, for a patient who could not sign) or HOSPITAL "
    "(the hospital's record of a paper form; it counts only for TREATMENT), and when it was "
    "withdrawn. Secondary use that needs the patient's own signature reads signed_by.",
    """
    WITH bound AS (
        SELECT DISTINCT coi, patient_actor_id, key_id FROM log.patient_credential_issued
        WHERE log_topic = 'events'
    ),
    grants AS (
        SELECT g.coi, g.event_id, g.scope, g.occurred_at AS granted_at, g.expires_at,
               g.producer AS signer, e.key_id,
               CASE WHEN b.key_id IS NULL THEN 'HOSPITAL' ELSE 'PATIENT' END AS signed_by,
               NULL::VARCHAR AS why_patient_did_not_sign
        FROM log.consent_granted g
        JOIN log.envelopes e USING (log_topic, log_partition, log_offset)
        LEFT JOIN bound b ON b.coi = g.coi AND b.patient_actor_id = g.producer
                         AND b.key_id = e.key_id
        WHERE g.log_topic = 'events'
        UNION ALL
        SELECT w.coi, w.event_id, w.scope, w.occurred_at, w.expires_at, w.producer, e.key_id,
               'WITNESSED', w.why_patient_did_not_sign
        FROM log.consent_witnessed w
        JOIN log.envelopes e USING (log_topic, log_partition, log_offset)
        WHERE w.log_topic = 'events'
    )
    SELECT g.coi, g.scope, g.signed_by, g.signer, g.key_id, g.granted_at, g.expires_at,
           g.why_patient_did_not_sign,
           (SELECT min(x.occurred_at) FROM log.consent_withdrawn x
            WHERE x.log_topic = 'events' AND x.coi = g.coi AND x.scope = g.scope
              AND x.occurred_at >= g.granted_at) AS withdrawn_at,
           g.event_id
    FROM grants g
    """,
    {
        "coi": "Therapy.",
        "scope": "TREATMENT, GENOME_STORAGE, PAYER_SHARING or RESEARCH.",
        "signed_by": "PATIENT (the patient's own card), WITNESSED (a clinician for a patient "
                     "who could not sign) or HOSPITAL (a recorded paper form).",
        "signer": "Actor that signed the grant (the patient's card actor, or the clinician "
                  "or connector).",
        "key_id": "Key that signed the grant.",
        "granted_at": "When the consent was given (event time).",
        "expires_at": "When it lapses; NULL if valid until withdrawn.",
        "why_patient_did_not_sign": "For a witnessed consent, why the patient's key did not "
                                    "sign (NO_CARD_YET, PHYSICALLY_UNABLE, "
                                    "LEGAL_REPRESENTATIVE, OTHER).",
        "withdrawn_at": "When a withdrawal of the scope stopped it; NULL if never withdrawn.",
        "event_id": "The grant's event id.",
    },
)

#: in dependency order: a view may use the ones before it
MACROS_AND_VIEWS: tuple[View | Macro, ...] = (
    SIGNING_KEYS, ACTORS, AUDIT_TRAIL, AUDIT_MACRO, ALERTS, REJECTIONS,
    QUARANTINES, INVENTORY_MACRO, INVENTORY, INVENTORY_BY_SITE, INVENTORY_LOTS,
    BILLING_MACRO, BILLING_CLAIMS, DOSE_OWNERSHIP, PAYER_CLAIMS_MACRO, RECEIVABLES_MACRO,
    RECEIVABLES_AGEING,
    OUTCOME_MILESTONES, QC_RESULTS, TURNAROUND_STAGES, TURNAROUND, TURNAROUND_BY_SITE,
    CASE_STATUS_MACRO, CASE_STATUS, OUTCOMES, CONSENTS,
)
VIEWS = tuple(v for v in MACROS_AND_VIEWS if isinstance(v, View))


def install(con: duckdb.DuckDBPyConnection,
            items: Sequence[View | Macro] = MACROS_AND_VIEWS) -> None:
    """(Re)create every macro and view with its comments; check every column is documented."""
    for item in items:
        if isinstance(item, Macro):
            con.execute(f"CREATE OR REPLACE MACRO {item.name}({item.params}) AS TABLE "
                        f"{item.sql}")
            continue
        con.execute(f"CREATE OR REPLACE VIEW {item.name} AS {item.sql}")
        actual = [row[0] for row in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE schema_name = 'main' "
            "AND table_name = ? ORDER BY column_index", [item.name]).fetchall()]
        if actual != list(item.columns):
            raise ViewDocumentationError(
                f"view {item.name} has columns {actual} but documents {list(item.columns)}")
        con.execute(f"COMMENT ON VIEW {item.name} IS {sql_string(item.doc)}")
        for column, doc in item.columns.items():
            con.execute(f"COMMENT ON COLUMN {item.name}.{column} IS {sql_string(doc)}")
