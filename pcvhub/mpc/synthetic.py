"""A seeded synthetic cohort of one site, for the tests and the benchmark.

The same (seed, site, size) always gives the same rows, so separate party processes can
each make their own site's rows and a test can make everybody's to compute the reference.
The shapes are plausible, not clinical: melanoma, lung, colorectal and breast; about a
third never assessed; vein-to-vein around two months; survival censored at follow-up.
"""

from __future__ import annotations

import random

from pcvhub.mpc.records import RECIST, TherapyRecord

CANCER_TYPES = ("C43", "C34", "C18", "C50")
OTHER_CANCER = "C64"  # a cancer outside a study of CANCER_TYPES
RESPONSE_WEIGHTS = (8, 22, 35, 25, 10)
GRADE_WEIGHTS = (30, 30, 20, 12, 6, 2)


def synthetic_site_rows(site: str, therapies: int, seed: int) -> list[TherapyRecord]:
    rng = random.Random(f"pcvhub-mpc/{seed}/{site}")
    rows = []
    for i in range(therapies):
        cancer = rng.choice((*CANCER_TYPES, *CANCER_TYPES, OTHER_CANCER))
        dosed = rng.random() < 0.9
        enrol_to_collection = rng.randrange(0, 21)
        vein_to_vein = int(rng.gauss(60, 15)) if dosed else None
        vein_to_vein = None if vein_to_vein is None else max(vein_to_vein, 20)
        followed = rng.random() < 0.95
        survival = int(rng.expovariate(1 / 700)) if followed else None
        rows.append(TherapyRecord(
            therapy=f"{site}-T{i:06d}", site_id=site, cancer_type=cancer,
            best_response=rng.choices(RECIST, RESPONSE_WEIGHTS)[0] if rng.random() < 0.65
            else None,
            worst_ctcae_grade=rng.choices(range(6), GRADE_WEIGHTS)[0] if dosed else None,
            vein_to_vein_days=vein_to_vein,
            time_to_first_dose_days=None if vein_to_vein is None
            else vein_to_vein + enrol_to_collection,
            survival_days=survival,
            died=survival is not None and rng.random() < 0.4))
    return rows
