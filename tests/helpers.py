"""Shared test helpers: tiny random-init checkpoints written into a temporary checkpoints folder.

Import these from tests (``from tests.helpers import write_tiny_checkpoint, tiny_checkpoint_root``);
conftest.py stays owned by the project. Everything here is seeded, so two calls with the same
arguments write byte-identical weights.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from backend.core.checkpoints import new_card, save_checkpoint
from backend.core.data import Split
from backend.core.datasets import CIFAR10
from backend.core.models import build_model
from backend.train.inputs import synthetic_task

CIFAR10_CLASSES = list(CIFAR10.classes)  # the dataset registry's names (backend.core.datasets)

# (model id, method, seed): one per ordering bucket so sort order is observable (rsupcon first).
TINY_MODELS = (("tiny-ce", "ce", 3), ("tiny-pgd", "pgd_at", 2), ("tiny-rsupcon", "rsupcon", 1))


def write_tiny_checkpoint(root: str | Path, model_id: str, method: str = "ce", width: int = 16,
                          seed: int = 0, dtype: torch.dtype = torch.float32) -> Path:
    """Write a seeded random-init ResNet-18 (10 classes) as a checkpoint `<root>/<model_id>`.

    The batch-norm running statistics are moved away from their (0, 1) defaults with a few
    train-mode forward passes on seeded noise, so the untrained model's logits vary with the input
    (a pure-init ResNet gives near-constant outputs, which would make attack tests vacuous).
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = build_model("resnet18", width=width, num_classes=10)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(16, 3, 32, 32, generator=g))
    model.eval()
    card = new_card(model_id, method, "resnet18", width, CIFAR10_CLASSES,
                    display_name=f"Tiny {method} (random init)", data_variant="none",
                    train_config={"init": "random", "seed": seed}, metrics={},
                    training={"time_s": 0.0, "hardware": "none", "epochs": 0}, status="test")
    return save_checkpoint(model, card, Path(root) / model_id, dtype=dtype)


def tiny_split(n: int = 40) -> Split:
    """A CIFAR-10-shaped test split of n synthetic images (seeded): evaluation tests without the data set."""
    x, y = synthetic_task(n, seed=5)
    return Split(x.permute(0, 2, 3, 1).contiguous(), y, tuple(CIFAR10_CLASSES), "cifar10", "test",
                 "synthetic-test", "test")


def write_tiny_models(root: str | Path, models=TINY_MODELS, width: int = 16) -> list[str]:
    """Write every (id, method, seed) in `models` under root; returns the ids in that order."""
    for model_id, method, seed in models:
        write_tiny_checkpoint(root, model_id, method, width=width, seed=seed)
    return [m[0] for m in models]


@pytest.fixture(scope="session")
def tiny_checkpoint_root(tmp_path_factory) -> Path:
    """A session-wide checkpoints folder with three tiny width-16 models (see TINY_MODELS).

    Tests must not add or remove models here; use `fresh_checkpoint_root` for that.
    """
    root = tmp_path_factory.mktemp("checkpoints")
    write_tiny_models(root)
    return root


@pytest.fixture
def fresh_checkpoint_root(tmp_path) -> Path:
    """A per-test checkpoints folder with the three tiny models, free to modify."""
    root = tmp_path / "checkpoints"
    write_tiny_models(root)
    return root


@contextmanager
def app_environment(checkpoints: Path, nodata: Path, **extra: str):
    """The environment the app's tests run the real in-process backend under: `checkpoints` as the zoo,
    no data set (`nodata` is an empty folder: offline samples only), training jobs on synthetic data,
    no HTTP backend or token; `extra` variables on top. Restored on exit."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in extra.items():
            mp.setenv(k, v)
        mp.setenv("ROBUSTLENS_CHECKPOINTS", str(checkpoints))
        mp.setenv("RSUPCON_DATA", str(nodata))
        mp.setenv("ROBUSTLENS_JOB_DATA", "synthetic")
        mp.delenv("BACKEND_URL", raising=False)
        mp.delenv("ROBUSTLENS_TOKEN", raising=False)
        yield


def both_clients(checkpoints: Path, jobs: Path):
    """{"inprocess": InProcessClient, "http": HttpClient over the FastAPI app (TestClient)}, each with its
    own Service on `checkpoints`; a generator for a fixture (closes them after the yield)."""
    from fastapi.testclient import TestClient

    from backend.service import Service
    from backend.transport.client import HttpClient, InProcessClient
    from backend.transport.server import create_app

    inproc, remote = Service(checkpoints, jobs_root=jobs / "a"), Service(checkpoints, jobs_root=jobs / "b")
    out = {"inprocess": InProcessClient(inproc),
           "http": HttpClient("http://testserver", http=TestClient(create_app(remote), raise_server_exceptions=False))}
    yield out
    for c in out.values():
        c.close()
    remote.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(app, port: int | None = None):
    """Serve an ASGI app (the backend's FastAPI app) with uvicorn on 127.0.0.1 in a thread; yields its
    base URL once the server has started; stops it (and waits up to 10 s) on the way out."""
    import threading
    import time

    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    if not server.started:
        server.should_exit = True
        raise RuntimeError(f"uvicorn did not start on port {port} within 30 s")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
