"""What a training job may ask for: the job fields, their bounds, and their one validation.

A job sets a few TrainConfig fields (JOB_FIELDS) within BOUNDS, plus a name; the preset (default
"short") supplies the rest. JobConfig.from_dict validates them with backend.train.config.config_from_dict,
the function the trainer calls on the same dict. Standard library only (the registry and the config
are torch-free), so the job runner and an HTTP-only app can import it.
"""
from __future__ import annotations

from dataclasses import dataclass

from backend.core.archs_meta import TRAINABLE, WIDTHS
from backend.core.errors import short
from backend.train.config import TrainConfig, config_from_dict
from backend.train.registry import METHODS, PRESETS, datasets

__all__ = ["BOUNDS", "JOB_FIELDS", "LIMITS", "METHODS", "PRESETS", "JobConfig", "trainable_datasets"]

# What a job may set (the preset supplies the rest of TrainConfig), and within which bounds
JOB_FIELDS = ("method", "preset", "dataset", "arch", "width", "subset", "epochs", "attack_steps", "batch_size",
              "seed")
BOUNDS = {"epochs": (1, 50), "subset": (64, 50000), "attack_steps": (1, 20), "batch_size": (8, 1024),
          "seed": (0, 2**31 - 1)}
LIMITS = {"widths": list(WIDTHS), "archs": list(TRAINABLE), **{k: list(v) for k, v in BOUNDS.items()}, "name_chars": 64,
          "methods": list(METHODS), "presets": list(PRESETS)}  # and the data sets: Service.limits()


@dataclass(frozen=True)
class JobConfig:
    """A validated training job: the TrainConfig it trains and its name. The preset (default "short")
    supplies every TrainConfig value the job does not set."""
    train: TrainConfig
    name: str | None = None

    @classmethod
    def from_dict(cls, d: dict, data: str | None = None) -> "JobConfig":
        """Validate plain data (JOB_FIELDS and "name"). `data` is the trainer's --data: the manager's,
        never the caller's. ValueError names the bad key or value."""
        if not isinstance(d, dict):
            raise ValueError(f"job config must be a dict, got {type(d).__name__}")
        unknown = sorted(set(d) - set(JOB_FIELDS) - {"name"})
        if unknown:
            raise ValueError(f"unknown job config keys {unknown}; known: {sorted(JOB_FIELDS + ('name',))}")
        if d.get("method") is None:
            raise ValueError(f"job config needs 'method' (one of {', '.join(METHODS)})")
        name = d.get("name")
        if name is not None and (not isinstance(name, str) or not name.strip()
                                 or len(name) > LIMITS["name_chars"] or not name.isprintable()):
            raise ValueError(f"job name must be 1-{LIMITS['name_chars']} printable characters, got {short(name)}")
        fields = {k: v for k, v in d.items() if k != "name"}
        # a job trains one of the architectures the Train page offers (the CLI takes any registered one)
        return cls(config_from_dict({"preset": "short", **fields, "data": data},
                                    bounds={**BOUNDS, "arch": list(TRAINABLE)}), name)


def trainable_datasets(data: str | None) -> list[str]:
    """The registered data sets whose training images the trainer's `data` holds (the Train page offers a
    choice when there are several); the synthetic task trains in CIFAR-10's place."""
    if data == "synthetic":
        return ["cifar10"]
    from backend.core.data import available_sources, resolve_root  # torch: the service's, not at import
    from backend.core.datasets import get_dataset

    root = resolve_root(data)

    def holds(name: str) -> bool:
        spec = get_dataset(name)
        if root is None or not available_sources(root, name)["train"]["available"]:
            return False
        if spec.torchvision_dir and spec.torchvision_dir in (root.name, *(p.name for p in root.iterdir())):
            return True  # the data set's own torchvision folder
        # an ImageFolder tree: its class folders must be the data set's (CIFAR-10 folders are not CIFAR-100)
        return tuple(sorted(p.name for p in (root / "train").iterdir() if p.is_dir() and p.name[0] != ".")) \
            == spec.classes

    return [d for d in datasets() if holds(d)]
