"""Process set-up shared by every entry point (the app, the server, the trainer, the evaluation CLIs,
the benchmarks): how many cores this process may use, how torch's OpenMP threads behave, and whether
another process (a training job, an AutoAttack worker) still runs.

Torch-free, and meant to be imported before torch: `quiet_openmp()` only works before torch loads.
"""
from __future__ import annotations

import os
from pathlib import Path


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a container or `taskset` narrows;
    os.cpu_count() where affinity is unknown), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def quiet_openmp() -> None:
    """Idle OpenMP threads sleep instead of spinning (OMP_WAIT_POLICY=PASSIVE unless already set).

    Call before torch is imported. On a shared CPU (a training job, a second user, the HTTP server)
    spinning workers of one process stall the others' compute many times over: measured on a 2-core
    machine under load, one width-16 forward pass took 1.6 s instead of 8 ms."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def torch_threads(requested: int | None = None, *, env: str | None = None, share: int = 1) -> int:
    """The thread count for torch.set_num_threads: `requested` if given, else the integer in the
    environment variable `env` if set, else the usable cores divided among `share` processes (>= 1)."""
    if requested:
        return int(requested)
    if env and os.environ.get(env):
        return int(os.environ[env])
    return max(1, usable_cores() // max(1, share))


def process_start_time(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch, to a clock tick), from /proc; None where it
    cannot be read (no such process, not Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat[stat.rindex(")") + 2:].split()[19])  # field 22, starttime, in ticks since boot
        btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                     if line.startswith("btime "))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def pid_alive(pid: int, job_id: str | None = None, *, since: float | None = None) -> bool:
    """Is `pid` a live (non-zombie) process on this host, and still the same process: when job_id is
    given, one whose command line names it; when `since` (seconds since the epoch) is given, one that
    was already running then (a process that started later got the pid by reuse)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path(f"/proc/{pid}")
    try:
        stat = (proc / "stat").read_text()
        if stat[stat.rindex(")") + 2:].startswith("Z"):
            return False
        if job_id is not None and job_id.encode() not in (proc / "cmdline").read_bytes():
            return False
    except (OSError, ValueError):
        return True  # no /proc (not Linux): trust kill(0)
    started = process_start_time(pid) if since is not None else None
    # btime is whole seconds and drifts from the wall clock on a long uptime: allow 10 s of slack
    return started is None or since is None or started <= since + 10.0


def wait_for_url(url: str, proc, deadline: float, poll_s: float = 0.3) -> bool:
    """Poll `url` until it answers 200 (True); False as soon as the server process `proc` (a Popen) has
    exited or time.monotonic() passes `deadline`. For the scripts that start a server and wait for it."""
    import time

    import httpx

    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(poll_s)
