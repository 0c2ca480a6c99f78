"""What analysts and payers read: pseudonymised, read-only copies of the projection views.

DuckDB lets one process write a file and no other process open it meanwhile, so nobody
queries the live projection file. The runner (``pcvhub project --publish-dir DIR``), or
``pcvhub projections snapshot`` on a stopped or rebuilt file, writes copies instead:

- ``DIR/operations.duckdb``: the operational views (case status, inventory, billing,
  QC, turnaround, outcomes, alerts) for the hub's own analysts;
- ``DIR/research.duckdb``: case status, outcomes, turnaround and QC of the therapies
  whose patient's RESEARCH consent holds at the time of the snapshot, and nothing else;
- ``DIR/payer-<PAYER>.duckdb``: one payer's claims, milestones and receivables, and no
  other payer's rows (the file is what the payer gets, so it cannot see more).

Each is written to a temporary name and renamed into place, so a reader never sees half
a file; one that has it open keeps reading the copy it opened. Connect with::

    duckdb -readonly DIR/operations.duckdb
    python -c "import duckdb; print(duckdb.connect('DIR/operations.duckdb', read_only=True)
               .sql('SELECT stage, count(*) FROM case_status GROUP BY ALL'))"

or ask for Parquet (``--format parquet``: one ``<table>.parquet`` per table in a folder)
for tools that read Parquet. ``snapshot_info`` says when and from what the copy was made.

No copy holds a raw patient identifier. Chain-of-identity ids, the hospital's patient
pseudonym (``patient_hash``) and claim ids (the hospital's patient control numbers) are
replaced by keyed pseudonyms, HMAC-SHA-256 under a key per *scope* (``operations``,
``research``, ``payer:<PAYER>``) derived from a secret kept in
``<data_dir>/projections/pseudonym.key``: the same therapy has the same pseudonym in every
copy of one scope, and unrelated ones in two scopes, so copies given to two consumers
cannot be joined on it. Actor ids (staff) and free-text messages (which name CoIs) are
left out. A payer's own copy keeps the claim ids, which the payer issued against.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from pcvhub.projections.schema import sql_string
from pcvhub.projections.store import ProjectionStore, connect

KEY_FILE = Path("projections") / "pseudonym.key"
KEY_CONTEXT = b"pcvhub/pseudonym-scope/v1\x00"
FORMATS = ("duckdb", "parquet")


class PublishError(RuntimeError):
    """A copy could not be made; the message says which and why."""


# -- pseudonyms --------------------------------------------------------------------------------

def pseudonym_key(data_dir: Path) -> bytes:
    """The deployment's pseudonym secret, created (owner-readable only) on first use."""
    path = Path(data_dir) / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first: use theirs
        else:
            with os.fdopen(fd, "wb") as out:
                out.write(secrets.token_bytes(32))
    secret = path.read_bytes()
    if len(secret) != 32:
        raise PublishError(f"{path} holds {len(secret)} bytes, not a 32-byte pseudonym key; "
                           "restore it from backup (a new key gives every therapy a new "
                           "pseudonym)")
    return secret


@dataclass(frozen=True)
class Pseudonyms:
    """Keyed pseudonyms of one scope: ``of("therapy", coi)`` -> ``T-<32 hex>``."""

    scope: str
    key: bytes

    @classmethod
    def for_scope(cls, secret: bytes, scope: str) -> Pseudonyms:
        return cls(scope, hmac.new(secret, KEY_CONTEXT + scope.encode(), hashlib.sha256).digest())

    def of(self, kind: str, value: str) -> str:
        mac = hmac.new(self.key, f"{kind}\x00{value}".encode(), hashlib.sha256).hexdigest()
        return f"{kind[0].upper()}-{mac[:32]}"


def _load_pseudonyms(con: duckdb.DuckDBPyConnection, pseudonyms: Pseudonyms) -> None:
    """A temporary table of every identifier's pseudonym, and ``pseudonym(kind, value)``."""
    sources = {
        "therapy": "SELECT DISTINCT coi FROM log.envelopes",
        "patient": "SELECT DISTINCT patient_hash FROM log.patient_enrolled",
        "claim": "SELECT DISTINCT claim_id FROM log.claim_submitted",
    }
    kinds, values, aliases = [], [], []
    for kind, sql in sources.items():
        for (value,) in con.execute(sql).fetchall():
            kinds.append(kind)
            values.append(value)
            aliases.append(pseudonyms.of(kind, value))
    con.execute("CREATE OR REPLACE TEMP TABLE pseudonyms "
                "(kind VARCHAR, value VARCHAR, alias VARCHAR, PRIMARY KEY (kind, value))")
    if kinds:
        con.execute("INSERT INTO pseudonyms SELECT unnest($1::VARCHAR[]), "
                    "unnest($2::VARCHAR[]), unnest($3::VARCHAR[])", [kinds, values, aliases])
    con.execute("CREATE OR REPLACE TEMP MACRO pseudonym(k, v) AS "
                "(SELECT alias FROM pseudonyms WHERE kind = k AND value = v)")


# -- what each scope gets ---------------------------------------------------------------------

#: therapies whose RESEARCH consent holds at ``as_of``: granted by the patient's own card or
#: witnessed for a patient who could not sign (the ``consents`` view; a grant the hospital
#: recorded does not count for research, as in the gatekeeper's R7), not expired, and not
#: withdrawn
RESEARCH_CONSENTED = """
    SELECT DISTINCT g.coi FROM consents g
    WHERE g.scope = 'RESEARCH' AND g.signed_by IN ('PATIENT', 'WITNESSED')
      AND (g.expires_at IS NULL OR g.expires_at > {as_of})
      AND g.withdrawn_at IS NULL"""

THERAPY = "pseudonym('therapy', coi) AS therapy"

CASE_STATUS = f"""
    SELECT {THERAPY}, pseudonym('patient', p.patient_hash) AS patient, c.site_id,
           c.therapy_type, c.enrolled_at, c.stage, c.stage_since, c.next_step,
           c.next_administration_at, c.doses_usable, c.doses_administered,
           c.doses_quarantined, c.open_alerts, c.critical_open_alerts, c.rejections,
           c.last_event_type, c.last_event_at, c.events
    FROM case_status_as_of({{as_of}}) c
    LEFT JOIN (SELECT coi, patient_hash FROM log.patient_enrolled WHERE log_topic = 'events'
               QUALIFY row_number() OVER (PARTITION BY coi ORDER BY log_offset) = 1) p
      USING (coi)"""

OPERATIONS: dict[str, str] = {
    "case_status": CASE_STATUS,
    "inventory": f"""
        SELECT {THERAPY}, dose_id, batch_id, site_id, location, placement_method, status,
               recorded_status, status_since, expiry, released_at, reserved_for,
               reserved_until
        FROM inventory_as_of({{as_of}})""",
    "inventory_by_site": """
        SELECT site_id, location, placement_method, status, count(*) AS doses,
               count(DISTINCT batch_id) AS lots, min(expiry) AS earliest_expiry
        FROM inventory_as_of({as_of}) GROUP BY ALL""",
    "inventory_lots": f"""
        SELECT {THERAPY}, * EXCLUDE (coi) FROM inventory_lots""",
    "billing_claims": f"""
        SELECT {THERAPY}, pseudonym('claim', claim_id) AS claim, payer_id, site_id,
               dose_number, administered_at, procedure_code, currency, amount, submitted_at,
               adjudication, allowed_amount, denial_reason_code, adjudicated_at, paid_amount,
               last_paid_on, expected_amount, outstanding_amount, status, days_outstanding,
               ageing_bucket
        FROM billing_claims_as_of({{as_of}})""",
    # who owns each dose and which site the manufacturer invoices (no actor ids)
    "dose_ownership": f"""
        SELECT {THERAPY}, dose_id, batch_id, placement_method, owner_kind, owner_since,
               invoice_to
        FROM dose_ownership""",
    "quarantines": f"""
        SELECT {THERAPY}, item_id, item_kind, cause, quarantined_at, decision, decided_at
        FROM quarantines""",
    "receivables_ageing": "SELECT * FROM receivables_ageing_as_of({as_of})",
    "outcome_milestones": f"""
        SELECT {THERAPY}, agreement_id, milestone, payer_id, amount, currency,
               payment_direction, evidence_events, reached_at
        FROM outcome_milestones""",
    "qc_results": f"""
        SELECT {THERAPY}, batch_id, test, attempts, result, value, unit, specification,
               method_ref, recorded_at, history, batch_disposition
        FROM qc_results""",
    "turnaround": f"SELECT {THERAPY}, * EXCLUDE (coi) FROM turnaround",
    "turnaround_stages": f"SELECT {THERAPY}, * EXCLUDE (coi) FROM turnaround_stages",
    "turnaround_by_site": "SELECT * FROM turnaround_by_site",
    "outcomes": f"SELECT {THERAPY}, * EXCLUDE (coi) FROM outcomes",
    "alerts": f"""
        SELECT {THERAPY}, severity, rule, code, due_at, raised_at, status FROM alerts""",
}

_CONSENTED = f"coi IN ({RESEARCH_CONSENTED})"
RESEARCH: dict[str, str] = {
    "case_status": f"SELECT * FROM ({CASE_STATUS}) WHERE therapy IN "
                   f"(SELECT pseudonym('therapy', coi) FROM ({RESEARCH_CONSENTED}))",
    "outcomes": f"SELECT {THERAPY}, * EXCLUDE (coi) FROM outcomes WHERE {_CONSENTED}",
    "turnaround": f"SELECT {THERAPY}, * EXCLUDE (coi) FROM turnaround WHERE {_CONSENTED}",
    "turnaround_stages": f"""
        SELECT {THERAPY}, * EXCLUDE (coi) FROM turnaround_stages WHERE {_CONSENTED}""",
    "qc_results": f"""
        SELECT {THERAPY}, batch_id, test, attempts, result, value, unit, specification,
               method_ref, recorded_at, history, batch_disposition
        FROM qc_results WHERE {_CONSENTED}""",
}


def payer_tables(payer: str) -> dict[str, str]:
    """A payer's own rows only; claim ids kept (the payer adjudicates against them)."""
    who = sql_string(payer)
    return {
        "claims": f"""
            SELECT {THERAPY}, claim_id, site_id, dose_number, administered_at,
                   procedure_code, currency, amount, submitted_at, adjudication,
                   allowed_amount, denial_reason_code, adjudicated_at, paid_amount,
                   last_paid_on, expected_amount, outstanding_amount, status,
                   days_outstanding, ageing_bucket
            FROM billing_claims_as_of({{as_of}}) WHERE payer_id = {who}""",
        "milestones": f"""
            SELECT {THERAPY}, agreement_id, milestone, amount, currency, payment_direction,
                   evidence_events, reached_at
            FROM outcome_milestones WHERE payer_id = {who}""",
        "receivables_ageing": f"""
            SELECT currency, ageing_bucket, claims, outstanding_amount
            FROM receivables_ageing_as_of({{as_of}}) WHERE payer_id = {who}""",
    }


def scope_tables(scope: str) -> dict[str, str]:
    """The tables of a scope: ``operations``, ``research`` or ``payer:<PAYER>``."""
    if scope == "operations":
        return OPERATIONS
    if scope == "research":
        return RESEARCH
    if scope.startswith("payer:") and len(scope) > len("payer:"):
        return payer_tables(scope.removeprefix("payer:"))
    raise PublishError(f"unknown scope {scope!r}: use operations, research or payer:<PAYER_ID>")


def payers(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [row[0] for row in con.execute(
        "SELECT DISTINCT payer_id FROM log.claim_submitted UNION "
        "SELECT DISTINCT payer_id FROM log.outcome_milestone_reached ORDER BY 1").fetchall()]


# -- writing a copy ----------------------------------------------------------------------------

def snapshot(con: duckdb.DuckDBPyConnection, secret: bytes, scope: str, out: Path,
             fmt: str = "duckdb", *, as_of: datetime | None = None) -> Path:
    """Write the tables of ``scope`` from the projection ``con`` to ``out`` (a DuckDB file
    or, for ``parquet``, a folder), replacing it atomically; return ``out``."""
    if fmt not in FORMATS:
        raise PublishError(f"unknown format {fmt!r}: use {' or '.join(FORMATS)}")
    tables = scope_tables(scope)
    when = as_of or datetime.now(UTC)
    as_of_sql = f"TIMESTAMPTZ {sql_string(when.isoformat())}"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    _remove(partial)
    _load_pseudonyms(con, Pseudonyms.for_scope(secret, scope))
    records = con.execute("SELECT count(*) FROM log.envelopes").fetchall()[0][0]
    info = (f"SELECT {sql_string(scope)} AS scope, {as_of_sql} AS snapshot_at, "
            f"{records}::BIGINT AS log_records, "
            "(SELECT value FROM log.meta WHERE key = 'layout') AS layout")
    try:
        if fmt == "duckdb":
            con.execute(f"ATTACH {sql_string(str(partial))} AS snapshot (READ_WRITE)")
            try:
                for name, sql in tables.items():
                    con.execute(f"CREATE TABLE snapshot.{name} AS "
                                f"{sql.format(as_of=as_of_sql)}")
                con.execute(f"CREATE TABLE snapshot.snapshot_info AS {info}")
                con.execute("CHECKPOINT snapshot")
            finally:
                con.execute("DETACH snapshot")
        else:
            partial.mkdir()
            for name, sql in {**tables, "snapshot_info": info}.items():
                target = sql_string(str(partial / f"{name}.parquet"))
                con.execute(f"COPY ({sql.format(as_of=as_of_sql)}) TO {target} "
                            "(FORMAT PARQUET)")
        _replace(partial, out)
    except BaseException:
        _remove(partial)
        raise
    return out


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _replace(partial: Path, out: Path) -> None:
    if partial.is_dir():  # a folder cannot be renamed over another: move the old one aside
        old = out.with_name(f".{out.name}.{os.getpid()}.old")
        if out.exists():
            os.replace(out, old)
        os.replace(partial, out)
        _remove(old)
    else:
        os.replace(partial, out)


def snapshot_file(db: Path, data_dir: Path, scope: str, out: Path, fmt: str = "duckdb",
                  *, as_of: datetime | None = None) -> Path:
    """``snapshot`` of a projection file that no runner holds open."""
    con = connect(Path(db), read_only=True)
    try:
        return snapshot(con, pseudonym_key(data_dir), scope, out, fmt, as_of=as_of)
    finally:
        con.close()


class Publisher:
    """Publishes the operations, research and per-payer copies every ``every`` seconds,
    from the runner's own connection, between two batches."""

    def __init__(self, data_dir: Path, publish_dir: Path, every: float, fmt: str = "duckdb",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.secret = pseudonym_key(data_dir)
        self.publish_dir = Path(publish_dir)
        self.every = every
        self.fmt = fmt
        self.clock = clock
        self.last: float | None = None

    def __call__(self, store: ProjectionStore) -> None:
        now = self.clock()
        if self.last is not None and now - self.last < self.every:
            return
        self.publish(store.con)
        self.last = self.clock()

    def publish(self, con: duckdb.DuckDBPyConnection) -> list[Path]:
        suffix = ".duckdb" if self.fmt == "duckdb" else ""
        scopes = ["operations", "research", *(f"payer:{p}" for p in payers(con))]
        written = []
        for scope in scopes:
            name = re.sub(r"[^A-Za-z0-9._-]", "_", scope.replace(":", "-"))
            written.append(snapshot(con, self.secret, scope,
                                    self.publish_dir / f"{name}{suffix}", self.fmt))
        return written
