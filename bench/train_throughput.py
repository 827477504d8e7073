"""Training throughput per method: images/s of full training steps (views, attack, forward,
backward, SGD step) on random uint8 images, plus each method's step cost relative to pgd_at.

    python bench/train_throughput.py --width 16 --batch 64 [--arch fastnet] [--cpu-bf16] [--attack-steps 10]
        [--device cpu|cuda] [--methods ce,pgd_at,...] [--warmup 1] [--steps 3] [--threads N] [--compile]

CUDA timings use CUDA events (bf16 autocast, channels-last, as in training); CPU timings use
perf_counter. Methods are timed round-robin and img/s comes from each method's fastest step (the
least disturbed by other processes); the median is printed beside it. Nothing is asserted.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

from backend.core.runtime import quiet_openmp

quiet_openmp()  # before torch loads
import torch

from backend.core import archs
from backend.core.archs_meta import WIDTHS
from backend.core.runtime import usable_cores
from backend.train import registry
from backend.train.config import make_config
from backend.train.loop import model_args, precision
from backend.train.registry import CONTRASTIVE, METHODS
from backend.train.steps import Nets, StepContext, TrainNet


def make_step(cfg, device: torch.device, compile_net: bool = False):
    """A closure running one full training step of cfg.method (cfg's architecture, width, batch size,
    attack steps, precision) on a fixed random batch, set up as backend.train.loop does."""
    torch.manual_seed(0)
    args = model_args(cfg, 10, 32)
    contrastive = cfg.method in CONTRASTIVE
    model = archs.build_arch(cfg.arch, args, head=contrastive, head_bn=cfg.head_bn).to(device)
    autocast, channels_last = precision(cfg, device)  # as the trainer decides it
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if contrastive:
        model.classifier.requires_grad_(False)
    core = TrainNet(model, channels_last=channels_last)
    fwd = torch.compile(core) if compile_net else core
    nets = Nets(fwd, fwd, core)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9,
                          weight_decay=5e-4)
    ctx = StepContext(cfg, torch.Generator().manual_seed(1), torch.Generator(device=device).manual_seed(2),
                      autocast, lambda: False)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (cfg.batch_size, 3, 32, 32), dtype=torch.uint8, generator=g).to(device)
    y = torch.randint(0, 10, (cfg.batch_size,), generator=g).to(device)
    model.train()

    def step():
        loss = registry.get(cfg.method).loss(nets, x, y, ctx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def timed(step, device: torch.device) -> float:
    """Seconds for one step (CUDA events on GPU, perf_counter on CPU)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1000
    t = time.perf_counter()
    step()
    return time.perf_counter() - t


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet18", help="a registered architecture (resnet18, fastnet, ...)")
    ap.add_argument("--width", type=int, default=16, choices=WIDTHS)
    ap.add_argument("--cpu-bf16", action="store_true", help="bf16 autocast and channels-last on the CPU")
    ap.add_argument("--compare-fp32", action="store_true",
                    help="with --cpu-bf16: also time fp32 steps, alternating with the bf16 ones, and print the ratio")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--attack-steps", type=int, default=10)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=usable_cores())
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        ap.error(f"unknown methods {bad}; known: {', '.join(METHODS)}")
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
        where = f"CPU, {torch.get_num_threads()} threads"
    else:
        torch.backends.cudnn.benchmark = True
        where = torch.cuda.get_device_name(device)
    precision = " bf16" if args.cpu_bf16 else ""
    print(f"# {where}; {args.arch} width {args.width}{precision}, batch {args.batch}, PGD steps {args.attack_steps} "
          f"(fgsm_rs: 1), {args.warmup} warm-up + {args.steps} timed steps each, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.1f}")
    steps = {m: make_step(make_config("full", method=m, arch=args.arch, width=args.width, batch_size=args.batch,
                                      attack_steps=args.attack_steps, cpu_bf16=args.cpu_bf16), device, args.compile)
             for m in methods}
    for _ in range(args.warmup):
        for m in methods:
            steps[m]()
    # Round-robin (one step of each method per round), so that load from other processes on a
    # shared machine hits every method alike; the minimum is the least-disturbed step.
    times = {m: [] for m in methods}
    for _ in range(args.steps):
        for m in methods:
            times[m].append(timed(steps[m], device))
    best = {m: min(t) for m, t in times.items()}
    ref = best.get("pgd_at")
    print(f"{'method':<10}{'min s/step':>12}{'median':>10}{'img/s':>10}{'vs pgd_at':>11}")
    for m in methods:
        rel = f"{best[m] / ref:.2f}x" if ref else "-"
        print(f"{m:<10}{best[m]:>12.3f}{statistics.median(times[m]):>10.3f}{args.batch / best[m]:>10.1f}{rel:>11}")
    if ref and "rsupcon" in best:
        # passes per image, a forward-only pass counted as a third of a forward-and-backward one: pgd_at k attack
        # steps + 1 training pass; rsupcon the clean views' forward (3 views), k steps on 2 attacked views, and a
        # training pass on 3 views (RSUPCON.md)
        k = args.attack_steps
        expected = (1 + 2 * k + 3) / (k + 1)
        print(f"rsupcon step / pgd_at step = {best['rsupcon'] / ref:.2f} (expected about {expected:.2f} from the "
              f"passes per image: {1 + 2 * k + 3} for rsupcon, {k + 1} for pgd_at)")
    if args.compare_fp32 and args.cpu_bf16 and device.type == "cpu":
        # the same steps in fp32 (no autocast, contiguous), timed in the same rounds' manner: bf16's speed-up
        fp32 = {m: make_step(make_config("full", method=m, arch=args.arch, width=args.width, batch_size=args.batch,
                                         attack_steps=args.attack_steps), device) for m in methods}
        t32: dict[str, list[float]] = {m: [] for m in methods}
        t16: dict[str, list[float]] = {m: [] for m in methods}
        for m in methods:
            fp32[m]()
        for _ in range(args.steps):
            for m in methods:
                t32[m].append(timed(fp32[m], device))
                t16[m].append(timed(steps[m], device))
        print(f"{'method':<10}{'fp32 img/s':>12}{'bf16 img/s':>12}{'bf16 / fp32':>13}")
        for m in methods:
            a, b = args.batch / min(t32[m]), args.batch / min(t16[m])
            print(f"{m:<10}{a:>12.1f}{b:>12.1f}{b / a:>12.2f}x")


if __name__ == "__main__":
    main()
