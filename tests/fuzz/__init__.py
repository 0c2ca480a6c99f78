"""Property-based fuzzing of every parser at the hub's edge (see ``profiles``)."""
