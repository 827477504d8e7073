"""What a teacher's change costs the app: N students following one teacher, through the real front end.

    python bench/classroom_followers.py [--followers 21] [--react 2]

The backend and the Streamlit app in HTTP mode on 127.0.0.1 (fresh, started here, as
bench/classroom_browser.py does, whose students (WsPage: Streamlit's own websocket protocol) this
reuses). First one student alone makes four actions (new views: an eps step, a new image, ...): the
reference. Then --followers students open the attack lab on the same view, and the teacher makes six
changes (three eps steps, three new images, each a view nobody asked for), 3 s apart after the class
has caught up; each follower makes the same action within --react seconds of the change. So every
change is one new computation on the backend and N redraws of the same result on the Streamlit
server: printed per change the followers' median and slowest wait, then all waits' p50 / p95 beside
the single student's, and the CPU seconds the backend and the Streamlit server used for the six
changes (the Streamlit server's divided by the N x 6 page updates: its cost of one follower's redraw).
"""
from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from appserver import load_avg  # noqa: E402
from classroom_browser import Servers, WsPage, cpu_s, pct  # noqa: E402

ALONE = [("samples:5", 8), ("samples:5", 9), ("samples:6", 9), ("samples:6", 10), ("samples:7", 10)]
CLASS = [("samples:0", 8), ("samples:0", 9), ("samples:1", 9), ("samples:1", 10), ("samples:2", 10),
         ("samples:2", 11), ("samples:3", 11)]


async def run(n: int, react: float) -> None:
    servers = Servers(None)
    try:
        page = WsPage(servers.url)
        await page.open(ALONE[0], 300)
        alone = []
        for prev, nxt in zip(ALONE, ALONE[1:]):
            t0 = time.monotonic()
            err = await page.act(prev, nxt)
            alone.append(time.monotonic() - t0)
            if err:
                raise SystemExit(f"the single student's action failed: {err}")
        await page.close()
        pages = [WsPage(servers.url) for _ in range(n)]
        for k in range(0, n, 5):
            await asyncio.gather(*(p.open(CLASS[0], 300) for p in pages[k:k + 5]))
        pids = {"backend": servers.backend.pid, "app": servers.app.pid}
        cpu0 = {k: cpu_s(p) for k, p in pids.items()}
        waits: list[float] = []
        errors: list[str] = []
        for prev, nxt in zip(CLASS, CLASS[1:]):
            rng = random.Random(str(nxt))

            async def one(p: WsPage, delay: float) -> float:
                await asyncio.sleep(delay)
                t0 = time.monotonic()
                err = await p.act(prev, nxt)
                if err:
                    errors.append(err)
                return time.monotonic() - t0

            got = await asyncio.gather(*(one(p, rng.uniform(0, react)) for p in pages))
            waits += got
            print(f"teacher -> {nxt[0]} eps {nxt[1]}: followers' median {statistics.median(got):.2f} s, "
                  f"slowest {max(got):.2f} s", flush=True)
            await asyncio.sleep(3.0)
        cpu = {k: cpu_s(p) - cpu0[k] for k, p in pids.items()}
        await asyncio.gather(*(p.close() for p in pages))
    finally:
        servers.close()
    updates = n * (len(CLASS) - 1)
    print(f"alone: {len(alone)} actions, p50 {statistics.median(alone):.2f} s, p95 {pct(alone, .95):.2f} s")
    print(f"followers: {len(waits)} page updates, {len(errors)} errors, p50 {statistics.median(waits):.2f} s, "
          f"p95 {pct(waits, .95):.2f} s ({pct(waits, .95) / pct(alone, .95):.1f}x the single student's p95)")
    print(f"CPU s for the {len(CLASS) - 1} changes: backend {cpu['backend']:.1f}, Streamlit {cpu['app']:.1f} "
          f"({1000 * cpu['app'] / updates:.0f} ms per follower's page update)")
    for e in errors[:3]:
        print("  error:", e)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--followers", type=int, default=21)
    ap.add_argument("--react", type=float, default=2.0, help="a follower acts within this many seconds")
    a = ap.parse_args(argv)
    if a.followers < 1 or a.react < 0:
        raise SystemExit(f"bad arguments: followers {a.followers} (>= 1), react {a.react} (>= 0)")
    print(f"# {a.followers} followers, react within {a.react:g} s; load {load_avg()} at start")
    asyncio.run(run(a.followers, a.react))
    print(f"(load average {load_avg()} after)")


if __name__ == "__main__":
    main()
