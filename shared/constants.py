"""Names shared by the receiver and the workers: queue, job paths, Redis keys, TTLs."""

# The receiver enqueues by dotted path so that `ingest` never imports `worker`.
PERSIST_PERMITS_JOB = "worker.jobs.persist_permits"

# Redis keys of our own; RQ keeps its own under "rq:".
KEY_PREFIX = "ingest:"
TOKENS_KEY = KEY_PREFIX + "tokens"  # hash: sha256(token) -> client JSON
TOKENS_LOADED_KEY = KEY_PREFIX + "tokens:loaded"  # set once the hash is complete
DEDUP_KEY_PREFIX = KEY_PREFIX + "dedup:"  # dedup:<client id>:<fingerprint> -> reference id
IDEMPOTENCY_KEY_PREFIX = KEY_PREFIX + "idem:"  # idem:<client id>:<sha256 of key>
# Figures the workers publish for the receiver's /metrics (see worker/stats.py).
PERMITS_STORED_KEY = KEY_PREFIX + "stats:permits_stored"  # counter: INCRBY per batch
DB_STATS_KEY = KEY_PREFIX + "stats:db"  # hash: counts read from the database
DB_STATS_LOCK_KEY = KEY_PREFIX + "stats:db:lock"  # one worker counts per interval

DEDUP_TTL_S = 24 * 60 * 60
# A finished batch job is kept for an hour so `rq info` and the dashboard can show it.
JOB_RESULT_TTL_S = 60 * 60
JOB_FAILURE_TTL_S = 30 * 24 * 60 * 60

PERMIT_TYPES = ("Validator", "Temporary", "Standard")
CURRENCIES = ("CAD", "USD")
