"""The wire codec of the HTTP transport, used by both ends (backend.transport.client, .server).

Numpy arrays travel as {"dtype", "shape", "b64"}: the raw little-endian bytes in base64, so floats
come back bit-exact; numpy scalars become Python numbers; dicts and lists are walked. Only numeric
arrays (bool, int, uint, float) are sent. Torch-free: an app that talks HTTP loads numpy only.
"""
from __future__ import annotations

import base64
from typing import Any

import numpy as np


def to_wire(obj: Any) -> Any:
    """Plain data for JSON: numpy arrays -> {"dtype","shape","b64"}, numpy scalars -> Python numbers."""
    if isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj)
        if a.dtype.kind not in "biuf":
            raise ValueError(f"cannot send an array of dtype {a.dtype} over HTTP")
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        return {"dtype": a.dtype.str, "shape": list(a.shape), "b64": base64.b64encode(a.tobytes()).decode()}
    if isinstance(obj, dict):
        return {str(k): to_wire(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_wire(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def from_wire(obj: Any) -> Any:
    """Inverse of to_wire: {"dtype","shape","b64"} dicts become (read-only) numpy arrays."""
    if isinstance(obj, dict):
        if set(obj) == {"dtype", "shape", "b64"}:
            a = np.frombuffer(base64.b64decode(obj["b64"]), dtype=np.dtype(obj["dtype"]))
            return a.reshape(obj["shape"]).astype(np.dtype(obj["dtype"]).newbyteorder("="), copy=False)
        return {k: from_wire(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_wire(v) for v in obj]
    return obj
