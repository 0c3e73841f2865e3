"""The process supervisor, with real child processes."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from officina.infra.supervisor import ProcessSpec, ProcessStartError, Supervisor, reap_leftovers

PY = sys.executable


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait(cond, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def _session(sid: int) -> list[int]:
    out = []
    for p in psutil.process_iter(["status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and os.getsid(p.pid) == sid:
                out.append(p.pid)
        except (ProcessLookupError, psutil.Error):
            pass
    return out


def test_start_waits_until_ready_and_logs(tmp_path: Path) -> None:
    marker = tmp_path / "ready"
    sup = Supervisor(tmp_path / "logs")
    code = f"import time,pathlib; print('hello', flush=True); time.sleep(0.3); pathlib.Path({str(marker)!r}).touch(); time.sleep(60)"
    child = sup.start(ProcessSpec("sleeper", [PY, "-c", code], ready=lambda c: marker.exists(), stop_grace=2))
    try:
        assert marker.exists()
        assert child.alive()
        assert os.getpgid(child.pid) == child.pid and os.getsid(child.pid) == child.pid
        assert _wait(lambda: "hello" in child.log_since_start())
        assert (tmp_path / "logs" / "sleeper.log").exists()
    finally:
        sup.stop_all()
    assert not _alive(child.pid)


def test_exit_before_ready_raises_with_log_tail(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path / "logs")
    code = "import sys; print('boom: bad config', flush=True); sys.exit(3)"
    with pytest.raises(ProcessStartError, match="(?s)status 3.*boom: bad config"):
        sup.start(ProcessSpec("bad", [PY, "-c", code], ready=lambda c: False))
    assert sup.children == []


def test_ready_timeout_raises_and_stops_child(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path / "logs")
    with pytest.raises(ProcessStartError, match="not ready within"):
        sup.start(ProcessSpec("slow", ["sleep", "60"], ready=lambda c: False, ready_timeout=0.5, stop_grace=1))
    assert sup.children == []
    assert not any(p.info["cmdline"] == ["sleep", "60"] and p.info["ppid"] == os.getpid()
                   for p in psutil.process_iter(["cmdline", "ppid"]))


def test_crashed_child_is_restarted(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path / "logs", backoff_base=0.1)
    child = sup.start(ProcessSpec("sleeper", ["sleep", "60"], stop_grace=1))
    first = child.pid
    stop = threading.Event()
    loop = threading.Thread(target=sup.supervise, args=(stop, 0.05))
    loop.start()
    try:
        os.kill(first, signal.SIGKILL)
        assert _wait(lambda: child.pid != first and child.alive(), timeout=5)
        assert child.restarts == 1
    finally:
        stop.set()
        loop.join()
        sup.stop_all()
    assert not _alive(child.pid)


def test_gives_up_after_quick_crashes(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path / "logs", backoff_base=0.01, max_quick_crashes=3)
    child = sup.start(ProcessSpec("crasher", [PY, "-c", "import time; time.sleep(0.2)"]))
    deadline = time.monotonic() + 10
    while not child.failed and time.monotonic() < deadline:
        sup.check()
        time.sleep(0.02)
    assert child.failed
    assert child.restarts == 3
    sup.stop_all()


def test_sigterm_ignoring_group_is_killed_after_grace(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    # the child ignores SIGTERM and starts a grandchild that ignores it too
    code = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "g = subprocess.Popen([sys.executable, '-c', 'import signal,time; "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(g.pid))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    sup = Supervisor(tmp_path / "logs")
    child = sup.start(ProcessSpec("stubborn", [PY, "-c", code], ready=lambda c: "ready" in c.log_since_start(),
                                  stop_grace=0.5))
    grandchild = int(pidfile.read_text())
    assert _alive(grandchild)
    t0 = time.monotonic()
    sup.stop_all()
    took = time.monotonic() - t0
    assert 0.4 < took < 3
    assert not _alive(child.pid)
    assert not _alive(grandchild)
    assert _session(child.pid) == []
    sup.stop_all()  # idempotent
    assert sup.children == []


def test_stop_all_reverse_order_and_idempotent(tmp_path: Path) -> None:
    order_file = tmp_path / "order"
    code = (
        "import signal, sys, time\n"
        "def bye(*a):\n"
        f"    open({str(order_file)!r}, 'a').write(sys.argv[1] + '\\n'); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "print('up', flush=True)\n"
        "time.sleep(60)\n"
    )
    sup = Supervisor(tmp_path / "logs")
    for name in ("a", "b", "c"):
        sup.start(ProcessSpec(name, [PY, "-c", code, name], ready=lambda c: "up" in c.log_since_start(),
                              stop_grace=2))
    sup.stop_all()
    sup.stop_all()
    assert order_file.read_text().split() == ["c", "b", "a"]


def test_stop_all_from_signal_handler_during_supervise(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path / "logs")
    child = sup.start(ProcessSpec("sleeper", ["sleep", "60"], stop_grace=1))
    stop = threading.Event()

    def on_alarm(signum, frame):
        sup.stop_all()
        stop.set()

    old = signal.signal(signal.SIGALRM, on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        sup.supervise(stop, interval=0.05)
    finally:
        signal.signal(signal.SIGALRM, old)
    assert not _alive(child.pid)
    assert sup.children == []


def test_reap_leftovers_of_a_dead_supervisor(tmp_path: Path) -> None:
    state = tmp_path / "run" / "children.json"
    sup = Supervisor(tmp_path / "logs", state_file=state)
    child = sup.start(ProcessSpec("orphan", ["sleep", "60"]))
    assert state.exists()
    # forget it without stopping, as a SIGKILLed supervisor would
    assert reap_leftovers(state, grace=1) == ["orphan"]
    assert not _alive(child.pid)
    assert not state.exists()
    child.popen.wait()
