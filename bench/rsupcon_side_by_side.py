"""RSupCon side by side: this project's training step against the authors' code (K25n/RSupCon).

    python bench/rsupcon_side_by_side.py --authors PATH_TO_RSUPCON_CHECKOUT [--steps 100 --seeds 0 1 2]

The authors' modules (networks/resnet_big.py, losses.py, rep_attack.py, utils.py, main_rsupcon.py)
are imported from their checkout and run as they are, in this process; nothing of theirs is copied
into this project. Three adjustments make them run here, none of which changes a number:
  - on a machine without CUDA, Tensor.cuda() returns the tensor itself (their code calls .cuda());
  - torch.autograd.set_detect_anomaly becomes a no-op while their step runs (it only adds checks
    and slows the CPU; --anomaly keeps it);
  - their ResNet-18 is built at --width by handing their module a torch.nn whose Conv2d /
    BatchNorm2d / Linear divide every multiple of 64 channels (512 for Linear) by 64/width, so
    their own constructor, forward and Kaiming initialisation run unchanged at width 16.
The stub `tensorboard_logger` module only satisfies their import.

Runs, per seed, on the same image batches (a seeded permutation of the training split):
  authors    their model and initialisation, their PIL views (torchvision transforms with the
             parameters of their set_loader, combined by their Transform_mix), their
             train_encoder_robust step and set_optimizer
  lockstep   this project's rsupcon_step on exactly the authors' inputs: the same weights at step 0,
             the same views, the same random start as their attack draws; shows whether the two
             codes compute the same thing (it drifts only by float rounding through chaos)
  sameinit   this project's training with the authors' initial weights but its own views (batched
             tensor ops, backend.train.augment), random starts and generators: what remains when the
             initial draw is shared
  ours       this project's training as `python -m backend.train --method rsupcon` does it: its
             own initialisation (backend.core.models.init_weights, the source's Kaiming fan-out; --init
             torch gives PyTorch's default conv init, what this project used before), its views
`--init-draws K` compares instead the two codes' initial models over K draws (projection cosine on one
clean batch, weight spread per layer): whether the two initialisations are the same distribution.
Printed: loss and mean pairwise cosine of the train-mode projections (1.0 = the collapsed
solution, whose loss is log(3B-1) + log(2B)) at chosen steps, then the lock-step agreement, then
per-run diagnostics (L_adv, L_cln, L-inf of the adversarial views, gradient norms, BN statistics).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import math
import os
import sys
import time
import types
from pathlib import Path

from backend.core.runtime import quiet_openmp

quiet_openmp()  # before torch loads

import numpy as np
import torch
import torch.nn as nn

from backend.core import data as bdata
from backend.core.models import build_model
from backend.train.config import TrainConfig, make_config
from backend.train.loop import lr_at
from backend.train.steps import Nets, StepContext, TrainNet, rsupcon_step, rsupcon_views

REPORT_STEPS = (1, 5, 10, 20, 40, 60, 80, 100, 150, 200, 300, 400)  # and the last step
MODES = ("authors", "lockstep", "sameinit", "ours")


# ------------------------------------------------------------------------------ the authors' code
def _scaled_nn(width: int) -> types.SimpleNamespace:
    """torch.nn with channel counts scaled from width 64 to `width` (see the module docstring)."""
    k = 64 // width

    def ch(n: int) -> int:
        return n // k if n % 64 == 0 else n

    class Conv2d(nn.Conv2d):
        def __init__(self, i, o, *a, **kw):
            super().__init__(ch(i), ch(o), *a, **kw)

    class BatchNorm2d(nn.BatchNorm2d):
        def __init__(self, n, *a, **kw):
            super().__init__(ch(n), *a, **kw)

    class Linear(nn.Linear):
        def __init__(self, i, o, *a, **kw):
            super().__init__(i // k if i == 512 else i, o // k if o == 512 else o, *a, **kw)

    ns = types.SimpleNamespace(**{n: getattr(nn, n) for n in dir(nn) if not n.startswith("_")})
    ns.Conv2d, ns.BatchNorm2d, ns.Linear = Conv2d, BatchNorm2d, Linear
    return ns


class Authors:
    """The authors' modules, imported from their checkout."""

    def __init__(self, path: Path, width: int):
        if not (path / "main_rsupcon.py").is_file():
            raise SystemExit(f"--authors {path}: no main_rsupcon.py there (clone K25n/RSupCon)")
        sys.modules.setdefault("tensorboard_logger", types.ModuleType("tensorboard_logger"))
        sys.path.insert(0, str(path))
        self.resnet = importlib.import_module("networks.resnet_big")
        self.losses = importlib.import_module("losses")
        self.attack = importlib.import_module("rep_attack")
        self.utils = importlib.import_module("utils")
        self.main = importlib.import_module("main_rsupcon")
        self.resnet.nn = _scaled_nn(width)
        self.width = width

    def model(self, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return self.resnet.SupConResNet(name="resnet18")

    def transform(self):
        """Their three views with the parameters of their set_loader, combined by their Transform_mix."""
        from torchvision import transforms as T
        base = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor()])
        sim = T.Compose([T.RandomResizedCrop(size=32, scale=(0.2, 1.0)), T.RandomHorizontalFlip(),
                         T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                         T.RandomGrayscale(p=0.2), T.ToTensor()])
        triv = T.Compose([T.TrivialAugmentWide(), T.RandomHorizontalFlip(), T.ToTensor()])
        mix = self.utils.Transform_mix(base, sim, triv)
        with contextlib.redirect_stdout(open(os.devnull, "w")):
            mix.parse_order(["t0", "s0", "b0"])
        return mix

    def views(self, mix, images_nhwc: torch.Tensor) -> list[torch.Tensor]:
        """[t, s, b], each float (B,3,32,32), drawn per image from torch's global RNG as their loader does."""
        from PIL import Image
        per_image = [mix(Image.fromarray(im.numpy())) for im in images_nhwc]
        return [torch.stack([v[i] for v in per_image]) for i in range(3)]

    def opt(self, a) -> types.SimpleNamespace:
        return types.SimpleNamespace(
            trans_order=["t0", "s0", "b0"], atk_anchor=["t0", "s0"], atk_contrast=["t0", "s0", "b0"],
            atk_randstart=["t0", "s0"], cln_anchor=["b0"], temp=a.temp, print_freq=10 ** 9,
            learning_rate=a.lr, momentum=0.9, weight_decay=5e-4)


@contextlib.contextmanager
def cpu_patches(anomaly: bool):
    """Tensor.cuda() -> identity without CUDA; anomaly detection off unless asked for."""
    saved = torch.Tensor.cuda, torch.autograd.set_detect_anomaly
    if not torch.cuda.is_available():
        torch.Tensor.cuda = lambda self, *a, **k: self
    if not anomaly:
        torch.autograd.set_detect_anomaly = lambda *a, **k: None
    try:
        yield
    finally:
        torch.Tensor.cuda, torch.autograd.set_detect_anomaly = saved


# ------------------------------------------------------------------------------ shared helpers
def mean_cosine(z: torch.Tensor) -> float:
    """Mean pairwise cosine similarity of unit rows z (N, d), the diagonal left out."""
    z = z.reshape(-1, z.shape[-1]).double()
    n = z.shape[0]
    s = z.sum(0)
    return float((s @ s - n) / (n * (n - 1)))


def copy_authors_to_ours(theirs: nn.Module, ours: nn.Module) -> None:
    """Our ResNet18 + head takes the authors' SupConResNet weights (same layer names, encoder.* prefix)."""
    src = theirs.state_dict()
    mapped = {k: src[("head." + k[5:]) if k.startswith("head.") else "encoder." + k]
              for k in ours.state_dict() if not k.startswith("fc.")}
    missing = ours.load_state_dict(mapped, strict=False)
    assert set(missing.missing_keys) == {"fc.weight", "fc.bias"}, missing


def torch_default_init(model: nn.Module) -> nn.Module:
    """PyTorch's default conv initialisation (this project's before init_weights)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.reset_parameters()
    return model


def grad_norms(model: nn.Module, names: dict[str, str]) -> dict[str, float]:
    params = dict(model.named_parameters())
    return {label: float(params[n].grad.norm()) for label, n in names.items()}


class Ours:
    """This project's model, optimiser and rsupcon_step, configured like backend.train."""

    def __init__(self, a, seed: int, init: str, overrides: dict | None = None):
        values = dict(method="rsupcon", width=a.width, batch_size=a.batch, attack_steps=a.attack_steps,
                      step_size=a.step_size / 255, eps=a.eps / 255, temperature=a.temp, lr=a.lr, seed=seed)
        values.update(overrides or {})
        self.cfg = make_config("full", **values)
        self.steps_per_epoch = 49000 // self.cfg.batch_size
        self.global_step = 0
        torch.manual_seed(seed)
        self.model = build_model("resnet18", a.width, 10, head=True, head_bn=self.cfg.head_bn)
        if init == "torch":
            torch_default_init(self.model)
        self.model.fc.requires_grad_(False)
        core = TrainNet(self.model)
        self.nets = Nets(core, core, core)
        self.ctx = StepContext(self.cfg, torch.Generator().manual_seed(seed + 1),
                               torch.Generator().manual_seed(seed + 2), contextlib.nullcontext, lambda: False)
        self.opt = torch.optim.SGD([p for p in self.model.parameters() if p.requires_grad], lr=self.cfg.lr,
                                   momentum=self.cfg.momentum, weight_decay=self.cfg.weight_decay)

    def step(self, xt, xs, xb, y, x_init=None) -> dict:
        self.model.train()
        for group in self.opt.param_groups:  # backend.train's schedule (constant lr 0.1 by default)
            group["lr"] = lr_at(self.cfg, self.global_step, self.steps_per_epoch)
        self.global_step += 1
        out = rsupcon_step(self.nets, xt, xs, xb, y, self.ctx, x_init)
        loss = out["l_adv"] + out["l_cln"]
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        rec = {"loss": float(loss.detach()), "l_adv": float(out["l_adv"].detach()),
               "l_cln": float(out["l_cln"].detach()),
               "cos": mean_cosine(out["z"].detach()),
               "linf": float((out["x_adv"] - torch.cat([xt, xs])).abs().amax() * 255),
               "x_adv": out["x_adv"]}
        rec.update(grad_norms(self.model, {"g_conv1": "conv1.weight", "g_l4": "layer4.1.conv2.weight",
                                           "g_head": f"head.{len(self.model.head) - 1}.weight"}))
        self.opt.step()
        rec["bn1_var"] = float(self.model.bn1.running_var.mean())
        return rec


class AuthorsRun:
    """The authors' model, attack and train_encoder_robust, one batch per call."""

    def __init__(self, au: Authors, a, seed: int):
        self.au, self.a = au, a
        self.model = au.model(seed)
        self.opt_ns = au.opt(a)
        self.optimizer = au.utils.set_optimizer(self.opt_ns, self.model)
        self.atk = au.attack.SupConRepAdv(self.model, epsilon=a.eps / 255, atk_temp=a.temp,
                                          steps=a.attack_steps, alpha=a.step_size / 255)
        self.seen: dict = {}
        self.model.register_forward_hook(self._hook)
        perturb = self.atk.perturb

        def recording_perturb(src, tgt, labels, rand_idx=None):
            adv = perturb(src, tgt, labels, rand_idx=rand_idx)
            self.seen["linf"] = float((adv - torch.cat(src)).abs().amax() * 255)
            self.seen["x_adv"] = adv
            return adv
        self.atk.perturb = recording_perturb

    def _hook(self, module, inputs, output):
        if module.training:  # the training forward, not the attack's eval-mode ones
            self.seen["z"] = output.detach()

    def step(self, views, y) -> dict:
        with cpu_patches(self.a.anomaly), contextlib.redirect_stdout(open(os.devnull, "w")):
            # one-batch loader; their epoch loop computes, steps the optimiser and returns the means
            loss, adv = self.au.main.train_encoder_robust([(views, y)], self.atk, self.model,
                                                          self.optimizer, 1, self.opt_ns)
        names = {"g_conv1": "encoder.conv1.weight", "g_l4": "encoder.layer4.1.conv2.weight",
                 "g_head": "head.2.weight"}
        rec = {"loss": loss, "l_adv": adv, "l_cln": loss - adv, "cos": mean_cosine(self.seen["z"]),
               "linf": self.seen["linf"], "x_adv": self.seen["x_adv"]}
        rec.update(grad_norms(self.model, names))
        rec["bn1_var"] = float(self.model.encoder.bn1.running_var.mean())
        return rec


def draw_random_start(views, eps: float, seed: int) -> torch.Tensor:
    """The uniform start their SupConRepAdv draws for t then s from torch's global RNG after
    manual_seed(seed), as one (2B,3,H,W) starting point for our attack."""
    torch.manual_seed(seed)
    noise = [torch.FloatTensor(v.shape).uniform_(-eps, eps).float() for v in views[:2]]
    return torch.clamp(torch.cat(views[:2]) + torch.cat(noise), 0, 1)


# ------------------------------------------------------------------------------ the runs
def run_seed(au: Authors, a, seed: int, images: torch.Tensor, labels: torch.Tensor) -> dict[str, list]:
    g = torch.Generator().manual_seed(1000 + seed)
    order = torch.randperm(len(labels), generator=g)
    runs: dict[str, list] = {m: [] for m in a.modes}
    theirs = AuthorsRun(au, a, seed) if ("authors" in a.modes or "lockstep" in a.modes) else None
    lock = same = None
    if "lockstep" in a.modes:
        lock = Ours(a, seed, "source")
        copy_authors_to_ours(theirs.model, lock.model)
    if "sameinit" in a.modes:
        same = Ours(a, seed, "source")
        copy_authors_to_ours(au.model(seed), same.model)
    ours = Ours(a, seed, a.init, a.ours_set) if "ours" in a.modes else None
    mix = au.transform()
    t0 = time.time()
    for step in range(1, a.steps + 1):
        idx = order[(step - 1) * a.batch: step * a.batch]
        x_nhwc, y = images[idx], labels[idx]
        if theirs is not None:
            torch.manual_seed(10 ** 6 * (seed + 1) + step)
            views = au.views(mix, x_nhwc)  # [t, s, b]
            noise_seed = 10 ** 7 * (seed + 1) + step
            if lock is not None:
                x_init = draw_random_start(views, a.eps / 255, noise_seed)
                runs["lockstep"].append(lock.step(*views, y, x_init))
            torch.manual_seed(noise_seed)  # their perturb draws the same start
            rec = theirs.step(views, y)
            if "authors" in runs:
                runs["authors"].append(rec)
            if lock is not None:
                rec_l = runs["lockstep"][-1]
                rec_l["adv_diff"] = float((rec_l["x_adv"] - rec["x_adv"]).abs().amax() * 255)
        x_u8 = x_nhwc.permute(0, 3, 1, 2).contiguous()
        for name, run in (("sameinit", same), ("ours", ours)):
            if run is not None:
                runs[name].append(run.step(*rsupcon_views(x_u8[:run.cfg.batch_size], run.ctx), y[:run.cfg.batch_size]))
        for r in runs.values():
            if r:
                r[-1].pop("x_adv", None)
        if step in REPORT_STEPS or step == a.steps:
            print(f"  seed {seed} step {step}/{a.steps} ({time.time() - t0:.0f} s): " + ", ".join(
                f"{m} {r[-1]['loss']:.3f}/{r[-1]['cos']:.4f}" for m, r in runs.items() if r), flush=True)
    return runs


def fmt_table(results: dict, steps: list[int], seeds: list[int], modes: list[str]) -> str:
    lines = ["| run | seed | " + " | ".join(f"step {s}" for s in steps) + " |",
             "|---|---|" + "---|" * len(steps)]
    for m in modes:
        for seed in seeds:
            r = results[seed][m]
            lines.append(f"| {m} | {seed} | " + " | ".join(
                f"{r[s - 1]['cos']:.4f} / {r[s - 1]['loss']:.3f}" for s in steps) + " |")
        if len(seeds) > 1:
            cells = []
            for s in steps:
                c = [results[sd][m][s - 1]["cos"] for sd in seeds]
                lo = [results[sd][m][s - 1]["loss"] for sd in seeds]
                cells.append(f"{np.mean(c):.4f} / {np.mean(lo):.3f}")
            lines.append(f"| {m} | mean | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def init_draws(au: Authors, a, images: torch.Tensor, seeds: range) -> str:
    """Both codes' initial models over many draws, on one clean batch in train mode: are the two
    initialisations the same distribution? (The first steps' fate depends on the draw: finding 4 of
    docs/RSUPCON_SOURCE.md.) Returns a markdown table: mean, sd and range over the draws of each
    statistic, and the difference of the means in units of its standard error."""
    x = images[:a.batch].permute(0, 3, 1, 2).float() / 255
    layers = {"conv1": ("encoder.conv1.weight", "conv1.weight"),
              "layer4.1.conv2": ("encoder.layer4.1.conv2.weight", "layer4.1.conv2.weight"),
              "head.0": ("head.0.weight", "head.0.weight"), "head.2": ("head.2.weight", "head.2.weight")}
    stats: dict[str, dict[str, list[float]]] = {"authors": {}, "ours": {}}
    for seed in seeds:
        theirs = au.model(seed).train()
        torch.manual_seed(seed)
        ours = build_model("resnet18", a.width, 10, head=True).train()
        with torch.no_grad():
            z = {"authors": theirs(x), "ours": ours.project(x)}
        for code, model, col in (("authors", theirs, 0), ("ours", ours, 1)):
            params = dict(model.named_parameters())
            row = {"projection cosine": mean_cosine(z[code])}
            row.update({f"std {name}": float(params[names[col]].detach().std()) for name, names in layers.items()})
            for k, v in row.items():
                stats[code].setdefault(k, []).append(v)
    lines = [f"| statistic ({len(seeds)} draws each) | authors: mean ± sd [min, max] | ours: mean ± sd [min, max] "
             "| difference / SE |", "|---|---|---|---|"]
    for k in stats["authors"]:
        t, o = np.array(stats["authors"][k]), np.array(stats["ours"][k])
        se = math.sqrt(t.var(ddof=1) / len(t) + o.var(ddof=1) / len(o))
        cell = lambda v: f"{v.mean():.4g} ± {v.std(ddof=1):.2g} [{v.min():.4g}, {v.max():.4g}]"  # noqa: E731
        lines.append(f"| {k} | {cell(t)} | {cell(o)} | {(o.mean() - t.mean()) / se:+.2f} |")
    return "\n".join(lines)


def _field(kv: str, ap) -> tuple[str, object]:
    name, _, text = kv.partition("=")
    kinds = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    if name not in kinds or not text:
        ap.error(f"--ours-set {kv!r}: use FIELD=VALUE with a TrainConfig field")
    kind = kinds[name]
    if kind in ("bool", bool):
        return name, text.lower() in ("1", "true", "yes")
    return name, (int if kind in ("int", int) else float if kind in ("float", float) else str)(text)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--authors", type=Path, required=True, help="checkout of K25n/RSupCon")
    ap.add_argument("--data", default=None, help="CIFAR-10 root (default: backend.core.data.resolve_root())")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--modes", default="authors,lockstep,sameinit,ours",
                    help="comma list of " + ",".join(MODES))
    ap.add_argument("--init", choices=("source", "torch"), default="source",
                    help="initialisation of the 'ours' run: source = backend.core.models.init_weights (what "
                         "backend.train uses), torch = PyTorch's default conv init (before the fix)")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--attack-steps", type=int, default=3)
    ap.add_argument("--step-size", type=float, default=3.0, help="PGD step, in 1/255")
    ap.add_argument("--eps", type=float, default=8.0, help="L-inf radius, in 1/255")
    ap.add_argument("--temp", type=float, default=0.07)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--ours-set", action="append", default=[], metavar="FIELD=VALUE",
                    help="a TrainConfig field for the 'ours' run, e.g. warmup_epochs=1, temperature=0.1, "
                         "head_bn=true, batch_size=64 (repeatable); recipe search without changing the others")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--anomaly", action="store_true", help="keep their autograd anomaly detection on")
    ap.add_argument("--init-draws", type=int, default=0, metavar="K",
                    help="instead of the runs: compare both codes' initial models over K draws (seeds 0..K-1)")
    a = ap.parse_args(argv)
    a.modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    a.ours_set = dict(_field(kv, ap) for kv in a.ours_set)
    if bad := set(a.modes) - set(MODES):
        ap.error(f"unknown modes {sorted(bad)}")
    if a.threads:
        torch.set_num_threads(a.threads)
    au = Authors(a.authors.resolve(), a.width)
    split = bdata.load_split(a.data, "train")
    tr, _ = bdata.train_val_indices(len(split), 1000, seed=0, labels=split.labels.numpy())
    images, labels = split.images[torch.from_numpy(tr)], split.labels[torch.from_numpy(tr)]
    collapsed = math.log(3 * a.batch - 1) + math.log(2 * a.batch)
    if a.init_draws:
        print(f"initial models at width {a.width}, one clean batch of {a.batch} in train mode\n")
        print(init_draws(au, a, images, range(a.init_draws)))
        return
    if a.ours_set:
        print(f"'ours' run with {a.ours_set}")
    print(f"RSupCon side by side: width {a.width}, batch {a.batch}, PGD-{a.attack_steps} step "
          f"{a.step_size:g}/255 eps {a.eps:g}/255, tau {a.temp}, SGD lr {a.lr}; {split.variant}; "
          f"collapsed loss log(3B-1)+log(2B) = {collapsed:.3f}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads", flush=True)
    results = {seed: run_seed(au, a, seed, images, labels) for seed in a.seeds}
    steps = sorted({s for s in REPORT_STEPS if s <= a.steps} | {a.steps})
    print("\nmean pairwise cosine of the projections / loss\n")
    print(fmt_table(results, steps, a.seeds, a.modes))
    if "lockstep" in a.modes and "authors" in a.modes:
        print("\nlock-step agreement (same weights at step 0, same views, same random start): "
              "max |loss difference| and max |x_adv difference| (1/255) up to each step\n")
        print("| seed | " + " | ".join(f"step {s}" for s in steps) + " |\n|---|" + "---|" * len(steps))
        for seed in a.seeds:
            au_r, lk = results[seed]["authors"], results[seed]["lockstep"]
            cells = [f"{max(abs(au_r[i]['loss'] - lk[i]['loss']) for i in range(s)):.2e} / "
                     f"{max(lk[i]['adv_diff'] for i in range(s)):.3f}" for s in steps]
            print(f"| {seed} | " + " | ".join(cells) + " |")
    print("\ndiagnostics (seed {}): L_adv / L_cln, L-inf of x_adv (1/255), grad norms conv1 / layer4 / "
          "head, mean BN1 running variance\n".format(a.seeds[0]))
    print("| run | step | L_adv | L_cln | L-inf | |g| conv1 | |g| layer4 | |g| head | bn1 var |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for m in a.modes:
        r = results[a.seeds[0]][m]
        for s in steps:
            e = r[s - 1]
            print(f"| {m} | {s} | {e['l_adv']:.3f} | {e['l_cln']:.3f} | {e['linf']:.2f} | {e['g_conv1']:.3g} | "
                  f"{e['g_l4']:.3g} | {e['g_head']:.3g} | {e['bn1_var']:.4g} |")


if __name__ == "__main__":
    main()
