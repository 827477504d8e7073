"""Fair sharing seen from the app: while one browser runs a long robustness curve, how long does
another browser's attack lab take to update, against the same update with nothing else running?

One `streamlit run app/main.py` server (in-process backend), two Chromium contexts (two sessions).
Browser B opens the attack lab (every installed model, PGD-10 8/255, gradient saliency) and moves
the eps slider one step at a time (each value new: computed, not cached), timing key press -> every
column redrawn. First with nothing else running (idle: eps 7, 6, ... down), then while browser A runs
a PGD curve (every model, PGD-10, 11 eps values, N=200: minutes of background batches; eps 9, 10, ...
up), then idle again after A cancelled it (the next values up), so a change in the machine's other
load during the run shows as a difference between the two idle phases. The goal (issue 14): busy <=
2x idle.

    python bench/fair_share.py [--steps 3]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import time

from appserver import REPO, app_server, chromium, load_avg, new_page, wait_idle


def lab_update(page, eps: int, n_models: int, key: str = "ArrowLeft") -> float:
    """Press `key` on the eps slider (ArrowLeft: eps+1 -> eps; ArrowRight: eps-1 -> eps) and time until
    all n_models columns show 'L-inf eps.0/255' and the page is idle."""
    main = page.locator('[data-testid="stMain"]')
    thumb = main.get_by_role("slider").first
    thumb.focus()
    t = time.perf_counter()
    thumb.press(key)
    page.wait_for_function(
        f"() => (document.querySelector('[data-testid=\"stMain\"]').innerText.split('L-inf {eps}.0/255 |').length - 1)"
        f" >= {n_models}", polling=50)
    wait_idle(page, 0)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3, help="slider steps measured idle, and again busy")
    a = ap.parse_args()
    from backend.core.checkpoints import default_root, list_checkpoints

    n = len(list_checkpoints(default_root()))
    head = subprocess.run(["git", "log", "--oneline", "-1"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--short", "backend/"], cwd=REPO, capture_output=True,
                           text=True).stdout.split()
    print(f"# fair sharing, {n} models; HEAD {head}; uncommitted backend files: {dirty[1::2] or 'none'}; "
          f"load {load_avg()} at start")
    # warm-up off: the app's background warm-up (UMAP's JIT compile, ~a minute of CPU) would load the machine
    # during the first idle phase only (seen: idle 5.2 s before the curve, 1.2 s after it)
    with app_server(env={"ROBUSTLENS_WARM_UP": "0"}) as (base, log), chromium() as browser:
        b = new_page(browser)
        b.goto(f"{base}/")
        b.locator('[data-testid="stMain"]').get_by_text("L-inf 8.0/255 |", exact=False).nth(n - 1).wait_for()
        wait_idle(b)
        eps = 8
        idle = []
        for _ in range(min(a.steps, 7)):
            eps -= 1
            idle.append(lab_update(b, eps, n))
            print(f"  idle: eps {eps}: {idle[-1]:.2f} s", flush=True)
        for _ in range(8 - eps):  # back to 8 (cached values: not measured)
            eps += 1
            lab_update(b, eps, n, "ArrowRight")
        a_page = new_page(browser)
        a_page.goto(f"{base}/robustness?rob_methods=pgd&rob_eps=1,2,3,4,6,8,10,12,16,24,32&rob_n=200&rob_steps=10"
                    f"&rob_src=test&rob_seed=7")
        a_page.get_by_role("button", name="Run", exact=True).click()
        a_page.locator('[data-testid="stProgress"]').first.wait_for()
        a_page.wait_for_timeout(3000)  # the curve's batches are under way
        busy = []
        for _ in range(a.steps):
            eps += 1
            busy.append(lab_update(b, eps, n, "ArrowRight"))
            prog = a_page.locator('[data-testid="stProgress"]').first
            still = prog.count() > 0
            print(f"  busy: eps {eps}: {busy[-1]:.2f} s (curve still running: {still}; "
                  f"{prog.inner_text() if still else ''})", flush=True)
        running = a_page.locator('[data-testid="stProgress"]').count() > 0
        if running:
            t = time.perf_counter()
            a_page.get_by_role("button", name="Cancel").click()
            a_page.get_by_text("Cancelled", exact=False).first.wait_for()
            cancel_s = time.perf_counter() - t
        else:
            cancel_s = None
        wait_idle(b)
        after = []
        for _ in range(a.steps):
            eps += 1
            after.append(lab_update(b, eps, n, "ArrowRight"))
            print(f"  idle again: eps {eps}: {after[-1]:.2f} s", flush=True)
    i, bz = statistics.median(idle + after), statistics.median(busy)
    print(f"\n| measurement (attack lab, {n} models, PGD-10 + gradient saliency, new eps) | seconds (median) |")
    print("|---|---|")
    print(f"| idle: nothing else running (before / after the curve: {statistics.median(idle):.2f} / "
          f"{statistics.median(after):.2f}) | {i:.2f} |")
    print(f"| busy: another session's PGD curve running | {bz:.2f} |")
    print(f"| busy / idle (goal <= 2) | {bz / i:.2f} {'ok' if bz / i <= 2 else 'MISS'} |")
    print(f"| the curve was still running at the end | {running} |")
    if cancel_s is not None:
        print(f"| cancel click -> 'Cancelled' shown | {cancel_s:.2f} |")
    print(f"\nsteps per cell: {a.steps}; load {load_avg()} at end")


if __name__ == "__main__":
    main()
