"""Training configuration: one frozen dataclass and its one validation, `config_from_dict`.

Torch-free (standard library only): the job runner validates a job's config here at submit time and
the trainer validates the same dict again when it reads it (`python -m backend.train --config FILE`);
the checkpoint card's train_config is that dict. Methods and presets live in backend.train.registry.
Also here, as they read the config only: the learning-rate schedule (lr_at) and which differences
forbid a resume (resume_mismatch).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

from backend.core.archs_meta import TRAINABLE, WIDTHS
from backend.core.errors import short
from backend.train import registry
from backend.train.registry import PRESET_INFO, PRESETS, STATUS, datasets

__all__ = ["DEVICES", "PRESET_INFO", "PRESETS",
           "RUNTIME_FIELDS", "SCHEDULES", "STATUS", "TRAINABLE", "WIDTHS", "TrainConfig", "config_from_dict",
           "describe", "lr_at", "make_config", "resume_mismatch"]

SCHEDULES = ("step", "cosine", "onecycle")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run's result (runtime paths live in RunOptions).

    Defaults are the "full" preset (GPU, paper-like but shorter than the paper's 200 epochs)."""
    method: str = "rsupcon"
    preset: str = "full"
    arch: str = "resnet18"             # any registered architecture (backend.core.archs); the paper's ResNet-18
    arch_args: dict = field(default_factory=dict)  # its builder arguments beyond width/num_classes/input_size
    width: int = 32                    # base channels of an architecture with a width argument (WIDTHS)
    epochs: int = 30
    batch_size: int = 512              # global batch (split across DDP ranks)
    lr: float = 0.1                    # not scaled with batch size (the source uses 0.1 at 128 and 512)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "step"             # "step": x0.1 at 50% and 75% of steps; "cosine": to 0;
    #                                    "onecycle": linear to 0 after the warm-up (a one-cycle schedule)
    warmup_epochs: float = 0.0         # linear warm-up from lr/10 (step-level)
    label_smoothing: float = 0.0       # [not the paper's] in the training cross-entropy (ce, pgd_at, trades, fgsm_rs)
    ema: float = 0.0                   # [not the paper's] decay of an exponential moving average of the weights,
    #                                    per step; validation and the checkpoint use the average; 0 = off
    eps: float = 8 / 255               # L-inf radius, pixel units
    step_size: float = 2 / 255         # PGD step, pixel units
    attack_steps: int = 10             # PGD steps for training examples (pgd_at, trades, rsupcon) and val
    fgsm_step: float = 10 / 255        # fgsm_rs single step (Wong et al.: 1.25 eps)
    trades_beta: float = 6.0
    temperature: float = 0.07          # the source's CIFAR-10 script; its code's default is 0.1
    base_temperature: float = 0.07
    head_bn: bool = False              # [not the source] BatchNorm1d after the projection head's first layer
    probe_epochs: int = 10             # linear probe for supcon / rsupcon
    probe_lr: float = 1.0
    probe_batch_size: int = 512
    adv_probe: bool = False            # fit the probe on PGD-attack_steps examples of the full model
    subset: int = 0                    # training images used (balanced, seeded); 0 = all but the held out
    val_n: int = 1000                  # held-out training images (clean val accuracy)
    val_robust_n: int = 500            # of those, attacked with PGD-attack_steps for robust val accuracy
    ncm_n: int = 2000                  # training images whose class means classify val (contrastive)
    val_every: int = 1                 # epochs between validations (the last epoch always validates)
    seed: int = 0
    data: str | None = None            # data root, "synthetic", or None = backend.core.data.resolve_root()
    synthetic_n: int = 512             # training images of the synthetic task
    dataset: str = "cifar10"           # a registered data set (backend.core.datasets)
    amp: bool = True                   # bf16 autocast on CUDA (ignored on CPU)
    channels_last: bool = True         # on CUDA
    cpu_bf16: bool = False             # bf16 autocast and channels-last on a CPU (2.5-3x faster training where the
    #                                    CPU has AVX512-BF16: bench/train_throughput.py --compare-fp32); not on CUDA
    compile: bool = False              # torch.compile the network
    log_every: int = 50                # steps between progress events (also every ~10 s on CPU)

    def validate(self) -> "TrainConfig":
        """Raise ValueError naming the first bad field and its value; returns self."""
        def bad(name, why):
            raise ValueError(f"{name} {why}, got {short(getattr(self, name))}")

        def unknown(name, what, known):
            raise ValueError(f"unknown {what} {short(getattr(self, name))}; known: {', '.join(known)}")
        if registry.find(self.method) is None:
            unknown("method", "training method", registry.names())
        if self.preset not in PRESETS:
            unknown("preset", "preset", PRESETS)
        if self.dataset not in datasets():
            unknown("dataset", "data set", datasets())
        if self.schedule not in SCHEDULES:
            unknown("schedule", "schedule", SCHEDULES)
        if not isinstance(self.arch, str) or not self.arch:
            bad("arch", "must be a registered architecture's name")
        if not isinstance(self.arch_args, dict) or not all(isinstance(k, str) for k in self.arch_args):
            bad("arch_args", "must be a JSON object of builder arguments")
        reserved = sorted(set(self.arch_args) & {"width", "num_classes", "input_size"})
        if reserved:
            bad("arch_args", f"must not set {reserved} (width is its own field; the data set sets the others)")
        try:
            json.dumps(self.arch_args)
        except (TypeError, ValueError):
            bad("arch_args", "must hold plain JSON values")
        if self.width not in WIDTHS:
            bad("width", f"must be one of {', '.join(map(str, WIDTHS))}")
        for name in ("epochs", "batch_size", "probe_batch_size", "val_every", "log_every", "synthetic_n"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                bad(name, "must be a positive integer")
        for name in ("attack_steps", "probe_epochs", "val_n", "val_robust_n", "ncm_n", "seed"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                bad(name, "must be a non-negative integer")
        if self.val_robust_n > self.val_n:
            bad("val_robust_n", f"cannot exceed val_n={self.val_n}")
        if not isinstance(self.subset, int) or self.subset == 1 or self.subset < 0:
            bad("subset", "must be an integer >= 2 (or 0 for all)")
        for name in ("lr", "probe_lr", "temperature", "base_temperature"):
            if not getattr(self, name) > 0:
                bad(name, "must be > 0")
        for name in ("momentum", "weight_decay", "warmup_epochs", "trades_beta"):
            if not getattr(self, name) >= 0:
                bad(name, "must be >= 0")
        for name in ("label_smoothing", "ema"):
            if not 0 <= getattr(self, name) < 1:
                bad(name, "must be in [0, 1)")
        for name in ("eps", "step_size", "fgsm_step"):
            if not 0 <= getattr(self, name) <= 1:
                bad(name, "must be in [0, 1] (pixel units, e.g. 8/255)")
        if self.warmup_epochs > self.epochs:
            bad("warmup_epochs", f"cannot exceed epochs={self.epochs}")
        return self

    @property
    def contrastive(self) -> bool:
        return registry.get(self.method).contrastive

    @property
    def robust(self) -> bool:
        return registry.get(self.method).robust

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _coerce(name: str, value):
    """Plain data (JSON, a form, argparse) -> the field's type; ValueError naming the field otherwise.
    An integral float is an integer (JSON numbers); bools are never numbers; numbers must be finite."""
    kind = str(_FIELDS[name].type).replace(" ", "")
    if kind == "dict":
        if isinstance(value, str):  # the CLI's --arch-args JSON
            try:
                value = json.loads(value)
            except ValueError as e:
                raise ValueError(f"{name} must be a JSON object, got {short(value)} ({e})") from None
        if not isinstance(value, dict):
            raise ValueError(f"{name} must be a JSON object, got {short(value)}")
        return dict(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {short(value)}")
        return value
    if kind in ("str", "str|None"):
        if not isinstance(value, str) and not (value is None and kind == "str|None"):
            raise ValueError(f"{name} must be a string, got {short(value)}")
        return value
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not math.isfinite(value):
        raise ValueError(f"{name} must be {'an integer' if kind == 'int' else 'a finite number'}, got {short(value)}")
    if kind == "int":
        if int(value) != value:
            raise ValueError(f"{name} must be an integer, got {short(value)}")
        return int(value)
    return float(value)


def config_from_dict(d: dict, bounds: dict | None = None) -> TrainConfig:
    """The one validation of a training config, from plain data: a job's fields (at submit time), the
    JSON config file the trainer reads, the CLI flags, a saved resume state.

    d: TrainConfig fields; d["preset"] (default "full") supplies every field that d leaves out or sets
    to None. bounds: narrower limits on the values d sets, {field: (lo, hi)} or {field: [allowed values]}
    (the job runner's). ValueError names the first bad field and value; nothing else is raised."""
    if not isinstance(d, dict):
        raise ValueError(f"a training config must be a dict of TrainConfig fields, got {type(d).__name__}")
    unknown = sorted(set(d) - set(_FIELDS))
    if unknown:
        raise ValueError(f"unknown config fields {unknown}; known: {sorted(_FIELDS)}")
    preset = d.get("preset")
    preset = "full" if preset is None else preset
    if not isinstance(preset, str) or preset not in PRESETS:
        raise ValueError(f"unknown preset {short(preset)}; known: {', '.join(PRESETS)}")
    values = dict(PRESETS[preset], preset=preset)
    values.update({k: _coerce(k, v) for k, v in d.items() if v is not None and k != "preset"})
    cfg = TrainConfig(**values).validate()
    for name, allowed in (bounds or {}).items():
        if d.get(name) is None:
            continue  # the preset's value: bounds limit what a caller sets
        v = getattr(cfg, name)
        if isinstance(allowed, tuple) and len(allowed) == 2:
            lo, hi = allowed
            if not lo <= v <= hi:
                raise ValueError(f"{name} must be in {lo}..{hi}, got {short(v)}")
        elif v not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(map(str, allowed))}, got {short(v)}")
    return cfg


# fields that may differ between a run and its resumption (they do not change the result)
RUNTIME_FIELDS = ("compile", "log_every", "data")


def resume_mismatch(saved: TrainConfig, now: TrainConfig) -> str | None:
    """Why `now` cannot continue a run saved with `saved` (the fields that change the result and
    differ, saved and now), or None when it can."""
    diff = [k for k in _FIELDS if k not in RUNTIME_FIELDS and getattr(saved, k) != getattr(now, k)]
    return ", ".join(f"{k}: saved {getattr(saved, k)!r}, now {getattr(now, k)!r}" for k in diff) or None


def lr_at(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning rate for global step `step`: linear warm-up from lr/10, then x0.1 at 50% and 75%
    of the steps ("step"), cosine to 0 ("cosine") or linearly to 0 ("onecycle")."""
    total = steps_per_epoch * cfg.epochs
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return cfg.lr * (0.1 + 0.9 * step / warm)
    if cfg.schedule == "step":
        return cfg.lr * 0.1 ** ((step >= 0.5 * total) + (step >= 0.75 * total))
    t = (step - warm) / max(1, total - warm)
    if cfg.schedule == "onecycle":
        return cfg.lr * max(0.0, 1 - t)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * t))



def make_config(preset: str = "full", **overrides) -> TrainConfig:
    """The preset's values, then every non-None override; validated (see config_from_dict)."""
    return config_from_dict({**overrides, "preset": preset})



def describe() -> dict:
    """The registry as a form shows it (Service.limits()["jobs"]): each method's title, each preset's
    label, one-line use and the values it trains with (so the page's texts cannot drift from them)."""
    shown = ("width", "epochs", "subset", "batch_size", "attack_steps", "probe_epochs", "synthetic_n")
    methods = [registry.get(m) for m in registry.names()]
    return {"method_titles": {m.name: m.title for m in methods},
            "method_robust": {m.name: m.robust for m in methods},
            "preset_labels": {p: info.label for p, info in PRESET_INFO.items()},
            "preset_use": {p: info.use for p, info in PRESET_INFO.items()},
            "preset_values": {p: {k: getattr(c, k) for k in shown}
                              for p in PRESETS for c in [make_config(p, method=methods[0].name)]}}
