"""The transparency ledger: every record the gatekeeper wrote, in one verifiable log.

Open ``log.py`` first: ``TransparencyLog`` appends leaves, signs checkpoints, proves, and
resumes after a kill. ``leaf.py`` is what one leaf says (versioned bytes); ``tree.py`` the
hashes on disk; ``note.py`` the C2SP checkpoint and its two signature lines; ``tiles.py``
the C2SP tlog-tiles files and their offline audit; ``proofs.py`` the proofs and their
verifiers; ``serve.py`` the read-only HTTP server of the tiles; ``follow.py`` the process
that follows the gatekeeper's outputs. Witnesses: ``cosign.py`` the C2SP cosignature lines
and their verification, ``witness.py`` the witness (``pcvhub witness run``), ``witnessing.py``
the ledger sending it each checkpoint. ``LedgerError`` is the one failure type.
"""

from pcvhub.ledger.errors import LedgerError

__all__ = ["LedgerError"]
