"""Precompute a checkpoint's reference embedding for the embedding explorer.

    python -m backend.eval.references --checkpoint checkpoints/NAME [--n 1000] [--seed 0] [--method umap]
        [--data DIR] [--threads N]

Takes the same class-balanced seeded sample of the test split that the service draws (image ids
"test:<index>", so the explorer reuses the stored map whenever its sample is a subset of this one),
extracts the model's encoder features, fits the 2-D map and writes
<checkpoint>/reference_embedding.safetensors. What is stored is model output only: fp16 encoder
features, map coordinates, true and predicted labels and the image ids; never pixels.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from backend.core.runtime import quiet_openmp

quiet_openmp()  # before torch loads, as the other CLIs do

import torch  # noqa: E402

from backend.core.checkpoints import load_checkpoint  # noqa: E402
from backend.core.data import balanced_indices, load_split  # noqa: E402
from backend.core.validation import check_int  # noqa: E402
from backend.explain import embed  # noqa: E402


def build_reference(ckpt_dir, n: int = 1000, seed: int = 0, method: str = "umap", data=None,
                    split=None, source: str = "test") -> embed.ReferenceEmbedding:
    """The reference map of the checkpoint in ckpt_dir on n balanced images (not saved): of the test
    split under `data`, or of `split` when given; image ids are "<source>:<index>" as the service
    names them (source "test", or "samples" for backend.core.data.sample_images())."""
    check_int("n", n, 5)
    loaded = load_checkpoint(ckpt_dir)
    split = split if split is not None else load_split(data, "test", loaded.card.get("dataset", "cifar10"))
    if n > len(split):
        raise ValueError(f"n={n} exceeds the {len(split)} images of {source!r}")
    idx = balanced_indices(split.labels.numpy(), n, seed)
    return embed.compute_reference(loaded.model, split.float_images(idx), split.labels[idx], method=method,
                                   seed=seed, image_ids=[f"{source}:{int(i)}" for i in idx],
                                   weights_sha256=loaded.card.get("weights_sha256"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m backend.eval.references", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, type=Path)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--method", default="umap", choices=embed.EMBED_METHODS)
    ap.add_argument("--data", help="data root (default: backend.core.data.resolve_root())")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    if a.threads:
        torch.set_num_threads(a.threads)
    t = time.time()
    try:
        ref = build_reference(a.checkpoint, a.n, a.seed, a.method, a.data)
        path = embed.save_reference(a.checkpoint, ref)
    except ValueError as e:
        ap.error(str(e))
    sys.stdout.write(f"{path}: {len(ref.coords)} points, {ref.features.shape[1]}-d features, {ref.method} "
                     f"seed {ref.seed}, {time.time() - t:.1f} s\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
