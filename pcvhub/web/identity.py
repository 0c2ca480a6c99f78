"""The chain of identity of one therapy: sample -> sequencing -> design -> batch -> dose -> patient.

Each link is shown with the accepted events that made it, the item each event names
(sample id, sequencing data hash, design, batch, dose), who signed it (from the therapy's
audit trail, the view ``audit_trail``) and whether the event names what the link before
it produced: the design names this therapy's sequencing data, the batch names the
approved design hash, a dose comes from this therapy's released batch, the bedside check
matches the enrolled patient. The gatekeeper refuses events that break these links (rule
R5); showing them again here lets a reader see the chain hold rather than take it on
trust, and the refusals of the therapy are placed on the link they tried to break.

No view exposes the identifiers yet, so :data:`CHAIN_SQL` reads them from the ``log``
tables. It never selects a patient pseudonym: the bedside check is compared with the
enrolment inside the query and only the yes/no answer comes out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pcvhub.web.source import Reader, Row

#: link key -> (title, what the link proves)
LINKS: dict[str, tuple[str, str]] = {
    "sample": ("Tumour sample", "collected from the patient and handed to the sequencing lab"),
    "sequencing": ("Sequencing", "the tumour genome read from that sample"),
    "design": ("Vaccine design", "neoantigens chosen from that genome, approved by two people"),
    "batch": ("Batch", "made from the approved design, tested and released"),
    "dose": ("Doses", "vials of that batch, placed and dispensed at the site"),
    "patient": ("Patient", "identity checked at the bedside before each dose"),
}

#: which link an event type acts on (for refusals and the timeline)
LINK_OF_EVENT: dict[str, str] = {
    "SampleCollected": "sample", "SampleReceived": "sample",
    "SequencingCompleted": "sequencing", "VariantCallsProduced": "sequencing",
    "NeoantigenDesignProduced": "design", "DesignApproved": "design",
    "ManufacturingStarted": "batch", "ManufacturingStepCompleted": "batch",
    "QcResultRecorded": "batch", "BatchDispositioned": "batch",
    "ShipmentDispatched": "batch", "ShipmentReceived": "batch",
    "InventoryPlaced": "dose", "DoseReserved": "dose", "DoseDispensed": "dose",
    "TemperatureExcursion": "dose", "DoseExpired": "dose", "DoseDestroyed": "dose",
    "TemperatureLogRecorded": "dose", "QuarantineDispositioned": "dose",
    "PatientCredentialIssued": "patient", "IdentityVerified": "patient",
    "DoseAdministered": "patient",
}

#: steps that take a dose out of use: shown as warnings on the chain
OUT_OF_USE = frozenset({"temperature excursion", "expired", "destroyed"})

#: which link a timer alert waits on
LINK_OF_TIMER: dict[str, str] = {
    "TAT_SAMPLE_TO_DESIGN": "design", "TAT_APPROVAL_TO_RELEASE": "batch",
    "DOSE_EXPIRY_NOTICE": "dose", "DOSE_EXPIRED": "dose", "DOSE_WINDOW": "patient",
    "ADMINISTRATION_OVERDUE": "patient", "FOLLOW_UP_DUE": "patient",
}

#: link -> (step whose item names the link, the column to show) for the chain's summary
HEADLINE: dict[str, tuple[str, str]] = {
    "sample": ("collected", "item"), "sequencing": ("sequenced", "fingerprint"),
    "design": ("designed", "item"), "batch": ("manufacturing started", "item"),
    "dose": ("placed", "item"), "patient": ("dose ", "item"),
}

_OF_THERAPY = "log_topic = 'events' AND coi = $coi"

CHAIN_SQL = f"""
WITH samples AS (SELECT sample_id FROM log.sample_collected WHERE {_OF_THERAPY}),
sequencing AS (SELECT content_hash FROM log.sequencing_completed WHERE {_OF_THERAPY}),
designs AS (SELECT design_id, design_hash FROM log.neoantigen_design_produced
            WHERE {_OF_THERAPY}),
approved AS (SELECT design_hash FROM log.design_approved WHERE {_OF_THERAPY}),
batches AS (SELECT batch_id FROM log.manufacturing_started WHERE {_OF_THERAPY}),
released AS (SELECT unnest(dose_ids) AS dose_id FROM log.batch_dispositioned
             WHERE {_OF_THERAPY} AND disposition = 'RELEASED'),
shipments AS (SELECT shipment_id FROM log.shipment_dispatched WHERE {_OF_THERAPY}),
enrolled AS (SELECT patient_hash FROM log.patient_enrolled WHERE {_OF_THERAPY}
             ORDER BY log_offset LIMIT 1),
matching AS (SELECT event_id FROM log.identity_verified WHERE {_OF_THERAPY}
             AND result = 'MATCH' AND patient_hash IN (SELECT patient_hash FROM enrolled)),
steps AS (
    SELECT 'sample' AS link, event_id, 'collected' AS step, sample_id AS item,
           NULL AS fingerprint, sample_type || ', ' || location AS detail,
           NULL::BOOLEAN AS holds, NULL AS checked
    FROM log.sample_collected WHERE {_OF_THERAPY}
    UNION ALL
    SELECT 'sample', event_id, 'handed over', item_id, NULL, from_actor || ' → ' || to_actor,
           item_id IN (SELECT sample_id FROM samples), 'the sample collected for this therapy'
    FROM log.custody_transferred WHERE {_OF_THERAPY}
      AND (item_kind = 'SAMPLE' OR item_id IN (SELECT sample_id FROM samples))
    UNION ALL
    SELECT 'sample', event_id, 'received at the lab', sample_id, NULL,
           condition || ', ' || location,
           sample_id IN (SELECT sample_id FROM samples), 'the sample collected for this therapy'
    FROM log.sample_received WHERE {_OF_THERAPY}
    UNION ALL
    SELECT 'sequencing', event_id, 'sequenced', array_to_string(sample_ids, ', '),
           content_hash, platform,
           list_has_any(sample_ids, (SELECT list(sample_id) FROM samples)),
           'reads this therapy''s tumour sample'
    FROM log.sequencing_completed WHERE {_OF_THERAPY}
    UNION ALL
    SELECT 'sequencing', event_id, 'variants called', 'variant calls', content_hash,
           variant_count || ' variants, ' || reference_genome,
           sequencing_hash IN (SELECT content_hash FROM sequencing),
           'from this therapy''s sequencing data'
    FROM log.variant_calls_produced WHERE {_OF_THERAPY}
    UNION ALL
    SELECT 'design', event_id, 'designed', design_id, design_hash,
           epitope_count || ' epitopes, model ' || model_id,
           sequencing_hash IN (SELECT content_hash FROM sequencing),
           'names this therapy''s sequencing data'
    FROM log.neoantigen_design_produced WHERE {_OF_THERAPY}
    UNION ALL
    SELECT 'design', event_id, 'approved', design_id, design_hash, approver_role,
           (design_id, design_hash) IN (SELECT (design_id, design_hash) FROM designs),
           'approves the design exactly as produced'
    FROM log.design_approved WHERE {_OF_THERAPY}
    UNION ALL
    SELECT 'batch', event_id, 'manufacturing started', batch_id, design_hash,
           facility_id || ', ' || planned_dose_count || ' doses planned',
           design_hash IN (SELECT design_hash FROM approved), 'made from the approved design'
    FROM log.manufacturing_started WHERE {_OF_THERAPY}
    UNION ALL
    SELECT 'batch', event_id, lower(disposition), batch_id, NULL,
           len(dose_ids) || ' doses' || coalesce(', ' || reason, ''),
           batch_id IN (SELECT batch_id FROM batches), 'a batch started for this therapy'
    FROM log.batch_dispositioned WHERE {_OF_THERAPY}
    UNION ALL
    SELECT 'batch', event_id, 'shipped', shipment_id, NULL,
           array_to_string(item_ids, ', ') || ' to ' || destination_site_id,
           list_has_all((SELECT coalesce(list(dose_id), []) FROM released), item_ids),
           'carries released doses of this therapy'
    FROM log.shipment_dispatched WHERE {_OF_THERAPY}
    UNION ALL
    SELECT 'batch', event_id, 'received at the site', shipment_id, NULL,
           location || CASE WHEN seal_intact THEN ', seal intact' ELSE ', SEAL BROKEN' END,
           shipment_id IN (SELECT shipment_id FROM shipments), 'a shipment of this therapy'
    FROM log.shipment_received WHERE {_OF_THERAPY}
    UNION ALL
    SELECT 'dose', event_id, 'placed', dose_id, NULL,
           site_id || ', ' || location || ', ' || placement_method,
           dose_id IN (SELECT dose_id FROM released), 'released from this therapy''s batch'
    FROM log.inventory_placed WHERE {_OF_THERAPY}
    UNION ALL
    SELECT 'dose', event_id, 'dispensed', dose_id, NULL, 'for ' || administration_id,
           dose_id IN (SELECT dose_id FROM released), 'released from this therapy''s batch'
    FROM log.dose_dispensed WHERE {_OF_THERAPY}
    UNION ALL
    SELECT 'dose', event_id, 'temperature excursion', array_to_string(item_ids, ', '), NULL,
           'quarantined: ' || min_celsius || ' to ' || max_celsius || ' °C for '
             || (duration_seconds // 60) || ' min (allowed ' || allowed_range || ')',
           NULL, NULL
    FROM log.temperature_excursion WHERE {_OF_THERAPY}
    UNION ALL
    SELECT 'dose', event_id, 'expired', dose_id, NULL, NULL, NULL, NULL
    FROM log.dose_expired WHERE {_OF_THERAPY}
    UNION ALL
    SELECT 'dose', event_id, 'destroyed', dose_id, NULL, reason, NULL, NULL
    FROM log.dose_destroyed WHERE {_OF_THERAPY}
    UNION ALL
    SELECT CASE WHEN step LIKE 'SAMPLE%' THEN 'sample' WHEN step = 'DISPENSE' THEN 'dose'
                ELSE 'patient' END,
           event_id, 'identity checked', coalesce(dose_id, sample_id, 'patient'), NULL,
           lower(step) || ', ' || lower(method) || ': ' || result,
           result = 'MATCH' AND patient_hash IN (SELECT patient_hash FROM enrolled),
           'the patient checked is the patient enrolled'
    FROM log.identity_verified WHERE {_OF_THERAPY}
    UNION ALL
    SELECT 'patient', event_id, 'dose ' || dose_number || ' given', dose_id, NULL,
           lower(route) || coalesce(', ' || body_site, ''),
           dose_id IN (SELECT dose_id FROM released)
             AND identity_check_event_id IN (SELECT event_id FROM matching),
           'a released dose of this therapy, after a matching identity check'
    FROM log.dose_administered WHERE {_OF_THERAPY}
)
SELECT * FROM steps
"""


@dataclass
class Link:
    """One link of the chain: the events that made it and the refusals aimed at it."""

    key: str
    title: str
    proves: str
    steps: list[Row] = field(default_factory=list)
    refusals: list[Row] = field(default_factory=list)

    @property
    def broken(self) -> list[Row]:
        """Steps whose check failed, or whose signature or hash link does not hold."""
        return [s for s in self.steps if s["holds"] is False or s["verification"] != "VERIFIED"
                or s["chain_link"] == "BROKEN"]

    @property
    def state(self) -> str:
        """``broken``; ``caught`` (an event that would have broken it was refused);
        ``pending`` (nothing yet); or ``holds``."""
        if self.broken:
            return "broken"
        if self.refusals:
            return "caught"
        return "holds" if self.steps else "pending"

    @property
    def items(self) -> list[str]:
        """The distinct items the link's events name, in order."""
        return list(dict.fromkeys(s["item"] for s in self.steps if s["item"]))

    @property
    def headline(self) -> list[str]:
        """What the link is, in a few words: its samples, sequencing data (hash), designs,
        batches, doses, or the doses given to the patient."""
        step, field = HEADLINE[self.key]
        values = [s[field] for s in self.steps if s["step"].startswith(step) and s[field]]
        if field == "fingerprint":
            values = [v[:8] + "…" for v in values]
        if self.key == "patient" and values:
            return [f"{len(values)} dose{'s' if len(values) > 1 else ''} given: "
                    + ", ".join(values)]
        return list(dict.fromkeys(values))

    @property
    def signers(self) -> list[str]:
        return list(dict.fromkeys(s["actor"] for s in self.steps if s["actor"]))


def link_of(entry: Row, refused_types: dict[str, str]) -> str | None:
    """The link a timeline entry belongs to: by event type, or for an alert by the refused
    event it is about or by its timer kind."""
    event_type = entry.get("event_type")
    if entry["entry"] == "ALERT":
        event_type = refused_types.get(entry.get("event_id") or "")
        if event_type is None:
            code = (entry.get("outcome") or "").rsplit(" ", 1)[-1]
            return LINK_OF_TIMER.get(code)
    return LINK_OF_EVENT.get(event_type or "")


def chain_of_identity(reader: Reader, coi: str, timeline: list[Row]) -> list[Link]:
    """The six links of ``coi``, with the therapy's refusals (from ``timeline``, its audit
    trail) placed on the link the refused event acted on."""
    links = {key: Link(key, title, proves) for key, (title, proves) in LINKS.items()}
    signed = {e["event_id"]: e for e in timeline if e["entry"] == "EVENT"}
    steps = [{**signed[s["event_id"]], **s} for s in reader.rows(CHAIN_SQL, {"coi": coi})]
    # Records on the canonical log that the log reader quarantined are in no payload table,
    # so CHAIN_SQL cannot see them: they are shown on the link they claim to act on, as
    # what breaks it, with the reader's reason.
    for entry in signed.values():
        key = LINK_OF_EVENT.get(entry["event_type"] or "")
        if key is not None and entry["outcome"].startswith("QUARANTINED"):
            steps.append({**entry, "link": key, "step": f"{entry['event_type']} (quarantined)",
                          "item": None, "fingerprint": None, "holds": False,
                          "checked": "verified by the log reader"})
    for step in sorted(steps, key=lambda s: (s["chain_seq"] is None, s["chain_seq"] or 0,
                                             s["log_offset"])):
        links[step["link"]].steps.append(step)
    for entry in timeline:
        if entry["entry"] == "REJECTION":
            key = LINK_OF_EVENT.get(entry["event_type"] or "")
            if key is not None:
                links[key].refusals.append(entry)
    return list(links.values())
