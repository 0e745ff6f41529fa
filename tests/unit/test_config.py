"""Settings: read from the environment once; a value that would fail later fails at start."""

from __future__ import annotations

import dataclasses

import pytest

from shared.config import Settings
from shared.errors import ConfigError


def test_the_defaults_are_valid() -> None:
    Settings().validate()
    assert Settings.from_env({}) == Settings()


def test_values_are_read_by_their_upper_case_names() -> None:
    settings = Settings.from_env({"ENQUEUE_CONCURRENCY": "2", "BATCH_WINDOW_MS": "5.5"})
    assert (settings.enqueue_concurrency, settings.batch_window_ms) == (2, 5.5)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ENQUEUE_CONCURRENCY", "0"),  # an executor of no threads: every push would hang
        ("BATCH_MAX_PERMITS", "0"),
        ("BATCH_WINDOW_MS", "-1"),
        ("MAX_BODY_BYTES", "0"),
        ("READ_THREADS", "0"),
        ("RATE_LIMIT_BURST", "0"),
        ("RATE_LIMIT_PER_S", "-1"),
        ("MAX_QUEUE_DEPTH", "-1"),
        ("JOB_TIMEOUT_S", "0"),
        ("ABANDONED_JOB_S", "2"),
        ("REDIS_TIMEOUT_S", "0"),
        ("TOKEN_PUBLISH_S", "0"),
        ("RETRY_AFTER_S", "0"),
        ("LOG_LEVEL", "LOUD"),
        ("LOG_FORMAT", "xml"),
        ("DURABLE_ACK", "yes"),
        ("DEFAULT_TIMEZONE", "Mars/Olympus"),
        ("REDIS_URL", "http://127.0.0.1:6379"),
        ("ENQUEUE_CONCURRENCY", "two"),
    ],
)
def test_a_value_that_would_fail_later_fails_at_start_naming_its_variable(
    variable: str, value: str
) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({variable: value})


def test_validate_also_guards_settings_built_in_code() -> None:
    with pytest.raises(ConfigError, match="ENQUEUE_CONCURRENCY"):
        dataclasses.replace(Settings(), enqueue_concurrency=0).validate()
