"""Who runs next: the scheduling policy, a pure function over a snapshot of the fleet and the queue.

Order: priority (high first); within one priority, fair share between teams — the team with the
least GPU time for its weight goes first (GPU-hours used this week plus the GPUs it holds counted
for ``LOOKAHEAD_H`` more hours), and it gets one job per turn, so shares stay level and a team
that got more earlier gets less now —; then age. A GPU job starts when its team's quota and GPU-hour budget allow and a worker serving
its queue has enough free GPUs, CPUs and memory. The worker is the best fit (the fewest free GPUs
that still fit), which keeps whole machines free for large jobs. A job that cannot start gets a
reason a person can read.

Large jobs are not starved by small ones: the first jobs in order that lack room each reserve the
worker closest to fitting them (at most ``reservations`` per pass), and nothing later in the order
is placed there. A job that lacks room may preempt jobs of lower priority whose teams are above
their fair share, on one worker; they are asked to checkpoint and yield (the caller does that).

Jobs without GPUs are not placed: they start at once on their queue.
"""
from __future__ import annotations

import heapq
from collections import defaultdict
from dataclasses import dataclass, field

LOOKAHEAD_H = 1.0  # GPUs held now count as this many GPU-hours in the fair-share order
DEBT_CAP_H = 8.0   # a team behind the others counts as at most this many GPU-hours (per unit of weight)
                   # behind the furthest ahead: one back from an idle week catches up, not takes over


@dataclass
class WorkerSlot:
    """An online worker with what is free on it now."""

    name: str
    queues: frozenset[str]
    gpus: int                  # GPUs it has
    free: list[int]            # indices of its free GPUs
    cpus: float                # free CPUs
    memory_mb: int             # free memory


@dataclass(frozen=True)
class TeamPolicy:
    id: int
    name: str
    weight: float = 1.0
    max_gpus: int | None = None
    budget_h: float | None = None      # GPU hours per week (None: no budget)
    used_h: float = 0.0                # GPU hours used this week
    in_use: int = 0                    # GPUs held now


@dataclass(frozen=True)
class QueuedJob:
    id: str
    team_id: int
    gpus: int
    priority: int
    created: float                     # seconds since the epoch: older goes first
    queue: str = "gpu"
    cpus: float = 1.0
    memory_mb: int = 0


@dataclass(frozen=True)
class RunningJob:
    id: str
    team_id: int
    gpus: int
    priority: int
    worker: str | None
    started: float
    preempting: bool = False           # already asked to yield


@dataclass(frozen=True)
class Placement:
    job_id: str
    worker: str | None                 # None: a job without GPUs, sent to its queue
    gpu_indices: tuple[int, ...]


@dataclass
class Decision:
    placements: list[Placement] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)          # job id -> why it waits
    preempt: dict[str, str] = field(default_factory=dict)          # running job id -> why it must yield
    reserved: dict[str, str] = field(default_factory=dict)         # worker -> job id it is held for


def shares(teams: dict[int, TeamPolicy], active: set[int], total_gpus: int) -> dict[int, float]:
    """Each active team's fair share of the fleet's GPUs, by weight."""
    weight = sum(teams[t].weight for t in active) or 1.0
    return {t: total_gpus * teams[t].weight / weight for t in active}


class _Fleet:
    """Workers indexed by how many GPUs are free, for best-fit lookups."""

    def __init__(self, workers: list[WorkerSlot]):
        self.workers = {w.name: w for w in workers}
        self.most = max((w.gpus for w in workers), default=0)
        self.by_free: list[dict[str, WorkerSlot]] = [{} for _ in range(self.most + 1)]
        for w in workers:
            self.by_free[len(w.free)][w.name] = w
        self.queues = {q for w in workers for q in w.queues}
        self.largest = {q: max(w.gpus for w in workers if q in w.queues) for q in self.queues}

    def best_fit(self, job: QueuedJob) -> tuple[WorkerSlot | None, bool]:
        """The worker with the fewest free GPUs that fits ``job``; and whether GPUs alone would have fit."""
        gpus_fit = False
        for count in range(job.gpus, self.most + 1):
            for w in self.by_free[count].values():
                if job.queue not in w.queues:
                    continue
                gpus_fit = True
                if w.cpus >= job.cpus and w.memory_mb >= job.memory_mb:
                    return w, True
        return None, gpus_fit

    def take(self, w: WorkerSlot, job: QueuedJob) -> tuple[int, ...]:
        del self.by_free[len(w.free)][w.name]
        taken, w.free = tuple(w.free[:job.gpus]), w.free[job.gpus:]
        w.cpus -= job.cpus
        w.memory_mb -= job.memory_mb
        self.by_free[len(w.free)][w.name] = w
        return taken

    def hold(self, w: WorkerSlot) -> None:
        """Reserve ``w``: nothing else is placed on it in this pass."""
        self.by_free[len(w.free)].pop(w.name, None)

    def held(self, w: WorkerSlot) -> bool:
        return w.name not in self.by_free[len(w.free)]


def schedule(workers: list[WorkerSlot], teams: list[TeamPolicy], queued: list[QueuedJob],
             running: list[RunningJob], *, preemption: bool = True, reservations: int | None = None) -> Decision:
    """Decide which queued jobs start where, why the others wait, and which running jobs yield."""
    decision = Decision()
    team = {t.id: t for t in teams}
    for job in queued:  # a team without a quota row has the defaults
        team.setdefault(job.team_id, TeamPolicy(job.team_id, str(job.team_id)))
    for job in running:
        team.setdefault(job.team_id, TeamPolicy(job.team_id, str(job.team_id)))
    usage = {t: team[t].in_use for t in team}
    fleet = _Fleet(workers)
    total = sum(w.gpus for w in workers)
    active = {j.team_id for j in queued if j.gpus} | {t for t, n in usage.items() if n}
    share = shares(team, active, total)
    left_to_reserve = max(1, len(workers) // 20) if reservations is None else reservations
    on_worker: dict[str, list[RunningJob]] = defaultdict(list)
    for job in running:
        if job.worker and job.gpus:
            on_worker[job.worker].append(job)

    levels: dict[int, dict[int, list[QueuedJob]]] = defaultdict(lambda: defaultdict(list))
    for job in sorted(queued, key=lambda j: j.created):
        if job.gpus == 0:
            decision.placements.append(Placement(job.id, None, ()))
        else:
            levels[job.priority][job.team_id].append(job)

    ahead = max((team[t].used_h / team[t].weight for t in active), default=0.0)

    def owed(t: int) -> float:  # lower goes first
        used = max(team[t].used_h, (ahead - DEBT_CAP_H) * team[t].weight)
        return (used + usage[t] * LOOKAHEAD_H) / team[t].weight

    lowest_running = min((r.priority for r in running if r.gpus and not r.preempting), default=None)
    no_victims: dict[tuple[str, int], int] = {}  # (queue, priority) -> fewest GPUs a search failed to free

    for priority in sorted(levels, reverse=True):
        heads = {t: 0 for t in levels[priority]}
        heap = [(owed(t), jobs[0].created, t) for t, jobs in levels[priority].items()]
        heapq.heapify(heap)
        while heap:
            _, _, t = heapq.heappop(heap)
            jobs = levels[priority][t]
            job = jobs[heads[t]]
            heads[t] += 1
            reason = _quota_reason(team[t], usage[t], job)
            if reason is None:
                w, gpus_fit = fleet.best_fit(job)
                if w is not None:
                    decision.placements.append(Placement(job.id, w.name, fleet.take(w, job)))
                    usage[t] += job.gpus
                else:
                    reason = _room_reason(fleet, job, gpus_fit)
                    key = (job.queue, job.priority)
                    if (preemption and lowest_running is not None and job.priority > lowest_running
                            and usage[t] < share.get(t, 0) and job.gpus < no_victims.get(key, 1 << 30)):
                        found = _preempt(fleet, job, team, usage, share, on_worker, decision)
                        if found is None:  # a later job of this queue and priority needing as many won't either
                            no_victims[key] = job.gpus
                        reason = found or reason
                    if left_to_reserve and not any(v == job.id for v in decision.reserved.values()):
                        target = _closest(fleet, job)
                        if target is not None:
                            fleet.hold(target)
                            decision.reserved[target.name] = job.id
                            left_to_reserve -= 1
                            reason += f"; {target.name} is held for it as GPUs free up"
            if reason is not None:
                decision.waiting[job.id] = "waiting: " + reason
            if heads[t] < len(jobs):
                heapq.heappush(heap, (owed(t), jobs[heads[t]].created, t))
    return decision


def _quota_reason(policy: TeamPolicy, in_use: int, job: QueuedJob) -> str | None:
    if policy.max_gpus is not None and in_use + job.gpus > policy.max_gpus:
        return f"team quota {in_use}/{policy.max_gpus} GPUs in use"
    if policy.budget_h is not None and policy.used_h >= policy.budget_h:
        return f"team GPU-hour budget used ({policy.used_h:.1f}/{policy.budget_h:g} h this week)"
    return None


def _room_reason(fleet: _Fleet, job: QueuedJob, gpus_fit: bool) -> str:
    if job.queue not in fleet.queues:
        return f"no online worker serves queue {job.queue!r}"
    if gpus_fit:
        return (f"no worker with {job.gpus} free GPU{'s' if job.gpus > 1 else ''}, {job.cpus:g} CPUs and "
                f"{job.memory_mb} MiB memory")
    largest = fleet.largest.get(job.queue, 0)
    if largest < job.gpus:
        return f"no online worker has {job.gpus} GPUs (the largest has {largest})"
    return f"no worker with {job.gpus} free GPU{'s' if job.gpus > 1 else ''}"


def _closest(fleet: _Fleet, job: QueuedJob) -> WorkerSlot | None:
    """The worker (not yet held) with the most free GPUs among those big enough for ``job``."""
    best = None
    for w in fleet.workers.values():
        if job.queue in w.queues and w.gpus >= job.gpus and not fleet.held(w):
            if best is None or len(w.free) > len(best.free):
                best = w
    return best


def _preempt(fleet: _Fleet, job: QueuedJob, team: dict[int, TeamPolicy], usage: dict[int, int],
             share: dict[int, float], on_worker: dict[str, list[RunningJob]], decision: Decision) -> str | None:
    """Find one worker where lower-priority jobs of over-share teams can make room; mark them to yield."""
    if usage[job.team_id] >= share.get(job.team_id, 0):
        return None  # a team at or over its fair share preempts nobody
    best: tuple[int, WorkerSlot, list[RunningJob]] | None = None
    for w in fleet.workers.values():
        if job.queue not in w.queues or w.gpus < job.gpus or fleet.held(w):
            continue
        freeing = sum(r.gpus for r in on_worker.get(w.name, ()) if r.preempting or r.id in decision.preempt)
        if len(w.free) + freeing >= job.gpus:
            fleet.hold(w)
            decision.reserved[w.name] = job.id
            return f"no worker with {job.gpus} free GPUs; lower-priority jobs on {w.name} are yielding"
        victims, room = [], len(w.free) + freeing
        candidates = sorted((r for r in on_worker.get(w.name, ())
                             if not r.preempting and r.id not in decision.preempt and r.priority < job.priority
                             and usage.get(r.team_id, 0) > share.get(r.team_id, 0)),
                            key=lambda r: (r.priority, -r.started))
        for r in candidates:
            if room >= job.gpus:
                break
            victims.append(r)
            room += r.gpus
        if room >= job.gpus and (best is None or sum(v.gpus for v in victims) < best[0]):
            best = (sum(v.gpus for v in victims), w, victims)
    if best is None:
        return None
    _, w, victims = best
    for v in victims:
        decision.preempt[v.id] = (f"preempted for higher-priority job {job.id[:8]} of team "
                                  f"{team[job.team_id].name} ({team[v.team_id].name} is over its fair share)")
        usage[v.team_id] -= v.gpus  # as if already yielded: later searches in this pass see the new shares
    usage[job.team_id] += job.gpus  # the GPUs are the job's once the victims yield (and count for its quota)
    fleet.hold(w)
    decision.reserved[w.name] = job.id
    return f"no worker with {job.gpus} free GPUs; preempting {len(victims)} lower-priority job(s) on {w.name}"
