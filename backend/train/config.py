"""Training configuration: one frozen dataclass, three presets, validation with clear messages."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

METHODS = ("ce", "pgd_at", "trades", "supcon", "rsupcon", "fgsm_rs")
CONTRASTIVE = ("supcon", "rsupcon")  # encoder + projection head, then a linear probe
ROBUST = ("pgd_at", "trades", "rsupcon", "fgsm_rs")  # checkpoint chosen by robust val accuracy
SCHEDULES = ("step", "cosine")
DEVICES = ("auto", "cpu", "cuda")
STATUS = {"smoke": "smoke", "short": "cpu-preview", "gpu12": "gpu-short", "full": "full"}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run's result (runtime paths live in RunOptions).

    Defaults are the "full" preset (GPU, paper-like but shorter than the paper's 200 epochs)."""
    method: str = "rsupcon"
    preset: str = "full"
    width: int = 32                    # ResNet-18 base channels (16/32/64)
    epochs: int = 30
    batch_size: int = 512              # global batch (split across DDP ranks)
    lr: float = 0.1                    # not scaled with batch size (the source uses 0.1 at 128 and 512)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "step"             # "step": x0.1 at 50% and 75% of steps; "cosine": to 0
    warmup_epochs: float = 0.0         # linear warm-up from lr/10 (step-level)
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
    subset: int = 0                    # training images used (balanced, seeded); 0 = all 49,000
    val_n: int = 1000                  # held-out training images (clean val accuracy)
    val_robust_n: int = 500            # of those, attacked with PGD-attack_steps for robust val accuracy
    ncm_n: int = 2000                  # training images whose class means classify val (contrastive)
    val_every: int = 1                 # epochs between validations (the last epoch always validates)
    seed: int = 0
    data: str | None = None            # data root, "synthetic", or None = backend.core.data.resolve_root()
    synthetic_n: int = 512             # training images of the synthetic task
    dataset: str = "cifar10"
    amp: bool = True                   # bf16 autocast on CUDA (ignored on CPU)
    channels_last: bool = True         # on CUDA
    compile: bool = False              # torch.compile the network
    log_every: int = 50                # steps between progress events (also every ~10 s on CPU)

    def validate(self) -> "TrainConfig":
        """Raise ValueError naming the first bad field; returns self."""
        def bad(name, why):
            raise ValueError(f"{name}={getattr(self, name)!r}: {why}")
        if self.method not in METHODS:
            bad("method", f"unknown method; known: {', '.join(METHODS)}")
        if self.preset not in PRESETS:
            bad("preset", f"unknown preset; known: {', '.join(PRESETS)}")
        if self.width not in (16, 32, 64):
            bad("width", "must be 16, 32 or 64")
        for name in ("epochs", "batch_size", "probe_batch_size", "val_every", "log_every", "synthetic_n"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                bad(name, "must be a positive integer")
        for name in ("attack_steps", "probe_epochs", "val_n", "val_robust_n", "ncm_n"):
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
        for name in ("eps", "step_size", "fgsm_step"):
            if not 0 <= getattr(self, name) <= 1:
                bad(name, "must be in [0, 1] (pixel units, e.g. 8/255)")
        if self.schedule not in SCHEDULES:
            bad("schedule", f"known: {', '.join(SCHEDULES)}")
        if self.warmup_epochs > self.epochs:
            bad("warmup_epochs", f"exceeds epochs={self.epochs}")
        return self

    @property
    def contrastive(self) -> bool:
        return self.method in CONTRASTIVE

    @property
    def robust(self) -> bool:
        return self.method in ROBUST

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PRESETS: dict[str, dict] = {
    # seconds on a laptop CPU: for tests and a first look at the pipeline
    "smoke": dict(width=16, epochs=1, batch_size=32, subset=64, attack_steps=2, probe_epochs=1,
                  probe_batch_size=64, val_n=32, val_robust_n=16, ncm_n=64, synthetic_n=64, log_every=1),
    # a few minutes on a 2-core CPU (the app's training jobs): width 16, 2,000 images, 2 epochs,
    # 3-step attacks (rsupcon ~5 min, pgd_at ~2-3 min, ce < 1 min on an idle 2-core CPU)
    "short": dict(width=16, epochs=2, batch_size=128, subset=2000, attack_steps=3, probe_epochs=3,
                  probe_batch_size=256, val_n=500, val_robust_n=100, ncm_n=1000, log_every=2),
    # one H200 for about 12 minutes, five models at once (scripts/train_zoo.sh gpu, docs/GPU_RUN.md):
    # width 32, batch 512, PGD-10, 8 epochs with a cosine schedule, 5 probe epochs
    "gpu12": dict(epochs=8, schedule="cosine", probe_epochs=5, val_robust_n=500, log_every=20),
    # GPU, paper-like: width 32, 30 epochs, batch 512, PGD-10 (the dataclass defaults)
    "full": dict(),
}


def make_config(preset: str = "full", **overrides) -> TrainConfig:
    """The preset's values, then every non-None override; validated. ValueError for unknown names."""
    if preset not in PRESETS:
        raise ValueError(f"preset={preset!r}: unknown preset; known: {', '.join(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown config fields {unknown}; known: {sorted(fields)}")
    values = dict(PRESETS[preset], preset=preset)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**values).validate()


def config_from_dict(d: dict) -> TrainConfig:
    """Rebuild a config saved with to_dict (resume state); ValueError for unknown fields."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(d) - fields)
    if unknown:
        raise ValueError(f"saved config has unknown fields {unknown}")
    return TrainConfig(**d).validate()
