"""Offline audit of one therapy: ``pcvhub audit export`` and ``pcvhub audit verify``.

Open ``bundle.py`` first: what a bundle holds, and ``verify_bundle``, which checks it with
no broker and no network through the hub's own log verifier (``pcvhub.log.verify``) and the
ledger's proofs (``pcvhub.ledger``). ``export.py`` reads the broker and the ledger folder
into a bundle.
"""
