"""Interactive latency of the service on this machine, and our PGD against torchattacks' PGD.

    python bench/interactive.py [--checkpoints DIR] [--stand-ins] [--repeat 5] [--device cpu] [--threads N]

Models: the checkpoints in --checkpoints (default: the project's checkpoints/); when there are none,
or with --stand-ins, five randomly initialised width-32 stand-ins (one per method) are written to a
temporary folder and the output says so (latency depends on the architecture, not on the weights).
Rows, each the median of --repeat cold calls (the service's result caches are cleared before every
call; models stay loaded, as in the running app):
  - per model, one image: predict, PGD-10 attack, Integrated Gradients (32 steps), Grad-CAM;
  - all models: what the attack lab does per update, i.e. one `attack` call over every model (PGD-10 +
    clean/adversarial predictions + clean/adversarial saliency maps), with Grad-CAM and with IG-32
    maps; targets: <= 1 s on a 2-core CPU with width-32 models. Each is timed the service's way (on
    the CPU the models run side by side, one thread each: Engine.per_model) and one model after
    another (ROBUSTLENS_MODEL_PARALLEL=0), alternating, with the ratio; the same two ways for the
    Feature lens (L2 6, 60 steps toward a class, every model);
  - UMAP fit on N=2000 feature vectors and transform of N=100 (after umap's JIT warm-up, reported
    on its own row);
  - PGD-10 (L-inf 8/255, step 2/255, random start) on a 256-image batch: images/s of
    backend.attacks.run_attack and of torchattacks.PGD on the same model and batch, measured
    interleaved in this run; the ratio is ours / torchattacks (target >= 1.0x).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from backend.core.runtime import quiet_openmp

quiet_openmp()  # before torch loads

import torch

from backend.core.runtime import usable_cores
from backend.train.registry import ZOO

STAND_INS = ZOO  # one random-init stand-in per shipped method (backend.train.registry)
PGD10 = {"method": "pgd", "norm": "linf", "eps": 8 / 255, "step_size": 2 / 255, "steps": 10, "random_start": True}


def write_stand_ins(root: Path, width: int = 32) -> None:
    """Random-init ResNet-18 checkpoints, one per method (seeded)."""
    from backend.core.checkpoints import new_card, save_checkpoint
    from backend.core.data import CIFAR10_CLASSES
    from backend.core.models import build_model

    for i, method in enumerate(STAND_INS):
        torch.manual_seed(i)
        card = new_card(f"standin-{method}", method, "resnet18", width, list(CIFAR10_CLASSES),
                        display_name=f"random-init stand-in ({method})", data_variant="none",
                        status="benchmark")
        save_checkpoint(build_model("resnet18", width=width), card, root / card["id"])


def median_s(fn, repeat: int, before=None) -> tuple[float, float]:
    """Median wall-clock and process-CPU seconds of fn(i) for i < repeat. CPU time is the sum over
    threads: on a busy shared machine the wall time inflates, CPU time much less so."""
    wall, cpu = [], []
    for i in range(repeat):
        if before is not None:
            before()
        t0, c0 = time.perf_counter(), time.process_time()
        fn(i)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def ms(t: tuple[float, float]) -> tuple[str, str]:
    return f"{t[0] * 1e3:.0f} ms", f"{t[1] * 1e3:.0f} ms"


def images(n: int, seed: int = 0):
    """(x (n,3,32,32) in [0,1], y (n,), description): CIFAR-10 test images when found, else random."""
    try:
        from backend.core.data import balanced_indices, load_split

        split = load_split(split="test")
        idx = balanced_indices(split.labels, n, seed)
        return split.float_images(idx), split.labels[idx], f"CIFAR-10 test ({split.variant})"
    except Exception as e:  # no data on this machine: random images time the same
        g = torch.Generator().manual_seed(seed)
        return torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g), \
            f"uniform random ({type(e).__name__})"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoints", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--umap-n", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: the service's, all cores)")
    ap.add_argument("--stand-ins", action="store_true", help="time width-32 random-init stand-ins even when "
                    "checkpoints exist (the latency targets are stated for width-32 models)")
    args = ap.parse_args(argv)

    from backend import attacks
    from backend.core.checkpoints import default_root, list_checkpoints
    from backend.explain import embed
    from backend.service import Service

    root = args.checkpoints or default_root()
    tmp = None
    if args.stand_ins or not list_checkpoints(root):
        tmp = tempfile.TemporaryDirectory(prefix="robustlens-bench-")
        root = Path(tmp.name)
        write_stand_ins(root)
    svc = Service(root, device=args.device, threads=args.threads)
    ids = [c["id"] for c in svc.list_models()]
    widths = sorted({int(c["width"]) for c in svc.list_models()})
    cores = usable_cores()
    why = "--stand-ins" if args.stand_ins else "no shipped checkpoints"
    src = f"STAND-INS (random-init width-32, written to a temp folder: {why})" if tmp else root
    print(f"# models: {len(ids)} from {src}: {', '.join(ids)}")
    print(f"# OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    print(f"# widths {widths}; device {svc.device}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {cores} cores")
    r = args.repeat
    img = lambda i: f"samples:{i % 20}"  # noqa: E731
    rows: list[tuple[str, ...]] = []
    load0 = os.getloadavg()[0]

    for mid in ids:  # warm-up: load weights, import captum, first-call allocations
        svc.attack(img(0), PGD10, [mid], saliency="integrated_gradients")
        svc.explain(img(0), mid, "gradcam")
    for mid in ids:
        one = [mid]
        rows += [
            (f"predict [{mid}]", "1 image", *ms(median_s(lambda i: svc.predict(img(i), one), r, svc.clear_caches))),
            (f"PGD-10 [{mid}]", "1 image",
             *ms(median_s(lambda i: svc.attack(img(i), PGD10, one), r, svc.clear_caches))),
            (f"IG-32 [{mid}]", "1 image", *ms(median_s(lambda i: svc.explain(
                img(i), mid, "integrated_gradients", params={"ig_steps": 32}), r, svc.clear_caches))),
            (f"Grad-CAM [{mid}]", "1 image", *ms(median_s(lambda i: svc.explain(img(i), mid, "gradcam"), r,
                                                          svc.clear_caches))),
        ]
    svc.feature_lens(img(0), 3, None, None, 60, "l2")  # warm-up
    default_sal = (svc.limits().get("saliency") or {}).get("default")  # what the attack lab opens with
    sals = list(dict.fromkeys(s for s in (default_sal, "gradcam", "integrated_gradients") if s))
    views = [(f"attack lab grid: PGD-10 + preds + {sal} maps" + (" (the page's default)" if sal == default_sal else ""),
              True, lambda i, sal=sal: svc.attack(img(i), PGD10, None, saliency=sal))
             for sal in sals]
    views.append(("feature lens: L2 6, 60 steps toward a class", False,
                  lambda i: svc.feature_lens(img(i), 3, None, None, 60, "l2")))
    for name, target, view in views:
        # the service's way (models side by side on the CPU, Engine.per_model) and one model after
        # another (ROBUSTLENS_MODEL_PARALLEL=0), alternating within each repeat so both see the same load
        both: dict[str, list[tuple[float, float]]] = {"1": [], "0": []}
        for i in range(r):
            for way in both:
                os.environ["ROBUSTLENS_MODEL_PARALLEL"] = way
                both[way].append(median_s(lambda _: view(i), 1, svc.clear_caches))
        os.environ.pop("ROBUSTLENS_MODEL_PARALLEL")
        side, seq = ((statistics.median(t[0] for t in v), statistics.median(t[1] for t in v))
                     for v in both.values())
        rows.append((name, f"{len(ids)} models", *ms(side),
                     ("meets <= 1 s" if side[0] <= 1.0 else "MISSES <= 1 s") if target else ""))
        rows.append(("  the same, one model after another (ROBUSTLENS_MODEL_PARALLEL=0)", f"{len(ids)} models",
                     *ms(seq), f"side by side {seq[0] / side[0]:.2f}x faster"))
    rows.append(("predict, all models", f"{len(ids)} models",
                 *ms(median_s(lambda i: svc.predict(img(i)), r, svc.clear_caches))))

    # UMAP: features of the first model on N images
    x, y, what = images(max(args.umap_n, 256))
    model = svc.models.model(ids[0])
    feats = embed.extract_features(model, x[:args.umap_n].to(svc.device))
    t0 = time.perf_counter()
    embed.warm_up()
    rows.append(("umap import + JIT warm-up (once per process)", "64 points", f"{time.perf_counter() - t0:.1f} s", ""))
    emb = embed.Embedder("umap", seed=0)
    t = median_s(lambda i: emb.fit(feats), 1)
    rows.append((f"UMAP fit ({what})", f"N={len(feats)}", f"{t[0]:.2f} s", f"{t[1]:.2f} s"))
    rows.append(("UMAP transform", "N=100", *ms(median_s(lambda i: emb.transform(feats[:100]), r))))

    # PGD-10 throughput: ours vs torchattacks, same model, same 256-image batch, interleaved
    import torchattacks

    xb, yb = x[:256].to(svc.device), y[:256].to(svc.device)
    spec = attacks.AttackSpec.from_dict(PGD10)
    ta = torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=10, random_start=True)
    attacks.run_attack(model, xb[:8], yb[:8], spec)
    ta(xb[:8], yb[:8])
    def ta_same_outputs(i):
        """torchattacks plus the clean and adversarial forward passes that give run_attack's outputs."""
        with torch.no_grad():
            model(xb)
        xa = ta(xb, yb)
        with torch.no_grad():
            model(xa)

    runs = {"ours": [], "ta": [], "ta+": []}
    for _ in range(max(3, r // 2 + 1)):  # interleaved, so load changes hit all three alike
        runs["ours"].append(median_s(lambda i: attacks.run_attack(model, xb, yb, spec), 1))
        runs["ta"].append(median_s(lambda i: ta(xb, yb), 1))
        runs["ta+"].append(median_s(ta_same_outputs, 1))
    rate = {k: (256 / statistics.median(v[0] for v in vs), 256 / statistics.median(v[1] for v in vs))
            for k, vs in runs.items()}
    o, t, tp = rate["ours"], rate["ta"], rate["ta+"]
    rows.append((f"PGD-10 ours (run_attack) [{ids[0]}]", "256 images", f"{o[0]:.0f} img/s", f"{o[1]:.0f} img/CPU-s"))
    rows.append((f"PGD-10 torchattacks.PGD [{ids[0]}]", "256 images", f"{t[0]:.0f} img/s", f"{t[1]:.0f} img/CPU-s"))
    rows.append(("PGD-10 ratio ours / torchattacks", "", f"{o[0] / t[0]:.2f}x", f"{o[1] / t[1]:.2f}x",
                 "meets >= 1.0x" if o[0] / t[0] >= 1.0 else "MISSES >= 1.0x"))
    rows.append(("  same outputs: ours / (torchattacks + clean & adv forward)", "", f"{o[0] / tp[0]:.2f}x",
                 f"{o[1] / tp[1]:.2f}x"))

    print(f"# load average (1 min) at start {load0:.1f}, at end {os.getloadavg()[0]:.1f} on {cores} cores: "
          "wall times are only meaningful when it is well below the core count")
    rows.insert(0, ("measurement", "input", f"wall (median of {r})", "process CPU", "target"))
    rows = [row + ("",) * (5 - len(row)) for row in rows]
    w = [max(len(row[i]) for row in rows) for i in range(5)]
    for k, row in enumerate(rows):
        print(" | ".join(c.ljust(w[i]) for i, c in enumerate(row)).rstrip())
        if k == 0:
            print("-|-".join("-" * n for n in w))
    svc.close()
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
