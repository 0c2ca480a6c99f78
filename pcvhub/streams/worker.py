"""`pcvhub worker`: compose and run the gatekeeper for this deployment.

A worker needs three things besides Kafka: the trust anchor (the first registrar's
public keys, ``<data_dir>/trust-anchor.json``), its own signing key (actor
``hub-gatekeeper`` in the encrypted key store; it signs rejections and alerts) and the
registry of every other actor, which it reads from the canonical log before it judges
anything, then keeps following (registrations accepted by other workers reach it that
way).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass

import faust

from pcvhub.clock import clock_for
from pcvhub.config import Settings
from pcvhub.log.reader import LogFollower, deployment_verifier, registry_partition
from pcvhub.log.verify import CANONICAL
from pcvhub.streams.app import build_app
from pcvhub.streams.gatekeeper import Gatekeeper
from pcvhub.streams.rules import default_rules
from pcvhub.streams.timebounds import TIME_BOUNDS
from pcvhub.streams.verdict import AllOf
from pcvhub.topics import Principal
from pcvhub.trust.issuer import EventIssuer
from pcvhub.trust.keys import KeyStore, passphrase_from_env
from pcvhub.trust.registry import ANCHOR_FILE, REGISTRY_COI, KeyRegistry, load_anchor

GATEKEEPER_ACTOR = "hub-gatekeeper"
log = logging.getLogger(__name__)


@dataclass
class GatekeeperWorker:
    app: faust.App
    gatekeeper: Gatekeeper
    follower: LogFollower  # verifies registry events on the canonical log, folds them


def rules_for(settings: Settings, registry: KeyRegistry) -> AllOf:
    """The gatekeeper's rules as this deployment's settings configure them (time bounds,
    the just-in-time window)."""
    return default_rules(registry, bounds=TIME_BOUNDS[settings.time_bounds],
                         just_in_time_window_us=round(
                             settings.just_in_time_window_hours * 3_600_000_000))


def compose(settings: Settings, app_id: str = "pcvhub-gatekeeper") -> GatekeeperWorker:
    """The Faust app, its gatekeeper and the registry follower (not started)."""
    settings = settings.as_principal(Principal.GATEKEEPER)
    registry = load_anchor(settings.data_dir / ANCHOR_FILE)
    signer = KeyStore(settings.data_dir / "keys", passphrase_from_env()).latest(GATEKEEPER_ACTOR)
    rules = rules_for(settings, registry)
    gatekeeper = Gatekeeper(rules, EventIssuer(signer), registry,
                            clock=clock_for(settings.timer_clock, settings.data_dir))
    # Registry events all live in the partition of REGISTRY_COI: follow only that one.
    # The verifier folds into the gatekeeper's own registry, and only what a registrar
    # signed on the registry chain (pcvhub.log.verify).
    verifier = deployment_verifier(settings, "gatekeeper registry follower", registry)
    follower = LogFollower(settings, [CANONICAL], verifier, partitions=[registry_partition()],
                           keys=[REGISTRY_COI.encode()], name="registry-follower")
    return GatekeeperWorker(build_app(settings, gatekeeper, app_id), gatekeeper, follower)


def run(settings: Settings, app_id: str = "pcvhub-gatekeeper", loglevel: str = "WARNING",
        catch_up_timeout: float = 300.0) -> None:
    """Read the registry from the log, then run the Faust worker until stopped."""
    worker = compose(settings, app_id)
    worker.follower.start()
    if not worker.follower.wait_caught_up(catch_up_timeout):
        raise TimeoutError(f"the canonical log was not read within {catch_up_timeout:.0f}s; "
                           "is Kafka reachable?")
    registry = worker.gatekeeper.registry
    report = worker.follower.verifier.report
    log.warning("registry read from the log: %d actors, %d keys; %d record(s) quarantined%s",
                len(registry.actors), len(registry.keys), report.quarantined,
                "".join(f"\n  {q}" for q in report.first))
    code = 0
    try:
        faust.Worker(worker.app, loglevel=loglevel, quiet=True).execute_from_commandline()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        worker.follower.stop()
    # Faust can leave its consumer's ServiceThread (non-daemon, own event loop) running
    # after a stop that began during start-up or a rebalance; the interpreter then waits
    # for it forever (seen: a worker alive an hour after SIGTERM). Every output has been
    # flushed by the time Faust returns, and the design survives SIGKILL anyway, so end
    # the process here.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
