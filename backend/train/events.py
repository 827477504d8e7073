"""Structured progress events (JSON lines) and a description of the hardware.

Each line is one JSON object with "type" in start | progress | epoch | probe | done | error and
"time" (unix seconds), plus whichever of these apply: epoch, epochs, step, steps_per_epoch, loss,
lr, val_clean, val_robust, images_per_s, eta_s, checkpoint, message (an "error" event for a
requested stop also has "cancelled": true). Lines are flushed one by one so a poller sees them
at once.
"""
from __future__ import annotations

import json
import logging
import math
import os
import platform
import time
from pathlib import Path

import torch

from backend.core.runtime import usable_cores

log = logging.getLogger(__name__)
TYPES = ("start", "progress", "epoch", "probe", "done", "error")


class EventLog:
    """Appends events to `path` (None: only logs them)."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, type: str, **fields) -> dict:
        if type not in TYPES:
            raise ValueError(f"unknown event type {type!r}")
        event = {"type": type, "time": round(time.time(), 3)}
        for k, v in fields.items():
            if isinstance(v, float) and not math.isfinite(v):
                v = None  # JSON has no NaN/inf
            event[k] = v
        log.debug("event %s", json.dumps(event))
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(event) + "\n")
                f.flush()
        return event


def _threads(n: int) -> str:
    return f"{n} thread{'s' if n != 1 else ''}"


def hardware(device: torch.device, world: int = 1) -> str:
    """'NVIDIA H100 80GB HBM3 x2' or 'AMD EPYC, AVX2 (2 cores, 1 thread)': a CPU's name, the vector instructions
    torch uses on it (its speed differs several-fold between AVX2 and AVX-512) and '+bf16' where the CPU has native
    bfloat16 arithmetic (AVX512-BF16 or AMX), without which bf16 training is many times slower than fp32."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} x{world}"
    info: dict[str, str] = {}  # the first processor's "model name" and "flags"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = info.get("model name") or platform.processor() or platform.machine()
    flags = set(info.get("flags", "").split())
    isa = torch.backends.cpu.get_cpu_capability()
    if flags & {"avx512_bf16", "amx_bf16"}:
        isa += "+bf16"
    cores = usable_cores()
    return (f"{name}, {isa} ({cores} cores, {_threads(torch.get_num_threads())}"
            f"{f', {world} processes' if world > 1 else ''})")
