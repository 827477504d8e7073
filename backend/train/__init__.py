"""Training: `python -m backend.train --method rsupcon ...` (see __main__.py), or in Python:

    from backend.train import make_config, RunOptions, train
    train(make_config("smoke", method="rsupcon", data="synthetic"), RunOptions(out=Path("checkpoints/x")))

Imports only torch, torchvision (via backend.core.data), numpy, safetensors, tqdm and the standard library,
so a bare GPU machine can train.
"""
import os

# Before torch loads: OpenMP threads that spin while waiting made training steps 3-4x slower on a
# shared 2-core CPU (bench/train_throughput.py, ce and pgd_at at width 16). setdefault: a caller's
# own choice wins; no effect when torch is already loaded.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from backend.train.config import CONTRASTIVE, METHODS, PRESETS, ROBUST, TrainConfig, make_config
from backend.train.loop import RunOptions, lr_at, train
from backend.train.methods import Cancelled

__all__ = ["CONTRASTIVE", "METHODS", "PRESETS", "ROBUST", "TrainConfig", "make_config", "RunOptions",
           "lr_at", "train", "Cancelled"]
