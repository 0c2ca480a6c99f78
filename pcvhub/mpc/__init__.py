"""Worker floor: cross-hospital statistics by secure multiparty computation (MPyC).

No site's rows leave the site. Each hospital runs one computation party over its own
site-filtered projection; the parties add their counts on Shamir secret shares and open
only the approved, small-cell-suppressed results.

Open first :mod:`.study` (what an approved study allows; every party checks it), then
:mod:`.party` (one party's run, start to finish). The rest, in the order a run uses it:

- :mod:`.site_rows`: a site's therapies from a projection file, consent checked in one place;
  :mod:`.synthetic`: a seeded synthetic cohort for the tests and the benchmark;
- :mod:`.records`: one therapy as the study counts it, validated;
- :mod:`.aggregates`: the counts and histograms a party computes in the clear;
- :mod:`.secure`: the combination on secret shares, suppression inside it;
- :mod:`.plaintext`: the reference the secure results must equal exactly;
- :mod:`.results`: what a run publishes;
- :mod:`.runtime`, :mod:`.tls`: MPyC's runtime and the parties' TLS certificates.
"""
