"""Background work in the app vs the same service calls made directly, measured in the same run.

In-app: a real `streamlit run app/main.py` server started from the repository root (so the
project's .streamlit/config.toml applies: runner.postScriptGC = false) with the in-process backend,
driven by Chromium through Playwright: from the click on the page's button to every result drawn
(the polling fragment reruns alone, as for a user). Direct: a Service in this process (its own
caches, warmed the same way), calling the same methods with the same arguments. Runs alternate
app / direct with fresh seeds or targets, so no result comes from a cache and load drift hits both.

Workloads (the issue 14 cases):
  embed  - embedding explorer, one model (ce), N=500 test images, FGSM 8/255, UMAP;
  curve  - robustness curve, ce + pgd_at, PGD-5, eps 0/4/8 (k/255), N=100 test images;
  lens   - feature lens: targeted lens (40 steps, eps 16/255) + class visualisation (100 steps),
           every installed model (the in-app time covers both: the page runs them back to back).

    python bench/app_vs_direct.py [--repeats 2] [--only embed curve lens] [--gc-control]

--gc-control also runs the embed workload once on a server started with --runner.postScriptGC true
(Streamlit's default, the cause of issue 14's slowdown), capped at --cap seconds.
Chromium renders on the same CPU that computes, so the in-app numbers include the browser's cost.
"""
from __future__ import annotations

import argparse
import statistics
import time

from appserver import app_server, chromium, load_avg, new_page, wait_idle

PROGRESS_GONE = "!document.querySelector('[data-testid=\"stProgress\"]')"


def _done_js(kind: str, n_models: int) -> str:
    if kind == "embed":
        cond = f"document.querySelectorAll('[data-testid=\"stPlotlyChart\"] .scatterlayer').length >= {n_models}"
    elif kind == "curve":
        cond = "document.querySelectorAll('[data-testid=\"stPlotlyChart\"]').length >= 1"
    else:
        cond = f"(document.body.innerText.split('from noise: p=').length - 1) >= {n_models}"
    return f"() => {cond} && {PROGRESS_GONE}"


class Workloads:
    def __init__(self, ids: list[str], image_id: str):
        self.ids, self.image_id = ids, image_id

    def url(self, kind: str, i: int) -> tuple[str, str, int]:
        """(page path with query, button label, models drawn) for repetition i (its seed / target)."""
        if kind == "embed":
            return (f"embeddings?models=ce&emb_src=test&emb_n=500&emb_attack=fgsm&emb_eps=8&emb_seed={i}",
                    "Compute maps", 1)
        if kind == "curve":
            return (f"robustness?models=ce,pgd_at&rob_methods=pgd&rob_eps=0,4,8&rob_n=100&rob_steps=5&rob_src=test"
                    f"&rob_seed={i}", "Run", 2)
        return (f"feature_lens?image={self.image_id}&lens_target={i % 10}&lens_eps=16&lens_steps=40"
                f"&lens_vis_steps=100", "Run the lens", len(self.ids))

    def direct(self, svc, kind: str, i: int) -> None:
        if kind == "embed":
            svc.embed("ce", n=500, spec={"method": "fgsm", "norm": "linf", "eps": 8 / 255.0}, method="umap",
                      seed=i, source="test")
        elif kind == "curve":
            svc.robustness_curve(model_ids=["ce", "pgd_at"], method="pgd", eps_list=[0.0, 4 / 255, 8 / 255],
                                 n=100, steps=5, source="test", seed=i)
        else:
            svc.feature_lens(self.image_id, i % 10, self.ids, eps=16 / 255.0, steps=40)
            svc.class_visualisation(i % 10, self.ids, steps=100, seed=0)


def run_app(page, base: str, w: Workloads, kind: str, i: int, cap_s: float | None = None) -> float | None:
    path, button, n_models = w.url(kind, i)
    page.goto(f"{base}/{path}")
    btn = page.get_by_role("button", name=button, exact=True)
    btn.wait_for()
    wait_idle(page)
    t = time.perf_counter()
    btn.click()
    page.wait_for_timeout(150)  # let the click's rerun start
    try:
        page.wait_for_function(_done_js(kind, n_models), polling=50,
                               timeout=None if cap_s is None else cap_s * 1000)
        wait_idle(page, 0)
    except Exception:
        if cap_s is None:
            raise
        return None
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--only", nargs="*", default=["embed", "curve", "lens"], choices=["embed", "curve", "lens"])
    ap.add_argument("--gc-control", action="store_true")
    ap.add_argument("--cap", type=float, default=180.0)
    a = ap.parse_args()

    from app.session import honesty
    from backend.service import Service

    svc = Service()
    cards = svc.list_models()
    ids = [c["id"] for c in cards]
    if not {"ce", "pgd_at"} <= set(ids):
        raise SystemExit("needs the shipped checkpoints ce and pgd_at in checkpoints/")
    items = svc.list_images("samples", None, 0, 20)["items"]
    probs = {m: [list(svc.predict(it["image_id"], [m])["results"][m]["probs"]) for it in items] for m in ids}
    image_id = honesty.default_sample([it["image_id"] for it in items], [it["label"] for it in items], probs)
    w = Workloads(ids, image_id)
    print(f"# in-app (streamlit server + Chromium) vs direct (Service in this process); {len(ids)} models; "
          f"load {load_avg()} at start")
    rows = {k: {"app": [], "direct": []} for k in a.only}
    with app_server() as (base, log), chromium() as browser:
        page = new_page(browser)
        for kind in a.only:  # warm both: models, data decode, UMAP JIT
            run_app(page, base, w, kind, 100)
            w.direct(svc, kind, 100)
        for i in range(1, 1 + a.repeats):
            for kind in a.only:
                rows[kind]["app"].append(run_app(page, base, w, kind, i))
                t = time.perf_counter()
                w.direct(svc, kind, i)
                rows[kind]["direct"].append(time.perf_counter() - t)
                print(f"  {kind} #{i}: app {rows[kind]['app'][-1]:.2f} s, direct {rows[kind]['direct'][-1]:.2f} s "
                      f"(load {load_avg()})", flush=True)
    control = None
    if a.gc_control and "embed" in a.only:
        with app_server(["--runner.postScriptGC", "true"]) as (base, log), chromium() as browser:
            page = new_page(browser)
            run_app(page, base, w, "embed", 100, cap_s=a.cap)  # warm
            control = run_app(page, base, w, "embed", 50, cap_s=a.cap)
            t = time.perf_counter()
            w.direct(svc, "embed", 50)
            control = (control, time.perf_counter() - t)
    names = {"embed": "embed: ce, N=500, FGSM 8/255, UMAP", "curve": "curve: ce+pgd_at, PGD-5, eps 0/4/8, N=100",
             "lens": f"lens + class visualisation, {len(ids)} models, 40 + 100 steps"}
    print(f"\n| {'workload':<52} | {'in-app s (median)':>17} | {'direct s (median)':>17} | {'app/direct':>10} "
          "| goal <=1.3")
    print(f"|{'-' * 54}|{'-' * 19}|{'-' * 19}|{'-' * 12}|-----------")
    for kind in a.only:
        app_s, dir_s = statistics.median(rows[kind]["app"]), statistics.median(rows[kind]["direct"])
        r = app_s / dir_s
        print(f"| {names[kind]:<52} | {app_s:>17.2f} | {dir_s:>17.2f} | {r:>10.2f} | {'ok' if r <= 1.3 else 'MISS'}")
    if control is not None:
        app_s, dir_s = control
        txt = f"> {a.cap:.0f}" if app_s is None else f"{app_s:.2f}"
        ratio = f"> {a.cap / dir_s:.1f}" if app_s is None else f"{app_s / dir_s:.2f}"
        print(f"| {'control: embed with runner.postScriptGC = true':<52} | {txt:>17} | {dir_s:>17.2f} | {ratio:>10} | "
              "(Streamlit's default)")
    print(f"\nruns per cell: {a.repeats}; load {load_avg()} at end")


if __name__ == "__main__":
    main()
