"""Training: `python -m backend.train --method rsupcon ...` (see __main__.py), or in Python:

    from backend.train import make_config, RunOptions, train
    train(make_config("smoke", method="rsupcon", data="synthetic"), RunOptions(out=Path("checkpoints/x")))

The registry (backend.train.registry: methods, presets) and the config (backend.train.config) are
torch-free, and importing them through this package loads no torch: the names below that need torch
(RunOptions, train, Cancelled) are loaded on first use (PEP 562). The trainer itself imports only
torch, torchvision (via backend.core.data), numpy, safetensors, tqdm and the standard library, so a bare
GPU machine can train.
"""
from __future__ import annotations

from backend.core.runtime import quiet_openmp

# Before torch loads: OpenMP threads that spin while waiting made training steps 3-4x slower on a
# shared 2-core CPU (bench/train_throughput.py, ce and pgd_at at width 16). A caller's own
# OMP_WAIT_POLICY wins; no effect when torch is already loaded.
quiet_openmp()

from backend.train.config import (  # noqa: E402 (after the OpenMP setting)
    PRESETS,
    TrainConfig,
    config_from_dict,
    lr_at,
    make_config,
)

_LAZY = {"RunOptions": "backend.train.loop", "train": "backend.train.loop", "Cancelled": "backend.train.steps"}

__all__ = ["CONTRASTIVE", "METHODS", "PRESETS", "ROBUST", "TrainConfig", "config_from_dict", "lr_at", "make_config",
           *_LAZY]


def __getattr__(name: str):
    if name in ("CONTRASTIVE", "METHODS", "ROBUST"):  # the registry read now (backend.train.registry)
        from backend.train import registry

        return getattr(registry, name)
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'backend.train' has no attribute {name!r}")
