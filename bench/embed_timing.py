"""Timing of the embedding map and the saliency methods (CPU by default).

    python bench/embed_timing.py [--n-fit 2000] [--n-new 100] [--width 32] [--device cpu]

Embedding rows: UMAP fit of N features (F = 8*width) in a fresh process, so the first fit includes
umap's numba JIT compilation, then warm; transform of M new points (first call compiles too);
PCA fit / transform; knn_place. Ratios are against the warm PCA fit of the same run. Saliency rows:
per-image latency of each method with default SaliencyParams at batch 1 and batch 8, ratios against
the plain gradient at the same batch size. Features come from a randomly initialised width-`width`
ResNet-18 (or --checkpoint DIR) on real CIFAR-10 test images when backend.core.data finds them
(RSUPCON_DATA or ../shared), else on uniform random images; the table says which.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np
import torch

from backend.core.runtime import usable_cores


def _images(n: int, seed: int) -> tuple[torch.Tensor, str]:
    try:
        from backend.core.data import load_split
        split = load_split(split="test")
        idx = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:n]
        return split.float_images(idx), f"CIFAR-10 test ({split.variant})"
    except Exception as e:  # no data here: random images are still a fair timing input
        print(f"# real images unavailable ({type(e).__name__}); using random images", file=sys.stderr)
        return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed)), "uniform random"


def _timed(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-fit", type=int, default=2000)
    ap.add_argument("--n-new", type=int, default=100)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=usable_cores())
    ap.add_argument("--checkpoint", default=None, help="a checkpoint folder instead of a random model")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")

    from backend.core.models import build_model, freeze
    from backend.explain import embed
    from backend.explain.saliency import METHODS, SaliencyParams, attribute

    if a.checkpoint:
        from backend.core.checkpoints import load_checkpoint
        model, what = load_checkpoint(a.checkpoint, device=a.device).model, f"checkpoint {a.checkpoint}"
    else:
        torch.manual_seed(0)
        model, what = freeze(build_model("resnet18", width=a.width).to(a.device)), f"random width-{a.width}"
    x, src = _images(a.n_fit + a.n_new, seed=0)
    t_feat, feats = _timed(lambda: embed.extract_features(model, x))
    f_fit, f_new = feats[:a.n_fit], feats[a.n_fit:]
    print(f"model: {what} ResNet-18 on {a.device}, {a.threads} threads; images: {src}; "
          f"features ({len(feats)}, {feats.shape[1]}) in {t_feat:.2f} s")

    rows = []
    t0 = time.perf_counter()
    import umap  # noqa: F401  (timed on its own: the import alone costs about a second)
    rows.append(("import umap", time.perf_counter() - t0, None))
    u = embed.Embedder("umap", seed=0)
    rows.append((f"UMAP fit N={a.n_fit}, first (JIT)", _timed(lambda: u.fit(f_fit))[0], None))
    rows.append((f"UMAP transform M={a.n_new}, first (JIT)", _timed(lambda: u.transform(f_new))[0], None))
    t_fit, c1 = _timed(lambda: embed.Embedder("umap", seed=0).fit(f_fit), repeat=2)
    rows.append((f"UMAP fit N={a.n_fit}, warm", t_fit, None))
    rows.append((f"UMAP transform M={a.n_new}, warm", _timed(lambda: u.transform(f_new), repeat=3)[0], None))
    p = embed.Embedder("pca", seed=0)
    t_pca, _ = _timed(lambda: p.fit(f_fit), repeat=3)
    rows.append((f"PCA fit N={a.n_fit}", t_pca, None))
    rows.append((f"PCA transform M={a.n_new}", _timed(lambda: p.transform(f_new), repeat=3)[0], None))
    ref = embed.ReferenceEmbedding(c1, np.zeros(a.n_fit, np.int64), np.zeros(a.n_fit, np.int64),
                                   f_fit.astype(np.float16), [str(i) for i in range(a.n_fit)], "umap", 0,
                                   u.params)
    rows.append((f"knn_place M={a.n_new} into N={a.n_fit} (k=10)",
                 _timed(lambda: embed.knn_place(ref, f_new), repeat=3)[0], None))
    print("\n| embedding step | seconds | x warm PCA fit |\n|---|---|---|")
    for name, s, _ in rows:
        print(f"| {name} | {s:.3f} | {s / t_pca:.2g} |")
    same = np.array_equal(embed.Embedder("umap", seed=0).fit(f_fit), c1)
    print(f"\nUMAP refit with the same seed bit-identical: {same}")

    params = SaliencyParams()
    y = torch.zeros(8, dtype=torch.long)
    print(f"\n| saliency method (defaults: IG {params.ig_steps} steps, SmoothGrad {params.smoothgrad_samples} "
          f"samples, occlusion {params.occlusion_window}px/{params.occlusion_stride}) "
          "| ms/image, batch 1 | x gradient | ms/image, batch 8 | x gradient |\n|---|---|---|---|---|")
    xs = x[:8].to(a.device)
    attribute(model, xs[:1], y[:1], "gradient", params)  # captum import and first-call costs
    ref_ms = {}
    for method in METHODS:
        cells = []
        for b in (1, 8):
            reps = 3 if method not in ("occlusion",) else 1
            s, _ = _timed(lambda: attribute(model, xs[:b], y[:b], method, params), repeat=reps)
            ms = 1000 * s / b
            ref_ms.setdefault(b, ms)
            cells += [f"{ms:.1f}", f"{ms / ref_ms[b]:.1f}"]
        print(f"| {method} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
