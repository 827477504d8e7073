"""First useful paint of the home page (attack lab) in Chromium, cold and warm.

A fresh `streamlit run app/main.py` server (in-process backend, warm-up and prewarm on as for a
user); then, from page.goto:
  title      - the page's h1 is visible (the skeleton is gone);
  useful     - the first top-5 probability bars are visible (the clean predictions, shown while the
               attack runs);
  complete   - every model's adversarial column is drawn (its 'L-inf 8.0/255 |' caption).
Visitor 1 meets a cold server (imports, model loads, the first attack); visitor 2 is a new browser
context (a new session) afterwards, served from the precomputed caches.

    python bench/first_paint.py
"""
from __future__ import annotations

import time

from appserver import app_server, chromium, load_avg, new_page, wait_idle


def visit(browser, base: str, n: int) -> dict:
    page = new_page(browser, 1440, 1100)
    t0 = time.perf_counter()
    page.goto(f"{base}/")
    out = {}
    page.get_by_role("heading", name="Attack lab", level=1).wait_for()
    out["title"] = time.perf_counter() - t0
    page.locator('[data-testid="stMain"] .rl-prob').first.wait_for()
    out["useful"] = time.perf_counter() - t0
    page.locator('[data-testid="stMain"]').get_by_text("L-inf 8.0/255 |", exact=False).nth(n - 1).wait_for()
    out["complete"] = time.perf_counter() - t0
    wait_idle(page, 0)
    page.context.close()
    return out


def main() -> None:
    from backend.core.checkpoints import default_root, list_checkpoints

    n = len(list_checkpoints(default_root()))
    print(f"# first paint, attack lab, {n} models, Chromium 1440x1100; load {load_avg()} at start")
    t = time.perf_counter()
    with app_server() as (base, log), chromium() as browser:
        up = time.perf_counter() - t
        v1 = visit(browser, base, n)
        time.sleep(2)
        v2 = visit(browser, base, n)
    print(f"\nserver up (health check answers): {up:.1f} s after launch\n")
    print("| visitor | title visible s | first top-5 bars s | all columns s |")
    print("|---|---|---|---|")
    for name, v in (("1: cold server", v1), ("2: new session, after visitor 1", v2)):
        print(f"| {name} | {v['title']:.2f} | {v['useful']:.2f} | {v['complete']:.2f} |")
    print(f"\nload {load_avg()} at end")


if __name__ == "__main__":
    main()
