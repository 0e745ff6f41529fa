"""The benchmark's printed table."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench import fleet
from bench.results import ONE_BOX

# Issue 33's goals, printed beside the figures: one box's closed-loop req/s and
# permit-push's open-loop peak as a share of bare's, one box's closed-loop p99 at most so
# many times bare's, and permit-push's p50 at the open loop's first rate (250 req/s).
GOAL_SHARE_OF_BARE = 0.15
GOAL_P99_TIMES_BARE = 10.0
GOAL_P50_AT_START_MS = 3.0
# Issue 32's goals for the closed loop: the floor's and permit-push's req/s as shares, and
# permit-push's p99 and CPU a request.
GOAL_FLOOR_OF_BARE = 0.55
GOAL_OF_FLOOR = 0.8
GOAL_OF_BARE = 0.40
GOAL_PP_P99_TIMES_BARE = 3.0
GOAL_CPU_US = 200.0

if TYPE_CHECKING:
    from bench.run import Report


def _ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}" if denominator else "n/a"


def _peak_section(report: Report) -> list[str]:
    if not report.peak:
        return []
    s = report.settings
    lines = [
        f"Receiver peak: {s['processes']} processes each, wrk -t{s['wrk_threads']} "
        f"-c{s['connections']}, {s['duration']:g} s runs, median of {s['repeats']} "
        "(runs alternate between targets)",
        f"  {'target':<14}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>9}"
        f"{'CPU us/req':>12}{'Redis us/req':>14}{'batch':>7}",
    ]
    for name, r in report.peak.items():
        batch = f"{r.mean_batch:>7.1f}" if r.mean_batch else ""
        lines.append(
            f"  {name:<14}{r.rps:>10,.0f}{r.p50_ms:>10.2f}{r.p99_ms:>10.2f}{r.errors:>9}"
            f"{r.server_cpu_us:>12,.0f}{r.redis_cpu_us:>14,.0f}{batch}"
        )
    pp, bare, naive = (report.peak.get(k) for k in ("permit-push", "bare", "naive"))
    if pp and bare and naive:
        lines.append(
            f"  permit-push/bare = {_ratio(pp.rps, bare.rps)}   "
            f"permit-push/naive = {_ratio(pp.rps, naive.rps)}"
        )
    floor = report.peak.get("floor")
    if floor and bare:
        versus_floor = f"permit-push/floor = {_ratio(pp.rps, floor.rps)}   " if pp else ""
        lines.append(
            f"  floor/bare = {_ratio(floor.rps, bare.rps)}   {versus_floor}"
            "(floor: marshmallow and one RQ job a micro-batch, nothing else)"
        )
    if floor and pp and bare and bare.rps and floor.rps and bare.p99_ms:
        shares = [
            ("floor/bare", floor.rps / bare.rps, GOAL_FLOOR_OF_BARE),
            ("permit-push/floor", pp.rps / floor.rps, GOAL_OF_FLOOR),
            ("permit-push/bare", pp.rps / bare.rps, GOAL_OF_BARE),
        ]
        met = [
            f"{name} {share:.2f} ({_goal(share >= goal, f'>= {goal}')})"
            for name, share, goal in shares
        ]
        p99_met = pp.p99_ms <= GOAL_PP_P99_TIMES_BARE * bare.p99_ms
        cpu_met = pp.server_cpu_us <= GOAL_CPU_US
        lines += [
            "  issue 32: " + "; ".join(met),
            f"  permit-push p99 {_ratio(pp.p99_ms, bare.p99_ms)}x bare's "
            f"({_goal(p99_met, f'<= {GOAL_PP_P99_TIMES_BARE:g}x')}); "
            f"CPU {pp.server_cpu_us:,.0f} us a request ({_goal(cpu_met, f'<= {GOAL_CPU_US:g}')})",
        ]
    one_box = report.peak.get(ONE_BOX)
    if one_box and bare and bare.rps and bare.p99_ms:
        share_met = one_box.rps / bare.rps >= GOAL_SHARE_OF_BARE
        p99_met = one_box.p99_ms <= GOAL_P99_TIMES_BARE * bare.p99_ms
        lines.append(
            f"  {ONE_BOX} (receiver + {s['workers']} workers draining, its CPU counts both)"
            f"/bare = {_ratio(one_box.rps, bare.rps)} "
            f"({_goal(share_met, f'>= {GOAL_SHARE_OF_BARE}')})   "
            f"p99 {_ratio(one_box.p99_ms, bare.p99_ms)}x bare's "
            f"({_goal(p99_met, f'<= {GOAL_P99_TIMES_BARE:g}x')})"
        )
    return lines


def _goal(met: bool, goal: str) -> str:
    return f"goal {goal}: {'met' if met else 'NOT met'}"


def _fleet_section(report: Report) -> list[str]:
    result = report.fleet
    if result is None:
        return []
    lines = [
        f"Fleet, open loop: {result.connections:,} kept-alive connections, Poisson arrivals, "
        f"{result.duration_s:g} s a run, latency from each request's scheduled send",
        f"  {'target':<13}{'offered':>9}{'served':>8}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'p99.9 ms':>10}{'errors':>8}{'batch':>7}{'behind s':>9}{'CPU us/req':>11}"
        f"{'workers us/permit':>18}{'client':>8}",
    ]
    for name, runs in result.runs.items():
        lines.extend(_fleet_row(name, run) for run in runs)
    if result.at_80 is not None:
        lines.append(_fleet_row("pp at 80%", result.at_80))
    lines.append(
        f"  pass: p99 <= {fleet.P99_BOUND_MS:g} ms, no error, at most "
        f"{fleet.BEHIND_BOUND_S:g} s of permits left queued (the workers keep up)"
    )
    bare, pp = result.peak.get("bare", 0.0), result.peak.get("permit-push", 0.0)
    ratio_met = bool(bare) and pp / bare >= GOAL_SHARE_OF_BARE
    lines.append(
        f"  peak: bare {bare:,.0f} req/s, permit-push {pp:,.0f} req/s; permit-push/bare = "
        f"{_ratio(pp, bare)} ({_goal(ratio_met, f'>= {GOAL_SHARE_OF_BARE}')})"
    )
    if result.runs.get("permit-push"):
        first, goal_ms = result.runs["permit-push"][0], GOAL_P50_AT_START_MS
        lines.append(
            f"  permit-push at {first.offered:,.0f} req/s: p50 {first.load.p50_ms:.2f} ms "
            f"({_goal(first.load.p50_ms <= goal_ms, f'<= {goal_ms:g} ms')})"
        )
    if result.at_80 is not None:
        r, bound_ms = result.at_80, fleet.P99_BOUND_MS
        lines.append(
            f"  permit-push at 80% of its peak ({r.offered:,.0f} req/s): "
            f"p99 {r.load.p99_ms:.2f} ms "
            f"({_goal(r.load.p99_ms <= bound_ms, f'<= {bound_ms:g} ms')}), "
            f"receiver CPU {r.load.server_cpu_us:,.0f} us/req, workers "
            f"{r.worker_cpu_us:,.0f} us/permit, {r.mean_batch:.1f} permits/batch"
        )
    return lines


def _fleet_row(name: str, run: fleet.FleetRun) -> str:
    r = run.load
    return (
        f"  {name:<13}{run.offered:>9,.0f}{r.rps:>8,.0f}{r.p50_ms:>8.2f}{r.p99_ms:>8.2f}"
        f"{r.p999_ms:>10.2f}{r.errors:>8}{run.mean_batch:>7.1f}{run.behind_s:>9.2f}"
        f"{r.server_cpu_us:>11,.0f}{run.worker_cpu_us:>18,.0f}{r.client_cpu_pct:>7.0f}%"
        f"{'' if run.passed else '  fails'}"
    )


def _drain_section(report: Report) -> list[str]:
    d, raw = report.drain, report.raw
    if d is None or raw is None:
        return []
    s = report.settings
    return [
        f"End-to-end drain: {d.permits:,} permits over HTTP ({s['processes']} receivers, "
        f"{s['workers']} workers) until all are PostgreSQL rows",
        f"  permit-push            {d.rate:>10,.0f} permits/s  ({d.seconds:.2f} s, {d.jobs:,} "
        f"jobs, mean {d.permits / max(d.jobs, 1):.1f} permits/job)",
        f"    worker CPU {d.worker_cpu_us:,.0f} us/permit, PostgreSQL CPU "
        f"{d.pg_cpu_us:,.0f} us/permit, worker peak RSS {d.worker_peak_rss_mib:.0f} MiB",
        f"  raw executemany 100/tx {raw.rate:>10,.0f} rows/s     (median of {s['repeats']}: "
        f"{raw.rows:,} rows, "
        f"{raw.seconds:.2f} s, PostgreSQL CPU {raw.pg_cpu_us:,.0f} us/row)",
        f"  permit-push/raw = {_ratio(d.rate, raw.rate)}",
    ]


def _growth_section(report: Report) -> list[str]:
    if not report.growth:
        return []
    s = report.settings
    lines = [
        f"Queue growth: queue filled with no worker, then {s['workers']} workers drain it "
        f"({s.get('fill_batch')} permits/job)",
        f"  {'queued':>10}{'jobs':>9}{'permits/s':>12}{'seconds':>10}{'worker peak RSS':>17}"
        f"{'worker us/permit':>18}{'PG us/permit':>14}",
    ]
    for size, d in report.growth.items():
        lines.append(
            f"  {size:>10,}{d.jobs:>9,}{d.rate:>12,.0f}{d.seconds:>10.2f}"
            f"{d.worker_peak_rss_mib:>13.0f} MiB{d.worker_cpu_us:>18,.0f}{d.pg_cpu_us:>14,.0f}"
        )
    sizes = sorted(report.growth)
    if len(sizes) > 1:
        small, large = report.growth[sizes[0]], report.growth[sizes[-1]]
        lines.append(
            f"  rate({sizes[-1]:,}) / rate({sizes[0]:,}) = {_ratio(large.rate, small.rate)}"
        )
    return lines


def _durable_ack_section(report: Report) -> list[str]:
    if not report.durable_ack:
        return []
    s = report.settings
    lines = [
        "Durable acknowledgement: permit-push on a private primary with one replica (AOF "
        f"everysec, loopback), wrk -c{s['connections']}, median of {s['repeats']}, "
        "runs alternate",
        f"  {'DURABLE_ACK':<14}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>9}"
        f"{'CPU us/req':>12}{'Redis us/req':>14}",
    ]
    for name, r in report.durable_ack.items():
        lines.append(
            f"  {name.removeprefix('ack '):<14}{r.rps:>10,.0f}{r.p50_ms:>10.2f}{r.p99_ms:>10.2f}"
            f"{r.errors:>9}{r.server_cpu_us:>12,.0f}{r.redis_cpu_us:>14,.0f}"
        )
    off, replica = (report.durable_ack.get(f"ack {m}") for m in ("off", "replica"))
    if off and replica:
        lines.append(
            f"  replica/off: req/s {_ratio(replica.rps, off.rps)}, "
            f"p99 {_ratio(replica.p99_ms, off.p99_ms)}x"
        )
    return lines


def print_report(report: Report) -> None:
    sections = [
        _peak_section(report),
        _drain_section(report),
        _growth_section(report),
        _durable_ack_section(report),
        _fleet_section(report),
    ]
    if report.notes:
        sections.append(["Notes:", *(f"  - {n}" for n in report.notes)])
    print()
    print("\n\n".join("\n".join(lines) for lines in sections if lines))
