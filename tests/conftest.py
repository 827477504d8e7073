"""Shared fixtures: tiny seeded CPU models and data; real CIFAR-10 only when ../shared is beside us."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from backend.core.models import build_model, freeze

REPO = Path(__file__).resolve().parent.parent
SHARED_CIFAR = REPO.parent / "shared" / "data" / "cifar10-jpeg"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
# The app and the server warm UMAP up in a background thread at start; in tests (the app's pages run
# in this process and in subprocesses that inherit this) that would only compete for the CPU.
os.environ.setdefault("ROBUSTLENS_WARM_UP", "0")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def tiny_model():
    """A frozen, randomly initialised width-16 ResNet-18 (10 classes) in eval mode."""
    torch.manual_seed(0)
    return freeze(build_model("resnet18", width=16, num_classes=10))


@pytest.fixture
def tiny_batch():
    """(x, y): 4 random images (4,3,32,32) in [0,1] and labels (4,)."""
    g = torch.Generator().manual_seed(1)
    return torch.rand(4, 3, 32, 32, generator=g), torch.randint(0, 10, (4,), generator=g)


@pytest.fixture
def cifar_root():
    """The shared CIFAR-10 ImageFolder tree, or skip when ../shared is not beside the clone."""
    root = Path(os.environ.get("RSUPCON_DATA", SHARED_CIFAR))
    if not (root / "test").is_dir():
        pytest.skip(f"real CIFAR-10 not available at {root} (set RSUPCON_DATA or put ../shared beside the clone)")
    return root
