"""A site's therapies as a study counts them, read from a projection file, consent checked.

A party reads the projection of its own hospital (``pcvhub project`` writes it; a live
file is held by its runner, so a party reads a stopped, rebuilt or snapshot copy) and
keeps only its own site's therapies. Only accepted events count (``log_topic =
'events'``). Which therapies a study may count is decided in one place,
:func:`consented_therapies`; everything else here is the reduction of each therapy to a
:class:`~pcvhub.mpc.records.TherapyRecord`.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb

from pcvhub.mpc.records import RECIST, TherapyRecord
from pcvhub.projections.schema import sql_string
from pcvhub.projections.store import connect

_RANKS = ", ".join(f"({sql_string(c)}, {i})" for i, c in enumerate(RECIST))


def consented_therapies(scope: str, as_of: datetime) -> str:
    """SQL of the therapies a study under ``scope`` may count at ``as_of``.

    The one place a study's consent check lives: a grant of the scope **signed by the
    patient's own key** (``consents.signed_by = 'PATIENT'``; a witnessed grant or the
    hospital's record of a form does not count for a study), given by ``as_of``, not
    expired at it and not withdrawn by then. A withdrawal at or before ``as_of`` stops
    that grant for every run from then on; only a new grant the patient signs later counts
    again.
    """
    if scope != "RESEARCH":
        raise ValueError(f"no consent rule for scope {scope!r}")
    at = f"TIMESTAMPTZ {sql_string(as_of.isoformat())}"
    return f"""
    SELECT DISTINCT g.coi FROM consents g
    WHERE g.scope = {sql_string(scope)} AND g.signed_by = 'PATIENT'
      AND g.granted_at <= {at}
      AND (g.expires_at IS NULL OR g.expires_at > {at})
      AND (g.withdrawn_at IS NULL OR g.withdrawn_at > {at})"""


def _site_query(site: str, scope: str, as_of: datetime) -> str:
    return f"""
    WITH cohort AS (
        SELECT coi, site_id FROM log.patient_enrolled WHERE log_topic = 'events'
        QUALIFY row_number() OVER (PARTITION BY coi ORDER BY log_offset) = 1
    ),
    diagnosis AS (
        SELECT coi, split_part(icd10_code, '.', 1) AS cancer_type
        FROM log.diagnosis_recorded WHERE log_topic = 'events'
        QUALIFY row_number() OVER (PARTITION BY coi ORDER BY log_offset DESC) = 1
    ),
    response AS (
        SELECT o.coi, arg_min(o.recist_response, r.rank) AS best_response,
               min(coalesce(o.assessed_at, o.occurred_at))
                 FILTER (WHERE o.survival_status = 'DECEASED') AS died_at,
               max(coalesce(o.assessed_at, o.occurred_at)) AS last_seen_at
        FROM log.outcome_recorded o JOIN (VALUES {_RANKS}) r(category, rank)
          ON r.category = o.recist_response
        WHERE o.log_topic = 'events' GROUP BY o.coi
    ),
    adverse AS (
        SELECT coi, max(ctcae_grade) AS worst_grade FROM log.adverse_event_reported
        WHERE log_topic = 'events' GROUP BY coi
    )
    SELECT c.coi, c.site_id, d.cancer_type, r.best_response,
           CASE WHEN t.first_dose_at IS NOT NULL THEN coalesce(a.worst_grade, 0) END,
           floor(epoch(t.first_dose_at - t.collected_at) / 86400)::BIGINT,
           floor(epoch(t.first_dose_at - t.enrolled_at) / 86400)::BIGINT,
           floor(epoch(coalesce(r.died_at, r.last_seen_at) - t.enrolled_at) / 86400)::BIGINT,
           r.died_at IS NOT NULL
    FROM cohort c
    LEFT JOIN diagnosis d USING (coi) LEFT JOIN response r USING (coi)
    LEFT JOIN adverse a USING (coi) LEFT JOIN turnaround t USING (coi)
    WHERE c.site_id = {sql_string(site)}
      AND c.coi IN ({consented_therapies(scope, as_of)})
    ORDER BY c.coi"""


def site_rows(con: duckdb.DuckDBPyConnection, site: str, as_of: datetime,
              scope: str = "RESEARCH") -> list[TherapyRecord]:
    """The site's consented therapies at ``as_of``, each validated (a bad one raises)."""
    return [TherapyRecord(coi, site_id, cancer, response, grade, v2v, ttfd, days, bool(died))
            for coi, site_id, cancer, response, grade, v2v, ttfd, days, died
            in con.execute(_site_query(site, scope, as_of)).fetchall()]


def site_rows_from_file(path: Path, site: str, as_of: datetime, scope: str = "RESEARCH"
                        ) -> list[TherapyRecord]:
    con = connect(Path(path), read_only=True)
    try:
        return site_rows(con, site, as_of, scope)
    finally:
        con.close()
