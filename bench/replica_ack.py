"""Phase 4 of `python -m bench`: what DURABLE_ACK=replica costs the receiver.

The same receiver twice, on one private primary with one replica (harness/ servers, AOF
everysec, loopback): DURABLE_ACK=off and DURABLE_ACK=replica (WAIT 1 after each batch).
The same wrk load alternates between the two (A B A B), so both see the same machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools

from bench import httpbench, rqstate
from bench.procs import ProcessGroup
from bench.results import LoadResult, median_by_rps
from bench.service import Service
from bench.wrkload import WrkSettings
from harness.services import primary_with_replica
from shared.ports import free_port

MODES = ("off", "replica")


def measure(
    service: Service, group: ProcessGroup, wrk: WrkSettings, processes: int, repeats: int
) -> dict[str, LoadResult]:
    """The median run of each mode, by req/s; ``service`` gives the database and settings."""
    with contextlib.ExitStack() as stack:
        primary, _replica = stack.enter_context(primary_with_replica())
        redis = primary.client()
        on_primary = dataclasses.replace(service, redis_url=primary.url)
        token = on_primary.create_token("bench-durable-ack")  # published to the primary
        targets = []
        for mode in MODES:
            moded = dataclasses.replace(on_primary, extra={**on_primary.extra, "DURABLE_ACK": mode})
            port = free_port()
            start = functools.partial(moded.start_receiver, group, port, processes)
            pids = stack.enter_context(httpbench.running(group, start, port))
            targets.append(httpbench.Target(f"ack {mode}", port, pids))
        for target in targets:
            rqstate.reset_keep_tokens(redis)
            httpbench.warm_up(target, token, wrk)
        runs: dict[str, list[LoadResult]] = {t.name: [] for t in targets}
        for _ in range(repeats):
            for target in targets:
                rqstate.reset_keep_tokens(redis)  # no worker: the queue only grows
                runs[target.name].append(httpbench.one_run(target, token, wrk, redis))
                group.check_alive()
        return {name: median_by_rps(results) for name, results in runs.items()}
