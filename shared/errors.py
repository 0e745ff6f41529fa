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
