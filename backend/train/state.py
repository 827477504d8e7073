"""Resume state: tensors in safetensors, everything else in JSON; no pickle anywhere.

Layout of a state folder:
    state.json                    scalars, config, optimiser hyper-parameters, which files to read
    state-<serial>.safetensors    model (+ head, buffers), best model so far, optimiser buffers,
                                  the epoch's data order, RNG states (torch, cuda, numpy, python)
    rng-rank<r>-<serial>.safetensors   per-rank generator states (DDP ranks > 0)
A save writes new tensor files first and replaces state.json last (os.replace), so a crash at any
moment leaves the previous complete state readable; older tensor files are deleted afterwards.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

STATE_JSON = "state.json"
FORMAT = 1


def rng_tensors(generators: dict[str, torch.Generator], prefix: str = "rng/") -> dict[str, torch.Tensor]:
    """Byte tensors of the named generators plus torch's global CPU (and CUDA) RNG, numpy's legacy
    global RNG and python's `random`."""
    out = {f"{prefix}gen/{k}": g.get_state().cpu() for k, g in generators.items()}
    out[f"{prefix}torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out[f"{prefix}cuda"] = torch.cuda.get_rng_state()
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    out[f"{prefix}numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    out[f"{prefix}numpy_extra"] = torch.tensor([pos, has_gauss], dtype=torch.int64)
    out[f"{prefix}numpy_gauss"] = torch.tensor([gauss], dtype=torch.float64)
    version, internal, gauss_next = random.getstate()
    out[f"{prefix}python"] = torch.tensor(list(internal) + [version], dtype=torch.int64)
    out[f"{prefix}python_gauss"] = torch.tensor([float("nan") if gauss_next is None else gauss_next],
                                                dtype=torch.float64)
    return out


def restore_rng(tensors: dict[str, torch.Tensor], generators: dict[str, torch.Generator],
                prefix: str = "rng/") -> None:
    for k, g in generators.items():
        g.set_state(tensors[f"{prefix}gen/{k}"])
    torch.set_rng_state(tensors[f"{prefix}torch"])
    if f"{prefix}cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors[f"{prefix}cuda"])
    pos, has_gauss = (int(v) for v in tensors[f"{prefix}numpy_extra"])
    np.random.set_state(("MT19937", tensors[f"{prefix}numpy"].numpy().astype(np.uint32), pos, has_gauss,
                         float(tensors[f"{prefix}numpy_gauss"][0])))
    py = tensors[f"{prefix}python"].tolist()
    g = float(tensors[f"{prefix}python_gauss"][0])
    random.setstate((int(py[-1]), tuple(int(v) for v in py[:-1]), None if g != g else g))


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors of an optimiser's per-parameter state and its JSON-able remainder."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for key, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"opt/{pid}/{key}"] = v.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict = {}
    for name, v in tensors.items():
        if name.startswith("opt/"):
            _, pid, key = name.split("/", 2)
            state.setdefault(int(pid), {})[key] = v
    for pid, d in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(d)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_state(state_dir: Path, tensors: dict[str, torch.Tensor], meta: dict,
               rank_files: list[str] | None = None) -> None:
    """Write the tensors, then state.json (atomically); remove tensor files no longer named."""
    state_dir.mkdir(parents=True, exist_ok=True)
    serial = int(meta.get("serial", 0))
    name = f"state-{serial}.safetensors"
    tmp = state_dir / (name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, state_dir / name)
    meta = dict(meta, format=FORMAT, tensors=name, rank_files=list(rank_files or []))
    tmp = state_dir / (STATE_JSON + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, state_dir / STATE_JSON)
    keep = {name, STATE_JSON, *meta["rank_files"]}
    for p in state_dir.iterdir():
        if p.suffix == ".safetensors" and p.name not in keep and _serial(p.name) < serial:
            p.unlink(missing_ok=True)


def _serial(name: str) -> int:
    try:
        return int(name.rsplit("-", 1)[1].split(".")[0])
    except (IndexError, ValueError):
        return -1


def save_rank_rng(state_dir: Path, rank: int, serial: int, generators: dict[str, torch.Generator]) -> str:
    """Per-rank RNG file (written by every rank before rank 0 replaces state.json)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    name = f"rng-rank{rank}-{serial}.safetensors"
    tmp = state_dir / (name + ".tmp")
    save_file(rng_tensors(generators), str(tmp))
    os.replace(tmp, state_dir / name)
    return name


def load_state(state_dir: Path) -> tuple[dict[str, torch.Tensor], dict] | None:
    """(tensors, meta) of the last complete save, or None when the folder holds none."""
    path = state_dir / STATE_JSON
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"resume state {path} is not valid JSON: {e}") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"resume state {path} has format {meta.get('format')!r}, expected {FORMAT}")
    return load_file(str(state_dir / meta["tensors"])), meta


def load_rank_rng(state_dir: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(state_dir / name))
