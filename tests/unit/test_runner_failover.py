"""The worker process outlives a Sentinel failover: it waits for Redis and starts anew."""

from __future__ import annotations

from unittest import mock

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.sentinel import MasterNotFoundError

from shared.config import Settings
from worker import runner


def run_worker_through(works: list[Exception | None], *, stop_signalled: bool) -> tuple[int, int]:
    """run_worker with RQ workers whose work() raises or returns as ``works`` says; the
    number of RQ workers started and of waits for Redis."""

    def work(*_args: object, **_kwargs: object) -> None:
        outcome = works.pop(0)
        if outcome is not None:
            raise outcome

    with (
        mock.patch.object(runner, "init_context"),
        mock.patch.object(runner, "make_worker_redis"),
        mock.patch.object(runner, "Periodic"),
        mock.patch.object(runner, "LossWatch"),
        mock.patch.object(runner, "run_logged"),
        mock.patch.object(runner, "wait_for_redis", return_value=True) as waited,
        mock.patch.object(runner, "HeartbeatWorker") as worker_class,
    ):
        worker_class.return_value.work.side_effect = work
        worker_class.return_value.stop_signalled = stop_signalled
        runner.run_worker(Settings(), burst=True)
    return worker_class.call_count, waited.call_count


@pytest.mark.parametrize(
    "lost",
    [
        MasterNotFoundError("No master found for 'mymaster'"),  # no primary yet
        RedisConnectionError("The previous master is now a slave"),  # redis-py's Sentinel
        ReadOnlyError("You can't write against a read only replica."),  # a plain URL
    ],
)
def test_the_rq_worker_is_restarted_after_each_way_of_losing_the_primary(
    lost: Exception,
) -> None:
    # The first RQ worker loses Redis, the second finishes.
    assert run_worker_through([lost, None], stop_signalled=False) == (2, 1)


def test_a_stop_that_failed_on_a_lost_redis_ends_the_worker() -> None:
    # SIGTERM arrived; RQ's stop then failed to write to Redis: stop, do not wait for it.
    lost = MasterNotFoundError("No master found for 'mymaster'")
    assert run_worker_through([lost], stop_signalled=True) == (1, 0)
