"""Why an attack-lab update waits for many background batches, not one (bench/fair_share.py): a
reproduction on backend.service.flight.FairLock alone, no models.

A background thread holds the lock in units of --unit seconds (like a robustness curve's batches)
and re-queues at once after each. A foreground request makes --acquisitions short sequential
acquisitions (like Service.attack over five models: adversarial image, saliency, ... per model).
Printed: the foreground request's time with the background idle and busy, and how many units it
waited for. If the lock hands over to the waiting background thread between the foreground's
acquisitions, the busy time is about acquisitions x unit instead of at most one unit.

    python bench/fair_lock_handover.py [--unit 0.5] [--acquisitions 10]
"""
from __future__ import annotations

import argparse
import threading
import time

from backend.service import flight


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--unit", type=float, default=0.5, help="seconds per background unit")
    ap.add_argument("--acquisitions", type=int, default=10)
    ap.add_argument("--work", type=float, default=0.01, help="seconds of foreground work per acquisition")
    ap.add_argument("--gap", type=float, default=0.005,
                    help="seconds of foreground work between acquisitions, outside the lock (building results)")
    a = ap.parse_args()
    lock = flight.FairLock()
    units, stop = [0], threading.Event()

    def foreground() -> float:
        t = time.perf_counter()
        with flight.scope(flight.INTERACTIVE, "user-b"):
            for _ in range(a.acquisitions):
                with lock:
                    time.sleep(a.work)
                time.sleep(a.gap)
        return time.perf_counter() - t

    idle = foreground()

    def background():
        with flight.scope(flight.BACKGROUND, "user-a"):
            while not stop.is_set():
                with lock:
                    time.sleep(a.unit)
                    units[0] += 1

    th = threading.Thread(target=background, daemon=True)
    th.start()
    time.sleep(a.unit / 2)
    before = units[0]
    busy = foreground()
    waited = units[0] - before
    stop.set()
    th.join()
    print(f"| foreground: {a.acquisitions} acquisitions x {a.work * 1000:.0f} ms, {a.gap * 1000:.0f} ms apart "
          "| seconds |"
          "\n|---|---|")
    print(f"| background idle | {idle:.2f} |")
    print(f"| background busy ({a.unit:.2f} s units) | {busy:.2f} |")
    print(f"| background units completed meanwhile | {waited} (at most 1 would be 'one batch') |")


if __name__ == "__main__":
    main()
