"""A classroom on one server: N simulated students over HTTP against a server this script starts.

    python bench/classroom.py [--students 30] [--follow 0.7] [--seconds 60] [--think 1 3]
                              [--modes on,off] [--checkpoints DIR] [--seed 0]
    python bench/classroom.py --soak [--seconds 600]      # memory over a long run, coalescing on
    python bench/classroom.py --batch-ms 5 ...            # with dynamic batching on the CPU too

For each mode (coalescing on: ROBUSTLENS_COALESCE=1; off: =0) it starts `python -m backend.transport.server`
on 127.0.0.1 (a free port; only loopback traffic), loads every model once, then runs, for
--seconds each and against the same server:
  1. one user alone (an explorer: every request is new to the server's caches), the reference;
  2. --students students at once: a share --follow of them follow the teacher, the rest explore.
     The teacher shows a new view (image, 1-3 models, eps, saliency method) every --teacher-every
     seconds; each follower reacts within --react seconds and runs that view, then waits for the
     next one (so a class hits the same new computation within a second or two: what coalescing is
     for). Explorers run their own random views (test images, models, eps, method) back to back.
A view is what the attack lab does: predict, then PGD-10 on its models, then an explanation
(Integrated Gradients or Grad-CAM), with a think time drawn from --think seconds between
requests (a student reads the result before clicking again). Each student sends its own
X-RobustLens-Session, so the server shares the device between them fairly. A loop ends by itself
when its time is up; every request has a 60 s client timeout.

Printed: requests, errors (any failed request, including a 429 still busy after the client's
retries), p50 / p95 latency, p95 against the single user's p95 of the same server, p95 of the
followers and of the explorers, and the server's peak resident memory (VmHWM) - per mode, side
by side. --soak samples the server's RSS every 10 s and prints it per minute.
"""
from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

from backend.transport.client import HttpClient

EPS = [2 / 255, 4 / 255, 8 / 255, 16 / 255]
SALIENCY = ["integrated_gradients", "gradcam"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int, key: str = "VmRSS") -> float:
    """The process's resident memory (VmRSS) or its peak (VmHWM), in MiB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    """`python -m backend.transport.server` on 127.0.0.1 in a subprocess, stopped on exit."""

    def __init__(self, coalesce: bool, checkpoints: str | None, batch_ms: float | None = None):
        self.port = free_port()
        env = {**os.environ, "ROBUSTLENS_COALESCE": "1" if coalesce else "0", "ROBUSTLENS_WARM_UP": "0"}
        if batch_ms is not None:
            env["ROBUSTLENS_BATCH_WINDOW_MS"] = str(batch_ms)
        cmd = [sys.executable, "-m", "backend.transport.server", "--host", "127.0.0.1", "--port", str(self.port),
               "--log-level", "warning"]
        if checkpoints:
            cmd += ["--checkpoints", checkpoints]
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.url = f"http://127.0.0.1:{self.port}"
        client = HttpClient(self.url, timeout=5)
        deadline = time.time() + 120
        while True:
            try:
                client.health()
                break
            except Exception:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"server did not start: {self.proc.stderr.read().decode()[-2000:]}")
                time.sleep(0.2)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


class Teacher:
    """The teacher's view, changed every `every` seconds (seeded) by a thread until `until`."""

    def __init__(self, images: list[str], models: list[str], every: float, seed: int, until: float):
        self.rng = random.Random(seed)
        self.cond = threading.Condition()
        self.version, self.view = 0, explore_view(self.rng, images, models)
        self.until = until

        def run():
            while time.monotonic() + every < until:
                time.sleep(every)
                with self.cond:
                    self.version, self.view = self.version + 1, explore_view(self.rng, images, models)
                    self.cond.notify_all()

        threading.Thread(target=run, daemon=True).start()

    def next_view(self, seen: int) -> tuple[int, dict | None]:
        """(version, view) once the view is newer than `seen`; (seen, None) when time is up."""
        with self.cond:
            while self.version <= seen:
                left = self.until - time.monotonic()
                if left <= 0:
                    return seen, None
                self.cond.wait(min(left, 1.0))
            return self.version, dict(self.view)


def explore_view(rng: random.Random, images: list[str], models: list[str]) -> dict:
    k = rng.randint(1, min(3, len(models)))
    ms = rng.sample(models, k)
    return {"image": rng.choice(images), "models": ms, "eps": rng.choice(EPS), "saliency": rng.choice(SALIENCY)}


def user_loop(url: str, name: str, until: float, think: tuple[float, float], seed: int, view_fn,
              out: list, errors: list) -> None:
    """One simulated user: predict -> attack -> explain, with think time, until `until`.
    view_fn(rng) -> the next view, or None when there is none before `until`."""
    rng = random.Random(seed)
    client = HttpClient(url, timeout=60, session=name)
    try:
        while time.monotonic() < until:
            v = view_fn(rng)
            if v is None:
                break
            spec = {"method": "pgd", "eps": v["eps"], "step_size": v["eps"] / 4, "steps": 10}
            steps = [("predict", lambda: client.predict(v["image"], v["models"])),
                     ("attack", lambda: client.attack(v["image"], spec, v["models"])),
                     ("explain", lambda: client.explain(v["image"], v["models"][0], v["saliency"]))]
            for kind, call in steps:
                if time.monotonic() >= until:
                    break
                t0 = time.monotonic()
                try:
                    call()
                    out.append((kind, time.monotonic() - t0))
                except Exception as e:
                    errors.append(f"{kind}: {type(e).__name__}: {str(e)[:200]}")
                time.sleep(rng.uniform(*think))
    finally:
        client.close()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def follower(teacher: Teacher, react: float):
    seen = [-1]

    def view_fn(rng):
        seen[0], v = teacher.next_view(seen[0])
        if v is not None:
            time.sleep(rng.uniform(0, react))  # students click within a moment of each other, not at once
        return v
    return view_fn


def run_phase(url: str, students: int, follow: float, seconds: float, think, seed: int, images, models,
              teacher_every: float, react: float = 1.5) -> dict:
    until = time.monotonic() + seconds
    teacher = Teacher(images, models, teacher_every, seed, until)
    n_follow = int(round(students * follow)) if students > 1 else 0
    results = {"follow": [], "explore": []}
    errors: list[str] = []
    threads = []
    for i in range(students):
        group = "follow" if i < n_follow else "explore"
        view_fn = follower(teacher, react) if group == "follow" else (lambda rng: explore_view(rng, images, models))
        t = threading.Thread(target=user_loop, args=(url, f"student-{i}", until, think, seed * 1000 + i, view_fn,
                                                     results[group], errors), daemon=True)
        threads.append(t)
    for t in threads:
        t.start()
        time.sleep(0.05)  # students open the page over a second or two, not in the same millisecond
    for t in threads:
        t.join(seconds + 120)
    lat = [d for g in results.values() for _, d in g]
    return {"requests": len(lat) + len(errors), "errors": errors, "p50": pct(lat, 50), "p95": pct(lat, 95),
            "p95_follow": pct([d for _, d in results["follow"]], 95),
            "p95_explore": pct([d for _, d in results["explore"]], 95), "n_follow": n_follow}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--students", type=int, default=30)
    p.add_argument("--follow", type=float, default=0.7, help="share of students following the teacher")
    p.add_argument("--seconds", type=float, default=None, help="per phase (default 60; --soak: 600)")
    p.add_argument("--think", type=float, nargs=2, default=(1.0, 3.0), help="think time range, seconds")
    p.add_argument("--teacher-every", type=float, default=10.0, help="seconds between the teacher's changes")
    p.add_argument("--react", type=float, default=1.5, help="followers start the teacher's view within this")
    p.add_argument("--modes", default="on,off", help="coalescing modes to run: on, off or on,off")
    p.add_argument("--checkpoints", default=None)
    p.add_argument("--batch-ms", type=float, default=None,
                   help="the server's dynamic batching window (ROBUSTLENS_BATCH_WINDOW_MS; default: its own)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--soak", action="store_true", help="one long run with coalescing on; RSS per minute")
    a = p.parse_args(argv)
    if not 1 <= a.students <= 200 or not 0 <= a.follow <= 1:
        raise SystemExit("--students must be in 1..200 and --follow in 0..1")
    seconds = a.seconds or (600.0 if a.soak else 60.0)
    modes = ["on"] if a.soak else [m.strip() for m in a.modes.split(",") if m.strip()]
    print(f"# classroom: {a.students} students, {a.follow:.0%} following, {seconds:.0f} s per phase, think "
          f"{a.think[0]:g}-{a.think[1]:g} s, teacher changes every {a.teacher_every:g} s (followers react within "
          f"{a.react:g} s); "
          f"load average at start {os.getloadavg()[0]:.1f}; {os.cpu_count()} CPUs", flush=True)
    rows = []
    for mode in modes:
        server = Server(mode == "on", a.checkpoints, a.batch_ms)
        try:
            probe = HttpClient(server.url, timeout=120)
            models = [m["id"] for m in probe.list_models()]
            src = probe.image_sources()
            images = ([f"test:{i}" for i in random.Random(a.seed).sample(range(src["test"]["count"]), 400)]
                      if src["test"]["available"] else [f"samples:{i}" for i in range(src["samples"]["count"])])
            probe.predict(images[0], models)  # every model loaded before anything is timed
            if a.soak:
                soak(server, a, seconds, images, models)
                return
            single = run_phase(server.url, 1, 0.0, seconds, a.think, a.seed + 1, images, models, a.teacher_every)
            crowd = run_phase(server.url, a.students, a.follow, seconds, a.think, a.seed + 2, images, models,
                              a.teacher_every, a.react)
            peak = rss_mb(server.proc.pid, "VmHWM")
            rows.append((mode, single, crowd, peak))
            for e in (single["errors"] + crowd["errors"])[:5]:
                print(f"  error ({mode}): {e}", flush=True)
        finally:
            server.close()
    print()
    print("| coalescing | users | requests | errors | p50 (s) | p95 (s) | p95 / 1-user p95 | p95 following | "
          "p95 exploring | server peak RSS (MiB) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for mode, single, crowd, peak in rows:
        print(f"| {mode} | 1 (exploring) | {single['requests']} | {len(single['errors'])} | {single['p50']:.2f} | "
              f"{single['p95']:.2f} | 1.00 | - | {single['p95_explore']:.2f} | |")
        print(f"| {mode} | {a.students} ({crowd['n_follow']} following) | {crowd['requests']} | "
              f"{len(crowd['errors'])} | {crowd['p50']:.2f} | {crowd['p95']:.2f} | "
              f"{crowd['p95'] / single['p95']:.2f} | {crowd['p95_follow']:.2f} | {crowd['p95_explore']:.2f} | "
              f"{peak:.0f} |")
    print(f"\n# load average at end {os.getloadavg()[0]:.1f}")


def soak(server: Server, a, seconds: float, images, models) -> None:
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    t0 = time.monotonic()

    def sample():
        while not stop.wait(10.0):
            samples.append((time.monotonic() - t0, rss_mb(server.proc.pid)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    samples.append((0.0, rss_mb(server.proc.pid)))
    crowd = run_phase(server.url, a.students, a.follow, seconds, a.think, a.seed + 3, images, models,
                      a.teacher_every, a.react)
    stop.set()
    sampler.join(15)
    samples.append((time.monotonic() - t0, rss_mb(server.proc.pid)))
    print(f"\nrequests {crowd['requests']}, errors {len(crowd['errors'])}, p50 {crowd['p50']:.2f} s, "
          f"p95 {crowd['p95']:.2f} s, peak RSS {rss_mb(server.proc.pid, 'VmHWM'):.0f} MiB")
    print("\n| minute | RSS min (MiB) | RSS max (MiB) | RSS at end of minute (MiB) |")
    print("|---|---|---|---|")
    minutes = int(max(s for s, _ in samples) // 60) + 1
    for m in range(minutes):
        vals = [r for s, r in samples if m * 60 <= s < (m + 1) * 60]
        if vals:
            print(f"| {m + 1} | {min(vals):.0f} | {max(vals):.0f} | {vals[-1]:.0f} |")
    first = [r for s, r in samples if 60 <= s < 120] or [samples[0][1]]
    last = [r for s, r in samples if s >= samples[-1][0] - 60]
    print(f"\n# RSS second minute {statistics.mean(first):.0f} MiB, last minute {statistics.mean(last):.0f} MiB "
          f"({statistics.mean(last) - statistics.mean(first):+.0f} MiB)")
    for e in crowd["errors"][:5]:
        print(f"  error: {e}")


if __name__ == "__main__":
    main()
