"""Names shared by the receiver and the workers: queue, job paths, Redis keys, TTLs."""

# The receiver enqueues by dotted path so that `ingest` never imports `worker`.
PERSIST_PERMITS_JOB = "worker.jobs.persist_permits"
APPLY_OPERATIONS_JOB = "worker.jobs.apply_operations"
RECONCILE_ZONES_JOB = "worker.jobs.reconcile_zones"

# Redis keys of our own; RQ keeps its own under "rq:".
KEY_PREFIX = "ingest:"
TOKENS_KEY = KEY_PREFIX + "tokens"  # hash: sha256(token) -> client JSON
TOKENS_LOADED_KEY = KEY_PREFIX + "tokens:loaded"  # set once the hash is complete
# list: a receiver that found the token set gone pushes here; a worker's BLPOP wakes on it
# and rebuilds Redis's state at once (shared/data_loss.py).
DATA_LOSS_KEY = KEY_PREFIX + "data-lost"
# seen:<slot>:<bucket> -> hash of 16-byte digests (fingerprint, or client + Idempotency-Key)
# to the 16-byte first reference id (+ 16 bytes of the fingerprint for a key): the resend
# window of DEDUP_WINDOW_S (ingest/permit_enqueuer.py). SEEN_BUCKETS hashes per slot keep
# each small enough for Redis's compact encoding (< 128 entries) up to ~2,000 permits/s
# with the default window.
SEEN_KEY_PREFIX = KEY_PREFIX + "seen:"
SEEN_BUCKETS = 16384
# ref:<reference id> -> owning client id: set with the create's enqueue, deleted by the
# worker once the permit is stored (the database knows its owner then); the TTL only
# bounds a key whose batch never ran.
REFERENCE_KEY_PREFIX = KEY_PREFIX + "ref:"
# One counter for every update and delete: its order is the order they were received.
OPERATION_SEQ_KEY = KEY_PREFIX + "opseq"
RATE_KEY_PREFIX = KEY_PREFIX + "rate:"  # rate:<client id> -> token bucket (hash)
# Figures the workers publish for the receiver's /metrics (see worker/stats.py).
PERMITS_STORED_KEY = KEY_PREFIX + "stats:permits_stored"  # counter: INCRBY per batch
DB_STATS_KEY = KEY_PREFIX + "stats:db"  # hash: counts read from the database
DB_STATS_LOCK_KEY = KEY_PREFIX + "stats:db:lock"  # one worker counts per interval

REFERENCE_TTL_S = 24 * 60 * 60
# A batch push carries 1 to this many permits.
BATCH_PUSH_MAX = 1000
# RQ keeps a failed batch this long; workers dead-letter it FAILED_DEAD_LETTER_S after it
# failed, before then (worker/expiry.py).
JOB_FAILURE_TTL_S = 30 * 24 * 60 * 60
# The reason of a dead-lettered operation whose order number was another's: requeued with
# a new number (any other dead-lettered operation keeps its own).
OPERATION_CLASH_REASON = "order number clash"

PERMIT_TYPES = ("Validator", "Temporary", "Standard")
# What a token may do: push (the default) pushes, updates, deletes and reads its own
# client's permits; enforcement (handhelds, cameras) looks up any plate and never pushes.
PUSH_SCOPE, ENFORCEMENT_SCOPE = "push", "enforcement"
TOKEN_SCOPES = (PUSH_SCOPE, ENFORCEMENT_SCOPE)
CURRENCIES = ("CAD", "USD")

# Zones (shared/zones.py). PostgreSQL advisory lock that orders changes to zones and aliases
# against the storing of disconnected permits; any fixed bigint, unique in the database.
ZONE_CATALOG_LOCK_KEY = 0x7A6F6E6573  # "zones"
# Orders changes to API clients against publishing the token set (shared/clients.py).
TOKENS_LOCK_KEY = 0x746F6B656E73  # "tokens"
# Disconnected permits linked per reconcile transaction: bounded memory and lock time.
RECONCILE_BATCH_ROWS = 5000
# A reconcile of millions of rows takes minutes; a batch job's timeout would kill it.
RECONCILE_JOB_TIMEOUT_S = 60 * 60

# Column sizes the receiver checks before its 200, so a stored permit always fits
# (shared/models.py uses the same numbers; PostgreSQL counts characters, as len() does).
PLATE_COLUMN = 64  # permits.plate and permits.plate_normalized
ZONE_COLUMN = 200  # permits.zone_name / zone_normalized, zones and aliases
