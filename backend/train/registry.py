"""The training registry: every training method and every preset, written once (standard library only).

Everything else reads these: the trainer (backend.train.config, .methods, the CLI choices), the job
runner (backend.service.jobs, which must not load torch), the checkpoint listing order
(backend.core.checkpoints) and, through Service.limits()["jobs"], the Train page's labels and preset
texts. Widths come from backend.core.archs_meta.WIDTHS, the architecture's list, and the data sets a
run may train on from the dataset registry (backend.core.datasets, torch-free too).

How to add a training method: add a Method below (name, labels, robust?, contrastive?, the TrainConfig
fields it reads), write its loss in backend/train/methods.py and add it to LOSSES there, and run
tests/test_train.py (every method in METHODS trains end to end) and tests/test_train_registry.py.
How to add a preset: add a Preset below (its TrainConfig values, a one-line use, the card status).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from backend.core import datasets as _datasets

# the TrainConfig fields every method reads (the model, optimiser, data and validation); a Method's
# `needs` lists what it reads beyond these
_ATTACK = ("eps", "step_size", "attack_steps")
_PROBE = ("probe_epochs", "probe_lr", "probe_batch_size", "adv_probe", "ncm_n")
_CONTRAST = ("temperature", "base_temperature", "head_bn")
_CE = ("label_smoothing",)  # the methods trained with cross-entropy


@dataclass(frozen=True)
class Method:
    """One training method. `attack`: how its training examples are crafted ("pgd", "fgsm" or None for
    clean training); `robust`: the checkpoint is chosen by robust validation accuracy; `contrastive`:
    an encoder with a projection head, then a linear probe; `needs`: the TrainConfig fields it reads
    beyond the common ones."""
    name: str
    label: str          # short, for model names and cards ("PGD-AT")
    title: str          # for a form ("PGD adversarial training")
    robust: bool
    contrastive: bool
    attack: str | None
    needs: tuple[str, ...] = ()

    def training_attack_steps(self, attack_steps: int) -> int:
        """Attack steps per training example, as the card reports them (0 for clean training)."""
        return {"pgd": attack_steps, "fgsm": 1}.get(self.attack or "", 0)


@dataclass(frozen=True)
class Preset:
    """A named set of TrainConfig values (the dataclass defaults fill the rest). `use`: one line on what
    it is for; `label`: the preset as a form shows it; `status`: the card status of its models."""
    name: str
    use: str
    label: str
    status: str
    values: dict = field(default_factory=dict)


# Listing order: the zoo lists models in this order (the proposed method first, then the baselines).
_METHODS = (
    Method("rsupcon", "RSupCon", "RSupCon (robust supervised contrastive)", robust=True, contrastive=True,
           attack="pgd", needs=_ATTACK + _CONTRAST + _PROBE),
    Method("pgd_at", "PGD-AT", "PGD adversarial training", robust=True, contrastive=False, attack="pgd",
           needs=_ATTACK + _CE),
    Method("trades", "TRADES", "TRADES", robust=True, contrastive=False, attack="pgd",
           needs=_ATTACK + ("trades_beta",) + _CE),
    Method("supcon", "SupCon", "SupCon (contrastive, not robust)", robust=False, contrastive=True, attack=None,
           needs=_CONTRAST + _PROBE),
    Method("fgsm_rs", "FGSM-RS", "FGSM-RS (fast adversarial training)", robust=True, contrastive=False,
           attack="fgsm", needs=("eps", "fgsm_step", "attack_steps") + _CE),  # attack_steps: the PGD validation
    Method("ce", "CE", "Cross-entropy (standard, not robust)", robust=False, contrastive=False, attack=None,
           needs=_CE),
)
METHOD_INFO: dict[str, Method] = {m.name: m for m in _METHODS}
METHODS: tuple[str, ...] = tuple(METHOD_INFO)
CONTRASTIVE: tuple[str, ...] = tuple(m.name for m in _METHODS if m.contrastive)
ROBUST: tuple[str, ...] = tuple(m.name for m in _METHODS if m.robust)
LABELS: dict[str, str] = {m.name: m.label for m in _METHODS}
# the shipped model zoo, in the order scripts/train_zoo.sh trains it (METHODS=... there picks others)
ZOO: tuple[str, ...] = ("rsupcon", "pgd_at", "ce", "trades", "supcon")

_PRESETS = (
    # seconds on a laptop CPU: for tests and a first look at the pipeline
    Preset("smoke", "seconds; checks the pipeline, learns nothing", "smoke (seconds, learns nothing)", "smoke",
           dict(width=16, epochs=1, batch_size=32, subset=64, attack_steps=2, probe_epochs=1,
                probe_batch_size=64, val_n=32, val_robust_n=16, ncm_n=64, synthetic_n=64, log_every=1)),
    # the app's training jobs (rsupcon ~5 min, pgd_at ~2-3 min, ce < 1 min on an idle 2-core CPU)
    Preset("short", "minutes on a 2-core CPU", "short (minutes on a CPU)", "cpu-preview",
           dict(width=16, epochs=2, batch_size=128, subset=2000, attack_steps=3, probe_epochs=3,
                probe_batch_size=256, val_n=500, val_robust_n=100, ncm_n=1000, log_every=2)),
    # scripts/train_zoo.sh gpu, docs/GPU_RUN.md: width 32, batch 512, PGD-10, cosine schedule
    Preset("gpu12", "about 12 minutes on one H200, five models at once", "gpu12 (minutes on a big GPU)",
           "gpu-short", dict(epochs=8, schedule="cosine", probe_epochs=5, val_robust_n=500, log_every=20)),
    # paper-like but shorter than the paper's 200 epochs: the TrainConfig defaults
    Preset("full", "hours; for a GPU", "full (hours, for a GPU)", "full"),
)
PRESET_INFO: dict[str, Preset] = {p.name: p for p in _PRESETS}
PRESETS: dict[str, dict] = {p.name: p.values for p in _PRESETS}
STATUS: dict[str, str] = {p.name: p.status for p in _PRESETS}


def datasets() -> tuple[str, ...]:
    """The data sets a run may train on (TrainConfig.dataset, --dataset): every registered one."""
    return tuple(_datasets.names())
