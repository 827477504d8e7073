"""One function per source: build the model under the contract, say where its weights came from."""
from __future__ import annotations

import importlib.metadata
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from backend.core import adapters
from backend.core.archs import build_arch, full_args
from backend.core.checkpoints import default_root, new_card, save_checkpoint, sha256_file, validate_id
from backend.core.datasets import find_dataset, get_dataset

THREAT_MODELS = ("Linf", "L2", "corruptions")


@dataclass
class Imported:
    """A model ready to save: the built network (weights loaded), its architecture and arguments,
    classes, data set and provenance."""
    model: nn.Module
    arch: str
    arch_args: dict[str, Any]
    classes: list[str]
    dataset: str
    provenance: dict[str, Any]
    display_name: str
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _classes_for(dataset: str, n: int) -> list[str]:
    spec = find_dataset(dataset)
    if spec is not None and spec.num_classes == n:
        return list(spec.classes)
    if spec is not None:
        raise ValueError(f"data set {dataset!r} has {spec.num_classes} classes but the model has {n} outputs")
    return [f"class {i}" for i in range(n)]


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{what} does not fit the architecture: {str(e)[:600]}") from None


def _inner(model: nn.Module) -> nn.Module:
    """The wrapped network of a ContractAdapter (whose state dict a published checkpoint holds)."""
    if not isinstance(model, adapters.ContractAdapter):
        raise ValueError(f"expected a ContractAdapter, got {type(model).__name__}")
    return model.net


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors, or from a .pt/.pth read with torch.load(weights_only=True)
    (tensors only; a {'state_dict': ...} or {'model': ...} wrapper and a 'module.' prefix are unwrapped)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no weights file at {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unpickling refusal or a corrupt file
        raise ValueError(f"{path.name}: not a tensors-only checkpoint torch.load(weights_only=True) accepts: "
                         f"{str(e)[:300]}") from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path.name}: expected a state dict of tensors")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def from_robustbench(name: str, dataset: str = "cifar10", threat_model: str = "Linf",
                     model_dir: str | Path | None = None, **_) -> Imported:
    """A RobustBench zoo model through robustbench's own load_model (downloads into model_dir when
    online; reads model_dir/<dataset>/<threat_model>/<name>.pt when it is there)."""
    if dataset not in adapters.RB_DATASETS:
        raise ValueError(f"RobustBench data sets are {list(adapters.RB_DATASETS)}, got {dataset!r}")
    if threat_model not in THREAT_MODELS:
        raise ValueError(f"threat_model must be one of {THREAT_MODELS}, got {threat_model!r}")
    _, _, _, load_model = adapters.robustbench_zoo()
    adapters.robustbench_net(name, dataset, threat_model)  # a clear error for an unknown name first
    model_dir = Path(model_dir) if model_dir else Path.home() / ".cache" / "robustlens" / "robustbench"
    net = load_model(model_name=name, model_dir=str(model_dir), dataset=dataset, threat_model=threat_model)
    n = adapters.RB_DATASETS[dataset]
    args = full_args("robustbench", {"name": name, "dataset": dataset, "threat_model": threat_model,
                                     "num_classes": n, "input_size": adapters.RB_SIZES[dataset]})
    model = build_arch("robustbench", args)
    _load_state(_inner(model), net.state_dict(), f"RobustBench {name}")
    src = model_dir / dataset / threat_model / f"{name}.pt"
    prov = {"source": "robustbench", "name": name, "dataset": dataset, "threat_model": threat_model,
            "version": _version("robustbench"), "licence": None,
            "file": str(src) if src.is_file() else None, "sha256": sha256_file(src) if src.is_file() else None,
            "url": f"https://robustbench.github.io/ ({dataset}, {threat_model})"}
    return Imported(model, "robustbench", args, _classes_for(dataset, n), dataset, prov,
                    f"{name} (RobustBench {dataset} {threat_model})")


def _hub_file(url: str | None) -> Path | None:
    if not url:
        return None
    p = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    return p if p.is_file() else None


def from_torchvision(name: str, dataset: str = "imagenet", pretrained: bool = False,
                     weights: str | None = None, input_size: int | None = None, **_) -> Imported:
    """A torchvision classifier: random weights (offline), or its published weights (`pretrained`:
    the default set, or `weights` by name) downloaded by torchvision into the torch hub cache."""
    import torchvision

    if name not in torchvision.models.list_models(module=torchvision.models):
        raise ValueError(f"torchvision has no classification model {name!r}")
    w = None
    if weights:  # "ResNet50_Weights.IMAGENET1K_V2" or a member name of the model's weights enum
        try:
            w = torchvision.models.get_weight(weights) if "." in weights else \
                torchvision.models.get_model_weights(name)[weights]
        except (KeyError, ValueError) as e:
            raise ValueError(f"torchvision {name}: no weights {weights!r} ({e})") from None
    elif pretrained:
        w = torchvision.models.get_model_weights(name).DEFAULT
    spec = find_dataset(dataset)
    if w is not None:
        classes = list(w.meta["categories"])
        t = w.transforms()
        mean, std, size = list(t.mean), list(t.std), int(input_size or t.crop_size[0])
    else:
        n = spec.num_classes if spec is not None else 1000
        classes = _classes_for(dataset, n)
        mean, std = list(adapters.IMAGENET_MEAN), list(adapters.IMAGENET_STD)
        size = int(input_size or (spec.image_size if spec is not None else 224))
    args = full_args("torchvision", {"name": name, "num_classes": len(classes), "input_size": size,
                                     "mean": mean, "std": std})
    model = build_arch("torchvision", args)
    if w is not None:
        _load_state(_inner(model), w.get_state_dict(progress=False), f"torchvision {w}")
    src = _hub_file(getattr(w, "url", None)) if w is not None else None
    prov = {"source": "torchvision", "name": name, "weights": str(w) if w is not None else None,
            "version": torchvision.__version__, "licence": "BSD-3-Clause (torchvision code; weights: see the "
            "torchvision model docs)" if w is not None else None, "url": getattr(w, "url", None),
            "file": str(src) if src else None, "sha256": sha256_file(src) if src else None}
    label = f"{name} (torchvision{', ' + str(w).split('.')[-1] if w is not None else ', random weights'})"
    return Imported(model, "torchvision", args, classes, dataset, prov, label)


def from_timm(name: str, dataset: str = "imagenet", pretrained: bool = False, input_size: int | None = None,
              **_) -> Imported:
    """A timm classifier by name: random weights, or its pretrained ones (`pretrained`, downloaded by timm)."""
    import timm

    if not timm.is_model(name):
        raise ValueError(f"timm has no model {name!r}")
    spec = find_dataset(dataset)
    net = timm.create_model(name, pretrained=pretrained,
                            **({} if pretrained else {"num_classes": spec.num_classes if spec else 1000}))
    cfg = dict(getattr(net, "pretrained_cfg", {}) or {})
    n = int(net.num_classes)
    size = int(input_size or (cfg.get("input_size", (3, 224, 224))[-1] if pretrained or spec is None
                              else spec.image_size))
    mean = list(cfg.get("mean", adapters.IMAGENET_MEAN))
    std = list(cfg.get("std", adapters.IMAGENET_STD))
    args = full_args("timm", {"name": name, "num_classes": n, "input_size": size, "mean": mean, "std": std})
    model = build_arch("timm", args)
    _load_state(_inner(model), net.state_dict(), f"timm {name}")
    prov = {"source": "timm", "name": name, "version": timm.__version__, "pretrained": bool(pretrained),
            "licence": cfg.get("license") if pretrained else None, "hf_hub_id": cfg.get("hf_hub_id") if pretrained
            else None, "file": None, "sha256": None}
    return Imported(model, "timm", args, _classes_for(dataset, n), dataset, prov,
                    f"{name} (timm, {'pretrained' if pretrained else 'random weights'})")


def from_file(path: str | Path, arch: str = "resnet18", arch_args: dict | None = None, dataset: str = "cifar10",
              **_) -> Imported:
    """A user's weights (.safetensors, or a tensors-only .pt) for an architecture of our registry."""
    path = Path(path)
    spec = get_dataset(dataset) if find_dataset(dataset) else None
    given = dict(arch_args or {})
    if spec is not None:
        given.setdefault("num_classes", spec.num_classes)
    args = full_args(arch, given)
    model = build_arch(arch, args)
    _load_state(model, read_weights(path), path.name)
    prov = {"source": "file", "name": path.name, "file": str(path.resolve()), "sha256": sha256_file(path),
            "version": None, "licence": None}
    return Imported(model, arch, args, _classes_for(dataset, int(args["num_classes"])), dataset, prov,
                    f"{path.stem} ({arch}, own weights)")


def from_entrypoint(target: str, kwargs: dict | None = None, dataset: str = "cifar10", weights: str | None = None,
                    input_size: int | None = None, mean=None, std=None, **_) -> Imported:
    """A network built by `package.module:build(**kwargs)` (code the operator trusts; see
    backend.core.adapters.TRUST_ENV), optionally with a weights file."""
    spec = find_dataset(dataset)
    n = spec.num_classes if spec is not None else 10
    args = full_args("entrypoint", {"target": target, "kwargs": dict(kwargs or {}), "num_classes": n,
                                    "input_size": int(input_size or (spec.image_size if spec else 32)),
                                    "mean": list(mean) if mean else None, "std": list(std) if std else None})
    model = build_arch("entrypoint", args)
    prov = {"source": "entrypoint", "name": target, "version": None, "licence": None, "file": None, "sha256": None}
    if weights:
        _load_state(_inner(model), read_weights(Path(weights)), Path(weights).name)
        prov.update(file=str(Path(weights).resolve()), sha256=sha256_file(Path(weights)))
    return Imported(model, "entrypoint", args, _classes_for(dataset, n), dataset, prov, f"{target} (own code)")


SOURCES: dict[str, Callable[..., Imported]] = {
    "robustbench": from_robustbench, "torchvision": from_torchvision, "timm": from_timm,
    "file": from_file, "entrypoint": from_entrypoint,
}


_ID_PREFIX = {"robustbench": "rb", "torchvision": "tv", "timm": "timm", "file": "own", "entrypoint": "own"}


def default_id(source: str, name: str) -> str:
    """A checkpoint id from the source and the model's name, e.g. rb-wong2020fast, tv-resnet50."""
    stem = Path(name).stem if source == "file" else name.split(":")[-1]
    slug = "".join(c if c.isalnum() else "-" for c in stem.lower()).strip("-")[:40] or "model"
    return f"{_ID_PREFIX.get(source, source)}-{slug}"


def import_model(source: str, name: str, *, model_id: str | None = None, root: str | Path | None = None,
                 dtype: torch.dtype = torch.float32, overwrite: bool = False, **opts) -> Path:
    """Import one model and write it as checkpoint `root/model_id` (default id from source and name).
    ValueError for an unknown source, a bad option or an existing id (unless overwrite); nothing is
    written then."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; sources: {', '.join(SOURCES)}")
    model_id = model_id or default_id(source, name)
    validate_id(model_id)
    out = Path(root) if root is not None else default_root()
    if (out / model_id).exists() and not overwrite:
        raise ValueError(f"checkpoint {model_id!r} already exists in {out} (pass overwrite to replace it)")
    started = time.time()
    imp = SOURCES[source](name, **opts)
    imp.provenance["imported"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    size = int(imp.arch_args["input_size"])
    card = new_card(model_id, "imported", imp.arch, imp.arch_args.get("width"), imp.classes,
                    display_name=imp.display_name, dataset=imp.dataset, data_variant=imp.dataset,
                    arch_args=imp.arch_args, input_size=size, status="imported",
                    notes=imp.notes or f"Not trained by RobustLens: imported from {source} in "
                                       f"{time.time() - started:.1f} s by `python -m backend.imports {source} {name}`.")
    card["provenance"] = imp.provenance
    with tempfile.TemporaryDirectory() as tmp:
        ignore = Path(tmp) / ".gitignore"
        ignore.write_text("# imported weights: never committed\n*\n")
        return save_checkpoint(imp.model, card, out / model_id, dtype=dtype, extra_files={".gitignore": ignore})


def describe_sources() -> dict[str, str]:
    """Source name -> first line of its docstring (for the CLI's help and the zoo page)."""
    return {k: (f.__doc__ or "").strip().splitlines()[0] for k, f in SOURCES.items()}
