"""The custody and release faults the demo injects (``Fault.COURIER_WITHOUT_RELEASE``,
``Fault.RELEASE_AFTER_FAILED_STERILITY``): each is sent straight to the hub, must be
refused by the gatekeeper with its code, and is then put right the way people would.

The driver (:mod:`pcvhub.demo.driver`) calls one function per fault at the step where it
happens; everything the fault does lives here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pcvhub.demo.cohort import Fault

if TYPE_CHECKING:
    from pcvhub.demo.driver import TherapyRun


def after_qc(run: TherapyRun) -> None:
    """The LIMS reports a sterility failure for the lot; the qualified person's release is
    refused (the panel's latest sterility result is a FAIL); the lot is retested under an
    out-of-specification investigation and passes, so the release on the release day
    goes through."""
    if Fault.RELEASE_AFTER_FAILED_STERILITY not in run.patient.faults:
        return
    s = run.scenario
    run._direct(lambda: s.record_qc("FAIL"))
    with run.lock:
        release = s.release()
    run._inject(Fault.RELEASE_AFTER_FAILED_STERILITY,
                f"release of {s.batch_id} while its latest sterility result is a FAIL",
                "QC_NOT_PASSED", release, "gatekeeper R4")
    run._direct(lambda: s.record_qc("PASS", investigation_ref=f"OOS-{s.batch_id}"))


def after_receipt(run: TherapyRun) -> None:
    """A courier signs that it took the first vial from the pharmacy, which never released
    it: the receiver alone cannot move custody."""
    if Fault.COURIER_WITHOUT_RELEASE not in run.patient.faults:
        return
    s = run.scenario
    with run.lock:
        taken = s.transfer("courier", s.dose(1), "pharmacist", "courier", item_kind="DOSE",
                           location="pharmacy loading bay")
    run._inject(Fault.COURIER_WITHOUT_RELEASE,
                f"courier takes {s.dose(1)} from the pharmacy without its release",
                "CUSTODY_NOT_RELEASED", taken, "gatekeeper R6")
