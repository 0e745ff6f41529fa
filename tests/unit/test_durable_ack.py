"""DURABLE_ACK: which command each mode sends, what its reply must say, and which servers
refuse a mode at start. The writer on real servers: tests/integration/test_job_writer.py."""

from __future__ import annotations

import dataclasses
from unittest import mock

import fakeredis
import pytest
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

from shared.config import Settings
from shared.constants import PERSIST_PERMITS_JOB
from shared.durability import NO_WAIT, DurableAck, ServerSupport, resolve_durable_ack
from shared.errors import ConfigError, QueueUnavailableError
from shared.queue import JobWriter

REDIS_70 = ServerSupport("7.0.15", False, True, "everysec", is_primary=True, replicas=2)
REDIS_72 = ServerSupport("7.2.4", True, True, "everysec", is_primary=True, replicas=2)


def _resolve(mode: str, support: ServerSupport, **settings: object) -> DurableAck:
    chosen = dataclasses.replace(Settings(), durable_ack=mode, **settings)
    with mock.patch("shared.durability.probe", return_value=support):
        return resolve_durable_ack(chosen, mock.MagicMock())


@pytest.mark.parametrize(
    ("mode", "support", "command"),
    [
        ("replica", REDIS_70, ("WAIT", 1, 500)),
        ("replica", REDIS_72, ("WAIT", 1, 500)),
        ("waitaof", REDIS_72, ("WAITAOF", 1, 0, 500)),
        ("replica+waitaof", REDIS_72, ("WAITAOF", 1, 1, 500)),
        ("auto", REDIS_72, ("WAITAOF", 1, 0, 500)),
    ],
)
def test_each_mode_waits_with_its_command(
    mode: str, support: ServerSupport, command: tuple[object, ...]
) -> None:
    ack = _resolve(mode, support)
    assert ack.waits
    assert ack.command == command


def test_off_asks_the_server_nothing() -> None:
    with mock.patch("shared.durability.probe") as probe:
        assert resolve_durable_ack(Settings(), mock.MagicMock()) is NO_WAIT
    probe.assert_not_called()
    assert not NO_WAIT.waits


def test_the_replica_count_and_timeout_are_settings() -> None:
    ack = _resolve("replica", REDIS_70, durable_ack_replicas=2, durable_ack_timeout_s=0.25)
    assert ack.command == ("WAIT", 2, 250)


def test_auto_falls_back_to_no_wait_on_a_server_without_waitaof() -> None:
    assert _resolve("auto", REDIS_70) is NO_WAIT


@pytest.mark.parametrize(
    ("mode", "support", "message"),
    [
        ("waitaof", REDIS_70, "no WAITAOF .*appendfsync always"),
        ("waitaof", dataclasses.replace(REDIS_72, aof_enabled=False), "appendonly no"),
        ("replica+waitaof", REDIS_70, "no WAITAOF .*DURABLE_ACK=replica"),
        ("replica", dataclasses.replace(REDIS_70, is_primary=False), "points at a replica"),
    ],
)
def test_a_mode_the_server_cannot_do_refuses_to_start(
    mode: str, support: ServerSupport, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        _resolve(mode, support)


def test_too_few_replicas_at_start_is_a_warning_not_a_refusal() -> None:
    # After a failover the new primary may have no replica yet: pushes get 503 until one
    # connects, and a receiver restarted meanwhile must still start.
    with mock.patch("shared.durability.log") as log:
        ack = _resolve("replica", dataclasses.replace(REDIS_70, replicas=0))
    assert ack.replicas == 1
    assert log.warning.call_args.args == ("durable_ack_replicas_missing",)


@pytest.mark.parametrize(
    ("ack", "reply", "refused"),
    [
        (DurableAck(replicas=1, timeout_ms=9), 1, None),
        (DurableAck(replicas=1, timeout_ms=9), 0, "0 of 1 replicas"),
        (DurableAck(replicas=2, timeout_ms=9), 1, "1 of 2 replicas"),
        (DurableAck(local_fsync=True, timeout_ms=9), [1, 0], None),
        (DurableAck(local_fsync=True, timeout_ms=9), [0, 0], "did not fsync"),
        (DurableAck(local_fsync=True, replicas=1, timeout_ms=9), [1, 1], None),
        (DurableAck(local_fsync=True, replicas=1, timeout_ms=9), [1, 0], "0 of 1 replicas"),
    ],
)
def test_a_reply_short_of_the_ask_refuses_the_batch(
    ack: DurableAck, reply: object, refused: str | None
) -> None:
    if refused is None:
        ack.check(reply)
    else:
        with pytest.raises(QueueUnavailableError, match=refused):
            ack.check(reply)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DURABLE_ACK": "yes"}, "DURABLE_ACK="),
        ({"DURABLE_ACK_REPLICAS": "0"}, "DURABLE_ACK_REPLICAS=0 must be >= 1"),
        ({"DURABLE_ACK": "replica", "DURABLE_ACK_TIMEOUT_S": "1.0"}, "less than REDIS_TIMEOUT_S"),
        ({"DURABLE_ACK_TIMEOUT_S": "0"}, "DURABLE_ACK_TIMEOUT_S=0.0 must be > 0"),
    ],
)
def test_bad_durable_ack_settings_fail_at_startup(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_the_ack_timeout_only_matters_when_a_mode_waits() -> None:
    # A short REDIS_TIMEOUT_S with the ack off stays valid, as before the setting existed.
    assert Settings.from_env({"REDIS_TIMEOUT_S": "0.3"}).redis_timeout_s == 0.3


def test_a_wait_without_answer_refuses_the_batch_and_does_not_run_it_again() -> None:
    # A client with retries (redis-py 8's default for a plain Redis) would otherwise run
    # the whole transaction, and enqueue the job, a second time.
    redis = fakeredis.FakeRedis(retry=Retry(NoBackoff(), 3))
    connection_class = type(redis.connection_pool.make_connection())
    real_send = connection_class.send_command

    def send(connection: object, *args: object, **options: object) -> None:
        if args[0] == "WAIT":
            raise RedisConnectionError("the primary went away")
        real_send(connection, *args, **options)

    writer = JobWriter(redis, Settings(), ack=DurableAck(replicas=1, timeout_ms=9))
    with (
        mock.patch.object(connection_class, "send_command", send),
        pytest.raises(QueueUnavailableError, match="no answer to WAIT"),
    ):
        writer.write(PERSIST_PERMITS_JOB, {"permits": []}, "persist_permits(0 permits)", {})
    assert writer.queue.count == 1  # written once; the client's resend maps to its ids
