"""Domain exceptions; nothing about HTTP."""


class PermitPushError(Exception):
    """Base class of the errors this project raises on purpose."""


class ConfigError(PermitPushError):
    """A setting is missing or malformed."""


class QueueUnavailableError(PermitPushError):
    """Redis could not take the work right now (unreachable, or the queue is full)."""


class QueueFullError(QueueUnavailableError):
    """The queue is over its configured depth: the receiver sheds load (backpressure)."""


class TokensNotLoadedError(PermitPushError):
    """The receiver has no token set to check against yet (Redis lost it, or is new)."""


class ClientExistsError(PermitPushError):
    """An API client with that name already exists."""


class ClientNotFoundError(PermitPushError):
    """No API client has that name."""


class IdempotencyConflictError(PermitPushError):
    """An Idempotency-Key was used before with a different body."""


class RecordNotFoundError(PermitPushError):
    """No permit with that reference id belongs to the client (OPS-COM 9009)."""


class RateLimitedError(PermitPushError):
    """The client is over its rate limit; ``retry_after_s`` says when a token is back."""

    def __init__(self, retry_after_s: int, most: int | None = None) -> None:
        super().__init__(f"rate limited; retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s
        # Set when the request alone costs more than the client's whole bucket (burst).
        self.most = most


class ReadsUnavailableError(PermitPushError):
    """The receiver's read endpoints have no database (none configured, or it is away)."""


class ZoneExistsError(PermitPushError):
    """A zone with that (normalised) name already exists."""


class ZoneNotFoundError(PermitPushError):
    """No zone has that (normalised) name."""


class ZoneConflictError(PermitPushError):
    """A zone name, alias or code would mean two zones, or is not a usable name."""
