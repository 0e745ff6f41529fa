"""Code shared by the receiver (ingest) and the workers (worker)."""
