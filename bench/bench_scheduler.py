"""Benchmark: the scheduling policy (``officina.platform.scheduler.policy.schedule``), a pure function.

Targets (issue): with 100 simulated workers of 8 GPUs and 10,000 queued jobs from 20 teams, a
scheduling pass under 1 s; GPU utilisation of the simulated fleet ≥ 95 % while work is queued;
fair share within 5 % of the weights over a simulated day.

Run: .venv/bin/python bench/bench_scheduler.py [--seed 0] [--minutes 1440] [--tick 6] [--quick] [--no-postgres]
(about 3 minutes on 2 CPUs; ``--quick`` simulates 6 hours; ``--tick 1`` a pass every minute, ~6× longer).

1. Pass time: ``schedule()`` with 10,000 queued jobs (20 teams, weights 1–4; GPU sizes 1,1,1,2,2,4,8;
   90 % normal, 10 % low priority) on (a) an empty fleet, all 800 GPUs free, and (b) a full fleet
   whose running jobs the FIFO baseline placed from the same queue, so teams hold GPUs regardless
   of their weights and the preemption search has victims. Median and max of ``--repeats`` runs.

2. A simulated day: a pass every ``--tick`` simulated minutes (job durations, uniform 10–240 min,
   are whole ticks, so no GPU idles between a job's end and the next pass); a pass is skipped when
   nothing changed since the last one, as the policy would decide the same. Every team is kept at
   500 queued jobs (10,000 in all), refilled as jobs start; refills are 85 % normal, 10 % low and
   5 % high priority (urgent work arrives, it is not in the backlog). Decisions are applied as the
   caller would: placements take exactly the GPU indices returned (checked: never oversubscribed,
   CPUs and memory too), jobs free their GPUs when they end, each pass gets every team's
   ``in_use`` (GPUs held) and ``used_h`` (GPU-hours so far), preempted jobs take ``YIELD_MINUTES``
   to checkpoint and yield, then go back to the queue with the work they had left and their
   original submission time. After a warm-up hour it measures utilisation (allocated GPU-minutes /
   available), each team's part of the used GPU-minutes against its weight's part (deviation
   |got / expected − 1|, the worst team printed), pass times, preemptions, the part of GPU-minutes
   held by 8-GPU jobs (starvation shows as less than their part of the queued work) and how long
   high-priority jobs wait.

3. The pass as the leader runs it (``Scheduler.run_pass``): read the snapshot from PostgreSQL, decide,
   write GPU leases, admissions, events and waiting reasons in one transaction — on the embedded
   stack with 100 registered workers and 10,000 queued jobs.

The peer: a plain FIFO queue (the spreadsheet-and-queue habit) — jobs in submission order, each on
the first worker with room, skipping what does not fit; no fair share, reservations or preemption —
on the same day, seed and per-team job streams. The table at the end puts both next to the targets.
"""
from __future__ import annotations

import argparse
import heapq
import os
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from officina.platform.scheduler.policy import (Decision, Placement, QueuedJob, RunningJob, TeamPolicy, WorkerSlot,
                                                schedule)

WORKERS, GPUS_PER_WORKER = 100, 8
WORKER_CPUS, WORKER_MEMORY_MB = 64.0, 512 * 1024
CPUS_PER_GPU, MEMORY_MB_PER_GPU = 4.0, 16 * 1024      # 8 GPUs: 32 CPUs and 128 GiB, so they never bind
TEAMS, QUEUED = 20, 10_000
SIZES = (1, 1, 1, 2, 2, 4, 8)
PRIORITIES = (0, -10, 10)                             # normal, low, high
BACKLOG_MIX, ARRIVAL_MIX = (90, 10, 0), (85, 10, 5)   # urgent work does not sit in a backlog: it arrives
DURATION_MIN = (10, 240)                              # simulated minutes, uniform (in steps of the tick)
YIELD_MINUTES = 2                                     # asked to yield → GPUs free (checkpoint and exit)
WARMUP_MINUTES = 60


def team_policies() -> list[TeamPolicy]:
    return [TeamPolicy(t, f"team{t:02d}", weight=float(1 + t % 4)) for t in range(TEAMS)]


@dataclass
class SimJob:
    id: str
    team: int
    gpus: int
    priority: int
    duration: int                 # minutes of work left
    created: float                # simulated seconds

    def queued(self) -> QueuedJob:
        return QueuedJob(self.id, self.team, self.gpus, self.priority, self.created,
                         cpus=CPUS_PER_GPU * self.gpus, memory_mb=MEMORY_MB_PER_GPU * self.gpus)


class Workload:
    """Each team's stream of jobs, from its own seeded RNG: both policies see the same jobs in the same order."""

    def __init__(self, seed: int, tick: int = 1):
        self.rng = [random.Random(f"{seed}/{t}") for t in range(TEAMS)]
        self.count = [0] * TEAMS
        self.seq = 0
        self.durations = range(-(-DURATION_MIN[0] // tick) * tick, DURATION_MIN[1] + 1, tick)

    def next(self, team: int, created: float, mix: tuple[int, ...] = ARRIVAL_MIX) -> SimJob:
        rng = self.rng[team]
        self.count[team] += 1
        self.seq += 1
        return SimJob(f"t{team:02d}-{self.count[team]:06d}", team, rng.choice(SIZES),
                      rng.choices(PRIORITIES, mix)[0], rng.choice(self.durations),
                      created + self.seq * 1e-6)  # ties broken by submission order

    def backlog(self, per_team: int) -> list[SimJob]:
        """The queue at the start: ``per_team`` jobs each, submitted round-robin before time 0."""
        jobs = []
        for k in range(per_team):
            for t in range(TEAMS):
                jobs.append(self.next(t, -float(per_team - k) * 60, BACKLOG_MIX))
        return jobs


# ---- the peer: a plain FIFO queue, first fit -------------------------------------------------------------------

def fifo_first_fit(workers: list[WorkerSlot], teams: list[TeamPolicy], queued: list[QueuedJob],
                   running: list[RunningJob], **_: object) -> Decision:
    """Jobs in submission order, each on the first worker that has room; what does not fit is skipped."""
    decision = Decision()
    most = max((len(w.free) for w in workers), default=0)
    for job in sorted(queued, key=lambda j: j.created):
        if job.gpus > most:
            continue
        for w in workers:
            if len(w.free) >= job.gpus and w.cpus >= job.cpus and w.memory_mb >= job.memory_mb:
                taken, w.free = tuple(w.free[:job.gpus]), w.free[job.gpus:]
                w.cpus -= job.cpus
                w.memory_mb -= job.memory_mb
                decision.placements.append(Placement(job.id, w.name, taken))
                most = max(len(x.free) for x in workers)
                break
        if most == 0:
            break
    return decision


# ---- the simulated fleet -------------------------------------------------------------------------------------

@dataclass
class Run:
    job: SimJob
    worker: int
    gpus: tuple[int, ...]
    started: int                  # minute
    end: int                      # minute its GPUs are free again
    preempting: bool = False


@dataclass
class Fleet:
    """What the caller keeps: free GPU indices, CPUs and memory per worker; running jobs; the queue."""

    free: list[set[int]] = field(default_factory=lambda: [set(range(GPUS_PER_WORKER)) for _ in range(WORKERS)])
    cpus: list[float] = field(default_factory=lambda: [WORKER_CPUS] * WORKERS)
    memory: list[int] = field(default_factory=lambda: [WORKER_MEMORY_MB] * WORKERS)
    running: dict[str, Run] = field(default_factory=dict)
    queue: dict[str, SimJob] = field(default_factory=dict)
    in_use: list[int] = field(default_factory=lambda: [0] * TEAMS)
    used_min: list[int] = field(default_factory=lambda: [0] * TEAMS)   # GPU-minutes since the start

    def snapshot(self, teams: list[TeamPolicy]) -> tuple[list[WorkerSlot], list[TeamPolicy], list[QueuedJob],
                                                          list[RunningJob]]:
        workers = [WorkerSlot(f"w{i:03d}", frozenset({"gpu"}), GPUS_PER_WORKER, sorted(self.free[i]),
                              self.cpus[i], self.memory[i]) for i in range(WORKERS)]
        policies = [TeamPolicy(t.id, t.name, t.weight, used_h=self.used_min[t.id] / 60, in_use=self.in_use[t.id])
                    for t in teams]
        queued = [j.queued() for j in self.queue.values()]
        running = [RunningJob(r.job.id, r.job.team, r.job.gpus, r.job.priority, f"w{r.worker:03d}", r.started * 60.0,
                              preempting=r.preempting) for r in self.running.values()]
        return workers, policies, queued, running

    def start(self, job: SimJob, worker: int, gpus: tuple[int, ...], now: int) -> Run:
        if len(gpus) != job.gpus or not set(gpus) <= self.free[worker]:
            raise AssertionError(f"{job.id} placed on w{worker:03d} GPUs {gpus}, "
                                 f"free there: {sorted(self.free[worker])}")
        if self.cpus[worker] < CPUS_PER_GPU * job.gpus or self.memory[worker] < MEMORY_MB_PER_GPU * job.gpus:
            raise AssertionError(f"{job.id} placed on w{worker:03d} without the CPUs or memory it needs")
        self.free[worker] -= set(gpus)
        self.cpus[worker] -= CPUS_PER_GPU * job.gpus
        self.memory[worker] -= MEMORY_MB_PER_GPU * job.gpus
        self.in_use[job.team] += job.gpus
        del self.queue[job.id]
        run = self.running[job.id] = Run(job, worker, gpus, now, now + job.duration)
        return run

    def end(self, run: Run) -> None:
        del self.running[run.job.id]
        self.free[run.worker] |= set(run.gpus)
        self.cpus[run.worker] += CPUS_PER_GPU * run.job.gpus
        self.memory[run.worker] += MEMORY_MB_PER_GPU * run.job.gpus
        self.in_use[run.job.team] -= run.job.gpus


@dataclass
class DayResult:
    name: str
    utilisation: float
    shares: list[tuple[int, float, float]]            # team, got, expected (fractions of used GPU-minutes)
    pass_ms: list[float]
    preemptions: int
    started: int
    big_part: float                                   # part of the used GPU-minutes held by 8-GPU jobs
    high_waits_min: list[float]                       # high-priority jobs submitted after the warm-up, started
    high_submitted: int

    @property
    def worst(self) -> tuple[float, int]:
        return max((abs(got / exp - 1), t) for t, got, exp in self.shares)


def simulate_day(name: str, policy: Callable[..., Decision], seed: int, minutes: int, per_team: int,
                 tick: int = 1, progress: bool = False) -> DayResult:
    """A pass every ``tick`` minutes (durations are whole ticks) for ``minutes``; see the module docstring."""
    teams = team_policies()
    workload = Workload(seed, tick)
    fleet = Fleet()
    for job in workload.backlog(per_team):
        fleet.queue[job.id] = job
    ends: list[tuple[int, str]] = []                   # (minute, job id), stale entries skipped
    used = [0] * TEAMS                                 # GPU-minutes after the warm-up
    busy = big = 0
    pass_ms: list[float] = []
    preemptions = started = high_submitted = 0
    high_waits: list[float] = []
    changed = True
    wall0 = time.perf_counter()
    for now in range(0, minutes, tick):
        while ends and ends[0][0] <= now:
            minute, job_id = heapq.heappop(ends)
            run = fleet.running.get(job_id)
            if run is None or run.end != minute:
                continue
            fleet.end(run)
            if run.preempting:  # back to the queue with the work it had left, first in its team's order
                fleet.queue[run.job.id] = run.job
            changed = True
        if changed:  # the policy is a pure function: the same snapshot would get the same decision
            workers, policies, queued, running = fleet.snapshot(teams)
            t0 = time.perf_counter()
            decision = policy(workers, policies, queued, running)
            pass_ms.append((time.perf_counter() - t0) * 1000)
            changed = bool(decision.placements or decision.preempt)
            for p in decision.placements:
                job = fleet.queue[p.job_id]
                run = fleet.start(job, int(p.worker[1:]), p.gpu_indices, now)
                heapq.heappush(ends, (run.end, job.id))
                started += 1
                if job.priority > 0 and job.created >= WARMUP_MINUTES * 60:
                    high_waits.append(now - job.created / 60)
            for job_id in decision.preempt:
                run = fleet.running[job_id]
                if run.preempting:
                    raise AssertionError(f"{job_id} asked to yield twice")
                run.preempting = True
                yielded = now + max(1, -(-YIELD_MINUTES // tick)) * tick
                if yielded < run.end:
                    run.job.duration = run.end - yielded  # checkpointed: what is left
                    run.end = yielded
                    heapq.heappush(ends, (run.end, job_id))
                else:
                    run.preempting = False  # it ends before it would have yielded
                preemptions += 1
            counts = [0] * TEAMS
            for job in fleet.queue.values():
                counts[job.team] += 1
            for t in range(TEAMS):
                for _ in range(per_team - counts[t]):
                    job = workload.next(t, now * 60.0)
                    fleet.queue[job.id] = job
                    if job.priority > 0 and now >= WARMUP_MINUTES:
                        high_submitted += 1
        for t in range(TEAMS):
            fleet.used_min[t] += fleet.in_use[t] * tick
        if now >= WARMUP_MINUTES:
            for t in range(TEAMS):
                used[t] += fleet.in_use[t] * tick
            busy += sum(fleet.in_use) * tick
            big += sum(r.job.gpus for r in fleet.running.values() if r.job.gpus == 8) * tick
        if progress and now and now % 360 < tick:
            print(f"    {name}: minute {now}/{minutes}, {time.perf_counter() - wall0:.0f} s", flush=True)
    total_w = sum(t.weight for t in teams)
    available = len(range(WARMUP_MINUTES, minutes, tick)) * tick * WORKERS * GPUS_PER_WORKER
    shares = [(t.id, used[t.id] / busy, t.weight / total_w) for t in teams]
    return DayResult(name, busy / available, shares, pass_ms, preemptions, started, big / busy, high_waits,
                     high_submitted)


# ---- sections ------------------------------------------------------------------------------------------------

def section_pass_time(args: argparse.Namespace) -> dict[str, float]:
    """Time one ``schedule()`` pass on an empty and on a full fleet, 10,000 queued jobs from 20 teams."""
    teams = team_policies()
    workload = Workload(args.seed)
    queued = [j.queued() for j in workload.backlog(QUEUED // TEAMS)]
    sizes = statistics.mean(j.gpus for j in queued)
    print(f"1. pass time: {WORKERS} workers × {GPUS_PER_WORKER} GPUs, {len(queued):,} queued jobs from {TEAMS} "
          f"teams (weights 1–4, mean {sizes:.2f} GPUs a job), {args.repeats} repetitions")

    def empty() -> list[WorkerSlot]:
        return [WorkerSlot(f"w{i:03d}", frozenset({"gpu"}), GPUS_PER_WORKER, list(range(GPUS_PER_WORKER)),
                           WORKER_CPUS, WORKER_MEMORY_MB) for i in range(WORKERS)]

    # the full fleet: what the FIFO baseline places from the same queue, every team holding about as much
    fleet = Fleet()
    fleet.queue = {j.id: j for j in Workload(args.seed).backlog(QUEUED // TEAMS)}
    for pl in fifo_first_fit(*fleet.snapshot(teams)).placements:
        fleet.start(fleet.queue[pl.job_id], int(pl.worker[1:]), pl.gpu_indices, 0)
    rng = random.Random(args.seed)
    for run in fleet.running.values():  # started over the last four hours
        run.started = -rng.randint(1, 240)

    results = {}
    for label, make in (("empty fleet (800 GPUs free)", lambda: (empty(), teams, queued, [])),
                        (f"full fleet ({len(fleet.running)} running jobs)", lambda: fleet.snapshot(teams))):
        times, decision = [], None
        for _ in range(args.repeats):
            inputs = make()
            t0 = time.perf_counter()
            decision = schedule(*inputs)
            times.append((time.perf_counter() - t0) * 1000)
        assert decision is not None
        print(f"  {label:34s}: median {statistics.median(times):7.1f} ms   max {max(times):7.1f} ms   "
              f"({len(decision.placements)} placed, {len(decision.preempt)} asked to yield, "
              f"{len(decision.reserved)} workers held)")
        results[label.split(" (")[0]] = max(times)
    return results


def pctl(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[int(q * (len(values) - 1))] if values else float("nan")


def section_simulated_day(args: argparse.Namespace) -> tuple[DayResult, DayResult]:
    """The same day under Officina's policy and under the FIFO baseline."""
    per_team = args.queued // TEAMS
    print(f"\n2. simulated day: {args.minutes} minutes, a pass every {args.tick} simulated minute(s), "
          f"{WORKERS} × {GPUS_PER_WORKER} GPUs, {TEAMS} teams × {per_team} queued jobs, "
          f"warm-up {WARMUP_MINUTES} min excluded, seed {args.seed}")
    results = []
    for name, policy in (("Officina", schedule), ("FIFO baseline", fifo_first_fit)):
        t0 = time.perf_counter()
        res = simulate_day(name, policy, args.seed, args.minutes, per_team, args.tick, progress=not args.quiet)
        results.append(res)
        worst, team = res.worst
        _, got, exp = res.shares[team]
        high = res.high_waits_min
        print(f"  {name} ({time.perf_counter() - t0:.0f} s wall):")
        print(f"    utilisation {res.utilisation * 100:6.2f} %   fair share: worst team{team:02d} (weight "
              f"{1 + team % 4}) got {got * 100:.2f} % of the GPU-minutes, expected {exp * 100:.2f} % "
              f"→ {worst * 100:.1f} % off")
        print(f"    {len(res.pass_ms)} passes: median {statistics.median(res.pass_ms):.1f} ms, "
              f"p99 {pctl(res.pass_ms, 0.99):.1f} ms, max {max(res.pass_ms):.1f} ms   "
              f"{res.started:,} jobs started, {res.preemptions} asked to yield")
        print(f"    8-GPU jobs held {res.big_part * 100:.1f} % of the GPU-minutes ({8 / sum(SIZES) * 100:.1f} % of "
              f"the work queued);  high-priority jobs: {len(high)} of {res.high_submitted} submitted after the "
              f"warm-up started" + (f", waited median {statistics.median(high):.0f} min, p90 {pctl(high, 0.9):.0f} min"
                                    if high else ""))
        line = []
        for t, got, exp in res.shares:
            line.append(f"t{t:02d} w{1 + t % 4:.0f} {got * 100:5.2f}/{exp * 100:4.1f}")
            if len(line) == 5:
                print(("    per team (weight, got/expected %): " if t == 4 else " " * 37) + "  ".join(line))
                line = []
    return results[0], results[1]


def section_postgres(args: argparse.Namespace) -> dict[str, float]:
    """3. The real pass (``Scheduler.run_pass``): snapshot read, policy, leases and admissions written, in
    the embedded PostgreSQL, with 100 registered workers × 8 simulated GPUs and 10,000 queued jobs."""
    import json
    import sys
    import uuid
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from stack import embedded

    from officina.platform.scheduler.service import Scheduler

    print(f"\n3. pass through PostgreSQL: {WORKERS} workers × {GPUS_PER_WORKER} GPUs registered, "
          f"{args.queued:,} queued jobs from {TEAMS} teams")
    with embedded(processes=()) as st:
        pool, rng = st.services.pool, random.Random(args.seed)
        teams = [st.services.auth.create_team(None, f"bench{t:02d}").id for t in range(TEAMS)]
        gpus = json.dumps([{"index": i, "model": "simulated GPU", "memory_mb": 0, "simulated": True}
                           for i in range(GPUS_PER_WORKER)])
        with pool.connection() as conn, conn.transaction():
            for t, team_id in enumerate(teams):
                conn.execute("INSERT INTO team_quotas (team_id, weight) VALUES (%s, %s)", (team_id, 1 + t % 4))
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO workers (name, host, pid, queues, cpus, memory_mb, gpus, status)"
                                " VALUES (%s, 'bench', 1, '{gpu}', %s, %s, %s, 'online')",
                                [(f"w{i:03d}", int(WORKER_CPUS), WORKER_MEMORY_MB, gpus) for i in range(WORKERS)])
            with conn.cursor().copy("COPY jobs (id, team_id, name, project, spec, queue, priority, state, timeout_s)"
                                    " FROM STDIN") as copy:
                for n in range(args.queued):
                    size = rng.choice(SIZES)
                    spec = {"gpus": size, "cpus": CPUS_PER_GPU * size, "memory_mb": MEMORY_MB_PER_GPU * size}
                    copy.write_row((str(uuid.uuid4()), rng.choice(teams), f"job{n}", "bench", json.dumps(spec),
                                    "gpu", rng.choices(PRIORITIES, BACKLOG_MIX)[0], "queued", 3600))
        scheduler = Scheduler(pool, lambda *_: None, worker_lost_s=3600)
        first = scheduler.run_pass()
        rest = [scheduler.run_pass() for _ in range(args.repeats)]
    print(f"  first pass (empty fleet): {first.ms:7.1f} ms   ({first.placed} admitted with their GPU leases, "
          f"{first.waiting:,} reasons written)")
    print(f"  next passes (full fleet): median {statistics.median(r.ms for r in rest):7.1f} ms   "
          f"max {max(r.ms for r in rest):7.1f} ms   ({rest[-1].gpus_free} GPUs free)")
    return {"first": first.ms, "full": max(r.ms for r in rest)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--minutes", type=int, default=1440, help="length of the simulated day")
    parser.add_argument("--tick", type=int, default=6,
                        help="simulated minutes between passes (durations are whole ticks); 1 takes ~6x longer")
    parser.add_argument("--queued", type=int, default=QUEUED, help="jobs kept queued in the simulation")
    parser.add_argument("--repeats", type=int, default=5, help="repetitions of each pass-time measurement")
    parser.add_argument("--quick", action="store_true", help="a short check: 6 simulated hours, 3 repetitions")
    parser.add_argument("--quiet", action="store_true", help="no progress lines during the simulation")
    parser.add_argument("--no-postgres", action="store_true", help="skip the pass through the embedded PostgreSQL")
    args = parser.parse_args()
    if args.quick:
        args.minutes, args.repeats = min(args.minutes, 360), 3
    wall0 = time.perf_counter()
    print(f"scheduler policy bench on {os.cpu_count()} CPUs\n")
    passes = section_pass_time(args)
    ours, fifo = section_simulated_day(args)
    db = None if args.no_postgres else section_postgres(args)

    def pct(x: float) -> str:
        return f"{x * 100:.1f} %"

    high = [(f"{statistics.median(r.high_waits_min):.0f} min" if r.high_waits_min else "never")
            for r in (ours, fifo)]
    rows = [("pass, empty fleet (max)", f"{passes['empty fleet']:.0f} ms", "–", "< 1000 ms"),
            ("pass, full fleet (max)", f"{passes['full fleet']:.0f} ms", "–", "< 1000 ms"),
            ("pass in the day (p99)", f"{pctl(ours.pass_ms, 0.99):.0f} ms", f"{pctl(fifo.pass_ms, 0.99):.0f} ms",
             "< 1000 ms"),
            *([("pass in Postgres, first (10k jobs)", f"{db['first']:.0f} ms", "–", "< 1000 ms"),
               ("pass in Postgres, full fleet (max)", f"{db['full']:.0f} ms", "–", "< 1000 ms")] if db else []),
            ("GPU utilisation", pct(ours.utilisation), pct(fifo.utilisation), "≥ 95 %"),
            ("fair share, worst team off by", pct(ours.worst[0]), pct(fifo.worst[0]), "≤ 5 %"),
            ("GPU-minutes of 8-GPU jobs", pct(ours.big_part), pct(fifo.big_part),
             f"({8 / sum(SIZES) * 100:.0f} % queued)"),
            ("high-priority wait (median)", high[0], high[1], "–")]
    print(f"\n{'figure':36s} | {'Officina':>10s} | {'FIFO baseline':>13s} | target")
    print("-" * 37 + "+" + "-" * 12 + "+" + "-" * 15 + "+" + "-" * 18)
    for figure, a, b, target in rows:
        print(f"{figure:36s} | {a:>10s} | {b:>13s} | {target}")
    print(f"\ntotal {time.perf_counter() - wall0:.0f} s")


if __name__ == "__main__":
    main()
