"""Importing published models from the app (the Model zoo page) as background tasks.

Only sources that take a model by name are offered here (RobustBench's zoo, torchvision, timm): a
request cannot name a file on the server or code to run (those stay on the command line,
`python -m backend.imports file|entrypoint ...`). An import writes into the service's checkpoints
folder with backend.imports.import_model; the model registry lists it at its next rescan.
"""
from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

from backend.core.checkpoints import read_card, validate_id
from backend.core.datasets import names as dataset_names
from backend.core.errors import Cancelled, short
from backend.imports import import_model
from backend.imports.sources import THREAT_MODELS, default_id

SOURCES = ("robustbench", "torchvision", "timm")  # by name only (see the module docstring)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_PACKAGES = {"robustbench": "robustbench", "torchvision": "torchvision", "timm": "timm"}
PARAMS = ("source", "name", "dataset", "threat_model", "pretrained", "model_id")


def available() -> dict[str, bool]:
    """Which sources this installation can import from (robustbench and timm are the optional extra)."""
    return {s: importlib.util.find_spec(_PACKAGES[s]) is not None for s in SOURCES}


def describe() -> dict:
    """For Service.limits(): the sources, whether each is installed, the data sets and threat models."""
    return {"sources": list(SOURCES), "available": available(), "threat_models": list(THREAT_MODELS),
            "datasets": dataset_names(), "robustbench_datasets": ["cifar10", "cifar100", "imagenet"],
            "extra": "pip install -r requirements-extras.txt"}


def validate(root: Path, p: dict) -> dict:
    """The import's arguments checked (ValueError naming the bad one), with defaults filled in."""
    unknown = sorted(set(p) - set(PARAMS))
    if unknown:
        raise ValueError(f"unknown import params {unknown}; known: {list(PARAMS)}")
    source, name = p.get("source"), p.get("name")
    if source not in SOURCES:
        raise ValueError(f"source must be one of {list(SOURCES)} (files and code: the command line), "
                         f"got {short(source)}")
    if not available()[source]:
        raise ValueError(f"{source} is not installed here: pip install -r requirements-extras.txt")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"name must be a model name (letters, digits, _ . -), got {short(name)}")
    default_ds = "cifar10" if source == "robustbench" else "imagenet"
    dataset = p.get("dataset") or default_ds
    if dataset not in dataset_names():
        raise ValueError(f"unknown dataset {short(dataset)}; known: {', '.join(dataset_names())}")
    threat = p.get("threat_model")
    if threat not in THREAT_MODELS:
        raise ValueError(f"threat_model must be one of {list(THREAT_MODELS)}, got {short(threat)}")
    pretrained = p.get("pretrained")
    if not isinstance(pretrained, bool):
        raise ValueError(f"pretrained must be true or false, got {short(pretrained)}")
    model_id = p.get("model_id") or default_id(source, name)
    validate_id(model_id)
    if (Path(root) / model_id).exists():
        raise ValueError(f"a model {model_id!r} exists already; choose another id")
    return {"source": source, "name": name, "dataset": dataset, "threat_model": threat,
            "pretrained": pretrained, "model_id": model_id}


def run(root: Path, progress=None, should_stop=None, **p) -> dict:
    """Import one model into `root` (validated first). Returns {"model_id", "card"}. A cancel before
    the import starts stops it; one that arrives while it runs removes what it wrote."""
    a = validate(root, p)
    progress = progress or (lambda done, total: None)
    stop = should_stop or (lambda: False)
    progress(0, 2)
    if stop():
        raise Cancelled("import cancelled")
    opts: dict = {"dataset": a["dataset"]}
    if a["source"] == "robustbench":
        opts["threat_model"] = a["threat_model"]
    else:
        opts["pretrained"] = a["pretrained"]
    try:
        out = import_model(a["source"], a["name"], model_id=a["model_id"], root=root, **opts)
    except Exception as e:
        if not is_network_error(e):
            raise
        raise ValueError(
            f"no internet connection here: the {a['source']} weights of {a['name']!r} cannot be downloaded. "
            "Import a weights file you have instead: python -m backend.imports file WEIGHTS --arch ... "
            "(README, 'Import a model'); random weights need no download (leave 'Published weights' off).") from None
    if stop():
        shutil.rmtree(out, ignore_errors=True)
        raise Cancelled("import cancelled")
    progress(2, 2)
    return {"model_id": out.name, "card": read_card(out)}


_NETWORK_ERRORS = ("URLError", "ConnectionError", "NameResolutionError", "MaxRetryError", "gaierror", "Timeout",
                   "ConnectTimeout", "ReadTimeout", "SSLError")


def is_network_error(e: BaseException) -> bool:
    """Whether e, or an exception it was raised from, is a failed download (no DNS, no route, refused,
    timed out): requests', urllib3's, urllib's and socket's errors, recognised by class name so that
    none of those packages has to be imported here."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if any(k.__name__ in _NETWORK_ERRORS for k in type(cur).__mro__):
            return True
        cur = cur.__cause__ or cur.__context__
    return False
