"""Worker floor: DuckDB projections of the log (audit, case status, inventory, billing, QC,
turnaround), rebuilt exactly from the log.

How it fits together
--------------------
``pcvhub project`` (:mod:`.runner`) reads the canonical, rejected and alerts topics with
confluent-kafka and writes one DuckDB file, ``<data_dir>/projections/hub.duckdb`` by
default. Each batch's rows and the offsets after it are one transaction (:mod:`.store`),
and on start the runner seeks to the offsets in the file, so a crash at any point
resumes with no row lost or doubled. Rows are pure functions of the log
(:mod:`.projector`: no wall-clock time, no random id; a therapy's fold reads only its own
chain, which lives in one partition), so ``pcvhub projections rebuild --out NEW`` gives a
file with the same ``pcvhub projections digest`` (:mod:`.digest`) as the live one.

- :mod:`.schema`: the tables (schema ``log``), one typed table per event type generated
  from the Avro catalog, with every field's ``doc`` as its column comment;
- :mod:`.views`: the views people query, each documented in the file;
- :mod:`.verification`: signatures re-verified against keys folded from the registry
  chain, starting from the trust anchor; validity windows and revocations are judged
  when the audit is queried, so a key revoked later flags what it signed;
- :mod:`.lifecycle`: each chain's position and stage, moved by the policy table's one
  lifecycle fold (``pcvhub.schemas.policy``), the one the gatekeeper calls;
- :mod:`.publish`: pseudonymised read-only copies for analysts and payers.

Querying while the hub runs (analysts)
--------------------------------------
DuckDB lets one process write a file and no other process open it at the same time, so
nobody queries the live file. The runner publishes copies every ``--publish-every``
seconds (default 300) into ``--publish-dir`` (default
``<data_dir>/projections/published``), replacing each atomically:

=========================  ==========================================================
``operations.duckdb``      case status, inventory, billing, QC, turnaround, outcomes,
                           alerts, for the hub's analysts
``research.duckdb``        case status, outcomes, turnaround, QC of therapies whose
                           RESEARCH consent holds
``payer-<PAYER>.duckdb``   that payer's claims, milestones and receivables, only
=========================  ==========================================================

Connect read-only::

    duckdb -readonly /path/to/published/operations.duckdb
    D SELECT stage, count(*) FROM case_status GROUP BY ALL;
    D SELECT * FROM snapshot_info;          -- when the copy was made, from how many records

    python -c "import duckdb; con = duckdb.connect('operations.duckdb', read_only=True); \\
               print(con.sql('SELECT * FROM receivables_ageing'))"

``--publish-format parquet`` writes one ``<table>.parquet`` per table in a folder per
scope instead (``SELECT * FROM 'operations/case_status.parquet'``). A copy of a stopped
or rebuilt file: ``pcvhub projections snapshot --db FILE --scope research --out OUT``.

Copies carry no raw patient identifier: the chain-of-identity id, the hospital's patient
pseudonym and the claim id are replaced by keyed pseudonyms (HMAC-SHA-256, one key per
scope, from ``<data_dir>/projections/pseudonym.key``), so two consumers' copies cannot be
joined on them. Staff actor ids and free-text messages are left out.

The live file and rebuilt files (auditors, operators) have every view, with raw ids:
``pcvhub projections audit COI`` prints a therapy's chain of identity and custody;
``pcvhub projections schema [VIEW]`` prints the documented schema.
"""
