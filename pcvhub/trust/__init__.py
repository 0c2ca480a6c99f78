"""Trust floor: canonical signed bytes, hybrid signatures, Merkle batches, keys and actors."""
