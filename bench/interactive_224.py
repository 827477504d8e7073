"""Interactive latency at ImageNet size on this machine: one 224-px image through a ResNet-50-size
model (torchvision resnet50, random weights: latency depends on the architecture, not the weights),
beside the app's usual model (our width-32 ResNet-18 at 32 px) measured in the same run.

    python bench/interactive_224.py [--repeat 3] [--threads N] [--steps 10 5 3]

Rows (median of --repeat calls, wall and process-CPU seconds), per model:
  - predict: one forward pass (inference mode);
  - PGD-k L-inf 8/255 for each k in --steps (backend.attacks.run_attack, random start);
  - Grad-CAM of the clean and the adversarial image: two calls vs one batched call of two images;
  - the attack lab's update = predict + PGD-k + the batched Grad-CAM pair, per k.
The ratio column is the 224-px model's time over the 32-px reference's in this run.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

from backend.core.runtime import quiet_openmp

quiet_openmp()  # before torch loads

import torch

from backend.attacks import AttackSpec, run_attack
from backend.core.archs import build_arch
from backend.core.data import sample_images
from backend.core.models import build_model, freeze
from backend.core.runtime import usable_cores
from backend.explain.saliency import attribute


def timed(fn, repeat: int) -> tuple[float, float]:
    wall, cpu = [], []
    fn()  # warm-up (allocator, first-call paths)
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def rows_for(model, x, y, steps_list, repeat):
    out = {}
    with torch.inference_mode():
        out["predict"] = timed(lambda: model(x), repeat)
    adv = {}
    for k in steps_list:
        spec = AttackSpec(method="pgd", eps=8 / 255, steps=k, random_start=True, seed=0)
        out[f"PGD-{k}"] = timed(lambda s=spec: adv.__setitem__(k, run_attack(model, x, y, s).x_adv), repeat)
    xa = adv[steps_list[0]]
    both = torch.cat([x, xa])
    out["Grad-CAM clean + adv, two calls"] = timed(
        lambda: (attribute(model, x, y, "gradcam"), attribute(model, xa, y, "gradcam")), repeat)
    out["Grad-CAM clean + adv, one batch"] = timed(lambda: attribute(model, both, y.repeat(2), "gradcam"), repeat)
    for k in steps_list:
        spec = AttackSpec(method="pgd", eps=8 / 255, steps=k, random_start=True, seed=0)

        def update(s=spec):
            with torch.inference_mode():
                model(x)
            xa2 = run_attack(model, x, y, s).x_adv
            attribute(model, torch.cat([x, xa2]), y.repeat(2), "gradcam")
        out[f"attack-lab update (predict + PGD-{k} + Grad-CAM pair)"] = timed(update, repeat)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: the usable cores)")
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 5, 3])
    a = ap.parse_args()
    torch.set_num_threads(a.threads or usable_cores())
    torch.manual_seed(0)
    big = freeze(build_arch("torchvision", {"name": "resnet50"}))
    small = freeze(build_model("resnet18", width=32, num_classes=10))
    inet, cifar = sample_images("imagenet"), sample_images("cifar10")
    xb = inet.images[:1].permute(0, 3, 1, 2).float() / 255
    xs = cifar.images[:1].permute(0, 3, 1, 2).float() / 255
    yb, ys = inet.labels[:1], cifar.labels[:1]
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {usable_cores()} usable cores, "
          f"load average {os.getloadavg()[0]:.1f}; repeat {a.repeat}")
    print(f"# 224 px: torchvision resnet50 ({sum(p.numel() for p in big.parameters()) / 1e6:.1f} M parameters), "
          f"foolbox ImageNet sample 0; 32 px: our ResNet-18 width 32, foolbox CIFAR-10 sample 0")
    r_big = rows_for(big, xb, yb, a.steps, a.repeat)
    r_small = rows_for(small, xs, ys, a.steps, a.repeat)
    print("\n| row | 224 px resnet50 wall s | CPU s | 32 px ResNet-18 w32 wall s | ratio (wall) |")
    print("|---|---|---|---|---|")
    for k, (w, c) in r_big.items():
        ws = r_small[k][0]
        print(f"| {k} | {w:.3f} | {c:.3f} | {ws:.3f} | {w / ws:.0f}x |")


if __name__ == "__main__":
    main()
