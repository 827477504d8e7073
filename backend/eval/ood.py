"""Out-of-distribution detection: can a classifier's outputs tell its test images from outliers?

Scores (higher = more likely an outlier; pytorch-ood's detectors, the authors' library):
maximum softmax probability (`msp`, Hendrycks & Gimpel 2017; what the source's mAUROC uses), the
energy score (`energy`, Liu et al. 2020) and the maximum logit (`maxlogit`). Metrics from
pytorch-ood (AUROC, FPRAtTPR): AUROC and the false-positive rate at 95% true-positive rate (FPR95),
outliers the positive class. mAUROC is the mean MSP AUROC over the outlier sets measured.

Outlier sets, each named in the card with its N:
- folders given by the user (`--ood DIR ...`: any image files under DIR, e.g. CIFAR-100's test
  images for a CIFAR-10 model, SVHN, Textures), named by the folder, at most n images (seeded);
- offline samples that packages ship: foolbox's 20 test images of each other data set it has
  (CIFAR-100 / CIFAR-10, ImageNet, MNIST, Fashion-MNIST), resized to the model's side;
- synthetic sets that need nothing: uniform noise, Gaussian noise (mean 0.5, std 0.25, clipped)
  and blobs (smoothed binary noise, thresholded), n images each, seeded.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from backend.core.data import Split, balanced_indices, samples_dir
from backend.core.errors import Cancelled
from backend.core.imagefiles import IMAGE_EXTENSIONS, decode_paths
from backend.core.validation import check_int

SCORES = ("msp", "energy", "maxlogit")
SYNTHETIC = ("uniform-noise", "gaussian-noise", "blobs")
# foolbox's sample files: name in the card, file pattern, the data set they belong to
_PACKAGE_SETS = (("cifar10-samples", r"^cifar10_\d+_\d+\.png$", "cifar10"),
                 ("cifar100-samples", r"^cifar100_\d+_\d+\.png$", "cifar100"),
                 ("imagenet-samples", r"^imagenet_\d+_\d+\.jpg$", "imagenet"),
                 ("mnist-samples", r"^mnist_\d+_\d+\.png$", "mnist"),
                 ("fashion-mnist-samples", r"^fashionMNIST_\d+_\d+\.png$", "fashionmnist"))
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")


def outlier_scores(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """logits (N, C) -> {score name: (N,) float, higher = more likely an outlier}."""
    from pytorch_ood.detector import EnergyBased, MaxLogit, MaxSoftmax  # lazy: the package takes seconds

    logits = logits.detach().float()
    return {"msp": MaxSoftmax.score(logits), "energy": EnergyBased.score(logits), "maxlogit": MaxLogit.score(logits)}


def detection_metrics(score_in: torch.Tensor, score_out: torch.Tensor) -> dict[str, float]:
    """AUROC and FPR at 95% TPR of outlier scores (higher = outlier): in-distribution (n,), outliers (m,)."""
    from pytorch_ood.metrics import AUROC, FPRAtTPR

    if score_in.numel() == 0 or score_out.numel() == 0:
        raise ValueError("both the in-distribution and the outlier set need at least one image")
    scores = torch.cat([score_in.float().cpu(), score_out.float().cpu()])
    # pytorch-ood's convention: outliers carry negative labels
    labels = torch.cat([torch.zeros(len(score_in), dtype=torch.long), -torch.ones(len(score_out), dtype=torch.long)])
    auroc = AUROC().update(scores, labels).compute()["AUROC"]
    fpr = FPRAtTPR().update(scores, labels).compute()["FPR95TPR"]
    return {"auroc": float(auroc), "fpr95": float(fpr)}


def synthetic_set(name: str, n: int, side: int, seed: int = 0) -> torch.Tensor:
    """(n, 3, side, side) float in [0, 1]: one of SYNTHETIC, deterministic in seed."""
    if name not in SYNTHETIC:
        raise ValueError(f"unknown synthetic outlier set {name!r}; one of {', '.join(SYNTHETIC)}")
    check_int("n", n, 1)
    g = torch.Generator().manual_seed(seed * 1000 + SYNTHETIC.index(name))
    shape = (n, 3, side, side)
    if name == "uniform-noise":
        return torch.rand(shape, generator=g)
    if name == "gaussian-noise":
        return (0.5 + 0.25 * torch.randn(shape, generator=g)).clamp(0, 1)
    # blobs: binary noise (p 0.7), blurred (sigma side / 32 px), kept where the blur is above 0.75
    x = (torch.rand(shape, generator=g) < 0.7).float()
    sigma = side / 32
    r = max(1, int(round(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(3, 1, 1, 1), groups=3)
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).repeat(3, 1, 1, 1), groups=3)
    return (x > 0.75).float()


def package_sets(dataset: str, side: int) -> dict[str, torch.Tensor]:
    """{name: (20, 3, side, side) float} from the foolbox package's sample images of every data set
    other than `dataset` (offline; empty without the package)."""
    d = samples_dir("foolbox")
    out: dict[str, torch.Tensor] = {}
    if d is None:
        return out
    for name, pattern, owner in _PACKAGE_SETS:
        if owner == dataset:
            continue
        files = sorted(str(p) for p in d.iterdir() if re.match(pattern, p.name))
        if files:
            out[name] = torch.from_numpy(decode_paths(files, side)).permute(0, 3, 1, 2).float().div(255).contiguous()
    return out


def folder_set(root: str | Path, side: int, n: int = 1000, seed: int = 0) -> tuple[str, torch.Tensor]:
    """(name, (m, 3, side, side) float): at most n image files found under root (recursively; a
    seeded choice when there are more), named by the folder. ValueError when it holds none."""
    d = Path(root)
    if not d.is_dir():
        raise ValueError(f"outlier folder {str(d)!r} does not exist")
    files = sorted(str(p) for p in d.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise ValueError(f"outlier folder {str(d)!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
    check_int("n", n, 1)
    if len(files) > n:
        keep = np.sort(np.random.default_rng(seed).choice(len(files), n, replace=False))
        files = [files[i] for i in keep]
    name = d.name if _NAME.match(d.name) else "folder"
    return name, torch.from_numpy(decode_paths(files, side)).permute(0, 3, 1, 2).float().div(255).contiguous()


def outlier_sets(dataset: str, side: int, folders: list[str] | tuple[str, ...] = (), n: int = 1000,
                 seed: int = 0, synthetic: bool = True, packages: bool = True) -> dict[str, torch.Tensor]:
    """Every outlier set for a model of `dataset` at `side` px: the folders, the package samples of
    the other data sets, the synthetic sets (n each). Names are unique (a repeated folder name gets -2...)."""
    sets: dict[str, torch.Tensor] = {}
    for f in folders:
        name, x = folder_set(f, side, n, seed)
        base, k = name, 2
        while name in sets:
            name, k = f"{base}-{k}", k + 1
        sets[name] = x
    if packages:
        sets.update(package_sets(dataset, side))
    if synthetic:
        sets.update({s: synthetic_set(s, n, side, seed) for s in SYNTHETIC})
    return sets


def _logits(model, x: torch.Tensor, batch_size: int, device, should_stop) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            if should_stop():
                raise Cancelled("OOD evaluation cancelled")
            out.append(model(x[i:i + batch_size].to(device)).float().cpu())
    return torch.cat(out)


def ood_detection(model: torch.nn.Module, split: Split, sets: dict[str, torch.Tensor], n_in: int = 1000,
                  seed: int = 0, batch_size: int = 256, device: str | torch.device = "cpu",
                  should_stop: Callable[[], bool] = lambda: False) -> dict:
    """Detection of each outlier set (name -> (m,3,S,S) in [0,1]) against n_in balanced seeded images
    of `split` by an eval-mode classifier. Returns {"mauroc": mean MSP AUROC over the sets, "n_ood_in":
    n_in, "ood": {"n_in", "seed", "data_variant", "scores", "mauroc_<score>" for each score, "sets":
    {name: {"n", "auroc_<score>", "fpr95_<score>"}}}}."""
    if not sets:
        raise ValueError("no outlier set to measure")
    check_int("n_in", n_in, 1)
    check_int("batch_size", batch_size, 1)
    device = torch.device(device)
    idx = balanced_indices(split.labels.numpy(), min(n_in, len(split)), seed)
    s_in = outlier_scores(_logits(model, split.float_images(idx), batch_size, device, should_stop))
    per: dict[str, dict] = {}
    for name, x in sets.items():
        s_out = outlier_scores(_logits(model, x, batch_size, device, should_stop))
        row: dict = {"n": int(len(x))}
        for sc in SCORES:
            m = detection_metrics(s_in[sc], s_out[sc])
            row[f"auroc_{sc}"], row[f"fpr95_{sc}"] = m["auroc"], m["fpr95"]
        per[name] = row
    ood = {"n_in": int(len(idx)), "seed": seed, "data_variant": split.variant, "scores": list(SCORES),
           "sets": per, "metrics": "pytorch-ood AUROC and FPRAtTPR (FPR at 95% TPR), outliers positive"}
    for sc in SCORES:
        ood[f"mauroc_{sc}"] = float(np.mean([r[f"auroc_{sc}"] for r in per.values()]))
    return {"mauroc": ood["mauroc_msp"], "n_ood_in": int(len(idx)), "ood": ood}
