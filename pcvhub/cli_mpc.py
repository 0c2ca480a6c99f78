"""`pcvhub mpc request|approve|show|run|party|certs|reference` (top floor): a study's chain
(a researcher requests, an ethics approver approves, the runs and results), one hospital's
computation party of an approved study, a run of every party on this machine, the run's
TLS certificates, and the plaintext reference for a test cohort.

Exit codes a coordinator can act on: 4 the run is refused (not covered by the approved
study, or an unknown statistic); 3 the run failed (a party missing, lost or disagreeing:
no result is written); 1 bad input (a malformed row, a missing file).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.console import Console

from pcvhub.mpc.study import StudyRefused, StudySpec

console = Console(stderr=True, soft_wrap=True)  # errors stay one line: scripts grep them

REFUSED, BAD_INPUT = 4, 1  # 2 is a usage error (click), 3 a failed run (PARTY_LOST_EXIT)


def _address(text: str) -> tuple[str, str, int]:
    site, _, where = text.partition("=")
    host, _, port = where.rpartition(":")
    if not site or not host or not port.isdigit():
        raise typer.BadParameter(f"{text!r}: give SITE=HOST:PORT, e.g. KYOTO01=127.0.0.1:21001")
    return site, host, int(port)


def _synthetic(text: str) -> tuple[int, int]:
    seed, _, size = text.partition(":")
    if not seed.isdigit() or not size.isdigit():
        raise typer.BadParameter(f"--synthetic {text!r}: give SEED:THERAPIES, e.g. 7:10000")
    return int(seed), int(size)


def _approved_on_the_log(who: str, study_id: str) -> StudySpec:
    """The study's spec as its chain on the log approves it now, or ``StudyRefused``."""
    from pcvhub.config import load_settings
    from pcvhub.mpc.chain import read_study_chain
    from pcvhub.trust.issuer import now_us

    chain = read_study_chain(load_settings(), study_id)
    try:
        spec = chain.approved(now_us())
    except StudyRefused as exc:
        raise StudyRefused(f"{who} refuses the run: {exc}") from None
    approval = next(a for a in reversed(chain.approvals) if a.digest == spec.digest().hex())
    console.print(f"{who}: study {study_id} spec {spec.digest().hex()[:12]} approved on "
                  f"the log by {approval.approver} ({approval.approval_ref})", highlight=False)
    return spec


def register(app: typer.Typer) -> None:
    """Add the ``mpc`` command group to the ``pcvhub`` application."""
    mpc_app = typer.Typer(help="Cross-hospital statistics by secure multiparty computation.",
                          no_args_is_help=True)
    app.add_typer(mpc_app, name="mpc")

    @mpc_app.command("party")
    def party(
        site: str = typer.Option(..., "--site", help="This party's hospital site."),
        study_id: str | None = typer.Option(None, "--study-id", help="The study, approved on "
                                            "the log: its chain is read through the log "
                                            "reader (the deployment's PCVHUB_* settings)."),
        study: Path | None = typer.Option(None, "--study", help="A study spec file (JSON), "
                                          "only for --synthetic rows: patients' rows are "
                                          "computed only for a study approved on the log."),
        statistic: list[str] = typer.Option([], "--statistic", help="A statistic this run "
                                            "computes (repeat); default: all approved."),
        party_address: list[str] = typer.Option(..., "--party", help="SITE=HOST:PORT of "
                                                "every party, this one included (repeat)."),
        tls_dir: Path = typer.Option(..., "--tls-dir", help="This party's directory with "
                                     ".config/ (from `pcvhub mpc certs`)."),
        projection: Path | None = typer.Option(None, "--projection", help="The site's "
                                               "projection file (DuckDB, not held open)."),
        synthetic: str | None = typer.Option(None, "--synthetic", help="SEED:THERAPIES: a "
                                             "seeded synthetic cohort instead (tests, bench)."),
        as_of: datetime | None = typer.Option(None, "--as-of", help="Consent is checked at "
                                              "this time (default: now)."),
        result: Path | None = typer.Option(None, "--result", help="Write the result JSON here."),
        connect_timeout: float = typer.Option(30.0, "--connect-timeout"),
        timeout: float = typer.Option(600.0, "--timeout", help="Seconds the whole run may take."),
    ) -> None:
        """Run this site's party of an approved study over the site's own rows."""
        import logging

        logging.basicConfig(level=logging.INFO, format="%(message)s")
        from pcvhub.log.reader import LogReadError
        from pcvhub.mpc.party import PARTY_LOST_EXIT, PartyLost, prepare, run_party
        from pcvhub.mpc.records import CohortRowError
        from pcvhub.mpc.site_rows import site_rows_from_file
        from pcvhub.mpc.study import StudySpecError, parse_statistics
        from pcvhub.mpc.synthetic import synthetic_site_rows

        def fail(code: int, message: str) -> None:
            console.print(f"[bold red]error:[/] {message}")
            raise typer.Exit(code=code)

        if (study is None) == (study_id is None):
            fail(BAD_INPUT, "give exactly one of --study-id ID (approved on the log) or "
                            "--study FILE (synthetic rows only)")
        if projection is not None and study_id is None:
            fail(REFUSED, f"site {site}: a study over the site's patients is computed only "
                          "when an ethics approver approved it on the log; give --study-id")
        try:
            spec = _approved_on_the_log(f"site {site}", study_id) if study_id is not None \
                else StudySpec.load(study or Path())
            addresses = {s: (h, p) for s, h, p in map(_address, party_address)}
            missing = [s for s in spec.sites if s not in addresses]
            if missing:
                raise typer.BadParameter(f"no --party address for {', '.join(missing)}")
            run = prepare(spec, site, parse_statistics(statistic),
                          [addresses[s] for s in spec.sites], tls_dir, result_path=result,
                          connect_timeout=connect_timeout, run_timeout=timeout)
        except StudyRefused as exc:
            fail(REFUSED, str(exc))
        except (StudySpecError, FileNotFoundError, ValueError, LogReadError) as exc:
            fail(BAD_INPUT, str(exc))
        if (projection is None) == (synthetic is None):
            fail(BAD_INPUT, "give exactly one of --projection FILE or --synthetic SEED:N")
        try:
            if projection is not None:
                when = (as_of or datetime.now(UTC)).astimezone(UTC)
                rows = site_rows_from_file(projection, site, when, spec.consent_scope)
            else:
                seed, size = _synthetic(synthetic or "")
                rows = synthetic_site_rows(site, size, seed)
            outcome = run_party(run, rows)
        except CohortRowError as exc:
            fail(BAD_INPUT, str(exc))
        except PartyLost as exc:
            fail(PARTY_LOST_EXIT, str(exc))
        console.print(f"site {site}: study {spec.study_id} done; result {outcome.digest()}")

    @mpc_app.command("certs")
    def certs(
        out: Path = typer.Option(..., "--out", help="Folder for one directory per party."),
        parties: int = typer.Option(..., "--parties", min=2, help="How many parties."),
    ) -> None:
        """Make a run's throwaway CA and one TLS certificate per party (party-<i>/.config)."""
        from pcvhub.mpc.tls import issue_party_certificates

        for directory in issue_party_certificates(out, parties):
            console.print(f"wrote {directory}")

    @mpc_app.command("reference")
    def reference(
        study: Path = typer.Option(..., "--study"),
        synthetic: str = typer.Option(..., "--synthetic", help="SEED:THERAPIES per site."),
    ) -> None:
        """Print the plaintext reference over the pooled synthetic cohort (for checking)."""
        from pcvhub.mpc.plaintext import reference_result
        from pcvhub.mpc.synthetic import synthetic_site_rows

        spec = StudySpec.load(study)
        seed, size = _synthetic(synthetic)
        rows = [r for s in spec.sites for r in synthetic_site_rows(s, size, seed)]
        print(json.dumps(reference_result(spec, spec.statistics, rows).to_json(), indent=2))

    @mpc_app.command("request")
    def request(
        study: Path = typer.Option(..., "--study", help="The study spec to request (JSON)."),
        title: str = typer.Option(..., "--title", help="What the study is for."),
        actor: str = typer.Option(..., "--as", help="The RESEARCHER whose key signs it."),
    ) -> None:
        """Put a study request on its chain (StudyRequested), signed by a researcher."""
        from pcvhub.studies import request_study

        spec = _spec_or_fail(study)
        _published(request_study, _signer(actor), spec, title)
        console.print(f"requested study {spec.study_id}: spec {spec.digest().hex()[:12]} on "
                      f"chain pcvhub:study:{spec.study_id}; an ethics approver approves it with "
                      f"`pcvhub mpc approve --study-id {spec.study_id}`", highlight=False)

    @mpc_app.command("approve")
    def approve(
        study_id: str = typer.Option(..., "--study-id"),
        ref: str = typer.Option(..., "--ref", help="The ethics committee's decision."),
        actor: str = typer.Option(..., "--as", help="The ETHICS_APPROVER whose key signs it."),
        digest: str = typer.Option(..., "--digest", help="The spec digest (or its first 12 "
                                   "hex digits) being approved: what `pcvhub mpc show` "
                                   "lists; an approver approves what they read."),
    ) -> None:
        """Approve the study's current request (StudyApproved), naming its spec digest."""
        from pcvhub.config import load_settings
        from pcvhub.mpc.chain import read_study_chain
        from pcvhub.studies import approve_study

        chain = read_study_chain(load_settings(), study_id)
        if not chain.requests:
            _fail(BAD_INPUT, f"study {study_id} has no request on the log")
        latest = chain.requests[-1]
        if not latest.digest.startswith(digest.lower()) or len(digest) < 12:
            _fail(REFUSED, f"study {study_id}'s current spec is {latest.digest[:12]}, not "
                           f"{digest}: read it again (`pcvhub mpc show`) before approving")
        _published(approve_study, _signer(actor), latest.spec, ref)
        console.print(f"approved study {study_id} spec {latest.digest[:12]} ({ref})",
                      highlight=False)

    @mpc_app.command("show")
    def show(study_id: str = typer.Option(..., "--study-id")) -> None:
        """The study's chain as the log holds it: requests, approvals, runs."""
        from rich.table import Table

        from pcvhub.config import load_settings
        from pcvhub.mpc.chain import read_study_chain
        from pcvhub.times import utc_iso

        chain = read_study_chain(load_settings(), study_id)
        table = Table(title=f"study {study_id} (chain {chain.coi})")
        for column in ("event", "by", "spec / run", "what"):
            table.add_column(column)
        for r in chain.requests:
            table.add_row("requested", r.requester, r.digest[:12],
                          f"{', '.join(s.value for s in r.spec.statistics)} at "
                          f"{', '.join(r.spec.sites)}; threshold {r.spec.small_cell_threshold}")
        for a in chain.approvals:
            until = utc_iso(a.expires_at_us) if a.expires_at_us else "until withdrawn"
            table.add_row("approved", a.approver, a.digest[:12], f"{a.approval_ref}; {until}")
        for run in chain.runs.values():
            table.add_row("run", "", run.run_id, f"{', '.join(run.parties)}; consent at "
                          f"{utc_iso(run.consent_as_of_us)}; result {run.result_digest[:12]}"
                          + ("" if run.run_id in chain.results else " (result not published)"))
        Console().print(table)
        for why in chain.ignored:
            console.print(f"[yellow]not folded:[/] {why}", highlight=False)

    @mpc_app.command("run")
    def run(
        study_id: str = typer.Option(..., "--study-id"),
        projection: list[str] = typer.Option(..., "--projection", help="SITE=FILE: each "
                                             "site's projection (repeat for every site)."),
        actor: str = typer.Option(..., "--as", help="The RESEARCHER who records the run."),
        out: Path = typer.Option(..., "--out", help="Folder for the run's files."),
        statistic: list[str] = typer.Option([], "--statistic"),
    ) -> None:
        """Run every party of an approved study on this machine, then record the run."""
        import os

        from pcvhub.config import load_settings
        from pcvhub.mpc.study import parse_statistics
        from pcvhub.studies import StudyRunFailed, run_and_record

        settings = load_settings()
        try:
            spec = _approved_on_the_log("the coordinator", study_id)
        except StudyRefused as exc:
            _fail(REFUSED, str(exc))
        files = dict(p.partition("=")[::2] for p in projection)
        missing = [s for s in spec.sites if not files.get(s)]
        if missing:
            _fail(BAD_INPUT, f"no --projection SITE=FILE for {', '.join(missing)}")
        try:
            recorded = run_and_record(
                settings, _signer(actor), out, spec,
                {s: ("--projection", files[s]) for s in spec.sites}, dict(os.environ),
                datetime.now(UTC), parse_statistics(statistic))
        except (StudyRunFailed, StudyRefused) as exc:
            _fail(PARTY_LOST, str(exc))
        console.print(f"study {study_id}: run {recorded.run_id} recorded, result "
                      f"{recorded.result_digest[:12]} published on the log", highlight=False)
        print(json.dumps(recorded.result, indent=2))


PARTY_LOST = 3


def _fail(code: int, message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code=code)


def _spec_or_fail(path: Path) -> StudySpec:
    from pcvhub.mpc.study import StudySpecError

    try:
        return StudySpec.load(path)
    except StudySpecError as exc:
        _fail(BAD_INPUT, str(exc))
        raise


def _signer(actor: str):  # noqa: ANN202 - EventSigner, imported late with the key store
    from pcvhub.config import load_settings
    from pcvhub.trust.keys import KeyStore, KeyStoreError, passphrase_from_env

    try:
        return KeyStore(load_settings().data_dir / "keys", passphrase_from_env()).latest(actor)
    except KeyStoreError as exc:
        _fail(BAD_INPUT, str(exc))
        raise


def _published(publish, signer, *args) -> None:  # noqa: ANN001
    from pcvhub.config import load_settings
    from pcvhub.connectors.registrar import RegistryPublishError

    try:
        with console.status("publishing: reading the study chain, then waiting for the "
                            "gatekeeper's verdict ..."):
            publish(load_settings(), signer, *args)
    except RegistryPublishError as exc:
        _fail(REFUSED, str(exc))


def main() -> None:
    """``python -m pcvhub.cli_mpc mpc ...``: the same ``mpc`` commands in an application of
    their own, which starts without importing every other command (the web and connector
    stacks): a party process is computing in a third of the time ``pcvhub mpc`` takes."""
    app = typer.Typer(no_args_is_help=True)
    register(app)
    app()


if __name__ == "__main__":
    main()
