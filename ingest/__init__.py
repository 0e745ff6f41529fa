"""The receiver: validates pushed permits, enqueues them in micro-batches, replies at once."""
