"""What each page shows, as queries over the projection views (one function per page).

Every query reads the documented views of :mod:`pcvhub.projections.views`; the views that
depend on today's date (case status, inventory expiry, receivables ageing) are read as of
now. Lists are capped at :data:`LIMIT` rows, and the page says so when a cap was hit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pcvhub.schemas.stages import Stage
from pcvhub.trust.registry import REGISTRY_COI
from pcvhub.web.identity import Link, chain_of_identity, link_of
from pcvhub.web.source import Reader, Row

LIMIT = 500
STAGE_ORDER = {stage.value: i for i, stage in enumerate(Stage)}
SEVERITY_ORDER = "CASE severity WHEN 'CRITICAL' THEN 0 WHEN 'WARNING' THEN 1 ELSE 2 END"

#: turnaround column -> label, in the order a therapy goes through them
SPANS = {
    "enrolment_to_collection_days": "enrolment → sample",
    "collection_to_sequencing_days": "sample → sequenced",
    "sequencing_to_design_days": "sequenced → design",
    "design_to_approval_days": "design → approved",
    "approval_to_release_days": "approved → released",
    "release_to_site_days": "released → at site",
    "site_to_first_dose_days": "at site → first dose",
    "vein_to_vein_days": "vein to vein",
}


@dataclass
class Capped:
    """Rows of a list, and how many there are in all."""

    rows: list[Row]
    total: int

    @property
    def capped(self) -> bool:
        return self.total > len(self.rows)


def _capped(reader: Reader, sql: str, params: list[Any] | None = None) -> Capped:
    total = reader.value(f"SELECT count(*) FROM ({sql})", params)
    return Capped(reader.rows(f"{sql} LIMIT {LIMIT}", params), total)


def _by_stage(rows: list[Row]) -> list[Row]:
    return sorted(rows, key=lambda r: STAGE_ORDER.get(r["stage"], len(STAGE_ORDER)))


# -- overview -----------------------------------------------------------------------------------

def overview(reader: Reader) -> dict[str, Any]:
    return {
        "totals": reader.row("""
            SELECT count(*) AS therapies,
                   count(*) FILTER (WHERE doses_administered > 0) AS dosed,
                   coalesce(sum(doses_administered), 0) AS doses_given,
                   coalesce(sum(open_alerts), 0) AS open_alerts,
                   coalesce(sum(critical_open_alerts), 0) AS critical_open_alerts
            FROM case_status"""),
        "refusals": reader.value("SELECT count(*) FROM rejections"),
        "vein_to_vein": reader.row("""
            SELECT median(vein_to_vein_days) AS median_days, count(vein_to_vein_days) AS therapies
            FROM turnaround"""),
        "stages": _by_stage(reader.rows(
            "SELECT stage, count(*) AS therapies FROM case_status GROUP BY stage")),
        "doses": reader.rows("SELECT status, count(*) AS doses FROM inventory GROUP BY status "
                             "ORDER BY doses DESC, status"),
        "money": reader.rows("""
            SELECT currency, count(*) AS claims, sum(paid_amount) AS paid,
                   sum(outstanding_amount) AS outstanding,
                   count(*) FILTER (WHERE status = 'DENIED') AS denied
            FROM billing_claims GROUP BY currency ORDER BY currency"""),
        "open_alerts": reader.rows(f"""
            SELECT * FROM alerts WHERE status <> 'RESOLVED'
            ORDER BY {SEVERITY_ORDER}, raised_at DESC LIMIT 8"""),
        "recent_refusals": reader.rows(
            "SELECT * FROM rejections ORDER BY refused_at DESC, log_offset DESC LIMIT 8"),
    }


# -- therapies ----------------------------------------------------------------------------------

def therapies(reader: Reader, site: str | None, stage: str | None) -> dict[str, Any]:
    where, params = [], []
    if site:
        where.append("site_id = ?")
        params.append(site)
    if stage:
        where.append("stage = ?")
        params.append(stage)
    condition = f"WHERE {' AND '.join(where)}" if where else ""
    return {
        "therapies": _capped(reader, f"SELECT * FROM case_status {condition} "
                                     "ORDER BY last_event_at DESC NULLS LAST, coi", params),
        "sites": [r["site_id"] for r in reader.rows(
            "SELECT DISTINCT site_id FROM case_status WHERE site_id IS NOT NULL ORDER BY 1")],
        "stages": [s.value for s in Stage if s is not Stage.NEW],
        "site": site, "stage": stage,
    }


@dataclass
class TherapyPage:
    coi: str
    status: Row | None  # None: no event of it was ever accepted (only refusals)
    timeline: list[Row]
    chain: list[Link]
    refusals: list[Row]
    alerts: list[Row]
    doses: list[Row]
    qc: list[Row]
    claims: list[Row]
    turnaround: Row | None

    @property
    def verified(self) -> int:
        return sum(1 for e in self.events if e["verification"] == "VERIFIED")

    @property
    def events(self) -> list[Row]:
        return [e for e in self.timeline if e["entry"] == "EVENT"]

    @property
    def broken_links(self) -> int:
        return sum(1 for e in self.events if e["chain_link"] == "BROKEN")

    @property
    def open_alerts(self) -> list[Row]:
        return [a for a in self.alerts if a["status"] == "OPEN"]


def therapy(reader: Reader, coi: str) -> TherapyPage | None:
    """Everything about one therapy, or None if the log holds nothing of it."""
    if coi == REGISTRY_COI:
        return None
    timeline = reader.rows("SELECT * FROM audit(?)", [coi])
    status = reader.row("SELECT * FROM case_status WHERE coi = ?", [coi])
    if status is None and not timeline:
        return None
    refused_types = {e["event_id"]: e["event_type"] for e in timeline
                     if e["entry"] == "REJECTION" and e["event_id"]}
    for entry in timeline:
        entry["link"] = link_of(entry, refused_types)
    return TherapyPage(
        coi=coi, status=status, timeline=timeline,
        chain=chain_of_identity(reader, coi, timeline),
        refusals=reader.rows("SELECT * FROM rejections WHERE coi = ? "
                             "ORDER BY refused_at, log_offset", [coi]),
        alerts=reader.rows(f"SELECT * FROM alerts WHERE coi = ? ORDER BY "
                           f"status <> 'RESOLVED' DESC, {SEVERITY_ORDER}, raised_at", [coi]),
        doses=reader.rows("SELECT * FROM inventory WHERE coi = ? ORDER BY batch_id, dose_id",
                          [coi]),
        qc=reader.rows("SELECT * FROM qc_results WHERE coi = ? ORDER BY batch_id, recorded_at",
                       [coi]),
        claims=reader.rows("SELECT * FROM billing_claims WHERE coi = ? "
                           "ORDER BY submitted_at, claim_id", [coi]),
        turnaround=reader.row("SELECT * FROM turnaround WHERE coi = ?", [coi]),
    )


# -- inventory, billing, alerts, turnaround ------------------------------------------------------

def stock_by_site(reader: Reader) -> list[Row]:
    return reader.rows("""
        SELECT * FROM inventory_by_site
        ORDER BY site_id NULLS LAST, location, placement_method, status""")


def inventory(reader: Reader) -> dict[str, Any]:
    return {
        "by_site": stock_by_site(reader),
        "lots": _capped(reader, """
            SELECT * FROM inventory_lots ORDER BY quarantined DESC, started_at DESC, coi"""),
        "attention": reader.rows("""
            SELECT * FROM inventory WHERE status IN ('QUARANTINED', 'EXPIRED')
            ORDER BY status_since DESC LIMIT 50"""),
    }


def receivables(reader: Reader) -> list[Row]:
    return reader.rows(
        "SELECT * FROM receivables_ageing ORDER BY currency, payer_id, ageing_bucket")


def billing(reader: Reader) -> dict[str, Any]:
    return {
        "ageing": receivables(reader),
        "currencies": [r["currency"] for r in reader.rows(
            "SELECT DISTINCT currency FROM receivables_ageing ORDER BY 1")],
        "by_payer": reader.rows("""
            SELECT payer_id, currency, count(*) AS claims, sum(amount) AS billed,
                   sum(paid_amount) AS paid, sum(outstanding_amount) AS outstanding,
                   count(*) FILTER (WHERE status = 'DENIED') AS denied
            FROM billing_claims GROUP BY ALL ORDER BY payer_id, currency"""),
        "claims": _capped(reader, """
            SELECT * FROM billing_claims
            ORDER BY outstanding_amount > 0 DESC, days_outstanding DESC, claim_id"""),
    }


def alerts(reader: Reader) -> dict[str, Any]:
    return {
        "open": _capped(reader, f"""
            SELECT * FROM alerts WHERE status <> 'RESOLVED'
            ORDER BY {SEVERITY_ORDER}, raised_at DESC"""),
        "resolved": _capped(reader, """
            SELECT * FROM alerts WHERE status = 'RESOLVED' ORDER BY raised_at DESC"""),
        "refusals": _capped(reader, """
            SELECT * FROM rejections ORDER BY refused_at DESC, log_offset DESC"""),
        "by_reason": reader.rows("""
            SELECT rule, reason_code, count(*) AS refusals FROM rejections
            GROUP BY ALL ORDER BY refusals DESC, rule, reason_code"""),
    }


def turnaround(reader: Reader) -> dict[str, Any]:
    spans = ", ".join(SPANS)
    rows = reader.rows(f"SELECT coi, site_id, {spans} FROM turnaround")
    return {
        "measures": {label: [r[column] for r in rows if r[column] is not None]
                     for column, label in SPANS.items()},
        "by_site": sorted(reader.rows("SELECT * FROM turnaround_by_site"), key=lambda r: (
            r["site_id"] is None, r["site_id"] or "", list(SPANS).index(r["measure"])
            if r["measure"] in SPANS else len(SPANS))),
        "labels": SPANS,
    }
