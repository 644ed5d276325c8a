"""The parts of a cache that do no I/O: shared tables, serve-stale memory, log fields."""
