"""Accuracy per core-hour: which network and training options get the most out of a CPU.

    python bench/cpu_recipe.py [--budget-core-s 240] [--threads 2] [--candidates NAME,...] [--methods ce,pgd_at]
        [--n-eval 1000] [--out DIR] [--data DIR]

Every candidate (an architecture, a width and training options) trains ce and pgd_at on CIFAR-10 for
the same budget of core-seconds, then is measured on the same 1,000 class-balanced test images: clean
accuracy and PGD-10 accuracy (L-inf 8/255, step 2/255, random start). The budget becomes a number of
training images per candidate and method: a calibration times a few real training steps (process CPU
time, so other processes on the machine do not count), and the run then trains that many images over
whole epochs of a balanced subset, with the candidate's own learning-rate schedule fitted to them.
The core-seconds printed are the training process's own CPU time, measured (`cpu_s` in the card).

One table, one run; the first candidate (the previous shipped recipe, ResNet-18 width 16 in fp32) is the
reference that the ratio columns divide by. Nothing is asserted. A short budget ranks recipes; it does
not predict the accuracy of a long run.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

from backend.core.runtime import quiet_openmp

quiet_openmp()  # before torch loads
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import make_step  # noqa: E402  (the bench folder's own helper)

from backend.core.checkpoints import load_checkpoint  # noqa: E402
from backend.core.data import load_split  # noqa: E402
from backend.eval.evaluate import evaluate_model  # noqa: E402
from backend.train.config import make_config  # noqa: E402
from backend.train.loop import RunOptions, train  # noqa: E402

TRAIN_IMAGES = 49000  # CIFAR-10's training split less the 1,000 held out
# name -> TrainConfig values (the "short" preset fills the rest). pgd_at uses PGD-2 with a 5/255 step in
# every candidate ("fewer but better attack steps"; the previous shipped recipe's PGD-3 at 3/255 is kept
# for the reference so that it stays what was shipped).
CANDIDATES: dict[str, dict] = {
    "r18-w16-fp32 (previous)": dict(arch="resnet18", width=16, batch_size=128, schedule="cosine", warmup_epochs=0.5,
                                    _pgd=dict(attack_steps=3, step_size=3 / 255)),
    "fast-w64-bf16+ls+ema+1cycle": dict(arch="fastnet", width=64, batch_size=128, schedule="onecycle",
                                        warmup_epochs=0.5, cpu_bf16=True, label_smoothing=0.2, ema=0.99),
    "fast-w64-bf16": dict(arch="fastnet", width=64, batch_size=128, schedule="cosine", warmup_epochs=0.5,
                          cpu_bf16=True),
    "r18-w32-bf16": dict(arch="resnet18", width=32, batch_size=128, schedule="cosine", warmup_epochs=0.5,
                         cpu_bf16=True),
    "r18-w16-bf16": dict(arch="resnet18", width=16, batch_size=128, schedule="cosine", warmup_epochs=0.5,
                         cpu_bf16=True),
}
# the default run leaves out r18-w16-bf16 (the same network as the reference: bf16's speed-up alone,
# which bench/train_throughput.py --cpu-bf16 shows in seconds)
DEFAULT = [c for c in CANDIDATES if c != "r18-w16-bf16"]
PGD_TRAIN = dict(attack_steps=2, step_size=5 / 255)


def config_for(name: str, method: str, images: int, data: str | None):
    """The TrainConfig of candidate `name` and `method` for a budget of `images` training images: the
    fewest whole epochs that hold them, each over a balanced subset of images / epochs (at most all 49,000)."""
    values = {k: v for k, v in CANDIDATES[name].items() if not k.startswith("_")}
    if method != "ce":
        values.update(CANDIDATES[name].get("_pgd", PGD_TRAIN))
    epochs = max(1, math.ceil(images / TRAIN_IMAGES))  # every candidate trains its whole budget of images
    subset = min(TRAIN_IMAGES, max(1000, images // epochs))
    return make_config("short", method=method, epochs=epochs, subset=0 if subset >= TRAIN_IMAGES else subset,
                       val_n=0, val_robust_n=0, data=data, log_every=50,
                       warmup_epochs=min(values.pop("warmup_epochs"), 0.5 * epochs), **values)


def per_image_cpu_s(cfg, steps: int = 6) -> float:
    """CPU seconds (all threads) per training image of cfg: the fastest of `steps` timed steps after two
    warm-up steps (the first ones build oneDNN's kernels). The fastest, not the median: on a shared machine
    a step that other processes disturbed costs more CPU time too (a median of five once read 35 ms for a
    step whose training then averaged 17 ms), and the budget would shrink for that candidate alone."""
    step = make_step(cfg, torch.device("cpu"))
    step()
    step()
    times = []
    for _ in range(steps):
        t = time.process_time()
        step()
        times.append(time.process_time() - t)
    return min(times) / cfg.batch_size


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-core-s", type=float, default=240.0, help="training CPU seconds per candidate and method")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--candidates", default=",".join(DEFAULT), help=f"of: {', '.join(CANDIDATES)}")
    ap.add_argument("--methods", default="ce,pgd_at")
    ap.add_argument("--n-eval", type=int, default=1000, help="class-balanced test images measured")
    ap.add_argument("--data", default=None, help="CIFAR-10 root (default: backend.core.data.resolve_root())")
    ap.add_argument("--out", type=Path, default=None, help="keep the checkpoints here (default: a temp folder)")
    args = ap.parse_args(argv)
    names = [c for c in args.candidates.split(",") if c]
    unknown = [c for c in names if c not in CANDIDATES]
    if unknown:
        ap.error(f"unknown candidates {unknown}; known: {', '.join(CANDIDATES)}")
    methods = [m for m in args.methods.split(",") if m]
    torch.set_num_threads(args.threads)
    out = args.out or Path(tempfile.mkdtemp(prefix="cpu_recipe-"))
    test = load_split(args.data, "test")
    print(f"# CPU {args.threads} threads, torch {torch.__version__}, budget {args.budget_core_s:.0f} core-s per run, "
          f"eval on {args.n_eval} balanced test images ({test.variant}), load average {os.getloadavg()[0]:.1f}",
          flush=True)
    rows = []
    for name in names:
        for method in methods:
            probe = config_for(name, method, 10 ** 6, args.data)
            cost = per_image_cpu_s(probe)
            images = int(args.budget_core_s / cost)
            cfg = config_for(name, method, images, args.data)
            run_id = f"{method}-{name.split(' ')[0]}".replace("+", "-").replace(".", "")
            folder = train(cfg, RunOptions(out=out / run_id, state_dir=out / "state" / run_id, threads=args.threads,
                                           save_every_min=0, progress_bar=False))
            loaded = load_checkpoint(folder)
            m = evaluate_model(loaded.model, test, n_clean=args.n_eval, n_pgd=args.n_eval, steps=10, seed=0)
            tr = loaded.card["training"]
            row = dict(candidate=name, method=method, epochs=cfg.epochs,
                       images=cfg.epochs * (cfg.subset or TRAIN_IMAGES), core_s=tr["cpu_s"], wall_s=tr["time_s"],
                       clean=m["clean"], pgd10=m["pgd10"],
                       ms_per_image=1000 * cost)
            rows.append(row)
            print(json.dumps(row), flush=True)
    ref = {r["method"]: r for r in rows if r["candidate"] == names[0]}
    print()
    print(f"{'candidate':<30}{'method':<8}{'ms/img':>8}{'images':>9}{'epochs':>7}{'core-s':>8}{'clean':>7}"
          f"{'PGD-10':>8}{'clean/ref':>10}{'PGD/ref':>9}")
    for r in rows:
        b = ref.get(r["method"])
        rc = f"{r['clean'] / b['clean']:.2f}x" if b and b["clean"] else "-"
        rp = f"{r['pgd10'] / b['pgd10']:.2f}x" if b and b["pgd10"] else "-"
        print(f"{r['candidate']:<30}{r['method']:<8}{r['ms_per_image']:>8.2f}{r['images']:>9}{r['epochs']:>7}"
              f"{r['core_s']:>8.0f}{r['clean']:>7.3f}{r['pgd10']:>8.3f}{rc:>10}{rp:>9}")
    print(f"# checkpoints in {out}")


if __name__ == "__main__":
    main()
