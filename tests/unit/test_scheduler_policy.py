"""The scheduling policy on hand-built snapshots: quotas, best fit, priority, fair share, reservations, preemption."""
from __future__ import annotations

from officina.platform.scheduler.policy import QueuedJob, RunningJob, TeamPolicy, WorkerSlot, schedule


def workers(n: int, gpus: int = 8, used: dict[str, int] | None = None) -> list[WorkerSlot]:
    used = used or {}
    return [WorkerSlot(f"w{i}", frozenset({"gpu"}), gpus, list(range(used.get(f"w{i}", 0), gpus)), 64.0, 1 << 20)
            for i in range(n)]


def job(i: int, team: int, gpus: int = 1, priority: int = 0, **kw) -> QueuedJob:
    return QueuedJob(f"j{i:04d}", team, gpus, priority, float(i), **kw)


def test_places_exact_gpus_best_fit_and_never_oversubscribes():
    fleet = workers(2, gpus=4, used={"w0": 3})  # w0 has GPU 3 free, w1 all four
    d = schedule(fleet, [], [job(1, 1, gpus=1), job(2, 1, gpus=4), job(3, 1, gpus=1)], [])
    placed = {p.job_id: (p.worker, p.gpu_indices) for p in d.placements}
    assert placed["j0001"] == ("w0", (3,))      # best fit: the fuller worker
    assert placed["j0002"] == ("w1", (0, 1, 2, 3))
    assert "j0003" not in placed and d.waiting["j0003"].startswith("waiting: no worker with 1 free GPU")
    held = [i for p in d.placements for i in ((p.worker, g) for g in p.gpu_indices)]
    assert len(held) == len(set(held)) == 5


def test_team_quota_and_budget_make_jobs_wait_with_reasons():
    teams = [TeamPolicy(1, "vision", max_gpus=4, in_use=3), TeamPolicy(2, "nlp", budget_h=10, used_h=10.5)]
    d = schedule(workers(2), teams, [job(1, 1, gpus=2), job(2, 1, gpus=1), job(3, 2)], [])
    assert d.waiting["j0001"] == "waiting: team quota 3/4 GPUs in use"
    assert [p.job_id for p in d.placements] == ["j0002"]  # a smaller job still fits the quota
    assert d.waiting["j0003"] == "waiting: team GPU-hour budget used (10.5/10 h this week)"


def test_priority_first_then_fair_share_then_age():
    teams = [TeamPolicy(1, "a", in_use=0), TeamPolicy(2, "b", in_use=0, weight=3)]
    queued = [job(i, 1 + i % 2) for i in range(16)] + [job(100, 1, priority=10)]
    d = schedule(workers(1, gpus=5), teams, queued, [])
    order = [p.job_id for p in d.placements]
    assert order[0] == "j0100"                     # high priority first, though youngest
    team_of = {j.id: j.team_id for j in queued}
    # after it, b (weight 3) gets three GPUs for each of a's: a holds 1 (the high job), b takes 3, a waits
    assert sorted(team_of[j] for j in order[1:]) == [1, 2, 2, 2]
    b_jobs = [j for j in order if team_of[j] == 2]
    assert b_jobs == sorted(b_jobs)


def test_fair_share_converges_to_weights():
    teams = [TeamPolicy(t, f"t{t}", weight=w) for t, w in ((1, 1), (2, 2), (3, 5))]
    queued = [job(i, 1 + i % 3) for i in range(300)]
    d = schedule(workers(10), teams, queued, [])  # 80 GPUs
    per_team = {t: 0 for t in (1, 2, 3)}
    team_of = {j.id: j.team_id for j in queued}
    for p in d.placements:
        per_team[team_of[p.job_id]] += 1
    assert per_team == {1: 10, 2: 20, 3: 50}


def test_large_job_reserves_a_worker_instead_of_starving():
    fleet = workers(2, gpus=8, used={"w0": 6, "w1": 1})
    queued = [job(1, 1, gpus=8)] + [job(i, 2, gpus=1) for i in range(2, 12)]
    d = schedule(fleet, [TeamPolicy(1, "big"), TeamPolicy(2, "small", in_use=7)], queued, [])
    assert d.reserved == {"w1": "j0001"} and "w1 is held for it" in d.waiting["j0001"]
    assert {p.worker for p in d.placements} == {"w0"}  # small jobs only fill w0's 2 free GPUs
    assert len(d.placements) == 2


def test_unfittable_and_unserved_queues_say_so():
    d = schedule(workers(1, gpus=2), [], [job(1, 1, gpus=4), job(2, 1, queue="other")], [])
    assert d.waiting["j0001"].startswith("waiting: no online worker has 4 GPUs (the largest has 2)")
    assert d.waiting["j0002"] == "waiting: no online worker serves queue 'other'"


def test_cpu_only_jobs_start_without_placement():
    d = schedule([], [], [job(1, 1, gpus=0, queue="cpu")], [])
    assert [(p.job_id, p.worker, p.gpu_indices) for p in d.placements] == [("j0001", None, ())]


def test_high_priority_preempts_lower_priority_jobs_of_teams_over_share():
    fleet = workers(2, gpus=2, used={"w0": 2, "w1": 2})
    running = [RunningJob("r1", 2, 1, 0, "w0", 1.0), RunningJob("r2", 2, 1, 0, "w0", 2.0),
               RunningJob("r3", 2, 1, 0, "w1", 3.0), RunningJob("r4", 2, 1, 10, "w1", 4.0)]
    teams = [TeamPolicy(1, "urgent"), TeamPolicy(2, "hog", in_use=4)]
    d = schedule(fleet, teams, [job(1, 1, gpus=2, priority=10)], running)
    assert set(d.preempt) == {"r1", "r2"}          # w0: two low jobs; w1 has a high one that can't be preempted
    assert "over its fair share" in d.preempt["r1"] and "preempting 2" in d.waiting["j0001"]
    # next pass: the victims are yielding; nothing more is preempted, the worker is held
    running = [r if r.worker != "w0" else RunningJob(r.id, 2, 1, 0, "w0", r.started, preempting=True)
               for r in running]
    d2 = schedule(workers(2, gpus=2, used={"w0": 2, "w1": 2}), teams, [job(1, 1, gpus=2, priority=10)], running)
    assert d2.preempt == {} and "yielding" in d2.waiting["j0001"] and d2.reserved == {"w0": "j0001"}


def test_no_preemption_of_teams_within_their_share():
    fleet = workers(1, gpus=3, used={"w0": 3})
    running = [RunningJob("r1", 1, 1, 0, "w0", 1.0), RunningJob("r2", 2, 1, 0, "w0", 2.0),
               RunningJob("r3", 3, 1, 0, "w0", 3.0)]
    teams = [TeamPolicy(1, "a", in_use=1), TeamPolicy(2, "b", in_use=1), TeamPolicy(3, "c", in_use=1)]
    d = schedule(fleet, teams, [job(1, 3, gpus=1, priority=10)], running)
    assert d.preempt == {}  # every team holds exactly its share (1 of 3 GPUs): nobody is over it
    d = schedule(fleet, [TeamPolicy(1, "a", in_use=2), teams[1]], [job(1, 4, gpus=1, priority=10)],
                 running[:2] + [RunningJob("r3", 1, 1, 0, "w0", 3.0)])
    assert list(d.preempt) == ["r3"]  # team a holds 2 of 3 GPUs, over its share: its newest job yields


def test_one_pass_preempts_no_more_than_the_excess():
    fleet = workers(2, gpus=2, used={"w0": 2, "w1": 2})
    running = [RunningJob(f"r{i}", 2, 1, -10, f"w{i // 2}", float(i)) for i in range(4)]
    teams = [TeamPolicy(1, "urgent"), TeamPolicy(2, "hog", in_use=4)]
    d = schedule(fleet, teams, [job(1, 1, gpus=2, priority=10), job(2, 1, gpus=2, priority=10)], running)
    assert len(d.preempt) == 2  # hog keeps its fair share (2 of 4 GPUs); the second job waits


def test_a_team_back_from_an_idle_week_catches_up_but_does_not_take_over():
    teams = [TeamPolicy(0, "back", used_h=0.0)] + [TeamPolicy(t, f"t{t}", used_h=500.0) for t in range(1, 4)]
    queued = [job(i, i % 4) for i in range(40)]
    d = schedule(workers(1, gpus=8), teams, queued, [])
    team_of = {j.id: j.team_id for j in queued}
    got = [team_of[p.job_id] for p in d.placements]
    assert got.count(0) == 8  # 8 GPU-hours behind at most: it gets the next 8 GPU-hours (all 8 GPUs, 1 h ahead)
    more = schedule(workers(2, gpus=8), teams, queued, [])
    got = [team_of[p.job_id] for p in more.placements]
    assert got.count(0) < 16 and len(set(got)) == 4  # with more room the others get theirs too
