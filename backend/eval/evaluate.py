"""Test-set evaluation of a checkpoint: clean, PGD-20 and AutoAttack accuracy, overall and per class.

    python -m backend.eval.evaluate --checkpoint checkpoints/NAME [--data DIR | --source samples] [--n-clean N]
        [--n-pgd 2000] [--autoattack] [--n-aa 200] [--aa-steps 100] [--seed 0] [--batch-size 256]
        [--device auto] [--threads N]

Protocol (shared/docs/RSUPCON.md): clean accuracy on the test split (all images unless --n-clean),
PGD-20 (L-inf, eps 8/255, step 2/255, random start) on a balanced seeded subset, AutoAttack standard
(APGD-CE, APGD-T, FAB-T, Square; L-inf 8/255) on a balanced seeded subset, by default from the
reference implementation (`pyautoattack`, the package RobustBench uses: --aa-impl reference), or
from torchattacks' components run by backend.attacks with the reference's 100 iterations
(--aa-impl torchattacks, the interactive attacks' code). The numbers, their standard errors
(binomial, sqrt(p(1-p)/N)), the subset sizes, the data variant, the attack settings and the seed
go into the card's metrics (atomically); the same command and seed give the same numbers. The
AutoAttack package is imported only when AutoAttack is requested.

--source samples measures on the checkpoint's data set's offline sample images instead of its
test split (backend.core.data.sample_images: for ImageNet-1k the 20 validation images the foolbox
package ships), so an imported model gets measured numbers offline: every metric on all of them
(N = 20), data variant `<dataset>-foolbox-samples` in the card's metrics. An N of 20 says little
(standard error up to 11 points); the card states it. --data DIR reads DIR's test split (or val/,
ImageNet's layout; its class folders by name or WordNet id, all classes or some: labels stay in the
model's index space and the variant says `imagenet-subsetK-...`).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable

from backend.core.runtime import quiet_openmp, torch_threads

quiet_openmp()  # before torch loads (python -m backend.eval.evaluate): passive OpenMP waits

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from backend.attacks.pgd import pgd  # noqa: E402
from backend.core.data import Split, balanced_indices, load_split, sample_images  # noqa: E402
from backend.core.errors import Cancelled  # noqa: E402
from backend.core.validation import check_int  # noqa: E402

log = logging.getLogger(__name__)
EPS, STEP, PGD_STEPS = 8 / 255, 2 / 255, 20
AA_STEPS = 100  # iterations of APGD-CE, APGD-T and FAB-T, as in the AutoAttack reference
AA_IMPLS = ("reference", "torchattacks")
# AutoAttack accuracy is also kept on these prefixes of the balanced subset (every prefix is itself
# balanced): a card measured on 500 then states its number on the 200 images older cards used
AA_PREFIXES = (200, 1000)
AA_KEYS = ("autoattack", "n_autoattack", "se_autoattack", "per_class_autoattack", "autoattack_prefix")


def standard_error(p: float, n: int) -> float:
    """Binomial standard error of an accuracy p measured on n images."""
    return float(np.sqrt(p * (1 - p) / n)) if n else float("nan")


def _reference_autoattack(model, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int,
                          batch_size: int, device) -> np.ndarray:
    """Per-image robustness (bool (n,)) under the reference AutoAttack, version standard, L-inf.

    pyautoattack counts an image as robust only when its final prediction is right, so an image
    misclassified when clean is never robust (as in our other metrics)."""
    import pyautoattack

    logging.getLogger("auto-attack").setLevel(logging.WARNING)  # it logs every batch at debug
    aa = pyautoattack.AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=seed,
                                 device=device)
    _, y_adv = aa.run_standard_evaluation(x, y, batch_size=batch_size)
    return (y_adv == y).cpu().numpy()


def reference_autoattack_version() -> str:
    import pyautoattack

    return f"pyautoattack {getattr(pyautoattack, '__version__', '?')}"


def _acc_per_class(correct: np.ndarray, labels: np.ndarray, classes) -> dict:
    return {c: (float(correct[labels == k].mean()) if (labels == k).any() else None)
            for k, c in enumerate(classes)}


def _batches(idx: np.ndarray, batch: int):
    for i in range(0, len(idx), batch):
        yield idx[i:i + batch]


def evaluate_model(model: torch.nn.Module, split: Split, n_clean: int | None = None, n_pgd: int = 2000,
                   n_aa: int = 0, seed: int = 0, batch_size: int = 256,
                   device: str | torch.device = "cpu", eps: float = EPS, step_size: float = STEP,
                   steps: int = PGD_STEPS, aa_steps: int = AA_STEPS, aa_impl: str = "reference",
                   should_stop: Callable[[], bool] = lambda: False) -> dict:
    """Accuracy of an eval-mode classifier (float (n,3,32,32) in [0,1] -> logits) on `split`.

    n_clean: images for clean accuracy (None: all; fewer: a balanced seeded subset); n_pgd / n_aa:
    balanced seeded subsets for PGD-`steps` and AutoAttack (0 skips); aa_impl "reference"
    (pyautoattack, standard version: its own 100 iterations; aa_steps does not apply) or
    "torchattacks" (backend.attacks with `aa_steps` iterations). Returns plain data:
    {"clean", "n_clean", "pgd{steps}", "n_pgd{steps}", "autoattack", "n_autoattack", "se_clean",
     "se_pgd{steps}", "se_autoattack", "per_class_clean", "per_class_pgd{steps}",
     "per_class_autoattack", "eval": {settings}}. should_stop() is polled before every batch; once it
    is true the evaluation raises errors.Cancelled (the one cancellation signal).
    """
    n = len(split)
    check_int("n_pgd", n_pgd, 0)
    check_int("n_aa", n_aa, 0)
    check_int("batch_size", batch_size, 1)
    if n_clean is not None:  # None: every image
        check_int("n_clean", n_clean, 1)
    if not 0 <= eps <= 1 or not 0 < step_size <= 1 or steps < 1:
        raise ValueError(f"bad attack settings eps={eps!r} step_size={step_size!r} steps={steps!r}")
    if model.training:
        raise ValueError("the model must be in eval mode (load_checkpoint returns it so)")
    if aa_impl not in AA_IMPLS:
        raise ValueError(f"aa_impl must be one of {AA_IMPLS}, got {aa_impl!r}")
    aa_spec = None
    if n_aa and aa_impl == "torchattacks":  # built (and so validated) before any work
        from backend.attacks import MAX_BATCH, AttackSpec, run_attack  # lazy: torchattacks loads only for AutoAttack

        aa_spec = AttackSpec(method="autoattack", norm="linf", eps=eps, steps=aa_steps, seed=seed)
    elif n_aa:
        aa_version = reference_autoattack_version()  # fails at once when the package is missing
    device = torch.device(device)
    labels = split.labels.numpy()
    classes = list(split.classes)
    key = f"pgd{steps}"

    def batch(idx):
        if should_stop():
            raise Cancelled("evaluation cancelled")
        return split.float_images(idx).to(device), torch.from_numpy(labels[idx]).to(device)

    def predict(x):
        with torch.no_grad():
            return model(x).argmax(1)

    clean_idx = np.arange(n) if n_clean is None or n_clean >= n else balanced_indices(labels, n_clean, seed)
    correct = np.concatenate([(predict(x) == y).cpu().numpy() for x, y in map(batch, _batches(clean_idx, batch_size))])
    out = {"clean": float(correct.mean()), "n_clean": int(len(clean_idx)),
           "per_class_clean": _acc_per_class(correct, labels[clean_idx], classes)}

    out[key], out[f"n_{key}"], out[f"per_class_{key}"] = None, 0, None
    if n_pgd:
        idx = balanced_indices(labels, min(n_pgd, n), seed)
        gen = torch.Generator(device=device).manual_seed(seed)
        hits = []
        for x, y in map(batch, _batches(idx, batch_size)):
            x_adv = pgd(lambda xa: F.cross_entropy(model(xa), y, reduction="none"), x, eps, step_size, steps,
                        generator=gen)
            # an image that is already misclassified counts as broken (as AutoAttack counts it), so
            # robust accuracy never exceeds clean accuracy on the same images
            hits.append(((predict(x) == y) & (predict(x_adv) == y)).cpu().numpy())
        hits = np.concatenate(hits)
        out[key], out[f"n_{key}"] = float(hits.mean()), int(len(idx))
        out[f"per_class_{key}"] = _acc_per_class(hits, labels[idx], classes)

    out["autoattack"], out["n_autoattack"], out["per_class_autoattack"] = None, 0, None
    out["autoattack_prefix"] = {}
    if n_aa:
        idx = balanced_indices(labels, min(n_aa, n), seed)
        if aa_spec is not None:
            hits = []
            for x, y in map(batch, _batches(idx, min(batch_size, MAX_BATCH))):
                r = run_attack(model, x, y, aa_spec)
                hits.append(((r.pred_clean == y) & (r.pred_adv == y)).cpu().numpy())
            hits = np.concatenate(hits)
        else:
            x, y = batch(idx)
            hits = _reference_autoattack(model, x, y, eps, seed, batch_size, device)
        out["autoattack"], out["n_autoattack"] = float(hits.mean()), int(len(idx))
        out["autoattack_prefix"] = {k: float(hits[:k].mean()) for k in AA_PREFIXES if k < len(hits)}
        out["per_class_autoattack"] = _acc_per_class(hits, labels[idx], classes)

    out["se_clean"] = standard_error(out["clean"], out["n_clean"])
    out[f"se_{key}"] = standard_error(out[key], out[f"n_{key}"]) if out[key] is not None else None
    out["se_autoattack"] = standard_error(out["autoattack"], out["n_autoattack"]) \
        if out["autoattack"] is not None else None
    out["eval"] = {"split": split.split, "data_variant": split.variant, "seed": seed, "norm": "linf",
                   "eps": eps, "eps_255": round(eps * 255, 4), "pgd_steps": steps, "pgd_step_size": step_size,
                   "pgd_random_start": True, "autoattack_version": "standard" if n_aa else None,
                   "autoattack_steps": (AA_STEPS if aa_impl == "reference" else aa_steps) if n_aa else None,
                   "autoattack_impl": (aa_version if aa_impl == "reference" else
                                       "torchattacks components via backend.attacks") if n_aa else None,
                   "subsets": "balanced over classes, seeded (backend.core.data.balanced_indices)"}
    return out


SOURCES = ("test", "samples")


def evaluate_checkpoint(ckpt_dir: str | os.PathLike, data: str | None = None, write: bool = True,
                        split: Split | None = None, only_autoattack: bool = False, source: str = "test",
                        **kwargs) -> dict:
    """Load a checkpoint, evaluate it on the test split and (write=True) merge the numbers into its
    card's metrics atomically. data: a root for backend.core.data.load_split, or "synthetic" (the
    training code's synthetic task, for checkpoints trained on it); split: evaluate on this Split
    instead. source "samples": on the card's data set's offline sample images (sample_images; no
    data root then). only_autoattack: run and write the AutoAttack part only (the card keeps its
    clean and PGD numbers). kwargs go to evaluate_model. Returns the metrics added."""
    from backend.core.checkpoints import load_checkpoint, read_card, write_card

    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if source == "samples" and (data is not None or split is not None):
        raise ValueError("source 'samples' reads the data set's offline samples: pass no data root or split")
    device = kwargs.get("device", "cpu")
    loaded = load_checkpoint(ckpt_dir, device=device)
    if split is not None:
        pass
    elif source == "samples":
        split = sample_images(loaded.card.get("dataset", "cifar10"))
    elif data == "synthetic":
        from backend.train.inputs import synthetic_task

        x, y = synthetic_task(1000, seed=424242)
        split = Split(x.permute(0, 2, 3, 1).contiguous(), y, tuple(f"class{k}" for k in range(10)),
                      "synthetic", "test", "synthetic", "synthetic task")
    else:
        split = load_split(data, "test", loaded.card.get("dataset", "cifar10"))
    if list(split.classes) != list(loaded.card["classes"]):
        raise ValueError(f"the test split's classes {list(split.classes)} differ from the checkpoint's "
                         f"{loaded.card['classes']}")
    t = time.time()
    if only_autoattack:
        if not kwargs.get("n_aa"):
            raise ValueError("only_autoattack needs n_aa > 0")
        kwargs.update(n_pgd=0, n_clean=1)
    result = evaluate_model(loaded.model, split, **kwargs)
    result["eval"]["time_s"] = round(time.time() - t, 1)
    result["eval"]["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if only_autoattack:
        aa_eval = {k: v for k, v in result["eval"].items() if k.startswith("autoattack")}
        # the AutoAttack figure may come from other images than the clean / PGD ones: say which
        aa_eval.update(autoattack_split=split.split, autoattack_data_variant=split.variant)
        result = {k: result[k] for k in AA_KEYS}
    if write:
        card = read_card(ckpt_dir)
        metrics = {**card.get("metrics", {}), **result}
        if only_autoattack:
            metrics["eval"] = {**metrics.get("eval", {}), **aa_eval,
                               "autoattack_time_s": round(time.time() - t, 1),
                               "autoattack_date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        card["metrics"] = metrics
        write_card(ckpt_dir, card)
    return result


def format_table(result: dict, classes: list[str]) -> str:
    """Per-class and overall accuracies; classes with no image measured (a subset, the samples of
    a 1000-class data set) are left out, so a row is never an invented 0."""
    keys = [k for k in ("clean", "pgd20", "autoattack") if result.get(k) is not None]
    keys += [k for k in result if k.startswith("pgd") and k != "pgd20" and not k.startswith("pgd_")
             and result.get(k) is not None]
    shown = [c for c in classes if any((result[f"per_class_{k}"] or {}).get(c) is not None for k in keys)]
    w = max([12] + [min(24, len(c) + 1) for c in shown])
    head = f"{'class':<{w}}" + "".join(f"{k:>12}" for k in keys)
    rows = [head, "-" * len(head)]
    for c in shown:
        cells = [(result[f"per_class_{k}"] or {}).get(c) for k in keys]
        rows.append(f"{c[:w - 1]:<{w}}" + "".join(f"{'-':>12}" if v is None else f"{v:>12.3f}" for v in cells))
    rows.append("-" * len(head))
    rows.append(f"{'all':<{w}}" + "".join(f"{result[k]:>12.4f}" for k in keys))
    rows.append(f"{'N':<{w}}" + "".join(f"{result['n_' + k]:>12d}" for k in keys))
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m backend.eval.evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, type=Path)
    ap.add_argument("--data", help="data root, or 'synthetic' (default: backend.core.data.resolve_root())")
    ap.add_argument("--source", choices=SOURCES, default="test",
                    help="test: the data root's test split (or val/); samples: the data set's offline sample "
                         "images (ImageNet: the 20 foolbox ships), every metric on all of them")
    ap.add_argument("--n-clean", "--n", type=int, default=None, help="clean images (default: all)")
    ap.add_argument("--n-pgd", type=int, default=2000)
    ap.add_argument("--autoattack", action="store_true")
    ap.add_argument("--n-aa", type=int, default=200)
    ap.add_argument("--aa-steps", type=int, default=AA_STEPS,
                    help="iterations of APGD-CE/APGD-T/FAB-T for --aa-impl torchattacks (the reference's 100)")
    ap.add_argument("--aa-impl", choices=AA_IMPLS, default="reference",
                    help="reference: pyautoattack (what cards report); torchattacks: backend.attacks")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--only-autoattack", action="store_true",
                    help="run and write only the AutoAttack part (the card keeps its clean and PGD numbers)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave the card unchanged")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    device = "cuda" if a.device == "auto" and torch.cuda.is_available() else ("cpu" if a.device == "auto" else a.device)
    if device == "cpu":
        torch.set_num_threads(torch_threads(a.threads))
    try:
        if a.only_autoattack and not a.autoattack:
            raise ValueError("--only-autoattack needs --autoattack")
        if a.source == "samples" and a.data is not None:
            raise ValueError("--source samples reads the offline sample images: drop --data")
        result = evaluate_checkpoint(a.checkpoint, a.data, write=not a.no_write, only_autoattack=a.only_autoattack,
                                     n_clean=a.n_clean,
                                     n_pgd=a.n_pgd, n_aa=a.n_aa if a.autoattack else 0, seed=a.seed,
                                     aa_steps=a.aa_steps, aa_impl=a.aa_impl,
                                     batch_size=a.batch_size, device=device, source=a.source)
    except ValueError as e:
        ap.error(str(e))
    if a.only_autoattack:
        prefix = ", ".join(f"first {k}: {v:.4f}" for k, v in result["autoattack_prefix"].items())
        sys.stdout.write(f"{a.checkpoint}: reference AutoAttack {result['autoattack']:.4f} +- "
                         f"{result['se_autoattack']:.4f} on {result['n_autoattack']}"
                         + (f" ({prefix})" if prefix else "") + "\n")
        return 0
    sys.stdout.write(f"{a.checkpoint} ({result['eval']['data_variant']}, {result['eval']['split']} split, "
                     f"seed {a.seed})\n"
                     f"{format_table(result, list(result['per_class_clean']))}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
