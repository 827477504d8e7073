"""Self-describing checkpoints: safetensors weights + a JSON model card. Loading never unpickles.

The card names the architecture (`arch`, an entry of the registry in backend.core.archs) and every
argument of its builder (`arch_args`), and the input size; loading rebuilds the network from the
registry and loads the weights into it. Cards written before arch_args existed (arch, width and
num_classes only) load as ResNet-18 cards with the other arguments at their defaults.

Layout of one checkpoint (a folder named by its id):
    <root>/<id>/model.safetensors   weights (fp16 for shipping, fp32 otherwise)
    <root>/<id>/card.json           the model card (see `new_card`)
    <root>/<id>/reference_embedding.safetensors   optional precomputed map (coordinates, labels,
                                    predictions; never pixels), written by backend.explain.embed
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from backend import REPO, __version__
from backend.core import archs

log = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
CARD = "card.json"
CARD_SCHEMA = 1
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_REQUIRED = ("id", "display_name", "method", "arch", "width", "num_classes", "classes", "dataset",
             "data_variant", "train_config", "metrics", "training", "code_version", "weights_sha256")


class CheckpointError(ValueError):
    """A checkpoint is missing, malformed, or fails its hash check."""


def default_root() -> Path:
    """The checkpoints folder: $ROBUSTLENS_CHECKPOINTS, else <repo>/checkpoints."""
    env = os.environ.get("ROBUSTLENS_CHECKPOINTS")
    return Path(env) if env else REPO / "checkpoints"


def validate_id(model_id: str) -> str:
    if not isinstance(model_id, str) or not _ID_RE.match(model_id):
        raise ValueError(f"invalid model id {model_id!r}: use 1-64 letters, digits, '_', '-', '.'")
    return model_id


def code_version() -> str:
    """Package version plus the git commit when available (e.g. '0.1.0+3f2a1bc')."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                             capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def new_card(model_id: str, method: str, arch: str, width: int | None, classes: list[str], *,
             display_name: str | None = None, dataset: str = "cifar10", data_variant: str = "unknown",
             train_config: dict | None = None, metrics: dict | None = None,
             training: dict | None = None, status: str = "experimental", notes: str = "",
             arch_args: dict | None = None, input_size: int | None = None) -> dict:
    """A model card with every required field. `metrics` holds measured numbers only, e.g.
    {"clean": 0.91, "n_clean": 10000, "pgd20": 0.45, "n_pgd20": 2000, "autoattack": None, ...};
    `training` holds {"time_s": float, "hardware": str, "epochs": int}.

    arch_args: the builder's arguments (backend.core.archs; missing ones are filled in with their
    defaults, num_classes from `classes`, width from `width` when the architecture takes one,
    input_size from `input_size`, else the dataset's image size). width may be None for an
    architecture without one."""
    validate_id(model_id)
    args = _card_arch_args(arch, width, classes, dataset, arch_args, input_size)
    return {
        "schema": CARD_SCHEMA, "id": model_id, "display_name": display_name or model_id,
        "method": method, "arch": arch, "arch_args": args, "input_size": int(args["input_size"]),
        "width": args.get("width"), "num_classes": len(classes),
        "classes": list(classes), "dataset": dataset, "data_variant": data_variant,
        "train_config": dict(train_config or {}), "metrics": dict(metrics or {}),
        "training": dict(training or {}), "status": status, "notes": notes,
        "code_version": code_version(), "weights_sha256": None, "weights_dtype": None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _card_arch_args(arch: str, width: int | None, classes: list[str], dataset: str, arch_args: dict | None,
                    input_size: int | None) -> dict:
    from backend.core.datasets import image_size_of

    spec = archs.get_arch(arch)
    args = dict(arch_args or {})
    if args.get("num_classes", len(classes)) != len(classes):
        raise ValueError(f"arch_args num_classes={args['num_classes']} but {len(classes)} class names given")
    args["num_classes"] = len(classes)
    if width is not None and "width" in spec.defaults:
        if args.get("width", width) != width:
            raise ValueError(f"arch_args width={args['width']} differs from width={width}")
        args["width"] = int(width)
    if input_size is not None:
        args["input_size"] = int(input_size)
    args.setdefault("input_size", image_size_of(dataset))
    return archs.full_args(arch, args)


def card_arch_args(card: dict) -> dict:
    """The complete builder arguments of a card; an old card (arch, width and num_classes only)
    gets the rest from the registry's defaults."""
    args = dict(card.get("arch_args") or {})
    if not args:
        args = {"num_classes": int(card["num_classes"])}
        if card.get("width") is not None:
            args["width"] = int(card["width"])
        if card.get("input_size") is not None:
            args["input_size"] = int(card["input_size"])
    try:
        return archs.full_args(card["arch"], args)
    except ValueError as e:
        raise CheckpointError(f"checkpoint {card.get('id')!r}: {e}") from None


def save_checkpoint(model: torch.nn.Module, card: dict, out_dir: str | os.PathLike,
                    dtype: torch.dtype = torch.float16, include_head: bool = False,
                    extra_files: dict[str, Path] | None = None) -> Path:
    """Write weights + card to `out_dir` atomically (temp folder, then rename). Returns out_dir.

    Floating tensors are stored in `dtype` (fp16 keeps shipped models small); the projection head
    is dropped unless include_head. The card gets the weights' sha256 and dtype.
    """
    out_dir = Path(out_dir)
    state = {}
    for k, v in model.state_dict().items():
        if k.startswith("head.") and not include_head:
            continue
        v = v.detach().cpu()
        state[k] = (v.to(dtype) if v.is_floating_point() else v).contiguous()
    card = dict(card)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt", "id": str(card.get("id"))})
        card["weights_sha256"] = sha256_file(tmp / WEIGHTS)
        card["weights_dtype"] = str(dtype).replace("torch.", "")
        card["has_head"] = bool(include_head and any(k.startswith("head.") for k in state))
        _check_card(card)
        (tmp / CARD).write_text(json.dumps(card, indent=2, sort_keys=False) + "\n")
        for name, src in (extra_files or {}).items():
            shutil.copyfile(src, tmp / name)
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def write_card(ckpt_dir: str | os.PathLike, card: dict) -> None:
    """Replace a checkpoint's card atomically (e.g. after evaluation added metrics)."""
    _check_card(card)
    path = Path(ckpt_dir) / CARD
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(card, indent=2) + "\n")
    os.replace(tmp, path)


def read_card(ckpt_dir: str | os.PathLike) -> dict:
    """Read and check a card without touching the weights."""
    path = Path(ckpt_dir) / CARD
    try:
        card = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"no model card at {path}") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"model card {path} is not valid JSON: {e}") from None
    _check_card(card)
    return card


def _check_card(card: Any) -> None:
    if not isinstance(card, dict):
        raise CheckpointError("a model card must be a JSON object")
    missing = [k for k in _REQUIRED if k not in card]
    if missing:
        raise CheckpointError(f"model card {card.get('id')!r} lacks fields: {', '.join(missing)}")
    validate_id(card["id"])


def list_checkpoints(root: str | os.PathLike | None = None, order: tuple[str, ...] = ()) -> list[dict]:
    """Cards of every valid checkpoint under root (weights are not read). Broken ones are logged
    and skipped. Sorted by method in `order` (methods not in it after those), then by id; the
    service and the scripts pass the training registry's METHODS (rsupcon first)."""
    root = Path(root) if root is not None else default_root()
    cards: list[dict] = []
    if not root.is_dir():
        return cards
    for d in sorted(root.iterdir()):
        if d.name.startswith(".") or not (d / CARD).is_file():
            continue
        try:
            card = read_card(d)
        except CheckpointError as e:
            log.warning("skipping checkpoint %s: %s", d, e)
            continue
        if card["id"] != d.name:
            log.warning("skipping checkpoint %s: card id %r differs from folder name", d, card["id"])
            continue
        cards.append(card)
    return sorted(cards, key=lambda c: sort_key(c, tuple(order)))


def sort_key(card: dict, order: tuple[str, ...] = ()) -> tuple:
    """Listing order: methods in `order` first, in that order (the training registry's METHODS, which
    core may not import: callers above pass it), then everything else; by id within a method."""
    m = card.get("method", "")
    return (order.index(m) if m in order else len(order), card.get("id", ""))


@dataclass(frozen=True)
class LoadedModel:
    model: torch.nn.Module  # float32, eval mode, frozen
    card: dict


def load_checkpoint(ckpt_dir: str | os.PathLike, device: str | torch.device = "cpu",
                    verify: bool = True, head: bool = False) -> LoadedModel:
    """Load weights (safetensors only) into a freshly built fp32 model in eval mode.

    verify: check the weights' sha256 against the card (CheckpointError on mismatch).
    head: keep the projection head (for resuming contrastive training); needs a card with has_head.
    """
    from backend.core.models import freeze

    ckpt_dir = Path(ckpt_dir)
    card = read_card(ckpt_dir)
    wpath = ckpt_dir / WEIGHTS
    if not wpath.is_file():
        raise CheckpointError(f"checkpoint {ckpt_dir} has no {WEIGHTS}")
    if verify:
        digest = sha256_file(wpath)
        if digest != card["weights_sha256"]:
            raise CheckpointError(
                f"checkpoint {card['id']!r}: weights sha256 {digest[:12]}... does not match the card "
                f"({str(card['weights_sha256'])[:12]}...); the file is corrupt or was replaced")
    state = load_file(str(wpath), device="cpu")
    model = archs.build_arch(card["arch"], card_arch_args(card), head=head and bool(card.get("has_head")))
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {card['id']!r} does not fit its architecture: {e}") from None
    model.to(device)
    return LoadedModel(freeze(model), card)
