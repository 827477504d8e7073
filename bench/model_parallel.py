"""Several models' one-image attacks: one after another (as the service runs them now) or side by side.

    python bench/model_parallel.py [--checkpoints checkpoints] [--models ce pgd_at ...] [--steps 10]
                                   [--repeat 5]

The attack lab's update runs PGD on one image for every chosen model, one model after another, each
step a batch-1 forward and backward pass using all the process's intra-op threads. A batch-1 pass of a
small network spreads poorly over threads, so this measures, on the same models and image in one run:
  - sequential, T intra-op threads (T = the usable cores: what the service does);
  - sequential, 1 intra-op thread;
  - side by side: one Python thread per model, 1 intra-op thread each (torch releases the GIL in its
    kernels), at most T at a time;
and prints each one's wall time (median of --repeat, the three alternating within each repeat so they
see the same load) and its ratio to the first. The work is backend.attacks.run_attack's PGD (L-inf
8/255, step 2/255, random start, --steps steps) on the same seeded noise image for every model; the
adversarial images of all three ways are checked to be identical (the work is the same, only the
scheduling differs). This study led to the service's side-by-side path (Engine.per_model: the attack
lab's whitebox attacks and the saliency studio's maps, one thread per model under one shared
acquisition of the device lock); bench/interactive.py times that path against one model after another.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from backend.attacks import AttackSpec, run_attack
from backend.core.checkpoints import list_checkpoints, load_checkpoint
from backend.core.runtime import usable_cores


def attack_all(models: list, x: torch.Tensor, spec: AttackSpec, workers: int) -> list[torch.Tensor]:
    """Each model's adversarial image of x, sequentially (workers=0) or on `workers` Python threads."""
    y = torch.zeros(1, dtype=torch.long)

    def one(m):
        return run_attack(m, x, y, spec).x_adv

    if workers == 0:
        return [one(m) for m in models]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, models))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoints", type=Path, default=Path("checkpoints"))
    ap.add_argument("--models", nargs="*", default=None, help="model ids (default: every checkpoint there)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args(argv)
    ids = a.models or [c["id"] for c in list_checkpoints(a.checkpoints)]
    if not ids:
        ap.error(f"no checkpoints in {a.checkpoints}")
    models = [load_checkpoint(a.checkpoints / m).model for m in ids]
    cores = usable_cores()
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    spec = AttackSpec(method="pgd", norm="linf", eps=8 / 255, step_size=2 / 255, steps=a.steps,
                      random_start=True, seed=0)
    ways = {f"sequential, {cores} intra-op threads (the service)": (cores, 0),
            "sequential, 1 intra-op thread": (1, 0),
            f"side by side: a thread per model (at most {cores}), 1 intra-op thread each": (1, cores)}
    times: dict[str, list[float]] = {w: [] for w in ways}
    outs = {}
    for r in range(a.repeat + 1):  # the first round warms every path up and is not timed
        for w, (threads, workers) in ways.items():
            torch.set_num_threads(threads)
            t = time.perf_counter()
            outs[w] = attack_all(models, x, spec, workers)
            if r:
                times[w].append(time.perf_counter() - t)
    same = all(torch.equal(p, q) for w in ways for p, q in zip(outs[w], outs[next(iter(ways))]))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# {len(ids)} models ({', '.join(ids)}), PGD-{a.steps} on one 32-px image each; {cores} usable cores; "
          f"torch {torch.__version__}; load average (1 min) {load:.1f}; median of {a.repeat}")
    print(f"# adversarial images identical across the three ways: {same}")
    ref = statistics.median(times[next(iter(ways))])
    print(f"{'way':78} | {'wall':>8} | ratio")
    print(f"{'-' * 78}-|-{'-' * 8}-|------")
    for w, ts in times.items():
        med = statistics.median(ts)
        print(f"{w:78} | {1000 * med:6.0f} ms | {ref / med:.2f}x")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
