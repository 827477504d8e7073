"""Saliency measures of the shipped models on the same test images: the second half of the paper's
claim ("its saliency concentrates on human-perceived, object-centred features"), in numbers.

    python scripts/saliency_summary.py [--checkpoints checkpoints] [--n 500] [--seed 0] [--data DIR]
        [--threads N]

For each checkpoint, on N class-balanced seeded test images (backend.core.data.balanced_indices), with
the true class as target:
  - alignment: centred image-gradient alignment |<x - mean, g>| / (|x - mean| |g|) (Etmann et al.
    2019; backend.explain.saliency_metrics.alignment_measures); higher = the gradient looks more like the image;
  - deletion / insertion AUC of the Integrated-Gradients ranking (32 steps, black baseline; pixels
    replaced by / inserted into a blurred copy; Petsiuk et al. 2018): a lower deletion and a higher
    insertion AUC mean the map ranks the pixels the model actually uses (both scale with the model's
    confidence, so compare models by their difference, insertion - deletion);
  - drift between the IG map of the clean image and that of the model's own PGD-10 image (L-inf
    8/255, step 2/255, random start, seeded): Spearman rank correlation and top-10% overlap; higher
    = the explanation survives the attack.
Prints a markdown table (mean over the images, with the standard error). Model outputs only.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backend.core.runtime import quiet_openmp

quiet_openmp()  # before torch loads
ROOT = Path(__file__).resolve().parent.parent

import numpy as np
import torch
import torch.nn.functional as F

from backend.attacks.projected_gradient import pgd
from backend.core.archs import network_label
from backend.explain.saliency import SaliencyParams, attribute, to_heatmap
from backend.explain.saliency_metrics import alignment_measures, deletion_insertion, drift
from backend.train.registry import METHODS

COLUMNS = ("alignment", "deletion_auc", "insertion_auc", "ins_minus_del", "drift_spearman", "drift_top10")


def summarise(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int = 0,
              eps: float = 8 / 255, step_size: float = 2 / 255, steps: int = 10, ig_steps: int = 32,
              batch: int = 100) -> dict[str, np.ndarray]:
    """Per-image measures (see the module doc) of an eval-mode classifier on x (N,3,H,W) in [0,1]
    with true labels y (N,). Returns {column: (N,) float array}; deterministic for a seed."""
    gen = torch.Generator().manual_seed(seed)
    params = SaliencyParams(ig_steps=ig_steps, baseline="black")
    out: dict[str, list] = {c: [] for c in COLUMNS}
    for i in range(0, len(x), batch):
        xb, yb = x[i:i + batch], y[i:i + batch]
        out["alignment"].append(alignment_measures(model, xb, yb)["centered_alignment"])
        x_adv = pgd(lambda xa, yb=yb: F.cross_entropy(model(xa), yb, reduction="none"), xb, eps, step_size, steps,
                    generator=gen)
        clean = to_heatmap(attribute(model, xb, yb, "integrated_gradients", params), "integrated_gradients")
        adv = to_heatmap(attribute(model, x_adv, yb, "integrated_gradients", params), "integrated_gradients")
        di = deletion_insertion(model, xb, yb, clean, baseline="blur")
        out["deletion_auc"].append(di["deletion_auc"])
        out["insertion_auc"].append(di["insertion_auc"])
        out["ins_minus_del"].append(di["insertion_auc"] - di["deletion_auc"])
        d = drift(clean, adv, k=0.1)
        out["drift_spearman"].append(d["spearman"])
        out["drift_top10"].append(d["topk_overlap"])
    return {c: np.concatenate(v).astype(np.float64) for c, v in out.items()}


def table(rows: list[tuple[str, dict[str, np.ndarray]]]) -> str:
    """Markdown table of mean +- standard error per column (NaNs, e.g. a constant map, left out)."""
    head = ["model", "N", "alignment (higher)", "deletion AUC (lower)", "insertion AUC (higher)",
            "insertion - deletion (higher)",
            "drift: Spearman (higher)", "drift: top-10% overlap (higher)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in rows:
        cells = [name, str(len(m["alignment"]))]
        for c in COLUMNS:
            v = m[c][np.isfinite(m[c])]
            se = v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
            cells.append(f"{v.mean():.3f} ± {se:.3f}" if len(v) else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from backend.core.checkpoints import list_checkpoints, load_checkpoint
    from backend.core.data import balanced_indices, load_split

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoints", type=Path, default=ROOT / "checkpoints")
    ap.add_argument("--n", type=int, default=500, help="test images (balanced over classes)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", help="data root (default: backend.core.data.resolve_root())")
    ap.add_argument("--threads", type=int)
    a = ap.parse_args(argv)
    if a.n < 2:
        ap.error("--n must be at least 2")
    if a.threads:
        torch.set_num_threads(a.threads)
    cards = list_checkpoints(a.checkpoints, METHODS)
    if not cards:
        ap.error(f"no checkpoints in {a.checkpoints}")
    split = load_split(a.data, "test")
    idx = balanced_indices(split.labels.numpy(), min(a.n, len(split)), a.seed)
    x, y = split.float_images(idx), split.labels[idx]
    rows = []
    for card in cards:
        model = load_checkpoint(a.checkpoints / card["id"]).model
        net = network_label(card.get("arch", "resnet18"), card.get("width"))
        rows.append((f"{card['id']} ({net})", summarise(model, x, y, seed=a.seed)))
        print(f"# {card['id']} done", file=sys.stderr, flush=True)
    print(f"# {len(idx)} test images of {split.variant}, seed {a.seed}; IG-32 (black baseline), "
          f"own PGD-10 at 8/255; mean ± standard error")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
