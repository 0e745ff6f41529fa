"""structlog on top of the standard library: JSON in production, readable in development."""

from __future__ import annotations

import logging
import re
import sys

import structlog
from structlog.typing import EventDict, WrappedLogger

from shared.config import Settings


def configure_logging(settings: Settings) -> None:
    """Route structlog and stdlib (RQ's, aiohttp's) records through one renderer.

    Call before RQ starts: RQ only adds its own handler when none is configured.
    """
    shared_processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if settings.log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            *shared_processors,
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared_processors, strip_terminal_colours],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    if settings.log_format == "console":
        handler.addFilter(drop_console_chatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    rq_worker = logging.getLogger("rq.worker")
    if drop_rq_per_job_lines not in rq_worker.filters:
        rq_worker.addFilter(drop_rq_per_job_lines)


# RQ's INFO lines for every job that succeeds (dequeued, completed, "Job OK", result
# kept), as its unformatted messages. Our own line per job (`permits_stored`,
# `operations_applied`, ...) already says what happened, with the job id; four more
# cost a busy worker more CPU than some of its jobs' work. Failures and retries are
# warnings and errors: they always pass. tests/unit/test_rq_pins.py checks that RQ
# still logs these very messages.
RQ_PER_JOB_LINES = frozenset(
    {
        "Worker %s: %s: %s",
        "Successfully completed job %s in %ss on worker %s",
        "Worker %s: %s: %s (%s)",
        "Worker %s: job %s result is kept for %s seconds",
    }
)


def drop_rq_per_job_lines(record: logging.LogRecord) -> bool:
    """A logger filter on ``rq.worker``: False for the INFO lines of ``RQ_PER_JOB_LINES``."""
    return record.levelno > logging.INFO or record.msg not in RQ_PER_JOB_LINES


# INFO lines a person at a console does not need, as (logger, start of the unformatted
# message): RQ's registry clean-up every MAINTENANCE_INTERVAL_S and Alembic's set-up on
# every start. JSON logs keep them; warnings, errors and job results always pass.
CONSOLE_CHATTER = (
    ("rq.worker", "Worker %s: cleaning registries"),
    ("alembic.runtime.plugins", "setup plugin"),
    ("alembic.runtime.migration", "Context impl"),
    ("alembic.runtime.migration", "Will assume"),
)
_CHATTY_LOGGERS = frozenset(name for name, _ in CONSOLE_CHATTER)


def drop_console_chatter(record: logging.LogRecord) -> bool:
    """A handler filter: False for the INFO (and DEBUG) lines of ``CONSOLE_CHATTER``."""
    if record.levelno > logging.INFO or record.name not in _CHATTY_LOGGERS:
        return True
    message = record.msg if isinstance(record.msg, str) else ""
    return not any(
        record.name == name and message.startswith(start) for name, start in CONSOLE_CHATTER
    )


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def strip_terminal_colours(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    """Drop the colour codes RQ puts in its messages when stdout is a terminal."""
    message = event.get("event")
    if isinstance(message, str) and "\x1b[" in message:
        event["event"] = _ANSI_ESCAPE.sub("", message)
    return event
