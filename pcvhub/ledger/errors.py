"""The ledger's one failure type: what is wrong, and where (file, tile, leaf, line)."""

from __future__ import annotations


class LedgerError(ValueError):
    """A leaf, proof, checkpoint, tile or stored file that does not hold up.

    The message names the thing and where it is, for a person to act on; the ledger
    never answers with a bare ``False``.
    """
