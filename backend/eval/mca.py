"""Mean corruption accuracy (mCA): accuracy under the 15 common corruptions x 5 severities.

Images: a balanced seeded subset of the test split, corrupted by backend.core.corruptions (the
"regenerated" variant), or the same test images read from an official CIFAR-10-C / CIFAR-100-C
folder (`root`; the "official" variant, its own labels.npy). mCA is the mean of the 75 accuracies,
as the source's evaluation reports it; every accuracy is on the same n images, so the card states
n per severity and the per-corruption, per-severity table.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from backend.core.corruptions import CORRUPTIONS, REGENERATED, SEVERITIES, corrupt, official_labels, read_official
from backend.core.data import Split, balanced_indices, to_float
from backend.core.errors import Cancelled
from backend.core.validation import check_int


def _predict(model, x: torch.Tensor, batch_size: int, device) -> np.ndarray:
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            out.append(model(x[i:i + batch_size].to(device)).argmax(1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def corruption_accuracy(model: torch.nn.Module, split: Split | None, n: int = 1000, seed: int = 0,
                        root: str | Path | None = None, batch_size: int = 256, device: str | torch.device = "cpu",
                        corruptions: tuple[str, ...] = CORRUPTIONS, severities: tuple[int, ...] = SEVERITIES,
                        should_stop: Callable[[], bool] = lambda: False,
                        on_step: Callable[[int, int], None] = lambda done, total: None) -> dict:
    """Accuracy of an eval-mode classifier ((n,3,S,S) in [0,1] -> logits) under each corruption and
    severity on n balanced seeded test images: regenerated from `split` (root None) or read from the
    official folder `root` (split unused; its images must have the model's input side).

    Returns {"mca": mean of all cells, "n_mca": n, "corruptions": {"variant", "seed", "n", "clean"
    (accuracy of the same n images uncorrupted; regenerated only, else None), "accuracy": {name: [acc
    per severity]}, "mean": {name: mean over severities}, "by_severity": [mean over corruptions]}}.
    should_stop() is polled before every cell (raises errors.Cancelled); on_step(done, total) after."""
    check_int("n", n, 1)
    check_int("batch_size", batch_size, 1)
    for c in corruptions:
        if c not in CORRUPTIONS:
            raise ValueError(f"unknown corruption {c!r}; one of {', '.join(CORRUPTIONS)}")
    if not corruptions or any(s not in SEVERITIES for s in severities) or not severities:
        raise ValueError(f"severities must be a non-empty subset of {SEVERITIES}, got {severities!r}")
    device = torch.device(device)
    side = getattr(model, "input_size", None)
    if root is not None:
        labels_all = official_labels(root)
        idx = balanced_indices(labels_all, min(n, len(labels_all)), seed)
        labels = labels_all[idx]
        variant = f"official: {Path(root).name} (.npy folder)"
        clean = None
    else:
        if split is None:
            raise ValueError("regenerated corruptions need the test split")
        lab = split.labels.numpy()
        idx = balanced_indices(lab, min(n, len(lab)), seed)
        labels = lab[idx]
        x = split.float_images(idx)
        variant = f"{REGENERATED}; data {split.variant}"
        clean = float((_predict(model, x, batch_size, device) == labels).mean())
    total, done = len(corruptions) * len(severities), 0
    acc: dict[str, list[float]] = {}
    for c in corruptions:
        acc[c] = []
        for s in severities:
            if should_stop():
                raise Cancelled("corruption evaluation cancelled")
            if root is not None:
                xc = to_float(torch.from_numpy(read_official(root, c, s, idx)))
                if side is not None and xc.shape[-1] != side:
                    raise ValueError(f"the official images are {xc.shape[-1]} px; the model takes {side} px")
            else:
                # chunks of 256 images, each its own random stream: the same draws whatever the batch size
                xc = torch.cat([corrupt(x[i:i + 256], c, s, seed, stream=i // 256) for i in range(0, len(x), 256)])
            acc[c].append(float((_predict(model, xc, batch_size, device) == labels).mean()))
            done += 1
            on_step(done, total)
    cells = [a for row in acc.values() for a in row]
    return {"mca": float(np.mean(cells)), "n_mca": int(len(idx)),
            "corruptions": {"variant": variant, "seed": seed, "n": int(len(idx)), "clean": clean,
                            "severities": list(severities), "accuracy": acc,
                            "mean": {c: float(np.mean(v)) for c, v in acc.items()},
                            "by_severity": [float(np.mean([acc[c][j] for c in acc])) for j in range(len(severities))],
                            "subsets": "balanced over classes, seeded (backend.core.data.balanced_indices)"}}
